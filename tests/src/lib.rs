//! Test harness: start and stop the real `ferry` binary, and small helpers
//! for talking to it with rdkafka and with raw Kafka frames.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod certs;
pub mod cluster;
pub mod netns;
pub mod raw;
pub mod reassign;

/// Path of the binary under test: `FERRY_BIN`, else the workspace's release
/// build, else its debug build.
pub fn ferry_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FERRY_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("ferry");
        if p.exists() {
            return p;
        }
    }
    panic!("no ferry binary: run `cargo build --release -p ferry` first or set FERRY_BIN");
}

/// A free loopback port for a broker, below the ephemeral range (see
/// `ferry_verify::ports`), so a broker killed and restarted gets it back.
pub fn free_port() -> u16 {
    ferry_verify::ports::listen_port().expect("a free port")
}

/// A running broker process with its own data directory.
pub struct Ferry {
    pub port: u16,
    /// The address it listens on (127.0.0.1 unless it runs in a network namespace).
    pub host: String,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    pub data_dir: PathBuf,
    child: Option<Child>,
    pub extra_args: Vec<String>,
    pub envs: Vec<(String, String)>,
    log_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Ferry {
    pub fn start() -> Ferry {
        Self::start_with(&[], &[])
    }

    pub fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Ferry {
        let mut f = Self::unstarted(free_port(), args, envs);
        f.spawn_and_wait();
        f
    }

    /// A broker with its own data directory, not started yet.
    pub fn unstarted(port: u16, args: &[&str], envs: &[(&str, &str)]) -> Ferry {
        let tmp = tempfile::tempdir().expect("tempdir");
        Ferry {
            port,
            host: "127.0.0.1".into(),
            netns: None,
            data_dir: tmp.path().join("data"),
            child: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            envs: envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log_path: tmp.path().join("ferry.log"),
            _tmp: Some(tmp),
        }
    }

    /// `n` brokers of one cluster (`--cluster-voters`), started together:
    /// a single one cannot serve until a majority elected a metadata leader.
    pub fn start_cluster(n: usize, args: &[&str]) -> Vec<Ferry> {
        let kafka_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let raft_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let voters = raft_ports.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",");
        let mut brokers: Vec<Ferry> = (0..n)
            .map(|i| {
                let node_id = (i + 1).to_string();
                let cluster_listen = format!("127.0.0.1:{}", raft_ports[i]);
                let mut all = vec!["--node-id", &node_id, "--cluster-listen", &cluster_listen, "--cluster-voters", &voters];
                // Each its own console and /metrics (the default port is one per host).
                let http = format!("127.0.0.1:{}", free_port());
                if !args.contains(&"--http-listen") {
                    all.extend(["--http-listen", &http]);
                }
                all.extend_from_slice(args);
                Ferry::unstarted(kafka_ports[i], &all, &[])
            })
            .collect();
        for b in &mut brokers {
            b.spawn();
        }
        for b in &mut brokers {
            b.wait_listening();
        }
        brokers
    }

    /// A broker outside `cluster`'s voters (Kafka: a broker that is not a
    /// controller), started to join it as node `node_id`.
    pub fn join_cluster(cluster: &[Ferry], node_id: u64, args: &[&str]) -> Ferry {
        let at = cluster[0].extra_args.iter().position(|a| a == "--cluster-voters").expect("a cluster member");
        let voters = cluster[0].extra_args[at + 1].clone();
        let (node_id, cluster_listen) = (node_id.to_string(), format!("127.0.0.1:{}", free_port()));
        let http = format!("127.0.0.1:{}", free_port());
        let mut all = vec!["--node-id", &node_id, "--cluster-listen", &cluster_listen, "--cluster-voters", &voters];
        if !args.contains(&"--http-listen") {
            all.extend(["--http-listen", &http]);
        }
        all.extend_from_slice(args);
        let mut broker = Ferry::unstarted(free_port(), &all, &[]);
        broker.spawn_and_wait();
        broker
    }

