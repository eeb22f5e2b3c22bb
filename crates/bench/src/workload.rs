//! What the scenarios run: queries of samples drawn in order (wrapping) from a fixed input set.

use crate::Result;
use accelrt_models::SentenceEmbedder;

pub trait Workload {
    /// Runs one query made of `count` samples, starting at sample `first` of the input set (wrapping
    /// around its end). Returns once the results are back on the host.
    fn run(&mut self, first: usize, count: usize) -> Result<()>;
}

/// Sentence embeddings of a text set, tokenization included (as a service would do it).
pub struct EmbeddingWorkload<'a> {
    embedder: &'a SentenceEmbedder,
    texts: Vec<String>,
}

impl<'a> EmbeddingWorkload<'a> {
    pub fn new(embedder: &'a SentenceEmbedder, texts: Vec<String>) -> Result<EmbeddingWorkload<'a>> {
        if texts.is_empty() {
            return Err(crate::BenchError::Invalid("the input set has no texts".into()));
        }
        Ok(EmbeddingWorkload { embedder, texts })
    }
}

/// The `count` items after `first`, wrapping around the set.
pub fn cycle<T>(items: &[T], first: usize, count: usize) -> impl Iterator<Item = &T> {
    (0..count).map(move |i| &items[(first + i) % items.len()])
}

impl Workload for EmbeddingWorkload<'_> {
    fn run(&mut self, first: usize, count: usize) -> Result<()> {
        let batch: Vec<&str> = cycle(&self.texts, first, count).map(String::as_str).collect();
        self.embedder.embed(&batch)?;
        Ok(())
    }
}
