//! The reference evaluator: a plain, obviously-correct interpretation of a graph on the host, in f64,
//! used as the oracle that every backend is tested against. Speed is not a goal here.
//!
//! It computes every op's semantics itself and exports nothing a backend uses, so a bug here cannot
//! hide by appearing identically in a backend. What it shares with backends are the graph's
//! *rules*, each tested on its own: shape inference (`crate::infer`, including a reshape's
//! concrete target) and the KV-cache write plan (`SessionState::plan_cache_write`).
//!
//! `eval_nodes` only dispatches: each op family's semantics live in the submodule named as in
//! `crate::infer` (its shape rule), `crate::autodiff` (its gradient) and the StableHLO lowering.

mod attention;
mod elementwise;
mod linalg;
mod norm;
mod shape;
mod state;

use crate::{
    one_shot_slots, DType, Error, Graph, HostTensor, Op, Outputs, Result, SessionState, Shape, ValueId, WeightSource,
};
use ndarray::{ArrayD, Axis};
use std::collections::HashMap;

pub use state::read_variable;

/// A value during evaluation: floats as f64, integers as i64.
#[derive(Debug, Clone)]
enum Val {
    F(ArrayD<f64>),
    I(ArrayD<i64>),
}

impl Val {
    fn shape(&self) -> &[usize] {
        match self {
            Val::F(a) => a.shape(),
            Val::I(a) => a.shape(),
        }
    }
}

/// A fresh session state for [`evaluate_with_state`].
pub fn new_state(slots: usize) -> SessionState {
    state::new_state(slots)
}

/// Evaluates `graph` on `inputs` with weights from `weights` (caches start empty).
pub fn evaluate(graph: &Graph, weights: &dyn WeightSource, inputs: &[(&str, &HostTensor)]) -> Result<Outputs> {
    let mut state = new_state(one_shot_slots(graph, inputs));
    evaluate_with_state(graph, weights, inputs, &mut state)
}

/// Evaluates one step of a session whose caches are in `state` (from [`new_state`]).
pub fn evaluate_with_state(
    graph: &Graph,
    weights: &dyn WeightSource,
    inputs: &[(&str, &HostTensor)],
    state: &mut SessionState,
) -> Result<Outputs> {
    // A step that fails part-way leaves the session as it was (`crate::state`): what its caches
    // recorded and overwrote is put back, and its assignments are stored only once it succeeded.
    let mut undo = state::StepUndo::default();
    let result = state::check_graph(state, graph, &mut undo)
        .and_then(|()| eval_nodes(graph, weights, inputs, state, &mut undo, None))
        .and_then(|(vals, assigned)| {
            let mut outputs = Vec::with_capacity(graph.outputs().len());
            for (name, id) in graph.outputs() {
                let node = graph.node(*id);
                let (shape, values) = match &vals[id.index()] {
                    Val::F(a) => (a.shape().to_vec(), a.iter().copied().collect::<Vec<_>>()),
                    Val::I(a) => (a.shape().to_vec(), a.iter().map(|&v| v as f64).collect()),
                };
                outputs.push((name.clone(), HostTensor::from_f64(node.dtype, shape, &values)?));
            }
            state::commit_assignments(state, graph, assigned)?;
            Ok(Outputs::new(outputs))
        });
    if result.is_err() {
        undo.roll_back(state);
    }
    result
}

/// Evaluates `graph` in f64 **without rounding** any value to its declared dtype, with the float
/// inputs and weights named in `values` taking those f64 values instead of the ones in `inputs` /
/// `weights` (which must still be given, at the same shapes: they bind the symbols). Returns every
/// graph output as f64 (integers converted). This is what finite-difference gradient checks need:
/// a perturbation of 1e-6 would vanish in an f32 rounding.
pub fn evaluate_exact(
    graph: &Graph,
    weights: &dyn WeightSource,
    inputs: &[(&str, &HostTensor)],
    values: &HashMap<String, ArrayD<f64>>,
) -> Result<Vec<(String, ArrayD<f64>)>> {
    let mut state = new_state(one_shot_slots(graph, inputs));
    let (vals, _) = eval_nodes(graph, weights, inputs, &mut state, &mut state::StepUndo::default(), Some(values))?;
    Ok(graph.outputs().iter().map(|(name, id)| (name.clone(), as_f64(&vals[id.index()]))).collect())
}

