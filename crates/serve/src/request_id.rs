//! Every request gets an id: the caller's `x-request-id` when it sends a usable one, else a fresh
//! one. The id is on every log line of the request (a tracing span) and in the response's
//! `x-request-id` header, so one slow or failed call can be followed from the load balancer's log
//! to the server's. (A chat completion's `id` is its own, unique even when a client reuses a
//! request id; the generation's log line carries both.)

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tracing::Instrument;

/// The header that carries a request's id, in the request and in the response.
pub const HEADER: &str = "x-request-id";

/// A request's id, put in the request's extensions by the id middleware for handlers to read. The
/// string is 1–64 printable ASCII characters (the caller's) or lower-case hex digits (fresh: 16,
/// more after 2³² requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Ids are a per-process random prefix and a counter: unique, short, and sortable within a process.
fn fresh() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() as u32
    });
    format!("{prefix:08x}{:08x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A caller's id is kept when it is short printable ASCII (it ends up in logs and headers).
fn usable(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic())).then(|| s.to_string())
}

/// Gives the request its id (the caller's usable `x-request-id`, else a fresh one), runs the rest
/// of the stack inside a tracing span carrying it, logs the status and time in ms when answered,
/// and sets `x-request-id` on the response.
pub async fn middleware(mut request: Request, next: Next) -> Response {
    let id = request.headers().get(HEADER).and_then(usable).unwrap_or_else(fresh);
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", id = %id, method = %request.method(), path = %request.uri().path());
    let started = Instant::now();
    async move {
        let mut response = next.run(request).await;
        tracing::info!(
            status = response.status().as_u16(),
            ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
            "answered"
        );
        if let Ok(v) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(HEADER, v);
        }
        response
    }
    .instrument(span)
    .await
}
