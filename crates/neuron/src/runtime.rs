//! Safe wrappers: the process-wide runtime, models, tensors and tensor sets. Every handle frees what
//! it owns exactly once when dropped, on success and error paths alike.

use crate::ffi::{self, Api, NrtModel, NrtTensor, NrtTensorInfoArray, NrtTensorSet, NrtVersion};
use crate::status::{check, NeuronError, Result};
use std::ffi::{c_char, CString};
use std::sync::{Arc, Mutex};

/// The Neuron runtime of this process: loaded and initialised once. The runtime cannot be
/// initialised again after it is closed, so `shutdown` is final for the process. Its NeuronCores
/// are claimed exclusively by this process while it is open (both facts from
/// `../shared/reference/neuron-runtime.md`, beside the repository).
pub struct Runtime {
    api: Api,
}

#[derive(Default)]
enum Global {
    #[default]
    Uninitialised,
    Open(Arc<Runtime>),
    Closed,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global::Uninitialised);

/// `nrt_get_version`, for results and bug reports: a NEFF compiled for another runtime version
/// fails to load (`NRT_UNSUPPORTED_NEFF_VERSION`), so results record which runtime ran them.
/// Displayed as `major.minor.patch.maintenance (library)`, e.g. `2.34.10.0 (libnrt.so.1)`; the
/// four numbers are the C struct's `rt_major`, `rt_minor`, `rt_patch` and `rt_maintenance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    /// 2 for the Neuron runtime 2.x this binding is written for; the backend loads only NEFFs
    /// from a compiler of the same major version.
    pub major: u64,
    /// Second number (34 in `2.34.10.0`).
    pub minor: u64,
    /// Third number (10 in `2.34.10.0`).
    pub patch: u64,
    /// Fourth number (0 in `2.34.10.0`).
    pub maintenance: u64,
    /// `rt_detail`: the runtime's own free-text description (up to 127 bytes).
    pub detail: String,
    /// `git_hash`: the commit the runtime was built from (up to 63 bytes).
    pub git_hash: String,
    /// The library file that was loaded.
    pub library: String,
}

impl std::fmt::Display for RuntimeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}.{} ({})", self.major, self.minor, self.patch, self.maintenance, self.library)
    }
}

