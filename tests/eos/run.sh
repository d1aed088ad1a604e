#!/usr/bin/env bash
# Ferry exactly-once suite: real clients doing transactions against a ferry
# broker that the runner SIGKILLs and restarts mid-run. See README.md.
#
# Usage: tests/eos/run.sh [TEST...]
#   default set: java-ctp java-fencing streams-eos python-ctp python-abort
#   optional:    franz-go-kgo (franz-go's own kgo transactional integration tests)
#                streams-eos-precreated (diagnosis: streams-eos with its internal
#                topics created beforehand by the Admin client, see README.md)
#   aliases:     all (default set + optional), java (java-ctp java-fencing),
#                streams (streams-eos), python (python-ctp python-abort), kgo
# Env:
#   FERRY_BIN          broker binary (default: <repo>/target/release/ferry); copied to a
#                      private path first, so a rebuild during the run does not matter
#   FERRY_EOS_TIMEOUT  per-test timeout in seconds (default: per test, see below)
#   FERRY_EOS_KEEP=1   keep the work dir (broker data dirs) after the run
#   FERRY_EOS_KGO_RUN  go test -run pattern for franz-go-kgo (default 'Txn')
#   FERRY_EOS_KGO_RECORDS  KGO_TEST_RECORDS for franz-go-kgo (default: franz-go's own, 500000)
#   FERRY_EOS_KGO_TIMEOUT  go test -timeout for franz-go-kgo (default 40m)
#   FERRY_EOS_KGO_UNSAFE=1 sets KGO_TEST_UNSAFE (franz-go also ends+begins
#                      transactions with EndBeginTxnUnsafe)
#   FERRY_EOS_BROKERS=3  each test runs against three brokers of one cluster
#                      (topics with three replicas). Broker 1 coordinates every
#                      transaction and group; a kill request SIGKILLs and
#                      restarts broker 2, which leads a third of the partitions,
#                      so markers and transactional batches meet a leader change.
# Each test gets a fresh broker (fresh data dir) on a free loopback port. Logs:
# tests/eos/.logs/<test>.log (client) and <test>.ferry.log (broker).
#
# Broker control (same protocol as tests/compat): a test program run with
# FERRY_CONTROL_DIR=<dir> creates <dir>/kill-request (write elsewhere, then
# rename); the runner SIGKILLs the broker, restarts it on the same port with
# the same data dir, deletes the request and creates <dir>/kill-done (one line),
# or <dir>/kill-failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LOGS="$HERE/.logs"
DEFAULT_TESTS=(java-ctp java-fencing streams-eos python-ctp python-abort)
OPTIONAL_TESTS=(franz-go-kgo streams-eos-precreated)
ALL_TESTS=("${DEFAULT_TESTS[@]}" "${OPTIONAL_TESTS[@]}")
BROKER_FLAGS=(--group-initial-rebalance-delay-ms 500)
JAR="$HERE/java/target/ferry-eos-java.jar"
VENV="$HERE/.venv"

say() { printf '%s\n' "$*"; }
die() { printf 'eos: %s\n' "$*" >&2; exit 2; }

# Installs helpers, broker start/stop/kill+restart and the broker-control loop.
LIB_TAG=eos
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

