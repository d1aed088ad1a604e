#!/usr/bin/python3
"""Side-by-side benchmark: Ferry against Apache Kafka 4.4.0, nisshi, NATS
JetStream, RabbitMQ and Redis Streams, on this machine, in one run.

Run it through bench/peers/run.sh, which installs what is missing first.
Results: bench/results/peers-latest.{json,md,png} (and a timestamped copy of
the JSON). Every broker runs alone; the RSS of each broker is sampled every
100 ms while it runs.
"""

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
PEERS = BENCH / ".peers"
KAFKA_LIBS = PEERS / "kafka" / "libs"
NISSHI_BIN = PEERS / "nisshi" / "bin" / "nisshi"
LOADGEN_BIN = PEERS / "bin" / "loadgen"
FERRY_BIN = ROOT / "target" / "release" / "ferry"
FERRY_BENCH_BIN = ROOT / "target" / "release" / "ferry-bench"
RESULTS = BENCH / "results"

KAFKA_VERSION = "4.4.0"
# The same producer settings for every Kafka-protocol broker (Java tools).
JAVA_PRODUCER_PROPS = ["linger.ms=5", "batch.size=262144", "buffer.memory=134217728", "compression.type=none"]

# How a Kafka broker's JVM is started: kafka-server-start.sh's defaults (1 GiB heap, G1).
KAFKA_JVM_OPTS = ["-Xmx1G", "-Xms1G", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                  "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
                  "-Djava.awt.headless=true"]

JAVA_TIMEOUT = 150  # seconds per Java tool run; a broker slower than this gets "timeout" in that cell
started_pids = []  # every process we start, to stop it by PID on exit


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])
    except (OSError, IndexError, ValueError):
        return None


def stop_proc(proc, name, grace=20):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop after SIGTERM; SIGKILL {proc.pid}")
        proc.kill()
        proc.wait()


