//! The Neuron `Backend`: a graph runs from NEFF programs compiled ahead of time for static shape
//! buckets, found in a compile cache keyed by the graph's content hash, the hash of the weights the
//! NEFF embeds, the target and the bucket, each NEFF with a manifest that is checked at load
//! (`crate::cache`).
//!
//! At prepare time every bucket's NEFF is loaded on every NeuronCore of the device range, its
//! tensors are allocated and it is run once (warm-up). A run picks the smallest bucket that holds
//! the inputs, pads the inputs with zeros along their symbolic axes, runs on a free core (requests
//! from several threads spread over the range), and cuts the outputs back to the real sizes. Padding
//! is only correct for graphs that mask padded positions (as BERT's attention mask does) or whose
//! outputs do not depend on them; a bucket list equal to the real shapes avoids padding altogether.

pub use crate::cache::{bucket_key, Bucket};
use crate::cache::{weights_hash, NeffKey};
use crate::runtime::{Model, Runtime, Tensor, TensorInfo, TensorSet, TensorUsage};
use crate::status::NeuronError;
use accelrt_core::padding::{pad, unpad};
use accelrt_core::{
    Backend, DType, DeviceInfo, DeviceKind, DeviceSpec, Dim, Error, Executable, Graph, HostTensor, Op, Outputs,
    PrepareOptions, Result, SessionState, WeightSource,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

const BACKEND: &str = "neuron";

/// Environment variables that configure the backend (see docs/neuron.md).
pub const NEFF_CACHE_ENV: &str = "ACCELRT_NEFF_CACHE";
pub const TARGET_ENV: &str = "ACCELRT_NEURON_TARGET";
pub const BUCKETS_ENV: &str = "ACCELRT_NEURON_BUCKETS";

fn backend_err(e: NeuronError) -> Error {
    Error::Backend { backend: BACKEND.into(), message: e.to_string() }
}

/// Where NEFFs are looked up, for which chip, and the static sizes each symbolic dimension may take.
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronOptions {
    pub cache_dir: PathBuf,
    /// `inf2`, `trn1` or `trn2` (neuronx-cc's `--target`).
    pub target: String,
    /// Sizes per symbol, ascending (e.g. batch → [1, 2, 4, 8], seq → [32, 64, 128]).
    pub buckets: BTreeMap<String, Vec<usize>>,
}

impl NeuronOptions {
    /// `$ACCELRT_NEFF_CACHE` (else `neff/` in the cache directory, `~/.cache/accelrt/neff` by default), `$ACCELRT_NEURON_TARGET` (else inf2), and
    /// `$ACCELRT_NEURON_BUCKETS` as `batch=1,2,4;seq=32,64,128` (else batch 1…32, seq 32…512).
    pub fn from_env() -> std::result::Result<NeuronOptions, String> {
        let cache_dir = match std::env::var_os(NEFF_CACHE_ENV).filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => accelrt_core::files::default_cache_dir().join("neff"),
        };
        let target = std::env::var(TARGET_ENV).unwrap_or_else(|_| "inf2".into());
        let buckets = match std::env::var(BUCKETS_ENV) {
            Ok(spec) => parse_buckets(&spec)?,
            Err(_) => parse_buckets("batch=1,2,4,8,16,32;seq=32,64,128,256,512").expect("valid default"),
        };
        Ok(NeuronOptions { cache_dir, target, buckets })
    }
}

/// Parses `sym=a,b,c;sym2=…`.
pub fn parse_buckets(spec: &str) -> std::result::Result<BTreeMap<String, Vec<usize>>, String> {
    let mut out = BTreeMap::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, sizes) = part.split_once('=').ok_or_else(|| format!("bucket `{part}` is not sym=a,b,…"))?;
        let mut sizes: Vec<usize> = sizes
            .split(',')
            .map(|s| s.trim().parse::<usize>().map_err(|_| format!("bucket size `{s}` of `{name}` is not a number")))
            .collect::<std::result::Result<_, _>>()?;
        sizes.sort_unstable();
        sizes.dedup();
        if sizes.is_empty() || sizes[0] == 0 {
            return Err(format!("bucket `{name}` needs sizes ≥ 1"));
        }
        out.insert(name.trim().to_string(), sizes);
    }
    Ok(out)
}