fn c_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Runtime {
    /// The runtime, loading the library and calling `nrt_init` on first use; later calls share it.
    ///
    /// # Errors
    ///
    /// [`NeuronError::Closed`] after [`Runtime::shutdown`]; [`NeuronError::LibraryNotFound`] when
    /// no usable library is found (every place searched, with why it failed; a library that opens
    /// but lacks a symbol is skipped), or [`NeuronError::MissingSymbol`] when the one library
    /// `$ACCELRT_NEURON_LIB` names lacks a symbol; [`NeuronError::Status`]
    /// when `nrt_init` fails (for example because another process holds the NeuronCores). A
    /// failed first call leaves the runtime uninitialised, so a later call tries again.
    pub fn get() -> Result<Arc<Runtime>> {
        let mut global = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
        match &*global {
            Global::Open(rt) => return Ok(rt.clone()),
            Global::Closed => return Err(NeuronError::Closed),
            Global::Uninitialised => {}
        }
        let api = Api::load()?;
        let empty = c"";
        // SAFETY: documented arguments for a standalone program (no framework).
        check("nrt_init", unsafe { (api.init)(ffi::NO_FW, empty.as_ptr(), empty.as_ptr()) })?;
        let rt = Arc::new(Runtime { api });
        *global = Global::Open(rt.clone());
        Ok(rt)
    }

    /// Loads the library and resolves every symbol the binding needs, without initialising it:
    /// where the runtime would come from (the library's path), or why it cannot be used here
    /// ([`NeuronError::LibraryNotFound`], [`NeuronError::MissingSymbol`]). Claims no NeuronCore.
    pub fn probe() -> Result<std::path::PathBuf> {
        Api::load().map(|api| api.path.clone())
    }

    /// Closes the runtime for good (`nrt_close`); a runtime never opened stays unopened, and a
    /// second shutdown does nothing.
    ///
    /// # Errors
    ///
    /// [`NeuronError::Invalid`] while any [`Arc<Runtime>`] is still held (every [`Model`],
    /// [`Tensor`], [`TensorSet`] and [`TensorRefs`] holds one); the runtime then stays open.
    pub fn shutdown() -> Result<()> {
        let mut global = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
        let rt = match std::mem::take(&mut *global) {
            Global::Open(rt) => rt,
            other => {
                *global = match other {
                    Global::Uninitialised => Global::Uninitialised,
                    _ => Global::Closed,
                };
                return Ok(());
            }
        };
        match Arc::try_unwrap(rt) {
            Ok(rt) => {
                // SAFETY: nothing else holds the runtime, so no model or tensor is left.
                unsafe { (rt.api.close)() };
                *global = Global::Closed;
                Ok(())
            }
            Err(rt) => {
                *global = Global::Open(rt);
                Err(NeuronError::Invalid("cannot close the Neuron runtime while models or tensors are alive".into()))
            }
        }
    }

    /// The runtime's version (`nrt_get_version`).
    ///
    /// # Errors
    ///
    /// [`NeuronError::Status`] when the call fails.
    pub fn version(&self) -> Result<RuntimeVersion> {
        // SAFETY: a plain out-struct of the documented layout and size.
        let mut v: NrtVersion = unsafe { std::mem::zeroed() };
        check("nrt_get_version", unsafe { (self.api.get_version)(&mut v, std::mem::size_of::<NrtVersion>()) })?;
        Ok(RuntimeVersion {
            major: v.rt_major,
            minor: v.rt_minor,
            patch: v.rt_patch,
            maintenance: v.rt_maintenance,
            detail: c_string(&v.rt_detail),
            git_hash: c_string(&v.git_hash),
            library: self.api.path.display().to_string(),
        })
    }

    /// NeuronCores on this machine (`nrt_get_total_nc_count`): 2 per Inferentia2 or Trainium1
    /// chip, 8 per Trainium2 chip.
    ///
    /// # Errors
    ///
    /// [`NeuronError::Status`] when the call fails.
    pub fn core_count(&self) -> Result<u32> {
        let mut n = 0u32;
        check("nrt_get_total_nc_count", unsafe { (self.api.get_total_nc_count)(&mut n) })?;
        Ok(n)
    }
}

/// Whether a tensor of a model is an input or an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorUsage {
    /// Read by the program: bound in the input set of `nrt_execute` (`usage` 0).
    Input,
    /// Written by the program: bound in the output set (`usage` 1).
    Output,
}

/// A model's tensor as `nrt_get_model_tensor_info` reports it. `dtype_code` is a hint only (its
/// numbering changed between SDK versions): callers validate by byte size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The name the tensor must be bound under in a tensor set (at most 255 bytes).
    pub name: String,
    /// Whether the program reads or writes it.
    pub usage: TensorUsage,
    /// Its size in bytes: the size to allocate, and what a caller should check.
    pub size: usize,
    /// The runtime's `nrt_dtype_t`: SDK 2.28 uses hardware codes (`FLOAT32` = 0xA), earlier
    /// headers a sequence (`FLOAT32` = 1), so do not rely on it.
    pub dtype_code: u32,
    /// Its dimensions, outermost first (empty for a scalar).
    pub shape: Vec<u32>,
}

/// A NEFF program loaded on a range of NeuronCores.
pub struct Model {
    rt: Arc<Runtime>,
    ptr: *mut NrtModel,
}

// SAFETY: the runtime's handles are not tied to the thread that made them.
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

