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
