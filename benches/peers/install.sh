#!/usr/bin/env bash
# Installs the Python packages the peer runners need (not needed by the normal tests).
# PyTorch from the package index brings its CUDA libraries along (several GB) even for CPU use.
set -euo pipefail
python3 -m pip install --disable-pip-version-check sentence-transformers onnxruntime onnx
# llama.cpp for the generation peer: built from source by pip (a few minutes on 2 cores), with the
# instruction sets this CPU reports: a fixed list once built AVX-VNNI code (VEX-encoded, which AMD's
# Zen 4 lacks) and died with SIGILL. AMX is left off: a -march=native build crashed (SIGILL) in its
# AMX path on the VMs we measured on. --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS, so a
# wheel built for another CPU would be reused.
has() { grep -q -w "$1" /proc/cpuinfo 2>/dev/null; }
flag() { if has "$2"; then echo "-D$1=ON"; else echo "-D$1=OFF"; fi; }
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
$(flag GGML_AVX512 avx512f) $(flag GGML_AVX512_VNNI avx512_vnni) $(flag GGML_AVX512_BF16 avx512_bf16) \
$(flag GGML_AVX_VNNI avx_vnni) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
  python3 -m pip install --disable-pip-version-check --no-cache-dir --force-reinstall --no-deps llama-cpp-python
