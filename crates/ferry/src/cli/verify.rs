//! `ferry verify`: runs each delivery semantics while injecting faults,
//! records the whole history, and checks it (crate `ferry-verify`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use ferry_verify::{check, Event, Promise, Report, TxnOutcome};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde_json::json;

use super::{print_table, OutputFormat};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Semantics {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
    All,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(subcommand)]
    command: Option<VerifyCommand>,
    /// Which semantics to run.
    #[arg(long, value_enum, default_value_t = Semantics::All)]
    semantics: Semantics,
    /// Records produced per semantics.
    #[arg(long, default_value_t = 20_000)]
    records: u64,
    /// Records per second, all producers together (so faults land mid-run).
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    #[arg(long, default_value_t = 2)]
    producers: u32,
    #[arg(long, default_value_t = 2)]
    consumers: u32,
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Faults to inject, comma-separated: kill (SIGKILL + restart), pause (SIGSTOP/SIGCONT),
    /// disconnect (reset every client connection), fsync-error (restart with the storage seam
    /// failing the topic's fsyncs, then restart clean), torn-tail (SIGKILL, a partial batch
    /// appended to every segment tail, restart), or none. Each kind is injected at least once,
    /// the first fault early; producers go on past --records until each has landed (within a
    /// bound), and a run that still misses one is `inconclusive` (exit status 3).
    #[arg(long, default_value = "kill", value_delimiter = ',')]
    faults: Vec<String>,
    /// Mean time between faults.
    #[arg(long, default_value_t = 1_500)]
    fault_interval_ms: u64,
    /// Most faults injected per semantics (bounds the run time; at least one per kind).
    #[arg(long, default_value_t = 4)]
    max_faults: u32,
    /// Seed of the fault schedule and names: the same seed gives the same schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Use a running broker (no process faults then) instead of starting one.
    #[arg(long)]
    bootstrap_server: Option<String>,
    /// The broker binary to start [default: this binary].
    #[arg(long)]
    ferry_bin: Option<PathBuf>,
    /// Write each run's history (JSON lines) and its broker's log into this directory.
    #[arg(long)]
    history_dir: Option<PathBuf>,
    /// Write an HTML page with the table and a chart.
    #[arg(long)]
    report: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
}

#[derive(Debug, Subcommand)]
enum VerifyCommand {
    /// Check a history recorded elsewhere (JSON lines; see the ferry-verify crate).
    Check {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Semantics::ExactlyOnce)]
        semantics: Semantics,
    },
}

fn promise_of(s: Semantics) -> Promise {
    match s {
        Semantics::AtMostOnce => Promise::AtMostOnce,
        Semantics::AtLeastOnce => Promise::AtLeastOnce,
        _ => Promise::ExactlyOnce,
    }
}

fn name_of(s: Semantics) -> &'static str {
    match s {
        Semantics::AtMostOnce => "at-most-once",
        Semantics::AtLeastOnce => "at-least-once",
        Semantics::ExactlyOnce => "exactly-once",
        Semantics::All => "all",
    }
}

/// The broker process verify controls.
struct Broker {
    bin: PathBuf,
    port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Broker {
    fn start(bin: PathBuf, dir: &std::path::Path) -> anyhow::Result<Broker> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut b = Broker { bin, port, data_dir: dir.join("data"), log: dir.join("broker.log"), child: None };
        b.spawn()?;
        Ok(b)
    }
    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn spawn(&mut self) -> anyhow::Result<()> {
        self.spawn_with_faults(None)
    }
    /// Starts the broker, optionally with the storage seam's fault injection armed.
    fn spawn_with_faults(&mut self, fault_spec: Option<&str>) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--listen", &self.bootstrap(), "--data-dir"])
            .arg(&self.data_dir)
            .args(["--group-initial-rebalance-delay-ms", "200"])
            .env_remove("FERRY_FAULT_INJECT")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(spec) = fault_spec {
            cmd.env("FERRY_FAULT_INJECT", spec);
        }
        let child = cmd.spawn().with_context(|| format!("cannot start {}", self.bin.display()))?;
        running_brokers().insert(child.id());
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.bootstrap()).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!("the broker exited with {status}; see {}", self.log.display());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("the broker did not start listening; see {}", self.log.display())
    }
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            running_brokers().remove(&c.id());
        }
    }
    /// Resets every established client connection (broker side).
    fn disconnect_all(&self) {
        let filter = format!("( sport = :{} )", self.port);
        let _ = Command::new("ss").args(["-K", "-t", "state", "established", &filter]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
    /// Appends a partial, never-acknowledged batch to the last segment of
    /// every partition of `topic`: what a power cut mid-write leaves.
    fn tear_tails(&self, topic: &str, rng: &mut Rng) -> std::io::Result<()> {
        use std::io::Write;
        let dir = self.data_dir.join("topics").join(topic);
        for entry in std::fs::read_dir(&dir)? {
            let pdir = entry?.path();
            if !pdir.is_dir() {
                continue;
            }
            let mut segments: Vec<PathBuf> = std::fs::read_dir(&pdir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            segments.sort();
            if let Some(last) = segments.last() {
                let next_offset = 0i64;
                let mut torn = Vec::new();
                torn.extend_from_slice(&next_offset.to_be_bytes());
                torn.extend_from_slice(&1000i32.to_be_bytes());
                torn.extend((0..(1 + rng.next() % 200)).map(|_| (rng.next() & 0xff) as u8));
                std::fs::OpenOptions::new().append(true).open(last)?.write_all(&torn)?;
            }
        }
        Ok(())
    }
    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").arg(format!("-{sig}")).arg(c.id().to_string()).status();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.signal("CONT");
        self.kill9();
    }
}

/// Process ids of the brokers verify started and has not stopped yet.
fn running_brokers() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    static PIDS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
    PIDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stops every broker verify started when verify itself is interrupted
/// (SIGINT, SIGTERM), so none outlives it, paused or not, holding its port.
fn stop_brokers_on_signal() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        let code = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return None;
            };
            tokio::select! {
                _ = term.recv() => Some(143),
                _ = int.recv() => Some(130),
            }
        });
        let Some(code) = code else { return };
        for pid in std::mem::take(&mut *running_brokers()) {
            for sig in ["-CONT", "-KILL"] {
                let _ = Command::new("kill").args([sig, &pid.to_string()]).stderr(Stdio::null()).status();
            }
        }
        eprintln!("verify: interrupted; stopped the brokers it started");
        std::process::exit(code);
    });
}

