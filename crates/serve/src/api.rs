//! OpenAI API shapes: requests, responses and errors.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// `input` of an embeddings request (OpenAI `input`: a string, an array of strings, an array of
/// token ids, or an array of token-id arrays). Each input gives one vector. The route refuses
/// (400) an empty list and more than [`AppState::max_inputs`](crate::AppState::max_inputs) inputs
/// (default 2048).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text. The model's tokenizer adds the special tokens and truncates to the model's input
    /// length (`max_input_tokens`, special tokens included), as sentence-transformers does.
    Text(String),
    /// Several texts, each tokenised as [`EmbeddingInput::Text`]; one vector each, in this order.
    Texts(Vec<String>),
    /// One input as token ids of the model's vocabulary, run as given (no special tokens added,
    /// no truncation): 1 to `max_input_tokens` ids, each below the vocabulary size, else 400
    /// (`context_length_exceeded` when too long).
    Tokens(Vec<u32>),
    /// Several token-id inputs, each checked as [`EmbeddingInput::Tokens`].
    TokenLists(Vec<Vec<u32>>),
}

/// Every field OpenAI defines for embeddings; any other is refused (400, as OpenAI does).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    /// OpenAI `input`: what to embed: a string, strings, token ids or lists of
    /// token ids; 1 to `max_inputs` inputs (default 2048).
    pub input: EmbeddingInput,
    /// OpenAI `model`: must equal the served model's id ([`ServerInfo::model`](crate::ServerInfo),
    /// as `/v1/models` lists it); any other is refused with 404 `model_not_found`.
    pub model: String,
    /// OpenAI `encoding_format`; absent means [`EncodingFormat::Float`].
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// OpenAI `dimensions`: accepted only when it equals the model's own vector length; vectors
    /// are never shortened, so any other value is refused (400).
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// OpenAI `user` (an end-user id for abuse monitoring): accepted and not used.
    #[serde(default)]
    pub user: Option<String>,
}

/// `encoding_format` of an embeddings request: how each vector is written in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodingFormat {
    /// A JSON array of numbers (the default).
    #[default]
    Float,
    /// The little-endian f32 bytes, base64-encoded.
    Base64,
    /// Any other string: refused (400) by the route, naming the field, as OpenAI refuses it.
    #[serde(other)]
    Unsupported,
}

/// OpenAI `embedding` of one answer item, written as the request's `encoding_format` asks.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EmbeddingValue {
    /// A JSON array of the model's `dimension` f32 values.
    Float(Vec<f32>),
    /// The same values as little-endian f32 bytes (4 per value), standard base64 with padding.
    Base64(String),
}

/// One vector of an embeddings answer (OpenAI's `Embedding` object, an item of `data`).
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingData {
    /// OpenAI `object`: always `"embedding"`.
    pub object: &'static str,
    /// OpenAI `index`: 0-based position of the input in the request's `input`.
    pub index: usize,
    /// OpenAI `embedding`: the vector.
    pub embedding: EmbeddingValue,
}

/// OpenAI `usage` of an embeddings answer.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// Token ids the model ran, over all inputs: special tokens included, padding not.
    pub prompt_tokens: usize,
    /// Equal to `prompt_tokens`: embeddings generate nothing.
    pub total_tokens: usize,
}

/// The answer to `POST /v1/embeddings` (OpenAI's `CreateEmbeddingResponse`).
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingResponse {
    /// OpenAI `object`: always `"list"`.
    pub object: &'static str,
    /// OpenAI `data`: one item per input, in input order.
    pub data: Vec<EmbeddingData>,
    /// OpenAI `model`: the served model's id.
    pub model: String,
    /// OpenAI `usage`.
    pub usage: Usage,
}

/// The most characters of a client's text quoted back in an error message.
pub const QUOTED_CHARS: usize = 64;

/// `text` cut to its first `max` characters (with `…` when cut): what an error message may echo of
/// anything a client sent, so an answer is never as large as the request.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

/// A client's string for quoting in an error message: at most `QUOTED_CHARS` characters.
pub fn quoted(text: &str) -> String {
    clip(text, QUOTED_CHARS)
}

