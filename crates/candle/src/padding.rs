//! Padding rows that a graph never reads, so its linear layers can skip them.
//!
//! A batch of sentences is padded to its longest one: at batch 32 of 7–33 tokens a third of every
//! linear layer's rows are padding. In an encoder such as BERT those rows are computed and then
//! ignored: attention hides padded keys behind the mask, and mean pooling leaves padded positions
//! out. This module proves that for a graph, op by op, so the executable may leave those rows of
//! a linear layer's output at zero instead of computing them.
//!
//! The proof follows "don't-care" rows forward from each linear layer over [batch, seq, features]:
//! a value is *padded at axes (b, s)* when its entries at positions where the mask is 0 may hold
//! any finite number (the skipped rows are zeros). Row-wise ops (linear, element-wise ops that
//! keep finite numbers finite, normalisation over the last axis) keep that; reshapes that keep the two axes and permutes move it; attention masked by the same mask
//! keeps it (padded keys get weight exactly 0; padded queries give padded rows); mean pooling over
//! the same mask ends it. Any other op reading such a value, or a graph output holding one, makes
//! the whole graph ineligible: then nothing is skipped and results are exactly as before.

use accelrt_core::{BinaryOp, Graph, Op, ReshapeDim, UnaryOp};
use std::collections::HashSet;

/// Which linear layers of a graph may skip the rows where `mask` is 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowSkip {
    /// The node index of the graph input that masks padding ([batch, seq], non-zero = a token).
    pub mask: usize,
    /// Linear nodes whose input rows, read as [batch, seq, features], may be skipped where the mask
    /// is 0 (their outputs are zero there).
    pub linears: HashSet<usize>,
}

/// Where a padded value keeps its batch and sequence axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Axes {
    batch: usize,
    seq: usize,
}

/// Proves which linear layers (among `candidates`, the Linear nodes the executable can run with
/// row skipping) may skip padded rows; `None` when the graph does not allow it.
pub(crate) fn analyse(graph: &Graph, candidates: &HashSet<usize>) -> Option<RowSkip> {
    let nodes = graph.nodes();
    // The one mask: every masked attention and mean pool must use the same input.
    let mut mask = None;
    for node in nodes {
        let m = match node.op {
            Op::Attention { mask: Some(m), .. } | Op::MeanPool { mask: m, .. } => m,
            _ => continue,
        };
        if !matches!(nodes[m.index()].op, Op::Input { .. }) || mask.is_some_and(|seen| seen != m) {
            return None;
        }
        mask = Some(m);
    }
    let mask = mask?;
    let mut padded: Vec<Option<Axes>> = vec![None; nodes.len()];
    let mut linears = HashSet::new();
    for (i, node) in nodes.iter().enumerate() {
        let rank = node.shape.rank();
        let operand = |id: accelrt_core::ValueId| padded[id.index()];
        let any_padded = node.op.operands().iter().any(|&o| padded[o.index()].is_some());
        let keeps_last_axis = |a: Axes| a.batch + 1 < rank && a.seq + 1 < rank;
        padded[i] = match &node.op {
            Op::Linear { x, weight, bias } => {
                if bias.is_some_and(|b| operand(b).is_some()) || operand(*weight).is_some() {
                    return None;
                }
                match operand(*x) {
                    Some(a) if keeps_last_axis(a) => {}
                    Some(_) => return None,
                    None => {}
                }
                let rows = Axes { batch: 0, seq: 1 };
                if candidates.contains(&i) && rank == 3 && operand(*x).is_none_or(|a| a == rows) {
                    linears.insert(i);
                    Some(rows)
                } else {
                    operand(*x)
                }
            }
            _ if !any_padded => None,
            // Padded rows must stay finite (a NaN there would reach valid rows through attention's
            // zero weights), so only ops that keep finite numbers finite may touch them.
            Op::Unary { x, op } if !matches!(op, UnaryOp::Exp | UnaryOp::Sqrt | UnaryOp::Log) => operand(*x),
            Op::LayerNorm { x, gamma, beta, .. } => {
                let a = operand(*x)?;
                if operand(*gamma).is_some() || beta.is_some_and(|b| operand(b).is_some()) || !keeps_last_axis(a) {
                    return None;
                }
                Some(a)
            }
            Op::RmsNorm { x, gamma, .. } => {
                let a = operand(*x)?;
                if operand(*gamma).is_some() || !keeps_last_axis(a) {
                    return None;
                }
                Some(a)
            }
            Op::Binary { a, b, op: BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul } => {
                // A padded operand must not be broadcast: its padded rows would spread.
                let mut axes = None;
                for o in [a, b] {
                    if let Some(x) = operand(*o) {
                        if nodes[o.index()].shape != node.shape || axes.is_some_and(|seen| seen != x) {
                            return None;
                        }
                        axes = Some(x);
                    }
                }
                axes
            }
            Op::Reshape { x, dims } => {
                let a = operand(*x)?;
                let kept = |axis: usize| matches!(dims.get(axis), Some(ReshapeDim::Keep(k)) if *k == axis);
                if !(kept(a.batch) && kept(a.seq)) {
                    return None;
                }
                Some(a)
            }
            Op::Permute { x, perm } => {
                let a = operand(*x)?;
                let at = |old: usize| perm.iter().position(|&p| p == old);
                Some(Axes { batch: at(a.batch)?, seq: at(a.seq)? })
            }
            Op::Attention { q, k, v, mask: Some(m), .. } if *m == mask => {
                // [batch, heads, seq, head size]; q, k and v are padded there or not at all.
                let heads = Axes { batch: 0, seq: 2 };
                if [q, k, v].iter().any(|o| operand(**o).is_some_and(|a| a != heads)) {
                    return None;
                }
                Some(heads)
            }
            Op::MeanPool { x, mask: m } if *m == mask && operand(*x) == Some(Axes { batch: 0, seq: 1 }) => None,
            _ => return None,
        };
    }
    if linears.is_empty() || graph.outputs().iter().any(|(_, id)| padded[id.index()].is_some()) {
        return None;
    }
    Some(RowSkip { mask: mask.index(), linears })
}

