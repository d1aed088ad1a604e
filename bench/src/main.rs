//! `ferry-bench`: throughput and memory benchmark for the ferry broker.
//!
//! It starts the real `ferry` binary (or uses one already running), produces
//! N records of S bytes with librdkafka at acks=1 and acks=all, reads them all
//! back, and records records/s, MB/s and the broker's peak RSS. Results go to
//! `bench/results/` as JSON and as a Markdown table. See `bench/README.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

mod extra;

/// The targets.
const TARGET_PRODUCE_RECORDS_PER_SEC: f64 = 400_000.0;
const TARGET_RSS_BYTES: u64 = 200 * 1024 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

/// Default matrix: (records, record bytes).
const DEFAULT_SIZES: [(u64, usize); 2] = [(1_000_000, 100), (100_000, 1024)];

#[derive(Debug, Parser)]
#[command(
    name = "ferry-bench",
    version,
    about = "Throughput and memory benchmark for the ferry broker, driven by librdkafka",
    long_about = "Throughput and memory benchmark for the ferry broker, driven by librdkafka.\n\n\
        By default it copies and starts the ferry binary on a free loopback port with a fresh \
        temporary data directory, runs the matrix {1,000,000 x 100 B, 100,000 x 1 KiB} x \
        {acks=1, acks=all} (each workload on a fresh topic: produce all records, wait for every \
        delivery report, then consume them all back from offset 0), samples the broker's RSS, and \
        writes bench/results/ferry-bench-<UTC time>.json, latest.json and latest.md.\n\n\
        Example: cargo run --release -p ferry-bench -- --quick",
    after_help = "Exit status: 0 when every workload delivered and read back every record, \
        1 when any delivery failed or any count did not match (results are still written), \
        2 when the run could not be set up. Missing a performance target does not change \
        the exit status; it is marked in the results."
)]
struct Args {
    /// ferry binary to start (copied to a private temp dir first, so rebuilds
    /// during the run do not affect it).
    #[arg(long, default_value_os_t = default_ferry_bin())]
    ferry_bin: PathBuf,

    /// Use an already running broker at HOST:PORT instead of starting one.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: Option<String>,

    /// With --bootstrap-server: PID of that broker, to measure its RSS and CPU.
    #[arg(long, requires = "bootstrap_server")]
    broker_pid: Option<u32>,

    /// Records per workload (replaces the default counts: 1,000,000 for 100 B,
    /// 100,000 for 1 KiB and for any other size). Comma-separated values make
    /// one workload each.
    #[arg(long, value_delimiter = ',', value_name = "N[,N...]")]
    records: Vec<u64>,

    /// Record (value) sizes in bytes, comma-separated [default: 100,1024].
    #[arg(long, value_delimiter = ',', value_name = "BYTES[,BYTES...]")]
    record_bytes: Vec<usize>,

    /// Producer acks levels, comma-separated: 0, 1, all (or -1) [default: 1,all].
    #[arg(long, value_delimiter = ',', value_name = "ACKS[,ACKS...]")]
    acks: Vec<String>,

    /// Partitions of each benchmark topic (records are spread round-robin).
    #[arg(long, default_value_t = 1)]
    partitions: i32,

    /// A 10x smaller run (record counts divided by 10), for a smoke test.
    #[arg(long)]
    quick: bool,

    /// Matrix workloads: also run each acks=all workload with
    /// enable.idempotence=true (an extra row named "..., idempotent").
    #[arg(long)]
    idempotent: bool,

    /// Directory for the results (JSON and Markdown).
    #[arg(long, default_value_os_t = default_out_dir())]
    out_dir: PathBuf,

    /// Do not write any result files; print the table only.
    #[arg(long)]
    no_write: bool,

    /// Parent directory of the broker's temporary data directory (its
    /// filesystem decides what an fsync costs) [default: the system temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,

    /// Start a fresh broker (and data dir) for every workload instead of one
    /// broker for the whole run.
    #[arg(long)]
    broker_per_workload: bool,

    /// Keep the temporary data directory and broker log after the run.
    #[arg(long)]
    keep_temp: bool,

    /// Give up on delivery reports / consumption after this many seconds
    /// without progress.
    #[arg(long, default_value_t = 60)]
    stall_timeout_secs: u64,

    /// Broker RSS sampling interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    sample_ms: u64,

    /// Before each workload, wait up to this many seconds for the machine to
    /// be quiet (other processes using under --quiet-pct of one core over a
    /// 1 s window). 0 = do not wait. Other processes' CPU use during each
    /// phase is recorded either way.
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    wait_quiet: u64,

    /// Threshold for --wait-quiet and for the "busy machine" warning, in
    /// percent of one core.
    #[arg(long, default_value_t = 20.0)]
    quiet_pct: f64,

    /// Which workloads to run, comma-separated: matrix (the produce/consume
    /// matrix above), group (consumer group with synchronous commits), txn
    /// (transactional producer vs acks=all), all.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "matrix", value_name = "KIND[,KIND...]")]
    workload: Vec<WorkloadKind>,

    /// group/txn: records produced [default: 1,000,000; 100,000 with --quick].
    #[arg(long)]
    extra_records: Option<u64>,

    /// group/txn: record size in bytes.
    #[arg(long, default_value_t = 100)]
    extra_record_bytes: usize,

    /// group: partitions of the topic.
    #[arg(long, default_value_t = 6)]
    group_partitions: i32,

    /// group: consumers in the group (one thread each).
    #[arg(long, default_value_t = 3)]
    group_consumers: usize,

    /// group: each consumer commits synchronously after every N records it received.
    #[arg(long, default_value_t = 1000)]
    commit_every: u64,

    /// txn: partition counts to run, comma-separated (one txn workload each).
    #[arg(long, value_delimiter = ',', default_value = "1,4", value_name = "P[,P...]")]
    txn_partitions: Vec<i32>,

