//! The exported C functions. Every entry point catches panics (a panic must not cross the C ABI)
//! and reports them as NRT_FAILURE.

// The safety contract of every entry point is that of the documented Neuron runtime API it mirrors:
// valid pointers of the documented types, handles from this library.
#![allow(clippy::missing_safety_doc)]

use crate::hlo::{self, HloNeff, HloNeffError};
use crate::neff::{SimNeff, TensorDecl};
use accelrt_core::{reference, DType, HostTensor};
use accelrt_pjrt::LoadedExecutable;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

const SUCCESS: c_int = 0;
const FAILURE: c_int = 1;
const INVALID: c_int = 2;
const INVALID_HANDLE: c_int = 3;
const RESOURCE: c_int = 4;
const UNINITIALIZED: c_int = 13;
const UNSUPPORTED_NEFF_VERSION: c_int = 10;
const CLOSED: c_int = 14;
const EXEC_BAD_INPUT: c_int = 1002;
const EXEC_COMPLETED_WITH_NUM_ERR: c_int = 1003;

/// NeuronCores the simulator pretends to have (`NRT_SIM_CORES` overrides).
fn cores() -> u32 {
    std::env::var("NRT_SIM_CORES").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

#[derive(PartialEq)]
enum State {
    Uninitialised,
    Open,
    Closed,
}

struct Sim {
    state: State,
    /// (call name, status, remaining times)
    failures: Vec<(String, c_int, u32)>,
}

static SIM: Mutex<Sim> = Mutex::new(Sim { state: State::Uninitialised, failures: Vec::new() });
static LIVE_MODELS: AtomicI64 = AtomicI64::new(0);
static LIVE_TENSORS: AtomicI64 = AtomicI64::new(0);
static LIVE_SETS: AtomicI64 = AtomicI64::new(0);
static LIVE_INFOS: AtomicI64 = AtomicI64::new(0);

fn sim() -> std::sync::MutexGuard<'static, Sim> {
    SIM.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs an entry point: injected failure first, then the body; panics become NRT_FAILURE.
fn guarded(call: &str, needs_init: bool, body: impl FnOnce() -> c_int) -> c_int {
    {
        let mut s = sim();
        if needs_init {
            match s.state {
                State::Open => {}
                State::Uninitialised => return UNINITIALIZED,
                State::Closed => return CLOSED,
            }
        }
        if let Some(i) = s.failures.iter().position(|(c, ..)| c == call) {
            let status = s.failures[i].1;
            s.failures[i].2 -= 1;
            if s.failures[i].2 == 0 {
                s.failures.remove(i);
            }
            return status;
        }
    }
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(FAILURE)
}

/// Test hook: the next `times` calls of `call` (e.g. "nrt_execute") return `status` and do nothing.
/// A new injection for the same call replaces the old one. The calls that close or free
/// (`nrt_close`, `nrt_unload`, `nrt_free_model_tensor_info`, `nrt_tensor_free`,
/// `nrt_destroy_tensor_set`) and `nrt_tensor_get_size` cannot be made to fail. A call that needs
/// an open runtime, made before `nrt_init` or after `nrt_close`, still returns
/// `NRT_UNINITIALIZED` / `NRT_CLOSED` and leaves the injection in place. Returns `NRT_INVALID`
/// for a null `call` or `times` of 0.
#[no_mangle]
pub unsafe extern "C" fn nrt_sim_inject_failure(call: *const c_char, status: c_int, times: u32) -> c_int {
    if call.is_null() || times == 0 {
        return INVALID;
    }
    let name = CStr::from_ptr(call).to_string_lossy().into_owned();
    let mut s = sim();
    s.failures.retain(|(c, ..)| *c != name);
    s.failures.push((name, status, times));
    SUCCESS
}

/// Test hook: live models, tensors, tensor sets and tensor-info arrays, written in that order as
/// 4 `i64`s to `out` (which must have room for them; null is ignored). Counts are process-wide
/// and never reset, so a test compares them before and after.
#[no_mangle]
pub unsafe extern "C" fn nrt_sim_live_objects(out: *mut i64) {
    if out.is_null() {
        return;
    }
    for (i, c) in [&LIVE_MODELS, &LIVE_TENSORS, &LIVE_SETS, &LIVE_INFOS].iter().enumerate() {
        *out.add(i) = c.load(Ordering::SeqCst);
    }
}

/// `nrt_init`: opens the simulated runtime. `framework` must be a valid framework (≥ 1; a
/// standalone program passes `NO_FW` = 1); the version strings are ignored. `NRT_INVALID` when
/// already open or for framework 0, `NRT_CLOSED` after `nrt_close`.
#[no_mangle]
pub unsafe extern "C" fn nrt_init(framework: c_int, _fw_version: *const c_char, _fal_version: *const c_char) -> c_int {
    guarded("nrt_init", false, || {
        let mut s = sim();
        match s.state {
            State::Closed => CLOSED,
            State::Open => INVALID,
            State::Uninitialised if framework < 1 => INVALID,
            State::Uninitialised => {
                s.state = State::Open;
                SUCCESS
            }
        }
    })
}

/// `nrt_close`: closes the runtime for the rest of the process. Live handles are not freed (the
/// live-object counters show them).
#[no_mangle]
pub unsafe extern "C" fn nrt_close() {
    let mut s = sim();
    if s.state == State::Open {
        s.state = State::Closed;
    }
}

/// `nrt_version_t`, laid out as documented: four `u64` version numbers, then `rt_detail`
/// (128 bytes) and `git_hash` (64 bytes), both NUL-terminated.
#[repr(C)]
pub struct Version {
    rt_major: u64,
    rt_minor: u64,
    rt_patch: u64,
    rt_maintenance: u64,
    rt_detail: [c_char; 128],
    git_hash: [c_char; 64],
}

fn copy_str(dst: &mut [c_char], s: &str) {
    for (d, b) in dst.iter_mut().zip(s.bytes().chain(std::iter::once(0))) {
        *d = b as c_char;
    }
}

/// `nrt_get_version`: fills `ver` with version 2.0.0.0, `rt_detail` saying this is the test
/// double and `git_hash` `0000000`. Works before `nrt_init`. `NRT_INVALID` for a null `ver` or a
/// `size` below the struct's.
#[no_mangle]
pub unsafe extern "C" fn nrt_get_version(ver: *mut Version, size: usize) -> c_int {
    guarded("nrt_get_version", false, || {
        if ver.is_null() || size < std::mem::size_of::<Version>() {
            return INVALID;
        }
        let v = &mut *ver;
        (v.rt_major, v.rt_minor, v.rt_patch, v.rt_maintenance) = (2, 0, 0, 0);
        copy_str(&mut v.rt_detail, "accelrt nrt simulator (TEST DOUBLE, not the Neuron runtime)");
        copy_str(&mut v.git_hash, "0000000");
        SUCCESS
    })
}

/// `nrt_get_total_nc_count`: the simulated core count, `$NRT_SIM_CORES` (default 2). Works
/// before `nrt_init`.
#[no_mangle]
pub unsafe extern "C" fn nrt_get_total_nc_count(count: *mut u32) -> c_int {
    guarded("nrt_get_total_nc_count", false, || {
        if count.is_null() {
            return INVALID;
        }
        *count = cores();
        SUCCESS
    })
}

/// A loaded model: a graph NEFF run by the reference evaluator, or an HLO NEFF compiled for XLA CPU.
pub struct Model {
    program: Program,
}

enum Program {
    Graph(SimNeff),
    Hlo { neff: HloNeff, exe: LoadedExecutable },
}

impl Model {
    fn inputs(&self) -> &[TensorDecl] {
        match &self.program {
            Program::Graph(n) => &n.inputs,
            Program::Hlo { neff, .. } => &neff.header.inputs,
        }
    }

    fn outputs(&self) -> &[TensorDecl] {
        match &self.program {
            Program::Graph(n) => &n.outputs,
            Program::Hlo { neff, .. } => &neff.header.outputs,
        }
    }
}

/// Prints an error the way the runtime logs one (the runtime's log, not its return value, is
/// where a real libnrt says *why* a call failed).
fn log_error(call: &str, message: &str) {
    eprintln!("ERROR  NRT:{call}  [accelrt nrt simulator] {message}");
}

/// Parses and compiles a NEFF of either kind; Err is the status and the logged reason.
fn load_program(data: &[u8]) -> Result<Program, (c_int, String)> {
    if HloNeff::is_hlo_neff(data) {
        let neff = HloNeff::parse(data).map_err(|e| match e {
            HloNeffError::UnsupportedVersion { .. } => (UNSUPPORTED_NEFF_VERSION, e.to_string()),
            e => (INVALID, e.to_string()),
        })?;
        // A NEFF that parses but whose program XLA refuses is the runtime failing, not the file.
        let exe = neff.load().map_err(|e| (FAILURE, e.to_string()))?;
        return Ok(Program::Hlo { neff, exe });
    }
    SimNeff::parse(data).map(Program::Graph).map_err(|e| (INVALID, e))
}

/// `nrt_load`: parses a graph or HLO simulator NEFF (an HLO NEFF is compiled with XLA CPU here)
/// and returns the model. `start_nc` is only checked against the core count (-1 lets the runtime
/// choose); `_nc_count` is ignored. `NRT_INVALID` for anything that is not a simulator NEFF (real
/// NEFFs included), `NRT_UNSUPPORTED_NEFF_VERSION` for another HLO NEFF format,
/// `NRT_FAILURE` when XLA refuses the HLO, `NRT_LOAD_NOT_ENOUGH_NC` (9) for a start core past
/// the count.
#[no_mangle]
pub unsafe extern "C" fn nrt_load(
    bytes: *const c_void,
    size: usize,
    start_nc: i32,
    _nc_count: i32,
    model: *mut *mut Model,
) -> c_int {
    guarded("nrt_load", true, || {
        if bytes.is_null() || model.is_null() {
            return INVALID;
        }
        if start_nc >= cores() as i32 {
            return 9; // NRT_LOAD_NOT_ENOUGH_NC
        }
        let data = std::slice::from_raw_parts(bytes as *const u8, size);
        match load_program(data) {
            Ok(program) => {
                LIVE_MODELS.fetch_add(1, Ordering::SeqCst);
                *model = Box::into_raw(Box::new(Model { program }));
                SUCCESS
            }
            Err((status, reason)) => {
                log_error("nrt_load", &reason);
                status
            }
        }
    })
}

/// `nrt_unload`: frees a model from [`nrt_load`]. `NRT_INVALID_HANDLE` for null.
#[no_mangle]
pub unsafe extern "C" fn nrt_unload(model: *mut Model) -> c_int {
    if model.is_null() {
        return INVALID_HANDLE;
    }
    drop(Box::from_raw(model));
    LIVE_MODELS.fetch_sub(1, Ordering::SeqCst);
    SUCCESS
}

/// `nrt_tensor_info_t`, laid out as documented (296 bytes on x86-64): NUL-terminated `name`,
/// `usage` (0 input, 1 output), `size` in bytes, `dtype` code, and `ndim` dimensions at `shape`.
#[repr(C)]
pub struct TensorInfo {
    name: [c_char; 256],
    usage: u32,
    size: usize,
    dtype: u32,
    shape: *mut u32,
    ndim: u32,
}

/// `nrt_tensor_info_array_t`: a `u64` count followed by that many [`TensorInfo`]s.
#[repr(C)]
pub struct TensorInfoArray {
    count: u64,
    infos: [TensorInfo; 0],
}

/// SDK 2.28's hardware dtype codes (a hint only; callers check sizes).
fn dtype_code(d: accelrt_core::DType) -> u32 {
    use accelrt_core::DType::*;
    match d {
        F32 => 0xA,
        F16 => 0x7,
        BF16 => 0x6,
        I64 => 0xC,
        U32 => 0x9,
        U8 => 0x3,
        Quant(_) => 0,
    }
}

/// `nrt_get_model_tensor_info`: every input (in the NEFF's order), then every output, with
/// SDK 2.28's hardware dtype codes (0 for a block-quantised type). Free the array with
/// [`nrt_free_model_tensor_info`].
#[no_mangle]
pub unsafe extern "C" fn nrt_get_model_tensor_info(model: *mut Model, info: *mut *mut TensorInfoArray) -> c_int {
    guarded("nrt_get_model_tensor_info", true, || {
        if model.is_null() || info.is_null() {
            return INVALID;
        }
        let m = &*model;
        let decls: Vec<(u32, &TensorDecl)> =
            m.inputs().iter().map(|d| (0, d)).chain(m.outputs().iter().map(|d| (1, d))).collect();
        let layout = array_layout(decls.len());
        let array = std::alloc::alloc_zeroed(layout) as *mut TensorInfoArray;
        (*array).count = decls.len() as u64;
        let infos = (*array).infos.as_mut_ptr();
        for (i, (usage, d)) in decls.iter().enumerate() {
            let shape: Box<[u32]> = d.shape.iter().map(|&s| s as u32).collect();
            let ndim = shape.len() as u32;
            let entry = &mut *infos.add(i);
            copy_str(&mut entry.name, &d.name);
            entry.usage = *usage;
            entry.size = d.bytes();
            entry.dtype = dtype_code(d.dtype);
            entry.shape = Box::into_raw(shape) as *mut u32;
            entry.ndim = ndim;
        }
        LIVE_INFOS.fetch_add(1, Ordering::SeqCst);
        *info = array;
        SUCCESS
    })
}

fn array_layout(n: usize) -> std::alloc::Layout {
    let size = std::mem::size_of::<u64>() + n * std::mem::size_of::<TensorInfo>();
    std::alloc::Layout::from_size_align(size.max(8), 8).expect("valid layout")
}

/// `nrt_free_model_tensor_info`: frees an array from [`nrt_get_model_tensor_info`] and the
/// shapes it points to. `NRT_INVALID` for null.
#[no_mangle]
pub unsafe extern "C" fn nrt_free_model_tensor_info(info: *mut TensorInfoArray) -> c_int {
    if info.is_null() {
        return INVALID;
    }
    let n = (*info).count as usize;
    for i in 0..n {
        let entry = &*(*info).infos.as_ptr().add(i);
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(entry.shape, entry.ndim as usize)));
    }
    std::alloc::dealloc(info as *mut u8, array_layout(n));
    LIVE_INFOS.fetch_sub(1, Ordering::SeqCst);
    SUCCESS
}

