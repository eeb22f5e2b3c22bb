//! A graph prepared on a PJRT device: weights uploaded once, one program per bucket (compiled on
//! first use, cached in memory and on disk), runs padded to their bucket, sessions whose KV caches
//! stay on the device.

use crate::cache::{self, Entry};
use crate::{backend_err, PjrtBackend, BACKEND};
use accelrt_core::padding::{pad, unpad};
use accelrt_core::{
    one_shot_slots, Bindings, DType, Dim, Error, Executable, ExecutableId, Graph, HostTensor, Op, Outputs,
    PrepareOptions, Result, SessionState, SlotLengths, VariableInit, WeightSource, KV_LEN,
};
use accelrt_pjrt::{
    Argument as PjrtArgument, Buffer, Client, CompileOptions, Device, ElementType, LoadedExecutable, ProgramFormat,
};
use accelrt_stablehlo::{
    export, weight_argument, Argument, ArgumentRole, Bucket, ExportError, ExportOptions, Manifest, OutputRole,
};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One bucket's compiled program.
struct Program {
    exe: LoadedExecutable,
    manifest: Manifest,
}

/// A `KvCache` node: where its write comes from and the cache tensor's shape.
struct CacheNode {
    index: usize,
    name: String,
    positions: String,
    slots: String,
    capacity: usize,
    /// Head count and head size, when the graph fixes them (a reshape may derive them instead).
    heads: Option<usize>,
    head_size: Option<usize>,
    dtype: DType,
}

/// A graph variable (`Op::Variable`: training state) and its value before any step.
struct VariableNode {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    /// The weight it starts from (`VariableInit::Weight`), read once at prepare; `None`: zeros.
    initial: Option<HostTensor>,
}

/// The backend's part of a session: one cache buffer per `KvCache` node (graph order), each with
/// the session's slots plus one spare slot that padded batch rows write to, and one buffer per
/// graph variable (graph order), on the device between steps.
struct PjrtState {
    /// Slots including the spare one.
    slots: usize,
    caches: Vec<Buffer>,
    variables: Vec<Buffer>,
}

/// A bucket's program once compiled; its own lock makes concurrent first runs compile it once.
type ProgramSlot = Arc<Mutex<Option<Arc<Program>>>>;

/// A graph prepared by [`PjrtBackend`](crate::PjrtBackend): its weights uploaded once as device
/// buffers, and one program per shape bucket, exported to StableHLO and compiled on first use (or
/// loaded from the compile cache). Sessions keep KV caches and graph variables on the device.
pub struct PjrtExecutable {
    /// Stamped into every session state this executable makes; only it may run with them.
    id: ExecutableId,
    graph: Graph,
    client: Client,
    device: Device,
    portable: bool,
    compile_options: CompileOptions,
    export_options: ExportOptions,
    buckets: crate::BucketPolicy,
    cache_dir: Option<PathBuf>,
    compiler: String,
    /// Weight arguments in the manifest's order, uploaded once.
    weight_args: Vec<Argument>,
    weights: Vec<Buffer>,
    caches: Vec<CacheNode>,
    variables: Vec<VariableNode>,
    /// Inputs that feed an embedding straight away, with the table's row count.
    id_inputs: Vec<(String, usize)>,
    /// The symbols of the graph's inputs.
    symbols: Vec<String>,
    /// Those that may be padded (see `accelrt_core::padding::paddable_symbols`).
    paddable: std::collections::BTreeSet<String>,
    programs: Mutex<HashMap<Bucket, ProgramSlot>>,
    /// Each cache's [heads, capacity, head size], worked out once.
    cache_dims: Mutex<Option<Vec<[usize; 3]>>>,
    /// Output shapes at unpadded buckets, for outputs whose sizes the graph derives.
    real_shapes: Mutex<HashMap<Bucket, Vec<Vec<usize>>>>,
}

fn element_type(dtype: DType) -> Result<ElementType> {
    Ok(match dtype {
        DType::F32 => ElementType::F32,
        DType::F16 => ElementType::F16,
        DType::BF16 => ElementType::BF16,
        DType::I64 => ElementType::I64,
        DType::U32 => ElementType::U32,
        DType::U8 => ElementType::U8,
        DType::Quant(_) => {
            return Err(Error::UnsupportedDType { dtype, context: "a PJRT buffer (dequantise first)".into() })
        }
    })
}

