//! One cleaning pass, run with no lock held: build the key → last offset
//! map over the dirty range, then rewrite the log from its start, a group
//! of segments at a time, keeping what Kafka's cleaner keeps.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::state::cleaned_path;
use super::{CleanPlan, SourceSegment};
use crate::batch::{check_crc, control_type, BatchHeader, ControlType, BATCH_HEADER_LEN};
use crate::error::LogError;
use crate::records::{decode_records, delete_horizon_ms, rebuild_batch, records_section, Record};
use crate::storage::StorageFile;

/// Bytes the offset map is charged per key besides the key itself.
const MAP_ENTRY_OVERHEAD_BYTES: usize = 64;
/// Cleaned bytes buffered before each write to the `.cleaned` file.
const WRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// An aborted transaction's range (from the aborted-transaction index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedRange {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// What the partition knows that its log does not.
#[derive(Debug, Clone, Default)]
pub struct CleanInputs {
    pub now_ms: i64,
    /// Producer id → last offset of its last data batch. That batch is
    /// kept (empty if need be) so the producer's sequence survives a restart.
    pub producer_last_offsets: HashMap<i64, i64>,
    pub aborted: Vec<AbortedRange>,
}

/// Bounds shared by every pass of one cleaner.
#[derive(Debug, Clone)]
pub struct CleanerLimits {
    /// `log.cleaner.dedupe.buffer.size`: memory for the key → offset map.
    pub dedupe_buffer_bytes: usize,
    pub throttle: Arc<Throttle>,
}

/// `log.cleaner.io.max.bytes.per.second`: read and write bytes per second
/// across all passes of one cleaner.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_second: f64,
    window: Mutex<(Instant, f64)>,
}

impl Throttle {
    pub fn new(bytes_per_second: f64) -> Throttle {
        Throttle { bytes_per_second, window: Mutex::new((Instant::now(), 0.0)) }
    }

    /// Accounts for `bytes` of I/O, sleeping if the pass is ahead of the rate.
    pub fn consume(&self, bytes: usize) {
        if !self.bytes_per_second.is_finite() || self.bytes_per_second <= 0.0 {
            return;
        }
        let sleep = {
            let mut w = self.window.lock();
            w.1 += bytes as f64;
            let due = Duration::from_secs_f64(w.1 / self.bytes_per_second);
            let elapsed = w.0.elapsed();
            if elapsed > Duration::from_secs(1) && due <= elapsed {
                *w = (Instant::now(), 0.0);
            }
            due.checked_sub(elapsed)
        };
        if let Some(d) = sleep {
            std::thread::sleep(d);
        }
    }
}

/// A cleaned segment written aside and fsynced, ready to be swapped in.
#[derive(Debug)]
pub struct CleanedSegment {
    pub(crate) base_offset: i64,
    pub(crate) path: PathBuf,
    pub(crate) sources: Vec<SourceSegment>,
    pub(crate) batches: Vec<(BatchHeader, u64)>,
    pub(crate) size: u64,
}

/// What a pass did.
#[derive(Debug, Clone, Default)]
pub struct CleanOutcome {
    /// Every group was swapped in (none was raced by retention).
    pub complete: bool,
    pub first_dirty_offset: i64,
    pub next_horizon_ms: Option<i64>,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
}

/// Runs one pass of `plan`. `install` swaps each cleaned segment in under
/// the partition's lock ([`crate::DiskLog::install_cleaned`]).
pub fn clean(
    plan: &CleanPlan,
    inputs: &CleanInputs,
    limits: &CleanerLimits,
    install: &mut dyn FnMut(CleanedSegment) -> Result<bool, LogError>,
) -> Result<CleanOutcome, LogError> {
    let map = OffsetMap::build(plan, inputs, limits)?;
    let mut pass = Pass::new(plan, inputs, &map);
    let mut outcome = CleanOutcome { complete: true, first_dirty_offset: map.end_offset, ..CleanOutcome::default() };
    let rewritten: Vec<&SourceSegment> = plan.sources.iter().filter(|s| s.base_offset < map.end_offset).collect();
    for group in group_by_size(&rewritten, plan.config.segment_bytes) {
        outcome.bytes_before += group.iter().map(|s| s.size).sum::<u64>();
        let cleaned = pass.clean_group(&group, limits)?;
        outcome.bytes_after += cleaned.size;
        outcome.complete &= install(cleaned)?;
    }
    outcome.next_horizon_ms = pass.next_horizon_ms;
    outcome.records_removed = pass.records_removed;
    Ok(outcome)
}

