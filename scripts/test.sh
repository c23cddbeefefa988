#!/usr/bin/env bash
# The whole test suite, on a real PostgreSQL 15 with the extension installed:
#   0. format (cargo fmt), lints (clippy -D warnings), no import circles (scripts/import-cycles),
#   1. extension tests inside Postgres (cargo pgrx test),
#   2. install the extension into the system PostgreSQL 15,
#   3. unit tests of every crate + end-to-end tests (real clusters, real pgstack binary, HTTP).
# Idempotent; installs what is missing first (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
step() { printf '\n== %s\n' "$*"; }

step "dependencies"
bash scripts/install-deps.sh

step "format, lints, module structure"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
python3 scripts/import-cycles --rest
for depth in 2 3 4; do python3 scripts/import-cycles "$depth"; done  # no circle between submodules either

if [ "$(id -u)" = 0 ]; then
  # Postgres refuses root: pgrx's test cluster runs as the postgres OS user.
  PGRX_PGDATA=${PGRX_TEST_PGDATA:-/tmp/pgstack-pgrx-test-pgdata}
  install -d -o postgres -g postgres -m 0700 "$PGRX_PGDATA"
  PGRX_TEST_ARGS=(--runas postgres --pgdata "$PGRX_PGDATA")
  SUDO_FLAG=()
else
  PGRX_TEST_ARGS=()
  SUDO_FLAG=(--sudo)
fi

step "extension tests (cargo pgrx test pg15)"
(cd pg_ext && cargo pgrx test pg15 "${PGRX_TEST_ARGS[@]}")

step "install the extension into PostgreSQL 15"
# pgrx test installed a test build; replace it with the real one.
(cd pg_ext && cargo pgrx install -c "$PG_CONFIG" "${SUDO_FLAG[@]}")

step "build the pgstack binary"
cargo build --bins

step "unit and end-to-end tests"
cargo test --no-fail-fast
