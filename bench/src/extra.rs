//! The `group` and `txn` workloads (`--workload group`, `--workload txn`).
//!
//! * group: N records produced at acks=1 to a P-partition topic, then read by
//!   a consumer group of C consumers (one thread each, `subscribe`), each
//!   committing synchronously every K records it processed.
//! * txn: the same produce workload once with a plain acks=all producer and
//!   once with a transactional producer that commits every T ms; then the
//!   transactional topic is read back with isolation.level=read_committed.

use std::sync::mpsc;

use rdkafka::consumer::{CommitMode, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::producer::Producer as _;

use super::*;

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

impl Outcome for GroupResult {
    fn peak_bytes(&self) -> Option<u64> {
        self.rss.peak_bytes
    }
    fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl Outcome for TxnResult {
    fn peak_bytes(&self) -> Option<u64> {
        self.rss.peak_bytes
    }
    fn problems(&self) -> &[String] {
        &self.problems
    }
}

/// Latency summary in milliseconds.
#[derive(Debug, Serialize, Default, Clone)]
pub(crate) struct Latency {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

impl Latency {
    fn from_durations(mut v: Vec<Duration>) -> Latency {
        if v.is_empty() {
            return Latency::default();
        }
        v.sort_unstable();
        let ms = |d: Duration| round3(d.as_secs_f64() * 1e3);
        // Nearest-rank percentile.
        let rank = |q: f64| {
            let r = (q * v.len() as f64).ceil() as usize;
            v[r.clamp(1, v.len()) - 1]
        };
        let total: Duration = v.iter().sum();
        Latency {
            count: v.len() as u64,
            p50_ms: Some(ms(rank(0.50))),
            p99_ms: Some(ms(rank(0.99))),
            max_ms: Some(ms(*v.last().expect("non-empty"))),
            mean_ms: Some(ms(total / v.len() as u32)),
        }
    }
}

/// Peak broker RSS over one workload.
#[derive(Debug, Serialize, Default)]
pub(crate) struct PeakRss {
    pub peak_vmhwm_bytes: Option<u64>,
    pub vmhwm_reset: bool,
    pub sampled_max_bytes: Option<u64>,
    /// max(VmHWM, sampled max).
    pub peak_bytes: Option<u64>,
}

struct RssWindow {
    pid: Option<u32>,
    reset: bool,
}

impl RssWindow {
    fn start(pid: Option<u32>, sampler: Option<&RssSampler>) -> RssWindow {
        let reset = pid.map(reset_hwm).unwrap_or(false);
        if let Some(s) = sampler {
            s.take_phase();
        }
        RssWindow { pid, reset }
    }
    fn finish(self, sampler: Option<&RssSampler>) -> PeakRss {
        let hwm = self.pid.and_then(vm_hwm_bytes);
        let sampled = sampler.map(|s| s.take_phase().max(self.pid.and_then(vm_rss_bytes).unwrap_or(0)));
        PeakRss {
            peak_vmhwm_bytes: hwm,
            vmhwm_reset: self.reset,
            sampled_max_bytes: sampled,
            peak_bytes: match (hwm, sampled) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
            },
        }
    }
}

fn produce_problems(p: &ProduceResult, records: u64, label: &str, problems: &mut Vec<String>) {
    if p.failed > 0 || p.enqueue_errors > 0 {
        problems.push(format!("{label}: {} delivery failures, {} enqueue errors: {:?}", p.failed, p.enqueue_errors, p.failure_kinds));
    }
    if p.delivered != records {
        problems.push(format!("{label}: delivered {} of {records}", p.delivered));
    }
}

// ---------------------------------------------------------------------------
// group
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub(crate) struct GroupSpec {
    pub records: u64,
    pub record_bytes: usize,
    pub partitions: i32,
    pub consumers: usize,
    pub commit_every: u64,
}

impl GroupSpec {
    pub fn name(&self) -> String {
        format!(
            "group: {} x {} B, {} partitions, {} consumers, commit every {}",
            group_thousands(self.records),
            self.record_bytes,
            self.partitions,
            self.consumers,
            group_thousands(self.commit_every)
        )
    }
}

#[derive(Debug, Serialize, Default)]
pub(crate) struct GroupConsumerStats {
    pub index: usize,
    /// Records this consumer received (duplicates included).
    pub records: u64,
    pub commits: u64,
    pub commit_errors: u64,
    /// Commits that had nothing to commit (librdkafka's _NO_OFFSET).
    pub commits_without_offsets: u64,
    pub assignments: u64,
    pub revocations: u64,
    /// Partitions assigned when it stopped.
    pub final_assignment: Vec<i32>,
    /// First poll to its first record.
    pub first_record_after_seconds: Option<f64>,
    pub consume_errors: u64,
    pub client_errors: u64,
    pub error_samples: Vec<String>,
}

#[derive(Debug, Serialize, Default)]
pub(crate) struct GroupConsumeResult {
    /// First poll (of any consumer) to the last record not seen before.
    pub seconds: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    /// First poll to the first record of any consumer (group join, including
    /// the broker's initial rebalance delay).
    pub first_record_after_seconds: Option<f64>,
    /// First record to last record: the rate once the group is formed.
    pub steady_records_per_sec: Option<f64>,
    pub steady_mb_per_sec: Option<f64>,
    /// Records received by all consumers, duplicates included.
    pub received: u64,
    /// Distinct (partition, offset) pairs received.
    pub distinct: u64,
    /// Received more than once (redelivery after a rebalance).
    pub duplicates: u64,
    /// Offsets at or beyond the high watermark read before consuming.
    pub out_of_range: u64,
    pub wrong_size: u64,
    /// Sum of the high watermarks before consuming (the records to read).
    pub expected: u64,
    pub commits: u64,
    pub commit_errors: u64,
    pub commit_latency: Latency,
    pub rebalances: u64,
    pub consumers: Vec<GroupConsumerStats>,
    pub complete: bool,
    pub cpu: CpuUse,
}

#[derive(Debug, Serialize)]
pub(crate) struct GroupResult {
    pub name: String,
    pub topic: String,
    pub records: u64,
    pub record_bytes: usize,
    pub partitions: i32,
    pub consumers: usize,
    pub commit_every: u64,
    pub group_id: String,
    pub produce: ProduceResult,
    pub consume: GroupConsumeResult,
    pub rss: PeakRss,
    pub ok: bool,
    pub problems: Vec<String>,
    pub busy_machine: bool,
}

#[derive(Default)]
struct GroupConsumerContext {
    client_errors: ErrorLog,
    assignments: AtomicU64,
    revocations: AtomicU64,
    rebalance_errors: ErrorLog,
}

impl ClientContext for GroupConsumerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.client_errors.push(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for GroupConsumerContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(_) => {
                self.assignments.fetch_add(1, Ordering::Relaxed);
            }
            Rebalance::Revoke(_) => {
                self.revocations.fetch_add(1, Ordering::Relaxed);
            }
            Rebalance::Error(e) => self.rebalance_errors.push(e.to_string()),
        }
    }
}

