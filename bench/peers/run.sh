#!/usr/bin/env bash
# One command for the side-by-side benchmark (issue #7):
#   bench/peers/run.sh [--quick] [run.py flags...]
# Installs what is missing (Debian packages, Apache Kafka 4.4.0 jars from
# Maven Central, nisshi from crates.io, the Go load generator, Ferry itself),
# measures this machine's limits, runs every broker in turn and writes
# bench/results/peers-latest.{md,json,png}. Everything downloaded goes to
# bench/.peers/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PEERS=$ROOT/bench/.peers
mkdir -p "$PEERS/bin"

say() { echo "[peers] $*" >&2; }

source bench/peers/install.sh

# 1. Debian packages: the non-Kafka peers, iperf3 for loopback, matplotlib for the chart.
apt_install nats-server rabbitmq-server redis-server iperf3 python3-matplotlib

# 2. Apache Kafka 4.4.0 (broker, storage tool, perf tools) from Maven Central.
fetch_kafka

# 3. nisshi (formerly tansu) from crates.io. 0.8.1 needs rustc >= 1.96 (its
#    rama dependency), so use a nightly toolchain when stable is older.
if [ ! -x "$PEERS/nisshi/bin/nisshi" ] && [ ! -f "$PEERS/nisshi-install.status" ]; then
  tc=""
  if ! rustc --version | awk '{split($2,v,"."); exit !(v[1]>1 || v[2]>=96)}'; then
    rustup toolchain list 2>/dev/null | grep -q nightly && tc="+nightly"
  fi
  say "cargo $tc install nisshi 0.8.1 (takes ~15 min on 2 cores)"
  if ! cargo $tc install nisshi --version 0.8.1 --locked --root "$PEERS/nisshi" >"$PEERS/nisshi-install.log" 2>&1; then
    echo "cargo install nisshi 0.8.1 failed: $(grep -m1 -E '^error' "$PEERS/nisshi-install.log")" >"$PEERS/nisshi-install.status"
    say "$(cat "$PEERS/nisshi-install.status")"
  fi
fi

# 4. The Go load generator (publish-and-wait for every protocol).
(cd bench/loadgen && go build -o "$PEERS/bin/loadgen" .)

# 5. Ferry and ferry-bench.
cargo build --release -q -p ferry -p ferry-bench

exec /usr/bin/python3 bench/peers/run.py "$@"
