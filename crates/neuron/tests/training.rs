//! Training on the Neuron backend, through the real FFI against the runtime double: a training
//! step (forward, next-token cross-entropy, backward with an embedding's scatter-add, global-norm
//! clipping, AdamW) exported to StableHLO, converted to HLO and "compiled" as `accelrt compile`
//! does, its parameters and moments held as device tensors in the session. Checked against the
//! candle CPU backend step by step, through save/restore, and for the rule that a refused or
//! failed step leaves the variables as they were. Its own test binary: it injects failures into
//! the runtime double, which are process-wide.

mod common;

use accelrt_candle::CandleBackend;
use accelrt_core::optim::AdamW;
use accelrt_core::training::{
    accumulating_training_graph, training_graph, Optimizer, TrainingConfig, TrainingGraph, TrainingSession,
};
use accelrt_core::{
    loss, Backend, DType, DeviceSpec, Dim, Error, Graph, GraphBuilder, HostTensor, HostWeights, Op, PrepareOptions,
    Shape, UnaryOp,
};
use accelrt_neuron::{NeuronBackend, NeuronOptions};
use common::compile_bucket;

const VOCAB: usize = 13;
const HIDDEN: usize = 8;

/// NRT_EXEC_COMPLETED_WITH_ERR.
const EXEC_COMPLETED_WITH_ERR: i32 = 1004;

/// Injected failures hit the next call in the process: the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Embedding → RMSNorm → SiLU MLP → LM head, next-token cross-entropy (as in
/// crates/candle/tests/training.rs).
fn tiny_lm() -> (Graph, HostWeights) {
    let mut b = GraphBuilder::new("tiny_lm");
    let ids = b.input("ids", DType::U32, Shape(vec![Dim::sym("batch"), Dim::sym("seq")])).unwrap();
    let mut weights = HostWeights::new();
    let mut weight = |b: &mut GraphBuilder, name: &str, shape: &[usize], seed: f32| {
        let n: usize = shape.iter().product();
        let data = (0..n).map(|i| ((i as f32 + seed) * 0.618).sin() * 0.5).collect();
        weights.insert(name, HostTensor::f32(shape.to_vec(), data).unwrap());
        b.weight(name, DType::F32, Shape::new(shape.iter().copied())).unwrap()
    };
    let table = weight(&mut b, "embed", &[VOCAB, HIDDEN], 1.0);
    let gamma = weight(&mut b, "norm", &[HIDDEN], 2.0);
    let up = weight(&mut b, "up", &[16, HIDDEN], 3.0);
    let head = weight(&mut b, "head", &[VOCAB, HIDDEN], 4.0);
    let down = weight(&mut b, "down", &[HIDDEN, 16], 5.0);
    let x = b.add("emb", Op::Embedding { table, ids }).unwrap();
    let h = b.add("rms", Op::RmsNorm { x, gamma, eps: 1e-5 }).unwrap();
    let u = b.add("up_out", Op::Linear { x: h, weight: up, bias: None }).unwrap();
    let u = b.add("act", Op::Unary { op: UnaryOp::Silu, x: u }).unwrap();
    let d = b.add("down_out", Op::Linear { x: u, weight: down, bias: None }).unwrap();
    let r = b.add("res", Op::Binary { op: accelrt_core::BinaryOp::Add, a: d, b: x }).unwrap();
    let logits = b.add("logits", Op::Linear { x: r, weight: head, bias: None }).unwrap();
    let ce = loss::causal_lm_loss(&mut b, "ce", logits, ids).unwrap();
    b.output("ce", ce);
    (b.build().unwrap(), weights)
}

const PARAMS: [&str; 5] = ["embed", "norm", "up", "down", "head"];

fn config() -> TrainingConfig {
    TrainingConfig {
        optimizer: Optimizer::AdamW(AdamW { weight_decay: 0.01, ..AdamW::default() }),
        clip_norm: Some(1.0),
        mixed_precision: None,
    }
}

/// A batch of 2 rows of `seq` tokens; `step` varies the ids.
fn ids(step: u32, seq: usize) -> HostTensor {
    HostTensor::u32(vec![2, seq], (0..2 * seq as u32).map(|i| (i * 7 + step * 3) % VOCAB as u32).collect()).unwrap()
}

