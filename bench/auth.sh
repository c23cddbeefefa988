#!/usr/bin/env bash
# Auth benchmark: sign-in (password grant), refresh and anonymous sign-in through the
# gateway, beside the cost of the password hash alone and pgbench on the SQL of a
# session start, in one run on one private cluster. Prints a markdown table.
#
#   bash bench/auth.sh [seconds per run, default 10] [connections, default 8]
#
# Sign-in = argon2id verify (m=19 MiB, t=2, p=1, on the blocking pool) + one
# transaction (look-up, insert session + refresh token, audit) + JWT signing.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONN=${2:-8}
PGBIN=/usr/lib/postgresql/15/bin
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }

# PGSTACK_BIN: another build of the gateway (e.g. a before/after comparison).
cargo build --release -p pgstack-gateway --example hash_cost -j2 >/dev/null 2>&1
export RUST_LOG=warn DB_POOL_SIZE=${DB_POOL_SIZE:-8}
export AUTH_RATE_LIMIT=100000000/m ANONYMOUS_RATE_LIMIT=100000000/m ALLOW_ANONYMOUS_SIGNIN=true
source bench/lib.sh
start_dev
EMAIL=bench@example.com PASS=bench-password-1
curl -sf -o /dev/null -X POST "$API/auth/v1/signup" -H "apikey: $ANON" -H 'content-type: application/json' \
  -d "{\"email\":\"$EMAIL\",\"password\":\"$PASS\"}"

run_wrk() { # path body -> "req/s p50 p99 non2xx"
  cat > "$work/s.lua" <<LUA
wrk.method = "POST"
wrk.headers["apikey"] = "$ANON"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$2'
LUA
  WRK_THREADS=1 wrk_script "$work/s.lua" "$API$1"
}

read -r si_rps si_p50 si_p99 si_bad < <(run_wrk "/auth/v1/token?grant_type=password" "{\"email\":\"$EMAIL\",\"password\":\"$PASS\"}")
read -r s1_rps s1_p50 s1_p99 s1_bad < <(CONN=1 run_wrk "/auth/v1/token?grant_type=password" "{\"email\":\"$EMAIL\",\"password\":\"$PASS\"}")
read -r an_rps an_p50 an_p99 an_bad < <(run_wrk "/auth/v1/signup" "{\"data\":{}}")
read -r rf_rps rf_p50 rf_p99 rf_bad < <(node bench/auth_refresh.mjs "$API" "$ANON" "$CONN" "$DURATION" "$EMAIL" "$PASS")
read -r h_p50 h_p99 h_rps < <(target/release/examples/hash_cost 400 "$(nproc)")
read -r h1_p50 h1_p99 h1_rps < <(target/release/examples/hash_cost 100 1)

# The SQL of a session start, as the gateway runs it (one transaction per sign-in).
USER_ID=$("$PGBIN/psql" -qtA "$SU" -c "SELECT id FROM auth.users WHERE email = '$EMAIL'")
cat > "$work/session.sql" <<SQL
BEGIN;
SELECT id, encrypted_password, coalesce(banned_until > now(), false), email_confirmed_at IS NOT NULL FROM auth.users WHERE lower(email) = lower('$EMAIL') AND deleted_at IS NULL;
WITH s AS (INSERT INTO auth.sessions (user_id, user_agent, ip) VALUES ('$USER_ID', 'bench', '127.0.0.1') RETURNING id),
     r AS (INSERT INTO auth.refresh_tokens (token_hash, user_id, session_id) SELECT md5(random()::text) || md5(random()::text), '$USER_ID', s.id FROM s),
     u AS (UPDATE auth.users SET last_sign_in_at = now() WHERE id = '$USER_ID')
SELECT id FROM s;
SELECT auth.user_json(u) FROM auth.users u WHERE u.id = '$USER_ID';
INSERT INTO auth.audit_log_entries (action, actor_id, payload, ip_address) VALUES ('login', '$USER_ID', '{}', '127.0.0.1');
COMMIT;
SQL
pg_tps=$("$PGBIN/pgbench" -n -c "$CONN" -j 2 -T "$DURATION" -f "$work/session.sql" "$SU" 2>/dev/null | awk '/^tps/ {print $3; exit}')

share=$(python3 -c "
def ms(v):
    v=v.strip()
    if v.endswith('ms'): return float(v[:-2])
    if v.endswith('us'): return float(v[:-2])/1000
    if v.endswith('s'): return float(v[:-1])*1000
    return float(v)
print(f'{100*float(\"$h1_p50\")/ms(\"$s1_p50\"):.0f}%')")
cpu_share=$(python3 -c "print(f'{100*float(\"$si_rps\")/float(\"$h_rps\"):.0f}%')")

echo "## Auth benchmark ($(nproc) cores, ${DURATION}s per run, $CONN connections, $(date -u +%F))"
echo
echo "| workload | req/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|"
echo "| sign-in (password grant), 1 connection | $s1_rps | $s1_p50 | $s1_p99 | $s1_bad |"
echo "| sign-in (password grant), $CONN connections | $si_rps | $si_p50 | $si_p99 | $si_bad |"
echo "| refresh (rotation, newest token each time) | $rf_rps | ${rf_p50}ms | ${rf_p99}ms | $rf_bad |"
echo "| anonymous sign-in (a session, no password) | $an_rps | $an_p50 | $an_p99 | $an_bad |"
echo "| argon2id verify alone, 1 thread | $h1_rps | ${h1_p50}ms | ${h1_p99}ms | |"
echo "| argon2id verify alone, $(nproc) threads | $h_rps | ${h_p50}ms | ${h_p99}ms | |"
echo "| pgbench: session-start SQL ($CONN clients) | $pg_tps tps | | | |"
echo
echo "Password hash share of one sign-in (1 connection, p50): $share (argon2id verify ${h1_p50}ms of a ${s1_p50} sign-in)."
echo "Under load the hash is the ceiling: sign-in throughput is $cpu_share of what argon2id alone reaches on $(nproc) cores."
