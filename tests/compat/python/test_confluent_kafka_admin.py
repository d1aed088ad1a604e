#!/usr/bin/env python3
"""Ferry compatibility check: topic configs a confluent-kafka (librdkafka)
admin and producer rely on for compacted topics.

1. IncrementalAlterConfigs APPEND and SUBTRACT on a list config: a topic
   created with the default cleanup.policy (delete) gets APPEND compact
   (DescribeConfigs then shows delete,compact), SUBTRACT delete (compact),
   APPEND compact again (unchanged), and APPEND on retention.ms, which is no
   list, is refused as an invalid request.
2. A compacted topic refuses a record without a key (INVALID_RECORD) and
   writes nothing: a keyed record produced next lands at offset 0.
3. message.timestamp.type=LogAppendTime: a record sent with timestamp 1000
   comes back, in its delivery report and to a consumer, stamped with the
   broker's append time (type LogAppendTime, within a minute of now).
4. ListOffsets to the record: four records with timestamps 1000, 5000, 3000,
   2000 in one batch; the offset for timestamp 2500 is 1 (the first record
   at or after it, not its batch's first), for 5001 none (-1), and
   MAX_TIMESTAMP answers offset 1 with timestamp 5000 (KIP-734).
5. compression.type per topic: for each of gzip, snappy, lz4 and zstd, 300
   records with keys and headers sent uncompressed (the client's default)
   are stored in the topic's codec by the broker and read back intact.
6. Timestamp bounds: a record two hours ahead is refused (INVALID_TIMESTAMP;
   message.timestamp.after.max.ms defaults to one hour), and so is one from
   1970 on a topic with message.timestamp.before.max.ms=60000; a record
   stamped now is accepted there.
7. Authorized operations (no ACLs: everything the resource supports): a
   topic's through Metadata, the cluster's through describe_cluster, a
   group's through DescribeGroups; not asked for, none come back.

Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60).
Exit 0 on success, 1 with a message on failure.
"""
import time
import uuid

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaError, KafkaException, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import (AclOperation, AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, OffsetSpec,
                                   ResourceType)

from compat_output import BOOTSTRAP, Output

OUT = Output("confluent-admin")
fail, log = OUT.fail, OUT.log


def create_topic(admin, name, config=None):
    futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1, config=config or {})])
    futures[name].result(timeout=30)


def cleanup_policy(admin, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    return configs["cleanup.policy"].value


def alter(admin, topic, name, value, op):
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[ConfigEntry(name, value, incremental_operation=op)])
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)


def check_list_operations(admin):
    topic = f"compat-admin-list-{uuid.uuid4().hex[:8]}"
    create_topic(admin, topic)
    steps = [
        (AlterConfigOpType.APPEND, "compact", "delete,compact"),
        (AlterConfigOpType.SUBTRACT, "delete", "compact"),
        (AlterConfigOpType.APPEND, "compact", "compact"),
    ]
    for op, value, expected in steps:
        alter(admin, topic, "cleanup.policy", value, op)
        got = cleanup_policy(admin, topic)
        if got != expected:
            fail(f"{op.name} {value}: cleanup.policy is {got!r}, expected {expected!r}")
        log(f"{op.name} {value}: cleanup.policy={got}")
    try:
        alter(admin, topic, "retention.ms", "1000", AlterConfigOpType.APPEND)
        fail("APPEND on retention.ms (not a list config) was accepted")
    except KafkaException as e:
        if e.args[0].code() != KafkaError.INVALID_REQUEST:
            fail(f"APPEND on retention.ms: expected INVALID_REQUEST, got {e.args[0]}")
        log(f"APPEND on retention.ms refused: {e.args[0].name()}")


def produce_one(producer, topic, key, timestamp=0):
    """Sends one record (timestamp 0: now) and waits for its delivery report."""
    outcome = {}

    def report(err, msg):
        outcome["err"], outcome["offset"] = err, (msg.offset() if err is None else None)

    producer.produce(topic, value=b"v", key=key, timestamp=timestamp, on_delivery=report)
    producer.flush(30)
    if "err" not in outcome:
        fail(f"no delivery report for key {key!r}")
    return outcome["err"], outcome["offset"]


def expect_refused(producer, topic, what, code, key=b"k", timestamp=0):
    err, _ = produce_one(producer, topic, key, timestamp)
    if err is None or err.code() != code:
        fail(f"{what}: expected error {code}, got {err}")
    log(f"{what} refused: {err.name()}")


def expect_first_record(producer, topic, what):
    """A keyed record sent now lands at offset 0: what was refused before wrote nothing."""
    err, offset = produce_one(producer, topic, b"k")
    if err is not None or offset != 0:
        fail(f"{what}: expected offset 0, got {offset} ({err})")
    log(f"{what} landed at offset 0")


def check_keyless_refused(admin):
    topic = f"compat-admin-compact-{uuid.uuid4().hex[:8]}"
    create_topic(admin, topic, {"cleanup.policy": "compact"})
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    expect_refused(producer, topic, "a keyless record to a compacted topic", KafkaError.INVALID_RECORD, key=None)
    expect_first_record(producer, topic, "a keyed record after the refusal")