/// State shared by the group's consumer threads.
struct GroupShared {
    base: Instant,
    /// One bit per offset below each partition's high watermark.
    seen: Vec<Vec<AtomicU64>>,
    distinct: AtomicU64,
    expected: u64,
    done: AtomicBool,
    /// Nanoseconds since `base`; u64::MAX = not yet.
    first_poll_ns: AtomicU64,
    first_record_ns: AtomicU64,
    last_new_ns: AtomicU64,
    last_progress_ns: AtomicU64,
    duplicates: AtomicU64,
    out_of_range: AtomicU64,
    wrong_size: AtomicU64,
}

impl GroupShared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
    /// Marks (partition, offset) seen; true if it was new.
    fn mark(&self, partition: i32, offset: i64) -> bool {
        let Some(bits) = usize::try_from(partition).ok().and_then(|p| self.seen.get(p)) else {
            self.out_of_range.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let Some(word) = usize::try_from(offset).ok().and_then(|o| bits.get(o / 64)) else {
            self.out_of_range.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let bit = 1u64 << (offset as u64 % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let now = self.now_ns();
        self.last_new_ns.fetch_max(now, Ordering::Relaxed);
        self.last_progress_ns.fetch_max(now, Ordering::Relaxed);
        if self.distinct.fetch_add(1, Ordering::Relaxed) + 1 >= self.expected {
            self.done.store(true, Ordering::Release);
        }
        true
    }
}

struct ThreadOut {
    stats: GroupConsumerStats,
    commit_latencies: Vec<Duration>,
}

#[allow(clippy::too_many_arguments)]
fn group_consumer_thread(
    index: usize,
    settings: Vec<(&'static str, String)>,
    topic: String,
    record_bytes: usize,
    commit_every: u64,
    stall: Duration,
    shared: Arc<GroupShared>,
    tx: mpsc::Sender<ThreadOut>,
) {
    let mut stats = GroupConsumerStats { index, ..Default::default() };
    let mut lat = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let consumer: BaseConsumer<GroupConsumerContext> = match client_config(&settings).create_with_context(GroupConsumerContext::default()) {
        Ok(c) => c,
        Err(e) => {
            stats.error_samples.push(format!("create consumer: {e}"));
            let _ = tx.send(ThreadOut { stats, commit_latencies: lat });
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[topic.as_str()]) {
        stats.error_samples.push(format!("subscribe: {e}"));
        let _ = tx.send(ThreadOut { stats, commit_latencies: lat });
        return;
    }
    let first_poll = Instant::now();
    shared.first_poll_ns.fetch_min(shared.now_ns(), Ordering::Relaxed);
    let mut since_commit = 0u64;
    while !shared.done.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if stats.records == 0 {
                    stats.first_record_after_seconds = Some(round3(first_poll.elapsed().as_secs_f64()));
                    shared.first_record_ns.fetch_min(shared.now_ns(), Ordering::Relaxed);
                }
                stats.records += 1;
                if m.payload().map(|p| p.len()).unwrap_or(0) != record_bytes {
                    shared.wrong_size.fetch_add(1, Ordering::Relaxed);
                }
                shared.mark(m.partition(), m.offset());
                drop(m);
                since_commit += 1;
                if since_commit >= commit_every {
                    since_commit = 0;
                    let t = Instant::now();
                    let r = consumer.commit_consumer_state(CommitMode::Sync);
                    let took = t.elapsed();
                    match r {
                        Ok(()) => {
                            stats.commits += 1;
                            lat.push(took);
                        }
                        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => stats.commits_without_offsets += 1,
                        Err(e) => {
                            stats.commit_errors += 1;
                            if errors.len() < 10 {
                                errors.push(format!("commit: {e}"));
                            }
                        }
                    }
                }
            }
            Some(Err(e)) => {
                stats.consume_errors += 1;
                if errors.len() < 10 {
                    errors.push(format!("poll: {e}"));
                }
            }
            None => {
                let idle = shared.now_ns().saturating_sub(shared.last_progress_ns.load(Ordering::Relaxed));
                if idle > stall.as_nanos() as u64 {
                    break;
                }
            }
        }
    }
    let ctx = consumer.context();
    stats.assignments = ctx.assignments.load(Ordering::Relaxed);
    stats.revocations = ctx.revocations.load(Ordering::Relaxed);
    let (n, s) = ctx.client_errors.snapshot();
    stats.client_errors = n;
    errors.extend(s);
    let (_, s) = ctx.rebalance_errors.snapshot();
    errors.extend(s.into_iter().map(|e| format!("rebalance: {e}")));
    stats.final_assignment = consumer.assignment().map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect()).unwrap_or_default();
    stats.error_samples = errors;
    // Report before closing the consumer (leaving the group is not measured).
    let _ = tx.send(ThreadOut { stats, commit_latencies: lat });
    drop(consumer);
}

