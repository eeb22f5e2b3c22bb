//! The smallest chat service on accelrt-serve: SmolLM2-135M-Instruct on the CPU at 127.0.0.1:8080
//! with the OpenAI chat-completions API (continuous batching, streaming). (`accelrt serve --model
//! smollm2-135m-instruct` is the configurable version.)
//!
//!     cargo run --release --example chat_server
//!     curl -sN localhost:8080/v1/chat/completions -H 'Content-Type: application/json' -d \
//!       '{"model": "smollm2-135m-instruct", "stream": true,
//!         "messages": [{"role": "user", "content": "Name three colours."}]}'

use accelrt::models::{generator, registry, ModelStore, TextGenerator};
use accelrt_serve::{AppState, ChatLimits, ChatScheduler, Metrics, ServerInfo};
use std::sync::Arc;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let backend = accelrt::open_backend("cpu")?;
    let dir = ModelStore::from_env().ensure(&registry::SMOLLM2_135M_INSTRUCT)?;
    let gguf = generator::find_gguf(&dir)?;
    let generator = TextGenerator::load(&gguf, backend.as_ref(), &Default::default(), generator::DEFAULT_CONTEXT)?;
    let info = ServerInfo {
        model: registry::SMOLLM2_135M_INSTRUCT.id.into(),
        task: accelrt_serve::Task::Chat,
        backend: backend.name().into(),
        device: backend.device().to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        dimensions: None,
        max_input_tokens: generator.context(),
    };
    let metrics = Arc::new(Metrics::default());
    let scheduler = ChatScheduler::start(generator, ChatLimits::default(), metrics.clone())?;
    let state = Arc::new(AppState::new(scheduler, metrics, info));
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
