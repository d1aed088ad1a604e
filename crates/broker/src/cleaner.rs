//! The log cleaner's thread: compacts the disk partitions of topics whose
//! `cleanup.policy` includes `compact`, one partition at a time, off the
//! produce path. The rules themselves live in `ferry_log` (`clean`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ferry_log::{CleanOutcome, CleanerLimits, Throttle};
use parking_lot::{Condvar, Mutex};
use tracing::{info, warn};

use crate::engine::{now_ms, Engine};
use crate::partition::Partition;
use crate::topic_config::StorageKind;

/// Broker settings of the cleaner, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`
    pub enable: bool,
    /// `log.cleaner.backoff.ms`: sleep this long when no log needed cleaning.
    pub backoff_ms: u64,
    /// `log.cleaner.io.max.bytes.per.second`: read plus write bytes of all passes.
    pub io_max_bytes_per_second: f64,
    /// `log.cleaner.dedupe.buffer.size`: memory for one pass's key → offset map.
    pub dedupe_buffer_size: usize,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            enable: true,
            backoff_ms: 15_000,
            // Kafka's default is Double.MAX_VALUE: no throttling.
            io_max_bytes_per_second: f64::MAX,
            dedupe_buffer_size: 128 * 1024 * 1024,
        }
    }
}

/// A sleep the broker's shutdown can cut short.
#[derive(Debug, Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    fn is_stopped(&self) -> bool {
        *self.stopped.lock()
    }
    /// Sleeps up to `d`; true if the cleaner should stop.
    fn sleep(&self, d: Duration) -> bool {
        let mut stopped = self.stopped.lock();
        if !*stopped {
            self.wake.wait_for(&mut stopped, d);
        }
        *stopped
    }
    fn stop(&self) {
        *self.stopped.lock() = true;
        self.wake.notify_all();
    }
}

/// The running cleaner thread.
#[derive(Debug)]
pub struct Cleaner {
    stop: Arc<StopSignal>,
    thread: Option<JoinHandle<()>>,
}

impl Cleaner {
    /// Starts the cleaner thread, or nothing when `log.cleaner.enable` is false.
    pub fn start(engine: Arc<Engine>) -> std::io::Result<Cleaner> {
        let stop = Arc::new(StopSignal::default());
        let config = engine.config.cleaner.clone();
        if !config.enable {
            info!("log cleaner disabled (log.cleaner.enable=false): compacted topics keep their whole log");
            return Ok(Cleaner { stop, thread: None });
        }
        let limits = CleanerLimits {
            dedupe_buffer_bytes: config.dedupe_buffer_size,
            throttle: Arc::new(Throttle::new(config.io_max_bytes_per_second)),
        };
        // backoff 0 is allowed, as in Kafka; a floor keeps an idle cleaner
        // from spinning a core.
        let backoff = Duration::from_millis(config.backoff_ms.max(10));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ferry-log-cleaner".into())
            .spawn(move || run(&engine, &limits, backoff, &signal))?;
        Ok(Cleaner { stop, thread: Some(thread) })
    }

    /// Asks the thread to stop after the partition it is cleaning and waits
    /// up to `wait` for it. A pass cut off by the process exiting leaves a
    /// `.cleaned` file that the next open removes.
    pub fn stop(mut self, wait: Duration) {
        self.stop.stop();
        let Some(thread) = self.thread.take() else { return };
        let deadline = std::time::Instant::now() + wait;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            warn!("log cleaner still busy at shutdown; its pass is abandoned");
        }
    }
}

fn run(engine: &Engine, limits: &CleanerLimits, backoff: Duration, stop: &StopSignal) {
    info!(backoff_ms = backoff.as_millis() as u64, "log cleaner started");
    loop {
        // As Kafka's cleaner: back off only when a round found nothing to do.
        let progressed = clean_round(engine, limits, stop);
        if stop.is_stopped() || (!progressed && stop.sleep(backoff)) {
            return;
        }
    }
}

/// One look at every compacted disk partition; true if any pass removed
/// something. A failed pass is logged and that partition tried again next round.
fn clean_round(engine: &Engine, limits: &CleanerLimits, stop: &StopSignal) -> bool {
    let mut progressed = false;
    for topic in engine.topics() {
        let compacted = {
            let config = topic.config.read();
            config.log.compact && config.storage == StorageKind::Disk
        };
        if !compacted {
            continue;
        }
        let partitions: Vec<Arc<Partition>> = topic.partitions.read().clone();
        for partition in partitions {
            if stop.is_stopped() {
                return progressed;
            }
            progressed |= clean_partition(&partition, limits);
        }
    }
    progressed
}

fn clean_partition(partition: &Partition, limits: &CleanerLimits) -> bool {
    // The cleaner must outlive a bug in one pass: a panic is logged like an
    // error, and the partition's lock (parking_lot) is not poisoned by it.
    let result = catch_unwind(AssertUnwindSafe(|| partition.clean(now_ms(), limits)));
    match result {
        Ok(Ok(Some(outcome))) => did_work(&outcome),
        Ok(Ok(None)) => false,
        Ok(Err(e)) => {
            warn!(topic = %partition.topic, partition = partition.index, error = %e, "cleaning failed; retried later");
            false
        }
        Err(_) => {
            warn!(topic = %partition.topic, partition = partition.index, "cleaning panicked; retried later");
            false
        }
    }
}

/// A pass that neither removed records nor rewrote bytes (only, say,
/// moved its checkpoint) is no reason to look again at once.
fn did_work(outcome: &CleanOutcome) -> bool {
    outcome.records_removed > 0 || outcome.bytes_after != outcome.bytes_before
}