pub(crate) fn run_group_workload(spec: &GroupSpec, cx: &RunCtx) -> Result<GroupResult> {
    let RunCtx { rt, broker, sampler, hz, stall, run_id, index, wait_quiet, quiet_pct } = *cx;
    let topic = format!("bench-{run_id}-{index}-group-{}p", spec.partitions);
    let group_id = format!("ferry-bench-group-{run_id}-{index}");
    let pid = broker.pid;
    create_topic(rt, &broker.bootstrap, &topic, spec.partitions)?;
    std::thread::sleep(Duration::from_millis(200));
    if !wait_quiet.is_zero() {
        wait_for_quiet(wait_quiet, quiet_pct, pid, hz);
    }
    let window = RssWindow::start(pid, sampler);

    let pspec = WorkloadSpec { records: spec.records, record_bytes: spec.record_bytes, acks: Acks::One, partitions: spec.partitions, idempotent: false };
    eprintln!("  producing {} records of {} B (acks=1) to {topic} ({} partitions)", spec.records, spec.record_bytes, spec.partitions);
    let produce = run_produce(&pspec, &broker.bootstrap, &topic, pid, hz, stall)?;
    eprintln!(
        "    {:.0} records/s, {:.1} MB/s; delivered {}/{}",
        produce.records_per_sec, produce.mb_per_sec, produce.delivered, spec.records
    );

    // Size the seen-bitmaps from the high watermarks.
    let probe: BaseConsumer<BenchConsumerContext> = client_config(&consumer_settings(&broker.bootstrap))
        .create_with_context(BenchConsumerContext::default())
        .context("create consumer")?;
    let mut hwms = Vec::new();
    for p in 0..spec.partitions {
        let (_, high) =
            probe.fetch_watermarks(&topic, p, Duration::from_secs(30)).with_context(|| format!("watermarks of partition {p}"))?;
        hwms.push(high.max(0) as u64);
    }
    drop(probe);
    let expected: u64 = hwms.iter().sum();
    let shared = Arc::new(GroupShared {
        base: Instant::now(),
        seen: hwms.iter().map(|&h| (0..h.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()).collect(),
        distinct: AtomicU64::new(0),
        expected,
        done: AtomicBool::new(expected == 0),
        first_poll_ns: AtomicU64::new(u64::MAX),
        first_record_ns: AtomicU64::new(u64::MAX),
        last_new_ns: AtomicU64::new(0),
        last_progress_ns: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        out_of_range: AtomicU64::new(0),
        wrong_size: AtomicU64::new(0),
    });

    eprintln!("  consuming with a group of {} consumers ({group_id}), sync commit every {} records", spec.consumers, spec.commit_every);
    let mut settings = consumer_settings(&broker.bootstrap);
    for (k, v) in settings.iter_mut() {
        match *k {
            "group.id" => *v = group_id.clone(),
            // commit_consumer_state commits the offsets stored as records
            // are handed to the application.
            "enable.auto.offset.store" => *v = "true".into(),
            _ => {}
        }
    }
    let (tx, rx) = mpsc::channel();
    let cpu = CpuMeter::start(pid, hz);
    let mut handles = Vec::new();
    for i in 0..spec.consumers {
        let (settings, topic, shared, tx) = (settings.clone(), topic.clone(), shared.clone(), tx.clone());
        let (bytes, every) = (spec.record_bytes, spec.commit_every.max(1));
        let h = std::thread::Builder::new()
            .name(format!("group-consumer-{i}"))
            .spawn(move || group_consumer_thread(i, settings, topic, bytes, every, stall, shared, tx))
            .context("spawn consumer thread")?;
        handles.push(h);
    }
    drop(tx);
    let mut outs: Vec<ThreadOut> = rx.iter().take(handles.len()).collect();
    let cpu = cpu.finish();
    for h in handles {
        let _ = h.join();
    }
    outs.sort_by_key(|o| o.stats.index);

    let first_poll = shared.first_poll_ns.load(Ordering::Relaxed);
    let first_record = shared.first_record_ns.load(Ordering::Relaxed);
    let last_new = shared.last_new_ns.load(Ordering::Relaxed);
    let distinct = shared.distinct.load(Ordering::Relaxed);
    let secs = |ns: u64| ns as f64 / 1e9;
    let seconds = if first_poll == u64::MAX { 0.0 } else { secs(last_new.saturating_sub(first_poll)).max(1e-9) };
    let steady = (first_record != u64::MAX && last_new > first_record).then(|| secs(last_new - first_record));
    let mb = spec.record_bytes as f64 / 1e6;
    let mut all_lat = Vec::new();
    let mut consume = GroupConsumeResult {
        seconds: round3(seconds),
        records_per_sec: round1(distinct as f64 / seconds),
        mb_per_sec: round2(distinct as f64 * mb / seconds),
        first_record_after_seconds: (first_record != u64::MAX && first_poll != u64::MAX)
            .then(|| round3(secs(first_record.saturating_sub(first_poll)))),
        steady_records_per_sec: steady.map(|s| round1(distinct as f64 / s)),
        steady_mb_per_sec: steady.map(|s| round2(distinct as f64 * mb / s)),
        distinct,
        duplicates: shared.duplicates.load(Ordering::Relaxed),
        out_of_range: shared.out_of_range.load(Ordering::Relaxed),
        wrong_size: shared.wrong_size.load(Ordering::Relaxed),
        expected,
        cpu,
        ..Default::default()
    };
    for o in outs {
        consume.received += o.stats.records;
        consume.commits += o.stats.commits;
        consume.commit_errors += o.stats.commit_errors;
        consume.rebalances += o.stats.assignments;
        all_lat.extend(o.commit_latencies);
        consume.consumers.push(o.stats);
    }
    consume.commit_latency = Latency::from_durations(all_lat);
    consume.complete = distinct == expected && expected == spec.records && consume.wrong_size == 0 && consume.out_of_range == 0;
    eprintln!(
        "    {:.0} records/s, {:.1} MB/s (first poll to last record; {:.0} records/s after the first record); {} distinct of {}, {} duplicates",
        consume.records_per_sec,
        consume.mb_per_sec,
        consume.steady_records_per_sec.unwrap_or(0.0),
        distinct,
        expected,
        consume.duplicates
    );
    eprintln!(
        "    {} commits, {} failed; commit latency p50 {} ms, p99 {} ms, max {} ms",
        consume.commits,
        consume.commit_errors,
        consume.commit_latency.p50_ms.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into()),
        consume.commit_latency.p99_ms.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into()),
        consume.commit_latency.max_ms.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into()),
    );
    let rss = window.finish(sampler);

    let mut problems = Vec::new();
    produce_problems(&produce, spec.records, "produce", &mut problems);
    if distinct != expected {
        problems.push(format!("group read {distinct} distinct records of {expected}"));
    }
    if expected != spec.records {
        problems.push(format!("high watermarks sum to {expected}, produced {}", spec.records));
    }
    if consume.wrong_size > 0 {
        problems.push(format!("{} records with the wrong size", consume.wrong_size));
    }
    if consume.out_of_range > 0 {
        problems.push(format!("{} records beyond the high watermark", consume.out_of_range));
    }
    if consume.commit_errors > 0 {
        let samples: Vec<&String> = consume.consumers.iter().flat_map(|c| c.error_samples.iter()).take(3).collect();
        problems.push(format!("{} commits failed: {samples:?}", consume.commit_errors));
    }
    let busy_machine = [produce.cpu.other_pct, consume.cpu.other_pct].iter().flatten().any(|p| *p >= quiet_pct);
    Ok(GroupResult {
        name: spec.name(),
        topic,
        records: spec.records,
        record_bytes: spec.record_bytes,
        partitions: spec.partitions,
        consumers: spec.consumers,
        commit_every: spec.commit_every,
        group_id,
        ok: problems.is_empty() && produce.complete && consume.complete,
        produce,
        consume,
        rss,
        problems,
        busy_machine,
    })
}

