// Small Kafka-protocol helper for bench/peers/cluster.py, on Kafka's own
// client jars (the same client for Ferry and Kafka). Subcommands:
//
//   wait-brokers BOOTSTRAP N TIMEOUT_S          until DescribeCluster lists N brokers
//   create BOOTSTRAP TOPIC PARTITIONS RF TIMEOUT_S [k=v ...]
//                                               CreateTopics with topic configs, then wait-isr
//   wait-isr BOOTSTRAP TOPIC N TIMEOUT_S        until every partition has a leader and N in sync
//   failover BOOTSTRAP TOPIC RATE SECONDS KILL_AT_S [producer k=v ...]
//       produces RATE records/s (100 B) for SECONDS; at KILL_AT_S prints
//       "KILL <leader id> <epoch ms>" (the caller SIGKILLs that broker), then
//       "RESULT {json}": the longest gap between consecutive acknowledgements
//       and where it lay, per-record latency, errors.
//
// Every JSON answer is one line starting with "RESULT ".

import java.time.Duration;
import java.util.*;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;

public class ClusterTool {
    public static void main(String[] a) throws Exception {
        int rc;
        switch (a[0]) {
            case "wait-brokers": rc = waitBrokers(a[1], Integer.parseInt(a[2]), Integer.parseInt(a[3])); break;
            case "create": rc = create(a); break;
            case "wait-isr": rc = waitIsr(a[1], a[2], Integer.parseInt(a[3]), Integer.parseInt(a[4])); break;
            case "failover": rc = failover(a); break;
            default: System.err.println("unknown subcommand " + a[0]); rc = 2;
        }
        System.out.flush();
        System.exit(rc);
    }

