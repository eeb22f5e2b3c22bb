//! The OpenAI chat-completions request, its checks, and the response and stream-chunk shapes.

use crate::api::{quoted, ApiError, RequestBody};
use accelrt_models::{ChatMessage, FinishReason, SamplingParams};
use serde::Deserialize;
use serde_json::{json, Value};

/// OpenAI message `content`: a string or an array of content parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// The message's text, used as is.
    Text(String),
    /// Content parts; only text parts are taken (their texts joined with no separator), any
    /// other part (image, audio, file) is refused (400).
    Parts(Vec<ContentPart>),
}

/// One OpenAI content part, e.g. `{"type": "text", "text": "…"}`. A text part with any other key
/// is refused (400, "Unrecognized request argument supplied", `param` the key's path); other
/// kinds of part are refused whole.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// OpenAI `type`: only `"text"` is accepted.
    #[serde(rename = "type")]
    pub kind: String,
    /// OpenAI `text`: required when `type` is `"text"`.
    #[serde(default)]
    pub text: Option<String>,
}

/// A message, with every field OpenAI defines; those the server cannot honour are refused when set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMessage {
    /// OpenAI `role`: `system`, `developer` (given to the template as `system`), `user` or
    /// `assistant`; `tool` and `function` are refused (400).
    pub role: String,
    /// OpenAI `content`: required (as OpenAI requires it) for `system`, `developer` and `user`
    /// messages, which are refused (400, `param` `messages[i].content`) without it; an
    /// `assistant` message may omit it or send null (OpenAI allows that beside tool calls or a
    /// `refusal`), and is then an empty turn.
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// Refused when set: the chat template has no place for participant names.
    #[serde(default)]
    pub name: Option<Value>,
    /// Refused when set (function calling is not supported).
    #[serde(default)]
    pub tool_calls: Option<Value>,
    /// Refused when set (a `tool` message's id; tool messages are not supported).
    #[serde(default)]
    pub tool_call_id: Option<Value>,
    /// Refused when set (legacy function calling).
    #[serde(default)]
    pub function_call: Option<Value>,
    /// Refused when set (a reference to an earlier audio answer; audio is not supported).
    #[serde(default)]
    pub audio: Option<Value>,
    /// OpenAI `refusal`: an assistant's refusal text; a string or null is accepted and not used,
    /// anything else is refused.
    #[serde(default)]
    pub refusal: Option<Value>,
}

/// OpenAI `stop`: one string or a list of at most [`MAX_STOPS`] non-empty strings (empty ones
/// are dropped, not counted).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    /// A single stop string.
    One(String),
    /// Up to [`MAX_STOPS`] non-empty stop strings; more is refused (400). Empty strings are
    /// dropped before counting.
    Many(Vec<String>),
}

/// OpenAI `stream_options` (used only with `stream: true`), with every field OpenAI defines; any
/// other is refused (400 "Unrecognized request argument supplied"), as in the request itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// OpenAI `include_usage`: when true, one more chunk before `data: [DONE]`, with no choices
    /// and the request's `usage`.
    #[serde(default)]
    pub include_usage: Option<bool>,
    /// OpenAI `include_obfuscation` (random padding on stream events, against size side
    /// channels): accepted and not used; no padding is sent, the text is the same.
    #[serde(default)]
    pub include_obfuscation: Option<bool>,
}

