#!/usr/bin/env python3
"""python-abort: what read_committed and read_uncommitted consumers (confluent-kafka / librdkafka) see of
committed, aborted and open transactions.

One transactional Producer writes K records to each partition of a 3-partition topic (explicit
partitions) in four transactions:
  T1 committed, T2 aborted after a flush (its records are in the log), T3 left open after a flush, T4
  committed after T3 was aborted.
Checks:
  * every record was acknowledged, and the offsets are the expected layout: per partition
    T1, marker, T2, marker, T3, marker, T4, marker (one control batch per transaction and partition);
  * while T3 is open: a read_committed consumer's end offset (ListOffsets read_committed: the last stable
    offset) is T3's first offset, and reading up to it shows exactly T1's records; the high watermark of a
    read_uncommitted consumer is T3's end and it reads T1, T2, T3;
  * at the end: read_committed reads exactly T1 and T4 (no T2/T3 record), read_uncommitted reads exactly
    T1..T4; both with the acknowledged offsets, in order, keys and values intact, and nothing else (no
    control marker turned up as a record); each read's last offset + 1 is the high watermark minus the
    final marker;
  * the same after the runner SIGKILLs and restarts the broker (the aborted-transaction index is rebuilt
    from the log).

Env: FERRY_BOOTSTRAP, FERRY_CONTROL_DIR (set by run.sh), FERRY_EOS_TIMEOUT (s, default 90), FERRY_EOS_RUN_ID,
FERRY_EOS_ABORT_RECORDS (K, default 500).
Exit 0 when every check passed, 1 otherwise.
"""
import os
import time

from confluent_kafka import Producer

import eos_common as eos
from eos_common import log

PARTS = 3
TXNS = ("T1", "T2", "T3", "T4")
COMMITTED = ("T1", "T4")


