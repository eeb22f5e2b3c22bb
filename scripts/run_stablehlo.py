#!/usr/bin/env python3
"""Runs exported StableHLO modules (crates/stablehlo) in jax/jaxlib on the CPU, fed as each
module's manifest says: inputs and weights from raw little-endian files, KV-cache state threaded
from one step of a session to the next (zeros at the start).

Usage: run_stablehlo.py JOB.json, where the job is
  {"sessions": [{"name": str, "steps": [{"mlir": path, "manifest": path,
                                          "args": {argument name: path}, "out_dir": path}]}]}
Each step writes its graph outputs (role "output") in manifest order to out_dir/<index>.bin, or
out_dir/error.txt if it fails; other sessions still run. Exit status 0 unless the job itself is bad.
"""
import json
import os
import sys
import traceback

import numpy as np
import ml_dtypes
import jax
import jax.extend.backend  # jax.extend must be imported as a module

# Without x64, device_put narrows int64 arguments (labels with an ignore index of -100) to int32,
# which a module declaring i64 parameters refuses.
jax.config.update("jax_enable_x64", True)

DTYPES = {
    "f32": np.float32,
    "f16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "i64": np.int64,
    "u32": np.uint32,
    "u8": np.uint8,
}


def np_dtype(dtype):
    if dtype not in DTYPES:
        raise ValueError(f"no numpy type for manifest dtype {dtype!r}")
    return DTYPES[dtype]


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    backend = jax.extend.backend.get_backend("cpu")
    device = backend.local_devices()[0]
    compiled = {}  # mlir_sha256 -> executable: buckets repeat across steps
    for session in job["sessions"]:
        state = {}
        for step in session["steps"]:
            os.makedirs(step["out_dir"], exist_ok=True)
            try:
                run_step(backend, device, compiled, state, step)
            except Exception:
                with open(os.path.join(step["out_dir"], "error.txt"), "w") as f:
                    f.write(traceback.format_exc())
                break  # later steps of this session depend on its state


def run_step(backend, device, compiled, state, step):
    with open(step["manifest"]) as f:
        manifest = json.load(f)
    key = manifest["mlir_sha256"]
    if key not in compiled:
        with open(step["mlir"]) as f:
            compiled[key] = backend.compile_and_load(f.read(), [device])
    exe = compiled[key]
    args = []
    for arg in manifest["arguments"]:
        dtype, shape, role = np_dtype(arg["dtype"]), tuple(arg["shape"]), arg["role"]
        if role["kind"] == "state":
            value = state.get(role["cache"])
            if value is None:
                value = np.zeros(shape, dtype)
        else:
            value = np.fromfile(step["args"][arg["name"]], dtype=dtype)
            if value.size != int(np.prod(shape)):
                raise ValueError(f"argument {arg['name']}: {value.size} values for shape {shape}")
            value = value.reshape(shape)
        args.append(jax.device_put(value, device))
    results = exe.execute(args)
    if len(results) != len(manifest["outputs"]):
        raise ValueError(f"{len(results)} results, the manifest lists {len(manifest['outputs'])}")
    for index, (out, result) in enumerate(zip(manifest["outputs"], results)):
        value = np.asarray(result)
        if list(value.shape) != out["shape"] or value.dtype != np_dtype(out["dtype"]):
            raise ValueError(f"output {out['name']}: got {value.dtype} {value.shape}, manifest says {out}")
        if out["role"]["kind"] == "state":
            state[out["role"]["cache"]] = value
        else:
            value.tofile(os.path.join(step["out_dir"], f"{index}.bin"))


if __name__ == "__main__":
    main()
