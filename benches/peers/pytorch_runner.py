#!/usr/bin/env python3
"""Peer runner: sentence-transformers on PyTorch (f32 by default; bf16 or f16 weights and compute with
--dtype, as PyTorch users run them: bf16 on CPUs with AVX-512 BF16 or AMX, f16 on GPUs), same texts and
batches as accelrt."""
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
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"])
    a = p.parse_args()
    try:
        import sentence_transformers
        import torch
    except ImportError as e:
        fail(f"{e}; install the peers with benches/peers/install.sh")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda, but PyTorch sees no GPU")
    model = sentence_transformers.SentenceTransformer(a.model_dir, device=a.device)
    if a.dtype == "f16":
        model = model.half()
    elif a.dtype == "bf16":
        # The weights themselves in bf16 (model.to, not autocast): every matmul then runs in bf16
        # through oneDNN, which uses AMX tiles or AVX-512 BF16 where the CPU has them.
        model = model.to(torch.bfloat16)
    model.eval()

    def embed(texts):
        with torch.inference_mode():
            # One batch per query, as the harness sent it (no re-sorting across queries).
            out = model.encode(texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=False)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()  # encode() copies to the host already; keep timing honest anyway
            return out

    embed(["warm up"])
    versions = {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__}
    if a.device.startswith("cuda"):
        versions["gpu"] = torch.cuda.get_device_name(0)
    serve("pytorch", versions, a.dtype, embed, device=a.device)


if __name__ == "__main__":
    main()
