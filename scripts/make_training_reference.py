#!/usr/bin/env python3
"""Reference numbers for accelrt's training step, from PyTorch: the loss of the first steps and the
gradients and weights after the first AdamW step, on the Shakespeare data set in file order with
dropout off. `accelrt train` must reproduce them (docs/training.md states the tolerances).

    minilm   all-MiniLM-L6-v2 (sentence-transformers) + MultipleNegativesRankingLoss (scale 20,
             cosine similarity) on the first batches of pairs-train.jsonl
             -> crates/train/tests/fixtures/minilm-mnrl-reference.json
    smollm2  SmolLM2-135M-Instruct: the Q4_1 GGUF dequantised to f32 by transformers, loaded as
             LlamaForCausalLM, next-token cross-entropy on consecutive windows of corpus-train.txt
             -> crates/train/tests/fixtures/smollm2-ce-reference.json

Exact commands (the data set and the models come from the accelrt cache; fetch them first):

    ./target/release/accelrt fetch shakespeare
    ./target/release/accelrt fetch all-minilm-l6-v2
    ./target/release/accelrt fetch smollm2-135m-instruct
    python3 scripts/make_training_reference.py minilm
    python3 scripts/make_training_reference.py smollm2

Needs torch, transformers, sentence-transformers and, for smollm2, llama-cpp-python (its tokenizer
is the GGUF's reference; benches/peers/install.sh installs all four) plus gguf and accelerate
(python3 -m pip install gguf accelerate), which transformers needs to load a GGUF. Each mode runs the steps twice, in float32 (what
accelrt compares with) and in float64 (the same computation without f32 rounding, so the gap
between the two says how far two correct f32 implementations may drift apart). For SmolLM2 the
float64 run replaces the two places where transformers' Llama rounds to f32 on purpose (RMSNorm
statistics, rotary angles) with the same formulas in f64 (exact_f64_llama).

Fixed for both (the fixture repeats them):
  AdamW (torch.optim.AdamW, one parameter group: weight decay on every parameter), lr 1e-4,
  weight_decay 0.01, betas (0.9, 0.999), eps 1e-8, constant learning rate, no gradient clipping,
  no accumulation; batches in file order (batch k = examples k*B .. (k+1)*B); every dropout
  probability 0; torch.use_deterministic_algorithms(True); one intra-op and one inter-op thread.
"""
import argparse
import hashlib
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "crates", "train", "tests", "fixtures")
STEPS = 3
ADAMW = {"lr": 1e-4, "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-8}
SLICE = 8  # values kept per named tensor (first columns of the chosen rows, or first entries)


def cache_dir():
    if os.environ.get("ACCELRT_CACHE"):
        return os.environ["ACCELRT_CACHE"]
    if os.environ.get("XDG_CACHE_HOME"):
        return os.path.join(os.environ["XDG_CACHE_HOME"], "accelrt")
    return os.path.join(os.path.expanduser("~"), ".cache", "accelrt")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def setup_torch():
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    return torch


def no_dropout(model):
    """Every nn.Dropout to p=0, and the config fields transformers reads at run time (attention
    dropout in the fused/sdpa paths comes from the config, not from a module)."""
    import torch

    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
            n += 1
        cfg = getattr(m, "config", None)
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "dropout"):
            if cfg is not None and hasattr(cfg, field):
                setattr(cfg, field, 0.0)
    for m in model.modules():
        if hasattr(m, "dropout") and isinstance(getattr(m, "dropout"), float):
            m.dropout = 0.0
        if hasattr(m, "attention_dropout") and isinstance(getattr(m, "attention_dropout"), float):
            m.attention_dropout = 0.0
    return n


def summary(t, rows=None):
    """A small, comparable view of a tensor: its L2 norm, and SLICE values (of the given rows for
    a matrix, else the first entries)."""
    t = t.detach().double()
    out = {"norm": float(t.norm())}
    if rows is not None:
        out["rows"] = rows
        out["values"] = [[float(x) for x in t[r, :SLICE]] for r in rows]
    else:
        out["values"] = [float(x) for x in t.reshape(-1)[:SLICE]]
    return out


