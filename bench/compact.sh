#!/usr/bin/env bash
# Chat compaction benchmark (POST /api/chat/compact, seed 002): a 10 000-message
# conversation of a database chat (questions, SQL, tool results, errors, short
# acknowledgments), compacted to a 20 000-token budget with each token counter.
# Reports the median wall time of 10 requests (HTTP included) and the tokens saved.
# Runs `pgstack dev` with its defaults. Numbers are this machine's.
#
#   bash bench/compact.sh [messages, default 10000]
#   PGSTACK_BIN=/path/to/pgstack bash bench/compact.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
source bench/lib.sh
start_dev

echo "## Chat compaction benchmark ($N messages, $(nproc) cores, $(date -u +%F))"
echo
echo "| token counter | median time | original tokens | kept tokens | tokens saved | ratio | messages kept |"
echo "|---|---|---|---|---|---|---|"
for counter in generic openai anthropic ollama; do
  python3 - "$N" "$counter" > "$work/chat.json" <<'PY'
import json, sys
n, counter = int(sys.argv[1]), sys.argv[2]
msgs = [{"role": "user", "content": "Show me the users table and how orders relate to it"}]
kinds = [
    lambda i: {"role": "user", "content": f"How many orders did customer {i} place last month, and what was the total?"},
    lambda i: {"role": "assistant", "content": f"SELECT count(*), sum(total) FROM orders WHERE customer_id = {i} AND created_at > now() - interval '1 month'"},
    lambda i: {"role": "tool", "content": json.dumps([{"count": i % 17, "sum": i * 3.5}])},
    lambda i: {"role": "assistant", "content": f"Customer {i} placed {i % 17} orders for a total of {i * 3.5}. Nothing unusual compared with the previous month."},
    lambda i: {"role": "user", "content": "ok thanks"},
    lambda i: {"role": "assistant", "content": "ERROR: permission denied for table payments (SQLSTATE 42501)"} if i % 30 == 5 else {"role": "user", "content": "what about the week before that one?"},
]
i = 1
while len(msgs) < n:
    msgs.append(kinds[i % len(kinds)](i))
    i += 1
print(json.dumps({"messages": msgs, "max_tokens": 20000, "recent_window": 10, "keep_anchors": True, "options": {"token_counter_type": counter, "enable_analytics": True}}))
PY
  times=()
  for _ in $(seq 1 10); do
    t=$(curl -s -o "$work/out.json" -w '%{time_total}' -X POST -H "apikey: $SERVICE" -H "Authorization: Bearer $SERVICE" -H 'Content-Type: application/json' --data-binary @"$work/chat.json" "$API/api/chat/compact")
    times+=("$t")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n '5p')
  python3 - "$work/out.json" "$counter" "$median" <<'PY'
import json, sys
out = json.load(open(sys.argv[1]))
info = out["compaction_info"]
orig = info["original_tokens"]
print(f"| {sys.argv[2]} | {float(sys.argv[3]) * 1000:.0f} ms | {orig} | {out['token_estimate']} | {info['tokens_saved']} | {info['compression_ratio']} | {info['compacted_count']} of {info['original_count']} |")
PY
done
