//! The compiler stand-in's command line, run as `neuronx-cc` from PATH (a symlink, as the tests
//! of `accelrt compile` use it): version, compile, refused flags, failures.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temp dir with `bin/neuronx-cc` → the stand-in, and `bucket.hlo.pb` + `bucket.json` (the KV
/// module and its manifest).
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_neuronx-cc-sim"), dir.path().join("bin/neuronx-cc")).unwrap();
        std::fs::write(dir.path().join("bucket.hlo.pb"), kv_hlo()).unwrap();
        std::fs::write(dir.path().join("bucket.json"), kv_manifest().to_json()).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `neuronx-cc ARGS` found on PATH, in the temp dir.
    fn cc(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let path = format!("{}:{}", self.path("bin").display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = Command::new("neuronx-cc");
        cmd.args(args).current_dir(self.dir.path()).env("PATH", path).env_remove("NRT_SIM_CC_FAIL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn compile(&self, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut args =
            vec!["compile", "bucket.hlo.pb", "--framework", "XLA", "--target", "inf2", "--output", "bucket.neff"];
        args.extend_from_slice(extra);
        self.cc(&args, env)
    }

    /// The files in the temp dir besides bin/ (a failed or finished compile leaves no temp file).
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "bin")
            .collect();
        names.sort();
        names
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_names_a_release_and_says_it_is_a_test_double() {
    let s = Setup::new();
    let o = s.cc(&["--version"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.contains("2.21.0.0") && text.contains("accelrt test double"), "{text:?}");
}

#[test]
fn compile_writes_an_hlo_neff_that_records_target_and_flags() {
    let s = Setup::new();
    let o = s.compile(&["--model-type", "transformer", "--auto-cast=none", "--auto-cast-type", "bf16", "-O1"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.files(), ["bucket.hlo.pb", "bucket.json", "bucket.neff"]);
    let neff = nrt_sim::HloNeff::parse(&std::fs::read(s.path("bucket.neff")).unwrap()).unwrap();
    assert_eq!(neff.hlo, kv_hlo());
    assert_eq!(neff.header.target, "inf2");
    assert_eq!(neff.header.compiler_version, nrt_sim::COMPILER_VERSION);
    assert_eq!(
        neff.header.flags,
        ["--model-type", "transformer", "--auto-cast", "none", "--auto-cast-type", "bf16", "-O1"]
    );
    assert_eq!(neff.header.inputs.len(), 4);

    // The same file from compile_hlo: the stand-in adds nothing of its own.
    let flags: Vec<String> = neff.header.flags.clone();
    assert_eq!(
        std::fs::read(s.path("bucket.neff")).unwrap(),
        nrt_sim::compile_hlo(&kv_hlo(), &kv_manifest(), "inf2", &flags).unwrap()
    );

    // Another target and --optlevel N; the output is replaced whole.
    let o = s.cc(
        &["compile", "bucket.hlo.pb", "--framework=XLA", "--target=trn1", "--output=bucket.neff", "--optlevel", "2"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let neff = nrt_sim::HloNeff::parse(&std::fs::read(s.path("bucket.neff")).unwrap()).unwrap();
    assert_eq!(neff.header.target, "trn1");
    assert_eq!(neff.header.flags, ["--optlevel", "2"]);
}

#[test]
fn a_broken_hlo_fails_at_compile_time_and_writes_nothing() {
    let s = Setup::new();
    std::fs::write(s.path("bucket.hlo.pb"), b"\x0a\x03abc not a module").unwrap();
    let o = s.compile(&[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("bucket.hlo.pb") && stderr(&o).contains("XLA"), "{}", stderr(&o));
    assert_eq!(s.files(), ["bucket.hlo.pb", "bucket.json"]);

    // An HLO that compiles but is not what its manifest says.
    let s = Setup::new();
    let mut manifest = kv_manifest();
    manifest.outputs.pop();
    std::fs::write(s.path("bucket.json"), manifest.to_json()).unwrap();
    let o = s.compile(&[], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not match its manifest"), "{}", stderr(&o));
    assert_eq!(s.files(), ["bucket.hlo.pb", "bucket.json"]);

    // No manifest beside the input, and an input not named <bucket>.hlo.pb.
    std::fs::remove_file(s.path("bucket.json")).unwrap();
    let o = s.compile(&[], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bucket.json"), "{}", stderr(&o));
    std::fs::copy(s.path("bucket.hlo.pb"), s.path("bucket.pb")).unwrap();
    let o = s.cc(&["compile", "bucket.pb", "--framework", "XLA", "--target", "inf2", "--output", "x.neff"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(".hlo.pb"), "{}", stderr(&o));
}

#[test]
fn refused_command_lines_exit_2_with_the_usage() {
    let s = Setup::new();
    let cases: [&[&str]; 9] = [
        &["compile", "bucket.hlo.pb", "--framework", "XLA", "--target", "inf2", "--output", "o.neff", "--fast"],
        &["compile", "bucket.hlo.pb", "--framework", "PYTORCH", "--target", "inf2", "--output", "o.neff"],
        &["compile", "bucket.hlo.pb", "--framework", "XLA", "--target", "inf1", "--output", "o.neff"],
        &["compile", "bucket.hlo.pb", "--framework", "XLA", "--target", "inf2"],
        &["compile", "bucket.hlo.pb", "--target", "inf2", "--output", "o.neff"],
        &[
            "compile",
            "bucket.hlo.pb",
            "--framework",
            "XLA",
            "--target",
            "inf2",
            "--output",
            "o.neff",
            "--auto-cast",
            "some",
        ],
        &["compile", "bucket.hlo.pb", "--framework", "XLA", "--target", "inf2", "--output", "o.neff", "-O4"],
        &["compile", "--framework", "XLA", "--target", "inf2", "--output", "o.neff"],
        &["link", "bucket.hlo.pb"],
    ];
    for args in cases {
        let o = s.cc(args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("usage: neuronx-cc compile"), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(s.files(), ["bucket.hlo.pb", "bucket.json"]);
}

#[test]
fn nrt_sim_cc_fail_makes_the_compile_fail_with_that_message() {
    let s = Setup::new();
    let message = "Internal compiler error: kelp.passes.CompilerInternalError (injected)";
    let o = s.compile(&[], &[("NRT_SIM_CC_FAIL", message)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(message), "{}", stderr(&o));
    assert_eq!(s.files(), ["bucket.hlo.pb", "bucket.json"]);
    // --version is not a compile.
    assert!(s.cc(&["--version"], &[("NRT_SIM_CC_FAIL", message)]).status.success());
    assert!(Path::new(env!("CARGO_BIN_EXE_neuronx-cc-sim")).is_file());
}