    static Admin admin(String bs) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bs);
        p.put("request.timeout.ms", "5000");
        p.put("default.api.timeout.ms", "10000");
        return Admin.create(p);
    }

    static int waitBrokers(String bs, int n, int timeoutS) throws Exception {
        long end = System.currentTimeMillis() + timeoutS * 1000L;
        String last = "";
        try (Admin ad = admin(bs)) {
            while (System.currentTimeMillis() < end) {
                try {
                    Collection<Node> nodes = ad.describeCluster().nodes().get(5, TimeUnit.SECONDS);
                    last = "brokers " + nodes.size();
                    if (nodes.size() >= n) {
                        System.out.println("RESULT {\"brokers\":" + nodes.size() + "}");
                        return 0;
                    }
                } catch (Exception e) {
                    last = e.toString();
                }
                Thread.sleep(300);
            }
        }
        System.out.println("RESULT {\"error\":" + q("not " + n + " brokers: " + last) + "}");
        return 1;
    }

    static int create(String[] a) throws Exception {
        String bs = a[1], topic = a[2];
        int parts = Integer.parseInt(a[3]);
        short rf = Short.parseShort(a[4]);
        int timeoutS = Integer.parseInt(a[5]);
        Map<String, String> cfg = new HashMap<>();
        for (int i = 6; i < a.length; i++) {
            String[] kv = a[i].split("=", 2);
            cfg.put(kv[0], kv[1]);
        }
        try (Admin ad = admin(bs)) {
            ad.createTopics(List.of(new NewTopic(topic, parts, rf).configs(cfg))).all().get(30, TimeUnit.SECONDS);
        }
        return waitIsr(bs, topic, rf, timeoutS);
    }

    static String describe(Admin ad, String topic, int n, boolean[] ok) throws Exception {
        TopicDescription d = ad.describeTopics(List.of(topic)).allTopicNames().get(5, TimeUnit.SECONDS).get(topic);
        StringBuilder sb = new StringBuilder("{\"topic\":" + q(topic) + ",\"partitions\":[");
        boolean all = true;
        for (TopicPartitionInfo p : d.partitions()) {
            if (p.partition() > 0) sb.append(',');
            int leader = p.leader() == null || p.leader().isEmpty() ? -1 : p.leader().id();
            sb.append("{\"partition\":").append(p.partition()).append(",\"leader\":").append(leader)
              .append(",\"replicas\":").append(ids(p.replicas())).append(",\"isr\":").append(ids(p.isr())).append('}');
            if (leader < 0 || p.isr().size() < n) all = false;
        }
        ok[0] = all;
        return sb.append("]}").toString();
    }

    static int waitIsr(String bs, String topic, int n, int timeoutS) throws Exception {
        long end = System.currentTimeMillis() + timeoutS * 1000L;
        String last = "";
        boolean[] ok = {false};
        try (Admin ad = admin(bs)) {
            while (System.currentTimeMillis() < end) {
                try {
                    last = describe(ad, topic, n, ok);
                    if (ok[0]) {
                        System.out.println("RESULT " + last);
                        return 0;
                    }
                } catch (Exception e) {
                    last = q(e.toString());
                }
                Thread.sleep(300);
            }
        }
        System.out.println("RESULT {\"error\":" + q("not all partitions led with " + n + " in sync") + ",\"last\":" + last + "}");
        return 1;
    }

    static int leaderOf(String bs, String topic) throws Exception {
        try (Admin ad = admin(bs)) {
            TopicDescription d = ad.describeTopics(List.of(topic)).allTopicNames().get(10, TimeUnit.SECONDS).get(topic);
            Node l = d.partitions().get(0).leader();
            return l == null ? -1 : l.id();
        }
    }

    static int failover(String[] a) throws Exception {
        String bs = a[1], topic = a[2];
        int rate = Integer.parseInt(a[3]);
        double seconds = Double.parseDouble(a[4]), killAt = Double.parseDouble(a[5]);
        Properties p = new Properties();
        p.put("bootstrap.servers", bs);
        p.put("key.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
        p.put("value.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
        for (int i = 6; i < a.length; i++) {
            String[] kv = a[i].split("=", 2);
            p.put(kv[0], kv[1]);
        }
        int leader = leaderOf(bs, topic);
        int total = (int) (rate * seconds);
        long[] sendNs = new long[total];
        long[] ackNs = new long[total];    // in acknowledgement order
        int[] ackRec = new int[total];
        AtomicInteger acked = new AtomicInteger();
        AtomicInteger failed = new AtomicInteger();
        Map<String, Integer> errors = Collections.synchronizedMap(new TreeMap<>());
        byte[] value = new byte[100];
        Arrays.fill(value, (byte) 'x');
        long killNs = -1;
        long ns0, epoch0;
        int sent = 0;
        try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p)) {
            // Warm the connection and metadata first (not counted).
            prod.send(new ProducerRecord<>(topic, 0, null, value)).get(30, TimeUnit.SECONDS);
            ns0 = System.nanoTime();
            epoch0 = System.currentTimeMillis();
            long endNs = ns0 + (long) (seconds * 1e9);
            long killAtNs = ns0 + (long) (killAt * 1e9);
            while (sent < total) {
                long now = System.nanoTime();
                if (killNs < 0 && now >= killAtNs) {
                    killNs = now;
                    System.out.println("KILL " + leader + " " + (epoch0 + (now - ns0) / 1_000_000));
                    System.out.flush();
                }
                long due = Math.min(total, (long) ((now - ns0) / 1e9 * rate) + 1);
                while (sent < due) {
                    final int i = sent++;
                    sendNs[i] = System.nanoTime();
                    prod.send(new ProducerRecord<>(topic, 0, null, value), (md, ex) -> {
                        long t = System.nanoTime();
                        if (ex == null) {
                            int k = acked.getAndIncrement();
                            ackNs[k] = t;
                            ackRec[k] = i;
                        } else {
                            failed.incrementAndGet();
                            errors.merge(ex.getClass().getSimpleName() + ": " + ex.getMessage(), 1, Integer::sum);
                        }
                    });
                }
                if (System.nanoTime() > endNs + 5_000_000_000L) break;  // send blocked: give up
                Thread.sleep(1);
            }
            prod.flush();
        }
        int n = acked.get();
        long maxGap = 0;
        int gi = -1;
        for (int k = 1; k < n; k++) {
            long g = ackNs[k] - ackNs[k - 1];
            if (g > maxGap) { maxGap = g; gi = k; }
        }
        long[] lat = new long[n];
        for (int k = 0; k < n; k++) lat[k] = ackNs[k] - sendNs[ackRec[k]];
        Arrays.sort(lat);
        StringBuilder sb = new StringBuilder("{");
        sb.append("\"leader_killed\":").append(leader)
          .append(",\"rate\":").append(rate).append(",\"seconds\":").append(seconds)
          .append(",\"sent\":").append(sent).append(",\"acked\":").append(n).append(",\"failed\":").append(failed.get())
          .append(",\"max_gap_ms\":").append(String.format("%.1f", maxGap / 1e6));
        if (gi > 0) {
            sb.append(",\"gap_start_epoch_ms\":").append(epoch0 + (ackNs[gi - 1] - ns0) / 1_000_000)
              .append(",\"gap_end_epoch_ms\":").append(epoch0 + (ackNs[gi] - ns0) / 1_000_000);
        }
        if (killNs > 0) sb.append(",\"kill_printed_epoch_ms\":").append(epoch0 + (killNs - ns0) / 1_000_000);
        if (n > 0) {
            sb.append(",\"latency_p50_ms\":").append(String.format("%.1f", lat[n / 2] / 1e6))
              .append(",\"latency_p99_ms\":").append(String.format("%.1f", lat[(int) (n * 0.99)] / 1e6))
              .append(",\"latency_max_ms\":").append(String.format("%.1f", lat[n - 1] / 1e6));
        }
        sb.append(",\"errors\":{");
        int j = 0;
        for (Map.Entry<String, Integer> e : errors.entrySet()) {
            if (j++ > 0) sb.append(',');
            sb.append(q(e.getKey())).append(':').append(e.getValue());
        }
        sb.append("}}");
        System.out.println("RESULT " + sb);
        return 0;
    }

    static String ids(List<Node> nodes) {
        StringBuilder sb = new StringBuilder("[");
        for (int i = 0; i < nodes.size(); i++) {
            if (i > 0) sb.append(',');
            sb.append(nodes.get(i).id());
        }
        return sb.append(']').toString();
    }

    static String q(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') sb.append('\\').append(c);
            else if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
            else sb.append(c);
        }
        return sb.append('"').toString();
    }
}
