#!/usr/bin/env bash
# Ferry client-compatibility suite.
#
# Starts a ferry broker on a free loopback port and runs one small program per
# real Kafka client against it. The round-trip checks produce 10,000 records
# to a fresh topic and read them back, checking offsets, keys and values. The
# consumer-group checks (*-group*) create a 6-partition topic, produce 6,000
# keyed records and consume them with a group of three members committing
# after processing: "-group"/"-group-range"/"-group-cooperative" has a member
# leave and a new one join mid-stream, "-kill" has the runner SIGKILL and
# restart the broker mid-stream (see "broker control" below); both check that
# every record was processed and the committed offsets reach the log end.
#
# Usage: tests/compat/run.sh [CLIENT...]
#   CLIENT: round trip: confluent-kafka kafka-python kcat go java node
#           groups:     confluent-kafka-group confluent-kafka-group-kill
#                       kafka-python-group kafka-python-group-kill
#                       go-group go-group-kill node-group node-group-kill
#                       java-group-range java-group-cooperative
#                       java-group-range-kill java-group-cooperative-kill
#           promises:   confluent-kafka-promises java-promises (pipelined
#                       commits take effect in order; fetch answers within
#                       fetch.max.bytes and max.partition.fetch.bytes)
#           admin:      confluent-kafka-admin java-admin (IncrementalAlterConfigs
#                       APPEND/SUBTRACT on cleanup.policy; a compacted topic
#                       refuses records without a key; LogAppendTime; ListOffsets
#                       by timestamp and max timestamp answer the record; topic
#                       compression.type recompresses, read back intact;
#                       timestamp bounds refuse records too far ahead or behind;
#                       authorized operations of a topic, the cluster, a group)
#           tools:      java-tools (Kafka's kafka-delete-records.sh and
#                       kafka-log-dirs.sh commands, run in-process)
#           ssl:        kcat-ssl confluent-kafka-ssl java-ssl (the round trip
#                       over the broker's SSL listener; certificates made with
#                       openssl; the Python client also presents a client
#                       certificate; Java reads the CA as a PEM truststore)
#           sasl:       the round trip logged in as a user made online with
#                       Kafka's kafka-configs.sh --entity-type users
#                       --add-config 'SCRAM-SHA-256=[...],SCRAM-SHA-512=[...]',
#                       each client with its own SASL and TLS settings:
#                       java-sasl confluent-kafka-sasl go-sasl (SCRAM-SHA-512
#                       over SASL_SSL), kafka-python-sasl node-sasl
#                       (SCRAM-SHA-512, then SCRAM-SHA-256, over SASL_SSL),
#                       kcat-sasl (PLAIN over
#                       SASL_SSL), go-sasl-plaintext java-sasl-plaintext
#                       (PLAIN over SASL_PLAINTEXT). A wrong password is
#                       refused first with an authentication error:
#                       java-sasl, confluent-kafka-sasl, kafka-python-sasl
#                       and node-sasl (SCRAM-SHA-512), go-sasl
#                       (SCRAM-SHA-256), kcat-sasl (PLAIN).
#           quotas:     java-quotas confluent-kafka-quotas (client quotas set
#                       and described with Kafka's kafka-configs.sh and the
#                       Java AdminClient; a Java producer, and a confluent-kafka
#                       producer and consumer, slowed to their byte rates and
#                       told the throttle time)
#           (aliases: python = both Python round trips, confluent, franz-go,
#           kafkajs; roundtrip = all round trips; group = all group checks;
#           admin = both admin checks;
#           kill = the group checks with a broker kill; java-group,
#           python-group = those clients' group checks)
#   Default: all of them.
# Env:
#   FERRY_BIN            broker binary (default: <repo>/target/release/ferry)
#   FERRY_COMPAT_SKIP    comma-separated clients to skip (same names/aliases)
#   FERRY_COMPAT_TIMEOUT per-client timeout in seconds (default 60)
#   FERRY_COMPAT_KEEP=1  keep the broker's temp dir (data + log) after the run
#   FERRY_COMPAT_BROKERS=3  run the round trips and java-tools against a three-broker cluster
#                        (--cluster-voters) that a fourth broker joins (java-tools moves
#                        a replica onto it), bootstrapping from broker 1 only
# Installs what it needs (Python venv in tests/compat/.venv, kcat via apt,
# npm ci, go build, mvn package); each step is skipped when already done.
# Client output is kept in tests/compat/.logs/<client>.log, the broker's in
# tests/compat/.logs/ferry.log.
#
# Broker control: each client program runs with FERRY_CONTROL_DIR set to an
# empty directory of its own. A program that creates the file `kill-request`
# there (write elsewhere, then rename) makes the runner SIGKILL the broker,
# restart it on the same port with the same data dir, delete the request and
# create `kill-done` (one line: what was done), or `kill-failed` if the
# broker did not come back. The program may ask again after deleting
# `kill-done`. The broker's log gets a "=== compat:" marker line per kill.
# The broker and control code is tests/lib.sh, shared with tests/eos/run.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FERRY_BIN="${FERRY_BIN:-$ROOT/target/release/ferry}"
export FERRY_COMPAT_TIMEOUT="${FERRY_COMPAT_TIMEOUT:-60}"
LOGS="$HERE/.logs"
ROUNDTRIP_CLIENTS=(confluent-kafka kafka-python kcat go java node)
GROUP_CLIENTS=(confluent-kafka-group confluent-kafka-group-kill kafka-python-group kafka-python-group-kill
  go-group go-group-kill node-group node-group-kill
  java-group-range java-group-cooperative java-group-range-kill java-group-cooperative-kill)
