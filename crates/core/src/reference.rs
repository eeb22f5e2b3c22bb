//! The reference evaluator: a plain, obviously-correct interpretation of a graph on the host, in f64,
//! used as the oracle that every backend is tested against. Speed is not a goal here.

use crate::infer::broadcast;
use crate::{
    load_weight, one_shot_slots, BinaryOp, DType, Error, Graph, HostTensor, Op, Outputs, ReshapeDim, Result, RopeStyle,
    SessionState, Shape, UnaryOp, WeightSource,
};
use ndarray::{concatenate, s, Array2, ArrayD, Axis, IxDyn};
use std::collections::HashMap;

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

/// The reference evaluator's session state: per `KvCache` node, per slot, [heads, capacity, d];
/// and the values of the graph's variables.
#[derive(Default)]
struct Caches {
    kv: HashMap<usize, Vec<Option<ArrayD<f64>>>>,
    /// Graph variables assigned so far, by node index (unassigned ones are at their initial value).
    variables: HashMap<usize, ArrayD<f64>>,
}

/// A fresh session state for [`evaluate_with_state`].
pub fn new_state(slots: usize) -> SessionState {
    SessionState::new("reference", slots, Box::new(Caches::default()))
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
    let vals = eval_nodes(graph, weights, inputs, state, None)?;
    let mut outputs = Vec::with_capacity(graph.outputs().len());
    for (name, id) in graph.outputs() {
        let node = graph.node(*id);
        let (shape, values) = match &vals[id.index()] {
            Val::F(a) => (a.shape().to_vec(), a.iter().copied().collect::<Vec<_>>()),
            Val::I(a) => (a.shape().to_vec(), a.iter().map(|&v| v as f64).collect()),
        };
        outputs.push((name.clone(), HostTensor::from_f64(node.dtype, shape, &values)?));
    }
    Ok(Outputs::new(outputs))
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
    let vals = eval_nodes(graph, weights, inputs, &mut state, Some(values))?;
    Ok(graph.outputs().iter().map(|(name, id)| (name.clone(), as_f64(&vals[id.index()]))).collect())
}

