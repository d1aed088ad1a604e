#!/usr/bin/env python3
"""python-ctp: consume-transform-produce with confluent-kafka (librdkafka): a transactional Producer and a
read_committed Consumer in a group, while the runner SIGKILLs and restarts the broker twice.

1. Produces N (default 100,000) keyed records "in-i" (key "k-i") to a 3-partition input topic with an
   idempotent producer (acks=all).
2. The application (one Consumer in group G, one Producer with a fixed transactional.id) loops:
   consume(up to 250), begin_transaction, produce "out-i" (key "o-i", so that a transaction spans all
   output partitions) per input record, send_offsets_to_transaction(offsets,
   consumer.consumer_group_metadata()), commit_transaction. Every 25th transaction is aborted on purpose
   after also producing an "ABORTED-n" marker (flushed, so that it reaches the log). Errors are handled as
   confluent-kafka's docs prescribe: KafkaError.retriable() -> the call is retried;
   txn_requires_abort() -> abort_transaction() and rewind the consumer to the group's committed offsets;
   anything else is fatal for the producer -> a new Producer (same transactional.id, init_transactions(),
   which fences the old one and aborts what it left open), then rewind. A failing abort_transaction is
   retried while retriable, else the producer is recreated. Fatal consumer errors recreate the consumer.
3. At 30% and 70% of the input committed it asks the runner to SIGKILL and restart the broker: the first
   time inside a transaction (records produced, offsets sent), waiting for the restart before
   commit_transaction; the second time right before commit_transaction, racing EndTxn and the markers.
4. Checks read_committed: every i has exactly one "out-i" (no duplicate, none missing), no "ABORTED-"
   marker and nothing else is visible, keys match; every rewind found the group's committed offsets at or
   past those of every acknowledged commit; the group's committed offsets (require_stable) are the input
   end offsets; read_uncommitted still shows the aborted markers (so the aborts really wrote data).

Env: FERRY_BOOTSTRAP, FERRY_CONTROL_DIR (set by run.sh), FERRY_EOS_TIMEOUT (s, default 240),
FERRY_EOS_CTP_RECORDS (default 100000), FERRY_EOS_CTP_KILLS (default 2; more kills alternate the two
kinds, evenly spaced), FERRY_EOS_RUN_ID, FERRY_EOS_DEBUG (librdkafka debug contexts, e.g. eos,cgrp).
Exit 0 when every check passed, 1 otherwise.
"""
import os
import time