def run_steps(torch, model, params_by_name, tracked, loss_of_batch, batches, dtype):
    """STEPS AdamW steps; returns per-step losses and, for step 1, gradients and weights of the
    tracked tensors before and after the update, and the global gradient norm."""
    model.to(dtype)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=ADAMW["lr"], weight_decay=ADAMW["weight_decay"],
                            betas=tuple(ADAMW["betas"]), eps=ADAMW["eps"])
    before = {n: summary(params_by_name[n], rows) for n, rows in tracked.items()}
    losses, first = [], {}
    for step, batch in enumerate(batches[:STEPS]):
        opt.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = loss_of_batch(batch)
        loss.backward()
        losses.append(float(loss.detach()))
        if step == 0:
            grads = [p.grad.detach().double() for p in params if p.grad is not None]
            first["grad_global_norm"] = float(torch.sqrt(sum((g * g).sum() for g in grads)))
            first["params_with_grad"] = len(grads)
            first["params_without_grad"] = sorted(n for n, p in params_by_name.items() if p.requires_grad and p.grad is None)
            first["grads"] = {n: summary(params_by_name[n].grad, rows) for n, rows in tracked.items()}
            old = {n: params_by_name[n].detach().clone() for n in tracked}
        opt.step()
        if step == 0:
            first["after"] = {}
            for n, rows in tracked.items():
                s = summary(params_by_name[n], rows)
                s["delta_norm"] = float((params_by_name[n].detach().double() - old[n].double()).norm())
                first["after"][n] = s
        print(f"  {str(dtype):14s} step {step + 1}: loss {losses[-1]:.8f} ({time.perf_counter() - start:.1f} s)",
              file=sys.stderr)
    return {"losses": losses, "before": before, **first}


