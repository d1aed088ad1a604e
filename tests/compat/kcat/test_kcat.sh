#!/usr/bin/env bash
# Ferry compatibility check: kcat (Debian package, librdkafka inside).
#
# Produces 10,000 lines "k<i>\tkcat-<i>" with -z snappy into partition 0 of a
# fresh topic (auto-created on first produce), then consumes from the
# beginning with -e and checks "<offset> <key> <value>" for every record.
#
# Env: FERRY_BOOTSTRAP (default 127.0.0.1:9092), FERRY_COMPAT_TIMEOUT (s, default 60),
# FERRY_CLIENT_PROPS (space-separated key=value librdkafka properties, each
# given as -X, e.g. security.protocol=SSL ssl.ca.location=ca.pem).
set -euo pipefail

CLIENT=kcat
N=10000
BOOTSTRAP="${FERRY_BOOTSTRAP:-127.0.0.1:9092}"
TIMEOUT="${FERRY_COMPAT_TIMEOUT:-60}"
TOPIC="compat-${CLIENT}-$(od -An -N5 -tx1 /dev/urandom | tr -d ' \n')"
START=$SECONDS
PROPS=()
for kv in ${FERRY_CLIENT_PROPS:-}; do PROPS+=(-X "$kv"); done

fail() { echo "FAIL [$CLIENT] topic=$TOPIC: $*" >&2; exit 1; }
log() { echo "[$CLIENT $((SECONDS - START))s] $*"; }
left() { local r=$((TIMEOUT - (SECONDS - START))); ((r > 1)) || r=1; echo "$r"; }

command -v kcat >/dev/null || fail "kcat not installed (apt-get install -y kcat)"
SHOWN="$(tr ' ' '\n' <<<"${FERRY_CLIENT_PROPS:-}" | grep -v '^sasl.password=' | grep . | tr '\n' ' ' || true)"
log "$(kcat -V 2>&1 | grep -m1 '^Version' || true), bootstrap $BOOTSTRAP${SHOWN:+ (${SHOWN% })}, topic $TOPIC"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Input: one record per line, key and value separated by a tab (-K '\t').
for ((i = 0; i < N; i++)); do printf 'k%d\t%s-%d\n' "$i" "$CLIENT" "$i"; done >"$WORK/in.txt"
for ((i = 0; i < N; i++)); do printf '%d k%d %s-%d\n' "$i" "$i" "$CLIENT" "$i"; done >"$WORK/want.txt"

# Produce. kcat waits for all delivery reports before exiting and exits
# non-zero if any delivery failed. -X acks=all is the librdkafka default
# (request.required.acks=-1); spelled out here for clarity.
rc=0
timeout --kill-after=5 "$(left)" kcat -b "$BOOTSTRAP" "${PROPS[@]}" -P -t "$TOPIC" -p 0 -K $'\t' -z snappy \
  -X request.required.acks=all -X linger.ms=5 \
  -X message.timeout.ms=$(( $(left) * 600 )) \
  -l "$WORK/in.txt" >"$WORK/produce.out" 2>"$WORK/produce.err" || rc=$?
if ((rc != 0)); then
  uniq -c "$WORK/produce.err" | head -30 >&2
  fail "kcat produce exited with status $rc (124 = timeout)"
fi
if grep -qi 'error\|fail' "$WORK/produce.err"; then
  uniq -c "$WORK/produce.err" | head -30 >&2
  fail "kcat produce reported errors"
fi
log "produced $N records (snappy)"

# Consume from the beginning, exit at end of partition (-e).
rc=0
timeout --kill-after=5 "$(left)" kcat -b "$BOOTSTRAP" "${PROPS[@]}" -C -t "$TOPIC" -p 0 -o beginning -e \
  -f '%o %k %s\n' >"$WORK/got.txt" 2>"$WORK/consume.err" || rc=$?
if ((rc != 0)); then
  uniq -c "$WORK/consume.err" | head -30 >&2
  fail "kcat consume exited with status $rc (124 = timeout) after $(wc -l <"$WORK/got.txt") records"
fi

got=$(wc -l <"$WORK/got.txt")
if ! cmp -s "$WORK/want.txt" "$WORK/got.txt"; then
  uniq -c "$WORK/consume.err" | head -30 >&2
  first=$(diff "$WORK/want.txt" "$WORK/got.txt" | head -5 || true)
  fail "consumed $got records, expected $N with matching '<offset> <key> <value>'; first differences:
$first"
fi
log "consumed $got records from offset 0, all offsets/keys/values match"
echo "OK [$CLIENT] $N records round-tripped in $((SECONDS - START))s"