    /// txn: the transactional producer commits every this many milliseconds.
    #[arg(long, default_value_t = 100)]
    txn_commit_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WorkloadKind {
    Matrix,
    Group,
    Txn,
    All,
}

/// One unit of the run.
enum Job {
    Matrix(WorkloadSpec),
    Group(extra::GroupSpec),
    Txn(extra::TxnSpec),
}

impl Job {
    fn name(&self) -> String {
        match self {
            Job::Matrix(s) => s.name(),
            Job::Group(s) => s.name(),
            Job::Txn(s) => s.name(),
        }
    }
}

fn jobs(args: &Args) -> Result<Vec<Job>> {
    let has = |k: WorkloadKind| args.workload.contains(&k) || args.workload.contains(&WorkloadKind::All);
    let mut out = Vec::new();
    if has(WorkloadKind::Matrix) {
        out.extend(workloads(args)?.into_iter().map(Job::Matrix));
    }
    let n = args.extra_records.unwrap_or(1_000_000);
    let n = if args.quick { (n / 10).max(1) } else { n };
    if (has(WorkloadKind::Group) || has(WorkloadKind::Txn)) && (n == 0 || args.extra_record_bytes == 0) {
        bail!("--extra-records and --extra-record-bytes must be at least 1");
    }
    if has(WorkloadKind::Group) {
        if args.group_partitions < 1 || args.group_consumers < 1 || args.commit_every < 1 {
            bail!("--group-partitions, --group-consumers and --commit-every must be at least 1");
        }
        out.push(Job::Group(extra::GroupSpec {
            records: n,
            record_bytes: args.extra_record_bytes,
            partitions: args.group_partitions,
            consumers: args.group_consumers,
            commit_every: args.commit_every,
        }));
    }
    if has(WorkloadKind::Txn) {
        for &p in &args.txn_partitions {
            if p < 1 {
                bail!("--txn-partitions values must be at least 1");
            }
            out.push(Job::Txn(extra::TxnSpec {
                records: n,
                record_bytes: args.extra_record_bytes,
                partitions: p,
                commit_interval: Duration::from_millis(args.txn_commit_ms.max(1)),
            }));
        }
    }
    Ok(out)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn default_ferry_bin() -> PathBuf {
    workspace_root().join("target").join("release").join("ferry")
}

fn default_out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("results")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Acks {
    #[serde(rename = "0")]
    Zero,
    #[serde(rename = "1")]
    One,
    All,
}

impl Acks {
    fn parse(s: &str) -> Result<Acks> {
        match s.trim() {
            "0" => Ok(Acks::Zero),
            "1" => Ok(Acks::One),
            "all" | "-1" => Ok(Acks::All),
            other => bail!("bad --acks value {other:?}: use 0, 1 or all"),
        }
    }
    fn config_value(self) -> &'static str {
        match self {
            Acks::Zero => "0",
            Acks::One => "1",
            Acks::All => "all",
        }
    }
    /// Ferry fsyncs before answering acks=all; acks=0/1 never wait for an fsync.
    fn fsync(self) -> bool {
        self == Acks::All
    }
}

#[derive(Debug, Clone)]
struct WorkloadSpec {
    records: u64,
    record_bytes: usize,
    acks: Acks,
    partitions: i32,
    idempotent: bool,
}

impl WorkloadSpec {
    fn name(&self) -> String {
        let idem = if self.idempotent { ", idempotent" } else { "" };
        format!("{} x {} B, acks={}{idem}", group_thousands(self.records), self.record_bytes, self.acks.config_value())
    }
}

fn workloads(args: &Args) -> Result<Vec<WorkloadSpec>> {
    if args.partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    let acks: Vec<Acks> =
        if args.acks.is_empty() { vec![Acks::One, Acks::All] } else { args.acks.iter().map(|a| Acks::parse(a)).collect::<Result<_>>()? };
    let sizes: Vec<usize> =
        if args.record_bytes.is_empty() { DEFAULT_SIZES.iter().map(|(_, s)| *s).collect() } else { args.record_bytes.clone() };
    if sizes.contains(&0) {
        bail!("--record-bytes must be at least 1");
    }
    let mut pairs = Vec::new();
    for &size in &sizes {
        if args.records.is_empty() {
            let n = DEFAULT_SIZES.iter().find(|(_, s)| *s == size).map(|(n, _)| *n).unwrap_or(100_000);
            pairs.push((n, size));
        } else {
            for &n in &args.records {
                pairs.push((n, size));
            }
        }
    }
    let mut out = Vec::new();
    for (n, size) in pairs {
        let n = if args.quick { (n / 10).max(1) } else { n };
        if n == 0 {
            bail!("--records must be at least 1");
        }
        for &a in &acks {
            out.push(WorkloadSpec { records: n, record_bytes: size, acks: a, partitions: args.partitions, idempotent: false });
            if args.idempotent && a == Acks::All {
                out.push(WorkloadSpec { records: n, record_bytes: size, acks: a, partitions: args.partitions, idempotent: true });
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// /proc helpers
// ---------------------------------------------------------------------------

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse::<u64>().ok()
    })
}

fn vm_rss_bytes(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS").map(|k| k * 1024)
}

fn vm_hwm_bytes(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM").map(|k| k * 1024)
}

/// Resets the kernel's peak-RSS counter (VmHWM) of `pid`, so that each
/// workload gets its own peak. Returns false where not permitted.
fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU time of a process in nanoseconds: the sum of its threads' run time from
/// /proc/<pid>/task/*/schedstat (nanosecond resolution), or utime + stime
/// from /proc/<pid>/stat (clock-tick resolution) where schedstat is missing.
/// Threads that exit inside a measured phase drop out of the schedstat sum;
/// the broker's and librdkafka's threads live for the whole phase.
fn cpu_ns(pid: &str, hz: f64) -> Option<(u64, CpuSource)> {
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        let mut total = 0u64;
        let mut any = false;
        for e in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
                    total += ns;
                    any = true;
                }
            }
        }
        if any {
            return Some((total, CpuSource::Schedstat));
        }
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces;
    // utime and stime are fields 14 and 15 of the line (11 and 12 after ')').
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((((utime + stime) as f64 / hz * 1e9) as u64, CpuSource::Ticks))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CpuSource {
    Schedstat,
    Ticks,
}

fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// Machine-wide CPU time from /proc/stat, in nanoseconds summed over all
/// CPUs: (task time: user + nice + system, interrupt time: irq + softirq,
/// steal). Interrupt time is not charged to any process; on loopback it is
/// mostly the network stack carrying the benchmark's own traffic.
fn machine_cpu_ns(hz: f64) -> Option<(u64, u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let to_ns = |t: u64| (t as f64 / hz * 1e9) as u64;
    Some((to_ns(get(0) + get(1) + get(2)), to_ns(get(5) + get(6)), to_ns(get(7))))
}

