use crate::DType;

/// Errors of the core crate: graph construction and validation, inputs, evaluation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A node is invalid: a shape or dtype rule failed when it was added, a loaded graph failed
    /// validation, or evaluating it failed. Fix the graph (or the model builder) at that node.
    #[error("node `{node}`: {message}")]
    Node {
        /// The node's name, e.g. `encoder.layer.3.attention`.
        node: String,
        /// What is wrong with it.
        message: String,
    },

    /// The graph as a whole is invalid (no outputs, an output naming a missing node, an output
    /// name used twice), lacks something asked for by name (a variable), or does not fit what it is
    /// used with (e.g. a saved training state written for another training step).
    #[error("graph: {0}")]
    Graph(String),

    /// A run input does not fit the graph's input of that name: wrong dtype, rank or fixed size,
    /// or a symbol bound to two different sizes. Pass a tensor of the declared type and shape.
    #[error("input `{name}`: {message}")]
    Input {
        /// The graph input's name.
        name: String,
        /// What does not match.
        message: String,
    },

    /// A run was not given the graph input of this name; every input must be passed.
    #[error("missing input `{0}`")]
    MissingInput(String),

    /// A run was given a tensor under a name that is not one of the graph's inputs (usually a
    /// typo); the message lists the names the graph expects.
    #[error("unknown input `{name}` (the graph's inputs are: {expected})")]
    UnknownInput {
        /// The name that was passed.
        name: String,
        /// The graph's input names, comma-separated.
        expected: String,
    },

    /// A weight the graph names is missing from the weight source, or its dtype or shape differs
    /// from the graph's declaration. Check that the weights belong to this model.
    #[error("weight `{name}`: {message}")]
    Weight {
        /// The weight's name, as in the graph's `Op::Weight` node.
        name: String,
        /// What is wrong with it (e.g. "not found").
        message: String,
    },

    /// Tensor data is inconsistent with its declared shape or dtype (e.g. an element or byte count
    /// that does not match, bytes that are not whole quantisation blocks).
    #[error("tensor: {0}")]
    Tensor(String),

    /// This code path cannot hold or compute in `dtype` (e.g. a quantised dtype in a host tensor);
    /// dequantise or cast first.
    #[error("dtype {dtype} is not supported here: {context}")]
    UnsupportedDType {
        /// The dtype that was refused.
        dtype: DType,
        /// Where it was refused, e.g. "a compute dtype".
        context: String,
    },

    /// A device string does not parse; `reason` gives the accepted forms (`cpu`, `cuda:N`,
    /// `neuron:N`, `neuron:A-B`, `xla:cpu`, `pjrt:PATH[:N]`).
    #[error("invalid device `{spec}`: {reason}")]
    InvalidDevice {
        /// The device string as given.
        spec: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The requested device cannot be used here; `reason` says why (never a silent fallback).
    #[error("device `{device}` is not available: {reason}")]
    Unavailable {
        /// The device string, e.g. `cuda:0`.
        device: String,
        /// Why it cannot be used (feature not built, driver or library missing, …).
        reason: String,
    },

    /// The backend cannot run this graph, op, dtype or shape.
    #[error("{backend}: {what} is not supported")]
    Unsupported {
        /// The backend's name, e.g. `candle`.
        backend: String,
        /// The op, dtype or feature it lacks.
        what: String,
    },

    /// A failure inside a backend or its device runtime.
    #[error("{backend}: {message}")]
    Backend {
        /// The backend's name.
        backend: String,
        /// The runtime's error, as text.
        message: String,
    },

    /// Reading or writing JSON failed: malformed input, a field of the wrong type, or, for a graph
    /// file, an unsupported format version or a graph that fails validation (a tampered file).
    #[error("serialisation: {0}")]
    Serde(#[from] serde_json::Error),
}

impl Error {
    /// An [`Error::Node`] for the node called `node`; shorthand used wherever a node's rule fails.
    pub fn node(node: &str, message: impl Into<String>) -> Error {
        Error::Node { node: node.to_string(), message: message.into() }
    }
}

/// `std::result::Result` with this crate's [`enum@Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
