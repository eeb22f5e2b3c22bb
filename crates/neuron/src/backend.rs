//! The Neuron `Backend`: a graph runs from NEFF programs compiled ahead of time (`accelrt compile
//! --target inf2|trn1|trn2`) from its StableHLO export, one per shape bucket, found in the compile
//! cache (`crate::cache`).
//!
//! The programs take the weights as **inputs**: `prepare` uploads every weight once per
//! NeuronCore into a device tensor that every bucket's program on that core reads. At prepare
//! every cached bucket of the graph is loaded on every core of the device range, with its own
//! input and output tensors allocated once, and stateless programs are run once (warm-up).
//!
//! A run takes the smallest bucket that holds the inputs — symbols the graph lets be padded
//! (`accelrt_core::padding::paddable_symbols`) are zero-padded, others must match exactly — runs it
//! on a free core and cuts the outputs back. **Sessions** (KV caches) keep their caches on one
//! core as device tensors, allocated once with one spare slot for padded batch rows; each step
//! binds a cache tensor both as the program's state input and as its updated-state output (the
//! exporter aliases the two), so caches never leave the device. A step whose token count has no
//! program of its own runs as consecutive chunks of the compiled sizes when the graph allows it
//! (`accelrt_core::padding::chunkable_symbol`: Llama's prompt of 13 tokens runs as 8 + 4 + 1),
//! so prompts need a handful of prefill programs, not one per length.
//!
//! **Training graphs** (`Op::Variable` / `Op::Assign`: parameters, optimiser moments, gradient
//! accumulators) keep their variables in the session too, as device tensors on the session's
//! core, initialised from the weights (or zeros) when the session is made. Each variable has two
//! tensors: a step binds the current one as the program's variable argument and the other as the
//! aliased result carrying its next value, and the two change places only once the run has
//! succeeded and its outputs have been read. So a step that is refused or fails — even one whose
//! program wrote its results before failing (`NRT_EXEC_COMPLETED_WITH_NUM_ERR`: an update that
//! produced NaN) — leaves every variable as it was, at the cost of twice the variables' device
//! memory.

pub use crate::cache::bucket_key;
use crate::cache::{read_checked, scan, CachedNeff, NeffKey};
use crate::compile::TARGETS;
use crate::runtime::{Model, Runtime, Tensor, TensorInfo, TensorRefs, TensorUsage};
use crate::status::NeuronError;
use accelrt_core::padding::{chunkable_symbol, pad, paddable_symbols, unpad};
use accelrt_core::{
    Backend, DType, DeviceInfo, DeviceKind, DeviceSpec, Dim, Error, Executable, ExecutableId, Graph, HostTensor, Op,
    Outputs, PrepareOptions, Result, SessionState, SlotLengths, VariableInit, WeightSource, KV_LEN,
};
use accelrt_stablehlo::{export, weight_argument, ArgumentRole, Bucket, ExportOptions, Manifest, OutputRole};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const BACKEND: &str = "neuron";

/// NRT_EXEC_COMPLETED_WITH_NUM_ERR: the program ran and produced NaN or Inf.
const NUM_ERR: i32 = 1003;

/// Environment variable naming the NEFF cache directory (default [`default_cache_dir`]); see
/// docs/neuron.md for every variable the backend reads.
pub const NEFF_CACHE_ENV: &str = "ACCELRT_NEFF_CACHE";
/// Environment variable choosing the chip whose NEFFs are loaded: `inf2` (default), `trn1` or
/// `trn2`.
pub const TARGET_ENV: &str = "ACCELRT_NEURON_TARGET";
/// Chooses among NEFFs of one bucket compiled with different flags: the flags, space-separated,
/// exactly as given to `accelrt compile --compiler-flags`.
pub const FLAGS_ENV: &str = "ACCELRT_NEURON_FLAGS";

fn backend_err(e: NeuronError) -> Error {
    Error::Backend { backend: BACKEND.into(), message: e.to_string() }
}

fn err(message: impl Into<String>) -> Error {
    Error::Backend { backend: BACKEND.into(), message: message.into() }
}

/// Where NEFFs are looked up and for which chip.
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronOptions {
    /// The NEFF cache (layout in [`crate::cache`]).
    pub cache_dir: PathBuf,
    /// `inf2`, `trn1` or `trn2` (neuronx-cc's `--target`).
    pub target: String,
    /// Use only NEFFs compiled with exactly these flags; `None` accepts any, as long as each
    /// bucket has NEFFs of one set of flags.
    pub flags: Option<Vec<String>>,
}

impl NeuronOptions {
    /// `$ACCELRT_NEFF_CACHE` (else `neff/` in the cache directory, `~/.cache/accelrt/neff` by
    /// default), `$ACCELRT_NEURON_TARGET` (else inf2), `$ACCELRT_NEURON_FLAGS` (else any).
    /// Empty variables count as unset, except `$ACCELRT_NEURON_FLAGS`, where empty means "no flags".
    ///
    /// # Errors
    ///
    /// A message when the target is not one of [`TARGETS`] (`inf2`, `trn1`, `trn2`).
    pub fn from_env() -> std::result::Result<NeuronOptions, String> {
        let cache_dir = match std::env::var_os(NEFF_CACHE_ENV).filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => default_cache_dir(),
        };
        let target = std::env::var(TARGET_ENV).ok().filter(|t| !t.is_empty()).unwrap_or_else(|| "inf2".into());
        check_target(&target).map_err(|reason| format!("{TARGET_ENV}={reason}"))?;
        let flags = std::env::var(FLAGS_ENV).ok().map(|f| f.split_whitespace().map(str::to_string).collect());
        Ok(NeuronOptions { cache_dir, target, flags })
    }
}

/// `Ok` for a target `accelrt compile` makes NEFFs for ([`TARGETS`]); otherwise the target and
/// the list.
fn check_target(target: &str) -> std::result::Result<(), String> {
    if TARGETS.contains(&target) {
        return Ok(());
    }
    Err(format!("{target}: the targets are {}", TARGETS.join(", ")))
}

/// `neff/` in accelrt's cache directory (`$ACCELRT_CACHE`, …): where `accelrt compile` puts NEFFs
/// unless told otherwise.
pub fn default_cache_dir() -> PathBuf {
    accelrt_core::files::default_cache_dir().join("neff")
}

/// The Neuron backend for a range of NeuronCores (`neuron:N`, `neuron:A-B`): runs graphs whose
/// NEFFs are in the cache, on every core of the range, through the Neuron runtime loaded at run
/// time. Training graphs keep their variables (parameters, optimiser moments) on the device in
/// the session ([`NeuronExecutable`]).
pub struct NeuronBackend {
    spec: DeviceSpec,
    first: u32,
    count: u32,
    rt: Arc<Runtime>,
    runtime_major: u64,
    runtime_version: String,
    options: NeuronOptions,
    info: DeviceInfo,
}

