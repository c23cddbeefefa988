#!/usr/bin/env bash
# Supabase Realtime benchmark: postgres_changes with per-subscriber RLS. N subscribers
# (bench/realtime_clients.mjs), each with its own JWT (own sub and grp claims), on one
# table whose RLS policy reads the claims; rows written with owner 0 are visible to
# every subscriber, so each change is checked for N distinct viewers and delivered N
# times. Beside it, the same workload through the contract's /ws live query (one
# shared result, no per-viewer check). The gateway runs with `pgstack dev`'s defaults.
#
#   bash bench/realtime.sh [seconds per run, default 10] [writer rate for latency, default 100]
#
# Reports, for 100 and 1000 subscribers: commit-to-client p50/p99 at a fixed writer
# rate, delivered messages per second with the writer unthrottled, and the writer's
# TPS without capture, and with the subscribers connected.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
RATE=${2:-100}
PGBIN=/usr/lib/postgresql/15/bin
PGSTACK_BIN=${PGSTACK_BIN:-}
if [ -z "$PGSTACK_BIN" ]; then
  cargo build --release --bin pgstack -j2 >/dev/null 2>&1
  PGSTACK_BIN=target/release/pgstack
fi
[ -d tests/js/node_modules/ws ] || (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)

work=$(mktemp -d /tmp/pgstack-bench-XXXX); chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# Defaults, except the per-address connection cap (every client is on loopback).
PGSTACK_DIR="$work/state" LISTEN_ADDR=127.0.0.1:0 WS_MAX_CONNECTIONS_PER_IP=5000 "$PGSTACK_BIN" dev > "$work/dev.out" 2> "$work/dev.err" &
pids+=($!)
for _ in $(seq 1 120); do grep -q '^listening on' "$work/dev.out" && break; sleep 0.5; done
API=$(sed -n 's/^listening on //p' "$work/dev.out")
ANON=$(sed -n 's/^ *anon key: *//p' "$work/dev.out")
SECRET=$(sed -n 's/^ *JWT secret: *//p' "$work/dev.out")
SU=$(sed -n 's/^ *Superuser URL: *//p' "$work/dev.out")
"$PGBIN/psql" -q "$SU" <<'SQL'
CREATE TABLE feed (id bigserial PRIMARY KEY, owner int NOT NULL, body text, sent_us bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint);
ALTER TABLE feed ENABLE ROW LEVEL SECURITY;
-- Each subscriber sees the rows of its group and the shared ones (owner 0).
CREATE POLICY grp ON feed FOR SELECT TO authenticated USING (owner = 0 OR owner = (auth.jwt() ->> 'grp')::int);
GRANT SELECT ON feed TO authenticated, anon;
SQL
printf "INSERT INTO feed (owner, body) VALUES (0, 'hello');\n" > "$work/ins.sql"
pgb() { "$PGBIN/pgbench" -n -M prepared -c 4 -j 2 -T "$DURATION" -f "$work/ins.sql" "$@" "$SU" 2>/dev/null | awk '/^tps/ {print $3; exit}'; }

field() { echo "$2" | python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }

clients() { # mode n -> runs the writer ($WRITER args) once the clients are ready; prints their JSON
  local out="$work/clients.out"
  node bench/realtime_clients.mjs "$1" "$API" "$2" "$DURATION" "$3" > "$out" 2> "$work/clients.err" &
  local cpid=$!
  for _ in $(seq 1 600); do grep -q '^ready' "$out" && break; kill -0 $cpid 2>/dev/null || break; sleep 0.2; done
  grep -q '^ready' "$out" || { echo "clients did not get ready:" >&2; tail -5 "$work/clients.err" >&2; tail -5 "$work/dev.err" >&2; return 1; }
  local tps
  tps=$(pgb $WRITER)
  wait $cpid || true
  echo "$(tail -1 "$out") $tps"
}

echo "## Supabase Realtime postgres_changes with per-subscriber RLS ($(nproc) cores, ${DURATION}s per run, $(date -u +%F))"
echo
BASE=$(pgb)
echo "writer (pgbench INSERT, 4 clients, prepared), table not in supabase_realtime: $BASE tps"
echo
"$PGBIN/psql" -q "$SU" -c "ALTER PUBLICATION supabase_realtime ADD TABLE feed" 2>/dev/null
"$PGBIN/psql" -q "$SU" -c "SELECT pgr.subscribe('feed0', 'SELECT id, owner, sent_us FROM feed WHERE owner = 0', public => true)" >/dev/null
# The live query's snapshot grows with the table: start both runs from an empty one.
reset() { "$PGBIN/psql" -q "$SU" -c "TRUNCATE feed" >/dev/null; sleep 0.5; }

echo "| path | subscribers | writer | writer tps | delivered msg/s | p50 | p99 | max |"
echo "|---|---|---|---|---|---|---|---|"
for n in 100 1000; do
  for mode in channels live; do
    key=$SECRET; [ "$mode" = live ] && key=$ANON
    label="/realtime/v1 postgres_changes (RLS per subscriber)"; [ "$mode" = live ] && label="/ws live query (one shared result)"
    rate=$RATE; [ "$n" = 1000 ] && rate=$((RATE / 3))
    reset
    WRITER="-R $rate"
    read -r json tps < <(clients "$mode" "$n" "$key") || { echo "| $label | $n | failed |"; continue; }
    echo "| $label | $n | $rate/s | $tps | $(field per_sec "$json") | $(field p50_ms "$json") ms | $(field p99_ms "$json") ms | $(field max_ms "$json") ms |"
    reset
    WRITER=""
    read -r json tps < <(clients "$mode" "$n" "$key") || { echo "| $label | $n | failed |"; continue; }
    echo "| $label | $n | unthrottled | $tps | $(field per_sec "$json") | $(field p50_ms "$json") ms | $(field p99_ms "$json") ms | $(field max_ms "$json") ms |"
  done
done