/// Every node's value. With `exact`, nothing is rounded and named leaves take the given values.
fn eval_nodes(
    graph: &Graph,
    weights: &dyn WeightSource,
    inputs: &[(&str, &HostTensor)],
    state: &mut SessionState,
    exact: Option<&HashMap<String, ArrayD<f64>>>,
) -> Result<Vec<Val>> {
    graph.bind_inputs(inputs)?;
    let mut vals: Vec<Val> = Vec::with_capacity(graph.nodes().len());
    // Variables take their new values only once the whole step has run.
    let mut assigned: Vec<(usize, ArrayD<f64>)> = Vec::new();
    for (index, node) in graph.nodes().iter().enumerate() {
        let fail = |m: String| Error::node(&node.name, m);
        let f = |id: crate::ValueId| -> Result<&ArrayD<f64>> {
            match &vals[id.index()] {
                Val::F(a) => Ok(a),
                Val::I(_) => Err(fail("expected a floating-point operand".into())),
            }
        };
        let i = |id: crate::ValueId| -> Result<&ArrayD<i64>> {
            match &vals[id.index()] {
                Val::I(a) => Ok(a),
                Val::F(_) => Err(fail("expected an integer operand".into())),
            }
        };
        let replaced = match (&node.op, exact.and_then(|e| e.get(&node.name))) {
            (Op::Input { .. } | Op::Weight { .. } | Op::Variable { .. }, Some(v)) if node.dtype.is_float() => {
                Some(v.clone())
            }
            _ => None,
        };
        let value = match &node.op {
            _ if replaced.is_some() => {
                let v = replaced.expect("checked");
                if node.shape.concrete().is_some_and(|s| s != v.shape()) || v.ndim() != node.shape.rank() {
                    return Err(fail(format!("exact value of shape {:?} for {}", v.shape(), node.shape)));
                }
                Val::F(v)
            }
            Op::Input { .. } => {
                let t = inputs.iter().find(|(n, _)| *n == node.name).expect("bound above").1;
                to_val(t)?
            }
            Op::Weight { .. } => {
                let view = load_weight(weights, node)?;
                match view.dtype {
                    DType::Quant(q) => {
                        let values = crate::quant::dequantize(q, &view.bytes)?;
                        let values = values.into_iter().map(f64::from).collect();
                        Val::F(ArrayD::from_shape_vec(IxDyn(&view.shape), values).expect("whole blocks checked"))
                    }
                    _ => to_val(&view.to_host()?)?,
                }
            }
            Op::Variable { .. } => match state.inner::<Caches>()?.variables.get(&index) {
                Some(v) => Val::F(v.clone()),
                None => initial_value(weights, node)?,
            },
            Op::AdamWStep { param, grad, m, v, lr, step, beta1, beta2, eps, weight_decay } => {
                let scalar = |id: crate::ValueId| f(id).map(|a| a.iter().next().copied().unwrap_or(f64::NAN));
                let (lr, t) = (scalar(*lr)?, scalar(*step)?);
                let (p, g, m, v) = (f(*param)?, f(*grad)?, f(*m)?, f(*v)?);
                if g.shape() != p.shape() || m.shape() != p.shape() || v.shape() != p.shape() {
                    return Err(fail("param, grad, m and v differ in shape".into()));
                }
                let mut shape = vec![3];
                shape.extend_from_slice(p.shape());
                let mut out = ArrayD::<f64>::zeros(IxDyn(&shape));
                let config =
                    crate::optim::AdamW { beta1: *beta1, beta2: *beta2, eps: *eps, weight_decay: *weight_decay };
                let c = crate::optim::AdamWCoefficients::new(&config, lr, t);
                let n = p.len();
                let flat = out.as_slice_mut().expect("fresh arrays are contiguous");
                for (i, (((&p, &g), &m), &v)) in p.iter().zip(g.iter()).zip(m.iter()).zip(v.iter()).enumerate() {
                    (flat[i], flat[n + i], flat[2 * n + i]) = c.apply(p, g, m, v);
                }
                Val::F(out)
            }
            Op::Assign { var, value } => {
                let v = f(*value)?.clone();
                assigned.push((var.index(), v.clone()));
                Val::F(v)
            }
            Op::Embedding { table, ids } => {
                let (t, ids) = (f(*table)?, i(*ids)?);
                let (vocab, hidden) = (t.shape()[0], t.shape()[1]);
                let mut out = Vec::with_capacity(ids.len() * hidden);
                for &id in ids.iter() {
                    if id < 0 || id as usize >= vocab {
                        return Err(fail(format!("id {id} out of range for a table of {vocab} rows")));
                    }
                    out.extend(t.slice(s![id as usize, ..]).iter());
                }
                let mut shape = ids.shape().to_vec();
                shape.push(hidden);
                Val::F(ArrayD::from_shape_vec(shape, out).expect("sizes match"))
            }
            Op::MatMul { a, b, transpose_b } => {
                let b = f(*b)?;
                let b = if *transpose_b { swap_last(b) } else { b.clone() };
                Val::F(matmul(f(*a)?, &b).map_err(fail)?)
            }
            Op::Linear { x, weight, bias } => {
                let (x, w) = (f(*x)?, f(*weight)?);
                // A vector x is one row (matmul needs two axes).
                let row;
                let x = if x.ndim() == 1 {
                    row = x.clone().insert_axis(Axis(0));
                    &row
                } else {
                    x
                };
                let mut y = matmul(x, &w.t().into_dyn().to_owned()).map_err(fail)?;
                if node.shape.rank() == 1 {
                    y = y.index_axis_move(Axis(0), 0);
                }
                if let Some(b) = bias {
                    y = &y + f(*b)?;
                }
                Val::F(y)
            }
            Op::Binary { op, a, b } => {
                // ndarray panics on shapes that do not broadcast; check first.
                broadcast(&concrete(vals[a.index()].shape()), &concrete(vals[b.index()].shape())).map_err(fail)?;
                match (&vals[a.index()], &vals[b.index()]) {
                    (Val::F(x), Val::F(y)) => Val::F(match op {
                        BinaryOp::Add => x + y,
                        BinaryOp::Sub => x - y,
                        BinaryOp::Mul => x * y,
                        BinaryOp::Div => x / y,
                    }),
                    (Val::I(x), Val::I(y)) => Val::I(match op {
                        BinaryOp::Add => x + y,
                        BinaryOp::Sub => x - y,
                        BinaryOp::Mul => x * y,
                        BinaryOp::Div => {
                            if y.iter().any(|&v| v == 0) {
                                return Err(fail("integer division by zero".into()));
                            }
                            x / y
                        }
                    }),
                    _ => return Err(fail("operand kinds differ".into())),
                }
            }
            Op::Unary { op, x } => Val::F(f(*x)?.mapv(|v| unary(*op, v))),
            Op::Affine { x, mul, add } => Val::F(f(*x)?.mapv(|v| v * mul + add)),
            Op::LayerNorm { x, gamma, beta, eps } => {
                let (g, b) = (f(*gamma)?, beta.map(&f).transpose()?);
                Val::F(map_last_axis(f(*x)?, |lane| {
                    let n = lane.len() as f64;
                    let mean = lane.iter().sum::<f64>() / n;
                    let var = lane.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                    let inv = 1.0 / (var + eps).sqrt();
                    for (k, v) in lane.iter_mut().enumerate() {
                        *v = (*v - mean) * inv * g[k] + b.map_or(0.0, |b| b[k]);
                    }
                }))
            }
            Op::RmsNorm { x, gamma, eps } => {
                let g = f(*gamma)?;
                Val::F(map_last_axis(f(*x)?, |lane| {
                    let ms = lane.iter().map(|v| v * v).sum::<f64>() / lane.len() as f64;
                    let inv = 1.0 / (ms + eps).sqrt();
                    for (k, v) in lane.iter_mut().enumerate() {
                        *v *= inv * g[k];
                    }
                }))
            }
            Op::Softmax { x } => Val::F(map_last_axis(f(*x)?, softmax_in_place)),
            Op::L2Normalize { x, eps } => Val::F(map_last_axis(f(*x)?, |lane| {
                let norm = lane.iter().map(|v| v * v).sum::<f64>().sqrt().max(*eps);
                lane.iter_mut().for_each(|v| *v /= norm);
            })),
            Op::Attention { q, k, v, mask, causal, scale, q_positions } => {
                let mask = mask.map(|m| vals[m.index()].clone());
                let q_positions = q_positions.map(|p| i(p).cloned()).transpose()?;
                let visibility = match q_positions {
                    Some(p) => Visibility::Positions(p),
                    None if *causal => Visibility::Causal,
                    None => Visibility::All,
                };
                Val::F(attention(f(*q)?, f(*k)?, f(*v)?, mask.as_ref(), &visibility, *scale).map_err(fail)?)
            }
            Op::KvCache { x, positions, slots, capacity } => {
                let x = f(*x)?;
                let (b, h, n, d) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
                let pos: Vec<i64> = i(*positions)?.iter().copied().collect();
                let slot_ids: Vec<i64> = i(*slots)?.iter().copied().collect();
                if pos.len() != b * n || slot_ids.len() != b {
                    return Err(fail(format!("positions/slots do not match x {:?}", x.shape())));
                }
                let plan = state.plan_cache_write(index, *capacity, &pos, &slot_ids).map_err(fail)?;
                let n_slots = state.slots();
                let caches = state.inner_mut::<Caches>()?;
                let per_slot = caches.kv.entry(index).or_insert_with(|| vec![None; n_slots]);
                let mut out = ArrayD::<f64>::zeros(IxDyn(&[b, h, plan.kv_len, d]));
                for (r, w) in plan.rows.iter().enumerate() {
                    let cache = per_slot[w.slot].get_or_insert_with(|| ArrayD::zeros(IxDyn(&[h, *capacity, d])));
                    if cache.shape() != [h, *capacity, d] {
                        return Err(fail(format!("slot {} holds a cache of {:?}", w.slot, cache.shape())));
                    }
                    cache.slice_mut(s![.., w.start..w.start + w.count, ..]).assign(&x.slice(s![r, .., .., ..]));
                    out.slice_mut(s![r, .., .., ..]).assign(&cache.slice(s![.., ..plan.kv_len, ..]));
                }
                Val::F(out)
            }
            Op::TakeLast { x, axis } => {
                let size = vals[x.index()].shape()[*axis];
                if size == 0 {
                    return Err(fail(format!("axis {axis} is empty")));
                }
                map_val(
                    &vals[x.index()],
                    |a| a.slice_axis(Axis(*axis), (size - 1..size).into()).to_owned(),
                    |a| a.slice_axis(Axis(*axis), (size - 1..size).into()).to_owned(),
                )
            }
            Op::Rope { x, positions, base, style } => {
                let pos = i(*positions)?;
                Val::F(rope(f(*x)?, pos, *base, *style).map_err(fail)?)
            }
            Op::Reshape { x, dims } => {
                let src = vals[x.index()].shape().to_vec();
                let target = reshape_target(&src, dims).map_err(fail)?;
                map_val(
                    &vals[x.index()],
                    |a| {
                        a.as_standard_layout()
                            .into_owned()
                            .into_shape_with_order(target.clone())
                            .expect("sizes checked")
                    },
                    |a| {
                        a.as_standard_layout()
                            .into_owned()
                            .into_shape_with_order(target.clone())
                            .expect("sizes checked")
                    },
                )
            }
            Op::Permute { x, perm } => map_val(
                &vals[x.index()],
                |a| a.clone().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned(),
                |a| a.clone().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned(),
            ),
            Op::Slice { x, axis, start, end } => {
                let size = vals[x.index()].shape()[*axis];
                let end = end.unwrap_or(size);
                if *start > end || end > size {
                    return Err(fail(format!("slice {start}..{end} out of range for size {size}")));
                }
                map_val(
                    &vals[x.index()],
                    |a| a.slice_axis(Axis(*axis), (*start..end).into()).to_owned(),
                    |a| a.slice_axis(Axis(*axis), (*start..end).into()).to_owned(),
                )
            }
            Op::Concat { xs, axis } => {
                let shapes: Vec<&[usize]> = xs.iter().map(|x| vals[x.index()].shape()).collect();
                for s in &shapes {
                    let same = s.iter().zip(shapes[0]).enumerate().all(|(k, (p, q))| k == *axis || p == q);
                    if !same {
                        return Err(fail(format!("cannot concatenate shapes {shapes:?} along axis {axis}")));
                    }
                }
                match &vals[xs[0].index()] {
                    Val::F(_) => {
                        let parts = xs.iter().map(|x| f(*x).map(|a| a.view())).collect::<Result<Vec<_>>>()?;
                        Val::F(concatenate(Axis(*axis), &parts).expect("shapes checked"))
                    }
                    Val::I(_) => {
                        let parts = xs.iter().map(|x| i(*x).map(|a| a.view())).collect::<Result<Vec<_>>>()?;
                        Val::I(concatenate(Axis(*axis), &parts).expect("shapes checked"))
                    }
                }
            }
            Op::MeanPool { x, mask } => {
                let x = f(*x)?;
                let m = as_f64(&vals[mask.index()]);
                let (b, s, h) = (x.shape()[0], x.shape()[1], x.shape()[2]);
                if m.shape() != [b, s] {
                    return Err(fail(format!("mask shape {:?} does not match x {:?}", m.shape(), x.shape())));
                }
                let mut out = Array2::<f64>::zeros((b, h));
                for bi in 0..b {
                    let count: f64 = (0..s).map(|si| m[[bi, si]]).sum();
                    for si in 0..s {
                        for hi in 0..h {
                            out[[bi, hi]] += x[[bi, si, hi]] * m[[bi, si]];
                        }
                    }
                    out.row_mut(bi).mapv_inplace(|v| v / count.max(1e-9));
                }
                Val::F(out.into_dyn())
            }
            Op::Cast { x, dtype } => match (&vals[x.index()], dtype.is_float()) {
                (v, true) => Val::F(as_f64(v)),
                (Val::F(a), false) => Val::I(a.mapv(|v| v.trunc() as i64)),
                (Val::I(a), false) => Val::I(a.clone()),
            },
            Op::Positions { like, axis } => {
                let n = vals[like.index()].shape()[*axis];
                Val::I(ArrayD::from_shape_fn(IxDyn(&[n]), |ix| ix[0] as i64))
            }
            Op::ReduceSum { x, axes, keep_dims } => {
                let mut out = f(*x)?.clone();
                // From the last axis down, so the indices of the axes still to sum do not move.
                for &axis in axes.iter().rev() {
                    out = out.sum_axis(Axis(axis));
                    if *keep_dims {
                        out = out.insert_axis(Axis(axis));
                    }
                }
                Val::F(out)
            }
            Op::LogSoftmax { x } => Val::F(map_last_axis(f(*x)?, |lane| {
                let max = lane.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = lane.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                lane.iter_mut().for_each(|v| *v = *v - max - lse);
            })),
            Op::OneHot { ids, depth, .. } => {
                let ids = i(*ids)?;
                let mut shape = ids.shape().to_vec();
                shape.push(*depth);
                let mut out = ArrayD::<f64>::zeros(IxDyn(&shape));
                let flat = out.as_slice_mut().expect("fresh arrays are contiguous");
                for (row, &id) in ids.iter().enumerate() {
                    if id >= 0 && (id as usize) < *depth {
                        flat[row * depth + id as usize] = 1.0;
                    }
                }
                Val::F(out)
            }
            Op::IndexAdd { ids, src, rows } => {
                let (ids, src) = (i(*ids)?, f(*src)?);
                let width = *src.shape().last().expect("rank checked");
                if src.shape()[..src.ndim() - 1] != *ids.shape() {
                    return Err(fail(format!("src {:?} does not match ids {:?}", src.shape(), ids.shape())));
                }
                let src = src.as_standard_layout();
                let flat = src.as_slice().expect("standard layout");
                let mut out = Array2::<f64>::zeros((*rows, width));
                for (row, &id) in ids.iter().enumerate() {
                    if id < 0 || id as usize >= *rows {
                        return Err(fail(format!("id {id} out of range for {rows} rows")));
                    }
                    for c in 0..width {
                        out[[id as usize, c]] += flat[row * width + c];
                    }
                }
                Val::F(out.into_dyn())
            }
            Op::Dropout { x, seed, p, stream } => {
                let seed = i(*seed)?.iter().next().copied().ok_or_else(|| fail("seed has no value".into()))?;
                Val::F(dropout(f(*x)?, seed as u32, *p, *stream))
            }
            Op::AttentionProbs { q, k, mask, causal, scale, q_positions } => {
                let mask = mask.map(|m| vals[m.index()].clone());
                let q_positions = q_positions.map(|p| i(p).cloned()).transpose()?;
                let visibility = match q_positions {
                    Some(p) => Visibility::Positions(p),
                    None if *causal => Visibility::Causal,
                    None => Visibility::All,
                };
                Val::F(attention_probs(f(*q)?, f(*k)?, mask.as_ref(), &visibility, *scale).map_err(fail)?)
            }
        };
        vals.push(if exact.is_some() { value } else { round_to(value, node.dtype) });
    }
    let caches = state.inner_mut::<Caches>()?;
    for (var, value) in assigned {
        let value = if exact.is_some() { Val::F(value) } else { round_to(Val::F(value), graph.nodes()[var].dtype) };
        caches.variables.insert(var, as_f64(&value));
    }
    Ok(vals)
}