/// The chat-completions request: every parameter OpenAI defines is here, either honoured or refused
/// (400 naming it) when it asks for something the server does not do; an unknown one is refused
/// as OpenAI refuses it ("Unrecognized request argument supplied"). Nothing is silently ignored
/// that would change the output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    /// OpenAI `model`: must equal the served model's id (as `/v1/models` lists it); any other is
    /// refused with 404 `model_not_found`.
    pub model: String,
    /// OpenAI `messages`: the conversation, at least one message, rendered with the model's chat
    /// template (see [`ChatCompletionRequest::chat_messages()`]). A prompt that leaves no room for
    /// one generated token in the context is refused (400 `context_length_exceeded`).
    pub messages: Vec<RequestMessage>,
    /// OpenAI `max_tokens` (deprecated there in favour of `max_completion_tokens`): the most
    /// tokens to generate, at least 1; see [`ChatCompletionRequest::max_tokens()`].
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// OpenAI `max_completion_tokens`: as `max_tokens`; when both are given they must be equal.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    /// OpenAI `temperature`: in `[0, 2]`, default 1; 0 is greedy decoding.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// OpenAI `top_p` (nucleus sampling): in `[0, 1]`, default 1 (off); 0 keeps only the most
    /// likely token, i.e. greedy decoding.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// OpenAI `seed`: the sampler's seed (a negative value is taken as its two's-complement
    /// `u64`); absent means a fresh seed for every request.
    #[serde(default)]
    pub seed: Option<i64>,
    /// OpenAI `stop`: one string or up to 4 (`MAX_STOPS`, OpenAI's limit); the output ends just
    /// before the first one generated and never contains it (finish reason `stop`). Empty strings
    /// can never match: they are dropped and do not count towards the limit.
    #[serde(default)]
    pub stop: Option<StopInput>,
    /// OpenAI `stream`: `true` answers with server-sent events of chunks ending in
    /// `data: [DONE]`; absent or `false`, with one JSON object.
    #[serde(default)]
    pub stream: Option<bool>,
    /// OpenAI `stream_options`: only `include_usage` is used.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// OpenAI `n` (choices per request): only 1 (the default); any other value is refused.
    #[serde(default)]
    pub n: Option<usize>,
    /// OpenAI `frequency_penalty`: only 0 (the default); any other value is refused.
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// OpenAI `presence_penalty`: only 0 (the default); any other value is refused.
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// OpenAI `logprobs`: only `false` (the default); `true` is refused.
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// OpenAI `user` (an end-user id for abuse monitoring): accepted and not used.
    #[serde(default)]
    pub user: Option<String>,
    /// OpenAI `tools`: refused unless absent, null or an empty list (function calling is not
    /// supported; it is refused, not ignored).
    #[serde(default)]
    pub tools: Option<Value>,
    /// OpenAI `response_format`: only null or `{"type": "text"}`; JSON mode and JSON schemas
    /// are refused.
    #[serde(default)]
    pub response_format: Option<Value>,
    /// OpenAI `logit_bias`: refused unless null or an empty object (token biases are not
    /// supported).
    #[serde(default)]
    pub logit_bias: Option<Value>,
    /// OpenAI `functions` (legacy function calling): refused unless absent, null or empty.
    #[serde(default)]
    pub functions: Option<Value>,
    /// OpenAI `function_call` (legacy): refused unless null or `"none"`.
    #[serde(default)]
    pub function_call: Option<Value>,
    /// OpenAI `tool_choice`: refused unless null or `"none"`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// OpenAI `top_logprobs`: refused unless null or 0 (log probabilities are not supported).
    #[serde(default)]
    pub top_logprobs: Option<Value>,
    /// OpenAI `modalities`: only null or `["text"]`.
    #[serde(default)]
    pub modalities: Option<Value>,
    /// OpenAI `prediction` (predicted output): refused unless null.
    #[serde(default)]
    pub prediction: Option<Value>,
    /// OpenAI `audio` (audio output settings): refused unless null.
    #[serde(default)]
    pub audio: Option<Value>,
    /// OpenAI `reasoning_effort` (reasoning models): refused unless null.
    #[serde(default)]
    pub reasoning_effort: Option<Value>,
    /// OpenAI `web_search_options`: refused unless null.
    #[serde(default)]
    pub web_search_options: Option<Value>,
    /// OpenAI `verbosity`: refused unless null.
    #[serde(default)]
    pub verbosity: Option<Value>,
    /// OpenAI `store`: accepted and not used (nothing is stored; the output is the same).
    #[serde(default)]
    pub store: Option<Value>,
    /// OpenAI `metadata`: accepted and not used.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// OpenAI `service_tier`: accepted and not used (there is one tier).
    #[serde(default)]
    pub service_tier: Option<Value>,
    /// OpenAI `parallel_tool_calls`: accepted and not used (tools are refused anyway).
    #[serde(default)]
    pub parallel_tool_calls: Option<Value>,
    /// OpenAI `prompt_cache_key`: accepted and not used.
    #[serde(default)]
    pub prompt_cache_key: Option<Value>,
    /// OpenAI `safety_identifier`: accepted and not used.
    #[serde(default)]
    pub safety_identifier: Option<Value>,
    /// accelrt extension (not in OpenAI's API): keep only the k most likely tokens before
    /// sampling; at least 1 (0 is refused), absent means no limit.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// accelrt extension (as in vLLM): do not stop at end-of-sequence tokens; benchmarks use it to
    /// get exactly `max_tokens` tokens from every request.
    #[serde(default)]
    pub ignore_eos: Option<bool>,
}

