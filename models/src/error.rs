use std::path::PathBuf;

/// Errors of model loading: sources, files, configs, tokenizers, and the pipelines built on them.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model `{name}` (known models: {known}; or give a path to a model directory)")]
    UnknownModel { name: String, known: String },

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{file}: SHA-256 is {actual}, expected {expected} (corrupt or wrong file; delete it and fetch again)")]
    Checksum { file: PathBuf, expected: String, actual: String },

    #[error("could not get model `{model}` from any source; tried:\n{}", tried.iter().map(|t| format!("  - {t}")).collect::<Vec<_>>().join("\n"))]
    SourceUnavailable { model: String, tried: Vec<String> },

    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },

    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("{0}")]
    InvalidInput(String),

    /// A prompt needs more positions than the context holds. `tokens` is the prompt's length, or a
    /// lower bound on it when the text was refused before tokenising (too many bytes to fit).
    #[error("the prompt has {}{tokens} tokens but the context holds {context} positions (prompt and output together); shorten the prompt or load with a longer context", if *.at_least { "at least " } else { "" })]
    ContextLengthExceeded { tokens: usize, at_least: bool, context: usize },

    /// A model produced NaN or infinity: its weights (or input) are broken; the output is withheld.
    #[error(
        "model `{model}` produced a non-finite value (NaN or infinity) in `{output}`; its weights are probably corrupt"
    )]
    NonFinite { model: String, output: String },

    #[error(transparent)]
    Core(#[from] accelrt_core::Error),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ModelError {
        ModelError::Io { path: path.into(), source }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> ModelError {
        ModelError::Config { path: path.into(), message: message.into() }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
