//! Records the rustc version the harness was built with, for every result's environment block.
//! The git commit is read at run time from the checkout the harness was built from (see
//! `environment::git_commit`), so git operations (a pull, a commit, `git status` touching the
//! index) never force this crate, and everything above it, to rebuild.
use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ACCELRT_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-changed=build.rs");
}