/// The symbols of the graph's inputs, in a fixed order.
fn input_symbols(graph: &Graph) -> Vec<String> {
    let mut syms: Vec<String> = graph
        .inputs()
        .flat_map(|(_, n)| {
            n.shape.0.iter().filter_map(|d| match d {
                Dim::Sym(s) => Some(s.clone()),
                Dim::Fixed(_) => None,
            })
        })
        .collect();
    syms.sort();
    syms.dedup();
    syms
}

/// Every combination of bucket sizes for `symbols`.
fn all_buckets(symbols: &[String], buckets: &BTreeMap<String, Vec<usize>>) -> Result<Vec<Bucket>> {
    let mut out = vec![Bucket::new()];
    for s in symbols {
        let sizes = buckets.get(s).ok_or_else(|| Error::Unsupported {
            backend: BACKEND.into(),
            what: format!("the symbolic dimension `{s}` without a bucket list (set {BUCKETS_ENV}, e.g. `{s}=1,2,4`)"),
        })?;
        out = out
            .into_iter()
            .flat_map(|b| {
                sizes.iter().map(move |&n| {
                    let mut b = b.clone();
                    b.insert(s.clone(), n);
                    b
                })
            })
            .collect();
    }
    Ok(out)
}

pub struct NeuronBackend {
    spec: DeviceSpec,
    first: u32,
    count: u32,
    rt: Arc<Runtime>,
    options: NeuronOptions,
    info: DeviceInfo,
}

impl NeuronBackend {
    /// Opens NeuronCores `first..first+count` of this machine with options from the environment.
    pub fn new(spec: &DeviceSpec) -> Result<NeuronBackend> {
        let options =
            NeuronOptions::from_env().map_err(|reason| Error::InvalidDevice { spec: spec.to_string(), reason })?;
        NeuronBackend::with_options(spec, options)
    }

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
        Ok(NeuronBackend { spec: spec.clone(), first, count, rt, options, info })
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

    /// The weights are compiled into the NEFFs: they are read once here only to hash them, since
    /// the hash is part of the cache key (`crate::cache`).
    fn prepare(
        &self,
        graph: &Graph,
        weights: &dyn WeightSource,
        options: &PrepareOptions,
    ) -> Result<Box<dyn Executable>> {
        if let Some(dtype) = options.compute_dtype {
            return Err(Error::Unsupported {
                backend: BACKEND.into(),
                what: format!(
                    "a compute dtype override ({dtype}); compile the NEFF with neuronx-cc --auto-cast instead"
                ),
            });
        }
        if let Some(node) = graph.nodes().iter().find(|n| matches!(n.op, Op::KvCache { .. })) {
            return Err(Error::Unsupported {
                backend: BACKEND.into(),
                what: format!("session state (`{}` is a KV cache); it needs the compile path, a later step", node.name),
            });
        }
        let symbols = input_symbols(graph);
        let buckets = all_buckets(&symbols, &self.options.buckets)?;
        let weights = weights_hash(graph, weights)?;
        let cache = &self.options.cache_dir;
        let mut programs = Vec::new();
        for bucket in buckets {
            let key = NeffKey::new(graph, &weights, &self.options.target, &bucket);
            let path = key.neff_path(cache);
            let neff = std::fs::read(&path).map_err(|e| Error::Backend {
                backend: BACKEND.into(),
                message: format!(
                    "no NEFF for bucket {} (target {}) at {} ({e}); compile it with `neuronx-cc compile {}.hlo.pb --framework XLA --target {} --output {}` and write beside it the manifest {} containing {} (exporting accelrt graphs to HLO is not implemented yet: docs/neuron.md)",
                    bucket_key(&bucket),
                    self.options.target,
                    path.display(),
                    graph.name(),
                    self.options.target,
                    path.display(),
                    key.manifest_path(cache).display(),
                    key.manifest_json(graph.name()),
                ),
            })?;
            key.check_manifest(cache).map_err(|message| Error::Backend { backend: BACKEND.into(), message })?;
            let mut cores = Vec::new();
            for core in self.first..self.first + self.count {
                cores.push(Mutex::new(Loaded::new(&self.rt, &neff, core, graph, &bucket)?));
            }
            programs.push(Program { bucket, cores });
        }
        let exe = NeuronExecutable { graph: graph.clone(), programs, next: std::sync::atomic::AtomicUsize::new(0) };
        // Warm every program on every core: the first execution of a NEFF is slower.
        for program in &exe.programs {
            for core in &program.cores {
                let mut guard = core.lock().unwrap_or_else(|e| e.into_inner());
                let loaded = &mut *guard;
                loaded.model.execute(&loaded.inputs, &mut loaded.outputs).map_err(backend_err)?;
            }
        }
        Ok(Box::new(exe))
    }
}