/// CPU time of the broker, of this process (all librdkafka threads included)
/// and of everything else on the machine, over one phase.
struct CpuMeter {
    broker_pid: Option<String>,
    broker_start: Option<(u64, CpuSource)>,
    self_start: Option<(u64, CpuSource)>,
    machine_start: Option<(u64, u64, u64)>,
    started: Instant,
    hz: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
struct CpuUse {
    /// Broker CPU time / wall time, in percent of one core (200% = both cores of a 2-core machine).
    broker_pct: Option<f64>,
    /// ferry-bench (librdkafka client) CPU time / wall time, in percent of one core.
    client_pct: Option<f64>,
    /// CPU used by every other process on the machine (noise: a busy machine
    /// makes the figures unreliable), in percent of one core.
    other_pct: Option<f64>,
    /// Interrupt and softirq time (not charged to any process; on loopback
    /// mostly the kernel's network stack moving this benchmark's bytes).
    irq_pct: Option<f64>,
    /// Time the hypervisor ran something else instead of this VM, in percent of one core.
    steal_pct: Option<f64>,
}

impl CpuMeter {
    fn start(broker_pid: Option<u32>, hz: f64) -> CpuMeter {
        let broker_pid = broker_pid.map(|p| p.to_string());
        CpuMeter {
            broker_start: broker_pid.as_deref().and_then(|p| cpu_ns(p, hz)),
            broker_pid,
            self_start: cpu_ns("self", hz),
            machine_start: machine_cpu_ns(hz),
            started: Instant::now(),
            hz,
        }
    }
    fn finish(&self) -> CpuUse {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let pct = |a: Option<(u64, CpuSource)>, b: Option<(u64, CpuSource)>| match (a, b) {
            (Some((a, sa)), Some((b, sb))) if sa == sb => Some(round1(b.saturating_sub(a) as f64 / 1e9 / wall * 100.0)),
            _ => None,
        };
        let broker_end = self.broker_pid.as_deref().and_then(|p| cpu_ns(p, self.hz));
        let self_end = cpu_ns("self", self.hz);
        let delta = |a: Option<(u64, CpuSource)>, b: Option<(u64, CpuSource)>| match (a, b) {
            (Some((a, _)), Some((b, _))) => b.saturating_sub(a),
            _ => 0,
        };
        let p = |ns: u64| Some(round1(ns as f64 / 1e9 / wall * 100.0));
        let (other_pct, irq_pct, steal_pct) = match (self.machine_start, machine_cpu_ns(self.hz)) {
            (Some((t0, i0, s0)), Some((t1, i1, s1))) => {
                let ours = delta(self.broker_start, broker_end) + delta(self.self_start, self_end);
                let other = t1.saturating_sub(t0).saturating_sub(ours);
                (p(other), p(i1.saturating_sub(i0)), p(s1.saturating_sub(s0)))
            }
            _ => (None, None, None),
        };
        CpuUse { broker_pct: pct(self.broker_start, broker_end), client_pct: pct(self.self_start, self_end), other_pct, irq_pct, steal_pct }
    }
}

/// Waits until other processes use less than `pct` of one core over a 1 s
/// window, for at most `max`. Returns the last window's figure.
fn wait_for_quiet(max: Duration, pct: f64, broker_pid: Option<u32>, hz: f64) -> Option<f64> {
    let deadline = Instant::now() + max;
    let mut announced = false;
    loop {
        let m = CpuMeter::start(broker_pid, hz);
        std::thread::sleep(Duration::from_secs(1));
        let other = m.finish().other_pct?;
        if other < pct || Instant::now() >= deadline {
            return Some(other);
        }
        if !announced {
            eprintln!("  waiting for a quiet machine (other processes use {other:.0}% of a core)");
            announced = true;
        }
    }
}

/// Samples the broker's VmRSS every `interval` and keeps maxima: one for the
/// whole run and one that the main thread resets per phase.
struct RssSampler {
    run_max: Arc<AtomicU64>,
    phase_max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32, interval: Duration) -> RssSampler {
        let run_max = Arc::new(AtomicU64::new(0));
        let phase_max = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, p, s) = (run_max.clone(), phase_max.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Some(rss) = vm_rss_bytes(pid) {
                        r.fetch_max(rss, Ordering::Relaxed);
                        p.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(interval);
                }
            })
            .expect("spawn sampler");
        RssSampler { run_max, phase_max, stop, handle: Some(handle) }
    }
    /// Returns the phase's maximum so far and starts a new phase.
    fn take_phase(&self) -> u64 {
        self.phase_max.swap(0, Ordering::Relaxed)
    }
    fn run_max(&self) -> u64 {
        self.run_max.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The broker under test
// ---------------------------------------------------------------------------

struct Broker {
    bootstrap: String,
    pid: Option<u32>,
    child: Option<Child>,
    log_path: Option<PathBuf>,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Broker {
    fn external(bootstrap: &str, pid: Option<u32>) -> Broker {
        Broker { bootstrap: bootstrap.to_string(), pid, child: None, log_path: None }
    }

    fn spawn(bin: &Path, tmp: &Path, index: usize) -> Result<Broker> {
        let port = free_port()?;
        let bootstrap = format!("127.0.0.1:{port}");
        let data_dir = tmp.join(format!("data-{index}"));
        let log_path = tmp.join(format!("ferry-{index}.log"));
        let log = std::fs::File::create(&log_path).context("create broker log")?;
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg(&bootstrap)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("FERRY_LOG", std::env::var("FERRY_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(&bootstrap).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("ferry exited with {status} at start:\n{log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("ferry did not start listening on {bootstrap} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Broker { bootstrap, pid: Some(pid), child: Some(child), log_path: Some(log_path) })
    }

    /// None while running (or not ours); Some(description) once it has exited.
    fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// SIGTERM by PID, wait up to 20 s, then SIGKILL. Returns how it ended.
    fn stop(&mut self) -> Option<String> {
        let mut c = self.child.take()?;
        let pid = c.id();
        if let Ok(Some(status)) = c.try_wait() {
            return Some(format!("had already exited: {status}"));
        }
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(format!("stopped by SIGTERM: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        Some("did not exit within 20 s of SIGTERM; killed".into())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// PIDs of brokers we started, for the Ctrl-C handler.
static STARTED_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn install_interrupt_handler() {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                    return;
                };
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
            let pids = STARTED_PIDS.lock().map(|v| v.clone()).unwrap_or_default();
            for pid in pids {
                let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            }
            eprintln!("ferry-bench: interrupted; stopped the brokers it started");
            std::process::exit(130);
        })
        .expect("spawn signal thread");
}

// ---------------------------------------------------------------------------
// librdkafka contexts
// ---------------------------------------------------------------------------

/// Counts client-level errors (broker transport failures and the like).
#[derive(Default)]
struct ErrorLog {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl ErrorLog {
    fn push(&self, msg: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut v) = self.first.lock() {
            if v.len() < 10 {
                v.push(msg);
            }
        }
    }
    fn snapshot(&self) -> (u64, Vec<String>) {
        (self.count.load(Ordering::Relaxed), self.first.lock().map(|v| v.clone()).unwrap_or_default())
    }
}

struct BenchProducerContext {
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Number of delivery reports that ends the phase (records minus
    /// enqueue failures).
    expected: AtomicU64,
    last_report: Mutex<Option<Instant>>,
    failures: Mutex<BTreeMap<String, u64>>,
    client_errors: ErrorLog,
}

impl BenchProducerContext {
    fn new(expected: u64) -> Self {
        BenchProducerContext {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            expected: AtomicU64::new(expected),
            last_report: Mutex::new(None),
            failures: Mutex::new(BTreeMap::new()),
            client_errors: ErrorLog::default(),
        }
    }
    fn reports(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

impl ClientContext for BenchProducerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.client_errors.push(format!("{error}: {reason}"));
    }
}

impl ProducerContext for BenchProducerContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let done = match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed) + 1 + self.failed.load(Ordering::Relaxed),
            Err((e, _)) => {
                if let Ok(mut m) = self.failures.lock() {
                    *m.entry(e.to_string()).or_insert(0) += 1;
                }
                self.failed.fetch_add(1, Ordering::Relaxed) + 1 + self.delivered.load(Ordering::Relaxed)
            }
        };
        if done == self.expected.load(Ordering::Relaxed) {
            if let Ok(mut l) = self.last_report.lock() {
                *l = Some(Instant::now());
            }
        }
    }
}

#[derive(Default)]
struct BenchConsumerContext {
    client_errors: ErrorLog,
}

impl ClientContext for BenchConsumerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.client_errors.push(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for BenchConsumerContext {}

fn producer_settings(bootstrap: &str, acks: Acks, idempotent: bool) -> Vec<(&'static str, String)> {
    vec![
        ("bootstrap.servers", bootstrap.to_string()),
        ("acks", acks.config_value().to_string()),
        ("linger.ms", "5".into()),
        ("batch.size", "1000000".into()),
        ("batch.num.messages", "1000000".into()),
        ("queue.buffering.max.messages", "10000000".into()),
        ("queue.buffering.max.kbytes", "2097152".into()),
        ("compression.type", "none".into()),
        ("enable.idempotence", idempotent.to_string()),
        ("message.timeout.ms", "120000".into()),
    ]
}

fn consumer_settings(bootstrap: &str) -> Vec<(&'static str, String)> {
    vec![
        ("bootstrap.servers", bootstrap.to_string()),
        ("group.id", "ferry-bench".into()),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("auto.offset.reset", "earliest".into()),
        ("max.partition.fetch.bytes", "4194304".into()),
        ("fetch.max.bytes", "52428800".into()),
        ("fetch.wait.max.ms", "100".into()),
        // librdkafka postpones the next fetch by fetch.queue.backoff.ms (1 s by
        // default) whenever its local queue holds more than queued.min.messages;
        // a consumer this fast would spend most of the phase in that backoff.
        ("queued.min.messages", "1000000".into()),
        ("fetch.queue.backoff.ms", "10".into()),
    ]
}

fn client_config(settings: &[(&'static str, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in settings {
        c.set(*k, v);
    }
    c
}

fn settings_json(settings: &[(&'static str, String)]) -> BTreeMap<String, String> {
    settings.iter().filter(|(k, _)| *k != "bootstrap.servers").map(|(k, v)| (k.to_string(), v.clone())).collect()
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

#[derive(Debug, Serialize, Default)]
struct ProduceResult {
    /// First send to last delivery report.
    seconds: f64,
    records_per_sec: f64,
    /// Payload megabytes (10^6 bytes of record values) per second.
    mb_per_sec: f64,
    /// Time to hand every record to librdkafka (the rest is waiting for acks).
    enqueue_seconds: f64,
    sent: u64,
    delivered: u64,
    failed: u64,
    enqueue_errors: u64,
    queue_full_waits: u64,
    failure_kinds: BTreeMap<String, u64>,
    client_errors: u64,
    client_error_samples: Vec<String>,
    complete: bool,
    cpu: CpuUse,
}

#[derive(Debug, Serialize, Default)]
struct ConsumeResult {
    /// assign() to the last expected record.
    seconds: f64,
    records_per_sec: f64,
    mb_per_sec: f64,
    consumed: u64,
    payload_bytes: u64,
    /// Records whose value was not `record_bytes` long.
    wrong_size: u64,
    /// Records whose offset was not the next one expected in its partition.
    offset_anomalies: u64,
    /// Sum of the partitions' high watermarks after producing.
    log_end_offsets: Option<i64>,
    consume_errors: u64,
    consume_error_samples: Vec<String>,
    client_errors: u64,
    client_error_samples: Vec<String>,
    complete: bool,
    cpu: CpuUse,
}

#[derive(Debug, Serialize, Default)]
struct RssResult {
    /// Kernel's VmHWM for the workload (reset via clear_refs at its start,
    /// when permitted; otherwise the broker's lifetime peak so far).
    peak_vmhwm_bytes: Option<u64>,
    vmhwm_reset: bool,
    /// Max of VmRSS samples taken every --sample-ms during the workload.
    sampled_max_bytes: Option<u64>,
    produce_sampled_max_bytes: Option<u64>,
    consume_sampled_max_bytes: Option<u64>,
    before_bytes: Option<u64>,
    after_bytes: Option<u64>,
    /// max(VmHWM, sampled max).
    peak_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct WorkloadResult {
    name: String,
    topic: String,
    records: u64,
    record_bytes: usize,
    partitions: i32,
    acks: Acks,
    /// enable.idempotence=true (only with --idempotent).
    idempotent: bool,
    /// Whether ferry fsyncs before acknowledging (acks=all).
    fsync: bool,
    produce: ProduceResult,
    consume: ConsumeResult,
    rss: RssResult,
    /// Every record delivered and read back exactly once.
    ok: bool,
    problems: Vec<String>,
    /// Other processes' CPU use (percent of one core) in the 1 s before the
    /// workload, when --wait-quiet was given.
    other_cpu_before_pct: Option<f64>,
    /// Other processes used more than --quiet-pct of a core during a phase.
    busy_machine: bool,
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn create_topic(rt: &tokio::runtime::Runtime, bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().context("admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let res = rt.block_on(admin.create_topics([&t], &opts)).context("CreateTopics")?;
    for r in res {
        if let Err((name, code)) = r {
            bail!("CreateTopics {name}: {code}");
        }
    }
    Ok(())
}

fn run_produce(
    spec: &WorkloadSpec,
    bootstrap: &str,
    topic: &str,
    broker_pid: Option<u32>,
    hz: f64,
    stall: Duration,
) -> Result<ProduceResult> {
    let ctx = BenchProducerContext::new(spec.records);
    let producer: BaseProducer<BenchProducerContext> =
        client_config(&producer_settings(bootstrap, spec.acks, spec.idempotent)).create_with_context(ctx).context("create producer")?;
    // Connect and learn the topic's leader before the clock starts.
    producer.client().fetch_metadata(Some(topic), Duration::from_secs(30)).context("producer metadata")?;

    let payload: Vec<u8> = (0..spec.record_bytes).map(|i| b'a' + (i % 26) as u8).collect();
    let parts = spec.partitions as u64;
    let mut queue_full_waits = 0u64;
    let mut enqueue_errors = 0u64;
    let mut sent = 0u64;
    let cpu = CpuMeter::start(broker_pid, hz);
    let start = Instant::now();
    for i in 0..spec.records {
        let mut record = BaseRecord::to(topic).partition((i % parts) as i32).payload(&payload[..]);
        loop {
            match producer.send::<[u8], [u8]>(record) {
                Ok(()) => {
                    sent += 1;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    queue_full_waits += 1;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    enqueue_errors += 1;
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
    }
    let enqueue_seconds = start.elapsed().as_secs_f64();
    // Wait for every delivery report.
    let mut last_progress = Instant::now();
    let mut last_seen = producer.context().reports();
    while producer.context().reports() < sent {
        producer.poll(Duration::from_millis(50));
        let now = producer.context().reports();
        if now != last_seen {
            last_seen = now;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > stall {
            break;
        }
    }
    let end = producer.context().last_report.lock().ok().and_then(|l| *l).unwrap_or_else(Instant::now);
    let cpu = cpu.finish();
    let seconds = end.duration_since(start).as_secs_f64().max(1e-9);
    let ctx = producer.context();
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    let failed = ctx.failed.load(Ordering::Relaxed);
    let (client_errors, client_error_samples) = ctx.client_errors.snapshot();
    Ok(ProduceResult {
        seconds: round3(seconds),
        records_per_sec: round1(delivered as f64 / seconds),
        mb_per_sec: round2(delivered as f64 * spec.record_bytes as f64 / seconds / 1e6),
        enqueue_seconds: round3(enqueue_seconds),
        sent,
        delivered,
        failed,
        enqueue_errors,
        queue_full_waits,
        failure_kinds: ctx.failures.lock().map(|m| m.clone()).unwrap_or_default(),
        client_errors,
        client_error_samples,
        complete: delivered == spec.records && failed == 0 && enqueue_errors == 0,
        cpu,
    })
}

fn run_consume(
    spec: &WorkloadSpec,
    bootstrap: &str,
    topic: &str,
    broker_pid: Option<u32>,
    hz: f64,
    stall: Duration,
) -> Result<ConsumeResult> {
    let consumer: BaseConsumer<BenchConsumerContext> =
        client_config(&consumer_settings(bootstrap)).create_with_context(BenchConsumerContext::default()).context("create consumer")?;
    let mut log_end = Some(0i64);
    for p in 0..spec.partitions {
        match consumer.fetch_watermarks(topic, p, Duration::from_secs(30)) {
            Ok((_, high)) => log_end = log_end.map(|s| s + high),
            Err(_) => log_end = None,
        }
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..spec.partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(0)).context("partition list")?;
    }
    let mut next_offset = vec![0i64; spec.partitions as usize];
    let mut r = ConsumeResult { log_end_offsets: log_end, ..Default::default() };
    let mut errors = Vec::new();
    let cpu = CpuMeter::start(broker_pid, hz);
    let start = Instant::now();
    consumer.assign(&tpl).context("assign")?;
    let mut last_progress = Instant::now();
    while r.consumed < spec.records {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                r.consumed += 1;
                let len = m.payload().map(|p| p.len()).unwrap_or(0);
                r.payload_bytes += len as u64;
                if len != spec.record_bytes {
                    r.wrong_size += 1;
                }
                let slot = next_offset.get_mut(m.partition() as usize);
                match slot {
                    Some(next) if *next == m.offset() => *next += 1,
                    Some(next) => {
                        r.offset_anomalies += 1;
                        *next = m.offset() + 1;
                    }
                    None => r.offset_anomalies += 1,
                }
                last_progress = Instant::now();
            }
            Some(Err(e)) => {
                r.consume_errors += 1;
                if errors.len() < 10 {
                    errors.push(e.to_string());
                }
            }
            None => {
                if last_progress.elapsed() > stall {
                    break;
                }
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    r.cpu = cpu.finish();
    // Anything beyond the expected count (duplicates) shows up briefly.
    let extra_deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < extra_deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(50)) {
            r.consumed += 1;
        }
    }
    r.seconds = round3(seconds);
    let counted = r.consumed.min(spec.records);
    r.records_per_sec = round1(counted as f64 / seconds);
    r.mb_per_sec = round2(counted as f64 * spec.record_bytes as f64 / seconds / 1e6);
    r.consume_error_samples = errors;
    let (n, s) = consumer.context().client_errors.snapshot();
    r.client_errors = n;
    r.client_error_samples = s;
    r.complete = r.consumed == spec.records && r.wrong_size == 0 && r.offset_anomalies == 0;
    Ok(r)
}

/// What every workload runner needs besides its spec: the runtime, the broker under test and its RSS
/// sampler, the clock rate for CPU accounting, the stall timeout, names for fresh topics (run id and job
/// index) and how long to wait for a quiet machine first.
#[derive(Clone, Copy)]
pub(crate) struct RunCtx<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub broker: &'a Broker,
    pub sampler: Option<&'a RssSampler>,
    pub hz: f64,
    pub stall: Duration,
    pub run_id: u64,
    pub index: usize,
    pub wait_quiet: Duration,
    pub quiet_pct: f64,
}

/// The parts of a workload result that the run loop collects.
pub(crate) trait Outcome {
    fn peak_bytes(&self) -> Option<u64>;
    fn problems(&self) -> &[String];
}

impl Outcome for WorkloadResult {
    fn peak_bytes(&self) -> Option<u64> {
        self.rss.peak_bytes
    }
    fn problems(&self) -> &[String] {
        &self.problems
    }
}

/// Records one workload's outcome: a result raises the run's peak RSS, has its problems printed and is
/// pushed to `results`; an error is printed and added to `errors`.
fn collect_outcome<T: Outcome>(
    outcome: Result<T>,
    name: &str,
    run_peak: &mut Option<u64>,
    results: &mut Vec<T>,
    errors: &mut Vec<String>,
) {
    match outcome {
        Ok(w) => {
            if let Some(p) = w.peak_bytes() {
                *run_peak = Some(run_peak.unwrap_or(0).max(p));
            }
            for p in w.problems() {
                eprintln!("    PROBLEM: {p}");
            }
            results.push(w);
        }
        Err(e) => {
            eprintln!("    ERROR: {e:#}");
            errors.push(format!("{name}: {e:#}"));
        }
    }
}

fn run_workload(spec: &WorkloadSpec, cx: &RunCtx) -> Result<WorkloadResult> {
    let RunCtx { rt, broker, sampler, hz, stall, run_id, index, wait_quiet, quiet_pct } = *cx;
    let idem = if spec.idempotent { "-idem" } else { "" };
    let topic = format!("bench-{run_id}-{index}-{}b-acks{}{idem}", spec.record_bytes, spec.acks.config_value());
    let pid = broker.pid;
    create_topic(rt, &broker.bootstrap, &topic, spec.partitions)?;
    std::thread::sleep(Duration::from_millis(200));

    let quiet_before = if wait_quiet.is_zero() { None } else { wait_for_quiet(wait_quiet, quiet_pct, pid, hz) };
    let vmhwm_reset = pid.map(reset_hwm).unwrap_or(false);
    let before = pid.and_then(vm_rss_bytes);
    if let Some(s) = sampler {
        s.take_phase();
    }

    eprintln!("  producing {} records of {} B (acks={}) to {topic}", spec.records, spec.record_bytes, spec.acks.config_value());
    let produce = run_produce(spec, &broker.bootstrap, &topic, pid, hz, stall)?;
    let produce_max = sampler.map(|s| s.take_phase());
    eprintln!(
        "    {:.0} records/s, {:.1} MB/s; delivered {}/{} failed {}",
        produce.records_per_sec, produce.mb_per_sec, produce.delivered, spec.records, produce.failed
    );

    eprintln!("  consuming them back from offset 0");
    let consume = run_consume(spec, &broker.bootstrap, &topic, pid, hz, stall)?;
    let consume_max = sampler.map(|s| s.take_phase());
    eprintln!("    {:.0} records/s, {:.1} MB/s; read {}/{}", consume.records_per_sec, consume.mb_per_sec, consume.consumed, spec.records);

    let hwm = pid.and_then(vm_hwm_bytes);
    let sampled = match (produce_max, consume_max, pid.and_then(vm_rss_bytes)) {
        (Some(a), Some(b), now) => Some(a.max(b).max(now.unwrap_or(0))),
        _ => None,
    };
    let rss = RssResult {
        peak_vmhwm_bytes: hwm,
        vmhwm_reset,
        sampled_max_bytes: sampled,
        produce_sampled_max_bytes: produce_max,
        consume_sampled_max_bytes: consume_max,
        before_bytes: before,
        after_bytes: pid.and_then(vm_rss_bytes),
        peak_bytes: match (hwm, sampled) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
        },
    };

    let mut problems = Vec::new();
    if produce.failed > 0 || produce.enqueue_errors > 0 {
        problems
            .push(format!("{} delivery failures, {} enqueue errors: {:?}", produce.failed, produce.enqueue_errors, produce.failure_kinds));
    }
    if produce.delivered + produce.failed < produce.sent {
        problems.push(format!("{} delivery reports never arrived", produce.sent - produce.delivered - produce.failed));
    }
    if consume.consumed != spec.records {
        problems.push(format!("consumed {} records, expected {}", consume.consumed, spec.records));
    }
    if consume.wrong_size > 0 {
        problems.push(format!("{} records with the wrong size", consume.wrong_size));
    }
    if consume.offset_anomalies > 0 {
        problems.push(format!("{} offset gaps or repeats", consume.offset_anomalies));
    }
    if consume.consume_errors > 0 {
        problems.push(format!("{} consume errors: {:?}", consume.consume_errors, consume.consume_error_samples));
    }
    if let Some(end) = consume.log_end_offsets {
        if end != produce.delivered as i64 {
            problems.push(format!("log end offsets sum to {end}, delivered {}", produce.delivered));
        }
    }
    let busy_machine = [produce.cpu.other_pct, consume.cpu.other_pct].iter().flatten().any(|p| *p >= quiet_pct);
    if busy_machine {
        eprintln!(
            "    WARNING: other processes used {} / {} of a core during produce / consume; figures are disturbed",
            pct(produce.cpu.other_pct),
            pct(consume.cpu.other_pct)
        );
    }
    Ok(WorkloadResult {
        other_cpu_before_pct: quiet_before,
        busy_machine,
        name: spec.name(),
        topic,
        records: spec.records,
        record_bytes: spec.record_bytes,
        partitions: spec.partitions,
        acks: spec.acks,
        idempotent: spec.idempotent,
        fsync: spec.acks.fsync(),
        ok: problems.is_empty() && produce.complete && consume.complete,
        produce,
        consume,
        rss,
        problems,
    })
}

// ---------------------------------------------------------------------------
// Environment facts
// ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct Machine {
    nproc: usize,
    mem_total_mib: Option<u64>,
    cpu_model: Option<String>,
    kernel: Option<String>,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k.trim(), "model name" | "Model" | "cpu model").then(|| v.trim().to_string())
        })
        .filter(|s| !s.is_empty());
    let mem_total_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse::<u64>().ok()).map(|k| k / 1024)
    });
    Machine {
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        mem_total_mib,
        cpu_model,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
    }
}

#[derive(Debug, Serialize)]
struct FerryInfo {
    /// `git rev-parse --short HEAD` of the workspace.
    commit: Option<String>,
    /// Uncommitted changes under crates/ or the root Cargo files when the run
    /// started (the binary may include them).
    worktree_dirty: Option<bool>,
    mode: &'static str,
    binary: Option<String>,
    binary_modified_unix: Option<u64>,
    binary_version: Option<String>,
    bootstrap: Option<String>,
    data_dir_filesystem: Option<String>,
    fsync: BTreeMap<&'static str, &'static str>,
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(workspace_root()).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Filesystem type of the mount holding `path` (longest mount-point prefix).
fn filesystem_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mut best: Option<(usize, String, String)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let mp = f[1].replace("\\040", " ");
        if path.starts_with(&mp) && best.as_ref().is_none_or(|(n, _, _)| mp.len() > *n) {
            best = Some((mp.len(), f[2].to_string(), f[0].to_string()));
        }
    }
    best.map(|(_, fstype, dev)| format!("{fstype} ({dev})"))
}

fn fsync_notes() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("acks=1", "no fsync: acknowledged once the batch is written to the segment file (OS page cache)"),
        ("acks=all", "fsync before acknowledging; concurrent producers share fsyncs (group commit)"),
        ("acks=0", "no response and no fsync"),
    ])
}

// ---------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct Target {
    name: String,
    target: String,
    measured: Option<String>,
    /// None when the run did not measure it.
    met: Option<bool>,
}