/// An error in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The HTTP status of the answer.
    pub status: StatusCode,
    /// OpenAI `error.message`, for people; any text quoted from the request is clipped with
    /// `clip`, so the message stays small.
    pub message: String,
    /// OpenAI `error.type`: `invalid_request_error` (4xx), `rate_limit_error` (429) or
    /// `server_error` (5xx).
    pub kind: &'static str,
    /// OpenAI `error.code`, for programs (e.g. `model_not_found`, `context_length_exceeded`,
    /// `overloaded`); `None` is written as `null`.
    pub code: Option<&'static str>,
    /// OpenAI `error.param`: the request parameter at fault (a field, or a path into the request
    /// such as `messages[2].content`); `None` (`null`) when the body as a whole is.
    pub param: Option<Cow<'static, str>>,
    /// The `Retry-After` header in seconds: 1 for 429, 5 for 503, `None` otherwise.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400 `invalid_request_error` without a code: the request asks for something invalid or
    /// unsupported; `param` names the parameter at fault.
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            code: None,
            param: param.map(Cow::Borrowed),
            retry_after: None,
        }
    }

    /// As [`ApiError::invalid`], with a `param` made for this request: a path into it such as
    /// `messages[2].content`.
    pub fn invalid_at(message: impl Into<String>, param: String) -> ApiError {
        ApiError { param: Some(Cow::Owned(param)), ..ApiError::invalid(message, None) }
    }

    /// The request body is over the byte limit (the only cause of 413; only the route the model
    /// serves reads a body). `param` names the parameter that holds the bulk of a body on the
    /// route it was sent to: `input` for embeddings, `messages` for chat.
    pub fn too_large(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: Some("input_too_large"),
            ..ApiError::invalid(message, param)
        }
    }

    /// An input needs more positions than the model has (OpenAI: 400, `context_length_exceeded`;
    /// its clients raise `BadRequestError`).
    pub fn context_length_exceeded(message: impl Into<String>, param: &'static str) -> ApiError {
        ApiError { code: Some("context_length_exceeded"), ..ApiError::invalid(message, Some(param)) }
    }

    /// The client did not send the whole body within the body timeout.
    pub fn body_timeout(after: std::time::Duration) -> ApiError {
        ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            code: Some("body_timeout"),
            ..ApiError::invalid(format!("the request body did not arrive within {} s", after.as_secs_f64()), None)
        }
    }

    /// 404 `model_not_found`: the request's `model` (quoted, clipped) is not `served`, the one
    /// model this server has.
    pub fn unknown_model(model: &str, served: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: Some("model_not_found"),
            ..ApiError::invalid(
                format!("the model `{}` does not exist here; this server serves `{served}`", quoted(model)),
                Some("model"),
            )
        }
    }

    /// 429 `rate_limit_error`, code `overloaded`, `Retry-After: 1`: the bounded queue in front of
    /// the model thread is full. Refused at once so the client (or the load balancer) can retry
    /// elsewhere or later.
    pub fn overloaded() -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "the server is at capacity (request queue full); retry later".into(),
            kind: "rate_limit_error",
            code: Some("overloaded"),
            param: None,
            retry_after: Some(1),
        }
    }

    /// 503 `server_error`, code `unavailable`, `Retry-After: 5`: the server is draining for
    /// shutdown, or its model thread has stopped.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            code: Some("unavailable"),
            param: None,
            retry_after: Some(5),
        }
    }

    /// 500 `server_error` without a code: the model or the server failed on a valid request
    /// (inference error, model thread gone); `message` is sent to the client.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            code: None,
            param: None,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

impl ApiError {
    /// The served model does not do what this route asks (e.g. chat on an embeddings model).
    pub fn wrong_task(model: &str, is: &str, route: &str) -> ApiError {
        ApiError::invalid(format!("the model `{model}` is {is}; use {route}"), Some("model"))
    }

    /// The request ran past the server's request timeout; its work has been cancelled.
    pub fn timeout(after: std::time::Duration) -> ApiError {
        ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: format!("the request did not finish within the server's timeout of {:.0} s", after.as_secs_f64()),
            kind: "server_error",
            code: Some("timeout"),
            param: None,
            retry_after: None,
        }
    }

    /// A model error while preparing a request's input (tokenising, the chat template): 400 when
    /// the input is at fault, with OpenAI's code where it has one; a model fault (a non-finite
    /// output, a backend error) is the server's: 500 with its message.
    pub fn from_model(e: accelrt_models::ModelError, param: &'static str) -> ApiError {
        use accelrt_models::ModelError;
        // A model's message may quote the input (a template error, a token): clipped.
        let message = clip(&e.to_string(), 4 * QUOTED_CHARS);
        match e {
            ModelError::ContextLengthExceeded { .. } => ApiError::context_length_exceeded(message, param),
            ModelError::NonFinite { .. } | ModelError::Core(_) => ApiError::internal(message),
            _ => ApiError::invalid(message, Some(param)),
        }
    }

    /// The JSON body of this error (also what a stream sends when it fails midway).
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code }
        })
    }
}

