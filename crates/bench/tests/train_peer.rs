//! The training-peer protocol against stand-in runners (small Python scripts, no PyTorch): what a
//! well-behaved runner reports arrives intact, and every way a runner can misbehave is an error
//! naming the peer.

use accelrt_bench::peers::PeerOptions;
use accelrt_bench::train_peer::{TrainBatch, TrainHyper, TrainingPeer};
use std::path::PathBuf;

const GOOD: &str = r#"
import json, sys
args = sys.argv[1:]
assert args[args.index("--lr") + 1] == "0.0002", args
assert args[args.index("--dropout") + 1] == "0", args
print(json.dumps({"ready": True, "system": "fake", "versions": {"fake": "1"}, "dtype": "f32",
                  "device": "cpu", "task": "causal-lm", "parameters": 42}), flush=True)
for line in sys.stdin:
    batch = json.loads(line)["train"]
    if "windows" in batch:
        rows = batch["windows"]
        tokens = sum(len(r) for r in rows)
        loss = sum(sum(r) for r in rows) / tokens
    else:
        rows = batch["pairs"]
        tokens = sum(len(p["anchor"]) + len(p["positive"]) for p in rows)
        loss = float(len(rows))
    print(json.dumps({"n": len(rows), "loss": loss, "tokens": tokens, "step_ms": 12.5,
                      "peak_memory_bytes": 1000}), flush=True)
"#;

fn script(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, body).unwrap();
    path
}

fn options() -> PeerOptions {
    PeerOptions { threads: 1, device: "cpu".into(), dtype: "f32".into(), max_tokens: None }
}

const HYPER: TrainHyper = TrainHyper { lr: 2e-4, weight_decay: 0.01, dropout: 0.0 };

#[test]
fn steps_report_what_the_runner_measured() {
    let dir = tempfile::tempdir().unwrap();
    let good = script(&dir, "good.py", GOOD);
    let mut peer = TrainingPeer::spawn("fake", &good, dir.path(), &options(), &HYPER).unwrap();
    assert_eq!(peer.task, "causal-lm");
    assert_eq!(peer.parameters, Some(42));
    assert_eq!(peer.info.system, "fake");
    let rows: [&[u32]; 2] = [&[1, 2, 3], &[4, 5, 6]];
    let step = peer.step(TrainBatch::Windows(&rows)).unwrap();
    assert_eq!((step.rows, step.tokens, step.loss), (2, 6, 3.5));
    assert_eq!(step.step.as_secs_f64(), 0.0125);
    assert!(step.round_trip > std::time::Duration::ZERO);
    assert_eq!(step.peak_memory_bytes, Some(1000));
    let pairs = [("to be", "or not"), ("a", "b")];
    let step = peer.step(TrainBatch::Pairs(&pairs)).unwrap();
    assert_eq!((step.rows, step.tokens), (2, 13));
}

#[test]
fn misbehaving_runners_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ready = r#"import json, sys
print(json.dumps({"ready": True, "system": "bad", "task": "mnrl"}), flush=True)
"#;
    let cases = [
        ("refuses.py", "import json\nprint(json.dumps({'error': 'no torch here'}))\n", "no torch here", false),
        ("notask.py", "import json\nprint(json.dumps({'ready': True, 'system': 'x'}))\n", "no `task`", false),
        ("dies.py", "import sys\nsys.exit(3)\n", "exited", false),
        ("wrong_n.py", &format!("{ready}for l in sys.stdin:\n    print(json.dumps({{'n': 1, 'loss': 1, 'tokens': 1, 'step_ms': 1}}), flush=True)\n"), "answered Some(1) rows", true),
        // Python writes a NaN loss as the bare word NaN, which is no JSON.
        ("nan.py", &format!("{ready}for l in sys.stdin:\n    print('{{\"n\": 2, \"loss\": NaN, \"tokens\": 1, \"step_ms\": 1}}', flush=True)\n"), "bad reply", true),
        ("negative.py", &format!("{ready}for l in sys.stdin:\n    print(json.dumps({{'n': 2, 'loss': 1.5, 'tokens': 1, 'step_ms': -4}}), flush=True)\n"), "step time -4 ms", true),
        ("step_error.py", &format!("{ready}for l in sys.stdin:\n    print(json.dumps({{'error': 'CUDA out of memory'}}), flush=True)\n"), "CUDA out of memory", true),
        ("quits.py", &format!("{ready}sys.stdin.readline()\n"), "exited", true),
    ];
    for (name, body, needle, after_ready) in cases {
        let path = script(&dir, name, body);
        let result = TrainingPeer::spawn("peer", &path, dir.path(), &options(), &HYPER).and_then(|mut p| {
            assert!(after_ready, "{name}: spawn should have failed");
            let pairs = [("a", "b"), ("c", "d")];
            p.step(TrainBatch::Pairs(&pairs))
        });
        let msg = result.unwrap_err().to_string();
        assert!(msg.contains(needle) && msg.contains("peer"), "{name}: {msg}");
    }
}
