//! One partition: its log (disk or memory) behind a lock, and group commit.
//!
//! Group commit: an `acks=all` produce appends under the lock, then waits
//! until the partition's durable offset passes its last offset. The first
//! waiter to find no fsync running starts one covering everything appended
//! so far; waiters that arrive meanwhile ride the next one. So concurrent
//! producers share fsyncs, and fsync count tracks time, not requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ferry_log::batch::BatchHeader;
use ferry_log::{read_slice, AppendInfo, DiskLog, MemoryLog, ReadPlan};
use parking_lot::Mutex;
use tokio::sync::watch;
use tracing::error;

use crate::error::{EngineError, EngineResult};

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
    pub fn size_bytes(&self) -> u64 {
        match self {
            PartitionLog::Disk(l) => l.size_bytes(),
            PartitionLog::Memory(l) => l.size_bytes(),
        }
    }
}

/// Offsets and sizes of a partition at one instant.
#[derive(Debug, Clone, Copy)]
pub struct PartitionOffsets {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
}

#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    log: Mutex<PartitionLog>,
    /// Set while one task runs an fsync for this partition.
    sync_running: AtomicBool,
    /// The durable offset, published to waiting producers.
    durable_tx: watch::Sender<i64>,
}

impl Partition {
    pub fn new(topic: String, index: i32, log: PartitionLog) -> Partition {
        let durable = match &log {
            PartitionLog::Disk(l) => l.durable_offset(),
            PartitionLog::Memory(_) => i64::MAX,
        };
        let (durable_tx, _) = watch::channel(durable);
        Partition { topic, index, log: Mutex::new(log), sync_running: AtomicBool::new(false), durable_tx }
    }

    pub fn offsets(&self) -> PartitionOffsets {
        let log = self.log.lock();
        let hw = log.next_offset();
        PartitionOffsets { log_start_offset: log.log_start_offset(), high_watermark: hw, last_stable_offset: hw }
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.lock().size_bytes()
    }

    pub fn is_memory(&self) -> bool {
        matches!(&*self.log.lock(), PartitionLog::Memory(_))
    }

    pub fn with_log<R>(&self, f: impl FnOnce(&mut PartitionLog) -> R) -> R {
        f(&mut self.log.lock())
    }

    /// Appends validated batches. Returns once the bytes reached the OS
    /// (or memory): the `acks=1` promise.
    pub fn append(&self, payload: &mut [u8], headers: &[BatchHeader], now_ms: i64) -> EngineResult<AppendInfo> {
        let mut log = self.log.lock();
        let result = match &mut *log {
            PartitionLog::Disk(l) => l.append(payload, headers, now_ms),
            PartitionLog::Memory(l) => Ok(l.append(payload, headers)),
        };
        result.map_err(|e| {
            error!(topic = %self.topic, partition = self.index, error = %e, "append failed");
            EngineError::Storage(e.to_string())
        })
    }

    /// Waits until every offset below `offset_exclusive` is fsynced: the
    /// `acks=all` promise. Memory partitions have nothing to sync.
    pub async fn wait_durable(&self, offset_exclusive: i64) -> EngineResult<()> {
        let mut rx = self.durable_tx.subscribe();
        loop {
            if *rx.borrow_and_update() >= offset_exclusive {
                return Ok(());
            }
            if let PartitionLog::Disk(l) = &*self.log.lock() {
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
        let job = match &mut *self.log.lock() {
            PartitionLog::Disk(l) => l.sync_job(),
            PartitionLog::Memory(_) => None,
        };
        if let Some(job) = job {
            let job = Arc::new(job);
            let runner = job.clone();
            let result = match tokio::task::spawn_blocking(move || runner.run()).await {
                Ok(r) => r,
                Err(join) => Err(std::io::Error::other(format!("fsync task failed: {join}"))),
            };
            if let Err(e) = &result {
                error!(topic = %self.topic, partition = self.index, error = %e, "fsync failed; partition takes no more writes until restart");
            }
            let durable = match &mut *self.log.lock() {
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
            let durable = match &*self.log.lock() {
                PartitionLog::Disk(l) => l.durable_offset(),
                PartitionLog::Memory(_) => i64::MAX,
            };
            self.durable_tx.send_replace(durable);
        }
    }

    /// Reads whole batches from `offset`, up to `max_bytes` (at least one
    /// batch), none at or past `max_offset_exclusive`. The file read happens
    /// outside the lock.
    pub async fn read(&self, offset: i64, max_bytes: usize, max_offset_exclusive: i64) -> EngineResult<Bytes> {
        let plan = {
            let log = self.log.lock();
            match &*log {
                PartitionLog::Disk(l) => l.read_plan(offset)?,
                PartitionLog::Memory(l) => Some(ReadPlan::Ready(l.read(offset, max_bytes, max_offset_exclusive)?)),
            }
        };
        match plan {
            None => Ok(Bytes::new()),
            Some(ReadPlan::Ready(b)) => Ok(b),
            Some(ReadPlan::Disk(slice)) => {
                let result = tokio::task::spawn_blocking(move || read_slice(&slice, max_bytes, max_offset_exclusive))
                    .await
                    .map_err(|e| EngineError::Storage(format!("read task failed: {e}")))?;
                result.map_err(|e| EngineError::Storage(format!("read failed: {e}")))
            }
        }
    }

    pub fn offset_for_timestamp(&self, timestamp: i64) -> EngineResult<Option<i64>> {
        match &*self.log.lock() {
            PartitionLog::Disk(l) => Ok(l.offset_for_timestamp(timestamp)?),
            PartitionLog::Memory(l) => Ok(l.offset_for_timestamp(timestamp)),
        }
    }

    /// Fsyncs whatever is not yet durable (shutdown).
    pub fn sync_now(&self) -> EngineResult<()> {
        let mut log = self.log.lock();
        if let PartitionLog::Disk(l) = &mut *log {
            if let Some(job) = l.sync_job() {
                let result = job.run();
                l.finish_sync(&job, &result);
                result.map_err(|e| EngineError::Storage(e.to_string()))?;
            }
        }
        Ok(())
    }
}
