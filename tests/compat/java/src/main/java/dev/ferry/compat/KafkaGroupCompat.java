package dev.ferry.compat;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Ferry compatibility check: consumer groups with the official Java KafkaConsumer (classic protocol).
 *
 * <p>Usage: {@code java -cp ferry-compat-java.jar dev.ferry.compat.KafkaGroupCompat range|cooperative rebalance|kill}
 *
 * <p>Creates a 6-partition topic with the Admin client, produces 6,000 keyed records (acks=all, the
 * default key-hash partitioner, idempotence off), then consumes them with a group of three subscribe()
 * consumers (threads) using the RangeAssignor or the CooperativeStickyAssignor, each polling, processing
 * (every value is recorded; a short sleep per record keeps the stream going long enough) and then
 * committing synchronously (at-least-once).
 * <ul>
 *   <li>"rebalance": once 1,500 distinct values are processed, member m1 closes (LeaveGroup) and a new
 *       member m4 joins; m4 must process records.
 *   <li>"kill": once 2,000 distinct values are processed and every partition has an acknowledged commit,
 *       the program asks the runner (run.sh, via $FERRY_CONTROL_DIR) to SIGKILL and restart the broker
 *       and keeps consuming. Right after the restart the group's committed offsets must be at least the
 *       commits acknowledged before the kill, and no record below such a commit may be processed again
 *       after the restart (re-deliveries only above the committed offset).
 * </ul>
 * Both: every value processed at least once, and the committed offsets equal the log end offsets.
 *
 * <p>Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60),
 * FERRY_CONTROL_DIR (set by run.sh; needed for "kill").
 */
public final class KafkaGroupCompat {
    private static final String CLIENT = "java";
    private static final int N = 6_000;
    private static final int PARTITIONS = 6;
    private static final int MAX_BATCH = 100;
    /** Per record: three members process ~750 records/s in total, so the stream lasts ~8 s plus rebalances. */
    private static final long PROCESS_DELAY_US = 4_000;
    private static final int LEAVE_AT = 1_500;
    private static final int KILL_AT = 2_000;
    /** The broker (like Kafka) refuses session timeouts below group.min.session.timeout.ms (6000). */
    private static final int SESSION_TIMEOUT_MS = 10_000;
    private static final int HEARTBEAT_INTERVAL_MS = 1_000;
    private static final int MAX_POLL_INTERVAL_MS = 30_000;
    private static final long START = System.nanoTime();

    private static String bootstrap;
    private static String label = CLIENT;
    private static String topic = "?";
    private static String group = "?";
    private static String assignor;
    private static String mode;
    private static long deadline;
    private static volatile String phase = "starting";

    // The ledger; guarded by LOCK.
    private static final Object LOCK = new Object();
    private static final int[] PROD_PARTITION = new int[N];
    private static final long[] PROD_OFFSET = new long[N];
    private static final long[] LEO = new long[PARTITIONS];
    private static final int[] COUNTS = new int[N];
    private static int unique;
    private static int redelivered;
    private static final Map<String, Integer> PER_MEMBER = new TreeMap<>();
    private static final long[] ACKED = new long[PARTITIONS];
    private static int commitOk;
    private static int commitFailed;
    private static String killPhase = "before";
    private static long[] floor;
    private static final long[] FIRST_AFTER = new long[PARTITIONS];
    private static final List<String> VIOLATIONS = new ArrayList<>();
    private static final List<Member> MEMBERS = new ArrayList<>();

    private KafkaGroupCompat() {}

    static void fail(String msg) {
        System.err.println("FAIL [" + label + "] topic=" + topic + " group=" + group + ": " + msg);
        System.err.flush();
        Runtime.getRuntime().halt(1);
    }

    static double elapsed() {
        return (System.nanoTime() - START) / 1e9;
    }

    static synchronized void log(String msg) {
        System.out.printf("[%s %6.2fs] %s%n", label, elapsed(), msg);
        System.out.flush();
    }

    static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String str(byte[] b) {
        return b == null ? "null" : new String(b, StandardCharsets.UTF_8);
    }

    static long remainingMs() {
        return TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
    }