/// A simulated device tensor: host bytes, zeroed at allocation.
pub struct Tensor {
    data: Vec<u8>,
}

/// A simulated tensor set: tensors by name, referred to, not owned (freeing the set frees none of
/// them). Adding a name again replaces the tensor bound under it.
pub struct TensorSet {
    tensors: Vec<(String, *mut Tensor)>,
}

/// `nrt_tensor_allocate`: `size` zeroed bytes. `placement` must be 0 (device), else
/// `NRT_INVALID`; the core and the name are ignored. `NRT_RESOURCE` when the host cannot
/// reserve `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn nrt_tensor_allocate(
    placement: c_int,
    _vnc: c_int,
    size: usize,
    name: *const c_char,
    tensor: *mut *mut Tensor,
) -> c_int {
    guarded("nrt_tensor_allocate", true, || {
        if tensor.is_null() || placement != 0 {
            return INVALID;
        }
        // The name only labels the tensor in the runtime's logs; sets bind tensors by their own names.
        let _ = name;
        // Device memory is finite: a size the host cannot hold is NRT_RESOURCE, as the runtime
        // reports an allocation beyond the device's memory, not an abort of the process.
        let mut data = Vec::new();
        if data.try_reserve_exact(size).is_err() {
            return RESOURCE;
        }
        data.resize(size, 0);
        LIVE_TENSORS.fetch_add(1, Ordering::SeqCst);
        *tensor = Box::into_raw(Box::new(Tensor { data }));
        SUCCESS
    })
}

