#!/usr/bin/env bash
# The server's saturated throughput next to the library's in-process offline throughput, same
# machine, same model, same backend, one after the other (docs/PERFORMANCE.md records the ratios).
#   scripts/server-vs-library.sh OUT_DIR [--instance-type T]
set -euo pipefail
out=${1:?usage: scripts/server-vs-library.sh OUT_DIR [bench flags…]}
shift
bin=./target/release/accelrt
rules=(--warmup 5 --min-duration 30 --min-queries 64 --no-progress "$@")
mkdir -p "$out"

wait_ready() {
  for _ in $(seq 1 120); do
    curl -sf "$1/health" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "server at $1 did not come up" >&2
  return 1
}

echo "== embeddings: library, offline batch 32"
$bin bench --model all-minilm-l6-v2 --scenario offline --batch-size 32 --out "$out" "${rules[@]}"
echo "== embeddings: accelrt serve (max batch 32), 64 clients"
$bin serve --model all-minilm-l6-v2 --port 18080 --max-batch 32 2>"$out/serve-embeddings.log" &
pid=$!
wait_ready http://127.0.0.1:18080
$bin bench --url http://127.0.0.1:18080 --scenario offline --concurrency 64 --out "$out" "${rules[@]}"
kill -TERM $pid && wait $pid

echo "== chat: library, offline batch 8, 64 tokens"
$bin bench --model smollm2-135m-instruct --scenario offline --batch-size 8 --max-tokens 64 --context 1024 \
  --out "$out" "${rules[@]}"
echo "== chat: accelrt serve (8 sequences), 8 and 16 clients, 64 tokens"
$bin serve --model smollm2-135m-instruct --port 18081 --max-sequences 8 --context 1024 2>"$out/serve-chat.log" &
pid=$!
wait_ready http://127.0.0.1:18081
for c in 8 16; do
  $bin bench --url http://127.0.0.1:18081 --scenario offline --concurrency $c --max-tokens 64 --out "$out" "${rules[@]}"
done
kill -TERM $pid && wait $pid
