"""Shared scenario and bookkeeping for the Python consumer-group checks.

Used by test_confluent_kafka_group.py and test_kafka_python_group.py; each of
them supplies a small adapter over its client (create topic, produce, a
group consumer with poll/commit/close, committed and end offsets), and this
module runs the same scenario and checks for both:

  * a fresh topic with PARTITIONS partitions, N keyed records spread over them
    by the client's default (key-hash) partitioner;
  * three group members (threads) with manual commits: each polls a batch,
    processes it (records every value, sleeps PROCESS_DELAY_S per record so
    that the stream lasts long enough for the group to change mid-way), then
    commits the next offset of every partition in the batch (at-least-once);
  * mode "rebalance": once LEAVE_AT distinct values are processed, member m1
    closes (LeaveGroup) and a new member m4 joins;
  * mode "kill": once KILL_AT distinct values are processed and every
    partition has an acknowledged commit, the program asks the runner
    (run.sh, via $FERRY_CONTROL_DIR) to SIGKILL and restart the broker, and
    keeps consuming; the members reconnect on their own;
  * then: every value processed at least once, the group's committed offsets
    equal the log end offset of every partition; in mode "kill" also: right
    after the restart the broker still has every commit it acknowledged
    before, and no record below a commit acknowledged before the restart was
    processed again after it (re-deliveries only above the committed offset).

Exit 0 on success, 1 with a message on failure.
"""
import os
import sys
import threading
import time
import traceback

N = 6_000
PARTITIONS = 6
# Per record. Three members process ~750 records/s in total, so the 6,000
# records last ~8 s plus rebalances: a member leaving at LEAVE_AT and the
# broker kill at KILL_AT both happen with most of the stream still ahead.
PROCESS_DELAY_S = 0.004
MAX_BATCH = 100
LEAVE_AT = 1_500
KILL_AT = 2_000
# Group timeouts, in ms. The broker (like Kafka) refuses session timeouts
# below group.min.session.timeout.ms (6000 by default).
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 1_000
MAX_POLL_INTERVAL_MS = 30_000
LOG_LOCK = threading.Lock()


