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
