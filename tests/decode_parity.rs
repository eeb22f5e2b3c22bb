//! `accelrt generate` and `accelrt serve` run the same decode loop (accelrt_models::decode): for the
//! same greedy chat prompt, the CLI prints exactly the text the server answers, with the same
//! number of generated tokens and the same finish reason.

mod common;

use common::ServeProcess;
use std::process::Command;

const MODEL: &str = "smollm2-135m-instruct";

#[test]
fn the_cli_and_the_server_generate_the_same_tokens() {
    // Fetched (and verified) into the cache before the binaries use it.
    common::smollm2_gguf();
    // Two lengths: one cut by max_tokens, one long enough for the model to end its turn.
    for (user, max_tokens) in [("Name three French cheeses.", "20"), ("What is 2 + 2? Answer with a number.", "64")] {
        let cli = Command::new(env!("CARGO_BIN_EXE_accelrt"))
            .args(["generate", "--model", MODEL, "--chat", "--greedy", "--context", "512"])
            .args(["--max-tokens", max_tokens, "--prompt", user])
            .env("ACCELRT_CACHE", common::cache_root())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&cli.stderr);
        assert!(cli.status.success(), "{stderr}");
        let printed = String::from_utf8(cli.stdout).unwrap();
        let printed = printed.strip_suffix('\n').expect("the CLI ends its output with a newline");

        let server = ServeProcess::start(&["--model", MODEL, "--context", "512", "--max-sequences", "2"]);
        let body = serde_json::json!({
            "model": MODEL,
            "messages": [{ "role": "user", "content": user }],
            "max_tokens": max_tokens.parse::<usize>().unwrap(),
            "temperature": 0,
        });
        let answer: serde_json::Value = ureq::post(&format!("{}/v1/chat/completions", server.url))
            .send_json(body)
            .unwrap_or_else(|e| panic!("{e}\n{}", server.logs()))
            .into_json()
            .unwrap();
        let (status, logs) = server.stop();
        assert!(status.success(), "{logs}");

        assert_eq!(answer["choices"][0]["message"]["content"].as_str(), Some(printed), "{user}");
        let tokens = answer["usage"]["completion_tokens"].as_u64().unwrap();
        let reason = answer["choices"][0]["finish_reason"].as_str().unwrap();
        assert!(stderr.contains(&format!(" {tokens} generated, finish: {reason};")), "{user}: {stderr} vs {answer}");
    }
}
