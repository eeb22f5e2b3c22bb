#!/usr/bin/env bash
# Builds the candle CPU backend for aarch64 (Graviton) and runs its tests — the conformance suite
# in f32/bf16/f16 included — under qemu's user-mode emulation. The x86 kernels are compiled out
# there, so this checks that the portable paths build and agree with the reference evaluator; it
# measures no speed. Needs: rustup's aarch64-unknown-linux-gnu target, Debian's
# gcc-aarch64-linux-gnu, g++-aarch64-linux-gnu and qemu-user (installed below when missing, as root).
#
#     scripts/aarch64-check.sh            # ~15 min on 2 cores, in target-aarch64/
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target-aarch64}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo test --release --locked --target aarch64-unknown-linux-gnu -p accelrt-candle