impl NeuronBackend {
    /// Opens NeuronCores `first..first+count` of this machine with options from the environment
    /// ([`NeuronOptions::from_env`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDevice`] for a bad `$ACCELRT_NEURON_TARGET`; otherwise as
    /// [`NeuronBackend::with_options`].
    pub fn new(spec: &DeviceSpec) -> Result<NeuronBackend> {
        let options =
            NeuronOptions::from_env().map_err(|reason| Error::InvalidDevice { spec: spec.to_string(), reason })?;
        NeuronBackend::with_options(spec, options)
    }

    /// Opens the NeuronCores `spec` names with explicit options: initialises the process's
    /// runtime ([`Runtime::get`]) and records its version for the device info and for the NEFF
    /// compatibility check.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDevice`] when `spec` is not a Neuron device; [`Error::Unavailable`] when the
    /// runtime cannot be loaded or initialised, or the machine has fewer cores than the range
    /// needs.
    pub fn with_options(spec: &DeviceSpec, options: NeuronOptions) -> Result<NeuronBackend> {
        let DeviceSpec::Neuron { first, count } = *spec else {
            return Err(Error::InvalidDevice { spec: spec.to_string(), reason: "not a NeuronCore device".into() });
        };
        let unavailable = |reason: String| Error::Unavailable { device: spec.to_string(), reason };
        let rt = Runtime::get().map_err(|e| unavailable(e.to_string()))?;
        let total = rt.core_count().map_err(|e| unavailable(e.to_string()))?;
        if first + count > total {
            return Err(unavailable(format!("this machine has {total} NeuronCore(s)")));
        }
        let version = rt.version().map_err(|e| unavailable(e.to_string()))?;
        let info = DeviceInfo {
            kind: DeviceKind::Neuron,
            spec: spec.to_string(),
            name: format!("NeuronCore {spec} ({})", version.detail),
            memory_total_bytes: None,
            memory_free_bytes: None,
            details: vec![
                ("neuron_runtime".into(), version.to_string()),
                ("neuron_cores_total".into(), total.to_string()),
                ("neuron_target".into(), options.target.clone()),
            ],
        };
        Ok(NeuronBackend {
            spec: spec.clone(),
            first,
            count,
            rt,
            runtime_major: version.major,
            runtime_version: version.to_string(),
            options,
            info,
        })
    }

    /// The cached NEFFs this backend would load for `graph` computed in `compute`, one per bucket,
    /// and why every other NEFF of the graph in the cache is not used.
    pub fn find_neffs(&self, graph: &Graph, compute: DType) -> (Vec<CachedNeff>, Vec<String>) {
        let (chosen, why, _) = self.find_neffs_checked(graph, compute);
        (chosen, why)
    }

    /// [`find_neffs`](Self::find_neffs), with the buckets that have NEFFs of several flag sets
    /// (which `prepare` refuses rather than pick one silently).
    fn find_neffs_checked(&self, graph: &Graph, compute: DType) -> (Vec<CachedNeff>, Vec<String>, Vec<String>) {
        let hash = graph.content_hash();
        let (found, refused) = scan(&self.options.cache_dir, &hash, &self.options.target);
        let mut why: Vec<String> = refused.into_iter().map(|(p, r)| format!("{}: {r}", p.display())).collect();
        let mut by_bucket: BTreeMap<String, Vec<CachedNeff>> = BTreeMap::new();
        for neff in found {
            let key = &neff.manifest.key;
            let name = neff.neff.display().to_string();
            if key.compute_dtype != compute {
                why.push(format!("{name}: computes in {}, this run asks for {compute}", key.compute_dtype));
            } else if let Some(wanted) = self.options.flags.as_ref().filter(|f| **f != key.flags) {
                why.push(format!("{name}: compiled with flags {:?}, {FLAGS_ENV} asks for {wanted:?}", key.flags));
            } else if key.compiler.major != self.runtime_major {
                why.push(format!(
                    "{name}: compiled by neuronx-cc {} (major version {}), but this Neuron runtime is {} (major \
                     version {}), which cannot load it; compile again with the compiler of this SDK",
                    key.compiler, key.compiler.major, self.runtime_version, self.runtime_major
                ));
            } else {
                by_bucket.entry(bucket_key(&key.bucket)).or_default().push(neff);
            }
        }
        let mut chosen = Vec::new();
        let mut ambiguous = Vec::new();
        for (bucket, mut neffs) in by_bucket {
            // The newest compiler wins; several flag sets for it are ambiguous without FLAGS_ENV.
            neffs.sort_by(|a, b| b.manifest.key.compiler.cmp(&a.manifest.key.compiler));
            let newest = neffs[0].manifest.key.compiler.clone();
            let same: Vec<&CachedNeff> = neffs.iter().filter(|n| n.manifest.key.compiler == newest).collect();
            let flag_sets: BTreeSet<&Vec<String>> = same.iter().map(|n| &n.manifest.key.flags).collect();
            if flag_sets.len() > 1 {
                ambiguous.push(format!(
                    "bucket {bucket}: NEFFs compiled with different flags ({}); choose with {FLAGS_ENV}",
                    flag_sets.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ")
                ));
                continue;
            }
            chosen.push(neffs.swap_remove(0));
        }
        (chosen, why, ambiguous)
    }
}

