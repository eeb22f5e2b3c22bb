//! The fleet's whole cycle against moto's server mode (an AWS API emulator on loopback):
//! launch → (the instances' uploads, simulated) → wait → terminate → collect → report, plus the
//! guards: a failed launch, Ctrl-C and the deadline each terminate what was launched.
//!
//! What moto stands in for: the EC2 Query API (RunInstances with user data, tags, shutdown
//! behaviour, IMDSv2 options and encrypted volumes; DescribeInstances; TerminateInstances;
//! CreateTags), S3 (ListObjectsV2, GetObject, PutObject, path-style) and IAM (the instance
//! profile), and SigV4-signed requests (moto accepts any key; it does not check signatures). What it
//! does not do: boot instances or run their user data, so the uploads an instance would make are
//! made here with boto3 (a client independent of this crate), and shutdown-to-terminate, the
//! instance's own deadline and spot behaviour only happen on AWS.
//!
//! Needs `python3 -m pip install 'moto[server]' boto3`. Without it the test says so and passes,
//! unless `ACCELRT_REQUIRE_MOTO=1` (CI sets it). With `cloud-init` installed the user data is also
//! validated (required when `ACCELRT_REQUIRE_DEPLOY_TOOLS=1`).

use accelrt_bench::catalog::Catalog;
use accelrt_fleet::{
    collect, launch, plan, wait, Aws, AwsConfig, Binary, Family, FleetError, FleetOptions, Market, Outcome,
};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BUCKET: &str = "accelrt-fleet-test";
const PROFILE: &str = "accelrt-fleet-test";

