#!/usr/bin/env bash
# ferry-client's external backends against real servers: PostgresParticipant
# (feature `postgres`: PREPARE TRANSACTION / COMMIT PREPARED) and RedisStore
# (feature `redis`). Installs postgresql and redis-server from Debian when
# missing, starts a throwaway PostgreSQL cluster (max_prepared_transactions=10)
# and a redis-server, each on a free loopback port, runs
# crates/client/tests/backends.rs against them, and stops both by PID.
# Run as root (initdb and postgres run as the `postgres` OS user).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

work=""
pg_data=""
pg_pid=""
redis_pid=""
own_policy=""
pg_bin=""

cleanup() {
  local status=$?
  if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
    kill "$redis_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ -n "$pg_pid" ] && kill -0 "$pg_pid" 2>/dev/null; then
    kill -INT "$pg_pid" 2>/dev/null || true   # fast shutdown
    for _ in $(seq 100); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
  [ -n "$work" ] && rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

find_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# --- install what is missing -------------------------------------------------
need=()
pg_bin=$(find_pg_bin)
{ [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/pg_ctl" ]; } || need+=(postgresql)
{ command -v redis-server >/dev/null && command -v redis-cli >/dev/null; } || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  # The packages' own services must not start: this script runs its own servers.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; own_policy=""; fi
  pg_bin=$(find_pg_bin)
fi
id postgres >/dev/null

# A port nothing listens on (bash's /dev/tcp connect fails); a start that
# still loses a race is retried with another port.
pick_port() {
  local port
  while :; do
    port=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
}

work=$(mktemp -d /tmp/ferry-sdk-backends.XXXXXX)
chmod 755 "$work"

# --- PostgreSQL ---------------------------------------------------------------
pg_data="$work/pg"
mkdir "$pg_data" && chown postgres: "$pg_data"
cd "$work"   # somewhere the postgres user may enter
runuser -u postgres -- "$pg_bin/initdb" -D "$pg_data" -U postgres -A trust -E UTF8 --no-locale --no-sync >"$work/initdb.log" 2>&1 \
  || { cat "$work/initdb.log"; exit 1; }
for attempt in 1 2 3 4 5; do
  pg_port=$(pick_port)
  if runuser -u postgres -- "$pg_bin/pg_ctl" start -w -t 60 -D "$pg_data" -l "$pg_data/server.log" \
      -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$pg_data -c max_prepared_transactions=10" \
      >/dev/null; then
    pg_pid=$(head -n 1 "$pg_data/postmaster.pid")
    break
  fi
  echo "postgres did not start on port $pg_port (attempt $attempt):"; tail -n 5 "$pg_data/server.log" || true
done
[ -n "$pg_pid" ] || { echo "PostgreSQL would not start"; exit 1; }
echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port (pid $pg_pid)"

# --- Redis --------------------------------------------------------------------
for attempt in 1 2 3 4 5; do
  redis_port=$(pick_port)
  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" \
    --logfile "$work/redis.log" --daemonize no &
  redis_pid=$!
  for _ in $(seq 50); do
    if redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; then break 2; fi
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "redis-server did not start on port $redis_port (attempt $attempt):"; tail -n 5 "$work/redis.log" || true
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  redis_pid=""
done
[ -n "$redis_pid" ] || { echo "redis-server would not start"; exit 1; }
echo "redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2) on 127.0.0.1:$redis_port (pid $redis_pid)"

# --- the tests ----------------------------------------------------------------
cd "$repo"
# The broker tests start the real ferry binary.
cargo build --release --locked -p ferry
export FERRY_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$pg_port/postgres"
export FERRY_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/"
export FERRY_TEST_BACKENDS_REQUIRED=1   # a missing URL fails rather than skips
cargo test --release --locked -p ferry-client --features postgres,redis --test backends 2>&1 | tee "$work/cargo-test.log"
if grep -q "test result: FAILED" "$work/cargo-test.log"; then exit 1; fi
