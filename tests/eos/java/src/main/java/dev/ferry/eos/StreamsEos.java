package dev.ferry.eos;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.TopicConfig;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

/**
 * streams-eos: a Kafka Streams word count with processing.guarantee=exactly_once_v2, broker SIGKILLed and
 * restarted once mid-run.
 *
 * <p>Input: a known text (deterministic pseudo-random lines over a 400-word vocabulary, skewed so that
 * some words are hot) produced to a 3-partition topic. Topology: split lines into words, groupBy word
 * (repartition topic), count (state store "counts" with its changelog topic), to the output topic. The
 * record cache is off (statestore.cache.max.bytes=0), so every occurrence of a word emits the word's new
 * count: read_committed, the output of a word must be exactly 1, 2, ..., expected in order (a double count
 * shows as a repeated or skipped value, a lost update as a missing value).
 *
 * <p>Mid-run (at 40% of the expected output) the runner SIGKILLs and restarts the broker. At the end the
 * output is read again read_committed and checked per word, and the changelog's last value per word must
 * be the expected count.
 *
 * <p>Internal topics: Streams creates the changelog with cleanup.policy=compact, which Ferry refuses (only
 * delete is supported). With FERRY_EOS_STREAMS_DELETE_POLICY=1 (the runner's default) the application sets
 * the ordinary Streams user setting {@code topic.cleanup.policy=delete} (StreamsConfig.topicPrefix), which
 * Streams applies to every internal topic it creates. With 0 it leaves Streams' defaults, to show what
 * Ferry answers.
 *
 * <p>Diagnosis only: FERRY_EOS_STREAMS_PRECREATE=repartition|changelog|all creates those internal topics with
 * the Admin client before Streams starts (cleanup.policy=delete), so Streams does not create them itself.
 * This works around the broker rather than configuring the client, so it is never the default.
 *
 * <p>Env: FERRY_BOOTSTRAP, FERRY_CONTROL_DIR, FERRY_EOS_TIMEOUT (s, default 200), FERRY_EOS_RUN_ID,
 * FERRY_EOS_STREAMS_LINES (default 15000), FERRY_EOS_STREAMS_DELETE_POLICY (default 1),
 * FERRY_EOS_STREAMS_PRECREATE (default none), FERRY_EOS_STATE_DIR.
 */
public final class StreamsEos {
    private static final int PARTS = 3;
    private static final int VOCAB = 400;
    private static final double KILL_AT = 0.40;

    private final String run = Eos.runId();
    private final String appId = "eos-wc-" + run;
    private final String input = "eos-wc-lines-" + run;
    private final String output = "eos-wc-counts-" + run;
    private final String changelog = appId + "-counts-changelog";
    private final String repartition = appId + "-words-repartition";
    private final int lines;
    private final long deadline;
    private final Map<String, Long> expected = new TreeMap<>();
    private long totalWords;

