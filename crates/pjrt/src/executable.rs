//! Compiling programs (`PJRT_Client_Compile`) and running them (`PJRT_LoadedExecutable_Execute`).

use crate::buffer::Buffer;
use crate::client::{Client, ClientInner, Event};
use crate::element::ElementType;
use crate::error::{destroy, PjrtError, Result};
use crate::ffi;
use crate::plugin::{c_str, pjrt_call, Plugin};
use crate::signature::{main_parameters, TensorType};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The form of a program given to [`Client::compile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramFormat {
    /// StableHLO (or MHLO) as MLIR text or bytecode.
    Mlir,
    /// A serialised `xla.HloModuleProto`.
    Hlo,
}

impl ProgramFormat {
    fn name(self) -> &'static str {
        match self {
            ProgramFormat::Mlir => "mlir",
            ProgramFormat::Hlo => "hlo",
        }
    }
}

/// A serialised `xla.CompileOptionsProto`, passed to the plugin as is.
///
/// The empty message is not usable: the XLA CPU plugin then aborts the process (a failed
/// `replica_count > 0` check) instead of returning an error, so the default sets the replica and
/// partition counts explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    bytes: Vec<u8>,
}

impl CompileOptions {
    /// `executable_build_options { num_replicas, num_partitions }` and nothing else: every other
    /// option keeps the plugin's default (the client's default device assignment, no SPMD).
    pub fn new(num_replicas: u32, num_partitions: u32) -> CompileOptions {
        // Protobuf wire format, written by hand for these three fields (xla/pjrt/proto/
        // compile_options.proto): ExecutableBuildOptionsProto.num_replicas = 4 and
        // .num_partitions = 5 (varints) inside CompileOptionsProto.executable_build_options = 3.
        let mut build = vec![4 << 3];
        varint(&mut build, num_replicas.into());
        build.push(5 << 3);
        varint(&mut build, num_partitions.into());
        let mut bytes = vec![(3 << 3) | 2];
        varint(&mut bytes, build.len() as u64);
        bytes.extend_from_slice(&build);
        CompileOptions { bytes }
    }

    /// [`CompileOptions::new`] plus `compile_portable_executable`: the program is compiled for
    /// one device without a fixed assignment, so [`LoadedExecutable::execute_on`] can run it on
    /// any device of the client (how `pjrt:PATH:N` runs on device N).
    pub fn portable(num_replicas: u32, num_partitions: u32) -> CompileOptions {
        let mut options = CompileOptions::new(num_replicas, num_partitions);
        // CompileOptionsProto.compile_portable_executable = 4 (bool, varint).
        options.bytes.extend_from_slice(&[4 << 3, 1]);
        options
    }

    /// Options serialised by the caller (e.g. with XLA's own protobuf definitions). Not checked:
    /// the plugin may abort on options it cannot use (see the type's documentation).
    pub fn from_serialized(bytes: Vec<u8>) -> CompileOptions {
        CompileOptions { bytes }
    }

    /// The serialised bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Default for CompileOptions {
    /// One replica, one partition: the program runs on one device.
    fn default() -> CompileOptions {
        CompileOptions::new(1, 1)
    }
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A compiled program loaded on the client's devices. Keeps its client alive; `Send` and `Sync`
/// (PJRT executables may be run concurrently from several threads).
pub struct LoadedExecutable {
    client: Arc<ClientInner>,
    ptr: *mut ffi::PJRT_LoadedExecutable,
    name: String,
    fingerprint: Option<String>,
    output_types: Vec<ElementType>,
    output_dims: Option<Vec<Vec<i64>>>,
    parameters: Option<Vec<TensorType>>,
}

// SAFETY: PJRT loaded executables may be executed and freed from any thread by contract.
unsafe impl Send for LoadedExecutable {}
unsafe impl Sync for LoadedExecutable {}

impl Client {
    /// Compiles a StableHLO module given as MLIR text, with the default options.
    pub fn compile_mlir(&self, mlir: &str) -> Result<LoadedExecutable> {
        self.compile(mlir.as_bytes(), ProgramFormat::Mlir, &CompileOptions::default())
    }

    /// Compiles a program for this client's devices. A program the plugin rejects is a
    /// [`PjrtError::Plugin`] carrying the plugin's diagnostic.
    pub fn compile(&self, code: &[u8], format: ProgramFormat, options: &CompileOptions) -> Result<LoadedExecutable> {
        let format = format.name();
        let mut program = ffi::PJRT_Program::new();
        // The plugin only reads `code` when compiling; the C field is not const for other uses.
        program.code = code.as_ptr() as *mut std::ffi::c_char;
        program.code_size = code.len();
        program.format = format.as_ptr().cast();
        program.format_size = format.len();
        let mut args = ffi::PJRT_Client_Compile_Args::new();
        args.client = self.inner.ptr;
        args.program = &program;
        args.compile_options = options.bytes.as_ptr().cast();
        args.compile_options_size = options.bytes.len();
        pjrt_call!(&self.inner.plugin, PJRT_Client_Compile, &mut args)?;
        let parameters = if format == "mlir" { std::str::from_utf8(code).ok().and_then(main_parameters) } else { None };
        self.adopt_executable(args.executable, "PJRT_Client_Compile", parameters)
    }

    /// Loads a program serialised by [`LoadedExecutable::serialize`] with the same plugin build
    /// (`PJRT_Executable_DeserializeAndLoad`). `mlir` is the module text it was compiled from, when
    /// known: `execute` then checks arguments against its `@main` signature, as for a compiled one.
    /// Bytes the plugin cannot read are a [`PjrtError::Plugin`] with its message.
    pub fn load_serialized(&self, bytes: &[u8], mlir: Option<&str>) -> Result<LoadedExecutable> {
        let mut args = ffi::PJRT_Executable_DeserializeAndLoad_Args::new();
        args.client = self.inner.ptr;
        args.serialized_executable = bytes.as_ptr().cast();
        args.serialized_executable_size = bytes.len();
        pjrt_call!(&self.inner.plugin, PJRT_Executable_DeserializeAndLoad, &mut args)?;
        self.adopt_executable(
            args.loaded_executable,
            "PJRT_Executable_DeserializeAndLoad",
            mlir.and_then(main_parameters),
        )
    }

    /// Takes ownership of a loaded executable the plugin returned and reads its metadata.
    fn adopt_executable(
        &self,
        ptr: *mut ffi::PJRT_LoadedExecutable,
        call: &str,
        parameters: Option<Vec<TensorType>>,
    ) -> Result<LoadedExecutable> {
        if ptr.is_null() {
            return Err(PjrtError::Invalid(format!("{call} succeeded but returned no executable")));
        }
        self.inner.counters.executables.fetch_add(1, Ordering::SeqCst);
        let mut exe = LoadedExecutable {
            client: self.inner.clone(),
            ptr,
            name: String::new(),
            fingerprint: None,
            output_types: Vec::new(),
            output_dims: None,
            parameters,
        };
        // On error from here `exe` is dropped, which destroys the loaded executable.
        let (name, fingerprint, output_types, output_dims) = {
            let view = ExecutableView::of(&exe)?;
            let types = view.output_types()?;
            let dims = view.output_dims(types.len());
            (view.name()?, view.fingerprint(), types, dims)
        };
        exe.name = name;
        exe.fingerprint = fingerprint;
        exe.output_types = output_types;
        exe.output_dims = output_dims;
        Ok(exe)
    }
}

impl LoadedExecutable {
    /// The program's name (the module's `sym_name`, or the plugin's choice).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's fingerprint of the compiled program, where the plugin provides one.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// Outputs per run (`PJRT_Executable_NumOutputs`).
    pub fn num_outputs(&self) -> usize {
        self.output_types.len()
    }

    /// Each output's element type (`PJRT_Executable_OutputElementTypes`).
    pub fn output_types(&self) -> &[ElementType] {
        &self.output_types
    }

    /// Each output's dimensions (`PJRT_Executable_OutputDimensions`), where the plugin reports them.
    pub fn output_dims(&self) -> Option<&[Vec<i64>]> {
        self.output_dims.as_deref()
    }

    /// The parameters of the module's `@main`, when they could be read from its MLIR text (see
    /// [`TensorType`]); `execute` checks arguments against them.
    pub fn parameters(&self) -> Option<&[TensorType]> {
        self.parameters.as_deref()
    }

    /// Refuses arguments that do not match the parameters, which the plugin may not notice.
    fn check_arguments(&self, args: &[&Buffer]) -> Result<()> {
        let Some(params) = &self.parameters else { return Ok(()) };
        if params.len() != args.len() {
            return Err(PjrtError::ArgumentCount { expected: params.len(), actual: args.len() });
        }
        for (index, (param, arg)) in params.iter().zip(args).enumerate() {
            if param.element_type != arg.element_type() || param.dims != arg.dims() {
                let actual = TensorType { element_type: arg.element_type(), dims: arg.dims().to_vec() };
                return Err(PjrtError::ArgumentMismatch {
                    index,
                    expected: param.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Runs the program on the client's first device with `args` in the order of the module's
    /// parameters. The arguments are not donated (they stay valid); the outputs are new buffers,
    /// returned once the run has finished. Arguments that differ from the parameters in number,
    /// element type or dimensions are refused before the plugin is called where the parameters
    /// are known, and by the plugin's own checks otherwise.
    pub fn execute(&self, args: &[&Buffer]) -> Result<Vec<Buffer>> {
        self.execute_on(args, None)
    }

    /// Like [`execute`](Self::execute), on `device` when given (`execute_device`): the program
    /// must have been compiled with [`CompileOptions::portable`] and the arguments placed on that
    /// device (the plugin refuses otherwise, with its message).
    pub fn execute_on(&self, args: &[&Buffer], device: Option<&crate::Device>) -> Result<Vec<Buffer>> {
        self.execute_with(args.iter().map(|b| Argument::Keep(b)).collect(), device)
    }

    /// Runs the program with some arguments **donated**: a [`Argument::Donate`] buffer is given to
    /// the plugin, which may write an output into its memory instead of allocating a new one
    /// (XLA does so where the module aliases that parameter to an output, `tf.aliasing_output`),
    /// so a KV cache updated in place costs no copy. A donated buffer is consumed whether the run
    /// succeeds or fails. Checks and device as in [`execute_on`](Self::execute_on); nothing is
    /// donated when the arguments are refused before the call.
    pub fn execute_with(&self, args: Vec<Argument<'_>>, device: Option<&crate::Device>) -> Result<Vec<Buffer>> {
        let execute_device = match device {
            Some(d) if !Arc::ptr_eq(&d.client, &self.client) => {
                return Err(PjrtError::Invalid("the device belongs to another PJRT client".into()))
            }
            Some(d) => self.client.devices[d.index].ptr,
            None => std::ptr::null_mut(),
        };
        let refs: Vec<&Buffer> = args.iter().map(Argument::buffer).collect();
        if let Some(foreign) = refs.iter().position(|b| !Arc::ptr_eq(&b.client, &self.client)) {
            return Err(PjrtError::Invalid(format!("argument {foreign} belongs to another PJRT client")));
        }
        self.check_arguments(&refs)?;
        let arg_ptrs: Vec<*mut ffi::PJRT_Buffer> = refs.iter().map(|b| b.ptr).collect();
        let arg_lists = [arg_ptrs.as_ptr()];
        let mut outputs: Vec<*mut ffi::PJRT_Buffer> = vec![std::ptr::null_mut(); self.num_outputs()];
        let output_lists = [outputs.as_mut_ptr()];
        let mut done: [*mut ffi::PJRT_Event; 1] = [std::ptr::null_mut()];
        // Borrowed buffers are non-donatable: `&Buffer` promises the caller they survive.
        let keep: Vec<i64> =
            args.iter().enumerate().filter(|(_, a)| matches!(a, Argument::Keep(_))).map(|(i, _)| i as i64).collect();

        let mut options = ffi::PJRT_ExecuteOptions::new();
        options.non_donatable_input_indices = keep.as_ptr();
        options.num_non_donatable_input_indices = keep.len();
        let mut call = ffi::PJRT_LoadedExecutable_Execute_Args::new();
        call.executable = self.ptr;
        call.options = &mut options;
        call.argument_lists = arg_lists.as_ptr();
        call.num_devices = 1;
        call.num_args = arg_ptrs.len();
        call.output_lists = output_lists.as_ptr();
        call.device_complete_events = done.as_mut_ptr();
        call.execute_device = execute_device;
        // Donated handles are destroyed when `args` goes out of scope, after the run has finished.
        pjrt_call!(&self.client.plugin, PJRT_LoadedExecutable_Execute, &mut call)?;

        // Adopt everything the plugin returned before looking at any of it, so that nothing leaks
        // whichever step below fails.
        let event = Event::adopt(&self.client, done[0]);
        let buffers: Vec<Option<Buffer>> = outputs.iter().map(|&p| Buffer::adopt(&self.client, p).ok()).collect();
        if let Some(event) = event {
            event.wait()?;
        }
        buffers
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                b.ok_or_else(|| PjrtError::Invalid(format!("the PJRT plugin returned no buffer for output {i}")))
            })
            .collect()
    }
}

/// One argument of [`LoadedExecutable::execute_with`].
#[derive(Debug)]
pub enum Argument<'a> {
    /// Passed and left valid (non-donatable).
    Keep(&'a Buffer),
    /// Given to the plugin, which may reuse its memory for an output; consumed by the call.
    Donate(Buffer),
}

impl Argument<'_> {
    fn buffer(&self) -> &Buffer {
        match self {
            Argument::Keep(b) => b,
            Argument::Donate(b) => b,
        }
    }
}

impl LoadedExecutable {
    /// The compiled program as bytes (`PJRT_Executable_Serialize`), for an on-disk cache; loaded
    /// back with [`Client::load_serialized`] by the same plugin build. A plugin that cannot
    /// serialise gives [`PjrtError::Plugin`] (or `Unimplemented`).
    pub fn serialize(&self) -> Result<Vec<u8>> {
        let view = ExecutableView::of(self)?;
        let mut args = ffi::PJRT_Executable_Serialize_Args::new();
        args.executable = view.ptr;
        pjrt_call!(&self.client.plugin, PJRT_Executable_Serialize, &mut args)?;
        let bytes = if args.serialized_bytes.is_null() {
            Vec::new()
        } else {
            // SAFETY: `serialized_bytes_size` bytes backed by `serialized_executable`, copied
            // before it is freed below.
            unsafe { std::slice::from_raw_parts(args.serialized_bytes.cast::<u8>(), args.serialized_bytes_size) }
                .to_vec()
        };
        if let (Some(deleter), false) = (args.serialized_executable_deleter, args.serialized_executable.is_null()) {
            // SAFETY: called once on the object the plugin returned, as the header requires.
            unsafe { deleter(args.serialized_executable) };
        }
        if bytes.is_empty() {
            return Err(PjrtError::Invalid("PJRT_Executable_Serialize returned no bytes".into()));
        }
        Ok(bytes)
    }
}

impl Drop for LoadedExecutable {
    fn drop(&mut self) {
        let api = self.client.plugin.api();
        if let Some(f) = api.PJRT_LoadedExecutable_Destroy {
            let mut args = ffi::PJRT_LoadedExecutable_Destroy_Args::new();
            args.executable = self.ptr;
            // SAFETY: owned here and destroyed once; an error from it is freed.
            unsafe { destroy(api, f(&mut args)) };
        }
        self.client.counters.executables.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for LoadedExecutable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedExecutable")
            .field("name", &self.name)
            .field("output_types", &self.output_types)
            .field("output_dims", &self.output_dims)
            .finish()
    }
}

/// The `PJRT_Executable` behind a loaded executable, for its metadata; destroyed when dropped.
struct ExecutableView<'a> {
    plugin: &'a Plugin,
    client: &'a ClientInner,
    ptr: *mut ffi::PJRT_Executable,
}

impl<'a> ExecutableView<'a> {
    fn of(exe: &'a LoadedExecutable) -> Result<ExecutableView<'a>> {
        let mut args = ffi::PJRT_LoadedExecutable_GetExecutable_Args::new();
        args.loaded_executable = exe.ptr;
        pjrt_call!(&exe.client.plugin, PJRT_LoadedExecutable_GetExecutable, &mut args)?;
        if args.executable.is_null() {
            return Err(PjrtError::Invalid("PJRT_LoadedExecutable_GetExecutable returned null".into()));
        }
        exe.client.counters.executables.fetch_add(1, Ordering::SeqCst);
        Ok(ExecutableView { plugin: &exe.client.plugin, client: &exe.client, ptr: args.executable })
    }

    fn name(&self) -> Result<String> {
        let mut args = ffi::PJRT_Executable_Name_Args::new();
        args.executable = self.ptr;
        pjrt_call!(self.plugin, PJRT_Executable_Name, &mut args)?;
        // SAFETY: owned by the executable, copied here.
        Ok(unsafe { c_str(args.executable_name, args.executable_name_size) })
    }

    /// Optional in the API: plugins may leave it unimplemented.
    fn fingerprint(&self) -> Option<String> {
        let mut args = ffi::PJRT_Executable_Fingerprint_Args::new();
        args.executable = self.ptr;
        pjrt_call!(self.plugin, PJRT_Executable_Fingerprint, &mut args).ok()?;
        // SAFETY: owned by the executable, copied here.
        let text = unsafe { c_str(args.executable_fingerprint, args.executable_fingerprint_size) };
        (!text.is_empty()).then_some(text)
    }

    fn output_types(&self) -> Result<Vec<ElementType>> {
        let mut count = ffi::PJRT_Executable_NumOutputs_Args::new();
        count.executable = self.ptr;
        pjrt_call!(self.plugin, PJRT_Executable_NumOutputs, &mut count)?;
        let mut args = ffi::PJRT_Executable_OutputElementTypes_Args::new();
        args.executable = self.ptr;
        pjrt_call!(self.plugin, PJRT_Executable_OutputElementTypes, &mut args)?;
        if args.num_output_types != count.num_outputs || (args.output_types.is_null() && count.num_outputs > 0) {
            return Err(PjrtError::Invalid(format!(
                "the plugin reports {} outputs but {} output types",
                count.num_outputs, args.num_output_types
            )));
        }
        if count.num_outputs == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: `num_output_types` values owned by the executable, copied here.
        let raw = unsafe { std::slice::from_raw_parts(args.output_types, args.num_output_types) };
        Ok(raw.iter().map(|&t| ElementType::from_raw(t)).collect())
    }

    /// Optional: `None` when the plugin does not report dimensions.
    fn output_dims(&self, num_outputs: usize) -> Option<Vec<Vec<i64>>> {
        let mut args = ffi::PJRT_Executable_OutputDimensions_Args::new();
        args.executable = self.ptr;
        pjrt_call!(self.plugin, PJRT_Executable_OutputDimensions, &mut args).ok()?;
        if args.num_outputs != num_outputs || args.dim_sizes.is_null() {
            return None;
        }
        // SAFETY: `num_outputs` ranks, then their sum of dimensions, owned by the executable.
        let ranks = unsafe { std::slice::from_raw_parts(args.dim_sizes, args.num_outputs) };
        let total: usize = ranks.iter().sum();
        let dims = if total == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(args.dims, total) } };
        let mut out = Vec::with_capacity(ranks.len());
        let mut at = 0;
        for &rank in ranks {
            out.push(dims[at..at + rank].to_vec());
            at += rank;
        }
        Some(out)
    }
}

impl Drop for ExecutableView<'_> {
    fn drop(&mut self) {
        let api = self.plugin.api();
        if let Some(f) = api.PJRT_Executable_Destroy {
            let mut args = ffi::PJRT_Executable_Destroy_Args::new();
            args.executable = self.ptr;
            // SAFETY: owned here and destroyed once; an error from it is freed.
            unsafe { destroy(api, f(&mut args)) };
        }
        self.client.counters.executables.fetch_sub(1, Ordering::SeqCst);
    }
}
