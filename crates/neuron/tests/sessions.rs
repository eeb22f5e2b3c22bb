//! A session step that is refused, or fails on the device, leaves the session as it was: the same
//! slot lengths, and later steps give what they give without it. Its own test binary: it injects
//! failures into the runtime double, which are process-wide.

mod common;

use accelrt_core::{Backend, DeviceSpec, Executable, HostTensor, Outputs, PrepareOptions, SessionState};
use accelrt_neuron::{NeuronBackend, NeuronOptions};
use common::{compile_bucket, decoder_step, last_position_decoder};

/// NRT_EXEC_COMPLETED_WITH_ERR.
const EXEC_COMPLETED_WITH_ERR: i32 = 1004;

/// Injected failures hit the next call in the process: the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The decoder with programs for steps of 4 and of 2 tokens (one sequence, two slots): a step
/// of 5 tokens has no bucket and cannot be cut into compiled sizes (4 + 1).
fn decoder() -> (tempfile::TempDir, Box<dyn Executable>) {
    let (graph, weights) = last_position_decoder();
    let cache = tempfile::tempdir().unwrap();
    for bucket in ["batch=1,seq=4,slots=3", "batch=1,seq=2,slots=3"] {
        compile_bucket(cache.path(), &graph, bucket, &[]);
    }
    common::use_simulator();
    let options = NeuronOptions { cache_dir: cache.path().to_path_buf(), target: "inf2".into(), flags: None };
    let backend = NeuronBackend::with_options(&"neuron:0".parse::<DeviceSpec>().unwrap(), options).unwrap();
    let exe = backend.prepare(&graph, &weights, &PrepareOptions::default()).unwrap();
    (cache, exe)
}

/// One step of one row: `tokens` tokens into `slot` from position `start`.
fn step(
    exe: &dyn Executable,
    state: &mut SessionState,
    slot: u32,
    start: u32,
    tokens: usize,
) -> accelrt_core::Result<Outputs> {
    let inputs = decoder_step(&[(slot, start, tokens)], start as usize);
    let feed: Vec<(&str, &HostTensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    exe.run_with_state(state, &feed)
}

fn lengths(state: &SessionState) -> [usize; 2] {
    [state.slot_len(0), state.slot_len(1)]
}

/// A prompt of 4 then 2 more tokens in slot 0: the session without the refused and failed steps.
fn clean_run(exe: &dyn Executable) -> Vec<Outputs> {
    let mut state = exe.new_state(2).unwrap();
    let first = step(exe, &mut state, 0, 0, 4).unwrap();
    let second = step(exe, &mut state, 0, 4, 2).unwrap();
    assert_eq!(lengths(&state), [6, 0]);
    vec![first, second]
}

#[test]
fn a_step_no_bucket_holds_leaves_the_session_as_it_was() {
    let _turn = turn();
    let (_cache, exe) = decoder();
    let want = clean_run(exe.as_ref());
    let mut state = exe.new_state(2).unwrap();
    let refused = |state: &mut SessionState, start: u32| {
        let err = step(exe.as_ref(), state, 0, start, 5).unwrap_err().to_string();
        assert!(err.contains("without a compiled bucket that holds it"), "{err}");
    };
    refused(&mut state, 0);
    assert_eq!(lengths(&state), [0, 0], "a refused step records nothing");
    assert_eq!(step(exe.as_ref(), &mut state, 0, 0, 4).unwrap(), want[0]);
    refused(&mut state, 4);
    assert_eq!(lengths(&state), [4, 0], "a refused step records nothing");
    // Had the refused step been recorded (positions 4..9), position 9 would be the next one.
    let err = step(exe.as_ref(), &mut state, 0, 9, 2).unwrap_err().to_string();
    assert!(err.contains("holds only 4"), "{err}");
    assert_eq!(step(exe.as_ref(), &mut state, 0, 4, 2).unwrap(), want[1]);
    assert_eq!(lengths(&state), [6, 0]);
}

#[test]
fn a_step_that_fails_on_the_device_leaves_the_session_as_it_was() {
    let _turn = turn();
    let (_cache, exe) = decoder();
    let want = clean_run(exe.as_ref());
    let mut state = exe.new_state(2).unwrap();
    let failed = |state: &mut SessionState, start: u32, tokens: usize| {
        common::inject("nrt_execute", EXEC_COMPLETED_WITH_ERR, 1);
        let err = step(exe.as_ref(), state, 0, start, tokens).unwrap_err().to_string();
        assert!(err.contains("NRT_EXEC_COMPLETED_WITH_ERR"), "{err}");
    };
    failed(&mut state, 0, 4);
    assert_eq!(lengths(&state), [0, 0], "a failed step records nothing");
    assert_eq!(step(exe.as_ref(), &mut state, 0, 0, 4).unwrap(), want[0]);
    failed(&mut state, 4, 2);
    assert_eq!(lengths(&state), [4, 0], "a failed step records nothing");
    let err = step(exe.as_ref(), &mut state, 0, 6, 2).unwrap_err().to_string();
    assert!(err.contains("holds only 4"), "{err}");
    assert_eq!(step(exe.as_ref(), &mut state, 0, 4, 2).unwrap(), want[1]);
    assert_eq!(lengths(&state), [6, 0]);
    // A failed step that rewrote positions the slot held (2..4 of 6): the device may hold its
    // entries there, so the slot keeps only what came before them.
    failed(&mut state, 2, 2);
    assert_eq!(lengths(&state), [2, 0]);
    step(exe.as_ref(), &mut state, 0, 2, 2).unwrap();
    assert_eq!(lengths(&state), [4, 0]);
}