impl Model {
    /// Loads a NEFF (the compiled program's bytes) starting at NeuronCore `start_core` (`None`:
    /// the runtime chooses). The core count argument, deprecated, is passed as -1. The runtime
    /// copies what it keeps, so `neff` may be dropped afterwards.
    ///
    /// # Errors
    ///
    /// [`NeuronError::Status`] from `nrt_load`, notably `NRT_UNSUPPORTED_NEFF_VERSION` (compiled
    /// for another runtime version) and `NRT_LOAD_NOT_ENOUGH_NC` (fewer free cores than the
    /// program needs); [`NeuronError::Invalid`] if the runtime returns no model.
    pub fn load(rt: &Arc<Runtime>, neff: &[u8], start_core: Option<u32>) -> Result<Model> {
        let start = start_core.map_or(-1, |c| c as i32);
        let mut ptr = std::ptr::null_mut();
        // SAFETY: the bytes outlive the call; the runtime copies what it keeps.
        check("nrt_load", unsafe { (rt.api.load)(neff.as_ptr().cast(), neff.len(), start, -1, &mut ptr) })?;
        if ptr.is_null() {
            return Err(NeuronError::Invalid("nrt_load succeeded but returned no model".into()));
        }
        Ok(Model { rt: rt.clone(), ptr })
    }

    /// The model's inputs and outputs, in the order the runtime lists them.
    ///
    /// # Errors
    ///
    /// [`NeuronError::Status`] from `nrt_get_model_tensor_info`; [`NeuronError::Invalid`] for a
    /// missing array or a usage other than input or output.
    pub fn tensor_info(&self) -> Result<Vec<TensorInfo>> {
        let mut array: *mut NrtTensorInfoArray = std::ptr::null_mut();
        check("nrt_get_model_tensor_info", unsafe { (self.rt.api.get_model_tensor_info)(self.ptr, &mut array) })?;
        // Frees the array however this function returns.
        struct Guard<'a>(&'a Api, *mut NrtTensorInfoArray);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                // SAFETY: the array came from nrt_get_model_tensor_info and is freed once.
                unsafe { (self.0.free_model_tensor_info)(self.1) };
            }
        }
        if array.is_null() {
            return Err(NeuronError::Invalid("nrt_get_model_tensor_info returned no array".into()));
        }
        let _guard = Guard(&self.rt.api, array);
        // SAFETY: the runtime filled `tensor_count` infos after the count.
        let infos = unsafe {
            let count = (*array).tensor_count as usize;
            std::slice::from_raw_parts((*array).tensor_array.as_ptr(), count)
        };
        infos
            .iter()
            .map(|i| {
                let usage = match i.usage {
                    ffi::USAGE_INPUT => TensorUsage::Input,
                    ffi::USAGE_OUTPUT => TensorUsage::Output,
                    other => return Err(NeuronError::Invalid(format!("tensor usage {other} is unknown"))),
                };
                let shape = if i.shape.is_null() {
                    vec![]
                } else {
                    // SAFETY: `ndim` dimensions at `shape`, owned by the array.
                    unsafe { std::slice::from_raw_parts(i.shape, i.ndim as usize) }.to_vec()
                };
                Ok(TensorInfo { name: c_string(&i.name), usage, size: i.size, dtype_code: i.dtype, shape })
            })
            .collect()
    }

    /// Runs the program: reads `inputs`, writes `outputs`; returns when the outputs are written.
    /// Each set must hold a tensor of the right size under every name [`Model::tensor_info`]
    /// lists for its usage.
    ///
    /// # Errors
    ///
    /// [`NeuronError::Status`] from `nrt_execute`, for example `NRT_EXEC_BAD_INPUT` or
    /// `NRT_EXEC_COMPLETED_WITH_NUM_ERR` (the program completed but produced NaN or Inf).
    pub fn execute(&self, inputs: &TensorSet, outputs: &mut TensorSet) -> Result<()> {
        check("nrt_execute", unsafe { (self.rt.api.execute)(self.ptr, inputs.ptr, outputs.ptr) })
    }

    /// Runs the program on tensors owned elsewhere: reads `inputs`, writes `outputs`. One tensor
    /// may be in both (an input the program updates in place, such as a KV cache).
    ///
    /// # Errors
    ///
    /// As [`Model::execute`].
    pub fn execute_refs(&self, inputs: &TensorRefs<'_>, outputs: &TensorRefs<'_>) -> Result<()> {
        check("nrt_execute", unsafe { (self.rt.api.execute)(self.ptr, inputs.ptr, outputs.ptr) })
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: loaded by nrt_load, unloaded once.
        unsafe { (self.rt.api.unload)(self.ptr) };
    }
}

