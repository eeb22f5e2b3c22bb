use crate::DType;

/// Errors of the core crate: graph construction and validation, inputs, evaluation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node `{node}`: {message}")]
    Node { node: String, message: String },

    #[error("graph: {0}")]
    Graph(String),

    #[error("input `{name}`: {message}")]
    Input { name: String, message: String },

    #[error("missing input `{0}`")]
    MissingInput(String),

    #[error("unknown input `{name}` (the graph's inputs are: {expected})")]
    UnknownInput { name: String, expected: String },

    #[error("weight `{name}`: {message}")]
    Weight { name: String, message: String },

    #[error("tensor: {0}")]
    Tensor(String),

    #[error("dtype {dtype} is not supported here: {context}")]
    UnsupportedDType { dtype: DType, context: String },

    #[error("invalid device `{spec}`: {reason}")]
    InvalidDevice { spec: String, reason: String },

    /// The requested device cannot be used here; `reason` says why (never a silent fallback).
    #[error("device `{device}` is not available: {reason}")]
    Unavailable { device: String, reason: String },

    /// The backend cannot run this graph, op, dtype or shape.
    #[error("{backend}: {what} is not supported")]
    Unsupported { backend: String, what: String },

    /// A failure inside a backend or its device runtime.
    #[error("{backend}: {message}")]
    Backend { backend: String, message: String },

    #[error("serialisation: {0}")]
    Serde(#[from] serde_json::Error),
}

impl Error {
    pub fn node(node: &str, message: impl Into<String>) -> Error {
        Error::Node { node: node.to_string(), message: message.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