# ---------------------------------------------------------------- selection
expand() {
  case "$1" in
    all) echo "${ALL_TESTS[@]}" ;;
    default) echo "${DEFAULT_TESTS[@]}" ;;
    java) echo java-ctp java-fencing ;;
    python | confluent | confluent-kafka) echo python-ctp python-abort ;;
    ctp) echo java-ctp ;;
    fencing) echo java-fencing ;;
    streams) echo streams-eos ;;
    kgo | franz-go) echo franz-go-kgo ;;
    *)
      local t
      for t in "${ALL_TESTS[@]}"; do [[ "$1" == "$t" ]] && { echo "$1"; return; }; done
      die "unknown test '$1' (known: ${ALL_TESTS[*]}; aliases: all default java python streams kgo)"
      ;;
  esac
}
if (($# == 0)); then set -- default; fi
declare -A WANT=()
for a in "$@"; do
  names="$(expand "$a")" || exit 2
  for t in $names; do WANT[$t]=1; done
done
TESTS=()
for t in "${ALL_TESTS[@]}"; do if [[ -n "${WANT[$t]:-}" ]]; then TESTS+=("$t"); fi; done
((${#TESTS[@]} > 0)) || die "no tests selected"

# ---------------------------------------------------------------- broker binary
SRC_BIN="${FERRY_BIN:-$ROOT/target/release/ferry}"
[[ -x "$SRC_BIN" ]] || die "ferry binary not found or not executable: $SRC_BIN (set FERRY_BIN, or cargo build --release)"

mkdir -p "$LOGS"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferry-eos.XXXXXX")"
cp "$SRC_BIN" "$WORK/ferry"
FERRY="$WORK/ferry"
say "eos: broker binary $SRC_BIN ($(stat -c '%y' "$SRC_BIN" | cut -d. -f1)), copied to $FERRY"

CLIENT_PID=""
cleanup() {
  if [[ -n "$CLIENT_PID" ]] && kill -0 "$CLIENT_PID" 2>/dev/null; then
    kill -- "-$CLIENT_PID" 2>/dev/null || kill "$CLIENT_PID" 2>/dev/null || true
    wait "$CLIENT_PID" 2>/dev/null || true
  fi
  stop_test_brokers
  if [[ "${FERRY_EOS_KEEP:-}" == 1 ]]; then say "eos: kept work dir $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- installs
setup_java() {
  ensure_maven
  if [[ ! -f "$JAR" ]] || [[ -n "$(cd "$HERE/java" && find pom.xml src -newer "$JAR" | head -1)" ]]; then
    (cd "$HERE/java" && mvn -q -B -Dstyle.color=never package)
  fi
  [[ -f "$JAR" ]]
}

# confluent-kafka (librdkafka) in a venv of the suite's own, pinned by
# python/requirements.txt to the version tests/compat uses; reinstalled when
# the requirements change.
setup_python() {
  ensure_venv "$VENV" "$HERE/python/requirements.txt"
  "$VENV/bin/python" -c 'import confluent_kafka as c; print("confluent-kafka", c.__version__, "librdkafka", c.libversion()[0])'
}

# The franz-go version the project uses (tests/compat/go/go.mod), else this one.
KGO_VERSION_DEFAULT=v1.22.3
kgo_version() {
  local v=""
  if [[ -f "$ROOT/tests/compat/go/go.mod" ]]; then
    v="$(awk '$1 == "github.com/twmb/franz-go" { print $2; exit } $1 == "require" && $2 == "github.com/twmb/franz-go" { print $3; exit }' "$ROOT/tests/compat/go/go.mod")"
  fi
  echo "${v:-$KGO_VERSION_DEFAULT}"
}
KGO_DIR=""
setup_go() {
  need go "Go toolchain is required"
  local v json
  v="$(kgo_version)"
  json="$(cd "$WORK" && GOFLAGS=-mod=mod go mod download -json "github.com/twmb/franz-go@$v")"
  KGO_DIR="$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -1)"
  [[ -n "$KGO_DIR" && -d "$KGO_DIR/pkg/kgo" ]] || { echo "go mod download gave no module dir: $json"; return 1; }
  echo "franz-go $v in $KGO_DIR"
  # Build the test binary now, so that the compile time is not counted in the test.
  (cd "$KGO_DIR" && go test -count=1 -run '^$' ./pkg/kgo >/dev/null)
  echo "$KGO_DIR" >"$WORK/kgo-dir"
}

setup_for() {
  case "$1" in
    java-* | streams-eos*) echo java ;;
    franz-go-kgo) echo go ;;
    python-*) echo python ;;
  esac
}

# ---------------------------------------------------------------- broker
# lib.sh's start_broker uses these; each test sets them.
PORT=""
DATA=""
BLOG=""

# FERRY_EOS_BROKERS=3: brokers 1 and 3 run beside lib.sh's broker, which is
# broker 2 (the one kill requests restart, with its cluster flags kept).
EOS_BROKERS="${FERRY_EOS_BROKERS:-1}"
CLUSTER_PIDS=()
BOOTSTRAP=""
COORDINATOR_LOG=""
start_test_brokers() {
  if ((EOS_BROKERS == 1)); then
    start_broker || return 1
    BOOTSTRAP="127.0.0.1:$PORT" COORDINATOR_LOG="$BLOG"
    return 0
  fi
  local i voters="" ports=() raft_ports=() saved_flags=("${BROKER_FLAGS[@]}") base_data="$DATA" base_log="$BLOG"
  for ((i = 1; i <= EOS_BROKERS; i++)); do
    ports[i]="$(free_port)"
    raft_ports[i]="$(free_port)"
    voters+="${voters:+,}$i@127.0.0.1:${raft_ports[i]}"
  done
  BOOTSTRAP=""
  for ((i = 1; i <= EOS_BROKERS; i++)); do BOOTSTRAP+="${BOOTSTRAP:+,}127.0.0.1:${ports[i]}"; done
  for ((i = 1; i <= EOS_BROKERS; i++)); do
    PORT="${ports[i]}" DATA="$base_data/$i" BLOG="${base_log%.log}.$i.log"
    BROKER_FLAGS=("${saved_flags[@]}" --node-id "$i" --cluster-listen "127.0.0.1:${raft_ports[i]}" --cluster-voters "$voters" --http-listen none)
    mkdir -p "$DATA"
    : >"$BLOG"
    ((i == 1)) && COORDINATOR_LOG="$BLOG"
    ((i == 2)) && continue
    # Not waited for: one broker alone cannot elect a metadata leader.
    NO_COLOR=1 "$FERRY" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" "${BROKER_FLAGS[@]}" >>"$BLOG" 2>&1 &
    CLUSTER_PIDS+=($!)
  done
  PORT="${ports[2]}" DATA="$base_data/2" BLOG="${base_log%.log}.2.log"
  BROKER_FLAGS=("${saved_flags[@]}" --node-id 2 --cluster-listen "127.0.0.1:${raft_ports[2]}" --cluster-voters "$voters" --http-listen none)
  start_broker || { BROKER_FLAGS=("${saved_flags[@]}"); stop_cluster_others; return 1; }
  for _ in $(seq 300); do
    local registered=0
    for ((i = 1; i <= EOS_BROKERS; i++)); do
      grep -q "broker registered in the cluster metadata" "${base_log%.log}.$i.log" 2>/dev/null && registered=$((registered + 1))
    done
    if ((registered == EOS_BROKERS)); then
      say "eos: $EOS_BROKERS-broker cluster up at $BOOTSTRAP (broker 2, pid $BROKER_PID, takes the kills)"
      return 0
    fi
    sleep 0.1
  done
  say "eos: the $EOS_BROKERS brokers did not all register within 30 s"
  return 1
}

stop_cluster_others() {
  local pid
  for pid in "${CLUSTER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${CLUSTER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  CLUSTER_PIDS=()
}

stop_test_brokers() {
  stop_broker
  stop_cluster_others
  BROKER_FLAGS=(--group-initial-rebalance-delay-ms 500)
}

# ---------------------------------------------------------------- tests
test_timeout() {
  if [[ -n "${FERRY_EOS_TIMEOUT:-}" ]]; then echo "$FERRY_EOS_TIMEOUT"; return; fi
  case "$1" in
    java-ctp) echo 240 ;;
    java-fencing) echo 90 ;;
    streams-eos | streams-eos-precreated) echo 200 ;;
    franz-go-kgo) echo 2700 ;;
    python-ctp) echo 240 ;;
    python-abort) echo 90 ;;
  esac
}