/// A variable's value before any assignment.
fn initial_value(weights: &dyn WeightSource, node: &crate::Node) -> Result<Val> {
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
    let value = match state.inner::<Caches>()?.variables.get(&index) {
        Some(v) => v.clone(),
        None => as_f64(&initial_value(weights, node)?),
    };
    HostTensor::from_f64(node.dtype, value.shape().to_vec(), &value.iter().copied().collect::<Vec<_>>())
}

fn concrete(shape: &[usize]) -> Shape {
    Shape::new(shape.iter().copied())
}

fn to_val(t: &HostTensor) -> Result<Val> {
    let shape = IxDyn(t.shape());
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

fn unary(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        UnaryOp::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x.powi(3))).tanh())
        }
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Erf => libm::erf(x),
        UnaryOp::Step => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Log => x.ln(),
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

fn swap_last(a: &ArrayD<f64>) -> ArrayD<f64> {
    let mut v = a.view();
    let r = v.ndim();
    v.swap_axes(r - 2, r - 1);
    v.as_standard_layout().into_owned()
}

/// Batched matmul over the last two axes with broadcast leading axes.
fn matmul(a: &ArrayD<f64>, b: &ArrayD<f64>) -> Result<ArrayD<f64>, String> {
    let (ra, rb) = (a.ndim(), b.ndim());
    let (m, k) = (a.shape()[ra - 2], a.shape()[ra - 1]);
    let (kb, n) = (b.shape()[rb - 2], b.shape()[rb - 1]);
    if k != kb {
        return Err(format!("contraction sizes differ: {:?} × {:?}", a.shape(), b.shape()));
    }
    let batch = broadcast(&concrete(&a.shape()[..ra - 2]), &concrete(&b.shape()[..rb - 2]))?
        .concrete()
        .expect("concrete in, concrete out");
    let nb: usize = batch.iter().product();
    let full = |x: &ArrayD<f64>, r: usize, c: usize| -> Result<ndarray::Array3<f64>, String> {
        let mut shape = batch.clone();
        shape.extend([r, c]);
        let view =
            x.broadcast(IxDyn(&shape)).ok_or_else(|| format!("cannot broadcast {:?} to {shape:?}", x.shape()))?;
        Ok(ndarray::Array3::from_shape_vec((nb, r, c), view.iter().copied().collect()).expect("sizes match"))
    };
    let (a3, b3) = (full(a, m, k)?, full(b, k, n)?);
    let mut out = Vec::with_capacity(nb * m * n);
    for bi in 0..nb {
        out.extend(a3.index_axis(Axis(0), bi).dot(&b3.index_axis(Axis(0), bi)).iter());
    }
    let mut shape = batch;
    shape.extend([m, n]);
    Ok(ArrayD::from_shape_vec(shape, out).expect("sizes match"))
}

