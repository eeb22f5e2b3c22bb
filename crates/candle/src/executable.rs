//! A graph prepared on a candle device: weights uploaded once, then runs op by op.

use crate::convert::{candle_err, download, to_candle_dtype, upload, upload_weight, BACKEND};
use crate::linear::PackedLinear;
use crate::ops::{eval, RunContext};
use crate::padding::RowSkip;
use crate::quantized::QuantWeight;
use accelrt_core::{
    load_weight, one_shot_slots, DType, Error, Executable, ExecutableId, Graph, HostTensor, Op, Outputs, Result,
    SessionState, SlotLengths, ValueId, VariableInit, WeightSource,
};
use candle_core::{Device, Tensor};
use std::collections::{HashMap, HashSet};

/// A graph prepared by [`CandleBackend`](crate::CandleBackend): weights uploaded once (GGUF blocks
/// stay quantised; on a CPU, f32 linear-layer weights are packed for accelrt's own kernels), then
/// each run evaluates the graph node by node on the device, freeing every value after its last
/// use. Sessions keep KV caches and graph variables as candle tensors.
pub struct CandleExecutable {
    graph: Graph,
    /// Stamped into every session state this executable makes; only it may run with them.
    id: ExecutableId,
    device: Device,
    /// The dtype floating-point work runs in, when the caller overrode the graph's. `None` also
    /// when bf16 was asked for on a CPU with AVX-512 BF16: then only the linear layers' products
    /// are bf16 (their weights are packed so), as under torch.autocast.
    compute_override: Option<candle_core::DType>,
    /// Uploaded weights, by node index.
    weights: HashMap<usize, Tensor>,
    /// Block-quantised weights, by node index (they stay quantised; see `QuantWeight`).
    quant: HashMap<usize, QuantWeight>,
    /// f32 linear-layer weights packed for the CPU kernels (`crate::linear`; in bf16 when bf16 was
    /// asked for), by node index; they are not uploaded as tensors.
    packed: HashMap<usize, PackedLinear>,
    /// Linear layers that may leave padded rows uncomputed, and the mask input that says which
    /// rows are padding (`crate::padding`).
    row_skip: Option<RowSkip>,
    /// Initial values of variables initialised from weights, by node index, in their declared
    /// dtype (a session's first step reads them; zero-initialised ones are made on first use).
    initial: HashMap<usize, Tensor>,
    /// Weights that only ever serve as a linear layer's [out, in] matrix are stored transposed,
    /// [in, out] and contiguous: the GEMM then reads them row-major, which is faster, most of all
    /// for the few-row products of batch-1 inference.
    transposed: HashSet<usize>,
    /// For each node, the index of the last node that reads it (values are freed after it).
    last_use: Vec<usize>,
    /// Graph inputs whose integer values index an embedding table: (input node, table rows).
    /// Checked on the host before a run, so bad ids are an input error, not a device fault.
    id_inputs: Vec<(usize, usize)>,
    /// Time per op kind, when `ACCELRT_PROFILE` is set; printed to stderr when the executable is dropped.
    profile: Option<std::sync::Mutex<std::collections::BTreeMap<&'static str, (std::time::Duration, u64)>>>,
}

/// Set this environment variable to print where a prepared graph's run time goes, per op kind.
/// On a GPU the times are launch times unless the device synchronises inside the op.
pub const PROFILE_ENV: &str = "ACCELRT_PROFILE";

impl Drop for CandleExecutable {
    fn drop(&mut self) {
        let Some(profile) = &self.profile else { return };
        let table = profile.lock().unwrap_or_else(|e| e.into_inner());
        let total: f64 = table.values().map(|(d, _)| d.as_secs_f64()).sum();
        eprintln!("accelrt profile of `{}` (time per op kind, all runs):", self.graph.name());
        let mut rows: Vec<_> = table.iter().collect();
        rows.sort_by_key(|(_, (d, _))| std::cmp::Reverse(*d));
        for (kind, (d, n)) in rows {
            let ms = d.as_secs_f64() * 1e3;
            eprintln!("  {kind:<14} {ms:>10.1} ms {:>5.1} % {n:>9} calls", 100.0 * d.as_secs_f64() / total.max(1e-12));
        }
    }
}

