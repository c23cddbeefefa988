#!/usr/bin/env bash
# Abuse benchmark (issues 14 and 20): each scenario runs against one `pgstack dev`
# (private cluster, default settings) over real sockets on 127.0.0.0/8, bounded in
# count and time, while tests/examples/abuse.rs measures every second /health latency,
# a password sign-in's latency (from its own address, 127.0.0.254), the gateway's RSS
# and open descriptors (/proc/<pid>), the backends it holds (pg_stat_activity, user
# authenticator) and the webhook outbox's size. After each scenario it keeps measuring
# for AFTER seconds (RSS "after"). Prints a markdown table with PASS / FAIL per target;
# the raw results go to bench/results/abuse-<time>.jsonl (not committed).
#
#   bash bench/abuse.sh                       # the full run, release binary (~20 min)
#   PGSTACK_BIN=target/debug/pgstack QUICK=1 bash bench/abuse.sh   # small counts, AFTER=5
#
# Settings (environment): PGSTACK_BIN (default target/release/pgstack, built when
# missing), QUICK=1, AFTER (seconds, default 60, 5 with QUICK), SCENARIOS (a subset, in
# order), DB_POOL_SIZE (default as the gateway's: max(2 × cores, 4)), CLIENT_NOFILE
# (descriptor limit of the load client, default 65536; the gateway keeps the shell's),
# DOCS_ROWS / BIG_ROWS / FLOOD_CONNS / SLOW_UPLOADS / WS_PAIRS / WS_FRAMES (sizes).
#
# Scenarios: hashing (300 concurrent requests to each password-hashing route: signup,
# password grant, recover/confirm, PUT /user, admin create / update, from 250 source
# addresses), batch_bomb (a 100,000-char title referenced 20,000 times in a batch),
# slow_abandon (a 20-term `or=(…fts…)` filter on a 300k-row table, 300 requests
# abandoned after 1–3 s), batch_slow (the same filter inside /rest/v1/batch),
# slow_uploads (1 byte every 5 s into POST /storage/v1/object, Content-Length 1000),
# flood (2 waves of 10,200 connections sending half a request line), ws_backlog
# (WebSocket pairs on a _channel_* channel: one peer stops reading, the other sends
# ~1 MiB broadcasts), big_reads (6 parallel unfiltered reads of a ~100 MB table, with
# the default DB_MAX_ROWS), webhook_outbox (2 writers into a table with a webhook to a
# local receiver), big_reads_unbounded (big_reads after a restart with DB_MAX_ROWS=none,
# so that RESPONSE_MAX_BYTES is what bounds it).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-}
[ "$QUICK" = 0 ] && QUICK=
AFTER=${AFTER:-$([ -n "$QUICK" ] && echo 5 || echo 60)}
PGSTACK_BIN=${PGSTACK_BIN:-target/release/pgstack}
SCENARIOS=${SCENARIOS:-hashing batch_bomb slow_abandon batch_slow slow_uploads flood ws_backlog big_reads webhook_outbox big_reads_unbounded}
CLIENT_NOFILE=${CLIENT_NOFILE:-65536}
CORES=$(nproc)
DB_POOL_SIZE=${DB_POOL_SIZE:-$(( 2 * CORES > 4 ? 2 * CORES : 4 ))}
POOL_BOUND=$(( 3 * DB_POOL_SIZE + 1 ))  # the request pool, the REST pipeline and transaction pools, LISTEN

if [ ! -x "$PGSTACK_BIN" ]; then
  [ "$PGSTACK_BIN" = target/release/pgstack ] || { echo "$PGSTACK_BIN: not found" >&2; exit 1; }
  cargo build --release --bin pgstack -j2 -q
fi
case "$PGSTACK_BIN" in *debug*) PROFILE=debug ;; *) PROFILE=release ;; esac
PROFILE=${CLIENT_PROFILE:-$PROFILE}
if [ "$PROFILE" = release ]; then
  cargo build --release -p pgstack-tests --example abuse -j2 -q
else
  cargo build -p pgstack-tests --example abuse -j2 -q
fi
CLIENT=target/$PROFILE/examples/abuse
export QUICK AFTER POOL_BOUND

