#!/usr/bin/python3
"""Three Ferry brokers against three Apache Kafka 4.4.0 brokers (issue #13),
on this machine, one system at a time, with the same client (Kafka's own).

Both clusters: replication factor 3, min.insync.replicas=2, acks=all, 100 B
records. Per system:

  throughput  ProducerPerformance as fast as it goes to a 3-partition topic;
              records/s, and the CPU of the three broker processes summed, per
              record (from /proc/PID/stat before and after; per thread too)
  latency     ProducerPerformance at a fixed 20,000 records/s; p50/p99/p99.9
              after a 2 s warm-up
  failover    a producer at 5,000 records/s (acks=all, idempotent: the Java
              client's default) to a 1-partition topic; the partition's
              leader is SIGKILLed in the middle; the stall is the longest gap
              between consecutive acknowledgements. Repeated (3 times by
              default), the killed broker restarted and back in sync between.

Run it through bench/peers/cluster.sh, which installs what is missing first.
Results: bench/results/peers-cluster-latest.{json,md} and a timestamped JSON.
`cluster.py --report JSON [--notes FILE]` rewrites the Markdown from a JSON
(with FILE's Markdown as the analysis section).
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as peers  # noqa: E402  (bench/peers/run.py: helpers shared with the single-node run)

from run import log  # noqa: E402

ROOT = peers.ROOT
JAVA_SRC = Path(__file__).resolve().parent / "java" / "ClusterTool.java"
TOOL_CLASSES = peers.PEERS / "cluster-classes"
HZ = os.sysconf("SC_CLK_TCK")

# Targets of issue #13.
TPUT_RATIO = 1.5            # throughput >= 1.5x Kafka's, or
TPUT_RATIO_CPU = 1.0        # >= 1.0x with
CPU_RATIO = 0.5             # <= 0.5x broker CPU per record
STALL_S = 3.0               # failover stall <= 3 s
FIXED_RATE = 20_000
SETTLE_S = 20               # after restarting a killed broker, before the next failover repetition

clusters = []  # started clusters, stopped on exit


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


class Member:
    """One broker process of a cluster."""

    def __init__(self, cluster, node_id):
        self.cluster = cluster
        self.node_id = node_id
        self.port = peers.free_port()
        self.cport = peers.free_port()
        self.dir = cluster.work / f"node{node_id}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = None
        self.cmd = None
        self.starts = 0

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.starts += 1
        logf = open(self.dir / f"broker-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir,
                                     start_new_session=True)
        logf.close()
        peers.started_pids.append(self.proc)

    def kill(self):
        """SIGKILL, by PID."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def tail_log(self, n=20):
        try:
            lines = (self.dir / f"broker-{self.starts}.log").read_text(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""


class Cluster:
    name = label = version = durability = None
    min_isr_refused = None  # the broker's answer when it refused min.insync.replicas=2

    def __init__(self, work):
        self.work = Path(work) / self.name
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        self.members = [Member(self, i) for i in (1, 2, 3)]

    @property
    def bootstrap(self):
        return ",".join(m.addr for m in self.members)

    def live_bootstrap(self):
        return ",".join(m.addr for m in self.members if m.alive())

    def member(self, node_id):
        return next(m for m in self.members if m.node_id == node_id)

    def pids(self):
        return [m.proc.pid for m in self.members if m.alive()]

    def start(self):
        clusters.append(self)
        for m in self.members:
            m.start()
        for m in self.members:
            if not peers.wait_port(m.port, 120, m.proc):
                raise RuntimeError(f"{self.name} node {m.node_id} did not start:\n{m.tail_log()}")
        r = tool(["wait-brokers", self.bootstrap, "3", "120"], 150)
        if r.get("error"):
            raise RuntimeError(f"{self.name}: {r['error']}")

    def restart(self, m):
        m.start()
        if not peers.wait_port(m.port, 120, m.proc):
            raise RuntimeError(f"{self.name} node {m.node_id} did not restart:\n{m.tail_log()}")

    def stop(self):
        """SIGTERM to every member at once (by PID), then SIGKILL whoever is left after 30 s."""
        live = [m for m in self.members if m.alive()]
        for m in live:
            m.proc.send_signal(signal.SIGTERM)
        end = time.time() + 30
        for m in live:
            try:
                m.proc.wait(max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                log(f"{self.name} node {m.node_id} did not stop after SIGTERM; SIGKILL {m.proc.pid}")
                m.kill()


class FerryCluster(Cluster):
    name, label = "ferry", "Ferry ×3"
    durability = ("acks=all answered once a majority of the replicas (2 of 3, the leader among them) has "
                  "written and fsynced the batch (it is committed in the partition's Raft group)")

    def __init__(self, work, binary):
        super().__init__(work)
        self.bin = self.work / "ferry"
        shutil.copy2(binary, self.bin)  # a private copy: a rebuild during the run changes nothing
        out = subprocess.run([str(self.bin), "--version"], capture_output=True, text=True)
        self.version = out.stdout.strip()
        voters = ",".join(f"{m.node_id}@127.0.0.1:{m.cport}" for m in self.members)
        for m in self.members:
            m.cmd = [str(self.bin), "serve", "--node-id", str(m.node_id), "--listen", m.addr,
                     "--cluster-listen", f"127.0.0.1:{m.cport}", "--cluster-voters", voters,
                     "--data-dir", str(m.dir / "data"), "--http-listen", "none"]


class KafkaCluster(Cluster):
    name, label = "kafka", "Kafka 4.4.0 ×3"
    version = peers.KAFKA_VERSION
    durability = ("acks=all answered once every in-sync replica (all 3 while healthy; refused below "
                  "min.insync.replicas=2) has fetched the batch; no fsync on the write path (Kafka's default: "
                  "page cache)")

    def __init__(self, work):
        super().__init__(work)
        voters = ",".join(f"{m.node_id}@127.0.0.1:{m.cport}" for m in self.members)
        cp = f"{peers.KAFKA_LIBS}/*"
        cluster_id = None
        for m in self.members:
            props = m.dir / "server.properties"
            props.write_text("\n".join([
                "process.roles=broker,controller",
                f"node.id={m.node_id}",
                f"controller.quorum.voters={voters}",
                f"listeners=PLAINTEXT://{m.addr},CONTROLLER://127.0.0.1:{m.cport}",
                f"advertised.listeners=PLAINTEXT://{m.addr}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={m.dir / 'data'}",
                "num.partitions=1",
                "default.replication.factor=3",
                "min.insync.replicas=2",
                "offsets.topic.replication.factor=3",
                "transaction.state.log.replication.factor=3",
                "transaction.state.log.min.isr=2",
                "share.coordinator.state.topic.replication.factor=3",
                "share.coordinator.state.topic.min.isr=2",
                "auto.create.topics.enable=false",
            ]) + "\n")
            if cluster_id is None:
                cluster_id = subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
                                            capture_output=True, text=True).stdout.strip()
            fmt = subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                                  "-c", str(props)], capture_output=True, text=True)
            if fmt.returncode != 0:
                raise RuntimeError(f"kafka storage format failed: {fmt.stdout}{fmt.stderr}")
            m.cmd = ["java"] + peers.KAFKA_JVM_OPTS + ["-cp", cp, "kafka.Kafka", str(props)]
        self.cluster_id = cluster_id