impl CandleExecutable {
    pub(crate) fn prepare(
        graph: &Graph,
        weights: &dyn WeightSource,
        device: Device,
        compute_dtype: Option<DType>,
    ) -> Result<CandleExecutable> {
        let compute_override = match compute_dtype {
            None => None,
            Some(d) if d.is_float() => Some(to_candle_dtype(d)?),
            Some(d) => return Err(Error::Unsupported { backend: BACKEND.into(), what: format!("compute dtype {d}") }),
        };
        let transposed = linear_only_weights(graph);
        // On a CPU with AVX-512 BF16, bf16 work follows torch.autocast's CPU policy: the linear
        // layers multiply bf16 weights by bf16 activations with f32 sums (the packed kernel), and
        // everything else stays in f32. candle's bf16 element-wise ops, norms and softmax convert
        // element by element, which made a bf16 MiniLM forward slower than the f32 one
        // (docs/PERFORMANCE.md); f32 there is both faster and closer to the reference.
        let bf16_products =
            device.is_cpu() && compute_override == Some(candle_core::DType::BF16) && crate::linear::available_bf16();
        let compute_override = if bf16_products { None } else { compute_override };
        // f32 linear weights go to the packed CPU kernels (bf16-packed under `bf16_products`).
        let pack = device.is_cpu() && compute_override.is_none() && crate::linear::available();
        let mut uploaded = HashMap::new();
        let mut quant = HashMap::new();
        let mut packed = HashMap::new();
        for (id, node) in graph.weights() {
            let view = load_weight(weights, node)?;
            if let DType::Quant(_) = view.dtype {
                quant.insert(id.index(), QuantWeight::upload(&view, &device)?);
                continue;
            }
            if let (true, true, DType::F32, [n, k]) =
                (pack, transposed.contains(&id.index()), view.dtype, view.shape.as_slice())
            {
                let w = view.to_host()?;
                let w = w.as_f32().expect("an f32 weight holds f32 values");
                // The bf16 kernel multiplies pairs of features; an odd count stays in f32.
                let layer = match bf16_products && k.is_multiple_of(2) {
                    true => PackedLinear::pack_bf16(w, *n, *k),
                    false => PackedLinear::pack(w, *n, *k),
                };
                packed.insert(id.index(), layer);
                continue;
            }
            let mut t = upload_weight(&view, &device)?;
            if let (true, Some(compute)) = (node.dtype.is_float(), compute_override) {
                t = t.to_dtype(compute).map_err(candle_err)?;
            }
            if transposed.contains(&id.index()) {
                t = t.t().and_then(|t| t.contiguous()).map_err(candle_err)?;
            }
            uploaded.insert(id.index(), t);
        }
        let packed_linears: HashSet<usize> = graph
            .nodes()
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.op, Op::Linear { weight, .. } if packed.contains_key(&weight.index())))
            .map(|(i, _)| i)
            .collect();
        let row_skip = crate::padding::analyse(graph, &packed_linears);
        let mut initial = HashMap::new();
        for (i, node) in graph.nodes().iter().enumerate() {
            if let Op::Variable { init: VariableInit::Weight, .. } = node.op {
                initial.insert(i, upload_weight(&load_weight(weights, node)?, &device)?);
            }
        }
        let n = graph.nodes().len();
        let mut last_use: Vec<usize> = (0..n).collect();
        for (i, node) in graph.nodes().iter().enumerate() {
            for operand in node.op.operands() {
                last_use[operand.index()] = i;
            }
        }
        for (_, id) in graph.outputs() {
            last_use[id.index()] = usize::MAX;
        }
        let mut id_inputs = Vec::new();
        for node in graph.nodes() {
            if let Op::Embedding { table, ids } = node.op {
                if matches!(graph.node(ids).op, Op::Input { .. }) {
                    let rows = graph.node(table).shape.0[0].fixed().expect("weights have fixed shapes");
                    id_inputs.push((ids.index(), rows));
                }
            }
        }
        Ok(CandleExecutable {
            graph: graph.clone(),
            id: ExecutableId::fresh(),
            device,
            compute_override,
            weights: uploaded,
            quant,
            packed,
            row_skip,
            initial,
            transposed,
            last_use,
            id_inputs,
            profile: std::env::var_os(PROFILE_ENV).map(|_| Default::default()),
        })
    }

    /// With row skipping: the mask's [batch, seq] and the rows (flattened) that are not padding;
    /// `None` when nothing would be skipped.
    fn valid_rows(&self, inputs: &[(&str, &HostTensor)]) -> Option<([usize; 2], Vec<usize>)> {
        let skip = self.row_skip.as_ref()?;
        let name = &self.graph.nodes()[skip.mask].name;
        let mask = inputs.iter().find(|(n, _)| n == name)?.1;
        let [b, s] = mask.shape()[..] else { return None };
        let rows: Vec<usize> = mask.to_i64_vec()?.iter().enumerate().filter(|(_, &m)| m != 0).map(|(i, _)| i).collect();
        (rows.len() < b * s).then_some(([b, s], rows))
    }

    fn check_ids(&self, inputs: &[(&str, &HostTensor)]) -> Result<()> {
        for &(node, rows) in &self.id_inputs {
            let name = &self.graph.nodes()[node].name;
            let tensor = inputs.iter().find(|(n, _)| n == name).expect("inputs are bound").1;
            let ids = tensor.to_i64_vec().expect("embedding ids are integers (checked by inference)");
            if let Some(bad) = ids.iter().find(|&&id| id < 0 || id as usize >= rows) {
                return Err(Error::Input {
                    name: name.clone(),
                    message: format!("id {bad} is out of range for an embedding table of {rows} rows"),
                });
            }
        }
        Ok(())
    }
}

