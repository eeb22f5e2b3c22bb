#!/usr/bin/env bash
# The GPU check, in one step, on a GPU machine without Rust or network (see docs/cuda.md):
# device info, the conformance suite on cuda:0 (f32, f16, bf16), MiniLM on cuda:0 against the
# sentence-transformers reference, and `accelrt bench` on cuda:0 beside PyTorch on the same GPU.
# Inputs: target/gpu-bundle/part1 and part2 (scripts/make-gpu-bundle.sh). Output: $OUT (or $1).
set -u
OUT=${OUT:-${1:?usage: gpu-check.sh OUT_DIR}}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
bundle=target/gpu-bundle
work=$(mktemp -d)
step() { echo; echo "== $*"; }

step "unpack"
for f in "$bundle"/part1/*.xz; do xz -dc "$f" > "$work/$(basename "$f" .xz)"; chmod +x "$work/$(basename "$f" .xz)"; done
export ACCELRT_CACHE=$work/cache
model=$ACCELRT_CACHE/models/all-minilm-l6-v2
mkdir -p "$model"
tar -C "$model" -xf "$bundle/part1/model-small.tar"
cat "$bundle/part1/weights.part00" "$bundle/part2/weights.part01" > "$model/model.safetensors"
sha256sum "$model/model.safetensors"

# CUDA libraries: the toolkit's, else PyTorch's copies of cuBLAS/cuRAND/cudart/NVRTC.
py=${ACCELRT_PYTHON:-$(command -v /opt/torch/.venv/bin/python || command -v python3)}
export ACCELRT_PYTHON=$py
nv=$("$py" -c 'import os, nvidia; print(os.path.dirname(nvidia.__file__))' 2>/dev/null || true)
for d in /usr/local/cuda/lib64 $nv/cu13/lib $nv/*/lib; do [ -d "$d" ] && LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}; done
export LD_LIBRARY_PATH
export ACCELRT_REPO_ROOT=$PWD

step "device"
nvidia-smi | tee "$OUT/nvidia-smi.txt"
ldd "$work/accelrt" | tee "$OUT/ldd.txt"
"$work/accelrt" devices --json | tee "$OUT/devices.json"

step "conformance suite on cuda:0"
"$work/conformance" cuda:: --test-threads 1 2>&1 | tee "$OUT/conformance-cuda.txt" | tail -n 5

step "MiniLM on cpu and cuda:0 vs sentence-transformers"
ACCELRT_TEST_DEVICES=cpu,cuda:0 "$work/minilm" --nocapture --test-threads 1 2>&1 | tee "$OUT/minilm.txt" | tail -n 8

step "bench on cuda:0 (f32, f16) with PyTorch on the same GPU"
for dtype in f32 f16; do
  for batch in 32 128; do
    "$work/accelrt" bench --backend cuda:0 --dtype "$dtype" --batch-size "$batch" --scenario offline \
      --min-duration 5 --warmup 1 --peers pytorch --peer-device cuda --peer-dtype "$dtype" --no-progress \
      --out "$OUT/results" 2>&1 | tee -a "$OUT/bench.txt" | grep -E "^(system|accelrt|pytorch)"
  done
done
"$work/accelrt" bench --backend cuda:0 --scenario single-stream --min-duration 5 --warmup 1 --no-progress \
  --out "$OUT/results" 2>&1 | tee -a "$OUT/bench.txt" | grep -E "^(system|accelrt)"
echo; echo "done: $OUT"
