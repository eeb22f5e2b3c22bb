//! accelrt-pjrt: the PJRT C API, loaded at run time from a plugin library, with safe wrappers.
//!
//! A PJRT plugin (the XLA CPU or GPU plugin, AWS's Neuron plugin, …) is a shared library exporting
//! `GetPjrtApi`, which returns a table of C functions. This crate opens the library with `dlopen`,
//! checks the table's API version against the declarations in `ffi.rs` (written by hand for PJRT C
//! API 0.81; see docs/pjrt.md), initialises the plugin once per process, and wraps clients,
//! compiled programs and device buffers so that every PJRT object is destroyed exactly once and
//! every `PJRT_Error` becomes a [`PjrtError`] carrying the plugin's message and code.
//!
//! ```no_run
//! use accelrt_pjrt::{Client, Plugin, PluginStore};
//! let library = accelrt_pjrt::locate_xla_cpu(&PluginStore::from_env())?; // fetched + verified
//! let client = Client::new(&Plugin::load(library)?)?;
//! let exe = client.compile_mlir(r#"
//!   func.func @main(%a: tensor<2xf32>, %b: tensor<2xf32>) -> tensor<2xf32> {
//!     %0 = stablehlo.add %a, %b : tensor<2xf32>
//!     return %0 : tensor<2xf32>
//!   }"#)?;
//! let a = client.buffer_from_host(&[1.0f32, 2.0], &[2])?;
//! let b = client.buffer_from_host(&[10.0f32, 20.0], &[2])?;
//! let sum = exe.execute(&[&a, &b])?.remove(0).to_vec::<f32>()?;
//! assert_eq!(sum, [11.0, 22.0]);
//! # Ok::<(), accelrt_pjrt::PjrtError>(())
//! ```

#![warn(missing_docs)]

mod buffer;
mod client;
mod element;
mod error;
mod executable;
pub mod fetch;
mod ffi;
#[cfg(test)]
mod layout_test;
mod plugin;
mod signature;

pub use buffer::Buffer;
pub use client::{Client, Device, LiveObjects};
pub use element::{Element, ElementType};
pub use error::{ErrorCode, PjrtError, Result};
pub use executable::{Argument, CompileOptions, LoadedExecutable, ProgramFormat};
pub use fetch::{locate_xla_cpu, InstalledPlugin, PluginStore, PLUGIN_ENV, XLA_CPU};
pub use plugin::{check_version, ApiVersion, AttributeValue, Plugin, SUPPORTED_API};
pub use signature::TensorType;

use std::sync::Arc;

/// The XLA CPU plugin, loaded: `$ACCELRT_PJRT_PLUGIN` if set, else fetched into the default cache.
///
/// # Errors
/// Those of [`locate_xla_cpu`] and [`Plugin::load`].
pub fn xla_cpu_plugin() -> Result<Arc<Plugin>> {
    Plugin::load(locate_xla_cpu(&PluginStore::from_env())?)
}