/// The values computed so far, seen from the node being evaluated (errors name it).
struct Args<'a> {
    vals: &'a [Val],
    name: &'a str,
}

impl<'a> Args<'a> {
    fn fail(&self, message: String) -> Error {
        Error::node(self.name, message)
    }

    fn val(&self, id: ValueId) -> &'a Val {
        &self.vals[id.index()]
    }

    /// A float operand.
    fn f(&self, id: ValueId) -> Result<&'a ArrayD<f64>> {
        match self.val(id) {
            Val::F(a) => Ok(a),
            Val::I(_) => Err(self.fail("expected a floating-point operand".into())),
        }
    }

    /// An integer operand.
    fn i(&self, id: ValueId) -> Result<&'a ArrayD<i64>> {
        match self.val(id) {
            Val::I(a) => Ok(a),
            Val::F(_) => Err(self.fail("expected an integer operand".into())),
        }
    }
}

/// A step's assignments to variables: (variable node index, value), applied once the step succeeded.
type Assignments = Vec<(usize, ArrayD<f64>)>;

/// Every node's value, and the step's assignments to variables (by node index, not stored yet:
/// `state::commit_assignments`). With `exact`, nothing is rounded and named leaves take the given
/// values. Cache writes go into `session` as the nodes run, with what they change in `undo`.
fn eval_nodes(
    graph: &Graph,
    weights: &dyn WeightSource,
    inputs: &[(&str, &HostTensor)],
    session: &mut SessionState,
    undo: &mut state::StepUndo,
    exact: Option<&HashMap<String, ArrayD<f64>>>,
) -> Result<(Vec<Val>, Assignments)> {
    graph.bind_inputs(inputs)?;
    let mut vals: Vec<Val> = Vec::with_capacity(graph.nodes().len());
    // Variables take their new values only once the whole step has run.
    let mut assigned: Vec<(usize, ArrayD<f64>)> = Vec::new();
    for (index, node) in graph.nodes().iter().enumerate() {
        let a = Args { vals: &vals, name: &node.name };
        let replaced = match (&node.op, exact.and_then(|e| e.get(&node.name))) {
            (Op::Input { .. } | Op::Weight { .. } | Op::Variable { .. }, Some(v)) if node.dtype.is_float() => Some(v),
            _ => None,
        };
        let value = match &node.op {
            _ if replaced.is_some() => state::exact_leaf(&a, node, replaced.expect("checked"))?,
            Op::Input { .. } => state::input(node, inputs)?,
            Op::Weight { .. } => state::weight(weights, node)?,
            Op::Variable { .. } => state::variable(session, weights, index, node)?,
            Op::Assign { var, value } => {
                let v = a.f(*value)?.clone();
                assigned.push((var.index(), v.clone()));
                Val::F(v)
            }
            Op::KvCache { x, positions, slots, capacity } => {
                state::kv_cache(&a, session, undo, index, *x, *positions, *slots, *capacity)?
            }
            Op::Binary { op, a: l, b: r } => elementwise::binary(&a, *op, *l, *r)?,
            Op::Unary { op, x } => elementwise::unary(&a, *op, *x)?,
            Op::Affine { x, mul, add } => Val::F(a.f(*x)?.mapv(|v| v * mul + add)),
            Op::Cast { x, dtype } => elementwise::cast(&a, *x, *dtype),
            Op::Dropout { x, seed, p, stream } => elementwise::dropout(&a, *x, *seed, *p, *stream)?,
            Op::AdamWStep { param, grad, m, v, lr, step, beta1, beta2, eps, weight_decay } => {
                elementwise::adamw_step(&a, [*param, *grad, *m, *v], *lr, *step, [*beta1, *beta2, *eps, *weight_decay])?
            }
            Op::Embedding { table, ids } => linalg::embedding(&a, *table, *ids)?,
            Op::MatMul { a: l, b: r, transpose_b } => linalg::matmul(&a, *l, *r, *transpose_b)?,
            Op::Linear { x, weight, bias } => linalg::linear(&a, *x, *weight, *bias, node.shape.rank())?,
            Op::OneHot { ids, depth, .. } => linalg::one_hot(&a, *ids, *depth)?,
            Op::IndexAdd { ids, src, rows } => linalg::index_add(&a, *ids, *src, *rows)?,
            Op::LayerNorm { x, gamma, beta, eps } => norm::layer_norm(&a, *x, *gamma, *beta, *eps)?,
            Op::RmsNorm { x, gamma, eps } => norm::rms_norm(&a, *x, *gamma, *eps)?,
            Op::Softmax { x } => norm::softmax(&a, *x)?,
            Op::LogSoftmax { x } => norm::log_softmax(&a, *x)?,
            Op::L2Normalize { x, eps } => norm::l2_normalize(&a, *x, *eps)?,
            Op::MeanPool { x, mask } => norm::mean_pool(&a, *x, *mask)?,
            Op::ReduceSum { x, axes, keep_dims } => norm::reduce_sum(&a, *x, axes, *keep_dims)?,
            Op::Attention { q, k, v, mask, causal, scale, q_positions } => {
                attention::attention(&a, [*q, *k, *v], *mask, *causal, *q_positions, *scale)?
            }
            Op::AttentionProbs { q, k, mask, causal, scale, q_positions } => {
                attention::attention_probs(&a, [*q, *k], *mask, *causal, *q_positions, *scale)?
            }
            Op::Rope { x, positions, base, style } => attention::rope(&a, *x, *positions, *base, *style)?,
            Op::Reshape { x, dims } => shape::reshape(&a, *x, dims)?,
            Op::Permute { x, perm } => shape::permute(&a, *x, perm),
            Op::Slice { x, axis, start, end } => shape::slice(&a, *x, *axis, *start, *end)?,
            Op::Concat { xs, axis } => shape::concat(&a, xs, *axis)?,
            Op::TakeLast { x, axis } => shape::take_last(&a, *x, *axis)?,
            Op::Positions { like, axis } => shape::positions(&a, *like, *axis),
        };
        vals.push(if exact.is_some() { value } else { round_to(value, node.dtype) });
    }
    Ok((vals, assigned))
}

