//! The C ABI of libnrt, declared from the public documentation, and the library loaded at run time.

use crate::status::{NeuronError, Result};
use libloading::Library;
use std::ffi::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};

/// Environment variable naming the runtime library to load (a path), instead of the default search.
pub const LIBRARY_ENV: &str = "ACCELRT_NEURON_LIB";

/// Opaque runtime objects.
#[repr(C)]
pub struct NrtModel {
    _private: [u8; 0],
}
#[repr(C)]
pub struct NrtTensor {
    _private: [u8; 0],
}
pub type NrtTensorSet = c_void;

pub const NO_FW: c_int = 1;
pub const PLACEMENT_DEVICE: c_int = 0;
pub const USAGE_INPUT: u32 = 0;
pub const USAGE_OUTPUT: u32 = 1;

/// `nrt_version_t`.
#[repr(C)]
pub struct NrtVersion {
    pub rt_major: u64,
    pub rt_minor: u64,
    pub rt_patch: u64,
    pub rt_maintenance: u64,
    pub rt_detail: [c_char; 128],
    pub git_hash: [c_char; 64],
}

/// `nrt_tensor_info_t` (x86-64: size 296, name at 0, usage at 256, size at 264, dtype at 272,
/// shape at 280, ndim at 288).
#[repr(C)]
pub struct NrtTensorInfo {
    pub name: [c_char; 256],
    pub usage: u32,
    pub size: usize,
    pub dtype: u32,
    pub shape: *mut u32,
    pub ndim: u32,
}

/// `nrt_tensor_info_array_t`: a count followed by that many infos.
#[repr(C)]
pub struct NrtTensorInfoArray {
    pub tensor_count: u64,
    pub tensor_array: [NrtTensorInfo; 0],
}

const _: () = assert!(std::mem::size_of::<NrtTensorInfo>() == 296);

/// The functions accelrt uses, resolved from the library.
pub struct Api {
    pub path: PathBuf,
    pub init: unsafe extern "C" fn(c_int, *const c_char, *const c_char) -> c_int,
    pub close: unsafe extern "C" fn(),
    pub get_version: unsafe extern "C" fn(*mut NrtVersion, usize) -> c_int,
    pub get_total_nc_count: unsafe extern "C" fn(*mut u32) -> c_int,
    pub load: unsafe extern "C" fn(*const c_void, usize, i32, i32, *mut *mut NrtModel) -> c_int,
    pub unload: unsafe extern "C" fn(*mut NrtModel) -> c_int,
    pub execute: unsafe extern "C" fn(*mut NrtModel, *const NrtTensorSet, *mut NrtTensorSet) -> c_int,
    pub get_model_tensor_info: unsafe extern "C" fn(*mut NrtModel, *mut *mut NrtTensorInfoArray) -> c_int,
    pub free_model_tensor_info: unsafe extern "C" fn(*mut NrtTensorInfoArray) -> c_int,
    pub allocate_tensor_set: unsafe extern "C" fn(*mut *mut NrtTensorSet) -> c_int,
    pub destroy_tensor_set: unsafe extern "C" fn(*mut *mut NrtTensorSet),
    pub add_tensor_to_tensor_set: unsafe extern "C" fn(*mut NrtTensorSet, *const c_char, *mut NrtTensor) -> c_int,
    pub tensor_allocate: unsafe extern "C" fn(c_int, c_int, usize, *const c_char, *mut *mut NrtTensor) -> c_int,
    pub tensor_free: unsafe extern "C" fn(*mut *mut NrtTensor),
    pub tensor_read: unsafe extern "C" fn(*const NrtTensor, *mut c_void, usize, usize) -> c_int,
    pub tensor_write: unsafe extern "C" fn(*mut NrtTensor, *const c_void, usize, usize) -> c_int,
    pub tensor_get_size: unsafe extern "C" fn(*const NrtTensor) -> usize,
    /// Keeps the code the pointers above point into mapped.
    _library: Library,
}

/// Where the library is looked for, in order: `$ACCELRT_NEURON_LIB` alone when set, else the SDK's
/// folder, else the loader's search path; the SONAME `libnrt.so.1` first, then `libnrt.so`.
fn candidates() -> Vec<PathBuf> {
    if let Some(path) = std::env::var_os(LIBRARY_ENV).filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(path)];
    }
    vec![
        PathBuf::from("/opt/aws/neuron/lib/libnrt.so.1"),
        PathBuf::from("libnrt.so.1"),
        PathBuf::from("/opt/aws/neuron/lib/libnrt.so"),
        PathBuf::from("libnrt.so"),
    ]
}

impl Api {
    /// Opens the first candidate ([`candidates`]) that loads and resolves every symbol; a library
    /// that opens but lacks a symbol is closed and the search goes on.
    ///
    /// # Errors
    ///
    /// As [`Api::load_from`] over the candidates.
    pub fn load() -> Result<Api> {
        Api::load_from(&candidates())
    }

