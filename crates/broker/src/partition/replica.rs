//! A partition as a Raft replica sees it: the leader checks and stamps a
//! batch before proposing it; every replica appends the entries' batches
//! verbatim, truncates an uncommitted suffix a new leader replaced, and
//! keeps the producer state in step with its log.

use std::sync::atomic::Ordering;

use ferry_log::batch::{set_base_offset, set_leader_epoch, BatchHeader};
use ferry_log::{read_slice, ReadPlan};

use super::{Inner, Partition, PartitionLog, NOT_REPLICATED};
use crate::engine::MAX_PRODUCERS_PER_PARTITION;
use crate::error::{EngineError, EngineResult};
use crate::producer_state::{ProducerStateTable, SequenceCheck};

/// What the leader learned of a batch before proposing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaPrepared {
    Append,
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// Records that `epoch` wrote a batch at `base_offset` (epochs only grow
/// along a log).
fn note_epoch(epochs: &mut Vec<(i32, i64)>, epoch: i32, base_offset: i64) {
    if epochs.last().is_none_or(|(e, _)| epoch > *e) {
        epochs.push((epoch, base_offset));
    }
}

fn disk(inner: &mut Inner) -> EngineResult<&mut ferry_log::DiskLog> {
    match &mut inner.log {
        PartitionLog::Disk(l) => Ok(l),
        PartitionLog::Memory(_) => Err(EngineError::ReplicatedUnsupported("memory topics are not replicated".into())),
    }
}

impl Partition {
    pub fn is_replicated(&self) -> bool {
        self.replica_high_watermark.load(Ordering::Acquire) != NOT_REPLICATED
    }

    pub(super) fn refuse_if_replicated(&self, what: &str) -> EngineResult<()> {
        if self.is_replicated() {
            return Err(EngineError::ReplicatedUnsupported(what.to_string()));
        }
        Ok(())
    }

    /// From now on this partition's log is a Raft log: local appends are
    /// refused and readers see only what the group committed.
    pub fn start_replication(&self) -> EngineResult<()> {
        if matches!(self.inner.lock().log, PartitionLog::Memory(_)) {
            return Err(EngineError::ReplicatedUnsupported("memory topics are not replicated".into()));
        }
        let _ = self.replica_high_watermark.compare_exchange(NOT_REPLICATED, 0, Ordering::AcqRel, Ordering::Acquire);
        Ok(())
    }