# ---------------------------------------------------------------------------
# The Java helper (bench/peers/java/ClusterTool.java)
# ---------------------------------------------------------------------------


def compile_tool():
    cls = TOOL_CLASSES / "ClusterTool.class"
    if cls.exists() and cls.stat().st_mtime >= JAVA_SRC.stat().st_mtime:
        return
    TOOL_CLASSES.mkdir(parents=True, exist_ok=True)
    subprocess.run(["javac", "-cp", f"{peers.KAFKA_LIBS}/*", "-d", str(TOOL_CLASSES), str(JAVA_SRC)], check=True)


def tool_cmd(args):
    return ["java", "-Xmx512m", "-cp", f"{TOOL_CLASSES}:{peers.KAFKA_LIBS}/*", "ClusterTool"] + args


def parse_result(out):
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return None


def tool(args, timeout):
    try:
        r = subprocess.run(tool_cmd(args), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"ClusterTool {args[0]} timed out"}
    res = parse_result(r.stdout)
    if res is None:
        return {"error": f"ClusterTool {args[0]} exit {r.returncode}: " + (r.stderr.strip().splitlines() or [""])[-1][:300]}
    return res


def create_topic(cluster, topic, partitions):
    args = ["create", cluster.bootstrap, topic, str(partitions), "3", "60"]
    r = tool(args + ["min.insync.replicas=2"], 120)
    if "InvalidConfigurationException" in (r.get("error") or "") and "min.insync.replicas" in r["error"]:
        # Ferry (at the measured commit) refuses any min.insync.replicas but 1, even on a cluster, where
        # acks=all waits for a Raft majority (2 of 3) anyway: create the topic without it and say so.
        cluster.min_isr_refused = r["error"].split("Caused by: ", 1)[-1].strip()
        r = tool(args, 120)
    if r.get("error"):
        raise RuntimeError(f"{cluster.name}: create {topic}: {r['error']} {r.get('last', '')}")
    return r


# ---------------------------------------------------------------------------
# CPU accounting
# ---------------------------------------------------------------------------


def thread_ticks(pids):
    """CPU ticks per thread name (digits folded to N), summed over pids."""
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                s = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            name = s[s.index("(") + 1:s.rindex(")")]
            f = s.rsplit(")", 1)[1].split()
            name = re.sub(r"\d+", "N", name)
            out[name] = out.get(name, 0) + int(f[11]) + int(f[12])
    return out