from confluent_kafka import (OFFSET_BEGINNING, Consumer, ConsumerGroupTopicPartitions, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient

import eos_common as eos
from eos_common import kafka_error, log

PARTS = 3
ABORT_EVERY = 25
BATCH = 250
DEBUG = os.environ.get("FERRY_EOS_DEBUG", "")
# Client defaults unless asked: FERRY_EOS_PY_RECOVERY=none sets metadata.recovery.strategy=none.
RECOVERY = os.environ.get("FERRY_EOS_PY_RECOVERY", "")


def kill_points():
    k = int(os.environ.get("FERRY_EOS_CTP_KILLS", "2"))
    if k == 2:
        return [0.30, 0.70]
    return [(j + 1.0) / (k + 1.0) for j in range(k)]


class Ctp:
    def __init__(self, n, timeout_s):
        self.n = n
        run = eos.run_id()
        self.input = f"eos-pyctp-in-{run}"
        self.output = f"eos-pyctp-out-{run}"
        self.group = f"eos-pyctp-{run}"
        self.txn_id = f"eos-pyctp-txn-{run}"
        self.deadline = time.monotonic() + timeout_s
        self.kill_at = kill_points()
        self.in_end = {}
        self.errors = eos.ErrorLog()
        self.consumer = None
        self.producer = None
        self.committed = {}  # input partition -> offset carried by the last acknowledged commit
        self.txns = self.commits = self.purpose_aborts = self.error_aborts = 0
        self.producers = self.consumers = self.commit_retries = self.assignments = self.retries = 0
        self.kill_mode = None  # None, "SYNC_BEFORE_COMMIT", "ASYNC_AT_COMMIT"
        self.kills_requested = 0
        self.kill_pending = False
        self.lost_commits = []
        self.last_committed_txn = 0
        self.to_check = []  # partitions assigned since the last check against the broker's committed offsets

    def check_deadline(self, what):
        if time.monotonic() > self.deadline:
            raise RuntimeError("timed out " + what)

    def run(self):
        eos.create_topic(self.input, PARTS)
        eos.create_topic(self.output, PARTS)
        self.produce_input()
        self.transform_all()
        return self.verify()

    # ------------------------------------------------------------ input

    def produce_input(self):
        t0 = time.monotonic()
        failures = []
        acked = [0]

        def on_delivery(err, msg):
            if err is not None:
                failures.append(f"{msg.key()!r}: {err}")
            else:
                acked[0] += 1

        p = Producer(dict(eos.common(), **{
            "client.id": "eos-pyctp-input",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "error_cb": eos.client_error_cb(self.errors, "input producer"),
        }))
        for i in range(self.n):
            eos.produce(p, self.input, key=f"k-{i}", value=f"in-{i}", on_delivery=on_delivery)
            if i % 1000 == 0:
                p.poll(0)
        left = p.flush(60)
        if failures or left:
            raise RuntimeError(f"producing the input failed: {len(failures)} failures (e.g. {failures[:3]}), "
                               f"{left} not delivered")
        self.in_end = eos.end_offsets(self.input, PARTS, client_id="eos-pyctp-end-")
        total = sum(self.in_end.values())
        log(f"produced {acked[0]} input records (idempotent, acks=all) in {time.monotonic() - t0:.1f}s; "
            f"end offsets {self.in_end}")
        if acked[0] != self.n or total != self.n:
            raise RuntimeError(f"input has {total} records ({acked[0]} acknowledged), want {self.n}")

    # ------------------------------------------------------------ the application

    def new_producer(self):
        if self.producer is not None:
            try:
                self.producer.purge()
                self.producer.close()
            except Exception as e:  # noqa: BLE001 - closing a broken producer may fail any way
                log(f"closing the old producer: {e!r}")
            self.producer = None
        conf = dict(eos.common(), **{
            "client.id": "eos-pyctp-txn",
            "transactional.id": self.txn_id,
            "transaction.timeout.ms": 60000,
            "message.timeout.ms": 30000,
            "linger.ms": 5,
            "error_cb": eos.client_error_cb(self.errors, "producer"),
        })
        # With the default (rebootstrap), librdkafka >= 2.10 re-bootstraps when its only broker restarts
        # and can keep the decommissioned handle cached as the group coordinator, so that
        # send_offsets_to_transaction() waits for a connection state change (librdkafka issues #5511,
        # #5456). The broker closes a connection left idle after AddOffsetsToTxn within seconds, which
        # is that change; this test runs with the client's defaults to prove it.
        if RECOVERY:
            conf["metadata.recovery.strategy"] = RECOVERY
        if DEBUG:
            conf["debug"] = DEBUG
        while True:
            self.check_deadline("creating the transactional producer")
            p = Producer(conf)
            t0 = time.monotonic()
            try:
                # init_transactions: retriable errors may be retried, anything else is fatal (docs).
                while True:
                    try:
                        p.init_transactions(15)
                        break
                    except KafkaException as e:
                        ke = kafka_error(e)
                        if ke is None or not ke.retriable():
                            raise
                        self.errors.note("init_transactions (retriable, retrying)", e)
                        self.check_deadline("init_transactions")
                        time.sleep(0.2)
                self.producer = p
                self.producers += 1
                log(f"transactional producer #{self.producers} ready "
                    f"(init_transactions {(time.monotonic() - t0) * 1000:.0f} ms)")
                return
            except KafkaException as e:
                self.errors.note("init_transactions [fatal: new producer]", e)
                try:
                    p.close()
                except Exception:  # noqa: BLE001
                    pass
                time.sleep(0.2)

    def new_consumer(self):
        if self.consumer is not None:
            try:
                self.consumer.close()
            except Exception as e:  # noqa: BLE001
                log(f"closing the old consumer: {e!r}")
            self.consumer = None
        conf = dict(eos.common(), **{
            "client.id": "eos-pyctp-app",
            "group.id": self.group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "max.poll.interval.ms": 60000,
            "error_cb": eos.client_error_cb(self.errors, "consumer"),
        })
        if DEBUG:
            conf["debug"] = DEBUG
        self.consumer = Consumer(conf)
        self.consumers += 1

        def on_assign(c, parts):
            self.assignments += 1
            log(f"consumer: partitions assigned {sorted(tp.partition for tp in parts)}")
            self.to_check.extend(tp.partition for tp in parts)

        def on_revoke(c, parts):
            log(f"consumer: partitions revoked {sorted(tp.partition for tp in parts)}")

        def on_lost(c, parts):
            log(f"consumer: partitions lost {sorted(tp.partition for tp in parts)}")

        self.consumer.subscribe([self.input], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)

    def broker_committed(self, partitions):
        """The group's committed offsets from the broker (librdkafka asks for stable offsets with
        read_committed): {partition: offset or None}. Raises KafkaException."""
        res = self.consumer.committed([TopicPartition(self.input, p) for p in partitions], timeout=15)
        out = {}
        for tp in res:
            if tp.error is not None:
                raise KafkaException(tp.error)
            out[tp.partition] = tp.offset if tp.offset >= 0 else None
        return out

    def check_not_behind(self, part, offset, when):
        """A transaction whose commit_transaction returned normally carried offsets up to committed[part]."""
        mine = self.committed.get(part, 0)
        if (offset or 0) < mine:
            self.lost_commits.append(
                f"{self.input}-{part} ({when}): the broker has committed offset {offset}, but commit_transaction "
                f"succeeded with offset {mine} (last successful commit: transaction #{self.last_committed_txn})")
            log("CHECK FAILED: " + self.lost_commits[-1])

    def rewind(self):
        """Seeks the consumer back to the group's committed offsets."""
        while True:
            self.check_deadline("rewinding the consumer")
            assignment = self.consumer.assignment()
            if not assignment:
                return  # the next consume joins and starts from the committed offsets
            parts = sorted(tp.partition for tp in assignment)
            try:
                got = self.broker_committed(parts)
            except KafkaException as e:
                self.errors.note("committed() for the rewind", e)
                time.sleep(0.2)
                continue
            for part in parts:
                off = got.get(part)
                self.check_not_behind(part, off, "rewind")
                if off is None:
                    self.committed.pop(part, None)
                else:
                    self.committed[part] = off
            try:
                for part in parts:
                    off = got.get(part)
                    self.consumer.seek(TopicPartition(self.input, part, OFFSET_BEGINNING if off is None else off))
            except KafkaException as e:
                # seek() needs an actively fetched partition; a new consumer starts from the committed offsets.
                self.errors.note("seek for the rewind [new consumer]", e)
                self.new_consumer()
            return

    def progress(self):
        return sum(self.committed.values())

    def transform_all(self):
        t0 = time.monotonic()
        self.new_consumer()
        self.new_producer()
        last_report = 0.0
        while True:
            self.check_deadline(f"transforming (progress {self.progress()}/{self.n})")
            if self.kill_pending and eos.kill_done():
                self.kill_pending = False
            prog = self.progress()
            if (not self.kill_pending and self.kill_mode is None and self.kills_requested < len(self.kill_at)
                    and prog >= self.kill_at[self.kills_requested] * self.n):
                # The next transaction asks for the kill at its point.
                self.kill_mode = "SYNC_BEFORE_COMMIT" if self.kills_requested % 2 == 0 else "ASYNC_AT_COMMIT"
            if (prog >= self.n and self.kills_requested == len(self.kill_at) and not self.kill_pending
                    and self.all_committed()):
                break
            if time.monotonic() - last_report > 2.0:
                last_report = time.monotonic()
                log(f"progress {prog}/{self.n} committed; txns {self.txns}, commits {self.commits}, aborts on "
                    f"purpose {self.purpose_aborts}, aborts on error {self.error_aborts}")
            if self.to_check:
                self.check_assigned()
            try:
                msgs = self.consumer.consume(num_messages=BATCH, timeout=0.2)
            except KafkaException as e:
                self.errors.note("consume [new consumer]", e)
                self.new_consumer()
                continue
            recs = []
            fatal = False
            for m in msgs:
                err = m.error()
                if err is None:
                    recs.append(m)
                elif err.fatal():
                    self.errors.note("consume [fatal: new consumer]", err)
                    fatal = True
                    break
                else:
                    self.errors.note("consume", err)
            if fatal:
                self.new_consumer()
                continue
            if recs:
                self.process(recs)
        log(f"transform done in {time.monotonic() - t0:.1f}s: {self.txns} transactions, {self.commits} committed, "
            f"{self.purpose_aborts} aborted on purpose, {self.error_aborts} aborted after errors, {self.producers} "
            f"producers, {self.consumers} consumers, {self.commit_retries} commit retries, {self.retries} other "
            f"retries, {self.assignments} assignments; errors {self.errors.summary()}")
        self.consumer.close()
        self.producer.close()

    def check_assigned(self):
        parts = sorted(set(self.to_check))
        try:
            got = self.broker_committed(parts)
        except KafkaException as e:
            self.errors.note("committed() after assignment", e)
            self.to_check = []
            return
        self.to_check = []
        for part in parts:
            self.check_not_behind(part, got.get(part), "after assignment")

    def all_committed(self):
        """At the end: the broker says the group's committed offsets are the input end offsets."""
        if any(self.committed.get(p, 0) < self.in_end[p] for p in range(PARTS)):
            return False
        try:
            got = self.broker_committed(range(PARTS))
        except KafkaException as e:
            self.errors.note("committed() at the end", e)
            return False
        for p in range(PARTS):
            if got.get(p) != self.in_end[p]:
                log(f"locally all committed, but the broker has {got.get(p)} for partition {p} "
                    f"(end {self.in_end[p]}): rewinding")
                self.rewind()
                return False
        return True

    def retrying(self, stage, op):
        """Runs op(), retrying while it fails with a retriable error (the docs: "the operation may be
        retried"), at most 10 times; other errors (and the 10th retriable one) propagate."""
        for attempt in range(1, 11):
            try:
                return op()
            except KafkaException as e:
                ke = kafka_error(e)
                if ke is None or not ke.retriable() or ke.txn_requires_abort() or ke.fatal() or attempt == 10:
                    raise
                self.errors.note(f"{stage} (attempt {attempt}, retriable: retrying)", e)
                if stage == "commit_transaction":
                    self.commit_retries += 1
                else:
                    self.retries += 1
                self.check_deadline(stage)
                time.sleep(0.1)

    def produce(self, key, value):
        eos.produce(self.producer, self.output, key=key, value=value)

    def process(self, recs):
        self.txns += 1
        abort_on_purpose = self.txns % ABORT_EVERY == 0
        offsets = {}
        stage = "begin_transaction"
        p = self.producer
        try:
            self.retrying(stage, p.begin_transaction)
            stage = "produce"
            for m in recs:
                v = m.value().decode() if m.value() is not None else None
                if v is None or not v.startswith("in-"):
                    raise RuntimeError(f"unexpected input {m.topic()}-{m.partition()}@{m.offset()}: {v!r}")
                i = v[3:]
                # A new key: the output of input partition p goes to any output partition, so that every
                # transaction spans several output partitions (markers to all of them).
                self.produce(f"o-{i}", f"out-{i}")
                offsets[m.partition()] = m.offset() + 1
            p.poll(0)
            if abort_on_purpose:
                self.produce("marker", f"ABORTED-{self.txns}")
                stage = "flush before an abort on purpose"
                left = p.flush(30)
                if left:
                    log(f"{left} messages not delivered by the flush before abort on purpose #{self.txns}")
                stage = "abort_transaction on purpose"
                self.retrying(stage, p.abort_transaction)
                self.purpose_aborts += 1
                self.rewind()
                return
            stage = "send_offsets_to_transaction"
            tps = [TopicPartition(self.input, part, off) for part, off in sorted(offsets.items())]
            self.retrying(stage, lambda: p.send_offsets_to_transaction(tps, self.consumer.consumer_group_metadata()))
            if self.kill_mode is not None:
                mode = self.kill_mode
                self.kill_mode = None
                self.kills_requested += 1
                self.kill_pending = True
                eos.request_kill(f"python-ctp at {self.progress()}/{self.n} input records committed, {mode}, "
                                 f"transaction #{self.txns} open with {len(recs)} records")
                if mode == "SYNC_BEFORE_COMMIT":
                    stage = "waiting for the broker restart"
                    eos.await_kill_done(60)
                    self.kill_pending = False
            stage = "commit_transaction"
            # No timeout: librdkafka then uses the remaining transaction time, its recommended use.
            self.retrying(stage, p.commit_transaction)
            self.commits += 1
            self.last_committed_txn = self.txns
            self.committed.update(offsets)
        except KafkaException as e:
            ke = kafka_error(e)
            self.error_aborts += 1
            if ke is not None and ke.txn_requires_abort():
                self.errors.note(stage + " [abortable: abort_transaction, rewind]", e)
                self.abort_after_error()
            elif ke is not None and (ke.fatal() or stage != "produce"):
                # "Treat any other error as a fatal error": this producer instance is done. A new one with
                # the same transactional.id fences it and aborts whatever it left open.
                self.errors.note(stage + " [fatal: new producer, rewind]", e)
                self.new_producer()
            else:
                # produce() refused the message (e.g. the transaction is already in an abortable state).
                self.errors.note(stage + " [abort_transaction, rewind]", e)
                self.abort_after_error()
            self.rewind()

    def abort_after_error(self):
        try:
            self.retrying("abort_transaction after an error", self.producer.abort_transaction)
        except KafkaException as e:
            self.errors.note("abort_transaction after an error [new producer]", e)
            self.new_producer()

    # ------------------------------------------------------------ verification

    def verify(self):
        ok = True
        if self.lost_commits:
            ok = False
            log(f"CHECK FAILED: {len(self.lost_commits)} times the group's committed offsets were behind a "
                f"transaction that commit_transaction reported committed: {self.lost_commits}")
        else:
            log("check ok: every rewind and assignment found the offsets of every acknowledged commit")

        t0 = time.monotonic()
        seen = bytearray(self.n)  # counts, saturating at 255
        counts = {"out": 0, "markers": 0, "unexpected": 0, "key mismatches": 0}
        samples = []

        def sink(m):
            v = m.value().decode() if m.value() is not None else None
            if v is not None and v.startswith("out-") and v[4:].isdigit() and int(v[4:]) < self.n:
                i = int(v[4:])
                if seen[i] < 255:
                    seen[i] += 1
                counts["out"] += 1
                if (m.key() or b"").decode() != f"o-{i}":
                    counts["key mismatches"] += 1
                if seen[i] == 2 and len(samples) < 10:
                    samples.append(f"duplicate out-{i} at {m.partition()}@{m.offset()}")
            elif v is not None and v.startswith("ABORTED-"):
                counts["markers"] += 1
                if len(samples) < 10:
                    samples.append(f"visible aborted marker {v} at {m.partition()}@{m.offset()}")
            else:
                counts["unexpected"] += 1
                if len(samples) < 10:
                    samples.append(f"unexpected record at {m.partition()}@{m.offset()}: key {m.key()!r} value {v!r}")

        end = eos.read_all(self.output, PARTS, True, 60, sink)
        dups = sum(c - 1 for c in seen if c > 1)
        missing_sample = [i for i in range(self.n) if seen[i] == 0]
        missing = len(missing_sample)
        log(f"read_committed output (end offsets {end}) in {time.monotonic() - t0:.1f}s: {counts['out']} out records, "
            f"{dups} duplicates, {missing} missing, {counts['markers']} visible aborted markers, "
            f"{counts['unexpected']} unexpected, {counts['key mismatches']} key mismatches")
        if dups or missing or counts["markers"] or counts["unexpected"] or counts["key mismatches"]:
            ok = False
            log(f"CHECK FAILED: exactly one out-i per input i and no aborted data; samples {samples}; "
                f"missing e.g. {missing_sample[:10]}")
        else:
            log("check ok: every input i has exactly one out-i, no aborted marker visible (read_committed)")

        ru = {"out": 0, "markers": 0}

        def sink_ru(m):
            v = m.value() or b""
            if v.startswith(b"ABORTED-"):
                ru["markers"] += 1
            else:
                ru["out"] += 1

        eos.read_all(self.output, PARTS, False, 60, sink_ru)
        log(f"read_uncommitted output: {ru['out']} out records (committed + aborted), {ru['markers']} aborted markers")
        if self.purpose_aborts > 0 and ru["markers"] == 0:
            ok = False
            log(f"CHECK FAILED: {self.purpose_aborts} transactions were aborted on purpose after flushing a "
                f"marker, but no marker is in the log")

        admin = AdminClient(dict(eos.common(), **{"client.id": "eos-pyctp-admin"}))
        fs = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(self.group, [TopicPartition(self.input, p) for p in range(PARTS)])],
            require_stable=True, request_timeout=30)
        res = fs[self.group].result(timeout=40)
        got = {tp.partition: (tp.offset if tp.error is None else str(tp.error)) for tp in res.topic_partitions}
        if got != self.in_end:
            ok = False
            log(f"CHECK FAILED: group {self.group} committed offsets {got} != input end offsets {self.in_end}")
        else:
            log(f"check ok: group committed offsets {got} = input end offsets")
        return ok


def main():
    n = int(os.environ.get("FERRY_EOS_CTP_RECORDS", "100000"))
    t = Ctp(n, eos.timeout_seconds(240))
    eos.main("python-ctp", t.run)


if __name__ == "__main__":
    main()