/// A tensor in NeuronCore memory.
pub struct Tensor {
    rt: Arc<Runtime>,
    ptr: *mut NrtTensor,
    size: usize,
    name: String,
}

// SAFETY: as for `Model`.
unsafe impl Send for Tensor {}

impl Tensor {
    /// Allocates `size` bytes of device memory (the device placement, 0) for
    /// NeuronCore `core`, labelled `name`; [`TensorSet::add`] binds it under that name. The
    /// contents are whatever the runtime gives: write before a program reads it.
    ///
    /// # Errors
    ///
    /// [`NeuronError::Invalid`] for a name with a NUL byte or a tensor of another size than asked;
    /// [`NeuronError::Status`] from `nrt_tensor_allocate` (e.g. `NRT_RESOURCE`).
    pub fn allocate(rt: &Arc<Runtime>, core: u32, size: usize, name: &str) -> Result<Tensor> {
        let c_name = CString::new(name).map_err(|_| NeuronError::Invalid(format!("tensor name {name:?} has a NUL")))?;
        let mut ptr = std::ptr::null_mut();
        check("nrt_tensor_allocate", unsafe {
            (rt.api.tensor_allocate)(ffi::PLACEMENT_DEVICE, core as i32, size, c_name.as_ptr(), &mut ptr)
        })?;
        if ptr.is_null() {
            return Err(NeuronError::Invalid("nrt_tensor_allocate succeeded but returned no tensor".into()));
        }
        let tensor = Tensor { rt: rt.clone(), ptr, size, name: name.into() };
        // SAFETY: a live tensor.
        let actual = unsafe { (rt.api.tensor_get_size)(ptr) };
        if actual != size {
            return Err(NeuronError::Invalid(format!("tensor `{name}` has {actual} bytes, {size} were asked for")));
        }
        Ok(tensor)
    }

    /// Its size in bytes, as allocated.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The name it was allocated with: the name [`TensorSet::add`] binds it under.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(NeuronError::Invalid(format!(
                "{len} bytes at offset {offset} do not fit tensor `{}` of {} bytes",
                self.name, self.size
            )));
        }
        Ok(())
    }

    /// Copies `bytes` from the host into the tensor, starting `offset` bytes in.
    ///
    /// # Errors
    ///
    /// [`NeuronError::Invalid`] when the range does not fit in the tensor (checked before the
    /// call); [`NeuronError::Status`] from `nrt_tensor_write`.
    pub fn write(&mut self, bytes: &[u8], offset: usize) -> Result<()> {
        self.check_range(offset, bytes.len())?;
        check("nrt_tensor_write", unsafe {
            (self.rt.api.tensor_write)(self.ptr, bytes.as_ptr().cast(), offset, bytes.len())
        })
    }

    /// Copies `buf.len()` bytes of the tensor, starting `offset` bytes in, into `buf`.
    ///
    /// # Errors
    ///
    /// As [`Tensor::write`] (`nrt_tensor_read`).
    pub fn read(&self, buf: &mut [u8], offset: usize) -> Result<()> {
        self.check_range(offset, buf.len())?;
        check("nrt_tensor_read", unsafe {
            (self.rt.api.tensor_read)(self.ptr, buf.as_mut_ptr().cast(), offset, buf.len())
        })
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: allocated by nrt_tensor_allocate, freed once.
        unsafe { (self.rt.api.tensor_free)(&mut self.ptr) };
    }
}