PROMISE_CLIENTS=(confluent-kafka-promises java-promises)
ADMIN_CLIENTS=(confluent-kafka-admin java-admin)
TOOL_CLIENTS=(java-tools)
SSL_CLIENTS=(kcat-ssl confluent-kafka-ssl java-ssl)
SASL_CLIENTS=(java-sasl confluent-kafka-sasl go-sasl kafka-python-sasl node-sasl kcat-sasl go-sasl-plaintext java-sasl-plaintext)
QUOTA_CLIENTS=(java-quotas confluent-kafka-quotas)
ALL_CLIENTS=("${ROUNDTRIP_CLIENTS[@]}" "${GROUP_CLIENTS[@]}" "${PROMISE_CLIENTS[@]}" "${ADMIN_CLIENTS[@]}" "${TOOL_CLIENTS[@]}" "${SSL_CLIENTS[@]}" "${SASL_CLIENTS[@]}" "${QUOTA_CLIENTS[@]}")
# --group-initial-rebalance-delay-ms 500: Kafka's default (3000 ms) holds the
# first rebalance of every new or empty group that long, waiting for more
# members. Each group check forms a new group, and the -kill checks form it
# again after the broker restart (membership is not kept across restarts), so
# 500 ms keeps each group check well under 30 s while the three members that
# start together still join one generation.
BROKER_FLAGS=(--group-initial-rebalance-delay-ms 500)

say() { printf '%s\n' "$*"; }
die() { printf 'compat: %s\n' "$*" >&2; exit 2; }

# Installs helpers, broker start/stop/kill+restart and the broker-control loop.
LIB_TAG=compat
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

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
    roundtrip) echo "${ROUNDTRIP_CLIENTS[@]}" ;;
    group | groups) echo "${GROUP_CLIENTS[@]}" ;;
    promises) echo "${PROMISE_CLIENTS[@]}" ;;
    admin) echo "${ADMIN_CLIENTS[@]}" ;;
    tools) echo "${TOOL_CLIENTS[@]}" ;;
    ssl | tls) echo "${SSL_CLIENTS[@]}" ;;
    sasl) echo "${SASL_CLIENTS[@]}" ;;
    quotas) echo "${QUOTA_CLIENTS[@]}" ;;
    kill) echo confluent-kafka-group-kill kafka-python-group-kill go-group-kill node-group-kill \
      java-group-range-kill java-group-cooperative-kill ;;
    java-group) echo java-group-range java-group-cooperative java-group-range-kill java-group-cooperative-kill ;;
    python-group) echo confluent-kafka-group confluent-kafka-group-kill kafka-python-group kafka-python-group-kill ;;
    confluent-group) echo confluent-kafka-group ;;
    franz-go-group) echo go-group ;;
    kafkajs-group) echo node-group ;;
    all) echo "${ALL_CLIENTS[@]}" ;;
    *)
      local k
      for k in "${ALL_CLIENTS[@]}"; do [[ "$1" == "$k" ]] && { echo "$1"; return; }; done
      die "unknown client '$1' (known: ${ALL_CLIENTS[*]} python roundtrip group promises admin tools ssl sasl quotas kill java-group python-group)"
      ;;
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

