#!/usr/bin/env python3
"""Ferry compatibility check: consumer groups with kafka-python (pure Python client).

Usage: test_kafka_python_group.py rebalance|kill

Creates a 6-partition topic with KafkaAdminClient, produces 6,000 keyed records
(acks=all, the default murmur2 key partitioner), then consumes them with a
group of three subscribe() consumers committing synchronously after
processing. "rebalance": one member closes mid-stream and a new one joins.
"kill": mid-stream the runner SIGKILLs and restarts the broker. The scenario
and the checks are in compat_group.py.

Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60),
FERRY_CONTROL_DIR (set by run.sh; needed for "kill"), FERRY_COMPAT_LOGLEVEL
(Python logging level for kafka-python, default WARNING).
Exit 0 on success, 1 with a message on failure.
"""
import logging
import os
import sys
import threading
import time
import uuid

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

import compat_group as cg

CLIENT = "kafka-python"
BOOTSTRAP = os.environ.get("FERRY_BOOTSTRAP", "127.0.0.1:9092")
TIMEOUT = float(os.environ.get("FERRY_COMPAT_TIMEOUT", "60"))
MODE = sys.argv[1] if len(sys.argv) > 1 else "rebalance"
TOPIC = f"compat-{CLIENT}-g{MODE[0]}-{uuid.uuid4().hex[:10]}"
START = time.monotonic()
TPS = [TopicPartition(TOPIC, p) for p in range(cg.PARTITIONS)]


class Listener(ConsumerRebalanceListener):
    def __init__(self, sc, name):
        self.sc = sc
        self.name = name

    def on_partitions_revoked(self, revoked):
        self.sc.log(f"{self.name}: revoked {sorted(tp.partition for tp in revoked)}")

    def on_partitions_assigned(self, assigned):
        self.sc.log(f"{self.name}: assigned {sorted(tp.partition for tp in assigned)}")


class Ops:
    def __init__(self, sc):
        self.sc = sc
        self.admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="ferry-compat-kafka-python-admin",
                                      request_timeout_ms=10000)
        self.offsets_reader = None

    def create_topic(self):
        self.admin.create_topics({TOPIC: {"num_partitions": cg.PARTITIONS, "replication_factor": 1}},
                                 timeout_ms=10000, wait_for_metadata=True)
        self.sc.log(f"created topic {TOPIC} with {cg.PARTITIONS} partitions (CreateTopics)")

    def produce(self):
        sc = self.sc
        p = KafkaProducer(
            bootstrap_servers=BOOTSTRAP,
            client_id="ferry-compat-kafka-python-producer",
            acks="all",
            # Idempotence off: this check is about the consumer group, not the producer.
            enable_idempotence=False,
            linger_ms=5,
            request_timeout_ms=15000,
            max_block_ms=20000,
        )
        futures = [p.send(TOPIC, key=sc.key(i), value=sc.value(i)) for i in range(cg.N)]
        p.flush(timeout=max(sc.remaining() - 5, 1))
        for i, f in enumerate(futures):
            if not f.is_done or f.failed():
                sc.fail(f"record #{i} not acknowledged: {f.exception!r}")
            sc.delivered(i, f.value.partition, f.value.offset)
        p.close(timeout=5)

    def open_consumer(self, name):
        sc = self.sc
        c = KafkaConsumer(
            bootstrap_servers=BOOTSTRAP,
            client_id=f"ferry-compat-kafka-python-{name}",
            group_id=sc.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=cg.SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=cg.HEARTBEAT_INTERVAL_MS,
            max_poll_interval_ms=cg.MAX_POLL_INTERVAL_MS,
            max_poll_records=cg.MAX_BATCH,
            request_timeout_ms=15000,
        )
        c.subscribe([TOPIC], listener=Listener(sc, name))
        return ConsumerAdapter(c)

    def committed(self):
        res = self.admin.list_group_offsets({self.sc.group: TPS})[self.sc.group]
        out = {}
        for tp, om in res.items():
            out[tp.partition] = om.offset if om is not None and om.offset >= 0 else None
        return out

    def end_offsets(self):
        if self.offsets_reader is None:
            self.offsets_reader = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None,
                                                client_id="ferry-compat-kafka-python-offsets")
        end = self.offsets_reader.end_offsets(TPS, timeout_ms=10000)
        return [end[tp] for tp in TPS]


class ConsumerAdapter:
    def __init__(self, c):
        self.c = c

    def poll_batch(self, max_records, timeout):
        out = []
        for tp, records in self.c.poll(timeout_ms=int(timeout * 1000), max_records=max_records).items():
            for r in records:
                out.append((tp.partition, r.offset, r.key, r.value))
        return out

    def commit(self, offsets):
        # Raises (e.g. CommitFailedError after a rebalance) or acknowledges all.
        self.c.commit({TopicPartition(TOPIC, p): OffsetAndMetadata(off, "", -1) for p, off in offsets.items()},
                      timeout_ms=10000)
        return dict(offsets), None

    def close(self):
        self.c.close(autocommit=False)


def main():
    logging.basicConfig(level=os.environ.get("FERRY_COMPAT_LOGLEVEL", "WARNING"),
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")
    sc = cg.Scenario(CLIENT, TOPIC, MODE, START + TIMEOUT, START)
    threading.Thread(target=sc.watchdog, args=(TIMEOUT,), daemon=True).start()
    sc.log(f"kafka-python {kafka.__version__}, bootstrap {BOOTSTRAP}, mode {MODE}, topic {TOPIC}")
    try:
        sc.run(Ops(sc))
    except Exception as e:  # noqa: BLE001 - any client error is a failure
        sc.fail(f"{type(e).__name__} (phase {sc.phase}): {e}")
    print(f"OK [{CLIENT}] group {MODE}: {cg.N} records processed at least once, commits at log end, "
          f"in {time.monotonic() - START:.2f}s", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
