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

mod hlo;
mod neff;
mod runtime;

pub use hlo::{
    compile_hlo, input_name, output_name, validate_hlo, HloNeff, HloNeffError, HloNeffHeader, COMPILER_VERSION,
    HLO_MAGIC, HLO_NEFF_FORMAT, TARGETS,
};
pub use neff::{pack, SimNeff, TensorDecl, MAGIC};
pub use runtime::*;