/// One bucket's program loaded on one core, with its tensors allocated once.
struct Loaded {
    model: Model,
    inputs: TensorSet,
    outputs: TensorSet,
    /// Graph input/output name → the model tensor's info.
    info: Vec<TensorInfo>,
}

impl Loaded {
    fn new(rt: &Arc<Runtime>, neff: &[u8], core: u32, graph: &Graph, bucket: &Bucket) -> Result<Loaded> {
        let model = Model::load(rt, neff, Some(core)).map_err(backend_err)?;
        let info = model.tensor_info().map_err(backend_err)?;
        // The NEFF must match the graph: every input and output, with the bucket's byte size. The
        // runtime's dtype code is not trusted (its numbering changed between SDK versions).
        let expect = |name: &str, dtype: DType, shape: &[Dim], usage: TensorUsage| -> Result<()> {
            let t = info.iter().find(|t| t.name == name && t.usage == usage).ok_or_else(|| Error::Backend {
                backend: BACKEND.into(),
                message: format!("the NEFF for bucket {} has no {usage:?} tensor `{name}`", bucket_key(bucket)),
            })?;
            let elements: usize = shape.iter().map(|d| concrete(d, bucket).unwrap_or(0)).product();
            let bytes = dtype.storage_bytes(elements).unwrap_or(0);
            if t.size != bytes {
                return Err(Error::Backend {
                    backend: BACKEND.into(),
                    message: format!(
                        "the NEFF's `{name}` has {} bytes, the graph needs {bytes} for bucket {}",
                        t.size,
                        bucket_key(bucket)
                    ),
                });
            }
            Ok(())
        };
        for (_, n) in graph.inputs() {
            expect(&n.name, n.dtype, &n.shape.0, TensorUsage::Input)?;
        }
        let mut inputs = TensorSet::new(rt).map_err(backend_err)?;
        let mut outputs = TensorSet::new(rt).map_err(backend_err)?;
        for t in &info {
            let tensor = Tensor::allocate(rt, core, t.size, &t.name).map_err(backend_err)?;
            match t.usage {
                TensorUsage::Input => inputs.add(tensor),
                TensorUsage::Output => outputs.add(tensor),
            }
            .map_err(backend_err)?;
        }
        Ok(Loaded { model, inputs, outputs, info })
    }
}

fn concrete(d: &Dim, bucket: &Bucket) -> Option<usize> {
    match d {
        Dim::Fixed(n) => Some(*n),
        Dim::Sym(s) => bucket.get(s).copied(),
    }
}

struct Program {
    bucket: Bucket,
    /// The program on each core of the range; a run takes a free one.
    cores: Vec<Mutex<Loaded>>,
}

pub struct NeuronExecutable {
    graph: Graph,
    programs: Vec<Program>,
    next: std::sync::atomic::AtomicUsize,
}