// ---------------------------------------------------------------------------
// txn
// ---------------------------------------------------------------------------

/// The project's exactly-once target: transactional throughput at least this
/// fraction of acks=all throughput.
pub(crate) const TARGET_TXN_RATIO: f64 = 0.85;

#[derive(Debug, Clone)]
pub(crate) struct TxnSpec {
    pub records: u64,
    pub record_bytes: usize,
    pub partitions: i32,
    pub commit_interval: Duration,
}

impl TxnSpec {
    pub fn name(&self) -> String {
        format!(
            "txn: {} x {} B, {} partition{}, commit every {} ms",
            group_thousands(self.records),
            self.record_bytes,
            self.partitions,
            if self.partitions == 1 { "" } else { "s" },
            self.commit_interval.as_millis()
        )
    }
}

#[derive(Debug, Serialize, Default)]
pub(crate) struct TxnProduceResult {
    /// First send to the return of the last commit_transaction.
    pub seconds: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    /// init_transactions (not in `seconds`).
    pub init_seconds: f64,
    pub transactions: u64,
    /// Time of each commit: waiting for the transaction's outstanding records
    /// to be acknowledged, then commit_transaction.
    pub commit_latency: Latency,
    /// The commit_transaction call alone, after the transaction's delivery
    /// reports have arrived (mostly EndTxn: the coordinator's log write and
    /// the markers).
    pub end_txn_latency: Latency,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub enqueue_errors: u64,
    pub queue_full_waits: u64,
    pub failure_kinds: BTreeMap<String, u64>,
    pub transaction_errors: Vec<String>,
    pub client_errors: u64,
    pub client_error_samples: Vec<String>,
    pub complete: bool,
    pub cpu: CpuUse,
}