    /// Every batch from the log start: (base offset, last offset, leader
    /// epoch). Rebuilds the epoch cache on the way.
    pub fn replica_batches(&self, visit: &mut dyn FnMut(i64, i64, i32)) -> EngineResult<()> {
        let mut inner = self.inner.lock();
        let mut epochs = Vec::new();
        let log = disk(&mut inner)?;
        let start = log.log_start_offset();
        log.for_each_batch(start, &mut |h, bytes| {
            let epoch = ferry_log::batch::leader_epoch(bytes).unwrap_or(0);
            note_epoch(&mut epochs, epoch, h.base_offset);
            visit(h.base_offset, h.last_offset(), epoch);
            true
        })?;
        inner.epochs = epochs;
        Ok(())
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` that
    /// wrote data, and the first offset written after it (None when `epoch`
    /// is older than all). A partition that is not replicated has one
    /// epoch, 0, from its log start.
    pub fn epoch_end_offset(&self, epoch: i32) -> Option<(i32, i64)> {
        let offsets = self.offsets();
        let inner = self.inner.lock();
        let epochs: &[(i32, i64)] = if inner.epochs.is_empty() { &[(0, 0)] } else { &inner.epochs };
        let i = epochs.partition_point(|(e, _)| *e <= epoch);
        if i == 0 {
            return None;
        }
        let end = epochs.get(i).map_or(offsets.high_watermark, |(_, start)| (*start).min(offsets.high_watermark));
        Some((epochs[i - 1].0, end))
    }

    /// Leader: checks a producer's batch against the producer state, gives
    /// it its offsets and Raft term, and counts it there.
    pub fn replica_prepare(&self, batch: &mut [u8], base_offset: i64, leader_epoch: i32, now_ms: i64) -> EngineResult<ReplicaPrepared> {
        let mut header = BatchHeader::parse(batch).map_err(|e| EngineError::CorruptMessage(e.to_string()))?;
        let mut inner = self.inner.lock();
        if header.is_control() {
            return Self::prepare_marker(&mut inner, batch, &header, base_offset, leader_epoch, now_ms);
        }
        if header.producer_id >= 0 {
            if let SequenceCheck::Duplicate { base_offset, last_offset } = inner.producers.check(&header)? {
                return Ok(ReplicaPrepared::Duplicate { base_offset, last_offset });
            }
        }
        set_base_offset(batch, base_offset);
        set_leader_epoch(batch, leader_epoch);
        note_epoch(&mut inner.epochs, leader_epoch, base_offset);
        header.base_offset = base_offset;
        inner.producers.record_batch(&header, now_ms);
        inner.recorded_through = header.last_offset() + 1;
        drop(inner);
        if let Some(m) = &self.metrics {
            m.records_in.inc_by(header.record_count as u64);
            m.bytes_in.inc_by(batch.len() as u64);
        }
        Ok(ReplicaPrepared::Append)
    }

    /// Leader: a transaction marker from the coordinator (never from a
    /// client: Produce refuses control batches). Counted at once, like a
    /// data batch, so the producer's next transaction starts after it.
    fn prepare_marker(inner: &mut Inner, batch: &mut [u8], header: &BatchHeader, base_offset: i64, leader_epoch: i32, now_ms: i64) -> EngineResult<ReplicaPrepared> {
        inner.producers.check_marker(header.producer_id, header.producer_epoch)?;
        let kind = ferry_log::batch::control_type(batch).ok_or_else(|| EngineError::CorruptMessage("control batch without a marker".into()))?;
        set_base_offset(batch, base_offset);
        set_leader_epoch(batch, leader_epoch);
        note_epoch(&mut inner.epochs, leader_epoch, base_offset);
        inner.producers.record_marker(header.producer_id, header.producer_epoch, kind, base_offset, now_ms);
        inner.txn_events += 1;
        inner.recorded_through = base_offset + header.last_offset_delta as i64 + 1;
        Ok(ReplicaPrepared::Append)
    }

    /// Appends entries' batches as they are and brings the producer state
    /// up to date with the ones it has not counted yet.
    pub fn replica_append(&self, payload: &[u8], now_ms: i64) -> EngineResult<()> {
        let mut batches = Vec::new();
        let mut rest = payload;
        while !rest.is_empty() {
            let header = BatchHeader::parse(rest).map_err(|e| EngineError::CorruptMessage(e.to_string()))?;
            let len = header.total_len();
            let bytes = rest.get(..len).ok_or_else(|| EngineError::CorruptMessage("entry batch cut short".into()))?;
            ferry_log::batch::check_crc(bytes, &header).map_err(|e| EngineError::CorruptMessage(e.to_string()))?;
            batches.push((header, bytes));
            rest = &rest[len..];
        }
        let headers: Vec<BatchHeader> = batches.iter().map(|(h, _)| *h).collect();
        let mut inner = self.inner.lock();
        disk(&mut inner)?.append_verbatim(payload, &headers, now_ms)?;
        for (h, bytes) in &batches {
            note_epoch(&mut inner.epochs, ferry_log::batch::leader_epoch(bytes).unwrap_or(0), h.base_offset);
            if h.is_control() {
                inner.txn_events += 1;
            }
            if h.base_offset >= inner.recorded_through {
                inner.producers.replay(h, bytes, now_ms);
                inner.recorded_through = h.last_offset() + 1;
            }
        }
        Ok(())
    }

    /// Fsyncs what was appended; the fsync itself runs outside the lock.
    pub fn replica_sync(&self) -> EngineResult<()> {
        let job = disk(&mut self.inner.lock())?.sync_job();
        let Some(job) = job else { return Ok(()) };
        let result = super::run_timed(&job, self.metrics.as_ref().map(|m| &m.fsync_duration));
        let durable = {
            let mut inner = self.inner.lock();
            let log = disk(&mut inner)?;
            log.finish_sync(&job, &result);
            log.durable_offset()
        };
        self.durable_tx.send_replace(durable);
        result.map_err(|e| EngineError::Storage(format!("fsync failed: {e}")))
    }

    /// Removes the batches at and after `offset` (never committed) and
    /// rebuilds the producer state from what stays.
    pub fn replica_truncate(&self, offset: i64, now_ms: i64) -> EngineResult<()> {
        let committed = self.replica_high_watermark.load(Ordering::Acquire);
        assert!(offset >= committed, "truncating below the high watermark ({offset} < {committed})");
        let mut inner = self.inner.lock();
        disk(&mut inner)?.truncate_to(offset)?;
        Self::rebuild_producers(&mut inner, now_ms)
    }

    /// This broker's replica moved away: every batch goes (durably) and the
    /// committed state with it, so a later return starts from an empty
    /// log. Readers are refused here meanwhile (not a replica: not leader).
    pub fn replica_clear(&self, now_ms: i64) -> EngineResult<()> {
        let mut inner = self.inner.lock();
        disk(&mut inner)?.reset_to(0)?;
        self.replica_high_watermark.store(0, Ordering::Release);
        self.replica_log_start.store(0, Ordering::Release);
        Self::rebuild_producers(&mut inner, now_ms)
    }

    /// A prepared batch was not proposed: count only what the log holds.
    pub fn replica_discard_prepared(&self, now_ms: i64) -> EngineResult<()> {
        Self::rebuild_producers(&mut self.inner.lock(), now_ms)
    }

    /// Producer state and epoch cache from what the log holds now. The
    /// coordinator's allowances are not in the log: they carry over for
    /// producers still at the epoch they were given for (a marker that
    /// cleared one was counted, so its allowance is already gone), and
    /// every verification in flight must start again (`txn_events`).
    fn rebuild_producers(inner: &mut Inner, now_ms: i64) -> EngineResult<()> {
        let allowances = inner.producers.allowances();
        inner.txn_events += 1;
        let mut producers = ProducerStateTable::new(MAX_PRODUCERS_PER_PARTITION);
        let mut epochs = Vec::new();
        let log = disk(inner)?;
        log.for_each_batch(log.log_start_offset(), &mut |h, bytes| {
            note_epoch(&mut epochs, ferry_log::batch::leader_epoch(bytes).unwrap_or(0), h.base_offset);
            producers.replay(h, bytes, now_ms);
            true
        })?;
        inner.recorded_through = log.next_offset();
        for (producer_id, epoch) in allowances {
            if producers.epoch_of(producer_id).is_none_or(|current| current <= epoch) {
                let _ = producers.allow_txn(producer_id, epoch, now_ms);
            }
        }
        inner.producers = producers;
        inner.epochs = epochs;
        Ok(())
    }

    /// Whole batches from `from_offset` (at least one), about `max_bytes`.
    pub fn replica_read(&self, from_offset: i64, max_bytes: usize) -> EngineResult<Vec<u8>> {
        let plan = disk(&mut self.inner.lock())?.read_plan(from_offset)?;
        match plan {
            None => Ok(Vec::new()),
            Some(ReadPlan::Ready(b)) => Ok(b.to_vec()),
            Some(ReadPlan::Disk(slice)) => {
                let bytes = read_slice(&slice, max_bytes, i64::MAX, true).map_err(|e| EngineError::Storage(format!("read failed: {e}")))?;
                Ok(bytes.to_vec())
            }
        }
    }

    /// Where this replica's batches start on disk (not the log start
    /// readers see, which a DeleteRecords may have moved past it).
    pub fn replica_start_offset(&self) -> EngineResult<i64> {
        Ok(disk(&mut self.inner.lock())?.log_start_offset())
    }

    /// Below which offset this replica may drop its batches now: what
    /// retention (`retention.ms`, `retention.bytes`) and a committed
    /// DeleteRecords no longer keep, but never at or past the high
    /// watermark or the first offset of an open transaction, whose start a
    /// replica rebuilding from this point must see. None: nothing to drop.
    pub fn replica_retention_target(&self, now_ms: i64) -> EngineResult<Option<i64>> {
        let committed = self.replica_high_watermark.load(Ordering::Acquire);
        let mut inner = self.inner.lock();
        let stable = inner.producers.first_unstable_offset(committed).unwrap_or(committed).min(committed);
        let log = disk(&mut inner)?;
        let wanted = log.retention_cut(now_ms).unwrap_or(0).max(self.replica_log_start.load(Ordering::Acquire));
        let target = wanted.min(stable);
        Ok((target > log.log_start_offset()).then_some(target))
    }

    /// Drops the batches below `offset` (a batch start at or below the high
    /// watermark): the segments wholly below it are deleted and the log
    /// starts there for readers too.
    pub fn replica_compact(&self, offset: i64) -> EngineResult<()> {
        let committed = self.replica_high_watermark.load(Ordering::Acquire);
        assert!(offset <= committed, "compacting past the high watermark ({offset} > {committed})");
        disk(&mut self.inner.lock())?.delete_records(offset)?;
        self.replica_log_start.fetch_max(offset, Ordering::AcqRel);
        Ok(())
    }

    /// Installs a leader's snapshot: every batch goes and the log starts,
    /// empty and committed, at `offset`; what follows comes from the
    /// leader's log. The producer state starts empty, as a log that begins
    /// there would rebuild it.
    pub fn replica_reset(&self, offset: i64, now_ms: i64) -> EngineResult<()> {
        let mut inner = self.inner.lock();
        disk(&mut inner)?.reset_to(offset)?;
        self.replica_high_watermark.fetch_max(offset, Ordering::AcqRel);
        self.replica_log_start.fetch_max(offset, Ordering::AcqRel);
        Self::rebuild_producers(&mut inner, now_ms)
    }

    /// A committed DeleteRecords: readers see nothing below `offset`.
    pub fn replica_set_log_start(&self, offset: i64) {
        self.replica_log_start.fetch_max(offset, Ordering::AcqRel);
    }

    /// The group committed everything below `high_watermark`.
    pub fn replica_commit(&self, high_watermark: i64) {
        self.replica_high_watermark.fetch_max(high_watermark, Ordering::AcqRel);
    }
}