client_cmd() { # TEST -> CMD
  local jv=(java -XX:+UseSerialGC -Xmx1g -cp "$JAR")
  case "$1" in
    java-ctp) CMD=("${jv[@]}" dev.ferry.eos.Ctp) ;;
    java-fencing) CMD=("${jv[@]}" dev.ferry.eos.Fencing) ;;
    streams-eos) CMD=("${jv[@]}" dev.ferry.eos.StreamsEos) ;;
    streams-eos-precreated) CMD=(env FERRY_EOS_STREAMS_PRECREATE=all "${jv[@]}" dev.ferry.eos.StreamsEos) ;;
    python-ctp) CMD=("$VENV/bin/python" -u "$HERE/python/eos_ctp.py") ;;
    python-abort) CMD=("$VENV/bin/python" -u "$HERE/python/eos_abort.py") ;;
    franz-go-kgo)
      CMD=(env "KGO_SEEDS=$BOOTSTRAP" "KGO_TEST_RF=$EOS_BROKERS")
      [[ -z "${FERRY_EOS_KGO_RECORDS:-}" ]] || CMD+=("KGO_TEST_RECORDS=$FERRY_EOS_KGO_RECORDS")
      [[ "${FERRY_EOS_KGO_UNSAFE:-}" != 1 ]] || CMD+=(KGO_TEST_UNSAFE=1)
      CMD+=(bash -c 'cd "$1" && exec go test -count=1 -v -timeout "$2" -run "$3" ./pkg/kgo' _
        "$(cat "$WORK/kgo-dir")" "${FERRY_EOS_KGO_TIMEOUT:-40m}" "${FERRY_EOS_KGO_RUN:-Txn}")
      ;;
  esac
}

run_test() { # TEST; sets rc
  local t="$1" dir="$WORK/$1/control" limit
  limit="$(test_timeout "$t")"
  mkdir -p "$dir" "$WORK/$t/state"
  KILLS=0
  client_cmd "$t"
  FERRY_BOOTSTRAP="$BOOTSTRAP" FERRY_CONTROL_DIR="$dir" FERRY_EOS_TIMEOUT="$limit" \
    FERRY_EOS_RUN_ID="$(date +%s)" FERRY_EOS_STATE_DIR="$WORK/$t/state" \
    setsid timeout -k 5 $((limit + 30)) "${CMD[@]}" </dev/null >"$LOGS/$t.log" 2>&1 &
  CLIENT_PID=$!
  serve_kill_requests "$t" "$dir"
  rc=0
  wait "$CLIENT_PID" || rc=$?
  CLIENT_PID=""
}