#[derive(Debug, Serialize)]
struct BrokerLog {
    warn_lines: u64,
    error_lines: u64,
    samples: Vec<String>,
    exit: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    tool: &'static str,
    tool_version: &'static str,
    started_utc: String,
    finished_utc: String,
    quick: bool,
    command: String,
    /// /proc/loadavg when the run started.
    loadavg_at_start: Option<String>,
    machine: Machine,
    ferry: FerryInfo,
    librdkafka: LibrdkafkaInfo,
    producer_config: BTreeMap<String, String>,
    consumer_config: BTreeMap<String, String>,
    rss_sample_interval_ms: u64,
    workloads: Vec<WorkloadResult>,
    /// `--workload group` results.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    group_workloads: Vec<extra::GroupResult>,
    /// `--workload txn` results.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    txn_workloads: Vec<extra::TxnResult>,
    run_peak_rss_bytes: Option<u64>,
    targets: Vec<Target>,
    broker_log: Option<BrokerLog>,
    errors: Vec<String>,
    all_ok: bool,
}

#[derive(Debug, Serialize)]
struct LibrdkafkaInfo {
    version: String,
    version_hex: String,
}

fn targets(workloads: &[WorkloadResult], run_peak: Option<u64>) -> Vec<Target> {
    let mut t = Vec::new();
    let candidates: Vec<&WorkloadResult> = workloads.iter().filter(|w| w.acks == Acks::One && w.record_bytes == 100).collect();
    let best = candidates.iter().map(|w| w.produce.records_per_sec).fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    t.push(Target {
        name: "produce throughput, 100 B records, acks=1".into(),
        target: format!(">= {} records/s", group_thousands(TARGET_PRODUCE_RECORDS_PER_SEC as u64)),
        measured: best.map(|b| format!("{} records/s", group_thousands(b.round() as u64))),
        met: best.map(|b| b >= TARGET_PRODUCE_RECORDS_PER_SEC),
    });
    t.push(Target {
        name: "broker RSS throughout the run".into(),
        target: format!("< {} MiB", TARGET_RSS_BYTES as f64 / MIB),
        measured: run_peak.map(|b| format!("{:.1} MiB peak", b as f64 / MIB)),
        met: run_peak.map(|b| b < TARGET_RSS_BYTES),
    });
    t
}

