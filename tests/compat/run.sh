#!/usr/bin/env bash
# Ferry client-compatibility suite.
#
# Starts a ferry broker on a free loopback port and runs one small program per
# real Kafka client against it; each produces 10,000 records to a fresh topic
# and reads them back, checking offsets, keys and values.
#
# Usage: tests/compat/run.sh [CLIENT...]
#   CLIENT: confluent-kafka kafka-python kcat go java node
#           (aliases: python = both Python clients, confluent, franz-go, kafkajs)
#   Default: all clients.
# Env:
#   FERRY_BIN            broker binary (default: <repo>/target/release/ferry)
#   FERRY_COMPAT_SKIP    comma-separated clients to skip (same names/aliases)
#   FERRY_COMPAT_TIMEOUT per-client timeout in seconds (default 60)
#   FERRY_COMPAT_KEEP=1  keep the broker's temp dir (data + log) after the run
# Installs what it needs (Python venv in tests/compat/.venv, kcat via apt,
# npm ci, go build, mvn package); each step is skipped when already done.
# Client output is kept in tests/compat/.logs/<client>.log, the broker's in
# tests/compat/.logs/ferry.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FERRY_BIN="${FERRY_BIN:-$ROOT/target/release/ferry}"
export FERRY_COMPAT_TIMEOUT="${FERRY_COMPAT_TIMEOUT:-60}"
LOGS="$HERE/.logs"
ALL_CLIENTS=(confluent-kafka kafka-python kcat go java node)

say() { printf '%s\n' "$*"; }
die() { printf 'compat: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------- selection
expand() { # name/alias -> canonical client names
  case "$1" in
    python) echo confluent-kafka kafka-python ;;
    confluent | confluent-kafka | confluent_kafka) echo confluent-kafka ;;
    kafka-python | kafka_python) echo kafka-python ;;
    kcat) echo kcat ;;
    go | franz-go | franz | golang) echo go ;;
    java | kafka-clients) echo java ;;
    node | kafkajs | js) echo node ;;
    all) echo "${ALL_CLIENTS[@]}" ;;
    *) die "unknown client '$1' (known: ${ALL_CLIENTS[*]} python)" ;;
  esac
}

declare -A WANT=() SKIP=()
if (($# == 0)); then set -- all; fi
for a in "$@"; do for c in $(expand "$a"); do WANT[$c]=1; done; done
IFS=',' read -r -a skip_list <<<"${FERRY_COMPAT_SKIP:-}"
for a in "${skip_list[@]}"; do
  a="${a// /}"
  [[ -n "$a" ]] || continue
  for c in $(expand "$a"); do SKIP[$c]=1; done
done
CLIENTS=()
for c in "${ALL_CLIENTS[@]}"; do
  if [[ -n "${WANT[$c]:-}" && -z "${SKIP[$c]:-}" ]]; then CLIENTS+=("$c"); fi
done
((${#CLIENTS[@]} > 0)) || die "no clients selected"

[[ -x "$FERRY_BIN" ]] || die "ferry binary not found or not executable: $FERRY_BIN (set FERRY_BIN)"
mkdir -p "$LOGS"

# ---------------------------------------------------------------- installs
as_root() { if ((EUID == 0)); then "$@"; else sudo -n "$@"; fi; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "'$1' not found on PATH ($2)" >&2; return 1; }; }

setup_python() {
  need python3 "Python 3 is required"
  local venv="$HERE/.venv" req="$HERE/python/requirements.txt" stamp="$HERE/.venv/.ferry-req"
  if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
  fi
  if [[ ! -f "$stamp" ]] || ! cmp -s "$req" "$stamp"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
  fi
}

setup_kcat() {
  if ! command -v kcat >/dev/null 2>&1; then
    need apt-get "kcat is missing and apt-get is not available"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq kcat >/dev/null
  fi
  need kcat "apt-get install -y kcat"
}

setup_go() {
  need go "Go toolchain (>= 1.26) is required"
  (cd "$HERE/go" && GOFLAGS=-mod=mod go build -o franz-go-compat .)
}

setup_java() {
  need java "Java 17+ is required"
  if ! command -v mvn >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq maven >/dev/null
  fi
  need mvn "Maven is required"
  local jar="$HERE/java/target/ferry-compat-java.jar"
  if [[ ! -f "$jar" ]] || [[ -n "$(cd "$HERE/java" && find pom.xml src -newer "$jar" | head -1)" ]]; then
    (cd "$HERE/java" && mvn -q -B -Dstyle.color=never package)
  fi
  [[ -f "$jar" ]]
}

setup_node() {
  need node "Node.js 18+ is required"
  need npm "npm is required"
  local nd="$HERE/node"
  if [[ ! -f "$nd/node_modules/kafkajs/package.json" || ! -f "$nd/node_modules/.package-lock.json" ||
    "$nd/package-lock.json" -nt "$nd/node_modules/.package-lock.json" ]]; then
    (cd "$nd" && npm ci --no-audit --no-fund --silent)
  fi
}

# setup group for a client (both Python clients share one venv)
group_of() { case "$1" in confluent-kafka | kafka-python) echo python ;; *) echo "$1" ;; esac; }

client_cmd() { # sets CMD
  case "$1" in
    confluent-kafka) CMD=("$HERE/.venv/bin/python" "$HERE/python/test_confluent_kafka.py") ;;
    kafka-python) CMD=("$HERE/.venv/bin/python" "$HERE/python/test_kafka_python.py") ;;
    kcat) CMD=(bash "$HERE/kcat/test_kcat.sh") ;;
    go) CMD=("$HERE/go/franz-go-compat") ;;
    java) CMD=(java -jar "$HERE/java/target/ferry-compat-java.jar") ;;
    node) CMD=(node "$HERE/node/test_kafkajs.js") ;;
  esac
}

