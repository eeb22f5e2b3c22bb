//! Training losses as graph-building functions: each appends the ops of one loss to a graph being
//! built and returns the scalar loss value (shape `[]`), ready for [`crate::autodiff::grad`].

use crate::{BinaryOp, Error, GraphBuilder, Op, Result, UnaryOp, ValueId};

/// The scale sentence-transformers' `MultipleNegativesRankingLoss` uses by default.
pub const MNRL_SCALE: f64 = 20.0;

/// The ignore index of PyTorch's `cross_entropy` and Hugging Face's causal LM loss.
pub const IGNORE_INDEX: i64 = -100;

/// Appends `name`-prefixed nodes to `b`, so several losses can share a graph.
struct Namer<'a> {
    b: &'a mut GraphBuilder,
    prefix: String,
}

impl Namer<'_> {
    fn add(&mut self, what: &str, op: Op) -> Result<ValueId> {
        self.b.add(format!("{}.{what}", self.prefix), op)
    }

    fn binary(&mut self, what: &str, op: BinaryOp, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.add(what, Op::Binary { op, a, b })
    }

    fn sum_all(&mut self, what: &str, x: ValueId) -> Result<ValueId> {
        let axes = (0..self.b.node(x).shape.rank()).collect();
        self.add(what, Op::ReduceSum { x, axes, keep_dims: false })
    }
}

/// Next-token cross-entropy of a causal language model, as Hugging Face's `LlamaForCausalLM`
/// computes it from `labels`: position t's logits predict `labels[t + 1]` (the last position
/// predicts nothing), and the loss is the mean over predicted tokens of `−log softmax(logits)[label]`.
///
/// - `logits`: `[batch, seq, vocab]`, floating point, vocab fixed.
/// - `labels`: `[batch, seq]`, integer (usually the input ids themselves). A label outside
///   0..vocab — [`IGNORE_INDEX`] (−100) in an i64 tensor, or any id ≥ vocab — is not predicted and
///   not counted (padding).
///
/// Returns the scalar loss (shape `[]`, logits' dtype). With no counted label at all the loss is
/// 0/0 = NaN, as in PyTorch. The targets are one-hot rows of the logits' size (no gather op is
/// needed), so the step holds one more tensor of the logits' size.
pub fn causal_lm_loss(b: &mut GraphBuilder, name: &str, logits: ValueId, labels: ValueId) -> Result<ValueId> {
    let node = b.node(logits);
    let (dtype, shape) = (node.dtype, node.shape.clone());
    let fail = |m: &str| Error::node(name, m.to_string());
    if shape.rank() != 3 {
        return Err(fail(&format!("logits must be [batch, seq, vocab], got {shape}")));
    }
    let vocab = shape.0[2].fixed().ok_or_else(|| fail("the vocabulary size must be fixed"))?;
    if b.node(labels).shape.rank() != 2 {
        return Err(fail(&format!("labels must be [batch, seq], got {}", b.node(labels).shape)));
    }
    let mut n = Namer { b, prefix: name.to_string() };
    let log_probs = n.add("log_probs", Op::LogSoftmax { x: logits })?;
    let targets = n.add("targets", Op::OneHot { ids: labels, depth: vocab, dtype })?;
    // Shift the targets left by one position; the last position gets a zero row (no target).
    let next = n.add("next_targets", Op::Slice { x: targets, axis: 1, start: 1, end: None })?;
    let first = n.add("first_targets", Op::Slice { x: targets, axis: 1, start: 0, end: Some(1) })?;
    let none = n.add("no_target", Op::Affine { x: first, mul: 0.0, add: 0.0 })?;
    let shifted = n.add("shifted_targets", Op::Concat { xs: vec![next, none], axis: 1 })?;
    let picked = n.binary("picked", BinaryOp::Mul, log_probs, shifted)?;
    let total = n.sum_all("total", picked)?;
    let count = n.sum_all("count", shifted)?;
    let mean = n.binary("mean", BinaryOp::Div, total, count)?;
    n.add("loss", Op::Affine { x: mean, mul: -1.0, add: 0.0 })
}

