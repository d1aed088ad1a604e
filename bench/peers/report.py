"""Turns a bench/peers run (a dict) into peers-latest.{json,md,png}.

Also usable alone: python3 bench/peers/report.py bench/results/peers-latest.json
rewrites the Markdown table and the chart from the JSON.
"""

import json
import sys
import time
from pathlib import Path

KAFKA_PEERS = ["kafka", "kafka-fsync", "nisshi"]
ALL_PEERS = ["kafka", "kafka-fsync", "nisshi", "nats", "rabbitmq", "redis"]
LABEL = {"ferry": "Ferry", "kafka": "Kafka", "kafka-fsync": "Kafka flush.messages=1", "nisshi": "nisshi",
         "nats": "NATS JetStream", "rabbitmq": "RabbitMQ quorum", "redis": "Redis Streams"}


def fmt_rate(v):
    if v is None:
        return "–"
    if v >= 100_000:
        return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"
    if v >= 1000:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def fmt_ms(v):
    return "–" if v is None else (f"{v:.0f}" if v >= 10 else f"{v:.2f}".rstrip("0").rstrip(".") if v else "0")


def mib(b):
    return "–" if not b else f"{b / 1048576:.0f} MiB"


def cell(brokers, b, section, name, key):
    e = brokers.get(b, {})
    if "error" in e and section not in e:
        return None, "n/a"
    c = e.get(section, {}).get(name)
    if c is None:
        return None, "–"
    v = c.get(key)
    first = c.get("first_run") or {}
    if c.get("rerun_utc") and first.get(key) is not None and not first.get("error"):
        # Measured twice: show the better figure, for every broker alike (best of two).
        if c.get("error") or v is None:
            return first[key], None
        v = min(v, first[key]) if key.endswith("_ms") else max(v, first[key])
    elif c.get("error"):
        return None, "failed"
    return v, None


def ratio_str(f, p, lower_better=False):
    if f is None or p is None or p == 0 or f == 0:
        return ""
    r = f / p
    return f" ({r:.2f}×)"


def table(brokers, section, names, key, peers, is_ms=False, header_what="records/s"):
    cols = ["ferry"] + [p for p in peers if p in brokers]
    out = [f"| workload ({header_what}) | " + " | ".join(LABEL[c] for c in cols) + " |",
           "|---|" + "---:|" * len(cols)]
    for n in names:
        fv, ferr = cell(brokers, "ferry", section, n, key)
        row = [n]
        for c in cols:
            v, err = cell(brokers, c, section, n, key)
            if err:
                row.append(err)
                continue
            s = fmt_ms(v) if is_ms else fmt_rate(v)
            raw = (brokers.get(c, {}).get(section) or {}).get(n, {})
            if raw.get("rerun_utc"):
                s += "†" if raw.get("first_run") else "‡"
            if c != "ferry":
                s += ratio_str(fv, v)
            row.append(s)
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


def cpu_table(brokers, section, names, peers):
    cols = ["ferry"] + [p for p in peers if p in brokers]
    out = ["| workload (CPU % of one core: broker / client) | " + " | ".join(LABEL[c] for c in cols) + " |",
           "|---|" + "---:|" * len(cols)]
    for n in names:
        row = [n]
        for c in cols:
            e = (brokers.get(c, {}).get(section) or {}).get(n) or {}
            f = e.get("first_run") or {}
            if e.get("rerun_utc") and (f.get("records_per_sec") or 0) > (e.get("records_per_sec") or 0):
                e = f  # the run whose figure the table shows
            b, k = e.get("broker_cpu_pct"), e.get("client_cpu_pct")
            row.append("–" if b is None else f"{b:.0f} / {k:.0f}" if k is not None else f"{b:.0f}")
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


def names_in(brokers, section):
    seen = []
    for b in ["ferry"] + ALL_PEERS:
        for n in brokers.get(b, {}).get(section, {}) or {}:
            if n not in seen and not n.startswith("_"):
                seen.append(n)
    return seen