/// `nrt_tensor_free`: frees the tensor and sets `*tensor` to null; a null pointer is ignored. Sets
/// that still refer to it are not told.
#[no_mangle]
pub unsafe extern "C" fn nrt_tensor_free(tensor: *mut *mut Tensor) {
    if tensor.is_null() || (*tensor).is_null() {
        return;
    }
    drop(Box::from_raw(*tensor));
    *tensor = std::ptr::null_mut();
    LIVE_TENSORS.fetch_sub(1, Ordering::SeqCst);
}

/// `nrt_tensor_get_size`: the tensor's size in bytes (0 for null).
#[no_mangle]
pub unsafe extern "C" fn nrt_tensor_get_size(tensor: *const Tensor) -> usize {
    if tensor.is_null() {
        0
    } else {
        (*tensor).data.len()
    }
}

/// `nrt_tensor_write`: copies `size` bytes from `buf` to the tensor at byte `offset`.
/// `NRT_INVALID` for a null pointer or a range past the tensor's end.
#[no_mangle]
pub unsafe extern "C" fn nrt_tensor_write(
    tensor: *mut Tensor,
    buf: *const c_void,
    offset: usize,
    size: usize,
) -> c_int {
    guarded("nrt_tensor_write", true, || {
        if tensor.is_null() || buf.is_null() {
            return INVALID;
        }
        let t = &mut *tensor;
        match offset.checked_add(size).filter(|&end| end <= t.data.len()) {
            Some(end) => {
                t.data[offset..end].copy_from_slice(std::slice::from_raw_parts(buf as *const u8, size));
                SUCCESS
            }
            None => INVALID,
        }
    })
}

