#!/usr/bin/env bash
# REST benchmark: pgstack (wrk over HTTP) beside pgbench on the equivalent SQL (simple
# and prepared protocol) and beside a peer, PostGraphile 4 (GraphQL over HTTP, npm),
# in one run, on one private cluster. The gateway runs with `pgstack dev`'s defaults
# (nothing tuned: pool size, logging). Prints a markdown table; numbers are this
# machine's.
#
#   bash bench/rest.sh [seconds per run, default 10] [connections, default 10]
#   PGSTACK_BIN=/path/to/pgstack bash bench/rest.sh   # another build (before / after)
#   PEER=none bash bench/rest.sh                      # without PostGraphile
#   ROUNDS=1 bash bench/rest.sh                       # one run per side (default 3)
#
# Workloads: GET by primary key, a filtered list of 20 rows, a two-level embed, a single
# insert, a bulk insert of 100 rows (the peer: by key and single insert, the workloads
# its baseline names). Load generator, gateway, peer and Postgres share the machine, as
# in shared/docs/performance-baselines.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONN=${2:-10}
# Each workload runs pgstack, pgbench simple and pgbench prepared in turn, ROUNDS times
# over, and reports each side's median: this machine's speed drifts by up to 15%
# within minutes, and runs of the two sides far apart in time measured the drift
# as much as the difference (docs/benchmarks.md).
ROUNDS=${ROUNDS:-3}
PGBIN=/usr/lib/postgresql/15/bin
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }

# Defaults only: no pool size, no log level (the access log at info is part of the cost).
PEER=${PEER:-postgraphile}
PEER_PID=
source bench/lib.sh
start_dev
trap 'kill -TERM $DEV $PEER_PID 2>/dev/null; wait $DEV 2>/dev/null; rm -rf "$work"' EXIT

"$PGBIN/psql" -q "$SU" <<'SQL'
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), created_at timestamptz DEFAULT now());
INSERT INTO items SELECT g, 'item ' || g, (g % 1000) / 10.0, now() FROM generate_series(1, 100000) g;
CREATE TABLE customers (id int PRIMARY KEY, name text);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2));
CREATE TABLE order_items (id int PRIMARY KEY, order_id int REFERENCES orders, item_id int REFERENCES items, qty int);
CREATE INDEX ON orders (customer_id); CREATE INDEX ON order_items (order_id);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 1000) g;
INSERT INTO orders SELECT g, 1 + g % 1000, g % 100 FROM generate_series(1, 10000) g;
INSERT INTO order_items SELECT g, 1 + g % 10000, 1 + g % 100000, 1 + g % 5 FROM generate_series(1, 30000) g;
CREATE TABLE events (id bigserial PRIMARY KEY, kind text, payload jsonb);
GRANT SELECT ON ALL TABLES IN SCHEMA public TO anon;
GRANT ALL ON events TO service_role; GRANT USAGE ON SEQUENCE events_id_seq TO service_role;
ANALYZE;
SQL
sleep 1  # schema cache reload after DDL

lua() { # $1 method, $2 path (may use %d for a random id), $3 key, $4 body file or ""
  cat <<LUA
math.randomseed(os.time())
wrk.method = "$1"
wrk.headers["apikey"] = "$3"
wrk.headers["Content-Type"] = "application/json"
local body = "$( [ -n "$4" ] && sed 's/"/\\"/g' "$4" | tr -d '\n' )"
if body ~= "" then wrk.body = body end
request = function()
  return wrk.format(nil, string.format("$2", math.random(1, 100000)))
end
LUA
}

run_wrk() { # method path key body -> "req/s p50 p99 non2xx"
  lua "$1" "$2" "$3" "$4" > "$work/s.lua"
  wrk_script "$work/s.lua" "$API"
}


run_pgbench() { # sql-file mode -> tps
  "$PGBIN/pgbench" -n -M "$2" -c "$CONN" -j 2 -T "$DURATION" -f "$1" "$SU" 2>/dev/null | awk '/^tps/ {print $3; exit}'
}

