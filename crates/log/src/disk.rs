//! The on-disk partition log: a directory of segments, recovery at open,
//! appends, reads, group-commit sync jobs and retention.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

use crate::batch::{check_crc, set_base_offset, BatchHeader, BATCH_HEADER_LEN};
use crate::cleaner::{recover_interrupted_clean, CleanState};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::segment::{parse_segment_name, segment_path, Segment};
use crate::storage::{Storage, StorageFile};
use crate::records::first_record_at_or_after;
use crate::{AppendInfo, ReadPlan, ReadSlice, TimestampOffset};

/// How far past a bad batch recovery looks for valid data before it calls
/// the tail torn. A torn tail is at most one write; valid data beyond a bad
/// batch means corruption in the middle of the log.
const CORRUPTION_SCAN_LIMIT_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug)]
pub struct DiskLog {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) config: LogConfig,
    pub(crate) segments: BTreeMap<i64, Segment>,
    /// The first offset reads may ask for: the first segment's base, or
    /// higher after DeleteRecords (see `log_start.rs`).
    pub(crate) log_start_offset: i64,
    /// Every offset below this is fsynced.
    pub(crate) durable_offset: i64,
    /// Sealed segments whose tail may not be fsynced yet.
    unsynced: Vec<Arc<dyn StorageFile>>,
    pub(crate) poisoned: Option<String>,
    /// Where the cleaner left off (compacted topics).
    pub(crate) clean_state: CleanState,
    /// A swap failed after its commit point: the files are ahead of the
    /// segments in memory until a restart completes the swap, so this log
    /// is not cleaned again before then (appends and reads are unaffected).
    pub(crate) cleaner_failed: Option<String>,
}

/// Files to fsync so that every offset below `target_offset` is durable.
/// Runs outside the log's lock; see [`DiskLog::finish_sync`].
#[derive(Debug)]
pub struct SyncJob {
    pub files: Vec<Arc<dyn StorageFile>>,
    pub target_offset: i64,
}

impl SyncJob {
    pub fn run(&self) -> std::io::Result<()> {
        for f in &self.files {
            f.sync()?;
        }
        Ok(())
    }
}

/// Outcome of scanning one segment at open.
enum ScanEnd {
    Clean,
    /// Bad bytes at `position` with nothing valid after them.
    TornTail { position: u64, reason: String },
}

impl DiskLog {
    /// Opens (or creates) the log in `dir`, recovering from a crash: a torn
    /// tail of the last segment is truncated and the truncation fsynced; any
    /// other damage is a [`LogError::Corrupt`] naming file and position.
    pub fn open(dir: &Path, storage: Arc<dyn Storage>, config: LogConfig) -> Result<DiskLog, LogError> {
        Self::open_observed(dir, storage, config, &mut |_, _| {})
    }