kgo_summary() { # prints franz-go's per-test results
  local f="$LOGS/franz-go-kgo.log"
  grep -E '^[[:space:]]*--- (PASS|FAIL|SKIP)' "$f" | sed 's/^[[:space:]]*/    /' || true
  grep -E '^(ok|FAIL|panic:)' "$f" | sed 's/^/    /' | head -5 || true
}

txn_summary() { # the broker's completed transactions in this test
  local c a
  c=$(grep -c 'transaction completed.*outcome="\?commit' "$COORDINATOR_LOG" 2>/dev/null || true)
  a=$(grep -c 'transaction completed.*outcome="\?abort' "$COORDINATOR_LOG" 2>/dev/null || true)
  echo "broker log: ${c:-0} committed, ${a:-0} aborted transactions"
}

# ---------------------------------------------------------------- run
declare -A SETUP_OK=() SETUP_DONE=()
for t in "${TESTS[@]}"; do
  g="$(setup_for "$t")"
  [[ -z "${SETUP_DONE[$g]:-}" ]] || continue
  SETUP_DONE[$g]=1
  s=$SECONDS
  set +e
  (set -e; "setup_$g") >"$LOGS/setup-$g.log" 2>&1
  src=$?
  set -e
  if ((src == 0)); then
    SETUP_OK[$g]=1
    say "eos: setup $g ok ($((SECONDS - s))s)"
  else
    say "eos: setup $g FAILED (exit $src, $((SECONDS - s))s):"
    tail -n 30 "$LOGS/setup-$g.log" | sed 's/^/    /'
  fi
done

PASSED=0
FAILED=0
RESULTS=()
for t in "${TESTS[@]}"; do
  g="$(setup_for "$t")"
  if [[ -z "${SETUP_OK[$g]:-}" ]]; then
    FAILED=$((FAILED + 1))
    RESULTS+=("FAIL $t (setup failed, see $LOGS/setup-$g.log)")
    say "FAIL $t (setup failed)"
    continue
  fi
  PORT="$(free_port)"
  DATA="$WORK/$t/data"
  BLOG="$LOGS/$t.ferry.log"
  mkdir -p "$DATA"
  : >"$BLOG"
  if ! start_test_brokers; then
    stop_test_brokers
    FAILED=$((FAILED + 1))
    RESULTS+=("FAIL $t (broker did not start, see $BLOG)")
    say "FAIL $t (broker did not start)"
    continue
  fi
  say "eos: $t: ferry pid $BROKER_PID on 127.0.0.1:$PORT (bootstrap $BOOTSTRAP)"
  s=$SECONDS
  run_test "$t"
  dt=$((SECONDS - s))
  crashed=""
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then crashed=" [broker died during the test]"; fi
  for pid in "${CLUSTER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || crashed=" [a broker died during the test]"; done
  stop_test_brokers
  extra=", $(txn_summary)"
  ((KILLS == 0)) || extra+=", broker killed+restarted ${KILLS}x"
  if [[ "$t" == franz-go-kgo ]]; then kgo_summary; fi
  if ((rc == 0)) && [[ -z "$crashed" ]]; then
    PASSED=$((PASSED + 1))
    RESULTS+=("PASS $t (${dt}s$extra)")
    say "PASS $t (${dt}s$extra)"
  else
    FAILED=$((FAILED + 1))
    why="exit $rc"
    ((rc == 124 || rc == 137)) && why="killed by the runner's timeout"
    RESULTS+=("FAIL $t ($why, ${dt}s$extra)$crashed")
    say "FAIL $t ($why, ${dt}s$extra)$crashed; last output ($LOGS/$t.log):"
    # the program's own lines (they start with "[ elapsed ]") and Streams' topic-creation diagnostics
    {
      grep -E '^\[ *[0-9.]+s\]|Going to create topic|^Error message was' "$LOGS/$t.log" |
        grep -E 'FAILED|CHECK|Going to create|Error message|died|failed' | grep -v 'UnknownTopicOrPartition' |
        head -n 15 || true
      grep -E '^\[ *[0-9.]+s\]' "$LOGS/$t.log" | tail -n 3 || true
    } | awk '!seen[$0]++' | cut -c1-400 | sed 's/^/    /'
  fi
done

say ""
say "eos summary (total ${SECONDS}s; logs in $LOGS):"
for r in "${RESULTS[@]}"; do say "  $r"; done
say "eos: $PASSED passed, $FAILED failed"
((FAILED == 0))