def minilm(args):
    torch = setup_torch()
    import sentence_transformers
    import transformers
    from sentence_transformers import SentenceTransformer, util
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    data = os.path.join(cache_dir(), "data", "shakespeare", "pairs-train.jsonl")
    model_dir = os.path.join(cache_dir(), "models", "all-minilm-l6-v2")
    B = args.batch_size
    pairs = []
    with open(data, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                pairs.append(json.loads(line))
            if len(pairs) == STEPS * B:
                break
    batches = [pairs[k * B:(k + 1) * B] for k in range(STEPS)]

    heldout = minilm_heldout_before(torch, SentenceTransformer, MultipleNegativesRankingLoss, util, model_dir, B)

    results = {}
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = SentenceTransformer(model_dir, device="cpu")
        dropouts = no_dropout(model)
        loss_fn = MultipleNegativesRankingLoss(model, scale=20.0, similarity_fct=util.cos_sim)
        bert = model[0].auto_model
        names = {n: p for n, p in bert.named_parameters()}
        first_ids = model.tokenize([batches[0][0]["anchor"]])["input_ids"][0].tolist()
        tracked = {
            "embeddings.word_embeddings.weight": [first_ids[1], first_ids[2]],
            "embeddings.position_embeddings.weight": [0, 1],
            "embeddings.LayerNorm.weight": None,
            "encoder.layer.0.attention.self.query.weight": [0, 1],
            "encoder.layer.0.attention.self.query.bias": None,
            "encoder.layer.2.intermediate.dense.weight": [0],
            "encoder.layer.5.output.dense.weight": [0],
            "encoder.layer.5.output.LayerNorm.bias": None,
        }

        def loss_of_batch(batch):
            feats = [model.tokenize([p["anchor"] for p in batch]), model.tokenize([p["positive"] for p in batch])]
            return loss_fn(feats, None)

        print(f"MiniLM MNRL, {dtype}, batch {B}, {dropouts} dropout modules set to 0", file=sys.stderr)
        results[str(dtype).replace("torch.", "")] = run_steps(torch, model, names, tracked, loss_of_batch, batches, dtype)
        tokenized = [
            {"anchor_tokens": model.tokenize([p["anchor"] for p in b])["attention_mask"].sum(1).tolist(),
             "positive_tokens": model.tokenize([p["positive"] for p in b])["attention_mask"].sum(1).tolist()}
            for b in batches
        ]
    doc = {
        "what": "all-MiniLM-L6-v2 + sentence-transformers MultipleNegativesRankingLoss, first steps of AdamW",
        "generated_by": "python3 scripts/make_training_reference.py minilm",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentence_transformers": sentence_transformers.__version__},
        "model": "all-minilm-l6-v2",
        "model_sha256": sha256_file(os.path.join(model_dir, "model.safetensors")),
        "data": "shakespeare/pairs-train.jsonl",
        "data_sha256": sha256_file(data),
        "batch_size": B,
        "steps": STEPS,
        "order": "file order: batch k is pairs k*B .. (k+1)*B (0-based), no shuffling",
        "loss": {"name": "MultipleNegativesRankingLoss", "scale": 20.0, "similarity": "cosine",
                 "definition": "cross_entropy(20 * cos(anchor_i, positive_j) over j in the batch, target i), mean over i"},
        "tokenization": "model.tokenize: [CLS] text [SEP], truncation at 256 tokens, padded to the longest text of each side",
        "token_counts": tokenized,
        "pooling": "mean over non-padding tokens, then L2-normalised (the model's Normalize module)",
        "dropout": 0.0,
        "optimizer": dict(ADAMW, name="AdamW (torch.optim.AdamW: decoupled decay p -= lr*wd*p, then the bias-corrected Adam update)",
                          weight_decay_applies_to="every parameter", schedule="constant", grad_clipping=None),
        "threads": 1,
        "tensor_view": f"norm = L2 norm of the whole tensor; values = the first {SLICE} entries of the listed rows "
                       "(rows absent: of the flattened tensor); names are transformers' BertModel parameter names",
        "pairs": batches,
        "results": results,
        "heldout_before": heldout,
    }
    write(doc, "minilm-mnrl-reference.json")


def minilm_heldout_before(torch, SentenceTransformer, MultipleNegativesRankingLoss, util, model_dir, B):
    """The untrained model's MNRL loss on pairs-heldout.jsonl: whole batches of B in file order,
    mean of the batch losses (float32, no gradients)."""
    path = os.path.join(cache_dir(), "data", "shakespeare", "pairs-heldout.jsonl")
    with open(path, encoding="utf-8") as f:
        pairs = [json.loads(line) for line in f if line.strip()]
    model = SentenceTransformer(model_dir, device="cpu")
    no_dropout(model)
    model.eval()
    loss_fn = MultipleNegativesRankingLoss(model, scale=20.0, similarity_fct=util.cos_sim)
    losses = []
    with torch.no_grad():
        for k in range(len(pairs) // B):
            batch = pairs[k * B:(k + 1) * B]
            feats = [model.tokenize([p["anchor"] for p in batch]), model.tokenize([p["positive"] for p in batch])]
            losses.append(float(loss_fn(feats, None)))
    print(f"held-out MNRL loss before training: {sum(losses) / len(losses):.6f} over {len(losses)} batches",
          file=sys.stderr)
    return {"data": "shakespeare/pairs-heldout.jsonl", "data_sha256": sha256_file(path), "batch_size": B,
            "batches": len(losses), "mean_loss": sum(losses) / len(losses), "dtype": "float32",
            "definition": "mean over the file-order batches of B (the last partial batch dropped) of each batch's MNRL loss"}


def exact_f64_llama(torch, config):
    """transformers' Llama rounds to float32 on purpose in two places, whatever the model's dtype:
    RMSNorm's statistics and the rotary angles (and its loss upcasts logits with .float(), which
    for float64 logits is a downcast; the loss below is computed in the model's dtype instead).
    For the float64 run those two are replaced by the same formulas in float64, so that run is a
    reference without f32 rounding; float32 runs go through transformers' own code unchanged."""
    from transformers.models.llama import modeling_llama as M

    rms_f32, rope_f32 = M.LlamaRMSNorm.forward, M.LlamaRotaryEmbedding.forward
    theta = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    assert rope_type == "default", f"the float64 rotary formula here is the default one, not {rope_type}"

    def rms(self, h):
        if h.dtype != torch.float64:
            return rms_f32(self, h)
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def rope(self, x, position_ids):
        if x.dtype != torch.float64:
            return rope_f32(self, x, position_ids)
        inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=x.device) / dim))
        freqs = position_ids[..., None].double() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling

    M.LlamaRMSNorm.forward, M.LlamaRotaryEmbedding.forward = rms, rope


