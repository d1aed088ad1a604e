#!/usr/bin/env bash
# Runs every Ferry fuzz target for FUZZ_SECONDS seconds (default 20, for CI).
#
#   fuzz/run.sh                      # short run, ~1 minute when warm
#   FUZZ_SECONDS=600 fuzz/run.sh     # the long run: 10 minutes per target
#
# Optional:
#   FUZZ_TARGETS="log_recovery"      # a subset (default: all targets)
#   FUZZ_ARGS="-max_len=8192"       # extra libFuzzer flags
#
# Needs only rustup with a nightly toolchain; installs cargo-fuzz if missing.
# Each target fuzzes a scratch corpus fuzz/corpus/<target> (git-ignored),
# seeded from fuzz/seeds/<target>. Crashes land in fuzz/artifacts/<target>/;
# the script exits non-zero if any target crashed and prints the input path.
set -euo pipefail

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
read -r -a TARGETS <<<"${FUZZ_TARGETS:-request_decode batch_validate log_recovery cluster_decode sasl_handshake}"
read -r -a EXTRA_ARGS <<<"${FUZZ_ARGS:-}"

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
# Make "every panic aborts" and similar debugging switches explicit, not inherited.
unset FERRY_FUZZ_CAUGHT_PANIC_IS_CRASH FERRY_FUZZ_STRICT

log() { printf '[fuzz/run.sh] %s\n' "$*" >&2; }

if ! command -v rustup >/dev/null 2>&1; then
    log "rustup is required (https://rustup.rs)"
    exit 2
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    log "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

start=$SECONDS
log "building ${TARGETS[*]} (nightly, ASan, debug assertions)"
if [[ -z "${FUZZ_TARGETS:-}" ]]; then
    cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR"
else
    for t in "${TARGETS[@]}"; do
        cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR" "$t"
    done
fi
log "built in $((SECONDS - start)) s; fuzzing each target for ${FUZZ_SECONDS} s"

failed=()
for t in "${TARGETS[@]}"; do
    corpus="$FUZZ_DIR/corpus/$t"
    artifacts="$FUZZ_DIR/artifacts/$t"
    runlog="$FUZZ_DIR/artifacts/$t.log"
    mkdir -p "$corpus" "$artifacts"
    cp -n "$FUZZ_DIR/seeds/$t/"* "$corpus/" 2>/dev/null || true
    log "fuzzing $t (corpus: ${corpus#"$FUZZ_DIR"/}, log: ${runlog#"$FUZZ_DIR"/})"
    status=0
    cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" "$t" "$corpus" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=30 -print_final_stats=1 "${EXTRA_ARGS[@]}" \
        >"$runlog" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$runlog" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$runlog" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$runlog" | tail -1 || true)
    if [[ $status -eq 0 ]]; then
        log "$t: ok, ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-cov: ?}, corpus $(find "$corpus" -type f | wc -l) inputs"
        continue
    fi
    failed+=("$t")
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$runlog" | tail -1)
    log "$t: FAILED (exit $status) after ${runs:-?} runs"
    echo "----- $t: end of ${runlog} -----" >&2
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' "$runlog" | tail -n 60 >&2
    echo "-----" >&2
    if [[ -n "$artifact" ]]; then
        log "$t: crashing input: $artifact"
        log "reproduce: cargo +nightly fuzz run --fuzz-dir $FUZZ_DIR $t $artifact"
        log "outside libFuzzer: (cd $FUZZ_DIR && cargo +nightly run --release --example repro -- $t $artifact)"
    else
        log "$t: no crashing input was written; see $runlog"
    fi
done

log "total $((SECONDS - start)) s"
if [[ ${#failed[@]} -gt 0 ]]; then
    log "targets with crashes: ${failed[*]}"
    exit 1
fi
log "no crashes"