#[derive(Debug, Serialize, Default)]
pub(crate) struct ReadCommittedResult {
    pub seconds: f64,
    pub records_per_sec: f64,
    pub consumed: u64,
    pub expected: u64,
    pub wrong_size: u64,
    /// Offsets not above the previous one in their partition.
    pub offset_anomalies: u64,
    pub consume_errors: u64,
    pub error_samples: Vec<String>,
    pub complete: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct TxnResult {
    pub name: String,
    pub records: u64,
    pub record_bytes: usize,
    pub partitions: i32,
    pub commit_interval_ms: u64,
    pub acks_all_topic: String,
    pub txn_topic: String,
    pub transactional_id: String,
    /// Plain producer, acks=all, no idempotence.
    pub acks_all: ProduceResult,
    pub transactional: TxnProduceResult,
    /// transactional records/s ÷ acks=all records/s.
    pub ratio: Option<f64>,
    pub target_met: Option<bool>,
    pub read_committed: ReadCommittedResult,
    pub rss: PeakRss,
    pub ok: bool,
    pub problems: Vec<String>,
    pub busy_machine: bool,
}

fn txn_producer_settings(bootstrap: &str, transactional_id: &str) -> Vec<(&'static str, String)> {
    let mut s = producer_settings(bootstrap, Acks::All, false);
    for (k, v) in s.iter_mut() {
        match *k {
            "enable.idempotence" => *v = "true".into(),
            // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
            "message.timeout.ms" => *v = "60000".into(),
            _ => {}
        }
    }
    s.push(("transactional.id", transactional_id.to_string()));
    s.push(("transaction.timeout.ms", "60000".into()));
    s
}

/// Waits (polling in 1 ms steps) until every sent record has its delivery
/// report, or `stall` passes without progress. rdkafka's own flush (called
/// by `commit_transaction`) polls in 100 ms slices, which would add up to
/// 100 ms to every commit; after this it returns at once.
fn await_reports(producer: &BaseProducer<BenchProducerContext>, sent: u64, stall: Duration) {
    let mut last = producer.context().reports();
    let mut last_progress = Instant::now();
    while producer.context().reports() < sent {
        producer.poll(Duration::from_millis(1));
        let now = producer.context().reports();
        if now != last {
            last = now;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > stall {
            break;
        }
    }
}

/// Commits the open transaction: waits for its delivery reports, then calls
/// commit_transaction. Returns (whole call, commit_transaction alone, result).
fn commit_txn(
    producer: &BaseProducer<BenchProducerContext>,
    sent: u64,
    stall: Duration,
    timeout: Duration,
) -> (Duration, Duration, KafkaResult<()>) {
    let t = Instant::now();
    await_reports(producer, sent, stall);
    let t2 = Instant::now();
    let res = producer.commit_transaction(timeout);
    (t.elapsed(), t2.elapsed(), res)
}

fn run_txn_produce(
    spec: &TxnSpec,
    bootstrap: &str,
    topic: &str,
    transactional_id: &str,
    broker_pid: Option<u32>,
    hz: f64,
    stall: Duration,
) -> Result<TxnProduceResult> {
    let ctx = BenchProducerContext::new(spec.records);
    let producer: BaseProducer<BenchProducerContext> = client_config(&txn_producer_settings(bootstrap, transactional_id))
        .create_with_context(ctx)
        .context("create transactional producer")?;
    producer.client().fetch_metadata(Some(topic), Duration::from_secs(30)).context("producer metadata")?;
    let op_timeout = Duration::from_secs(60);
    let t = Instant::now();
    producer.init_transactions(op_timeout).context("init_transactions")?;
    let init_seconds = t.elapsed().as_secs_f64();

    let payload: Vec<u8> = (0..spec.record_bytes).map(|i| b'a' + (i % 26) as u8).collect();
    let parts = spec.partitions as u64;
    let mut r = TxnProduceResult { init_seconds: round3(init_seconds), ..Default::default() };
    let mut commit_lat = Vec::new();
    let mut end_lat = Vec::new();
    let mut txn_errors = Vec::new();
    let cpu = CpuMeter::start(broker_pid, hz);
    let start = Instant::now();
    producer.begin_transaction().context("begin_transaction")?;
    let mut txn_started = Instant::now();
    let mut in_txn = true;
    let mut aborted = false;
    for i in 0..spec.records {
        let mut record = BaseRecord::to(topic).partition((i % parts) as i32).payload(&payload[..]);
        loop {
            match producer.send::<[u8], [u8]>(record) {
                Ok(()) => {
                    r.sent += 1;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                    record = rec;
                    r.queue_full_waits += 1;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    r.enqueue_errors += 1;
                    producer.context().expected.fetch_sub(1, Ordering::Relaxed);
                    if let Ok(mut m) = producer.context().failures.lock() {
                        *m.entry(format!("enqueue: {e}")).or_insert(0) += 1;
                    }
                    break;
                }
            }
        }
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
        if i % 128 == 0 && txn_started.elapsed() >= spec.commit_interval && i + 1 < spec.records {
            let (whole, end, res) = commit_txn(&producer, r.sent, stall, op_timeout);
            commit_lat.push(whole);
            end_lat.push(end);
            in_txn = false;
            if let Err(e) = res {
                txn_errors.push(format!("commit_transaction: {e}"));
                let _ = producer.abort_transaction(op_timeout);
                aborted = true;
                break;
            }
            r.transactions += 1;
            if let Err(e) = producer.begin_transaction() {
                txn_errors.push(format!("begin_transaction: {e}"));
                aborted = true;
                break;
            }
            in_txn = true;
            txn_started = Instant::now();
        }
    }
    if in_txn && !aborted {
        let (whole, end, res) = commit_txn(&producer, r.sent, stall, op_timeout);
        commit_lat.push(whole);
        end_lat.push(end);
        match res {
            Ok(()) => r.transactions += 1,
            Err(e) => {
                txn_errors.push(format!("final commit_transaction: {e}"));
                let _ = producer.abort_transaction(op_timeout);
                aborted = true;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    r.cpu = cpu.finish();
    // Serve any remaining delivery reports.
    producer.poll(Duration::from_millis(100));
    let ctx = producer.context();
    r.delivered = ctx.delivered.load(Ordering::Relaxed);
    r.failed = ctx.failed.load(Ordering::Relaxed);
    r.failure_kinds = ctx.failures.lock().map(|m| m.clone()).unwrap_or_default();
    let (n, s) = ctx.client_errors.snapshot();
    r.client_errors = n;
    r.client_error_samples = s;
    r.seconds = round3(seconds);
    r.records_per_sec = round1(r.delivered as f64 / seconds);
    r.mb_per_sec = round2(r.delivered as f64 * spec.record_bytes as f64 / seconds / 1e6);
    r.commit_latency = Latency::from_durations(commit_lat);
    r.end_txn_latency = Latency::from_durations(end_lat);
    r.transaction_errors = txn_errors;
    r.complete = !aborted && r.delivered == spec.records && r.failed == 0 && r.enqueue_errors == 0;
    Ok(r)
}

fn run_read_committed(spec: &TxnSpec, bootstrap: &str, topic: &str, expected: u64, stall: Duration) -> Result<ReadCommittedResult> {
    let mut settings = consumer_settings(bootstrap);
    settings.push(("isolation.level", "read_committed".into()));
    settings.push(("enable.partition.eof", "true".into()));
    let consumer: BaseConsumer<BenchConsumerContext> =
        client_config(&settings).create_with_context(BenchConsumerContext::default()).context("create consumer")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..spec.partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(0)).context("partition list")?;
    }
    let mut last = vec![-1i64; spec.partitions as usize];
    let mut eof = vec![false; spec.partitions as usize];
    let mut r = ReadCommittedResult { expected, ..Default::default() };
    let start = Instant::now();
    consumer.assign(&tpl).context("assign")?;
    let mut last_progress = Instant::now();
    let mut all_eof_at: Option<Instant> = None;
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                r.consumed += 1;
                if m.payload().map(|p| p.len()).unwrap_or(0) != spec.record_bytes {
                    r.wrong_size += 1;
                }
                match last.get_mut(m.partition() as usize) {
                    Some(l) if m.offset() > *l => *l = m.offset(),
                    Some(l) => {
                        r.offset_anomalies += 1;
                        *l = m.offset();
                    }
                    None => r.offset_anomalies += 1,
                }
                if let Some(e) = eof.get_mut(m.partition() as usize) {
                    *e = false;
                }
                all_eof_at = None;
                last_progress = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(e) = eof.get_mut(p as usize) {
                    *e = true;
                }
            }
            Some(Err(e)) => {
                r.consume_errors += 1;
                if r.error_samples.len() < 10 {
                    r.error_samples.push(e.to_string());
                }
            }
            None => {}
        }
        if eof.iter().all(|e| *e) {
            if r.consumed >= expected {
                break;
            }
            // At the end of every partition but short: give it a moment.
            let at = *all_eof_at.get_or_insert_with(Instant::now);
            if at.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        if last_progress.elapsed() > stall {
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    r.seconds = round3(seconds);
    r.records_per_sec = round1(r.consumed as f64 / seconds);
    r.complete = r.consumed == expected && r.wrong_size == 0 && r.offset_anomalies == 0;
    Ok(r)
}

pub(crate) fn run_txn_workload(spec: &TxnSpec, cx: &RunCtx) -> Result<TxnResult> {
    let RunCtx { rt, broker, sampler, hz, stall, run_id, index, wait_quiet, quiet_pct } = *cx;
    let pid = broker.pid;
    let plain_topic = format!("bench-{run_id}-{index}-txnbase-{}p", spec.partitions);
    let txn_topic = format!("bench-{run_id}-{index}-txn-{}p", spec.partitions);
    let transactional_id = format!("ferry-bench-{run_id}-{index}");
    create_topic(rt, &broker.bootstrap, &plain_topic, spec.partitions)?;
    create_topic(rt, &broker.bootstrap, &txn_topic, spec.partitions)?;
    std::thread::sleep(Duration::from_millis(200));
    let window = RssWindow::start(pid, sampler);

    if !wait_quiet.is_zero() {
        wait_for_quiet(wait_quiet, quiet_pct, pid, hz);
    }
    let pspec = WorkloadSpec { records: spec.records, record_bytes: spec.record_bytes, acks: Acks::All, partitions: spec.partitions, idempotent: false };
    eprintln!("  acks=all: producing {} records of {} B to {plain_topic}", spec.records, spec.record_bytes);
    let acks_all = run_produce(&pspec, &broker.bootstrap, &plain_topic, pid, hz, stall)?;
    eprintln!(
        "    {:.0} records/s, {:.1} MB/s; delivered {}/{}",
        acks_all.records_per_sec, acks_all.mb_per_sec, acks_all.delivered, spec.records
    );

    if !wait_quiet.is_zero() {
        wait_for_quiet(wait_quiet, quiet_pct, pid, hz);
    }
    eprintln!(
        "  transactional ({transactional_id}): producing {} records to {txn_topic}, commit every {} ms",
        spec.records,
        spec.commit_interval.as_millis()
    );
    let txn = run_txn_produce(spec, &broker.bootstrap, &txn_topic, &transactional_id, pid, hz, stall)?;
    let ratio = (acks_all.records_per_sec > 0.0 && txn.delivered > 0).then(|| round3(txn.records_per_sec / acks_all.records_per_sec));
    eprintln!(
        "    {:.0} records/s, {:.1} MB/s; {} transactions; commit p50 {} ms, p99 {} ms; ratio to acks=all {}",
        txn.records_per_sec,
        txn.mb_per_sec,
        txn.transactions,
        txn.commit_latency.p50_ms.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into()),
        txn.commit_latency.p99_ms.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into()),
        ratio.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into())
    );