/// The dtype a weight or cache of `dtype` takes in a program computing in `compute` (the
/// exporter's rule: f32 and quantised values take the compute dtype, the rest keep theirs).
fn argument_dtype(dtype: DType, compute: DType) -> DType {
    match dtype {
        DType::F32 | DType::Quant(_) => compute,
        other => other,
    }
}

fn export_err(e: ExportError) -> Error {
    match e {
        e @ ExportError::Unsupported { .. } => Error::Unsupported { backend: BACKEND.into(), what: e.to_string() },
        e => backend_err(format!("StableHLO export: {e}")),
    }
}

impl PjrtExecutable {
    pub(crate) fn prepare(
        backend: &PjrtBackend,
        graph: &Graph,
        weights: &dyn WeightSource,
        options: &PrepareOptions,
    ) -> Result<PjrtExecutable> {
        let compute = options.compute_dtype.unwrap_or(DType::F32);
        if !compute.is_float() {
            return Err(Error::UnsupportedDType { dtype: compute, context: "a compute dtype".into() });
        }
        let device = backend.device.clone();
        let upload_device = backend.portable.then_some(&device);
        // Weights: read, checked, dequantised and uploaded once, in the manifest's order.
        let mut weight_args = Vec::new();
        let mut uploaded = Vec::new();
        for (_, node) in graph.weights() {
            let shape: Vec<usize> =
                node.shape.dims().iter().map(|d| d.fixed().expect("weights have fixed shapes")).collect();
            let argument = Argument {
                name: node.name.clone(),
                dtype: argument_dtype(node.dtype, compute),
                shape,
                role: ArgumentRole::Weight { weight: node.name.clone(), source_dtype: node.dtype },
            };
            let tensor = weight_argument(&argument, weights).map_err(|e| match e {
                ExportError::Weight { name, source } => Error::Weight { name, message: source.to_string() },
                other => backend_err(other),
            })?;
            let buffer = upload(&backend.client, &tensor, tensor.shape(), upload_device)?;
            weight_args.push(argument);
            uploaded.push(buffer);
        }
        let input_name = |id: accelrt_core::ValueId, what: &str, node: &str| -> Result<String> {
            let n = graph.node(id);
            match n.op {
                Op::Input { .. } => Ok(n.name.clone()),
                _ => Err(Error::Unsupported {
                    backend: BACKEND.into(),
                    what: format!(
                        "`{node}`: cache {what} computed in the graph (`{}`); they must be graph inputs, checked on the host before each step",
                        n.name
                    ),
                }),
            }
        };
        let mut caches = Vec::new();
        for (index, node) in graph.nodes().iter().enumerate() {
            if let Op::KvCache { x, positions, slots, capacity } = node.op {
                let xs = graph.node(x);
                let fixed = |axis: usize| xs.shape.dims().get(axis).and_then(Dim::fixed);
                let slots_name = input_name(slots, "slots", &node.name)?;
                let rank = graph.inputs().find(|(_, n)| n.name == slots_name).map(|(_, n)| n.shape.rank());
                if rank != Some(1) {
                    return Err(Error::Unsupported {
                        backend: BACKEND.into(),
                        what: format!("`{}`: slots input `{slots_name}` of rank other than 1", node.name),
                    });
                }
                caches.push(CacheNode {
                    index,
                    name: node.name.clone(),
                    positions: input_name(positions, "positions", &node.name)?,
                    slots: slots_name,
                    capacity,
                    heads: fixed(1),
                    head_size: fixed(3),
                    dtype: argument_dtype(node.dtype, compute),
                });
            }
        }
        // Variables start from their weight (read and checked now, uploaded per session) or zeros.
        let mut variables = Vec::new();
        for node in graph.nodes() {
            if let Op::Variable { init, .. } = node.op {
                let shape = node.shape.concrete().expect("variables have fixed shapes");
                let initial = match init {
                    VariableInit::Weight => Some(accelrt_core::load_weight(weights, node)?.to_host()?),
                    VariableInit::Zeros => None,
                };
                variables.push(VariableNode { name: node.name.clone(), dtype: node.dtype, shape, initial });
            }
        }
        let mut id_inputs = Vec::new();
        for node in graph.nodes() {
            if let Op::Embedding { table, ids } = node.op {
                let ids = graph.node(ids);
                if matches!(ids.op, Op::Input { .. }) {
                    let rows = graph.node(table).shape.dims()[0].fixed().expect("weights have fixed shapes");
                    id_inputs.push((ids.name.clone(), rows));
                }
            }
        }
        let mut symbols: Vec<String> = graph
            .inputs()
            .flat_map(|(_, n)| {
                n.shape.dims().iter().filter_map(|d| if let Dim::Sym(s) = d { Some(s.clone()) } else { None })
            })
            .collect();
        symbols.sort();
        symbols.dedup();
        Ok(PjrtExecutable {
            id: ExecutableId::fresh(),
            graph: graph.clone(),
            client: backend.client.clone(),
            device,
            portable: backend.portable,
            compile_options: backend.compile_options(),
            export_options: ExportOptions { compute_dtype: Some(compute) },
            buckets: backend.options.buckets.clone(),
            cache_dir: backend.options.cache_dir.clone(),
            compiler: backend.compiler.clone(),
            weight_args,
            weights: uploaded,
            caches,
            variables,
            id_inputs,
            symbols,
            paddable: accelrt_core::padding::paddable_symbols(graph),
            programs: Mutex::new(HashMap::new()),
            real_shapes: Mutex::new(HashMap::new()),
            cache_dims: Mutex::new(None),
        })
    }

