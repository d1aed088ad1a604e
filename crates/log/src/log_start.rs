//! DeleteRecords: moving a disk log's start offset forward on request.
//!
//! Segment files alone cannot say where the log starts once it starts in
//! the middle of a segment, so the requested start is kept in
//! `log-start-offset-checkpoint` in the partition directory (Kafka keeps
//! one such checkpoint per log directory). It is written before the answer
//! (temporary file, fsync, rename, directory fsync) and read back at open.
//! Segments wholly below the start are then deleted; a crash before that is
//! finished at the next open.

use std::io::ErrorKind;
use std::path::Path;

use tracing::{info, warn};

use crate::disk::DiskLog;
use crate::error::LogError;
use crate::segment::segment_path;
use crate::storage::Storage;

const CHECKPOINT_FILE: &str = "log-start-offset-checkpoint";
/// The checkpoint is one short line; anything longer is not ours.
const CHECKPOINT_MAX_BYTES: u64 = 64;

/// The start offset last made durable by DeleteRecords, if any. An
/// unreadable file is ignored with a warning: the segments then say where
/// the log starts, which is what the log held before the request.
pub(crate) fn load_checkpoint(dir: &Path, storage: &dyn Storage) -> Result<Option<i64>, LogError> {
    let path = dir.join(CHECKPOINT_FILE);
    let file = match storage.open(&path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(&path, e)),
    };
    let len = file.len().map_err(|e| LogError::io(&path, e))?.min(CHECKPOINT_MAX_BYTES);
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0).map_err(|e| LogError::io(&path, e))?;
    match String::from_utf8_lossy(&buf).trim().parse::<i64>() {
        Ok(offset) if offset >= 0 => Ok(Some(offset)),
        _ => {
            warn!(file = %path.display(), "ignoring an unreadable log start checkpoint");
            Ok(None)
        }
    }
}

fn save_checkpoint(dir: &Path, storage: &dyn Storage, offset: i64) -> Result<(), LogError> {
    let path = dir.join(CHECKPOINT_FILE);
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    let file = storage.open(&tmp, true).map_err(|e| LogError::io(&tmp, e))?;
    file.set_len(0).map_err(|e| LogError::io(&tmp, e))?;
    file.write_all_at(format!("{offset}\n").as_bytes(), 0).map_err(|e| LogError::io(&tmp, e))?;
    file.sync().map_err(|e| LogError::io(&tmp, e))?;
    storage.rename(&tmp, &path).map_err(|e| LogError::io(&path, e))?;
    storage.sync_dir(dir).map_err(|e| LogError::io(dir, e))
}

impl DiskLog {
    /// Moves the log start up to `offset` (Kafka's DeleteRecords) and
    /// returns the log start afterwards. Never moves it back: a lower
    /// `offset` changes nothing. `offset` must be at most the log end.
    /// The new start is durable when this returns Ok.
    pub fn delete_records(&mut self, offset: i64) -> Result<i64, LogError> {
        let end = self.next_offset();
        if offset < 0 || offset > end {
            return Err(LogError::OffsetOutOfRange { offset, log_start_offset: self.log_start_offset, log_end_offset: end });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        if self.poisoned.is_some() {
            return Err(LogError::Poisoned { path: self.dir.clone(), reason: self.poisoned.clone().unwrap_or_default() });
        }
        save_checkpoint(&self.dir, self.storage.as_ref(), offset)?;
        self.log_start_offset = offset;
        info!(dir = %self.dir.display(), log_start_offset = offset, "log start offset moved by DeleteRecords");
        self.delete_segments_below_start()?;
        Ok(offset)
    }

    /// Empties the log and starts it, empty, at `offset`: a Raft follower
    /// installing its leader's snapshot, whose log no longer holds what
    /// this replica lacks. Durable when it returns. The old segments go
    /// first, so a crash part way leaves an empty log at 0 or at `offset`
    /// (never overlapping segments); the caller knows from its own record
    /// of the snapshot to do it again.
    pub fn reset_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange { offset, log_start_offset: self.log_start_offset, log_end_offset: self.next_offset() });
        }
        if self.poisoned.is_some() {
            return Err(LogError::Poisoned { path: self.dir.clone(), reason: self.poisoned.clone().unwrap_or_default() });
        }
        for base in self.segments.keys().copied().collect::<Vec<_>>() {
            let path = segment_path(&self.dir, base);
            self.segments.remove(&base);
            self.storage.remove_file(&path).map_err(|e| LogError::io(&path, e))?;
        }
        self.storage.sync_dir(&self.dir).map_err(|e| LogError::io(&self.dir, e))?;
        let path = segment_path(&self.dir, offset);
        let file = self.storage.open(&path, true).map_err(|e| LogError::io(&path, e))?;
        self.storage.sync_dir(&self.dir).map_err(|e| LogError::io(&self.dir, e))?;
        self.segments.insert(offset, crate::segment::Segment::new(offset, file));
        save_checkpoint(&self.dir, self.storage.as_ref(), offset)?;
        self.retain_unsynced(|_| false);
        self.log_start_offset = offset;
        self.durable_offset = offset;
        self.clean_state.first_dirty_offset = offset;
        info!(dir = %self.dir.display(), log_start_offset = offset, "log emptied to start at a new offset");
        Ok(())
    }

    /// Deletes sealed segments whose every offset is below the log start:
    /// those followed by a segment starting at or before it. The active
    /// segment always stays.
    pub(crate) fn delete_segments_below_start(&mut self) -> Result<(), LogError> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for pair in bases.windows(2) {
            let (base, next_base) = (pair[0], pair[1]);
            if next_base > self.log_start_offset {
                break;
            }
            let path = segment_path(&self.dir, base);
            self.segments.remove(&base);
            self.storage.remove_file(&path).map_err(|e| LogError::io(&path, e))?;
            info!(file = %path.display(), log_start_offset = self.log_start_offset, "deleted segment below the log start");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
