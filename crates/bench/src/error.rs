use std::path::PathBuf;

/// Everything that can go wrong in the harness.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Model(#[from] accelrt_models::ModelError),

    #[error(transparent)]
    Core(#[from] accelrt_core::Error),

    #[error(transparent)]
    Train(#[from] accelrt_train::TrainError),

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },

    #[error("instance metadata service: {0}")]
    Imds(String),

    #[error("peer `{peer}`: {message}")]
    Peer { peer: String, message: String },

    #[error("{0}")]
    Invalid(String),

    /// Ctrl-C: the run stopped; scenarios completed before it were kept.
    #[error("interrupted")]
    Interrupted,
}

impl BenchError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> BenchError {
        BenchError::Io { path: path.into(), source }
    }
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;
