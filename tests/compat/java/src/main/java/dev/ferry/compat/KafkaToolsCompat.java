package dev.ferry.compat;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.internals.Exit;
import org.apache.kafka.tools.DeleteRecordsCommand;
import org.apache.kafka.tools.LeaderElectionCommand;
import org.apache.kafka.tools.reassign.ReassignPartitionsCommand;
import org.apache.kafka.tools.LogDirsCommand;
import org.apache.kafka.tools.MetadataQuorumCommand;

/**
 * Ferry compatibility check: Kafka 4.4's own command-line tools, run in-process with the
 * arguments their shell wrappers pass.
 *
 * <ol>
 *   <li>kafka-delete-records.sh (DeleteRecordsCommand): 100 records, delete below 40; the tool
 *       reports low_watermark 40 and the AdminClient's earliest offset is then 40.
 *   <li>kafka-log-dirs.sh (LogDirsCommand --describe): the partition is listed with a size
 *       greater than zero.
 *   <li>kafka-leader-election.sh (LeaderElectionCommand --election-type PREFERRED), for the
 *       topic's partition and for all partitions: exits 0; the partition already has its
 *       preferred leader.
 *   <li>On a cluster (FERRY_COMPAT_BROKERS=3): kafka-reassign-partitions.sh
 *       (ReassignPartitionsCommand --execute, then --verify until it reports the move complete)
 *       moves the partition to another broker; its records are all still there.
 * </ol>
 *
 * <p>Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092).
 */
public final class KafkaToolsCompat {
    private static final CompatOutput OUT = new CompatOutput("java-tools");
    private static final String BOOTSTRAP = System.getenv().getOrDefault("FERRY_BOOTSTRAP", "127.0.0.1:9092");

    private KafkaToolsCompat() {}

    /** Thrown instead of exiting the JVM when a tool calls Exit.exit. */
    static final class ToolExit extends RuntimeException {
        final int code;

        ToolExit(int code, String message) {
            super(message);
            this.code = code;
        }
    }

    interface Tool {
        void run(String[] args) throws Exception;
    }

    /** Runs a tool's main, returning what it printed; fails on a non-zero exit. */
    static String runTool(String name, Tool tool, String... args) throws Exception {
        PrintStream stdout = System.out;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        int code = 0;
        System.setOut(new PrintStream(captured, true, StandardCharsets.UTF_8));
        try {
            tool.run(args);
        } catch (ToolExit e) {
            code = e.code;
        } finally {
            System.setOut(stdout);
        }
        String out = captured.toString(StandardCharsets.UTF_8);
        OUT.log(name + " printed:\n" + out.strip());
        if (code != 0) {
            OUT.fail(name + " exited with " + code);
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        Exit.setExitProcedure((code, message) -> {
            throw new ToolExit(code, message);
        });
        String topic = "compat-tools-" + UUID.randomUUID().toString().substring(0, 8);
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        try (Admin admin = Admin.create(p)) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(15, TimeUnit.SECONDS);
            produce(topic, 100);
            deleteRecords(admin, topic);
            logDirs(topic);
            leaderElection(topic);
            if (Integer.parseInt(System.getenv().getOrDefault("FERRY_COMPAT_BROKERS", "1")) > 1) {
                reassign(admin, topic);
            }
        }
        metadataQuorum();
        OUT.log("OK");
        System.exit(0);
    }

