#!/usr/bin/env python3
"""Ferry compatibility check: confluent-kafka (librdkafka) with a wrong SASL
password is refused with an authentication error.

Env: FERRY_BOOTSTRAP (a SASL listener), FERRY_CLIENT_PROPS (the SASL and TLS
properties, with the right password: this check spoils it).
"""
import os
import time

from confluent_kafka import KafkaError, Producer

from compat_output import BOOTSTRAP, Output

OUT = Output("confluent-sasl-refused")
OUT.start_watchdog()
conf = dict(kv.split("=", 1) for kv in os.environ.get("FERRY_CLIENT_PROPS", "").split())
conf["sasl.password"] = conf.get("sasl.password", "") + "-wrong"
conf["bootstrap.servers"] = BOOTSTRAP
errors = []
conf["error_cb"] = errors.append
producer = Producer(conf)
deadline = time.monotonic() + 15
# error_cb is served by poll().
while time.monotonic() < deadline and not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
    producer.poll(0.5)
auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
if not auth:
    OUT.fail(f"no authentication error within 15 s; errors: {errors}")
OUT.log(f"wrong password refused: {auth[0].str()}")
OUT.log("OK")
