//! accelrt-stablehlo: exports an accelrt graph, specialised to one shape bucket, as a StableHLO
//! module in MLIR text, with a JSON manifest saying what to pass and what comes back.
//!
//! The module is one function, `@main`, that any StableHLO consumer can compile (XLA through a
//! PJRT plugin, jax, the Neuron compiler):
//! - every symbolic dimension is bound by the [`Bucket`]; `kv_len` is the caches' capacity;
//! - weights are **arguments**, not constants, so one compiled program serves every checkpoint of
//!   an architecture; block-quantised weights are taken as f32 (the runtime dequantises them on
//!   upload with [`weight_argument`]);
//! - KV caches are explicit state: cache tensors in, updated caches out.
//!
//! ```ignore
//! let module = accelrt_stablehlo::export(&graph, &"batch=1,seq=128".parse()?, &Default::default())?;
//! std::fs::write("batch=1,seq=128.mlir", &module.mlir)?;
//! std::fs::write("batch=1,seq=128.json", module.manifest.to_json())?;
//! ```
//! docs/stablehlo.md describes the format, the manifest and how each op lowers.

#![warn(missing_docs)]

mod bucket;
mod emit;
mod error;
pub mod hlo;
mod lower;
mod manifest;
mod weights;

pub use bucket::Bucket;
pub use error::ExportError;
pub use hlo::{hlo_proto, HloError};
pub use manifest::{Argument, ArgumentRole, Manifest, Output, OutputRole, MANIFEST_FORMAT};
pub use weights::weight_argument;

use accelrt_core::{DType, Graph};
use sha2::{Digest, Sha256};

/// How to export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// The dtype the graph's f32 values are computed in: f32 (the default), f16 or bf16. Inputs
    /// and outputs keep the graph's dtypes (converted at the function's edges); f32 weights and
    /// caches take this dtype.
    pub compute_dtype: Option<DType>,
}

/// An exported module: StableHLO MLIR text and its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    /// `module { func.func public @main(…) … }`.
    pub mlir: String,
    /// What `@main` takes and returns, in order; write it beside the text (`Manifest::to_json`).
    pub manifest: Manifest,
}

/// Exports `graph` specialised to `bucket`.
///
/// Errors: a symbol the bucket does not bind or a symbol it binds that the graph lacks, sizes the
/// graph's fixed dimensions refuse, a graph with caches but no `slots` in the bucket, a compute
/// dtype that is not a float, and any op that cannot be lowered (`ExportError::Unsupported`, naming
/// the node).
pub fn export(graph: &Graph, bucket: &Bucket, options: &ExportOptions) -> Result<Module, ExportError> {
    let compute = options.compute_dtype.unwrap_or(DType::F32);
    if !compute.is_float() {
        return Err(ExportError::ComputeDType(compute));
    }
    let specialised = bucket::specialise(graph, bucket)?;
    let lowered = lower::lower(graph, &specialised, compute)?;
    let mlir = format!(
        "// accelrt graph `{}` ({}), bucket {bucket}, compute {compute}\n{}",
        graph.name().replace('\n', " "),
        graph.content_hash(),
        lowered.text
    );
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        graph: graph.name().to_string(),
        graph_hash: graph.content_hash(),
        bucket: bucket.clone(),
        compute_dtype: compute,
        mlir_sha256: hex::encode(Sha256::digest(mlir.as_bytes())),
        arguments: lowered.arguments,
        outputs: lowered.outputs,
    };
    Ok(Module { mlir, manifest })
}