def check_log_append_time(admin):
    topic = f"compat-admin-lat-{uuid.uuid4().hex[:8]}"
    create_topic(admin, topic, {"message.timestamp.type": "LogAppendTime"})
    sent_ms = int(time.time() * 1000)
    reports = []
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    producer.produce(topic, value=b"v", key=b"k", timestamp=1000, on_delivery=lambda err, msg: reports.append((err, msg)))
    producer.flush(30)
    if len(reports) != 1 or reports[0][0] is not None:
        fail(f"produce to a LogAppendTime topic: {reports}")

    def stamped(what, ts):
        kind, ms = ts
        if kind != TIMESTAMP_LOG_APPEND_TIME or abs(ms - sent_ms) > 60_000:
            fail(f"{what}: timestamp {ts}, expected LogAppendTime near {sent_ms}")
        log(f"{what}: LogAppendTime {ms} (sent with 1000)")

    stamped("delivery report", reports[0][1].timestamp())
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"lat-{uuid.uuid4().hex[:8]}"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            stamped("consumed record", msg.timestamp())
            consumer.close()
            return
    fail("the LogAppendTime record was never consumed")


def check_offsets_by_time(admin):
    topic = f"compat-admin-times-{uuid.uuid4().hex[:8]}"
    create_topic(admin, topic)
    # One batch: the lookup must look inside it.
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 200})
    for i, ts in enumerate([1000, 5000, 3000, 2000]):
        producer.produce(topic, value=f"v{i}".encode(), key=b"k", partition=0, timestamp=ts)
    producer.flush(30)
    tp = TopicPartition(topic, 0)
    cases = [
        ("timestamp 2500", OffsetSpec.for_timestamp(2500), 1, 5000),
        ("timestamp 5001", OffsetSpec.for_timestamp(5001), -1, -1),
        ("max timestamp", OffsetSpec.max_timestamp(), 1, 5000),
    ]
    for what, spec, offset, timestamp in cases:
        info = admin.list_offsets({tp: spec})[tp].result(timeout=30)
        if (info.offset, info.timestamp) != (offset, timestamp):
            fail(f"ListOffsets {what}: offset {info.offset} timestamp {info.timestamp}, expected {offset} and {timestamp}")
        log(f"ListOffsets {what}: offset {info.offset}, timestamp {info.timestamp}")


def check_recompressed(admin):
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    for codec in ["gzip", "snappy", "lz4", "zstd"]:
        topic = f"compat-admin-{codec}-{uuid.uuid4().hex[:8]}"
        create_topic(admin, topic, {"compression.type": codec})
        sent = [(f"k{i}".encode(), f"{codec}-{i}-{'y' * (i % 50)}".encode()) for i in range(300)]
        for key, value in sent:
            producer.produce(topic, value=value, key=key, partition=0, headers=[("h", key)])
        producer.flush(30)
        consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"codec-{uuid.uuid4().hex[:8]}"})
        consumer.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.monotonic() + 20
        while len(got) < len(sent) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                if msg.headers() != [("h", msg.key())]:
                    fail(f"{codec}: headers {msg.headers()} for key {msg.key()}")
                got.append((msg.key(), msg.value()))
        consumer.close()
        if got != sent:
            fail(f"{codec}: read {len(got)} records back, not the {len(sent)} sent, in order")
        log(f"compression.type={codec}: {len(got)} records read back intact")


def check_timestamp_bounds(admin):
    topic = f"compat-admin-bounds-{uuid.uuid4().hex[:8]}"
    create_topic(admin, topic, {"message.timestamp.before.max.ms": "60000"})
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    now_ms = int(time.time() * 1000)
    for what, ts in [("two hours ahead", now_ms + 7_200_000), ("from 1970", 1000)]:
        expect_refused(producer, topic, f"a record {what}", KafkaError.INVALID_TIMESTAMP, timestamp=ts)
    expect_first_record(producer, topic, "a record stamped now")


def check_authorized_operations(admin):
    op = AclOperation
    topic = f"compat-admin-ops-{uuid.uuid4().hex[:8]}"
    create_topic(admin, topic)
    group = f"compat-admin-ops-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group})
    consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    consumer.close()
    expected = {
        "topic": {op.READ, op.WRITE, op.CREATE, op.DELETE, op.ALTER, op.DESCRIBE, op.DESCRIBE_CONFIGS, op.ALTER_CONFIGS},
        "cluster": {op.CREATE, op.CLUSTER_ACTION, op.DESCRIBE_CONFIGS, op.ALTER_CONFIGS, op.IDEMPOTENT_WRITE, op.ALTER, op.DESCRIBE},
        "group": {op.READ, op.DESCRIBE, op.DELETE},
    }

    def describe(what, include):
        if what == "topic":
            return admin.describe_topics(TopicCollection([topic]), include_authorized_operations=include)[topic].result(timeout=30)
        if what == "cluster":
            return admin.describe_cluster(include_authorized_operations=include).result(timeout=30)
        return admin.describe_consumer_groups([group], include_authorized_operations=include)[group].result(timeout=30)

    for what, ops in expected.items():
        got = set(describe(what, True).authorized_operations or [])
        if got != ops:
            fail(f"{what} authorized operations: {sorted(o.name for o in got)}, expected {sorted(o.name for o in ops)}")
        unasked = describe(what, False).authorized_operations
        if unasked:
            fail(f"{what} authorized operations came back unasked: {unasked}")
        log(f"{what} authorized operations: {sorted(o.name for o in got)}")


def main():
    OUT.start_watchdog()
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    check_list_operations(admin)
    check_keyless_refused(admin)
    check_log_append_time(admin)
    check_offsets_by_time(admin)
    check_recompressed(admin)
    check_timestamp_bounds(admin)
    check_authorized_operations(admin)
    log("OK")


if __name__ == "__main__":
    main()