class ClusterCpu:
    """Broker CPU over a phase: per member and per thread name, summed over the three."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.t0 = time.time()
        self.pids = {m.node_id: m.proc.pid for m in cluster.members if m.alive()}
        self.p0 = {n: peers.cpu_ticks(p) or 0 for n, p in self.pids.items()}
        self.th0 = thread_ticks(self.pids.values())
        self.m0 = machine_busy_ticks()
        self.c0 = children_cpu()

    def done(self, records):
        wall = max(1e-6, time.time() - self.t0)
        per = {n: ((peers.cpu_ticks(p) or 0) - self.p0[n]) / HZ for n, p in self.pids.items()}
        th1 = thread_ticks(self.pids.values())
        threads = {k: (v - self.th0.get(k, 0)) / HZ for k, v in th1.items()}
        total = sum(per.values())
        top = sorted(((k, v) for k, v in threads.items() if v > 0), key=lambda kv: -kv[1])[:10]
        client = children_cpu() - self.c0
        other = (machine_busy_ticks() - self.m0) / HZ - total - client
        jit = sum(v for k, v in threads.items() if "CompilerThre" in k)
        res = {"broker_cpu_seconds": round(total, 2), "broker_cpu_pct": round(100 * total / wall, 1),
               "broker_cpu_seconds_by_node": {str(n): round(v, 2) for n, v in per.items()},
               "broker_cpu_seconds_by_thread": {k: round(v, 2) for k, v in top},
               "broker_jit_cpu_seconds": round(jit, 2),
               "client_cpu_pct": round(100 * client / wall, 1),
               "other_cpu_pct": round(max(0.0, 100 * other / wall), 1),
               "cpu_wall_seconds": round(wall, 2)}
        if records:
            res["broker_cpu_us_per_record"] = round(total * 1e6 / records, 2)
            res["broker_cpu_us_per_record_without_jit"] = round((total - jit) * 1e6 / records, 2)
        return res


def machine_busy_ticks():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v) - v[3] - v[4]


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def data_bytes(cluster):
    """Bytes allocated on disk under each broker's data dir (a check that every replica holds the data;
    allocated, not apparent size: Kafka's index files are preallocated sparse files)."""
    out = {}
    for m in cluster.members:
        total = 0
        for dirpath, _, files in os.walk(m.dir / "data"):
            for f in files:
                try:
                    total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
                except OSError:
                    pass
        out[str(m.node_id)] = total
    return out


def other_busy_pct(pids, seconds=2.0):
    """CPU busy over `seconds`, in % of all cores: (everything but pids, pids)."""
    def snap():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(v), sum(v) - v[3] - v[4], sum(peers.cpu_ticks(p) or 0 for p in pids)
    t1, b1, o1 = snap()
    time.sleep(seconds)
    t2, b2, o2 = snap()
    total = max(1, t2 - t1)
    ours = o2 - o1
    return max(0.0, 100.0 * (b2 - b1 - ours) / total), 100.0 * ours / total


def wait_quiet(cluster, max_s, pct=10.0):
    """run.py's wait_quiet, with the cluster's own brokers left out of the count (idle JVMs are not quiet):
    wait up to max_s for everything else to fall below pct of all cores. Returns (others %, brokers %)."""
    end = time.time() + max_s
    pids = cluster.pids()
    other, ours = other_busy_pct(pids)
    while other > pct and time.time() < end:
        log(f"machine busy ({other:.0f}% of all cores besides the brokers; brokers {ours:.0f}%); waiting")
        time.sleep(3)
        other, ours = other_busy_pct(pids)
    return round(other, 1), round(ours, 1)


def note_quiet(r, q):
    r["machine_busy_pct_before"], r["brokers_busy_pct_before"] = q
    r["loadavg_before"] = peers.loadavg()


