package dev.ferry.compat;

import java.time.Duration;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Ferry compatibility check: promises a pipelining or size-limited Java client (kafka-clients)
 * relies on.
 *
 * <ol>
 *   <li>Pipelined commits take effect in the order sent: 200 commitAsync calls for one partition
 *       (offsets 1..200), all answered, then committed() must return 200. Five trials.
 *   <li>A fetch answer stays within the request's limits (KIP-74: only the first batch of the
 *       first partition with data may exceed them): three partitions each hold two 900 KB
 *       records. With fetch.max.bytes=1000000 the largest fetch answer (the consumer's
 *       fetch-size-max metric) must stay within 1000000 bytes; with max.partition.fetch.bytes=
 *       500000 it must stay within one batch plus 500000 bytes for each other partition.
 * </ol>
 *
 * <p>Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60).
 */
public final class KafkaPromisesCompat {
    private static final String CLIENT = "java-promises";
    private static final int COMMITS = 200;
    private static final int TRIALS = 5;
    private static final int BIG_RECORD_BYTES = 900_000;
    private static final long START = System.nanoTime();
    private static final String BOOTSTRAP = System.getenv().getOrDefault("FERRY_BOOTSTRAP", "127.0.0.1:9092");

    private KafkaPromisesCompat() {}

    static void fail(String msg) {
        System.err.println("FAIL [" + CLIENT + "]: " + msg);
        System.err.flush();
        Runtime.getRuntime().halt(1);
    }

    static void log(String msg) {
        System.out.printf("[%s %6.2fs] %s%n", CLIENT, (System.nanoTime() - START) / 1e9, msg);
        System.out.flush();
    }

    static void createTopic(String name, int partitions, Map<String, String> configs) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        try (Admin admin = Admin.create(p)) {
            admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1).configs(configs)))
                .all().get(15, TimeUnit.SECONDS);
        }
    }

    static KafkaProducer<byte[], byte[]> producer() {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        p.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, "2000000");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        return new KafkaProducer<>(p);
    }

    static Properties consumerProps(String group) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        return p;
    }

    static void pipelinedCommits() throws Exception {
        String topic = "compat-commits-" + UUID.randomUUID().toString().substring(0, 8);
        createTopic(topic, 1, Map.of());
        try (KafkaProducer<byte[], byte[]> p = producer()) {
            for (int i = 0; i <= COMMITS; i++) {
                p.send(new ProducerRecord<>(topic, 0, null, ("v" + i).getBytes()));
            }
            p.flush();
        }
        TopicPartition tp = new TopicPartition(topic, 0);
        for (int trial = 0; trial < TRIALS; trial++) {
            String group = "commits-" + UUID.randomUUID().toString().substring(0, 8);
            try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(consumerProps(group))) {
                c.assign(List.of(tp));
                AtomicInteger answered = new AtomicInteger();
                AtomicReference<Exception> error = new AtomicReference<>();
                for (int offset = 1; offset <= COMMITS; offset++) {
                    c.commitAsync(Map.of(tp, new OffsetAndMetadata(offset)), (offsets, e) -> {
                        if (e != null) {
                            error.compareAndSet(null, e);
                        }
                        answered.incrementAndGet();
                    });
                }
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
                while (answered.get() < COMMITS && System.nanoTime() < deadline) {
                    c.poll(Duration.ofMillis(50));
                }
                if (answered.get() < COMMITS) {
                    fail("trial " + trial + ": " + answered.get() + " of " + COMMITS + " commits answered");
                }
                if (error.get() != null) {
                    fail("trial " + trial + ": commit failed: " + error.get());
                }
                OffsetAndMetadata got = c.committed(Collections.singleton(tp), Duration.ofSeconds(10)).get(tp);
                if (got == null || got.offset() != COMMITS) {
                    fail("trial " + trial + ": committed offset is " + got + " after " + COMMITS + " pipelined commits");
                }
                log("trial " + trial + ": committed offset " + got.offset());
            }
        }
    }

    static String bigTopic() throws Exception {
        String topic = "compat-bigfetch-" + UUID.randomUUID().toString().substring(0, 8);
        createTopic(topic, 3, Map.of("max.message.bytes", "2000000"));
        byte[] payload = new byte[BIG_RECORD_BYTES];
        new Random(7).nextBytes(payload);
        try (KafkaProducer<byte[], byte[]> p = producer()) {
            for (int part = 0; part < 3; part++) {
                for (int i = 0; i < 2; i++) {
                    p.send(new ProducerRecord<>(topic, part, null, payload)).get(15, TimeUnit.SECONDS);
                }
            }
        }
        return topic;
    }

    /** Reads all six big records and returns the largest fetch answer seen (bytes). */
    static double readAllAndLargestFetch(String topic, Properties props) {
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(props)) {
            c.assign(List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1), new TopicPartition(topic, 2)));
            c.seekToBeginning(c.assignment());
            int got = 0;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (got < 6 && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    if (r.value().length != BIG_RECORD_BYTES) {
                        fail("record of " + r.value().length + " bytes at " + r.partition() + "/" + r.offset());
                    }
                    got++;
                }
            }
            if (got != 6) {
                fail("read " + got + " of 6 big records in 20 s");
            }
            for (Map.Entry<MetricName, ? extends Metric> m : c.metrics().entrySet()) {
                MetricName n = m.getKey();
                if (n.name().equals("fetch-size-max") && n.group().equals("consumer-fetch-manager-metrics")
                        && !n.tags().containsKey("topic")) {
                    return ((Number) m.getValue().metricValue()).doubleValue();
                }
            }
            fail("no fetch-size-max metric");
            return 0;
        }
    }

    static void fetchLimits() throws Exception {
        String topic = bigTopic();
        Properties total = consumerProps("bigfetch-" + UUID.randomUUID());
        total.put(ConsumerConfig.FETCH_MAX_BYTES_CONFIG, "1000000");
        double largest = readAllAndLargestFetch(topic, total);
        if (largest > 1_000_000) {
            fail("a fetch answer held " + largest + " bytes with fetch.max.bytes=1000000");
        }
        log("fetch.max.bytes=1000000: largest fetch answer " + largest + " bytes");
        Properties partition = consumerProps("bigfetch-" + UUID.randomUUID());
        partition.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, "500000");
        largest = readAllAndLargestFetch(topic, partition);
        double allowed = BIG_RECORD_BYTES + 200 + 2 * 500_000;
        if (largest > allowed) {
            fail("a fetch answer held " + largest + " bytes with max.partition.fetch.bytes=500000 (at most " + allowed + ")");
        }
        log("max.partition.fetch.bytes=500000: largest fetch answer " + largest + " bytes");
    }

    public static void main(String[] args) throws Exception {
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(TimeUnit.SECONDS.toMillis(Long.parseLong(System.getenv().getOrDefault("FERRY_COMPAT_TIMEOUT", "60")) + 5));
            } catch (InterruptedException e) {
                return;
            }
            fail("hard timeout");
        });
        watchdog.setDaemon(true);
        watchdog.start();
        pipelinedCommits();
        fetchLimits();
        System.out.println("PASS [" + CLIENT + "]");
        Runtime.getRuntime().halt(0);
    }
}