/// sentence-transformers' `MultipleNegativesRankingLoss` (in-batch negatives) with its default
/// similarity, cosine: `scores[i, j] = scale · cos(anchor_i, positive_j)`, and the loss is the mean
/// over i of `cross-entropy(scores[i, :], target i)` — each anchor's own positive against every other
/// positive of the batch. Cosine uses `torch.nn.functional.normalize`'s x / max(‖x‖, 1e-12).
///
/// - `anchors`, `positives`: `[n, dim]` embeddings, floating point (n may be symbolic).
/// - `scale`: [`MNRL_SCALE`] (20) in sentence-transformers.
///
/// Returns the scalar loss (shape `[]`). The diagonal score is computed directly as
/// scale · Σ â_i·p̂_i, so no n × n identity (of a symbolic n) is needed.
pub fn mnrl_loss(
    b: &mut GraphBuilder,
    name: &str,
    anchors: ValueId,
    positives: ValueId,
    scale: f64,
) -> Result<ValueId> {
    for id in [anchors, positives] {
        if b.node(id).shape.rank() != 2 {
            return Err(Error::node(name, format!("embeddings must be [n, dim], got {}", b.node(id).shape)));
        }
    }
    let mut n = Namer { b, prefix: name.to_string() };
    let a = n.add("anchors_unit", Op::L2Normalize { x: anchors, eps: 1e-12 })?;
    let p = n.add("positives_unit", Op::L2Normalize { x: positives, eps: 1e-12 })?;
    let cos = n.add("cosine", Op::MatMul { a, b: p, transpose_b: true })?;
    let scores = n.add("scores", Op::Affine { x: cos, mul: scale, add: 0.0 })?;
    let log_probs = n.add("log_probs", Op::LogSoftmax { x: scores })?;
    // −log p_ii = logsumexp_i − s_ii, with logsumexp_i = s_i0 − log p_i0.
    let s0 = n.add("first_score", Op::Slice { x: scores, axis: 1, start: 0, end: Some(1) })?;
    let lp0 = n.add("first_log_prob", Op::Slice { x: log_probs, axis: 1, start: 0, end: Some(1) })?;
    let lse = n.binary("logsumexp", BinaryOp::Sub, s0, lp0)?;
    let ap = n.binary("pair_products", BinaryOp::Mul, a, p)?;
    let own = n.add("own_cosine", Op::ReduceSum { x: ap, axes: vec![1], keep_dims: true })?;
    let own = n.add("own_score", Op::Affine { x: own, mul: scale, add: 0.0 })?;
    let per_anchor = n.binary("per_anchor", BinaryOp::Sub, lse, own)?;
    let total = n.sum_all("total", per_anchor)?;
    let ones = n.add("ones", Op::Affine { x: per_anchor, mul: 0.0, add: 1.0 })?;
    let count = n.sum_all("count", ones)?;
    n.binary("loss", BinaryOp::Div, total, count)
}

/// Σ of the squares of every element of `values` (each of any shape): the squared global norm
/// that gradient clipping uses. Returns a scalar (shape `[]`).
pub fn sum_of_squares(b: &mut GraphBuilder, name: &str, values: &[ValueId]) -> Result<ValueId> {
    let mut n = Namer { b, prefix: name.to_string() };
    let mut total: Option<ValueId> = None;
    for (i, &v) in values.iter().enumerate() {
        let sq = n.binary(&format!("square{i}"), BinaryOp::Mul, v, v)?;
        let s = n.sum_all(&format!("sum{i}"), sq)?;
        total = Some(match total {
            None => s,
            Some(t) => n.binary(&format!("acc{i}"), BinaryOp::Add, t, s)?,
        });
    }
    total.ok_or_else(|| Error::node(name, "no values"))
}

