package dev.ferry.eos;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.OutOfOrderSequenceException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.TimeoutException;
import org.apache.kafka.common.errors.UnsupportedVersionException;

/**
 * java-ctp: consume-transform-produce with a transactional KafkaProducer and a read_committed KafkaConsumer
 * in a group, while the runner SIGKILLs and restarts the broker twice.
 *
 * <ol>
 *   <li>Produces N (default 100,000) keyed records "in-i" (key "k-i") to a 3-partition input topic with an
 *       idempotent producer (acks=all).
 *   <li>The application (one consumer in group G, one producer with a fixed transactional.id) loops: poll,
 *       begin, send "out-i" (key "o-i", so a transaction spans all output partitions) to the output topic per record, sendOffsetsToTransaction(offsets,
 *       consumer.groupMetadata()), commit. Every 25th transaction is aborted on purpose after also sending an
 *       "ABORTED-n" marker (flushed, so it reaches the log). On errors it follows the KafkaProducer javadoc:
 *       ProducerFenced/OutOfOrderSequence/Authorization/UnsupportedVersion (and a failing abort) mean a new
 *       producer (same transactional.id, initTransactions); other KafkaExceptions mean abortTransaction;
 *       a TimeoutException from commitTransaction is retried. After any abort the consumer is rewound to the
 *       group's committed offsets. Consumer errors recreate the consumer.
 *   <li>At 30% and 70% of the input committed it asks the runner to SIGKILL and restart the broker: the
 *       first time inside a transaction (records and offsets sent), waiting for the restart before
 *       commitTransaction; the second time right before commitTransaction, racing EndTxn and the markers.
 *   <li>Checks read_committed: every i has exactly one "out-i" (no duplicate, none missing), no
 *       "ABORTED-" marker is visible, and the group's committed offsets are the input end offsets;
 *       read_uncommitted must still show the aborted markers (so the aborts really wrote data).
 * </ol>
 * Env: FERRY_BOOTSTRAP, FERRY_CONTROL_DIR (set by run.sh), FERRY_EOS_TIMEOUT (s, default 240),
 * FERRY_EOS_CTP_RECORDS (default 100000), FERRY_EOS_CTP_KILLS (default 2; more kills alternate the two kinds,
 * evenly spaced), FERRY_EOS_RUN_ID.
 */
public final class Ctp {
    private static final int PARTS = 3;
    private static final int ABORT_EVERY = 25;
    /** Progress points of the broker kills: 30% and 70%, or FERRY_EOS_CTP_KILLS evenly spaced ones. */
    private static final double[] KILL_AT = killPoints();

    private static double[] killPoints() {
        int k = Integer.parseInt(System.getenv().getOrDefault("FERRY_EOS_CTP_KILLS", "2"));
        if (k == 2) return new double[] {0.30, 0.70};
        double[] r = new double[k];
        for (int j = 0; j < k; j++) r[j] = (j + 1.0) / (k + 1.0);
        return r;
    }

    private final int n;
    private final String run = Eos.runId();
    private final String input = "eos-ctp-in-" + run;
    private final String output = "eos-ctp-out-" + run;
    private final String group = "eos-ctp-" + run;
    private final String txnId = "eos-ctp-txn-" + run;
    private final long deadline;
    private final List<TopicPartition> inTps = Eos.partitions(input, PARTS);
    private final List<TopicPartition> outTps = Eos.partitions(output, PARTS);
    private final Map<TopicPartition, Long> inEnd = new HashMap<>();

    // application state
    private KafkaConsumer<String, String> consumer;
    private KafkaProducer<String, String> producer;
    private final Map<TopicPartition, Long> committed = new HashMap<>();
    private long txns, commits, purposeAborts, errorAborts, producers, consumers, commitRetries, rebalances;
    private final Map<String, Integer> errors = new TreeMap<>();

    /**
     * Where the next transaction asks for a broker kill. Kill #1: after the records and the offsets were
     * sent, the transaction waits until the broker was SIGKILLed and restarted, then commits (the open
     * transaction must survive the restart or fail cleanly). Kill #2: requested right before
     * commitTransaction, so the kill races with EndTxn and the markers.
     */
    private enum KillMode { NONE, SYNC_BEFORE_COMMIT, ASYNC_AT_COMMIT }

