//! The inference-peer protocol against a stand-in runner (a small Python script, no PyTorch):
//! timings a runner reports are checked before they become durations.

use accelrt_bench::peers::{ExternalRunner, PeerOptions};
use accelrt_bench::workload::Workload;

/// A generation runner that reports `ttft_ms` and `tpot_ms` as given on its command line.
fn runner(ttft: &str, tpot: &str) -> String {
    format!(
        r#"
import json, sys
print(json.dumps({{"ready": True, "system": "fake", "versions": {{}}, "dtype": "f32"}}), flush=True)
for line in sys.stdin:
    n = len(json.loads(line)["prompts"])
    reqs = [{{"prompt_tokens": 3, "output_tokens": 2, "ttft_ms": {ttft}, "tpot_ms": {tpot}}}] * n
    print(json.dumps({{"n": n, "requests": reqs}}), flush=True)
"#
    )
}

fn run_once(body: &str) -> accelrt_bench::Result<Vec<accelrt_bench::workload::RequestStats>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runner.py");
    std::fs::write(&path, body).unwrap();
    let options = PeerOptions { threads: 1, device: "cpu".into(), dtype: "f32".into(), max_tokens: Some(2) };
    let mut peer = ExternalRunner::spawn("fake", &path, dir.path(), &options, vec!["hi".into()])?;
    peer.start_measuring();
    peer.run(0, 1)?;
    Ok(peer.take_requests())
}

#[test]
fn reported_times_arrive_as_durations() {
    let requests = run_once(&runner("150.0", "12.5")).unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].time_to_first_token.as_secs_f64(), 0.15);
    assert_eq!(requests[0].time_per_output_token.map(|d| d.as_secs_f64()), Some(0.0125));
}

#[test]
fn absurd_times_are_an_error_naming_the_peer_not_a_panic() {
    // 1e300 ms overflowed `Duration::from_secs_f64` and panicked the harness; Python writes
    // float('inf') as the bare word Infinity, which serde_json refuses as no JSON.
    for (ttft, tpot) in [("1e300", "1.0"), ("-5.0", "1.0"), ("1.0", "1e300"), ("1.0", "-1.0")] {
        let err = run_once(&runner(ttft, tpot)).unwrap_err().to_string();
        assert!(err.contains("fake") && err.contains("ttft_ms"), "{ttft}/{tpot}: {err}");
    }
}
