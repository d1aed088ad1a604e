#!/usr/bin/env python3
"""Ferry compatibility check: promises a pipelining or size-limited
confluent-kafka (librdkafka) client relies on.

1. Pipelined commits take effect in the order sent: one consumer, its
   coordinator found, sends 200 asynchronous OffsetCommits for one partition
   (offsets 1..200), waits for every answer, and OffsetFetch must then
   return 200. Five trials, each a
   fresh group. (Kafka answers and applies a connection's requests in order.)
2. A fetch answer stays within the request's max_bytes: three partitions
   each hold two 900 KB records; a consumer with fetch.max.bytes=1000000 and
   receive.message.max.bytes=1000512 (as librdkafka pairs them) must read
   all six. An answer over the limit is refused by librdkafka ("Invalid
   response size") and the consumer reads nothing.

Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60).
Exit 0 on success, 1 with a message on failure.
"""
import os
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from compat_output import BOOTSTRAP, Output

OUT = Output("confluent-promises")
fail, log = OUT.fail, OUT.log
COMMITS = 200
TRIALS = 5
BIG_RECORD_BYTES = 900_000


def create_topic(name, partitions, config=None):
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    for f in futures.values():
        f.result(timeout=15)


def pipelined_commits():
    topic = f"compat-commits-{uuid.uuid4().hex[:8]}"
    create_topic(topic, 1)
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    for i in range(COMMITS + 1):
        producer.produce(topic, value=b"v%d" % i, partition=0)
    if producer.flush(20) != 0:
        fail("records not delivered")
    for trial in range(TRIALS):
        group = f"commits-{uuid.uuid4().hex[:8]}"
        answered = []

        def on_commit(err, partitions):
            answered.append(err)

        c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group, "enable.auto.commit": False,
                      "on_commit": on_commit})
        c.assign([TopicPartition(topic, 0, 0)])
        # Find the coordinator first (OffsetFetch needs it). librdkafka defers
        # commits made while it looks the coordinator up and, once it is up,
        # sends them after the commits made meanwhile: the committed offset
        # then ends at the last deferred one (reproduced: 173 deferred, 173
        # committed). This check is about the broker applying what arrives on
        # one connection in order, not about that client queue.
        c.committed([TopicPartition(topic, 0)], timeout=10)
        for offset in range(1, COMMITS + 1):
            c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=True)
        deadline = time.monotonic() + 20
        while len(answered) < COMMITS and time.monotonic() < deadline:
            c.poll(0.1)
        if len(answered) < COMMITS:
            fail(f"trial {trial}: {len(answered)} of {COMMITS} commits answered")
        errors = [e for e in answered if e is not None]
        if errors:
            fail(f"trial {trial}: commit errors: {errors[:3]}")
        got = c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        c.close()
        if got != COMMITS:
            fail(f"trial {trial}: committed offset is {got} after {COMMITS} pipelined commits of 1..{COMMITS}")
        log(f"trial {trial}: committed offset {got}")


def fetch_within_max_bytes():
    topic = f"compat-bigfetch-{uuid.uuid4().hex[:8]}"
    create_topic(topic, 3, {"max.message.bytes": "2000000"})
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "message.max.bytes": 2_000_000, "linger.ms": 0})
    payload = os.urandom(BIG_RECORD_BYTES)
    for p in range(3):
        for _ in range(2):
            producer.produce(topic, value=payload, partition=p)
            producer.flush(20)
    if producer.flush(20) != 0:
        fail("big records not delivered")
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"bigfetch-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "fetch.max.bytes": 1_000_000,
                  "receive.message.max.bytes": 1_000_512})
    c.assign([TopicPartition(topic, p, 0) for p in range(3)])
    got = 0
    deadline = time.monotonic() + 20
    while got < 6 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            fail(f"consume error: {m.error()}")
        if len(m.value()) != BIG_RECORD_BYTES:
            fail(f"record of {len(m.value())} bytes, expected {BIG_RECORD_BYTES}")
        got += 1
    c.close()
    if got != 6:
        fail(f"read {got} of 6 records of {BIG_RECORD_BYTES} bytes with fetch.max.bytes=1000000 in 20 s")
    log(f"read all 6 records of {BIG_RECORD_BYTES} bytes with fetch.max.bytes=1000000")


def main():
    OUT.start_watchdog()
    try:
        pipelined_commits()
        fetch_within_max_bytes()
    except KafkaException as e:
        fail(f"kafka error: {e}")
    print(f"PASS [{OUT.client}]", flush=True)


if __name__ == "__main__":
    main()
