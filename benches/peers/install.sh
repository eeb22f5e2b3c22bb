#!/usr/bin/env bash
# Installs the Python packages the peer runners need (not needed by the normal tests).
# PyTorch from the package index brings its CUDA libraries along (several GB) even for CPU use.
set -euo pipefail
python3 -m pip install --disable-pip-version-check sentence-transformers onnxruntime onnx