work=$(mktemp -d /tmp/pgstack-abuse-XXXX); chmod 755 "$work"
mkdir -p bench/results
RESULTS=bench/results/abuse-$(date -u +%Y%m%dT%H%M%SZ).jsonl
: > "$RESULTS"
DEV= RECV=
cleanup() {
  [ -n "$DEV" ] && { kill -TERM "$DEV" 2>/dev/null || true; wait "$DEV" 2>/dev/null || true; }
  [ -n "$RECV" ] && { kill -TERM "$RECV" 2>/dev/null || true; wait "$RECV" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

node bench/webhook_receiver.mjs > "$work/recv.out" &
RECV=$!
for _ in $(seq 1 50); do grep -q '^ready' "$work/recv.out" && break; sleep 0.1; done
RPORT=$(sed -n 's/^ready //p' "$work/recv.out")

# The gateway keeps this shell's descriptor limit (it raises its soft limit to the hard
# one itself); only the load client gets CLIENT_NOFILE.
start_gateway() { # extra VAR=value settings
  : > "$work/dev.out"
  env PGSTACK_DIR="$work/state" LISTEN_ADDR=127.0.0.1:0 RUST_LOG=warn DB_POOL_SIZE="$DB_POOL_SIZE" \
    WEBHOOK_ALLOWED_HOSTS="127.0.0.1:$RPORT" "$@" "$PGSTACK_BIN" dev > "$work/dev.out" 2>> "$work/dev.err" &
  DEV=$!
  for _ in $(seq 1 240); do grep -q '^listening on' "$work/dev.out" && break; sleep 0.5; done
  grep -q '^listening on' "$work/dev.out" || { echo "the gateway did not start:" >&2; tail -20 "$work/dev.err" >&2; exit 1; }
  export API ANON SERVICE SU GW_PID=$DEV RPORT
  API=$(sed -n 's/^listening on //p' "$work/dev.out")
  ANON=$(sed -n 's/^ *anon key: *//p' "$work/dev.out")
  SERVICE=$(sed -n 's/^ *service_role key: *//p' "$work/dev.out")
  SU=$(sed -n 's/^ *Superuser URL: *//p' "$work/dev.out")
}
stop_gateway() { kill -TERM "$DEV" 2>/dev/null || true; wait "$DEV" 2>/dev/null || true; DEV=; }
client() { ( ulimit -n "$CLIENT_NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec timeout $(( AFTER + 300 )) "$CLIENT" "$@" ); }

start_gateway
echo "setting up (tables, users, bucket, webhook) ..." >&2
client setup

for s in $SCENARIOS; do
  if [ "$s" = big_reads_unbounded ]; then
    echo "[$s] restarting the gateway with DB_MAX_ROWS=none ..." >&2
    stop_gateway
    start_gateway DB_MAX_ROWS=none
  fi
  if ! client run "$s" >> "$RESULTS"; then
    echo "{\"scenario\":\"$s\",\"details\":{\"error\":\"the client failed or overran its time\"}}" >> "$RESULTS"
  fi
done

LIMIT=$(awk '/^Max open files/ {print $4}' "/proc/$DEV/limits" 2>/dev/null || echo '?')
echo
echo "## Abuse ($CORES cores, $(date -u +%F), $PGSTACK_BIN${QUICK:+, QUICK}, AFTER=${AFTER}s)"
echo
echo "Gateway settings: defaults of \`pgstack dev\` (AUTH_RATE_LIMIT 60/m per IP, PASSWORD_HASH_CONCURRENCY = cores," \
  "HTTP header read timeout 10 s, DB_MAX_ROWS 1000 except big_reads_unbounded), DB_POOL_SIZE=$DB_POOL_SIZE" \
  "(backends bound: 3 pools + LISTEN = $POOL_BOUND), descriptor limit $LIMIT. Targets: /health and sign-in under 1 s" \
  "throughout (every sample answered 2xx), peak RSS under +256 MiB (+64 MiB for hashing, issue 14), RSS under +64 MiB" \
  "${AFTER} s after, descriptors under 80% of the limit, backends ≤ $POOL_BOUND."
echo
"$CLIENT" report "$RESULTS"
echo
echo "Raw results: $RESULTS"