def warm_up(cluster, args):
    """Not measured: the same producer once through a topic of its own, so that neither system's first
    measured run pays for JIT compilation, connection setup or first segment files."""
    topic = f"warmup-{int(time.time())}"
    create_topic(cluster, topic, 3)
    props = ["acks=all"] + peers.JAVA_PRODUCER_PROPS + ["enable.idempotence=false"]
    r = peers.producer_perf(cluster.bootstrap, topic, args.records // 5, 100, props, timeout=600)
    log(f"  {cluster.name} warm-up: {r.get('records_per_sec')} rec/s {r.get('error', '')}")
    return {k: r.get(k) for k in ("records", "records_per_sec", "error") if k in r}


# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------


def measure_throughput(cluster, args):
    """args.throughput_reps runs, each to a fresh topic; the run with the median records/s is the figure."""
    runs = []
    for rep in range(1, args.throughput_reps + 1):
        topic = f"tput-{rep}-{int(time.time())}"
        desc = create_topic(cluster, topic, 3)
        quiet = wait_quiet(cluster, args.wait_quiet)
        props = ["acks=all"] + peers.JAVA_PRODUCER_PROPS + ["enable.idempotence=false"]
        cpu = ClusterCpu(cluster)
        r = peers.producer_perf(cluster.bootstrap, topic, args.records, 100, props, timeout=900)
        r.update(cpu.done(r.get("sent")))
        r["topic"] = desc
        note_quiet(r, quiet)
        leaders = [p["leader"] for p in desc["partitions"]]
        r["leaders_spread"] = len(set(leaders)) == len(leaders)
        log(f"  {cluster.name} throughput #{rep}: {r.get('records_per_sec')} rec/s, "
            f"{r.get('broker_cpu_us_per_record')} µs broker CPU/record (client {r.get('client_cpu_pct')}%, "
            f"others {r.get('other_cpu_pct')}% of a core) {r.get('error', '')}")
        runs.append(r)
    ok = sorted((r for r in runs if not r.get("error")), key=lambda r: r["records_per_sec"])
    best = dict(ok[len(ok) // 2]) if ok else dict(runs[-1])
    best["runs"] = [{k: r.get(k) for k in ("records_per_sec", "broker_cpu_us_per_record",
                                            "broker_cpu_us_per_record_without_jit", "client_cpu_pct",
                                            "other_cpu_pct", "machine_busy_pct_before", "error") if k in r}
                    for r in runs]
    best["data_bytes_by_node_after"] = data_bytes(cluster)
    return best


def measure_latency(cluster, args):
    topic = f"lat-{int(time.time())}"
    desc = create_topic(cluster, topic, 3)
    quiet = wait_quiet(cluster, args.wait_quiet)
    # run.py's fixed-rate settings: no linger, no idempotence; percentiles after a 2 s warm-up.
    props = ["acks=all", "linger.ms=0", "enable.idempotence=false"]
    records = FIXED_RATE * (4 if args.quick else 12)
    cpu = ClusterCpu(cluster)
    r = peers.producer_perf(cluster.bootstrap, topic, records, 100, props, throughput=FIXED_RATE,
                            warmup=2 * FIXED_RATE, timeout=300)
    r.update(cpu.done(r.get("sent")))
    r["topic"] = desc
    note_quiet(r, quiet)
    log(f"  {cluster.name} latency at {FIXED_RATE}/s: {r.get('records_per_sec')} rec/s, p50 {r.get('p50_ms')} "
        f"p99 {r.get('p99_ms')} p99.9 {r.get('p999_ms')} ms {r.get('error', '')}")
    return r


def measure_failover(cluster, args, rep):
    topic = f"failover-{rep}-{int(time.time())}"
    desc = create_topic(cluster, topic, 1)
    quiet = wait_quiet(cluster, args.wait_quiet)
    props = ["acks=all"] + peers.JAVA_PRODUCER_PROPS
    cmd = tool_cmd(["failover", cluster.bootstrap, topic, str(args.failover_rate), str(args.failover_seconds),
                    str(args.failover_seconds / 2)] + props)
    errf = open(cluster.work / f"failover-{rep}.stderr", "w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True)
    peers.started_pids.append(proc)
    killed = {}
    out_lines = []

    def reader():
        for line in proc.stdout:
            out_lines.append(line)
            if line.startswith("KILL ") and not killed:
                node = int(line.split()[1])
                m = cluster.member(node)
                killed.update(node=node, epoch_ms=int(time.time() * 1000))  # the moment of the signal
                m.kill()
                log(f"  {cluster.name} failover #{rep}: SIGKILL node {node} (pid {m.proc.pid})")

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        proc.wait(timeout=args.failover_seconds + 240)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    t.join(10)
    errf.seek(0)
    err = errf.read()
    errf.close()
    r = parse_result("".join(out_lines)) or {
        "error": f"failover client exit {proc.returncode}: " + (err.strip().splitlines() or [""])[-1][:300]}
    r.update(topic_before=desc, props=props)
    note_quiet(r, quiet)
    if killed:
        r["killed_node"] = killed["node"]
        if "gap_start_epoch_ms" in r:
            r["gap_starts_after_kill_ms"] = r["gap_start_epoch_ms"] - killed["epoch_ms"]
            r["gap_ends_after_kill_ms"] = r["gap_end_epoch_ms"] - killed["epoch_ms"]
        # Bring the killed broker back and wait until it is in sync again.
        m = cluster.member(killed["node"])
        t0 = time.time()
        try:
            cluster.restart(m)
            isr = tool(["wait-isr", cluster.bootstrap, topic, "3", "120"], 180)
            r["topic_after"] = isr
            r["restart_to_in_sync_s"] = None if isr.get("error") else round(time.time() - t0, 1)
            # An ISR can still list a replica that died a moment ago (Ferry: seen within 10 s; Kafka:
            # replica.lag.time.max.ms): give the restarted broker time to rejoin before the next repetition.
            time.sleep(max(0.0, SETTLE_S - (time.time() - t0)))
        except RuntimeError as e:
            r["restart_error"] = str(e)[:1000]
    else:
        r.setdefault("error", "the leader was never killed")
    log(f"  {cluster.name} failover #{rep}: stall {r.get('max_gap_ms')} ms (gap from +{r.get('gap_starts_after_kill_ms')} "
        f"to +{r.get('gap_ends_after_kill_ms')} ms after the kill), acked {r.get('acked')}/{r.get('sent')}, "
        f"failed {r.get('failed')} {r.get('error', '')}")
    return r


def run_system(cluster, args):
    entry = {"label": cluster.label, "version": cluster.version, "durability": cluster.durability}
    log(f"starting {cluster.label}")
    entry["machine_busy_pct_before_start"] = peers.wait_quiet(args.wait_quiet)
    t0 = time.time()
    try:
        cluster.start()
    except Exception as e:
        entry["error"] = str(e)[:2000]
        log(f"{cluster.name}: {e}")
        cluster.stop()
        return entry
    entry["start_seconds"] = round(time.time() - t0, 1)
    entry["bootstrap"] = cluster.bootstrap
    try:
        try:
            entry["warm_up"] = warm_up(cluster, args)
        except Exception as e:
            entry["warm_up"] = {"error": str(e)[:1000]}
        for what, fn in (("throughput", measure_throughput), ("latency", measure_latency)):
            if what in args.workloads:
                try:
                    entry[what] = fn(cluster, args)
                except Exception as e:
                    entry[what] = {"error": str(e)[:1000]}
                    log(f"  {cluster.name} {what}: {e}")
        if "failover" in args.workloads:
            entry["failover"] = []
            for rep in range(1, args.failover_reps + 1):
                try:
                    entry["failover"].append(measure_failover(cluster, args, rep))
                except Exception as e:
                    entry["failover"].append({"error": str(e)[:1000]})
                    log(f"  {cluster.name} failover #{rep}: {e}")
                if not all(m.alive() for m in cluster.members):
                    break
    finally:
        if cluster.min_isr_refused:
            entry["min_insync_replicas_refused"] = cluster.min_isr_refused
        entry["logs_with_errors"] = scan_logs(cluster)
        cluster.stop()
        log(f"stopped {cluster.label}")
    return entry


def scan_logs(cluster):
    """ERROR lines from the brokers' logs (the first few of each), for the JSON."""
    out = {}
    for m in cluster.members:
        for f in sorted(m.dir.glob("broker-*.log")):
            lines = [l[:400] for l in f.read_text(errors="replace").splitlines() if re.search(r"\bERROR\b", l)]
            if lines:
                out[f"node{m.node_id}/{f.name}"] = {"count": len(lines), "first": lines[:5]}
    return out


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def fnum(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float) and v < 100:
        return f"{v:,.1f}{unit}" if v >= 10 else f"{v:,.2f}{unit}"
    return f"{v:,.0f}{unit}"


def ratio(f, k):
    if f is None or k in (None, 0):
        return None
    return f / k


def rstr(r):
    return "–" if r is None else f"{r:.2f}×"


def evaluate(res):
    """The targets of issue #13: list of dicts (figure, ferry, kafka, ratio, target, met, note)."""
    F, K = res["systems"].get("ferry", {}), res["systems"].get("kafka", {})
    rows = []
    ft, kt = F.get("throughput") or {}, K.get("throughput") or {}
    tr = ratio(ft.get("records_per_sec"), kt.get("records_per_sec"))
    cr = ratio(ft.get("broker_cpu_us_per_record"), kt.get("broker_cpu_us_per_record"))
    tput_met = None if tr is None else (tr >= TPUT_RATIO or (tr >= TPUT_RATIO_CPU and cr is not None and cr <= CPU_RATIO))
    rows.append(dict(figure="throughput, records/s (acks=all, 3 partitions)", ferry=ft.get("records_per_sec"),
                     kafka=kt.get("records_per_sec"), ratio=tr,
                     target=f"≥ {TPUT_RATIO}× (or ≥ {TPUT_RATIO_CPU}× with ≤ {CPU_RATIO}× CPU per record)",
                     met=tput_met))
    rows.append(dict(figure="broker CPU per record, µs (3 brokers summed)", ferry=ft.get("broker_cpu_us_per_record"),
                     kafka=kt.get("broker_cpu_us_per_record"), ratio=cr, target=f"≤ {CPU_RATIO}× (with the row above)",
                     met=None if cr is None else cr <= CPU_RATIO))
    fl, kl = F.get("latency") or {}, K.get("latency") or {}
    for key, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
        r = ratio(fl.get(key), kl.get(key))
        met = None
        if key == "p99_ms" and fl.get(key) is not None and kl.get(key) is not None:
            met = fl[key] <= kl[key]
        rows.append(dict(figure=f"latency at {FIXED_RATE:,}/s, {name} ms", ferry=fl.get(key), kafka=kl.get(key),
                         ratio=r, target="≤ Kafka's (≤ 1×)" if key == "p99_ms" else "", met=met))
    rows.append(dict(figure=f"achieved rate in the latency run, records/s", ferry=fl.get("records_per_sec"),
                     kafka=kl.get("records_per_sec"), ratio=ratio(fl.get("records_per_sec"), kl.get("records_per_sec")),
                     target="", met=None))
    ff, kf = F.get("failover") or [], K.get("failover") or []
    for i in range(max(len(ff), len(kf))):
        a = ff[i] if i < len(ff) else {}
        b = kf[i] if i < len(kf) else {}
        fs = a.get("max_gap_ms") / 1000 if a.get("max_gap_ms") is not None and not a.get("error") else None
        ks = b.get("max_gap_ms") / 1000 if b.get("max_gap_ms") is not None and not b.get("error") else None
        rows.append(dict(figure=f"failover stall #{i + 1}, s (longest gap between acks)", ferry=fs, kafka=ks,
                         ratio=ratio(fs, ks), target=f"≤ {STALL_S:g} s", met=None if fs is None else fs <= STALL_S))
    return rows


def write_report(res, out_dir, stamp=True):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res["targets"] = evaluate(res)
    js = json.dumps(res, indent=2, ensure_ascii=False)
    (out_dir / "peers-cluster-latest.json").write_text(js + "\n")
    if stamp:
        ts = res["started_utc"].replace("-", "").replace(":", "")
        (out_dir / f"peers-cluster-{ts}.json").write_text(js + "\n")
    (out_dir / "peers-cluster-latest.md").write_text(markdown(res))


def markdown(res):
    S = res["systems"]
    F, K = S.get("ferry", {}), S.get("kafka", {})
    m = res.get("machine", {})
    L = ["# Three Ferry brokers against three Apache Kafka 4.4.0 brokers (issue #13)", ""]
    L.append(f"Run {res['started_utc']} → {res.get('finished_utc', '(unfinished)')}, ferry commit "
             f"`{res.get('ferry_commit')}`, binary `{res.get('ferry_bin')}` ({F.get('version') or '?'}), "
             f"command `{res.get('command')}`{' (**--quick**: record counts ÷ 10)' if res.get('quick') else ''}.")
    L.append(f"Machine: {m.get('nproc')} cores ({m.get('cpu')}), {m.get('mem_gib')} GiB, Linux {m.get('kernel')}, "
             f"data on {m.get('work_fs')} ({m.get('work_device')}); {m.get('java')}. "
             f"Load average at start {' '.join(res.get('loadavg_at_start', []))}, at end "
             f"{' '.join(res.get('loadavg_at_end', []))}. fsync (4 KiB append + fsync): "
             f"p50 {res.get('fsync', {}).get('p50_ms')} ms, p99 {res.get('fsync', {}).get('p99_ms')} ms.")
    L.append("")
    L.append("Both systems run on this one machine, one after the other: three broker processes on 127.0.0.1, "
             "each its own data dir on the same disk, sharing the 2 cores with each other and with the client. "
             "Topics: replication factor 3, `min.insync.replicas=2`. Client: Kafka 4.4.0's own Java producer "
             "for both. **Ferry ÷ Kafka**: for records/s above 1 is better for Ferry; for CPU, latency and stalls "
             "below 1 is.")
    L.append("")
    L.append("| figure | Ferry ×3 | Kafka ×3 | Ferry ÷ Kafka | target | met? |")
    L.append("|---|---:|---:|---:|---|---|")
    for r in res["targets"]:
        met = "" if r["met"] is None else ("**met**" if r["met"] else "**missed**")
        L.append(f"| {r['figure']} | {fnum(r['ferry'])} | {fnum(r['kafka'])} | {rstr(r['ratio'])} | {r['target']} | {met} |")
    L.append("")
    # Quiet machine?
    busy, during = [], []
    for name, e in S.items():
        b = e.get("machine_busy_pct_before_start")
        if b is not None and b > 10:
            busy.append(f"{name} start ({b}% busy)")
        for w in ("throughput", "latency"):
            b = (e.get(w) or {}).get("machine_busy_pct_before")
            if b is not None and b > 10:
                busy.append(f"{name} {w} ({b}% busy, load {' '.join((e.get(w) or {}).get('loadavg_before', []))})")
        for w, runs in (("throughput", (e.get("throughput") or {}).get("runs") or []),
                        ("latency", [e.get("latency") or {}])):
            for i, r in enumerate(runs):
                o = r.get("other_cpu_pct")
                if o is not None and o > 20:
                    during.append(f"{name} {w}{f' #{i + 1}' if w == 'throughput' else ''} ({o}% of a core)")
        for i, f in enumerate(e.get("failover") or []):
            b = f.get("machine_busy_pct_before")
            if b is not None and b > 10:
                busy.append(f"{name} failover #{i + 1} ({b}% busy)")
    if busy:
        L.append("**The machine was not quiet** before: " + "; ".join(busy) + " (CPU of processes other than the "
                 "brokers under test, in % of both cores, after waiting up to the `--wait-quiet` limit).")
    else:
        L.append("The machine was quiet before every measurement: processes other than the brokers under test "
                 "used < 10% of both cores.")
    if during:
        L.append("Other processes (not the brokers, not the client) used CPU **during** " + "; ".join(during) + ".")
    L.append("")
    L.append("## What was run")
    L.append("")
    L.append(f"* **Warm-up** (not measured): the throughput run's producer with {res.get('records', 0) // 5:,} "
             "records to a topic of its own, right after the cluster starts, so that neither system's first measured "
             "run pays for JIT compilation and first connections.")
    L.append(f"* **Throughput**: `ProducerPerformance --num-records {res.get('records'):,} --record-size 100 "
             f"--throughput -1`, `acks=all {' '.join(res.get('java_producer_props', []))} enable.idempotence=false` "
             "(the single-node benchmark's settings), one topic of 3 partitions, "
             f"{res.get('throughput_reps', 1)} runs (fresh topic each), the median run reported. Broker CPU: utime+stime of the "
             "three broker processes from `/proc/PID/stat`, before and after the tool run (JVM start of the client "
             "included in the wall time, not in the records), ÷ records sent.")
    L.append(f"* **Latency**: `ProducerPerformance --throughput {FIXED_RATE} --warmup-records {2 * FIXED_RATE}`, "
             "`acks=all linger.ms=0 enable.idempotence=false`, 3 partitions; percentiles of the records after the "
             "2 s warm-up (send → acknowledgement).")
    L.append(f"* **Failover**: `bench/peers/java/ClusterTool.java failover`, Kafka's `KafkaProducer` at "
             f"{res.get('failover_rate'):,} records/s for {res.get('failover_seconds')} s, `acks=all` and the "
             "same batching settings, idempotence left at the client's default (on), 1 partition; at half time the "
             "partition's leader (from DescribeTopics) gets SIGKILL. Stall = the longest gap between two consecutive "
             "acknowledgements over the whole run. The broker is then restarted and the next repetition (a new "
             "topic) waits until all 3 replicas are in sync. Client and broker failure-detection settings are the "
             "defaults of each system.")
    L.append("")
    L.append("## Details")
    L.append("")
    L.append("| | Ferry ×3 | Kafka ×3 |")
    L.append("|---|---|---|")
    L.append(f"| version | {F.get('version', '–')} | {K.get('version', '–')} |")
    L.append(f"| durability as configured | {F.get('durability', '–')} | {K.get('durability', '–')} |")
    for w, label in (("throughput", "throughput run"), ("latency", "latency run")):
        row = []
        for e in (F, K):
            t = e.get(w) or {}
            if t.get("error"):
                row.append(f"error: {t['error']}")
                continue
            leaders = [p["leader"] for p in (t.get("topic") or {}).get("partitions", [])]
            row.append(f"{fnum(t.get('records_per_sec'))} rec/s, p50/p99/p99.9/max {t.get('p50_ms')}/"
                       f"{t.get('p99_ms')}/{t.get('p999_ms')}/{t.get('max_ms')} ms; CPU over "
                       f"{t.get('cpu_wall_seconds')} s in % of one core: brokers {t.get('broker_cpu_pct')} "
                       f"(seconds by node {t.get('broker_cpu_seconds_by_node')}), client {t.get('client_cpu_pct')}, "
                       f"others {t.get('other_cpu_pct')}; µs per record {t.get('broker_cpu_us_per_record')}, "
                       f"without JIT compiler threads {t.get('broker_cpu_us_per_record_without_jit')}; "
                       f"partition leaders {leaders}")
        L.append(f"| {label} | {row[0]} | {row[1]} |")
    row = []
    for e in (F, K):
        runs = (e.get("throughput") or {}).get("runs") or []
        row.append("; ".join(f"{fnum(r.get('records_per_sec'))} rec/s, {r.get('broker_cpu_us_per_record')} µs"
                             + (f" ({r['error']})" if r.get("error") else "") for r in runs) or "–")
    L.append(f"| every throughput run (the median one above) | {row[0]} | {row[1]} |")
    row = []
    for e in (F, K):
        d = (e.get("throughput") or {}).get("data_bytes_by_node_after") or {}
        row.append(", ".join(f"node {k} {v / 1e6:.0f} MB" for k, v in d.items()) or "–")
    L.append(f"| bytes allocated in each broker's data dir after the warm-up and throughput runs (every replica holds the data) | "
             f"{row[0]} | {row[1]} |")
    row = []
    for e in (F, K):
        th = (e.get("throughput") or {}).get("broker_cpu_seconds_by_thread") or {}
        row.append(", ".join(f"{k} {v} s" for k, v in th.items()) or "–")
    L.append(f"| broker CPU by thread in the throughput run (3 brokers summed, top 10; digits as N) | {row[0]} | {row[1]} |")
    for i in range(max(len(F.get("failover") or []), len(K.get("failover") or []))):
        row = []
        for e in (F, K):
            fl = e.get("failover") or []
            f = fl[i] if i < len(fl) else {}
            if not f:
                row.append("–")
                continue
            s = (f"killed node {f.get('killed_node')}; longest gap {f.get('max_gap_ms')} ms, from "
                 f"{f.get('gap_starts_after_kill_ms')} to {f.get('gap_ends_after_kill_ms')} ms after the kill; "
                 f"acked {f.get('acked')} of "
                 f"{f.get('sent')}, failed {f.get('failed')}; latency p99 {f.get('latency_p99_ms')} ms, max "
                 f"{f.get('latency_max_ms')} ms; back in sync {f.get('restart_to_in_sync_s')} s after restart")
            if f.get("errors"):
                s += "; errors: " + "; ".join(f"{k} ×{v}" for k, v in f["errors"].items())[:400]
            if f.get("error"):
                s += f"; error: {f['error']}"
            row.append(s)
        L.append(f"| failover #{i + 1} | {row[0]} | {row[1]} |")
    L.append("")
    for name, e in S.items():
        if e.get("error"):
            L.append(f"**{e.get('label', name)} failed to run**: `{e['error'][:500]}`")
            L.append("")
        if e.get("min_insync_replicas_refused"):
            L.append(f"**{e.get('label', name)} refused `min.insync.replicas=2`** at CreateTopics (`"
                     f"{e['min_insync_replicas_refused']}`), so its topics were created without it; acks=all "
                     "still waited for 2 of 3 replicas (a Raft majority).")
            L.append("")
        if e.get("logs_with_errors"):
            L.append(f"ERROR lines in {e.get('label', name)}'s broker logs: " + "; ".join(
                f"{k}: {v['count']}" for k, v in e["logs_with_errors"].items()) + " (first ones in the JSON).")
            L.append("")
    if res.get("analysis"):
        L.append("## Misses and why")
        L.append("")
        L.append(res["analysis"].strip())
        L.append("")
    L.append("Reproduce: `bench/peers/cluster.sh` (see bench/README.md); the JSON beside this file has every figure.")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry-bin", default=str(ROOT / "target" / "release" / "ferry"),
                    help="the broker to test (copied to the work dir first)")
    ap.add_argument("--quick", action="store_true", help="record counts ÷ 10, shorter latency and failover runs")
    ap.add_argument("--systems", default="ferry,kafka")
    ap.add_argument("--workloads", default="throughput,latency,failover")
    ap.add_argument("--records", type=int, help="throughput records (default 1,000,000; --quick 100,000)")
    ap.add_argument("--throughput-reps", type=int, default=3, help="throughput runs; the median one is reported")
    ap.add_argument("--failover-reps", type=int, default=3)
    ap.add_argument("--failover-rate", type=int, default=5000)
    ap.add_argument("--failover-seconds", type=float, help="length of each failover run (default 30; --quick 16)")
    ap.add_argument("--wait-quiet", type=float, default=60, help="before each measurement wait up to S s for <10%% CPU")
    ap.add_argument("--work-dir", default=str(peers.PEERS / "cluster-work"))
    ap.add_argument("--out-dir", default=str(peers.RESULTS))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--report", metavar="JSON", help="only rewrite the Markdown (and latest JSON) from this JSON")
    ap.add_argument("--notes", metavar="FILE", help="with --report: Markdown for the 'Misses and why' section")
    args = ap.parse_args()

    if args.report:
        res = json.loads(Path(args.report).read_text())
        if args.notes:
            res["analysis"] = Path(args.notes).read_text()
        write_report(res, args.out_dir, stamp=False)
        if args.notes:  # keep the timestamped JSON in step with the analysis
            ts = res["started_utc"].replace("-", "").replace(":", "")
            p = Path(args.out_dir) / f"peers-cluster-{ts}.json"
            if p.exists():
                p.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
        return

    args.records = args.records or (100_000 if args.quick else 1_000_000)
    args.failover_seconds = args.failover_seconds or (16.0 if args.quick else 30.0)
    args.workloads = args.workloads.split(",")
    ferry_bin = Path(args.ferry_bin)
    systems = args.systems.split(",")
    if "ferry" in systems and not ferry_bin.exists():
        sys.exit(f"{ferry_bin} missing: build it (cargo build --release -p ferry) or pass --ferry-bin")
    compile_tool()

    work = Path(args.work_dir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    res = {"tool": "bench/peers/cluster.py", "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "quick": args.quick, "command": " ".join(["bench/peers/cluster.py"] + sys.argv[1:]),
           "machine": peers.machine_info(work), "loadavg_at_start": peers.loadavg(), "ferry_commit": peers.git_rev(),
           "ferry_bin": str(ferry_bin), "ferry_binary_mtime_utc": time.strftime(
               "%Y-%m-%dT%H:%M:%SZ", time.gmtime(ferry_bin.stat().st_mtime)) if ferry_bin.exists() else None,
           "records": args.records, "throughput_reps": args.throughput_reps, "failover_rate": args.failover_rate, "failover_seconds": args.failover_seconds,
           "java_producer_props": peers.JAVA_PRODUCER_PROPS, "fsync": peers.fsync_latency(work, 300),
           "systems": {}}
    for name in systems:
        cluster = FerryCluster(work, ferry_bin) if name == "ferry" else KafkaCluster(work)
        res["systems"][name] = run_system(cluster, args)
        if not args.no_write:
            write_report(res, args.out_dir)
    res["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res["loadavg_at_end"] = peers.loadavg()
    if not args.no_write:
        write_report(res, args.out_dir)
    shutil.rmtree(work, ignore_errors=True)


def stop_all(*_):
    for c in clusters:
        c.stop()
    for p in peers.started_pids:
        if p.poll() is None:
            p.kill()
    sys.exit(130)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    try:
        main()
    finally:
        for c in clusters:
            c.stop()
