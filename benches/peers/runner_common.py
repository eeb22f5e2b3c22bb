"""The harness side of accelrt's external-runner protocol (see crates/bench/src/peers.rs):
one JSON object per line on stdin/stdout."""
import json
import sys


def serve(system, versions, dtype, embed, device="cpu"):
    """Announces readiness, then answers every {"texts": [...]} line with {"n": len(texts)}."""
    out = sys.stdout
    out.write(json.dumps({"ready": True, "system": system, "versions": versions, "dtype": dtype, "device": device}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            texts = json.loads(line)["texts"]
            n = len(embed(texts))
            out.write(json.dumps({"n": n}) + "\n")
        except Exception as e:  # reported to the harness, which stops the run
            out.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
        out.flush()


def fail(message):
    sys.stdout.write(json.dumps({"error": message}) + "\n")
    sys.stdout.flush()
    sys.exit(1)
