package dev.ferry.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Ferry compatibility check: the official Java client (kafka-clients).
 *
 * <p>Produces 10,000 records (no compression, acks=all, idempotence disabled) to partition 0 of a
 * fresh topic (auto-created on first produce), then reads them back with assign() +
 * seekToBeginning (no group.id) and checks offset, key and value of every record.
 *
 * <p>Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60),
 * FERRY_CLIENT_PROPS (space-separated key=value client properties added to both
 * clients, e.g. security.protocol=SSL ssl.truststore.type=PEM ssl.truststore.location=ca.pem).
 */
public final class KafkaClientsCompat {
    private static final String CLIENT = "java";
    private static final int N = 10_000;
    private static final long START = System.nanoTime();
    private static String topic = "?";
    private static volatile String phase = "starting";

    private KafkaClientsCompat() {}

    static void fail(String msg) {
        System.err.println("FAIL [" + CLIENT + "] topic=" + topic + ": " + msg);
        System.err.flush();
        // halt: do not wait for client threads or shutdown hooks.
        Runtime.getRuntime().halt(1);
    }

    static double elapsed() {
        return (System.nanoTime() - START) / 1e9;
    }

    static void log(String msg) {
        System.out.printf("[%s %6.2fs] %s%n", CLIENT, elapsed(), msg);
        System.out.flush();
    }

    static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String str(byte[] b) {
        return b == null ? "null" : new String(b, StandardCharsets.UTF_8);
    }

    public static void main(String[] args) {
        String bootstrap = System.getenv().getOrDefault("FERRY_BOOTSTRAP", "127.0.0.1:9092");
        long timeoutS = Long.parseLong(System.getenv().getOrDefault("FERRY_COMPAT_TIMEOUT", "60"));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutS);
        topic = "compat-" + CLIENT + "-" + UUID.randomUUID().toString().replace("-", "").substring(0, 10);

        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(TimeUnit.SECONDS.toMillis(timeoutS + 5));
            } catch (InterruptedException e) {
                return;
            }
            fail("hard timeout after " + timeoutS + "s (phase: " + phase + ")");
        }, "watchdog");
        watchdog.setDaemon(true);
        watchdog.start();

        log("kafka-clients " + kafkaVersion() + ", bootstrap " + bootstrap + ", topic " + topic);
        try {
            produce(bootstrap, deadline);
            consume(bootstrap, deadline);
        } catch (Exception e) {
            fail(e.getClass().getName() + ": " + e.getMessage()
                    + (e.getCause() != null ? " (cause: " + e.getCause() + ")" : ""));
        }
        System.out.printf("OK [%s] %d records round-tripped in %.2fs%n", CLIENT, N, elapsed());
        System.out.flush();
        Runtime.getRuntime().halt(0);
    }

    /** Version from the properties file inside the kafka-clients jar. */
    static String kafkaVersion() {
        try (java.io.InputStream in = KafkaProducer.class.getResourceAsStream("/kafka/kafka-version.properties")) {
            Properties v = new Properties();
            if (in != null) {
                v.load(in);
            }
            return v.getProperty("version", "unknown");
        } catch (java.io.IOException e) {
            return "unknown";
        }
    }

    /**
     * FERRY_CLIENT_PROPS, added last so they override the defaults above them. Each word is one
     * line of a .properties file, so a value with spaces (a JAAS line) writes them as \\u0020.
     */
    static void addClientProps(Properties p) {
        String lines = System.getenv().getOrDefault("FERRY_CLIENT_PROPS", "").trim().replaceAll("\\s+", "\n");
        try {
            p.load(new java.io.StringReader(lines));
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    static long remainingMs(long deadline) {
        return Math.max(TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime()), 1);
    }

    static void produce(String bootstrap, long deadline) throws Exception {
        phase = "producing";
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "ferry-compat-java");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "none");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "20000");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        addClientProps(p);

        long[] offsets = new long[N];
        Arrays.fill(offsets, -1);
        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < N; i++) {
                final int idx = i;
                producer.send(new ProducerRecord<>(topic, 0, bytes("k" + i), bytes(CLIENT + "-" + i)),
                        (md, ex) -> {
                            if (ex != null) {
                                errors.add("record #" + idx + ": " + ex);
                            } else if (md.partition() != 0) {
                                errors.add("record #" + idx + ": went to partition " + md.partition());
                            } else {
                                offsets[idx] = md.offset();
                            }
                        });
            }
            phase = "flushing (waiting for produce acks)";
            producer.flush();
            if (!errors.isEmpty()) {
                fail(errors.size() + " produce errors, first: " + errors.subList(0, Math.min(3, errors.size())));
            }
            producer.close(Duration.ofMillis(Math.min(5000, remainingMs(deadline))));
        }
        for (int i = 0; i < N; i++) {
            if (offsets[i] != i) {
                fail("record #" + i + " acknowledged at offset " + offsets[i] + ", expected " + i);
            }
        }
        log("produced " + N + " records (no compression, acks=all, no idempotence), offsets 0.." + (N - 1)
                + " acknowledged");
    }

    static void consume(String bootstrap, long deadline) {
        phase = "consuming";
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.CLIENT_ID_CONFIG, "ferry-compat-java");
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        c.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "20000");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        addClientProps(c);

        TopicPartition tp = new TopicPartition(topic, 0);
        int got = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c)) {
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            while (got < N) {
                if (System.nanoTime() >= deadline) {
                    fail("timed out while consuming: got " + got + " of " + N + " records");
                }
                ConsumerRecords<byte[], byte[]> records =
                        consumer.poll(Duration.ofMillis(Math.min(1000, remainingMs(deadline))));
                for (ConsumerRecord<byte[], byte[]> r : records) {
                    int i = got;
                    if (!r.topic().equals(topic) || r.partition() != 0 || r.offset() != i) {
                        fail("record #" + i + ": " + r.topic() + "/" + r.partition() + " offset " + r.offset()
                                + ", expected " + topic + "/0 offset " + i);
                    }
                    if (!str(r.key()).equals("k" + i)) {
                        fail("record #" + i + ": key '" + str(r.key()) + "', expected 'k" + i + "'");
                    }
                    if (!str(r.value()).equals(CLIENT + "-" + i)) {
                        fail("record #" + i + ": value '" + str(r.value()) + "', expected '" + CLIENT + "-" + i + "'");
                    }
                    got++;
                    if (got > N) {
                        fail("more records than produced");
                    }
                }
            }
            ConsumerRecords<byte[], byte[]> extra = consumer.poll(Duration.ofMillis(500));
            if (!extra.isEmpty()) {
                fail("got " + extra.count() + " unexpected extra records");
            }
        }
        log("consumed " + got + " records from offset 0, all offsets/keys/values match");
    }
}