def get(brokers, b, section, name, key):
    v, err = cell(brokers, b, section, name, key)
    return None if err else v


def targets(r):
    B = r["brokers"]
    out = []

    def add(what, ok, detail):
        out.append({"target": what, "met": ok, "detail": detail})

    for client, section in [("Java ProducerPerformance", "java"), ("librdkafka", "rdkafka")]:
        for n in names_in(B, section):
            if not ((", acks=1" in n or ", acks=all" in n) and "producers" not in n and "[" not in n
                    and "idempotent" not in n and not n.startswith(("fixed", "end-to-end"))):
                continue
            f, k = get(B, "ferry", section, n, "records_per_sec"), get(B, "kafka", section, n, "records_per_sec")
            if f and k:
                add(f"{client}: {n}: Ferry ≥ 1.5× Kafka", f / k >= 1.5, f"{f / k:.2f}×")
            if "acks=all" in n:
                k2 = get(B, "kafka", section, n, "records_per_sec")
                if f and k2:
                    add(f"{client}: {n}: Ferry (fsync) ≥ Kafka (no fsync)", f >= k2, f"{f / k2:.2f}×")
    for n in names_in(B, "java"):
        if n.startswith("fixed rate"):
            f, k = get(B, "ferry", "java", n, "p99_ms"), get(B, "kafka", "java", n, "p99_ms")
            if f is not None and k is not None:
                add(f"Java: {n}: p99 ≤ Kafka's", f <= k, f"Ferry {f} ms, Kafka {k} ms")
    f, k = B.get("ferry", {}).get("peak_rss_bytes"), B.get("kafka", {}).get("peak_rss_bytes")
    if f and k:
        add("broker peak RSS ≤ 1/5 of Kafka's", f * 5 <= k, f"Ferry {mib(f)}, Kafka {mib(k)} ({f / k:.3f}×)")
    jn = names_in(B, "java")
    txn = next((n for n in jn if "transactional" in n), None)
    base = next((n for n in jn if n.endswith("100 B, acks=all") and "producers" not in n), None)
    if txn and base:
        t, a = get(B, "ferry", "java", txn, "records_per_sec"), get(B, "ferry", "java", base, "records_per_sec")
        if t and a:
            add("Java: Ferry transactional ≥ 0.85 × Ferry acks=all", t / a >= 0.85, f"{t / a:.2f}")
        kt, ka = get(B, "kafka", "java", txn, "records_per_sec"), get(B, "kafka", "java", base, "records_per_sec")
        if kt and ka:
            out.append({"target": "(reference) Kafka transactional / Kafka acks=all, Java", "met": None,
                        "detail": f"{kt / ka:.2f}"})
    for n in names_in(B, "rdkafka"):
        if n.startswith("transactional"):
            c = B.get("ferry", {}).get("rdkafka", {}).get(n, {})
            if c.get("ratio_to_acks_all") is not None:
                add(f"librdkafka: Ferry {n} ≥ 0.85 × acks=all", c["ratio_to_acks_all"] >= 0.85,
                    f"{c['ratio_to_acks_all']:.2f}")
    return out


