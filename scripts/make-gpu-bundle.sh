#!/usr/bin/env bash
# Prepares target/gpu-bundle/ (under 64 MiB, one device transfer) for scripts/gpu-check.sh on a GPU
# machine without Rust or network: the `cuda` build of accelrt (stripped, xz) and all-MiniLM-L6-v2
# with its weights stored as f16 (the check widens them back to f32 there and compares the GPU with
# the CPU on exactly those weights).
# Needs: scripts/build-cuda.sh's toolkit (it is run here), python3 with numpy and safetensors.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bundle=target/gpu-bundle
rm -rf "$bundle" && mkdir -p "$bundle"

scripts/build-cuda.sh --bin accelrt
strip -o "$bundle/accelrt" "${CARGO_TARGET_DIR:-target/cuda}/release/accelrt"
xz -T0 -6 "$bundle/accelrt"

# The model from the cache (fetched and verified on first use by the CPU build).
model=$(cargo run --release --quiet -- fetch all-minilm-l6-v2)
mkdir -p "$bundle/model/1_Pooling"
cp "$model"/{config.json,tokenizer.json,modules.json,sentence_bert_config.json} "$bundle/model/"
cp "$model/1_Pooling/config.json" "$bundle/model/1_Pooling/"
python3 - "$model/model.safetensors" "$bundle/model/model.f16.safetensors" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file, save_file
t = load_file(sys.argv[1])
save_file({k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in t.items()}, sys.argv[2])
PY
du -sh "$bundle"
echo "device call: carry target/gpu-bundle, run: scripts/gpu-check.sh \"\$OUT\""