impl Backend for NeuronBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn device(&self) -> &DeviceSpec {
        &self.spec
    }

    fn device_info(&self) -> Result<DeviceInfo> {
        Ok(self.info.clone())
    }

    /// Finds the graph's NEFFs, checks each against a fresh export of its bucket, uploads the
    /// weights once per core, and loads every program on every core.
    fn prepare(
        &self,
        graph: &Graph,
        weights: &dyn WeightSource,
        options: &PrepareOptions,
    ) -> Result<Box<dyn Executable>> {
        // A session step of a cache graph may run as several programs (chunks); variables are
        // swapped per program, so a step failing after its first chunk would leave them half
        // updated. No graph accelrt trains has both: refuse the mix by name.
        let cache = graph.nodes().iter().find(|n| matches!(n.op, Op::KvCache { .. }));
        let variable = graph.nodes().iter().find(|n| matches!(n.op, Op::Variable { .. }));
        if let (Some(cache), Some(variable)) = (cache, variable) {
            return Err(Error::Unsupported {
                backend: BACKEND.into(),
                what: format!(
                    "a graph with both KV caches (`{}`) and training variables (`{}`)",
                    cache.name, variable.name
                ),
            });
        }
        // Variables start from their weight (read and checked now, written per session) or zeros.
        let mut variables = Vec::new();
        for node in graph.nodes() {
            if let Op::Variable { init, .. } = node.op {
                let shape = node.shape.concrete().expect("variables have fixed shapes");
                let initial = match init {
                    VariableInit::Weight => Some(accelrt_core::load_weight(weights, node)?.to_host()?.to_le_bytes()),
                    VariableInit::Zeros => None,
                };
                variables.push(VariableNode { name: node.name.clone(), dtype: node.dtype, shape, initial });
            }
        }
        let compute = options.compute_dtype.unwrap_or(DType::F32);
        let export_options = ExportOptions { compute_dtype: Some(compute) };
        let (neffs, refused, ambiguous) = self.find_neffs_checked(graph, compute);
        if !ambiguous.is_empty() {
            return Err(err(format!(
                "the NEFF cache {} is ambiguous for graph `{}`: {}",
                NeffKey::dir_for(&self.options.cache_dir, &graph.content_hash(), &self.options.target).display(),
                graph.name(),
                ambiguous.join("; ")
            )));
        }
        if neffs.is_empty() {
            return Err(err(missing_neffs_message(graph, &self.options, compute, &refused)));
        }
        let mut programs = Vec::new();
        for cached in &neffs {
            let module = &cached.manifest.module;
            // The NEFF must have been compiled from exactly the module this graph exports.
            let fresh = export(graph, &module.bucket, &export_options)
                .map_err(|e| err(format!("exporting bucket {}: {e}", module.bucket)))?;
            if fresh.manifest.mlir_sha256 != cached.manifest.key.mlir_sha256 {
                return Err(err(format!(
                    "{} was compiled from another export of this graph (module {}, this accelrt exports {}); \
                     compile it again with `accelrt compile`",
                    cached.neff.display(),
                    cached.manifest.key.mlir_sha256,
                    fresh.manifest.mlir_sha256
                )));
            }
            let bytes = read_checked(cached).map_err(err)?;
            programs.push((fresh.manifest, bytes, cached.neff.clone()));
        }

        // The weights every program takes, read and converted once.
        let mut weight_bytes: Vec<(String, Vec<u8>)> = Vec::new();
        for (manifest, ..) in &programs {
            for arg in &manifest.arguments {
                if matches!(arg.role, ArgumentRole::Weight { .. }) && !weight_bytes.iter().any(|(n, _)| *n == arg.name)
                {
                    let host = weight_argument(arg, weights).map_err(|e| err(e.to_string()))?;
                    weight_bytes.push((arg.name.clone(), host.to_le_bytes()));
                }
            }
        }
        let mut cores = Vec::new();
        for core in self.first..self.first + self.count {
            let mut weights = HashMap::new();
            for (name, bytes) in &weight_bytes {
                let mut t = Tensor::allocate(&self.rt, core, bytes.len(), name).map_err(backend_err)?;
                t.write(bytes, 0).map_err(backend_err)?;
                weights.insert(name.clone(), t);
            }
            let mut loaded = Vec::new();
            for (manifest, neff, path) in &programs {
                loaded.push(Loaded::new(&self.rt, neff, core, manifest, path)?);
            }
            cores.push(Mutex::new(Core { index: core, weights, programs: loaded }));
        }
        let exe = NeuronExecutable::new(
            graph,
            self.rt.clone(),
            programs.into_iter().map(|(m, ..)| m).collect(),
            cores,
            variables,
        )?;
        exe.warm_up()?;
        Ok(Box::new(exe))
    }
}

/// What to say when a graph has no usable NEFF: where the backend looked, why each NEFF there
/// was not taken, and how to compile them.
fn missing_neffs_message(graph: &Graph, options: &NeuronOptions, compute: DType, refused: &[String]) -> String {
    let symbols = input_symbols(graph);
    let example: Vec<String> = symbols.iter().map(|s| format!("{s}=N")).collect();
    let capacity = graph.nodes().iter().find_map(|n| match n.op {
        Op::KvCache { capacity, .. } => Some(capacity),
        _ => None,
    });
    let slots = if capacity.is_some() { ",slots=N" } else { "" };
    // The context is part of the program (the caches' capacity): NEFFs of another context are
    // another graph, so the advice must carry this one.
    let context = capacity.map(|c| format!(" --context {c}")).unwrap_or_default();
    let mut text = if is_training(graph) {
        format!(
            "no NEFF for training graph `{}` ({}) computing in {compute} for target {} in {}: a training step \
             runs from NEFFs of its own graph, one per step shape ({}), with every training setting (batch size, \
             optimiser, clipping, dropout, mixed precision, accumulation) part of the graph; {TRAINING_NEFFS}",
            graph.name(),
            graph.content_hash(),
            options.target,
            NeffKey::dir_for(&options.cache_dir, &graph.content_hash(), &options.target).display(),
            example.join(","),
        )
    } else {
        format!(
            "no NEFF for graph `{}` ({}) computing in {compute} for target {} in {}; compile them with \
         `accelrt compile --model MODEL --target {}{context} --bucket {}{slots} [--bucket …]` (docs/neuron.md)",
            graph.name(),
            graph.content_hash(),
            options.target,
            NeffKey::dir_for(&options.cache_dir, &graph.content_hash(), &options.target).display(),
            options.target,
            example.join(","),
        )
    };
    if !refused.is_empty() {
        text.push_str("; NEFFs there that were not used: ");
        text.push_str(&refused.join("; "));
    }
    text
}

/// What to say about compiling a training step's NEFFs: no accelrt command makes them yet.
const TRAINING_NEFFS: &str = "`accelrt compile` compiles inference graphs only: it has no command for training steps \
    yet (docs/neuron.md, \"Training\")";

/// Whether `graph` holds training state (graph variables).
fn is_training(graph: &Graph) -> bool {
    graph.nodes().iter().any(|n| matches!(n.op, Op::Variable { .. }))
}

/// The symbols of the graph's inputs, in name order.
fn input_symbols(graph: &Graph) -> Vec<String> {
    let mut syms: Vec<String> = graph
        .inputs()
        .flat_map(|(_, n)| {
            n.shape
                .dims()
                .iter()
                .filter_map(|d| if let Dim::Sym(s) = d { Some(s.clone()) } else { None })
                .collect::<Vec<_>>()
        })
        .collect();
    syms.sort();
    syms.dedup();
    syms
}

/// One bucket's program loaded on one core, with its input and output tensors allocated once.
struct Loaded {
    model: Model,
    /// Per argument of the manifest: the program's own tensor for graph inputs.
    inputs: Vec<Option<Tensor>>,
    /// Per result of the manifest: the program's own tensor for graph outputs.
    outputs: Vec<Option<Tensor>>,
}

