//! The smallest embeddings service on accelrt-serve: all-MiniLM-L6-v2 on the CPU at
//! 127.0.0.1:8080 with the OpenAI embeddings API. (`accelrt serve` is the configurable version.)
//!
//!     cargo run --release --example embeddings_server
//!     curl -s localhost:8080/v1/embeddings -H 'Content-Type: application/json' \
//!          -d '{"model": "all-minilm-l6-v2", "input": ["hello", "world"]}'

use accelrt::models::{registry, ModelStore, SentenceEmbedder};
use accelrt_serve::{AppState, BatchLimits, EmbeddingBatcher, Metrics, ServerInfo};
use std::sync::Arc;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let backend = accelrt::open_backend("cpu")?;
    let dir = ModelStore::from_env().ensure(&registry::ALL_MINILM_L6_V2)?;
    let embedder = SentenceEmbedder::load(&dir, backend.as_ref(), &Default::default())?;
    let info = ServerInfo {
        model: registry::ALL_MINILM_L6_V2.id.into(),
        backend: backend.name().into(),
        device: backend.device().to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        task: accelrt_serve::Task::Embeddings,
        dimensions: Some(embedder.dimension()),
        max_input_tokens: embedder.max_tokens(),
    };
    let metrics = Arc::new(Metrics::default());
    let batcher = EmbeddingBatcher::start(embedder, BatchLimits::default(), metrics.clone())?;
    let state = Arc::new(AppState::new(batcher, metrics, info));
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
        println!("listening on http://{}", listener.local_addr()?);
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        accelrt_serve::serve(listener, state, stop, Duration::from_secs(1)).await?;
        Ok(())
    })
}