/// `nrt_tensor_read`: copies `size` bytes of the tensor from byte `offset` into `buf`.
/// `NRT_INVALID` for a null pointer or a range past the tensor's end.
#[no_mangle]
pub unsafe extern "C" fn nrt_tensor_read(tensor: *const Tensor, buf: *mut c_void, offset: usize, size: usize) -> c_int {
    guarded("nrt_tensor_read", true, || {
        if tensor.is_null() || buf.is_null() {
            return INVALID;
        }
        let t = &*tensor;
        match offset.checked_add(size).filter(|&end| end <= t.data.len()) {
            Some(end) => {
                std::slice::from_raw_parts_mut(buf as *mut u8, size).copy_from_slice(&t.data[offset..end]);
                SUCCESS
            }
            None => INVALID,
        }
    })
}

/// `nrt_allocate_tensor_set`: an empty set.
#[no_mangle]
pub unsafe extern "C" fn nrt_allocate_tensor_set(set: *mut *mut TensorSet) -> c_int {
    guarded("nrt_allocate_tensor_set", true, || {
        if set.is_null() {
            return INVALID;
        }
        LIVE_SETS.fetch_add(1, Ordering::SeqCst);
        *set = Box::into_raw(Box::new(TensorSet { tensors: Vec::new() }));
        SUCCESS
    })
}

