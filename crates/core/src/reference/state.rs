//! The values a graph starts from or keeps across runs: inputs, weights, variables (and their
//! assignments, applied after the step), KV caches — and the reference's session state.

use super::{as_f64, round_to, to_val, Args, Val};
use crate::{
    load_weight, Error, Graph, HostTensor, Node, Op, Result, SessionState, SlotLengths, ValueId, WeightSource,
};
use ndarray::{s, ArrayD, IxDyn};
use std::collections::HashMap;

/// The reference evaluator's session state: per `KvCache` node, per slot, `[heads, capacity, d]`;
/// the values of the graph's variables; and which graph the session runs.
#[derive(Default)]
struct Caches {
    kv: HashMap<usize, Vec<Option<ArrayD<f64>>>>,
    /// Graph variables assigned so far, by node index (unassigned ones are at their initial value).
    variables: HashMap<usize, ArrayD<f64>>,
    /// The content hash of the graph the session's first step ran: caches and variables are kept
    /// by node index, which means nothing in another graph.
    graph: Option<String>,
}

/// The reference is not an executable; its states carry an owner id of their own, and
/// [`check_graph`] ties them to one graph.
pub(super) fn new_state(slots: usize) -> SessionState {
    SessionState::new("reference", crate::ExecutableId::fresh(), slots, Box::new(Caches::default()))
}

fn caches(state: &SessionState) -> Result<&Caches> {
    state.inner::<Caches>(state.owner())
}

fn caches_mut(state: &mut SessionState) -> Result<&mut Caches> {
    let owner = state.owner();
    state.inner_mut::<Caches>(owner)
}

/// What a step changed in a reference session, to put back when it fails part-way (a failed step
/// changes nothing, `crate::state`): the lengths of the slots its caches wrote, taken before each
/// write; the entries it overwrote that a slot held (the caches are written in place as the graph
/// runs); and whether it tied a fresh state to its graph.
#[derive(Default)]
pub(super) struct StepUndo {
    lengths: SlotLengths,
    /// (cache node, slot, first position, the entries there before the step).
    overwritten: Vec<(usize, usize, usize, ArrayD<f64>)>,
    tied: bool,
}

impl StepUndo {
    /// Puts the session back as it was before the step.
    pub(super) fn roll_back(self, state: &mut SessionState) {
        state.restore_lengths(&self.lengths);
        let Ok(caches) = caches_mut(state) else { return };
        for (node, slot, start, saved) in self.overwritten.into_iter().rev() {
            if let Some(Some(cache)) = caches.kv.get_mut(&node).and_then(|s| s.get_mut(slot)) {
                cache.slice_mut(s![.., start..start + saved.shape()[1], ..]).assign(&saved);
            }
        }
        if self.tied {
            caches.graph = None;
        }
    }
}

/// Refuses a session state that ran another graph before (its caches and variables are that
/// graph's); a fresh state takes `graph` (noted in `undo`, so that a failed first step unties it).
pub(super) fn check_graph(state: &mut SessionState, graph: &Graph, undo: &mut StepUndo) -> Result<()> {
    let hash = graph.content_hash();
    let caches = caches_mut(state)?;
    match &caches.graph {
        Some(ran) if *ran != hash => Err(Error::Backend {
            backend: "reference".into(),
            message: format!(
                "this session state ran another graph (content hash {ran}); graph `{}` needs a state of its own",
                graph.name()
            ),
        }),
        Some(_) => Ok(()),
        None => {
            caches.graph = Some(hash);
            undo.tied = true;
            Ok(())
        }
    }
}

pub(super) fn input(node: &Node, inputs: &[(&str, &HostTensor)]) -> Result<Val> {
    let t = inputs.iter().find(|(n, _)| *n == node.name).expect("inputs are bound before evaluation").1;
    to_val(t)
}

pub(super) fn weight(weights: &dyn WeightSource, node: &Node) -> Result<Val> {
    let view = load_weight(weights, node)?;
    match view.dtype {
        crate::DType::Quant(q) => {
            let values = crate::quant::dequantize(q, &view.bytes)?;
            let values = values.into_iter().map(f64::from).collect();
            Ok(Val::F(ArrayD::from_shape_vec(IxDyn(&view.shape), values).expect("whole blocks checked")))
        }
        _ => to_val(&view.to_host()?),
    }
}

/// A float leaf replaced by an exact value (`evaluate_exact`), checked against the node's shape.
pub(super) fn exact_leaf(a: &Args<'_>, node: &Node, value: &ArrayD<f64>) -> Result<Val> {
    if node.shape.concrete().is_some_and(|s| s != value.shape()) || value.ndim() != node.shape.rank() {
        return Err(a.fail(format!("exact value of shape {:?} for {}", value.shape(), node.shape)));
    }
    Ok(Val::F(value.clone()))
}

