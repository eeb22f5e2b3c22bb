#!/usr/bin/env bash
# Installs the Python packages the peer runners need (not needed by the normal tests).
# PyTorch from the package index brings its CUDA libraries along (several GB) even for CPU use.
set -euo pipefail
python3 -m pip install --disable-pip-version-check sentence-transformers onnxruntime onnx
# llama.cpp for the generation peer: built from source by pip (a few minutes on 2 cores). AMX is
# left off: a -march=native build crashed (SIGILL) in its AMX path on the VMs we measured on.
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
  python3 -m pip install --disable-pip-version-check llama-cpp-python