/// The name the compiler gives a program's `i`-th parameter and `j`-th result in the NEFF.
fn input_name(i: usize) -> String {
    format!("input{i}")
}

fn output_name(j: usize) -> String {
    format!("output{j}")
}

impl Loaded {
    fn new(rt: &Arc<Runtime>, neff: &[u8], core: u32, manifest: &Manifest, path: &std::path::Path) -> Result<Loaded> {
        let model = Model::load(rt, neff, Some(core))
            .map_err(|e| err(format!("loading {} on NeuronCore {core}: {e}", path.display())))?;
        let info = model.tensor_info().map_err(backend_err)?;
        // Every argument and result must be there with its byte size. The runtime's dtype code is
        // not trusted (its numbering changed between SDK versions).
        let check = |name: &str, usage: TensorUsage, dtype: DType, shape: &[usize]| -> Result<usize> {
            let bytes = dtype.storage_bytes(shape.iter().product()).unwrap_or(0);
            let t: &TensorInfo = info.iter().find(|t| t.name == name && t.usage == usage).ok_or_else(|| {
                err(format!(
                    "{} has no {usage:?} tensor `{name}` (it has: {})",
                    path.display(),
                    info.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
                ))
            })?;
            if t.size != bytes {
                return Err(err(format!(
                    "{}: `{name}` has {} bytes, the module's {dtype}{shape:?} needs {bytes}",
                    path.display(),
                    t.size
                )));
            }
            Ok(bytes)
        };
        let counts = (
            info.iter().filter(|t| t.usage == TensorUsage::Input).count(),
            info.iter().filter(|t| t.usage == TensorUsage::Output).count(),
        );
        if counts != (manifest.arguments.len(), manifest.outputs.len()) {
            return Err(err(format!(
                "{} has {} inputs and {} outputs, its module {} arguments and {} results",
                path.display(),
                counts.0,
                counts.1,
                manifest.arguments.len(),
                manifest.outputs.len()
            )));
        }
        let mut inputs = Vec::new();
        for (i, arg) in manifest.arguments.iter().enumerate() {
            let name = input_name(i);
            let bytes = check(&name, TensorUsage::Input, arg.dtype, &arg.shape)?;
            inputs.push(match arg.role {
                ArgumentRole::Input => Some(Tensor::allocate(rt, core, bytes, &name).map_err(backend_err)?),
                _ => None,
            });
        }
        let mut outputs = Vec::new();
        for (j, out) in manifest.outputs.iter().enumerate() {
            let name = output_name(j);
            let bytes = check(&name, TensorUsage::Output, out.dtype, &out.shape)?;
            outputs.push(match out.role {
                OutputRole::Output => Some(Tensor::allocate(rt, core, bytes, &name).map_err(backend_err)?),
                OutputRole::State { .. } | OutputRole::Variable { .. } => None,
            });
        }
        Ok(Loaded { model, inputs, outputs })
    }
}

/// One NeuronCore: the weights uploaded to it and every program loaded on it.
struct Core {
    index: u32,
    weights: HashMap<String, Tensor>,
    programs: Vec<Loaded>,
}

/// A `KvCache` node: which inputs carry its positions and slots.
struct CacheNode {
    index: usize,
    name: String,
    positions: String,
    slots: String,
    capacity: usize,
}

/// A graph variable (`Op::Variable`: training state) and its value before any step.
struct VariableNode {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    /// The weight it starts from (`VariableInit::Weight`), read once at prepare, as bytes;
    /// `None`: zeros.
    initial: Option<Vec<u8>>,
}

impl VariableNode {
    fn bytes(&self) -> usize {
        self.dtype.storage_bytes(self.shape.iter().product()).expect("variables are plain types")
    }
}

/// One variable of a session: the tensor holding its value and the one the next step writes.
struct VariableTensors {
    current: Tensor,
    next: Tensor,
}

/// A session's state on one core: its caches, with one spare slot for padded rows, and its
/// variables.
struct NeuronState {
    core: usize,
    /// Slots including the spare one (0 for a graph without caches).
    slots: usize,
    /// By cache, in the manifests' state-argument order.
    caches: Vec<Tensor>,
    /// By variable, in graph order ([`NeuronExecutable::variables`]).
    variables: Vec<VariableTensors>,
}

/// A graph prepared by [`NeuronBackend`]: every cached bucket's program loaded on every core of
/// the range, with the weights uploaded once per core. Stateless runs go to a free core (taken in
/// turn); a session stays on the core its caches were allocated on. A step's sizes must fit a
/// loaded bucket (or, for a session, chunks of loaded sizes), else it is refused with
/// [`Error::Unsupported`] naming the buckets that are loaded.
pub struct NeuronExecutable {
    /// Stamped into every session state this executable makes; only it may run with them.
    id: ExecutableId,
    graph: Graph,
    rt: Arc<Runtime>,
    /// Each loaded program's module, in the cores' program order.
    manifests: Vec<Manifest>,
    cores: Vec<Mutex<Core>>,
    next: AtomicUsize,
    paddable: BTreeSet<String>,
    chunkable: Option<String>,
    caches: Vec<CacheNode>,
    /// The graph's variables, in graph order: the session holds one value of each.
    variables: Vec<VariableNode>,
    /// Inputs that feed an embedding straight away, with the table's row count: the device's
    /// gather would clamp an id out of range instead of failing, so the host checks them.
    id_inputs: Vec<(String, usize)>,
}

/// How one step runs: one program, or consecutive chunks along the chunkable symbol.
enum Plan {
    One { program: usize },
    Chunks { symbol: String, chunks: Vec<(usize, usize, usize)> },
}