/// `nrt_destroy_tensor_set`: frees the set (not its tensors) and sets `*set` to null; a null
/// pointer is ignored.
#[no_mangle]
pub unsafe extern "C" fn nrt_destroy_tensor_set(set: *mut *mut TensorSet) {
    if set.is_null() || (*set).is_null() {
        return;
    }
    drop(Box::from_raw(*set));
    *set = std::ptr::null_mut();
    LIVE_SETS.fetch_sub(1, Ordering::SeqCst);
}

/// `nrt_add_tensor_to_tensor_set`: binds `tensor` under `name`, replacing any tensor bound under
/// that name. The set keeps the pointer: the tensor must outlive the set's use.
#[no_mangle]
pub unsafe extern "C" fn nrt_add_tensor_to_tensor_set(
    set: *mut TensorSet,
    name: *const c_char,
    tensor: *mut Tensor,
) -> c_int {
    guarded("nrt_add_tensor_to_tensor_set", true, || {
        if set.is_null() || name.is_null() || tensor.is_null() {
            return INVALID;
        }
        let name = CStr::from_ptr(name).to_string_lossy().into_owned();
        let s = &mut *set;
        s.tensors.retain(|(n, _)| *n != name);
        s.tensors.push((name, tensor));
        SUCCESS
    })
}

