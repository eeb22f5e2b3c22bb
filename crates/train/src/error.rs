use std::path::PathBuf;

/// Everything the training data pipeline can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading or writing a file failed. The OS error is part of the message and deliberately
    /// not an error `source` as well: a report that prints the chain (`{:#}`) would print it twice.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },
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
    pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> TrainError {
        TrainError::Io { path: path.into(), cause }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OS error appears once in a report of the whole chain (it used to appear twice).
    #[test]
    fn an_io_error_is_reported_once() {
        let e = TrainError::io("/no/such", std::io::Error::from(std::io::ErrorKind::NotFound));
        let mut report = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            report.push_str(&format!(": {s}"));
            source = s.source();
        }
        assert_eq!(report, format!("/no/such: {}", std::io::Error::from(std::io::ErrorKind::NotFound)));
    }
}
