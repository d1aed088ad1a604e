#!/usr/bin/env python3
"""Ferry compatibility check: kafka-python with a wrong SASL password is
refused with an authentication error. kafka-python 3 does not raise it from
the constructor: it logs the broker's SaslAuthenticate error for the
connection and keeps trying to bootstrap until its timeout, so the check
looks for that log record (SaslAuthenticationFailedError), not a timeout
alone or a connection error.

Env: FERRY_BOOTSTRAP (a SASL listener), FERRY_CLIENT_PROPS (kafka-python's
own settings, with the right password: this check spoils it).
"""
import logging
import os
import sys
import threading
import time

import kafka.errors
from kafka import KafkaProducer

BOOTSTRAP = os.environ.get("FERRY_BOOTSTRAP", "127.0.0.1:9092")
TAG = "[kafka-python-sasl-refused]"


class Refusals(logging.Handler):
    """Keeps the client's log records that name an authentication failure."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.seen = []

    def emit(self, record):
        if record.levelno < logging.WARNING:
            return
        text = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, kafka.errors.SaslAuthenticationFailedError) or "SaslAuthenticationFailedError" in text:
            self.seen.append(text)


refusals = Refusals()
logging.getLogger("kafka").addHandler(refusals)
logging.getLogger("kafka").setLevel(logging.DEBUG)
conf = dict(kv.split("=", 1) for kv in os.environ.get("FERRY_CLIENT_PROPS", "").split())
conf["sasl_plain_password"] = conf.get("sasl_plain_password", "") + "-wrong"
started = time.monotonic()
outcome = []


def bootstrap():
    try:
        KafkaProducer(bootstrap_servers=BOOTSTRAP, **conf).close()
        outcome.append("the producer connected with a wrong password")
    except kafka.errors.SaslAuthenticationFailedError as e:
        refusals.seen.append(str(e))
    except kafka.errors.KafkaError as e:
        outcome.append(f"{type(e).__name__}: {e}")


# The client goes on trying to bootstrap after the refusal; the check ends
# at the first refusal it logs (or when the bootstrap gives up).
threading.Thread(target=bootstrap, daemon=True).start()
while not refusals.seen and not outcome and time.monotonic() - started < 60:
    time.sleep(0.1)
if not refusals.seen:
    print(f"{TAG} FAILED: no authentication error ({outcome or 'nothing within 60 s'})")
    sys.stdout.flush()
    os._exit(1)
print(f"{TAG} wrong password refused after {time.monotonic() - started:.1f}s: {refusals.seen[0]}")
print(f"{TAG} OK")
sys.stdout.flush()
os._exit(0)
