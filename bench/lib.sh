# Shared by the newer bench scripts: `source bench/lib.sh`, then `start_dev`.
# start_dev: builds the release binary unless PGSTACK_BIN is set, runs `pgstack dev`
# with its defaults (plus whatever the caller exported) in a temporary folder removed
# on exit, and sets API, ANON, SERVICE, SU and work.
start_dev() {
  PGSTACK_BIN=${PGSTACK_BIN:-}
  if [ -z "$PGSTACK_BIN" ]; then
    cargo build --release --bin pgstack -j2 >/dev/null 2>&1
    PGSTACK_BIN=target/release/pgstack
  fi
  work=$(mktemp -d /tmp/pgstack-bench-XXXX)
  chmod 755 "$work"
  export PGSTACK_DIR="$work/state" LISTEN_ADDR=127.0.0.1:0
  "$PGSTACK_BIN" dev > "$work/dev.out" 2> "$work/dev.err" &
  DEV=$!
  trap 'kill -TERM $DEV 2>/dev/null; wait $DEV 2>/dev/null; rm -rf "$work"' EXIT
  for _ in $(seq 1 120); do grep -q '^listening on' "$work/dev.out" && break; sleep 0.5; done
  API=$(sed -n 's/^listening on //p' "$work/dev.out")
  ANON=$(sed -n 's/^ *anon key: *//p' "$work/dev.out")
  SERVICE=$(sed -n 's/^ *service_role key: *//p' "$work/dev.out")
  SU=$(sed -n 's/^ *Superuser URL: *//p' "$work/dev.out")
  [ -n "$API" ] || { echo "pgstack dev did not start:" >&2; tail -20 "$work/dev.err" >&2; exit 1; }
}

# wrk_script LUA-FILE URL: wrk with DURATION, CONN and WRK_THREADS (2); prints
# "req/s p50 p99 non2xx".
wrk_script() {
  wrk -t"${WRK_THREADS:-2}" -c"$CONN" -d"${DURATION}s" --latency -s "$1" "$2" > "$work/wrk.out" 2>&1 || true
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  p50=$(awk '$1=="50%" {print $2}' "$work/wrk.out")
  p99=$(awk '$1=="99%" {print $2}' "$work/wrk.out")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$work/wrk.out")
  echo "$rps $p50 $p99 ${non2xx:-0}"
}