    /// Like [`DiskLog::open`], calling `observe` with every batch that stays
    /// in the log (header with its offsets, and the whole batch), in order:
    /// how producer state and the transaction index are rebuilt.
    pub fn open_observed(
        dir: &Path,
        storage: Arc<dyn Storage>,
        config: LogConfig,
        observe: &mut dyn FnMut(&BatchHeader, &[u8]),
    ) -> Result<DiskLog, LogError> {
        storage.create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let entries = recover_interrupted_clean(dir, storage.as_ref())?;
        let clean_state = CleanState::load(dir, storage.as_ref())?;
        let mut bases: Vec<i64> = entries
            .iter()
            .filter_map(|p| parse_segment_name(p))
            .collect();
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut expected_next: Option<i64> = None;
        for (i, &base) in bases.iter().enumerate() {
            let path = segment_path(dir, base);
            // Compaction may leave gaps between segments, never overlaps.
            if let Some(next) = expected_next {
                if base < next {
                    return Err(LogError::Corrupt {
                        path,
                        position: 0,
                        expected_offset: next,
                        reason: format!("segment starts at offset {base} but the previous one ends at {}", next - 1),
                    });
                }
            }
            let file = storage.open(&path, false).map_err(|e| LogError::io(&path, e))?;
            let mut segment = Segment::new(base, file);
            let is_last = i + 1 == bases.len();
            match scan_segment(&mut segment, &config, observe)? {
                ScanEnd::Clean => {}
                ScanEnd::TornTail { position, reason } if is_last => {
                    warn!(file = %path.display(), position, %reason, "truncating torn tail of the last segment");
                    segment.file.set_len(position).map_err(|e| LogError::io(&path, e))?;
                    segment.file.sync().map_err(|e| LogError::io(&path, e))?;
                    segment.size = position;
                }
                ScanEnd::TornTail { position, reason } => {
                    return Err(LogError::Corrupt {
                        path,
                        position,
                        expected_offset: segment.next_offset,
                        reason: format!("{reason}; a later segment exists"),
                    });
                }
            }
            expected_next = Some(segment.next_offset);
            segments.insert(base, segment);
        }
        if segments.is_empty() {
            let path = segment_path(dir, 0);
            let file = storage.open(&path, true).map_err(|e| LogError::io(&path, e))?;
            storage.sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
            segments.insert(0, Segment::new(0, file));
        }
        let first_base = *segments.keys().next().unwrap_or(&0);
        let next = segments.values().next_back().map(|s| s.next_offset).unwrap_or(0);
        // A checkpoint past the end can only follow lost unsynced data; the
        // log then starts at its end.
        let checkpoint = crate::log_start::load_checkpoint(dir, storage.as_ref())?;
        let log_start_offset = checkpoint.map_or(first_base, |c| c.max(first_base).min(next));
        if next > 0 {
            info!(dir = %dir.display(), log_start_offset, log_end_offset = next, "log recovered");
        }
        let mut log = DiskLog {
            dir: dir.to_path_buf(),
            storage,
            config,
            segments,
            log_start_offset,
            // What was read back from the file at open is what the disk has.
            durable_offset: next,
            unsynced: Vec::new(),
            poisoned: None,
            clean_state,
            cleaner_failed: None,
        };
        // Finishes a DeleteRecords that crashed before deleting its segments.
        log.delete_segments_below_start()?;
        Ok(log)
    }

    pub(crate) fn active_size(&self) -> u64 {
        self.active().size
    }