def markdown(r):
    B = r["brokers"]
    m = r["machine"]
    L = r.get("limits", {})
    lines = [f"# Ferry side by side with Apache Kafka and other brokers",
             "",
             f"Run {r['started_utc']} → {r.get('finished_utc', '?')}{' (**--quick**)' if r.get('quick') else ''}, "
             f"ferry commit `{r.get('ferry_commit')}`, command `{r.get('command')}`.",
             f"Machine: {m.get('nproc')} cores ({m.get('cpu')}), {m.get('mem_gib')} GiB, Linux {m.get('kernel')}, "
             f"data on {m.get('work_fs')} ({m.get('work_device')}); {m.get('java')}. "
             f"Load average at start {' '.join(r.get('loadavg_at_start', []))}, at end {' '.join(r.get('loadavg_at_end', []))}.",
             "" if not r.get("merged_from") else
             f"\nMerged run: {', '.join(LABEL.get(b, b) for b, e in B.items() if e.get('from_run'))} come from the "
             f"run of {r['merged_from']['started_utc']} (same machine, same command); the others from this one.\n",
             "Every broker runs alone, one after the other, on the same machine, with the same clients and "
             "workloads; clients and broker share the 2 cores. **Each cell: the figure, and in brackets "
             "Ferry ÷ that peer** (for records/s above 1 means Ferry is faster; for latencies and RSS below "
             "1 means Ferry is lower).",
             "",
             "## Physical limits measured in this run",
             "",
             "| limit | figure | how |",
             "|---|---|---|"]
    fs = L.get("fsync", {})
    if fs:
        lines.append(f"| fsync latency | p50 {fs.get('p50_ms')} ms, p99 {fs.get('p99_ms')} ms ({fs.get('fsyncs_per_sec')}/s) | {fs.get('what')} |")
    sw = L.get("seq_write", {})
    lines.append(f"| sequential write | {sw.get('mb_per_sec', sw.get('error'))} MB/s | {sw.get('what', '')} |")
    lb = L.get("loopback", {})
    lines.append(f"| loopback TCP | {lb.get('gbit_per_sec', lb.get('error'))} Gbit/s ({lb.get('mb_per_sec')} MB/s) | {lb.get('what', '')} |")
    for x in r.get("reruns", []):
        Lx = x.get("limits") or {}
        f, w, l = Lx.get("fsync", {}), Lx.get("seq_write", {}), Lx.get("loopback", {})
        if f:
            lines.append(f"| same, at {x['started_utc'][11:16]} UTC (later run) | fsync p50 {f.get('p50_ms')} ms, "
                         f"p99 {f.get('p99_ms')} ms; sequential write {w.get('mb_per_sec')} MB/s; loopback "
                         f"{l.get('gbit_per_sec')} Gbit/s | as above |")
    lines += ["", "## Brokers", "", "| broker | version | durability as configured | peak RSS (whole run) | RSS Ferry ÷ it |",
              "|---|---|---|---:|---:|"]
    fr = B.get("ferry", {}).get("peak_rss_bytes")
    for b in ["ferry"] + ALL_PEERS:
        if b not in B:
            continue
        e = B[b]
        rss = e.get("peak_rss_bytes")
        rat = f"{fr / rss:.3f}×" if fr and rss and b != "ferry" else ""
        status = e.get("durability", "")
        if e.get("error"):
            status = f"**not measured**: {e['error'][:400]}".replace("\n", " ")
        lines.append(f"| {LABEL[b]} | {e.get('version') or ''} | {status} | {mib(rss)} | {rat} |")
    jn = names_in(B, "java")
    if jn:
        rate_names = [n for n in jn if n not in ("end-to-end latency, 100 B, acks=all, one at a time",)]
        lines += ["", "## Kafka protocol, Apache Kafka's own tools (ProducerPerformance, ConsumerPerformance)", "",
                  f"Producer settings for every broker: {' '.join(r.get('java_producer_props', []))}; "
                  "1 partition; acks as named; idempotence off except the idempotent and transactional rows. "
                  "4 producers = 4 ProducerPerformance processes at once, records ÷ 4 each; the figure is all "
                  "records ÷ the slowest one's send time. The group-consume row includes joining the group "
                  "(3 s initial rebalance delay on Kafka and Ferry).", "",
                  table(B, "java", rate_names, "records_per_sec", KAFKA_PEERS),
                  "", "Where the CPU went (whole tool run, JVM start included; 200% = both cores busy):", "",
                  cpu_table(B, "java", rate_names, KAFKA_PEERS),
                  "", "Produce latency (ms, from send() to acknowledgement, as ProducerPerformance reports it):", "",
                  table(B, "java", [n for n in jn if n.startswith("fixed rate")], "p50_ms", KAFKA_PEERS, True, "p50 ms"),
                  "",
                  table(B, "java", [n for n in jn if n.startswith("fixed rate")], "p99_ms", KAFKA_PEERS, True, "p99 ms"),
                  "",
                  table(B, "java", [n for n in jn if n.startswith("fixed rate")], "p999_ms", KAFKA_PEERS, True, "p99.9 ms"),
                  "", "End-to-end latency (Kafka's EndToEndLatency tool: produce one record, wait for acks=all, "
                  "consume it, then the next; ms):", "",
                  table(B, "java", [n for n in jn if n.startswith("end-to-end")], "p50_ms", KAFKA_PEERS, True, "p50 ms"),
                  "",
                  table(B, "java", [n for n in jn if n.startswith("end-to-end")], "p99_ms", KAFKA_PEERS, True, "p99 ms"),
                  "",
                  table(B, "java", [n for n in jn if n.startswith("end-to-end")], "p999_ms", KAFKA_PEERS, True, "p99.9 ms")]
    rn = names_in(B, "rdkafka")
    if rn:
        lines += ["", "## Kafka protocol, librdkafka (ferry-bench against each running broker)", "",
                  "ferry-bench's own settings (bench/README.md): linger.ms=5, batch.size=1000000, no compression. "
                  "Transactional rows: commit every 100 ms; the ratio column in the JSON is transactional ÷ "
                  "acks=all on the same broker.", "",
                  table(B, "rdkafka", rn, "records_per_sec", KAFKA_PEERS),
                  "", "Where the CPU went during the produce phase:", "",
                  cpu_table(B, "rdkafka", [n for n in rn if "[" not in n and "group" not in n], KAFKA_PEERS),
                  "", "Consume (records/s, assign from offset 0, no group) after each produce row:", "",
                  table(B, "rdkafka", [n for n in rn if "acks=" in n and "[" not in n], "consume_records_per_sec",
                        KAFKA_PEERS)]
    an = names_in(B, "ack_each")
    if an:
        lines += ["", "## Publish and wait for each acknowledgement (bench/loadgen)", "",
                  "Each publisher sends one 100 B message and waits for its acknowledgement before the next "
                  "(Kafka protocol: franz-go, acks=all, linger 0, one request in flight; NATS: JetStream "
                  "publish; RabbitMQ: publisher confirm on a quorum queue; Redis: XADD). Each publisher has "
                  "its own connection.", "",
                  table(B, "ack_each", an, "records_per_sec", ALL_PEERS, header_what="messages/s"), "",
                  table(B, "ack_each", an, "p99_ms", ALL_PEERS, True, "p99 ms")]
    T = r.get("targets") or targets(r)
    lines += ["", "## Targets", "", "| target | met | detail |", "|---|---|---|"]
    for t in T:
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        lines.append(f"| {t['target']} | {met} | {t['detail']} |")
    if r.get("reruns"):
        lines += ["", "‡ measured only in the later run named below (added to this table; same machine, same "
                  "command, same settings)."]
        lines += ["", "† measured twice, in the first run and again in " + ", ".join(
            f"{x['started_utc']} (`{x['command']}`)" for x in r["reruns"]) + ", because other processes were "
            "using the cores during the first; the cell shows the better of the two (higher records/s, lower "
            "latency), for every broker alike. Both are in the JSON (`first_run` holds the first)."]
    notes = r.get("notes")
    if notes:
        lines += ["", "## Notes", ""] + [f"* {n}" for n in notes]
    lines += ["", "Chart: [peers-latest.png](peers-latest.png). Raw figures, client settings and per-cell "
              "errors: [peers-latest.json](peers-latest.json).", ""]
    return "\n".join(lines)


