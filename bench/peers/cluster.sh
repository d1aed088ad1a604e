#!/usr/bin/env bash
# Three Ferry brokers against three Apache Kafka 4.4.0 brokers (issue #13):
#   bench/peers/cluster.sh [--quick] [--ferry-bin PATH] [cluster.py flags...]
# Installs what is missing (a JDK and Maven from Debian's packages, the Kafka
# 4.4.0 jars from Maven Central into bench/.peers/kafka/libs, as run.sh does),
# then runs bench/peers/cluster.py. It does not build Ferry: the broker is
# --ferry-bin (default target/release/ferry; `cargo build --release -p ferry`).
# Results: bench/results/peers-cluster-latest.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PEERS=$ROOT/bench/.peers
mkdir -p "$PEERS"

say() { echo "[peers-cluster] $*" >&2; }
source bench/peers/install.sh

need=()
command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need+=(maven)
if ((${#need[@]})); then apt_install "${need[@]}"; fi
fetch_kafka

exec /usr/bin/python3 bench/peers/cluster.py "$@"