    /// Buckets compiled (or loaded) so far.
    pub fn compiled_buckets(&self) -> Vec<Bucket> {
        let programs = self.programs.lock().unwrap_or_else(|e| e.into_inner());
        programs
            .iter()
            .filter(|(_, p)| p.lock().map(|p| p.is_some()).unwrap_or(false))
            .map(|(b, _)| b.clone())
            .collect()
    }

    /// The program for `bucket`: from memory, else from the disk cache, else compiled (once, even
    /// when several threads ask at the same time).
    fn program(&self, bucket: &Bucket) -> Result<Arc<Program>> {
        let slot = {
            let mut programs = self.programs.lock().unwrap_or_else(|e| e.into_inner());
            programs.entry(bucket.clone()).or_default().clone()
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(program) = slot.as_ref() {
            return Ok(program.clone());
        }
        let module = export(&self.graph, bucket, &self.export_options).map_err(export_err)?;
        self.check_manifest(&module.manifest)?;
        let exe = self.load_or_compile(&module.mlir, &module.manifest)?;
        let program = Arc::new(Program { exe, manifest: module.manifest });
        *slot = Some(program.clone());
        Ok(program)
    }

    /// The manifest must take the weights as they were uploaded.
    fn check_manifest(&self, manifest: &Manifest) -> Result<()> {
        let weights: Vec<&Argument> =
            manifest.arguments.iter().filter(|a| matches!(a.role, ArgumentRole::Weight { .. })).collect();
        let same = weights.len() == self.weight_args.len()
            && weights
                .iter()
                .zip(&self.weight_args)
                .all(|(a, b)| a.name == b.name && a.dtype == b.dtype && a.shape == b.shape);
        if !same {
            return Err(backend_err(format!(
                "the exported module for bucket {} takes other weight arguments than were uploaded (exporter and backend disagree)",
                manifest.bucket
            )));
        }
        Ok(())
    }

    fn load_or_compile(&self, mlir: &str, manifest: &Manifest) -> Result<LoadedExecutable> {
        let entry = self.cache_dir.as_ref().map(|dir| {
            Entry::new(dir, &cache::key(&manifest.mlir_sha256, &self.compiler, self.compile_options.as_bytes()))
        });
        if let Some(entry) = &entry {
            if let Some(bytes) = entry.read().map_err(backend_err)? {
                return self.client.load_serialized(&bytes, Some(mlir)).map_err(|e| {
                    backend_err(format!(
                        "the cached program {} does not load ({e}); delete it to compile again",
                        entry.program.display()
                    ))
                });
            }
        }
        let exe = self
            .client
            .compile(mlir.as_bytes(), ProgramFormat::Mlir, &self.compile_options)
            .map_err(|e| backend_err(format!("compiling bucket {}: {e}", manifest.bucket)))?;
        if let Some(entry) = &entry {
            match exe.serialize() {
                Ok(bytes) => entry.write(&bytes, &manifest.to_json()).map_err(backend_err)?,
                // The plugin cannot serialise: keep the module (the compile is redone per process).
                Err(_) => entry.write_mlir(mlir, &manifest.to_json()).map_err(backend_err)?,
            }
        }
        Ok(exe)
    }

    fn check_ids(&self, inputs: &[(&str, &HostTensor)]) -> Result<()> {
        for (name, rows) in &self.id_inputs {
            let tensor = inputs.iter().find(|(n, _)| n == name).expect("inputs are bound").1;
            let ids = tensor.to_i64_vec().expect("embedding ids are integers (checked by inference)");
            if let Some(bad) = ids.iter().find(|&&id| id < 0 || id as usize >= *rows) {
                return Err(Error::Input {
                    name: name.clone(),
                    message: format!("id {bad} is out of range for an embedding table of {rows} rows"),
                });
            }
        }
        Ok(())
    }

    /// Each cache's [heads, capacity, head size]: from the graph where it fixes them, else from the
    /// manifest of the smallest bucket (every bucket's caches have the same shape but the slots).
    fn cache_dims(&self) -> Result<Vec<[usize; 3]>> {
        let mut known = self.cache_dims.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dims) = known.as_ref() {
            return Ok(dims.clone());
        }
        let dims = self.work_out_cache_dims()?;
        *known = Some(dims.clone());
        Ok(dims)
    }

