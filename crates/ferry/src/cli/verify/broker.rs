//! The brokers `ferry verify` starts, faults and stops: their processes,
//! and on a cluster their network namespaces.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ferry_kafka::listener::SecurityProtocol;
use ferry_verify::netlab::NetLab;

use super::secure::BrokerSecurity;
use super::workload::Endpoint;
use super::Rng;

/// The broker process verify controls.
pub struct Broker {
    bin: PathBuf,
    /// Where clients reach it: loopback, or its own host in a `NetLab`.
    host: String,
    port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    /// The listener's protocol (PLAINTEXT unless verify was asked for TLS or SASL).
    protocol: SecurityProtocol,
    /// `serve` arguments beyond the listener and data dir (a cluster member's,
    /// the certificate's and the SASL mechanism's).
    extra_args: Vec<String>,
    /// Run inside this network namespace (`ip netns exec`).
    netns: Option<String>,
    child: Option<Child>,
}

impl Broker {
    fn new(bin: PathBuf, dir: &Path, host: String, port: u16) -> Broker {
        Broker {
            bin,
            host,
            port,
            data_dir: dir.join("data"),
            log: dir.join("broker.log"),
            protocol: SecurityProtocol::Plaintext,
            extra_args: Vec::new(),
            netns: None,
            child: None,
        }
    }
    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        self.spawn_with_faults(None)
    }
    /// Starts the broker, optionally with the storage seam's fault injection armed.
    pub fn spawn_with_faults(&mut self, fault_spec: Option<&str>) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the program in place: the child's pid is ferry's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let listen = format!("{}://{}", self.protocol, self.bootstrap());
        cmd.args(["serve", "--listen", &listen, "--data-dir"])
            .arg(&self.data_dir)
            .args(["--group-initial-rebalance-delay-ms", "200"])
            .args(&self.extra_args)
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
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            running_brokers().remove(&c.id());
        }
    }
    /// Resets every established client connection (broker side).
    pub fn disconnect_all(&self) {
        let filter = format!("( sport = :{} )", self.port);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "ss"]);
                c
            }
            None => Command::new("ss"),
        };
        let _ = cmd.args(["-K", "-t", "state", "established", &filter]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
    /// Appends a partial, never-acknowledged batch to the last segment of
    /// every partition of `topic`: what a power cut mid-write leaves.
    pub fn tear_tails(&self, topic: &str, rng: &mut Rng) -> std::io::Result<()> {
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
    pub fn signal(&self, sig: &str) {
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
pub fn stop_brokers_on_signal() {
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

/// The brokers of one run: a single node, or a cluster on loopback, or a
/// cluster whose members live in network namespaces (for partition faults).
pub struct Fleet {
    pub brokers: Vec<Broker>,
    /// The clients' TLS and SASL properties (none for PLAINTEXT).
    client_properties: Vec<(String, String)>,
    /// Dropped after the brokers (field order), which it hosts.
    lab: Option<NetLab>,
}

/// Ports inside a lab, where each broker has an address of its own.
const LAB_KAFKA_PORT: u16 = 9092;
const LAB_RAFT_PORT: u16 = 9192;

impl Fleet {
    /// Starts `n` brokers under `dir`; in namespaces of their own when
    /// `isolated`; with a TLS or SASL listener given `security`.
    pub fn start(bin: PathBuf, dir: &Path, n: usize, isolated: bool, security: Option<&BrokerSecurity>) -> anyhow::Result<Fleet> {
        let lab = if isolated { Some(NetLab::new(n).context("partition faults need network namespaces (run as root)")?) } else { None };
        let mut brokers = Vec::new();
        let mut raft_addrs = Vec::new();
        for i in 1..=n {
            let sub = if n == 1 { dir.to_path_buf() } else { dir.join(format!("broker{i}")) };
            std::fs::create_dir_all(&sub)?;
            let b = match &lab {
                Some(lab) => {
                    raft_addrs.push(format!("{}:{LAB_RAFT_PORT}", lab.addr(i)));
                    let mut b = Broker::new(bin.clone(), &sub, lab.addr(i), LAB_KAFKA_PORT);
                    b.netns = Some(lab.ns(i));
                    b
                }
                None => {
                    raft_addrs.push(format!("127.0.0.1:{}", ferry_verify::ports::listen_port()?));
                    Broker::new(bin.clone(), &sub, "127.0.0.1".into(), ferry_verify::ports::listen_port()?)
                }
            };
            brokers.push(b);
        }
        if n > 1 {
            let voters = raft_addrs.iter().enumerate().map(|(i, a)| format!("{}@{a}", i + 1)).collect::<Vec<_>>().join(",");
            for (i, b) in brokers.iter_mut().enumerate() {
                let node_id = (i + 1).to_string();
                b.extra_args = ["--node-id", &node_id, "--cluster-listen", &raft_addrs[i], "--cluster-voters", &voters].map(String::from).to_vec();
            }
        }
        let mut client_properties = Vec::new();
        if let Some(security) = security {
            let tls_dir = dir.join("tls");
            let hosts: Vec<String> = brokers.iter().map(|b| b.host.clone()).collect();
            let data_dirs: Vec<PathBuf> = brokers.iter().map(|b| b.data_dir.clone()).collect();
            security.prepare(&bin, &tls_dir, &hosts, &data_dirs)?;
            for b in &mut brokers {
                b.protocol = security.protocol;
                b.extra_args.extend(security.serve_args(&tls_dir));
            }
            client_properties = security.client_properties(&tls_dir);
        }
        let mut fleet = Fleet { brokers, client_properties, lab };
        for b in &mut fleet.brokers {
            b.spawn()?;
        }
        Ok(fleet)
    }

    /// Where and how the clients reach the brokers.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { bootstrap: self.brokers.iter().map(Broker::bootstrap).collect::<Vec<_>>().join(","), properties: self.client_properties.clone() }
    }

    /// Cuts broker `index` (0-based) off from the others and the clients.
    pub fn cut(&self, index: usize) -> anyhow::Result<()> {
        let lab = self.lab.as_ref().context("partition faults need the brokers in network namespaces")?;
        Ok(lab.cut(index + 1)?)
    }

    pub fn heal(&self, index: usize) -> anyhow::Result<()> {
        let lab = self.lab.as_ref().context("partition faults need the brokers in network namespaces")?;
        Ok(lab.heal(index + 1)?)
    }

    /// Stops every broker (resumed first if paused).
    pub fn stop_all(&mut self) {
        for b in &mut self.brokers {
            b.signal("CONT");
            b.kill9();
        }
    }
}