impl NeuronExecutable {
    fn new(
        graph: &Graph,
        rt: Arc<Runtime>,
        manifests: Vec<Manifest>,
        cores: Vec<Mutex<Core>>,
        variables: Vec<VariableNode>,
    ) -> Result<Self> {
        // Every program takes and gives every variable at its declared dtype and shape.
        for m in &manifests {
            let args = m.arguments.iter().filter(|a| matches!(a.role, ArgumentRole::Variable { .. }));
            let outs = m.outputs.iter().filter(|o| matches!(o.role, OutputRole::Variable { .. }));
            for (what, name, dtype, shape) in args
                .map(|a| ("argument", &a.name, a.dtype, &a.shape))
                .chain(outs.map(|o| ("result", &o.name, o.dtype, &o.shape)))
            {
                let known = variables.iter().find(|v| v.name == *name);
                if !known.is_some_and(|v| v.dtype == dtype && v.shape == *shape) {
                    return Err(err(format!(
                        "bucket {}: variable {what} `{name}` ({dtype} {shape:?}) is not a variable of the graph \
                         at that dtype and shape",
                        bucket_key(&m.bucket)
                    )));
                }
            }
            let count = m.outputs.iter().filter(|o| matches!(o.role, OutputRole::Variable { .. })).count();
            if count != variables.len() {
                return Err(err(format!(
                    "bucket {}: the program returns {count} variables, the graph has {}",
                    bucket_key(&m.bucket),
                    variables.len()
                )));
            }
        }
        let mut caches = Vec::new();
        for (index, node) in graph.nodes().iter().enumerate() {
            if let Op::KvCache { positions, slots, capacity, .. } = node.op {
                let input = |id: accelrt_core::ValueId, what: &str| -> Result<String> {
                    let n = graph.node(id);
                    match n.op {
                        Op::Input { .. } => Ok(n.name.clone()),
                        _ => Err(Error::Unsupported {
                            backend: BACKEND.into(),
                            what: format!("KV cache `{}` whose {what} are computed, not a graph input", node.name),
                        }),
                    }
                };
                caches.push(CacheNode {
                    index,
                    name: node.name.clone(),
                    positions: input(positions, "positions")?,
                    slots: input(slots, "slots")?,
                    capacity,
                });
            }
        }
        let mut id_inputs = Vec::new();
        for node in graph.nodes() {
            if let Op::Embedding { table, ids } = node.op {
                let ids = graph.node(ids);
                if let (Op::Input { .. }, Some(rows)) = (&ids.op, graph.node(table).shape.dims()[0].fixed()) {
                    id_inputs.push((ids.name.clone(), rows));
                }
            }
        }
        Ok(NeuronExecutable {
            id: ExecutableId::fresh(),
            graph: graph.clone(),
            rt,
            manifests,
            cores,
            next: AtomicUsize::new(0),
            paddable: paddable_symbols(graph),
            chunkable: chunkable_symbol(graph),
            caches,
            variables,
            id_inputs,
        })
    }

    /// The buckets loaded, in the cores' program order. A session bucket's `slots` counts the
    /// spare cache row too.
    pub fn buckets(&self) -> Vec<Bucket> {
        self.manifests.iter().map(|m| m.bucket.clone()).collect()
    }

