//! The `neuron` feature of the CLI against the simulator (a TEST DOUBLE of libnrt built in this
//! workspace): `cargo test --release --features neuron --test neuron_cli`.
#![cfg(feature = "neuron")]

mod common;

use std::path::PathBuf;
use std::process::Command;

fn simulator() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let name = format!("{}nrt_sim{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    [deps.join(&name), deps.parent().unwrap().join(&name)]
        .into_iter()
        .find(|p| p.is_file())
        .expect("the simulator is built by `cargo build --workspace` (crates/nrt-sim)")
}

fn accelrt(args: &[&str], lib: Option<&PathBuf>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_accelrt"));
    cmd.args(args).env("ACCELRT_CACHE", common::cache_root());
    match lib {
        Some(lib) => cmd.env("ACCELRT_NEURON_LIB", lib),
        None => cmd.env("ACCELRT_NEURON_LIB", "/nonexistent/libnrt.so.1"),
    };
    cmd.output().unwrap()
}

#[test]
fn devices_and_embed_go_through_the_runtime_library() {
    let o = accelrt(&["devices"], None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("neuron:0   unavailable the Neuron runtime library could not be loaded"), "{out}");
    let lib = simulator();
    let o = accelrt(&["devices"], Some(&lib));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("neuron:0   available") && out.contains("TEST DOUBLE"), "{out}");
    // No compiled program for the model: the error names the artifact and the compile command.
    let neff = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_accelrt"))
        .args(["embed", "--backend", "neuron:0"])
        .env("ACCELRT_CACHE", common::cache_root())
        .env("ACCELRT_NEURON_LIB", &lib)
        .env("ACCELRT_NEFF_CACHE", neff.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("no NEFF for bucket batch=1,seq=32") && err.contains("neuronx-cc compile"), "{err}");
}