/// The parameter a 413 on `route` names: the one that holds the bulk of a body there (`input` on
/// `/v1/embeddings`, `messages` on `/v1/chat/completions`); `None` on routes that take no body,
/// where the body as a whole is at fault.
pub(crate) fn body_param(route: &str) -> Option<&'static str> {
    match route {
        "/v1/embeddings" => Some("input"),
        "/v1/chat/completions" => Some("messages"),
        _ => None,
    }
}

/// A request body that checks the shape of its JSON before it is deserialized: serde's derived
/// `Deserialize` also takes a struct from a JSON array (its fields in order), so every place where
/// OpenAI has an object is checked to hold one (or null where the field is optional).
pub(crate) trait RequestBody: serde::de::DeserializeOwned {
    /// 400 naming the field where an object is expected and something else is found, or where
    /// a nested object has a key it cannot have; the body itself is known to be an object.
    fn check_shape(_body: &serde_json::Map<String, serde_json::Value>) -> Result<(), ApiError> {
        Ok(())
    }
}

impl RequestBody for EmbeddingRequest {}

/// `path.field`, or `field` at the top (`path` empty).
pub(crate) fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// A request body for `route` as `T`: 413 past the body limit (naming [`body_param`]), 400 for
/// malformed JSON, a body that is not a JSON object, or JSON of the wrong shape or types (`param`
/// the field at fault: a path such as `messages[0].role` or `stream_options`).
pub(crate) fn parse_body<T: RequestBody>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    max_body_bytes: usize,
    route: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::too_large(format!("the request body exceeds {max_body_bytes} bytes"), body_param(route))
        }
        _ => ApiError::invalid(e.body_text(), None),
    })?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        // serde's messages quote what they could not take: clipped.
        ApiError::invalid(format!("the body is not valid JSON: {}", clip(&e.to_string(), 4 * QUOTED_CHARS)), None)
    })?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::invalid("the request body must be a JSON object", None));
    };
    T::check_shape(object)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        data_error(&path, &e.inner().to_string())
    })
}

/// The 400 for a body of the right JSON shape but a wrong type or a missing or unknown field at
/// `path` (empty: the body itself), with serde's message `message` put in the API's words: never
/// a Rust type name.
fn data_error(path: &str, message: &str) -> ApiError {
    if let Some(field) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
        // OpenAI's answer to a parameter it does not define; at the top `param` is null, as there,
        // inside an object it is the key's path (which `path` already ends with).
        let message = format!("Unrecognized request argument supplied: {}", quoted(field));
        let nested = path != field;
        return match nested {
            false => ApiError::invalid(message, None),
            true => ApiError::invalid_at(message, clip(path, 4 * QUOTED_CHARS)),
        };
    }
    if let Some(field) = message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
        let param = join(path, field);
        return ApiError::invalid_at(format!("`{param}` is required"), param);
    }
    let what = if path.is_empty() { "the request body".to_string() } else { format!("`{path}`") };
    // An untagged enum names itself and nothing useful: said here as what the field takes.
    let expected = [
        ("MessageContent", "a string or an array of content parts"),
        ("StopInput", "a string or an array of strings"),
        ("EmbeddingInput", "a string, an array of strings, an array of token ids or an array of token-id arrays"),
    ]
    .into_iter()
    .find(|(name, _)| message.contains(&format!("untagged enum {name}")));
    let message = match expected {
        Some((_, takes)) => format!("invalid value for {what}: expected {takes}"),
        None => {
            // `expected struct X` / `enum X`: the API's words, not the server's type names.
            let mut m = clip(message, 4 * QUOTED_CHARS);
            for kind in ["struct ", "enum "] {
                if let Some(at) = m.find(&format!("expected {kind}")) {
                    let name_end = m[at + 9 + kind.len()..]
                        .find(|c: char| !c.is_alphanumeric() && c != '_')
                        .map_or(m.len(), |n| at + 9 + kind.len() + n);
                    let takes = if kind == "struct " { "expected an object" } else { "expected a known value" };
                    m.replace_range(at..name_end, takes);
                }
            }
            format!("invalid value for {what}: {m}")
        }
    };
    match path {
        "" => ApiError::invalid(message, None),
        _ => ApiError::invalid_at(message, path.to_string()),
    }
}
