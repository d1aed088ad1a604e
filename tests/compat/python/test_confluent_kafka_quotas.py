#!/usr/bin/env python3
"""Ferry compatibility check: client quotas seen by confluent-kafka
(librdkafka), with client defaults. The runner sets the quotas first with
Kafka's kafka-configs.sh (confluent-kafka has no client-quota admin API):
producer_byte_rate=100000 on client id compat-quota-py-producer and
consumer_byte_rate=100000 on compat-quota-py-consumer.

1. The producer sends 2 MB (200 records of 10,000 bytes): Kafka lets a
   first burst spread over the window's 10 s, so about 2 MB / 100,000 B/s
   - 10 s = 10 s to acknowledge everything, and librdkafka's throttle_cb
   reports the broker's throttle_time_ms.
2. The consumer reads the 2 MB back: a fetch that goes over the quota is
   answered empty with a throttle time, so reading takes several seconds,
   throttle_cb fires, and every record arrives, in order.

Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60).
Exit 0 on success, 1 with a message on failure.
"""
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from compat_output import BOOTSTRAP, Output

OUT = Output("confluent-kafka-quotas")
QUOTA = 100_000
RECORDS = 200
SIZE = 10_000


def main():
    OUT.start_watchdog()
    topic = f"compat-quotas-py-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)

    throttles = []
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "client.id": "compat-quota-py-producer",
                         "throttle_cb": lambda e: throttles.append(e.throttle_time)})
    failures = []
    started = time.monotonic()
    for i in range(RECORDS):
        while True:
            try:
                producer.produce(topic, value=bytes([i % 256]) * SIZE,
                                 on_delivery=lambda err, msg: err and failures.append(err))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(50) != 0 or failures:
        OUT.fail(f"not every record was acknowledged: {failures[:3]}")
    producer.poll(0)
    took = time.monotonic() - started
    total = RECORDS * SIZE
    OUT.log(f"producer: {total} bytes in {took:.1f} s ({total / took:.0f} B/s, quota {QUOTA}); "
            f"throttle_cb {len(throttles)} times, largest {max(throttles, default=0):.3f} s")
    if took < 0.5 * (total / QUOTA - 10):
        OUT.fail("the producer was not slowed to its quota")
    if not any(t > 0 for t in throttles):
        OUT.fail("throttle_cb never reported a throttle time from the producer")

    throttles.clear()
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "client.id": "compat-quota-py-consumer",
                         "group.id": f"compat-quotas-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
                         "throttle_cb": lambda e: throttles.append(e.throttle_time)})
    consumer.subscribe([topic])
    started = time.monotonic()
    got = 0
    while got < RECORDS and time.monotonic() - started < 45:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            OUT.fail(f"consumer error: {msg.error()}")
        if msg.offset() != got or msg.value() != bytes([got % 256]) * SIZE:
            OUT.fail(f"record {got}: offset {msg.offset()} or its value is wrong")
        got += 1
    took = time.monotonic() - started
    consumer.close()
    OUT.log(f"consumer: {got} records in {took:.1f} s; throttle_cb {len(throttles)} times, largest {max(throttles, default=0):.3f} s")
    if got != RECORDS:
        OUT.fail(f"read {got} of {RECORDS} records")
    if not any(t > 0 for t in throttles):
        OUT.fail("throttle_cb never reported a throttle time from the consumer")
    OUT.log("OK")


if __name__ == "__main__":
    main()
