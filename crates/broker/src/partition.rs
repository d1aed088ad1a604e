//! One partition: its log (disk or memory) behind a lock, and group commit.
//!
//! Group commit: an `acks=all` produce appends under the lock, then waits
//! until the partition's durable offset passes its last offset. The first
//! waiter to find no fsync running starts one covering everything appended
//! so far; waiters that arrive meanwhile ride the next one. So concurrent
//! producers share fsyncs, and fsync count tracks time, not requests.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferry_log::batch::{BatchHeader, ControlType};
use ferry_log::{read_slice, AppendInfo, CleanInputs, CleanOutcome, CleanerLimits, DiskLog, MemoryLog, ReadPlan, SyncJob, TimestampOffset};
use ferry_metrics::TopicMetrics;
use parking_lot::Mutex;
use tokio::sync::watch;
use tracing::error;

use crate::error::{EngineError, EngineResult};
use crate::producer_state::{AbortedTxn, ProducerStateTable, ProducerSummary, SequenceCheck};

mod replica;
pub use replica::ReplicaPrepared;

/// `replica_high_watermark` of a partition that is not replicated.
const NOT_REPLICATED: i64 = i64::MIN;

#[derive(Debug)]
pub enum PartitionLog {
    Disk(DiskLog),
    Memory(MemoryLog),
}

impl PartitionLog {
    pub fn next_offset(&self) -> i64 {
        match self {
            PartitionLog::Disk(l) => l.next_offset(),
            PartitionLog::Memory(l) => l.next_offset(),
        }
    }
    pub fn log_start_offset(&self) -> i64 {
        match self {
            PartitionLog::Disk(l) => l.log_start_offset(),
            PartitionLog::Memory(l) => l.log_start_offset(),
        }
    }
}

/// Offsets and sizes of a partition at one instant.
#[derive(Debug, Clone, Copy)]
pub struct PartitionOffsets {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// The next offset the log will write; above the high watermark on a
    /// replicated partition while entries wait to be committed.
    pub log_end_offset: i64,
}

/// The log and the producer state derived from it, changed together.
#[derive(Debug)]
struct Inner {
    log: PartitionLog,
    producers: ProducerStateTable,
    /// Replicated partitions: batches below this offset are counted in
    /// `producers` already (the leader counts them when it proposes them).
    recorded_through: i64,
    /// Replicated partitions: (leader epoch, its first offset) for every
    /// epoch that wrote a batch, ascending: what OffsetForLeaderEpoch reads
    /// (Kafka's leader-epoch cache).
    epochs: Vec<(i32, i64)>,
    /// Counts markers and producer-state rebuilds: a leader's verification
    /// that saw another value before asking the coordinator may not grant
    /// what it was told (a marker may have ended the transaction meanwhile).
    txn_events: u64,
}

/// Where an append landed, and whether it was a retry of an earlier one.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    pub info: AppendInfo,
    pub duplicate: bool,
}

#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    inner: Mutex<Inner>,
    /// Set while one task runs an fsync for this partition.
    sync_running: AtomicBool,
    /// The durable offset, published to waiting producers.
    durable_tx: watch::Sender<i64>,
    /// The topic's counters, resolved once: counting is an atomic add.
    metrics: Option<TopicMetrics>,
    /// On a cluster: the commit index's offset (the high watermark), set by
    /// the partition's Raft group; `NOT_REPLICATED` otherwise.
    replica_high_watermark: AtomicI64,
    /// On a cluster: the log start a committed DeleteRecords set (the
    /// segments below it stay for Raft until snapshots exist).
    replica_log_start: AtomicI64,
}