fn scan_broker_logs(paths: &[PathBuf]) -> BrokerLog {
    let mut bl = BrokerLog { warn_lines: 0, error_lines: 0, samples: Vec::new(), exit: Vec::new() };
    for p in paths {
        let Ok(f) = std::fs::File::open(p) else {
            continue;
        };
        for line in BufReader::new(f).lines().map_while(|l| l.ok()) {
            let line = strip_ansi(&line);
            let level = line.split_whitespace().nth(1).unwrap_or("");
            let is_err = level == "ERROR" || line.contains("panicked");
            let is_warn = level == "WARN";
            if is_err {
                bl.error_lines += 1;
            }
            if is_warn {
                bl.warn_lines += 1;
            }
            if (is_err || is_warn) && bl.samples.len() < 20 {
                bl.samples.push(line.chars().take(400).collect());
            }
        }
    }
    bl
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn mib(b: Option<u64>) -> String {
    b.map(|b| format!("{:.1}", b as f64 / MIB)).unwrap_or_else(|| "n/a".into())
}

fn pct(p: Option<f64>) -> String {
    p.map(|p| format!("{p:.0}%")).unwrap_or_else(|| "n/a".into())
}

fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# ferry-bench results{}", if r.quick { " (--quick: 10x smaller run)" } else { "" });
    let _ = writeln!(s);
    let _ = writeln!(s, "Run {} to {} (UTC) with `{}`.", r.started_utc, r.finished_utc, r.command);
    let _ = writeln!(s);
    let _ = writeln!(s, "| | |");
    let _ = writeln!(s, "|---|---|");
    let m = &r.machine;
    let _ = writeln!(
        s,
        "| machine | {} cores, {} MiB memory, {}, Linux {} |",
        m.nproc,
        m.mem_total_mib.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
        m.cpu_model.as_deref().unwrap_or("unknown CPU"),
        m.kernel.as_deref().unwrap_or("?")
    );
    let f = &r.ferry;
    let _ = writeln!(
        s,
        "| ferry | commit `{}`{} ({} broker) |",
        f.commit.as_deref().unwrap_or("?"),
        if f.worktree_dirty == Some(true) { " + uncommitted changes" } else { "" },
        f.mode
    );
    let _ = writeln!(s, "| data dir filesystem | {} |", f.data_dir_filesystem.as_deref().unwrap_or("unknown"));
    let _ = writeln!(s, "| librdkafka | {} |", r.librdkafka.version);
    let _ = writeln!(s, "| fsync | acks=1: none (acknowledged after the write to the OS); acks=all: fsync before the ack |");
    let _ = writeln!(
        s,
        "| producer | linger.ms=5, batch.size=1000000, compression none, no idempotence; one partition per topic unless stated |"
    );
    let _ = writeln!(s);
    if !r.workloads.is_empty() {
        let _ = writeln!(
        s,
        "| workload | partitions | fsync | produce records/s | produce MB/s | consume records/s | consume MB/s | broker peak RSS (MiB) | broker CPU produce / consume | client CPU produce / consume | other CPU produce / consume | complete |"
    );
        let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for w in &r.workloads {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} | {} | {:.1} | {} | {} / {} | {} / {} | {} / {} | {} |",
                w.name,
                w.partitions,
                if w.fsync { "yes" } else { "no" },
                group_thousands(w.produce.records_per_sec.round() as u64),
                w.produce.mb_per_sec,
                group_thousands(w.consume.records_per_sec.round() as u64),
                w.consume.mb_per_sec,
                mib(w.rss.peak_bytes),
                pct(w.produce.cpu.broker_pct),
                pct(w.consume.cpu.broker_pct),
                pct(w.produce.cpu.client_pct),
                pct(w.consume.cpu.client_pct),
                pct(w.produce.cpu.other_pct),
                pct(w.consume.cpu.other_pct),
                if w.ok { "yes".to_string() } else { format!("**NO**: {}", w.problems.join("; ")) }
            );
        }
        let _ = writeln!(s);
    }
    extra::markdown_group(&mut s, &r.group_workloads);
    extra::markdown_txn(&mut s, &r.txn_workloads);
    let busy: Vec<&str> = r
        .workloads
        .iter()
        .filter(|w| w.busy_machine)
        .map(|w| w.name.as_str())
        .chain(r.group_workloads.iter().filter(|w| w.busy_machine).map(|w| w.name.as_str()))
        .chain(r.txn_workloads.iter().filter(|w| w.busy_machine).map(|w| w.name.as_str()))
        .collect();
    if !busy.is_empty() {
        let _ = writeln!(
            s,
            "**Warning:** other processes were busy during {} (see \"other CPU\"); those figures understate ferry.",
            busy.join(", ")
        );
        let _ = writeln!(s);
    }
    extra::table_head(&mut s, "Targets", None, "| target | goal | measured | status |", "|---|---|---|---|");
    for t in &r.targets {
        let status = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(s, "| {} | {} | {} | {} |", t.name, t.target, t.measured.as_deref().unwrap_or("n/a"), status);
    }
    let _ = writeln!(s);
    if let Some(bl) = &r.broker_log {
        let _ = writeln!(s, "Broker log: {} ERROR and {} WARN lines.", bl.error_lines, bl.warn_lines);
        for l in bl.samples.iter().take(5) {
            let _ = writeln!(s, "    {l}");
        }
        let _ = writeln!(s);
    }
    if !r.errors.is_empty() {
        let _ = writeln!(s, "Errors:");
        for e in &r.errors {
            let _ = writeln!(s, "- {e}");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "Records/s and MB/s count record values only (MB = 10^6 bytes). Produce time runs from the first send to the last \
         delivery report; consume time from assign() to the last record. CPU is percent of one core \
         ({} cores here, shared by the broker and the client); \"other\" is every other process, counted in \
         10 ms ticks, so it is rough on phases shorter than a second. See bench/README.md.",
        r.machine.nproc
    );
    s
}

