#!/usr/bin/env bash
# Installs what is needed (once), builds and installs the extension and the gateway,
# then runs the whole stack with `pgstack dev` (embedded PostgreSQL 15 cluster in
# ./.pgstack, API on 127.0.0.1:8080). Extra arguments go to `pgstack dev`.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

bash scripts/install-deps.sh
SUDO_FLAG=()
[ "$(id -u)" = 0 ] || SUDO_FLAG=(--sudo)
(cd pg_ext && cargo pgrx install --release -c "$PG_CONFIG" "${SUDO_FLAG[@]}")
cargo build --release --bin pgstack
exec target/release/pgstack dev "$@"
