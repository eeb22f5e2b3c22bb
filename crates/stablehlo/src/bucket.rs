//! Shape buckets, and the specialisation of a graph to one: every symbolic dimension bound, caches
//! at their full capacity, quantised weights as the f32 values they stand for.

use crate::ExportError;
use accelrt_core::{reshape_target, Bindings, DType, Dim, Graph, GraphBuilder, Op, KV_LEN};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The sizes one compiled program is made for: a size for every symbolic dimension of the graph
/// (`batch`, `seq`, …) and, for graphs with KV caches, the number of cache slots (sequences held
/// at once). `kv_len` needs no entry: it is always the caches' capacity.
///
/// Written and parsed as `batch=2,seq=16` (symbols in name order), with `slots=N` last when set;
/// the name `slots` is therefore reserved for the slot count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Bucket {
    /// Symbol name → size (≥ 1).
    pub dims: BTreeMap<String, usize>,
    /// Cache slots: the first axis of every cache tensor. Required when the graph has `KvCache` nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<usize>,
}

impl Bucket {
    /// A bucket binding each `(symbol, size)`.
    pub fn new<S: Into<String>>(dims: impl IntoIterator<Item = (S, usize)>) -> Bucket {
        Bucket { dims: dims.into_iter().map(|(s, n)| (s.into(), n)).collect(), slots: None }
    }

    /// The same bucket with `slots` cache slots.
    pub fn with_slots(mut self, slots: usize) -> Bucket {
        self.slots = Some(slots);
        self
    }

    /// The bucket a set of inputs binds (see `Graph::bind_inputs`), with no slot count.
    pub fn from_bindings(bindings: &Bindings) -> Bucket {
        Bucket::new(bindings.iter())
    }

    /// The size bound to `symbol`.
    pub fn get(&self, symbol: &str) -> Option<usize> {
        self.dims.get(symbol).copied()
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self.dims.iter().map(|(s, n)| format!("{s}={n}")).collect();
        if let Some(n) = self.slots {
            parts.push(format!("slots={n}"));
        }
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Bucket {
    type Err = ExportError;

    /// Parses `batch=2,seq=16[,slots=4]`.
    fn from_str(text: &str) -> Result<Bucket, ExportError> {
        let bad = |reason: String| ExportError::BadBucket { text: text.to_string(), reason };
        let mut bucket = Bucket::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, size) = part.split_once('=').ok_or_else(|| bad(format!("`{part}` is not name=size")))?;
            let size: usize = size.trim().parse().map_err(|_| bad(format!("`{size}` is not a size")))?;
            let name = name.trim();
            let fresh = if name == "slots" {
                bucket.slots.replace(size).is_none()
            } else {
                bucket.dims.insert(name.to_string(), size).is_none()
            };
            if !fresh {
                return Err(bad(format!("`{name}` given twice")));
            }
        }
        Ok(bucket)
    }
}

/// A graph specialised to a bucket.
pub(crate) struct Specialised {
    /// The graph rebuilt with concrete input shapes and quantised weights declared f32 (types
    /// re-inferred, so fixed sizes are checked against the bucket).
    pub graph: Graph,
    /// The concrete shape of every node's value, by node index.
    pub shapes: Vec<Vec<usize>>,
    /// Cache slots (the bucket's; 0 for a graph without caches).
    pub slots: usize,
}

