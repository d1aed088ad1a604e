package dev.ferry.eos;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;

/**
 * java-fencing: two KafkaProducers with the same transactional.id. The first begins a transaction and
 * sends 10 records (acknowledged); the second calls initTransactions, which must fence the first and abort
 * its open transaction. Three variants of what the fenced producer does next:
 * <ul>
 *   <li>send-same: sends again to the partition already in its transaction (Produce with the old epoch),
 *       then commits;
 *   <li>send-new: sends to a partition not yet in its transaction (AddPartitionsToTxn with the old epoch),
 *       then commits;
 *   <li>commit: commits at once (EndTxn with the old epoch).
 * </ul>
 * Each must fail with ProducerFencedException or InvalidProducerEpochException (possibly as the cause of a
 * KafkaException for the commit), never commit. Then the second producer commits a transaction of its own;
 * read_committed must show exactly the second producer's records and none of the first's, while
 * read_uncommitted shows the first's too (they were written, then aborted).
 * Env: FERRY_BOOTSTRAP, FERRY_EOS_RUN_ID.
 */
public final class Fencing {
    private static final int PARTS = 2;
    private static final String[] VARIANTS = {"send-same", "send-new", "commit"};

    public static void main(String[] args) throws Exception {
        boolean ok = true;
        String run = Eos.runId();
        String topic = "eos-fencing-" + run;
        try (Admin admin = Eos.admin()) {
            Eos.createTopic(admin, topic, PARTS, null);
        }
        List<String> results = new ArrayList<>();
        for (String v : VARIANTS) {
            boolean r;
            try {
                r = variant(topic, v, run);
            } catch (Throwable e) {
                Eos.log("%s: FAILED with %s", v, Eos.chain(e));
                e.printStackTrace();
                r = false;
            }
            results.add(v + "=" + (r ? "ok" : "FAILED"));
            ok &= r;
        }
        try {
            ok &= verify(topic);
        } catch (Throwable e) {
            Eos.log("verification FAILED with %s", Eos.chain(e));
            e.printStackTrace();
            ok = false;
        }
        Eos.log("variants: %s", results);
        Eos.log(ok ? "java-fencing: OK" : "java-fencing: FAILED");
        System.exit(ok ? 0 : 1);
    }

    private static KafkaProducer<String, String> producer(String txnId, String clientId) {
        Properties p = Eos.producerProps(clientId);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "20000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "20000");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        return new KafkaProducer<>(p);
    }

    private static boolean fencedError(Throwable t) {
        return Eos.causedBy(t, ProducerFencedException.class, InvalidProducerEpochException.class);
    }

