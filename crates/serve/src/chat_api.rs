//! The OpenAI chat-completions request, its checks, and the response and stream-chunk shapes.

use crate::api::{quoted, ApiError};
use accelrt_models::{ChatMessage, FinishReason, SamplingParams};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// A message, with every field OpenAI defines; those the server cannot honour are refused when set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// Refused when set: the chat template has no place for participant names.
    #[serde(default)]
    pub name: Option<Value>,
    /// Refused when set (function calling is not supported).
    #[serde(default)]
    pub tool_calls: Option<Value>,
    #[serde(default)]
    pub tool_call_id: Option<Value>,
    #[serde(default)]
    pub function_call: Option<Value>,
    #[serde(default)]
    pub audio: Option<Value>,
    /// An assistant's refusal text (null is accepted).
    #[serde(default)]
    pub refusal: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// The chat-completions request: every parameter OpenAI defines is here, either honoured or refused
/// (400 naming it) when it asks for something the server does not do; an unknown one is refused
/// as OpenAI refuses it ("Unrecognized request argument supplied"). Nothing is silently ignored
/// that would change the output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<RequestMessage>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<StopInput>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<usize>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub user: Option<String>,
    /// Function calling and structured output are not supported; they are refused, not ignored.
    #[serde(default)]
    pub tools: Option<Value>,
    #[serde(default)]
    pub response_format: Option<Value>,
    /// Refused unless empty: token biases are not supported.
    #[serde(default)]
    pub logit_bias: Option<Value>,
    /// Legacy function calling: refused.
    #[serde(default)]
    pub functions: Option<Value>,
    #[serde(default)]
    pub function_call: Option<Value>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Refused unless 0 (log probabilities are not supported).
    #[serde(default)]
    pub top_logprobs: Option<Value>,
    /// Only `["text"]`.
    #[serde(default)]
    pub modalities: Option<Value>,
    /// Refused when set.
    #[serde(default)]
    pub prediction: Option<Value>,
    #[serde(default)]
    pub audio: Option<Value>,
    #[serde(default)]
    pub reasoning_effort: Option<Value>,
    #[serde(default)]
    pub web_search_options: Option<Value>,
    #[serde(default)]
    pub verbosity: Option<Value>,
    /// Accepted; they do not change the output.
    #[serde(default)]
    pub store: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub service_tier: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<Value>,
    #[serde(default)]
    pub prompt_cache_key: Option<Value>,
    #[serde(default)]
    pub safety_identifier: Option<Value>,
    /// accelrt extension: keep only the k most likely tokens.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// accelrt extension (as in vLLM): do not stop at end-of-sequence tokens; benchmarks use it to
    /// get exactly `max_tokens` tokens from every request.
    #[serde(default)]
    pub ignore_eos: Option<bool>,
}

/// The most stop strings per request (OpenAI's limit).
pub const MAX_STOPS: usize = 4;