    eprintln!("  reading {txn_topic} back with isolation.level=read_committed");
    let rc = run_read_committed(spec, &broker.bootstrap, &txn_topic, txn.delivered, stall)?;
    eprintln!("    read {} of {} committed records", rc.consumed, rc.expected);
    let rss = window.finish(sampler);

    let mut problems = Vec::new();
    produce_problems(&acks_all, spec.records, "acks=all", &mut problems);
    if txn.failed > 0 || txn.enqueue_errors > 0 || !txn.transaction_errors.is_empty() {
        problems.push(format!(
            "transactional: {} delivery failures, {} enqueue errors, {:?} {:?}",
            txn.failed, txn.enqueue_errors, txn.failure_kinds, txn.transaction_errors
        ));
    }
    if txn.delivered != spec.records {
        problems.push(format!("transactional: delivered {} of {}", txn.delivered, spec.records));
    }
    if rc.consumed != spec.records {
        problems.push(format!("read_committed read {} records, expected {}", rc.consumed, spec.records));
    }
    if rc.wrong_size > 0 || rc.offset_anomalies > 0 || rc.consume_errors > 0 {
        problems.push(format!(
            "read_committed: {} wrong sizes, {} offset anomalies, {} errors {:?}",
            rc.wrong_size, rc.offset_anomalies, rc.consume_errors, rc.error_samples
        ));
    }
    let busy_machine = [acks_all.cpu.other_pct, txn.cpu.other_pct].iter().flatten().any(|p| *p >= quiet_pct);
    Ok(TxnResult {
        name: spec.name(),
        records: spec.records,
        record_bytes: spec.record_bytes,
        partitions: spec.partitions,
        commit_interval_ms: spec.commit_interval.as_millis() as u64,
        acks_all_topic: plain_topic,
        txn_topic,
        transactional_id,
        ok: problems.is_empty() && acks_all.complete && txn.complete && rc.complete,
        target_met: ratio.map(|r| r >= TARGET_TXN_RATIO),
        ratio,
        acks_all,
        transactional: txn,
        read_committed: rc,
        rss,
        problems,
        busy_machine,
    })
}

