#!/usr/bin/env bash
# The whole test suite, as CI runs it: build, Rust unit and integration
# tests (which start the real ferry binary), the real-client compatibility
# suite, the console in headless Chromium, and a short fuzz run. Installs
# what it needs by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

step() { printf '\n=== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "build"
cargo build --release --locked -p ferry

step "unit and integration tests"
# --tests: every unit and integration test without the doc-test pass, which
# ran rustdoc once per crate; only the SDK has a doc test (its usage example).
cargo test --release --locked --workspace --tests 2>&1 | tee /tmp/ferry-cargo-test.log
cargo test --release --locked -p ferry-client --doc 2>&1 | tee -a /tmp/ferry-cargo-test.log
if grep -q "test result: FAILED" /tmp/ferry-cargo-test.log; then exit 1; fi

step "SDK backends: PostgreSQL and Redis"
scripts/sdk-backends.sh

step "compatibility with real Kafka clients"
FERRY_BIN="$PWD/target/release/ferry" tests/compat/run.sh

step "round trips of every client family and Kafka's tools against a three-broker cluster"
FERRY_BIN="$PWD/target/release/ferry" FERRY_COMPAT_BROKERS=3 tests/compat/run.sh roundtrip tools

step "exactly-once with the Java client, Kafka Streams and confluent-kafka (Python)"
FERRY_BIN="$PWD/target/release/ferry" tests/eos/run.sh

step "exactly-once again on three brokers, a partition leader SIGKILLed"
FERRY_BIN="$PWD/target/release/ferry" FERRY_EOS_BROKERS=3 tests/eos/run.sh

step "console in headless Chromium"
FERRY_BIN="$PWD/target/release/ferry" tests/console/run.sh

if [ -x fuzz/run.sh ]; then
  step "fuzz (short run)"
  FUZZ_SECONDS="${FUZZ_SECONDS:-20}" fuzz/run.sh
fi

step "all tests passed"
