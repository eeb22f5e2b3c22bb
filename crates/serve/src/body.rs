//! Reading request bodies: a declared Content-Length over the byte limit is refused (413) before
//! anything is read (so `Expect: 100-continue` gets no `100 Continue`); otherwise the whole body is
//! read before a handler runs, within the body timeout (the time for all of it, however slowly it
//! trickles in) and the byte limit. A client that stops
//! sending midway gets 408 and its connection is closed; once shutdown begins, a body still
//! arriving is abandoned (503) rather than waited for.

use crate::api::{body_param, ApiError};
use crate::router::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::sync::Arc;
use std::time::Instant;

pub async fn read_whole_body(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let started = Instant::now();
    // A declared length over the limit is refused before any of the body is read: at once, and
    // without `100 Continue` (hyper sends that only when the body is first read).
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        let error = too_large(&state, parts.uri.path());
        return refused(&state, parts.uri.path(), started, error);
    }
    let read = Limited::new(body, state.max_body_bytes).collect();
    let outcome = tokio::select! {
        biased;
        r = tokio::time::timeout(state.body_timeout, read) => r,
        _ = state.drained() => return refused(&state, parts.uri.path(), started, ApiError::unavailable("the server is shutting down")),
    };
    let error = match outcome {
        Ok(Ok(collected)) => {
            let bytes = collected.to_bytes();
            crate::memory::note(bytes.len() * 4);
            return next.run(Request::from_parts(parts, Body::from(bytes))).await;
        }
        Err(_elapsed) => ApiError::body_timeout(state.body_timeout),
        Ok(Err(e)) if e.is::<LengthLimitError>() => too_large(&state, parts.uri.path()),
        Ok(Err(e)) => ApiError::invalid(format!("could not read the request body: {e}"), None),
    };
    refused(&state, parts.uri.path(), started, error)
}

/// 413 for a body over the limit, naming the parameter that holds the bulk of a body on `path`.
fn too_large(state: &AppState, path: &str) -> ApiError {
    ApiError::too_large(format!("the request body exceeds {} bytes", state.max_body_bytes), body_param(path))
}

/// An answer to a request whose body was not read to its end: the connection cannot be reused.
fn refused(state: &AppState, path: &str, started: Instant, error: ApiError) -> Response {
    tracing::info!(status = error.status.as_u16(), "{}", error.message);
    // Metrics are labelled by route; any other path (the client's choice) counts as one label.
    let route = crate::router::ROUTES.iter().find(|r| **r == path).copied().unwrap_or("other");
    state.metrics.request(route, error.status.as_u16(), started.elapsed());
    let mut response = error.into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
