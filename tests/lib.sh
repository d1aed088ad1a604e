# Shared shell code of the real-client suites (tests/compat/run.sh,
# tests/eos/run.sh): installs helpers, a ferry broker on a loopback port, and
# the broker-control protocol. Source it; it defines functions only.
#
# The caller sets:
#   LIB_TAG        prefix of messages and of the broker-log markers ("compat", "eos")
#   FERRY          the broker binary
#   BROKER_FLAGS   array of extra `ferry serve` flags
#   PORT DATA BLOG the broker's port, data dir and log file (start_broker)
#   LISTEN         (optional) the --listen value, default 127.0.0.1:$PORT;
#                  its PLAINTEXT listener must be on $PORT
# and reads:
#   BROKER_PID     the running broker ("" when none)
#   BROKER_UP      1 after a successful start or restart, 0 after a failed one
#   KILLS          kills served since the caller last reset it
#   CLIENT_PID     (serve_kill_requests) the client program being served
#
# Broker control: a client program run with FERRY_CONTROL_DIR=<dir> creates
# <dir>/kill-request (written elsewhere, then renamed; its first line says
# why). serve_kill_requests SIGKILLs the broker, restarts it on the same port
# with the same data dir, deletes the request and creates <dir>/kill-done (one
# line), or <dir>/kill-failed when the broker did not come back. The program
# may ask again after deleting kill-done. The broker log gets a
# "=== $LIB_TAG:" line per kill and per restart.

BROKER_PID=""
BROKER_UP=0
KILLS=0

lib_say() { printf '%s: %s\n' "$LIB_TAG" "$*"; }

# ---------------------------------------------------------------- installs
as_root() { if ((EUID == 0)); then "$@"; else sudo -n "$@"; fi; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "'$1' not found on PATH ($2)" >&2; return 1; }; }

# Maven, with apt-get when it is missing (Java suites).
ensure_maven() {
  need java "Java 17+ is required"
  if ! command -v mvn >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq maven >/dev/null
  fi
  need mvn "Maven is required"
}

# A Python venv at VENV with the packages of REQ, reinstalled when REQ changes.
ensure_venv() { # VENV REQ
  local venv="$1" req="$2" stamp="$1/.ferry-req"
  need python3 "Python 3 is required"
  if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
  fi
  if [[ ! -f "$stamp" ]] || ! cmp -s "$req" "$stamp"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
  fi
}

# ---------------------------------------------------------------- broker
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' 2>/dev/null || {
    local p
    while :; do
      p=$((20000 + RANDOM % 40000))
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
  }
}

# Starts `ferry serve` on 127.0.0.1:$PORT with $DATA, appending to $BLOG, and
# waits up to 30 s until it accepts connections. On failure nothing is left
# running and it returns 1.
start_broker() {
  mkdir -p "$DATA"
  NO_COLOR=1 "$FERRY" serve --listen "${LISTEN:-127.0.0.1:$PORT}" --data-dir "$DATA" "${BROKER_FLAGS[@]}" >>"$BLOG" 2>&1 &
  BROKER_PID=$!
  local i
  for i in $(seq 600); do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      lib_say "ferry exited during startup; last log lines:"
      tail -n 20 "$BLOG" | sed 's/^/    /' || true
      wait "$BROKER_PID" 2>/dev/null || true
      BROKER_PID=""
      BROKER_UP=0
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      BROKER_UP=1
      return 0
    fi
    sleep 0.05
  done
  lib_say "ferry did not accept connections on 127.0.0.1:$PORT within 30s; stopping it"
  stop_broker
  BROKER_UP=0
  return 1
}

# SIGTERM, up to 5 s for a clean exit, then SIGKILL.
stop_broker() {
  if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$BROKER_PID" 2>/dev/null || true
  fi
  [[ -z "$BROKER_PID" ]] || wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=""
}

# Serves one kill request: SIGKILL, restart on the same port and data dir (5
# tries), then kill-done or kill-failed in DIR.
kill_and_restart() { # NAME DIR WHY
  local name="$1" dir="$2" why="$3" old="$BROKER_PID" t0 try ms
  t0=$(date +%s%N)
  KILLS=$((KILLS + 1))
  printf '=== %s: %s requested a broker kill (%s): SIGKILL pid %s ===\n' "$LIB_TAG" "$name" "$why" "$old" >>"$BLOG"
  if [[ -n "$old" ]]; then
    kill -KILL "$old" 2>/dev/null || true
    wait "$old" 2>/dev/null || true
  fi
  BROKER_PID=""
  for try in 1 2 3 4 5; do
    if start_broker; then
      ms=$((($(date +%s%N) - t0) / 1000000))
      printf '=== %s: restarted as pid %s (%s ms after the kill) ===\n' "$LIB_TAG" "$BROKER_PID" "$ms" >>"$BLOG"
      lib_say "$name: broker SIGKILLed (pid $old; $why) and restarted (pid $BROKER_PID) in ${ms} ms"
      echo "kill #$KILLS: SIGKILL pid $old, restarted as pid $BROKER_PID on 127.0.0.1:$PORT in ${ms} ms" >"$dir/.kill-done"
      mv "$dir/.kill-done" "$dir/kill-done"
      return 0
    fi
    sleep 0.5
  done
  echo "broker did not restart on 127.0.0.1:$PORT after SIGKILL of pid $old (see $BLOG)" >"$dir/kill-failed"
  return 1
}

# While CLIENT_PID runs, serves the kill requests in DIR.
serve_kill_requests() { # NAME DIR
  local why
  while kill -0 "$CLIENT_PID" 2>/dev/null; do
    if [[ -e "$2/kill-request" ]]; then
      why="$(head -c 200 "$2/kill-request" 2>/dev/null | head -1)"
      rm -f "$2/kill-request"
      kill_and_restart "$1" "$2" "${why:-no reason given}" || true
    fi
    sleep 0.05
  done
}

# A CA, a server certificate for 127.0.0.1 and a client certificate, in DIR.
make_test_certs() { # DIR
  local d="$1" ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes) n
  mkdir -p "$d"
  openssl req -x509 "${ec[@]}" -days 2 -subj /CN=ferry-test-ca -keyout "$d/ca.key" -out "$d/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  printf 'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/server.ext"
  printf 'extendedKeyUsage=clientAuth\n' >"$d/client.ext"
  for n in server client; do
    openssl req "${ec[@]}" -subj "/CN=ferry-test-$n" -keyout "$d/$n.key" -out "$d/$n.csr" 2>/dev/null
    openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
      -extfile "$d/$n.ext" -out "$d/$n.pem" 2>/dev/null
  done
}
