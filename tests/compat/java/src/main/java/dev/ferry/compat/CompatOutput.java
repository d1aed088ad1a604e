package dev.ferry.compat;

/** What a compat check prints: progress lines with the time since start, and a FAIL line that ends the JVM at once. */
final class CompatOutput {
    private final String client;
    private final long start = System.nanoTime();

    CompatOutput(String client) {
        this.client = client;
    }

    void fail(String msg) {
        System.err.println("FAIL [" + client + "]: " + msg);
        System.err.flush();
        Runtime.getRuntime().halt(1);
    }

    void log(String msg) {
        System.out.printf("[%s %6.2fs] %s%n", client, (System.nanoTime() - start) / 1e9, msg);
        System.out.flush();
    }
}
