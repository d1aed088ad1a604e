"""Shared helpers of the Python (confluent-kafka / librdkafka) exactly-once checks.

Configuration from the environment set by tests/eos/run.sh, logging in the
suite's "[ elapsed ]" format, topic creation, reading partitions to their end,
and the broker-control protocol: the runner sets FERRY_CONTROL_DIR to an empty
directory; creating the file ``kill-request`` there (written elsewhere, then
renamed) makes the runner SIGKILL the broker and restart it on the same port
with the same data dir; it then deletes the request and creates ``kill-done``
(or ``kill-failed``).
"""
import os
import sys
import time
import traceback

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

START = time.monotonic()
BOOTSTRAP = os.environ.get("FERRY_BOOTSTRAP") or "127.0.0.1:9092"


def run_id():
    """A per-run suffix, so that topic, group and transactional ids never collide between runs."""
    return os.environ.get("FERRY_EOS_RUN_ID") or str(int(time.time() * 1000) % 1_000_000_000)


def timeout_seconds(default):
    t = os.environ.get("FERRY_EOS_TIMEOUT", "").strip()
    return float(t) if t else float(default)


def elapsed():
    return time.monotonic() - START


def log(msg):
    sys.stdout.write(f"[{elapsed():7.3f}s] {msg}\n")
    sys.stdout.flush()


def common():
    """Settings shared by every client: fast reconnects after a broker restart."""
    return {
        "bootstrap.servers": BOOTSTRAP,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 1000,
        "retry.backoff.ms": 100,
        "retry.backoff.max.ms": 1000,
        "socket.timeout.ms": 10000,
        "topic.metadata.refresh.interval.ms": 10000,
    }


def kafka_error(e):
    """The KafkaError inside a KafkaException (None for other exceptions)."""
    if isinstance(e, KafkaException) and e.args and isinstance(e.args[0], KafkaError):
        return e.args[0]
    return None


def main(name, run):
    """Runs run() (True when every check passed), logs "<name>: OK" or "<name>: FAILED" and exits 0 or 1.
    An exception fails the run (logged with its traceback)."""
    try:
        ok = run()
    except Exception as e:  # noqa: BLE001
        log(f"FAILED with {type(e).__name__}: {e}")
        traceback.print_exc(file=sys.stdout)
        ok = False
    log(f"{name}: OK" if ok else f"{name}: FAILED")
    sys.stdout.flush()
    os._exit(0 if ok else 1)


def produce(p, topic, **kwargs):
    """p.produce(topic, **kwargs), polling while the producer's queue is full."""
    while True:
        try:
            p.produce(topic, **kwargs)
            return
        except BufferError:
            p.poll(0.05)


class ErrorLog:
    """Counts errors by kind; logs the first few of each kind and then powers of two."""

    def __init__(self):
        self.counts = {}

    def note(self, where, err):
        e = kafka_error(err)
        if e is not None:
            kind = e.name()
            flags = [f for f, on in (("retriable", e.retriable()), ("txn_requires_abort", e.txn_requires_abort()),
                                     ("fatal", e.fatal())) if on]
            text = f"{e.name()}: {e.str()}" + (f" [{', '.join(flags)}]" if flags else "")
        elif isinstance(err, KafkaError):
            kind = err.name()
            text = f"{err.name()}: {err.str()}"
        else:
            kind = type(err).__name__
            text = f"{type(err).__name__}: {err}"
        key = f"{where}: {kind}"
        c = self.counts.get(key, 0) + 1
        self.counts[key] = c
        if c <= 3 or (c & (c - 1)) == 0:
            # error_cb reports (connection failures while the broker restarts) are expected: no "failed".
            verb = "" if where.endswith("error_cb") else " failed"
            log(f"{where}{verb} (#{c} of this kind): {text}")

    def summary(self):
        return "{" + ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items())) + "}"


def client_error_cb(errors, who):
    """error_cb for librdkafka's asynchronous errors (connection failures while the broker restarts)."""

    def cb(err):
        errors.note(f"{who} error_cb", err)

    return cb


def create_topic(name, partitions):
    admin = AdminClient(dict(common(), **{"client.id": "eos-py-admin"}))
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                             operation_timeout=10, request_timeout=30)
    try:
        fs[name].result(timeout=40)
        log(f"created topic {name} ({partitions} partitions)")
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
        log(f"topic {name} already exists")


def verify_consumer(client_id, read_committed, **extra):
    """A Consumer for assign()-only reading and ListOffsets (never joins its group)."""
    return Consumer(dict(common(), **{
        "client.id": client_id + ("rc" if read_committed else "ru"),
        "group.id": "eos-py-verify-unused",  # required by librdkafka; assign() never joins it
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        "enable.auto.commit": False,
    }, **extra))


