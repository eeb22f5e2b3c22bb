//! Accepting and serving connections (hyper's HTTP/1 server), with the limits a public endpoint
//! needs: a connection limit (further connections wait in the listen backlog, unaccepted, so they
//! hold no file descriptor and the listener is never starved by them), a header read timeout
//! (also the idle timeout of kept-alive connections; hyper's own), a body timeout (crate::body),
//! and a shutdown that waits for requests in flight but never for a silent client.

use crate::router::{router, AppState};
use axum::body::Body;
use axum::extract::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long shutdown waits, beyond the request timeout, for requests in flight.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

/// Serves until `shutdown` resolves. Then health turns 503 and new requests are refused for `drain`
/// (so a load balancer stops sending); then the listener closes, connections without a request in
/// flight (idle, or silent midway through their headers or body) are closed at once, and the
/// requests in flight finish — bounded by the request timeout, so shutdown ends even if a client
/// stops reading its answer.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let permits = Arc::new(Semaphore::new(state.max_connections.max(1)));
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let trimmer = tokio::spawn(crate::memory::trim_after_spikes());
    let s = state.clone();
    let stop_accepting = async move {
        shutdown.await;
        s.start_draining();
        tracing::info!("draining: health is 503, new requests are refused");
        tokio::time::sleep(drain).await;
    };
    tokio::pin!(stop_accepting);
    loop {
        // A free connection slot first: until one frees up, new connections wait in the backlog.
        let permit = tokio::select! {
            _ = &mut stop_accepting => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = &mut stop_accepting => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors or a connection reset before it was accepted: go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(stream, app.clone(), state.header_timeout, permit, closing_rx.clone()));
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    closing.send_replace(true);
    let deadline = state.request_timeout + SHUTDOWN_MARGIN;
    let finished = tokio::time::timeout(deadline, async { while connections.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(left = connections.len(), "shutdown deadline passed; closing the remaining connections");
        connections.abort_all();
    }
    trimmer.abort();
    Ok(())
}

/// Serves one connection until it ends, or, once `closing` turns true, until its requests in
/// flight have been answered.
async fn connection(
    stream: TcpStream,
    app: axum::Router,
    header_timeout: Duration,
    _permit: OwnedSemaphorePermit,
    mut closing: watch::Receiver<bool>,
) {
    // Requests of this connection being handled or answered (their response bodies not yet done).
    let (in_flight, mut in_flight_rx) = watch::channel(0usize);
    let in_flight = Arc::new(in_flight);
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let guard = InFlight::begin(in_flight.clone());
        let app = app.clone();
        async move {
            let response = app.oneshot(request.map(Body::new)).await?;
            // The guard lives as long as the response body, so a stream counts until its end.
            Ok::<_, Infallible>(response.map(|b| {
                Body::new(b.map_frame(move |frame| {
                    let _ = &guard;
                    frame
                }))
            }))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended");
            }
            return;
        }
        _ = async { closing.wait_for(|c| *c).await.is_ok() } => {}
    }
    // Shutting down: no more requests on this connection; those in flight finish. A connection
    // with none (idle, or a client silent midway through a request) is dropped now.
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async { in_flight_rx.wait_for(|n| *n == 0).await.is_ok() } => {
            // The last answer's final bytes may still be on their way out.
            let _ = tokio::time::timeout(Duration::from_millis(200), conn).await;
        }
    }
}

/// Counts one request of a connection as in flight while it lives.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn begin(counter: Arc<watch::Sender<usize>>) -> InFlight {
        counter.send_modify(|n| *n += 1);
        InFlight(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// File descriptors kept free for everything but connections (model files, the listener, logs,
/// the runtime, tokenizer threads).
const OTHER_FILES: u64 = 256;

/// Makes sure `max_connections` connections cannot exhaust the process's open-files limit: raises
/// the soft limit (up to the hard limit) when it is too low; `Err` says what to change when even the
/// hard limit is too low. Returns the soft limit in force.
pub fn ensure_open_files(max_connections: usize) -> Result<u64, String> {
    let needed = max_connections as u64 + OTHER_FILES;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // Safety: getrlimit/setrlimit read and write the one struct they are given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("cannot read the open-files limit: {}", std::io::Error::last_os_error()));
    }
    if limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= needed {
        return Ok(limit.rlim_cur);
    }
    if limit.rlim_max != libc::RLIM_INFINITY && limit.rlim_max < needed {
        return Err(format!(
            "--max-connections {max_connections} needs about {needed} open files, but the limit is {} (hard {}); \
             lower --max-connections or raise the limit (ulimit -n)",
            limit.rlim_cur, limit.rlim_max
        ));
    }
    let raised = libc::rlimit { rlim_cur: needed, rlim_max: limit.rlim_max };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(format!(
            "cannot raise the open-files limit from {} to {needed} for --max-connections {max_connections}: {}",
            limit.rlim_cur,
            std::io::Error::last_os_error()
        ));
    }
    Ok(needed)
}
