//! **Test double** of the AWS Neuron runtime library (`libnrt.so.1`) and of its compiler
//! (`neuronx-cc`). It exports the same C functions with the same signatures and status codes as
//! the documented runtime API, so accelrt's Neuron binding can be exercised through its real FFI
//! path on machines without Neuron hardware.
//!
//! It does not run real NEFF programs. It runs two kinds of *simulator NEFF*:
//!
//! - **graph NEFFs**, made by [`pack`] from an accelrt graph, its weights and one static input
//!   shape, which it "executes" with the reference evaluator;
//! - **HLO NEFFs**, made by [`compile_hlo`] (and by the `neuronx-cc-sim` binary, which stands in
//!   for `neuronx-cc compile --framework XLA`) from the serialized XLA `HloModuleProto` that
//!   `accelrt compile` produces and its [`accelrt_stablehlo::Manifest`]. `nrt_load` compiles the
//!   HLO with the XLA CPU PJRT plugin and `nrt_execute` runs it, so the exported program itself
//!   is what executes. Its tensors are named `input0..` and `output0..` by position
//!   ([`input_name`], [`output_name`]; believed to be neuronx-cc's naming for XLA-framework NEFFs,
//!   not verified on hardware). One nrt tensor may be in both the input and the output set (an
//!   aliased KV cache kept on the "device"): all inputs are read before any output is written.
//!
//! Tests can make calls fail with any status ([`nrt_sim_inject_failure`]) and can count live
//! objects ([`nrt_sim_live_objects`]) to check that nothing leaks; both cover both kinds. Why a
//! call failed is printed to stderr, as the runtime logs it.
//!
//! # What the double models
//!
//! Written from the runtime facts in `../shared/reference/neuron-runtime.md` (beside the
//! repository), not from the SDK's headers:
//!
//! - the 17 functions accelrt's binding calls, with the documented signatures, `NRT_STATUS`
//!   codes and struct layouts (`nrt_version_t`, the tensor-info array);
//! - one runtime per process: every call that creates, fills or runs something returns
//!   `NRT_UNINITIALIZED` before `nrt_init` and `NRT_CLOSED` after `nrt_close`, and `nrt_init`
//!   after `nrt_close` fails (`nrt_get_version` and `nrt_get_total_nc_count` work before
//!   `nrt_init`; the calls that free a handle or read a tensor's size always work);
//! - tensors bound into sets by name, read and written with bounds checks, and an execution that
//!   checks every bound tensor's size against the program's (`NRT_EXEC_BAD_INPUT` for inputs,
//!   `NRT_INVALID` for outputs);
//! - `NRT_EXEC_COMPLETED_WITH_NUM_ERR` when an output holds a NaN or an infinity (the outputs are
//!   written all the same);
//! - `NRT_LOAD_NOT_ENOUGH_NC` for a start core past the core count, `NRT_RESOURCE` for an
//!   allocation the host cannot make, `NRT_UNSUPPORTED_NEFF_VERSION` for an HLO NEFF of another
//!   [`HLO_NEFF_FORMAT`];
//! - tensor info with SDK 2.28's hardware dtype codes.
//!
//! # What it does not model
//!
//! - Real NEFFs (refused with `NRT_INVALID`), NeuronCores, their speed and their numerics: an
//!   HLO NEFF runs on XLA CPU as exported (compiler flags such as `--auto-cast` are recorded,
//!   not applied), a graph NEFF in the reference evaluator. Timings measured through it say
//!   nothing about Neuron hardware.
//! - Placement: the core count is `NRT_SIM_CORES` (default 2), `NEURON_RT_VISIBLE_CORES` and
//!   the other `NEURON_RT_*` variables are ignored, a model is not tied to the core it was
//!   loaded on, and a tensor allocated for one core can be used by a program on another. Device
//!   memory is host memory with no device-sized limit; only the device placement (0) is
//!   accepted (host placement is `NRT_INVALID`).
//! - Other processes (NeuronCores are never busy), execution timeouts, hardware errors (except
//!   by injection), and the functions the binding does not use (`nrt_execute_repeat`,
//!   `nrt_tensor_copy`, `nrt_get_tensor_from_tensor_set`, `nrt_get_visible_nc_count`,
//!   `nrt_get_status_as_str`, …), which it does not export.
//! - The runtime's version: it reports 2.0.0.0 and says it is a test double in `rt_detail`.

#![warn(missing_docs)]

mod hlo;
mod neff;
mod runtime;

pub use hlo::{
    compile_hlo, input_name, output_name, validate_hlo, HloNeff, HloNeffError, HloNeffHeader, COMPILER_VERSION,
    HLO_MAGIC, HLO_NEFF_FORMAT, TARGETS,
};
pub use neff::{pack, SimNeff, TensorDecl, MAGIC};
pub use runtime::*;
