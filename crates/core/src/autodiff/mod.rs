//! Reverse-mode automatic differentiation on the graph IR.
//!
//! [`grad`] appends to a graph the nodes that compute the gradient of a loss with respect to chosen
//! values (weights, inputs, or intermediate values), as ordinary ops of the same graph: a backend
//! runs the forward pass, the loss and the backward pass as **one program**, and a compiled backend
//! (StableHLO/PJRT, later Neuron) compiles it as one. No backend needs to know about gradients; it
//! only needs the ops the rules emit (the primitives `ReduceSum`, `LogSoftmax`, `OneHot`,
//! `IndexAdd`, `AttentionProbs` and the unary `Sigmoid`, `Erf`, `Step`, `Sqrt`, `Log` were added
//! for them).
//!
//! The rules are grouped by op family, each beside its finite-difference check:
//! `elementwise` (binary with broadcasting, activations, affine, cast, dropout), `linalg` (matmul, linear,
//! embedding, index-add), `norm` (layer/RMS/L2 norms, softmax, log-softmax, mean pooling,
//! reduce-sum), `attention` (attention, attention weights, rotary embeddings) and `shape`
//! (reshape, permute, slice, concat, take-last).
//!
//! Integer values (ids, masks, positions) carry no gradient. Ops with no derivative (a `KvCache`,
//! whose state persists across runs) give [`AutodiffError::NotDifferentiable`] naming the node,
//! but only when a gradient must flow through them.

mod attention;
mod elementwise;
mod linalg;
mod norm;
mod shape;

#[cfg(test)]
pub(crate) mod check;

use crate::{BinaryOp, DType, Dim, Graph, GraphBuilder, Node, Op, ReshapeDim, UnaryOp, ValueId};

/// Why a gradient could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AutodiffError {
    /// A gradient would have to flow through an op that has none.
    #[error("node `{node}` ({kind}) is not differentiable here: {reason}")]
    NotDifferentiable {
        /// The forward node's name.
        node: String,
        /// Its op kind as `Op::kind` spells it, e.g. `kv_cache`.
        kind: &'static str,
        /// Why it has no gradient here.
        reason: String,
    },

    /// The loss, or a value the gradient is taken with respect to, is not floating point.
    #[error("node `{node}`: {what} must be floating point to take a gradient, not {dtype}")]
    NotFloat {
        /// The node's name.
        node: String,
        /// Its role: the loss, or a value to differentiate with respect to.
        what: &'static str,
        /// Its (integer) dtype.
        dtype: DType,
    },

    /// A `ValueId` that is not a node of the graph.
    #[error("value {0} is not a node of this graph")]
    UnknownValue(u32),

    /// A name given to [`grad_graph`] that is not an output / node of the graph.
    #[error("`{0}` is not a node or output of the graph")]
    UnknownName(String),

    /// Adding a gradient node failed (a shape the rule did not foresee); names the forward node.
    #[error("gradient of node `{node}`: {source}")]
    Build {
        /// The forward node whose gradient rule failed.
        node: String,
        /// The builder's error.
        #[source]
        source: crate::Error,
    },

    /// Building or validating the graph failed.
    #[error(transparent)]
    Graph(#[from] crate::Error),
}

pub(crate) type R<T> = std::result::Result<T, AutodiffError>;

