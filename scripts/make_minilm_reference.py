#!/usr/bin/env python3
"""Regenerates models/tests/fixtures/all-minilm-l6-v2.json: reference embeddings from
sentence-transformers (PyTorch, fp32, CPU) that accelrt's embeddings are tested against.

Usage: python3 scripts/make_minilm_reference.py MODEL_DIR [OUT]
MODEL_DIR is a sentence-transformers folder with the verified files, e.g. the one
`accelrt fetch all-minilm-l6-v2` prints. Needs: python3 -m pip install sentence-transformers
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sentence_transformers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

# At least 16 texts: an empty text, one character, non-ASCII scripts, emoji, and one text longer
# than the 256-token limit (so truncation is exercised).
LONG = " ".join(
    f"Sentence number {i} of a long document about inference costs on accelerators." for i in range(40)
)
TEXTS = [
    "",
    "a",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "What does an inference cost on an inf2.xlarge instance?",
    "Trainium and Inferentia are AWS's own machine-learning chips.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le café est très chaud ce matin à Montréal.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "机器学习模型在不同的加速器上运行。",
    "東京は日本の首都です。",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "I love pizza 🍕🍕 and rockets 🚀 — really! 👍🏽",
    "🙂",
    "   leading and trailing spaces   ",
    "UPPER case and lower case MIXED",
    "tabs\tand\tnumbers 1234567890 3.14159",
    LONG,
]


def main() -> None:
    model_dir = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(__file__), "..", "models", "tests", "fixtures", "all-minilm-l6-v2.json"
    )
    torch.manual_seed(0)
    model = sentence_transformers.SentenceTransformer(model_dir, device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    emb = model.encode(TEXTS, batch_size=len(TEXTS), convert_to_numpy=True, normalize_embeddings=False)
    tokens = [len(model.tokenizer(t, truncation=True, max_length=model.max_seq_length)["input_ids"]) for t in TEXTS]
    assert max(tokens) == 256, "the long text must reach the truncation limit"
    doc = {
        "model": "all-minilm-l6-v2",
        "generated_by": "scripts/make_minilm_reference.py",
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "dtype": "float32",
        "texts": TEXTS,
        "token_counts": tokens,
        "embeddings": [[float(x) for x in row] for row in emb],
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(TEXTS)} embeddings to {out}")


if __name__ == "__main__":
    main()
