//! Which static sizes a run is padded to, and the padding itself.
//!
//! A PJRT program has static shapes, so every run needs a program compiled for one bucket. Padding
//! a symbolic axis is only exact when no op mixes the padded positions into the real ones, so a
//! symbol is padded only when the bucket lists name it **and** [`paddable_symbols`] finds that no
//! op of the graph reduces over it unmasked (a softmax or norm over it, `TakeLast` along it, a
//! contraction, a concatenation). BERT's `seq` pads (its attention and pooling are masked);
//! Llama's `seq` does not (the logits are `TakeLast` along it), its `batch` does (rows are
//! independent; padded rows of a session write to a spare cache slot). Every other size gets a
//! program of its own, compiled once and cached.

use accelrt_core::{Dim, Graph, Op, KV_LEN};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Environment variable with the bucket lists: `batch=1,2,4;seq=32,64,128` (the Neuron backend's
/// syntax). Symbols it lists are padded (where the graph allows) to the smallest listed size that
/// holds them, or run at their exact size beyond the largest; symbols it does not list always run
/// at their exact size. Set to the empty string, nothing is padded.
pub const BUCKETS_ENV: &str = "ACCELRT_PJRT_BUCKETS";

/// The default lists: `batch` padded to powers of two up to 256, `seq` to powers of two from 16
/// to 512 (each used only where the graph allows padding it).
pub const DEFAULT_BUCKETS: &str = "batch=1,2,4,8,16,32,64,128,256;seq=16,32,64,128,256,512";

/// Sizes per symbol that runs are padded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPolicy {
    /// Symbol → ascending sizes.
    pub sizes: BTreeMap<String, Vec<usize>>,
}

impl BucketPolicy {
    /// Parses `sym=a,b,c;sym2=…` (empty: no symbol is padded).
    pub fn parse(spec: &str) -> Result<BucketPolicy, String> {
        let mut sizes = BTreeMap::new();
        for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, list) = part.split_once('=').ok_or_else(|| format!("bucket list `{part}` is not sym=a,b,…"))?;
            let mut list: Vec<usize> = list
                .split(',')
                .map(|s| {
                    s.trim().parse::<usize>().map_err(|_| format!("bucket size `{s}` of `{name}` is not a number"))
                })
                .collect::<Result<_, _>>()?;
            list.sort_unstable();
            list.dedup();
            if list.is_empty() || list[0] == 0 {
                return Err(format!("the bucket list of `{name}` needs sizes ≥ 1"));
            }
            if name.trim() == "slots" {
                return Err("`slots` is not a dimension: a session's slot count is its own".into());
            }
            sizes.insert(name.trim().to_string(), list);
        }
        Ok(BucketPolicy { sizes })
    }

    /// `$ACCELRT_PJRT_BUCKETS`, else [`DEFAULT_BUCKETS`].
    pub fn from_env() -> Result<BucketPolicy, String> {
        match std::env::var(BUCKETS_ENV) {
            Ok(spec) => BucketPolicy::parse(&spec).map_err(|e| format!("{BUCKETS_ENV}: {e}")),
            Err(_) => Ok(BucketPolicy::parse(DEFAULT_BUCKETS).expect("the default parses")),
        }
    }

    /// The size a run of `size` along `symbol` is padded to.
    pub fn pad(&self, symbol: &str, size: usize) -> usize {
        self.sizes.get(symbol).and_then(|list| list.iter().copied().find(|&n| n >= size)).unwrap_or(size)
    }
}

impl Default for BucketPolicy {
    fn default() -> BucketPolicy {
        BucketPolicy::parse(DEFAULT_BUCKETS).expect("the default parses")
    }
}

/// The symbols of `graph`'s inputs that can be padded without changing the real part of any
/// output. Conservative: a symbol is refused when any op mixes values along an axis that carries it
/// (or a size derived from it): softmax, layer/RMS/L2 norms over it, `TakeLast` along it, the
/// contracted axis of a matmul or linear layer, the axis of a concatenation, a reshape that merges
/// it into a derived size, and the key axis of an attention that neither masks (`mask`, not
/// causal) nor limits by `q_positions`. Mean pooling is masked; everything else is per position.
pub fn paddable_symbols(graph: &Graph) -> BTreeSet<String> {
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
    let syms_of = |id: accelrt_core::ValueId| -> Vec<String> {
        graph
            .node(id)
            .shape
            .dims()
            .iter()
            .filter_map(|d| if let Dim::Sym(s) = d { Some(s.clone()) } else { None })
            .collect()
    };
    for node in graph.nodes() {
        let axis_sym = |id: accelrt_core::ValueId, axis: Option<usize>| -> Option<String> {
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
            _ => {}
        }
        // Sizes this node derives stand for every symbol of its operands.
        let operand_syms: BTreeSet<String> =
            node.op.operands().into_iter().flat_map(syms_of).flat_map(|s| resolve(&s, &sources)).collect();
        for d in node.shape.dims() {
            if let Dim::Sym(s) = d {
                if !inputs.contains(s) && s != KV_LEN && !sources.contains_key(s) {
                    sources.insert(s.clone(), operand_syms.clone());
                    if matches!(node.op, Op::Reshape { .. }) {
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
    fn policy_pads_listed_symbols_only() {
        let p = BucketPolicy::parse("batch=4,1,2; seq=32,64").unwrap();
        assert_eq!((p.pad("batch", 1), p.pad("batch", 3), p.pad("batch", 9)), (1, 4, 9));
        assert_eq!((p.pad("seq", 33), p.pad("other", 7)), (64, 7));
        assert!(BucketPolicy::parse("").unwrap().sizes.is_empty());
        assert!(BucketPolicy::parse("batch").is_err());
        assert!(BucketPolicy::parse("batch=0").is_err());
        assert!(BucketPolicy::parse("slots=2").is_err());
        assert_eq!(BucketPolicy::default().pad("batch", 5), 8);
    }

    #[test]
    fn reductions_along_a_symbol_keep_it_exact() {
        use accelrt_core::{DType, GraphBuilder, Shape};
        let mut b = GraphBuilder::new("t");
        let x = b.input("x", DType::F32, Shape(vec![Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(4)])).unwrap();
        let s = b.add("s", Op::Softmax { x }).unwrap();
        let t = b.add("t", Op::TakeLast { x: s, axis: 1 }).unwrap();
        b.output("t", t);
        let g = b.build().unwrap();
        assert_eq!(paddable_symbols(&g), ["batch".to_string()].into());
    }

    #[test]
    fn pad_and_unpad_round_trip() {
        use accelrt_core::padding::{pad, unpad};
        let src: Vec<u8> = (1..=6).collect(); // [2, 3] of u8
        let padded = pad(&src, 1, &[2, 3], &[3, 4]);
        assert_eq!(padded, [1, 2, 3, 0, 4, 5, 6, 0, 0, 0, 0, 0]);
        assert_eq!(unpad(&padded, 1, &[3, 4], &[2, 3]), src);
        assert_eq!(pad(&[7], 1, &[], &[]), [7]);
        assert!(pad(&[], 1, &[0, 3], &[2, 3]).iter().all(|&b| b == 0));
    }
}
