#!/usr/bin/env bash
# The GPU check in one step, on a GPU machine without Rust or network (docs/cuda.md): device info,
# the conformance suite on cuda:0 (f32, f16, bf16), MiniLM on cuda:0 against the CPU on the same
# weights (and against the fp32 sentence-transformers reference), and `accelrt bench` on cuda:0
# beside PyTorch (sentence-transformers) on the same GPU, dtype and texts.
# Input: target/gpu-bundle (scripts/make-gpu-bundle.sh). Output: $OUT (or $1).
# ACCELRT_CHECK_DEVICE=cpu runs every step on the CPU instead: a dry run of this script without a GPU.
set -u
dev=${ACCELRT_CHECK_DEVICE:-cuda:0}
case "$dev" in cuda*) peer_dev=cuda ;; *) peer_dev=cpu ;; esac
OUT=${OUT:-${1:?usage: gpu-check.sh OUT_DIR}}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
bundle=target/gpu-bundle
work=$(mktemp -d)
step() { echo; echo "== $*"; }

py=${ACCELRT_PYTHON:-$(command -v /opt/torch/.venv/bin/python || command -v python3)}
export ACCELRT_PYTHON=$py
# CUDA libraries: the system's if any, else PyTorch's copies of cuBLAS/cuRAND/cudart/NVRTC.
nv=$("$py" -c 'import os, nvidia; print(os.path.dirname(nvidia.__path__[0] if hasattr(nvidia, "__path__") else nvidia.__file__))' 2>/dev/null || true)
for d in /usr/local/cuda/lib64 $(ls -d "$nv"/nvidia/*/lib "$nv"/nvidia/cu13/lib 2>/dev/null); do
  [ -d "$d" ] && LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
done
export LD_LIBRARY_PATH

step "unpack"
xz -dc "$bundle/accelrt.xz" > "$work/accelrt" && chmod +x "$work/accelrt"
model=$work/all-minilm-l6-v2
cp -r "$bundle/model" "$model"
"$py" - "$model/model.f16.safetensors" "$model/model.safetensors" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file, save_file
t = load_file(sys.argv[1])
save_file({k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in t.items()}, sys.argv[2])
PY
rm "$model/model.f16.safetensors"
a=$work/accelrt

step "device"
nvidia-smi | tee "$OUT/nvidia-smi.txt"
ldd "$a" | tee "$OUT/ldd.txt"
"$a" devices --json | tee "$OUT/devices.json"

step "conformance suite on $dev"
for dtype in f32 f16 bf16; do
  "$a" conformance --backend "$dev" --dtype "$dtype" > "$OUT/conformance-$dtype.txt" 2>&1
  tail -n 1 "$OUT/conformance-$dtype.txt"; grep FAILED "$OUT/conformance-$dtype.txt"
done

step "MiniLM: $dev vs cpu on the same (f16-rounded) weights, and vs the fp32 reference"
"$py" -c 'import json; print("\n".join(json.load(open("models/tests/fixtures/all-minilm-l6-v2.json"))["texts"]))' > "$work/texts.txt"
"$a" embed --model "$model" --backend cpu < "$work/texts.txt" > "$OUT/minilm-cpu.jsonl"
for dtype in f32 f16; do
  "$a" embed --model "$model" --backend "$dev" --dtype "$dtype" < "$work/texts.txt" > "$OUT/minilm-device-$dtype.jsonl"
done
"$py" - "$OUT" <<'PY' | tee "$OUT/minilm-compare.txt"
import json, sys
import numpy as np
out = sys.argv[1]
ref = np.array(json.load(open("models/tests/fixtures/all-minilm-l6-v2.json"))["embeddings"])
load = lambda n: np.array([json.loads(l) for l in open(f"{out}/{n}")])
cpu = load("minilm-cpu.jsonl")
for name in ["minilm-device-f32.jsonl", "minilm-device-f16.jsonl"]:
    g = load(name)
    cos = (g * cpu).sum(1) / np.linalg.norm(g, axis=1) / np.linalg.norm(cpu, axis=1)
    print(f"{name} vs cpu: worst cosine {cos.min():.9f}, max abs diff {np.abs(g - cpu).max():.3e}")
cos = (cpu * ref).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(ref, axis=1)
print(f"cpu (f16-rounded weights) vs fp32 reference: worst cosine {cos.min():.9f}, max abs diff {np.abs(cpu - ref).max():.3e}")
PY

step "bench on $dev (f32, f16) with PyTorch on the same device"
for dtype in f32 f16; do
  for batch in 32 128; do
    "$a" bench --model "$model" --backend "$dev" --dtype "$dtype" --batch-size "$batch" --scenario offline \
      --min-duration 5 --warmup 1 --peers pytorch --peer-device "$peer_dev" --peer-dtype "$dtype" --no-progress \
      --instance-type p5.48xlarge --out "$OUT/results" 2>&1 | tee -a "$OUT/bench.txt" | grep -E "^(system|accelrt|pytorch|error)"
  done
done
"$a" bench --model "$model" --backend "$dev" --scenario single-stream --min-duration 5 --warmup 1 --no-progress \
  --out "$OUT/results" 2>&1 | tee -a "$OUT/bench.txt" | grep -E "^(system|accelrt|error)"
echo; echo "done: $OUT"