impl ChatCompletionRequest {
    pub fn streaming(&self) -> bool {
        self.stream == Some(true)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true)
    }

    /// The messages for the chat template; refuses roles and content it cannot take.
    pub fn chat_messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid("`messages` is empty", Some("messages")));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant") {
                    return Err(ApiError::invalid(
                        format!(
                            "messages[{i}]: role `{}` is not supported (system, developer, user, assistant)",
                            quoted(&m.role)
                        ),
                        Some("messages"),
                    ));
                }
                for (name, value) in [
                    ("name", &m.name),
                    ("tool_calls", &m.tool_calls),
                    ("tool_call_id", &m.tool_call_id),
                    ("function_call", &m.function_call),
                    ("audio", &m.audio),
                ] {
                    if is_set(value) {
                        return Err(ApiError::invalid(
                            format!("messages[{i}].{name} is not supported"),
                            Some("messages"),
                        ));
                    }
                }
                if m.refusal.as_ref().is_some_and(|r| !r.is_null() && !r.is_string()) {
                    return Err(ApiError::invalid(format!("messages[{i}].refusal must be a string"), Some("messages")));
                }
                let content = match &m.content {
                    None => String::new(),
                    Some(MessageContent::Text(t)) => t.clone(),
                    Some(MessageContent::Parts(parts)) => {
                        let mut text = String::new();
                        for p in parts {
                            match (p.kind.as_str(), &p.text) {
                                ("text", Some(t)) => text.push_str(t),
                                (kind, _) => {
                                    return Err(ApiError::invalid(
                                        format!(
                                            "messages[{i}]: content part `{}` is not supported (text only)",
                                            quoted(kind)
                                        ),
                                        Some("messages"),
                                    ))
                                }
                            }
                        }
                        text
                    }
                };
                // The template knows system, user and assistant; `developer` is the newer name for system.
                let role = if m.role == "developer" { "system" } else { m.role.as_str() };
                Ok(ChatMessage::new(role, &content))
            })
            .collect()
    }

    /// Sampling parameters with OpenAI's defaults (temperature 1, top_p 1, a fresh seed); top_p 0
    /// is greedy.
    pub fn sampling(&self) -> Result<SamplingParams, ApiError> {
        let temperature = self.temperature.unwrap_or(1.0);
        if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
            return Err(ApiError::invalid(
                format!("temperature must be in [0, 2], got {temperature}"),
                Some("temperature"),
            ));
        }
        if let Some(p) = self.top_p {
            if !(p.is_finite() && (0.0..=1.0).contains(&p)) {
                return Err(ApiError::invalid(format!("top_p must be in [0, 1], got {p}"), Some("top_p")));
            }
        }
        if self.top_k == Some(0) {
            return Err(ApiError::invalid("top_k must be at least 1", Some("top_k")));
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid("only n = 1 is supported", Some("n")));
        }
        for (name, v) in [("frequency_penalty", self.frequency_penalty), ("presence_penalty", self.presence_penalty)] {
            if v.is_some_and(|v| v != 0.0) {
                return Err(ApiError::invalid(format!("{name} is not supported (only 0)"), Some(name)));
            }
        }
        if self.logprobs == Some(true) {
            return Err(ApiError::invalid("logprobs are not supported", Some("logprobs")));
        }
        if is_set(&self.tools) {
            return Err(ApiError::invalid("tools (function calling) are not supported", Some("tools")));
        }
        self.refuse_unsupported()?;
        if self.response_format.as_ref().is_some_and(|f| !f.is_null() && f["type"] != "text") {
            return Err(ApiError::invalid(
                "response_format other than `text` (JSON mode, schemas) is not supported",
                Some("response_format"),
            ));
        }
        let seed = match self.seed {
            Some(s) => s as u64,
            None => rand_seed(),
        };
        // top_p 0 keeps only the most likely token (as OpenAI has it): that is greedy decoding (the
        // sampler's nucleus is never empty, so it takes (0, 1] only).
        let only_the_most_likely = self.top_p == Some(0.0);
        Ok(SamplingParams {
            temperature: if only_the_most_likely { 0.0 } else { temperature },
            top_k: self.top_k,
            top_p: self.top_p.filter(|&p| p > 0.0 && p < 1.0),
            repetition_penalty: 1.0,
            seed,
        })
    }

    /// The parameters OpenAI defines that would change the output and that the server does not do:
    /// refused (400 naming the parameter) unless absent, null or at their no-op value.
    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        let refuse = |name: &'static str, what: &str| {
            Err(ApiError::invalid(format!("{name} is not supported{what}"), Some(name)))
        };
        if self.logit_bias.as_ref().is_some_and(|b| !b.is_null() && b.as_object().is_none_or(|o| !o.is_empty())) {
            return refuse("logit_bias", "");
        }
        if is_set(&self.functions) {
            return refuse("functions", " (function calling)");
        }
        let none = |v: &Option<Value>| v.as_ref().is_none_or(|v| v.is_null() || v == "none");
        if !none(&self.function_call) {
            return refuse("function_call", " (function calling)");
        }
        if !none(&self.tool_choice) {
            return refuse("tool_choice", " (function calling)");
        }
        if self.top_logprobs.as_ref().is_some_and(|v| !v.is_null() && v != 0) {
            return refuse("top_logprobs", " (log probabilities)");
        }
        if self.modalities.as_ref().is_some_and(|m| !m.is_null() && *m != serde_json::json!(["text"])) {
            return refuse("modalities", " (text only)");
        }
        for (name, value) in [
            ("prediction", &self.prediction),
            ("audio", &self.audio),
            ("reasoning_effort", &self.reasoning_effort),
            ("web_search_options", &self.web_search_options),
            ("verbosity", &self.verbosity),
        ] {
            if value.as_ref().is_some_and(|v| !v.is_null()) {
                return refuse(name, "");
            }
        }
        Ok(())
    }

    /// `max_completion_tokens` (the newer name) or `max_tokens`; `None` means up to the context.
    /// Both given and different is refused.
    pub fn max_tokens(&self) -> Result<Option<usize>, ApiError> {
        if let (Some(a), Some(b)) = (self.max_completion_tokens, self.max_tokens) {
            if a != b {
                return Err(ApiError::invalid(
                    format!("max_tokens ({b}) and max_completion_tokens ({a}) differ; give one"),
                    Some("max_completion_tokens"),
                ));
            }
        }
        match self.max_completion_tokens.or(self.max_tokens) {
            Some(0) => Err(ApiError::invalid("max_tokens must be at least 1", Some("max_tokens"))),
            m => Ok(m),
        }
    }

    pub fn stops(&self) -> Result<Vec<String>, ApiError> {
        let stops = match &self.stop {
            None => vec![],
            Some(StopInput::One(s)) => vec![s.clone()],
            Some(StopInput::Many(v)) => v.clone(),
        };
        if stops.len() > MAX_STOPS {
            return Err(ApiError::invalid(format!("at most {MAX_STOPS} stop strings"), Some("stop")));
        }
        Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
    }
}

