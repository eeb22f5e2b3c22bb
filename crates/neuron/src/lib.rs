//! accelrt-neuron: the AWS Neuron runtime (`libnrt.so.1`) loaded at run time through FFI, with safe
//! wrappers. The crate builds and its tests run on machines without the Neuron SDK: the library is
//! opened with `dlopen` when a runtime is first needed, and a missing library or symbol is an error
//! that says which one. The declarations are written from the public documentation (the SDK headers
//! are proprietary and are not copied here).
//!
//! Status: the binding and wrappers are tested against `accelrt-nrt-sim`, a test double that exports
//! the same C functions; none of this has run on real Neuron hardware yet (docs/neuron.md).

#![warn(missing_docs)]

pub mod backend;
pub mod cache;
pub mod compile;
mod ffi;
mod runtime;
mod status;

pub use backend::{default_cache_dir, NeuronBackend, NeuronExecutable, NeuronOptions};
pub use cache::{CompilerVersion, NeffKey, NeffManifest};
pub use compile::{CompileError, Compiler};
pub use ffi::LIBRARY_ENV;
pub use runtime::{Model, Runtime, RuntimeVersion, Tensor, TensorInfo, TensorRefs, TensorSet, TensorUsage};
pub use status::{NeuronError, NrtStatus, Result};