/// Named tensors passed to `nrt_execute`. The set owns its tensors (the runtime's set only refers to
/// them), so they live exactly as long as the set.
pub struct TensorSet {
    rt: Arc<Runtime>,
    ptr: *mut NrtTensorSet,
    tensors: Vec<Tensor>,
}

// SAFETY: as for `Model`.
unsafe impl Send for TensorSet {}

impl TensorSet {
    /// An empty set (`nrt_allocate_tensor_set`).
    ///
    /// # Errors
    ///
    /// [`NeuronError::Status`] when the runtime refuses.
    pub fn new(rt: &Arc<Runtime>) -> Result<TensorSet> {
        let mut ptr = std::ptr::null_mut();
        check("nrt_allocate_tensor_set", unsafe { (rt.api.allocate_tensor_set)(&mut ptr) })?;
        Ok(TensorSet { rt: rt.clone(), ptr, tensors: Vec::new() })
    }

    /// Adds `tensor` under its own name, taking ownership of it.
    ///
    /// # Errors
    ///
    /// [`NeuronError::Status`] from `nrt_add_tensor_to_tensor_set`; the tensor is then dropped.
    pub fn add(&mut self, tensor: Tensor) -> Result<()> {
        let name = CString::new(tensor.name.as_str()).expect("checked at allocation");
        check("nrt_add_tensor_to_tensor_set", unsafe {
            (self.rt.api.add_tensor_to_tensor_set)(self.ptr, name.as_ptr(), tensor.ptr)
        })?;
        self.tensors.push(tensor);
        Ok(())
    }

    /// The tensor added under `name` (the first, if several share it), e.g. to read an output.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor added under `name`, to write an input before [`Model::execute`].
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.tensors.iter_mut().find(|t| t.name == name)
    }
}

impl Drop for TensorSet {
    fn drop(&mut self) {
        // SAFETY: allocated by nrt_allocate_tensor_set, destroyed once; the tensors are freed after.
        unsafe { (self.rt.api.destroy_tensor_set)(&mut self.ptr) };
    }
}

/// Named tensors passed to `nrt_execute` that the set only refers to: the tensors are owned
/// elsewhere (weights shared by every program on a core, a session's KV caches) and outlive it.
pub struct TensorRefs<'a> {
    rt: Arc<Runtime>,
    ptr: *mut NrtTensorSet,
    _tensors: std::marker::PhantomData<&'a Tensor>,
}

impl<'a> TensorRefs<'a> {
    /// An empty set (`nrt_allocate_tensor_set`).
    ///
    /// # Errors
    ///
    /// [`NeuronError::Status`] when the runtime refuses.
    pub fn new(rt: &Arc<Runtime>) -> Result<TensorRefs<'a>> {
        let mut ptr = std::ptr::null_mut();
        check("nrt_allocate_tensor_set", unsafe { (rt.api.allocate_tensor_set)(&mut ptr) })?;
        Ok(TensorRefs { rt: rt.clone(), ptr, _tensors: std::marker::PhantomData })
    }

    /// Adds `tensor` under `name` (the name the program's tensor info gives it). The same tensor
    /// may be added to several sets, and under several names.
    ///
    /// # Errors
    ///
    /// [`NeuronError::Invalid`] for a name with a NUL byte; [`NeuronError::Status`] from
    /// `nrt_add_tensor_to_tensor_set`.
    pub fn add(&mut self, name: &str, tensor: &'a Tensor) -> Result<()> {
        let name = CString::new(name).map_err(|_| NeuronError::Invalid(format!("tensor name {name:?} has a NUL")))?;
        check("nrt_add_tensor_to_tensor_set", unsafe {
            (self.rt.api.add_tensor_to_tensor_set)(self.ptr, name.as_ptr(), tensor.ptr)
        })
    }
}

impl Drop for TensorRefs<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated by nrt_allocate_tensor_set and destroyed once; the tensors it names are
        // not freed by it.
        unsafe { (self.rt.api.destroy_tensor_set)(&mut self.ptr) };
    }
}
