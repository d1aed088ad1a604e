#!/usr/bin/env python3
"""Ferry compatibility check: consumer groups with confluent-kafka (librdkafka).

Usage: test_confluent_kafka_group.py rebalance|kill

Creates a 6-partition topic with the AdminClient, produces 6,000 keyed records
(acks=all, librdkafka's default key-hash partitioner), then consumes them with
a group of three subscribe() consumers committing synchronously after
processing. "rebalance": one member closes mid-stream and a new one joins.
"kill": mid-stream the runner SIGKILLs and restarts the broker. The scenario
and the checks are in compat_group.py.

Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60),
FERRY_CONTROL_DIR (set by run.sh; needed for "kill"), FERRY_COMPAT_DEBUG=1 for
librdkafka cgrp/protocol debug logs.
Exit 0 on success, 1 with a message on failure.
"""
import os
import sys
import threading
import time
import uuid

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
from confluent_kafka import ConsumerGroupTopicPartitions

import compat_group as cg

CLIENT = "confluent"
BOOTSTRAP = os.environ.get("FERRY_BOOTSTRAP", "127.0.0.1:9092")
TIMEOUT = float(os.environ.get("FERRY_COMPAT_TIMEOUT", "60"))
MODE = sys.argv[1] if len(sys.argv) > 1 else "rebalance"
TOPIC = f"compat-{CLIENT}-g{MODE[0]}-{uuid.uuid4().hex[:10]}"
START = time.monotonic()
DEBUG = os.environ.get("FERRY_COMPAT_DEBUG") == "1"


class Ops:
    def __init__(self, sc):
        self.sc = sc
        self.admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "client.id": "ferry-compat-confluent-admin"})
        self.errors_logged = 0

    def on_error(self, who, err):
        # Transport errors are expected while the broker is being restarted.
        self.errors_logged += 1
        if self.errors_logged <= 20:
            self.sc.log(f"{who} error callback: {err}")

    def create_topic(self):
        fs = self.admin.create_topics([NewTopic(TOPIC, num_partitions=cg.PARTITIONS, replication_factor=1)],
                                      operation_timeout=10, request_timeout=15)
        fs[TOPIC].result(timeout=20)
        self.sc.log(f"created topic {TOPIC} with {cg.PARTITIONS} partitions (CreateTopics)")

    def produce(self):
        sc = self.sc
        errors = []

        def on_delivery(err, msg):
            if err is not None:
                errors.append(f"key={msg.key()!r}: {err}")
            else:
                sc.delivered(int(msg.key()[1:]), msg.partition(), msg.offset())

        p = Producer({
            "bootstrap.servers": BOOTSTRAP,
            "client.id": "ferry-compat-confluent-producer",
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 20000,
            "error_cb": lambda e: self.on_error("producer", e),
        })
        for i in range(cg.N):
            while True:
                try:
                    p.produce(TOPIC, key=sc.key(i), value=sc.value(i), on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
        left = p.flush(max(sc.remaining() - 5, 1))
        if left or errors:
            sc.fail(f"produce: {left} undelivered, {len(errors)} errors, first: {errors[:3]}")

    def open_consumer(self, name):
        sc = self.sc

        def on_assign(c, parts):
            sc.log(f"{name}: assigned {sorted(tp.partition for tp in parts)}")

        def on_revoke(c, parts):
            sc.log(f"{name}: revoked {sorted(tp.partition for tp in parts)}")

        conf = {
            "bootstrap.servers": BOOTSTRAP,
            "client.id": f"ferry-compat-confluent-{name}",
            "group.id": sc.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": cg.SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": cg.HEARTBEAT_INTERVAL_MS,
            "max.poll.interval.ms": cg.MAX_POLL_INTERVAL_MS,
            "error_cb": lambda e: self.on_error(name, e),
        }
        if DEBUG:
            conf["debug"] = "cgrp,protocol,broker"
        c = Consumer(conf)
        c.subscribe([TOPIC], on_assign=on_assign, on_revoke=on_revoke)
        return ConsumerAdapter(c)

    def committed(self):
        req = ConsumerGroupTopicPartitions(self.sc.group, [TopicPartition(TOPIC, p) for p in range(cg.PARTITIONS)])
        res = self.admin.list_consumer_group_offsets([req], request_timeout=5)[self.sc.group].result(timeout=10)
        out = {}
        for tp in res.topic_partitions:
            if tp.error:
                raise KafkaException(tp.error)
            out[tp.partition] = tp.offset if tp.offset >= 0 else None
        return out

    def end_offsets(self):
        fs = self.admin.list_offsets({TopicPartition(TOPIC, p): OffsetSpec.latest() for p in range(cg.PARTITIONS)},
                                     request_timeout=10)
        out = [None] * cg.PARTITIONS
        for tp, f in fs.items():
            out[tp.partition] = f.result(timeout=15).offset
        return out


class ConsumerAdapter:
    def __init__(self, c):
        self.c = c

    def poll_batch(self, max_records, timeout):
        out = []
        for m in self.c.consume(num_messages=max_records, timeout=timeout):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            out.append((m.partition(), m.offset(), m.key(), m.value()))
        return out

    def commit(self, offsets):
        res = self.c.commit(offsets=[TopicPartition(TOPIC, p, off) for p, off in offsets.items()],
                            asynchronous=False)
        acked, errs = {}, []
        for tp in res or []:
            if tp.error:
                errs.append(f"{tp.partition}: {tp.error}")
            else:
                acked[tp.partition] = tp.offset
        return acked, ("; ".join(errs) or None)

    def close(self):
        self.c.close()


def main():
    sc = cg.Scenario(CLIENT, TOPIC, MODE, START + TIMEOUT, START)
    threading.Thread(target=sc.watchdog, args=(TIMEOUT,), daemon=True).start()
    sc.log(f"confluent-kafka {confluent_kafka.__version__} / librdkafka {confluent_kafka.libversion()[0]}, "
           f"bootstrap {BOOTSTRAP}, mode {MODE}, topic {TOPIC}")
    try:
        sc.run(Ops(sc))
    except KafkaException as e:
        sc.fail(f"KafkaException (phase {sc.phase}): {e}")
    print(f"OK [{CLIENT}] group {MODE}: {cg.N} records processed at least once, commits at log end, "
          f"in {time.monotonic() - START:.2f}s", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