def smollm2(args):
    torch = setup_torch()
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = os.path.join(cache_dir(), "data", "shakespeare", "corpus-train.txt")
    folder = os.path.join(cache_dir(), "models", "smollm2-135m-instruct")
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    B, S = args.batch_size, args.seq_len
    with open(data, encoding="utf-8") as f:
        text = f.read()
    start = time.perf_counter()
    # The GGUF's own tokenizer, as llama.cpp runs it (vocab only), not transformers' conversion of
    # it: on this corpus the conversion splits whitespace after newlines differently ("\n\n  1."
    # becomes "\n\n " + " " + "1" instead of llama.cpp's "\n\n  " + "1"), giving 159 more tokens
    # and shifting every later window. accelrt's tokenizer agrees with llama.cpp here.
    import llama_cpp

    vocab = llama_cpp.Llama(model_path=os.path.join(folder, name), vocab_only=True, verbose=False)
    ids = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    hf_ids = AutoTokenizer.from_pretrained(folder, gguf_file=name)(text, add_special_tokens=False)["input_ids"]
    print(f"tokenised {len(text)} characters into {len(ids)} tokens in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)
    import array

    stream = array.array("I", ids)
    if sys.byteorder != "little":
        stream.byteswap()
    windows = [ids[k * S:(k + 1) * S] for k in range(STEPS * B)]
    batches = [windows[k * B:(k + 1) * B] for k in range(STEPS)]

    heldout = smollm2_heldout_before(torch, AutoModelForCausalLM, vocab, folder, name, S, args.heldout_windows)

    results = {}
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        dropouts = no_dropout(model)
        names = dict(model.named_parameters())
        tracked = {
            "model.embed_tokens.weight": [windows[0][0], windows[0][1]],
            "model.layers.0.input_layernorm.weight": None,
            "model.layers.0.self_attn.q_proj.weight": None,  # norm only is order-free; see the note
            "model.layers.0.self_attn.v_proj.weight": [0, 1],
            "model.layers.0.self_attn.o_proj.weight": [0],
            "model.layers.15.mlp.gate_proj.weight": [0],
            "model.layers.29.mlp.down_proj.weight": [0],
            "model.norm.weight": None,
        }

        if dtype == torch.float64:
            exact_f64_llama(torch, model.config)

        def loss_of_batch(batch):
            # The loss transformers computes for labels=x (shift by one, mean over all predictions),
            # in the model's dtype: transformers' own upcasts logits with .float().
            x = torch.tensor(batch, dtype=torch.long)
            logits = model(input_ids=x, use_cache=False).logits
            return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())

        print(f"SmolLM2 CE, {dtype}, batch {B} x {S}, {dropouts} dropout modules set to 0", file=sys.stderr)
        results[str(dtype).replace("torch.", "")] = run_steps(torch, model, names, tracked, loss_of_batch, batches, dtype)
        tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        del model
    doc = {
        "what": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to f32 by transformers) as LlamaForCausalLM, "
                "next-token cross-entropy, first steps of AdamW",
        "generated_by": f"python3 scripts/make_training_reference.py smollm2",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "llama_cpp_python": llama_cpp.__version__},
        "model": "smollm2-135m-instruct",
        "model_sha256": sha256_file(os.path.join(folder, name)),
        "tied_embeddings": tied,
        "data": "shakespeare/corpus-train.txt",
        "data_sha256": sha256_file(data),
        "tokenization": "the GGUF's tokenizer run by llama.cpp (llama-cpp-python, vocab only), the whole file "
                        "as one text, no special tokens added (no BOS)",
        "transformers_tokenizer_stream_tokens": len(hf_ids),
        "transformers_tokenizer_note": "transformers' conversion of the GGUF tokenizer gives another count on this "
                                       "corpus (whitespace after newlines split differently); not used",
        "stream_tokens": len(ids),
        "stream_sha256": hashlib.sha256(stream.tobytes()).hexdigest(),
        "stream_sha256_of": "the token ids as little-endian u32",
        "batch_size": B,
        "seq_len": S,
        "steps": STEPS,
        "order": "file order: window w is tokens w*S .. (w+1)*S, batch k is windows k*B .. (k+1)*B",
        "loss": {"name": "cross_entropy",
                 "definition": "what LlamaForCausalLM(input_ids=w, labels=w).loss computes: mean over the B*(S-1) "
                               "next-token predictions (positions 0..S-2 predict tokens 1..S-1), computed here "
                               "from the logits in the run's dtype"},
        "float64_run": "transformers' Llama with float64 weights and activations; its two deliberate float32 "
                       "spots (RMSNorm statistics, rotary angles) replaced by the same formulas in float64",
        "dropout": 0.0,
        "optimizer": dict(ADAMW, name="AdamW (torch.optim.AdamW: decoupled decay p -= lr*wd*p, then the bias-corrected Adam update)",
                          weight_decay_applies_to="every parameter (the tied embedding once)", schedule="constant",
                          grad_clipping=None),
        "threads": 1,
        "tensor_view": f"norm = L2 norm of the whole tensor; values = the first {SLICE} entries of the listed rows "
                       "(rows absent: of the flattened tensor); names are transformers' LlamaForCausalLM names. "
                       "q_proj/k_proj rows are permuted in the GGUF relative to transformers (llama.cpp's converter "
                       "interleaves rotary pairs), so for them only the norm is compared.",
        "batches": batches,
        "results": results,
        "heldout_before": heldout,
    }
    write(doc, "smollm2-ce-reference.json")