class Scenario:
    """One run: a topic, a group and the ledger of what was processed."""

    def __init__(self, client, topic, mode, deadline, start):
        if mode not in ("rebalance", "kill"):
            raise SystemExit(f"unknown mode {mode!r} (rebalance|kill)")
        self.client = client
        self.topic = topic
        self.group = f"{topic}-g"
        self.mode = mode
        self.deadline = deadline
        self.start = start
        self.phase = "starting"
        self.lock = threading.Lock()
        self.produced = {}  # i -> (partition, offset)
        self.leo = [0] * PARTITIONS
        self.counts = [0] * N
        self.unique = 0
        self.redelivered = 0
        self.per_member = {}
        self.acked = [0] * PARTITIONS  # highest acknowledged committed offset
        self.commit_ok = 0
        self.commit_failed = 0
        self.kill_phase = "before"  # before | during | after (the broker restart)
        self.floor = None  # acked[] as of the restart
        self.first_after = [None] * PARTITIONS
        self.violations = []
        self.members = []

    # ------------------------------------------------------------ utilities
    def elapsed(self):
        return time.monotonic() - self.start

    def remaining(self):
        return self.deadline - time.monotonic()

    def log(self, msg):
        # One write per line: members log from their own threads.
        with LOG_LOCK:
            sys.stdout.write(f"[{self.client} {self.elapsed():6.2f}s] {msg}\n")
            sys.stdout.flush()

    def fail(self, msg):
        print(f"FAIL [{self.client}] topic={self.topic} group={self.group}: {msg}", file=sys.stderr, flush=True)
        os._exit(1)

    def watchdog(self, timeout):
        time.sleep(timeout + 5)
        self.fail(f"hard timeout after {timeout:.0f}s (phase: {self.phase}; {self.progress()})")

    def progress(self):
        with self.lock:
            missing = [i for i, c in enumerate(self.counts) if c == 0]
            return (f"{self.unique}/{N} values processed, missing e.g. {missing[:5]}, "
                    f"acked commits {self.acked}, log end {self.leo}, per member {self.per_member}")

    def key(self, i):
        return f"k{i}".encode()

    def value(self, i):
        return f"{self.client}-{i}".encode()

    # ------------------------------------------------------------ produce side
    def delivered(self, i, partition, offset):
        self.produced[i] = (partition, offset)

    def check_produced(self):
        if len(self.produced) != N:
            self.fail(f"expected {N} delivery reports, got {len(self.produced)}")
        per = [0] * PARTITIONS
        for i, (p, off) in self.produced.items():
            if not 0 <= p < PARTITIONS:
                self.fail(f"record #{i} acknowledged on partition {p}, topic has {PARTITIONS}")
            per[p] += 1
        for p in range(PARTITIONS):
            offs = sorted(off for (q, off) in self.produced.values() if q == p)
            if offs != list(range(len(offs))):
                self.fail(f"partition {p}: acknowledged offsets are not 0..{len(offs) - 1}")
        if min(per) == 0:
            self.fail(f"records not spread over all partitions: {per}")
        self.leo = per
        self.log(f"produced {N} keyed records over {PARTITIONS} partitions: {per}")

    # ------------------------------------------------------------ consume side
    def process(self, member, partition, offset, key, value):
        """Validates and records one processed record."""
        try:
            i = int(value.decode().rsplit("-", 1)[1])
        except (AttributeError, ValueError, IndexError):
            self.fail(f"{member}: unexpected value {value!r} at {partition}/{offset}")
        if not 0 <= i < N or value != self.value(i) or key != self.key(i):
            self.fail(f"{member}: record {partition}/{offset} key={key!r} value={value!r}")
        if self.produced.get(i) != (partition, offset):
            self.fail(f"{member}: value #{i} read at {partition}/{offset}, produced at {self.produced.get(i)}")
        with self.lock:
            if self.counts[i] == 0:
                self.unique += 1
            else:
                self.redelivered += 1
            self.counts[i] += 1
            self.per_member[member] = self.per_member.get(member, 0) + 1
            if self.kill_phase == "after":
                if self.first_after[partition] is None:
                    self.first_after[partition] = offset
                if offset < self.floor[partition]:
                    self.violations.append((member, partition, offset, self.floor[partition]))

    def acknowledged(self, offsets):
        """Partition -> committed offset that the broker acknowledged."""
        with self.lock:
            self.commit_ok += 1
            for p, off in offsets.items():
                self.acked[p] = max(self.acked[p], off)

    def commit_error(self, member, err):
        with self.lock:
            self.commit_failed += 1
            n = self.commit_failed
        if n <= 10:
            self.log(f"{member}: commit failed (tolerated, records will be re-delivered): {err}")

    # ------------------------------------------------------------ members
    def start_member(self, name, open_consumer):
        m = Member(self, name, open_consumer)
        self.members.append(m)
        m.start()
        return m

    def wait_until(self, what, cond, step=0.05):
        while not cond():
            if self.remaining() <= 0:
                self.fail(f"timed out waiting for {what} ({self.progress()})")
            for m in self.members:
                if m.error:
                    self.fail(f"member {m.name} died: {m.error}")
            time.sleep(step)

    # ------------------------------------------------------------ broker kill
    def request_kill(self):
        ctl = os.environ.get("FERRY_CONTROL_DIR")
        if not ctl or not os.path.isdir(ctl):
            self.fail("mode 'kill' needs FERRY_CONTROL_DIR (run it through tests/compat/run.sh)")
        done = os.path.join(ctl, "kill-done")
        failed = os.path.join(ctl, "kill-failed")
        for f in (done, failed):
            if os.path.exists(f):
                os.unlink(f)
        tmp = os.path.join(ctl, f".kill-request.{os.getpid()}")
        with open(tmp, "w") as fh:
            fh.write(f"{self.client}\n")
        os.rename(tmp, os.path.join(ctl, "kill-request"))
        with self.lock:
            self.kill_phase = "during"
            snapshot = list(self.acked)
        self.log(f"asked the runner to SIGKILL and restart the broker; acknowledged commits so far {snapshot}")
        t0 = time.monotonic()
        while not os.path.exists(done):
            if os.path.exists(failed):
                self.fail(f"runner could not restart the broker: {open(failed).read().strip()}")
            if self.remaining() <= 0 or time.monotonic() - t0 > 30:
                self.fail("runner did not report kill-done within 30 s")
            time.sleep(0.02)
        with self.lock:
            self.kill_phase = "after"
            self.floor = list(self.acked)
        self.log(f"broker killed and restarted ({open(done).read().strip()}); "
                 f"commits acknowledged before the restart: {self.floor}")

    # ------------------------------------------------------------ scenario
    def run(self, ops):
        """ops: create_topic(), produce() (calls delivered() per record), open_consumer(name) -> object
        with poll_batch(max, timeout) -> [(partition, offset, key, value)], commit({partition: offset})
        -> ({acknowledged partition: offset}, error or None), close(); committed() and end_offsets()
        -> {partition: offset} / [offset per partition]."""
        self.phase = "creating topic"
        ops.create_topic()
        self.phase = "producing"
        ops.produce()
        self.check_produced()
        end = ops.end_offsets()
        if end != self.leo:
            self.fail(f"log end offsets {end} differ from acknowledged counts {self.leo}")

        self.phase = "consuming with m1, m2, m3"
        for name in ("m1", "m2", "m3"):
            self.start_member(name, ops.open_consumer)

        if self.mode == "rebalance":
            self.wait_until(f"{LEAVE_AT} processed values", lambda: self.unique >= LEAVE_AT)
            self.phase = "m1 leaving"
            self.log(f"{self.unique} values processed; m1 leaves the group (close)")
            self.members[0].stop_and_join(self)
            self.log(f"m1 closed after {self.per_member.get('m1', 0)} records; m4 joins")
            self.phase = "consuming with m2, m3, m4"
            self.start_member("m4", ops.open_consumer)
        else:
            self.wait_until(f"{KILL_AT} processed values and a commit on every partition",
                            lambda: self.unique >= KILL_AT and min(self.acked) > 0)
            self.phase = "broker kill/restart"
            self.request_kill()
            self.phase = "checking committed offsets after the restart"
            got = self.committed_retry(ops)
            lost = {p: (got.get(p), self.floor[p]) for p in range(PARTITIONS)
                    if (got.get(p) if got.get(p) is not None else -1) < self.floor[p]}
            if lost:
                self.fail(f"after the restart the group's committed offsets {got} are below commits the broker "
                          f"acknowledged before it was killed {self.floor} (partition: (now, acknowledged)) {lost}")
            self.log(f"committed offsets right after the restart: {[got.get(p) for p in range(PARTITIONS)]} "
                     f"(>= acknowledged before the kill)")
            self.phase = "consuming after the restart"

        self.wait_until(f"all {N} values processed", lambda: self.unique >= N)
        self.log(f"all {N} values processed ({self.redelivered} re-deliveries); waiting for final commits")
        self.phase = "waiting for committed == log end"
        last = {}

        def caught_up():
            nonlocal last
            try:
                last = ops.committed()
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last = {"error": repr(e)}
                return False
            return [last.get(p) for p in range(PARTITIONS)] == self.leo

        while not caught_up():
            if self.remaining() <= 0:
                self.fail(f"committed offsets {last} never reached the log end offsets {self.leo}")
            for m in self.members:
                if m.error:
                    self.fail(f"member {m.name} died: {m.error}")
            time.sleep(0.2)

        self.phase = "closing members"
        for m in self.members:
            m.stop_and_join(self)
        final = ops.committed()
        if [final.get(p) for p in range(PARTITIONS)] != self.leo:
            self.fail(f"after closing the members the committed offsets are {final}, log end {self.leo}")
        self.log(f"committed offsets == log end offsets {self.leo} (commits: {self.commit_ok} acknowledged, "
                 f"{self.commit_failed} failed and retried)")

        missing = [i for i, c in enumerate(self.counts) if c == 0]
        if missing:
            self.fail(f"{len(missing)} values never processed, e.g. {missing[:10]}")
        if self.mode == "rebalance":
            if self.per_member.get("m4", 0) == 0:
                self.fail(f"new member m4 never processed a record (per member {self.per_member})")
        else:
            if self.violations:
                ex = [f"{m} {p}/{o} < {f}" for (m, p, o, f) in self.violations[:5]]
                self.fail(f"{len(self.violations)} records below a commit acknowledged before the restart were "
                          f"processed again after it (member partition/offset < acknowledged commit): {ex}")
            self.log(f"first offsets processed after the restart per partition: {self.first_after} "
                     f"(commits acknowledged before it: {self.floor})")
        self.log(f"per member: {dict(sorted(self.per_member.items()))}, {self.redelivered} re-deliveries")
        return self

    def committed_retry(self, ops):
        last = None
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15 and self.remaining() > 0:
            try:
                return ops.committed()
            except Exception as e:  # noqa: BLE001 - the broker has just restarted
                last = e
                time.sleep(0.2)
        self.fail(f"could not fetch committed offsets after the restart: {last!r}")


