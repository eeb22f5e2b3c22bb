//! The API contract with the official `openai` Python client (tests/openai/requirements.txt;
//! CI installs it): `accelrt serve` for all-MiniLM-L6-v2 and for SmolLM2-135M-Instruct, called
//! through the client for embeddings (base64 and float) and chat (whole and streamed), the answers
//! compared with the library's own. Then SIGTERM: both servers exit 0.

mod common;

use accelrt::models::{ChatMessage, SamplingParams, SentenceEmbedder, TextGenerator};
use common::{minilm_dir, smollm2_gguf, ServeProcess};
use std::process::Command;

fn expected() -> serde_json::Value {
    let cpu = accelrt::open_backend("cpu").unwrap();
    let embedder = SentenceEmbedder::load(&minilm_dir(), cpu.as_ref(), &Default::default()).unwrap();
    let texts = ["The quick brown fox.", "Rust on every accelerator", "¿Dónde está la biblioteca?"];
    let vectors = embedder.embed(&texts).unwrap();

    let g = TextGenerator::load(&smollm2_gguf(), cpu.as_ref(), &Default::default(), 512).unwrap();
    let user = "What is the capital of France? Answer in one sentence.";
    let max_tokens = 24;
    let prompt = g.tokenizer().apply_chat_template(&[ChatMessage::new("user", user)]).unwrap();
    let ids = g.tokenizer().encode(&prompt).unwrap();
    let out = g.generate(&ids, &SamplingParams::greedy(), max_tokens, |_| {}).unwrap();
    // A stop string from the middle of the answer: its fifth word.
    let cut = out.text.char_indices().filter(|(_, c)| *c == ' ').nth(4).map(|(i, _)| i).expect("a few words");
    let stop: String = out.text[cut..].chars().take(5).collect();
    serde_json::json!({
        "embeddings": { "model": "all-minilm-l6-v2", "texts": texts, "vectors": vectors },
        "chat": {
            "model": "smollm2-135m-instruct",
            "user": user,
            "max_tokens": max_tokens,
            "text": out.text,
            "finish_reason": out.finish_reason.to_string(),
            "completion_tokens": out.tokens.len(),
            "stop": stop,
            "text_before_stop": &out.text[..cut],
        }
    })
}

#[test]
fn the_official_openai_client_gets_the_libraries_answers() {
    let have_client = Command::new("python3").args(["-c", "import openai"]).status().is_ok_and(|s| s.success());
    assert!(
        have_client,
        "this test needs the `openai` Python package: python3 -m pip install -r tests/openai/requirements.txt"
    );
    let expected_path = std::env::temp_dir().join(format!("accelrt-openai-expected-{}.json", std::process::id()));
    std::fs::write(&expected_path, expected().to_string()).unwrap();

    let embeddings = ServeProcess::start(&["--model", "all-minilm-l6-v2"]);
    let chat = ServeProcess::start(&["--model", "smollm2-135m-instruct", "--context", "512", "--max-sequences", "4"]);
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai/check_servers.py"))
        .args(["--embeddings-url", &embeddings.url, "--chat-url", &chat.url])
        .arg("--expected")
        .arg(&expected_path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&expected_path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}\nserver logs:\n{}\n{}", embeddings.logs(), chat.logs());
    assert!(stdout.contains("all checks passed"), "{stdout}");

    // Each request's log lines carry its id.
    let (status, logs) = chat.stop();
    assert!(status.success(), "the chat server exits 0 on SIGTERM: {status}\n{logs}");
    assert!(logs.contains("request{id=") && logs.contains("generated"), "{logs}");
    assert!(logs.contains("draining") && logs.contains("stopped"), "{logs}");
    let (status, logs) = embeddings.stop();
    assert!(status.success(), "the embeddings server exits 0 on SIGTERM: {status}\n{logs}");
}
