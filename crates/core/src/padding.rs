//! Zero-padding a row-major tensor's bytes up to a bigger shape and cutting it back: what every
//! backend that runs fixed-shape programs (shape buckets) does to its inputs and outputs, and which
//! symbols of a graph may be padded at all.

use crate::{Dim, Graph, Op, KV_LEN};
use std::collections::{BTreeSet, HashMap};

/// Copies `src` (row-major, shape `from`, `elem` bytes per element) into a zeroed buffer of shape
/// `to`, where every axis of `to` is at least that of `from`.
pub fn pad(src: &[u8], elem: usize, from: &[usize], to: &[usize]) -> Vec<u8> {
    if from == to {
        return src.to_vec();
    }
    let mut out = vec![0u8; to.iter().product::<usize>() * elem];
    copy_block(src, &mut out, elem, from, to, true);
    out
}

/// Cuts `src` of shape `from` down to shape `to` (every axis at most that of `from`).
pub fn unpad(src: &[u8], elem: usize, from: &[usize], to: &[usize]) -> Vec<u8> {
    if from == to {
        return src.to_vec();
    }
    let mut out = vec![0u8; to.iter().product::<usize>() * elem];
    copy_block(src, &mut out, elem, to, from, false);
    out
}

/// Copies the region of shape `small` between a tensor of shape `small` and one of shape `big`
/// (row-major): small → big when `into_big`, else big → small. One contiguous row at a time.
fn copy_block(src: &[u8], dst: &mut [u8], elem: usize, small: &[usize], big: &[usize], into_big: bool) {
    let rank = small.len();
    if small.iter().product::<usize>() == 0 {
        return;
    }
    let row = small.last().copied().unwrap_or(1) * elem;
    let big_strides: Vec<usize> = (0..rank).map(|i| big[i + 1..].iter().product::<usize>() * elem).collect();
    let rows: usize = small[..rank.saturating_sub(1)].iter().product();
    let mut index = vec![0usize; rank.saturating_sub(1)];
    for r in 0..rows {
        let big_off: usize = index.iter().zip(&big_strides).map(|(i, s)| i * s).sum();
        let small_off = r * row;
        if into_big {
            dst[big_off..big_off + row].copy_from_slice(&src[small_off..small_off + row]);
        } else {
            dst[small_off..small_off + row].copy_from_slice(&src[big_off..big_off + row]);
        }
        for axis in (0..index.len()).rev() {
            index[axis] += 1;
            if index[axis] < small[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

/// The symbols of `graph`'s inputs that can be padded without changing the real part of any
/// output. Conservative: a symbol is refused when any op mixes values along an axis that carries it
/// (or a size derived from it): softmax, layer/RMS/L2 norms over it, `TakeLast` along it, the
/// contracted axis of a matmul or linear layer, the axis of a concatenation, a reshape that merges
/// it into a derived size, a sum or log-softmax over it, the ids of a scatter-add, any axis of a
/// dropout's input (its mask follows the row-major index), and the key axis
/// of an attention (or its weights) that neither masks (`mask`, not causal) nor limits by
/// `q_positions`. Mean pooling is masked; everything else is per position.
pub fn paddable_symbols(graph: &Graph) -> BTreeSet<String> {
    paddable_ignoring(graph, &BTreeSet::new())
}

/// The input symbol along which a session's step may be **split into consecutive chunks**, run one
/// after another with the same state, the last chunk's outputs being the whole step's: the graph
/// has KV caches (earlier chunks reach later ones only through them), no output has that symbol's
/// axis, and nothing mixes positions along it but `TakeLast` (it is paddable once those are set
/// aside) — so every output sees the step's positions only through its last one. Llama's `seq`
/// is (its logits come from the last position): a prompt of any length runs as chunks of the
/// compiled sizes, so a static-shape device needs no program per prompt length. `None` for graphs
/// without caches or with per-position outputs.
pub fn chunkable_symbol(graph: &Graph) -> Option<String> {
    if !graph.nodes().iter().any(|n| matches!(n.op, Op::KvCache { .. })) {
        return None;
    }
    let mut candidates: BTreeSet<String> = BTreeSet::new();
    let mut take_last = BTreeSet::new();
    for (index, node) in graph.nodes().iter().enumerate() {
        if let Op::TakeLast { x, axis } = &node.op {
            if let Some(Dim::Sym(s)) = graph.node(*x).shape.dims().get(*axis) {
                candidates.insert(s.clone());
                take_last.insert(index);
            }
        }
    }
    let in_outputs: BTreeSet<String> = graph
        .outputs()
        .iter()
        .flat_map(|(_, id)| graph.node(*id).shape.dims().to_vec())
        .filter_map(|d| if let Dim::Sym(s) = d { Some(s) } else { None })
        .collect();
    let paddable = paddable_ignoring(graph, &take_last);
    candidates.into_iter().find(|s| paddable.contains(s) && !in_outputs.contains(s))
}

/// [`paddable_symbols`], not counting the nodes at the indices in `ignore`.
fn paddable_ignoring(graph: &Graph, ignore: &BTreeSet<usize>) -> BTreeSet<String> {
    let mut inputs = BTreeSet::new();
    for (_, node) in graph.inputs() {
        for d in node.shape.dims() {
            if let Dim::Sym(s) = d {
                inputs.insert(s.clone());
            }
        }
    }
    // A derived symbol (an inferred reshape axis, a concatenation) stands for the input symbols of
    // the operands it was made from.
    let mut sources: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut unsafe_: BTreeSet<String> = BTreeSet::new();
    let resolve = |s: &str, sources: &HashMap<String, BTreeSet<String>>| -> BTreeSet<String> {
        if inputs.contains(s) {
            [s.to_string()].into()
        } else {
            sources.get(s).cloned().unwrap_or_default()
        }
    };
    let syms_of = |id: crate::ValueId| -> Vec<String> {
        graph
            .node(id)
            .shape
            .dims()
            .iter()
            .filter_map(|d| if let Dim::Sym(s) = d { Some(s.clone()) } else { None })
            .collect()
    };
    for (index, node) in graph.nodes().iter().enumerate() {
        let axis_sym = |id: crate::ValueId, axis: Option<usize>| -> Option<String> {
            let dims = graph.node(id).shape.dims();
            let axis = axis.unwrap_or(dims.len().checked_sub(1)?);
            match dims.get(axis)? {
                Dim::Sym(s) => Some(s.clone()),
                Dim::Fixed(_) => None,
            }
        };
        let last = |id| axis_sym(id, None);
        let mut mixed: Vec<String> = Vec::new();
        match &node.op {
            Op::Softmax { x } | Op::LayerNorm { x, .. } | Op::RmsNorm { x, .. } | Op::L2Normalize { x, .. } => {
                mixed.extend(last(*x))
            }
            Op::Linear { x, .. } => mixed.extend(last(*x)),
            Op::TakeLast { .. } if ignore.contains(&index) => {}
            Op::TakeLast { x, axis } => mixed.extend(axis_sym(*x, Some(*axis))),
            Op::MatMul { a, b, transpose_b } => {
                mixed.extend(last(*a));
                let rank = graph.node(*b).shape.rank();
                mixed.extend(axis_sym(*b, Some(if *transpose_b { rank - 1 } else { rank.saturating_sub(2) })));
            }
            Op::Concat { xs, axis } => {
                for x in xs {
                    mixed.extend(axis_sym(*x, Some(*axis)));
                }
            }
            Op::Attention { k, mask, causal, q_positions, .. }
            | Op::AttentionProbs { k, mask, causal, q_positions, .. } => {
                let masked = (mask.is_some() && !causal) || q_positions.is_some();
                if !masked {
                    mixed.extend(axis_sym(*k, Some(2)));
                }
            }
            // Training ops: a sum (of a loss, of a gradient over rows) or a log-softmax over a padded
            // axis takes the padding in, and padded ids would add padded rows into a table's rows.
            Op::ReduceSum { x, axes, .. } => {
                for &axis in axes {
                    mixed.extend(axis_sym(*x, Some(axis)));
                }
            }
            Op::LogSoftmax { x } => mixed.extend(last(*x)),
            Op::IndexAdd { ids, .. } => mixed.extend(syms_of(*ids)),
            // The mask hashes each element's row-major index, which padding any axis shifts.
            Op::Dropout { x, .. } => mixed.extend(syms_of(*x)),
            _ => {}
        }
        // Sizes this node derives stand for every symbol of its operands — for a reshape, every
        // symbol of its input that no `Keep` axis carries through unchanged (BERT's head split
        // [batch, seq, hidden] → [batch, seq, heads, Infer] derives a size from `hidden` alone).
        let mut operand_syms: BTreeSet<String> =
            node.op.operands().into_iter().flat_map(syms_of).flat_map(|s| resolve(&s, &sources)).collect();
        if let Op::Reshape { x, dims } = &node.op {
            let kept = |i: usize| dims.iter().any(|r| matches!(r, crate::ReshapeDim::Keep(k) if *k == i));
            operand_syms = graph
                .node(*x)
                .shape
                .dims()
                .iter()
                .enumerate()
                .filter(|(i, _)| !kept(*i))
                .filter_map(|(_, d)| if let Dim::Sym(s) = d { Some(resolve(s, &sources)) } else { None })
                .flatten()
                .collect();
        }
        for d in node.shape.dims() {
            if let Dim::Sym(s) = d {
                if !inputs.contains(s) && s != KV_LEN && !sources.contains_key(s) {
                    sources.insert(s.clone(), operand_syms.clone());
                    if matches!(node.op, Op::Reshape { .. }) && !operand_syms.is_empty() {
                        // A merged axis interleaves padding with real values.
                        mixed.push(s.clone());
                    }
                }
            }
        }
        for s in mixed {
            unsafe_.extend(resolve(&s, &sources));
        }
    }
    inputs.difference(&unsafe_).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_along_a_symbol_keep_it_exact() {
        use crate::{DType, GraphBuilder, Shape};
        let mut b = GraphBuilder::new("t");
        let x = b.input("x", DType::F32, Shape(vec![Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(4)])).unwrap();
        let s = b.add("s", Op::Softmax { x }).unwrap();
        let t = b.add("t", Op::TakeLast { x: s, axis: 1 }).unwrap();
        b.output("t", t);
        let g = b.build().unwrap();
        assert_eq!(paddable_symbols(&g), ["batch".to_string()].into());
    }

    #[test]
    fn a_reshape_that_keeps_the_symbolic_axes_keeps_them_paddable() {
        use crate::{DType, GraphBuilder, ReshapeDim, Shape};
        let mut b = GraphBuilder::new("t");
        let x = b.input("x", DType::F32, Shape(vec![Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(8)])).unwrap();
        // BERT's head split: the inferred axis comes from the fixed hidden size only.
        let split = vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Fixed(2), ReshapeDim::Infer];
        let h = b.add("split", Op::Reshape { x, dims: split }).unwrap();
        let merge = vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Infer];
        let m = b.add("merge", Op::Reshape { x: h, dims: merge }).unwrap();
        b.output("m", m);
        let g = b.build().unwrap();
        assert_eq!(paddable_symbols(&g), ["batch".to_string(), "seq".to_string()].into());
        // Flattening seq into the features mixes it.
        let mut b2 = GraphBuilder::new("t2");
        let x = b2.input("x", DType::F32, Shape(vec![Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(8)])).unwrap();
        let f = b2.add("flat", Op::Reshape { x, dims: vec![ReshapeDim::Keep(0), ReshapeDim::Infer] }).unwrap();
        b2.output("f", f);
        assert_eq!(paddable_symbols(&b2.build().unwrap()), ["batch".to_string()].into());
    }

    #[test]
    fn no_axis_of_a_dropout_input_is_paddable() {
        use crate::{DType, GraphBuilder, Shape};
        let mut b = GraphBuilder::new("t");
        let x = b.input("x", DType::F32, Shape(vec![Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(4)])).unwrap();
        let seed = b.input("seed", DType::U32, Shape(vec![])).unwrap();
        let d = b.add("d", Op::Dropout { x, seed, p: 0.1, stream: 0 }).unwrap();
        b.output("d", d);
        assert!(paddable_symbols(&b.build().unwrap()).is_empty());
    }

    #[test]
    fn pad_then_unpad_gives_the_tensor_back_with_zeros_between() {
        // [2, 3] of u16 into [3, 4].
        let src: Vec<u8> = (1..=6u16).flat_map(|v| v.to_le_bytes()).collect();
        let padded = pad(&src, 2, &[2, 3], &[3, 4]);
        let values: Vec<u16> = padded.chunks(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
        assert_eq!(values, [1, 2, 3, 0, 4, 5, 6, 0, 0, 0, 0, 0]);
        assert_eq!(unpad(&padded, 2, &[3, 4], &[2, 3]), src);
        assert_eq!(pad(&[7, 8], 2, &[], &[]), [7, 8], "a scalar is itself");
        assert_eq!(pad(&[], 4, &[0, 3], &[2, 3]), [0u8; 24], "an empty tensor pads to zeros");
    }
}