/// Consecutive segments whose total size fits one segment.
fn group_by_size<'a>(sources: &[&'a SourceSegment], segment_bytes: u64) -> Vec<Vec<&'a SourceSegment>> {
    let mut groups: Vec<Vec<&SourceSegment>> = Vec::new();
    let mut group_bytes = 0u64;
    for &src in sources {
        match groups.last_mut() {
            Some(g) if group_bytes + src.size <= segment_bytes => {
                g.push(src);
                group_bytes += src.size;
            }
            _ => {
                groups.push(vec![src]);
                group_bytes = src.size;
            }
        }
    }
    groups
}

/// Calls `f` with every batch of `src` in order, each CRC-checked.
fn for_each_batch(
    src: &SourceSegment,
    throttle: &Throttle,
    f: &mut dyn FnMut(&BatchHeader, &[u8]) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    let path = src.file.path().to_path_buf();
    let corrupt = |position: u64, reason: String| LogError::Corrupt { path: path.clone(), position, expected_offset: -1, reason };
    let mut position = 0u64;
    let mut batch = Vec::new();
    while position + BATCH_HEADER_LEN as u64 <= src.size {
        let mut head = [0u8; BATCH_HEADER_LEN];
        src.file.read_exact_at(&mut head, position).map_err(|e| LogError::io(&path, e))?;
        let header = BatchHeader::parse(&head).map_err(|e| corrupt(position, e.to_string()))?;
        let len = header.total_len();
        if position + len as u64 > src.size {
            return Err(corrupt(position, "batch runs past the segment".into()));
        }
        batch.resize(len, 0);
        src.file.read_exact_at(&mut batch, position).map_err(|e| LogError::io(&path, e))?;
        check_crc(&batch, &header).map_err(|e| corrupt(position, e.to_string()))?;
        throttle.consume(len);
        if !f(&header, &batch)? {
            return Ok(());
        }
        position += len as u64;
    }
    Ok(())
}

/// Aborted ranges by producer, for "is this batch aborted data".
struct AbortedIndex(HashMap<i64, Vec<(i64, i64)>>);

impl AbortedIndex {
    fn new(ranges: &[AbortedRange]) -> AbortedIndex {
        let mut map: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for r in ranges {
            map.entry(r.producer_id).or_default().push((r.first_offset, r.last_offset));
        }
        AbortedIndex(map)
    }
    fn contains(&self, header: &BatchHeader) -> bool {
        header.is_transactional()
            && !header.is_control()
            && self.0.get(&header.producer_id).is_some_and(|v| v.iter().any(|&(f, l)| f <= header.base_offset && header.base_offset <= l))
    }
}

/// The last offset of every key in the dirty range.
struct OffsetMap {
    last_offset_by_key: HashMap<Box<[u8]>, i64>,
    /// The map covers `[first dirty, end_offset)`; a batch boundary.
    end_offset: i64,
}

impl OffsetMap {
    fn build(plan: &CleanPlan, inputs: &CleanInputs, limits: &CleanerLimits) -> Result<OffsetMap, LogError> {
        let aborted = AbortedIndex::new(&inputs.aborted);
        let mut map = OffsetMap { last_offset_by_key: HashMap::new(), end_offset: plan.clean_end_offset };
        let mut charged = 0usize;
        let mut full = false;
        for src in plan.sources.iter().filter(|s| s.base_offset < plan.clean_end_offset) {
            for_each_batch(src, &limits.throttle, &mut |header, batch| {
                if header.last_offset() < plan.first_dirty_offset {
                    return Ok(true);
                }
                if header.base_offset >= plan.clean_end_offset {
                    return Ok(false);
                }
                if header.is_control() || aborted.contains(header) || header.record_count == 0 {
                    return Ok(true);
                }
                let section = records_section(batch, header)?;
                // Charge the batch before taking it, so it is all in or all out.
                let worst = section.len() + header.record_count as usize * MAP_ENTRY_OVERHEAD_BYTES;
                if charged > 0 && charged + worst > limits.dedupe_buffer_bytes {
                    map.end_offset = header.base_offset;
                    full = true;
                    return Ok(false);
                }
                for r in decode_records(header, &section)? {
                    if let Some(key) = r.key {
                        let offset = header.base_offset + r.offset_delta as i64;
                        if map.last_offset_by_key.insert(key.into(), offset).is_none() {
                            charged += key.len() + MAP_ENTRY_OVERHEAD_BYTES;
                        }
                    }
                }
                Ok(true)
            })?;
            if full {
                break;
            }
        }
        Ok(map)
    }
}