    fn work_out_cache_dims(&self) -> Result<Vec<[usize; 3]>> {
        if let Some(dims) = self.caches.iter().map(|c| Some([c.heads?, c.capacity, c.head_size?])).collect() {
            return Ok(dims);
        }
        let probe = Bucket { dims: self.symbols.iter().map(|s| (s.clone(), 1)).collect(), slots: Some(1) };
        let module = export(&self.graph, &probe, &self.export_options).map_err(export_err)?;
        Ok(module
            .manifest
            .arguments
            .iter()
            .filter(|a| matches!(a.role, ArgumentRole::State { .. }))
            .map(|a| [a.shape[1], a.shape[2], a.shape[3]])
            .collect())
    }

    fn new_pjrt_state(&self, slots: usize) -> Result<PjrtState> {
        let total = slots + 1;
        let mut caches = Vec::with_capacity(self.caches.len());
        let shapes = self.cache_dims()?;
        for (c, [heads, capacity, head_size]) in self.caches.iter().zip(shapes) {
            let dims = [total, heads, capacity, head_size];
            let elem = c.dtype.size_in_bytes().expect("caches are plain floats");
            let zeros = vec![0u8; dims.iter().product::<usize>() * elem];
            caches.push(upload_bytes(&self.client, c.dtype, &zeros, &dims, self.portable.then_some(&self.device))?);
        }
        let mut variables = Vec::with_capacity(self.variables.len());
        for v in &self.variables {
            let buffer = match &v.initial {
                Some(t) => upload(&self.client, t, &v.shape, self.portable.then_some(&self.device))?,
                None => {
                    let elem = v.dtype.size_in_bytes().expect("variables are plain floats");
                    let zeros = vec![0u8; v.shape.iter().product::<usize>() * elem];
                    upload_bytes(&self.client, v.dtype, &zeros, &v.shape, self.portable.then_some(&self.device))?
                }
            };
            variables.push(buffer);
        }
        Ok(PjrtState { slots: total, caches, variables })
    }

    /// Whether runs need a session state: the graph has caches or variables.
    fn has_state(&self) -> bool {
        !self.caches.is_empty() || !self.variables.is_empty()
    }

    fn variable_index(&self, name: &str) -> Result<usize> {
        self.variables.iter().position(|v| v.name == name).ok_or_else(|| Error::Graph(format!("no variable `{name}`")))
    }

