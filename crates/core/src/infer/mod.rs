//! Shape and dtype inference: the rules that say what value each op produces. Fixed sizes are
//! checked when the graph is built; symbolic sizes are checked by the evaluators when it runs.
//!
//! `infer` only dispatches: each op family's rules live in the submodule named as in
//! `crate::reference` (its f64 semantics), `crate::autodiff` (its gradient) and the StableHLO
//! lowering — `elementwise`, `linalg`, `norm`, `attention`, `shape` and `state` (inputs, weights,
//! variables, KV caches). Rules that evaluators also need at run time (a reshape's concrete target)
//! are public here and tested on their own.

mod attention;
mod elementwise;
mod linalg;
mod norm;
mod shape;
mod state;

pub use shape::reshape_target;

use crate::graph::Node;
use crate::{DType, Dim, Error, Op, Result, Shape, ValueId};

/// The symbol for the length of the cached sequence a `KvCache` yields (shared by every cache of a
/// graph: all are written at the same positions in a step).
pub const KV_LEN: &str = "kv_len";

/// Infers the dtype and shape a node produces from its operands (which must precede it).
pub(crate) fn infer(name: &str, op: &Op, earlier: &[Node]) -> Result<(DType, Shape)> {
    let cx = Cx { name, earlier };
    for id in op.operands() {
        if id.index() >= earlier.len() {
            return Err(cx.fail(format!("operand {} does not refer to an earlier node", id.0)));
        }
    }
    match op {
        Op::Input { dtype, shape } => state::input(&cx, *dtype, shape),
        Op::Weight { dtype, shape } => state::weight(&cx, *dtype, shape),
        Op::Variable { dtype, shape, .. } => state::variable(&cx, *dtype, shape),
        Op::Assign { var, value } => state::assign(&cx, *var, *value),
        Op::KvCache { x, positions, slots, capacity } => state::kv_cache(&cx, *x, *positions, *slots, *capacity),
        Op::Binary { a, b, .. } => elementwise::binary(&cx, *a, *b),
        Op::Unary { x, .. } | Op::Affine { x, .. } => elementwise::same_float(&cx, *x),
        Op::Cast { x, dtype } => elementwise::cast(&cx, *x, *dtype),
        Op::Dropout { x, seed, p, .. } => elementwise::dropout(&cx, *x, *seed, *p),
        Op::AdamWStep { param, grad, m, v, lr, step, beta1, beta2, eps, weight_decay } => {
            elementwise::adamw_step(&cx, [*param, *grad, *m, *v], *lr, *step, [*beta1, *beta2, *eps, *weight_decay])
        }
        Op::Embedding { table, ids } => linalg::embedding(&cx, *table, *ids),
        Op::MatMul { a, b, transpose_b } => linalg::matmul(&cx, *a, *b, *transpose_b),
        Op::Linear { x, weight, bias } => linalg::linear(&cx, *x, *weight, *bias),
        Op::OneHot { ids, depth, dtype } => linalg::one_hot(&cx, *ids, *depth, *dtype),
        Op::IndexAdd { ids, src, rows } => linalg::index_add(&cx, *ids, *src, *rows),
        Op::LayerNorm { x, gamma, beta, eps } => norm::layer_norm(&cx, *x, *gamma, *beta, *eps),
        Op::RmsNorm { x, gamma, eps } => norm::layer_norm(&cx, *x, *gamma, None, *eps),
        Op::Softmax { x } => norm::softmax(&cx, *x, "softmax"),
        Op::LogSoftmax { x } => norm::softmax(&cx, *x, "log_softmax"),
        Op::L2Normalize { x, eps } => norm::l2_normalize(&cx, *x, *eps),
        Op::MeanPool { x, mask } => norm::mean_pool(&cx, *x, *mask),
        Op::ReduceSum { x, axes, keep_dims } => norm::reduce_sum(&cx, *x, axes, *keep_dims),
        Op::Attention { q, k, v, mask, causal, scale, q_positions } => attention::attention(
            &cx,
            *q,
            *k,
            *v,
            attention::Visibility { mask: *mask, causal: *causal, q_positions: *q_positions },
            *scale,
        ),
        Op::AttentionProbs { q, k, mask, causal, scale, q_positions } => attention::attention_probs(
            &cx,
            *q,
            *k,
            attention::Visibility { mask: *mask, causal: *causal, q_positions: *q_positions },
            *scale,
        ),
        Op::Rope { x, positions, base, .. } => attention::rope(&cx, *x, *positions, *base),
        Op::Reshape { x, dims } => shape::reshape(&cx, *x, dims),
        Op::Permute { x, perm } => shape::permute(&cx, *x, perm),
        Op::Slice { x, axis, start, end } => shape::slice(&cx, *x, *axis, *start, *end),
        Op::Concat { xs, axis } => shape::concat(&cx, xs, *axis),
        Op::TakeLast { x, axis } => shape::take_last(&cx, *x, *axis),
        Op::Positions { like, axis } => shape::positions(&cx, *like, *axis),
    }
}