/// Appends the gradient of `loss` with respect to each value of `wrt` to the graph being built,
/// and returns the gradient values in `wrt`'s order (each with the dtype and shape of its value;
/// symbolic sizes may carry other symbol names with the same run-time size).
///
/// `loss` may have any shape: its elements are summed (the usual case is a scalar, shape `[]`).
/// A value the loss does not depend on gets a gradient of zeros. Nodes are named
/// `grad:<forward node>:<what><n>`.
pub fn grad(b: &mut GraphBuilder, loss: ValueId, wrt: &[ValueId]) -> R<Vec<ValueId>> {
    let n = b.nodes().len();
    for &id in wrt.iter().chain([&loss]) {
        if id.index() >= n {
            return Err(AutodiffError::UnknownValue(id.0));
        }
    }
    let float = |id: ValueId, what: &'static str, b: &GraphBuilder| -> R<()> {
        let node = b.node(id);
        if node.dtype.is_float() {
            Ok(())
        } else {
            Err(AutodiffError::NotFloat { node: node.name.clone(), what, dtype: node.dtype })
        }
    };
    float(loss, "the loss", b)?;
    for &id in wrt {
        float(id, "a value to differentiate with respect to", b)?;
    }

    // A node takes part when it depends on some `wrt` value (through float values only: an
    // integer value carries no gradient) and the loss depends on it.
    let mut depends = vec![false; n];
    for (i, node) in b.nodes().iter().enumerate() {
        let from_operand = node.op.operands().iter().any(|o| depends[o.index()]);
        depends[i] = node.dtype.is_float() && (wrt.iter().any(|w| w.index() == i) || from_operand);
    }
    let mut feeds_loss = vec![false; n];
    feeds_loss[loss.index()] = true;
    for i in (0..n).rev() {
        if feeds_loss[i] {
            for o in b.node(ValueId(i as u32)).op.operands() {
                feeds_loss[o.index()] = true;
            }
        }
    }
    let active: Vec<bool> = (0..n).map(|i| depends[i] && feeds_loss[i]).collect();

    let mut contributions: Vec<Vec<ValueId>> = vec![Vec::new(); n];
    let mut totals: Vec<Option<ValueId>> = vec![None; n];
    if active[loss.index()] {
        let mut ctx = Ctx::new(b, loss);
        contributions[loss.index()].push(ctx.ones_like(loss)?);
    }
    for i in (0..n).rev() {
        let id = ValueId(i as u32);
        if !active[i] || contributions[i].is_empty() {
            continue;
        }
        let mut ctx = Ctx::new(b, id);
        let g = ctx.sum_all(&contributions[i])?;
        totals[i] = Some(g);
        let node = ctx.node(id).clone();
        if matches!(node.op, Op::Input { .. } | Op::Weight { .. } | Op::Variable { .. }) {
            continue;
        }
        let wants = |o: ValueId| active[o.index()];
        for (operand, contribution) in rule(&mut ctx, id, &node, g, &wants)? {
            contributions[operand.index()].push(contribution);
        }
    }
    let mut out = Vec::with_capacity(wrt.len());
    for &w in wrt {
        out.push(match totals[w.index()] {
            Some(g) => g,
            None => Ctx::new(b, w).zeros_like(w)?,
        });
    }
    Ok(out)
}

/// [`grad`] on a built graph by names: the loss is the graph output (or node) `loss`, and for each
/// name in `wrt` (a weight, an input, or any node) the gradient becomes the output
/// `grad.<name>`. The graph's other outputs stay.
pub fn grad_graph(graph: Graph, loss: &str, wrt: &[&str]) -> R<Graph> {
    let find = |g: &Graph, name: &str| -> R<ValueId> {
        g.outputs()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
            .or_else(|| g.nodes().iter().position(|n| n.name == name).map(|i| ValueId(i as u32)))
            .ok_or_else(|| AutodiffError::UnknownName(name.to_string()))
    };
    let loss = find(&graph, loss)?;
    let ids = wrt.iter().map(|w| find(&graph, w)).collect::<R<Vec<_>>>()?;
    let mut b = GraphBuilder::from_graph(graph);
    let grads = grad(&mut b, loss, &ids)?;
    for (name, g) in wrt.iter().zip(grads) {
        b.output(&format!("grad.{name}"), g);
    }
    Ok(b.build()?)
}