pub(super) fn variable(state: &SessionState, weights: &dyn WeightSource, index: usize, node: &Node) -> Result<Val> {
    match caches(state)?.variables.get(&index) {
        Some(v) => Ok(Val::F(v.clone())),
        None => initial_value(weights, node),
    }
}

/// Stores the step's assignments, rounded to the variables' dtypes.
pub(super) fn commit_assignments(
    state: &mut SessionState,
    graph: &Graph,
    assigned: Vec<(usize, ArrayD<f64>)>,
) -> Result<()> {
    let caches = caches_mut(state)?;
    for (var, value) in assigned {
        let value = round_to(Val::F(value), graph.nodes()[var].dtype);
        caches.variables.insert(var, as_f64(&value));
    }
    Ok(())
}

/// A variable's value before any assignment.
fn initial_value(weights: &dyn WeightSource, node: &Node) -> Result<Val> {
    match &node.op {
        Op::Variable { init: crate::VariableInit::Zeros, shape, .. } => {
            Ok(Val::F(ArrayD::zeros(IxDyn(&shape.concrete().expect("variables have fixed shapes")))))
        }
        _ => to_val(&load_weight(weights, node)?.to_host()?),
    }
}

/// The current value of the variable `name` in a reference session `state` (its initial value if
/// no step assigned it).
pub fn read_variable(
    graph: &Graph,
    weights: &dyn WeightSource,
    state: &SessionState,
    name: &str,
) -> Result<HostTensor> {
    let (index, node) = graph
        .nodes()
        .iter()
        .enumerate()
        .find(|(_, n)| n.name == name && matches!(n.op, Op::Variable { .. }))
        .ok_or_else(|| Error::Graph(format!("no variable `{name}`")))?;
    let value = match caches(state)?.variables.get(&index) {
        Some(v) => v.clone(),
        None => as_f64(&initial_value(weights, node)?),
    };
    HostTensor::from_f64(node.dtype, value.shape().to_vec(), &value.iter().copied().collect::<Vec<_>>())
}

/// Writes x `[b, h, n, d]` into the slots' caches at the step's positions (the plan checked by
/// `SessionState::plan_cache_write`) and yields every row's cache up to the step's kv length.
/// What it changes goes into `undo` first.
#[allow(clippy::too_many_arguments)]
pub(super) fn kv_cache(
    a: &Args<'_>,
    state: &mut SessionState,
    undo: &mut StepUndo,
    index: usize,
    x: ValueId,
    positions: ValueId,
    slots: ValueId,
    capacity: usize,
) -> Result<Val> {
    let x = a.f(x)?;
    let (b, h, n, d) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let pos: Vec<i64> = a.i(positions)?.iter().copied().collect();
    let slot_ids: Vec<i64> = a.i(slots)?.iter().copied().collect();
    if pos.len() != b * n || slot_ids.len() != b {
        return Err(a.fail(format!("positions/slots do not match x {:?}", x.shape())));
    }
    state.record_lengths(&mut undo.lengths, &slot_ids);
    let plan = state.plan_cache_write(index, capacity, &pos, &slot_ids).map_err(|e| a.fail(e.to_string()))?;
    let n_slots = state.slots();
    let per_slot = caches_mut(state)?.kv.entry(index).or_insert_with(|| vec![None; n_slots]);
    let mut out = ArrayD::<f64>::zeros(IxDyn(&[b, h, plan.kv_len, d]));
    for (r, w) in plan.rows.iter().enumerate() {
        let cache = per_slot[w.slot].get_or_insert_with(|| ArrayD::zeros(IxDyn(&[h, capacity, d])));
        if cache.shape() != [h, capacity, d] {
            return Err(a.fail(format!("slot {} holds a cache of {:?}", w.slot, cache.shape())));
        }
        let held = undo.lengths.overwritten(index, w);
        if !held.is_empty() {
            undo.overwritten.push((
                index,
                w.slot,
                held.start,
                cache.slice(s![.., held.clone(), ..]).to_owned().into_dyn(),
            ));
        }
        cache.slice_mut(s![.., w.start..w.start + w.count, ..]).assign(&x.slice(s![r, .., .., ..]));
        out.slice_mut(s![r, .., .., ..]).assign(&cache.slice(s![.., ..plan.kv_len, ..]));
    }
    Ok(Val::F(out))
}
