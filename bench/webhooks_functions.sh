#!/usr/bin/env bash
# Webhook and edge-function benchmark, in one run on a private cluster:
#  1. webhooks: pgbench inserts rows for N seconds; a Node receiver measures deliveries
#     per second and commit-to-delivery latency (p50 / p99);
#  2. edge functions: wrk on POST /functions/v1/hello (warm) beside wrk on the same Deno
#     code served directly by Deno.
#   bash bench/webhooks_functions.sh [seconds, default 10] [clients, default 4]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CLIENTS=${2:-4}
PGBIN=/usr/lib/postgresql/15/bin
DENO=${DENO_PATH:-$PWD/tests/js/node_modules/@deno/linux-x64-glibc/deno}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
cargo build --release --bin pgstack -j2 >/dev/null 2>&1

work=$(mktemp -d /tmp/pgstack-bench-XXXX); chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

node bench/webhook_receiver.mjs > "$work/recv.out" &
pids+=($!)
for _ in $(seq 1 50); do grep -q '^ready' "$work/recv.out" && break; sleep 0.1; done
RPORT=$(sed -n 's/^ready //p' "$work/recv.out")

PGSTACK_DIR="$work/state" LISTEN_ADDR=127.0.0.1:0 RUST_LOG=warn DENO_PATH="$DENO" \
  WEBHOOK_ALLOWED_HOSTS="127.0.0.1:$RPORT" target/release/pgstack dev > "$work/dev.out" 2> "$work/dev.err" &
DEV=$!
pids=("$DEV" "${pids[@]}")
for _ in $(seq 1 120); do grep -q '^listening on' "$work/dev.out" && break; sleep 0.5; done
API=$(sed -n 's/^listening on //p' "$work/dev.out")
ANON=$(sed -n 's/^ *anon key: *//p' "$work/dev.out")
SERVICE=$(sed -n 's/^ *service_role key: *//p' "$work/dev.out")
SU=$(sed -n 's/^ *Superuser URL: *//p' "$work/dev.out")

HELLO='Deno.serve(() => new Response("hello world"));'
"$PGBIN/psql" -q "$SU" -v hello="$HELLO" <<'SQL'
CREATE TABLE bench_events (id bigserial PRIMARY KEY, sent_at timestamptz NOT NULL DEFAULT clock_timestamp(), payload text);
INSERT INTO pgr.functions (name, source, verify_jwt) VALUES ('hello', :'hello', true);
SQL
echo "## Webhooks and edge functions ($(nproc) cores, ${DURATION}s, $(date -u +%F))"
echo
printf "INSERT INTO bench_events (payload) VALUES ('x');\n" > "$work/ins.sql"
BASE=$("$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -T "$DURATION" -f "$work/ins.sql" "$SU" 2>/dev/null | awk '/^tps/ {print $3; exit}')
"$PGBIN/psql" -q "$SU" -c "TRUNCATE bench_events"
curl -sf -X POST "$API/rest/v1/webhooks" -H "Authorization: Bearer $SERVICE" -H 'Content-Type: application/json' \
  -d "{\"url\": \"http://127.0.0.1:$RPORT/hook\", \"table_name\": \"bench_events\", \"events\": [\"INSERT\"]}" >/dev/null
TPS=$("$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -T "$DURATION" -f "$work/ins.sql" "$SU" 2>/dev/null | awk '/^tps/ {print $3; exit}')
TOTAL=$("$PGBIN/psql" -tAq "$SU" -c "SELECT count(*) FROM bench_events")
for _ in $(seq 1 120); do
  LEFT=$("$PGBIN/psql" -tAq "$SU" -c "SELECT count(*) FROM pgr.webhook_outbox WHERE status <> 'delivered'")
  [ "$LEFT" = 0 ] && break; sleep 0.5
done
kill -TERM "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true
RESULT=$(tail -1 "$work/recv.out")
echo "| workload | result |"
echo "|---|---|"
echo "| writer without webhook (pgbench INSERT, $CLIENTS clients) | $BASE tps |"
echo "| writer with the webhook trigger and outbox | $TPS tps, $TOTAL events committed |"
echo "| deliveries (one gateway, to a local Node receiver) | $RESULT |"

# Edge functions: through the gateway (warm) and the same code straight on Deno.
curl -sf -X POST "$API/functions/v1/hello" -H "Authorization: Bearer $ANON" >/dev/null
cat > "$work/direct.ts" <<TS
Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: ({ port }) => console.log("ready " + port) }, () => new Response("hello world"));
TS
"$DENO" run --quiet --allow-net "$work/direct.ts" > "$work/deno.out" &
pids+=($!)
for _ in $(seq 1 100); do grep -q '^ready' "$work/deno.out" && break; sleep 0.1; done
DPORT=$(sed -n 's/^ready //p' "$work/deno.out")
printf 'wrk.method = "POST"\nwrk.headers["Authorization"] = "Bearer %s"\n' "$ANON" > "$work/fn.lua"
wrk -t2 -c10 -d"${DURATION}s" --latency -s "$work/fn.lua" "$API/functions/v1/hello" > "$work/fn.out"
wrk -t2 -c10 -d"${DURATION}s" --latency "http://127.0.0.1:$DPORT/" > "$work/direct.out"
row() { awk -v l="$1" '/Requests\/sec/ {r=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2} END {printf "| %s | %s req/s | p50 %s | p99 %s |\n", l, r, p50, p99}' "$2"; }
echo
echo "| edge function (wrk, 10 connections) | throughput | p50 | p99 |"
echo "|---|---|---|---|"
row "POST /functions/v1/hello through pgstack" "$work/fn.out"
row "the same handler served by Deno directly" "$work/direct.out"