/// The gradient contributions of one node to its operands that need one.
fn rule(
    ctx: &mut Ctx<'_>,
    id: ValueId,
    node: &Node,
    g: ValueId,
    wants: &dyn Fn(ValueId) -> bool,
) -> R<Vec<(ValueId, ValueId)>> {
    match &node.op {
        Op::Input { .. } | Op::Weight { .. } | Op::Variable { .. } => Ok(vec![]),
        // An assignment yields its value; the variable's old value does not reach it.
        Op::Assign { value, .. } => Ok(vec![(*value, g)]),
        Op::Binary { op, a, b } => elementwise::binary(ctx, *op, *a, *b, id, g, wants),
        Op::Unary { op, x } => elementwise::unary(ctx, *op, *x, id, g),
        Op::Affine { x, mul, .. } => Ok(vec![(*x, ctx.affine(g, *mul, 0.0)?)]),
        Op::Cast { x, .. } => elementwise::cast(ctx, *x, g),
        Op::Dropout { x, seed, p, stream } => elementwise::dropout(ctx, *x, *seed, *p, *stream, g),
        Op::MatMul { a, b, transpose_b } => linalg::matmul(ctx, *a, *b, *transpose_b, g, wants),
        Op::Linear { x, weight, bias } => linalg::linear(ctx, *x, *weight, *bias, g, wants),
        Op::Embedding { table, ids } => linalg::embedding(ctx, *table, *ids, g),
        Op::IndexAdd { ids, src, .. } => linalg::index_add(ctx, *ids, *src, g),
        Op::LayerNorm { x, gamma, beta, eps } => norm::layer_norm(ctx, *x, *gamma, *beta, *eps, g, wants),
        Op::RmsNorm { x, gamma, eps } => norm::rms_norm(ctx, *x, *gamma, *eps, g, wants),
        Op::Softmax { x } => norm::softmax(ctx, *x, id, g),
        Op::LogSoftmax { x } => norm::log_softmax(ctx, *x, id, g),
        Op::L2Normalize { x, eps } => norm::l2_normalize(ctx, *x, *eps, id, g),
        Op::MeanPool { x, mask } => norm::mean_pool(ctx, *x, *mask, g),
        Op::ReduceSum { x, axes, keep_dims } => norm::reduce_sum(ctx, *x, axes, *keep_dims, g),
        Op::Attention { q, k, v, mask, causal, scale, q_positions } => {
            let probs = Op::AttentionProbs {
                q: *q,
                k: *k,
                mask: *mask,
                causal: *causal,
                scale: *scale,
                q_positions: *q_positions,
            };
            attention::attention(ctx, *q, *k, *v, probs, *scale, g, wants)
        }
        Op::AttentionProbs { q, k, scale, .. } => attention::attention_probs(ctx, *q, *k, id, *scale, g, wants),
        Op::Rope { x, positions, base, style } => attention::rope(ctx, *x, *positions, *base, *style, g),
        Op::Reshape { x, .. } => shape::reshape(ctx, *x, id, g),
        Op::Permute { x, perm } => shape::permute(ctx, *x, perm, g),
        Op::Slice { x, axis, start, end } => shape::slice(ctx, *x, *axis, *start, *end, g),
        Op::Concat { xs, axis } => shape::concat(ctx, xs, *axis, g, wants),
        Op::TakeLast { x, axis } => shape::take_last(ctx, *x, *axis, g),
        Op::KvCache { .. } => Err(ctx.not_differentiable(
            "a KV cache's contents persist across the runs of a session; gradients through a session are not supported",
        )),
        Op::AdamWStep { .. } => {
            Err(ctx.not_differentiable("an optimiser update is applied after the gradient, not part of it"))
        }
        // Integer-valued results never carry a gradient, so these are never active.
        Op::Positions { .. } | Op::OneHot { .. } => Ok(vec![]),
    }
}

/// Adds the nodes of one node's rule to the graph, named after that node.
pub(crate) struct Ctx<'a> {
    b: &'a mut GraphBuilder,
    scope: String,
    kind: &'static str,
}