class Member(threading.Thread):
    """One group member: poll -> process -> commit, until stopped."""

    def __init__(self, sc, name, open_consumer):
        super().__init__(name=name, daemon=True)
        self.sc = sc
        self.open_consumer = open_consumer
        self.stopping = threading.Event()
        self.error = None
        self.poll_errors = 0

    def stop_and_join(self, sc):
        self.stopping.set()
        self.join(max(min(sc.remaining(), 20), 1))
        if self.is_alive():
            sc.fail(f"member {self.name} did not close within 20 s")
        if self.error:
            sc.fail(f"member {self.name} died: {self.error}")

    def run(self):
        sc = self.sc
        try:
            c = self.open_consumer(self.name)
            try:
                while not self.stopping.is_set():
                    try:
                        batch = c.poll_batch(MAX_BATCH, 0.3)
                    except Exception as e:  # noqa: BLE001 - e.g. while the broker is down
                        self.poll_errors += 1
                        if self.poll_errors <= 5:
                            sc.log(f"{self.name}: poll error (tolerated): {e!r}")
                        time.sleep(0.2)
                        continue
                    if not batch:
                        continue
                    nxt = {}
                    for (p, off, key, value) in batch:
                        sc.process(self.name, p, off, key, value)
                        nxt[p] = max(nxt.get(p, 0), off + 1)
                    time.sleep(PROCESS_DELAY_S * len(batch))
                    try:
                        acked, err = c.commit(nxt)
                    except Exception as e:  # noqa: BLE001 - e.g. rebalance in progress
                        acked, err = {}, repr(e)
                    if acked:
                        sc.acknowledged(acked)
                    if err:
                        sc.commit_error(self.name, err)
            finally:
                c.close()
        except Exception:  # noqa: BLE001 - reported by the main thread
            self.error = traceback.format_exc()