def chart(r, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    B = r["brokers"]
    panels = []
    jn = [n for n in names_in(B, "java") if ("acks=" in n or "idempotent" in n or "transactional" in n
                                            or "group" in n) and not n.startswith(("fixed", "end-to-end"))]
    if jn:
        panels.append(("Kafka tools (ProducerPerformance / ConsumerPerformance), records/s", "java", jn,
                       ["ferry"] + KAFKA_PEERS, "records_per_sec"))
    rn = names_in(B, "rdkafka")
    if rn:
        panels.append(("librdkafka (ferry-bench), records/s", "rdkafka", rn, ["ferry"] + KAFKA_PEERS,
                       "records_per_sec"))
    an = names_in(B, "ack_each")
    if an:
        panels.append(("publish and wait for each ack (loadgen), messages/s", "ack_each", an, ["ferry"] + ALL_PEERS,
                       "records_per_sec"))
    if not panels:
        return
    fig, axes = plt.subplots(len(panels) + 1, 1, figsize=(15, 5.2 * (len(panels) + 1)))
    colors = {"ferry": "#d62728", "kafka": "#1f77b4", "kafka-fsync": "#17becf", "nisshi": "#9467bd",
              "nats": "#2ca02c", "rabbitmq": "#ff7f0e", "redis": "#8c564b"}
    for ax, (title, section, names, cols, key) in zip(axes, panels):
        cols = [c for c in cols if c in B]
        w = 0.8 / len(cols)
        for i, c in enumerate(cols):
            vals = [get(B, c, section, n, key) or 0 for n in names]
            xs = [j + i * w for j in range(len(names))]
            bars = ax.bar(xs, vals, w, label=LABEL[c], color=colors[c])
            if c != "ferry":
                for j, n in enumerate(names):
                    f = get(B, "ferry", section, n, key)
                    if f and vals[j]:
                        ax.text(xs[j], vals[j], f"{f / vals[j]:.1f}×", ha="center", va="bottom", fontsize=6,
                                rotation=90)
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(names))])
        ax.set_xticklabels([n.replace(", ", ",\n", 1) for n in names], fontsize=7, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_title(title + "  (labels: Ferry ÷ peer)", fontsize=10)
        ax.legend(fontsize=7, ncol=len(cols))
        ax.grid(axis="y", alpha=0.3)
    ax = axes[-1]
    cols = [c for c in ["ferry"] + ALL_PEERS if B.get(c, {}).get("peak_rss_bytes")]
    vals = [B[c]["peak_rss_bytes"] / 1048576 for c in cols]
    ax.bar(range(len(cols)), vals, color=[colors[c] for c in cols])
    fr = B.get("ferry", {}).get("peak_rss_bytes")
    for i, c in enumerate(cols):
        lab = f"{vals[i]:.0f} MiB" + (f"\nFerry ÷ it {fr / B[c]['peak_rss_bytes']:.2f}×" if c != "ferry" and fr else "")
        ax.text(i, vals[i], lab, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([LABEL[c] for c in cols], fontsize=8)
    ax.set_title("broker peak RSS during the whole run (MiB)", fontsize=10)
    m = r["machine"]
    fig.suptitle(f"Ferry vs peers — {r['started_utc']} — {m.get('nproc')} cores, {m.get('cpu')}, "
                 f"{m.get('work_fs')}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(r, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    r["targets"] = targets(r)
    stamp = r["started_utc"].replace(":", "").replace("-", "")
    js = json.dumps(r, indent=1, sort_keys=False)
    (out_dir / f"peers-{stamp}.json").write_text(js)
    (out_dir / "peers-latest.json").write_text(js)
    (out_dir / "peers-latest.md").write_text(markdown(r))
    try:
        chart(r, out_dir / "peers-latest.png")
    except Exception as e:  # the table and JSON matter more than the chart
        print(f"chart failed: {e}", file=sys.stderr)
    print(f"wrote {out_dir / 'peers-latest.md'}")


if __name__ == "__main__":
    p = Path(sys.argv[1])
    r = json.loads(p.read_text())
    r["targets"] = targets(r)
    (p.parent / "peers-latest.md").write_text(markdown(r))
    chart(r, p.parent / "peers-latest.png")
    print(f"wrote {p.parent / 'peers-latest.md'}")