// ---------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "n/a".into())
}

fn done(ok: bool, problems: &[String]) -> String {
    if ok {
        "yes".into()
    } else {
        format!("**NO**: {}", problems.join("; "))
    }
}

/// Writes a `## heading` section start, an optional paragraph, and a table's header and separator rows.
pub(crate) fn table_head(s: &mut String, heading: &str, description: Option<&str>, header: &str, separator: &str) {
    let _ = writeln!(s, "## {heading}");
    let _ = writeln!(s);
    if let Some(d) = description {
        let _ = writeln!(s, "{d}");
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "{header}");
    let _ = writeln!(s, "{separator}");
}

pub(crate) fn markdown_group(s: &mut String, groups: &[GroupResult]) {
    if groups.is_empty() {
        return;
    }
    table_head(
        s,
        "Consumer group (`--workload group`)",
        Some(
            "Produced at acks=1 round-robin, then read by a group of consumers (one thread each, `subscribe`, \
             enable.auto.commit=false), each calling `commit_consumer_state(CommitMode::Sync)` every N records it received.",
        ),
        "| workload | produce records/s | group consume records/s | MB/s | first record after (s) | records/s after first record | commits | commit p50 / p99 / max (ms) | failed commits | rebalances | distinct / expected | duplicates | broker peak RSS (MiB) | broker / client / other CPU consume | complete |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    );
    for g in groups {
        let c = &g.consume;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} / {} / {} | {} | {} | {} / {} | {} | {} | {} / {} / {} | {} |",
            g.name,
            group_thousands(g.produce.records_per_sec.round() as u64),
            group_thousands(c.records_per_sec.round() as u64),
            c.mb_per_sec,
            c.first_record_after_seconds.map(|v| format!("{v:.2}")).unwrap_or_else(|| "n/a".into()),
            c.steady_records_per_sec.map(|v| group_thousands(v.round() as u64)).unwrap_or_else(|| "n/a".into()),
            group_thousands(c.commits),
            ms(c.commit_latency.p50_ms),
            ms(c.commit_latency.p99_ms),
            ms(c.commit_latency.max_ms),
            c.commit_errors,
            c.rebalances,
            group_thousands(c.distinct),
            group_thousands(c.expected),
            group_thousands(c.duplicates),
            mib(g.rss.peak_bytes),
            pct(c.cpu.broker_pct),
            pct(c.cpu.client_pct),
            pct(c.cpu.other_pct),
            done(g.ok, &g.problems)
        );
    }
    let _ = writeln!(s);
}

