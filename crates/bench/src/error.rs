use std::path::PathBuf;

/// Everything that can go wrong in the harness.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Loading, fetching or tokenizing the model failed (model source, tokenizer, GGUF, pipeline);
    /// the inner error says which file or step.
    #[error(transparent)]
    Model(#[from] accelrt_models::ModelError),

    /// The graph or the backend refused or failed (preparing, binding inputs, running); the inner
    /// error names the node or the device.
    #[error(transparent)]
    Core(#[from] accelrt_core::Error),

    /// A training step or its setup failed in `accelrt_train` (`--scenario training`).
    #[error(transparent)]
    Train(#[from] accelrt_train::TrainError),

    /// Reading or writing a file or directory failed (a result file, a report, a data file, a
    /// `/proc` entry); check that the path exists and is readable or writable.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A file was read but its content is refused: JSON that does not parse, an unsupported
    /// schema version, a value out of its bounds (a price, a date, a count), or a file over its size
    /// limit. Fix or regenerate the file named.
    #[error("{path}: {message}")]
    File {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it, naming the field where there is one.
        message: String,
    },

    /// `--imds`: the EC2 instance metadata service (IMDSv2) could not be reached, answered with an
    /// error, or returned an implausible instance type. Off EC2, drop `--imds` and pass
    /// `--instance-type`.
    #[error("instance metadata service: {0}")]
    Imds(String),

    /// A peer (`--peers`) failed: its runner could not start, broke the protocol, sent numbers that
    /// fail the sanity checks, or exited. The message says which; the peer's install script
    /// (`benches/peers/install.sh`) fixes a missing runner.
    #[error("peer `{peer}`: {message}")]
    Peer {
        /// The peer's name as given to `--peers` (e.g. `pytorch`).
        peer: String,
        /// What went wrong, including the runner's stderr where there is any.
        message: String,
    },

    /// The request itself is refused: options that contradict each other, an unknown instance type
    /// or scenario, a setting the model or backend cannot honour. The message says which option to
    /// change.
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

/// The harness's result type: [`BenchError`] unless stated otherwise.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