    private StreamsEos(int lines, int timeoutS) {
        this.lines = lines;
        this.deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutS);
    }

    public static void main(String[] args) throws Exception {
        // Show the internal topics Streams creates (with their configs) and its producer's transactions.
        System.setProperty("org.slf4j.simpleLogger.log.org.apache.kafka.streams.processor.internals.InternalTopicManager", "debug");
        System.setProperty("org.slf4j.simpleLogger.log.org.apache.kafka.streams.KafkaStreams", "info");
        System.setProperty("org.slf4j.simpleLogger.log.org.apache.kafka.streams.processor.internals.StreamThread", "info");
        int lines = Integer.parseInt(System.getenv().getOrDefault("FERRY_EOS_STREAMS_LINES", "15000"));
        StreamsEos t = new StreamsEos(lines, Eos.timeoutSeconds(200));
        boolean ok;
        try {
            ok = t.run();
        } catch (Throwable e) {
            Eos.log("FAILED with %s", Eos.chain(e));
            e.printStackTrace();
            ok = false;
        }
        Eos.log(ok ? "streams-eos: OK" : "streams-eos: FAILED");
        System.exit(ok ? 0 : 1);
    }

    private static String word(int i) {
        // pronounceable, distinct words: "ba", "be", ..., with a numeric tail where needed
        String[] syl = {"ba", "ke", "lo", "mi", "nu", "ra", "so", "ti", "vu", "ze"};
        return syl[i % 10] + syl[(i / 10) % 10] + (i >= 100 ? syl[(i / 100) % 10] : "") + (i >= 1000 ? Integer.toString(i) : "");
    }

    private List<String> text() {
        Random rnd = new Random(20240611L);
        List<String> out = new ArrayList<>(lines);
        for (int l = 0; l < lines; l++) {
            int nw = 1 + rnd.nextInt(12);
            StringBuilder sb = new StringBuilder();
            for (int w = 0; w < nw; w++) {
                double r = rnd.nextDouble();
                String wd = word((int) (r * r * VOCAB)); // skewed: low indexes are hot
                if (w > 0) sb.append(' ');
                sb.append(wd);
                expected.merge(wd, 1L, Long::sum);
                totalWords++;
            }
            out.add(sb.toString());
        }
        return out;
    }

    private boolean run() throws Exception {
        boolean deletePolicy = !"0".equals(System.getenv().getOrDefault("FERRY_EOS_STREAMS_DELETE_POLICY", "1"));
        String precreate = System.getenv().getOrDefault("FERRY_EOS_STREAMS_PRECREATE", "none");
        try (Admin admin = Eos.admin()) {
            Eos.createTopic(admin, input, PARTS, null);
            Eos.createTopic(admin, output, PARTS, null);
            // Diagnosis only (not the default): create Streams' internal topics beforehand, with configs Ferry
            // accepts, so that Streams finds them and does not send its own CreateTopics.
            if (precreate.equals("repartition") || precreate.equals("all")) {
                Eos.createTopic(admin, repartition, PARTS, Map.of(TopicConfig.CLEANUP_POLICY_CONFIG, TopicConfig.CLEANUP_POLICY_DELETE,
                        TopicConfig.RETENTION_MS_CONFIG, "-1"));
                Eos.log("DIAGNOSIS MODE: pre-created the repartition topic %s (FERRY_EOS_STREAMS_PRECREATE=%s)", repartition, precreate);
            }
            if (precreate.equals("changelog") || precreate.equals("all")) {
                Eos.createTopic(admin, changelog, PARTS, Map.of(TopicConfig.CLEANUP_POLICY_CONFIG, TopicConfig.CLEANUP_POLICY_DELETE));
                Eos.log("DIAGNOSIS MODE: pre-created the changelog topic %s (FERRY_EOS_STREAMS_PRECREATE=%s)", changelog, precreate);
            }
        }
        List<String> text = text();
        Eos.log("text: %d lines, %d words, %d distinct; hottest %s", lines, totalWords, expected.size(),
                expected.entrySet().stream().sorted((a, b) -> Long.compare(b.getValue(), a.getValue())).limit(3).toList());
        Properties pp = Eos.producerProps("eos-wc-input");
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
            for (int i = 0; i < text.size(); i++) p.send(new ProducerRecord<>(input, "line-" + i, text.get(i)));
            p.flush();
        }
        Eos.log("produced %d lines to %s", text.size(), input);

        Monitor mon = new Monitor();
        Thread monThread = new Thread(mon, "output-monitor");
        monThread.setDaemon(true);
        monThread.start();

        Path stateDir = System.getenv("FERRY_EOS_STATE_DIR") != null
                ? Files.createDirectories(Path.of(System.getenv("FERRY_EOS_STATE_DIR")))
                : Files.createTempDirectory("ferry-eos-streams");
        Properties sp = new Properties();
        sp.putAll(Eos.common());
        sp.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        sp.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, Eos.bootstrap());
        sp.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        sp.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, "0");
        sp.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, "1");
        sp.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, "1");
        sp.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        sp.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), "10000");
        sp.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), "1000");
        sp.put(StreamsConfig.producerPrefix(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG), "10000");
        if (deletePolicy) {
            // An ordinary Streams user setting: configs for the internal topics Streams creates.
            sp.put(StreamsConfig.topicPrefix(TopicConfig.CLEANUP_POLICY_CONFIG), TopicConfig.CLEANUP_POLICY_DELETE);
            Eos.log("internal topics: %s=%s (Ferry supports only cleanup.policy=delete)",
                    StreamsConfig.topicPrefix(TopicConfig.CLEANUP_POLICY_CONFIG), TopicConfig.CLEANUP_POLICY_DELETE);
        } else {
            Eos.log("internal topics: Streams' default configs (changelog cleanup.policy=compact)");
        }

        StreamsBuilder b = new StreamsBuilder();
        b.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(line -> Arrays.asList(line.split(" ")))
                .groupBy((k, w) -> w, Grouped.with("words", Serdes.String(), Serdes.String()))
                .count(Materialized.as("counts"))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));

        AtomicReference<Throwable> died = new AtomicReference<>();
        List<String> states = new ArrayList<>();
        boolean ok = true;
        long t0 = System.nanoTime();
        KafkaStreams streams = new KafkaStreams(b.build(), sp);
        streams.setStateListener((now, old) -> {
            synchronized (states) {
                states.add(String.format("%.1fs %s->%s", Eos.elapsed(), old, now));
            }
            Eos.log("streams state %s -> %s", old, now);
        });
        streams.setUncaughtExceptionHandler(e -> {
            Eos.log("streams thread died: %s", Eos.chain(e));
            died.compareAndSet(null, e);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        try {
            streams.start();
            boolean killRequested = false, killDone = false;
            long lastReport = 0;
            while (true) {
                if (System.nanoTime() > deadline) throw new IllegalStateException("timed out: output " + mon.records.get() + "/" + totalWords);
                if (died.get() != null) throw new IllegalStateException("the Streams thread died", died.get());
                KafkaStreams.State st = streams.state();
                if (st == KafkaStreams.State.ERROR || st == KafkaStreams.State.NOT_RUNNING || st == KafkaStreams.State.PENDING_ERROR) {
                    throw new IllegalStateException("Streams is " + st);
                }
                long got = mon.records.get();
                if (!killRequested && got >= KILL_AT * totalWords) {
                    Eos.requestKill(String.format("streams-eos at %d/%d output records", got, totalWords));
                    killRequested = true;
                }
                if (killRequested && !killDone && Eos.killDone()) killDone = true;
                if (killDone && mon.complete(expected)) break;
                if (System.nanoTime() - lastReport > 3_000_000_000L) {
                    lastReport = System.nanoTime();
                    Eos.log("progress: %d/%d updates read_committed, %d/%d words complete, streams %s", got, totalWords,
                            mon.completeWords(expected), expected.size(), st);
                }
                Thread.sleep(50);
            }
            Eos.log("all %d word counts reached in %.1fs", expected.size(), (System.nanoTime() - t0) / 1e9);
        } finally {
            streams.close(Duration.ofSeconds(30));
            mon.stop();
            monThread.join(10_000);
            Eos.log("streams states: %s", states);
        }
        if (!mon.violations.isEmpty()) {
            ok = false;
            Eos.log("CHECK FAILED (live read_committed): %d sequence violations, e.g. %s", mon.violationCount.get(), mon.violations);
        }
        ok &= verifyOutput();
        ok &= verifyChangelog();
        return ok;
    }

    /** Per word: the read_committed output must be exactly 1..expected in order. */
    private boolean verifyOutput() {
        Map<String, Long> last = new HashMap<>();
        List<String> bad = new ArrayList<>();
        AtomicLong badCount = new AtomicLong();
        AtomicLong n = new AtomicLong();
        readLongs(output, true, r -> {
            n.incrementAndGet();
            long prev = last.getOrDefault(r.key(), 0L);
            if (r.value() != prev + 1) {
                badCount.incrementAndGet();
                if (bad.size() < 10) bad.add(r.key() + ": " + prev + " then " + r.value() + " at " + r.partition() + "@" + r.offset());
            }
            last.put(r.key(), r.value());
        });
        List<String> wrong = new ArrayList<>();
        for (var e : expected.entrySet()) {
            Long got = last.get(e.getKey());
            if (got == null || got.longValue() != e.getValue()) wrong.add(e.getKey() + "=" + got + " (want " + e.getValue() + ")");
        }
        for (String k : last.keySet()) if (!expected.containsKey(k)) wrong.add(k + " (not in the text)");
        Eos.log("final read_committed output: %d records (want %d), %d words; %d sequence violations; %d wrong final counts",
                n.get(), totalWords, last.size(), badCount.get(), wrong.size());
        boolean ok = badCount.get() == 0 && wrong.isEmpty() && n.get() == totalWords;
        if (!ok) {
            Eos.log("CHECK FAILED: violations e.g. %s; wrong counts e.g. %s", bad, wrong.subList(0, Math.min(10, wrong.size())));
        } else {
            Eos.log("check ok: every word counted exactly (output 1..n per word, no double counting)");
        }
        return ok;
    }

    /** The changelog's last value per word (read_committed) is the expected count. */
    private boolean verifyChangelog() throws Exception {
        int parts;
        Map<String, String> cfg;
        try (Admin admin = Eos.admin()) {
            TopicDescription d = admin.describeTopics(List.of(changelog)).allTopicNames().get(30, TimeUnit.SECONDS).get(changelog);
            parts = d.partitions().size();
            var res = new org.apache.kafka.common.config.ConfigResource(org.apache.kafka.common.config.ConfigResource.Type.TOPIC, changelog);
            cfg = new TreeMap<>();
            admin.describeConfigs(List.of(res)).all().get(30, TimeUnit.SECONDS).get(res).entries()
                    .forEach(e -> cfg.put(e.name(), e.value()));
        }
        Eos.log("changelog %s: %d partitions, cleanup.policy=%s", changelog, parts, cfg.get("cleanup.policy"));
        Map<String, Long> last = new HashMap<>();
        AtomicLong n = new AtomicLong();
        Properties p = Eos.consumerProps("eos-wc-changelog", null, true);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        List<TopicPartition> tps = Eos.partitions(changelog, parts);
        try (KafkaConsumer<String, byte[]> c = new KafkaConsumer<>(p)) {
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofSeconds(30));
            long dl = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (tps.stream().anyMatch(tp -> c.position(tp) < end.get(tp))) {
                if (System.nanoTime() > dl) throw new IllegalStateException("reading the changelog timed out");
                for (ConsumerRecord<String, byte[]> r : c.poll(Duration.ofMillis(500))) {
                    n.incrementAndGet();
                    byte[] v = r.value();
                    if (v == null) last.remove(r.key());
                    else last.put(r.key(), ByteBuffer.wrap(v, v.length - 8, 8).getLong()); // the count is the last 8 bytes
                }
            }
        }
        List<String> wrong = new ArrayList<>();
        for (var e : expected.entrySet()) {
            Long got = last.get(e.getKey());
            if (got == null || got.longValue() != e.getValue()) wrong.add(e.getKey() + "=" + got + " (want " + e.getValue() + ")");
        }
        Eos.log("changelog read_committed: %d records, %d words; %d wrong final counts", n.get(), last.size(), wrong.size());
        if (!wrong.isEmpty()) {
            Eos.log("CHECK FAILED: changelog final counts wrong, e.g. %s", wrong.subList(0, Math.min(10, wrong.size())));
            return false;
        }
        Eos.log("check ok: the changelog's last count per word is exact");
        return true;
    }

    private void readLongs(String topic, boolean rc, java.util.function.Consumer<ConsumerRecord<String, Long>> sink) {
        Properties p = Eos.consumerProps("eos-wc-verify", null, rc);
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, LongDeserializer.class.getName());
        List<TopicPartition> tps = Eos.partitions(topic, PARTS);
        try (KafkaConsumer<String, Long> c = new KafkaConsumer<>(p)) {
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofSeconds(30));
            long dl = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (tps.stream().anyMatch(tp -> c.position(tp) < end.get(tp))) {
                if (System.nanoTime() > dl) throw new IllegalStateException("reading " + topic + " timed out");
                for (ConsumerRecord<String, Long> r : c.poll(Duration.ofMillis(500))) sink.accept(r);
            }
        }
    }

    /** Follows the output read_committed while the application runs. */
    private final class Monitor implements Runnable {
        final AtomicLong records = new AtomicLong();
        final Map<String, Long> last = new ConcurrentHashMap<>();
        final List<String> violations = java.util.Collections.synchronizedList(new ArrayList<>());
        final AtomicLong violationCount = new AtomicLong();
        private volatile boolean stop;
        private volatile KafkaConsumer<String, Long> consumer;

        @Override
        public void run() {
            Properties p = Eos.consumerProps("eos-wc-monitor", null, true);
            p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, LongDeserializer.class.getName());
            try (KafkaConsumer<String, Long> c = new KafkaConsumer<>(p)) {
                consumer = c;
                List<TopicPartition> tps = Eos.partitions(output, PARTS);
                c.assign(tps);
                c.seekToBeginning(tps);
                while (!stop) {
                    for (ConsumerRecord<String, Long> r : c.poll(Duration.ofMillis(200))) {
                        records.incrementAndGet();
                        long prev = last.getOrDefault(r.key(), 0L);
                        if (r.value() != prev + 1) {
                            violationCount.incrementAndGet();
                            if (violations.size() < 10) violations.add(r.key() + ": " + prev + " then " + r.value() + " at " + r.partition() + "@" + r.offset());
                        }
                        last.put(r.key(), r.value());
                    }
                }
            } catch (WakeupException e) {
                // stopping
            } catch (Exception e) {
                Eos.log("monitor failed: %s", Eos.chain(e));
            }
        }

        boolean complete(Map<String, Long> want) {
            return completeWords(want) == want.size();
        }

        int completeWords(Map<String, Long> want) {
            int c = 0;
            for (var e : want.entrySet()) if (e.getValue().equals(last.get(e.getKey()))) c++;
            return c;
        }

        void stop() {
            stop = true;
            KafkaConsumer<String, Long> c = consumer;
            if (c != null) c.wakeup();
        }
    }
}