    private KillMode killMode = KillMode.NONE;
    /** Acknowledged commits the broker no longer has (found when rewinding to its committed offsets). */
    private final List<String> lostCommits = new ArrayList<>();
    private long lastCommittedTxn;
    private int killsRequested = 0;
    private boolean killPending = false;

    private Ctp(int n, int timeoutS) {
        this.n = n;
        this.deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutS);
    }

    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(System.getenv().getOrDefault("FERRY_EOS_CTP_RECORDS", "100000"));
        Ctp t = new Ctp(n, Eos.timeoutSeconds(240));
        boolean ok;
        try {
            ok = t.run();
        } catch (Throwable e) {
            Eos.log("FAILED with %s", Eos.chain(e));
            e.printStackTrace();
            ok = false;
        }
        Eos.log(ok ? "java-ctp: OK" : "java-ctp: FAILED");
        System.exit(ok ? 0 : 1);
    }

    private void checkDeadline(String what) {
        if (System.nanoTime() > deadline) throw new IllegalStateException("timed out " + what);
    }

    private boolean run() throws Exception {
        try (Admin admin = Eos.admin()) {
            Eos.createTopic(admin, input, PARTS, null);
            Eos.createTopic(admin, output, PARTS, null);
        }
        produceInput();
        transformAll();
        return verify();
    }

    // ------------------------------------------------------------ input

    private void produceInput() throws Exception {
        Properties p = Eos.producerProps("eos-ctp-input");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        AtomicLong acked = new AtomicLong();
        AtomicReference<Exception> failure = new AtomicReference<>();
        long t0 = System.nanoTime();
        try (KafkaProducer<String, String> prod = new KafkaProducer<>(p)) {
            for (int i = 0; i < n; i++) {
                prod.send(new ProducerRecord<>(input, "k-" + i, "in-" + i), (md, e) -> {
                    if (e != null) failure.compareAndSet(null, e);
                    else acked.incrementAndGet();
                });
            }
            prod.flush();
        }
        if (failure.get() != null) throw new IllegalStateException("producing the input failed", failure.get());
        Properties cp = Eos.consumerProps("eos-ctp-end", null, false);
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
            inEnd.putAll(c.endOffsets(inTps, Duration.ofSeconds(30)));
        }
        long total = inEnd.values().stream().mapToLong(Long::longValue).sum();
        Eos.log("produced %d input records (idempotent, acks=all) in %.1fs; end offsets %s", acked.get(),
                (System.nanoTime() - t0) / 1e9, new TreeMap<>(strKeys(inEnd)));
        if (acked.get() != n || total != n) throw new IllegalStateException("input has " + total + " records, want " + n);
    }

    // ------------------------------------------------------------ the application

    private void newProducer() throws InterruptedException {
        if (producer != null) {
            try {
                producer.close(Duration.ZERO);
            } catch (Exception e) {
                Eos.log("closing the old producer: %s", Eos.chain(e));
            }
            producer = null;
        }
        Properties p = Eos.producerProps("eos-ctp-txn");
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, "60000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "15000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        while (true) {
            checkDeadline("creating the transactional producer");
            KafkaProducer<String, String> prod = new KafkaProducer<>(p);
            try {
                long t0 = System.nanoTime();
                prod.initTransactions();
                producer = prod;
                producers++;
                Eos.log("transactional producer #%d ready (initTransactions %.0f ms)", producers, (System.nanoTime() - t0) / 1e6);
                return;
            } catch (TimeoutException e) {
                // initTransactions may be retried after a timeout (javadoc); a new instance does the same.
                note("initTransactions", e);
                prod.close(Duration.ZERO);
                Thread.sleep(200);
            } catch (KafkaException e) {
                note("initTransactions", e);
                prod.close(Duration.ZERO);
                Thread.sleep(200);
            }
        }
    }

    private void newConsumer() {
        if (consumer != null) {
            try {
                consumer.close(Duration.ZERO);
            } catch (Exception e) {
                Eos.log("closing the old consumer: %s", Eos.chain(e));
            }
        }
        Properties p = Eos.consumerProps("eos-ctp-app", group, true);
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "250");
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        p.put(ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG, "60000");
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "15000");
        consumer = new KafkaConsumer<>(p);
        consumers++;
        consumer.subscribe(List.of(input), new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                Eos.log("consumer: partitions revoked %s", parts);
            }

            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                rebalances++;
                Eos.log("consumer: partitions assigned %s (generation %d)", parts, consumer.groupMetadata().generationId());
                try {
                    Map<TopicPartition, OffsetAndMetadata> c = consumer.committed(new java.util.HashSet<>(parts), Duration.ofSeconds(15));
                    for (TopicPartition tp : parts) checkNotBehind(tp, c.get(tp), "after assignment");
                } catch (KafkaException e) {
                    note("committed() after assignment", e);
                }
            }

            @Override
            public void onPartitionsLost(Collection<TopicPartition> parts) {
                Eos.log("consumer: partitions lost %s", parts);
            }
        });
    }

    private void note(String where, Throwable e) {
        String k = where + ": " + e.getClass().getSimpleName();
        int c = errors.merge(k, 1, Integer::sum);
        if (c <= 3 || Integer.bitCount(c) == 1) Eos.log("%s failed (#%d of this kind): %s", where, c, Eos.chain(e));
    }

    /** Seeks the consumer back to the group's committed offsets (read_committed: require_stable). */
    private void rewind() throws InterruptedException {
        while (true) {
            checkDeadline("rewinding the consumer");
            var assignment = consumer.assignment();
            if (assignment.isEmpty()) return; // the next poll joins and starts from the committed offsets
            try {
                Map<TopicPartition, OffsetAndMetadata> c = consumer.committed(assignment, Duration.ofSeconds(15));
                for (TopicPartition tp : assignment) {
                    OffsetAndMetadata om = c.get(tp);
                    checkNotBehind(tp, om, "rewind");
                    if (om == null) {
                        consumer.seekToBeginning(List.of(tp));
                        committed.remove(tp);
                    } else {
                        consumer.seek(tp, om.offset());
                        committed.put(tp, om.offset());
                    }
                }
                return;
            } catch (KafkaException e) {
                note("committed() for the rewind", e);
                Thread.sleep(200);
            }
        }
    }

    /** A transaction whose commitTransaction returned normally carried offsets up to committed[tp]. */
    private void checkNotBehind(TopicPartition tp, OffsetAndMetadata om, String when) {
        long mine = committed.getOrDefault(tp, 0L);
        if ((om == null ? 0L : om.offset()) < mine) {
            lostCommits.add(String.format("%s (%s): the broker has committed offset %s, but commitTransaction succeeded with"
                    + " offset %d (last successful commit: transaction #%d)", tp, when, om == null ? "none" : om.offset(),
                    mine, lastCommittedTxn));
            Eos.log("CHECK FAILED: %s", lostCommits.get(lostCommits.size() - 1));
        }
    }

    private long progress() {
        long s = 0;
        for (long v : committed.values()) s += v;
        return s;
    }

    private void transformAll() throws Exception {
        long t0 = System.nanoTime();
        newConsumer();
        newProducer();
        long lastReport = 0;
        while (true) {
            checkDeadline("transforming (progress " + progress() + "/" + n + ")");
            if (killPending && Eos.killDone()) killPending = false;
            long prog = progress();
            if (!killPending && killMode == KillMode.NONE && killsRequested < KILL_AT.length && prog >= KILL_AT[killsRequested] * n) {
                // The next transaction asks for the kill at its point (see KillMode).
                killMode = killsRequested % 2 == 0 ? KillMode.SYNC_BEFORE_COMMIT : KillMode.ASYNC_AT_COMMIT;
            }
            if (prog >= n && killsRequested == KILL_AT.length && !killPending && allCommitted()) break;
            if (System.nanoTime() - lastReport > 2_000_000_000L) {
                lastReport = System.nanoTime();
                Eos.log("progress %d/%d committed; txns %d, commits %d, aborts on purpose %d, aborts on error %d",
                        prog, n, txns, commits, purposeAborts, errorAborts);
            }

            ConsumerRecords<String, String> recs;
            try {
                recs = consumer.poll(Duration.ofMillis(200));
            } catch (KafkaException e) {
                note("poll", e);
                newConsumer();
                continue;
            }
            if (recs.isEmpty()) continue;
            process(recs);
        }
        Eos.log("transform done in %.1fs: %d transactions, %d committed, %d aborted on purpose, %d aborted after errors,"
                + " %d producers, %d consumers, %d commit retries, %d assignments; errors %s",
                (System.nanoTime() - t0) / 1e9, txns, commits, purposeAborts, errorAborts, producers, consumers,
                commitRetries, rebalances, errors);
        consumer.close(Duration.ofSeconds(5));
        producer.close(Duration.ofSeconds(5));
    }

    /** At the end: the broker says the group's committed offsets are the input end offsets. */
    private boolean allCommitted() throws InterruptedException {
        for (TopicPartition tp : inTps) {
            if (committed.getOrDefault(tp, 0L) < inEnd.get(tp)) return false;
        }
        try {
            Map<TopicPartition, OffsetAndMetadata> c = consumer.committed(new java.util.HashSet<>(inTps), Duration.ofSeconds(15));
            for (TopicPartition tp : inTps) {
                OffsetAndMetadata om = c.get(tp);
                if (om == null || om.offset() != inEnd.get(tp)) {
                    Eos.log("locally all committed, but the broker has %s for %s (end %d): rewinding", om, tp, inEnd.get(tp));
                    rewind();
                    return false;
                }
            }
            return true;
        } catch (KafkaException e) {
            note("committed() at the end", e);
            return false;
        }
    }

    private void process(ConsumerRecords<String, String> recs) throws InterruptedException {
        txns++;
        boolean abortOnPurpose = txns % ABORT_EVERY == 0;
        Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
        String stage = "beginTransaction";
        try {
            producer.beginTransaction();
            stage = "send";
            for (ConsumerRecord<String, String> r : recs) {
                String v = r.value();
                if (v == null || !v.startsWith("in-")) throw new IllegalStateException("unexpected input " + r);
                // A new key: the output record of input partition p goes to any output partition, so that
                // every transaction spans several output partitions (markers to all of them).
                producer.send(new ProducerRecord<>(output, "o-" + v.substring(3), "out-" + v.substring(3)));
                offsets.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
            }
            if (abortOnPurpose) {
                producer.send(new ProducerRecord<>(output, "marker", "ABORTED-" + txns));
                stage = "flush before an abort on purpose";
                producer.flush();
                stage = "abortTransaction on purpose";
                producer.abortTransaction();
                purposeAborts++;
                rewind();
                return;
            }
            stage = "sendOffsetsToTransaction";
            producer.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
            if (killMode != KillMode.NONE) {
                KillMode mode = killMode;
                killMode = KillMode.NONE;
                killsRequested++;
                killPending = true;
                Eos.requestKill(String.format("java-ctp at %d/%d input records committed, %s, transaction #%d open with %d records",
                        progress(), n, mode, txns, recs.count()));
                if (mode == KillMode.SYNC_BEFORE_COMMIT) {
                    stage = "waiting for the broker restart";
                    Eos.awaitKillDone(Duration.ofSeconds(60));
                    killPending = false;
                }
            }
            stage = "commitTransaction";
            for (int attempt = 1; ; attempt++) {
                try {
                    producer.commitTransaction();
                    break;
                } catch (TimeoutException e) {
                    // The outcome is unknown; the javadoc says to retry commitTransaction.
                    if (attempt >= 3) throw e;
                    note("commitTransaction (attempt " + attempt + ", retrying)", e);
                    commitRetries++;
                }
            }
            commits++;
            lastCommittedTxn = txns;
            for (var e : offsets.entrySet()) committed.put(e.getKey(), e.getValue().offset());
        } catch (ProducerFencedException | OutOfOrderSequenceException | AuthorizationException
                | UnsupportedVersionException e) {
            // Not recoverable for this producer instance: a new one (same transactional.id) fences and
            // aborts whatever the old one left open.
            note(stage + " [fatal for the producer]", e);
            errorAborts++;
            newProducer();
            rewind();
        } catch (KafkaException e) {
            note(stage, e);
            errorAborts++;
            try {
                producer.abortTransaction();
            } catch (KafkaException e2) {
                note("abortTransaction after an error", e2);
                newProducer();
            }
            rewind();
        }
    }

    // ------------------------------------------------------------ verification

    private boolean verify() throws Exception {
        boolean ok = true;
        if (!lostCommits.isEmpty()) {
            ok = false;
            Eos.log("CHECK FAILED: %d times the group's committed offsets were behind a transaction that commitTransaction"
                    + " reported committed: %s", lostCommits.size(), lostCommits);
        } else {
            Eos.log("check ok: every rewind found the offsets of every acknowledged commit");
        }
        long t0 = System.nanoTime();
        int[] seen = new int[n];
        long[] counts = new long[4]; // out records, visible markers, unexpected, key mismatches
        List<String> samples = new ArrayList<>();
        Map<TopicPartition, Long> end = Eos.readAll(outTps, true, Duration.ofSeconds(60), r -> {
            String v = r.value();
            if (v != null && v.startsWith("out-")) {
                int i = Integer.parseInt(v.substring(4));
                seen[i]++;
                counts[0]++;
                if (!("o-" + i).equals(r.key())) counts[3]++;
                if (seen[i] == 2 && samples.size() < 10) samples.add("duplicate out-" + i + " at " + r.partition() + "@" + r.offset());
            } else if (v != null && v.startsWith("ABORTED-")) {
                counts[1]++;
                if (samples.size() < 10) samples.add("visible aborted marker " + v + " at " + r.partition() + "@" + r.offset());
            } else {
                counts[2]++;
                if (samples.size() < 10) samples.add("unexpected record " + r);
            }
        });
        long dups = 0, missing = 0;
        List<Integer> missingSample = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            if (seen[i] > 1) dups += seen[i] - 1;
            if (seen[i] == 0) {
                missing++;
                if (missingSample.size() < 10) missingSample.add(i);
            }
        }
        Eos.log("read_committed output (end offsets %s) in %.1fs: %d out records, %d duplicates, %d missing, %d visible"
                + " aborted markers, %d unexpected, %d key mismatches", new TreeMap<>(strKeys(end)),
                (System.nanoTime() - t0) / 1e9, counts[0], dups, missing, counts[1], counts[2], counts[3]);
        if (dups > 0 || missing > 0 || counts[1] > 0 || counts[2] > 0 || counts[3] > 0) {
            ok = false;
            Eos.log("CHECK FAILED: exactly one out-i per input i and no aborted data; samples %s; missing e.g. %s", samples, missingSample);
        } else {
            Eos.log("check ok: every input i has exactly one out-i, no aborted marker visible (read_committed)");
        }

        long[] ru = new long[2]; // out records, markers
        Eos.readAll(outTps, false, Duration.ofSeconds(60), r -> {
            String v = r.value();
            if (v != null && v.startsWith("ABORTED-")) ru[1]++;
            else ru[0]++;
        });
        Eos.log("read_uncommitted output: %d out records (committed + aborted), %d aborted markers", ru[0], ru[1]);
        if (purposeAborts > 0 && ru[1] == 0) {
            ok = false;
            Eos.log("CHECK FAILED: %d transactions were aborted on purpose after flushing a marker, but no marker is in the log", purposeAborts);
        }

        try (Admin admin = Eos.admin()) {
            Map<TopicPartition, OffsetAndMetadata> c = admin.listConsumerGroupOffsets(group,
                    new ListConsumerGroupOffsetsOptions().requireStable(true)).partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
            Map<String, Long> got = new TreeMap<>();
            for (TopicPartition tp : inTps) got.put(tp.toString(), c.get(tp) == null ? null : c.get(tp).offset());
            if (!got.equals(new TreeMap<>(strKeys(inEnd)))) {
                ok = false;
                Eos.log("CHECK FAILED: group %s committed offsets %s != input end offsets %s", group, got, strKeys(inEnd));
            } else {
                Eos.log("check ok: group committed offsets %s = input end offsets", got);
            }
        }
        return ok;
    }

    private static Map<String, Long> strKeys(Map<TopicPartition, Long> m) {
        Map<String, Long> r = new TreeMap<>();
        m.forEach((k, v) -> r.put(k.toString(), v));
        return r;
    }
}