COMPAT_BROKERS="${FERRY_COMPAT_BROKERS:-1}"
export FERRY_COMPAT_BROKERS="$COMPAT_BROKERS"
if ((COMPAT_BROKERS > 1)); then
  # Round trips and Kafka's tools only: the other checks kill and restart "the" broker.
  for c in "${CLIENTS[@]}"; do
    [[ " ${ROUNDTRIP_CLIENTS[*]} java-tools " == *" $c "* ]] || die "FERRY_COMPAT_BROKERS=$COMPAT_BROKERS runs the round trips and java-tools only; $c is not one"
  done
fi

[[ -x "$FERRY_BIN" ]] || die "ferry binary not found or not executable: $FERRY_BIN (set FERRY_BIN)"
mkdir -p "$LOGS"

# ---------------------------------------------------------------- installs
setup_python() {
  ensure_venv "$HERE/.venv" "$HERE/python/requirements.txt"
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
  ensure_maven
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

# setup group for a client (both Python clients share one venv; a client's
# group checks share its setup)
group_of() {
  case "$1" in
    confluent-kafka* | kafka-python*) echo python ;;
    *) echo "${1%%-*}" ;;
  esac
}

client_cmd() { # sets CMD
  local py="$HERE/.venv/bin/python" jar="$HERE/java/target/ferry-compat-java.jar"
  local mode=rebalance
  [[ "$1" == *-kill ]] && mode=kill
  case "$1" in
    confluent-kafka) CMD=("$py" "$HERE/python/test_confluent_kafka.py") ;;
    confluent-kafka-ssl) CMD=(env FERRY_BOOTSTRAP="127.0.0.1:$SSL_PORT" FERRY_CLIENT_PROPS="$SSL_PROPS ssl.certificate.location=$TLS/client.pem ssl.key.location=$TLS/client.key" "$py" "$HERE/python/test_confluent_kafka.py") ;;
    kcat-ssl) CMD=(env FERRY_BOOTSTRAP="127.0.0.1:$SSL_PORT" FERRY_CLIENT_PROPS="$SSL_PROPS" bash "$HERE/kcat/test_kcat.sh") ;;
    java-ssl) CMD=(env FERRY_BOOTSTRAP="127.0.0.1:$SSL_PORT" FERRY_CLIENT_PROPS="security.protocol=SSL ssl.truststore.type=PEM ssl.truststore.location=$TLS/ca.pem" java -jar "$jar") ;;
    java-sasl) CMD=(env FERRY_SASL_BOOTSTRAP="127.0.0.1:$SASL_PORT" FERRY_SASL_USER="$SASL_USER" FERRY_SASL_PASSWORD="$SASL_PASSWORD"
      FERRY_SASL_CA="$TLS/ca.pem" FERRY_BOOTSTRAP="127.0.0.1:$SASL_PORT" FERRY_CLIENT_PROPS="$SASL_JAVA_PROPS"
      bash -c 'java -cp "$1" dev.ferry.compat.KafkaSaslCompat && java -jar "$1"' _ "$jar") ;;
    confluent-kafka-sasl) CMD=(env FERRY_BOOTSTRAP="127.0.0.1:$SASL_PORT" FERRY_CLIENT_PROPS="$SASL_PROPS"
      bash -c '"$1" "$2/python/test_sasl_refused.py" && "$1" "$2/python/test_confluent_kafka.py"' _ "$py" "$HERE") ;;
    # kafka-python and kafkajs: SCRAM-SHA-512, then SCRAM-SHA-256 (both of each client's mechanisms).
    # The wrong password first (SCRAM-SHA-512), as for the other families.
    kafka-python-sasl) CMD=(env FERRY_BOOTSTRAP="127.0.0.1:$SASL_PORT"
      bash -c 'FERRY_CLIENT_PROPS="$3 sasl_mechanism=SCRAM-SHA-512" "$1" "${2%/*}/test_kafka_python_sasl_refused.py" || exit 1
        for m in SCRAM-SHA-512 SCRAM-SHA-256; do FERRY_CLIENT_PROPS="$3 sasl_mechanism=$m" "$1" "$2" || exit 1; done' _ "$py" "$HERE/python/test_kafka_python.py"
      "security_protocol=SASL_SSL ssl_cafile=$TLS/ca.pem sasl_plain_username=$SASL_USER sasl_plain_password=$SASL_PASSWORD") ;;
    kcat-sasl) CMD=(env FERRY_BOOTSTRAP="127.0.0.1:$SASL_PORT" FERRY_CLIENT_PROPS="$SASL_SSL_LIBRDKAFKA sasl.mechanism=PLAIN $SASL_LOGIN"
      bash -c 'bash "$1/kcat/test_sasl_refused.sh" && bash "$1/kcat/test_kcat.sh"' _ "$HERE") ;;
    go-sasl) CMD=(env FERRY_BOOTSTRAP="127.0.0.1:$SASL_PORT" FERRY_CLIENT_PROPS="$SASL_SSL_LIBRDKAFKA sasl.mechanism=SCRAM-SHA-512 $SASL_LOGIN"
      bash -c 'FERRY_CLIENT_PROPS="$2" "$1" sasl-refused && "$1"' _ "$HERE/go/franz-go-compat" "$SASL_SSL_LIBRDKAFKA sasl.mechanism=SCRAM-SHA-256 $SASL_LOGIN") ;;
    go-sasl-plaintext) CMD=(env FERRY_BOOTSTRAP="127.0.0.1:$SASL_PLAINTEXT_PORT" FERRY_CLIENT_PROPS="security.protocol=SASL_PLAINTEXT sasl.mechanism=PLAIN $SASL_LOGIN"
      "$HERE/go/franz-go-compat") ;;
    node-sasl) CMD=(env FERRY_BOOTSTRAP="127.0.0.1:$SASL_PORT"
      bash -c 'FERRY_CLIENT_PROPS="$2 sasl.mechanism=SCRAM-SHA-512" node "${1%/*}/test_kafkajs_sasl_refused.js" || exit 1
        for m in SCRAM-SHA-512 SCRAM-SHA-256; do FERRY_CLIENT_PROPS="$2 sasl.mechanism=$m" node "$1" || exit 1; done' _ "$HERE/node/test_kafkajs.js" "$SASL_SSL_LIBRDKAFKA $SASL_LOGIN") ;;
    java-sasl-plaintext) CMD=(env FERRY_BOOTSTRAP="127.0.0.1:$SASL_PLAINTEXT_PORT" FERRY_CLIENT_PROPS="security.protocol=SASL_PLAINTEXT sasl.mechanism=PLAIN
      sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule\u0020required\u0020username=\"$SASL_USER\"\u0020password=\"$SASL_PASSWORD\";"
      java -jar "$jar") ;;
    kafka-python) CMD=("$py" "$HERE/python/test_kafka_python.py") ;;
    kcat) CMD=(bash "$HERE/kcat/test_kcat.sh") ;;
    go) CMD=("$HERE/go/franz-go-compat") ;;
    java) CMD=(java -jar "$jar") ;;
    node) CMD=(node "$HERE/node/test_kafkajs.js") ;;
    confluent-kafka-promises) CMD=("$py" "$HERE/python/test_confluent_kafka_promises.py") ;;
    java-promises) CMD=(java -cp "$jar" dev.ferry.compat.KafkaPromisesCompat) ;;
    confluent-kafka-admin) CMD=("$py" "$HERE/python/test_confluent_kafka_admin.py") ;;
    java-admin) CMD=(java -cp "$jar" dev.ferry.compat.KafkaAdminCompat) ;;
    java-tools) CMD=(java -cp "$jar" dev.ferry.compat.KafkaToolsCompat) ;;
    java-quotas) CMD=(java -cp "$jar" dev.ferry.compat.KafkaQuotasCompat) ;;
    # confluent-kafka has no client-quota admin API: Kafka's kafka-configs.sh sets them.
    confluent-kafka-quotas) CMD=(bash -c 'set -e
      for c in producer:producer consumer:consumer; do
        java -cp "$1" org.apache.kafka.tools.ConfigCommand --bootstrap-server "$FERRY_BOOTSTRAP" --alter \
          --entity-type clients --entity-name "compat-quota-py-${c%%:*}" --add-config "${c#*:}_byte_rate=100000"
      done
      "$2" "$3/python/test_confluent_kafka_quotas.py"' _ "$jar" "$py" "$HERE") ;;
    confluent-kafka-group*) CMD=("$py" "$HERE/python/test_confluent_kafka_group.py" "$mode") ;;
    kafka-python-group*) CMD=("$py" "$HERE/python/test_kafka_python_group.py" "$mode") ;;
    go-group*) CMD=("$HERE/go/franz-go-compat" group "$mode") ;;
    node-group*) CMD=(node "$HERE/node/test_kafkajs_group.js" "$mode") ;;
    java-group-range*) CMD=(java -cp "$jar" dev.ferry.compat.KafkaGroupCompat range "$mode") ;;
    java-group-cooperative*) CMD=(java -cp "$jar" dev.ferry.compat.KafkaGroupCompat cooperative "$mode") ;;
  esac
}