impl NeuronExecutable {
    /// The smallest bucket holding every symbol's size.
    fn pick(&self, sizes: &BTreeMap<String, usize>) -> Result<&Program> {
        self.programs
            .iter()
            .filter(|p| p.bucket.iter().all(|(s, &n)| sizes.get(s).is_none_or(|&have| have <= n)))
            .min_by_key(|p| p.bucket.values().product::<usize>())
            .ok_or_else(|| Error::Unsupported {
                backend: BACKEND.into(),
                what: format!(
                    "inputs of sizes {sizes:?}: larger than every prepared bucket ({})",
                    self.programs.iter().map(|p| bucket_key(&p.bucket)).collect::<Vec<_>>().join("; ")
                ),
            })
    }
}

impl Executable for NeuronExecutable {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn run(&self, inputs: &[(&str, &HostTensor)]) -> Result<Outputs> {
        let bindings = self.graph.bind_inputs(inputs)?;
        let sizes: BTreeMap<String, usize> =
            input_symbols(&self.graph).into_iter().filter_map(|s| bindings.get(&s).map(|n| (s, n))).collect();
        let program = self.pick(&sizes)?;
        // Spread callers over the cores: start at the next core in turn, take the first free one,
        // else wait for that one.
        let n = program.cores.len();
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
        let mut loaded = (0..n)
            .find_map(|i| program.cores[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| program.cores[start].lock().unwrap_or_else(|e| e.into_inner()));
        let loaded = &mut *loaded;
        for (_, node) in self.graph.inputs() {
            let host = inputs.iter().find(|(name, _)| *name == node.name).expect("bound above").1;
            let elem = host.dtype().size_in_bytes().expect("inputs are plain types");
            let to: Vec<usize> = node.shape.0.iter().map(|d| concrete(d, &program.bucket).expect("bucketed")).collect();
            let bytes = pad(&host.to_le_bytes(), elem, host.shape(), &to);
            let tensor = loaded.inputs.get_mut(&node.name).expect("checked at prepare");
            tensor.write(&bytes, 0).map_err(backend_err)?;
        }
        loaded.model.execute(&loaded.inputs, &mut loaded.outputs).map_err(backend_err)?;
        let mut outputs = Vec::new();
        for (name, id) in self.graph.outputs() {
            let node = self.graph.node(*id);
            let info =
                loaded.info.iter().find(|t| t.name == *name && t.usage == TensorUsage::Output).ok_or_else(|| {
                    Error::Backend { backend: BACKEND.into(), message: format!("the NEFF has no output `{name}`") }
                })?;
            let tensor = loaded.outputs.get(name).expect("allocated at prepare");
            let mut buf = vec![0u8; tensor.size()];
            tensor.read(&mut buf, 0).map_err(backend_err)?;
            let elem = node.dtype.size_in_bytes().expect("outputs are plain types");
            let padded: Vec<usize> = info.shape.iter().map(|&d| d as usize).collect();
            let real: Vec<usize> = node
                .shape
                .0
                .iter()
                .zip(&padded)
                .map(|(d, &p)| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Sym(s) => bindings.get(s).unwrap_or(p),
                })
                .collect();
            if padded.len() != real.len() || padded.iter().zip(&real).any(|(p, r)| r > p) {
                return Err(Error::Backend {
                    backend: BACKEND.into(),
                    message: format!("output `{name}` has shape {padded:?} in the NEFF, {real:?} expected"),
                });
            }
            let bytes = unpad(&buf, elem, &padded, &real);
            outputs.push((name.clone(), HostTensor::from_le_bytes(node.dtype, real, &bytes)?));
        }
        Ok(Outputs::new(outputs))
    }

    fn new_state(&self, _slots: usize) -> Result<SessionState> {
        Err(Error::Unsupported { backend: BACKEND.into(), what: "session state (KV caches)".into() })
    }

    fn run_with_state(&self, _state: &mut SessionState, _inputs: &[(&str, &HostTensor)]) -> Result<Outputs> {
        Err(Error::Unsupported { backend: BACKEND.into(), what: "session state (KV caches)".into() })
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
