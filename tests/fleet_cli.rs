//! `accelrt fleet` (feature `fleet`) from the command line: the dry run (plan, cost, user data, no
//! credentials), refusals with their reasons, and `fleet run` → (uploads simulated) → report
//! against moto's server mode, as in crates/fleet/tests/moto_cycle.rs (which says what moto
//! emulates). Run with `cargo test --release --features fleet --test fleet_cli`.
//!
//! Without moto's server mode the moto part says so and passes, unless `ACCELRT_REQUIRE_MOTO=1`.
#![cfg(feature = "fleet")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SHA: &str = "abababababababababababababababababababababababababababababababab";

fn accelrt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_accelrt"));
    for v in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_PROFILE"] {
        c.env_remove(v);
    }
    c
}

fn fleet_args(bucket: &str, types: &str, max_spend: &str) -> Vec<String> {
    let mut a: Vec<String> =
        ["fleet", "run", "--instance-types", types, "--bucket", bucket, "--instance-profile", "accelrt-fleet-test"]
            .map(String::from)
            .into();
    for family in ["cpu-x86", "nvidia", "neuron"] {
        a.extend([
            "--binary".into(),
            format!("{family}=s3://{bucket}/bin/{family}"),
            "--binary-sha256".into(),
            format!("{family}={SHA}"),
        ]);
    }
    a.extend(["--max-spend".into(), max_spend.into(), "--region".into(), "us-east-1".into()]);
    a
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn dry_run_prints_plan_and_cost_and_needs_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = fleet_args("accelrt-results", "c7i.xlarge,g5.xlarge,inf2.xlarge", "3");
    args.extend(
        ["--ami", "cpu-x86=ami-0a1b", "--ami", "nvidia=ami-0c2d", "--ami", "neuron=ami-0e3f", "--dry-run"]
            .map(String::from),
    );
    args.extend(["--user-data-dir".into(), dir.path().display().to_string()]);
    let o = accelrt().args(&args).output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for want in [
        "c7i.xlarge",
        "g5.xlarge",
        "inf2.xlarge",
        "cpu-x86",
        "nvidia",
        "neuron",
        "at most US$1.94",
        "dry run: nothing launched",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    let ud = std::fs::read_to_string(dir.path().join("g5.xlarge.yaml")).unwrap();
    assert!(
        ud.starts_with("#cloud-config") && ud.contains("--backend cuda:0") && ud.contains("shutdown -h +60"),
        "{ud}"
    );
}

#[test]
fn bad_fleet_input_is_refused_before_anything_launches() {
    let cases: Vec<(Vec<String>, &str)> = vec![
        // Over the spend bound.
        (
            [
                fleet_args("accelrt-results", "c7i.xlarge,g5.xlarge", "1"),
                ["--ami", "cpu-x86=ami-0a1b", "--ami", "nvidia=ami-0c2d"].map(String::from).into(),
            ]
            .concat(),
            "over --max-spend",
        ),
        // A family with no AMI.
        (
            [fleet_args("accelrt-results", "g5.xlarge", "5"), vec!["--ami".into(), "cpu-x86=ami-0a1b".into()]].concat(),
            "--ami nvidia=",
        ),
        // An unknown family name.
        (
            [fleet_args("accelrt-results", "c7i.xlarge", "5"), vec!["--ami".into(), "tpu=ami-0a1b".into()]].concat(),
            "unknown family",
        ),
        // No credentials for a real launch.
        (
            [fleet_args("accelrt-results", "c7i.xlarge", "5"), vec!["--ami".into(), "cpu-x86=ami-0a1b".into()]]
                .concat(),
            "no AWS credentials",
        ),
    ];
    for (args, want) in cases {
        let o = accelrt().args(&args).output().unwrap();
        let out = text(&o);
        assert!(!o.status.success() && out.contains(want), "{want:?} expected:\n{out}");
        assert!(!out.contains("launched "), "{out}");
    }
}

struct Moto(Child, String);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn helper(moto: &Moto, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/fleet/tests/moto_helper.py");
    let o = Command::new("python3")
        .arg(script)
        .args(args)
        .env("AWS_ENDPOINT_URL", &moto.1)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(o.status.success(), "moto_helper {args:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn fleet_run_waits_for_uploads_terminates_and_reports_against_moto() {
    let available = Command::new("python3")
        .args(["-c", "import moto.server, flask, flask_cors, boto3, yaml"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        assert!(
            std::env::var_os("ACCELRT_REQUIRE_MOTO").is_none(),
            "ACCELRT_REQUIRE_MOTO is set but moto's server mode is not installed"
        );
        eprintln!("SKIPPED: moto's server mode is not installed (python3 -m pip install 'moto[server]' boto3)");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("python3")
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto(child, format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let bucket = "accelrt-cli-test";
    let setup: serde_json::Value =
        serde_json::from_str(&helper(&moto, &["setup", bucket, "accelrt-fleet-test"])).unwrap();
    let ami = setup["ami"].as_str().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let mut args = fleet_args(bucket, "c7i.xlarge,inf2.xlarge", "5");
    args.extend(["--ami".into(), format!("cpu-x86={ami}"), "--ami".into(), format!("neuron={ami}")]);
    args.extend([
        "--endpoint-url".into(),
        moto.1.clone(),
        "--poll-seconds".into(),
        "1".into(),
        "--tag".into(),
        "team=ci".into(),
    ]);
    args.extend(["--out".into(), out_dir.path().display().to_string()]);
    let mut run = accelrt()
        .args(&args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the plan and the launches, then do what each instance would do at the end of its run.
    let mut stdout = BufReader::new(run.stdout.take().unwrap());
    let mut run_id = String::new();
    let mut launched = 0;
    let mut printed = String::new();
    while launched < 2 {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "fleet run ended early:\n{printed}");
        printed.push_str(&line);
        if let Some(rest) = line.strip_prefix("fleet run ") {
            run_id = rest.split_whitespace().next().unwrap().to_string();
        }
        if line.starts_with("launched ") {
            launched += 1;
        }
    }
    let instances: Vec<serde_json::Value> = serde_json::from_str(&helper(&moto, &["inspect", &run_id])).unwrap();
    assert_eq!(instances.len(), 2, "{instances:?}");
    assert!(instances.iter().all(|i| i["tags"]["team"] == "ci" && i["shutdown"] == "terminate"), "{instances:?}");
    let result: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("results/2026-11-29-cpu-2vcpu-serving/accelrt-all-minilm-l6-v2-cpu-offline-b32-unknown-instance-2026-11-29T013133Z.json");
    let prefix = |t: &str| format!("accelrt-fleet/{run_id}/{t}");
    helper(&moto, &["upload", bucket, &prefix("c7i.xlarge"), "done", "ok", result.to_str().unwrap()]);
    helper(&moto, &["upload", bucket, &prefix("inf2.xlarge"), "failed", "no NEFF"]);
    let status = run.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{printed}{rest}{err}");
    assert!(rest.contains("c7i.xlarge: results uploaded") && rest.contains("inf2.xlarge: failed"), "{rest}");
    assert!(rest.contains("1 result file(s)"), "{rest}");
    assert!(out_dir.path().join("report.md").is_file() && out_dir.path().join("logs/inf2.xlarge.log").is_file());
    let after: Vec<serde_json::Value> = serde_json::from_str(&helper(&moto, &["inspect", &run_id])).unwrap();
    assert!(after.iter().all(|i| i["state"] == "terminated"), "{after:?}");

    // `fleet collect` writes the same report again from the bucket.
    let again = tempfile::tempdir().unwrap();
    let o = accelrt()
        .args([
            "fleet",
            "collect",
            "--bucket",
            bucket,
            "--run-id",
            &run_id,
            "--region",
            "us-east-1",
            "--endpoint-url",
            &moto.1,
        ])
        .arg("--out")
        .arg(again.path())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(again.path().join("report.md").is_file());
}