    fn active(&self) -> &Segment {
        self.segments.values().next_back().expect("a log always has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("a log always has an active segment")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn next_offset(&self) -> i64 {
        self.active().next_offset
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    /// Base offset of the active segment: everything below it is sealed.
    pub fn active_base_offset(&self) -> i64 {
        self.active().base_offset
    }
    pub fn durable_offset(&self) -> i64 {
        self.durable_offset
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }
    pub fn is_poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    /// Stops all writing to this log before its directory is removed (topic
    /// deletion): appends are refused and a cleaner pass already under way
    /// discards its output instead of renaming it into a directory that a
    /// new topic of the same name may by then own.
    pub fn retire(&mut self, reason: &str) {
        self.poisoned.get_or_insert_with(|| reason.to_string());
    }

    pub(crate) fn poisoned_error(&self) -> LogError {
        LogError::Poisoned { path: self.dir.clone(), reason: self.poisoned.clone().unwrap_or_default() }
    }

    /// Appends already validated batches (`payload` holds them back to back,
    /// described by `headers`), assigning offsets. One write call, so a
    /// failure leaves none of them behind.
    pub fn append(&mut self, payload: &mut [u8], headers: &[BatchHeader], now_ms: i64) -> Result<AppendInfo, LogError> {
        if self.poisoned.is_some() {
            return Err(self.poisoned_error());
        }
        self.maybe_roll(payload.len() as u64, now_ms)?;
        let base_offset = self.next_offset();
        let mut next = base_offset;
        let mut pos = 0usize;
        let mut stamped = Vec::with_capacity(headers.len());
        for h in headers {
            let len = h.total_len();
            set_base_offset(&mut payload[pos..pos + len], next);
            let mut h = *h;
            h.base_offset = next;
            stamped.push(h);
            next = h.last_offset() + 1;
            pos += len;
        }
        self.write_stamped(payload, &stamped, now_ms)?;
        Ok(AppendInfo { base_offset, last_offset: next - 1, log_start_offset: self.log_start_offset })
    }

    /// Writes batches whose headers already carry their offsets, in one
    /// write call, and indexes them.
    pub(crate) fn write_stamped(&mut self, payload: &[u8], stamped: &[BatchHeader], now_ms: i64) -> Result<(), LogError> {
        let interval = self.config.index_interval_bytes;
        let segment = self.active_mut();
        let start = segment.size;
        if let Err(e) = segment.file.write_all_at(payload, start) {
            let path = segment.file.path().to_path_buf();
            // Take back whatever part of the write landed; if even that
            // fails the file's content is unknown.
            if let Err(trunc) = segment.file.set_len(start) {
                self.poisoned = Some(format!("write failed ({e}) and truncating it back failed ({trunc})"));
            }
            return Err(LogError::io(path, e));
        }
        let mut position = start;
        for h in stamped {
            segment.note_batch(h, position, interval);
            position += h.total_len() as u64;
        }
        segment.first_append_ms.get_or_insert(now_ms);
        Ok(())
    }

    pub(crate) fn maybe_roll(&mut self, incoming_bytes: u64, now_ms: i64) -> Result<(), LogError> {
        let active = self.active();
        let too_big = active.size > 0 && active.size + incoming_bytes > self.config.segment_bytes;
        // The active segment is never cleaned, so `max.compaction.lag.ms` rolls it too.
        let max_age_ms = if self.config.compact {
            self.config.segment_ms.min(self.config.max_compaction_lag_ms)
        } else {
            self.config.segment_ms
        };
        let too_old = active.first_append_ms.is_some_and(|t| now_ms - t >= max_age_ms);
        if !(too_big || too_old) {
            return Ok(());
        }
        let base = active.next_offset;
        let sealed = active.file.clone();
        let path = segment_path(&self.dir, base);
        let file = self.storage.open(&path, true).map_err(|e| LogError::io(&path, e))?;
        // The new file's directory entry must be durable before anything in
        // it is reported durable.
        self.storage.sync_dir(&self.dir).map_err(|e| LogError::io(&self.dir, e))?;
        self.unsynced.push(sealed);
        self.segments.insert(base, Segment::new(base, file));
        Ok(())
    }

    /// Forgets unsynced sealed files whose path `keep` refuses (removed segments).
    pub(crate) fn retain_unsynced(&mut self, keep: impl Fn(&Path) -> bool) {
        self.unsynced.retain(|f| keep(f.path()));
    }

    /// What to fsync to make everything appended so far durable, or None if
    /// it already is.
    pub fn sync_job(&mut self) -> Option<SyncJob> {
        let target = self.next_offset();
        if target <= self.durable_offset || self.poisoned.is_some() {
            return None;
        }
        let mut files = std::mem::take(&mut self.unsynced);
        files.push(self.active().file.clone());
        Some(SyncJob { files, target_offset: target })
    }

    /// Records the result of a [`SyncJob`]. A failed fsync poisons the log:
    /// after one, the kernel may have dropped dirty pages, so nothing written
    /// since the last good fsync can be trusted until recovery re-reads it.
    pub fn finish_sync(&mut self, job: &SyncJob, result: &std::io::Result<()>) {
        match result {
            Ok(()) => self.durable_offset = self.durable_offset.max(job.target_offset),
            Err(e) => {
                self.poisoned.get_or_insert_with(|| format!("fsync failed: {e}"));
            }
        }
    }

    /// Plans a read starting at `offset`. None when `offset` is the log end.
    pub fn read_plan(&self, offset: i64) -> Result<Option<ReadPlan>, LogError> {
        let end = self.next_offset();
        if offset < self.log_start_offset || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: end,
            });
        }
        if offset == end {
            return Ok(None);
        }
        // After compaction `offset` may fall in a gap: read from the first
        // segment that still holds anything at or after it.
        let from = self.segments.range(..=offset).next_back().map_or(self.log_start_offset, |(base, _)| *base);
        let Some(segment) = self.segments.range(from..).map(|(_, s)| s).find(|s| s.size > 0 && s.next_offset > offset) else {
            return Ok(None);
        };
        Ok(Some(ReadPlan::Disk(ReadSlice {
            file: segment.file.clone(),
            start_position: segment.position_for_offset(offset),
            end_position: segment.size,
            target_offset: offset,
        })))
    }

    /// The first record at or after the log start whose timestamp is at
    /// least `timestamp`, or None if every record is older. The time index
    /// finds the batch; the batch's records find the record.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>, LogError> {
        for segment in self.segments.values() {
            if segment.max_timestamp < timestamp {
                continue;
            }
            let mut position = segment.position_for_timestamp(timestamp);
            while position < segment.size {
                let header = segment.header_at(position).map_err(|e| LogError::io(segment.file.path(), e))?;
                if header.max_timestamp >= timestamp && header.last_offset() >= self.log_start_offset {
                    let batch = segment.batch_at(position, &header).map_err(|e| LogError::io(segment.file.path(), e))?;
                    if let Some(found) = first_record_at_or_after(&batch, &header, timestamp, self.log_start_offset)? {
                        return Ok(Some(found));
                    }
                }
                position += header.total_len() as u64;
            }
        }
        Ok(None)
    }

    /// The first record with the largest timestamp in the log (KIP-734's
    /// ListOffsets MAX_TIMESTAMP), or None when the log holds no timestamps.
    pub fn max_timestamp_offset(&self) -> Result<Option<TimestampOffset>, LogError> {
        match self.segments.values().map(|s| s.max_timestamp).max() {
            Some(max) if max >= 0 => self.offset_for_timestamp(max),
            _ => Ok(None),
        }
    }

    /// Deletes sealed segments past `retention.ms` / `retention.bytes`.
    /// Returns how many were deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let Some(cut) = self.retention_cut(now_ms) else { return Ok(0) };
        let doomed: Vec<i64> = self.segments.range(..cut).map(|(b, _)| *b).collect();
        for base in &doomed {
            let path = segment_path(&self.dir, *base);
            self.segments.remove(base);
            // The next segment's base, not the removed one's end: after
            // compaction the two may differ.
            // Never below a start DeleteRecords set inside the next segment.
            let next_base = *self.segments.keys().next().expect("the active segment remains");
            self.log_start_offset = self.log_start_offset.max(next_base);
            self.storage.remove_file(&path).map_err(|e| LogError::io(&path, e))?;
            info!(file = %path.display(), log_start_offset = self.log_start_offset, "retention deleted segment");
        }
        Ok(doomed.len())
    }

    /// Where retention would have the log start now: the base of the first
    /// segment `retention.ms` / `retention.bytes` keep; None when it keeps
    /// every segment. The active segment is always kept. A replicated log
    /// asks this and moves its start through its Raft group instead.
    pub fn retention_cut(&self, now_ms: i64) -> Option<i64> {
        let mut total = self.size_bytes();
        let mut cut = None;
        let mut sealed = self.segments.values().peekable();
        while let Some(oldest) = sealed.next() {
            let Some(next) = sealed.peek() else { break };
            let over_size = self.config.retention_bytes >= 0 && total.saturating_sub(oldest.size) >= self.config.retention_bytes as u64;
            let over_age = self.config.retention_ms >= 0 && oldest.max_timestamp >= 0 && now_ms - oldest.max_timestamp > self.config.retention_ms;
            if !(over_size || over_age) {
                break;
            }
            total -= oldest.size;
            cut = Some(next.base_offset);
        }
        cut
    }

    /// Removes the whole log directory (topic deletion).
    pub fn delete(self) -> Result<(), LogError> {
        self.storage.remove_dir_all(&self.dir).map_err(|e| LogError::io(&self.dir, e))
    }
}

