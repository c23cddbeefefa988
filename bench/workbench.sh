#!/usr/bin/env bash
# Workbench benchmark: read-only query throughput through the Rowsel proxy
# (/proxy/v1/query) and Poge (/poge/api/query, uncached and cached) beside pgbench on
# the same SQL (simple and prepared protocol), in one run, on one private cluster.
# The gateway runs with `pgstack dev`'s defaults plus what turns the workbench on
# (WORKBENCH_ENABLED, WORKBENCH_ALLOW_PRIVATE: the target is the dev cluster on
# loopback). Prints a markdown table; numbers are this machine's.
#
#   bash bench/workbench.sh [seconds per run, default 10] [connections, default 10]
#   PGSTACK_BIN=/path/to/pgstack bash bench/workbench.sh
#
# Each proxy request parses the SQL with libpg_query, opens BEGIN READ ONLY with a
# statement_timeout, prepares the paged wrapper, fetches, and rolls back: pgbench runs
# the bare statement. "Poge cached" repeats one query (the answer comes from the
# gateway's cache); "uncached" makes every request's parameters unique.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONN=${2:-10}
PGBIN=/usr/lib/postgresql/15/bin
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }

export WORKBENCH_ENABLED=true WORKBENCH_ALLOW_PRIVATE=true
source bench/lib.sh
start_dev
# postgres://user:password@host:port/db
read -r DBUSER DBPASS DBHOST DBPORT DBNAME < <(python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(p.username, u.unquote(p.password), p.hostname, p.port, p.path.lstrip("/"))' "$SU")

"$PGBIN/psql" -q "$SU" <<'SQL'
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), created_at timestamptz DEFAULT now());
INSERT INTO items SELECT g, 'item ' || g, (g % 1000) / 10.0, now() FROM generate_series(1, 100000) g;
ANALYZE;
SQL

SQL_TEXT='SELECT id, name, price, created_at FROM items WHERE id = $1'
# The wrk scripts (bodies are JSON made by Python; Lua long strings keep them as is).
python3 - "$work" "$SERVICE" "$DBHOST" "$DBPORT" "$DBUSER" "$DBPASS" "$DBNAME" "$SQL_TEXT" <<'PY'
import json, sys
work, key, host, port, user, password, db, sql = sys.argv[1:]
conn = {"engine": "postgres", "host": host, "port": int(port), "database": db, "username": user, "password": password, "ssl_mode": "disable"}
creds = {"host": host, "port": int(port), "user": user, "password": password, "database": db, "sslMode": "disable"}
def script(name, path, body_template, args):
    with open(f"{work}/{name}.lua", "w") as f:
        f.write(f"""math.randomseed(os.time())
wrk.method = "POST"
wrk.path = "{path}"
wrk.headers["apikey"] = "{key}"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, nil, nil, string.format([[{body_template}]]{args}))
end
""")
proxy = json.dumps({"connection": conn, "sql": sql, "params": ["PARAM"]}).replace('"PARAM"', "%d")
script("proxy", "/proxy/v1/query", proxy, ", math.random(1, 100000)")
poge = json.dumps({**creds, "query": sql + " AND $2::int >= 0", "params": ["A", "B"]}).replace('"A"', "%d").replace('"B"', "%d")
script("poge", "/poge/api/query", poge, ", math.random(1, 100000), math.random(0, 2000000000)")
cached = json.dumps({**creds, "query": sql, "params": [4242]})
script("poge_cached", "/poge/api/query", cached, "")
with open(f"{work}/probe.json", "w") as f:
    json.dump({"connection": conn, "sql": sql, "params": [1]}, f)
PY

wrk_run() { wrk_script "$1" "$API"; }
printf '\\set id random(1, 100000)\nSELECT id, name, price, created_at FROM items WHERE id = :id;\n' > "$work/pk.sql"
pgb() { "$PGBIN/pgbench" -n -M "$1" -c "$CONN" -j 2 -T "$DURATION" -f "$work/pk.sql" "$SU" 2>/dev/null | awk '/^tps/ {print $3; exit}'; }

# A request that fails shows why before the numbers.
curl -sf -o /dev/null -X POST -H "apikey: $SERVICE" -H "Authorization: Bearer $SERVICE" -H 'Content-Type: application/json' \
  --data-binary @"$work/probe.json" "$API/proxy/v1/query" || { echo "the proxy refused the target:" >&2; curl -s -X POST -H "apikey: $SERVICE" -H "Authorization: Bearer $SERVICE" -H 'Content-Type: application/json' --data-binary @"$work/probe.json" "$API/proxy/v1/query" >&2; exit 1; }

# Warm-up, discarded.
DURATION=3 wrk_run "$work/proxy.lua" >/dev/null
DURATION=3 pgb simple >/dev/null
simple=$(pgb simple)
prepared=$(pgb prepared)
pct() { python3 -c "print(f'{100*float(\"$1\")/float(\"$2\"):.0f}%')" 2>/dev/null || echo "?"; }

echo "## Workbench benchmark ($(nproc) cores, ${DURATION}s per run, $CONN connections, $(date -u +%F))"
echo
echo "SQL: \`$SQL_TEXT\` (random id of 100 000). pgbench on the same SQL: simple $simple tps, prepared $prepared tps."
echo
echo "| workload | req/s | p50 | p99 | non-2xx | vs pgbench simple | vs pgbench prepared |"
echo "|---|---|---|---|---|---|---|"
for w in "Rowsel /proxy/v1/query:proxy" "Poge /poge/api/query, uncached:poge" "Poge /poge/api/query, cached:poge_cached"; do
  label=${w%%:*}; file=${w##*:}
  read -r rps p50 p99 bad < <(wrk_run "$work/$file.lua")
  [ -n "$rps" ] || { echo "wrk failed:"; cat "$work/wrk.out"; exit 1; }
  echo "| $label | $rps | $p50 | $p99 | $bad | $(pct "$rps" "$simple") | $(pct "$rps" "$prepared") |"
done
stats=$(curl -s -H "apikey: $SERVICE" -H "Authorization: Bearer $SERVICE" "$API/poge/api/stats/cache")
echo
echo "Poge cache after the runs: $(echo "$stats" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d["hits"], "hits,", d["misses"], "misses,", d["entries"], "entries")')"
