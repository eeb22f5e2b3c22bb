//! OpenAI API shapes: requests, responses and errors.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// `input` of an embeddings request.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// Every field OpenAI defines for embeddings; any other is refused (400, as OpenAI does).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    pub input: EmbeddingInput,
    pub model: String,
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    #[serde(default)]
    pub dimensions: Option<usize>,
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

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingData {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingValue,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
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
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<&'static str>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            code: None,
            param,
            retry_after: None,
        }
    }

    /// The request body is over the byte limit (the only cause of 413).
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: Some("input_too_large"),
            ..ApiError::invalid(message, Some("input"))
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

/// A request body as `T`: 413 past the body limit, 400 for malformed JSON, 422 for JSON of the
/// wrong shape or types.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    max_body_bytes: usize,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::too_large(format!("the request body exceeds {max_body_bytes} bytes"))
        }
        _ => ApiError::invalid(e.body_text(), None),
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        // serde's messages quote what they could not take (a string value, a field name): clipped.
        let message = e.to_string();
        if let Some(field) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
            // OpenAI's answer to a parameter it does not define.
            return ApiError::invalid(format!("Unrecognized request argument supplied: {}", quoted(field)), None);
        }
        if e.is_data() {
            ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                ..ApiError::invalid(format!("invalid request: {}", clip(&message, 4 * QUOTED_CHARS)), None)
            }
        } else {
            ApiError::invalid(format!("the body is not valid JSON: {}", clip(&message, 4 * QUOTED_CHARS)), None)
        }
    })
}
