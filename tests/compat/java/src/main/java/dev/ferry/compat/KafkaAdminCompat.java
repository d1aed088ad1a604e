package dev.ferry.compat;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.Properties;
import java.time.Duration;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeConsumerGroupsOptions;
import org.apache.kafka.clients.admin.DescribeTopicsOptions;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.InvalidRecordException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidRequestException;
import org.apache.kafka.common.errors.InvalidTimestampException;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Ferry compatibility check: topic configs a Java AdminClient and producer rely on for
 * compacted topics.
 *
 * <ol>
 *   <li>incrementalAlterConfigs APPEND and SUBTRACT on a list config: a topic created with the
 *       default cleanup.policy (delete) gets APPEND compact (describeConfigs then shows
 *       delete,compact), SUBTRACT delete (compact), APPEND compact again (unchanged); APPEND on
 *       retention.ms, which is no list, fails with InvalidRequestException.
 *   <li>A compacted topic refuses a record without a key (InvalidRecordException) and writes
 *       nothing: a keyed record sent next lands at offset 0.
 *   <li>message.timestamp.type=LogAppendTime: a record sent with timestamp 1000 comes back, in
 *       its RecordMetadata and to a consumer, stamped with the broker's append time (type
 *       LOG_APPEND_TIME, within a minute of now).
 *   <li>ListOffsets to the record: four records with timestamps 1000, 5000, 3000, 2000 in one
 *       batch; the offset for timestamp 2500 is 1 (the first record at or after it, not its
 *       batch's first), for 5001 none (-1), and maxTimestamp answers offset 1 with timestamp
 *       5000 (KIP-734).
 *   <li>compression.type per topic: for each of gzip, snappy, lz4 and zstd, 300 records with
 *       keys and headers sent uncompressed (the client's default) are stored in the topic's
 *       codec by the broker and read back intact.
 *   <li>Timestamp bounds: a record two hours ahead is refused (InvalidTimestampException;
 *       message.timestamp.after.max.ms defaults to one hour), and so is one from 1970 on a topic
 *       with message.timestamp.before.max.ms=60000; a record stamped now is accepted there.
 *   <li>Authorized operations (no ACLs: everything the resource supports): a topic's through
 *       Metadata, the cluster's through DescribeCluster, a group's through DescribeGroups; not
 *       asked for, none come back.
 * </ol>
 *
 * <p>Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092).
 */
public final class KafkaAdminCompat {
    private static final CompatOutput OUT = new CompatOutput("java-admin");
    private static final String BOOTSTRAP = System.getenv().getOrDefault("FERRY_BOOTSTRAP", "127.0.0.1:9092");

    private KafkaAdminCompat() {}

    static String cleanupPolicy(Admin admin, String topic) throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config config = admin.describeConfigs(List.of(r)).all().get(15, TimeUnit.SECONDS).get(r);
        return config.get("cleanup.policy").value();
    }

    static void alter(Admin admin, String topic, String name, String value, AlterConfigOp.OpType op) throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Map<ConfigResource, Collection<AlterConfigOp>> ops = Map.of(r, List.of(new AlterConfigOp(new ConfigEntry(name, value), op)));
        admin.incrementalAlterConfigs(ops).all().get(15, TimeUnit.SECONDS);
    }

    static void listOperations(Admin admin) throws Exception {
        String topic = "compat-admin-list-" + UUID.randomUUID().toString().substring(0, 8);
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(15, TimeUnit.SECONDS);
        Object[][] steps = {
            {AlterConfigOp.OpType.APPEND, "compact", "delete,compact"},
            {AlterConfigOp.OpType.SUBTRACT, "delete", "compact"},
            {AlterConfigOp.OpType.APPEND, "compact", "compact"},
        };
        for (Object[] step : steps) {
            AlterConfigOp.OpType op = (AlterConfigOp.OpType) step[0];
            alter(admin, topic, "cleanup.policy", (String) step[1], op);
            String got = cleanupPolicy(admin, topic);
            if (!got.equals(step[2])) {
                OUT.fail(op + " " + step[1] + ": cleanup.policy is '" + got + "', expected '" + step[2] + "'");
            }
            OUT.log(op + " " + step[1] + ": cleanup.policy=" + got);
        }
        try {
            alter(admin, topic, "retention.ms", "1000", AlterConfigOp.OpType.APPEND);
            OUT.fail("APPEND on retention.ms (not a list config) was accepted");
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof InvalidRequestException)) {
                OUT.fail("APPEND on retention.ms: expected InvalidRequestException, got " + e.getCause());
            }
            OUT.log("APPEND on retention.ms refused: " + e.getCause().getClass().getSimpleName());
        }
    }

    static Properties producerProps() {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        return p;
    }

    static void checkStamped(String what, long timestampMs, long sentMs) {
        if (Math.abs(timestampMs - sentMs) > 60_000) {
            OUT.fail(what + ": timestamp " + timestampMs + ", expected the append time near " + sentMs);
        }
        OUT.log(what + ": LogAppendTime " + timestampMs + " (sent with 1000)");
    }

    static void logAppendTime(Admin admin) throws Exception {
        String topic = "compat-admin-lat-" + UUID.randomUUID().toString().substring(0, 8);
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1).configs(Map.of("message.timestamp.type", "LogAppendTime"))))
            .all().get(15, TimeUnit.SECONDS);
        long sentMs = System.currentTimeMillis();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerProps())) {
            RecordMetadata md = producer.send(new ProducerRecord<>(topic, 0, 1000L, "k".getBytes(), "v".getBytes())).get(30, TimeUnit.SECONDS);
            checkStamped("RecordMetadata", md.timestamp(), sentMs);
        }
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    if (r.timestampType() != TimestampType.LOG_APPEND_TIME) {
                        OUT.fail("consumed record: timestamp type " + r.timestampType() + ", expected LOG_APPEND_TIME");
                    }
                    checkStamped("consumed record", r.timestamp(), sentMs);
                    return;
                }
            }
        }
        OUT.fail("the LogAppendTime record was never consumed");
    }

    static void offsetsByTime(Admin admin) throws Exception {
        String topic = "compat-admin-times-" + UUID.randomUUID().toString().substring(0, 8);
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(15, TimeUnit.SECONDS);
        Properties p = producerProps();
        // One batch: the lookup must look inside it.
        p.put(ProducerConfig.LINGER_MS_CONFIG, "200");
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            long[] stamps = {1000, 5000, 3000, 2000};
            for (int i = 0; i < stamps.length; i++) {
                producer.send(new ProducerRecord<>(topic, 0, stamps[i], "k".getBytes(), ("v" + i).getBytes()));
            }
            producer.flush();
        }
        TopicPartition tp = new TopicPartition(topic, 0);
        Object[][] cases = {
            {"timestamp 2500", OffsetSpec.forTimestamp(2500), 1L, 5000L},
            {"timestamp 5001", OffsetSpec.forTimestamp(5001), -1L, -1L},
            {"max timestamp", OffsetSpec.maxTimestamp(), 1L, 5000L},
        };
        for (Object[] c : cases) {
            ListOffsetsResult.ListOffsetsResultInfo info =
                admin.listOffsets(Map.of(tp, (OffsetSpec) c[1])).partitionResult(tp).get(15, TimeUnit.SECONDS);
            if (info.offset() != (long) c[2] || info.timestamp() != (long) c[3]) {
                OUT.fail("ListOffsets " + c[0] + ": offset " + info.offset() + " timestamp " + info.timestamp()
                    + ", expected " + c[2] + " and " + c[3]);
            }
            OUT.log("ListOffsets " + c[0] + ": offset " + info.offset() + ", timestamp " + info.timestamp());
        }
    }

    static void recompressed(Admin admin) throws Exception {
        for (String codec : List.of("gzip", "snappy", "lz4", "zstd")) {
            String topic = "compat-admin-" + codec + "-" + UUID.randomUUID().toString().substring(0, 8);
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1).configs(Map.of("compression.type", codec))))
                .all().get(15, TimeUnit.SECONDS);
            List<String> sent = new ArrayList<>();
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerProps())) {
                for (int i = 0; i < 300; i++) {
                    String value = codec + "-" + i + "-" + "y".repeat(i % 50);
                    sent.add(value);
                    ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, 0, ("k" + i).getBytes(), value.getBytes());
                    r.headers().add("h", ("k" + i).getBytes());
                    producer.send(r);
                }
                producer.flush();
            }
            Properties c = new Properties();
            c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
            c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            List<String> got = new ArrayList<>();
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c)) {
                TopicPartition tp = new TopicPartition(topic, 0);
                consumer.assign(List.of(tp));
                consumer.seekToBeginning(List.of(tp));
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
                while (got.size() < sent.size() && System.nanoTime() < deadline) {
                    for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                        if (!Arrays.equals(r.headers().lastHeader("h").value(), r.key())) {
                            OUT.fail(codec + ": header h does not match key at offset " + r.offset());
                        }
                        got.add(new String(r.value()));
                    }
                }
            }
            if (!got.equals(sent)) {
                OUT.fail(codec + ": read " + got.size() + " records back, not the " + sent.size() + " sent, in order");
            }
            OUT.log("compression.type=" + codec + ": " + got.size() + " records read back intact");
        }
    }

    static void timestampBounds(Admin admin) throws Exception {
        String topic = "compat-admin-bounds-" + UUID.randomUUID().toString().substring(0, 8);
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1).configs(Map.of("message.timestamp.before.max.ms", "60000"))))
            .all().get(15, TimeUnit.SECONDS);
        long now = System.currentTimeMillis();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerProps())) {
            for (long ts : new long[] {now + 7_200_000L, 1000L}) {
                try {
                    producer.send(new ProducerRecord<>(topic, 0, ts, "k".getBytes(), "v".getBytes())).get(30, TimeUnit.SECONDS);
                    OUT.fail("a record with timestamp " + ts + " was accepted");
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof InvalidTimestampException)) {
                        OUT.fail("timestamp " + ts + ": expected InvalidTimestampException, got " + e.getCause());
                    }
                    OUT.log("a record with timestamp " + ts + " refused: " + e.getCause().getClass().getSimpleName());
                }
            }
            RecordMetadata md = producer.send(new ProducerRecord<>(topic, 0, "k".getBytes(), "v".getBytes())).get(30, TimeUnit.SECONDS);
            if (md.offset() != 0) {
                OUT.fail("a record stamped now landed at offset " + md.offset() + ", expected 0");
            }
            OUT.log("a record stamped now landed at offset 0");
        }
    }

    static void checkOperations(String what, Set<AclOperation> got, Set<AclOperation> unasked, Set<AclOperation> expected) {
        if (!expected.equals(got)) {
            OUT.fail(what + " authorized operations: " + got + ", expected " + expected);
        }
        if (unasked != null) {
            OUT.fail(what + " authorized operations came back unasked: " + unasked);
        }
        OUT.log(what + " authorized operations: " + got);
    }

    static void authorizedOperations(Admin admin) throws Exception {
        String topic = "compat-admin-ops-" + UUID.randomUUID().toString().substring(0, 8);
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(15, TimeUnit.SECONDS);
        String group = "compat-admin-ops-" + UUID.randomUUID().toString().substring(0, 8);
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        c.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c)) {
            consumer.commitSync(Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(0)));
        }
        checkOperations("topic",
            admin.describeTopics(List.of(topic), new DescribeTopicsOptions().includeAuthorizedOperations(true))
                .allTopicNames().get(15, TimeUnit.SECONDS).get(topic).authorizedOperations(),
            admin.describeTopics(List.of(topic)).allTopicNames().get(15, TimeUnit.SECONDS).get(topic).authorizedOperations(),
            Set.of(AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DELETE, AclOperation.ALTER,
                AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS));
        checkOperations("cluster",
            admin.describeCluster(new DescribeClusterOptions().includeAuthorizedOperations(true)).authorizedOperations().get(15, TimeUnit.SECONDS),
            admin.describeCluster().authorizedOperations().get(15, TimeUnit.SECONDS),
            Set.of(AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS,
                AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER, AclOperation.DESCRIBE));
        checkOperations("group",
            admin.describeConsumerGroups(List.of(group), new DescribeConsumerGroupsOptions().includeAuthorizedOperations(true))
                .describedGroups().get(group).get(15, TimeUnit.SECONDS).authorizedOperations(),
            admin.describeConsumerGroups(List.of(group)).describedGroups().get(group).get(15, TimeUnit.SECONDS).authorizedOperations(),
            Set.of(AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE));
    }

    static void keylessRefused(Admin admin) throws Exception {
        String topic = "compat-admin-compact-" + UUID.randomUUID().toString().substring(0, 8);
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1).configs(Map.of("cleanup.policy", "compact"))))
            .all().get(15, TimeUnit.SECONDS);
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerProps())) {
            try {
                producer.send(new ProducerRecord<>(topic, 0, null, "v".getBytes())).get(30, TimeUnit.SECONDS);
                OUT.fail("a keyless record to a compacted topic was accepted");
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof InvalidRecordException)) {
                    OUT.fail("a keyless record to a compacted topic: expected InvalidRecordException, got " + e.getCause());
                }
                OUT.log("keyless record refused: " + e.getCause().getClass().getSimpleName());
            }
            RecordMetadata md = producer.send(new ProducerRecord<>(topic, 0, "k".getBytes(), "v".getBytes())).get(30, TimeUnit.SECONDS);
            if (md.offset() != 0) {
                OUT.fail("a keyed record after the refusal landed at offset " + md.offset() + ", expected 0");
            }
            OUT.log("keyed record landed at offset 0: the refused one wrote nothing");
        }
    }

    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        try (Admin admin = Admin.create(p)) {
            listOperations(admin);
            keylessRefused(admin);
            logAppendTime(admin);
            offsetsByTime(admin);
            recompressed(admin);
            timestampBounds(admin);
            authorizedOperations(admin);
        }
        OUT.log("OK");
        Runtime.getRuntime().halt(0);
    }
}
