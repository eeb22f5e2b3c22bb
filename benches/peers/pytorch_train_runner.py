#!/usr/bin/env python3
"""Training peer: one PyTorch training step (forward + backward + AdamW) per query, the same step
`accelrt train` takes, so the harness can time both on the same batches.

- all-MiniLM-L6-v2 (a sentence-transformers directory): MultipleNegativesRankingLoss (scale 20,
  cosine) on (anchor, positive) pairs, as sentence-transformers defines it;
- a directory holding one .gguf file (SmolLM2-135M-Instruct): the GGUF dequantised to f32 by
  transformers, LlamaForCausalLM, next-token cross-entropy on windows of token ids.

Protocol (crates/bench/src/train_peer.rs; one JSON object per line, like runner_common.py):
  runner -> harness once: {"ready": true, "system": "pytorch", "versions": {...}, "dtype": "f32",
                           "device": "cpu", "task": "mnrl" | "causal-lm", "parameters": N}
  harness -> runner:      {"train": {"pairs": [{"anchor": "...", "positive": "..."}, ...]}}   (mnrl)
                          {"train": {"windows": [[id, ...], ...]}}                           (causal-lm)
  runner -> harness:      {"n": rows, "loss": float, "tokens": int, "step_ms": float, "peak_memory_bytes": int}
                          or {"error": "..."}
`tokens` counts the non-padding input tokens of the step; `step_ms` is timed inside the runner
around tokenisation, forward, backward and the optimiser step (the harness also times the whole
exchange); `peak_memory_bytes` is the process's peak resident set on the CPU, the allocator's
peak on CUDA.

Dropout follows --dropout (default 0, so steps are deterministic and comparable with accelrt
run the same way); AdamW with --lr, --weight-decay, betas (0.9, 0.999), eps 1e-8, one parameter
group; no gradient clipping.
"""
import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from runner_common import fail  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def set_dropout(model, p):
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        for field in ("dropout", "attention_dropout"):
            if isinstance(getattr(m, field, None), float):
                setattr(m, field, p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"],
                    help="bf16: mixed precision, forward and loss under torch.autocast(bfloat16), "
                         "f32 master weights and AdamW (accelrt's --mixed-precision bf16)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--max-seq-len", type=int, default=256, help="MNRL: truncation of each text")
    a = ap.parse_args()
    try:
        import torch
        import transformers
    except ImportError as e:
        fail(f"{e}; install the peers with benches/peers/install.sh")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda, but PyTorch sees no GPU")
    torch.manual_seed(0)
    ggufs = [f for f in os.listdir(a.model_dir) if f.endswith(".gguf")] if os.path.isdir(a.model_dir) else []
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}

    def autocast():
        """Mixed precision as PyTorch users run it (--dtype bf16): autocast around the forward pass
        only; the backward follows the forward's dtypes and AdamW updates the f32 parameters."""
        return torch.autocast(device_type=a.device.split(":")[0], dtype=torch.bfloat16,
                              enabled=a.dtype == "bf16")

    if ggufs:
        if len(ggufs) != 1:
            fail(f"{a.model_dir} holds {len(ggufs)} .gguf files; give a directory with one")
        from transformers import AutoModelForCausalLM

        task = "causal-lm"
        model = AutoModelForCausalLM.from_pretrained(a.model_dir, gguf_file=ggufs[0], dtype=torch.float32)
        model.to(a.device)

        def loss_and_tokens(batch):
            rows = batch.get("windows")
            if not rows or len({len(r) for r in rows}) != 1:
                raise ValueError("a causal-lm step needs {\"windows\": [[ids...], ...]} of equal length")
            x = torch.tensor(rows, dtype=torch.long, device=a.device)
            # transformers computes the loss from logits cast to f32, so under autocast only the
            # products run in bf16 (accelrt's --mixed-precision policy).
            with autocast():
                loss = model(input_ids=x, labels=x, use_cache=False).loss
            return loss, x.numel(), len(rows)
    else:
        try:
            import sentence_transformers
            from sentence_transformers import SentenceTransformer, util
            from sentence_transformers.losses import MultipleNegativesRankingLoss
        except ImportError as e:
            fail(f"{e}; install the peers with benches/peers/install.sh")
        task = "mnrl"
        versions["sentence_transformers"] = sentence_transformers.__version__
        model = SentenceTransformer(a.model_dir, device=a.device)
        model.max_seq_length = a.max_seq_len
        loss_fn = MultipleNegativesRankingLoss(model, scale=20.0, similarity_fct=util.cos_sim)

        def loss_and_tokens(batch):
            pairs = batch.get("pairs")
            if not pairs:
                raise ValueError("an mnrl step needs {\"pairs\": [{\"anchor\": ..., \"positive\": ...}, ...]}")
            feats = [model.tokenize([p["anchor"] for p in pairs]), model.tokenize([p["positive"] for p in pairs])]
            feats = [{k: v.to(a.device) if torch.is_tensor(v) else v for k, v in f.items()} for f in feats]
            tokens = int(sum(f["attention_mask"].sum() for f in feats))
            if a.dtype == "f32":
                return loss_fn(feats, None), tokens, len(pairs)
            # bf16: the encoder under autocast, then MNRL's own formula (cos_sim × 20, cross-entropy
            # over the in-batch candidates) on the embeddings cast to f32 — CPU autocast would run
            # the softmax in bf16, where accelrt's policy (and PyTorch's on CUDA) keeps it in f32.
            with autocast():
                reps = [model(f)["sentence_embedding"] for f in feats]
            scores = util.cos_sim(reps[0].float(), reps[1].float()) * loss_fn.scale
            labels = torch.arange(len(scores), device=scores.device)
            return torch.nn.functional.cross_entropy(scores, labels), tokens, len(pairs)

    set_dropout(model, a.dropout)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay, betas=(0.9, 0.999), eps=1e-8)

    def peak_memory():
        if a.device.startswith("cuda"):
            return int(torch.cuda.max_memory_allocated())
        # VmHWM is this process's own high-water mark. Not ru_maxrss: Linux keeps that across
        # execve, so a runner started by a harness that had trained a large model would report
        # the harness's peak as its own.
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB elsewhere

    out = sys.stdout
    ready = {"ready": True, "system": "pytorch", "versions": versions, "dtype": a.dtype, "device": a.device,
             "task": task, "parameters": sum(p.numel() for p in params)}
    if a.device.startswith("cuda"):
        ready["versions"]["gpu"] = torch.cuda.get_device_name(0)
    out.write(json.dumps(ready) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            batch = json.loads(line)["train"]
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss, tokens, rows = loss_and_tokens(batch)
            loss.backward()
            opt.step()
            value = float(loss.detach())  # waits for the device, so the time below is the whole step
            step_ms = (time.perf_counter() - start) * 1e3
            out.write(json.dumps({"n": rows, "loss": value, "tokens": tokens, "step_ms": step_ms,
                                  "peak_memory_bytes": peak_memory()}) + "\n")
        except Exception as e:  # reported to the harness, which stops the run
            out.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