    static void sleepMs(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    static String progress() {
        synchronized (LOCK) {
            List<Integer> missing = new ArrayList<>();
            for (int i = 0; i < N && missing.size() < 5; i++) {
                if (COUNTS[i] == 0) {
                    missing.add(i);
                }
            }
            return unique + "/" + N + " values processed, missing e.g. " + missing + ", acked commits "
                    + Arrays.toString(ACKED) + ", log end " + Arrays.toString(LEO) + ", per member " + PER_MEMBER;
        }
    }

    public static void main(String[] args) {
        if (args.length != 2 || !List.of("range", "cooperative").contains(args[0])
                || !List.of("rebalance", "kill").contains(args[1])) {
            System.err.println("usage: KafkaGroupCompat range|cooperative rebalance|kill");
            System.exit(2);
        }
        assignor = args[0];
        mode = args[1];
        label = CLIENT + "-" + assignor;
        bootstrap = System.getenv().getOrDefault("FERRY_BOOTSTRAP", "127.0.0.1:9092");
        long timeoutS = Long.parseLong(System.getenv().getOrDefault("FERRY_COMPAT_TIMEOUT", "60"));
        deadline = START + TimeUnit.SECONDS.toNanos(timeoutS);
        topic = "compat-" + CLIENT + "-g" + assignor.charAt(0) + mode.charAt(0) + "-"
                + UUID.randomUUID().toString().replace("-", "").substring(0, 10);
        group = topic + "-g";
        Arrays.fill(PROD_PARTITION, -1);
        Arrays.fill(FIRST_AFTER, -1);

        Thread watchdog = new Thread(() -> {
            sleepMs(TimeUnit.SECONDS.toMillis(timeoutS + 5));
            fail("hard timeout after " + timeoutS + "s (phase: " + phase + "; " + progress() + ")");
        }, "watchdog");
        watchdog.setDaemon(true);
        watchdog.start();

        log("kafka-clients " + KafkaClientsCompat.kafkaVersion() + ", bootstrap " + bootstrap + ", assignor "
                + assignorClass().getSimpleName() + ", mode " + mode + ", topic " + topic);
        try (Admin admin = Admin.create(adminProps())) {
            run(admin);
        } catch (Exception e) {
            fail(e.getClass().getName() + " (phase " + phase + "): " + e.getMessage()
                    + (e.getCause() != null ? " (cause: " + e.getCause() + ")" : ""));
        }
        System.out.printf("OK [%s] group %s: %d records processed at least once, commits at log end, in %.2fs%n",
                label, mode, N, elapsed());
        System.out.flush();
        Runtime.getRuntime().halt(0);
    }

    static Class<?> assignorClass() {
        return assignor.equals("range") ? RangeAssignor.class : CooperativeStickyAssignor.class;
    }

    static Properties adminProps() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "ferry-compat-java-admin");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "15000");
        return p;
    }

    static Properties consumerProps(String name) {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.CLIENT_ID_CONFIG, "ferry-compat-java-" + name);
        c.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        c.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        c.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignorClass().getName());
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, Integer.toString(SESSION_TIMEOUT_MS));
        c.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, Integer.toString(HEARTBEAT_INTERVAL_MS));
        c.put(ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG, Integer.toString(MAX_POLL_INTERVAL_MS));
        c.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, Integer.toString(MAX_BATCH));
        c.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        c.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "20000");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        return c;
    }

    // ------------------------------------------------------------------ scenario

    static void run(Admin admin) throws Exception {
        phase = "creating topic";
        admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get(20, TimeUnit.SECONDS);
        log("created topic " + topic + " with " + PARTITIONS + " partitions (CreateTopics)");
        phase = "producing";
        produce();
        long[] end = endOffsets(admin);
        if (!Arrays.equals(end, LEO)) {
            fail("log end offsets " + Arrays.toString(end) + " differ from acknowledged counts " + Arrays.toString(LEO));
        }

        phase = "consuming with m1, m2, m3";
        for (String name : List.of("m1", "m2", "m3")) {
            startMember(name);
        }
        if (mode.equals("rebalance")) {
            waitUntil(LEAVE_AT + " processed values", () -> uniqueNow() >= LEAVE_AT);
            phase = "m1 leaving";
            log(uniqueNow() + " values processed; m1 leaves the group (close)");
            MEMBERS.get(0).stopAndJoin();
            log("m1 closed after " + memberCount("m1") + " records; m4 joins");
            phase = "consuming with m2, m3, m4";
            startMember("m4");
        } else {
            waitUntil(KILL_AT + " processed values and a commit on every partition",
                    () -> uniqueNow() >= KILL_AT && Arrays.stream(ackedNow()).min().getAsLong() > 0);
            phase = "broker kill/restart";
            requestKill();
            phase = "checking committed offsets after the restart";
            long[] got = committedRetry(admin);
            List<String> lost = new ArrayList<>();
            for (int p = 0; p < PARTITIONS; p++) {
                if (got[p] < floor[p]) {
                    lost.add(p + ": now " + got[p] + ", acknowledged " + floor[p]);
                }
            }
            if (!lost.isEmpty()) {
                fail("after the restart the group's committed offsets " + Arrays.toString(got) + " are below commits "
                        + "the broker acknowledged before it was killed " + Arrays.toString(floor) + ": " + lost);
            }
            log("committed offsets right after the restart: " + Arrays.toString(got) + " (>= acknowledged before the kill)");
            phase = "consuming after the restart";
        }

        waitUntil("all " + N + " values processed", () -> uniqueNow() >= N);
        log("all " + N + " values processed (" + redeliveredNow() + " re-deliveries); waiting for final commits");
        phase = "waiting for committed == log end";
        String last = "";
        while (true) {
            try {
                long[] c = committed(admin);
                if (Arrays.equals(c, LEO)) {
                    break;
                }
                last = Arrays.toString(c);
            } catch (Exception e) {
                last = e.toString();
            }
            if (remainingMs() <= 0) {
                fail("committed offsets " + last + " never reached the log end offsets " + Arrays.toString(LEO));
            }
            checkMembers();
            sleepMs(200);
        }

        phase = "closing members";
        for (Member m : MEMBERS) {
            m.stopAndJoin();
        }
        long[] fin = committed(admin);
        if (!Arrays.equals(fin, LEO)) {
            fail("after closing the members the committed offsets are " + Arrays.toString(fin) + ", log end "
                    + Arrays.toString(LEO));
        }
        synchronized (LOCK) {
            log("committed offsets == log end offsets " + Arrays.toString(LEO) + " (commits: " + commitOk
                    + " acknowledged, " + commitFailed + " failed and retried)");
            for (int i = 0; i < N; i++) {
                if (COUNTS[i] == 0) {
                    fail("value #" + i + " never processed (" + progress() + ")");
                }
            }
            if (mode.equals("rebalance")) {
                if (PER_MEMBER.getOrDefault("m4", 0) == 0) {
                    fail("new member m4 never processed a record (per member " + PER_MEMBER + ")");
                }
            } else {
                if (!VIOLATIONS.isEmpty()) {
                    fail(VIOLATIONS.size() + " records below a commit acknowledged before the restart were processed"
                            + " again after it (member partition/offset < acknowledged commit): "
                            + VIOLATIONS.subList(0, Math.min(5, VIOLATIONS.size())));
                }
                log("first offsets processed after the restart per partition: " + Arrays.toString(FIRST_AFTER)
                        + " (commits acknowledged before it: " + Arrays.toString(floor) + ")");
            }
            log("per member: " + PER_MEMBER + ", " + redelivered + " re-deliveries");
        }
    }

    static int uniqueNow() {
        synchronized (LOCK) {
            return unique;
        }
    }

    static int redeliveredNow() {
        synchronized (LOCK) {
            return redelivered;
        }
    }

    static long[] ackedNow() {
        synchronized (LOCK) {
            return ACKED.clone();
        }
    }

    static int memberCount(String name) {
        synchronized (LOCK) {
            return PER_MEMBER.getOrDefault(name, 0);
        }
    }

    static void waitUntil(String what, BooleanSupplier cond) {
        while (!cond.getAsBoolean()) {
            if (remainingMs() <= 0) {
                fail("timed out waiting for " + what + " (" + progress() + ")");
            }
            checkMembers();
            sleepMs(50);
        }
    }

    static void checkMembers() {
        for (Member m : MEMBERS) {
            if (m.error != null) {
                fail("member " + m.getName() + " died: " + m.error);
            }
        }
    }

    static void startMember(String name) {
        Member m = new Member(name);
        MEMBERS.add(m);
        m.start();
    }

    static long[] committed(Admin admin) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> res =
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(15, TimeUnit.SECONDS);
        long[] out = new long[PARTITIONS];
        Arrays.fill(out, -1);
        for (Map.Entry<TopicPartition, OffsetAndMetadata> e : res.entrySet()) {
            if (e.getKey().topic().equals(topic) && e.getValue() != null) {
                out[e.getKey().partition()] = e.getValue().offset();
            }
        }
        return out;
    }

    static long[] committedRetry(Admin admin) {
        Exception last = null;
        long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
        while (System.nanoTime() < until && remainingMs() > 0) {
            try {
                return committed(admin);
            } catch (Exception e) {
                last = e;
                sleepMs(200);
            }
        }
        fail("could not fetch committed offsets after the restart: " + last);
        return null;
    }

    static long[] endOffsets(Admin admin) throws Exception {
        Map<TopicPartition, OffsetSpec> req = new HashMap<>();
        for (int p = 0; p < PARTITIONS; p++) {
            req.put(new TopicPartition(topic, p), OffsetSpec.latest());
        }
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> res =
                admin.listOffsets(req).all().get(15, TimeUnit.SECONDS);
        long[] out = new long[PARTITIONS];
        res.forEach((tp, info) -> out[tp.partition()] = info.offset());
        return out;
    }

    static void produce() {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "ferry-compat-java-producer");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        // Idempotence off: this check is about the consumer group, not the producer.
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "20000");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        List<String> errors = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < N; i++) {
                final int idx = i;
                producer.send(new ProducerRecord<>(topic, bytes("k" + i), bytes(CLIENT + "-" + i)), (md, ex) -> {
                    synchronized (LOCK) {
                        if (ex != null) {
                            errors.add("record #" + idx + ": " + ex);
                        } else {
                            PROD_PARTITION[idx] = md.partition();
                            PROD_OFFSET[idx] = md.offset();
                        }
                    }
                });
            }
            producer.flush();
        }
        synchronized (LOCK) {
            if (!errors.isEmpty()) {
                fail(errors.size() + " produce errors, first: " + errors.subList(0, Math.min(3, errors.size())));
            }
            List<List<Long>> offs = new ArrayList<>();
            for (int q = 0; q < PARTITIONS; q++) {
                offs.add(new ArrayList<>());
            }
            for (int i = 0; i < N; i++) {
                int q = PROD_PARTITION[i];
                if (q < 0 || q >= PARTITIONS) {
                    fail("record #" + i + " acknowledged on partition " + q);
                }
                offs.get(q).add(PROD_OFFSET[i]);
            }
            for (int q = 0; q < PARTITIONS; q++) {
                List<Long> o = offs.get(q).stream().sorted().collect(Collectors.toList());
                for (int j = 0; j < o.size(); j++) {
                    if (o.get(j) != j) {
                        fail("partition " + q + ": acknowledged offsets are not 0.." + (o.size() - 1));
                    }
                }
                if (o.isEmpty()) {
                    fail("records not spread over all partitions: partition " + q + " got none");
                }
                LEO[q] = o.size();
            }
        }
        log("produced " + N + " keyed records over " + PARTITIONS + " partitions: " + Arrays.toString(LEO));
    }

    // ------------------------------------------------------------------ ledger

    static void process(String member, int partition, long offset, byte[] key, byte[] value) {
        String v = str(value);
        int i;
        try {
            i = Integer.parseInt(v.substring(v.lastIndexOf('-') + 1));
        } catch (RuntimeException e) {
            fail(member + ": unexpected value '" + v + "' at " + partition + "/" + offset);
            return;
        }
        if (i < 0 || i >= N || !v.equals(CLIENT + "-" + i) || !str(key).equals("k" + i)) {
            fail(member + ": record " + partition + "/" + offset + " key='" + str(key) + "' value='" + v + "'");
        }
        synchronized (LOCK) {
            if (PROD_PARTITION[i] != partition || PROD_OFFSET[i] != offset) {
                fail(member + ": value #" + i + " read at " + partition + "/" + offset + ", produced at "
                        + PROD_PARTITION[i] + "/" + PROD_OFFSET[i]);
            }
            if (COUNTS[i] == 0) {
                unique++;
            } else {
                redelivered++;
            }
            COUNTS[i]++;
            PER_MEMBER.merge(member, 1, Integer::sum);
            if (killPhase.equals("after")) {
                if (FIRST_AFTER[partition] < 0) {
                    FIRST_AFTER[partition] = offset;
                }
                if (offset < floor[partition]) {
                    VIOLATIONS.add(member + " " + partition + "/" + offset + " < " + floor[partition]);
                }
            }
        }
    }

    static void acknowledged(Map<TopicPartition, OffsetAndMetadata> offsets) {
        synchronized (LOCK) {
            commitOk++;
            offsets.forEach((tp, om) -> ACKED[tp.partition()] = Math.max(ACKED[tp.partition()], om.offset()));
        }
    }

    static void commitError(String member, Exception e) {
        int n;
        synchronized (LOCK) {
            n = ++commitFailed;
        }
        if (n <= 10) {
            log(member + ": commit failed (tolerated, records will be re-delivered): " + e);
        }
    }

    // ------------------------------------------------------------------ broker kill

    static void requestKill() throws Exception {
        String ctl = System.getenv("FERRY_CONTROL_DIR");
        if (ctl == null || !Files.isDirectory(Path.of(ctl))) {
            fail("mode 'kill' needs FERRY_CONTROL_DIR (run it through tests/compat/run.sh)");
        }
        Path dir = Path.of(ctl);
        Path done = dir.resolve("kill-done");
        Path failed = dir.resolve("kill-failed");
        Files.deleteIfExists(done);
        Files.deleteIfExists(failed);
        Path tmp = dir.resolve(".kill-request." + ProcessHandle.current().pid());
        Files.writeString(tmp, label + "\n");
        Files.move(tmp, dir.resolve("kill-request"), StandardCopyOption.ATOMIC_MOVE);
        long[] snapshot;
        synchronized (LOCK) {
            killPhase = "during";
            snapshot = ACKED.clone();
        }
        log("asked the runner to SIGKILL and restart the broker; acknowledged commits so far " + Arrays.toString(snapshot));
        long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!Files.exists(done)) {
            if (Files.exists(failed)) {
                fail("runner could not restart the broker: " + Files.readString(failed).trim());
            }
            if (remainingMs() <= 0 || System.nanoTime() > until) {
                fail("runner did not report kill-done within 30 s");
            }
            sleepMs(20);
        }
        synchronized (LOCK) {
            killPhase = "after";
            floor = ACKED.clone();
        }
        log("broker killed and restarted (" + Files.readString(done).trim() + "); commits acknowledged before the "
                + "restart: " + Arrays.toString(floor));
    }

    // ------------------------------------------------------------------ members

    /** One group member: poll -> process -> commitSync, until stopped; then close (LeaveGroup). */
    static final class Member extends Thread {
        volatile boolean stopping;
        volatile String error;
        int pollErrors;

        Member(String name) {
            super(name);
            setDaemon(true);
        }

        void stopAndJoin() throws InterruptedException {
            stopping = true;
            join(Math.max(Math.min(remainingMs(), 20_000), 1));
            if (isAlive()) {
                fail("member " + getName() + " did not close within 20 s");
            }
            if (error != null) {
                fail("member " + getName() + " died: " + error);
            }
        }

        @Override
        public void run() {
            String name = getName();
            try {
                KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(consumerProps(name));
                try {
                    c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                        @Override
                        public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                            log(name + ": revoked " + partitions(parts));
                        }

                        @Override
                        public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                            log(name + ": assigned " + partitions(parts));
                        }

                        @Override
                        public void onPartitionsLost(Collection<TopicPartition> parts) {
                            log(name + ": lost " + partitions(parts));
                        }
                    });
                    while (!stopping) {
                        ConsumerRecords<byte[], byte[]> recs;
                        try {
                            recs = c.poll(Duration.ofMillis(300));
                        } catch (KafkaException e) {
                            if (++pollErrors <= 5) {
                                log(name + ": poll error (tolerated): " + e);
                            }
                            sleepMs(200);
                            continue;
                        }
                        if (recs.isEmpty()) {
                            continue;
                        }
                        Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
                        for (ConsumerRecord<byte[], byte[]> r : recs) {
                            process(name, r.partition(), r.offset(), r.key(), r.value());
                            next.merge(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1),
                                    (a, b) -> a.offset() >= b.offset() ? a : b);
                        }
                        sleepMs(PROCESS_DELAY_US * recs.count() / 1000);
                        try {
                            c.commitSync(next, Duration.ofSeconds(10));
                            acknowledged(next);
                        } catch (KafkaException e) {
                            commitError(name, e);
                        }
                    }
                } finally {
                    c.close(CloseOptions.timeout(Duration.ofSeconds(10)));
                }
            } catch (Throwable t) {
                error = t.toString();
            }
        }
    }

    static List<Integer> partitions(Collection<TopicPartition> parts) {
        return parts.stream().map(TopicPartition::partition).sorted().collect(Collectors.toList());
    }
}