/// Float weight nodes whose every use is as the `weight` of a `Linear` (and that are not outputs).
fn linear_only_weights(graph: &Graph) -> HashSet<usize> {
    let mut linear = HashSet::new();
    let mut other = HashSet::new();
    for node in graph.nodes() {
        for operand in node.op.operands() {
            match node.op {
                Op::Linear { weight, .. } if weight == operand => linear.insert(operand.index()),
                _ => other.insert(operand.index()),
            };
        }
    }
    for (_, id) in graph.outputs() {
        other.insert(id.index());
    }
    // Only weights are uploaded (and so stored) transposed: a computed value used as a linear
    // layer's matrix (a gradient graph's transposed weight) stays as it is.
    linear.retain(|i| {
        let node = &graph.nodes()[*i];
        !other.contains(i) && node.dtype.is_float() && matches!(node.op, Op::Weight { .. })
    });
    linear
}

fn node_err(node: &accelrt_core::Node, e: candle_core::Error) -> Error {
    Error::node(&node.name, format!("{}: {e}", node.op.kind()))
}

/// The candle part of a session: per `KvCache` node, per slot, a [heads, capacity, d] tensor on the
/// device, allocated when the slot is first written; and the graph variables assigned so far, by
/// node index, on the device in their declared dtype (f32 master weights even when the compute
/// dtype is lower).
#[derive(Default)]
struct Caches {
    kv: HashMap<usize, Vec<Option<Tensor>>>,
    variables: HashMap<usize, Tensor>,
}