    /// Runs every stateless program once on every core: a NEFF's first execution is slower.
    fn warm_up(&self) -> Result<()> {
        for core in &self.cores {
            let mut core = core.lock().unwrap_or_else(|e| e.into_inner());
            let core = &mut *core;
            for (p, manifest) in self.manifests.iter().enumerate() {
                if manifest
                    .arguments
                    .iter()
                    .any(|a| matches!(a.role, ArgumentRole::State { .. } | ArgumentRole::Variable { .. }))
                {
                    continue;
                }
                let loaded = &core.programs[p];
                let mut ins = TensorRefs::new(&self.rt).map_err(backend_err)?;
                let mut outs = TensorRefs::new(&self.rt).map_err(backend_err)?;
                for (i, arg) in manifest.arguments.iter().enumerate() {
                    let t = loaded.inputs[i].as_ref().unwrap_or_else(|| &core.weights[&arg.name]);
                    ins.add(&input_name(i), t).map_err(backend_err)?;
                }
                for (j, t) in loaded.outputs.iter().enumerate() {
                    outs.add(&output_name(j), t.as_ref().expect("stateless programs own their outputs"))
                        .map_err(backend_err)?;
                }
                match loaded.model.execute_refs(&ins, &outs) {
                    // Zeros may well give NaN (a norm of zeros): that is not a failure here.
                    Ok(()) | Err(NeuronError::Status { status: crate::NrtStatus(NUM_ERR), .. }) => {}
                    Err(e) => {
                        return Err(err(format!(
                            "warming up bucket {} on NeuronCore {}: {e}",
                            bucket_key(&manifest.bucket),
                            core.index
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether program `p` can run a step of these real sizes (padding what may be padded) with
    /// `slots` cache slots.
    fn fits(&self, p: usize, sizes: &BTreeMap<String, usize>, slots: Option<usize>, except: Option<&str>) -> bool {
        let bucket = &self.manifests[p].bucket;
        if bucket.slots != slots {
            return false;
        }
        sizes.iter().all(|(s, &n)| {
            if Some(s.as_str()) == except {
                return true;
            }
            match bucket.get(s) {
                Some(b) if self.paddable.contains(s) => b >= n,
                Some(b) => b == n,
                None => false,
            }
        })
    }

    fn cost(&self, p: usize) -> usize {
        self.manifests[p].bucket.dims.values().product()
    }

    fn plan(&self, sizes: &BTreeMap<String, usize>, slots: Option<usize>) -> Result<Plan> {
        let best =
            (0..self.manifests.len()).filter(|&p| self.fits(p, sizes, slots, None)).min_by_key(|&p| self.cost(p));
        if let Some(program) = best {
            return Ok(Plan::One { program });
        }
        if let (Some(symbol), Some(_)) = (&self.chunkable, slots) {
            if let Some(&total) = sizes.get(symbol) {
                // Each chunk takes the largest compiled size that fits what is left.
                let mut by_size: BTreeMap<usize, usize> = BTreeMap::new();
                for p in (0..self.manifests.len()).filter(|&p| self.fits(p, sizes, slots, Some(symbol))) {
                    if let Some(n) = self.manifests[p].bucket.get(symbol) {
                        let e = by_size.entry(n).or_insert(p);
                        if self.cost(p) < self.cost(*e) {
                            *e = p;
                        }
                    }
                }
                let mut chunks = Vec::new();
                let mut start = 0;
                while start < total {
                    let Some((&n, &p)) = by_size.range(..=total - start).next_back() else { break };
                    chunks.push((p, start, n));
                    start += n;
                }
                if start == total {
                    return Ok(Plan::Chunks { symbol: symbol.clone(), chunks });
                }
            }
        }
        Err(Error::Unsupported {
            backend: BACKEND.into(),
            what: format!(
                "a step of sizes {sizes:?}{} without a compiled bucket that holds it (loaded: {}; {})",
                slots.map(|s| format!(" with {} session slots", s - 1)).unwrap_or_default(),
                self.loaded_buckets(),
                if self.variables.is_empty() { "compile one with `accelrt compile`" } else { TRAINING_NEFFS }
            ),
        })
    }

    /// The loaded buckets as `accelrt compile --bucket` names them (a session's slots without
    /// the spare cache row).
    fn loaded_buckets(&self) -> String {
        let mut buckets: Vec<Bucket> = self
            .manifests
            .iter()
            .map(|m| {
                let mut b = m.bucket.clone();
                b.slots = b.slots.map(|s| s.saturating_sub(1));
                b
            })
            .collect();
        // By size, not as text (batch=8 before batch=32).
        buckets.sort_by_key(|b| (b.slots, b.dims.values().copied().collect::<Vec<_>>()));
        buckets.iter().map(bucket_key).collect::<Vec<_>>().join("; ")
    }

    /// A step (with a session state or without), checked, planned and run. A step that is refused
    /// (a bad cache write, no bucket that holds it) leaves the session's slot lengths as they were;
    /// one that fails in or after running a program too, except that a slot whose write started
    /// inside what it held is cut back to where the write started
    /// (`SessionState::restore_lengths_cut_back`): the device may have written the step's entries
    /// there, and device memory is not rolled back.
    fn step(&self, state: Option<&mut SessionState>, inputs: &[(&str, &HostTensor)]) -> Result<Outputs> {
        let bindings = self.graph.bind_inputs(inputs)?;
        for (name, rows) in &self.id_inputs {
            let ids = inputs.iter().find(|(n, _)| n == name).expect("inputs are bound").1;
            let ids = ids.to_i64_vec().expect("embedding ids are integers (checked by inference)");
            if let Some(bad) = ids.iter().find(|&&id| id < 0 || id as usize >= *rows) {
                return Err(Error::Input {
                    name: name.clone(),
                    message: format!("id {bad} is out of range for an embedding table of {rows} rows"),
                });
            }
        }
        let sizes: BTreeMap<String, usize> =
            input_symbols(&self.graph).into_iter().filter_map(|s| bindings.get(&s).map(|n| (s, n))).collect();
        // A stateless graph ignores a state (its sessions hold nothing).
        let mut state = if self.has_state() { state } else { None };
        let slots = match state.as_deref() {
            Some(state) => {
                let slots = state.inner::<NeuronState>(self.id)?.slots;
                (!self.caches.is_empty()).then_some(slots)
            }
            None if self.has_state() => {
                return Err(err("graphs with KV caches or training variables run with a session state"))
            }
            None => None,
        };
        // The cache writes are checked and recorded before the program runs (the device would
        // clamp a bad one); a step that is then refused or fails puts the lengths of the slots it
        // writes back, and reports its own error.
        let mut before = SlotLengths::new();
        let mut written = Vec::new();
        let mut kv_len = 0;
        if let Some(state) = state.as_deref_mut() {
            for c in &self.caches {
                state
                    .record_lengths(&mut before, &input_of(inputs, &c.slots).to_i64_vec().expect("slots are integers"));
            }
            match self.write_caches(state, inputs) {
                Ok((len, rows)) => (kv_len, written) = (len, rows),
                Err(e) => {
                    state.restore_lengths(&before);
                    return Err(e);
                }
            }
        }
        let plan = match self.plan(&sizes, slots) {
            Ok(plan) => plan,
            Err(e) => {
                if let Some(state) = state {
                    state.restore_lengths(&before);
                }
                return Err(e);
            }
        };
        let result = match state.as_deref_mut() {
            Some(state) => state
                .inner_mut::<NeuronState>(self.id)
                .and_then(|inner| self.run_plan(plan, inputs, &sizes, kv_len, Some(inner))),
            None => self.run_plan(plan, inputs, &sizes, kv_len, None),
        };
        if let (Err(_), Some(state)) = (&result, state) {
            let ran = self.caches.iter().zip(&written).flat_map(|(c, rows)| rows.iter().map(move |&r| (c.index, r)));
            state.restore_lengths_cut_back(&before, ran);
        }
        result
    }

    /// Runs a planned step: one program, or its chunks one after the other on the same caches.
    fn run_plan(
        &self,
        plan: Plan,
        inputs: &[(&str, &HostTensor)],
        sizes: &BTreeMap<String, usize>,
        kv_len: usize,
        inner: Option<&mut NeuronState>,
    ) -> Result<Outputs> {
        match plan {
            Plan::One { program } => self.run_program(program, inputs, sizes, kv_len, inner),
            Plan::Chunks { symbol, chunks } => {
                let mut inner = inner;
                let mut last = None;
                for (program, start, len) in chunks {
                    let sliced = slice_inputs(&self.graph, inputs, &symbol, start, len)?;
                    let feed: Vec<(&str, &HostTensor)> = sliced.iter().map(|(n, t)| (n.as_str(), t)).collect();
                    let mut chunk_sizes = sizes.clone();
                    chunk_sizes.insert(symbol.clone(), len);
                    last = Some(self.run_program(program, &feed, &chunk_sizes, kv_len, inner.as_deref_mut())?);
                }
                Ok(last.expect("a plan has at least one chunk"))
            }
        }
    }

    /// Checks the step's write into every cache against the rules of `Op::KvCache` and records
    /// it (`SessionState::plan_cache_write`): the cached length the step yields, and each cache's
    /// rows. A refusal may leave earlier caches' writes recorded (the step puts the lengths back).
    fn write_caches(
        &self,
        state: &mut SessionState,
        inputs: &[(&str, &HostTensor)],
    ) -> Result<(usize, Vec<Vec<accelrt_core::RowWrite>>)> {
        let mut kv_len = 0;
        let mut rows = Vec::with_capacity(self.caches.len());
        for c in &self.caches {
            let positions = input_of(inputs, &c.positions).to_i64_vec().expect("positions are integers");
            let slots = input_of(inputs, &c.slots).to_i64_vec().expect("slots are integers");
            let write = state
                .plan_cache_write(c.index, c.capacity, &positions, &slots)
                .map_err(|e| Error::node(&c.name, format!("kv_cache: {e}")))?;
            kv_len = kv_len.max(write.kv_len);
            rows.push(write.rows);
        }
        Ok((kv_len, rows))
    }

    /// Runs program `p` on real-sized `inputs`: pads them into its tensors, binds weights and
    /// caches, executes, and cuts the outputs back.
    fn run_program(
        &self,
        p: usize,
        inputs: &[(&str, &HostTensor)],
        sizes: &BTreeMap<String, usize>,
        kv_len: usize,
        state: Option<&mut NeuronState>,
    ) -> Result<Outputs> {
        let manifest = &self.manifests[p];
        let mut guard = match &state {
            Some(s) => self.cores[s.core].lock().unwrap_or_else(|e| e.into_inner()),
            None => {
                // Spread callers over the cores: the next in turn if free, else the first free one,
                // else wait for the next in turn.
                let n = self.cores.len();
                let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
                (0..n)
                    .find_map(|i| self.cores[(start + i) % n].try_lock().ok())
                    .unwrap_or_else(|| self.cores[start].lock().unwrap_or_else(|e| e.into_inner()))
            }
        };
        let core = &mut *guard;
        let spare = state.as_ref().and_then(|s| s.slots.checked_sub(1));
        let loaded = &mut core.programs[p];
        for (i, arg) in manifest.arguments.iter().enumerate() {
            if arg.role != ArgumentRole::Input {
                continue;
            }
            let host = inputs
                .iter()
                .find(|(n, _)| *n == arg.name)
                .map(|(_, t)| *t)
                .ok_or_else(|| Error::Input { name: arg.name.clone(), message: "missing".into() })?;
            let elem = host.dtype().size_in_bytes().expect("inputs are plain types");
            let mut bytes = pad(&host.to_le_bytes(), elem, host.shape(), &arg.shape);
            if let Some(spare) = spare {
                if self.caches.iter().any(|c| c.slots == arg.name) && arg.shape[0] > host.shape()[0] {
                    // Padded rows write to the spare slot, never to a live sequence's.
                    let spare = HostTensor::from_f64(host.dtype(), vec![1], &[spare as f64])?.to_le_bytes();
                    for row in host.shape()[0]..arg.shape[0] {
                        bytes[row * elem..(row + 1) * elem].copy_from_slice(&spare);
                    }
                }
            }
            loaded.inputs[i].as_mut().expect("allocated for inputs").write(&bytes, 0).map_err(backend_err)?;
        }
        let caches: &[Tensor] = state.as_ref().map(|s| s.caches.as_slice()).unwrap_or(&[]);
        let variables: &[VariableTensors] = state.as_ref().map(|s| s.variables.as_slice()).unwrap_or(&[]);
        // A variable's value is its `current` tensor; the program writes the next one into `next`.
        let variable = |name: &str| -> Result<&VariableTensors> {
            let k = self.variable_index(name)?;
            variables.get(k).ok_or_else(|| err("a program with training variables run without a session"))
        };
        let mut ins = TensorRefs::new(&self.rt).map_err(backend_err)?;
        let mut outs = TensorRefs::new(&self.rt).map_err(backend_err)?;
        let mut cache = 0;
        for (i, arg) in manifest.arguments.iter().enumerate() {
            let t = match &arg.role {
                ArgumentRole::Input => loaded.inputs[i].as_ref().expect("allocated for inputs"),
                ArgumentRole::Weight { .. } => &core.weights[&arg.name],
                ArgumentRole::State { .. } => {
                    cache += 1;
                    &caches[cache - 1]
                }
                ArgumentRole::Variable { variable: name, .. } => &variable(name)?.current,
            };
            ins.add(&input_name(i), t).map_err(backend_err)?;
        }
        let state_args: Vec<&str> = manifest
            .arguments
            .iter()
            .filter_map(|a| match &a.role {
                ArgumentRole::State { cache } => Some(cache.as_str()),
                _ => None,
            })
            .collect();
        for (j, out) in manifest.outputs.iter().enumerate() {
            let t = match &out.role {
                OutputRole::Output => loaded.outputs[j].as_ref().expect("allocated for outputs"),
                // The updated cache goes into the cache's own tensor (the module aliases the two).
                OutputRole::State { cache } => {
                    let k = state_args.iter().position(|c| c == cache).expect("every state output has its argument");
                    &caches[k]
                }
                OutputRole::Variable { variable: name } => &variable(name)?.next,
            };
            outs.add(&output_name(j), t).map_err(backend_err)?;
        }
        loaded.model.execute_refs(&ins, &outs).map_err(backend_err)?;
        drop((ins, outs));

        let mut results = Vec::new();
        let mut graph_output = 0;
        for (j, out) in manifest.outputs.iter().enumerate() {
            if out.role != OutputRole::Output {
                continue;
            }
            let (name, id) = &self.graph.outputs()[graph_output];
            graph_output += 1;
            let node = self.graph.node(*id);
            let tensor = loaded.outputs[j].as_ref().expect("allocated for outputs");
            let mut buf = vec![0u8; tensor.size()];
            tensor.read(&mut buf, 0).map_err(backend_err)?;
            let real: Vec<usize> = node
                .shape
                .dims()
                .iter()
                .zip(&out.shape)
                .map(|(d, &padded)| match d {
                    Dim::Fixed(n) => Ok(*n),
                    Dim::Sym(s) if s == KV_LEN && !self.caches.is_empty() => Ok(kv_len),
                    Dim::Sym(s) => match sizes.get(s) {
                        Some(&n) => Ok(n),
                        // A size derived inside the graph: exact only when nothing was padded.
                        None if manifest.bucket.dims == *sizes => Ok(padded),
                        None => Err(err(format!(
                            "output `{name}` has a size the graph derives (`{s}`); run it at a compiled bucket's exact sizes"
                        ))),
                    },
                })
                .collect::<Result<_>>()?;
            let elem = out.dtype.size_in_bytes().expect("outputs are plain types");
            let bytes = unpad(&buf, elem, &out.shape, &real);
            results.push((name.clone(), HostTensor::from_le_bytes(out.dtype, real, &bytes)?));
        }
        // The run succeeded and its outputs are read: the variables' next values become current.
        // Nothing before this point touched them, so a step refused or failed above left them as
        // they were.
        if let Some(state) = state {
            for out in &manifest.outputs {
                if let OutputRole::Variable { variable } = &out.role {
                    let v = &mut state.variables[self.variable_index(variable)?];
                    std::mem::swap(&mut v.current, &mut v.next);
                }
            }
        }
        Ok(Outputs::new(results))
    }

    /// Whether runs need a session state: the graph has caches or variables.
    fn has_state(&self) -> bool {
        !self.caches.is_empty() || !self.variables.is_empty()
    }

    fn variable_index(&self, name: &str) -> Result<usize> {
        self.variables.iter().position(|v| v.name == name).ok_or_else(|| Error::Graph(format!("no variable `{name}`")))
    }
}

/// The input named `name` (bound, so present).
fn input_of<'a>(inputs: &[(&str, &'a HostTensor)], name: &str) -> &'a HostTensor {
    inputs.iter().find(|(n, _)| *n == name).expect("inputs are bound").1
}

/// `inputs` with every axis of `symbol` cut to `start..start + len` (other inputs unchanged).
fn slice_inputs(
    graph: &Graph,
    inputs: &[(&str, &HostTensor)],
    symbol: &str,
    start: usize,
    len: usize,
) -> Result<Vec<(String, HostTensor)>> {
    let mut out = Vec::new();
    for (name, host) in inputs {
        let node = graph.inputs().find(|(_, n)| n.name == *name).map(|(_, n)| n);
        let axis = node.and_then(|n| n.shape.dims().iter().position(|d| matches!(d, Dim::Sym(s) if s == symbol)));
        let tensor = match axis {
            None => (*host).clone(),
            Some(axis) => {
                let shape = host.shape().to_vec();
                let elem = host.dtype().size_in_bytes().expect("inputs are plain types");
                let outer: usize = shape[..axis].iter().product();
                let inner: usize = shape[axis + 1..].iter().product::<usize>() * elem;
                let bytes = host.to_le_bytes();
                let mut cut = Vec::with_capacity(outer * len * inner);
                for o in 0..outer {
                    let row = o * shape[axis] * inner;
                    cut.extend_from_slice(&bytes[row + start * inner..row + (start + len) * inner]);
                }
                let mut new_shape = shape;
                new_shape[axis] = len;
                HostTensor::from_le_bytes(host.dtype(), new_shape, &cut)?
            }
        };
        out.push((name.to_string(), tensor));
    }
    Ok(out)
}

impl Executable for NeuronExecutable {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn run(&self, inputs: &[(&str, &HostTensor)]) -> Result<Outputs> {
        // A graph with caches runs on empty ones, and one with variables on their initial values.
        if !self.has_state() {
            self.step(None, inputs)
        } else {
            let mut state = self.new_state(accelrt_core::one_shot_slots(&self.graph, inputs))?;
            self.step(Some(&mut state), inputs)
        }
    }

    /// Allocates every cache of the graph on one core (taken in turn), zeroed, with `slots + 1`
    /// rows: the last is the spare slot padded batch rows write to. A training graph's variables
    /// go on that core too (two tensors each, the current one holding the initial value).
    fn new_state(&self, slots: usize) -> Result<SessionState> {
        if !self.has_state() {
            return Ok(SessionState::new(BACKEND, self.id, slots, Box::new(())));
        }
        if self.caches.is_empty() {
            let core = self.next.fetch_add(1, Ordering::Relaxed) % self.cores.len();
            let variables = self.new_variables(core)?;
            return Ok(SessionState::new(
                BACKEND,
                self.id,
                slots,
                Box::new(NeuronState { core, slots: 0, caches: Vec::new(), variables }),
            ));
        }
        // The smallest compiled session that holds `slots` sequences (and its spare row): a session
        // of 1 runs on programs compiled for 8, its caches simply have rows it never uses.
        let Some(manifest) =
            self.manifests.iter().filter(|m| m.bucket.slots.is_some_and(|s| s > slots)).min_by_key(|m| m.bucket.slots)
        else {
            return Err(Error::Unsupported {
                backend: BACKEND.into(),
                what: format!(
                    "a session of {slots} sequence(s) without NEFFs compiled for it (loaded: {}; compile buckets \
                     with slots={slots})",
                    self.loaded_buckets()
                ),
            });
        };
        let core = self.next.fetch_add(1, Ordering::Relaxed) % self.cores.len();
        let core_index = self.cores[core].lock().unwrap_or_else(|e| e.into_inner()).index;
        let mut caches = Vec::new();
        for arg in manifest.arguments.iter().filter(|a| matches!(a.role, ArgumentRole::State { .. })) {
            let bytes = arg.dtype.storage_bytes(arg.shape.iter().product()).expect("caches are plain floats");
            let mut t = Tensor::allocate(&self.rt, core_index, bytes, &arg.name).map_err(backend_err)?;
            t.write(&vec![0u8; bytes], 0).map_err(backend_err)?;
            caches.push(t);
        }
        let total = manifest.bucket.slots.expect("filtered above");
        Ok(SessionState::new(
            BACKEND,
            self.id,
            slots,
            Box::new(NeuronState { core, slots: total, caches, variables: Vec::new() }),
        ))
    }

    fn run_with_state(&self, state: &mut SessionState, inputs: &[(&str, &HostTensor)]) -> Result<Outputs> {
        // Before anything reads or records into the state (the cache plan), even for a graph
        // without caches: a state runs only with the executable that made it.
        state.check_owner(self.id)?;
        self.step(Some(state), inputs)
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Reads the variable's current tensor back from the session's core.
    fn read_variable(&self, state: &SessionState, name: &str) -> Result<HostTensor> {
        state.check_owner(self.id)?;
        let k = self.variable_index(name)?;
        let inner = state.inner::<NeuronState>(self.id)?;
        let v = &self.variables[k];
        let mut bytes = vec![0u8; v.bytes()];
        // One call on a core at a time, as for runs.
        let _core = self.cores[inner.core].lock().unwrap_or_else(|e| e.into_inner());
        inner.variables[k].current.read(&mut bytes, 0).map_err(backend_err)?;
        HostTensor::from_le_bytes(v.dtype, v.shape.clone(), &bytes)
    }

    /// Writes `value` into the variable's spare tensor, which then becomes its current one: a
    /// write that fails leaves the variable as it was.
    fn write_variable(&self, state: &mut SessionState, name: &str, value: &HostTensor) -> Result<()> {
        state.check_owner(self.id)?;
        let k = self.variable_index(name)?;
        let v = &self.variables[k];
        accelrt_core::check_variable_value(name, v.dtype, &v.shape, value)?;
        let inner = state.inner_mut::<NeuronState>(self.id)?;
        let _core = self.cores[inner.core].lock().unwrap_or_else(|e| e.into_inner());
        let pair = &mut inner.variables[k];
        pair.next.write(&value.to_le_bytes(), 0).map_err(backend_err)?;
        std::mem::swap(&mut pair.current, &mut pair.next);
        Ok(())
    }
}

impl NeuronExecutable {
    /// Every variable of the graph on core `core` (an index into `cores`): its current tensor
    /// holding the initial value, and the tensor the next step writes.
    fn new_variables(&self, core: usize) -> Result<Vec<VariableTensors>> {
        let core_index = self.cores[core].lock().unwrap_or_else(|e| e.into_inner()).index;
        let mut out = Vec::with_capacity(self.variables.len());
        for v in &self.variables {
            let bytes = v.bytes();
            let mut current = Tensor::allocate(&self.rt, core_index, bytes, &v.name).map_err(backend_err)?;
            match &v.initial {
                Some(initial) => current.write(initial, 0),
                None => current.write(&vec![0u8; bytes], 0),
            }
            .map_err(backend_err)?;
            let next =
                Tensor::allocate(&self.rt, core_index, bytes, &format!("{}.next", v.name)).map_err(backend_err)?;
            out.push(VariableTensors { current, next });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `$ACCELRT_NEURON_TARGET` takes exactly the targets `accelrt compile` makes NEFFs for, and a
    /// refusal names them all.
    #[test]
    fn the_backend_accepts_the_compile_targets_and_no_other() {
        for target in TARGETS {
            assert_eq!(check_target(target), Ok(()));
        }
        for bad in ["inf1", "trn3", "INF2", ""] {
            let reason = check_target(bad).unwrap_err();
            assert_eq!(reason, format!("{bad}: the targets are {}", TARGETS.join(", ")));
        }
    }
}