def smollm2_heldout_before(torch, AutoModelForCausalLM, vocab, folder, name, S, n_windows):
    """The untrained model's next-token loss on the first n_windows windows of corpus-heldout.txt
    (tokenised like the training corpus): mean over all their predictions (float32, no gradients)."""
    path = os.path.join(cache_dir(), "data", "shakespeare", "corpus-heldout.txt")
    with open(path, encoding="utf-8") as f:
        ids = vocab.tokenize(f.read().encode("utf-8"), add_bos=False, special=False)
    windows = [ids[k * S:(k + 1) * S] for k in range(min(n_windows, len(ids) // S))]
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    no_dropout(model)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for k in range(0, len(windows), 8):
            x = torch.tensor(windows[k:k + 8], dtype=torch.long)
            logits = model(input_ids=x, use_cache=False).logits
            total += float(torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), x[:, 1:].flatten(), reduction="sum"))
            count += x[:, 1:].numel()
    print(f"held-out loss before training: {total / count:.6f} over {len(windows)} windows", file=sys.stderr)
    return {"data": "shakespeare/corpus-heldout.txt", "data_sha256": sha256_file(path), "stream_tokens": len(ids),
            "seq_len": S, "windows": len(windows), "predictions": count, "mean_loss": total / count,
            "dtype": "float32", "definition": "mean next-token cross-entropy over every prediction of the "
            "first `windows` consecutive windows (the training corpus's rules)"}


def write(doc, file_name):
    os.makedirs(FIXTURES, exist_ok=True)
    out = os.path.join(FIXTURES, file_name)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for dtype, r in doc["results"].items():
        print(f"{dtype}: losses {r['losses']}, grad norm {r['grad_global_norm']:.6g}", file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    m = sub.add_parser("minilm")
    m.add_argument("--batch-size", type=int, default=8)
    s = sub.add_parser("smollm2")
    s.add_argument("--batch-size", type=int, default=4)
    s.add_argument("--seq-len", type=int, default=128)
    s.add_argument("--heldout-windows", type=int, default=64, help="held-out windows for the before-training loss")
    args = p.parse_args()
    {"minilm": minilm, "smollm2": smollm2}[args.mode](args)


if __name__ == "__main__":
    main()
