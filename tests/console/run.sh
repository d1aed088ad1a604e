#!/usr/bin/env bash
# Ferry's console in headless Chromium: starts the real broker, then
# console.test.js drives Debian's chromium with playwright-core (which
# cannot download a browser here) against the page at /: topics and lag
# appear, the lag chart follows a commit, Abort on an open transaction
# aborts it in the broker. Then login.test.js against a broker with ACLs
# on: no page without a login, and a user sees what it may describe.
#
# Usage: FERRY_BIN=target/release/ferry tests/console/run.sh
# Env:
#   FERRY_BIN           broker binary (default: <repo>/target/release/ferry)
#   SCREENSHOT_DIR      where console.png and console-group.png go (default
#                       tests/console/.out; `docs` refreshes the README's)
#   FERRY_CONSOLE_KEEP=1  keep the broker's temp dir (data + log)
# Installs what it needs: Debian's chromium (apt-get) and node_modules (npm ci).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FERRY="${FERRY_BIN:-$ROOT/target/release/ferry}"
LIB_TAG=console
# shellcheck source=../lib.sh
source "$ROOT/tests/lib.sh"

[[ -x "$FERRY" ]] || { echo "console: no ferry binary at $FERRY (cargo build --release -p ferry, or set FERRY_BIN)" >&2; exit 1; }

ensure_chromium() {
  if [[ ! -x /usr/bin/chromium ]] && command -v apt-get >/dev/null 2>&1; then
    lib_say "installing Debian's chromium"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
  fi
  [[ -x /usr/bin/chromium ]] || { echo "console: /usr/bin/chromium is required (apt-get install chromium)" >&2; return 1; }
}

setup_node() {
  need node "Node.js 18+ is required"
  need npm "npm is required"
  if [[ ! -f "$HERE/node_modules/playwright-core/package.json" || ! -f "$HERE/node_modules/.package-lock.json" ||
    "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]]; then
    (cd "$HERE" && npm ci --no-audit --no-fund --silent)
  fi
}

ensure_chromium
setup_node

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferry-console.XXXXXX")"
PORT="$(free_port)"
HTTP_PORT="$(free_port)"
DATA="$WORK/data"
BLOG="$WORK/ferry.log"
BROKER_FLAGS=(--http-listen "127.0.0.1:$HTTP_PORT" --group-initial-rebalance-delay-ms 0)
SHOTS="${SCREENSHOT_DIR:-$HERE/.out}"
[[ "$SHOTS" = /* ]] || SHOTS="$ROOT/$SHOTS"
mkdir -p "$SHOTS"

cleanup() {
  stop_broker
  if [[ "${FERRY_CONSOLE_KEEP:-0}" = 1 ]]; then lib_say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_broker || exit 1
status=0
FERRY_BOOTSTRAP="127.0.0.1:$PORT" FERRY_HTTP="127.0.0.1:$HTTP_PORT" SCREENSHOT_DIR="$SHOTS" \
  timeout 120 node "$HERE/console.test.js" || status=$?
if ((status != 0)); then
  lib_say "FAILED (exit $status); broker log tail:"
  tail -n 30 "$BLOG" | sed 's/^/    /' || true
  exit "$status"
fi
stop_broker

# ACLs on: alice may describe the topic `public` only; the PLAINTEXT
# listener's anonymous principal is a super user (it makes the topics).
PORT="$(free_port)"
HTTP_PORT="$(free_port)"
DATA="$WORK/data-acls"
BLOG="$WORK/ferry-acls.log"
BROKER_FLAGS=(--http-listen "127.0.0.1:$HTTP_PORT" --acls-enable true --super-users "User:ANONYMOUS")
mkdir -p "$DATA"
printf 'alice-pw\n' | "$FERRY" user add alice --password-stdin --data-dir "$DATA" >/dev/null
start_broker || exit 1
"$FERRY" acl add --allow-principal User:alice --operation Describe --topic public --bootstrap-server "127.0.0.1:$PORT" >/dev/null
FERRY_BOOTSTRAP="127.0.0.1:$PORT" FERRY_HTTP="127.0.0.1:$HTTP_PORT" FERRY_LOGIN_USER=alice FERRY_LOGIN_PASSWORD=alice-pw \
  timeout 120 node "$HERE/login.test.js" || status=$?
if ((status != 0)); then
  lib_say "FAILED (exit $status); broker log tail:"
  tail -n 30 "$BLOG" | sed 's/^/    /' || true
  exit "$status"
fi
