#!/usr/bin/env bash
# Live-query benchmark: commit-to-frame latency and frames per second for 1, 100 and
# 1000 WebSocket subscribers of one query, and the writer's TPS with and without the
# subscription, in one run on a private cluster.
#   bash bench/live.sh [seconds per run, default 10] [writer rate tps, default 200]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
RATE=${2:-200}
PGBIN=/usr/lib/postgresql/15/bin
cargo build --release --bin pgstack -j2 >/dev/null 2>&1
cargo build --release -p pgstack-tests --example live_clients -j2 >/dev/null 2>&1
work=$(mktemp -d /tmp/pgstack-bench-XXXX); chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
PGSTACK_DIR="$work/state" LISTEN_ADDR=127.0.0.1:0 RUST_LOG=warn WS_MAX_CONNECTIONS_PER_IP=5000 WS_CLIENT_QUEUE=1024 \
  target/release/pgstack dev > "$work/dev.out" 2> "$work/dev.err" &
pids+=($!)
for _ in $(seq 1 120); do grep -q '^listening on' "$work/dev.out" && break; sleep 0.5; done
API=$(sed -n 's/^listening on //p' "$work/dev.out")
ANON=$(sed -n 's/^ *anon key: *//p' "$work/dev.out")
SU=$(sed -n 's/^ *Superuser URL: *//p' "$work/dev.out")
cat > "$work/setup.sql" <<'SQL'
CREATE TABLE items (id bigserial PRIMARY KEY, qty int NOT NULL, kind text NOT NULL, sent_us bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint);
INSERT INTO items (qty, kind) SELECT g % 50, 'other' FROM generate_series(1, 100000) g;
CREATE INDEX ON items (kind);
ANALYZE items;
SQL
cat > "$work/subscribe.sql" <<'SQL'
SELECT pgr.subscribe('watched', 'SELECT id, qty, sent_us FROM items WHERE kind = ''watched''');
SQL
"$PGBIN/psql" -q "$SU" -f "$work/setup.sql"
printf '\\set id random(1, 100000)\nUPDATE items SET qty = (qty + 1) %% 50 WHERE id = :id;\n' > "$work/upd.sql"
printf "INSERT INTO items (qty, kind) VALUES (1, 'watched');\n" > "$work/ins.sql"
tps() { "$PGBIN/pgbench" -n -M prepared -c 4 -j 2 -T "$DURATION" "$@" "$SU" 2>/dev/null | awk '/^tps/ {print $3; exit}'; }

echo "## Live queries ($(nproc) cores, ${DURATION}s per run, $(date -u +%F))"
echo
BASE=$(tps -f "$work/upd.sql")
"$PGBIN/psql" -qAt "$SU" -f "$work/subscribe.sql" >/dev/null
WITH=$(tps -f "$work/upd.sql")
echo "| writer (pgbench UPDATE by key, 4 clients, prepared) | tps |"
echo "|---|---|"
echo "| no subscription | $BASE |"
echo "| one subscription on the table (single-table filter, fast path; the updated rows are outside the result) | $WITH |"
echo
echo "| subscribers | writer rate (msg/s) | messages | frames/s | p50 | p99 | last-arrival p50 | last-arrival p99 |"
echo "|---|---|---|---|---|---|---|---|"
# The issue's three sizes at the writer rate, then 1000 subscribers at lower rates:
# where the 2 shared cores stop keeping up (frames/s = rate x subscribers).
for run in 1:$RATE 100:$RATE 1000:$RATE 1000:100 1000:50 1000:20; do
  n=${run%%:*}; rate=${run##*:}
  target/release/examples/live_clients "ws://${API#http://}/ws/watched?apikey=$ANON" "$n" > "$work/c.out" 2>"$work/c.err" &
  C=$!
  for _ in $(seq 1 300); do grep -q '^ready' "$work/c.out" && break; sleep 0.1; done
  "$PGBIN/pgbench" -n -M prepared -c 2 -j 2 -T "$DURATION" -R "$rate" -f "$work/ins.sql" "$SU" >/dev/null 2>&1
  sleep 2
  kill -TERM $C 2>/dev/null || true; wait $C 2>/dev/null || true
  tail -1 "$work/c.out" | RATE_NOW=$rate python3 -c '
import json, os, sys
d = json.load(sys.stdin)
print("| %s | %s | %s | %s | %s ms | %s ms | %s ms | %s ms |" % (d["subscribers"], os.environ["RATE_NOW"], d["messages"], int(d["frames_per_sec"] or 0), d["p50_ms"], d["p99_ms"], d["last_arrival_p50_ms"], d["last_arrival_p99_ms"]))'
done
