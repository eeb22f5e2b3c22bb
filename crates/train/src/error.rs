use std::path::PathBuf;

/// Everything the training data pipeline can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// One line of a data file is not what the format requires; `line` is 1-based.
    #[error("{}:{line}: {message}", path.display())]
    BadLine { path: PathBuf, line: u64, message: String },
    /// A whole data file is unusable (empty, too large, too few examples for one batch, …).
    #[error("{}: {message}", path.display())]
    BadFile { path: PathBuf, message: String },
    /// A file's SHA-256 is not the one pinned for it.
    #[error("{}: SHA-256 mismatch: expected {expected}, got {actual}", file.display())]
    Checksum { file: PathBuf, expected: String, actual: String },
    /// Fetching a data set failed from every source tried.
    #[error("could not fetch data set `{dataset}`; tried:\n  - {}", tried.join("\n  - "))]
    SourceUnavailable { dataset: String, tried: Vec<String> },
    /// No data set has this name.
    #[error("unknown data set `{name}` (known: {known})")]
    UnknownDataset { name: String, known: String },
    /// The tokenizer given to the corpus reader failed.
    #[error("tokenizing {}: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    /// A saved data position does not belong to this data set or these settings.
    #[error("cannot restore the data position: {0}")]
    Restore(String),
    /// A parameter is out of its range.
    #[error("{0}")]
    InvalidArgument(String),
    /// Loading or building a model failed.
    #[error(transparent)]
    Model(#[from] accelrt_models::ModelError),
    /// A graph, backend or weight error from accelrt-core.
    #[error(transparent)]
    Core(#[from] accelrt_core::Error),
    /// The training step's gradient could not be built.
    #[error(transparent)]
    Autodiff(#[from] accelrt_core::autodiff::AutodiffError),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> TrainError {
        TrainError::Io { path: path.into(), source }
    }
}
