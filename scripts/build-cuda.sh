#!/usr/bin/env bash
# Builds accelrt with the `cuda` feature on a machine that has no GPU (compile and link only):
# the CUDA 13.0 toolkit comes from NVIDIA's Python wheels (nvcc, headers, cuBLAS, cuRAND, NVRTC,
# runtime), and the driver library libcuda.so — which no package carries — is replaced, for
# linking only, by a stub that defines every driver symbol cudarc declares. The stub is never
# shipped: on a GPU machine the real driver's libcuda.so.1 is loaded.
#
# Usage: scripts/build-cuda.sh [extra cargo args]     e.g. scripts/build-cuda.sh --tests
# Output: target/cuda/release/ (or $CARGO_TARGET_DIR)
# Env:   CUDA_COMPUTE_CAP (default 90: H100/H200; V100 70, T4 75, A100 80, A10G 86, L4/L40S 89)
#        ACCELRT_CUDA_TOOLKIT (default target/cuda-toolkit)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
toolkit=${ACCELRT_CUDA_TOOLKIT:-$root/target/cuda-toolkit}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDA_HOME=$toolkit/nvidia/cu13

if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
  echo "== CUDA 13.0 toolkit from Python wheels into $toolkit (~650 MB download)"
  # 13.0 matches driver 580 (CUDA 13.0) on the GPU machines; newer nvcc emits PTX that driver rejects.
  python3 -m pip download --disable-pip-version-check --no-deps -d "$toolkit/wheels" \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85 \
    nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
  for w in "$toolkit"/wheels/*.whl; do python3 -m zipfile -e "$w" "$toolkit"; done
  chmod +x "$CUDA_HOME"/bin/* "$CUDA_HOME"/nvvm/bin/* 2>/dev/null || true
fi
ln -sfn lib "$CUDA_HOME/lib64"            # nvcc.profile looks in lib64
for l in cudart nvrtc curand cublas cublasLt; do
  real=$(cd "$CUDA_HOME/lib" && ls lib$l.so.* | sort | head -n 1)
  ln -sf "$real" "$CUDA_HOME/lib/lib$l.so"
done

echo "== link-only libcuda stub"
cargo fetch --quiet
cudarc=$(cargo metadata --format-version 1 --features cuda 2>/dev/null | python3 -c '
import json, os, sys
m = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == "cudarc"))')
mkdir -p "$CUDA_HOME/lib/stubs"
grep -ohE '^\s+fn (cu[A-Za-z0-9_]+)\(' "$cudarc/src/driver/sys/mod.rs" | sed -E 's/^\s+fn (cu[A-Za-z0-9_]+)\(/\1/' | sort -u |
  awk '{ printf "int %s(void) { return 34; /* CUDA_ERROR_STUB_LIBRARY */ }\n", $1 }' > "$CUDA_HOME/lib/stubs/libcuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA_HOME/lib/stubs/libcuda.so" "$CUDA_HOME/lib/stubs/libcuda_stub.c"

# A target folder of its own, so CPU and CUDA builds do not rebuild each other.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
echo "== cargo build --release --features cuda (compute capability $CUDA_COMPUTE_CAP) into $CARGO_TARGET_DIR"
export PATH=$CUDA_HOME/bin:$PATH
export LIBRARY_PATH=$CUDA_HOME/lib:$CUDA_HOME/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
cargo build --release --features cuda "$@"