/// The most stop strings per request (OpenAI's limit).
pub const MAX_STOPS: usize = 4;

impl RequestBody for ChatCompletionRequest {
    /// Objects where OpenAI has them: each message, each content part and `stream_options` (or
    /// null); a text part with only `type` and `text`. serde would take an array for each.
    fn check_shape(body: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
        let object = |v: &Value, path: String| {
            if v.is_object() {
                Ok(())
            } else {
                Err(ApiError::invalid_at(format!("`{path}` must be an object"), path))
            }
        };
        if let Some(options) = body.get("stream_options").filter(|o| !o.is_null()) {
            object(options, "stream_options".into())?;
        }
        let Some(messages) = body.get("messages").and_then(Value::as_array) else { return Ok(()) };
        for (i, m) in messages.iter().enumerate() {
            object(m, format!("messages[{i}]"))?;
            let Some(parts) = m.get("content").and_then(Value::as_array) else { continue };
            for (j, p) in parts.iter().enumerate() {
                object(p, format!("messages[{i}].content[{j}]"))?;
                if p["type"] == "text" {
                    if let Some(key) =
                        p.as_object().into_iter().flat_map(|p| p.keys()).find(|k| *k != "type" && *k != "text")
                    {
                        return Err(ApiError::invalid_at(
                            format!("Unrecognized request argument supplied: {}", quoted(key)),
                            format!("messages[{i}].content[{j}].{}", quoted(key)),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl ChatCompletionRequest {
    /// `stream_options` is for streams: refused (400, `param` `stream_options`) when set (not
    /// null) without `stream: true`, as OpenAI refuses it.
    ///
    /// # Errors
    ///
    /// 400 as above.
    pub fn check_stream_options(&self) -> Result<(), ApiError> {
        if self.stream_options.is_some() && !self.streaming() {
            return Err(ApiError::invalid(
                "stream_options are only allowed when stream is true",
                Some("stream_options"),
            ));
        }
        Ok(())
    }

    /// Whether the answer is a stream of server-sent events (`stream: true`).
    pub fn streaming(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether a stream ends with a usage chunk (`stream_options.include_usage: true`).
    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true)
    }

    /// The messages for the chat template; refuses roles and content it cannot take.
    ///
    /// # Errors
    ///
    /// 400 (`param` `messages`) for an empty list; `messages[i].role` for a role other than
    /// system, developer, user or assistant; `messages[i].name` (and so on) for a set `name`,
    /// `tool_calls`, `tool_call_id`, `function_call` or `audio`, or a `refusal` that is not a
    /// string; `messages[i].content[j]` for a content part other than text;
    /// `messages[i].content` for a system, developer or user message without content (absent,
    /// null or an empty array of parts), and `messages[i].content[j].text` for a text part
    /// without `text`.
    pub fn chat_messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid("`messages` is empty", Some("messages")));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant") {
                    return Err(ApiError::invalid_at(
                        format!(
                            "messages[{i}]: role `{}` is not supported (system, developer, user, assistant)",
                            quoted(&m.role)
                        ),
                        format!("messages[{i}].role"),
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
                        return Err(ApiError::invalid_at(
                            format!("messages[{i}].{name} is not supported"),
                            format!("messages[{i}].{name}"),
                        ));
                    }
                }
                if m.refusal.as_ref().is_some_and(|r| !r.is_null() && !r.is_string()) {
                    return Err(ApiError::invalid_at(
                        format!("messages[{i}].refusal must be a string"),
                        format!("messages[{i}].refusal"),
                    ));
                }
                let content = match &m.content {
                    // OpenAI requires content for system, developer and user messages; only an
                    // assistant's may be left out (beside tool calls or a refusal). No parts at
                    // all is no content.
                    None if m.role != "assistant" => {
                        return Err(ApiError::invalid_at(
                            format!("messages[{i}]: a `{}` message needs `content`", m.role),
                            format!("messages[{i}].content"),
                        ))
                    }
                    Some(MessageContent::Parts(parts)) if parts.is_empty() && m.role != "assistant" => {
                        return Err(ApiError::invalid_at(
                            format!("messages[{i}]: a `{}` message needs `content` (an empty array has none)", m.role),
                            format!("messages[{i}].content"),
                        ))
                    }
                    None => String::new(),
                    Some(MessageContent::Text(t)) => t.clone(),
                    Some(MessageContent::Parts(parts)) => {
                        let mut text = String::new();
                        for (j, p) in parts.iter().enumerate() {
                            match (p.kind.as_str(), &p.text) {
                                ("text", Some(t)) => text.push_str(t),
                                ("text", None) => {
                                    return Err(ApiError::invalid_at(
                                        format!("messages[{i}].content[{j}]: a text part has no `text`"),
                                        format!("messages[{i}].content[{j}].text"),
                                    ))
                                }
                                (kind, _) => {
                                    return Err(ApiError::invalid_at(
                                        format!(
                                            "messages[{i}]: content part `{}` is not supported (text only)",
                                            quoted(kind)
                                        ),
                                        format!("messages[{i}].content[{j}]"),
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
    /// is greedy. The repetition penalty is always off (1).
    ///
    /// # Errors
    ///
    /// 400 naming the parameter for a temperature outside `[0, 2]`, a top_p outside `[0, 1]`,
    /// `top_k` 0, `n` other than 1, a non-zero frequency or presence penalty, `logprobs: true`,
    /// tools, a `response_format` other than text, and the other parameters that would change
    /// the output and that the server does not do (see the fields' docs).
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

    /// `max_completion_tokens` (the newer name) or `max_tokens`; `None` means up to the context
    /// (context positions minus prompt tokens). A larger value is allowed: the generation then
    /// ends when the context is full, with finish reason `length`.
    ///
    /// # Errors
    ///
    /// 400 when both are given and differ, or when the value is 0 (`param` the field that was
    /// sent: `max_completion_tokens` when it was, else `max_tokens`).
    pub fn max_tokens(&self) -> Result<Option<usize>, ApiError> {
        if let (Some(a), Some(b)) = (self.max_completion_tokens, self.max_tokens) {
            if a != b {
                return Err(ApiError::invalid(
                    format!("max_tokens ({b}) and max_completion_tokens ({a}) differ; give one"),
                    Some("max_completion_tokens"),
                ));
            }
        }
        // The field named is the one the value came from.
        let (name, value) = match self.max_completion_tokens {
            Some(m) => ("max_completion_tokens", Some(m)),
            None => ("max_tokens", self.max_tokens),
        };
        match value {
            Some(0) => Err(ApiError::invalid(format!("{name} must be at least 1"), Some(name))),
            m => Ok(m),
        }
    }

    /// The stop strings, without empty ones (an empty string can never match, so it is dropped
    /// rather than refused).
    ///
    /// # Errors
    ///
    /// 400 (`param` `stop`) for more than 4 (`MAX_STOPS`) non-empty strings; empty ones do not
    /// count.
    pub fn stops(&self) -> Result<Vec<String>, ApiError> {
        let stops: Vec<String> = match &self.stop {
            None => vec![],
            Some(StopInput::One(s)) => vec![s.clone()],
            Some(StopInput::Many(v)) => v.clone(),
        };
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        if stops.len() > MAX_STOPS {
            return Err(ApiError::invalid(
                format!("at most {MAX_STOPS} stop strings (not counting empty ones), got {}", stops.len()),
                Some("stop"),
            ));
        }
        Ok(stops)
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

/// Characters of randomness in a completion id.
const ID_CHARS: usize = 29;

/// `chatcmpl-` and 29 random letters and digits (about 172 bits, from the thread's
/// cryptographically secure generator): fresh for every completion, so an id tells nothing of how
/// many completions the server has made, and two ids colliding is not a practical possibility.
fn completion_id() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!("chatcmpl-{}", Alphanumeric.sample_string(&mut rand::thread_rng(), ID_CHARS))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// OpenAI `usage` of a chat completion: prompt tokens (after the chat template), generated
/// tokens, and their sum.
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
    /// OpenAI `id`: `chatcmpl-` followed by 29 random letters and digits, unique to this
    /// completion (never taken from the client, so a reused `x-request-id` cannot repeat it), the
    /// same in every chunk of a stream.
    pub id: String,
    /// OpenAI `model`: the served model's id.
    pub model: String,
    /// OpenAI `created`: Unix time in seconds when the request was accepted.
    pub created: u64,
}

impl Completion {
    /// A new completion of `model`, with a fresh id, created now.
    pub fn new(model: &str) -> Completion {
        Completion { id: completion_id(), model: model.to_string(), created: unix_now() }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::parse_body;

    /// `body` as the chat route parses it.
    fn parse(body: Value) -> Result<ChatCompletionRequest, ApiError> {
        parse_body(Ok(body.to_string().into()), 1 << 20, "/v1/chat/completions")
    }

    fn request(extra: Value) -> ChatCompletionRequest {
        let mut body = json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }] });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        parse(body).unwrap()
    }

    fn param(e: &ApiError) -> Option<&str> {
        e.param.as_deref()
    }

    #[test]
    fn a_text_part_without_text_is_refused_as_such_not_as_an_unsupported_part() {
        for part in [json!({ "type": "text" }), json!({ "type": "text", "text": null })] {
            let messages = json!([{ "role": "user", "content": [{ "type": "text", "text": "a" }, part] }]);
            let e = request(json!({ "messages": messages })).chat_messages().unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(e.message, "messages[0].content[1]: a text part has no `text`");
            assert_eq!(param(&e), Some("messages[0].content[1].text"));
            assert_eq!(e.body()["error"]["param"], "messages[0].content[1].text");
        }
        // Another kind of part is still refused as unsupported.
        let messages = json!([{ "role": "user", "content": [{ "type": "image_url", "image_url": {} }] }]);
        let e = request(json!({ "messages": messages })).chat_messages().unwrap_err();
        assert!(e.message.contains("content part `image_url` is not supported"), "{}", e.message);
    }

    #[test]
    fn a_zero_token_limit_names_the_field_the_client_sent() {
        let e = request(json!({ "max_completion_tokens": 0 })).max_tokens().unwrap_err();
        assert_eq!((e.status.as_u16(), param(&e)), (400, Some("max_completion_tokens")));
        assert_eq!(e.message, "max_completion_tokens must be at least 1");
        let e = request(json!({ "max_tokens": 0 })).max_tokens().unwrap_err();
        assert_eq!((e.status.as_u16(), param(&e)), (400, Some("max_tokens")));
        assert_eq!(e.message, "max_tokens must be at least 1");
        let e = request(json!({ "max_tokens": 0, "max_completion_tokens": 0 })).max_tokens().unwrap_err();
        assert_eq!(param(&e), Some("max_completion_tokens"));
        assert_eq!(request(json!({ "max_completion_tokens": 3 })).max_tokens().unwrap(), Some(3));
    }

    #[test]
    fn empty_stop_strings_are_dropped_and_not_counted_towards_the_limit() {
        let stops = request(json!({ "stop": ["", "a", "", "b", "c", "d", ""] })).stops().unwrap();
        assert_eq!(stops, ["a", "b", "c", "d"]);
        assert!(request(json!({ "stop": "" })).stops().unwrap().is_empty());
        assert!(request(json!({ "stop": ["", "", "", "", ""] })).stops().unwrap().is_empty());
        // Five that can match are one too many.
        let e = request(json!({ "stop": ["", "a", "b", "c", "d", "e"] })).stops().unwrap_err();
        assert_eq!((e.status.as_u16(), param(&e)), (400, Some("stop")));
        assert!(e.message.contains("at most 4 stop strings"), "{}", e.message);
    }

    #[test]
    fn stream_options_refuse_fields_openai_does_not_define() {
        let e = parse(json!({
            "model": "m",
            "messages": [{ "role": "user", "content": "x" }],
            "stream": true,
            "stream_options": { "include_usage": true, "include_tokens": true },
        }))
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.message, "Unrecognized request argument supplied: include_tokens");
        // Both fields OpenAI defines are accepted.
        let r = request(
            json!({ "stream": true, "stream_options": { "include_usage": true, "include_obfuscation": false } }),
        );
        assert!(r.include_usage());
        assert!(!request(json!({ "stream_options": null })).include_usage());
    }

    #[test]
    fn system_developer_and_user_messages_need_content_an_assistant_message_need_not() {
        for role in ["system", "developer", "user"] {
            for message in [json!({ "role": role }), json!({ "role": role, "content": null })] {
                let messages = json!([
                    { "role": "system", "content": "s" },
                    { "role": "user", "content": "u" },
                    message,
                ]);
                let e = request(json!({ "messages": messages })).chat_messages().unwrap_err();
                assert_eq!(e.status, 400, "{role}");
                assert_eq!(param(&e), Some("messages[2].content"), "{role}");
                assert_eq!(e.message, format!("messages[2]: a `{role}` message needs `content`"));
            }
        }
        // An assistant turn without content (e.g. one that carried a refusal) is an empty turn;
        // empty content is content.
        let messages = json!([
            { "role": "user", "content": "u" },
            { "role": "assistant", "content": null, "refusal": "no" },
            { "role": "assistant" },
            { "role": "user", "content": "" },
        ]);
        let got = request(json!({ "messages": messages })).chat_messages().unwrap();
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn completion_ids_are_random_and_unique_per_completion() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| Completion::new("m").id).collect();
        assert_eq!(ids.len(), 1000);
        let tails: Vec<&str> = ids.iter().map(|id| id.strip_prefix("chatcmpl-").unwrap()).collect();
        for tail in &tails {
            assert!(tail.len() >= 24 && tail.bytes().all(|b| b.is_ascii_alphanumeric()), "{tail}");
        }
        // No shared prefix or counter to count completions by: ids share at most a few leading
        // characters (with 62 per position, a common first 4 in 1000 ids is ~1e-4 likely).
        let longest_common = tails
            .iter()
            .zip(tails.iter().skip(1))
            .map(|(a, b)| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count())
            .max()
            .unwrap();
        assert!(longest_common < 4, "ids share a prefix of {longest_common}");
        // Every object of one completion carries its id.
        let c = Completion::new("m");
        assert_eq!(c.chunk(json!({}), None)["id"], c.id.as_str());
        assert_eq!(c.whole("t", FinishReason::Stop, 1, 1)["id"], c.id.as_str());
    }

    /// `body` with `messages` replaced, as the route parses it.
    fn with(field: &str, value: Value) -> Value {
        let mut body = json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }] });
        body[field] = value;
        body
    }

    #[test]
    fn arrays_are_refused_where_openai_has_objects_naming_the_field() {
        for (body, at) in [
            (with("messages", json!([["user", "hi"]])), Some("messages[0]")),
            (
                with("messages", json!([{ "role": "user", "content": [["text", "hi"]] }])),
                Some("messages[0].content[0]"),
            ),
            (json!({ "model": "m", "messages": [], "stream": true, "stream_options": [true] }), Some("stream_options")),
            (json!({ "model": "m", "messages": [], "stream": true, "stream_options": [] }), Some("stream_options")),
            (
                json!({ "model": "m", "messages": [], "stream": true, "stream_options": [true, false, 1] }),
                Some("stream_options"),
            ),
            (json!(["m", [{ "role": "user", "content": "x" }]]), None),
            (json!("m"), None),
        ] {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(param(&e), at, "{body}: {}", e.message);
            assert!(!e.message.contains("not valid JSON"), "{body}: {}", e.message);
            assert!(e.message.contains("must be") && e.message.contains("object"), "{body}: {}", e.message);
        }
    }

    #[test]
    fn content_checks_are_consistent() {
        // A text part with a key OpenAI does not define is refused like any other unknown key.
        let body =
            with("messages", json!([{ "role": "user", "content": [{ "type": "text", "text": "hi", "extra": 1 }] }]));
        let e = parse(body).unwrap_err();
        assert_eq!((e.status.as_u16(), param(&e)), (400, Some("messages[0].content[0].extra")));
        assert_eq!(e.message, "Unrecognized request argument supplied: extra");
        // No parts is no content, as null is, for every role that needs content.
        for role in ["system", "developer", "user"] {
            let messages = json!([{ "role": "user", "content": "u" }, { "role": role, "content": [] }]);
            let e = request(json!({ "messages": messages })).chat_messages().unwrap_err();
            assert_eq!((e.status.as_u16(), param(&e)), (400, Some("messages[1].content")), "{role}");
        }
        let messages = json!([{ "role": "user", "content": "u" }, { "role": "assistant", "content": [] }]);
        assert_eq!(request(json!({ "messages": messages })).chat_messages().unwrap().len(), 2);
        // stream_options only with stream: true.
        for stream in [json!(false), json!(null)] {
            let r = request(json!({ "stream": stream, "stream_options": { "include_usage": true } }));
            let e = r.check_stream_options().unwrap_err();
            assert_eq!((e.status.as_u16(), param(&e)), (400, Some("stream_options")));
        }
        let r = request(json!({ "stream_options": { "include_usage": true } }));
        assert_eq!(param(&r.check_stream_options().unwrap_err()), Some("stream_options"));
        request(json!({ "stream": true, "stream_options": {} })).check_stream_options().unwrap();
        request(json!({ "stream_options": null })).check_stream_options().unwrap();
    }

    #[test]
    fn wrong_types_are_400_naming_the_field_without_serde_internals() {
        for (body, param_is) in [
            (with("messages", json!("hi")), "messages"),
            (with("messages", json!([{ "role": "user", "content": 5 }])), "messages[0].content"),
            (with("messages", json!([{ "role": "user", "content": ["not a part"] }])), "messages[0].content[0]"),
            (with("messages", json!([{ "role": 1, "content": "x" }])), "messages[0].role"),
            (with("messages", json!([{ "content": "x" }])), "messages[0].role"),
            (with("stop", json!(5)), "stop"),
            (with("max_tokens", json!("ten")), "max_tokens"),
            (with("stream_options", json!(5)), "stream_options"),
            (with("stream_options", json!({ "include_usage": "yes" })), "stream_options.include_usage"),
            (with("stream_options", json!({ "include_tokens": true })), "stream_options.include_tokens"),
            (with("messages", json!([{ "role": "user", "content": "x", "weight": 2 }])), "messages[0].weight"),
            (json!({ "messages": [] }), "model"),
        ] {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}: {}", e.message);
            assert_eq!(e.kind, "invalid_request_error");
            assert_eq!(param(&e), Some(param_is), "{body}: {}", e.message);
            for internal in ["untagged", "MessageContent", "StopInput", "StreamOptions", "RequestMessage", "struct"] {
                assert!(!e.message.contains(internal), "{body}: {}", e.message);
            }
        }
        // At the top, an unknown argument is OpenAI's message with `param` null.
        let e = parse(with("best_of", json!(2))).unwrap_err();
        assert_eq!((e.status.as_u16(), param(&e)), (400, None));
        assert_eq!(e.message, "Unrecognized request argument supplied: best_of");
    }

    #[test]
    fn unsupported_roles_and_parts_name_their_path() {
        let e = request(json!({ "messages": [{ "role": "bogus", "content": "x" }] })).chat_messages().unwrap_err();
        assert_eq!((e.status.as_u16(), param(&e)), (400, Some("messages[0].role")));
        let messages = json!([{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": "u" } }] }]);
        let e = request(json!({ "messages": messages })).chat_messages().unwrap_err();
        assert_eq!((e.status.as_u16(), param(&e)), (400, Some("messages[0].content[0]")));
        let e = request(json!({ "messages": [{ "role": "user", "content": "x", "name": "n" }] })).chat_messages();
        assert_eq!(param(&e.unwrap_err()), Some("messages[0].name"));
    }
}