/// Binds every symbol of `graph` with `bucket` (and `kv_len` with the caches' capacity).
pub(crate) fn specialise(graph: &Graph, bucket: &Bucket) -> Result<Specialised, ExportError> {
    if let Some((symbol, _)) = bucket.dims.iter().find(|(_, &n)| n == 0) {
        return Err(ExportError::BadBucket { text: bucket.to_string(), reason: format!("`{symbol}` is 0") });
    }
    let mut bindings: BTreeMap<String, usize> = bucket.dims.clone();
    let capacity = cache_capacity(graph, bucket)?;
    if let Some(capacity) = capacity {
        match bindings.insert(KV_LEN.to_string(), capacity) {
            Some(given) if given != capacity => {
                return Err(ExportError::BucketConflict {
                    symbol: KV_LEN.into(),
                    given,
                    needed: capacity,
                    reason: "caches are exported at their full capacity".into(),
                })
            }
            _ => {}
        }
    }
    let used = used_symbols(graph);
    let known = |s: &str| used.contains(s) || (capacity.is_some() && s == KV_LEN);
    let unused = |s: &&String| !known(s.as_str());
    if let Some(symbol) = bucket.dims.keys().find(unused) {
        return Err(ExportError::BadBucket {
            text: bucket.to_string(),
            reason: format!("the graph has no symbol `{symbol}` (a typo?)"),
        });
    }

    let mut b = GraphBuilder::new(graph.name());
    for node in graph.nodes() {
        let op = match &node.op {
            Op::Input { dtype, shape } => {
                let mut dims = Vec::with_capacity(shape.rank());
                for d in shape.dims() {
                    dims.push(match d {
                        Dim::Fixed(n) => Dim::Fixed(*n),
                        Dim::Sym(s) => Dim::Fixed(*bindings.get(s).ok_or_else(|| ExportError::UnboundSymbol {
                            node: node.name.clone(),
                            symbol: s.clone(),
                        })?),
                    });
                }
                Op::Input { dtype: *dtype, shape: accelrt_core::Shape(dims) }
            }
            // Quantised weights are exported as the f32 values they decode to (see `weights.rs`).
            Op::Weight { dtype: DType::Quant(_), shape } => Op::Weight { dtype: DType::F32, shape: shape.clone() },
            other => other.clone(),
        };
        b.add(node.name.clone(), op)
            .map_err(|source| ExportError::Specialise { bucket: bucket.to_string(), source })?;
    }
    for (name, id) in graph.outputs() {
        b.output(name, *id);
    }
    let graph = b.build().map_err(|source| ExportError::Specialise { bucket: bucket.to_string(), source })?;

    let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(graph.nodes().len());
    for node in graph.nodes() {
        // Symbols not bound yet are derived by this node (an inferred reshape axis, a slice or a
        // concatenation of a dimension that depends on `kv_len`): work them out from its operands.
        let own = derived_shape(&node.op, &shapes);
        let mut shape = Vec::with_capacity(node.shape.rank());
        for (axis, d) in node.shape.dims().iter().enumerate() {
            shape.push(match d {
                Dim::Fixed(n) => *n,
                Dim::Sym(s) => match (bindings.get(s), &own) {
                    (Some(n), _) => *n,
                    (None, Some(own)) => {
                        bindings.insert(s.clone(), own[axis]);
                        own[axis]
                    }
                    (None, None) => {
                        return Err(ExportError::UnboundSymbol { node: node.name.clone(), symbol: s.clone() })
                    }
                },
            });
        }
        shapes.push(shape);
    }
    Ok(Specialised { graph, shapes, slots: bucket.slots.unwrap_or(0) })
}

/// The capacity every cache of the graph shares (they share `kv_len`), if the graph has caches.
fn cache_capacity(graph: &Graph, bucket: &Bucket) -> Result<Option<usize>, ExportError> {
    let mut found: Option<(usize, &str)> = None;
    for node in graph.nodes() {
        if let Op::KvCache { capacity, .. } = node.op {
            match found {
                None => found = Some((capacity, &node.name)),
                Some((c, first)) if c != capacity => {
                    return Err(ExportError::Unsupported {
                        node: node.name.clone(),
                        kind: node.op.kind(),
                        reason: format!(
                            "capacity {capacity} differs from {c} of `{first}`; all caches share kv_len, which \
                             is exported as the capacity"
                        ),
                    })
                }
                Some(_) => {}
            }
        }
    }
    match (found, bucket.slots) {
        (Some((_, node)), None) => Err(ExportError::MissingSlots { node: node.to_string() }),
        (Some(_), Some(0)) => {
            Err(ExportError::BadBucket { text: bucket.to_string(), reason: "slots must be at least 1".into() })
        }
        (found, _) => Ok(found.map(|(c, _)| c)),
    }
}

/// Every symbol the graph's inputs use (the ones a bucket may bind).
fn used_symbols(graph: &Graph) -> std::collections::BTreeSet<&str> {
    graph
        .inputs()
        .flat_map(|(_, n)| n.shape.dims())
        .filter_map(|d| match d {
            Dim::Sym(s) => Some(s.as_str()),
            Dim::Fixed(_) => None,
        })
        .collect()
}

/// The concrete shape of the ops that can create a derived symbol, from their operands' shapes.
fn derived_shape(op: &Op, shapes: &[Vec<usize>]) -> Option<Vec<usize>> {
    let of = |id: accelrt_core::ValueId| &shapes[id.index()];
    match op {
        Op::Reshape { x, dims } => reshape_target(of(*x), dims).ok(),
        Op::Slice { x, axis, start, end } => {
            let mut s = of(*x).clone();
            s[*axis] = end.unwrap_or(s[*axis]).checked_sub(*start)?;
            Some(s)
        }
        Op::Concat { xs, axis } => {
            let mut s = of(xs[0]).clone();
            s[*axis] = xs.iter().map(|x| of(*x)[*axis]).sum();
            Some(s)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_text_round_trips() {
        let b: Bucket = "seq=16, batch=2,slots=3".parse().unwrap();
        assert_eq!(b, Bucket::new([("batch", 2), ("seq", 16)]).with_slots(3));
        assert_eq!(b.to_string(), "batch=2,seq=16,slots=3");
        assert_eq!(b.to_string().parse::<Bucket>().unwrap(), b);
        assert!("batch".parse::<Bucket>().is_err());
        assert!("batch=x".parse::<Bucket>().is_err());
        assert!("batch=1,batch=2".parse::<Bucket>().is_err());
    }
}