    /// Opens the first of `candidates` that loads and resolves every symbol.
    ///
    /// # Errors
    ///
    /// When none does: with a single candidate (`$ACCELRT_NEURON_LIB`), its own error
    /// ([`NeuronError::LibraryNotFound`] naming it, or [`NeuronError::MissingSymbol`]); with
    /// several, [`NeuronError::LibraryNotFound`] naming every candidate and why it failed (the
    /// loader's message, or the symbol it lacks).
    pub fn load_from(candidates: &[PathBuf]) -> Result<Api> {
        let mut failures = Vec::new();
        for path in candidates {
            // SAFETY: loading a shared library runs its initialisers; the Neuron runtime's (or the
            // simulator's) are the intended ones here.
            let error = match unsafe { Library::new(path) } {
                Ok(library) => match Api::resolve(path, library) {
                    Ok(api) => return Ok(api),
                    Err(e) => e,
                },
                Err(e) => NeuronError::LibraryNotFound { tried: vec![format!("{}: {e}", path.display())] },
            };
            failures.push(error);
        }
        if failures.len() == 1 {
            return Err(failures.pop().expect("one failure"));
        }
        let tried = failures
            .into_iter()
            .flat_map(|e| match e {
                NeuronError::LibraryNotFound { tried } => tried,
                other => vec![other.to_string()],
            })
            .collect();
        Err(NeuronError::LibraryNotFound { tried })
    }

    fn resolve(path: &Path, library: Library) -> Result<Api> {
        macro_rules! sym {
            ($name:literal) => {{
                // SAFETY: the field's type is the signature the runtime documents for this symbol.
                let s = unsafe { library.get(concat!($name, "\0").as_bytes()) }.map_err(|e: libloading::Error| {
                    NeuronError::MissingSymbol { library: path.to_path_buf(), symbol: $name, message: e.to_string() }
                })?;
                *s
            }};
        }
        Ok(Api {
            path: path.to_path_buf(),
            init: sym!("nrt_init"),
            close: sym!("nrt_close"),
            get_version: sym!("nrt_get_version"),
            get_total_nc_count: sym!("nrt_get_total_nc_count"),
            load: sym!("nrt_load"),
            unload: sym!("nrt_unload"),
            execute: sym!("nrt_execute"),
            get_model_tensor_info: sym!("nrt_get_model_tensor_info"),
            free_model_tensor_info: sym!("nrt_free_model_tensor_info"),
            allocate_tensor_set: sym!("nrt_allocate_tensor_set"),
            destroy_tensor_set: sym!("nrt_destroy_tensor_set"),
            add_tensor_to_tensor_set: sym!("nrt_add_tensor_to_tensor_set"),
            tensor_allocate: sym!("nrt_tensor_allocate"),
            tensor_free: sym!("nrt_tensor_free"),
            tensor_read: sym!("nrt_tensor_read"),
            tensor_write: sym!("nrt_tensor_write"),
            tensor_get_size: sym!("nrt_tensor_get_size"),
            _library: library,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime double (`accelrt-nrt-sim`, a dev-dependency) cargo built next to this test binary.
    fn simulator_library() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let deps = exe.parent().unwrap();
        let name = format!("{}nrt_sim{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
        [deps, deps.parent().unwrap()]
            .iter()
            .map(|d| d.join(&name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{name} was not built next to {}", exe.display()))
    }

    /// A library that opens but is not the runtime (no `nrt_init`) does not end the search: the
    /// next candidate that resolves every symbol is used, and when none does, every candidate is
    /// named with its reason.
    #[test]
    fn a_library_without_the_symbols_does_not_stop_the_search() {
        let missing = PathBuf::from("/nonexistent/libnrt.so.1");
        let not_the_runtime = PathBuf::from("libm.so.6");
        let api = Api::load_from(&[missing.clone(), not_the_runtime.clone(), simulator_library()])
            .unwrap_or_else(|e| panic!("the double after a foreign library should load: {e}"));
        assert_eq!(api.path, simulator_library());

        match Api::load_from(&[missing.clone(), not_the_runtime.clone()]) {
            Err(NeuronError::LibraryNotFound { tried }) => {
                assert_eq!(tried.len(), 2, "{tried:?}");
                assert!(tried[0].starts_with("/nonexistent/libnrt.so.1:"), "{tried:?}");
                assert!(tried[1].starts_with("libm.so.6:") && tried[1].contains("`nrt_init` is missing"), "{tried:?}");
            }
            other => panic!("expected LibraryNotFound naming both, got {:?}", other.err()),
        }
        // A single candidate (what `$ACCELRT_NEURON_LIB` gives) keeps its own error.
        assert!(matches!(
            Api::load_from(&[not_the_runtime]),
            Err(NeuronError::MissingSymbol { symbol: "nrt_init", .. })
        ));
        assert!(matches!(Api::load_from(&[missing]), Err(NeuronError::LibraryNotFound { tried }) if tried.len() == 1));
    }
}
