#!/usr/bin/env bash
# Storage benchmark: upload and download 1 MiB, 64 MiB and 1 GiB objects through
# /storage/v1 on both backends (database, disk), with the gateway's peak RSS after each
# size (VmHWM: it must not grow with the object size), beside dd writing (fsync) and
# reading the same bytes on the same disk, in one run.
#
#   bash bench/storage.sh [sizes in MiB, default "1 64 1024"]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${1:-"1 64 1024"}
cargo build --release --bin pgstack -j2 >/dev/null 2>&1
work=$(mktemp -d /tmp/pgstack-bench-XXXX)
chmod 755 "$work"
DEV=
cleanup() { [ -n "$DEV" ] && { kill -TERM "$DEV" 2>/dev/null; wait "$DEV" 2>/dev/null; }; rm -rf "$work"; }
trap cleanup EXIT

mbps() { python3 -c "import sys; b,t=float(sys.argv[1]),float(sys.argv[2]); print(f'{b/1048576/t:.0f}' if t > 0 else '?')" "$1" "$2"; }
hwm() { awk '/VmHWM/ {printf "%d MiB", $2/1024}' "/proc/$1/status"; }

for mib in $SIZES; do
  head -c $((mib * 1048576)) /dev/urandom > "$work/in-$mib"
done

echo "## Storage ($(nproc) cores, $(date -u +%F))"
echo
echo "| backend | size | upload MB/s | download MB/s | gateway peak RSS after | dd write (fsync) MB/s | dd read MB/s |"
echo "|---|---|---|---|---|---|---|"
for backend in database disk; do
  export PGSTACK_DIR="$work/state-$backend" LISTEN_ADDR=127.0.0.1:0 RUST_LOG=warn STORAGE_BACKEND=$backend STORAGE_ROOT="$work/objects"
  target/release/pgstack dev > "$work/dev.out" 2> "$work/dev.err" &
  DEV=$!
  for _ in $(seq 1 120); do grep -q '^listening on' "$work/dev.out" && break; sleep 0.5; done
  API=$(sed -n 's/^listening on //p' "$work/dev.out")
  SERVICE=$(sed -n 's/^ *service_role key: *//p' "$work/dev.out")
  curl -sf -o /dev/null -X POST "$API/storage/v1/bucket" -H "authorization: Bearer $SERVICE" -H 'content-type: application/json' \
    -d '{"id": "bench", "file_size_limit": 4294967296}'
  for mib in $SIZES; do
    bytes=$((mib * 1048576))
    up=$(curl -sf -o /dev/null -w '%{time_total}' -X POST "$API/storage/v1/object/bench/o$mib" \
      -H "authorization: Bearer $SERVICE" -H 'content-type: application/octet-stream' -T "$work/in-$mib")
    down=$(curl -sf -o "$work/out" -w '%{time_total}' "$API/storage/v1/object/bench/o$mib" -H "authorization: Bearer $SERVICE")
    cmp -s "$work/in-$mib" "$work/out" || { echo "download of $mib MiB differs"; exit 1; }
    rm -f "$work/out"
    t0=$(date +%s.%N); dd if="$work/in-$mib" of="$work/dd" bs=1M conv=fsync status=none; t1=$(date +%s.%N)
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    t2=$(date +%s.%N); dd if="$work/dd" of=/dev/null bs=1M status=none; t3=$(date +%s.%N)
    rm -f "$work/dd"
    ddw=$(python3 -c "print($t1 - $t0)"); ddr=$(python3 -c "print($t3 - $t2)")
    echo "| $backend | $mib MiB | $(mbps $bytes "$up") | $(mbps $bytes "$down") | $(hwm $DEV) | $(mbps $bytes "$ddw") | $(mbps $bytes "$ddr") |"
  done
  kill -TERM "$DEV"; wait "$DEV" 2>/dev/null || true; DEV=
done