/// Reads batches from a planned slice: whole batches only, starting with the
/// one holding `target_offset`, at most `max_bytes`, and none whose base
/// offset is at or past `max_offset_exclusive`. With `min_one_batch` a first
/// batch larger than `max_bytes` is returned whole so the consumer can
/// progress (KIP-74: only the first partition with data in a fetch may
/// exceed the limits); without it such a read returns nothing.
pub fn read_slice(slice: &ReadSlice, max_bytes: usize, max_offset_exclusive: i64, min_one_batch: bool) -> std::io::Result<Bytes> {
    let mut position = slice.start_position;
    let mut header_buf = [0u8; BATCH_HEADER_LEN];
    // Skip to the batch holding the target offset.
    let first = loop {
        if position + BATCH_HEADER_LEN as u64 > slice.end_position {
            return Ok(Bytes::new());
        }
        slice.file.read_exact_at(&mut header_buf, position)?;
        let header = BatchHeader::parse(&header_buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", slice.file.path().display())))?;
        if header.last_offset() >= slice.target_offset {
            break header;
        }
        position += header.total_len() as u64;
    };
    if first.base_offset >= max_offset_exclusive {
        return Ok(Bytes::new());
    }
    if !min_one_batch && first.total_len() > max_bytes {
        return Ok(Bytes::new());
    }
    let available = (slice.end_position - position) as usize;
    let want = max_bytes.max(first.total_len()).min(available);
    let mut buf = vec![0u8; want];
    slice.file.read_exact_at(&mut buf, position)?;
    // Trim to whole batches below the offset limit.
    let mut keep = 0usize;
    while keep + BATCH_HEADER_LEN <= buf.len() {
        let Ok(h) = BatchHeader::parse(&buf[keep..]) else { break };
        if keep + h.total_len() > buf.len() || h.base_offset >= max_offset_exclusive {
            break;
        }
        keep += h.total_len();
    }
    buf.truncate(keep);
    Ok(Bytes::from(buf))
}

/// Scans a segment from the start, validating every batch, and fills in its
/// index. Stops at the first bad batch: if anything valid follows it, that
/// is corruption; otherwise it is a torn tail.
fn scan_segment(segment: &mut Segment, config: &LogConfig, observe: &mut dyn FnMut(&BatchHeader, &[u8])) -> Result<ScanEnd, LogError> {
    let path = segment.file.path().to_path_buf();
    let file_len = segment.file.len().map_err(|e| LogError::io(&path, e))?;
    let mut position = 0u64;
    let mut batch = Vec::new();
    let mut header_buf = [0u8; BATCH_HEADER_LEN];
    while position < file_len {
        let problem: Option<String> = 'check: {
            if file_len - position < BATCH_HEADER_LEN as u64 {
                break 'check Some(format!("{} trailing bytes, less than a batch header", file_len - position));
            }
            segment.file.read_exact_at(&mut header_buf, position).map_err(|e| LogError::io(&path, e))?;
            let header = match BatchHeader::parse(&header_buf) {
                Ok(h) => h,
                Err(e) => break 'check Some(e.to_string()),
            };
            let len = header.total_len() as u64;
            if position + len > file_len {
                break 'check Some(format!("batch of {len} bytes runs past the end of the file"));
            }
            batch.resize(len as usize, 0);
            segment.file.read_exact_at(&mut batch, position).map_err(|e| LogError::io(&path, e))?;
            if let Err(e) = check_crc(&batch, &header) {
                break 'check Some(e.to_string());
            }
            // Appended batches have count = last offset delta + 1; cleaned
            // ones may hold fewer records (none, for a producer's last batch).
            if header.last_offset_delta < 0 || header.record_count < 0 || header.record_count > header.last_offset_delta + 1 {
                break 'check Some(format!(
                    "record count {} does not match last offset delta {}",
                    header.record_count, header.last_offset_delta
                ));
            }
            if header.base_offset.checked_add(header.last_offset_delta as i64 + 1).is_none() {
                // Offsets past i64::MAX: no append ever wrote this (found by fuzzing).
                return Err(LogError::Corrupt {
                    path,
                    position,
                    expected_offset: segment.next_offset,
                    reason: format!("batch at base offset {} with last offset delta {} ends past the largest offset", header.base_offset, header.last_offset_delta),
                });
            }
            if header.base_offset < segment.next_offset {
                // A whole, CRC-valid batch at the wrong offset is not a torn write.
                return Err(LogError::Corrupt {
                    path,
                    position,
                    expected_offset: segment.next_offset,
                    reason: format!("batch has base offset {}, below the previous batch's end", header.base_offset),
                });
            }
            segment.note_batch(&header, position, config.index_interval_bytes);
            observe(&header, &batch);
            position += len;
            None
        };
        if let Some(reason) = problem {
            if let Some(valid_at) = find_valid_batch_after(segment.file.as_ref(), position + 1, file_len)? {
                return Err(LogError::Corrupt {
                    path,
                    position,
                    expected_offset: segment.next_offset,
                    reason: format!("{reason}; a valid batch follows at byte {valid_at}"),
                });
            }
            return Ok(ScanEnd::TornTail { position, reason });
        }
    }
    segment.size = position;
    Ok(ScanEnd::Clean)
}

/// Looks for any CRC-valid batch starting in `[from, file_len)`.
fn find_valid_batch_after(file: &dyn StorageFile, from: u64, file_len: u64) -> Result<Option<u64>, LogError> {
    if from >= file_len {
        return Ok(None);
    }
    let len = (file_len - from).min(CORRUPTION_SCAN_LIMIT_BYTES) as usize;
    let mut rest = vec![0u8; len];
    file.read_exact_at(&mut rest, from).map_err(|e| LogError::io(file.path(), e))?;
    for i in 0..rest.len() {
        if rest.len() - i < BATCH_HEADER_LEN || rest[i + 16] != 2 {
            continue;
        }
        let Ok(header) = BatchHeader::parse(&rest[i..]) else { continue };
        let total = header.total_len();
        if i + total > rest.len() || header.record_count < 0 {
            continue;
        }
        if check_crc(&rest[i..i + total], &header).is_ok() {
            return Ok(Some(from + i as u64));
        }
    }
    Ok(None)
}
