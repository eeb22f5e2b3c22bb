#!/usr/bin/env python3
"""Peer runner: llama.cpp (through llama-cpp-python) for text generation, same prompts, greedy,
exactly --max-tokens new tokens per request (end-of-sequence does not stop it), --threads threads.

Per request it reports the time to the first token (prefill + first argmax) and the mean time per
later token, measured inside this process around llama.cpp's eval calls."""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from runner_common import fail  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True, help="a .gguf file, or a directory holding one")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="f32")
    p.add_argument("--max-tokens", type=int, required=True)
    p.add_argument("--context", type=int, default=1024)
    a = p.parse_args()
    try:
        import llama_cpp
        import numpy as np
    except ImportError as e:
        fail(f"{e}; install llama-cpp-python (benches/peers/install.sh)")
    if a.device != "cpu":
        fail("this runner measures llama.cpp on the CPU only")
    path = a.model_dir
    if os.path.isdir(path):
        found = [f for f in os.listdir(path) if f.endswith(".gguf")]
        if len(found) != 1:
            fail(f"expected one .gguf file in {path}, found {found}")
        path = os.path.join(path, found[0])
    threads = a.threads or os.cpu_count()
    llm = llama_cpp.Llama(model_path=path, n_ctx=a.context, n_threads=threads, n_threads_batch=threads,
                          n_batch=512, verbose=False)
    vocab = llm.n_vocab()
    out = sys.stdout
    out.write(json.dumps({"ready": True, "system": "llama.cpp", "device": "cpu", "dtype": "gguf",
                          "versions": {"llama_cpp_python": llama_cpp.__version__, "threads": str(threads)}}) + "\n")
    out.flush()

    def next_token():
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))
        return int(logits.argmax())

    for line in sys.stdin:
        try:
            prompts = json.loads(line)["prompts"]
            requests = []
            for text in prompts:
                ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
                start = time.perf_counter()
                llm.reset()
                llm.eval(ids)
                token = next_token()
                ttft = time.perf_counter() - start
                decode = time.perf_counter()
                for _ in range(a.max_tokens - 1):
                    llm.eval([token])
                    token = next_token()
                steps = a.max_tokens - 1
                tpot = (time.perf_counter() - decode) / steps * 1e3 if steps else None
                requests.append({"prompt_tokens": len(ids), "output_tokens": a.max_tokens,
                                 "ttft_ms": ttft * 1e3, "tpot_ms": tpot})
            out.write(json.dumps({"n": len(prompts), "requests": requests}) + "\n")
        except Exception as e:  # reported to the harness, which stops the run
            out.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