    private static boolean variant(String topic, String v, String run) throws Exception {
        String txnId = "eos-fencing-" + v + "-" + run;
        boolean ok = true;
        KafkaProducer<String, String> p1 = producer(txnId, "p1-" + v);
        KafkaProducer<String, String> p2 = producer(txnId, "p2-" + v);
        try {
            p1.initTransactions();
            p1.beginTransaction();
            for (int i = 0; i < 10; i++) {
                p1.send(new ProducerRecord<>(topic, 0, "p1", "p1-" + v + "-" + i)).get(20, TimeUnit.SECONDS);
            }
            Eos.log("%s: p1 began a transaction and sent 10 records (acknowledged) to %s-0", v, topic);

            long t0 = System.nanoTime();
            p2.initTransactions();
            Eos.log("%s: p2 initTransactions with the same transactional.id done in %.0f ms", v, (System.nanoTime() - t0) / 1e6);
            describe(txnId, v);

            Throwable sendErr = null;
            if (!v.equals("commit")) {
                int part = v.equals("send-same") ? 0 : 1;
                Future<RecordMetadata> f = null;
                try {
                    f = p1.send(new ProducerRecord<>(topic, part, "p1", "p1-" + v + "-after-fence"));
                    RecordMetadata md = f.get(30, TimeUnit.SECONDS);
                    Eos.log("%s: CHECK FAILED: the fenced p1's send to partition %d succeeded at offset %d", v, part, md.offset());
                    ok = false;
                } catch (ExecutionException e) {
                    sendErr = e.getCause();
                } catch (Exception e) {
                    sendErr = e;
                }
                if (sendErr != null) {
                    Eos.log("%s: fenced p1's send to partition %d failed: %s", v, part, Eos.chain(sendErr));
                    if (!fencedError(sendErr)) {
                        Eos.log("%s: CHECK FAILED: want ProducerFencedException or InvalidProducerEpochException", v);
                        ok = false;
                    }
                }
            }
            try {
                p1.commitTransaction();
                Eos.log("%s: CHECK FAILED: the fenced p1's commitTransaction succeeded", v);
                ok = false;
            } catch (Exception e) {
                Eos.log("%s: fenced p1's commitTransaction failed: %s", v, Eos.chain(e));
                if (!fencedError(e) && !(sendErr != null && fencedError(sendErr))) {
                    Eos.log("%s: CHECK FAILED: want ProducerFencedException or InvalidProducerEpochException", v);
                    ok = false;
                }
            }

            p2.beginTransaction();
            for (int i = 0; i < 5; i++) {
                p2.send(new ProducerRecord<>(topic, i % PARTS, "p2", "p2-" + v + "-" + i));
            }
            p2.commitTransaction();
            Eos.log("%s: p2 committed a transaction of 5 records", v);
        } finally {
            p1.close(Duration.ofSeconds(1));
            p2.close(Duration.ofSeconds(5));
        }
        return ok;
    }

    private static void describe(String txnId, String v) {
        try (Admin admin = Eos.admin()) {
            TransactionDescription d = admin.describeTransactions(List.of(txnId)).description(txnId).get(10, TimeUnit.SECONDS);
            Eos.log("%s: DescribeTransactions after p2's init: state %s, producerId %d, epoch %d, partitions %s", v,
                    d.state(), d.producerId(), d.producerEpoch(), d.topicPartitions());
        } catch (Exception e) {
            Eos.log("%s: DescribeTransactions failed: %s", v, Eos.chain(e));
        }
    }

    private static boolean verify(String topic) {
        List<TopicPartition> tps = Eos.partitions(topic, PARTS);
        Map<String, Integer> rc = new TreeMap<>();
        Eos.readAll(tps, true, Duration.ofSeconds(30), r -> rc.merge(r.value(), 1, Integer::sum));
        Map<String, Integer> ru = new TreeMap<>();
        Eos.readAll(tps, false, Duration.ofSeconds(30), r -> ru.merge(r.value(), 1, Integer::sum));
        boolean ok = true;
        long p1rc = rc.keySet().stream().filter(k -> k.startsWith("p1-")).count();
        long p2rc = rc.keySet().stream().filter(k -> k.startsWith("p2-")).count();
        long p1ru = ru.keySet().stream().filter(k -> k.startsWith("p1-")).count();
        Eos.log("read_committed: %d records of p1 (want 0), %d of p2 (want %d); read_uncommitted: %d of p1 (want >= %d)",
                p1rc, p2rc, 5 * VARIANTS.length, p1ru, 10 * VARIANTS.length);
        if (p1rc != 0) {
            ok = false;
            Eos.log("CHECK FAILED: records of the fenced producer are visible read_committed: %s",
                    rc.keySet().stream().filter(k -> k.startsWith("p1-")).limit(10).toList());
        }
        if (p2rc != 5L * VARIANTS.length || rc.values().stream().anyMatch(c -> c != 1)) {
            ok = false;
            Eos.log("CHECK FAILED: want each of p2's %d records exactly once read_committed, got %s", 5 * VARIANTS.length, rc);
        }
        if (p1ru < 10L * VARIANTS.length) {
            ok = false;
            Eos.log("CHECK FAILED: p1's acknowledged records are missing even read_uncommitted: %s", ru);
        }
        return ok;
    }
}