#[cfg(test)]
mod tests {
    use super::*;
    use accelrt_core::{DType, Dim, GraphBuilder, Shape, ValueId};

    /// A one-layer encoder: linear q/k/v, attention under the mask, linear out, residual, layer
    /// norm, then `head` on top.
    fn encoder(head: impl Fn(&mut GraphBuilder, ValueId, ValueId) -> ValueId) -> (Graph, HashSet<usize>) {
        let mut b = GraphBuilder::new("encoder");
        let rows = || Shape(vec![Dim::sym("batch"), Dim::sym("seq")]);
        let x = b.input("x", DType::F32, Shape(vec![Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(8)])).unwrap();
        let mask = b.input("mask", DType::U32, rows()).unwrap();
        let w = |b: &mut GraphBuilder, n: &str| b.weight(n, DType::F32, Shape::new([8, 8])).unwrap();
        let mut linear_ids = HashSet::new();
        let heads = |b: &mut GraphBuilder, name: &str, x: ValueId, linear_ids: &mut HashSet<usize>| {
            let weight = w(b, &format!("{name}.weight"));
            let y = b.add(name, Op::Linear { x, weight, bias: None }).unwrap();
            linear_ids.insert(y.index());
            let dims = vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Fixed(2), ReshapeDim::Infer];
            let r = b.add(format!("{name}.split"), Op::Reshape { x: y, dims }).unwrap();
            b.add(format!("{name}.heads"), Op::Permute { x: r, perm: vec![0, 2, 1, 3] }).unwrap()
        };
        let q = heads(&mut b, "q", x, &mut linear_ids);
        let k = heads(&mut b, "k", x, &mut linear_ids);
        let v = heads(&mut b, "v", x, &mut linear_ids);
        let a = b
            .add("attn", Op::Attention { q, k, v, mask: Some(mask), causal: false, scale: 0.5, q_positions: None })
            .unwrap();
        let a = b.add("merge_t", Op::Permute { x: a, perm: vec![0, 2, 1, 3] }).unwrap();
        let dims = vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Fixed(8)];
        let a = b.add("merge", Op::Reshape { x: a, dims }).unwrap();
        let ow = w(&mut b, "o.weight");
        let o = b.add("o", Op::Linear { x: a, weight: ow, bias: None }).unwrap();
        linear_ids.insert(o.index());
        let r = b.add("residual", Op::Binary { op: BinaryOp::Add, a: o, b: x }).unwrap();
        let g = b.weight("g", DType::F32, Shape::new([8])).unwrap();
        let n = b.add("norm", Op::LayerNorm { x: r, gamma: g, beta: None, eps: 1e-5 }).unwrap();
        let out = head(&mut b, n, mask);
        b.output("y", out);
        (b.build().unwrap(), linear_ids)
    }

    #[test]
    fn an_encoder_pooled_under_its_mask_skips_every_linear() {
        let (graph, linears) = encoder(|b, x, mask| b.add("pool", Op::MeanPool { x, mask }).unwrap());
        let skip = analyse(&graph, &linears).expect("eligible");
        assert_eq!(skip.linears, linears);
        assert_eq!(graph.nodes()[skip.mask].name, "mask");
    }

    #[test]
    fn padded_rows_that_reach_an_output_or_an_unknown_op_forbid_skipping() {
        // The per-token states are the output: their padded rows would be visible.
        let (graph, linears) = encoder(|_, x, _| x);
        assert_eq!(analyse(&graph, &linears), None);
        // Taking the first token (CLS pooling) is not proven safe by this analysis.
        let (graph, linears) =
            encoder(|b, x, _| b.add("cls", Op::Slice { x, axis: 1, start: 0, end: Some(1) }).unwrap());
        assert_eq!(analyse(&graph, &linears), None);
        // Without candidates there is nothing to skip.
        let (graph, _) = encoder(|b, x, mask| b.add("pool", Op::MeanPool { x, mask }).unwrap());
        assert_eq!(analyse(&graph, &HashSet::new()), None);
    }
}