/// What to do with one batch.
enum Verdict {
    Keep,
    Drop,
    Rewrite(Vec<u8>),
}

/// State carried across the groups of one pass.
struct Pass<'a> {
    plan: &'a CleanPlan,
    inputs: &'a CleanInputs,
    map: &'a OffsetMap,
    aborted: AbortedIndex,
    /// Producers with transactional data kept since their last marker: that
    /// marker must stay, or a restart would see the transaction as open.
    txn_data_kept: HashSet<i64>,
    next_horizon_ms: Option<i64>,
    records_removed: u64,
}

impl<'a> Pass<'a> {
    fn new(plan: &'a CleanPlan, inputs: &'a CleanInputs, map: &'a OffsetMap) -> Pass<'a> {
        Pass {
            plan,
            inputs,
            map,
            aborted: AbortedIndex::new(&inputs.aborted),
            txn_data_kept: HashSet::new(),
            next_horizon_ms: None,
            records_removed: 0,
        }
    }

    fn new_horizon_ms(&self) -> i64 {
        self.inputs.now_ms.saturating_add(self.plan.config.delete_retention_ms)
    }

    fn note_horizon(&mut self, horizon: Option<i64>) {
        if let Some(h) = horizon {
            self.next_horizon_ms = Some(self.next_horizon_ms.map_or(h, |n| n.min(h)));
        }
    }

    fn clean_group(&mut self, group: &[&SourceSegment], limits: &CleanerLimits) -> Result<CleanedSegment, LogError> {
        let base_offset = group[0].base_offset;
        let path = cleaned_path(&self.plan.dir, base_offset);
        let file = self.plan.storage.open(&path, true).map_err(|e| LogError::io(&path, e))?;
        file.set_len(0).map_err(|e| LogError::io(&path, e))?;
        let mut out = Output { file, buf: Vec::with_capacity(WRITE_CHUNK_BYTES), written: 0, batches: Vec::new() };
        for src in group {
            for_each_batch(src, &limits.throttle, &mut |header, batch| {
                match self.verdict(header, batch)? {
                    Verdict::Keep => out.push(header, batch, limits)?,
                    Verdict::Drop => {}
                    Verdict::Rewrite(bytes) => {
                        let rewritten = BatchHeader::parse(&bytes)?;
                        out.push(&rewritten, &bytes, limits)?;
                    }
                }
                Ok(true)
            })?;
        }
        out.flush(limits)?;
        out.file.sync().map_err(|e| LogError::io(&path, e))?;
        Ok(CleanedSegment {
            base_offset,
            path,
            sources: group.iter().map(|s| (*s).clone()).collect(),
            batches: out.batches,
            size: out.written,
        })
    }

    fn verdict(&mut self, header: &BatchHeader, batch: &[u8]) -> Result<Verdict, LogError> {
        let pid = header.producer_id;
        if header.base_offset >= self.map.end_offset {
            // Beyond this pass's map: kept as is, cleaned by a later pass.
            if header.is_control() {
                self.txn_data_kept.remove(&pid);
            } else if header.is_transactional() {
                self.txn_data_kept.insert(pid);
            }
            return Ok(Verdict::Keep);
        }
        if header.is_control() {
            return Ok(self.marker_verdict(header, batch));
        }
        let verdict = self.data_verdict(header, batch)?;
        if header.is_transactional() && !matches!(verdict, Verdict::Drop) {
            self.txn_data_kept.insert(pid);
        }
        Ok(verdict)
    }

    /// A marker goes once its transaction has no data left and its delete
    /// horizon has passed; the first pass that could remove it sets the horizon.
    fn marker_verdict(&mut self, header: &BatchHeader, batch: &[u8]) -> Verdict {
        let is_marker = matches!(control_type(batch), Some(ControlType::Commit | ControlType::Abort));
        let had_data = self.txn_data_kept.remove(&header.producer_id);
        if !is_marker || had_data {
            self.note_horizon(delete_horizon_ms(header));
            return Verdict::Keep;
        }
        match delete_horizon_ms(header) {
            Some(h) if h <= self.inputs.now_ms => {
                self.records_removed += 1;
                Verdict::Drop
            }
            Some(h) => {
                self.note_horizon(Some(h));
                Verdict::Keep
            }
            None => self.with_new_horizon(header, batch),
        }
    }

    fn with_new_horizon(&mut self, header: &BatchHeader, batch: &[u8]) -> Verdict {
        let horizon = self.new_horizon_ms();
        let rebuilt = records_section(batch, header)
            .and_then(|section| decode_records(header, &section).and_then(|recs| rebuild_batch(header, &recs, Some(horizon))));
        match rebuilt {
            Ok(bytes) => {
                self.note_horizon(Some(horizon));
                Verdict::Rewrite(bytes)
            }
            // A marker we cannot re-encode stays as it is.
            Err(_) => Verdict::Keep,
        }
    }

    fn data_verdict(&mut self, header: &BatchHeader, batch: &[u8]) -> Result<Verdict, LogError> {
        let now = self.inputs.now_ms;
        let horizon = delete_horizon_ms(header);
        let aborted = self.aborted.contains(header);
        let section = records_section(batch, header)?;
        let records = decode_records(header, &section)?;
        let kept: Vec<Record> = records
            .iter()
            .filter(|r| !aborted && self.keeps(header, r, horizon, now))
            .copied()
            .collect();
        let needs_horizon = horizon.is_none() && kept.iter().any(|r| r.value.is_none());
        self.records_removed += (records.len() - kept.len()) as u64;
        if kept.len() == records.len() && !needs_horizon {
            self.note_horizon(horizon);
            return Ok(Verdict::Keep);
        }
        let producers_last = header.producer_id >= 0
            && self.inputs.producer_last_offsets.get(&header.producer_id) == Some(&header.last_offset());
        if kept.is_empty() && !producers_last {
            return Ok(Verdict::Drop);
        }
        let horizon = horizon.or(needs_horizon.then(|| self.new_horizon_ms()));
        let horizon = horizon.filter(|_| !kept.is_empty());
        self.note_horizon(horizon);
        Ok(Verdict::Rewrite(rebuild_batch(header, &kept, horizon)?))
    }

    /// Kafka's rule for one record: a keyless record or one a later record of
    /// its key supersedes goes; a tombstone goes once its horizon passed.
    fn keeps(&self, header: &BatchHeader, r: &Record, horizon: Option<i64>, now_ms: i64) -> bool {
        let Some(key) = r.key else { return false };
        let offset = header.base_offset + r.offset_delta as i64;
        if self.map.last_offset_by_key.get(key).is_some_and(|&last| last > offset) {
            return false;
        }
        !(r.value.is_none() && horizon.is_some_and(|h| h <= now_ms))
    }
}

/// The `.cleaned` file being written.
struct Output {
    file: Arc<dyn StorageFile>,
    buf: Vec<u8>,
    written: u64,
    batches: Vec<(BatchHeader, u64)>,
}

impl Output {
    fn push(&mut self, header: &BatchHeader, batch: &[u8], limits: &CleanerLimits) -> Result<(), LogError> {
        self.batches.push((*header, self.written + self.buf.len() as u64));
        self.buf.extend_from_slice(batch);
        if self.buf.len() >= WRITE_CHUNK_BYTES {
            self.flush(limits)?;
        }
        Ok(())
    }

    fn flush(&mut self, limits: &CleanerLimits) -> Result<(), LogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all_at(&self.buf, self.written).map_err(|e| LogError::io(self.file.path(), e))?;
        limits.throttle.consume(self.buf.len());
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}