class RssSampler(threading.Thread):
    """Samples VmRSS of a set of PIDs (summed) every 100 ms."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids = list(pids)
        self.peak = 0
        self.phase_peak = 0
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            total = 0
            for p in self.pids:
                total += rss_bytes(p) or 0
            self.peak = max(self.peak, total)
            self.phase_peak = max(self.phase_peak, total)
            time.sleep(0.1)

    def reset_phase(self):
        v = self.phase_peak
        self.phase_peak = 0
        return v


# ---------------------------------------------------------------------------
# Brokers
# ---------------------------------------------------------------------------


class Broker:
    kafka_protocol = True

    def __init__(self, name, work):
        self.name = name
        self.work = Path(work) / name
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = None
        self.extra_procs = []
        self.sampler = None
        self.start_seconds = None
        self.logfile = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def pids(self):
        return [self.proc.pid]

    def launch(self, cmd, env=None, ready_port=None, timeout=90):
        self.logfile = open(self.work / "broker.log", "wb")
        t0 = time.time()
        self.proc = subprocess.Popen(cmd, stdout=self.logfile, stderr=subprocess.STDOUT, env=env, cwd=self.work,
                                     start_new_session=True)
        started_pids.append(self.proc)
        if not wait_port(ready_port or self.port, timeout, self.proc):
            raise RuntimeError(f"{self.name} did not start; see {self.work / 'broker.log'}:\n" + self.tail_log())
        self.start_seconds = round(time.time() - t0, 2)
        self.sampler = RssSampler(self.pids())
        self.sampler.start()

    def tail_log(self, n=30):
        try:
            return "\n".join((self.work / "broker.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.sampler:
            self.sampler.stop_flag.set()
        for p in [self.proc] + self.extra_procs:
            stop_proc(p, self.name)
        if self.logfile:
            self.logfile.close()

    def peak_rss(self):
        return self.sampler.peak if self.sampler else None


class Ferry(Broker):
    durability = "acks=all answered after fsync (group commit); acks=0/1 after write(2)"
    version = None

    bin = FERRY_BIN

    def start(self):
        self.launch([str(self.bin), "serve", "--listen", self.bootstrap, "--data-dir", str(self.work / "data")])


class Kafka(Broker):
    def __init__(self, name, work, flush_every_message=False):
        super().__init__(name, work)
        self.flush = flush_every_message
        self.cport = free_port()
        self.version = KAFKA_VERSION
        self.durability = ("log.flush.interval.messages=1: fsync after every append (like Ferry's acks=all)"
                           if flush_every_message else
                           "Kafka default: no fsync on the write path (page cache; the OS flushes later)")

    def start(self):
        props = self.work / "server.properties"
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.cport}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.cport}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.work / 'data'}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "auto.create.topics.enable=true",
        ]
        if self.flush:
            lines.append("log.flush.interval.messages=1")
        props.write_text("\n".join(lines) + "\n")
        cp = f"{KAFKA_LIBS}/*"
        fmt = subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "format", "-t", str(uuid.uuid4().hex[:22]),
                              "-c", str(props)], capture_output=True, text=True)
        if fmt.returncode != 0:
            # StorageTool wants a base64 uuid; ask it for one.
            rnd = subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "random-uuid"], capture_output=True,
                                 text=True).stdout.strip()
            fmt = subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "format", "-t", rnd, "-c", str(props)],
                                 capture_output=True, text=True)
            if fmt.returncode != 0:
                raise RuntimeError(f"kafka storage format failed: {fmt.stdout}{fmt.stderr}")
        cmd = ["java"] + KAFKA_JVM_OPTS + ["-cp", cp, "kafka.Kafka", str(props)]
        self.launch(cmd, timeout=120)
        # The listener opens before the broker is ready; wait for Metadata to list it.
        time.sleep(3)


class Nisshi(Broker):
    durability = ("sqlite:// engine (libsql, WAL, synchronous=NORMAL): survives a process crash, "
                  "no fsync per commit (the WAL is fsynced at checkpoints)")

    def __init__(self, name, work):
        super().__init__(name, work)
        self.version = None
        try:
            out = subprocess.run([str(NISSHI_BIN), "--version"], capture_output=True, text=True, timeout=10).stdout
            self.version = out.strip()
        except Exception:
            pass

    def start(self):
        url = f"tcp://127.0.0.1:{self.port}"
        env = dict(os.environ, RUST_LOG="warn")
        self.launch([str(NISSHI_BIN), "broker", "--listener-url", url, "--advertised-listener-url", url,
                     "--storage-engine", "sqlite://nisshi.db"], env=env)


class Nats(Broker):
    kafka_protocol = False
    durability = ("JetStream file storage; nats-server 2.9 has no sync_interval setting: it writes each "
                  "message before the ack and fsyncs every 2 min (no fsync per message)")

    def __init__(self, name, work):
        super().__init__(name, work)
        self.version = subprocess.run(["nats-server", "--version"], capture_output=True, text=True).stdout.strip()

    def start(self):
        self.launch(["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.work / "js"),
                     "-m", "0"])


class Redis(Broker):
    kafka_protocol = False
    durability = "appendonly yes, appendfsync always: the AOF is fsynced before replies are sent"

    def __init__(self, name, work):
        super().__init__(name, work)
        self.version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()

    def start(self):
        self.launch(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.work),
                     "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"])


class Rabbit(Broker):
    kafka_protocol = False
    durability = "quorum queue, persistent messages, publisher confirms (a confirm follows the Raft log's fsync)"

    def __init__(self, name, work):
        super().__init__(name, work)
        self.version = None
        self.epmd_port = free_port()
        self.dist_port = free_port()

    def pids(self):
        # beam.smp is a child of the rabbitmq-server script; sum the process tree.
        return [self.proc.pid] + children_of(self.proc.pid)

    def start(self):
        conf = self.work / "rabbitmq.conf"
        conf.write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        env = dict(os.environ,
                   RABBITMQ_NODENAME="ferrybench@localhost",
                   RABBITMQ_CONFIG_FILE=str(self.work / "rabbitmq"),
                   RABBITMQ_MNESIA_BASE=str(self.work / "mnesia"),
                   RABBITMQ_LOG_BASE=str(self.work / "log"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=str(self.work / "enabled_plugins"),
                   RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                   RABBITMQ_DIST_PORT=str(self.dist_port),
                   ERL_EPMD_ADDRESS="127.0.0.1",
                   ERL_EPMD_PORT=str(self.epmd_port),
                   RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=f"-kernel inet_dist_use_interface {{127,0,0,1}}",
                   HOME=str(self.work))
        (self.work / "enabled_plugins").write_text("[].\n")
        # Our own epmd, bound to loopback, so that we own and stop it.
        epmd = subprocess.Popen(["epmd", "-address", "127.0.0.1", "-port", str(self.epmd_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        started_pids.append(epmd)
        self.extra_procs.append(epmd)
        time.sleep(0.5)
        self.launch(["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=env, timeout=120)
        time.sleep(2)
        self.sampler.pids = self.pids()
        try:
            v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"], capture_output=True, text=True)
            self.version = "RabbitMQ " + v.stdout.strip()
        except Exception:
            pass

    def stop(self):
        if self.sampler:
            self.sampler.stop_flag.set()
        # Stop beam and its helpers by PID (children first), then the script and epmd.
        if self.proc and self.proc.poll() is None:
            kids = children_of(self.proc.pid)
            for pid in kids:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            end = time.time() + 20
            while time.time() < end and any(os.path.exists(f"/proc/{p}") and not is_zombie(p) for p in kids):
                time.sleep(0.2)
            for pid in kids:
                if os.path.exists(f"/proc/{pid}") and not is_zombie(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        super().stop()


def is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def children_of(pid):
    """All descendants of pid."""
    out = []
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for k in kids:
        out.append(int(k))
        out.extend(children_of(int(k)))
    return out


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------


def java(cls, args, timeout):
    cmd = ["java", "-Xmx1G", "-cp", f"{KAFKA_LIBS}/*", cls] + args
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"


PERF_RE = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
                     r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")


def producer_perf(bootstrap, topic, records, size, props, throughput=-1, txn_ms=None, timeout=JAVA_TIMEOUT,
                  warmup=None):
    args = ["--topic", topic, "--num-records", str(records), "--record-size", str(size), "--throughput",
            str(throughput), "--producer-props", f"bootstrap.servers={bootstrap}"] + props
    if warmup:
        # Percentiles of the steady state only (the tool's last summary line).
        args += ["--warmup-records", str(warmup)]
    if txn_ms:
        args += ["--transactional-id", f"perf-{topic}", "--transaction-duration-ms", str(txn_ms)]
    t0 = time.time()
    rc, out, err = java("org.apache.kafka.tools.ProducerPerformance", args, timeout)
    m = None
    for line in out.splitlines():
        mm = PERF_RE.search(line)
        if mm:
            m = mm
    res = {"client": "ProducerPerformance", "records": records, "record_bytes": size, "wall_seconds": round(time.time() - t0, 2),
           "props": props + ([f"transaction-duration-ms={txn_ms}"] if txn_ms else [])}
    if m is None or rc != 0:
        res["error"] = ("timeout" if rc is None else f"exit {rc}") + ": " + (err.strip().splitlines() or [""])[-1][:300]
        return res
    sent = int(m.group(1))
    res.update(sent=sent, records_per_sec=float(m.group(2)), mb_per_sec=float(m.group(3)), avg_ms=float(m.group(4)),
               max_ms=float(m.group(5)), p50_ms=int(m.group(6)), p95_ms=int(m.group(7)), p99_ms=int(m.group(8)),
               p999_ms=int(m.group(9)))
    if sent < records:
        res["error"] = f"only {sent} of {records} sent"
    return res


def producer_perf_multi(bootstrap, topic, records, size, props, n, timeout=JAVA_TIMEOUT):
    """n ProducerPerformance processes at once, records/n each, to one topic."""
    each = records // n
    results = [None] * n

    def one(i):
        results[i] = producer_perf(bootstrap, topic, each, size, props, timeout=timeout)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    errs = [r.get("error") for r in results if r.get("error")]
    res = {"client": f"ProducerPerformance x{n}", "records": each * n, "record_bytes": size, "producers": n,
           "per_producer": results, "props": props}
    if errs:
        res["error"] = errs[0]
        return res
    # Aggregate: all records over the longest producer's send time.
    longest = max(r["sent"] / r["records_per_sec"] for r in results)
    res["records_per_sec"] = round(sum(r["sent"] for r in results) / longest, 1)
    res["mb_per_sec"] = round(res["records_per_sec"] * size / 1e6, 2)
    res["p99_ms"] = max(r["p99_ms"] for r in results)
    return res


def consumer_perf(bootstrap, topic, records, group, timeout=JAVA_TIMEOUT):
    args = ["--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(records), "--group", group,
            "--timeout", "60000", "--consumer.config", "/dev/null"]
    t0 = time.time()
    rc, out, err = java("org.apache.kafka.tools.ConsumerPerformance", args, timeout)
    res = {"client": "ConsumerPerformance", "records": records, "group": group, "wall_seconds": round(time.time() - t0, 2)}
    lines = [l for l in out.splitlines() if l.strip()]
    # header then one CSV line
    hdr_i = next((i for i, l in enumerate(lines) if l.startswith("start.time")), None)
    if rc != 0 or hdr_i is None or hdr_i + 1 >= len(lines):
        res["error"] = ("timeout" if rc is None else f"exit {rc}") + ": " + (err.strip().splitlines() or [""])[-1][:300]
        return res
    keys = [k.strip() for k in lines[hdr_i].split(",")]
    vals = [v.strip() for v in lines[hdr_i + 1].split(",")]
    row = dict(zip(keys, vals))
    try:
        res.update(consumed=int(float(row["data.consumed.in.nMsg"])), records_per_sec=float(row["nMsg.sec"]),
                   rebalance_ms=float(row.get("rebalance.time.ms", "nan")),
                   fetch_records_per_sec=float(row.get("fetch.nMsg.sec", "nan")), mb_per_sec=float(row["MB.sec"]))
    except (KeyError, ValueError) as e:
        res["error"] = f"unparsed output: {e}: {lines[hdr_i:hdr_i + 2]}"
    if res.get("consumed", 0) < records:
        res.setdefault("error", f"consumed {res.get('consumed')} of {records}")
    return res


def end_to_end(bootstrap, topic, records, size, acks, timeout=JAVA_TIMEOUT):
    args = ["--bootstrap-server", bootstrap, "--topic", topic, "--num-records", str(records), "--producer-acks", acks,
            "--record-size", str(size)]
    rc, out, err = java("org.apache.kafka.tools.EndToEndLatency", args, timeout)
    res = {"client": "EndToEndLatency", "records": records, "record_bytes": size, "acks": acks}
    avg = re.search(r"Avg latency: ([\d.]+) ms", out)
    pct = re.search(r"Percentiles: 50th = ([\d.]+), 99th = ([\d.]+), 99.9th = ([\d.]+)", out)
    if rc != 0 or not avg or not pct:
        # older argument style: positional
        res["error"] = ("timeout" if rc is None else f"exit {rc}") + ": " + (err.strip().splitlines() or [""])[-1][:300]
        return res
    res.update(avg_ms=float(avg.group(1)), p50_ms=float(pct.group(1)), p99_ms=float(pct.group(2)),
               p999_ms=float(pct.group(3)))
    return res


def ferry_bench(broker, args_extra, out_dir, timeout=480):
    """librdkafka through ferry-bench against a running broker; returns its JSON report."""
    cmd = [str(FERRY_BENCH_BIN), "--bootstrap-server", broker.bootstrap, "--broker-pid", str(broker.proc.pid),
           "--out-dir", str(out_dir), "--stall-timeout-secs", "30"] + args_extra
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    p = Path(out_dir) / "latest.json"
    if not p.exists():
        return {"error": f"exit {r.returncode}: " + (r.stderr.strip().splitlines() or [""])[-1][:300]}
    d = json.loads(p.read_text())
    p.rename(Path(out_dir) / f"rdkafka-{time.time_ns()}.json")
    return d


def loadgen(system, addr, target, n, size, publishers, limit_s):
    cmd = [str(LOADGEN_BIN), "-system", system, "-addr", addr, "-target", target, "-n", str(n), "-size", str(size),
           "-publishers", str(publishers), "-limit", f"{limit_s}s"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s + 60)
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    try:
        d = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"exit {r.returncode}: " + (r.stderr.strip().splitlines() or [""])[-1][:300]}
    if d.get("errors"):
        d["error"] = f"{d['errors']} errors, first: {d.get('first_error')}"
    return d


# ---------------------------------------------------------------------------
# Physical limits
# ---------------------------------------------------------------------------


def fsync_latency(dirpath, n):
    path = Path(dirpath) / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    buf = b"x" * 4096
    lats = []
    t_all = time.perf_counter()
    for _ in range(n):
        os.write(fd, buf)
        t0 = time.perf_counter()
        os.fsync(fd)
        lats.append((time.perf_counter() - t0) * 1000)
    total = time.perf_counter() - t_all
    os.close(fd)
    path.unlink()
    lats.sort()
    return {"what": "4 KiB append + fsync, sequential", "count": n, "p50_ms": round(lats[n // 2], 3),
            "p99_ms": round(lats[int(n * 0.99)], 3), "max_ms": round(lats[-1], 3),
            "fsyncs_per_sec": round(n / total, 1)}


def seq_write(dirpath, mib):
    path = Path(dirpath) / "seq-probe"
    r = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "conv=fdatasync"],
                       capture_output=True, text=True)
    path.unlink(missing_ok=True)
    m = re.search(r"copied, ([\d.]+) s", r.stderr)
    if not m:
        return {"error": r.stderr.strip()[-300:]}
    secs = float(m.group(1))
    return {"what": f"dd {mib} MiB, bs=1M, conv=fdatasync (buffered writes, one fdatasync at the end)",
            "mb_per_sec": round(mib * 1048576 / secs / 1e6, 1)}


def loopback_bw(seconds):
    if not shutil.which("iperf3"):
        return {"error": "iperf3 not installed"}
    port = free_port()
    srv = subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    started_pids.append(srv)
    time.sleep(0.5)
    r = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"], capture_output=True,
                       text=True)
    stop_proc(srv, "iperf3", grace=5)
    try:
        d = json.loads(r.stdout)
        bps = d["end"]["sum_received"]["bits_per_second"]
        return {"what": f"iperf3, one TCP stream over 127.0.0.1, {seconds} s", "gbit_per_sec": round(bps / 1e9, 2),
                "mb_per_sec": round(bps / 8 / 1e6, 1)}
    except (KeyError, json.JSONDecodeError):
        return {"error": r.stderr.strip()[-300:] or r.stdout[-300:]}


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def machine_info(work):
    info = {"nproc": os.cpu_count(), "kernel": platform.release()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                info["mem_gib"] = round(int(line.split()[1]) / 1048576, 1)
    except OSError:
        pass
    r = subprocess.run(["df", "-T", str(work)], capture_output=True, text=True).stdout.splitlines()
    if len(r) > 1:
        info["work_fs"] = r[1].split()[1]
        info["work_device"] = r[1].split()[0]
    info["java"] = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return info


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def busy_pct(seconds=2.0):
    """Machine-wide CPU busy % (of all cores) over `seconds`."""
    def snap():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t1, i1 = snap()
    time.sleep(seconds)
    t2, i2 = snap()
    return 100.0 * (1 - (i2 - i1) / max(1, t2 - t1))


def wait_quiet(max_s, pct=10.0):
    end = time.time() + max_s
    b = busy_pct()
    while b > pct and time.time() < end:
        log(f"machine busy ({b:.0f}% of all cores); waiting")
        time.sleep(3)
        b = busy_pct()
    return round(b, 1)


def kafka_workloads(quick):
    d = 10 if quick else 1
    small, big = 1_000_000 // d, 100_000 // d
    w = []
    for acks in ["0", "1", "all"]:
        w.append(("produce", f"{small // 1000}k x 100 B, acks={acks}", dict(records=small, size=100, acks=acks)))
        w.append(("produce", f"{big // 1000}k x 1 KiB, acks={acks}", dict(records=big, size=1024, acks=acks)))
    w.append(("produce4", f"{small // 1000}k x 100 B, acks=1, 4 producers", dict(records=small, size=100, acks="1", n=4)))
    w.append(("produce4", f"{small // 1000}k x 100 B, acks=all, 4 producers", dict(records=small, size=100, acks="all", n=4)))
    w.append(("produce", f"{small // 1000}k x 100 B, idempotent", dict(records=small, size=100, acks="all", idem=True)))
    w.append(("produce", f"{small // 1000}k x 100 B, transactional (100 ms commits)",
              dict(records=small, size=100, acks="all", txn=100)))
    for acks in ["1", "all"]:
        w.append(("rate", f"fixed rate 20,000/s x 100 B, acks={acks}", dict(records=20_000 * (2 if quick else 10),
                                                                             size=100, acks=acks, rate=20_000)))
    for acks in ["1", "all"]:
        w.append(("rate", f"fixed rate 20,000/s x 100 B, acks={acks}, after 2 s warmup",
                  dict(records=20_000 * (4 if quick else 12), size=100, acks=acks, rate=20_000, warmup=40_000)))
    w.append(("consume", f"{small // 1000}k x 100 B, group consume", dict(records=small)))
    w.append(("e2e", f"end-to-end latency, 100 B, acks=all, one at a time", dict(records=1000 if quick else 5000, size=100,
                                                                                 acks="all")))
    return w


class CpuMeter:
    """CPU used by the broker's processes and by our client subprocesses over a
    phase, in % of one core (2 cores = 200%)."""

    def __init__(self, broker):
        self.broker = broker
        self.hz = os.sysconf("SC_CLK_TCK")
        self.t0 = time.time()
        self.b0 = self.broker_ticks()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.c0 = ru.ru_utime + ru.ru_stime

    def broker_ticks(self):
        return sum(cpu_ticks(p) or 0 for p in self.broker.pids())

    def done(self):
        wall = max(1e-6, time.time() - self.t0)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"broker_cpu_pct": round(100 * (self.broker_ticks() - self.b0) / self.hz / wall, 1),
                "client_cpu_pct": round(100 * (ru.ru_utime + ru.ru_stime - self.c0) / wall, 1),
                "cpu_wall_seconds": round(wall, 2)}


def run_java_suite(broker, quick, wait_s, only=None):
    out = {}
    consume_topic = None
    for kind, name, p in kafka_workloads(quick):
        if only and not any(name.endswith(o[:-1]) if o.endswith("$") else o in name for o in only):
            continue
        quiet = wait_quiet(wait_s)
        meter = CpuMeter(broker)
        topic = f"perf-{re.sub('[^a-z0-9]+', '-', name.lower()).strip('-')}-{int(time.time())}"
        props = [f"acks={p.get('acks', '1')}"] + JAVA_PRODUCER_PROPS
        if kind == "produce":
            if p.get("idem") or p.get("txn"):
                props.append("enable.idempotence=true")
            else:
                props.append("enable.idempotence=false")
            r = producer_perf(broker.bootstrap, topic, p["records"], p["size"], props, txn_ms=p.get("txn"))
            if p["size"] == 100 and p.get("acks") == "1" and not p.get("idem") and not p.get("txn"):
                consume_topic = topic
        elif kind == "produce4":
            props.append("enable.idempotence=false")
            r = producer_perf_multi(broker.bootstrap, topic, p["records"], p["size"], props, p["n"])
        elif kind == "rate":
            props = [f"acks={p['acks']}", "linger.ms=0", "enable.idempotence=false"]
            r = producer_perf(broker.bootstrap, topic, p["records"], p["size"], props, throughput=p["rate"],
                              warmup=p.get("warmup"))
        elif kind == "consume":
            if consume_topic is None:
                r = {"error": "no topic to consume"}
            else:
                r = consumer_perf(broker.bootstrap, consume_topic, p["records"], f"g-{topic}")
        elif kind == "e2e":
            r = end_to_end(broker.bootstrap, topic, p["records"], p["size"], p["acks"])
        finish_run(broker, meter, quiet, out, name, r, f"{broker.name} java {name}",
                   lambda r: f"{r.get('records_per_sec', '')} rec/s p99 {r.get('p99_ms', '')} ms")
    return out


def rdkafka_cells(rep):
    """Flatten a ferry-bench report into named cells."""
    cells = {}
    if "error" in rep:
        return {"_error": rep["error"]}
    for w in rep.get("workloads", []):
        n = w["records"]
        name = f"{n // 1000}k x {'100 B' if w['record_bytes'] == 100 else '1 KiB'}, acks={w['acks']}"
        if w.get("idempotent"):
            name += ", idempotent"
        pr = w.get("produce", {})
        cells[name] = {"records_per_sec": pr.get("records_per_sec"), "complete": pr.get("complete"),
                       "broker_cpu_pct": pr.get("cpu", {}).get("broker_pct"),
                       "client_cpu_pct": pr.get("cpu", {}).get("client_pct"),
                       "consume_records_per_sec": w.get("consume", {}).get("records_per_sec"),
                       "broker_rss_peak_bytes": w.get("rss", {}).get("peak_bytes")}
        if not w.get("ok", True):
            cells[name]["error"] = "; ".join(w.get("problems", []))[:300]
    for g in rep.get("group_workloads", []):
        name = "group consume (3 consumers, 6 partitions, sync commits)"
        gc = g.get("group_consume", g.get("consume", {}))
        cells[name] = {"records_per_sec": gc.get("records_per_sec"),
                       "records_per_sec_after_first": gc.get("records_per_sec_after_first_record")}
        if not g.get("ok", True):
            cells[name]["error"] = "; ".join(g.get("problems", []))[:300]
    for t in rep.get("txn_workloads", []):
        p = t["partitions"]
        tx = t.get("transactional", {})
        cells[f"acks=all ({p} partition{'s' if p > 1 else ''}) [txn baseline]"] = {
            "records_per_sec": t.get("acks_all", {}).get("records_per_sec")}
        cells[f"transactional, 100 ms commits ({p} partition{'s' if p > 1 else ''})"] = {
            "records_per_sec": tx.get("records_per_sec"), "ratio_to_acks_all": t.get("ratio"),
            "broker_cpu_pct": tx.get("cpu", {}).get("broker_pct"), "client_cpu_pct": tx.get("cpu", {}).get("client_pct"),
            "commit_p50_ms": tx.get("commit_latency", {}).get("p50_ms")}
        if not t.get("ok", True):
            cells[f"transactional, 100 ms commits ({p} partition{'s' if p > 1 else ''})"]["error"] = \
                "; ".join(t.get("problems", []))[:300]
    return cells


def run_broker(broker, args, results, tmp):
    log(f"starting {broker.name}")
    try:
        broker.start()
    except Exception as e:
        log(f"{broker.name}: {e}")
        results["brokers"][broker.name] = {"error": str(e)[:2000], "durability": broker.durability}
        broker.stop()
        return
    entry = {"durability": broker.durability, "version": broker.version, "bootstrap": broker.bootstrap,
             "start_seconds": broker.start_seconds, "pid": broker.proc.pid}
    results["brokers"][broker.name] = entry
    try:
        if broker.kafka_protocol:
            if "java" in args.clients:
                entry["java"] = run_java_suite(broker, args.quick, args.wait_quiet, args.only)
            if "rdkafka" in args.clients:
                wait_quiet(args.wait_quiet)
                rd_args = ["--workload", "all", "--acks", "0,1,all", "--idempotent", "--txn-partitions", "1,4"]
                if args.quick:
                    rd_args.append("--quick")
                rep = ferry_bench(broker, rd_args, tmp)
                entry["rdkafka"] = rdkafka_cells(rep)
                entry["rdkafka_version"] = rep.get("librdkafka", {}).get("version") if isinstance(rep.get("librdkafka"), dict) else rep.get("librdkafka")
                log(f"  {broker.name} rdkafka: " + ", ".join(
                    f"{k}: {v.get('records_per_sec')}" for k, v in entry["rdkafka"].items() if isinstance(v, dict)))
        if broker.name in args.ack_systems:
            entry["ack_each"] = run_ack_each(broker, args)
    finally:
        entry["peak_rss_bytes"] = broker.peak_rss()
        broker.stop()
        log(f"stopped {broker.name}; peak RSS {(entry['peak_rss_bytes'] or 0) / 1048576:.0f} MiB")


def finish_run(broker, meter, quiet, out, name, r, label, summary):
    """Attach the broker RSS peak, CPU and pre-run machine load to result r, store it as out[name] and log it;
    summary(r) formats a successful result."""
    r["broker_rss_peak_bytes"] = broker.sampler.reset_phase()
    r.update(meter.done())
    r["machine_busy_pct_before"] = quiet
    out[name] = r
    log(f"  {label}: " + (f"ERROR {r['error']}" if r.get("error") else summary(r)))


def run_ack_each(broker, args):
    system = {"ferry": "kafka", "kafka": "kafka", "kafka-fsync": "kafka", "nisshi": "kafka", "nats": "nats",
              "rabbitmq": "rabbitmq", "redis": "redis"}[broker.name]
    out = {}
    n = 2000 if args.quick else 20000
    limit = 5 if args.quick else 10
    for pubs in [1, 4]:
        quiet = wait_quiet(args.wait_quiet)
        meter = CpuMeter(broker)
        name = f"publish-and-wait, 100 B, {pubs} publisher{'s' if pubs > 1 else ''}"
        r = loadgen(system, broker.bootstrap, f"ack{pubs}-{int(time.time())}", n, 100, pubs, limit)
        finish_run(broker, meter, quiet, out, name, r, f"{broker.name} {name}",
                   lambda r: f"{r['records_per_sec']:.0f} msg/s p99 {r['p99_ms']} ms")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="record counts / 10, shorter latency runs")
    ap.add_argument("--brokers", default="ferry,kafka,kafka-fsync,nats,rabbitmq,redis,nisshi")
    ap.add_argument("--clients", default="java,rdkafka", help="for Kafka-protocol brokers: java,rdkafka")
    ap.add_argument("--ack-systems", default="ferry,kafka,kafka-fsync,nisshi,nats,rabbitmq,redis",
                    help="systems that get the publish-and-wait (ack every message) loadgen workload")
    ap.add_argument("--work-dir", default=str(ROOT / "bench" / ".peers" / "work"))
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--wait-quiet", type=float, default=60, help="before each workload wait up to S s for <10%% CPU")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--only", help="Java workloads whose name contains one of these ;-separated strings (ending in $: "
                    "whose name ends with it)")
    ap.add_argument("--rerun-cells", metavar="JSON", help="re-measure some cells of an earlier run: cells measured "
                    "now replace that run's (marked rerun_utc); everything else is kept")
    ap.add_argument("--merge", metavar="JSON", help="start from an earlier run's results: brokers run now replace "
                    "theirs, the others are kept (and marked as from that run)")
    args = ap.parse_args()
    args.clients = args.clients.split(",")
    args.ack_systems = [a for a in args.ack_systems.split(",") if a]
    args.only = [o for o in (args.only or "").split(";") if o]

    work = Path(args.work_dir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    tmp = Path(tempfile.mkdtemp(prefix="peers-rd-", dir=work))
    if FERRY_BIN.exists():  # a private copy: a rebuild during the run changes nothing
        Ferry.bin = work / "ferry-bin"
        shutil.copy2(FERRY_BIN, Ferry.bin)

    results = {"tool": "bench/peers/run.sh", "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "quick": args.quick, "command": " ".join(sys.argv), "machine": machine_info(work),
               "loadavg_at_start": loadavg(), "ferry_commit": git_rev(), "ferry_tree_dirty": git_dirty(),
               "ferry_binary_mtime_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(FERRY_BIN.stat().st_mtime))
               if FERRY_BIN.exists() else None, "brokers": {},
               "java_producer_props": JAVA_PRODUCER_PROPS}
    if args.merge:
        old = json.loads(Path(args.merge).read_text())
        for name, entry in old.get("brokers", {}).items():
            entry = dict(entry, from_run=old.get("started_utc"))
            results["brokers"][name] = entry
        results["merged_from"] = {"started_utc": old.get("started_utc"), "limits": old.get("limits"),
                                  "loadavg_at_start": old.get("loadavg_at_start")}
    log("physical limits")
    results["limits"] = {"fsync": fsync_latency(work, 300 if args.quick else 2000),
                         "seq_write": seq_write(work, 256 if args.quick else 2048),
                         "loopback": loopback_bw(2 if args.quick else 5)}
    log(f"limits: {json.dumps(results['limits'])}")

    factories = {"ferry": lambda: Ferry("ferry", work), "kafka": lambda: Kafka("kafka", work),
                 "kafka-fsync": lambda: Kafka("kafka-fsync", work, flush_every_message=True),
                 "nisshi": lambda: Nisshi("nisshi", work), "nats": lambda: Nats("nats", work),
                 "rabbitmq": lambda: Rabbit("rabbitmq", work), "redis": lambda: Redis("redis", work)}
    missing = {"nisshi": NISSHI_BIN, "ferry": FERRY_BIN}
    for name in args.brokers.split(","):
        if name in missing and not missing[name].exists():
            note = (PEERS / "nisshi-install.status").read_text() if name == "nisshi" and (
                    PEERS / "nisshi-install.status").exists() else f"{missing[name]} missing"
            results["brokers"][name] = {"error": f"not installed: {note}"}
            continue
        b = factories[name]()
        run_broker(b, args, results, tmp)
        if b.work.exists():
            shutil.rmtree(b.work, ignore_errors=True)
        if not args.no_write:  # partial results after each broker
            write_report(results, args)
    results["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["loadavg_at_end"] = loadavg()
    if args.rerun_cells:
        results = merge_cells(json.loads(Path(args.rerun_cells).read_text()), results)
    if not args.no_write:
        write_report(results, args)
    shutil.rmtree(work, ignore_errors=True)


def merge_cells(old, new):
    """Cells of `new` replace the same cells of `old`, marked with when they were re-measured."""
    stamp = new["started_utc"]
    for name, entry in new["brokers"].items():
        o = old["brokers"].setdefault(name, {})
        for k, v in entry.items():  # a broker new to the old run: its description
            if k not in ("java", "rdkafka", "ack_each", "peak_rss_bytes"):
                o.setdefault(k, v)
        for section in ("java", "rdkafka", "ack_each"):
            for cell, v in (entry.get(section) or {}).items():
                if isinstance(v, dict):
                    prev = (o.get(section) or {}).get(cell)
                    if isinstance(prev, dict):
                        v["first_run"] = {k: prev.get(k) for k in ("records_per_sec", "p50_ms", "p99_ms", "p999_ms",
                                                                   "broker_cpu_pct", "client_cpu_pct",
                                                                   "machine_busy_pct_before", "error") if k in prev}
                    v["rerun_utc"] = stamp
                    v["loadavg_at_rerun"] = new.get("loadavg_at_start")
                o.setdefault(section, {})[cell] = v
        o["peak_rss_bytes"] = max(o.get("peak_rss_bytes") or 0, entry.get("peak_rss_bytes") or 0) or None
    old.setdefault("reruns", []).append({"started_utc": stamp, "finished_utc": new.get("finished_utc"),
                                         "command": new.get("command"), "loadavg_at_start": new.get("loadavg_at_start"),
                                         "limits": new.get("limits")})
    return old


def write_report(results, args):
    sys.path.insert(0, str(Path(__file__).parent))
    import report
    report.write(results, Path(args.out_dir))


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        return rev
    except Exception:
        return None


def git_dirty():
    """Uncommitted changes under crates/ (compiled into the ferry measured)."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "crates"], capture_output=True,
                             text=True).stdout
        return bool(out.strip())
    except Exception:
        return None


def cleanup(*_):
    for p in started_pids:
        if p.poll() is None:
            try:
                p.terminate()
            except ProcessLookupError:
                pass
    sys.exit(130)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, cleanup)
    signal.signal(signal.SIGTERM, cleanup)
    try:
        main()
    finally:
        for p in started_pids:
            if p.poll() is None:
                p.terminate()
