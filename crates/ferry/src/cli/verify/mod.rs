//! `ferry verify`: runs each delivery semantics while injecting faults,
//! records the whole history, and checks it (crate `ferry-verify`), on one
//! broker or a cluster.

mod broker;
mod faults;
mod report;
mod secure;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use ferry_verify::{check, Event, Promise, Report};
use serde_json::json;

use super::{OutputFormat, SecurityArgs};
use broker::Fleet;
use faults::{FaultPlan, CLUSTER_FAULTS, FAULT_MAX_MS, SINGLE_NODE_FAULTS};
use secure::BrokerSecurity;
use workload::{Endpoint, Recorder};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Semantics {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
    All,
}

#[derive(Debug, Args)]
#[command(after_long_help = "TLS and SASL: with --bootstrap-server the flags say how to reach that broker. \
Otherwise the brokers verify starts listen on --security-protocol alone: SSL and SASL_SSL with a CA and \
certificate verify makes (the openssl command); SASL with --sasl-mechanism (SCRAM-SHA-512 by default) \
and the user --sasl-username (ferry-verify by default; the password --sasl-password or a random one), \
added with `ferry user add` before the first start. Every client of the run uses them.")]
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
    /// Brokers to start: 1, or a cluster of 3 or more whose topics have min(3, brokers)
    /// replicas. Exactly-once needs transactions on replicated partitions, which a cluster
    /// does not take yet: `--semantics all` runs the other two there.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    brokers: u32,
    /// Faults to inject, comma-separated: kill (SIGKILL + restart), pause (SIGSTOP/SIGCONT),
    /// disconnect (reset every client connection), fsync-error (restart with the storage seam
    /// failing the topic's fsyncs, then restart clean), torn-tail (SIGKILL, a partial batch
    /// appended to every segment tail, restart), or none. On a cluster (--brokers 3): kill,
    /// pause, disconnect, partition (cut a broker's link for a few seconds) and
    /// leader-isolation (cut a partition leader's link); kill and pause hit a partition
    /// leader. The two link faults run the brokers in network namespaces (root and iproute2).
    /// Each kind is injected at least once, the first fault early; producers go on past
    /// --records until each has landed (within a bound), and a run that still misses one is
    /// `inconclusive` (exit status 3).
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
    // TLS and SASL. With --bootstrap-server: how to reach that broker. Otherwise the brokers
    // verify starts listen on --security-protocol alone (see the help's last paragraph).
    #[command(flatten, next_help_heading = "TLS and SASL")]
    security: SecurityArgs,
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


