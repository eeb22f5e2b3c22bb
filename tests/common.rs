//! Helpers shared by the integration tests.
#![allow(dead_code)]

use accelrt::models::{registry, ModelStore};
use std::path::PathBuf;

/// The verified all-MiniLM-L6-v2 directory in the user's cache, fetched on first use (CI fetches it
/// through the same code path). A missing model fails the test: it is never skipped.
pub fn minilm_dir() -> PathBuf {
    ModelStore::from_env()
        .ensure(&registry::ALL_MINILM_L6_V2)
        .unwrap_or_else(|e| panic!("all-MiniLM-L6-v2 is needed by this test: {e}"))
}

/// The cache folder that holds the verified model (the root `ACCELRT_CACHE` would name).
pub fn cache_root() -> PathBuf {
    minilm_dir().parent().and_then(|p| p.parent()).expect("models/<id> inside the cache").to_path_buf()
}

/// Devices to run the device-generic tests on: `ACCELRT_TEST_DEVICES` (comma-separated), default `cpu`.
pub fn test_devices() -> Vec<String> {
    std::env::var("ACCELRT_TEST_DEVICES")
        .unwrap_or_else(|_| "cpu".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[derive(serde::Deserialize)]
pub struct Reference {
    pub texts: Vec<String>,
    pub token_counts: Vec<usize>,
    pub embeddings: Vec<Vec<f64>>,
}

/// The repository root: `ACCELRT_REPO_ROOT` (for test binaries run elsewhere, e.g. by
/// scripts/gpu-check.sh), else where the tests were built.
pub fn repo_root() -> PathBuf {
    std::env::var_os("ACCELRT_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn minilm_reference() -> Reference {
    let path = repo_root().join("models/tests/fixtures/all-minilm-l6-v2.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture present")).expect("fixture parses")
}

pub fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max)
}

/// The verified SmolLM2-135M-Instruct GGUF in the user's cache, fetched on first use.
pub fn smollm2_gguf() -> PathBuf {
    let dir = ModelStore::from_env()
        .ensure(&registry::SMOLLM2_135M_INSTRUCT)
        .unwrap_or_else(|e| panic!("SmolLM2-135M-Instruct is needed by this test: {e}"));
    dir.join(registry::SMOLLM2_135M_INSTRUCT.files[0].path)
}

#[derive(serde::Deserialize)]
pub struct SmolText {
    pub text: String,
    pub llama_cpp: Vec<u32>,
    pub transformers: Vec<u32>,
}

#[derive(serde::Deserialize)]
pub struct SmolPrompt {
    pub name: String,
    pub text: String,
    pub prompt_ids: Vec<u32>,
    pub llama_cpp: Vec<u32>,
    pub transformers: Vec<u32>,
    /// llama.cpp's 50 largest logits at the prompt's last position: (token, logit).
    pub llama_cpp_top_logits: Vec<(u32, f64)>,
}

#[derive(serde::Deserialize)]
pub struct SmolReference {
    pub texts: Vec<SmolText>,
    pub prompts: Vec<SmolPrompt>,
}

/// models/tests/fixtures/smollm2.json, written by scripts/make_smollm2_reference.py.
pub fn smollm2_reference() -> SmolReference {
    let path = repo_root().join("models/tests/fixtures/smollm2.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture present")).expect("fixture parses")
}

/// `accelrt serve …` on a free loopback port, its logs collected; SIGTERM on `stop` (or drop).
pub struct ServeProcess {
    pub url: String,
    child: std::process::Child,
    logs: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServeProcess {
    /// Starts the server and waits (up to 60 s) for its "serving" log line with the address.
    pub fn start(args: &[&str]) -> ServeProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_accelrt"))
            .args(["serve", "--port", "0", "--drain-seconds", "0.2"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("accelrt starts");
        let stderr = child.stderr.take().unwrap();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(" serving ") {
                    if let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("address=")) {
                        let _ = addr_tx.send(addr.to_string());
                    }
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = addr_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server did not start: {}", logs.lock().unwrap()));
        ServeProcess { url: format!("http://{addr}"), child, logs, reader: Some(reader) }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status and every log line.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        (status, self.logs())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