    /// Where it serves `/metrics` and the console, if given `--http-listen`.
    pub fn http_addr(&self) -> Option<&str> {
        let at = self.extra_args.iter().position(|a| a == "--http-listen")?;
        self.extra_args.get(at + 1).map(String::as_str)
    }

    /// One line of `GET /metrics` per series whose name and labels start
    /// with `prefix`, as `(series, value)`.
    pub fn metric(&self, prefix: &str) -> Vec<(String, f64)> {
        let Some(addr) = self.http_addr() else { return Vec::new() };
        let Some(body) = http_get(addr, "/metrics") else { return Vec::new() };
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?))))
            .collect()
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Spawns the process; returns it without waiting for the port.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("log file");
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the program in place: the child's pid is ferry's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(ferry_bin());
                c
            }
            None => Command::new(ferry_bin()),
        };
        cmd.arg("serve");
        // A test giving its own listener list keeps `port` as its PLAINTEXT one.
        if !self.extra_args.iter().any(|a| a == "--listen") {
            cmd.arg("--listen").arg(self.bootstrap());
        }
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("FERRY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn ferry"));
    }

    pub fn spawn_and_wait(&mut self) {
        self.spawn();
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(self.bootstrap()).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("ferry exited with {status} at start:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ferry did not start listening:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends a signal by name (`HUP`, `STOP`, ...) to the running process.
    pub fn signal(&self, name: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").arg(format!("-{name}")).arg(c.id().to_string()).status();
        }
    }

    /// SIGKILL: no chance to sync or close anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn_and_wait();
    }

    /// Starts and expects the process to exit by itself; returns (code, log).
    pub fn start_expecting_exit(&mut self) -> (Option<i32>, String) {
        self.spawn();
        let mut c = self.child.take().expect("spawned");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return (status.code(), self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!("ferry kept running; expected it to refuse to start:\n{}", self.log());
    }

    /// Directory of a disk partition's segments.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join("topics").join(topic).join(partition.to_string())
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The segment files of a partition, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "log")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Total bytes of a partition's segment files.
pub fn segment_bytes(dir: &Path) -> u64 {
    segment_files(dir).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

/// Sends raw bytes and reads one length-prefixed frame back, or None if the
/// broker closed the connection.
/// The body of a plain HTTP/1.1 GET (None when the broker does not answer 200).
/// `ferry user add NAME --password-stdin` on a stopped broker's data dir.
pub fn add_user(data_dir: &Path, name: &str, password: &str) {
    let mut child = Command::new(ferry_bin())
        .args(["user", "add", name, "--password-stdin", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::piped())
        .spawn()
        .expect("ferry user add");
    child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("password");
    assert!(child.wait().expect("ferry user add").success(), "ferry user add {name}");
}

pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

pub fn raw_roundtrip(addr: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(bytes).ok()?;
    read_frame(&mut s)
}

pub fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// True if the broker closed the connection (EOF) within the timeout.
pub fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buf = [0u8; 1];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

pub mod kafka {
    //! rdkafka helpers shared by the tests.
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Message, Offset, TopicPartitionList};

    pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap).set("message.timeout.ms", "30000").set("linger.ms", "2");
        for (k, v) in extra {
            c.set(*k, *v);
        }
        c.create().expect("producer")
    }

    /// Sends `values` to partition 0 and returns each one's acknowledged offset.
    pub async fn produce_all(p: &FutureProducer, topic: &str, values: &[String]) -> Vec<i64> {
        let futures: Vec<_> = values
            .iter()
            .map(|v| p.send_result(FutureRecord::<str, str>::to(topic).partition(0).payload(v)).expect("enqueue"))
            .collect();
        let mut offsets = Vec::new();
        for f in futures {
            let d = f.await.expect("delivery future").expect("delivered");
            offsets.push(d.offset);
        }
        offsets
    }

    /// Reads partition 0 from the start until `until` offsets are read or
    /// nothing arrives for `idle`. Returns offset → value.
    pub fn read_partition(bootstrap: &str, topic: &str, partition: i32, idle: Duration) -> BTreeMap<i64, String> {
        read_partition_from(bootstrap, topic, partition, 0, idle)
    }

    /// A record as read back: key and value, either may be null.
    pub type Keyed = (Option<String>, Option<String>);

    /// Reads a partition from offset 0 with the given `isolation.level`
    /// until nothing arrives for `idle`. Returns offset → (key, value).
    pub fn read_keyed(bootstrap: &str, topic: &str, partition: i32, isolation: &str, idle: Duration) -> BTreeMap<i64, Keyed> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "ferry-tests-keyed-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(0)).expect("tpl");
        c.assign(&tpl).expect("assign");
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        let mut out = BTreeMap::new();
        let mut last = Instant::now();
        while last.elapsed() < idle {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    assert!(out.insert(m.offset(), (text(m.key()), text(m.payload()))).is_none(), "offset {} delivered twice", m.offset());
                    last = Instant::now();
                }
                Some(Err(e)) => panic!("consume error: {e}"),
                None => {}
            }
        }
        out
    }

    /// Reads partition 0 from its log start until nothing arrives for
    /// `idle`: offset → value. Consume errors are shown and the reading goes
    /// on: the test may have killed a broker the client still knows (the
    /// group coordinator, say), which fetching from the leader never needs.
    pub fn read_from_log_start(bootstrap: &str, topic: &str, idle: Duration) -> BTreeMap<i64, String> {
        let c = assigned(bootstrap, "ferry-tests-log-start-reader", topic, 0, Offset::Beginning);
        poll_values(&c, idle, |e| eprintln!("consume error (reading goes on): {e}"))
    }

    pub fn read_partition_from(bootstrap: &str, topic: &str, partition: i32, from: i64, idle: Duration) -> BTreeMap<i64, String> {
        let c = assigned(bootstrap, "ferry-tests-reader", topic, partition, Offset::Offset(from));
        poll_values(&c, idle, |e| panic!("consume error: {e}"))
    }

    /// A consumer reading one partition from `from` (the earliest offset
    /// when `from` is out of range), committing nothing.
    fn assigned(bootstrap: &str, group: &str, topic: &str, partition: i32, from: Offset) -> BaseConsumer {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, from).expect("tpl");
        c.assign(&tpl).expect("assign");
        c
    }

    /// Offset → value of what arrives until nothing does for `idle`; each
    /// offset once.
    fn poll_values(c: &BaseConsumer, idle: Duration, on_error: impl Fn(rdkafka::error::KafkaError)) -> BTreeMap<i64, String> {
        let mut out = BTreeMap::new();
        let mut last = Instant::now();
        while last.elapsed() < idle {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                    assert!(out.insert(m.offset(), v).is_none(), "offset {} delivered twice", m.offset());
                    last = Instant::now();
                }
                Some(Err(e)) => on_error(e),
                None => {}
            }
        }
        out
    }

    /// The port of the broker Metadata names, or the client's error (a
    /// refused TLS handshake or SASL login shows here).
    pub fn metadata_port(config: &ClientConfig) -> Result<i32, String> {
        let c: BaseConsumer = config.create().map_err(|e| e.to_string())?;
        let md = c.fetch_metadata(None, Duration::from_secs(4)).map_err(|e| e.to_string())?;
        md.brokers().first().map(|b| b.port()).ok_or_else(|| "no broker in metadata".to_string())
    }

    /// Reads partition 0 of `topic` from the beginning with `config` until
    /// `want` values came or 20 s passed.
    pub fn read_all(config: &ClientConfig, topic: &str, want: usize) -> Vec<String> {
        let c: BaseConsumer = config.clone().set("group.id", "ferry-tests-reader").set("enable.auto.commit", "false").create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning).expect("tpl");
        c.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while out.len() < want && Instant::now() < deadline {
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m.expect("consume");
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
        }
        out
    }
}

