#!/usr/bin/env python3
"""Reference token ids and greedy generations for SmolLM2-135M-Instruct (Q4_1 GGUF), from two
independent implementations:

- llama.cpp (via llama-cpp-python, built from source by pip): its own GGUF tokenizer, and greedy
  decoding with the quantised weights (activations quantised to 8 bits, as accelrt does);
- Hugging Face transformers, which loads the GGUF by dequantising every weight to fp32 and
  converts the GGUF vocabulary into its own tokenizer.

Writes models/tests/fixtures/smollm2.json. Usage:
    python3 -m pip install llama-cpp-python transformers torch gguf accelerate
    python3 scripts/make_smollm2_reference.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import os
import sys

GEN_TOKENS = 32
TEXTS = [
    "The capital of France is",
    "Hello, world!",
    "  leading spaces and\ttabs\nnew lines",
    "Numbers: 1234567 and 3.14159, year 2024.",
    "Unicode: café, naïve, Zürich, 東京, Москва, emoji 🚀🎉",
    "<|im_start|>user\nHi there<|im_end|>\n",
    "def add(a, b):\n    return a + b\n",
    "",
]
PROMPTS = [
    {"name": "france", "text": "The capital of France is"},
    {"name": "story", "text": "Once upon a time, in a small village,"},
    {"name": "code", "text": "def fibonacci(n):\n"},
    {"name": "list", "text": "Three primary colors are"},
    {"name": "chat-france", "chat": "What is the capital of France?"},
    {"name": "chat-gpu", "chat": "Explain what a GPU is in one sentence."},
]
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chat_text(user):
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


def main():
    gguf = sys.argv[1]
    import llama_cpp
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm = llama_cpp.Llama(model_path=gguf, n_ctx=1024, n_threads=2, verbose=False, logits_all=True)
    folder, name = os.path.split(gguf)
    hf_tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    hf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    hf_model.eval()

    texts = []
    for t in TEXTS:
        cpp = llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)
        hf = hf_tok.encode(t, add_special_tokens=False)
        texts.append({"text": t, "llama_cpp": cpp, "transformers": hf})

    prompts = []
    for p in PROMPTS:
        text = chat_text(p["chat"]) if "chat" in p else p["text"]
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        # llama.cpp, greedy (argmax of each step's logits), no sampling parameters involved.
        llm.reset()
        llm.eval(ids)
        last = llm.scores[len(ids) - 1]
        top = sorted(range(len(last)), key=lambda i: -last[i])[:50]
        top_logits = [[int(i), float(last[i])] for i in top]
        cpp = []
        for _ in range(GEN_TOKENS):
            nxt = int(llm.scores[llm.n_tokens - 1].argmax())
            cpp.append(nxt)
            llm.eval([nxt])
        # transformers, fp32 dequantised weights, greedy.
        with torch.no_grad():
            out = hf_model.generate(torch.tensor([ids]), max_new_tokens=GEN_TOKENS, do_sample=False,
                                    eos_token_id=None, pad_token_id=0)
        hf = out[0, len(ids):].tolist()
        prompts.append({"name": p["name"], "text": text, "prompt_ids": ids,
                        "llama_cpp": cpp, "transformers": hf, "llama_cpp_top_logits": top_logits})

    fixture = {
        "model": name,
        "generated_tokens": GEN_TOKENS,
        "generator": {
            "llama_cpp_python": llama_cpp.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "texts": texts,
        "prompts": prompts,
    }
    out = os.path.join(os.path.dirname(__file__), "..", "models", "tests", "fixtures", "smollm2.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for p in prompts:
        same = next((i for i, (a, b) in enumerate(zip(p["llama_cpp"], p["transformers"])) if a != b), GEN_TOKENS)
        print(f"{p['name']}: llama.cpp and transformers agree on the first {same} tokens")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
