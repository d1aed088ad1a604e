package dev.ferry.eos;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Shared helpers of the exactly-once checks: configuration, logging, topic creation, reading a topic
 * to its end, and the broker-control protocol of tests/eos/run.sh.
 *
 * <p>Broker control: the runner sets FERRY_CONTROL_DIR to an empty directory. Creating the file
 * {@code kill-request} there (written elsewhere, then renamed) makes the runner SIGKILL the broker and
 * restart it on the same port with the same data dir; it then deletes the request and creates
 * {@code kill-done} (or {@code kill-failed}).
 */
final class Eos {
    private Eos() {}

    static final long START = System.nanoTime();

    static String bootstrap() {
        String b = System.getenv("FERRY_BOOTSTRAP");
        return b == null || b.isEmpty() ? "127.0.0.1:9092" : b;
    }

    /** A per-run suffix, so that topic, group and transactional ids never collide between runs. */
    static String runId() {
        String r = System.getenv("FERRY_EOS_RUN_ID");
        return r == null || r.isEmpty() ? Long.toString(System.currentTimeMillis() % 1_000_000_000L) : r;
    }

    static int timeoutSeconds(int dflt) {
        String t = System.getenv("FERRY_EOS_TIMEOUT");
        if (t == null || t.isEmpty()) return dflt;
        return Integer.parseInt(t.trim());
    }

    static synchronized void log(String fmt, Object... args) {
        double s = (System.nanoTime() - START) / 1e9;
        System.out.printf("[%7.3fs] %s%n", s, String.format(fmt, args));
        System.out.flush();
    }

    static double elapsed() {
        return (System.nanoTime() - START) / 1e9;
    }

    /** Client settings shared by every client: fast reconnects after a broker restart. */
    static Properties common() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap());
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "50");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "1000");
        p.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "100");
        p.put(AdminClientConfig.RETRY_BACKOFF_MAX_MS_CONFIG, "1000");
        return p;
    }

    static Properties producerProps(String clientId) {
        Properties p = common();
        p.put(ProducerConfig.CLIENT_ID_CONFIG, clientId);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        return p;
    }

    static Properties consumerProps(String clientId, String group, boolean readCommitted) {
        Properties p = common();
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, clientId);
        if (group != null) p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, readCommitted ? "read_committed" : "read_uncommitted");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        return p;
    }

    static Admin admin() {
        return Admin.create(common());
    }

    static void createTopic(Admin admin, String name, int partitions, Map<String, String> configs) throws Exception {
        NewTopic t = new NewTopic(name, partitions, (short) 1);
        if (configs != null) t.configs(configs);
        try {
            admin.createTopics(List.of(t)).all().get(30, TimeUnit.SECONDS);
            log("created topic %s (%d partitions)", name, partitions);
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) throw e;
            log("topic %s already exists", name);
        }
    }

    static List<TopicPartition> partitions(String topic, int n) {
        List<TopicPartition> tps = new ArrayList<>();
        for (int i = 0; i < n; i++) tps.add(new TopicPartition(topic, i));
        return tps;
    }

    /**
     * Reads the given partitions from the beginning up to their end offsets (for read_committed: the last
     * stable offset) as seen at the start, handing each record to {@code sink}. Returns the end offsets.
     */
    static Map<TopicPartition, Long> readAll(Collection<TopicPartition> tps, boolean readCommitted, Duration timeout,
            Consumer<ConsumerRecord<String, String>> sink) {
        Properties p = consumerProps("eos-verify-" + (readCommitted ? "rc" : "ru"), null, readCommitted);
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "5000");
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = new HashMap<>(c.endOffsets(tps, Duration.ofSeconds(30)));
            long deadline = System.nanoTime() + timeout.toNanos();
            while (true) {
                boolean done = true;
                for (TopicPartition tp : tps) {
                    if (c.position(tp, Duration.ofSeconds(30)) < end.get(tp)) {
                        done = false;
                        break;
                    }
                }
                if (done) return end;
                if (System.nanoTime() > deadline) {
                    Map<TopicPartition, Long> pos = new HashMap<>();
                    for (TopicPartition tp : tps) pos.put(tp, c.position(tp));
                    throw new IllegalStateException("reading " + tps + " did not reach the end offsets " + end
                            + " in " + timeout + " (positions " + pos + ")");
                }
                ConsumerRecords<String, String> recs = c.poll(Duration.ofMillis(500));
                for (ConsumerRecord<String, String> r : recs) sink.accept(r);
            }
        }
    }

    // ------------------------------------------------------------ broker control

    private static int kills = 0;

    static boolean controlAvailable() {
        String d = System.getenv("FERRY_CONTROL_DIR");
        return d != null && !d.isEmpty() && Files.isDirectory(Path.of(d));
    }

    /** Asks the runner to SIGKILL and restart the broker; returns at once (see {@link #killDone}). */
    static void requestKill(String why) {
        if (!controlAvailable()) throw new IllegalStateException("FERRY_CONTROL_DIR is not set: run me through tests/eos/run.sh");
        Path dir = Path.of(System.getenv("FERRY_CONTROL_DIR"));
        try {
            Files.deleteIfExists(dir.resolve("kill-done"));
            Path tmp = dir.resolve(".kill-request");
            Files.writeString(tmp, why + "\n", StandardCharsets.UTF_8);
            Files.move(tmp, dir.resolve("kill-request"), StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
        kills++;
        log("requested broker kill #%d (%s)", kills, why);
    }

    /** Whether the last requested kill has been carried out (the broker restarted); throws if it failed. */
    static boolean killDone() {
        Path dir = Path.of(System.getenv("FERRY_CONTROL_DIR"));
        try {
            if (Files.exists(dir.resolve("kill-failed"))) {
                throw new IllegalStateException("the runner could not restart the broker: "
                        + Files.readString(dir.resolve("kill-failed")).trim());
            }
            Path done = dir.resolve("kill-done");
            if (Files.exists(done)) {
                log("runner: %s", Files.readString(done).trim());
                Files.delete(done);
                return true;
            }
            return false;
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
    }

    /** Waits until the last requested kill is done. */
    static void awaitKillDone(Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!killDone()) {
            if (System.nanoTime() > deadline) throw new IllegalStateException("broker kill not done in " + timeout);
            Thread.sleep(20);
        }
    }

    static String chain(Throwable t) {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (sb.length() > 0) sb.append(" <- caused by ");
            sb.append(c.getClass().getSimpleName()).append(": ").append(c.getMessage());
            if (c.getCause() == c) break;
        }
        return sb.toString();
    }

    static boolean causedBy(Throwable t, Class<?>... types) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            for (Class<?> k : types) if (k.isInstance(c)) return true;
            if (c.getCause() == c) break;
        }
        return false;
    }
}
