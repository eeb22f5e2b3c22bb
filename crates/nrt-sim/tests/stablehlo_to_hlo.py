"""Converts a StableHLO module (MLIR text) to a serialized XLA HloModuleProto, the way
`accelrt compile` does: XLA's own converter in jaxlib.

usage: python3 stablehlo_to_hlo.py IN.mlir OUT.hlo.pb
"""
import sys

from jax._src.lib import _jax


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        text = f.read()
    computation = _jax.mlir.mlir_module_to_xla_computation(text, use_tuple_args=False, return_tuple=False)
    with open(dst, "wb") as f:
        f.write(computation.as_serialized_hlo_module_proto())


if __name__ == "__main__":
    main()