fn print_summary(r: &Report) {
    println!();
    if !r.workloads.is_empty() {
        println!(
            "{:<30} {:>14} {:>10} {:>14} {:>10} {:>10} {:>8}",
            "workload", "produce rec/s", "MB/s", "consume rec/s", "MB/s", "RSS MiB", "ok"
        );
        for w in &r.workloads {
            println!(
                "{:<30} {:>14} {:>10.1} {:>14} {:>10.1} {:>10} {:>8}",
                w.name,
                group_thousands(w.produce.records_per_sec.round() as u64),
                w.produce.mb_per_sec,
                group_thousands(w.consume.records_per_sec.round() as u64),
                w.consume.mb_per_sec,
                mib(w.rss.peak_bytes),
                if w.ok { "yes" } else { "NO" }
            );
        }
    }
    extra::print_extra_summary(&r.group_workloads, &r.txn_workloads);
    for t in &r.targets {
        let status = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        println!("target {}: {} -> {} ({})", t.name, t.target, t.measured.as_deref().unwrap_or("n/a"), status);
    }
}

// ---------------------------------------------------------------------------
// Small formatting helpers
// ---------------------------------------------------------------------------

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

// `is_multiple_of` needs Rust 1.87; the workspace supports 1.80.
#[allow(unknown_lints, clippy::manual_is_multiple_of)]
fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// (year, month, day, hour, minute, second) in UTC.
fn utc_parts(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d, (rem / 3600) as u32, ((rem % 3600) / 60) as u32, (rem % 60) as u32)
}

