//! What can go wrong when a graph is exported.

use accelrt_core::DType;

/// An export failure. Every variant that concerns one node names it.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A symbolic dimension of the graph that the bucket does not bind.
    #[error("node `{node}`: the bucket does not bind the symbol `{symbol}`")]
    UnboundSymbol { node: String, symbol: String },

    /// The bucket binds a symbol to a size the graph cannot take (e.g. `kv_len` other than the
    /// caches' capacity).
    #[error("bucket binds `{symbol}` to {given}, but the graph needs {needed}: {reason}")]
    BucketConflict { symbol: String, given: usize, needed: usize, reason: String },

    /// A bucket string that does not parse (`batch=2,seq=16[,slots=N]`).
    #[error("bad bucket `{text}`: {reason}")]
    BadBucket { text: String, reason: String },

    /// The graph has `KvCache` nodes but the bucket gives no slot count.
    #[error("the graph has KV caches (first: `{node}`); the bucket must give the number of cache slots (slots=N)")]
    MissingSlots { node: String },

    /// The graph with the bucket's sizes fails shape or type checking.
    #[error("the graph does not specialise to bucket {bucket}: {source}")]
    Specialise {
        bucket: String,
        #[source]
        source: accelrt_core::Error,
    },

    /// An op that cannot be lowered to StableHLO as it stands in the graph.
    #[error("node `{node}` ({kind}) cannot be lowered: {reason}")]
    Unsupported { node: String, kind: &'static str, reason: String },

    /// The requested compute dtype is not a floating-point type.
    #[error("compute dtype {0} is not f32, f16 or bf16")]
    ComputeDType(DType),

    /// A weight could not be turned into its argument tensor (missing, wrong type, bad bytes).
    #[error("weight `{name}`: {source}")]
    Weight {
        name: String,
        #[source]
        source: accelrt_core::Error,
    },
}