/// What every rule needs: the node's name (errors name it) and the nodes before it.
pub(crate) struct Cx<'a> {
    name: &'a str,
    earlier: &'a [Node],
}

impl<'a> Cx<'a> {
    /// An error naming the node.
    fn fail(&self, message: String) -> Error {
        Error::node(self.name, message)
    }

    fn get(&self, id: ValueId) -> &'a Node {
        &self.earlier[id.index()]
    }

    /// A dimension the graph cannot know before running (e.g. the result of an inferred reshape).
    fn derived(&self, axis: usize) -> Dim {
        Dim::Sym(format!("{}:{axis}", self.name))
    }

    fn float_of(&self, id: ValueId, what: &str) -> Result<DType> {
        let n = self.get(id);
        if n.dtype.is_float() {
            Ok(n.dtype)
        } else {
            Err(self.fail(format!("{what} `{}` must be floating point, not {}", n.name, n.dtype)))
        }
    }

    fn int_of(&self, id: ValueId, what: &str) -> Result<()> {
        let n = self.get(id);
        if n.dtype.is_int() {
            Ok(())
        } else {
            Err(self.fail(format!("{what} `{}` must be integer, not {}", n.name, n.dtype)))
        }
    }

    fn rank_is(&self, id: ValueId, ranks: &[usize], what: &str) -> Result<&'a Shape> {
        let n = self.get(id);
        if ranks.contains(&n.shape.rank()) {
            Ok(&n.shape)
        } else {
            Err(self.fail(format!("{what} `{}` must have rank {ranks:?}, has shape {}", n.name, n.shape)))
        }
    }

    fn same_dim(&self, a: &Dim, b: &Dim, what: &str) -> Result<()> {
        if a.compatible(b) {
            Ok(())
        } else {
            Err(self.fail(format!("{what}: {a} vs {b}")))
        }
    }

    /// A per-feature parameter (norm gain, bias) must be a vector matching the last axis of x.
    fn feature_vector(&self, param: ValueId, x_shape: &Shape, what: &str) -> Result<()> {
        let p = self.rank_is(param, &[1], what)?;
        self.same_dim(&p.0[0], x_shape.0.last().unwrap_or(&Dim::Fixed(1)), &format!("{what} size vs last axis"))
    }

    /// Whether `a` and `b` have one dtype and shapes that can be the same.
    fn fits(&self, a: ValueId, b: ValueId) -> bool {
        let (a, b) = (self.get(a), self.get(b));
        a.dtype == b.dtype
            && a.shape.rank() == b.shape.rank()
            && a.shape.0.iter().zip(&b.shape.0).all(|(x, y)| x.compatible(y))
    }
}

fn check_eps(cx: &Cx<'_>, eps: f64) -> Result<()> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(cx.fail(format!("eps must be finite and ≥ 0, got {eps}")))
    }
}

/// NumPy broadcasting of two shapes.
pub(crate) fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let at = |s: &Shape, i: usize| -> Dim {
        let offset = rank - s.rank();
        if i < offset {
            Dim::Fixed(1)
        } else {
            s.0[i - offset].clone()
        }
    };
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let (x, y) = (at(a, i), at(b, i));
        out.push(match (&x, &y) {
            (Dim::Fixed(1), _) => y,
            (_, Dim::Fixed(1)) => x,
            (Dim::Fixed(p), Dim::Fixed(q)) if p != q => {
                return Err(format!("shapes {a} and {b} do not broadcast (axis {i}: {p} vs {q})"))
            }
            (Dim::Sym(_), Dim::Fixed(_)) => y,
            _ => x,
        });
    }
    Ok(Shape(out))
}