/// Which keys each query may see (besides the padding mask).
enum Visibility {
    All,
    /// Query i sits at position kv_len − q_len + i.
    Causal,
    /// Query (b, i) sits at the given position.
    Positions(ArrayD<i64>),
}

fn attention(
    q: &ArrayD<f64>,
    k: &ArrayD<f64>,
    v: &ArrayD<f64>,
    mask: Option<&Val>,
    visibility: &Visibility,
    scale: f64,
) -> Result<ArrayD<f64>, String> {
    let (b, hq, sq) = (q.shape()[0], q.shape()[1], q.shape()[2]);
    let (hkv, t, dv) = (k.shape()[1], k.shape()[2], v.shape()[3]);
    if v.shape()[..3] != [b, hkv, t] {
        return Err(format!("incompatible q {:?}, k {:?}, v {:?}", q.shape(), k.shape(), v.shape()));
    }
    let p = attention_probs(q, k, mask, visibility, scale)?;
    let group = hq / hkv;
    let mut out = ArrayD::<f64>::zeros(IxDyn(&[b, hq, sq, dv]));
    for bi in 0..b {
        for h in 0..hq {
            for i in 0..sq {
                for j in 0..t {
                    let w = p[[bi, h, i, j]];
                    if w != 0.0 {
                        for c in 0..dv {
                            out[[bi, h, i, c]] += w * v[[bi, h / group, j, c]];
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The attention weights [b, hq, sq, t]: softmax over the visible keys, exactly 0 for hidden ones
/// (a query that sees no key gets a row of zeros).
fn attention_probs(
    q: &ArrayD<f64>,
    k: &ArrayD<f64>,
    mask: Option<&Val>,
    visibility: &Visibility,
    scale: f64,
) -> Result<ArrayD<f64>, String> {
    let causal = matches!(visibility, Visibility::Causal);
    let (b, hq, sq, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, t) = (k.shape()[1], k.shape()[2]);
    if k.shape() != [b, hkv, t, d] || hkv == 0 || hq % hkv != 0 {
        return Err(format!("incompatible q {:?}, k {:?}", q.shape(), k.shape()));
    }
    if causal && sq > t {
        return Err(format!("causal attention needs kv length ({t}) ≥ query length ({sq})"));
    }
    let mask = mask.map(as_f64);
    if let Some(m) = &mask {
        if m.shape() != [b, t] {
            return Err(format!("mask shape {:?}, expected [{b}, {t}]", m.shape()));
        }
    }
    let group = hq / hkv;
    let mut out = ArrayD::<f64>::zeros(IxDyn(&[b, hq, sq, t]));
    for bi in 0..b {
        for h in 0..hq {
            let kh = h / group;
            for i in 0..sq {
                let limit = match visibility {
                    Visibility::All => i64::MAX,
                    Visibility::Causal => (t - sq + i) as i64,
                    Visibility::Positions(p) => p[[bi, i]],
                };
                let visible: Vec<usize> = (0..t)
                    .filter(|&j| (j as i64) <= limit && mask.as_ref().is_none_or(|m| m[[bi, j]] != 0.0))
                    .collect();
                let mut w: Vec<f64> = visible
                    .iter()
                    .map(|&j| (0..d).map(|c| q[[bi, h, i, c]] * k[[bi, kh, j, c]]).sum::<f64>() * scale)
                    .collect();
                softmax_in_place(&mut w);
                for (&j, &wj) in visible.iter().zip(&w) {
                    out[[bi, h, i, j]] = wj;
                }
            }
        }
    }
    Ok(out)
}

fn rope(x: &ArrayD<f64>, pos: &ArrayD<i64>, base: f64, style: RopeStyle) -> Result<ArrayD<f64>, String> {
    let (b, h, s, d) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let position = |bi: usize, si: usize| -> i64 {
        if pos.ndim() == 1 {
            pos[[si]]
        } else {
            pos[[bi, si]]
        }
    };
    if pos.shape().last() != Some(&s) || (pos.ndim() == 2 && pos.shape()[0] != b) {
        return Err(format!("positions {:?} do not match x {:?}", pos.shape(), x.shape()));
    }
    let mut out = x.clone();
    let half = d / 2;
    for bi in 0..b {
        for hi in 0..h {
            for si in 0..s {
                let p = position(bi, si) as f64;
                for i in 0..half {
                    let theta = p * base.powf(-2.0 * i as f64 / d as f64);
                    let (sin, cos) = theta.sin_cos();
                    let (a, c) = match style {
                        RopeStyle::HalfSplit => (i, i + half),
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    };
                    let (x0, x1) = (x[[bi, hi, si, a]], x[[bi, hi, si, c]]);
                    out[[bi, hi, si, a]] = x0 * cos - x1 * sin;
                    out[[bi, hi, si, c]] = x1 * cos + x0 * sin;
                }
            }
        }
    }
    Ok(out)
}

/// `Op::Dropout`: elements whose hash of (seed, stream, row-major index) reaches ⌊p·2³²⌋ are kept
/// and scaled by 1/(1 − p), the others are 0.
fn dropout(x: &ArrayD<f64>, seed: u32, p: f64, stream: u32) -> ArrayD<f64> {
    // p < 1, so p·2³² < 2³² and the threshold fits a u32 (at most 2³² − 1).
    let threshold = (p * 4_294_967_296.0).floor() as u64;
    let scale = 1.0 / (1.0 - p);
    let x = x.as_standard_layout();
    let kept = x.iter().enumerate().map(|(index, &v)| {
        if u64::from(murmur3_x86_32(&[stream, index as u32], seed)) >= threshold {
            v * scale
        } else {
            0.0
        }
    });
    ArrayD::from_shape_vec(x.raw_dim(), kept.collect()).expect("one value per element")
}

/// MurmurHash3_x86_32 (Austin Appleby, SMHasher `MurmurHash3.cpp`) of a key made of whole
/// little-endian 32-bit blocks (so no tail bytes).
fn murmur3_x86_32(blocks: &[u32], seed: u32) -> u32 {
    let mut h = seed;
    for &block in blocks {
        let k = block.wrapping_mul(0xcc9e_2d51).rotate_left(15).wrapping_mul(0x1b87_3593);
        h = (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    h ^= (blocks.len() * 4) as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The concrete output shape of a reshape of `src`.
pub fn reshape_target(src: &[usize], dims: &[ReshapeDim]) -> Result<Vec<usize>, String> {
    let total: usize = src.iter().product();
    let mut out = Vec::with_capacity(dims.len());
    for d in dims {
        out.push(match d {
            ReshapeDim::Keep(i) => *src.get(*i).ok_or_else(|| format!("input {src:?} has no axis {i}"))?,
            ReshapeDim::Fixed(n) => *n,
            ReshapeDim::Infer => 0,
        });
    }
    let known: usize = dims.iter().zip(&out).filter(|(d, _)| !matches!(d, ReshapeDim::Infer)).map(|(_, n)| n).product();
    if let Some(axis) = dims.iter().position(|d| matches!(d, ReshapeDim::Infer)) {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {src:?} to {dims:?}"));
        }
        out[axis] = total / known;
    } else if known != total {
        return Err(format!("cannot reshape {src:?} ({total} elements) to {out:?}"));
    }
    Ok(out)
}