impl Partition {
    pub fn new(topic: String, index: i32, log: PartitionLog, producers: ProducerStateTable, metrics: Option<TopicMetrics>) -> Partition {
        let durable = match &log {
            PartitionLog::Disk(l) => l.durable_offset(),
            PartitionLog::Memory(_) => i64::MAX,
        };
        let (durable_tx, _) = watch::channel(durable);
        let recorded_through = log.next_offset();
        Partition {
            topic,
            index,
            inner: Mutex::new(Inner { log, producers, recorded_through, epochs: Vec::new(), txn_events: 0 }),
            sync_running: AtomicBool::new(false),
            durable_tx,
            metrics,
            replica_high_watermark: AtomicI64::new(NOT_REPLICATED),
            replica_log_start: AtomicI64::new(0),
        }
    }

    pub fn offsets(&self) -> PartitionOffsets {
        let mut inner = self.inner.lock();
        let hw = match self.replica_high_watermark.load(Ordering::Acquire) {
            NOT_REPLICATED => inner.log.next_offset(),
            committed => committed.min(inner.log.next_offset()),
        };
        let lso = inner.producers.first_unstable_offset(hw).unwrap_or(hw).min(hw);
        PartitionOffsets {
            log_start_offset: inner.log.log_start_offset().max(self.replica_log_start.load(Ordering::Acquire)),
            high_watermark: hw,
            last_stable_offset: lso,
            log_end_offset: inner.log.next_offset(),
        }
    }

    /// Bytes in the partition's segment files; None for a memory log,
    /// which has none.
    pub fn disk_size_bytes(&self) -> Option<u64> {
        match &self.inner.lock().log {
            PartitionLog::Disk(l) => Some(l.size_bytes()),
            PartitionLog::Memory(_) => None,
        }
    }

    pub fn with_log<R>(&self, f: impl FnOnce(&mut PartitionLog) -> R) -> R {
        f(&mut self.inner.lock().log)
    }

    /// Appends one validated batch. Idempotent and transactional batches
    /// are checked against the producer state first; a retry of a batch
    /// already in the log is not appended again but answered with its
    /// original offsets. Returns once the bytes reached the OS (or memory):
    /// the `acks=1` promise.
    pub fn append(&self, payload: &mut [u8], header: &BatchHeader, now_ms: i64) -> EngineResult<Appended> {
        self.refuse_if_replicated("appends go through the partition's Raft group")?;
        let mut inner = self.inner.lock();
        if header.producer_id >= 0 {
            if let SequenceCheck::Duplicate { base_offset, last_offset } = inner.producers.check(header)? {
                let info = AppendInfo { base_offset, last_offset, log_start_offset: inner.log.log_start_offset() };
                return Ok(Appended { info, duplicate: true });
            }
        }
        let info = Self::append_locked(&mut inner, payload, header, now_ms).map_err(|e| {
            error!(topic = %self.topic, partition = self.index, error = %e, "append failed");
            e
        })?;
        let mut stamped = *header;
        stamped.base_offset = info.base_offset;
        inner.producers.record_batch(&stamped, now_ms);
        drop(inner);
        if let Some(m) = &self.metrics {
            m.records_in.inc_by((info.last_offset - info.base_offset + 1) as u64);
            m.bytes_in.inc_by(payload.len() as u64);
        }
        Ok(Appended { info, duplicate: false })
    }

    fn append_locked(inner: &mut Inner, payload: &mut [u8], header: &BatchHeader, now_ms: i64) -> EngineResult<AppendInfo> {
        let headers = std::slice::from_ref(header);
        match &mut inner.log {
            PartitionLog::Disk(l) => l.append(payload, headers, now_ms).map_err(|e| EngineError::Storage(e.to_string())),
            PartitionLog::Memory(l) => Ok(l.append(payload, headers)),
        }
    }

    /// Writes a COMMIT or ABORT marker for the producer's transaction and
    /// returns its offset (wait for [`Partition::wait_durable`] after it).
    pub fn write_marker(&self, producer_id: i64, epoch: i16, commit: bool, now_ms: i64) -> EngineResult<i64> {
        self.refuse_if_replicated("markers go through the partition's Raft group")?;
        let mut inner = self.inner.lock();
        inner.producers.check_marker(producer_id, epoch)?;
        let mut batch = ferry_log::batch::control_batch(producer_id, epoch, commit, 0, now_ms);
        let header = BatchHeader::parse(&batch).map_err(|e| EngineError::CorruptMessage(e.to_string()))?;
        let info = Self::append_locked(&mut inner, &mut batch, &header, now_ms)?;
        let kind = if commit { ControlType::Commit } else { ControlType::Abort };
        inner.producers.record_marker(producer_id, epoch, kind, info.base_offset, now_ms);
        inner.txn_events += 1;
        Ok(info.base_offset)
    }

