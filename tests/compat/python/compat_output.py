"""What every compat check program prints: progress lines with the time since
start, a FAIL line that ends the process at once, and a watchdog that fails
the check when it outlives FERRY_COMPAT_TIMEOUT."""
import os
import sys
import threading
import time

BOOTSTRAP = os.environ.get("FERRY_BOOTSTRAP", "127.0.0.1:9092")
TIMEOUT = float(os.environ.get("FERRY_COMPAT_TIMEOUT", "60"))


class Output:
    def __init__(self, client):
        self.client = client
        self.start = time.monotonic()

    def fail(self, msg):
        print(f"FAIL [{self.client}]: {msg}", file=sys.stderr, flush=True)
        os._exit(1)

    def log(self, msg):
        print(f"[{self.client} {time.monotonic() - self.start:6.2f}s] {msg}", flush=True)

    def start_watchdog(self):
        def watch():
            time.sleep(TIMEOUT + 5)
            self.fail(f"hard timeout after {TIMEOUT:.0f}s")

        threading.Thread(target=watch, daemon=True).start()
