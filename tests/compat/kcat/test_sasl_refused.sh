#!/usr/bin/env bash
# Ferry compatibility check: kcat with a wrong SASL password is refused with
# an authentication error (and no metadata), not a timeout or a hang.
#
# Env: FERRY_BOOTSTRAP (a SASL listener), FERRY_CLIENT_PROPS (the SASL and TLS
# librdkafka properties, with the right password: this check spoils it).
set -euo pipefail

CLIENT=kcat-sasl-refused
BOOTSTRAP="${FERRY_BOOTSTRAP:-127.0.0.1:9092}"
START=$SECONDS
PROPS=()
for kv in ${FERRY_CLIENT_PROPS:-}; do
  [[ "$kv" == sasl.password=* ]] && kv="$kv-wrong"
  PROPS+=(-X "$kv")
done

fail() { echo "FAIL [$CLIENT]: $*" >&2; exit 1; }
log() { echo "[$CLIENT $((SECONDS - START))s] $*"; }

[[ " ${FERRY_CLIENT_PROPS:-} " == *" sasl.password="* ]] || fail "FERRY_CLIENT_PROPS has no sasl.password to spoil"
rc=0
# -m: how long kcat waits for metadata; a refused login never gets any (the
# broker answers a failed login after 100 ms by default).
out="$(timeout --kill-after=5 30 kcat -b "$BOOTSTRAP" "${PROPS[@]}" -L -m 3 2>&1)" || rc=$?
((rc != 0)) || fail "a wrong password was accepted: $out"
((rc != 124 && rc != 137)) || fail "kcat hung (timeout) instead of being refused: $out"
grep -q "Authentication failed" <<<"$out" || fail "exit status $rc without an authentication error: $out"
log "wrong password refused (exit status $rc): $(grep -m1 'Authentication failed' <<<"$out")"
echo "OK [$CLIENT]"