fn concrete(shape: &[usize]) -> Shape {
    Shape::new(shape.iter().copied())
}

fn to_val(t: &HostTensor) -> Result<Val> {
    let shape = ndarray::IxDyn(t.shape());
    Ok(match t.to_i64_vec() {
        Some(ints) => Val::I(ArrayD::from_shape_vec(shape, ints).expect("sizes match")),
        None => Val::F(ArrayD::from_shape_vec(shape, t.to_f64_vec()).expect("sizes match")),
    })
}

fn as_f64(v: &Val) -> ArrayD<f64> {
    match v {
        Val::F(a) => a.clone(),
        Val::I(a) => a.mapv(|x| x as f64),
    }
}

/// The same array operation on a float or an integer value.
fn map_val(v: &Val, on_f: impl Fn(&ArrayD<f64>) -> ArrayD<f64>, on_i: impl Fn(&ArrayD<i64>) -> ArrayD<i64>) -> Val {
    match v {
        Val::F(a) => Val::F(on_f(a)),
        Val::I(a) => Val::I(on_i(a)),
    }
}

/// Rounds a value to what its dtype can hold, so the oracle follows the graph's declared types.
fn round_to(v: Val, dtype: DType) -> Val {
    match (v, dtype) {
        (Val::F(a), DType::F32) => Val::F(a.mapv(|x| x as f32 as f64)),
        (Val::F(a), DType::F16) => Val::F(a.mapv(|x| half::f16::from_f64(x).to_f64())),
        (Val::F(a), DType::BF16) => Val::F(a.mapv(|x| half::bf16::from_f64(x).to_f64())),
        (Val::I(a), DType::U32) => Val::I(a.mapv(|x| x as u32 as i64)),
        (Val::I(a), DType::U8) => Val::I(a.mapv(|x| x as u8 as i64)),
        (v, _) => v,
    }
}

fn softmax_in_place(lane: &mut [f64]) {
    let max = lane.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    lane.iter_mut().for_each(|v| *v = (*v - max).exp());
    let sum: f64 = lane.iter().sum();
    lane.iter_mut().for_each(|v| *v /= sum);
}

/// Applies `f` to every lane along the last axis of a copy of `x`.
fn map_last_axis(x: &ArrayD<f64>, f: impl Fn(&mut [f64])) -> ArrayD<f64> {
    let mut out = x.as_standard_layout().into_owned();
    let last = out.ndim() - 1;
    for mut lane in out.lanes_mut(Axis(last)) {
        f(lane.as_slice_mut().expect("standard layout lanes are contiguous"));
    }
    out
}