    /// A session's variable buffers, refusing a session that lost them in a failed step.
    fn variables_of<'s>(&self, state: &'s mut SessionState) -> Result<&'s mut Vec<Buffer>> {
        let inner = state.inner_mut::<PjrtState>(self.id)?;
        if inner.variables.len() != self.variables.len() {
            return Err(backend_err(
                "this session lost its variables when an earlier step failed on the device; start a new session",
            ));
        }
        Ok(&mut inner.variables)
    }

    /// A step (with a session state or without), checked and run. Its cache writes are checked
    /// and recorded first; a step that is then refused or fails (a later cache's write, a program
    /// that cannot be exported, compiled or loaded for its bucket, the run) puts back the lengths
    /// of the slots it writes (`SessionState::restore_lengths`) and reports its own error. Nothing
    /// is cut back: the device's caches change only by a run, and a run that fails (or whose
    /// outputs cannot be read) has consumed the donated caches, so the session refuses every
    /// later step.
    fn step(&self, mut state: Option<&mut SessionState>, inputs: &[(&str, &HostTensor)]) -> Result<Outputs> {
        let bindings = self.graph.bind_inputs(inputs)?;
        self.check_ids(inputs)?;
        let mut before = SlotLengths::new();
        let result = self.recorded_step(state.as_deref_mut(), inputs, &bindings, &mut before);
        if let (Err(_), Some(state)) = (&result, state) {
            state.restore_lengths(&before);
        }
        result
    }

    /// [`PjrtExecutable::step`] after the checks that record nothing: records the step's cache
    /// writes (the lengths they change go into `before` first), then runs it.
    fn recorded_step(
        &self,
        mut state: Option<&mut SessionState>,
        inputs: &[(&str, &HostTensor)],
        bindings: &Bindings,
        before: &mut SlotLengths,
    ) -> Result<Outputs> {
        let input = |name: &str| inputs.iter().find(|(n, _)| *n == name).expect("inputs are bound").1;
        let real: BTreeMap<String, usize> =
            self.symbols.iter().filter_map(|s| bindings.get(s).map(|n| (s.clone(), n))).collect();

        // Caches: the host checks every write before the device runs (the program would clamp).
        let mut kv_len = 0;
        let mut starts: Vec<Vec<usize>> = Vec::new();
        if !self.caches.is_empty() {
            let state = state.as_deref_mut().expect("graphs with caches run with a state");
            for c in &self.caches {
                let positions = input(&c.positions).to_i64_vec().expect("positions are integers");
                let slots = input(&c.slots).to_i64_vec().expect("slots are integers");
                state.record_lengths(before, &slots);
                let write = state
                    .plan_cache_write(c.index, c.capacity, &positions, &slots)
                    .map_err(|e| Error::node(&c.name, format!("kv_cache: {e}")))?;
                kv_len = kv_len.max(write.kv_len);
                starts.push(write.rows.iter().map(|r| r.start).collect());
            }
        }
        // Slots size the caches only: a graph with variables alone is not specialised to them.
        let (slots_total, spare) = match state.as_deref_mut() {
            Some(state) if !self.caches.is_empty() => {
                let inner = state.inner_mut::<PjrtState>(self.id)?;
                (Some(inner.slots), inner.slots - 1)
            }
            _ => (None, 0),
        };

        let size = |s: &String, n: usize| if self.paddable.contains(s) { self.buckets.pad(s, n) } else { n };
        let mut bucket =
            Bucket { dims: real.iter().map(|(s, &n)| (s.clone(), size(s, n))).collect(), slots: slots_total };
        if !self.caches.is_empty() && !self.writes_fit(&bucket, &real, &starts) {
            // A padded write would pass the capacity, where the program would clamp its start:
            // this run takes a program of its exact sizes instead.
            bucket.dims = real.clone();
        }
        let program = self.program(&bucket)?;
        let padded = bucket.dims != real;

        // Arguments in the manifest's order.
        let device = self.portable.then_some(&self.device);
        let mut owned: Vec<Buffer> = Vec::new();
        let mut order: Vec<(char, usize)> = Vec::new();
        let (mut w, mut s, mut v) = (0, 0, 0);
        for arg in &program.manifest.arguments {
            match &arg.role {
                ArgumentRole::Input => {
                    let host = input(&arg.name);
                    let elem = host.dtype().size_in_bytes().expect("inputs are plain types");
                    let mut bytes = pad(&host.to_le_bytes(), elem, host.shape(), &arg.shape);
                    if self.caches.iter().any(|c| c.slots == arg.name) && arg.shape[0] > host.shape()[0] {
                        // Padded rows write to the spare slot, never to a live sequence's.
                        let spare = HostTensor::from_f64(host.dtype(), vec![1], &[spare as f64])?.to_le_bytes();
                        for row in host.shape()[0]..arg.shape[0] {
                            bytes[row * elem..(row + 1) * elem].copy_from_slice(&spare);
                        }
                    }
                    owned.push(upload_bytes(&self.client, arg.dtype, &bytes, &arg.shape, device)?);
                    order.push(('i', owned.len() - 1));
                }
                ArgumentRole::Weight { .. } => {
                    order.push(('w', w));
                    w += 1;
                }
                ArgumentRole::State { .. } => {
                    order.push(('s', s));
                    s += 1;
                }
                ArgumentRole::Variable { .. } => {
                    order.push(('v', v));
                    v += 1;
                }
            }
        }
        let mut state_inner = match state {
            Some(state) => Some(state.inner_mut::<PjrtState>(self.id)?),
            None => None,
        };
        // The caches are donated: the program writes each update into its cache's memory. A run
        // that fails after the call has consumed them, so the session is then unusable (below).
        // So are the variables: the optimiser's update is written over each parameter and moment.
        let (mut donated, mut donated_variables): (Vec<Option<Buffer>>, Vec<Option<Buffer>>) = match state_inner
            .as_mut()
        {
            Some(inner) => {
                if inner.caches.len() != self.caches.len() || inner.variables.len() != self.variables.len() {
                    return Err(backend_err(
                            "this session lost its KV caches or variables when an earlier step failed on the device; start a new session",
                        ));
                }
                (
                    std::mem::take(&mut inner.caches).into_iter().map(Some).collect(),
                    std::mem::take(&mut inner.variables).into_iter().map(Some).collect(),
                )
            }
            None => (Vec::new(), Vec::new()),
        };
        let args: Vec<PjrtArgument> = order
            .iter()
            .map(|&(kind, i)| match kind {
                'i' => PjrtArgument::Keep(&owned[i]),
                'w' => PjrtArgument::Keep(&self.weights[i]),
                'v' => PjrtArgument::Donate(donated_variables[i].take().expect("each variable is passed once")),
                _ => PjrtArgument::Donate(donated[i].take().expect("each cache is passed once")),
            })
            .collect();
        let outputs = program
            .exe
            .execute_with(args, self.portable.then_some(&self.device))
            .map_err(|e| backend_err(format!("running bucket {bucket}: {e}")))?;

        let mut results = Vec::new();
        let mut new_caches = Vec::new();
        let mut new_variables = Vec::new();
        let mut graph_output = 0;
        for (out, buffer) in program.manifest.outputs.iter().zip(outputs) {
            match out.role {
                OutputRole::State { .. } => new_caches.push(buffer),
                OutputRole::Variable { .. } => new_variables.push(buffer),
                OutputRole::Output => {
                    let (name, id) = &self.graph.outputs()[graph_output];
                    graph_output += 1;
                    let node = self.graph.node(*id);
                    let want = self.real_shape(
                        node.shape.dims(),
                        graph_output - 1,
                        bindings,
                        kv_len,
                        &bucket,
                        padded,
                        &out.shape,
                    )?;
                    let elem = out.dtype.size_in_bytes().expect("outputs are plain types");
                    let bytes = buffer.to_bytes().map_err(backend_err)?;
                    let bytes = unpad(&bytes, elem, &out.shape, &want);
                    results.push((name.clone(), HostTensor::from_le_bytes(out.dtype, want, &bytes)?));
                }
            }
        }
        if let Some(inner) = state_inner.as_mut() {
            if new_caches.len() != self.caches.len() || new_variables.len() != self.variables.len() {
                return Err(backend_err("the program returned another number of caches or variables than it takes"));
            }
            inner.caches = new_caches;
            inner.variables = new_variables;
        }
        Ok(Outputs::new(results))
    }

    /// Whether every row's padded write stays within the capacity.
    fn writes_fit(&self, bucket: &Bucket, real: &BTreeMap<String, usize>, starts: &[Vec<usize>]) -> bool {
        for (c, starts) in self.caches.iter().zip(starts) {
            let (_, node) = self.graph.inputs().find(|(_, n)| n.name == c.positions).expect("positions are an input");
            let count = match node.shape.dims().last() {
                Some(Dim::Sym(s)) => bucket.get(s).unwrap_or(0),
                Some(Dim::Fixed(n)) => *n,
                None => 0,
            };
            let count_real = match node.shape.dims().last() {
                Some(Dim::Sym(s)) => real.get(s).copied().unwrap_or(0),
                _ => count,
            };
            if count == count_real {
                continue;
            }
            if count > c.capacity || starts.iter().any(|&start| start + count > c.capacity) {
                return false;
            }
        }
        true
    }

    /// An output's real shape: bound symbols from the inputs, `kv_len` from the step's writes, and
    /// sizes the graph derives from the unpadded bucket's export (cached).
    #[allow(clippy::too_many_arguments)]
    fn real_shape(
        &self,
        dims: &[Dim],
        output: usize,
        bindings: &Bindings,
        kv_len: usize,
        bucket: &Bucket,
        padded: bool,
        padded_shape: &[usize],
    ) -> Result<Vec<usize>> {
        let mut shape = Vec::with_capacity(dims.len());
        for (axis, d) in dims.iter().enumerate() {
            shape.push(match d {
                Dim::Fixed(n) => *n,
                Dim::Sym(s) => match bindings.get(s) {
                    Some(n) => n,
                    None if s == KV_LEN && !self.caches.is_empty() => kv_len,
                    None if !padded => padded_shape[axis],
                    None => self.derived_shapes(bucket, bindings)?[output][axis],
                },
            });
        }
        Ok(shape)
    }

    fn derived_shapes(&self, bucket: &Bucket, bindings: &Bindings) -> Result<Vec<Vec<usize>>> {
        let real = Bucket {
            dims: self.symbols.iter().filter_map(|s| bindings.get(s).map(|n| (s.clone(), n))).collect(),
            slots: bucket.slots,
        };
        let mut shapes = self.real_shapes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = shapes.get(&real) {
            return Ok(s.clone());
        }
        let module = export(&self.graph, &real, &self.export_options).map_err(export_err)?;
        let s: Vec<Vec<usize>> = module
            .manifest
            .outputs
            .iter()
            .filter(|o| matches!(o.role, OutputRole::Output))
            .map(|o| o.shape.clone())
            .collect();
        shapes.insert(real, s.clone());
        Ok(s)
    }
}

