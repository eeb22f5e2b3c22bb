#!/usr/bin/env python3
"""Peer runner: ONNX Runtime (fp32, CPU) on the model exported from the same safetensors with
torch.onnx; tokenization by the model's tokenizer.json, mean pooling and L2 normalisation in NumPy."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from runner_common import fail, serve  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def export(model_dir, path):
    import torch
    from transformers import AutoModel

    class LastHidden(torch.nn.Module):
        """Named arguments only: the positional order of BertModel.forward differs between versions."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    model = LastHidden(AutoModel.from_pretrained(model_dir).eval())
    ids = torch.ones((1, 8), dtype=torch.int64)
    axes = {0: "batch", 1: "seq"}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".partial"
    torch.onnx.export(
        model, (ids, ids, torch.zeros_like(ids)), tmp,
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "last_hidden_state": axes},
        opset_version=17, dynamo=False,
    )
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="f32")
    a = p.parse_args()
    if a.device != "cpu" or a.dtype != "f32":
        fail("the onnxruntime runner runs f32 on the CPU only")
    try:
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as e:
        fail(f"{e}; install the peers with benches/peers/install.sh")
    cache = os.environ.get("ACCELRT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "accelrt")
    onnx_path = os.path.join(cache, "peers", "onnx", os.path.basename(os.path.normpath(a.model_dir)) + ".onnx")
    if not os.path.exists(onnx_path):
        export(a.model_dir, onnx_path)
    opts = ort.SessionOptions()
    if a.threads > 0:
        opts.intra_op_num_threads = a.threads
    session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(os.path.join(a.model_dir, "tokenizer.json"))
    tok.enable_truncation(256)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")

    def embed(texts):
        enc = tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        types = np.array([e.type_ids for e in enc], dtype=np.int64)
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    embed(["warm up"])
    serve("onnxruntime", {"onnxruntime": ort.__version__}, "f32", embed)


if __name__ == "__main__":
    main()
