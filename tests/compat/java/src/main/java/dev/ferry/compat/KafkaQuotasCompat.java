package dev.ferry.compat;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterClientQuotasOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.errors.InvalidRequestException;
import org.apache.kafka.common.quota.ClientQuotaAlteration;
import org.apache.kafka.common.quota.ClientQuotaEntity;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.apache.kafka.common.quota.ClientQuotaFilterComponent;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.internals.Exit;
import org.apache.kafka.tools.ConfigCommand;

/**
 * Ferry compatibility check: client quotas with Kafka 4.4's own tool and AdminClient.
 *
 * <ol>
 *   <li>kafka-configs.sh (ConfigCommand, in-process) --alter --add-config producer_byte_rate=...,
 *       consumer_byte_rate=... on a user, on a client id and on (default user, client id); --describe
 *       of each entity type lists them with their values.
 *   <li>AdminClient: alterClientQuotas with validateOnly changes nothing; an unknown key and a
 *       fractional byte rate are refused with InvalidRequestException; describeClientQuotas with a
 *       strict filter finds exactly one entity; a removed quota (null value) is gone.
 *   <li>A Java producer (client defaults) under producer_byte_rate=100000 sends 2.5 MB: it takes
 *       about (bytes / quota - 10 s window) and its produce-throttle-time-max metric is above zero.
 *   <li>Every quota set here is deleted again with kafka-configs.sh --delete-config.
 * </ol>
 *
 * <p>Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092).
 */
public final class KafkaQuotasCompat {
    private static final CompatOutput OUT = new CompatOutput("java-quotas");
    private static final String BOOTSTRAP = System.getenv().getOrDefault("FERRY_BOOTSTRAP", "127.0.0.1:9092");
    private static final String SUFFIX = UUID.randomUUID().toString().substring(0, 8);
    private static final String USER = "quota-user-" + SUFFIX;
    private static final String CLIENT = "quota-client-" + SUFFIX;
    private static final String PRODUCER = "quota-java-" + SUFFIX;

    private KafkaQuotasCompat() {}

    static String configs(String... args) throws Exception {
        List<String> all = new ArrayList<>(List.of("--bootstrap-server", BOOTSTRAP));
        all.addAll(List.of(args));
        return KafkaToolsCompat.runTool("kafka-configs", ConfigCommand::main, all.toArray(new String[0]));
    }

    public static void main(String[] args) throws Exception {
        Exit.setExitProcedure((code, message) -> {
            throw new KafkaToolsCompat.ToolExit(code, message);
        });
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        try (Admin admin = Admin.create(p)) {
            withTheTool();
            withTheAdminClient(admin);
            String topic = "compat-quotas-" + SUFFIX;
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(15, TimeUnit.SECONDS);
            producerIsThrottled(topic);
        }
        configs("--alter", "--entity-type", "users", "--entity-name", USER, "--delete-config", "producer_byte_rate,consumer_byte_rate");
        configs("--alter", "--entity-type", "clients", "--entity-name", CLIENT, "--delete-config", "producer_byte_rate");
        configs("--alter", "--entity-type", "users", "--entity-default", "--entity-type", "clients", "--entity-name", CLIENT,
            "--delete-config", "request_percentage");
        configs("--alter", "--entity-type", "clients", "--entity-name", PRODUCER, "--delete-config", "producer_byte_rate");
        String left = configs("--describe", "--entity-type", "clients");
        if (left.contains(CLIENT) || left.contains(PRODUCER)) {
            OUT.fail("quotas deleted with --delete-config are still described:\n" + left);
        }
        OUT.log("OK");
        System.exit(0);
    }

    static void expect(String out, String... parts) {
        for (String part : parts) {
            if (!out.contains(part)) {
                OUT.fail("kafka-configs printed no '" + part + "':\n" + out);
            }
        }
    }

    static void withTheTool() throws Exception {
        configs("--alter", "--entity-type", "users", "--entity-name", USER, "--add-config", "producer_byte_rate=1048576,consumer_byte_rate=2097152");
        configs("--alter", "--entity-type", "clients", "--entity-name", CLIENT, "--add-config", "producer_byte_rate=524288");
        configs("--alter", "--entity-type", "users", "--entity-default", "--entity-type", "clients", "--entity-name", CLIENT,
            "--add-config", "request_percentage=150");
        expect(configs("--describe", "--entity-type", "users", "--entity-name", USER),
            "user-principal '" + USER + "'", "producer_byte_rate=1048576", "consumer_byte_rate=2097152");
        expect(configs("--describe", "--entity-type", "clients"), "client-id '" + CLIENT + "'", "producer_byte_rate=524288");
        expect(configs("--describe", "--entity-type", "users", "--entity-default", "--entity-type", "clients", "--entity-name", CLIENT),
            "request_percentage=150");
        OUT.log("kafka-configs: quotas on a user, a client id and (default user, client id) set and described");
    }