# The peer: PostGraphile 4 from npm (cached under ~/.cache/pgstack-bench), on the same
# database, connected as the superuser (no role switching: its best case).
peer_url=
if [ "$PEER" = postgraphile ]; then
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/pgstack-bench/postgraphile
  if [ -x "$cache/node_modules/.bin/postgraphile" ] || npm install --silent --no-audit --no-fund --prefix "$cache" postgraphile@4 >/dev/null 2>&1; then
    PEER_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$cache/node_modules/.bin/postgraphile" -c "$SU" --schema public --host 127.0.0.1 --port "$PEER_PORT" --disable-graphiql > "$work/peer.out" 2>&1 &
    PEER_PID=$!
    for _ in $(seq 1 60); do
      if curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"query":"{__typename}"}' "http://127.0.0.1:$PEER_PORT/graphql"; then
        peer_url="http://127.0.0.1:$PEER_PORT"
        break
      fi
      sleep 0.5
    done
    [ -n "$peer_url" ] || { echo "(PostGraphile did not start:)" >&2; tail -5 "$work/peer.out" >&2; }
  else
    echo "(PostGraphile could not be installed from npm: the peer column stays empty)" >&2
  fi
fi
cat > "$work/peer_pk.lua" <<'LUA'
math.randomseed(os.time())
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/graphql", nil, string.format('{"query":"query($id:Int!){itemById(id:$id){id name price createdAt}}","variables":{"id":%d}}', math.random(1, 100000)))
end
LUA
cat > "$work/peer_insert.lua" <<'LUA'
wrk.method = "POST"
wrk.path = "/graphql"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{"query":"mutation{createEvent(input:{event:{kind:\"click\",payload:\"{\\\"x\\\": 1}\"}}){event{id}}}"}]]
LUA
peer() { # lua-file -> req/s or "-"
  [ -n "$peer_url" ] && [ -n "$1" ] || { echo "-"; return; }
  read -r rps _ _ bad < <(wrk_script "$1" "$peer_url")
  if [ "${bad:-0}" = 0 ] && [ -n "$rps" ]; then echo "$rps"; else echo "error"; tail -3 "$work/wrk.out" >&2; [ -n "${PEER_DEBUG:-}" ] && sed -n 's/^wrk.body = \[\[\(.*\)\]\]$/\1/p' "$1" | curl -s -X POST -H 'Content-Type: application/json' --data-binary @- "$peer_url/graphql" >&2; fi
}

printf '\\set id random(1, 100000)\nSELECT id, name, price, created_at FROM items WHERE id = :id;\n' > "$work/pk.sql"
printf '\\set id random(1, 99000)\nSELECT id, name, price FROM items WHERE id >= :id AND price > 5 ORDER BY id LIMIT 20;\n' > "$work/list.sql"
printf '\\set id random(1, 1000)\nSELECT c.id, c.name, (SELECT json_agg(o) FROM (SELECT o.id, o.total, (SELECT json_agg(i) FROM (SELECT oi.qty, oi.item_id FROM order_items oi WHERE oi.order_id = o.id) i) AS items FROM orders o WHERE o.customer_id = c.id) o) FROM customers c WHERE c.id = :id;\n' > "$work/embed.sql"
printf "INSERT INTO events (kind, payload) VALUES ('click', '{\"x\": 1}');\n" > "$work/insert.sql"
printf "INSERT INTO events (kind, payload) SELECT 'click', '{\"x\": 1}' FROM generate_series(1, 100);\n" > "$work/bulk.sql"
echo '{"kind": "click", "payload": {"x": 1}}' > "$work/one.json"
python3 -c 'import json; print(json.dumps([{"kind": "click", "payload": {"x": 1}} for _ in range(100)]))' > "$work/hundred.json"