pub(crate) fn markdown_txn(s: &mut String, txns: &[TxnResult]) {
    if txns.is_empty() {
        return;
    }
    table_head(
        s,
        "Transactions vs acks=all (`--workload txn`)",
        Some(
            "The same records produced twice, each to a fresh topic: by a plain producer at acks=all (no idempotence), and by a \
             transactional producer (idempotent, acks=all) that calls commit_transaction every interval and begins the next \
             transaction. The transactional topic is then read back with isolation.level=read_committed.",
        ),
        "| workload | acks=all records/s | transactional records/s | ratio txn / acks=all | transactions | commit p50 / p99 / max (ms) | read_committed read / expected | broker peak RSS (MiB) | broker CPU acks=all / txn | client CPU acks=all / txn | other CPU acks=all / txn | complete |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    );
    for t in txns {
        let x = &t.transactional;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} / {} / {} | {} / {} | {} | {} / {} | {} / {} | {} / {} | {} |",
            t.name,
            group_thousands(t.acks_all.records_per_sec.round() as u64),
            group_thousands(x.records_per_sec.round() as u64),
            t.ratio.map(|r| format!("{r:.2}")).unwrap_or_else(|| "n/a".into()),
            group_thousands(x.transactions),
            ms(x.commit_latency.p50_ms),
            ms(x.commit_latency.p99_ms),
            ms(x.commit_latency.max_ms),
            group_thousands(t.read_committed.consumed),
            group_thousands(t.read_committed.expected),
            mib(t.rss.peak_bytes),
            pct(t.acks_all.cpu.broker_pct),
            pct(x.cpu.broker_pct),
            pct(t.acks_all.cpu.client_pct),
            pct(x.cpu.client_pct),
            pct(t.acks_all.cpu.other_pct),
            pct(x.cpu.other_pct),
            done(t.ok, &t.problems)
        );
    }
    let _ = writeln!(s);
}

pub(crate) fn print_extra_summary(groups: &[GroupResult], txns: &[TxnResult]) {
    for g in groups {
        let c = &g.consume;
        println!(
            "{}: {} records/s, {:.1} MB/s; {} commits, p50 {} ms, p99 {} ms, max {} ms; {} failed; {}",
            g.name,
            group_thousands(c.records_per_sec.round() as u64),
            c.mb_per_sec,
            c.commits,
            ms(c.commit_latency.p50_ms),
            ms(c.commit_latency.p99_ms),
            ms(c.commit_latency.max_ms),
            c.commit_errors,
            if g.ok { "ok" } else { "NOT OK" }
        );
    }
    for t in txns {
        println!(
            "{}: acks=all {} records/s, transactional {} records/s, ratio {}; commit p50 {} ms, p99 {} ms; {}",
            t.name,
            group_thousands(t.acks_all.records_per_sec.round() as u64),
            group_thousands(t.transactional.records_per_sec.round() as u64),
            t.ratio.map(|r| format!("{r:.3}")).unwrap_or_else(|| "n/a".into()),
            ms(t.transactional.commit_latency.p50_ms),
            ms(t.transactional.commit_latency.p99_ms),
            if t.ok { "ok" } else { "NOT OK" }
        );
    }
}

pub(crate) fn txn_target(txns: &[TxnResult]) -> Option<Target> {
    if txns.is_empty() {
        return None;
    }
    let measured: Vec<String> = txns
        .iter()
        .map(|t| format!("{} p: {}", t.partitions, t.ratio.map(|r| format!("{r:.2}")).unwrap_or_else(|| "n/a".into())))
        .collect();
    let met = if txns.iter().any(|t| t.ratio.is_none()) { None } else { Some(txns.iter().all(|t| t.target_met == Some(true))) };
    Some(Target {
        name: "exactly-once throughput (transactional / acks=all records/s, 100 ms commits)".into(),
        target: format!(">= {TARGET_TXN_RATIO:.2}"),
        measured: Some(measured.join(", ")),
        met,
    })
}