    /// Lets the producer write transactional data here (AddPartitionsToTxn).
    pub fn allow_txn(&self, producer_id: i64, epoch: i16, now_ms: i64) -> EngineResult<()> {
        self.inner.lock().producers.allow_txn(producer_id, epoch, now_ms)
    }

    /// Whether AddPartitionsToTxn's word for this producer and epoch is
    /// here (on a cluster the leader asks the coordinator for it when it is
    /// not), and the marker count to hand to [`Partition::allow_txn_since`].
    pub fn txn_allowed(&self, producer_id: i64, epoch: i16) -> (bool, u64) {
        let inner = self.inner.lock();
        (inner.producers.txn_allowed(producer_id, epoch), inner.txn_events)
    }

    /// The coordinator confirmed the partition is in the producer's
    /// transaction: allowed, unless a marker (or a rebuild) came since
    /// `txn_events` was read, which may have ended that transaction.
    pub fn allow_txn_since(&self, producer_id: i64, epoch: i16, txn_events: u64, now_ms: i64) -> EngineResult<bool> {
        let mut inner = self.inner.lock();
        if inner.txn_events != txn_events {
            return Ok(false);
        }
        inner.producers.allow_txn(producer_id, epoch, now_ms)?;
        Ok(true)
    }

    /// DeleteRecords: moves the log start up to `offset` (-1: the high
    /// watermark) and returns the log start afterwards, durable on disk.
    /// A lower `offset` leaves it; one past the high watermark is
    /// OffsetOutOfRange. The checkpoint's fsync runs under the lock so no
    /// append or read sees a start that is not yet durable; call this from
    /// a blocking thread.
    pub fn delete_records(&self, offset: i64) -> EngineResult<i64> {
        self.refuse_if_replicated("DeleteRecords")?;
        let mut inner = self.inner.lock();
        let hw = inner.log.next_offset();
        let target = if offset == -1 { hw } else { offset };
        // Aborted ranges below the new start go at the next producer expiry.
        match &mut inner.log {
            PartitionLog::Disk(l) => Ok(l.delete_records(target)?),
            PartitionLog::Memory(l) => Ok(l.delete_records(target)?),
        }
    }

    /// Aborted transactions overlapping `[from, to]`, for read_committed.
    pub fn aborted_in(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.inner.lock().producers.aborted_in(from, to)
    }

    pub fn producers(&self) -> Vec<ProducerSummary> {
        self.inner.lock().producers.summaries()
    }

    /// Drops idle producers and aborted ranges below the log start.
    pub fn expire_producers(&self, now_ms: i64, producer_expiration_ms: i64) {
        let mut inner = self.inner.lock();
        let start = inner.log.log_start_offset();
        inner.producers.expire(start, now_ms, producer_expiration_ms);
    }