def end_offsets(topic, partitions, read_committed=True, client_id="eos-py-end-"):
    """{partition: end offset} of partitions 0..partitions-1 from ListOffsets with the given isolation level
    (read_committed: the last stable offset; read_uncommitted: the high watermark)."""
    c = verify_consumer(client_id, read_committed)
    try:
        return {p: watermark_end(c, TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        c.close()


# What a cluster answers while a partition elects a leader (a broker was just
# killed and restarted, FERRY_EOS_BROKERS=3); a client asks again, as Kafka's
# own clients do for these errors.
ELECTION_ERRORS = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                   KafkaError.OFFSET_NOT_AVAILABLE, KafkaError._TIMED_OUT,
                   KafkaError._UNKNOWN_PARTITION)  # librdkafka's word for a partition listed without a leader


def watermark_end(consumer, tp, timeout=30.0):
    """The partition's end offset from ListOffsets, asked again while its leader is being elected."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=max(1.0, deadline - time.monotonic()))[1]
        except KafkaException as e:
            if e.args[0].code() not in ELECTION_ERRORS or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            try:
                consumer.list_topics(tp.topic, timeout=5)  # a fresh leader; the cached one is gone
            except KafkaException:
                pass


def read_all(topic, partitions, read_committed, timeout, sink, end=None, drain=0.0, client_id="eos-py-verify-"):
    """Reads partitions 0..partitions-1 of topic from the beginning up to end ({partition: offset}; by default
    their high watermarks as seen at the start; for read_committed the reader also stops at the last stable
    offset, which equals the high watermark once no transaction is open), handing each message to sink.
    With drain > 0 it then consumes for drain seconds more and hands whatever still arrives (records past
    the end, e.g. of an open transaction) to sink as well. Returns {partition: end}."""
    c = verify_consumer(client_id, read_committed, **{
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    })
    try:
        if end is None:
            end = {p: watermark_end(c, TopicPartition(topic, p)) for p in range(partitions)}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        done = {p for p in range(partitions) if end[p] == 0}
        pos = {p: 0 for p in range(partitions)}
        deadline = time.monotonic() + timeout
        while len(done) < partitions:
            if time.monotonic() > deadline:
                raise RuntimeError(f"reading {topic} (read_committed={read_committed}) did not reach the end "
                                   f"offsets {end} in {timeout}s (positions {pos}, done {sorted(done)})")
            for m in c.consume(num_messages=5000, timeout=0.5):
                err = m.error()
                if err is None:
                    pos[m.partition()] = m.offset() + 1
                    sink(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    pos[m.partition()] = m.offset()
                    if m.offset() >= end[m.partition()]:
                        done.add(m.partition())
                else:
                    raise KafkaException(err)
        if drain > 0:
            for m in c.consume(num_messages=5000, timeout=drain):
                if m.error() is None:
                    sink(m)
        return end
    finally:
        c.close()


# ------------------------------------------------------------------ broker control

_kills = 0


def control_dir():
    d = os.environ.get("FERRY_CONTROL_DIR")
    if not d or not os.path.isdir(d):
        raise RuntimeError("FERRY_CONTROL_DIR is not set: run me through tests/eos/run.sh")
    return d


def request_kill(why):
    """Asks the runner to SIGKILL and restart the broker; returns at once (see kill_done)."""
    global _kills
    d = control_dir()
    try:
        os.unlink(os.path.join(d, "kill-done"))
    except FileNotFoundError:
        pass
    tmp = os.path.join(d, ".kill-request")
    with open(tmp, "w") as f:
        f.write(why + "\n")
    os.rename(tmp, os.path.join(d, "kill-request"))
    _kills += 1
    log(f"requested broker kill #{_kills} ({why})")


def kill_done():
    """Whether the last requested kill was carried out (the broker restarted); raises if it failed."""
    d = control_dir()
    failed = os.path.join(d, "kill-failed")
    if os.path.exists(failed):
        with open(failed) as f:
            raise RuntimeError("the runner could not restart the broker: " + f.read().strip())
    done = os.path.join(d, "kill-done")
    if os.path.exists(done):
        with open(done) as f:
            log("runner: " + f.read().strip())
        os.unlink(done)
        return True
    return False


def await_kill_done(timeout):
    deadline = time.monotonic() + timeout
    while not kill_done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"broker kill not done in {timeout}s")
        time.sleep(0.02)