fn utc_iso(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

fn utc_stamp(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}{mi:02}{s:02}Z")
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("ferry-bench: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<bool> {
    let specs = jobs(&args)?;
    let started = now_unix();
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_string());
    let hz = clock_ticks_per_sec();
    let stall = Duration::from_secs(args.stall_timeout_secs.max(1));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    install_interrupt_handler();

    let work_parent = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&work_parent).with_context(|| format!("create {}", work_parent.display()))?;
    let tmp = tempfile::Builder::new().prefix("ferry-bench-").tempdir_in(&work_parent).context("temp dir")?;

    let external = args.bootstrap_server.is_some();
    let (bin_copy, binary_version, binary_modified) = if external {
        (None, None, None)
    } else {
        let src = &args.ferry_bin;
        if !src.exists() {
            bail!("no ferry binary at {}: run `cargo build --release -p ferry` or pass --ferry-bin", src.display());
        }
        let dst = tmp.path().join("ferry");
        std::fs::copy(src, &dst).with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
        let modified =
            std::fs::metadata(src).and_then(|m| m.modified()).ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs());
        let version = Command::new(&dst)
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty());
        (Some(dst), version, modified)
    };

    let dirty = git(&["status", "--porcelain", "--untracked-files=no", "--", "crates", "Cargo.toml", "Cargo.lock"]).map(|s| !s.is_empty());
    let ferry = FerryInfo {
        commit: git(&["rev-parse", "--short", "HEAD"]),
        worktree_dirty: if external { None } else { dirty },
        mode: if external { "external" } else { "spawned" },
        binary: if external { None } else { Some(args.ferry_bin.display().to_string()) },
        binary_modified_unix: binary_modified,
        binary_version,
        bootstrap: args.bootstrap_server.clone(),
        data_dir_filesystem: if external { None } else { filesystem_of(tmp.path()) },
        fsync: fsync_notes(),
    };
    let (vnum, vstr) = rdkafka::util::get_rdkafka_version();
    let machine = machine();
    eprintln!(
        "ferry-bench: {} workloads; ferry {} ({}); librdkafka {vstr}; {} cores",
        specs.len(),
        ferry.commit.as_deref().unwrap_or("?"),
        ferry.mode,
        machine.nproc
    );

    let mut errors = Vec::new();
    let mut results = Vec::new();
    let mut group_results: Vec<extra::GroupResult> = Vec::new();
    let mut txn_results: Vec<extra::TxnResult> = Vec::new();
    let mut log_paths = Vec::new();
    let mut exits = Vec::new();
    let mut run_peak: Option<u64> = None;
    let sample_every = Duration::from_millis(args.sample_ms.max(10));
    let run_id = now_unix();

    let mut broker: Option<Broker> = None;
    let mut sampler: Option<RssSampler> = None;
    for (i, spec) in specs.iter().enumerate() {
        if broker.is_none() || args.broker_per_workload {
            if let Some(mut b) = broker.take() {
                sampler.take();
                if let Some(e) = b.stop() {
                    exits.push(e);
                }
            }
            let b = match (&args.bootstrap_server, &bin_copy) {
                (Some(bs), _) => Broker::external(bs, args.broker_pid),
                (None, Some(bin)) => Broker::spawn(bin, tmp.path(), i)?,
                (None, None) => unreachable!(),
            };
            if let Some(pid) = b.pid {
                if b.child.is_some() {
                    STARTED_PIDS.lock().unwrap().push(pid);
                }
                sampler = Some(RssSampler::start(pid, sample_every));
            }
            if let Some(p) = &b.log_path {
                log_paths.push(p.clone());
            }
            broker = Some(b);
        }
        let b = broker.as_mut().expect("broker");
        eprintln!("[{}/{}] {}", i + 1, specs.len(), spec.name());
        let wait_quiet = Duration::from_secs(args.wait_quiet);
        let cx = RunCtx {
            rt: &rt,
            broker: b,
            sampler: sampler.as_ref(),
            hz,
            stall,
            run_id,
            index: i,
            wait_quiet,
            quiet_pct: args.quiet_pct,
        };
        let name = spec.name();
        match spec {
            Job::Matrix(m) => collect_outcome(run_workload(m, &cx), &name, &mut run_peak, &mut results, &mut errors),
            Job::Group(g) => {
                collect_outcome(extra::run_group_workload(g, &cx), &name, &mut run_peak, &mut group_results, &mut errors)
            }
            Job::Txn(t) => collect_outcome(extra::run_txn_workload(t, &cx), &name, &mut run_peak, &mut txn_results, &mut errors),
        }
        if let Some(status) = b.exited() {
            errors.push(format!("broker exited during {}: {status}", spec.name()));
            broker = None;
            sampler = None;
            if !args.broker_per_workload {
                errors.push("remaining workloads skipped".into());
                break;
            }
        }
    }
    if let Some(s) = &sampler {
        run_peak = Some(run_peak.unwrap_or(0).max(s.run_max()));
    }
    drop(sampler);
    if let Some(mut b) = broker.take() {
        if let Some(e) = b.stop() {
            exits.push(e);
        }
    }

    let broker_log = (!external).then(|| {
        let mut bl = scan_broker_logs(&log_paths);
        bl.exit = exits;
        bl
    });
    let all_ok = errors.is_empty()
        && results.len() + group_results.len() + txn_results.len() == specs.len()
        && results.iter().all(|w| w.ok)
        && group_results.iter().all(|w| w.ok)
        && txn_results.iter().all(|w| w.ok);
    let mut run_targets = targets(&results, run_peak);
    run_targets.extend(extra::txn_target(&txn_results));
    let sample_settings = producer_settings("", Acks::One, false);
    let report = Report {
        tool: "ferry-bench",
        tool_version: env!("CARGO_PKG_VERSION"),
        started_utc: utc_iso(started),
        finished_utc: utc_iso(now_unix()),
        quick: args.quick,
        loadavg_at_start: loadavg,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        ferry,
        librdkafka: LibrdkafkaInfo { version: vstr, version_hex: format!("{vnum:#010x}") },
        producer_config: settings_json(&sample_settings).into_iter().filter(|(k, _)| k != "acks").collect(),
        consumer_config: settings_json(&consumer_settings("")),
        rss_sample_interval_ms: sample_every.as_millis() as u64,
        targets: run_targets,
        workloads: results,
        group_workloads: group_results,
        txn_workloads: txn_results,
        run_peak_rss_bytes: run_peak,
        broker_log,
        errors,
        all_ok,
    };

    print_summary(&report);
    if !args.no_write {
        std::fs::create_dir_all(&args.out_dir).with_context(|| format!("create {}", args.out_dir.display()))?;
        let json = serde_json::to_string_pretty(&report)? + "\n";
        let dated = args.out_dir.join(format!("ferry-bench-{}.json", utc_stamp(started)));
        std::fs::write(&dated, &json).with_context(|| format!("write {}", dated.display()))?;
        std::fs::write(args.out_dir.join("latest.json"), &json)?;
        std::fs::write(args.out_dir.join("latest.md"), markdown(&report))?;
        eprintln!("wrote {}, latest.json and latest.md", dated.display());
    }
    if args.keep_temp {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    if !report.all_ok {
        return Ok(false);
    }
    Ok(true)
}