/// The history being recorded.
struct Recorder {
    events: Mutex<Vec<Event>>,
    /// Begin-to-commit time of each committed transaction.
    txn_latencies_us: Mutex<Vec<u64>>,
    /// Values the broker acknowledged, and values the consumers processed
    /// (delivered, or committed in a transaction): the consumers stop early
    /// once the second holds the first.
    acked: Mutex<HashSet<String>>,
    processed: Mutex<HashSet<String>>,
    start: Instant,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            events: Mutex::new(Vec::new()),
            txn_latencies_us: Mutex::new(Vec::new()),
            acked: Mutex::new(HashSet::new()),
            processed: Mutex::new(HashSet::new()),
            start: Instant::now(),
        }
    }
    fn push(&self, e: Event) {
        self.events.lock().expect("recorder lock").push(e);
    }
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn processed<'a>(&self, values: impl IntoIterator<Item = &'a String>) {
        self.processed.lock().expect("recorder lock").extend(values.into_iter().cloned());
    }
    /// Every acknowledged value has been processed: nothing is left to wait for.
    fn caught_up(&self) -> bool {
        let acked = self.acked.lock().expect("recorder lock");
        let processed = self.processed.lock().expect("recorder lock");
        acked.iter().all(|v| processed.contains(v))
    }
}

/// Small deterministic generator for the fault schedule.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct DeliveryLogger {
    recorder: Arc<Recorder>,
    /// False for acks=0: the broker sends no answer, so librdkafka's
    /// delivery report carries a made-up offset (-1001 counting up) that
    /// must not be taken for the record's place in the log.
    offsets_known: bool,
}
impl ClientContext for DeliveryLogger {}
impl ProducerContext for DeliveryLogger {
    type DeliveryOpaque = Box<(u32, String, Instant)>;
    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (producer, value, sent) = *opaque;
        match result {
            Ok(m) => {
                self.recorder.acked.lock().expect("recorder lock").insert(value.clone());
                self.recorder.push(Event::Ack {
                    producer,
                    partition: m.partition(),
                    value,
                    offset: if self.offsets_known { m.offset() } else { -1 },
                    latency_us: sent.elapsed().as_micros() as u64,
                })
            }
            Err((e, _)) => self.recorder.push(Event::SendFailed { producer, value, error: e.to_string() }),
        }
    }
}

/// Counts rebalances, so a consume-transform-produce batch that spans one
/// is aborted instead of committed (as Kafka Streams does on revocation).
struct RebalanceCounter {
    rebalances: Arc<AtomicU64>,
}
impl ClientContext for RebalanceCounter {}
impl rdkafka::consumer::ConsumerContext for RebalanceCounter {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, _rebalance: &rdkafka::consumer::Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a verify run showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every promise held under every requested fault kind.
    Held,
    /// Some promise was broken.
    Broken,
    /// No promise was broken, but some requested fault kind was never
    /// injected: the run proves nothing about it.
    Inconclusive,
}

struct RunResult {
    semantics: Semantics,
    report: Report,
    /// Requested fault kinds the run never injected.
    missing_faults: Vec<String>,
    throughput: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
}

