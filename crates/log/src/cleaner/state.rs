//! The cleaner's files: its checkpoint, and the `.cleaned` / `.swap`
//! segments a pass leaves while it swaps, finished or discarded at open.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::error::LogError;
use crate::segment::segment_path;
use crate::storage::Storage;

const CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
const CLEANED_SUFFIX: &str = ".cleaned";
const SWAP_SUFFIX: &str = ".swap";
/// A checkpoint is one short line; anything longer is not ours.
const CHECKPOINT_MAX_BYTES: u64 = 256;

/// Where the last pass left off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CleanState {
    /// Offsets below this have been cleaned against every key seen up to it.
    pub first_dirty_offset: i64,
    /// The earliest delete horizon a kept tombstone or marker carries: a
    /// pass is due then even if nothing new is dirty.
    pub next_horizon_ms: Option<i64>,
}

impl CleanState {
    /// Reads the checkpoint; a missing or unreadable one means "clean from
    /// the start", which is always safe.
    pub fn load(dir: &Path, storage: &dyn Storage) -> Result<CleanState, LogError> {
        let path = dir.join(CHECKPOINT_FILE);
        let file = match storage.open(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(CleanState::default()),
            Err(e) => return Err(LogError::io(&path, e)),
        };
        let len = file.len().map_err(|e| LogError::io(&path, e))?.min(CHECKPOINT_MAX_BYTES);
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0).map_err(|e| LogError::io(&path, e))?;
        let text = String::from_utf8_lossy(&buf);
        let mut fields = text.split_whitespace().map(str::parse::<i64>);
        match (fields.next(), fields.next()) {
            (Some(Ok(first_dirty_offset)), Some(Ok(horizon))) if first_dirty_offset >= 0 => {
                Ok(CleanState { first_dirty_offset, next_horizon_ms: (horizon >= 0).then_some(horizon) })
            }
            _ => {
                warn!(file = %path.display(), "ignoring an unreadable cleaner checkpoint; the next pass cleans from the log start");
                Ok(CleanState::default())
            }
        }
    }

    /// Writes the checkpoint: temporary file, fsync, rename, directory fsync.
    pub fn save(&self, dir: &Path, storage: &dyn Storage) -> Result<(), LogError> {
        let path = dir.join(CHECKPOINT_FILE);
        let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        let line = format!("{} {}\n", self.first_dirty_offset, self.next_horizon_ms.unwrap_or(-1));
        let file = storage.open(&tmp, true).map_err(|e| LogError::io(&tmp, e))?;
        file.set_len(0).map_err(|e| LogError::io(&tmp, e))?;
        file.write_all_at(line.as_bytes(), 0).map_err(|e| LogError::io(&tmp, e))?;
        file.sync().map_err(|e| LogError::io(&tmp, e))?;
        storage.rename(&tmp, &path).map_err(|e| LogError::io(&path, e))?;
        storage.sync_dir(dir).map_err(|e| LogError::io(dir, e))
    }
}

/// Where a pass writes the cleaned segment starting at `base_offset`.
pub(crate) fn cleaned_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}{CLEANED_SUFFIX}"))
}

/// The committed, not yet installed, cleaned segment replacing every
/// segment with a base offset in `[base_offset, end_offset)`.
pub(crate) fn swap_path(dir: &Path, base_offset: i64, end_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}-{end_offset:020}{SWAP_SUFFIX}"))
}

fn parse_swap_name(name: &str) -> Option<(i64, i64)> {
    let (base, end) = name.strip_suffix(SWAP_SUFFIX)?.split_once('-')?;
    Some((base.parse().ok()?, end.parse().ok()?))
}

/// Finishes what a crash interrupted: a `.cleaned` file was never
/// committed and is removed; a `.swap` file was, so the segments it
/// replaces are removed and it takes the first one's name. Returns the
/// directory's entries afterwards (listed again only if something changed).
pub(crate) fn recover_interrupted_clean(dir: &Path, storage: &dyn Storage) -> Result<Vec<PathBuf>, LogError> {
    let entries = storage.list_dir(dir).map_err(|e| LogError::io(dir, e))?;
    let mut changed = false;
    for path in &entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if name.ends_with(CLEANED_SUFFIX) || name == format!("{CHECKPOINT_FILE}.tmp") {
            storage.remove_file(path).map_err(|e| LogError::io(path, e))?;
            changed = true;
        } else if let Some((base, end)) = parse_swap_name(name) {
            for old in &entries {
                let replaced = crate::segment::parse_segment_name(old).is_some_and(|b| b > base && b < end);
                if replaced {
                    storage.remove_file(old).map_err(|e| LogError::io(old, e))?;
                }
            }
            let target = segment_path(dir, base);
            storage.rename(path, &target).map_err(|e| LogError::io(&target, e))?;
            info!(file = %target.display(), "completed a cleaned-segment swap interrupted by a crash");
            changed = true;
        }
    }
    if !changed {
        return Ok(entries);
    }
    storage.sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    storage.list_dir(dir).map_err(|e| LogError::io(dir, e))
}
