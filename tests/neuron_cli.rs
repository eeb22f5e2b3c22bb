//! The Neuron path of the CLI end to end against the test doubles built in this workspace: the
//! runtime (`crates/nrt-sim`, a TEST DOUBLE of libnrt that runs the exported HLO on XLA CPU) and
//! the compiler (`neuronx-cc-sim`, put on PATH as `neuronx-cc`). `accelrt compile --target inf2`
//! fills the NEFF cache — directly, or through the `compile.sh` it writes when no compiler is
//! installed — and `embed`, `generate`, `bench` and `serve` run on `neuron:0`.
#![cfg(feature = "neuron")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A file cargo builds next to the test binaries (`cargo build --workspace` builds both doubles).
fn built(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    [deps.join(name), deps.parent().unwrap().join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is built by `cargo build --release --workspace` (crates/nrt-sim)"))
}

fn simulator() -> PathBuf {
    built(&format!("{}nrt_sim{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX))
}

/// A directory holding `neuronx-cc` (the compiler double), for PATH.
fn compiler_dir(root: &Path) -> PathBuf {
    let dir = root.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("neuronx-cc");
    if !link.exists() {
        std::os::unix::fs::symlink(built("neuronx-cc-sim"), &link).unwrap();
    }
    dir
}

/// PATH without any real `neuronx-cc`, optionally with the double's directory first.
fn path_with(dir: Option<&Path>) -> String {
    let system = std::env::var("PATH").unwrap_or_default();
    let kept: Vec<&str> = system.split(':').filter(|d| !Path::new(d).join("neuronx-cc").exists()).collect();
    match dir {
        Some(d) => format!("{}:{}", d.display(), kept.join(":")),
        None => kept.join(":"),
    }
}

/// `accelrt` with the runtime double, the NEFF cache `neff` and PATH `path`.
fn accelrt_in(args: &[&str], neff: &Path, path: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_accelrt"))
        .args(args)
        .env("ACCELRT_CACHE", common::cache_root())
        .env("ACCELRT_NEURON_LIB", simulator())
        .env("ACCELRT_NEFF_CACHE", neff)
        .env_remove("ACCELRT_NEURONX_CC")
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn with_stdin(mut cmd: Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn embed(backend: &str, neff: &Path, texts: &str) -> Vec<Vec<f64>> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_accelrt"));
    cmd.args(["embed", "--backend", backend])
        .env("ACCELRT_CACHE", common::cache_root())
        .env("ACCELRT_NEURON_LIB", simulator())
        .env("ACCELRT_NEFF_CACHE", neff);
    let out = ok(&with_stdin(cmd, texts));
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn devices_and_a_model_without_neffs_say_what_to_do() {
    let o = Command::new(env!("CARGO_BIN_EXE_accelrt"))
        .args(["devices"])
        .env("ACCELRT_CACHE", common::cache_root())
        .env("ACCELRT_NEURON_LIB", "/nonexistent/libnrt.so.1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("neuron:0   unavailable the Neuron runtime library could not be loaded"), "{out}");
    let neff = tempfile::tempdir().unwrap();
    let out = ok(&accelrt_in(&["devices"], neff.path(), &path_with(None)));
    assert!(out.contains("neuron:0   available") && out.contains("TEST DOUBLE"), "{out}");
    let o = accelrt_in(&["embed", "--backend", "neuron:0"], neff.path(), &path_with(None));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("no NEFF for graph") && err.contains("accelrt compile --model MODEL --target inf2"), "{err}");
}

const TEXTS: &str = "A cat sits on the mat.\nGPUs multiply matrices quickly.\nHello, Neuron!\n";

#[test]
fn compile_for_inf2_fills_the_cache_and_embed_runs_on_neuron() {
    let root = tempfile::tempdir().unwrap();
    let neff = root.path().join("neff");
    let path = path_with(Some(&compiler_dir(root.path())));
    let out = root.path().join("out");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "compile",
            "--model",
            "all-minilm-l6-v2",
            "--target",
            "inf2",
            "--bucket",
            "batch=1,seq=16",
            "--bucket",
            "batch=4,seq=32",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| accelrt_in(&a.iter().map(String::as_str).collect::<Vec<_>>(), &neff, &path);
    // --check before: both missing, exit 1.
    let o = run(args(&["--check"]));
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stdout).matches("missing").count() == 2);
    let printed = ok(&run(args(&["--out", out.to_str().unwrap()])));
    assert_eq!(printed.lines().filter(|l| l.ends_with(".neff")).count(), 2, "{printed}");
    for f in ["batch=1,seq=16.hlo.pb", "batch=1,seq=16.mlir", "batch=1,seq=16.json", "batch=4,seq=32.neff"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let check = ok(&run(args(&["--check"])));
    assert_eq!(check.matches("present").count(), 2, "{check}");
    assert!(check.contains("neuronx-cc 2.21.0.0"), "{check}");
    // Three texts run in the batch-4 bucket, padded; they embed like the CPU backend.
    let on_neuron = embed("neuron:0", &neff, TEXTS);
    let on_cpu = embed("cpu", &neff, TEXTS);
    assert_eq!(on_neuron.len(), 3);
    for (n, c) in on_neuron.iter().zip(&on_cpu) {
        let diff = n.iter().zip(c).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-5, "max abs diff {diff}");
    }
    // A compiler failure is reported with the compiler's own message.
    let o = Command::new(env!("CARGO_BIN_EXE_accelrt"))
        .args([
            "compile",
            "--model",
            "all-minilm-l6-v2",
            "--target",
            "inf2",
            "--bucket",
            "batch=2,seq=16",
            "--compiler-flags",
            "--optlevel 1",
        ])
        .env("ACCELRT_CACHE", common::cache_root())
        .env("ACCELRT_NEFF_CACHE", &neff)
        .env("PATH", &path)
        .env("NRT_SIM_CC_FAIL", "internal error in tiling pass")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("internal error in tiling pass") && err.contains("neuronx-cc failed"),
        "{err}"
    );
}

/// Without `--out` the modules go to a private temporary directory: removed when the NEFFs are in
/// the cache or the compile failed, kept only when it holds the compile.sh the user must run (CI
/// ran out of disk with 22 MB left behind by every such compile).
#[test]
fn compile_without_out_leaves_a_directory_only_for_the_script() {
    let root = tempfile::tempdir().unwrap();
    let neff = root.path().join("neff");
    let tmp = root.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let compile = |bucket: &str, path: &str, fail: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_accelrt"));
        cmd.args(["compile", "--model", "all-minilm-l6-v2", "--target", "inf2", "--bucket", bucket])
            .env("ACCELRT_CACHE", common::cache_root())
            .env("ACCELRT_NEFF_CACHE", &neff)
            .env_remove("ACCELRT_NEURONX_CC")
            .env("PATH", path)
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null());
        if let Some(message) = fail {
            cmd.env("NRT_SIM_CC_FAIL", message);
        }
        cmd.output().unwrap()
    };
    let left = || std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>();
    let with_compiler = path_with(Some(&compiler_dir(root.path())));

    let printed = ok(&compile("batch=1,seq=8", &with_compiler, None));
    assert!(printed.trim().ends_with(".neff") && Path::new(printed.trim()).is_file(), "{printed}");
    assert!(left().is_empty(), "compiled into the cache, yet left {:?}", left());

    let o = compile("batch=2,seq=8", &with_compiler, Some("internal error in tiling pass"));
    assert!(!o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(left().is_empty(), "a failed compile left {:?}", left());

    let printed = ok(&compile("batch=2,seq=8", &path_with(None), None));
    let kept = left();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(Path::new(printed.trim()), kept[0].join("compile.sh"), "{printed}");
    assert!(kept[0].join("batch=2,seq=8.hlo.pb").is_file());
}

#[test]
fn without_a_compiler_the_command_writes_a_script_and_installs_what_it_made() {
    let root = tempfile::tempdir().unwrap();
    let neff = root.path().join("neff");
    let out = root.path().join("out");
    let compile = [
        "compile",
        "--model",
        "all-minilm-l6-v2",
        "--target",
        "inf2",
        "--bucket",
        "batch=2,seq=16",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = accelrt_in(&compile, &neff, &path_with(None));
    let printed = ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("neuronx-cc is not installed here")
            && err.contains(
                "neuronx-cc compile batch=2,seq=16.hlo.pb --framework XLA --target inf2 --output batch=2,seq=16.neff"
            ),
        "{err}"
    );
    let script = out.join("compile.sh");
    assert_eq!(printed.trim(), script.display().to_string());
    let empty = std::fs::read_dir(&neff).map_or(true, |mut d| d.next().is_none());
    assert!(empty, "nothing is installed before the NEFFs exist");
    // The script runs where the compiler is (here: the double on PATH).
    let o =
        Command::new("bash").arg(&script).env("PATH", path_with(Some(&compiler_dir(root.path())))).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("batch=2,seq=16.neff").is_file() && out.join("compiler-version.txt").is_file());
    // Run again without a compiler: the NEFFs are installed with their manifests.
    let printed = ok(&accelrt_in(&compile, &neff, &path_with(None)));
    assert!(printed.trim().ends_with("batch=2,seq=16@2.21.0.0@e3b0c442.neff"), "{printed}");
    let on_neuron = embed("neuron:0", &neff, "Hello, Neuron!\n");
    assert_eq!(on_neuron.len(), 1);
    // The same directory with other flags (or another target) would file those NEFFs under a key
    // they do not match: refused.
    let mut other = compile.to_vec();
    other.extend(["--compiler-flags", "--optlevel 1"]);
    let o = accelrt_in(&other, &neff, &path_with(None));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("compiled for another command"), "{err}");
    // Flags that would contradict the key are refused before anything runs.
    let o = accelrt_in(
        &[
            "compile",
            "--model",
            "all-minilm-l6-v2",
            "--target",
            "inf2",
            "--bucket",
            "batch=1,seq=8",
            "--compiler-flags",
            "--target trn2",
        ],
        &neff,
        &path_with(None),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("`--target` is set by accelrt compile itself"), "{err}");
    // Buckets that cannot be right are refused by name.
    for (bucket, why) in [
        ("batch=1,seq=8,slots=2", "`slots` is for generation models"),
        ("batch=1099511627776,seq=128", "more than 96 GiB"),
    ] {
        let o = accelrt_in(
            &["compile", "--model", "all-minilm-l6-v2", "--target", "inf2", "--bucket", bucket],
            &neff,
            &path_with(None),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(why), "{bucket}: {err}");
    }
}

