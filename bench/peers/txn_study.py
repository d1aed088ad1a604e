#!/usr/bin/python3
"""What limits exactly-once throughput on one partition?

For Ferry and Kafka (default settings), 1 partition, 1M x 100 B, both clients:
acks=all without idempotence, acks=all idempotent, transactional with commits
every 100 ms and every 1000 ms. With each figure: broker and client CPU.
Writes bench/results/txn-study.{json,md}.

    bench/peers/run.sh installs everything first; then
    /usr/bin/python3 bench/peers/txn_study.py [--quick] [--brokers ferry,kafka]
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402


def rd(broker, tmp, extra):
    rep = run.ferry_bench(broker, extra, tmp)
    return rep


def study(broker, records, tmp, wait_s):
    out = {}
    props = run.JAVA_PRODUCER_PROPS
    cases = [("acks=all", ["acks=all", "enable.idempotence=false"], None),
             ("acks=all, idempotent", ["acks=all", "enable.idempotence=true"], None),
             ("transactional, 100 ms commits", ["acks=all", "enable.idempotence=true"], 100),
             ("transactional, 1000 ms commits", ["acks=all", "enable.idempotence=true"], 1000)]
    for name, p, txn in cases:
        run.wait_quiet(wait_s)
        meter = run.CpuMeter(broker)
        r = run.producer_perf(broker.bootstrap, f"ts-{int(time.time() * 1000)}", records, 100, p + props, txn_ms=txn)
        r.update(meter.done())
        out[f"java: {name}"] = r
        run.log(f"  {broker.name} java {name}: {r.get('records_per_sec')} ({r.get('broker_cpu_pct')}% / {r.get('client_cpu_pct')}%) {r.get('error', '')}")
    n = str(records)
    run.wait_quiet(wait_s)
    rep = rd(broker, tmp, ["--records", n, "--record-bytes", "100", "--acks", "all", "--idempotent"])
    for w in rep.get("workloads", []):
        key = "librdkafka: acks=all" + (", idempotent" if w.get("idempotent") else "")
        pr = w["produce"]
        out[key] = {"records_per_sec": pr["records_per_sec"], "broker_cpu_pct": pr["cpu"]["broker_pct"],
                    "client_cpu_pct": pr["cpu"]["client_pct"]}
        run.log(f"  {broker.name} {key}: {out[key]}")
    for ms in (100, 1000):
        run.wait_quiet(wait_s)
        rep = rd(broker, tmp, ["--workload", "txn", "--txn-partitions", "1", "--txn-commit-ms", str(ms),
                               "--extra-records", n])
        for t in rep.get("txn_workloads", []):
            tx = t["transactional"]
            key = f"librdkafka: transactional, {ms} ms commits"
            out[key] = {"records_per_sec": tx["records_per_sec"], "broker_cpu_pct": tx["cpu"]["broker_pct"],
                        "client_cpu_pct": tx["cpu"]["client_pct"], "transactions": tx.get("transactions"),
                        "commit_p50_ms": tx.get("commit_latency", {}).get("p50_ms"),
                        "end_txn_p50_ms": tx.get("end_txn_latency", {}).get("p50_ms"),
                        "same_run_acks_all": t["acks_all"]["records_per_sec"], "ratio_to_same_run_acks_all": t["ratio"]}
            run.log(f"  {broker.name} {key}: {out[key]}")
    return out


def markdown(res):
    brokers = list(res["brokers"])
    rows = []
    for b in brokers:
        for k in res["brokers"][b].get("cells", {}):
            if k not in rows:
                rows.append(k)
    lines = ["# Exactly-once on one partition: what limits it", "",
             f"Run {res['started_utc']}, {res['records']:,} x 100 B, 1 partition, same producer settings as the "
             "side-by-side run. Each cell: records/s, the ratio to acks=all (idempotence off) with the same client "
             "on the same broker, and CPU (% of one core, broker / client).", "",
             "| client: workload | " + " | ".join(brokers) + " |", "|---|" + "---:|" * len(brokers)]
    for k in rows:
        row = [k]
        for b in brokers:
            cells = res["brokers"][b].get("cells", {})
            c = cells.get(k, {})
            base = cells.get(k.split(":")[0] + ": acks=all", {}).get("records_per_sec")
            v = c.get("records_per_sec")
            if not v:
                row.append(c.get("error", "–"))
                continue
            ratio = f" ({v / base:.2f})" if base else ""
            row.append(f"{v / 1000:.0f}k{ratio}, {c.get('broker_cpu_pct', 0):.0f}% / {c.get('client_cpu_pct', 0):.0f}%")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Raw figures: [txn-study.json](txn-study.json).", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--brokers", default="ferry,kafka")
    ap.add_argument("--wait-quiet", type=float, default=60)
    ap.add_argument("--out-dir", default=str(run.RESULTS))
    args = ap.parse_args()
    records = 100_000 if args.quick else 1_000_000
    work = run.PEERS / "txn-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tmp = work / "rd"
    tmp.mkdir()
    res = {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "records": records,
           "machine": run.machine_info(work), "loadavg_at_start": run.loadavg(), "brokers": {}}
    for name in args.brokers.split(","):
        b = run.Ferry("ferry", work) if name == "ferry" else run.Kafka("kafka", work)
        run.log(f"starting {name}")
        b.start()
        try:
            res["brokers"][name] = {"cells": study(b, records, tmp, args.wait_quiet)}
        finally:
            b.stop()
    res["loadavg_at_end"] = run.loadavg()
    out = Path(args.out_dir)
    (out / "txn-study.json").write_text(json.dumps(res, indent=1))
    (out / "txn-study.md").write_text(markdown(res))
    print(markdown(res))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