/// The training graph's NEFFs for `buckets` in a fresh cache, and the backend reading it.
fn neuron(training: &TrainingGraph, buckets: &[&str]) -> (tempfile::TempDir, NeuronBackend) {
    let cache = tempfile::tempdir().unwrap();
    for bucket in buckets {
        compile_bucket(cache.path(), &training.graph, bucket, &[]);
    }
    common::use_simulator();
    let options = NeuronOptions { cache_dir: cache.path().to_path_buf(), target: "inf2".into(), flags: None };
    let backend = NeuronBackend::with_options(&"neuron:0".parse::<DeviceSpec>().unwrap(), options).unwrap();
    (cache, backend)
}

fn session(backend: &dyn Backend, training: &TrainingGraph, weights: &HostWeights) -> TrainingSession {
    TrainingSession::new(backend, training, weights, &PrepareOptions::default()).unwrap()
}

fn step(session: &mut TrainingSession, batch: &HostTensor, lr: f64) -> accelrt_core::Result<f64> {
    session.step(&[("ids", batch)], lr).map(|r| r.loss)
}

/// Every variable (parameters, then both AdamW moments) as bits, to compare exactly.
fn bits(session: &TrainingSession) -> Vec<(String, Vec<u64>)> {
    session
        .save()
        .unwrap()
        .variables
        .into_iter()
        .map(|(n, t)| (n, t.to_f64_vec().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

fn worst(a: &HostTensor, b: &HostTensor) -> f64 {
    a.to_f64_vec().iter().zip(b.to_f64_vec()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn adamw_steps_on_the_double_match_candle_and_a_restored_session_continues_exactly() {
    let _turn = turn();
    let (forward, weights) = tiny_lm();
    let training = training_graph(&forward, "ce", &PARAMS, &config()).unwrap();
    let (_cache, backend) = neuron(&training, &["batch=2,seq=6"]);
    let mut ours = session(&backend, &training, &weights);
    let mut cpu = session(&CandleBackend::cpu(), &training, &weights);
    let lr = 0.02;
    let mut losses = Vec::new();
    let mut saved = None;
    let mut loss_diff = 0.0f64;
    for s in 1..=12u32 {
        let batch = ids(s % 3, 6);
        let got = ours.step(&[("ids", &batch)], lr).unwrap();
        let want = cpu.step(&[("ids", &batch)], lr).unwrap();
        assert!(
            (got.loss - want.loss).abs() <= 1e-5 * (1.0 + want.loss.abs()),
            "step {s}: {} vs candle {}",
            got.loss,
            want.loss
        );
        let (g, w) = (got.grad_norm.unwrap(), want.grad_norm.unwrap());
        assert!((g - w).abs() <= 1e-5 * (1.0 + w), "step {s}: grad norm {g} vs candle {w}");
        losses.push(got.loss);
        loss_diff = loss_diff.max((got.loss - want.loss).abs());
        if s == 6 {
            saved = Some(ours.save().unwrap());
        }
    }
    assert!(losses[11] < losses[0] - 0.1, "training did not lower the loss: {losses:?}");
    let mut largest = 0.0f64;
    for name in PARAMS {
        let d = worst(&ours.parameter(name).unwrap(), &cpu.parameter(name).unwrap());
        largest = largest.max(d);
        assert!(d <= 1e-5, "{name}: the parameters differ by {d:.2e}");
    }
    eprintln!(
        "losses {losses:?}, within {loss_diff:.2e} of candle's; parameters within {largest:.2e} of candle's after 12 steps"
    );
    // The moments too (they decide every later update).
    let (a, b) = (ours.save().unwrap(), cpu.save().unwrap());
    assert_eq!(a.steps, 12);
    for ((name, x), (other, y)) in a.variables.iter().zip(&b.variables) {
        assert_eq!(name, other);
        assert!(worst(x, y) <= 1e-5 * (1.0 + y.to_f64_vec().iter().fold(0.0f64, |m, v| m.max(v.abs()))), "{name}");
    }

    // A new session (another prepare, its variables at their initial values) given the state
    // saved after step 6 continues bit for bit: the same losses and the same variables.
    let saved = saved.unwrap();
    assert_eq!(saved.steps, 6);
    let mut resumed = session(&backend, &training, &weights);
    assert_ne!(bits(&resumed), bits(&ours));
    resumed.restore(&saved).unwrap();
    assert_eq!(resumed.steps(), 6);
    for s in 7..=12u32 {
        let loss = step(&mut resumed, &ids(s % 3, 6), lr).unwrap();
        assert_eq!(loss.to_bits(), losses[s as usize - 1].to_bits(), "step {s}: {loss} vs {}", losses[s as usize - 1]);
    }
    assert_eq!(bits(&resumed), bits(&ours));
}

/// Every way a step can be refused or fail leaves every variable and the step count as they
/// were, and the next step gives what it gives in a session that never had it — including a step
/// whose program wrote its (NaN) results before reporting `NRT_EXEC_COMPLETED_WITH_NUM_ERR`.
#[test]
fn a_refused_or_failed_step_leaves_the_variables_as_they_were() {
    let _turn = turn();
    let (forward, weights) = tiny_lm();
    let training = training_graph(&forward, "ce", &PARAMS, &config()).unwrap();
    // Nothing of a training step may be padded here (the embedding gradient's scatter-add, the
    // loss's sums): a step of another shape needs its own NEFF.
    assert!(accelrt_core::padding::paddable_symbols(&training.graph).is_empty());
    let (_cache, backend) = neuron(&training, &["batch=2,seq=6"]);
    let lr = 0.02;
    let mut clean = session(&backend, &training, &weights);
    let want: Vec<u64> = (1..=3u32).map(|s| step(&mut clean, &ids(s, 6), lr).unwrap().to_bits()).collect();

    let mut ours = session(&backend, &training, &weights);
    step(&mut ours, &ids(1, 6), lr).unwrap();
    let before = bits(&ours);
    let unchanged = |s: &TrainingSession, what: &str| {
        assert_eq!(s.steps(), 1, "{what}");
        assert!(bits(s) == before, "{what} changed the variables");
    };

    // No program for the step's shape: refused before anything runs, with what to do.
    let e = step(&mut ours, &ids(2, 5), lr).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("without a compiled bucket that holds it") && text.contains("has no command for training steps"),
        "{text}"
    );
    unchanged(&ours, "a step no bucket holds");

    // An id outside the vocabulary: the device's gather would clamp it, the host refuses it.
    let bad = HostTensor::u32(vec![2, 6], vec![0, 1, 2, 3, 4, VOCAB as u32, 0, 1, 2, 3, 4, 5]).unwrap();
    let e = step(&mut ours, &bad, lr).unwrap_err();
    assert!(matches!(e, Error::Input { .. }), "{e}");
    unchanged(&ours, "an id out of range");

    // The device fails the run.
    common::inject("nrt_execute", EXEC_COMPLETED_WITH_ERR, 1);
    let e = step(&mut ours, &ids(2, 6), lr).unwrap_err().to_string();
    assert!(e.contains("NRT_EXEC_COMPLETED_WITH_ERR"), "{e}");
    unchanged(&ours, "a failed run");

    // A NaN learning rate: the program runs and writes NaN parameters into the tensors bound as
    // its results, then reports NaN; those tensors never become the variables.
    let e = step(&mut ours, &ids(2, 6), f64::NAN).unwrap_err().to_string();
    assert!(e.contains("NRT_EXEC_COMPLETED_WITH_NUM_ERR"), "{e}");
    unchanged(&ours, "a run that produced NaN");

    // The next steps are those of the session that never had any of these.
    for (s, want) in (2..=3u32).zip(&want[1..]) {
        assert_eq!(step(&mut ours, &ids(s, 6), lr).unwrap().to_bits(), *want, "step {s}");
    }
    assert!(bits(&ours) == bits(&clean));
}

/// Writing a variable checks its dtype and shape and names an unknown one; reading one from a
/// session of another executable is refused by name.
#[test]
fn variables_are_read_and_written_by_name_with_their_dtype_and_shape() {
    let _turn = turn();
    let (forward, weights) = tiny_lm();
    let training = training_graph(&forward, "ce", &PARAMS, &config()).unwrap();
    let (_cache, backend) = neuron(&training, &["batch=2,seq=6"]);
    let exe = backend.prepare(&training.graph, &weights, &PrepareOptions::default()).unwrap();
    let mut state = exe.new_state(0).unwrap();
    // Parameters start from their weights, moments from zeros.
    assert_eq!(exe.read_variable(&state, "up").unwrap(), *weights.get_tensor("up").unwrap());
    let m = exe.read_variable(&state, "up.adam_m").unwrap();
    assert!(m.to_f64_vec().iter().all(|&v| v == 0.0) && m.shape() == [16, HIDDEN]);
    let wrong = HostTensor::f32(vec![HIDDEN, 16], vec![0.5; 16 * HIDDEN]).unwrap();
    let e = exe.write_variable(&mut state, "up", &wrong).unwrap_err().to_string();
    assert!(e.contains("variable `up` is f32 [16, 8]"), "{e}");
    let e = exe.read_variable(&state, "nothing").unwrap_err().to_string();
    assert!(e.contains("no variable `nothing`"), "{e}");
    let right = HostTensor::f32(vec![16, HIDDEN], (0..16 * HIDDEN).map(|i| i as f32 / 100.0).collect()).unwrap();
    exe.write_variable(&mut state, "up", &right).unwrap();
    assert_eq!(exe.read_variable(&state, "up").unwrap(), right);
    // A one-shot run starts from the initial values, not from a session's.
    let batch = ids(0, 6);
    let lr = HostTensor::f32(vec![], vec![0.0]).unwrap();
    let stepn = HostTensor::f32(vec![], vec![1.0]).unwrap();
    let feed = [("ids", &batch), (accelrt_core::training::LR_INPUT, &lr), (accelrt_core::training::STEP_INPUT, &stepn)];
    let fresh = exe.run(&feed).unwrap();
    let mut s2 = exe.new_state(0).unwrap();
    assert_eq!(exe.run_with_state(&mut s2, &feed).unwrap(), fresh);
    // Another executable's session is refused.
    let other = backend.prepare(&training.graph, &weights, &PrepareOptions::default()).unwrap();
    let e = other.read_variable(&state, "up").unwrap_err().to_string();
    assert!(e.contains("a state runs only with the executable whose new_state made it"), "{e}");
}

/// Gradient accumulation (two micro-batches per update, the accumulators being variables too)
/// matches candle.
#[test]
fn accumulated_micro_batches_match_candle() {
    let _turn = turn();
    let (forward, weights) = tiny_lm();
    let training = accumulating_training_graph(&forward, "ce", &PARAMS, &config(), 2).unwrap();
    let (_cache, backend) = neuron(&training, &["batch=2,seq=6"]);
    let mut ours = session(&backend, &training, &weights);
    let mut cpu = session(&CandleBackend::cpu(), &training, &weights);
    for s in 1..=3u32 {
        let (a, b) = (ids(s, 6), ids(s + 5, 6));
        let micro: [&[(&str, &HostTensor)]; 2] = [&[("ids", &a)], &[("ids", &b)]];
        let got = ours.accumulated_step(&micro, 0.02).unwrap().loss;
        let want = cpu.accumulated_step(&micro, 0.02).unwrap().loss;
        assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "step {s}: {got} vs candle {want}");
    }
    for name in PARAMS {
        let d = worst(&ours.parameter(name).unwrap(), &cpu.parameter(name).unwrap());
        assert!(d <= 1e-5, "{name}: {d:.2e}");
    }
}

/// Without NEFFs for the training graph, prepare says so, names the graph as a training graph
/// and says that `accelrt compile` does not make training NEFFs (rather than advise a command
/// that would compile the inference graph).
#[test]
fn a_training_graph_without_neffs_is_refused_with_what_to_do() {
    let _turn = turn();
    let (forward, weights) = tiny_lm();
    let training = training_graph(&forward, "ce", &PARAMS, &config()).unwrap();
    let (_cache, backend) = neuron(&training, &[]);
    let e = TrainingSession::new(&backend, &training, &weights, &PrepareOptions::default()).err().unwrap().to_string();
    assert!(e.contains("no NEFF for training graph `tiny_lm"), "{e}");
    assert!(e.contains("one per step shape (batch=N,seq=N)"), "{e}");
    assert!(
        e.contains("`accelrt compile` compiles inference graphs only: it has no command for training steps"),
        "{e}"
    );
}