echo "## REST benchmark ($(nproc) cores, ${DURATION}s per run, $CONN connections, $(date -u +%F))"
echo
echo "| workload | pgstack req/s | p50 | p99 | non-2xx | pgbench simple tps | ratio | pgbench prepared tps | ratio | PostGraphile 4 req/s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
pct() { python3 -c "print(f'{100*float(\"$1\")/float(\"$2\"):.0f}%')" 2>/dev/null || echo "?"; }
# pgstack and pgbench run back to back for each workload; the peer's runs come after
# all of them. A PostGraphile run under load slowed the gateway run right after it
# by up to a third (reads by key 19.7k vs 27-29k req/s) while pgbench right after
# it ran as fast as ever (docs/benchmarks.md, 2026-12-05 fifth session): the peer
# is measured last so that it disturbs neither side of the ratio.
LINES=()
PEER_LUAS=()
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
row() { # label wrk-args... pgbench-file [peer-lua]
  local label=$1 file=$6 r rps p50 p99 bad
  local -a all_rps=() all_p50=() all_p99=() all_simple=() all_prepared=()
  local bad_total=0
  for r in $(seq 1 "$ROUNDS"); do
    read -r rps p50 p99 bad < <(run_wrk "$2" "$3" "$4" "$5")
    [ -n "$rps" ] || { echo "wrk failed:"; cat "$work/wrk.out"; exit 1; }
    all_rps+=("$rps"); all_p50+=("$(to_ms "$p50")"); all_p99+=("$(to_ms "$p99")"); bad_total=$((bad_total + ${bad:-0}))
    all_simple+=("$(run_pgbench "$file" simple)")
    all_prepared+=("$(run_pgbench "$file" prepared)")
  done
  local simple prepared
  rps=$(median "${all_rps[@]}"); simple=$(median "${all_simple[@]}"); prepared=$(median "${all_prepared[@]}")
  # Latencies in ms (wrk prints us, ms or s).
  p50=$(median "${all_p50[@]}"); p99=$(median "${all_p99[@]}")
  LINES+=("| $label | $rps | ${p50}ms | ${p99}ms | $bad_total | $simple | $(pct "$rps" "$simple") | $prepared | $(pct "$rps" "$prepared") |")
  ALL+=("$label: pgstack ${all_rps[*]}; simple ${all_simple[*]}; prepared ${all_prepared[*]}")
  PEER_LUAS+=("${7:-}")
}
ALL=()
# Warm-up, discarded: the pools' connections and prepared statements, the page cache.
DURATION=3 run_wrk GET "/rest/v1/items?id=eq.%d&select=id,name,price,created_at" "$ANON" "" >/dev/null
DURATION=3 run_pgbench "$work/pk.sql" simple >/dev/null
row "GET by primary key" GET "/rest/v1/items?id=eq.%d&select=id,name,price,created_at" "$ANON" "" "$work/pk.sql" "$work/peer_pk.lua"
row "filtered list, 20 rows" GET "/rest/v1/items?id=gte.%d&price=gt.5&select=id,name,price&order=id&limit=20" "$ANON" "" "$work/list.sql"
row "two-level embed" GET "/rest/v1/customers?id=eq.%d&select=id,name,orders(id,total,order_items(qty,item_id))" "$ANON" "" "$work/embed.sql"
row "single insert" POST "/rest/v1/events" "$SERVICE" "$work/one.json" "$work/insert.sql" "$work/peer_insert.lua"
row "bulk insert, 100 rows" POST "/rest/v1/events" "$SERVICE" "$work/hundred.json" "$work/bulk.sql"
[ -n "$peer_url" ] && DURATION=3 wrk_script "$work/peer_pk.lua" "$peer_url" >/dev/null
for i in "${!LINES[@]}"; do
  echo "${LINES[$i]} $(peer "${PEER_LUAS[$i]}") |"
done
echo
echo "Medians of $ROUNDS interleaved rounds (pgstack, pgbench simple, pgbench prepared); every round, in order:"
echo
for a in "${ALL[@]}"; do echo "- $a"; done
