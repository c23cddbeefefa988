#!/usr/bin/env bash
# Installs everything pgstack needs on Debian 12 (root, Rust toolchain present).
# Idempotent: each step checks first, so a warm run takes seconds.
set -euo pipefail

PGRX_VERSION=0.18.1
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-contrib sudo clang libclang-dev pkg-config libssl-dev openssl openssh-server)

log() { printf '[install-deps] %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's package starts its own cluster on 5432; pgstack never uses it.
  pg_ctlcluster 15 main stop 2>/dev/null || true
  # openssh-server is for the tests' own sshd (SSH tunnels); the system one stays off.
  service ssh stop >/dev/null 2>&1 || true
fi

# rustfmt and clippy: the test script checks format and lints.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null; then
    log "rustup component add rustfmt clippy"
    rustup component add rustfmt clippy
  fi
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "cargo install cargo-pgrx $PGRX_VERSION"
  cargo install --locked cargo-pgrx --version "$PGRX_VERSION"
fi

if ! grep -qs "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  log "cargo pgrx init --pg15 $PG_CONFIG"
  cargo pgrx init --pg15 "$PG_CONFIG"
fi
# The real Supabase clients for the end-to-end tests (Node is on the machine).
JS_DIR="$(cd "$(dirname "$0")/.." && pwd)/tests/js"
if [ -f "$JS_DIR/package-lock.json" ] && { [ ! -d "$JS_DIR/node_modules" ] || [ "$JS_DIR/package-lock.json" -nt "$JS_DIR/node_modules/.package-lock.json" ]; }; then
  log "npm ci in tests/js"
  (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi
# A real SMTP server for the e-mail tests (aiosmtpd on loopback).
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  log "pip install aiosmtpd"
  python3 -m pip install --quiet --disable-pip-version-check 'aiosmtpd==1.4.6'
fi
log "ok"