class Abort:
    def __init__(self, k, timeout_s):
        self.k = k
        run = eos.run_id()
        self.topic = f"eos-pyabort-{run}"
        self.txn_id = f"eos-pyabort-txn-{run}"
        self.deadline = time.monotonic() + timeout_s
        self.errors = eos.ErrorLog()
        self.failures = []
        # (txn, partition) -> [(offset, key, value)] as acknowledged by the broker
        self.acked = {}
        self.delivery_errors = []

    def check(self, ok, what, bad=()):
        if ok:
            log("check ok: " + what)
        else:
            what += f": {list(bad)}"
            self.failures.append(what)
            log("CHECK FAILED: " + what)

    def produce_txn(self, p, txn):
        """Produces K records per partition in the open transaction and flushes them."""
        def on_delivery(err, msg):
            if err is not None:
                self.delivery_errors.append(f"{txn} {msg.key()!r}: {err}")
            else:
                self.acked.setdefault((txn, msg.partition()), []).append(
                    (msg.offset(), msg.key().decode(), msg.value().decode()))

        for part in range(PARTS):
            for j in range(self.k):
                eos.produce(p, self.topic, key=f"{txn}-k{part}-{j}", value=f"{txn}-v{part}-{j}", partition=part,
                            on_delivery=on_delivery)
        left = p.flush(30)
        if left or self.delivery_errors:
            raise RuntimeError(f"{txn}: {left} records not delivered by the flush; delivery errors "
                               f"{self.delivery_errors[:5]}")
        for part in range(PARTS):
            got = sorted(self.acked.get((txn, part), []))
            if len(got) != self.k:
                raise RuntimeError(f"{txn}: partition {part} has {len(got)} acknowledged records, want {self.k}")
            self.acked[(txn, part)] = got

    def run(self):
        eos.create_topic(self.topic, PARTS)
        p = Producer(dict(eos.common(), **{
            "client.id": "eos-pyabort-txn",
            "transactional.id": self.txn_id,
            "transaction.timeout.ms": 60000,
            "linger.ms": 5,
            "error_cb": eos.client_error_cb(self.errors, "producer"),
        }))
        p.init_transactions(30)
        log("transactional producer ready")

        p.begin_transaction()
        self.produce_txn(p, "T1")
        p.commit_transaction(30)
        log(f"T1: {self.k} records per partition committed")

        p.begin_transaction()
        self.produce_txn(p, "T2")
        p.abort_transaction(30)
        log(f"T2: {self.k} records per partition flushed (acknowledged), then aborted")

        p.begin_transaction()
        self.produce_txn(p, "T3")
        log(f"T3: {self.k} records per partition flushed (acknowledged), transaction left open")
        self.check_open_txn()
        p.abort_transaction(30)
        log("T3 aborted")

        p.begin_transaction()
        self.produce_txn(p, "T4")
        p.commit_transaction(30)
        log(f"T4: {self.k} records per partition committed")
        p.close()

        self.check_layout()
        self.check_reads("at the end")
        eos.request_kill("python-abort: all four transactions ended; re-reading after a restart")
        eos.await_kill_done(60)
        self.check_reads("after a broker SIGKILL and restart")
        return not self.failures

    def expected(self, txns, part):
        out = []
        for t in txns:
            out.extend(self.acked[(t, part)])
        return out

    def check_layout(self):
        """Per partition: T1, marker, T2, marker, T3, marker, T4 (and T4's marker after it)."""
        bad = []
        for part in range(PARTS):
            want = 0
            for t in TXNS:
                offs = [o for o, _, _ in self.acked[(t, part)]]
                if offs != list(range(want, want + self.k)):
                    bad.append(f"partition {part} {t}: offsets {offs[0]}..{offs[-1]} (want {want}..{want + self.k - 1}, "
                               f"contiguous)")
                want += self.k + 1  # the transaction's control batch (one marker record) follows its data
        self.check(not bad, "acknowledged offsets are T1, marker, T2, marker, T3, marker, T4 per partition", bad)

    def end_offsets(self, read_committed):
        """{partition: end offset} from ListOffsets with the given isolation level (read_committed: the last
        stable offset)."""
        return eos.end_offsets(self.topic, PARTS, read_committed, client_id="eos-pyabort-")

    def read(self, read_committed, end):
        """Reads every partition from the beginning to end[part]: {part: [(offset, key, value)]}; then for
        one more second, as nothing more may arrive past the end (e.g. records of an open transaction)."""
        got = {part: [] for part in range(PARTS)}

        def sink(m):
            got[m.partition()].append((m.offset(), (m.key() or b"").decode(), (m.value() or b"").decode()))

        eos.read_all(self.topic, PARTS, read_committed, 30, sink, end=end, drain=1.0,
                     client_id="eos-pyabort-read-")
        return got

    def compare(self, what, got, txns):
        bad = []
        for part in range(PARTS):
            want = self.expected(txns, part)
            if got[part] != want:
                extra = [r for r in got[part] if r not in want][:3]
                missing = [r for r in want if r not in got[part]][:3]
                bad.append(f"partition {part}: read {len(got[part])} records, want {len(want)} ({'+'.join(txns)}); "
                           f"unexpected e.g. {extra}, missing e.g. {missing}")
        n = sum(len(v) for v in got.values())
        self.check(not bad, f"{what}: {n} records = exactly {'+'.join(txns)} with their acknowledged offsets, "
                            f"in order", bad)

    def check_open_txn(self):
        rc = self.end_offsets(True)
        ru = self.end_offsets(False)
        lso_ok = all(rc[part] == self.acked[("T3", part)][0][0] for part in range(PARTS))
        self.check(lso_ok, f"T3 open: read_committed end offsets (last stable offset) {rc} "
                           f"= T3's first offsets {({p: self.acked[('T3', p)][0][0] for p in range(PARTS)})}")
        hw_ok = all(ru[part] == self.acked[("T3", part)][-1][0] + 1 for part in range(PARTS))
        self.check(hw_ok, f"T3 open: high watermarks {ru} = T3's last offsets + 1")
        got = self.read(True, rc)
        self.compare("T3 open, read_committed", got, ("T1",))
        got = self.read(False, ru)
        self.compare("T3 open, read_uncommitted", got, ("T1", "T2", "T3"))

    def check_reads(self, when):
        rc = self.end_offsets(True)
        ru = self.end_offsets(False)
        want_end = {part: self.acked[("T4", part)][-1][0] + 2 for part in range(PARTS)}  # T4's marker included
        self.check(rc == want_end and ru == want_end,
                   f"{when}: last stable offsets {rc} = high watermarks {ru} = after T4's marker {want_end}")
        got = self.read(True, want_end)
        self.compare(f"{when}, read_committed", got, COMMITTED)
        got = self.read(False, want_end)
        self.compare(f"{when}, read_uncommitted", got, TXNS)


def main():
    k = int(os.environ.get("FERRY_EOS_ABORT_RECORDS", "500"))
    t = Abort(k, eos.timeout_seconds(90))

    def run():
        ok = t.run()
        if not ok:
            log(f"{len(t.failures)} checks failed")
        return ok

    eos.main("python-abort", run)


if __name__ == "__main__":
    main()