/// `nrt_execute`: runs the model synchronously, reading each input tensor by its NEFF name from
/// `inputs` and writing each output into `outputs`. A graph NEFF is evaluated by the reference
/// evaluator (in f64, rounded to the outputs' dtypes); an HLO NEFF runs on XLA CPU. Missing or
/// wrongly sized inputs are `NRT_EXEC_BAD_INPUT`, outputs `NRT_INVALID`; the evaluator or XLA
/// failing is `NRT_FAILURE`; NaN or infinity in an output is `NRT_EXEC_COMPLETED_WITH_NUM_ERR`
/// with the outputs written. Every other failure writes no output (every output is checked
/// first), and says why on stderr.
#[no_mangle]
pub unsafe extern "C" fn nrt_execute(model: *mut Model, inputs: *const TensorSet, outputs: *mut TensorSet) -> c_int {
    guarded("nrt_execute", true, || {
        if model.is_null() || inputs.is_null() || outputs.is_null() {
            log_error("nrt_execute", "a null model or tensor set");
            return INVALID;
        }
        match &(*model).program {
            Program::Graph(neff) => execute_graph(neff, &*inputs, &*outputs),
            Program::Hlo { neff, exe } => execute_hlo(neff, exe, &*inputs, &*outputs),
        }
    })
}

/// Runs a graph NEFF in the reference evaluator. As for HLO NEFFs, the output set is checked
/// before anything runs and every result is checked before any output is written, so a failed
/// run writes nothing.
unsafe fn execute_graph(neff: &SimNeff, inputs: &TensorSet, outputs: &TensorSet) -> c_int {
    let targets = match output_targets(&neff.outputs, outputs) {
        Ok(t) => t,
        Err(status) => return status,
    };
    let mut host = Vec::with_capacity(neff.inputs.len());
    for decl in &neff.inputs {
        let data = match input_bytes(decl, inputs) {
            Ok(d) => d,
            Err(status) => return status,
        };
        match HostTensor::from_le_bytes(decl.dtype, decl.shape.clone(), data) {
            Ok(h) => host.push((decl.name.clone(), h)),
            Err(e) => {
                log_error("nrt_execute", &format!("{}: {e}", decl.name));
                return EXEC_BAD_INPUT;
            }
        }
    }
    let feed: Vec<(&str, &HostTensor)> = host.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let result = match reference::evaluate(&neff.graph, neff, &feed) {
        Ok(r) => r,
        Err(e) => {
            log_error("nrt_execute", &e.to_string());
            return FAILURE;
        }
    };
    let mut values = Vec::with_capacity(neff.outputs.len());
    for decl in &neff.outputs {
        let Some(value) = result.get(&decl.name) else {
            log_error("nrt_execute", &format!("the program computed no {}", decl.name));
            return FAILURE;
        };
        let bytes = value.to_le_bytes();
        if bytes.len() != decl.bytes() {
            log_error(
                "nrt_execute",
                &format!("{}: the program computed {} bytes for {}", decl.name, bytes.len(), decl.bytes()),
            );
            return FAILURE;
        }
        values.push((bytes, value.to_f64_vec().iter().any(|v| !v.is_finite())));
    }
    let mut non_finite = false;
    for (t, (bytes, bad)) in targets.into_iter().zip(values) {
        non_finite |= bad;
        (*t).data.copy_from_slice(&bytes);
    }
    if non_finite {
        EXEC_COMPLETED_WITH_NUM_ERR
    } else {
        SUCCESS
    }
}

fn find(set: &TensorSet, name: &str) -> Option<*mut Tensor> {
    set.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
}

/// The output tensors `decls` name, each present in `outputs` with the declared size, in
/// `decls`' order; else the reason is logged and the status is `INVALID`.
unsafe fn output_targets(decls: &[TensorDecl], outputs: &TensorSet) -> Result<Vec<*mut Tensor>, c_int> {
    let mut targets = Vec::with_capacity(decls.len());
    for decl in decls {
        match find(outputs, &decl.name) {
            Some(t) if (*t).data.len() == decl.bytes() => targets.push(t),
            Some(t) => {
                let message = format!("{} is {} bytes, the model writes {}", decl.name, (*t).data.len(), decl.bytes());
                log_error("nrt_execute", &message);
                return Err(INVALID);
            }
            None => {
                log_error("nrt_execute", &format!("the output set has no tensor {}", decl.name));
                return Err(INVALID);
            }
        }
    }
    Ok(targets)
}

