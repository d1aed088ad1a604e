#!/usr/bin/env bash
# What TLS and SASL cost: `ferry bench` against one broker, in turn over its
# PLAINTEXT listener and over SASL_SSL (TLS 1.3 from rustls, SCRAM-SHA-512),
# same workload, alternating run by run so both see the same machine. Writes
# bench/results/tls-<UTC time>.json and tls-latest.{json,md}: throughput,
# produce latency (of a full-speed burst: time queued in the client
# included) and consume rate per listener, and SASL_SSL ÷ PLAINTEXT.
#
#   bench/tls.sh                     # 1,000,000 × 100 B, 3 runs each (about 2 minutes)
#   bench/tls.sh --records 200000 --runs 1
#   FERRY_BIN=path/to/ferry bench/tls.sh
#
# Needs openssl (the certificates) and python3 (the report).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
FERRY="${FERRY_BIN:-$ROOT/target/release/ferry}"
LIB_TAG=tls-bench
# shellcheck source=../tests/lib.sh
source "$ROOT/tests/lib.sh"

records=1000000
runs=3
record_size=100
while [[ $# -gt 0 ]]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --record-size) record_size="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "bench/tls.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$FERRY" ]] || { echo "no ferry binary at $FERRY: cargo build --release -p ferry, or set FERRY_BIN" >&2; exit 2; }
need openssl "openssl makes the benchmark's certificates"
need python3 "python3 writes the report"

WORK="$(mktemp -d)"
cleanup() { stop_broker; rm -rf "$WORK"; }
trap cleanup EXIT
make_test_certs "$WORK/tls"
PORT="$(free_port)"
SASL_PORT="$(free_port)"
DATA="$WORK/data"
BLOG="$WORK/broker.log"
LISTEN="PLAINTEXT://127.0.0.1:$PORT,SASL_SSL://127.0.0.1:$SASL_PORT"
BROKER_FLAGS=(--ssl-certificate-location "$WORK/tls/server.pem" --ssl-key-location "$WORK/tls/server.key"
  --sasl-enabled-mechanisms SCRAM-SHA-512 --http-listen none)
export FERRY_SASL_PASSWORD="bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$FERRY_SASL_PASSWORD" | "$FERRY" user add bench --mechanism SCRAM-SHA-512 --password-stdin --data-dir "$DATA" >/dev/null
start_broker || { echo "bench/tls.sh: the broker did not start; see above" >&2; exit 1; }

bench() { # LISTENER RUN
  local flags=(--bootstrap-server "127.0.0.1:$PORT")
  if [[ "$1" == SASL_SSL ]]; then
    flags=(--bootstrap-server "127.0.0.1:$SASL_PORT" --security-protocol SASL_SSL --sasl-mechanism SCRAM-SHA-512
      --sasl-username bench --ssl-ca-location "$WORK/tls/ca.pem")
  fi
  "$FERRY" bench --records "$records" --record-size "$record_size" --consume --output json "${flags[@]}" >"$WORK/$1-$2.json"
}
for run in $(seq "$runs"); do
  for listener in PLAINTEXT SASL_SSL; do
    lib_say "run $run/$runs over $listener: $records × $record_size B, acks=all, then read back"
    bench "$listener" "$run"
  done
done

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
python3 - "$WORK" "$ROOT/bench/results" "$stamp" "$records" "$record_size" <<'PY'
import json, pathlib, statistics, sys
work, out, stamp, records, size = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
runs = {l: [json.loads(p.read_text().strip().splitlines()[-1]) for p in sorted(work.glob(f"{l}-*.json"))] for l in ("PLAINTEXT", "SASL_SSL")}
for l, rs in runs.items():
    bad = [r for r in rs if r["failed"] or r["delivered"] != records or r["consume"]["records"] != records]
    if bad:
        sys.exit(f"bench/tls.sh: a {l} run lost records: {bad[0]}")
figures = {
    "produce records/s": lambda r: r["produce_records_per_sec"],
    "produce p50 ms": lambda r: r["latency_ms"]["p50"],
    "produce p99 ms": lambda r: r["latency_ms"]["p99"],
    "consume records/s": lambda r: r["consume"]["records_per_sec"],
}
med = {l: {f: statistics.median(get(r) for r in rs) for f, get in figures.items()} for l, rs in runs.items()}
result = {"when": stamp, "records": records, "record_size": size, "runs": len(runs["PLAINTEXT"]), "median": med, "all": runs}
out.mkdir(parents=True, exist_ok=True)
for name in (f"tls-{stamp}.json", "tls-latest.json"):
    (out / name).write_text(json.dumps(result, indent=1) + "\n")
lines = [f"# What TLS and SASL cost ({stamp})", "",
         f"`bench/tls.sh`: one broker, `ferry bench` (librdkafka) producing at full speed {records:,} × {size} B with acks=all and reading them back, "
         f"{len(runs['PLAINTEXT'])} runs per listener alternating; medians. SASL_SSL is TLS 1.3 (rustls) with SCRAM-SHA-512.", "",
         "| figure | PLAINTEXT | SASL_SSL | SASL_SSL ÷ PLAINTEXT |", "|---|---|---|---|"]
for f in figures:
    a, b = med["PLAINTEXT"][f], med["SASL_SSL"][f]
    lines.append(f"| {f} | {a:,.1f} | {b:,.1f} | {b / a:.2f}× |")
(out / "tls-latest.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
