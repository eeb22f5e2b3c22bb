//! A server on a free loopback port for the tests, and small HTTP helpers.
#![allow(dead_code)]

use accelrt_serve::AppState;
use std::sync::Arc;
use std::time::Duration;

pub struct Server {
    pub url: String,
    pub state: Arc<AppState>,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves `state` on a free loopback port from its own runtime thread.
    pub fn start(state: AppState) -> Server {
        let state = Arc::new(state);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                accelrt_serve::serve(
                    listener,
                    s,
                    async {
                        let _ = stopped.await;
                    },
                    Duration::from_millis(300),
                )
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Server { url: format!("http://{addr}"), state, stop: Some(stop), thread: Some(thread) }
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value, Option<String>) {
        let r = ureq::post(&format!("{}{path}", self.url)).set("Content-Type", "application/json").send_string(body);
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        let status = resp.status();
        let retry = resp.header("Retry-After").map(str::to_string);
        let text = resp.into_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)), retry)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&format!("{}{path}", self.url)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        }
    }

    pub fn shutdown(mut self) {
        if self.stop.is_none() {
            return;
        }
        self.stop.take().unwrap().send(()).unwrap();
        self.thread.take().unwrap().join().unwrap();
    }
}

/// The `data:` payloads of a server-sent-events body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:"))))
        .map(str::to_string)
        .collect()
}

/// One HTTP/1.1 response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Sends `POST path` with a JSON body on a new connection (`Connection: close`).
pub fn raw_send(addr: &str, path: &str, body: &str, extra_headers: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    s
}

/// Reads the whole answer; panics unless it is exactly one well-formed response (a second
/// response or stray bytes after the body would show a duplicated answer).
pub fn raw_read(mut s: std::net::TcpStream) -> RawResponse {
    use std::io::Read;
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = std::str::from_utf8(&bytes[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let rest = &bytes[split + 4..];
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let body = match (header("content-length"), header("transfer-encoding")) {
        (Some(n), _) => {
            let n: usize = n.parse().unwrap();
            assert_eq!(rest.len(), n, "exactly one body of content-length bytes, nothing after it");
            rest.to_vec()
        }
        (None, Some("chunked")) => dechunk(rest),
        _ => rest.to_vec(),
    };
    RawResponse { status, headers, body }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            assert_eq!(rest, b"\r\n", "nothing after the last chunk");
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// A Prometheus sample's value from `/metrics` text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// Waits up to `limit` for `check` to hold.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// A tiny deterministic generator for test choices (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
