#!/usr/bin/env python3
"""Ferry compatibility check: confluent-kafka (librdkafka).

Produces 10,000 records (lz4, acks=all) to partition 0 of a fresh topic
(auto-created on first produce), then reads them back from the beginning
with assign() and checks offset, key and value of every record.

Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60),
FERRY_CLIENT_PROPS (space-separated key=value client properties added to
both clients, e.g. security.protocol=SSL ssl.ca.location=ca.pem).
Exit 0 on success, 1 with a message on failure.
"""
import os
import sys
import threading
import time
import uuid

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

CLIENT = "confluent"
N = 10_000
BOOTSTRAP = os.environ.get("FERRY_BOOTSTRAP", "127.0.0.1:9092")
TIMEOUT = float(os.environ.get("FERRY_COMPAT_TIMEOUT", "60"))
EXTRA = dict(kv.split("=", 1) for kv in os.environ.get("FERRY_CLIENT_PROPS", "").split())
TOPIC = f"compat-{CLIENT}-{uuid.uuid4().hex[:10]}"
START = time.monotonic()
DEADLINE = START + TIMEOUT
PHASE = "starting"


def fail(msg):
    print(f"FAIL [{CLIENT}] topic={TOPIC}: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def watchdog():
    # Hard backstop: librdkafka calls release the GIL, so this thread fires
    # even if the main thread is stuck in flush()/consume().
    time.sleep(TIMEOUT + 5)
    fail(f"hard timeout after {TIMEOUT:.0f}s (phase: {PHASE})")


def remaining():
    return DEADLINE - time.monotonic()


def log(msg):
    print(f"[{CLIENT} {time.monotonic() - START:6.2f}s] {msg}", flush=True)


def produce():
    global PHASE
    PHASE = "creating producer / producing"
    errors = []
    delivered = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"record key={msg.key()!r}: {err}")
        else:
            delivered.append((msg.key(), msg.partition(), msg.offset()))

    def on_error(err):
        log(f"producer error callback: {err}")

    p = Producer({
        "bootstrap.servers": BOOTSTRAP,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 5,
        "message.timeout.ms": int(TIMEOUT * 1000 * 0.6),
        "error_cb": on_error,
        **EXTRA,
    })
    for i in range(N):
        while True:
            try:
                p.produce(TOPIC, key=f"k{i}".encode(), value=f"{CLIENT}-{i}".encode(),
                          partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
            if remaining() <= 0:
                fail("timed out while producing")
        p.poll(0)
    left = p.flush(max(remaining() - 5, 1))
    if left:
        fail(f"flush: {left} records still undelivered; first errors: {errors[:3]}")
    if errors:
        fail(f"{len(errors)} delivery errors, first: {errors[:3]}")
    if len(delivered) != N:
        fail(f"expected {N} delivery reports, got {len(delivered)}")
    # Delivery reports come back in produce order for one partition.
    for i, (key, part, off) in enumerate(delivered):
        if key != f"k{i}".encode() or part != 0 or off != i:
            fail(f"delivery report #{i}: key={key!r} partition={part} offset={off}, "
                 f"expected key=b'k{i}' partition=0 offset={i}")
    log(f"produced {N} records (lz4, acks=all), offsets 0..{N - 1} acknowledged")


def consume():
    global PHASE
    PHASE = "consuming"
    c = Consumer({
        "bootstrap.servers": BOOTSTRAP,
        # group.id is mandatory for the Python Consumer; we never subscribe or
        # commit, only assign(), so no group is joined.
        "group.id": f"{TOPIC}-g",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "error_cb": lambda err: log(f"consumer error callback: {err}"),
        **EXTRA,
    })
    c.assign([TopicPartition(TOPIC, 0, confluent_kafka.OFFSET_BEGINNING)])
    got = 0
    try:
        while got < N:
            if remaining() <= 0:
                fail(f"timed out while consuming: got {got} of {N} records")
            msgs = c.consume(num_messages=1000, timeout=min(1.0, max(remaining(), 0.1)))
            for m in msgs:
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    fail(f"consume error after {got} records: {m.error()}")
                i = got
                if m.partition() != 0 or m.offset() != i:
                    fail(f"record #{i}: partition={m.partition()} offset={m.offset()}, expected 0/{i}")
                if m.key() != f"k{i}".encode():
                    fail(f"record #{i}: key={m.key()!r}, expected b'k{i}'")
                if m.value() != f"{CLIENT}-{i}".encode():
                    fail(f"record #{i}: value={m.value()!r}, expected {CLIENT}-{i}")
                got += 1
                if got > N:
                    fail("more records than produced")
        # Make sure nothing beyond N shows up.
        extra = c.consume(num_messages=10, timeout=0.5)
        extra = [m for m in extra if not m.error()]
        if extra:
            fail(f"got {len(extra)} unexpected extra records, first offset {extra[0].offset()}")
    finally:
        c.close()
    log(f"consumed {got} records from offset 0, all offsets/keys/values match")


def main():
    threading.Thread(target=watchdog, daemon=True).start()
    log(f"confluent-kafka {confluent_kafka.__version__} / librdkafka {confluent_kafka.libversion()[0]}, "
        f"bootstrap {BOOTSTRAP}, topic {TOPIC}")
    try:
        produce()
        consume()
    except KafkaException as e:
        fail(f"KafkaException: {e}")
    print(f"OK [{CLIENT}] {N} records round-tripped in {time.monotonic() - START:.2f}s", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