fn upload(client: &Client, tensor: &HostTensor, shape: &[usize], device: Option<&Device>) -> Result<Buffer> {
    upload_bytes(client, tensor.dtype(), &tensor.to_le_bytes(), shape, device)
}

fn upload_bytes(
    client: &Client,
    dtype: DType,
    bytes: &[u8],
    shape: &[usize],
    device: Option<&Device>,
) -> Result<Buffer> {
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    client.buffer_from_bytes(element_type(dtype)?, bytes, &dims, device).map_err(backend_err)
}

impl Executable for PjrtExecutable {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn run(&self, inputs: &[(&str, &HostTensor)]) -> Result<Outputs> {
        // A graph with caches runs on empty ones, and one with variables on their initial values.
        if !self.has_state() {
            return self.step(None, inputs);
        }
        let mut state = self.new_state(one_shot_slots(&self.graph, inputs))?;
        self.step(Some(&mut state), inputs)
    }

    fn new_state(&self, slots: usize) -> Result<SessionState> {
        let inner = self.new_pjrt_state(slots)?;
        Ok(SessionState::new(BACKEND, self.id, slots, Box::new(inner)))
    }

    fn run_with_state(&self, state: &mut SessionState, inputs: &[(&str, &HostTensor)]) -> Result<Outputs> {
        // Before anything reads or records into the state (the cache plan), even for a graph
        // without caches: a state runs only with the executable that made it.
        state.check_owner(self.id)?;
        if !self.has_state() {
            return self.step(None, inputs);
        }
        self.step(Some(state), inputs)
    }

    fn read_variable(&self, state: &SessionState, name: &str) -> Result<HostTensor> {
        state.check_owner(self.id)?;
        let index = self.variable_index(name)?;
        let inner = state.inner::<PjrtState>(self.id)?;
        let buffer = inner.variables.get(index).ok_or_else(|| {
            backend_err(
                "this session lost its variables when an earlier step failed on the device; start a new session",
            )
        })?;
        let v = &self.variables[index];
        let bytes = buffer.to_bytes().map_err(backend_err)?;
        HostTensor::from_le_bytes(v.dtype, v.shape.clone(), &bytes)
    }

    fn write_variable(&self, state: &mut SessionState, name: &str, value: &HostTensor) -> Result<()> {
        state.check_owner(self.id)?;
        let index = self.variable_index(name)?;
        let v = &self.variables[index];
        accelrt_core::check_variable_value(name, v.dtype, &v.shape, value)?;
        let buffer = upload(&self.client, value, &v.shape, self.portable.then_some(&self.device))?;
        self.variables_of(state)?[index] = buffer;
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        // `execute` returns once the device is done and outputs are read back before returning.
        Ok(())
    }
}