impl<'a> Ctx<'a> {
    fn new(b: &'a mut GraphBuilder, id: ValueId) -> Ctx<'a> {
        let node = b.node(id);
        let (scope, kind) = (node.name.clone(), node.op.kind());
        Ctx { b, scope, kind }
    }

    /// Adds `op` as a node named `grad:<scope>:<what><n>` (n makes it unique).
    pub fn add(&mut self, what: &str, op: Op) -> R<ValueId> {
        let mut k = self.b.nodes().len();
        let mut name = format!("grad:{}:{what}{k}", self.scope);
        while self.b.has_name(&name) {
            k += 1;
            name = format!("grad:{}:{what}{k}", self.scope);
        }
        self.b.add(name, op).map_err(|source| AutodiffError::Build { node: self.scope.clone(), source })
    }

    pub fn node(&self, id: ValueId) -> &Node {
        self.b.node(id)
    }

    pub fn dims(&self, id: ValueId) -> Vec<Dim> {
        self.b.node(id).shape.0.clone()
    }

    pub fn not_differentiable(&self, reason: impl Into<String>) -> AutodiffError {
        AutodiffError::NotDifferentiable { node: self.scope.clone(), kind: self.kind, reason: reason.into() }
    }

    /// The fixed size of `id`'s axis `axis`, or an error saying the rule needs it.
    pub fn fixed(&self, id: ValueId, axis: usize, what: &str) -> R<usize> {
        self.dims(id)
            .get(axis)
            .and_then(Dim::fixed)
            .ok_or_else(|| self.not_differentiable(format!("the gradient needs a fixed {what}")))
    }

    pub fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> R<ValueId> {
        let what = match op {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        };
        self.add(what, Op::Binary { op, a, b })
    }

    pub fn plus(&mut self, a: ValueId, b: ValueId) -> R<ValueId> {
        self.binary(BinaryOp::Add, a, b)
    }

    pub fn minus(&mut self, a: ValueId, b: ValueId) -> R<ValueId> {
        self.binary(BinaryOp::Sub, a, b)
    }

    pub fn mul(&mut self, a: ValueId, b: ValueId) -> R<ValueId> {
        self.binary(BinaryOp::Mul, a, b)
    }

    pub fn div(&mut self, a: ValueId, b: ValueId) -> R<ValueId> {
        self.binary(BinaryOp::Div, a, b)
    }

    pub fn unary(&mut self, op: UnaryOp, x: ValueId) -> R<ValueId> {
        self.add("unary", Op::Unary { op, x })
    }

    pub fn affine(&mut self, x: ValueId, mul: f64, add: f64) -> R<ValueId> {
        self.add("affine", Op::Affine { x, mul, add })
    }

    /// Zeros of x's shape and dtype (x · 0; x is finite wherever a gradient is meaningful).
    pub fn zeros_like(&mut self, x: ValueId) -> R<ValueId> {
        self.affine(x, 0.0, 0.0)
    }

    pub fn ones_like(&mut self, x: ValueId) -> R<ValueId> {
        self.affine(x, 0.0, 1.0)
    }

    /// max(x, floor) for a constant floor, as relu(x − floor) + floor (no max op is needed).
    pub fn at_least(&mut self, x: ValueId, floor: f64) -> R<ValueId> {
        let shifted = self.affine(x, 1.0, -floor)?;
        let r = self.unary(UnaryOp::Relu, shifted)?;
        self.affine(r, 1.0, floor)
    }

    pub fn sum(&mut self, x: ValueId, axes: Vec<usize>, keep_dims: bool) -> R<ValueId> {
        if axes.is_empty() {
            return Ok(x);
        }
        self.add("sum", Op::ReduceSum { x, axes, keep_dims })
    }

    /// Σ over the last axis, kept as an axis of size 1.
    pub fn sum_last_keep(&mut self, x: ValueId) -> R<ValueId> {
        let last = self.dims(x).len() - 1;
        self.sum(x, vec![last], true)
    }

    pub fn permute(&mut self, x: ValueId, perm: Vec<usize>) -> R<ValueId> {
        self.add("permute", Op::Permute { x, perm })
    }

    /// Swaps the last two axes.
    pub fn swap_last(&mut self, x: ValueId) -> R<ValueId> {
        let r = self.dims(x).len();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.permute(x, perm)
    }

    pub fn reshape(&mut self, x: ValueId, dims: Vec<ReshapeDim>) -> R<ValueId> {
        self.add("reshape", Op::Reshape { x, dims })
    }

    pub fn matmul(&mut self, a: ValueId, b: ValueId, transpose_b: bool) -> R<ValueId> {
        self.add("matmul", Op::MatMul { a, b, transpose_b })
    }

    /// The sum of gradient contributions.
    fn sum_all(&mut self, parts: &[ValueId]) -> R<ValueId> {
        let mut total = parts[0];
        for &p in &parts[1..] {
            total = self.plus(total, p)?;
        }
        Ok(total)
    }

    /// Sums a gradient `g` of a broadcast result down to the shape of the operand `target`: over
    /// the leading axes the operand lacks, and over the axes where it has size 1.
    pub fn sum_to(&mut self, g: ValueId, target: ValueId) -> R<ValueId> {
        let (gs, ts) = (self.dims(g), self.dims(target));
        let lead = gs.len().checked_sub(ts.len()).ok_or_else(|| {
            self.not_differentiable(format!("gradient rank {} below operand rank {}", gs.len(), ts.len()))
        })?;
        let mut v = self.sum(g, (0..lead).collect(), false)?;
        let ones: Vec<usize> =
            (0..ts.len()).filter(|&i| ts[i] == Dim::Fixed(1) && gs[lead + i] != Dim::Fixed(1)).collect();
        v = self.sum(v, ones, true)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Shape};

    fn kv_graph() -> (GraphBuilder, ValueId, ValueId, ValueId) {
        let mut b = GraphBuilder::new("g");
        let dims = |h| Shape(vec![Dim::sym("batch"), Dim::Fixed(h), Dim::sym("seq"), Dim::Fixed(4)]);
        let x = b.input("x", DType::F32, dims(2)).unwrap();
        let pos = b.input("pos", DType::U32, Shape(vec![Dim::sym("batch"), Dim::sym("seq")])).unwrap();
        let slots = b.input("slots", DType::U32, Shape(vec![Dim::sym("batch")])).unwrap();
        let cache = b.add("k_cache", Op::KvCache { x, positions: pos, slots, capacity: 8 }).unwrap();
        let s = b.add("s", Op::ReduceSum { x: cache, axes: vec![0, 1, 2, 3], keep_dims: false }).unwrap();
        (b, x, pos, s)
    }

    #[test]
    fn a_kv_cache_on_the_path_is_a_typed_error_naming_it() {
        let (mut b, x, _, s) = kv_graph();
        match grad(&mut b, s, &[x]) {
            Err(AutodiffError::NotDifferentiable { node, kind, .. }) => {
                assert_eq!((node.as_str(), kind), ("k_cache", "kv_cache"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn integer_values_carry_no_gradient_and_unrelated_values_get_zeros() {
        let (mut b, _, pos, s) = kv_graph();
        assert!(matches!(grad(&mut b, s, &[pos]), Err(AutodiffError::NotFloat { .. })));
        assert!(matches!(grad(&mut b, pos, &[]), Err(AutodiffError::NotFloat { .. })));
        // A weight the loss does not read: its gradient is zeros of its shape.
        let w = b.weight("unused", DType::F32, Shape::new([3])).unwrap();
        let y = b.input("y", DType::F32, Shape::new([3])).unwrap();
        let l = b.add("l", Op::ReduceSum { x: y, axes: vec![0], keep_dims: false }).unwrap();
        let g = grad(&mut b, l, &[w, y]).unwrap();
        assert_eq!(b.node(g[0]).shape, Shape::new([3]));
        assert!(matches!(b.node(g[0]).op, Op::Affine { mul, add, .. } if mul == 0.0 && add == 0.0));
    }

    #[test]
    fn grad_graph_names_gradient_outputs() {
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DType::F32, Shape::new([2])).unwrap();
        let y = b.add("y", Op::Unary { op: UnaryOp::Exp, x }).unwrap();
        let l = b.add("l", Op::ReduceSum { x: y, axes: vec![0], keep_dims: false }).unwrap();
        b.output("loss", l);
        let g = grad_graph(b.build().unwrap(), "loss", &["x"]).unwrap();
        let names: Vec<&str> = g.outputs().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["loss", "grad.x"]);
        assert!(matches!(grad_graph(g, "nothing", &["x"]), Err(AutodiffError::UnknownName(_))));
    }
}