    static void produce(String topic, int n) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            List<java.util.concurrent.Future<?>> sent = new java.util.ArrayList<>();
            for (int i = 0; i < n; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, 0, null, "record-" + i)));
            }
            for (java.util.concurrent.Future<?> f : sent) {
                f.get(15, TimeUnit.SECONDS);
            }
        }
        OUT.log("produced " + n + " records to " + topic);
    }

    static void deleteRecords(Admin admin, String topic) throws Exception {
        Path json = Files.createTempFile("delete-records", ".json");
        Files.writeString(json, "{\"partitions\":[{\"topic\":\"" + topic + "\",\"partition\":0,\"offset\":40}],\"version\":1}");
        String out = runTool("kafka-delete-records", DeleteRecordsCommand::main,
            "--bootstrap-server", BOOTSTRAP, "--offset-json-file", json.toString());
        Files.deleteIfExists(json);
        if (!out.contains("partition: " + topic + "-0\tlow_watermark: 40")) {
            OUT.fail("kafka-delete-records did not report low_watermark 40");
        }
        TopicPartition tp = new TopicPartition(topic, 0);
        ListOffsetsResult.ListOffsetsResultInfo earliest =
            admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).partitionResult(tp).get(15, TimeUnit.SECONDS);
        if (earliest.offset() != 40) {
            OUT.fail("earliest offset after delete-records is " + earliest.offset() + ", want 40");
        }
        OUT.log("delete-records: low watermark 40, earliest offset 40");
    }

    static void leaderElection(String topic) throws Exception {
        String named = runTool("kafka-leader-election", LeaderElectionCommand::main,
            "--bootstrap-server", BOOTSTRAP, "--election-type", "PREFERRED", "--topic", topic, "--partition", "0");
        if (!named.contains("Valid replica already elected for partitions " + topic + "-0")) {
            OUT.fail("kafka-leader-election did not report " + topic + "-0 as already led by its preferred replica");
        }
        runTool("kafka-leader-election", LeaderElectionCommand::main,
            "--bootstrap-server", BOOTSTRAP, "--election-type", "PREFERRED", "--all-topic-partitions");
        OUT.log("leader-election: " + topic + "-0 already has its preferred leader");
    }

    /**
     * Moves the topic's only replica to another broker (the broker that joined the
     * cluster after it started, when there is one) and waits until the tool calls it done.
     */
    static void reassign(Admin admin, String topic) throws Exception {
        TopicPartition tp = new TopicPartition(topic, 0);
        int from = admin.describeTopics(List.of(topic)).allTopicNames().get(15, TimeUnit.SECONDS)
            .get(topic).partitions().get(0).replicas().get(0).id();
        String joined = System.getenv("FERRY_COMPAT_OBSERVER");
        int to = joined != null && Integer.parseInt(joined) != from ? Integer.parseInt(joined) : from % 3 + 1;
        Path json = Files.createTempFile("reassign", ".json");
        Files.writeString(json, "{\"version\":1,\"partitions\":[{\"topic\":\"" + topic
            + "\",\"partition\":0,\"replicas\":[" + to + "],\"log_dirs\":[\"any\"]}]}");
        runTool("kafka-reassign-partitions", ReassignPartitionsCommand::main,
            "--bootstrap-server", BOOTSTRAP, "--reassignment-json-file", json.toString(), "--execute");
        String verified = "";
        long deadline = System.currentTimeMillis() + 60_000;
        while (!verified.contains("Reassignment of partition " + topic + "-0 is completed")) {
            if (System.currentTimeMillis() > deadline) {
                OUT.fail("kafka-reassign-partitions --verify never reported " + topic + "-0 completed:\n" + verified);
            }
            Thread.sleep(500);
            verified = runTool("kafka-reassign-partitions", ReassignPartitionsCommand::main,
                "--bootstrap-server", BOOTSTRAP, "--reassignment-json-file", json.toString(), "--verify");
        }
        Files.deleteIfExists(json);
        List<Integer> now = admin.describeTopics(List.of(topic)).allTopicNames().get(15, TimeUnit.SECONDS)
            .get(topic).partitions().get(0).replicas().stream().map(n -> n.id()).toList();
        if (!now.equals(List.of(to))) {
            OUT.fail("after the move " + topic + "-0 is on " + now + ", want [" + to + "]");
        }
        long end = 0;
        long waitEnd = System.currentTimeMillis() + 30_000;
        while (end != 100 && System.currentTimeMillis() < waitEnd) {
            try {
                end = admin.listOffsets(Map.of(tp, OffsetSpec.latest())).partitionResult(tp).get(5, TimeUnit.SECONDS).offset();
            } catch (Exception e) {
                Thread.sleep(300); // the new leader may not be known yet
            }
        }
        if (end != 100) {
            OUT.fail("after the move " + topic + "-0 ends at " + end + ", want 100");
        }
        OUT.log("reassign-partitions: " + topic + "-0 moved from broker " + from + " to " + to + ", all 100 records there");
    }

    static void logDirs(String topic) throws Exception {
        String out = runTool("kafka-log-dirs", LogDirsCommand::main,
            "--bootstrap-server", BOOTSTRAP, "--describe", "--topic-list", topic);
        String json = out.lines().filter(l -> l.startsWith("{")).findFirst().orElse("");
        java.util.regex.Matcher m = java.util.regex.Pattern
            .compile("\"partition\":\"" + java.util.regex.Pattern.quote(topic) + "-0\",\"size\":(\\d+)")
            .matcher(json);
        if (!m.find()) {
            OUT.fail("kafka-log-dirs did not list " + topic + "-0");
        }
        long size = Long.parseLong(m.group(1));
        if (size <= 0) {
            OUT.fail("kafka-log-dirs reports size " + size + " for " + topic + "-0");
        }
        OUT.log("log-dirs: " + topic + "-0 holds " + size + " bytes");
    }

    /** kafka-metadata-quorum.sh describe --status: a leader, and every broker a voter. */
    static void metadataQuorum() throws Exception {
        int brokers = Integer.parseInt(System.getenv().getOrDefault("FERRY_COMPAT_BROKERS", "1"));
        String out = runTool("kafka-metadata-quorum", MetadataQuorumCommand::main,
            "--bootstrap-server", BOOTSTRAP, "describe", "--status");
        java.util.regex.Matcher leader = java.util.regex.Pattern.compile("LeaderId:\\s+(\\d+)").matcher(out);
        java.util.regex.Matcher voters = java.util.regex.Pattern.compile("CurrentVoters:\\s+\\[(.*)\\]").matcher(out);
        if (!leader.find() || !voters.find()) {
            OUT.fail("kafka-metadata-quorum printed no LeaderId or CurrentVoters");
        }
        long listed = java.util.regex.Pattern.compile("\"id\":\\s*\\d+").matcher(voters.group(1)).results().count();
        if (listed != brokers) {
            OUT.fail("kafka-metadata-quorum lists " + listed + " voters, want " + brokers);
        }
        String joined = System.getenv("FERRY_COMPAT_OBSERVER");
        if (joined != null) {
            java.util.regex.Matcher observers = java.util.regex.Pattern.compile("CurrentObservers:\\s+\\[(.*)\\]").matcher(out);
            if (!observers.find() || !observers.group(1).matches(".*\"id\":\\s*" + joined + "\\b.*")) {
                OUT.fail("kafka-metadata-quorum does not list the joined broker " + joined + " among CurrentObservers:\n" + out);
            }
        }
        OUT.log("metadata-quorum: leader " + leader.group(1) + ", " + listed + " voter(s)" + (joined != null ? ", observer " + joined : ""));
    }
}