/// √x for a scalar value (a norm from [`sum_of_squares`]).
pub fn sqrt(b: &mut GraphBuilder, name: &str, x: ValueId) -> Result<ValueId> {
    b.add(name, Op::Unary { op: UnaryOp::Sqrt, x })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::check::Check;
    use crate::{reference, DType, Dim, HostTensor, HostWeights, Shape};

    fn logits_graph(labels: HostTensor, logits: Vec<f32>, batch: usize) -> f64 {
        let mut b = GraphBuilder::new("lm");
        let x = b.input("logits", DType::F32, Shape(vec![Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(3)])).unwrap();
        let l = b.input("labels", labels.dtype(), Shape(vec![Dim::sym("batch"), Dim::sym("seq")])).unwrap();
        let loss = causal_lm_loss(&mut b, "ce", x, l).unwrap();
        b.output("loss", loss);
        let g = b.build().unwrap();
        let x = HostTensor::f32(vec![batch, 3, 3], logits).unwrap();
        let out = reference::evaluate(&g, &HostWeights::new(), &[("logits", &x), ("labels", &labels)]).unwrap();
        let loss = out.get("loss").unwrap();
        assert_eq!(loss.shape(), &[] as &[usize]);
        loss.to_f64_vec()[0]
    }

    #[test]
    fn causal_lm_loss_by_hand() {
        let (l2, l3) = (2f32.ln(), 3f32.ln());
        // Row 0: position 0 predicts label 2 from uniform logits (−log ⅓), position 1 predicts
        // label 1 at odds 1:2:1 (−log ½); position 2 predicts nothing.
        let row0 = [0.0, 0.0, 0.0, 0.0, l2, 0.0, 5.0, -3.0, 2.0];
        let loss = logits_graph(HostTensor::i64(vec![1, 3], vec![0, 2, 1]).unwrap(), row0.to_vec(), 1);
        assert!((loss - 6f64.ln() / 2.0).abs() < 1e-6, "{loss}");
        // Row 1: position 0's label is ignored (−100), position 1 predicts label 0 at 3:1:1 (−log ⅗).
        let row1 = [9.0, 1.0, -4.0, l3, 0.0, 0.0, 1.0, 1.0, 1.0];
        let labels = HostTensor::i64(vec![2, 3], vec![0, 2, 1, 1, IGNORE_INDEX, 0]).unwrap();
        let loss = logits_graph(labels, [row0, row1].concat(), 2);
        assert!((loss - 10f64.ln() / 3.0).abs() < 1e-6, "{loss}");
        // u32 labels: an id ≥ vocab is ignored the same way.
        let labels = HostTensor::u32(vec![2, 3], vec![0, 2, 1, 1, 7, 0]).unwrap();
        let loss = logits_graph(labels, [row0, row1].concat(), 2);
        assert!((loss - 10f64.ln() / 3.0).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn causal_lm_loss_gradient() {
        let mut c = Check::new("causal_lm");
        let x = c.input("logits", &[Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(5)], &[2, 4, 5]);
        let labels = HostTensor::i64(vec![2, 4], vec![1, 4, 0, 2, 3, IGNORE_INDEX, 4, 4]).unwrap();
        let l = c.fixed_input("labels", &[Dim::sym("batch"), Dim::sym("seq")], labels);
        let loss = causal_lm_loss(c.builder(), "ce", x, l).unwrap();
        c.run(loss);
    }

    #[test]
    fn mnrl_by_hand() {
        let mut b = GraphBuilder::new("mnrl");
        let dims = Shape(vec![Dim::sym("n"), Dim::Fixed(2)]);
        let a = b.input("a", DType::F32, dims.clone()).unwrap();
        let p = b.input("p", DType::F32, dims).unwrap();
        let loss = mnrl_loss(&mut b, "mnrl", a, p, MNRL_SCALE).unwrap();
        b.output("loss", loss);
        let g = b.build().unwrap();
        let at = HostTensor::f32(vec![2, 2], vec![1.0, 0.0, 0.0, 3.0]).unwrap();
        let pt = HostTensor::f32(vec![2, 2], vec![2.0, 0.0, 1.0, 1.0]).unwrap();
        let out = reference::evaluate(&g, &HostWeights::new(), &[("a", &at), ("p", &pt)]).unwrap();
        let got = out.get("loss").unwrap().to_f64_vec()[0];
        // cos: a0·p0 = 1, a0·p1 = 1/√2, a1·p0 = 0, a1·p1 = 1/√2; scores × 20.
        let c = 20.0 / 2f64.sqrt();
        let row0 = -(20f64.exp() / (20f64.exp() + c.exp())).ln();
        let row1 = -(c.exp() / (1.0 + c.exp())).ln();
        let want = (row0 + row1) / 2.0;
        assert!((got - want).abs() < 1e-5 * want.max(1.0), "{got} vs {want}");
    }

    #[test]
    fn mnrl_gradient() {
        let mut c = Check::new("mnrl");
        let a = c.input("a", &[Dim::sym("n"), Dim::Fixed(4)], &[3, 4]);
        let p = c.input("p", &[Dim::sym("n"), Dim::Fixed(4)], &[3, 4]);
        // A small scale keeps the softmax away from saturation, so every entry's gradient counts.
        let loss = mnrl_loss(c.builder(), "mnrl", a, p, 2.0).unwrap();
        c.run(loss);
    }
}