# ---------------------------------------------------------------- broker
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferry-compat.XXXXXX")"
BROKER_PID=""
cleanup() {
  if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  [[ -f "$WORK/ferry.log" ]] && cp "$WORK/ferry.log" "$LOGS/ferry.log" 2>/dev/null || true
  if [[ "${FERRY_COMPAT_KEEP:-}" == 1 ]]; then
    say "compat: kept broker dir $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    local p
    while :; do
      p=$((20000 + RANDOM % 40000))
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
  fi
}

PORT=""
start_broker() {
  PORT="$(free_port)"
  mkdir -p "$WORK/data"
  "$FERRY_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >>"$WORK/ferry.log" 2>&1 &
  BROKER_PID=$!
  local i
  for i in $(seq 300); do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      say "compat: ferry exited during startup; last log lines:"
      tail -n 30 "$WORK/ferry.log" | sed 's/^/    /' || true
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      export FERRY_BOOTSTRAP="127.0.0.1:$PORT"
      say "compat: ferry (pid $BROKER_PID) listening on $FERRY_BOOTSTRAP"
      return 0
    fi
    sleep 0.1
  done
  say "compat: ferry did not accept connections on 127.0.0.1:$PORT within 30s"
  return 1
}

# ---------------------------------------------------------------- run
declare -A SETUP_DONE=() SETUP_OK=() SETUP_TIME=()
PASSED=0
FAILED=0
RESULTS=()

for c in "${ALL_CLIENTS[@]}"; do
  if [[ -n "${WANT[$c]:-}" && -n "${SKIP[$c]:-}" ]]; then say "SKIP $c (FERRY_COMPAT_SKIP)"; fi
done

# Installs first (so that broker start-up time is not mixed with them).
for c in "${CLIENTS[@]}"; do
  g="$(group_of "$c")"
  [[ -z "${SETUP_DONE[$g]:-}" ]] || continue
  SETUP_DONE[$g]=1
  t=$SECONDS
  set +e
  (set -e; "setup_$g") >"$LOGS/setup-$g.log" 2>&1
  rc=$?
  set -e
  SETUP_TIME[$g]=$((SECONDS - t))
  if ((rc == 0)); then
    SETUP_OK[$g]=1
    say "compat: setup $g ok (${SETUP_TIME[$g]}s)"
  else
    say "compat: setup $g FAILED (exit $rc, ${SETUP_TIME[$g]}s):"
    tail -n 30 "$LOGS/setup-$g.log" | sed 's/^/    /'
  fi
done

BROKER_UP=0
if start_broker; then BROKER_UP=1; fi

for c in "${CLIENTS[@]}"; do
  g="$(group_of "$c")"
  if [[ -z "${SETUP_OK[$g]:-}" ]]; then
    FAILED=$((FAILED + 1))
    RESULTS+=("FAIL $c (setup failed, see $LOGS/setup-$g.log)")
    say "FAIL $c (setup failed)"
    continue
  fi
  if ((BROKER_UP)) && ! kill -0 "$BROKER_PID" 2>/dev/null; then
    say "compat: broker is gone (crashed?); last log lines:"
    tail -n 20 "$WORK/ferry.log" | sed 's/^/    /'
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_UP=0
    if start_broker; then BROKER_UP=1; fi
  fi
  if ((!BROKER_UP)); then
    FAILED=$((FAILED + 1))
    RESULTS+=("FAIL $c (broker not running)")
    say "FAIL $c (broker not running)"
    continue
  fi
  client_cmd "$c"
  t=$SECONDS
  set +e
  timeout -k 5 $((FERRY_COMPAT_TIMEOUT + 30)) "${CMD[@]}" </dev/null >"$LOGS/$c.log" 2>&1
  rc=$?
  set -e
  dt=$((SECONDS - t))
  crashed=""
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then crashed=" [broker died during this client]"; fi
  if ((rc == 0)) && [[ -z "$crashed" ]]; then
    PASSED=$((PASSED + 1))
    RESULTS+=("PASS $c (${dt}s)")
    say "PASS $c (${dt}s)"
  else
    FAILED=$((FAILED + 1))
    why="exit $rc"
    ((rc == 124 || rc == 137)) && why="killed by runner timeout"
    RESULTS+=("FAIL $c ($why, ${dt}s)$crashed")
    say "FAIL $c ($why, ${dt}s)$crashed; last output ($LOGS/$c.log):"
    tail -n 25 "$LOGS/$c.log" | sed 's/^/    /'
  fi
done

say ""
say "compat summary (total ${SECONDS}s; broker log: $LOGS/ferry.log):"
for r in "${RESULTS[@]}"; do say "  $r"; done
say "compat: $PASSED passed, $FAILED failed"
((FAILED == 0))