/// Small deterministic generator for the fault schedule.
pub(crate) struct Rng(u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
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

pub(crate) struct RunResult {
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

/// Checks `--faults` against what the fleet can take; sorts and dedups them.
fn check_faults(args: &mut VerifyArgs) -> anyhow::Result<()> {
    if args.faults.iter().any(|f| f == "none") {
        args.faults.clear();
    }
    let (known, what) = if args.brokers > 1 { (CLUSTER_FAULTS, "a cluster") } else { (SINGLE_NODE_FAULTS, "a single broker") };
    for f in &args.faults {
        if !known.contains(&f.as_str()) {
            bail!("fault `{f}` is not one {what} takes (known: {}, or none)", known.join(", "));
        }
    }
    // Each kind once: the schedule, the bound and the verdict count kinds.
    args.faults.sort();
    args.faults.dedup();
    if args.bootstrap_server.is_some() && !args.faults.is_empty() {
        bail!("faults need brokers started by verify itself; drop --bootstrap-server, or run without faults (--faults none)");
    }
    if args.bootstrap_server.is_some() && args.brokers > 1 {
        bail!("--brokers starts brokers; it does not go with --bootstrap-server");
    }
    if args.brokers == 2 {
        bail!("--brokers 2 is a cluster that stops at the first fault (a majority of two is both); use 1, or 3 or more");
    }
    if (args.max_faults as usize) < args.faults.len() {
        bail!("--max-faults {} is fewer than the {} fault kinds asked for; each kind is injected at least once", args.max_faults, args.faults.len());
    }
    Ok(())
}

/// The semantics to run.
fn semantics_to_run(args: &VerifyArgs) -> anyhow::Result<Vec<Semantics>> {
    Ok(match args.semantics {
        Semantics::All => vec![Semantics::AtMostOnce, Semantics::AtLeastOnce, Semantics::ExactlyOnce],
        s => vec![s],
    })
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
    check_faults(&mut args)?;
    let semantics = semantics_to_run(&args)?;
    // For the brokers verify starts, or the properties reaching the one given.
    let (broker_security, given_properties) = match &args.bootstrap_server {
        None => (BrokerSecurity::from_args(&args.security)?, Vec::new()),
        Some(_) => (None, args.security.properties()?),
    };
    if args.bootstrap_server.is_none() {
        broker::stop_brokers_on_signal();
    }
    let workdir = tempfile::tempdir()?;
    let mut results = Vec::new();
    for (i, s) in semantics.iter().enumerate() {
        let dir = workdir.path().join(name_of(*s));
        std::fs::create_dir_all(&dir)?;
        let fleet = match &args.bootstrap_server {
            Some(_) => None,
            None => {
                let bin = match &args.ferry_bin {
                    Some(b) => b.clone(),
                    None => std::env::current_exe()?,
                };
                let isolated = faults::cuts_links(&args.faults);
                Some(Arc::new(Mutex::new(Fleet::start(bin, &dir, args.brokers as usize, isolated, broker_security.as_ref())?)))
            }
        };
        let endpoint = match (&args.bootstrap_server, &fleet) {
            (Some(b), _) => Endpoint { bootstrap: b.clone(), properties: given_properties.clone() },
            (None, Some(f)) => f.lock().expect("fleet lock").endpoint(),
            (None, None) => unreachable!("one of the two is set"),
        };
        let how = match (&broker_security, &args.bootstrap_server) {
            (Some(sec), None) => format!(" over {}", sec.describe()),
            (_, Some(_)) => args.security.protocol().map(|p| format!(" over {p}")).unwrap_or_default(),
            (None, None) => String::new(),
        };
        eprintln!("verify: {} against {}{how} ({} records, faults: {})", name_of(*s), endpoint.bootstrap, args.records, args.faults.join(","));
        let keep = fleet.clone();
        let result = run_one(*s, &args, &endpoint, fleet, args.seed.wrapping_add(i as u64));
        // A fault thread may have stopped holding the brokers only now: stop
        // them here, so no broker process outlives verify.
        if let Some(f) = &keep {
            if let Ok(mut f) = f.lock() {
                f.stop_all();
            }
        }
        let result = result?;
        if let Some(d) = &args.history_dir {
            save_history(d, *s, &result.1, keep.as_ref())?;
        }
        results.push(result.0);
    }
    report::print_results(&results, args.output);
    if let Some(path) = &args.report {
        std::fs::write(path, report::html_report(&results)).with_context(|| format!("cannot write {}", path.display()))?;
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

/// The history (JSON lines) and the brokers' own logs, which explain what
/// the history shows (a stall, a refused request); they live in a
/// temporary dir otherwise.
fn save_history(dir: &Path, s: Semantics, events: &[Event], fleet: Option<&Arc<Mutex<Fleet>>>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text: String = events.iter().map(|e| serde_json::to_string(e).expect("events serialize") + "\n").collect();
    std::fs::write(dir.join(format!("{}.jsonl", name_of(s))), text)?;
    let Some(fleet) = fleet else { return Ok(()) };
    let fleet = fleet.lock().expect("fleet lock");
    let many = fleet.brokers.len() > 1;
    for (i, b) in fleet.brokers.iter().enumerate() {
        let name = if many { format!("{}-broker{}.log", name_of(s), i + 1) } else { format!("{}-broker.log", name_of(s)) };
        if b.log_path().exists() {
            std::fs::copy(b.log_path(), dir.join(name))?;
        }
    }
    Ok(())
}

/// When a producer stops: after its share of --records, unless a requested
/// fault kind has not landed yet; then it goes on until one has, or until
/// the deadline.
pub(crate) struct ProduceUntil {
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

fn run_one(s: Semantics, args: &VerifyArgs, endpoint: &Endpoint, fleet: Option<Arc<Mutex<Fleet>>>, seed: u64) -> anyhow::Result<(RunResult, Vec<Event>)> {
    let recorder = Arc::new(Recorder::new());
    let topic = format!("verify-{}-{seed}", name_of(s));
    let out_topic = format!("{topic}-out");
    let replication_factor = args.brokers.min(3) as i32;
    workload::create_topics(endpoint, &[&topic, &out_topic], args.partitions, replication_factor)?;

    let stop_faults = Arc::new(AtomicBool::new(false));
    // Producers go on past --records until every requested fault kind has
    // landed, within a bound: a run without them proves nothing.
    let faults_pending = Arc::new(AtomicBool::new(fleet.is_some() && !args.faults.is_empty()));
    let kinds = args.faults.len() as u64;
    let fault_bound = Duration::from_millis((args.fault_interval_ms.max(200) * 2 + FAULT_MAX_MS) * kinds + 10_000);
    let fault_thread = fleet.clone().map(|f| {
        let plan = FaultPlan {
            kinds: args.faults.clone(),
            interval_ms: args.fault_interval_ms,
            max_faults: args.max_faults,
            seed,
            topic: topic.clone(),
            partitions: args.partitions,
        };
        faults::spawn(f, plan, stop_faults.clone(), faults_pending.clone(), recorder.clone())
    });

    let produced_all = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    // Consumers.
    let mut consumer_threads = Vec::new();
    for c in 0..args.consumers {
        let (endpoint, topic, out_topic, recorder) = (endpoint.clone(), topic.clone(), out_topic.clone(), recorder.clone());
        let produced_all = produced_all.clone();
        consumer_threads.push(std::thread::spawn(move || workload::consume(s, c, &endpoint, &topic, &out_topic, seed, &recorder, &produced_all)));
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
        let (endpoint, topic, recorder, until) = (endpoint.clone(), topic.clone(), recorder.clone(), until.clone());
        let partitions = args.partitions;
        producer_threads.push(std::thread::spawn(move || workload::produce(s, p, &endpoint, &topic, partitions, &until, pause, seed, &recorder)));
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
    workload::final_read(endpoint, &topic, args.partitions, s == Semantics::ExactlyOnce, &recorder)?;
    if s == Semantics::ExactlyOnce {
        // What processing produced, committed: the exactly-once output.
        for (partition, _offset, value) in workload::read_all(endpoint, &out_topic, args.partitions, true)? {
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