    /// Waits until every offset below `offset_exclusive` is fsynced: the
    /// `acks=all` promise. Memory partitions have nothing to sync.
    pub async fn wait_durable(&self, offset_exclusive: i64) -> EngineResult<()> {
        let mut rx = self.durable_tx.subscribe();
        loop {
            if *rx.borrow_and_update() >= offset_exclusive {
                return Ok(());
            }
            if let PartitionLog::Disk(l) = &self.inner.lock().log {
                if let Some(reason) = l.is_poisoned() {
                    return Err(EngineError::Storage(reason.to_string()));
                }
            }
            if self.sync_running.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                self.run_one_sync().await;
                continue;
            }
            // Someone else is syncing; its completion publishes a value.
            if rx.changed().await.is_err() {
                return Err(EngineError::ShuttingDown);
            }
        }
    }

    async fn run_one_sync(&self) {
        let job = match &mut self.inner.lock().log {
            PartitionLog::Disk(l) => l.sync_job(),
            PartitionLog::Memory(_) => None,
        };
        if let Some(job) = job {
            let job = Arc::new(job);
            let runner = job.clone();
            let fsync = self.metrics.as_ref().map(|m| m.fsync_duration.clone());
            let result = match tokio::task::spawn_blocking(move || run_timed(&runner, fsync.as_ref())).await {
                Ok(r) => r,
                Err(join) => Err(std::io::Error::other(format!("fsync task failed: {join}"))),
            };
            if let Err(e) = &result {
                error!(topic = %self.topic, partition = self.index, error = %e, "fsync failed; partition takes no more writes until restart");
            }
            let durable = match &mut self.inner.lock().log {
                PartitionLog::Disk(l) => {
                    l.finish_sync(&job, &result);
                    l.durable_offset()
                }
                PartitionLog::Memory(_) => i64::MAX,
            };
            self.sync_running.store(false, Ordering::Release);
            self.durable_tx.send_replace(durable);
        } else {
            self.sync_running.store(false, Ordering::Release);
            let durable = match &self.inner.lock().log {
                PartitionLog::Disk(l) => l.durable_offset(),
                PartitionLog::Memory(_) => i64::MAX,
            };
            self.durable_tx.send_replace(durable);
        }
    }

    /// Reads whole batches from `offset`, up to `max_bytes` (with
    /// `min_one_batch`, at least one batch however large), none at or past
    /// `max_offset_exclusive`. The file read happens outside the lock.
    pub async fn read(&self, offset: i64, max_bytes: usize, max_offset_exclusive: i64, min_one_batch: bool) -> EngineResult<Bytes> {
        let plan = {
            let inner = self.inner.lock();
            match &inner.log {
                PartitionLog::Disk(l) => l.read_plan(offset)?,
                PartitionLog::Memory(l) => Some(ReadPlan::Ready(l.read(offset, max_bytes, max_offset_exclusive, min_one_batch)?)),
            }
        };
        let bytes = match plan {
            None => Bytes::new(),
            Some(ReadPlan::Ready(b)) => b,
            Some(ReadPlan::Disk(slice)) => {
                let result = tokio::task::spawn_blocking(move || read_slice(&slice, max_bytes, max_offset_exclusive, min_one_batch))
                    .await
                    .map_err(|e| EngineError::Storage(format!("read task failed: {e}")))?;
                result.map_err(|e| EngineError::Storage(format!("read failed: {e}")))?
            }
        };
        // Only fetches read through here: what is read is what is sent.
        if let Some(m) = &self.metrics {
            m.bytes_out.inc_by(bytes.len() as u64);
        }
        Ok(bytes)
    }

    /// ListOffsets by timestamp: the first record at or after it.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> EngineResult<Option<TimestampOffset>> {
        match &self.inner.lock().log {
            PartitionLog::Disk(l) => Ok(l.offset_for_timestamp(timestamp)?),
            PartitionLog::Memory(l) => Ok(l.offset_for_timestamp(timestamp)?),
        }
    }

    /// ListOffsets MAX_TIMESTAMP: the first record with the largest timestamp.
    pub fn max_timestamp_offset(&self) -> EngineResult<Option<TimestampOffset>> {
        match &self.inner.lock().log {
            PartitionLog::Disk(l) => Ok(l.max_timestamp_offset()?),
            PartitionLog::Memory(l) => Ok(l.max_timestamp_offset()?),
        }
    }

    /// Runs one cleaner pass over a compacted disk log, if it needs one.
    /// The plan is taken under the lock, the pass runs without it (producers
    /// never wait for it), and each cleaned segment is swapped in under it.
    /// Nothing at or past the last stable offset is cleaned, so an open
    /// transaction's data stays as written until its marker.
    pub fn clean(&self, now_ms: i64, limits: &CleanerLimits) -> EngineResult<Option<CleanOutcome>> {
        // The Raft log may not lose entries a follower still needs.
        if self.is_replicated() {
            return Ok(None);
        }
        self.sync_sealed_segments()?;
        let (plan, inputs) = {
            let mut inner = self.inner.lock();
            let hw = match &inner.log {
                PartitionLog::Disk(log) => log.next_offset(),
                PartitionLog::Memory(_) => return Ok(None),
            };
            let lso = inner.producers.first_unstable_offset(hw).unwrap_or(hw).min(hw);
            let PartitionLog::Disk(log) = &inner.log else { return Ok(None) };
            let Some(plan) = log.plan_clean(now_ms, lso) else { return Ok(None) };
            let inputs = CleanInputs {
                now_ms,
                producer_last_offsets: inner.producers.last_data_offsets(),
                aborted: inner.producers.aborted_ranges(),
            };
            (plan, inputs)
        };
        let mut install = |cleaned: ferry_log::CleanedSegment| match &mut self.inner.lock().log {
            PartitionLog::Disk(log) => log.install_cleaned(cleaned),
            PartitionLog::Memory(_) => Ok(false),
        };
        let outcome = ferry_log::clean(&plan, &inputs, limits, &mut install)?;
        if let PartitionLog::Disk(log) = &mut self.inner.lock().log {
            log.finish_clean(&outcome)?;
        }
        Ok(Some(outcome))
    }

    /// The cleaner only cleans what is fsynced, and with `acks=0/1`
    /// producers nothing else fsyncs a sealed segment; Kafka flushes a
    /// segment once it rolls, and this is that flush, made by the cleaner
    /// thread. It takes the group-commit slot so that it never runs beside
    /// another sync job (each job owns the sealed files it took).
    fn sync_sealed_segments(&self) -> EngineResult<()> {
        let needed = match &self.inner.lock().log {
            PartitionLog::Disk(l) => l.durable_offset() < l.active_base_offset(),
            PartitionLog::Memory(_) => false,
        };
        if !needed || self.sync_running.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Ok(());
        }
        let job = match &mut self.inner.lock().log {
            PartitionLog::Disk(l) => l.sync_job(),
            PartitionLog::Memory(_) => None,
        };
        let result = job.as_ref().map_or(Ok(()), |j| run_timed(j, self.metrics.as_ref().map(|m| &m.fsync_duration)));
        let durable = match (&mut self.inner.lock().log, &job) {
            (PartitionLog::Disk(l), Some(job)) => {
                l.finish_sync(job, &result);
                l.durable_offset()
            }
            (PartitionLog::Disk(l), None) => l.durable_offset(),
            (PartitionLog::Memory(_), _) => i64::MAX,
        };
        self.sync_running.store(false, Ordering::Release);
        self.durable_tx.send_replace(durable);
        result.map_err(|e| {
            error!(topic = %self.topic, partition = self.index, error = %e, "fsync failed; partition takes no more writes until restart");
            EngineError::Storage(format!("fsync before cleaning failed: {e}"))
        })
    }

    /// Fsyncs whatever is not yet durable (shutdown).
    pub fn sync_now(&self) -> EngineResult<()> {
        let mut inner = self.inner.lock();
        if let PartitionLog::Disk(l) = &mut inner.log {
            if let Some(job) = l.sync_job() {
                let result = run_timed(&job, self.metrics.as_ref().map(|m| &m.fsync_duration));
                l.finish_sync(&job, &result);
                result.map_err(|e| EngineError::Storage(e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// Runs a sync job, timing it into `ferry_fsync_duration_seconds`.
fn run_timed(job: &SyncJob, fsync_duration: Option<&ferry_metrics::Histogram>) -> std::io::Result<()> {
    let started = Instant::now();
    let result = job.run();
    if let Some(h) = fsync_duration {
        h.observe(started.elapsed().as_secs_f64());
    }
    result
}
