#!/usr/bin/env bash
# Prepares target/gpu-bundle/ for scripts/gpu-check.sh on a GPU machine that has no Rust and no
# network: the `cuda` build of accelrt and of the GPU test binaries (xz-compressed), the
# all-MiniLM-L6-v2 files (the weights split in two, so that each transfer stays under 64 MiB).
# Run scripts/build-cuda.sh first (it builds the same targets this script asks cargo for).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bundle=target/gpu-bundle
rm -rf "$bundle" && mkdir -p "$bundle/part1" "$bundle/part2"

# Test binaries: cargo prints their paths as JSON when asked to build them without running.
build() { scripts/build-cuda.sh "$@" --message-format=json-render-diagnostics | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'; }
build --bin accelrt --test conformance --test minilm -p accelrt -p accelrt-candle > "$bundle/artifacts.txt"
while read -r name exe; do
  strip -o "$bundle/$name" "$exe"
  xz -T0 -6 "$bundle/$name"
  mv "$bundle/$name.xz" "$bundle/part1/"
done < "$bundle/artifacts.txt"

model=$(./target/release/accelrt fetch all-minilm-l6-v2 2>/dev/null || cargo run --release -q -- fetch all-minilm-l6-v2)
tar -C "$model" -cf "$bundle/model-small.tar" config.json tokenizer.json modules.json sentence_bert_config.json 1_Pooling
mv "$bundle/model-small.tar" "$bundle/part1/"
split -n 2 -d "$model/model.safetensors" "$bundle/weights.part"
mv "$bundle/weights.part00" "$bundle/part1/"
mv "$bundle/weights.part01" "$bundle/part2/"
du -sh "$bundle"/part1 "$bundle"/part2
echo "carry target/gpu-bundle/part1 in one device call and target/gpu-bundle/part2 (+ run scripts/gpu-check.sh) in the next"