    static void withTheAdminClient(Admin admin) throws Exception {
        ClientQuotaEntity client = new ClientQuotaEntity(Map.of(ClientQuotaEntity.CLIENT_ID, CLIENT));
        ClientQuotaFilter strict = ClientQuotaFilter.containsOnly(List.of(ClientQuotaFilterComponent.ofEntity(ClientQuotaEntity.CLIENT_ID, CLIENT)));
        var set = new ClientQuotaAlteration(client, List.of(new ClientQuotaAlteration.Op("consumer_byte_rate", 4096.0)));
        admin.alterClientQuotas(List.of(set), new AlterClientQuotasOptions().validateOnly(true)).all().get(15, TimeUnit.SECONDS);
        Map<ClientQuotaEntity, Map<String, Double>> found = admin.describeClientQuotas(strict).entities().get(15, TimeUnit.SECONDS);
        if (!found.equals(Map.of(client, Map.of("producer_byte_rate", 524288.0)))) {
            OUT.fail("after a validateOnly alteration: " + found);
        }
        refused(admin, new ClientQuotaAlteration(client, List.of(new ClientQuotaAlteration.Op("no_such_quota", 1.0))));
        refused(admin, new ClientQuotaAlteration(client, List.of(new ClientQuotaAlteration.Op("producer_byte_rate", 1.5))));
        admin.alterClientQuotas(List.of(set)).all().get(15, TimeUnit.SECONDS);
        var remove = new ClientQuotaAlteration(client, List.of(new ClientQuotaAlteration.Op("consumer_byte_rate", null)));
        found = admin.describeClientQuotas(strict).entities().get(15, TimeUnit.SECONDS);
        if (!found.equals(Map.of(client, Map.of("producer_byte_rate", 524288.0, "consumer_byte_rate", 4096.0)))) {
            OUT.fail("after setting consumer_byte_rate: " + found);
        }
        admin.alterClientQuotas(List.of(remove)).all().get(15, TimeUnit.SECONDS);
        found = admin.describeClientQuotas(strict).entities().get(15, TimeUnit.SECONDS);
        if (!found.equals(Map.of(client, Map.of("producer_byte_rate", 524288.0)))) {
            OUT.fail("after removing consumer_byte_rate: " + found);
        }
        OUT.log("AdminClient: validateOnly, InvalidRequestException for a bad key and a fractional byte rate, strict describe, removal");
    }

    static void refused(Admin admin, ClientQuotaAlteration alteration) throws Exception {
        try {
            admin.alterClientQuotas(List.of(alteration)).all().get(15, TimeUnit.SECONDS);
            OUT.fail("alterClientQuotas accepted " + alteration);
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof InvalidRequestException)) {
                OUT.fail("alterClientQuotas " + alteration + " failed with " + e.getCause() + ", want InvalidRequestException");
            }
        }
    }

    static void producerIsThrottled(String topic) throws Exception {
        double quota = 100_000;
        configs("--alter", "--entity-type", "clients", "--entity-name", PRODUCER, "--add-config", "producer_byte_rate=100000");
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, BOOTSTRAP);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, PRODUCER);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        byte[] value = new byte[10_000];
        int records = 250;
        long started = System.nanoTime();
        double throttleMax;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            List<Future<?>> sent = new ArrayList<>();
            for (int i = 0; i < records; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, 0, null, value)));
            }
            for (Future<?> f : sent) {
                f.get(60, TimeUnit.SECONDS);
            }
            throttleMax = metric(producer.metrics(), "produce-throttle-time-max");
        }
        double seconds = (System.nanoTime() - started) / 1e9;
        double bytes = records * (double) value.length;
        // Kafka spreads a first burst over the 10 s the window spans at first:
        // about bytes / quota - 10 s (15 s here) to get everything acknowledged.
        OUT.log(String.format("producer: %.0f bytes in %.1f s (%.0f B/s, quota %.0f), produce-throttle-time-max %.0f ms",
            bytes, seconds, bytes / seconds, quota, throttleMax));
        if (seconds < 0.5 * (bytes / quota - 10)) {
            OUT.fail("the producer was not slowed to its quota");
        }
        if (!(throttleMax > 0)) {
            OUT.fail("the producer saw no throttle time");
        }
    }

    static double metric(Map<MetricName, ? extends Metric> metrics, String name) {
        return metrics.entrySet().stream()
            .filter(e -> e.getKey().name().equals(name) && e.getKey().group().equals("producer-metrics"))
            .map(e -> ((Number) e.getValue().metricValue()).doubleValue())
            .findFirst()
            .orElse(Double.NaN);
    }
}