/// The bytes of the input `decl` names, present in `inputs` with the declared size; else the
/// reason is logged and the status is `EXEC_BAD_INPUT`.
unsafe fn input_bytes<'a>(decl: &TensorDecl, inputs: &'a TensorSet) -> Result<&'a [u8], c_int> {
    let Some(t) = find(inputs, &decl.name) else {
        log_error("nrt_execute", &format!("the input set has no tensor {}", decl.name));
        return Err(EXEC_BAD_INPUT);
    };
    let data = &(*t).data;
    if data.len() != decl.bytes() {
        log_error("nrt_execute", &format!("{} is {} bytes, the model reads {}", decl.name, data.len(), decl.bytes()));
        return Err(EXEC_BAD_INPUT);
    }
    Ok(data)
}

/// Runs an HLO NEFF on XLA CPU. One nrt tensor may be bound both as `input{i}` and `output{j}`
/// (how a KV cache stays on the device): every input is copied into a PJRT buffer before the run
/// and no output is written until the run has finished and every output has been checked, so the
/// shared tensor is read whole as the old value and then overwritten whole with the new one. No
/// reference to a tensor is held across that boundary (they are raw pointers, not locked objects).
unsafe fn execute_hlo(neff: &HloNeff, exe: &LoadedExecutable, inputs: &TensorSet, outputs: &TensorSet) -> c_int {
    // The output set is checked first: a bad one fails before anything runs.
    let targets = match output_targets(&neff.header.outputs, outputs) {
        Ok(t) => t,
        Err(status) => return status,
    };
    let client = match hlo::client() {
        Ok(c) => c,
        Err(e) => {
            log_error("nrt_execute", &e.to_string());
            return FAILURE;
        }
    };
    let mut buffers = Vec::with_capacity(neff.header.inputs.len());
    for decl in &neff.header.inputs {
        let data = match input_bytes(decl, inputs) {
            Ok(d) => d,
            Err(status) => return status,
        };
        let element = hlo::element_type(decl.dtype).expect("dtypes are checked at load");
        let dims: Vec<i64> = decl.shape.iter().map(|&d| d as i64).collect();
        match client.buffer_from_bytes(element, data, &dims, None) {
            Ok(b) => buffers.push(b),
            Err(e) => {
                log_error("nrt_execute", &format!("{}: {e}", decl.name));
                return FAILURE;
            }
        }
    }
    let refs: Vec<&accelrt_pjrt::Buffer> = buffers.iter().collect();
    let results = match exe.execute(&refs) {
        Ok(r) => r,
        Err(e) => {
            log_error("nrt_execute", &e.to_string());
            return FAILURE;
        }
    };
    let mut values = Vec::with_capacity(results.len());
    for (decl, result) in neff.header.outputs.iter().zip(&results) {
        match result.to_bytes() {
            Ok(bytes) if bytes.len() == decl.bytes() => values.push(bytes),
            Ok(bytes) => {
                log_error(
                    "nrt_execute",
                    &format!("{}: XLA returned {} bytes for {}", decl.name, bytes.len(), decl.bytes()),
                );
                return FAILURE;
            }
            Err(e) => {
                log_error("nrt_execute", &format!("{}: {e}", decl.name));
                return FAILURE;
            }
        }
    }
    if values.len() != targets.len() {
        log_error("nrt_execute", &format!("XLA returned {} results for {} outputs", values.len(), targets.len()));
        return FAILURE;
    }
    let mut non_finite = false;
    for ((decl, t), bytes) in neff.header.outputs.iter().zip(targets).zip(values) {
        non_finite |= has_non_finite(decl.dtype, &bytes);
        (*t).data.copy_from_slice(&bytes);
    }
    if non_finite {
        EXEC_COMPLETED_WITH_NUM_ERR
    } else {
        SUCCESS
    }
}

/// True when a float tensor's little-endian bytes hold a NaN or an infinity (all exponent bits set).
fn has_non_finite(dtype: DType, bytes: &[u8]) -> bool {
    match dtype {
        DType::F32 => bytes.chunks_exact(4).any(|c| !f32::from_le_bytes(c.try_into().expect("4 bytes")).is_finite()),
        DType::F16 => bytes.chunks_exact(2).any(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00),
        DType::BF16 => bytes.chunks_exact(2).any(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7f80 == 0x7f80),
        _ => false,
    }
}