fn helper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto_helper.py")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_available() -> bool {
    Command::new("python3")
        .args(["-c", "import moto.server, flask, flask_cors, boto3, yaml"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_moto() -> Moto {
    // A free loopback port: bind, read it, release it for moto.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("python3")
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        // Unknown instance types are refused, as AWS does (the failed-launch case below uses one).
        .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 -m moto.server starts");
    let mut moto = Moto { child, url: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = moto.child.try_wait().unwrap() {
            let mut err = String::new();
            moto.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("moto exited ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "moto did not listen within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

fn py(moto: &Moto, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(helper())
        .args(args)
        .env("AWS_ENDPOINT_URL", &moto.url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "moto_helper {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn inspect(moto: &Moto, run_id: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<Vec<serde_json::Value>>(&py(moto, &["inspect", run_id])).unwrap()
}

fn options(ami: &str, types: &[&str], run_id: &str) -> FleetOptions {
    let mut binaries = BTreeMap::new();
    let mut amis = BTreeMap::new();
    for f in Family::ALL {
        binaries.insert(f, Binary { url: format!("s3://{BUCKET}/bin/{}/accelrt", f.name()), sha256: "0".repeat(64) });
        amis.insert(f, ami.to_string());
    }
    FleetOptions {
        instance_types: types.iter().map(|s| s.to_string()).collect(),
        model: "all-minilm-l6-v2".into(),
        bucket: BUCKET.into(),
        prefix: "fleet".into(),
        binaries,
        amis,
        instance_profile: PROFILE.into(),
        subnet_id: None,
        security_group_ids: vec![],
        market: Market::OnDemand,
        max_spend_usd: 10.0,
        max_minutes: 60,
        prices: BTreeMap::new(),
        bench_args: vec!["--scenario".into(), "offline".into()],
        tags: vec![("team".into(), "accelrt-ci".into())],
        neff_cache: None,
        run_id: run_id.into(),
        region: "us-east-1".into(),
    }
}

fn all_terminated(moto: &Moto, run_id: &str, n: usize) {
    let got = inspect(moto, run_id);
    assert_eq!(got.len(), n, "{got:?}");
    for i in &got {
        assert_eq!(i["state"], "terminated", "{i}");
        assert!(i["tags"]["accelrt:terminated-by"].as_str().is_some_and(|s| s.starts_with("accelrt fleet")), "{i}");
    }
}

#[test]
fn launch_upload_wait_collect_report_and_every_guard_terminates() {
    if !moto_available() {
        assert!(
            std::env::var_os("ACCELRT_REQUIRE_MOTO").is_none(),
            "ACCELRT_REQUIRE_MOTO is set but moto's server mode is not installed (python3 -m pip install 'moto[server]' boto3)"
        );
        eprintln!("SKIPPED: moto's server mode is not installed (python3 -m pip install 'moto[server]' boto3)");
        return;
    }
    let moto = start_moto();
    let setup: serde_json::Value = serde_json::from_str(&py(&moto, &["setup", BUCKET, PROFILE])).unwrap();
    let ami = setup["ami"].as_str().unwrap().to_string();
    let aws = Aws::new(
        AwsConfig::new("us-east-1".into(), Some(moto.url.clone()), "testing".into(), "testing".into(), None).unwrap(),
    );
    let catalog = Catalog::builtin();
    let tmp = tempfile::tempdir().unwrap();

    // --- The cycle: three families, as in docs/deploy.md.
    let run_id = "20261129T233000Z-c0ffee";
    let p = plan(&options(&ami, &["c7i.xlarge", "g5.xlarge", "inf2.xlarge"], run_id), &catalog).unwrap();
    for i in &p.instances {
        let file = tmp.path().join(format!("{}.yaml", i.instance_type));
        std::fs::write(&file, &i.spec.user_data).unwrap();
        let verdict = py(&moto, &["validate", file.to_str().unwrap()]);
        if verdict.trim() == "NO-CLOUD-INIT" {
            assert!(
                std::env::var_os("ACCELRT_REQUIRE_DEPLOY_TOOLS").is_none(),
                "ACCELRT_REQUIRE_DEPLOY_TOOLS is set but cloud-init is not installed"
            );
            eprintln!("cloud-init not installed: the fleet's user data was not schema-checked");
        } else {
            assert_eq!(verdict.trim(), "VALID 2", "{}: {verdict}", i.instance_type);
        }
    }
    let manifest = launch(&aws, &p).unwrap();
    assert_eq!(manifest.instances.len(), 3);
    let launched = inspect(&moto, run_id);
    assert_eq!(launched.len(), 3, "{launched:?}");
    for planned in &p.instances {
        let i = launched.iter().find(|i| i["type"] == planned.instance_type.as_str()).expect("launched");
        assert_eq!(i["user_data"].as_str().unwrap(), planned.spec.user_data, "user data arrives intact");
        assert_eq!(i["shutdown"], "terminate", "{i}");
        assert_eq!(i["http_tokens"], "required", "{i}");
        assert_eq!(i["volume_encrypted"], serde_json::json!([true]), "{i}");
        assert_eq!(i["tags"]["accelrt:fleet-run"], run_id);
        assert_eq!(i["tags"]["team"], "accelrt-ci");
        assert!(i["state"] == "running" || i["state"] == "pending", "{i}");
    }

    // What each instance's user data does at the end of its run, done by hand: two succeed with
    // result files written by `accelrt bench` (kept in the repository), one fails with its log.
    let results_dir = repo_root().join("results/2026-11-29-cpu-2vcpu-serving");
    let offline = results_dir.join("accelrt-all-minilm-l6-v2-cpu-offline-b32-unknown-instance-2026-11-29T013133Z.json");
    let served =
        results_dir.join("accelrt-serve-all-minilm-l6-v2-cpu-offline-b1-unknown-instance-2026-11-29T013209Z.json");
    let prefix = |t: &str| format!("{}/{t}", p.run_prefix);
    py(&moto, &["upload", BUCKET, &prefix("c7i.xlarge"), "done", "bench ok", offline.to_str().unwrap()]);
    py(&moto, &["upload", BUCKET, &prefix("g5.xlarge"), "done", "bench ok", served.to_str().unwrap()]);
    py(&moto, &["upload", BUCKET, &prefix("inf2.xlarge"), "failed", "missing NEFF for bucket batch=32"]);

    let mut lines = Vec::new();
    let outcomes = wait(
        &aws,
        BUCKET,
        &manifest,
        Instant::now() + Duration::from_secs(120),
        Duration::from_millis(200),
        &mut |l| lines.push(l.to_string()),
    )
    .unwrap();
    assert_eq!(
        outcomes,
        vec![
            ("c7i.xlarge".to_string(), Outcome::Done),
            ("g5.xlarge".to_string(), Outcome::Done),
            ("inf2.xlarge".to_string(), Outcome::Failed)
        ]
    );
    assert!(lines.last().unwrap().contains("results uploaded"), "{lines:?}");
    // moto runs no user data, so no instance powered itself off: the tool terminated them.
    all_terminated(&moto, run_id, 3);

    let out = tmp.path().join("report");
    let collected = collect(&aws, BUCKET, &p.run_prefix, &out, None).unwrap();
    assert_eq!(collected.result_files.len(), 2, "{:?}", collected.result_files);
    assert_eq!(collected.outcomes, outcomes);
    let report = std::fs::read_to_string(&collected.report).unwrap();
    assert!(report.contains("all-minilm-l6-v2"), "{report}");
    assert!(out.join("report.html").is_file());
    assert_eq!(std::fs::read_to_string(out.join("logs/inf2.xlarge.log")).unwrap(), "missing NEFF for bucket batch=32");
    for f in &collected.result_files {
        let original = if f.to_string_lossy().contains("c7i.xlarge") { &offline } else { &served };
        assert_eq!(std::fs::read(f).unwrap(), std::fs::read(original).unwrap(), "downloaded byte for byte");
    }

    // --- A launch that fails part-way terminates what was launched before it.
    let run_id = "20261129T233100Z-badbad";
    // moto accepts any AMI id, but refuses an instance type AWS does not have (priced by hand
    // here, as the catalog does not list it).
    let mut o = options(&ami, &["c7i.xlarge", "c7i.nosuchsize"], run_id);
    o.prices.insert("c7i.nosuchsize".into(), 0.5);
    match launch(&aws, &plan(&o, &catalog).unwrap()) {
        Err(FleetError::Stopped { cause, terminated, left_running }) => {
            assert!(cause.to_string().contains("RunInstances"), "{cause}");
            assert_eq!(terminated.len(), 1);
            assert!(left_running.is_empty());
        }
        other => panic!("expected the launch to fail and clean up: {other:?}"),
    }
    all_terminated(&moto, run_id, 1);

    // --- Ctrl-C while waiting terminates everything.
    let run_id = "20261129T233200Z-1c1c1c";
    let manifest =
        launch(&aws, &plan(&options(&ami, &["c7i.xlarge", "inf2.xlarge"], run_id), &catalog).unwrap()).unwrap();
    accelrt_bench::interrupt::request();
    let r = wait(
        &aws,
        BUCKET,
        &manifest,
        Instant::now() + Duration::from_secs(120),
        Duration::from_millis(200),
        &mut |_| {},
    );
    accelrt_bench::interrupt::reset();
    assert!(
        matches!(&r, Err(FleetError::Stopped { cause, terminated, .. }) if matches!(**cause, FleetError::Interrupted) && terminated.len() == 2),
        "{r:?}"
    );
    all_terminated(&moto, run_id, 2);

    // --- The deadline passes with no results: everything is terminated and the error says so.
    let run_id = "20261129T233300Z-dead11";
    let manifest = launch(&aws, &plan(&options(&ami, &["c7i.xlarge"], run_id), &catalog).unwrap()).unwrap();
    let r = wait(&aws, BUCKET, &manifest, Instant::now(), Duration::from_millis(100), &mut |_| {});
    let e = r.unwrap_err();
    assert!(e.to_string().contains("deadline"), "{e}");
    all_terminated(&moto, run_id, 1);
    // …and collect says there are no results, with each instance's outcome.
    let e = collect(&aws, BUCKET, &format!("fleet/{run_id}"), &tmp.path().join("none"), None).unwrap_err();
    assert!(
        matches!(&e, FleetError::NoResults { outcomes, .. } if outcomes == &vec![("c7i.xlarge".to_string(), Outcome::NoStatus)]),
        "{e}"
    );
    let e = collect(&aws, BUCKET, "fleet/no-such-run", &tmp.path().join("none"), None).unwrap_err();
    assert!(e.to_string().contains("nothing under"), "{e}");
}