/// Whether an optional parameter asks for something: present, not null, and not an empty list.
fn is_set(v: &Option<Value>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
}

/// A seed for requests that bring none: different for every request.
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// What every object of one completion carries (id, model, creation time), and those objects.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: String,
    pub model: String,
    pub created: u64,
}

impl Completion {
    /// The completion for request `request_id`: id `chatcmpl-<request id>`, created now.
    pub fn new(request_id: &str, model: &str) -> Completion {
        Completion { id: format!("chatcmpl-{request_id}"), model: model.to_string(), created: unix_now() }
    }

    fn object(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": Value::Null,
            "choices": choices,
        })
    }

    /// The whole answer (`stream` false).
    pub fn whole(&self, text: &str, reason: FinishReason, prompt_tokens: usize, completion_tokens: usize) -> Value {
        let choice = json!([{
            "index": 0,
            "message": { "role": "assistant", "content": text, "refusal": Value::Null },
            "logprobs": Value::Null,
            "finish_reason": reason,
        }]);
        let mut v = self.object("chat.completion", choice);
        v["usage"] = usage(prompt_tokens, completion_tokens);
        v
    }

    /// One streamed chunk: `delta` content (the first chunk also carries the role), or the finish.
    pub fn chunk(&self, delta: Value, finish: Option<FinishReason>) -> Value {
        let choice = json!([{ "index": 0, "delta": delta, "logprobs": Value::Null, "finish_reason": finish }]);
        self.object("chat.completion.chunk", choice)
    }

    /// The last chunk when `stream_options.include_usage` is set: no choices, the usage.
    pub fn usage_chunk(&self, prompt_tokens: usize, completion_tokens: usize) -> Value {
        let mut v = self.object("chat.completion.chunk", json!([]));
        v["usage"] = usage(prompt_tokens, completion_tokens);
        v
    }
}