impl RunResult {
    fn verdict(&self) -> Verdict {
        if !self.report.promise_held(promise_of(self.semantics)) {
            Verdict::Broken
        } else if !self.missing_faults.is_empty() {
            Verdict::Inconclusive
        } else {
            Verdict::Held
        }
    }
    fn verdict_text(&self) -> &'static str {
        match self.verdict() {
            Verdict::Held => "held",
            Verdict::Broken => "BROKEN",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

pub fn run(mut args: VerifyArgs) -> anyhow::Result<Verdict> {
    if let Some(VerifyCommand::Check { file, semantics }) = &args.command {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let events = ferry_verify::parse_lines(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let report = check(&events);
        let held = report.promise_held(promise_of(*semantics));
        println!("{}", serde_json::to_string_pretty(&json!({"report": report, "promise_held": held}))?);
        return Ok(if held { Verdict::Held } else { Verdict::Broken });
    }
    if args.faults.iter().any(|f| f == "none") {
        args.faults.clear();
    }
    for f in &args.faults {
        match f.as_str() {
            "kill" | "pause" | "disconnect" | "fsync-error" | "torn-tail" => {}
            other => bail!("unknown fault `{other}` (kill, pause, disconnect, fsync-error, torn-tail, or none)"),
        }
    }
    // Each kind once: the schedule, the bound and the verdict count kinds.
    args.faults.sort();
    args.faults.dedup();
    if args.bootstrap_server.is_some() && !args.faults.is_empty() {
        bail!("faults need a broker started by verify itself; drop --bootstrap-server, or run without faults (--faults none)");
    }
    if (args.max_faults as usize) < args.faults.len() {
        bail!("--max-faults {} is fewer than the {} fault kinds asked for; each kind is injected at least once", args.max_faults, args.faults.len());
    }
    let semantics = match args.semantics {
        Semantics::All => vec![Semantics::AtMostOnce, Semantics::AtLeastOnce, Semantics::ExactlyOnce],
        s => vec![s],
    };
    if args.bootstrap_server.is_none() {
        stop_brokers_on_signal();
    }
    let workdir = tempfile::tempdir()?;
    let mut results = Vec::new();
    for (i, s) in semantics.iter().enumerate() {
        let dir = workdir.path().join(name_of(*s));
        std::fs::create_dir_all(&dir)?;
        let broker = match &args.bootstrap_server {
            Some(_) => None,
            None => {
                let bin = match &args.ferry_bin {
                    Some(b) => b.clone(),
                    None => std::env::current_exe()?,
                };
                Some(Arc::new(Mutex::new(Broker::start(bin, &dir)?)))
            }
        };
        let bootstrap = match (&args.bootstrap_server, &broker) {
            (Some(b), _) => b.clone(),
            (None, Some(b)) => b.lock().expect("broker lock").bootstrap(),
            (None, None) => unreachable!("one of the two is set"),
        };
        eprintln!("verify: {} against {bootstrap} ({} records, faults: {})", name_of(*s), args.records, args.faults.join(","));
        let keep = broker.clone();
        let result = match run_one(*s, &args, &bootstrap, broker, args.seed.wrapping_add(i as u64)) {
            Ok(r) => r,
            Err(e) => {
                // A fault thread may still hold the broker: stop it here so no
                // broker process outlives verify.
                if let Some(b) = keep {
                    if let Ok(mut b) = b.lock() {
                        b.signal("CONT");
                        b.kill9();
                    }
                }
                return Err(e);
            }
        };
        if let Some(d) = &args.history_dir {
            std::fs::create_dir_all(d)?;
            let path = d.join(format!("{}.jsonl", name_of(*s)));
            let text: String = result.1.iter().map(|e| serde_json::to_string(e).expect("events serialize") + "\n").collect();
            std::fs::write(&path, text)?;
            // The broker's own log explains what the history shows (a stall,
            // a refused request); it lives in a temporary dir otherwise.
            let broker_log = dir.join("broker.log");
            if broker_log.exists() {
                std::fs::copy(&broker_log, d.join(format!("{}-broker.log", name_of(*s))))?;
            }
        }
        results.push(result.0);
    }
    print_results(&results, args.output);
    if let Some(path) = &args.report {
        std::fs::write(path, html_report(&results)).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let verdicts: Vec<Verdict> = results.iter().map(RunResult::verdict).collect();
    Ok(if verdicts.contains(&Verdict::Broken) {
        Verdict::Broken
    } else if verdicts.contains(&Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Held
    })
}

/// Longest a single fault takes to inject (fsync-error: two restarts and
/// up to two seconds between them).
const FAULT_MAX_MS: u64 = 5_000;

/// Which fault comes next: every requested kind once, in an order the seed
/// shuffles, then again, so a run of N faults has each kind N / kinds times.
struct FaultSchedule {
    kinds: Vec<String>,
    round: Vec<String>,
    injected: HashMap<String, usize>,
}

impl FaultSchedule {
    /// `kinds` holds each kind once (`run` deduplicates --faults).
    fn new(kinds: &[String]) -> FaultSchedule {
        FaultSchedule { kinds: kinds.to_vec(), round: Vec::new(), injected: HashMap::new() }
    }
    fn next(&mut self, rng: &mut Rng) -> Option<String> {
        if self.round.is_empty() {
            self.round = self.kinds.clone();
            for i in (1..self.round.len()).rev() {
                self.round.swap(i, (rng.next() % (i as u64 + 1)) as usize);
            }
        }
        let kind = self.round.pop()?;
        *self.injected.entry(kind.clone()).or_default() += 1;
        Some(kind)
    }
    fn every_kind_injected(&self) -> bool {
        self.kinds.iter().all(|k| self.injected.contains_key(k))
    }
}

/// When a producer stops: after its share of --records, unless a requested
/// fault kind has not landed yet; then it goes on until one has, or until
/// the deadline.
struct ProduceUntil {
    count: u64,
    faults_pending: Arc<AtomicBool>,
    deadline: Instant,
}

impl ProduceUntil {
    fn more(&self, seq: u64) -> bool {
        seq < self.count || (self.faults_pending.load(Ordering::SeqCst) && Instant::now() < self.deadline)
    }
}

fn percentile(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

fn run_one(s: Semantics, args: &VerifyArgs, bootstrap: &str, broker: Option<Arc<Mutex<Broker>>>, seed: u64) -> anyhow::Result<(RunResult, Vec<Event>)> {
    let recorder = Arc::new(Recorder::new());
    let topic = format!("verify-{}-{seed}", name_of(s));
    let out_topic = format!("{topic}-out");
    create_topics(bootstrap, &[&topic, &out_topic], args.partitions)?;

    let stop_faults = Arc::new(AtomicBool::new(false));
    // Producers go on past --records until every requested fault kind has
    // landed, within a bound: a run without them proves nothing.
    let faults_pending = Arc::new(AtomicBool::new(broker.is_some() && !args.faults.is_empty()));
    let kinds = args.faults.len() as u64;
    let fault_bound = Duration::from_millis((args.fault_interval_ms.max(200) * 2 + FAULT_MAX_MS) * kinds + 10_000);
    let fault_topic = topic.clone();
    let fault_thread = broker.clone().map(|b| {
        let topic = fault_topic;
        let faults_pending = faults_pending.clone();
        let stop = stop_faults.clone();
        let recorder = recorder.clone();
        let faults = args.faults.clone();
        let interval = args.fault_interval_ms.max(200);
        let max_faults = args.max_faults;
        std::thread::spawn(move || {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut schedule = FaultSchedule::new(&faults);
            let mut injected = 0;
            while !stop.load(Ordering::SeqCst) && injected < max_faults {
                // The first fault comes early, so even a short run has one.
                let wait_ms = if injected == 0 { interval / 4 } else { interval / 2 + rng.next() % interval };
                injected += 1;
                std::thread::sleep(Duration::from_millis(wait_ms));
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Some(kind) = schedule.next(&mut rng) else { break };
                recorder.push(Event::Fault { kind: kind.clone(), time_ms: recorder.now_ms() });
                let mut b = b.lock().expect("broker lock");
                match kind.as_str() {
                    "kill" => {
                        b.kill9();
                        std::thread::sleep(Duration::from_millis(200 + rng.next() % 300));
                        if let Err(e) = b.spawn() {
                            eprintln!("verify: broker restart failed: {e}");
                        }
                    }
                    "disconnect" => b.disconnect_all(),
                    "fsync-error" => {
                        // The partitions of the topic fail an fsync soon; they refuse
                        // writes until the clean restart below recovers them.
                        b.kill9();
                        let spec = format!("fsync-error:{topic}:{}", 5 + rng.next() % 50);
                        if let Err(e) = b.spawn_with_faults(Some(&spec)) {
                            eprintln!("verify: broker restart failed: {e}");
                        }
                        std::thread::sleep(Duration::from_millis(1000 + rng.next() % 1000));
                        b.kill9();
                        if let Err(e) = b.spawn() {
                            eprintln!("verify: broker restart failed: {e}");
                        }
                    }
                    "torn-tail" => {
                        b.kill9();
                        if let Err(e) = b.tear_tails(&topic, &mut rng) {
                            eprintln!("verify: tearing segment tails failed: {e}");
                        }
                        if let Err(e) = b.spawn() {
                            eprintln!("verify: broker restart failed: {e}");
                        }
                    }
                    _ => {
                        b.signal("STOP");
                        std::thread::sleep(Duration::from_millis(300 + rng.next() % 700));
                        b.signal("CONT");
                    }
                }
                if schedule.every_kind_injected() {
                    faults_pending.store(false, Ordering::SeqCst);
                }
            }
        })
    });

    let produced_all = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    // Consumers.
    let mut consumer_threads = Vec::new();
    for c in 0..args.consumers {
        let (bootstrap, topic, out_topic, recorder) = (bootstrap.to_string(), topic.clone(), out_topic.clone(), recorder.clone());
        let produced_all = produced_all.clone();
        consumer_threads.push(std::thread::spawn(move || consume(s, c, &bootstrap, &topic, &out_topic, seed, &recorder, &produced_all)));
    }
    // Producers.
    let until = Arc::new(ProduceUntil {
        count: args.records / args.producers as u64,
        faults_pending: faults_pending.clone(),
        deadline: Instant::now() + Duration::from_secs_f64(args.records as f64 / args.rate.max(1) as f64) + fault_bound,
    });
    let pause = Duration::from_micros(1_000_000 * args.producers as u64 / args.rate.max(1));
    let mut producer_threads = Vec::new();
    for p in 0..args.producers {
        let (bootstrap, topic, recorder, until) = (bootstrap.to_string(), topic.clone(), recorder.clone(), until.clone());
        let partitions = args.partitions;
        producer_threads.push(std::thread::spawn(move || produce(s, p, &bootstrap, &topic, partitions, &until, pause, seed, &recorder)));
    }
    for t in producer_threads {
        t.join().map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
    }
    let producing_secs = start.elapsed().as_secs_f64();
    stop_faults.store(true, Ordering::SeqCst);
    if let Some(t) = fault_thread {
        let _ = t.join();
    }
    produced_all.store(true, Ordering::SeqCst);
    for t in consumer_threads {
        t.join().map_err(|_| anyhow::anyhow!("a consumer thread panicked"))??;
    }
    // The final full read of the log.
    final_read(bootstrap, &topic, args.partitions, s == Semantics::ExactlyOnce, &recorder)?;
    if s == Semantics::ExactlyOnce {
        // What processing produced, committed: the exactly-once output.
        for (partition, _offset, value) in read_all(bootstrap, &out_topic, args.partitions, true)? {
            recorder.push(Event::Deliver { consumer: 0, partition, offset: -1, value, time_ms: recorder.now_ms() });
        }
    }
    let events = std::mem::take(&mut *recorder.events.lock().expect("recorder lock"));
    let report = check(&events);
    let mut latencies: Vec<u64> = events.iter().filter_map(|e| if let Event::Ack { latency_us, .. } = e { Some(*latency_us) } else { None }).collect();
    if s == Semantics::ExactlyOnce {
        latencies = recorder.txn_latencies_us.lock().expect("recorder lock").clone();
    }
    let missing_faults = report.missing_fault_kinds(&args.faults);
    let result = RunResult {
        semantics: s,
        missing_faults,
        throughput: report.acknowledged as f64 / producing_secs.max(0.001),
        latency_p50_ms: percentile(&mut latencies.clone(), 0.50),
        latency_p99_ms: percentile(&mut latencies, 0.99),
        report,
    };
    Ok((result, events))
}

fn create_topics(bootstrap: &str, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let new: Vec<NewTopic> = topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results = rt.block_on(admin.create_topics(new.iter(), &AdminOptions::new()))?;
    for r in results {
        if let Err((t, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                bail!("cannot create topic {t}: {code}");
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn produce(s: Semantics, p: u32, bootstrap: &str, topic: &str, partitions: i32, until: &ProduceUntil, pause: Duration, seed: u64, recorder: &Arc<Recorder>) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap).set("linger.ms", "5").set("message.timeout.ms", "30000");
    match s {
        Semantics::AtMostOnce => {
            config.set("acks", "0").set("message.send.max.retries", "0").set("enable.idempotence", "false");
        }
        Semantics::AtLeastOnce => {
            config.set("acks", "all").set("enable.idempotence", "false").set("retries", "1000000");
        }
        _ => {
            config.set("transactional.id", format!("verify-{seed}-p{p}")).set("transaction.timeout.ms", "30000");
        }
    }
    let make = || -> anyhow::Result<BaseProducer<DeliveryLogger>> {
        let producer: BaseProducer<DeliveryLogger> = config.create_with_context(DeliveryLogger { recorder: recorder.clone(), offsets_known: s != Semantics::AtMostOnce })?;
        if s == Semantics::ExactlyOnce {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match producer.init_transactions(Duration::from_secs(10)) {
                    Ok(()) => break,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("verify: init_transactions retry: {e}");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(producer)
    };
    let mut producer = make()?;
    let txn_size = 50u64;
    let mut seq = 0u64;
    let mut txn_id = 0u64;
    while until.more(seq) {
        let batch_end = match s {
            Semantics::ExactlyOnce if seq < until.count => (seq + txn_size).min(until.count),
            Semantics::ExactlyOnce => seq + txn_size,
            _ => seq + 1,
        };
        let txn_started = Instant::now();
        if s == Semantics::ExactlyOnce {
            if let Err(e) = producer.begin_transaction() {
                eprintln!("verify: begin_transaction failed ({e}); recreating the producer");
                producer = make()?;
                continue;
            }
        }
        let mut values = Vec::new();
        while seq < batch_end {
            let value = format!("p{p}-{seq}");
            let partition = (seq % partitions as u64) as i32;
            recorder.push(Event::Send { producer: p, seq, partition, value: value.clone(), time_ms: recorder.now_ms() });
            let mut record = BaseRecord::<(), str, Box<(u32, String, Instant)>>::with_opaque_to(topic, Box::new((p, value.clone(), Instant::now()))).partition(partition).payload(&value);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                            producer.poll(Duration::from_millis(10));
                            record = r;
                        } else {
                            recorder.push(Event::SendFailed { producer: p, value: value.clone(), error: e.to_string() });
                            break;
                        }
                    }
                }
            }
            values.push(value);
            seq += 1;
            producer.poll(Duration::ZERO);
            std::thread::sleep(pause);
        }
        if s == Semantics::ExactlyOnce {
            txn_id += 1;
            let outcome = match producer.commit_transaction(Duration::from_secs(30)) {
                Ok(()) => TxnOutcome::Commit,
                Err(e) => {
                    eprintln!("verify: commit failed ({e}); aborting");
                    match producer.abort_transaction(Duration::from_secs(30)) {
                        Ok(()) => TxnOutcome::Abort,
                        Err(_) => {
                            producer = make()?;
                            TxnOutcome::Unknown
                        }
                    }
                }
            };
            if outcome == TxnOutcome::Abort {
                // Acknowledged, but no consumer will ever process them.
                let mut acked = recorder.acked.lock().expect("recorder lock");
                for v in &values {
                    acked.remove(v);
                }
            }
            if outcome == TxnOutcome::Commit {
                recorder.txn_latencies_us.lock().expect("recorder lock").push(txn_started.elapsed().as_micros() as u64);
            }
            recorder.push(Event::Txn { producer: p, txn: txn_id, values, outcome, time_ms: recorder.now_ms() });
        }
    }
    let _ = producer.flush(Duration::from_secs(60));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn consume(
    s: Semantics,
    c: u32,
    bootstrap: &str,
    topic: &str,
    out_topic: &str,
    seed: u64,
    recorder: &Arc<Recorder>,
    produced_all: &AtomicBool,
) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("verify-{}-{seed}", name_of(s)))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    if s == Semantics::ExactlyOnce {
        config.set("isolation.level", "read_committed");
    }
    // librdkafka's own debug contexts (e.g. `cgrp,fetch`), logged through
    // FERRY_LOG=librdkafka=debug: the client's side of a stall.
    if let Ok(contexts) = std::env::var("FERRY_VERIFY_CLIENT_DEBUG") {
        config.set("debug", contexts);
    }
    let rebalances = Arc::new(AtomicU64::new(0));
    let consumer: BaseConsumer<RebalanceCounter> = config.create_with_context(RebalanceCounter { rebalances: rebalances.clone() })?;
    consumer.subscribe(&[topic])?;
    let txn_producer: Option<BaseProducer> = if s == Semantics::ExactlyOnce {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("transactional.id", format!("verify-{seed}-ctp{c}"))
            .set("transaction.timeout.ms", "20000")
            .create()?;
        init_with_retry(&p)?;
        Some(p)
    } else {
        None
    };
    let mut txn_producer = txn_producer;
    let mut since_commit = 0u32;
    let idle_limit = Duration::from_millis(CONSUMER_IDLE_LIMIT_MS + if s == Semantics::ExactlyOnce { 5_000 } else { 0 });
    let mut idle_since = Instant::now();
    let mut draining = false;
    let mut caught_up_checked = Instant::now();
    loop {
        if produced_all.load(Ordering::SeqCst) {
            // The idle limit counts from the end of producing at the
            // earliest: a consumer that faults kept from its broker for a
            // while must still get the chance to catch up.
            if !draining {
                draining = true;
                idle_since = Instant::now();
            }
            if idle_since.elapsed() > idle_limit {
                break;
            }
            if caught_up_checked.elapsed() > Duration::from_millis(500) {
                caught_up_checked = Instant::now();
                if recorder.caught_up() {
                    break;
                }
            }
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else { continue };
        let Ok(m) = result else { continue };
        idle_since = Instant::now();
        let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
        match s {
            Semantics::AtMostOnce => {
                // Commit first; process only what is committed.
                if consumer.commit_message(&m, CommitMode::Sync).is_ok() {
                    recorder.processed([&value]);
                    recorder.push(Event::Deliver { consumer: c, partition: m.partition(), offset: m.offset(), value, time_ms: recorder.now_ms() });
                }
            }
            Semantics::AtLeastOnce => {
                recorder.processed([&value]);
                recorder.push(Event::Deliver { consumer: c, partition: m.partition(), offset: m.offset(), value, time_ms: recorder.now_ms() });
                since_commit += 1;
                if since_commit >= 50 {
                    let _ = consumer.commit_consumer_state(CommitMode::Sync);
                    since_commit = 0;
                }
            }
            _ => {
                // Consume-transform-produce: a batch of outputs and the input
                // offsets commit together in one transaction.
                // A rebalance during the batch may have handed some of its
                // partitions to another member: such a batch must not commit.
                let rebalances_at_start = rebalances.load(Ordering::SeqCst);
                let mut batch = vec![(m.partition(), m.offset(), value)];
                let topic_name = m.topic().to_string();
                drop(m);
                let batch_deadline = Instant::now() + Duration::from_millis(200);
                while batch.len() < 200 && Instant::now() < batch_deadline {
                    match consumer.poll(Duration::from_millis(20)) {
                        Some(Ok(next)) => batch.push((next.partition(), next.offset(), String::from_utf8_lossy(next.payload().unwrap_or_default()).into_owned())),
                        Some(Err(_)) | None => {}
                    }
                }
                let p = txn_producer.as_ref().expect("exactly-once has a producer");
                let mut next_offsets: HashMap<i32, i64> = HashMap::new();
                for (partition, offset, _) in &batch {
                    let e = next_offsets.entry(*partition).or_insert(0);
                    *e = (*e).max(offset + 1);
                }
                let mut offsets = TopicPartitionList::new();
                for (partition, next) in &next_offsets {
                    let _ = offsets.add_partition_offset(&topic_name, *partition, Offset::Offset(*next));
                }
                let mut ok = p.begin_transaction().is_ok();
                for (partition, _, value) in &batch {
                    ok = ok && p.send(BaseRecord::<(), str>::to(out_topic).partition(*partition).payload(value)).is_ok();
                }
                ok = ok
                    && rebalances.load(Ordering::SeqCst) == rebalances_at_start
                    && consumer
                        .group_metadata()
                        .map(|g| p.send_offsets_to_transaction(&offsets, &g, Duration::from_secs(10)).is_ok())
                        .unwrap_or(false)
                    && p.commit_transaction(Duration::from_secs(30)).is_ok();
                if ok {
                    recorder.processed(batch.iter().map(|(_, _, value)| value));
                } else {
                    let _ = p.abort_transaction(Duration::from_secs(10));
                    // Rewind to the committed offsets: leaving and rejoining the
                    // group makes the consumer fetch them again (a seek can fail
                    // while partitions are being reassigned, and skipping records
                    // would lose them).
                    consumer.unsubscribe();
                    consumer.subscribe(&[topic])?;
                    let fresh: BaseProducer = ClientConfig::new()
                        .set("bootstrap.servers", bootstrap)
                        .set("transactional.id", format!("verify-{seed}-ctp{c}"))
                        .set("transaction.timeout.ms", "20000")
                        .create()?;
                    init_with_retry(&fresh)?;
                    txn_producer = Some(fresh);
                    idle_since = Instant::now();
                }
            }
        }
    }
    if s == Semantics::AtLeastOnce {
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
    }
    Ok(())
}

/// How long a consumer waits, after producing ended, for a record before
/// it gives up. Faults every second or so push librdkafka's reconnect
/// backoff to its cap: it doubles at every connection made and resets only
/// after `reconnect.backoff.max.ms` (10 s) without one, so each of a
/// client's connections may stay down ~10 s after the broker is back; then
/// the member rejoins (its session, 6 s, may have expired meanwhile) and
/// fetches its committed offsets. A shorter limit called such a consumer's
/// wait a lost record. Consumers stop earlier once every acknowledged
/// record was processed.
const CONSUMER_IDLE_LIMIT_MS: u64 = 20_000;

fn init_with_retry(p: &BaseProducer) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match p.init_transactions(Duration::from_secs(10)) {
            Ok(()) => return Ok(()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Every (partition, offset, value) of a topic.
fn read_all(bootstrap: &str, topic: &str, partitions: i32, committed: bool) -> anyhow::Result<Vec<(i32, i64, String)>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "verify-final-read")
        .set("enable.auto.commit", "false")
        .set("isolation.level", if committed { "read_committed" } else { "read_uncommitted" })
        .create()?;
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = c.fetch_watermarks(topic, p, Duration::from_secs(30))?;
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push((m.partition(), m.offset(), String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()));
            last = Instant::now();
        }
    }
    Ok(out)
}

fn final_read(bootstrap: &str, topic: &str, partitions: i32, committed: bool, recorder: &Recorder) -> anyhow::Result<()> {
    for (partition, offset, value) in read_all(bootstrap, topic, partitions, committed)? {
        recorder.push(Event::Final { partition, offset, value, committed });
    }
    Ok(())
}

fn print_results(results: &[RunResult], output: OutputFormat) {
    match output {
        OutputFormat::Json => {
            let list: Vec<_> = results
                .iter()
                .map(|r| {
                    let rep = &r.report;
                    json!({
                        "semantics": name_of(r.semantics), "sent": rep.sent, "acknowledged": rep.acknowledged,
                        "delivered": rep.delivered, "lost": rep.lost, "unseen": rep.unseen, "duplicated": rep.duplicated,
                        "log_duplicates": rep.log_duplicates, "inconsistent_offsets": rep.inconsistent_offsets,
                        "aborted_reads": rep.aborted_reads, "precommitted_reads": rep.precommitted_reads,
                        "reordered": rep.reordered, "faults_injected": rep.faults_injected,
                        "faults_by_kind": rep.faults_by_kind, "faults_missing": r.missing_faults,
                        "verdict": r.verdict_text(),
                        "throughput_records_per_s": r.throughput, "latency_p50_ms": r.latency_p50_ms,
                        "latency_p99_ms": r.latency_p99_ms, "promise_held": rep.promise_held(promise_of(r.semantics)),
                        "examples": rep.examples,
                    })
                })
                .collect();
            println!("{}", json!({ "results": list }));
        }
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|r| {
                    let rep = &r.report;
                    vec![
                        name_of(r.semantics).into(),
                        rep.sent.to_string(),
                        rep.acknowledged.to_string(),
                        rep.delivered.to_string(),
                        rep.lost.to_string(),
                        rep.unseen.to_string(),
                        rep.duplicated.to_string(),
                        rep.aborted_reads.to_string(),
                        rep.faults_injected.to_string(),
                        format!("{:.0}", r.throughput),
                        format!("{:.1}/{:.1}", r.latency_p50_ms, r.latency_p99_ms),
                        r.verdict_text().into(),
                    ]
                })
                .collect();
            print_table(
                &["SEMANTICS", "SENT", "ACKED", "DELIVERED", "LOST", "UNSEEN", "DUPLICATED", "ABORTED-READS", "FAULTS", "REC/S", "P50/P99-MS", "PROMISE"],
                &rows,
            );
            for r in results {
                let by_kind: Vec<String> = r.report.faults_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
                if !by_kind.is_empty() {
                    println!("  {} faults: {}", name_of(r.semantics), by_kind.join(", "));
                }
                if !r.missing_faults.is_empty() {
                    println!("  {} inconclusive: never injected: {}", name_of(r.semantics), r.missing_faults.join(", "));
                }
                for (kind, examples) in &r.report.examples {
                    for e in examples {
                        println!("  {} {kind}: {e}", name_of(r.semantics));
                    }
                }
            }
        }
    }
}

fn html_report(results: &[RunResult]) -> String {
    let max = results.iter().map(|r| r.report.sent.max(1)).max().unwrap_or(1) as f64;
    let mut rows = String::new();
    let mut bars = String::new();
    for (i, r) in results.iter().enumerate() {
        let rep = &r.report;
        let verdict = r.verdict();
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1} / {:.1}</td><td class=\"{}\">{}</td></tr>\n",
            name_of(r.semantics), rep.sent, rep.acknowledged, rep.delivered, rep.lost, rep.duplicated, rep.aborted_reads,
            rep.faults_injected, r.throughput, r.latency_p50_ms, r.latency_p99_ms,
            if verdict == Verdict::Held { "ok" } else { "bad" }, r.verdict_text()
        ));
        let y = 30 + i * 90;
        for (j, (label, v, color)) in [("acknowledged", rep.acknowledged, "#4a7"), ("lost", rep.lost, "#d44"), ("duplicated", rep.duplicated, "#e90")].iter().enumerate() {
            let w = (*v as f64 / max * 500.0).max(1.0);
            let yy = y + j * 24;
            bars.push_str(&format!(
                "<rect x=\"160\" y=\"{yy}\" width=\"{w:.0}\" height=\"20\" fill=\"{color}\"/><text x=\"{:.0}\" y=\"{}\" font-size=\"12\">{label}: {v}</text>\n",
                165.0 + w,
                yy + 15
            ));
        }
        bars.push_str(&format!("<text x=\"10\" y=\"{}\" font-size=\"14\">{}</text>\n", y + 30, name_of(r.semantics)));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ferry verify</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}.ok{{color:#171}}.bad{{color:#b11;font-weight:bold}}</style></head><body>\
<h1>ferry verify: the three semantics under faults</h1><table><tr><th>semantics</th><th>sent</th><th>acknowledged</th><th>delivered</th><th>lost</th><th>duplicated</th><th>aborted reads</th><th>faults</th><th>records/s</th><th>p50 / p99 ms</th><th>promise</th></tr>\n{rows}</table>\
<svg width=\"900\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">{bars}</svg></body></html>\n",
        40 + results.len() * 90
    )
}