fn host_ints(t: &Tensor) -> std::result::Result<Vec<i64>, String> {
    t.to_dtype(candle_core::DType::I64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .map_err(|e| e.to_string())
}

/// What a step changed in a session, to put back when it does not succeed (a refused or failed step
/// changes nothing): the lengths of the slots its caches wrote, taken before each write, and —
/// since the caches are written in place as the graph runs — the entries it overwrote that a
/// slot held, and the cache tensors it put in place.
#[derive(Default)]
struct StepUndo {
    lengths: SlotLengths,
    /// (cache node, slot, first position, the entries there before the step).
    overwritten: Vec<(usize, usize, usize, Tensor)>,
    /// (cache node, slot, the slot's cache tensor before the step, if it had one) where the step
    /// put a new tensor in place.
    replaced: Vec<(usize, usize, Option<Tensor>)>,
}

impl StepUndo {
    /// Puts the session back as it was before the step. Should copying saved entries back fail,
    /// that cache is cut back to where the step's write started (`restore_lengths_cut_back`), so
    /// the session never counts entries it does not hold.
    fn roll_back(self, state: &mut SessionState, owner: ExecutableId) {
        let mut lost = Vec::new();
        if let Ok(caches) = state.inner_mut::<Caches>(owner) {
            for (node, slot, start, saved) in self.overwritten.into_iter().rev() {
                let cache = caches.kv.get(&node).and_then(|s| s.get(slot)).and_then(Option::as_ref);
                if cache.is_none_or(|c| c.slice_set(&saved, 1, start).is_err()) {
                    lost.push((node, accelrt_core::RowWrite { slot, start, count: saved.dims()[1] }));
                }
            }
            for (node, slot, previous) in self.replaced.into_iter().rev() {
                if let Some(per_slot) = caches.kv.get_mut(&node) {
                    per_slot[slot] = previous;
                }
            }
        }
        state.restore_lengths_cut_back(&self.lengths, lost);
    }
}

/// Writes a step's entries into the session's cache for node `node` and returns the rows' caches
/// up to the step's kv length (see `Op::KvCache`). What it changes goes into `undo` first.
#[allow(clippy::too_many_arguments)]
fn kv_cache(
    state: &mut SessionState,
    undo: &mut StepUndo,
    node: usize,
    x: &Tensor,
    positions: &Tensor,
    slots: &Tensor,
    capacity: usize,
    device: &Device,
) -> std::result::Result<Tensor, String> {
    let (b, h, n, d) = x.dims4().map_err(|e| e.to_string())?;
    let (pos, slot_ids) = (host_ints(positions)?, host_ints(slots)?);
    if pos.len() != b * n || slot_ids.len() != b {
        return Err(format!(
            "positions {:?} / slots {:?} do not match x {:?}",
            positions.dims(),
            slots.dims(),
            x.dims()
        ));
    }
    state.record_lengths(&mut undo.lengths, &slot_ids);
    let plan = state.plan_cache_write(node, capacity, &pos, &slot_ids).map_err(|e| e.to_string())?;
    let n_slots = state.slots();
    // `run_steps` checked the owner before the step began.
    let owner = state.owner();
    let caches = state.inner_mut::<Caches>(owner).map_err(|e| e.to_string())?;
    let per_slot = caches.kv.entry(node).or_insert_with(|| vec![None; n_slots]);
    let mut rows = Vec::with_capacity(b);
    let mut run = |r: usize, w: &accelrt_core::RowWrite| -> candle_core::Result<Tensor> {
        let cache = match &per_slot[w.slot] {
            Some(c) if c.dtype() == x.dtype() => {
                let held = undo.lengths.overwritten(node, w);
                if !held.is_empty() {
                    let saved = c.narrow(1, held.start, held.len())?.force_contiguous()?;
                    undo.overwritten.push((node, w.slot, held.start, saved));
                }
                c.clone()
            }
            _ => {
                let c = Tensor::zeros((h, capacity, d), x.dtype(), device)?;
                undo.replaced.push((node, w.slot, per_slot[w.slot].replace(c.clone())));
                c
            }
        };
        cache.slice_set(&x.get(r)?.contiguous()?, 1, w.start)?;
        cache.narrow(1, 0, plan.kv_len)
    };
    for (r, w) in plan.rows.iter().enumerate() {
        rows.push(run(r, w).map_err(|e| e.to_string())?);
    }
    let out = if b == 1 { rows[0].unsqueeze(0) } else { Tensor::stack(&rows, 0) };
    out.map_err(|e| e.to_string())
}

impl Executable for CandleExecutable {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn run(&self, inputs: &[(&str, &HostTensor)]) -> Result<Outputs> {
        let mut state = self.new_state(one_shot_slots(&self.graph, inputs))?;
        self.run_with_state(&mut state, inputs)
    }

    fn synchronize(&self) -> Result<()> {
        self.device.synchronize().map_err(candle_err)
    }

    fn new_state(&self, slots: usize) -> Result<SessionState> {
        Ok(SessionState::new(BACKEND, self.id, slots, Box::new(Caches::default())))
    }

    fn read_variable(&self, state: &SessionState, name: &str) -> Result<HostTensor> {
        let index = self.variable_index(name)?;
        let t = self.variable_value(state.inner::<Caches>(self.id)?, index)?;
        download(&t, self.graph.nodes()[index].dtype)
    }

    fn write_variable(&self, state: &mut SessionState, name: &str, value: &HostTensor) -> Result<()> {
        let index = self.variable_index(name)?;
        let node = &self.graph.nodes()[index];
        let declared = node.shape.concrete().expect("variables have fixed shapes");
        accelrt_core::check_variable_value(name, node.dtype, &declared, value)?;
        let t = upload(value, &self.device)?;
        state.inner_mut::<Caches>(self.id)?.variables.insert(index, t);
        Ok(())
    }

    fn run_with_state(&self, state: &mut SessionState, inputs: &[(&str, &HostTensor)]) -> Result<Outputs> {
        if self.device.is_cpu() {
            // Run every op of the step on a worker of the thread pool, not on the caller's thread:
            // each parallel kernel is then split among workers that are still awake, instead of the
            // caller handing work over and sleeping until it is done (a futex round trip per op,
            // which cost more than the small kernels of a decode step).
            return crate::kernels::pool().install(|| self.run_steps(state, inputs));
        }
        self.run_steps(state, inputs)
    }
}

impl CandleExecutable {
    fn variable_index(&self, name: &str) -> Result<usize> {
        self.graph
            .nodes()
            .iter()
            .position(|n| n.name == name && matches!(n.op, Op::Variable { .. }))
            .ok_or_else(|| Error::Graph(format!("no variable `{name}`")))
    }

    /// A variable's value in a session: assigned, else initial.
    fn variable_value(&self, caches: &Caches, index: usize) -> Result<Tensor> {
        if let Some(t) = caches.variables.get(&index) {
            return Ok(t.clone());
        }
        if let Some(t) = self.initial.get(&index) {
            return Ok(t.clone());
        }
        let node = &self.graph.nodes()[index];
        let shape = node.shape.concrete().expect("variables have fixed shapes");
        Tensor::zeros(shape, to_candle_dtype(node.dtype)?, &self.device).map_err(candle_err)
    }

    fn run_steps(&self, state: &mut SessionState, inputs: &[(&str, &HostTensor)]) -> Result<Outputs> {
        state.check_owner(self.id)?;
        self.graph.bind_inputs(inputs)?;
        self.check_ids(inputs)?;
        // A step that fails part-way (a cache's write refused, an op failing at run time) leaves
        // the session as it was: what its caches recorded and overwrote so far is put back, and
        // the variables it assigns are stored only once its outputs are read.
        let mut undo = StepUndo::default();
        let result = self.evaluate(state, inputs, &mut undo).and_then(|(outputs, assigned)| {
            if !assigned.is_empty() {
                state.inner_mut::<Caches>(self.id)?.variables.extend(assigned);
            }
            Ok(outputs)
        });
        if result.is_err() {
            undo.roll_back(state, self.id);
        }
        result
    }

    /// Evaluates the graph for one step: its outputs, and the variables it assigns (by node
    /// index, in their declared dtypes), not stored yet. Cache writes are made in place, with
    /// what they change recorded in `undo`.
    fn evaluate(
        &self,
        state: &mut SessionState,
        inputs: &[(&str, &HostTensor)],
        undo: &mut StepUndo,
    ) -> Result<(Outputs, Vec<(usize, Tensor)>)> {
        let mut ctx = RunContext {
            device: &self.device,
            compute_override: self.compute_override,
            transposed: &self.transposed,
            attention_bias: HashMap::new(),
            rope_tables: HashMap::new(),
        };
        let valid_rows = self.valid_rows(inputs);
        let mut vals: Vec<Option<Tensor>> = vec![None; self.graph.nodes().len()];
        let mut assigned: Vec<(usize, Tensor)> = Vec::new();
        for (i, node) in self.graph.nodes().iter().enumerate() {
            let started = self.profile.as_ref().map(|_| std::time::Instant::now());
            let value = match &node.op {
                Op::Input { .. } => {
                    let host = inputs.iter().find(|(n, _)| *n == node.name).expect("inputs are bound").1;
                    let t = upload(host, &self.device)?;
                    match self.compute_override {
                        Some(compute) if node.dtype.is_float() => t.to_dtype(compute).map_err(candle_err)?,
                        _ => t,
                    }
                }
                Op::Variable { .. } => {
                    let t = self.variable_value(state.inner::<Caches>(self.id)?, i)?;
                    match self.compute_override {
                        Some(compute) => t.to_dtype(compute).map_err(candle_err)?,
                        None => t,
                    }
                }
                Op::Assign { var, value } => {
                    let v = vals[value.index()].clone().expect("operands are evaluated first");
                    // Stored in the variable's own dtype; applied once the whole step has run.
                    let stored = v.to_dtype(to_candle_dtype(self.graph.node(*var).dtype)?).map_err(candle_err)?;
                    assigned.push((var.index(), stored));
                    v
                }
                Op::Weight { .. } if self.quant.contains_key(&i) || self.packed.contains_key(&i) => continue,
                Op::Weight { .. } => self.weights[&i].clone(),
                Op::Linear { x, weight, bias } if self.quant.contains_key(&weight.index()) => {
                    let x = vals[x.index()].as_ref().expect("operands are evaluated first");
                    let mut y = self.quant[&weight.index()].linear(x).map_err(|e| node_err(node, e))?;
                    if let Some(b) = bias {
                        let b = vals[b.index()].as_ref().expect("operands are evaluated first");
                        y = y.broadcast_add(b).map_err(|e| node_err(node, e))?;
                    }
                    y
                }
                Op::Linear { x, weight, bias } if self.packed.contains_key(&weight.index()) => {
                    let get = |id: &ValueId| vals[id.index()].as_ref().expect("operands are evaluated first");
                    let x = get(x);
                    let rows = match (&valid_rows, &self.row_skip) {
                        (Some((dims, rows)), Some(skip)) if skip.linears.contains(&i) && x.dims()[..2] == dims[..] => {
                            Some(rows.as_slice())
                        }
                        _ => None,
                    };
                    crate::linear::forward_tensor(&self.packed[&weight.index()], x, bias.as_ref().map(get), rows)
                        .map_err(|e| node_err(node, e))?
                }
                Op::Embedding { table, ids } if self.quant.contains_key(&table.index()) => {
                    let ids = vals[ids.index()].as_ref().expect("operands are evaluated first");
                    let dtype = match self.compute_override {
                        Some(c) => c,
                        None => to_candle_dtype(node.dtype)?,
                    };
                    self.quant[&table.index()].embedding(ids, dtype).map_err(|e| node_err(node, e))?
                }
                Op::KvCache { x, positions, slots, capacity } => {
                    let get = |id: ValueId| vals[id.index()].as_ref().expect("operands are evaluated first");
                    kv_cache(state, undo, i, get(*x), get(*positions), get(*slots), *capacity, &self.device)
                        .map_err(|e| Error::node(&node.name, format!("kv_cache: {e}")))?
                }
                op => {
                    let get = |id: ValueId| vals[id.index()].clone().expect("operands are evaluated first");
                    eval(op, &get, &mut ctx).map_err(|e| Error::node(&node.name, format!("{}: {e}", op.kind())))?
                }
            };
            if let (Some(profile), Some(started)) = (&self.profile, started) {
                let mut table = profile.lock().unwrap_or_else(|e| e.into_inner());
                let entry = table.entry(node.op.kind()).or_default();
                entry.0 += started.elapsed();
                entry.1 += 1;
            }
            vals[i] = Some(value);
            for operand in node.op.operands() {
                if self.last_use[operand.index()] == i {
                    vals[operand.index()] = None;
                }
            }
        }
        let mut outputs = Vec::with_capacity(self.graph.outputs().len());
        for (name, id) in self.graph.outputs() {
            let t = vals[id.index()].as_ref().expect("outputs are kept");
            outputs.push((name.clone(), download(t, self.graph.node(*id).dtype)?));
        }
        Ok((Outputs::new(outputs), assigned))
    }
}
