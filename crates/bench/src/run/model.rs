//! Which model a bench run measures: a known name (fetched into the store) or a path, and the kind
//! of workload it runs.

use crate::Result;
use accelrt_models::{ModelKind, ModelStore};
use std::path::{Path, PathBuf};

/// Which workload a model runs: GGUF decoders generate text, everything else embeds. Does not
/// fetch anything.
pub fn model_kind(model: &str) -> Result<ModelKind> {
    let path = Path::new(model);
    if path.exists() {
        return Ok(if accelrt_models::generator::is_gguf_model(path) {
            ModelKind::TextGeneration
        } else {
            ModelKind::SentenceEmbedding
        });
    }
    Ok(accelrt_models::lookup(model)?.kind)
}

/// The model's files (a directory, or a GGUF file) and what kind of model it is.
pub(crate) fn resolve_model(model: &str, store: &ModelStore) -> Result<(PathBuf, ModelKind)> {
    let path = Path::new(model);
    if path.exists() {
        let is_gguf = accelrt_models::generator::is_gguf_model(path);
        let kind = if is_gguf { ModelKind::TextGeneration } else { ModelKind::SentenceEmbedding };
        let path = if is_gguf { accelrt_models::generator::find_gguf(path)? } else { path.to_path_buf() };
        return Ok((path, kind));
    }
    let spec = accelrt_models::lookup(model)?;
    let dir = store.ensure(spec)?;
    Ok(match spec.kind {
        ModelKind::TextGeneration => (accelrt_models::generator::find_gguf(&dir)?, ModelKind::TextGeneration),
        ModelKind::SentenceEmbedding => (dir, ModelKind::SentenceEmbedding),
    })
}