# ---------------------------------------------------------------- broker
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferry-compat.XXXXXX")"
# One broker for all clients (lib.sh's start_broker uses these).
FERRY="$FERRY_BIN"
PORT=""
DATA="$WORK/data"
BLOG="$WORK/ferry.log"
CLIENT_PID=""
cleanup() {
  if [[ -n "$CLIENT_PID" ]] && kill -0 "$CLIENT_PID" 2>/dev/null; then
    kill "$CLIENT_PID" 2>/dev/null || true
    wait "$CLIENT_PID" 2>/dev/null || true
  fi
  stop_broker
  stop_compat_cluster
  [[ -f "$WORK/ferry.log" ]] && cp "$WORK/ferry.log" "$LOGS/ferry.log" 2>/dev/null || true
  for f in "$WORK"/ferry[0-9].log; do [[ -f "$f" ]] && cp "$f" "$LOGS/" 2>/dev/null || true; done
  if [[ "${FERRY_COMPAT_KEEP:-}" == 1 ]]; then
    say "compat: kept broker dir $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# With an SSL client selected the broker also gets an SSL listener (client
# certificates requested, so one client can present one and another not).
TLS="$WORK/tls"
SSL_PORT=""
SSL_PROPS="security.protocol=SSL ssl.ca.location=$TLS/ca.pem"
for c in "${CLIENTS[@]}"; do
  if [[ " ${SSL_CLIENTS[*]} " == *" $c "* && -z "$SSL_PORT" ]]; then
    need openssl "openssl makes the test certificates"
    make_test_certs "$TLS" || die "cannot make test certificates with openssl"
    SSL_PORT="$(free_port)"
    BROKER_FLAGS+=(--ssl-certificate-location "$TLS/server.pem" --ssl-key-location "$TLS/server.key"
      --ssl-ca-location "$TLS/ca.pem" --ssl-client-auth requested)
  fi
done

# With a SASL client selected the broker also gets SASL_SSL and
# SASL_PLAINTEXT listeners (PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512), and a
# user with both SCRAM credentials made online by Kafka's kafka-configs.sh
# (ConfigCommand, from the Java check's jar) once the broker is up; PLAIN
# checks its password against them.
SASL_PORT=""
SASL_PLAINTEXT_PORT=""
SASL_USER="compat-user"
SASL_PASSWORD="compat-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
# librdkafka's names (franz-go's and kafkajs's checks map them to their own options).
SASL_SSL_LIBRDKAFKA="security.protocol=SASL_SSL ssl.ca.location=$TLS/ca.pem"
SASL_LOGIN="sasl.username=$SASL_USER sasl.password=$SASL_PASSWORD"
SASL_PROPS="$SASL_SSL_LIBRDKAFKA sasl.mechanism=SCRAM-SHA-512 $SASL_LOGIN"
# One word per property (FERRY_CLIENT_PROPS is split on spaces): the JAAS line has none.
SASL_JAVA_PROPS="security.protocol=SASL_SSL ssl.truststore.type=PEM ssl.truststore.location=$TLS/ca.pem sasl.mechanism=SCRAM-SHA-512 sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule\u0020required\u0020username=\"$SASL_USER\"\u0020password=\"$SASL_PASSWORD\";"
for c in "${CLIENTS[@]}"; do
  if [[ " ${SASL_CLIENTS[*]} " == *" $c "* && -z "$SASL_PORT" ]]; then
    if [[ -z "$SSL_PORT" ]]; then
      need openssl "openssl makes the test certificates"
      make_test_certs "$TLS" || die "cannot make test certificates with openssl"
      BROKER_FLAGS+=(--ssl-certificate-location "$TLS/server.pem" --ssl-key-location "$TLS/server.key")
    fi
    SASL_PORT="$(free_port)"
    SASL_PLAINTEXT_PORT="$(free_port)"
    BROKER_FLAGS+=(--sasl-enabled-mechanisms PLAIN,SCRAM-SHA-256,SCRAM-SHA-512)
  fi
done

# kafka-configs.sh --alter --add-config 'SCRAM-SHA-256=[...],SCRAM-SHA-512=[...]' --entity-type users,
# as its wrapper runs it (the class is in kafka-tools, in the Java check's jar).
create_sasl_user() {
  java -cp "$HERE/java/target/ferry-compat-java.jar" org.apache.kafka.tools.ConfigCommand --bootstrap-server "127.0.0.1:$PORT" \
    --alter --add-config "SCRAM-SHA-256=[iterations=4096,password=$SASL_PASSWORD],SCRAM-SHA-512=[iterations=8192,password=$SASL_PASSWORD]" \
    --entity-type users --entity-name "$SASL_USER"
}

# A fresh port; the restarts after kills (lib.sh) keep it.
start_compat_broker() {
  if ((COMPAT_BROKERS > 1)); then
    start_compat_cluster
    return
  fi
  PORT="$(free_port)"
  LISTEN="127.0.0.1:$PORT"
  [[ -z "$SSL_PORT" ]] || LISTEN="PLAINTEXT://127.0.0.1:$PORT,SSL://127.0.0.1:$SSL_PORT"
  [[ -z "$SASL_PORT" ]] || LISTEN="${LISTEN/#127.0.0.1:/PLAINTEXT://127.0.0.1:},SASL_SSL://127.0.0.1:$SASL_PORT,SASL_PLAINTEXT://127.0.0.1:$SASL_PLAINTEXT_PORT"
  start_broker || return 1
  export FERRY_BOOTSTRAP="127.0.0.1:$PORT"
  say "compat: ferry (pid $BROKER_PID) listening on $FERRY_BOOTSTRAP"
}

# FERRY_COMPAT_BROKERS=N: N brokers of one cluster (--cluster-voters). The
# clients get broker 1 alone as bootstrap, so reaching the partitions other
# brokers lead goes through Metadata as with any Kafka cluster. lib.sh's
# BROKER_PID is broker 1 (the crash check); the others are CLUSTER_PIDS.
CLUSTER_PIDS=()
start_compat_cluster() {
  local i voters="" ports=() raft_ports=() saved_flags=("${BROKER_FLAGS[@]}")
  for ((i = 1; i <= COMPAT_BROKERS; i++)); do
    ports[i]="$(free_port)"
    raft_ports[i]="$(free_port)"
    voters+="${voters:+,}$i@127.0.0.1:${raft_ports[i]}"
  done
  for ((i = COMPAT_BROKERS; i >= 1; i--)); do
    PORT="${ports[i]}" DATA="$WORK/data$i" BLOG="$WORK/ferry$i.log"
    BROKER_FLAGS=("${saved_flags[@]}" --node-id "$i" --cluster-listen "127.0.0.1:${raft_ports[i]}" --cluster-voters "$voters" --http-listen none)
    # Started without waiting: one broker alone cannot elect a metadata leader.
    mkdir -p "$DATA"
    NO_COLOR=1 "$FERRY" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" "${BROKER_FLAGS[@]}" >>"$BLOG" 2>&1 &
    if ((i > 1)); then CLUSTER_PIDS+=($!); else BROKER_PID=$!; fi
  done
  # One more broker outside the voters joins the running cluster (Kafka: a
  # broker that is not a controller); java-tools moves a replica onto it.
  i=$((COMPAT_BROKERS + 1))
  PORT="$(free_port)" DATA="$WORK/data$i" BLOG="$WORK/ferry$i.log"
  BROKER_FLAGS=("${saved_flags[@]}" --node-id "$i" --cluster-listen "127.0.0.1:$(free_port)" --cluster-voters "$voters" --http-listen none)
  mkdir -p "$DATA"
  NO_COLOR=1 "$FERRY" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" "${BROKER_FLAGS[@]}" >>"$BLOG" 2>&1 &
  CLUSTER_PIDS+=($!)
  export FERRY_COMPAT_OBSERVER="$i"
  BROKER_FLAGS=("${saved_flags[@]}")
  PORT="${ports[1]}" DATA="$WORK/data1" BLOG="$WORK/ferry1.log"
  for _ in $(seq 300); do
    local registered=0
    for ((i = 1; i <= COMPAT_BROKERS + 1; i++)); do
      grep -q "broker registered in the cluster metadata" "$WORK/ferry$i.log" 2>/dev/null && registered=$((registered + 1))
    done
    if ((registered == COMPAT_BROKERS + 1)); then
      BROKER_UP=1
      export FERRY_BOOTSTRAP="127.0.0.1:$PORT"
      say "compat: $COMPAT_BROKERS-voter cluster and broker $FERRY_COMPAT_OBSERVER joined up (pids $BROKER_PID ${CLUSTER_PIDS[*]}); clients bootstrap from broker 1 at $FERRY_BOOTSTRAP"
      return 0
    fi
    sleep 0.1
  done
  say "compat: the $COMPAT_BROKERS voters and the joining broker did not all register within 30 s"
  BROKER_UP=0
  return 1
}

stop_compat_cluster() {
  local pid
  for pid in "${CLUSTER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${CLUSTER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  CLUSTER_PIDS=()
}

# ---------------------------------------------------------------- broker control
run_client() { # CLIENT: runs CMD in the background, serving control requests; sets rc
  local c="$1" dir="$WORK/control/$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  KILLS=0
  FERRY_CONTROL_DIR="$dir" timeout -k 5 $((FERRY_COMPAT_TIMEOUT + 30)) "${CMD[@]}" </dev/null >"$LOGS/$c.log" 2>&1 &
  CLIENT_PID=$!
  serve_kill_requests "$c" "$dir"
  rc=0
  wait "$CLIENT_PID" || rc=$?
  CLIENT_PID=""
}

# ---------------------------------------------------------------- run
declare -A SETUP_DONE=() SETUP_OK=() SETUP_TIME=()
PASSED=0
FAILED=0
RESULTS=()

for c in "${ALL_CLIENTS[@]}"; do
  if [[ -n "${WANT[$c]:-}" && -n "${SKIP[$c]:-}" ]]; then say "SKIP $c (FERRY_COMPAT_SKIP)"; fi
done

# Installs first (so that broker start-up time is not mixed with them). The
# SASL checks need the Java jar for kafka-configs.sh whichever client runs.
SETUP_GROUPS=()
for c in "${CLIENTS[@]}"; do SETUP_GROUPS+=("$(group_of "$c")"); done
[[ -z "$SASL_PORT" ]] || SETUP_GROUPS+=(java)
[[ -z "${WANT[confluent-kafka-quotas]:-}" ]] || SETUP_GROUPS+=(java)
for g in "${SETUP_GROUPS[@]}"; do
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

start_compat_broker || true
if [[ -n "$SASL_PORT" ]] && ((BROKER_UP)); then
  if create_sasl_user >"$LOGS/sasl-user.log" 2>&1; then
    say "compat: user $SASL_USER made with kafka-configs.sh (ConfigCommand): $(tail -n 1 "$LOGS/sasl-user.log")"
  else
    say "compat: kafka-configs.sh could not make the SASL user:"
    tail -n 20 "$LOGS/sasl-user.log" | sed 's/^/    /'
  fi
fi

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
    BROKER_PID=""
    start_compat_broker || true
  fi
  if ((!BROKER_UP)); then
    FAILED=$((FAILED + 1))
    RESULTS+=("FAIL $c (broker not running)")
    say "FAIL $c (broker not running)"
    continue
  fi
  client_cmd "$c"
  t=$SECONDS
  run_client "$c"
  dt=$((SECONDS - t))
  crashed=""
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then crashed=" [broker died during this client]"; fi
  killed=""
  ((KILLS == 0)) || killed=", broker killed+restarted ${KILLS}x"
  if ((rc == 0)) && [[ -z "$crashed" ]]; then
    PASSED=$((PASSED + 1))
    RESULTS+=("PASS $c (${dt}s$killed)")
    say "PASS $c (${dt}s$killed)"
  else
    FAILED=$((FAILED + 1))
    why="exit $rc"
    ((rc == 124 || rc == 137)) && why="killed by runner timeout"
    RESULTS+=("FAIL $c ($why, ${dt}s$killed)$crashed")
    say "FAIL $c ($why, ${dt}s$killed)$crashed; last output ($LOGS/$c.log):"
    tail -n 25 "$LOGS/$c.log" | sed 's/^/    /'
  fi
done

say ""
say "compat summary (total ${SECONDS}s; broker log: $LOGS/ferry.log):"
for r in "${RESULTS[@]}"; do say "  $r"; done
say "compat: $PASSED passed, $FAILED failed"
((FAILED == 0))