/// SmolLM2 with its KV caches on the (simulated) device: `generate` gives xla:cpu's greedy text
/// (the same exported program and dequantised weights), `bench` measures it, and `serve` answers
/// a chat through the harness.
#[test]
fn smollm2_generates_benches_and_serves_on_neuron() {
    let root = tempfile::tempdir().unwrap();
    let neff = root.path().join("neff");
    let path = path_with(Some(&compiler_dir(root.path())));
    let mut args: Vec<String> = ["compile", "--model", "smollm2-135m-instruct", "--target", "inf2", "--context", "256"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for slots in [1, 2] {
        for seq in [1, 2, 4, 8, 16, 32] {
            args.extend(["--bucket".into(), format!("batch=1,seq={seq},slots={slots}")]);
        }
    }
    args.extend(["--bucket".into(), "batch=2,seq=1,slots=2".into()]);
    ok(&accelrt_in(&args.iter().map(String::as_str).collect::<Vec<_>>(), &neff, &path));

    let generate = |backend: &str| {
        let o = accelrt_in(
            &[
                "generate",
                "--backend",
                backend,
                "--context",
                "256",
                "--greedy",
                "--max-tokens",
                "12",
                "--prompt",
                "The capital of France is",
            ],
            &neff,
            &path,
        );
        ok(&o)
    };
    let on_neuron = generate("neuron:0");
    assert_eq!(on_neuron, generate("xla:cpu"), "greedy text on neuron:0 (test double) and xla:cpu");

    let results = root.path().join("results");
    let mut bench = vec![
        "bench",
        "--backend",
        "neuron:0",
        "--model",
        "smollm2-135m-instruct",
        "--context",
        "256",
        "--max-tokens",
        "4",
        "--out",
        results.to_str().unwrap(),
        "--price-per-hour",
        "1",
        "--batch-size",
        "1",
    ];
    bench.extend_from_slice(&["--min-duration", "1", "--warmup", "0.2", "--min-queries", "2", "--no-progress"]);
    let out = ok(&accelrt_in(&bench, &neff, &path));
    assert!(out.contains("tokens/s"), "{out}");

    std::env::set_var("ACCELRT_NEURON_LIB", simulator());
    std::env::set_var("ACCELRT_NEFF_CACHE", &neff);
    let server = common::ServeProcess::start(&[
        "--model",
        "smollm2-135m-instruct",
        "--backend",
        "neuron:0",
        "--context",
        "256",
        "--max-sequences",
        "2",
    ]);
    let mut client = vec![
        "bench",
        "--url",
        &server.url,
        "--scenario",
        "offline",
        "--concurrency",
        "2",
        "--max-tokens",
        "4",
        "--out",
    ];
    let client_out = root.path().join("client");
    client.push(client_out.to_str().unwrap());
    client.extend_from_slice(&["--min-duration", "1", "--warmup", "0.2", "--min-queries", "2", "--no-progress"]);
    let out = ok(&accelrt_in(&client, &neff, &path));
    assert!(out.contains("tokens/s") && out.contains("TTFT"), "{out}");
    let (status, logs) = server.stop();
    assert!(status.success(), "{logs}");
}
