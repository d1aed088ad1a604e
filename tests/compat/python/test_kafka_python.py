#!/usr/bin/env python3
"""Ferry compatibility check: kafka-python (pure Python client).

Produces 10,000 records (gzip, acks=1) to partition 0 of a fresh topic
(auto-created on first produce), then reads them back from offset 0 with
assign() (no consumer group) and checks offset, key and value of every record.

Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60),
FERRY_CLIENT_PROPS (space-separated key=value settings with kafka-python's own
keyword names, added to both clients, e.g. security_protocol=SASL_SSL
sasl_mechanism=SCRAM-SHA-256 sasl_plain_username=u sasl_plain_password=p
ssl_cafile=ca.pem).
Exit 0 on success, 1 with a message on failure.
"""
import logging
import os
import signal
import sys
import threading
import time
import uuid

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

CLIENT = "kafka-python"
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


def remaining():
    return DEADLINE - time.monotonic()


def log(msg):
    print(f"[{CLIENT} {time.monotonic() - START:6.2f}s] {msg}", flush=True)


def watchdog():
    # kafka-python can block inside its network loop; a thread timer is a
    # hard backstop that does not depend on the main thread returning.
    time.sleep(TIMEOUT + 5)
    fail(f"hard timeout after {TIMEOUT:.0f}s (phase: {PHASE})")


def produce():
    global PHASE
    PHASE = "creating producer / producing"
    p = KafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        acks=1,
        compression_type="gzip",
        # Idempotence needs acks=all; kafka-python would disable it anyway.
        enable_idempotence=False,
        linger_ms=5,
        request_timeout_ms=15000,
        max_block_ms=20000,
        client_id="ferry-compat-kafka-python",
        **EXTRA,
    )
    futures = []
    for i in range(N):
        futures.append(p.send(TOPIC, key=f"k{i}".encode(), value=f"{CLIENT}-{i}".encode(), partition=0))
    PHASE = "flushing (waiting for produce acks)"
    p.flush(timeout=max(remaining() - 5, 1))
    for i, f in enumerate(futures):
        if not f.is_done:
            fail(f"record #{i} not acknowledged after flush")
        if f.failed():
            fail(f"record #{i} failed: {f.exception!r}")
        md = f.value
        if md.partition != 0 or md.offset != i:
            fail(f"record #{i} acknowledged at partition={md.partition} offset={md.offset}, expected 0/{i}")
    p.close(timeout=5)
    log(f"produced {N} records (gzip, acks=1), offsets 0..{N - 1} acknowledged")


def consume():
    global PHASE
    PHASE = "consuming"
    c = KafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=15000,
        client_id="ferry-compat-kafka-python",
        **EXTRA,
    )
    tp = TopicPartition(TOPIC, 0)
    c.assign([tp])
    c.seek(tp, 0)
    got = 0
    try:
        while got < N:
            if remaining() <= 0:
                fail(f"timed out while consuming: got {got} of {N} records")
            batch = c.poll(timeout_ms=1000, max_records=2000)
            for part, records in batch.items():
                for r in records:
                    i = got
                    if part != tp or r.offset != i:
                        fail(f"record #{i}: {part.topic}/{part.partition} offset={r.offset}, expected {TOPIC}/0 offset {i}")
                    if r.key != f"k{i}".encode():
                        fail(f"record #{i}: key={r.key!r}, expected b'k{i}'")
                    if r.value != f"{CLIENT}-{i}".encode():
                        fail(f"record #{i}: value={r.value!r}, expected {CLIENT}-{i}")
                    got += 1
                    if got > N:
                        fail("more records than produced")
        extra = c.poll(timeout_ms=500)
        n_extra = sum(len(v) for v in extra.values())
        if n_extra:
            fail(f"got {n_extra} unexpected extra records")
    finally:
        c.close()
    log(f"consumed {got} records from offset 0, all offsets/keys/values match")


def main():
    logging.basicConfig(level=os.environ.get("FERRY_COMPAT_LOGLEVEL", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    threading.Thread(target=watchdog, daemon=True).start()
    how = " ".join(f"{k}={v}" for k, v in EXTRA.items() if "password" not in k)
    log(f"kafka-python {kafka.__version__}, bootstrap {BOOTSTRAP}{f' ({how})' if how else ''}, topic {TOPIC}")
    try:
        produce()
        consume()
    except Exception as e:  # noqa: BLE001 - any client error is a failure
        fail(f"{type(e).__name__}: {e}")
    print(f"OK [{CLIENT}] {N} records round-tripped in {time.monotonic() - START:.2f}s", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
