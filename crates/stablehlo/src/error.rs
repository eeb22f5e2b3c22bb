//! What can go wrong when a graph is exported.

use accelrt_core::DType;

/// An export failure. Every variant that concerns one node names it.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A symbolic dimension of the graph that the bucket does not bind, and that the node's operands
    /// do not determine either. Add `symbol=N` to the bucket.
    #[error("node `{node}`: the bucket does not bind the symbol `{symbol}`")]
    UnboundSymbol {
        /// The first node whose shape uses the symbol.
        node: String,
        /// The unbound symbol, e.g. `seq`.
        symbol: String,
    },

    /// The bucket binds a symbol to a size the graph cannot take (e.g. `kv_len` other than the
    /// caches' capacity). Leave the symbol out of the bucket, or give the size the graph needs.
    #[error("bucket binds `{symbol}` to {given}, but the graph needs {needed}: {reason}")]
    BucketConflict {
        /// The symbol, e.g. `kv_len`.
        symbol: String,
        /// The size the bucket gives.
        given: usize,
        /// The size the graph requires.
        needed: usize,
        /// Why the graph requires it.
        reason: String,
    },

    /// A bucket string that does not parse (`batch=2,seq=16[,slots=N]`: a part that is not
    /// `name=size`, a size that is not a number, a name given twice), or a bucket that cannot be
    /// used with the graph: a size of 0, `slots=0`, or a symbol the graph does not have.
    #[error("bad bucket `{text}`: {reason}")]
    BadBucket {
        /// The bucket as written (or as displayed, when it did not come from text).
        text: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The graph has `KvCache` nodes but the bucket gives no slot count. Add `slots=N` (N ≥ 1: how
    /// many sessions' caches the compiled program holds at once).
    #[error("the graph has KV caches (first: `{node}`); the bucket must give the number of cache slots (slots=N)")]
    MissingSlots {
        /// The graph's first `KvCache` node.
        node: String,
    },

    /// The graph with the bucket's sizes fails shape or type checking, e.g. a size that a fixed
    /// dimension or a reshape does not accept. Choose sizes the model allows.
    #[error("the graph does not specialise to bucket {bucket}: {source}")]
    Specialise {
        /// The bucket, as `batch=2,seq=16`.
        bucket: String,
        /// The graph builder's error, naming the node.
        #[source]
        source: accelrt_core::Error,
    },

    /// An op that cannot be lowered to StableHLO as it stands in the graph: e.g. attention over a
    /// KV cache without `q_positions`, caches of different capacities, or sizes a static program
    /// cannot hold. Run the graph on another backend, or change the graph.
    #[error("node `{node}` ({kind}) cannot be lowered: {reason}")]
    Unsupported {
        /// The node's name.
        node: String,
        /// The op's kind, as `Op::kind` gives it.
        kind: &'static str,
        /// What stops the lowering.
        reason: String,
    },

    /// The requested compute dtype is not a floating-point type; use f32, f16 or bf16.
    #[error("compute dtype {0} is not f32, f16 or bf16")]
    ComputeDType(DType),

    /// A weight could not be turned into its argument tensor (missing, wrong type or shape,
    /// truncated bytes, a quantised type with no dequantiser), or the argument given to
    /// [`weight_argument`](crate::weight_argument) is not a weight. Check the model file against
    /// the graph.
    #[error("weight `{name}`: {source}")]
    Weight {
        /// The weight's name (or the argument's, when it is not a weight).
        name: String,
        /// The loader's error.
        #[source]
        source: accelrt_core::Error,
    },
}
