#!/usr/bin/env python3
"""Peer runner: sentence-transformers on PyTorch (fp32, CPU), same texts and batches as accelrt."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from runner_common import fail, serve  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    try:
        import sentence_transformers
        import torch
    except ImportError as e:
        fail(f"{e}; install the peers with benches/peers/install.sh")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    model = sentence_transformers.SentenceTransformer(a.model_dir, device="cpu")
    model.eval()

    def embed(texts):
        with torch.inference_mode():
            # One batch per query, as the harness sent it (no re-sorting across queries).
            return model.encode(texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=False)

    embed(["warm up"])
    serve("pytorch", {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__}, "f32", embed)


if __name__ == "__main__":
    main()
