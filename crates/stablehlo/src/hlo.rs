//! StableHLO MLIR text → a serialized XLA `HloModuleProto`: the input `neuronx-cc compile
//! --framework XLA` documents (docs/neuron.md says why this route).
//!
//! The conversion is XLA's own (`mlir_module_to_xla_computation` in jaxlib's MLIR bindings, the
//! function jax itself uses to hand programs to XLA), run in a Python subprocess: writing the
//! proto from Rust would mean keeping a second copy of XLA's HLO schema and its MHLO→HLO rules in
//! step with XLA. Input/output aliases (`tf.aliasing_output` on a parameter) become the module's
//! `input_output_alias`, which is how a KV cache is updated in place on the device.

use std::io::Write;
use std::process::{Command, Stdio};

/// Environment variable naming the Python interpreter with jaxlib (default `python3`, also when it
/// is set to the empty string).
pub const PYTHON_ENV: &str = "ACCELRT_PYTHON";

/// What can go wrong converting a module.
#[derive(Debug, thiserror::Error)]
pub enum HloError {
    /// The interpreter could not be started, or waiting for it failed. Set `$ACCELRT_PYTHON` to a
    /// Python that has jaxlib.
    #[error(
        "could not run `{python}` to convert StableHLO to HLO ({source}); set {PYTHON_ENV} to a Python with jaxlib"
    )]
    Python {
        /// The interpreter command, from `$ACCELRT_PYTHON` or (unset or empty) `python3`.
        python: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// jaxlib is not importable there, or has neither location of the MLIR bindings. Install jax
    /// (jaxlib 0.4.30 or newer) into that Python.
    #[error("`{python}` has no usable jaxlib ({message}); install it with `{python} -m pip install jax` (any jaxlib from 0.4.30)")]
    NoJaxlib {
        /// The interpreter command.
        python: String,
        /// Python's exception, as `ModuleNotFoundError: No module named 'jax'`.
        message: String,
    },
    /// XLA refused the module, or the converter failed otherwise; the text is its message (at most
    /// 4000 characters of it) or its exit status. Usually a module this crate did not export, or a
    /// jaxlib too old for the StableHLO it contains.
    #[error("XLA could not convert the module to HLO: {0}")]
    Convert(String),
}

/// The converter: reads MLIR text on stdin, writes the serialized proto on stdout. jaxlib moved
/// the bindings between releases (`_jax.mlir` since 0.7, `xla_client._xla.mlir` before).
const SCRIPT: &str = r#"
import sys
try:
    try:
        from jax._src.lib import _jax
        mlir = _jax.mlir
    except (ImportError, AttributeError):
        from jax._src.lib import xla_client
        mlir = xla_client._xla.mlir
except Exception as e:
    sys.stderr.write("%s: %s" % (type(e).__name__, e))
    sys.exit(3)
text = sys.stdin.buffer.read().decode("utf-8")
try:
    computation = mlir.mlir_module_to_xla_computation(text, use_tuple_args=False, return_tuple=False)
    proto = computation.as_serialized_hlo_module_proto()
except Exception as e:
    sys.stderr.write(str(e)[:4000])
    sys.exit(4)
sys.stdout.buffer.write(proto)
"#;

/// The interpreter named by a value of `$ACCELRT_PYTHON`: unset or empty means `python3`, as for
/// the plugin and model fetchers (`accelrt_pjrt::fetch::PluginStore::new`).
fn interpreter(value: Option<String>) -> String {
    value.filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into())
}

/// Converts `mlir` (an exported module) to a serialized `HloModuleProto` with jaxlib in
/// `$ACCELRT_PYTHON` (default `python3`, also when it is set to the empty string).
///
/// # Errors
/// [`HloError::Python`] if the interpreter does not start, [`HloError::NoJaxlib`] if it lacks
/// jaxlib, [`HloError::Convert`] if XLA refuses the module.
pub fn hlo_proto(mlir: &str) -> Result<Vec<u8>, HloError> {
    let python = interpreter(std::env::var(PYTHON_ENV).ok());
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| HloError::Python { python: python.clone(), source })?;
    // Feed stdin from another thread: a large module would otherwise fill the pipes both ways.
    let mut stdin = child.stdin.take().expect("piped");
    let text = mlir.as_bytes().to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&text));
    let output = child.wait_with_output().map_err(|source| HloError::Python { python: python.clone(), source })?;
    let _ = writer.join();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    match output.status.code() {
        Some(0) if !output.stdout.is_empty() => Ok(output.stdout),
        Some(3) => Err(HloError::NoJaxlib { python, message: stderr }),
        _ => Err(HloError::Convert(if stderr.is_empty() {
            format!("the converter exited with {}", output.status)
        } else {
            stderr
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty `$ACCELRT_PYTHON` means the default, as in the plugin fetcher (it used to be run
    /// as the command `""`, which cannot start).
    #[test]
    fn an_empty_python_variable_means_python3() {
        assert_eq!(interpreter(None), "python3");
        assert_eq!(interpreter(Some(String::new())), "python3");
        assert_eq!(interpreter(Some("/opt/jax/bin/python".into())), "/opt/jax/bin/python");
    }
}
