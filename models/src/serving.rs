//! What an accelrt server says about itself (`GET /info`): one type for both ends of the wire,
//! written by accelrt-serve and read by the benchmark's HTTP target.

use crate::registry::ModelKind;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The API a server offers, named as in `/info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// `POST /v1/embeddings`, for a sentence-embedding model.
    Embeddings,
    /// `POST /v1/chat/completions`, for a text-generation model.
    Chat,
}

impl From<ModelKind> for Task {
    fn from(kind: ModelKind) -> Task {
        match kind {
            ModelKind::SentenceEmbedding => Task::Embeddings,
            ModelKind::TextGeneration => Task::Chat,
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Task::Embeddings => "embeddings",
            Task::Chat => "chat",
        })
    }
}

/// What `GET /info` reports. Fields a server may leave out read as empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The model's id for clients (`model` in requests).
    pub model: String,
    /// The API the server offers, which follows from the model's kind.
    pub task: Task,
    /// The backend's name (`candle`, `pjrt`, `neuron`).
    #[serde(default)]
    pub backend: String,
    /// The device string the backend runs on (`cpu`, `cuda:0`, …; see `accelrt_core::DeviceSpec`).
    #[serde(default)]
    pub device: String,
    /// The server's accelrt version.
    #[serde(default)]
    pub version: String,
    /// Embeddings: the vector length.
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Embeddings: tokens per input; chat: positions per sequence (prompt and output together).
    #[serde(default)]
    pub max_input_tokens: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_reads_and_writes_as_its_api_name_and_others_are_refused() {
        let info: ServerInfo = serde_json::from_str(r#"{"model": "m", "task": "chat"}"#).unwrap();
        assert_eq!((info.task, info.max_input_tokens, info.device.as_str()), (Task::Chat, 0, ""));
        assert!(serde_json::to_string(&info).unwrap().contains(r#""task":"chat""#));
        let err = serde_json::from_str::<ServerInfo>(r#"{"model": "m", "task": "rerank"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `rerank`"), "{err}");
    }
}
