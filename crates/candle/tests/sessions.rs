//! A candle session step that is refused, or fails part-way through the graph, leaves the session
//! as it was: the same slot lengths and the same cache contents, so later steps give what they
//! give without it.

use accelrt_candle::CandleBackend;
use accelrt_core::{
    Backend, DType, Dim, Executable, GraphBuilder, HostTensor, HostWeights, Op, Outputs, PrepareOptions, SessionState,
    Shape,
};

#[test]
fn a_refused_step_leaves_the_session_as_it_was() {
    accelrt_conformance::check_refused_steps(&CandleBackend::cpu(), &PrepareOptions::default()).unwrap();
}

const HEADS: usize = 2;
const D: usize = 4;

/// Attention over two caches, and an op evaluated after them that fails at run time: `TakeLast`
/// along `tail`'s axis 1, which is empty when the step gives `tail` no columns.
fn graph_with_a_late_failure() -> Box<dyn Executable> {
    let mut b = GraphBuilder::new("late_failure");
    let heads = || Shape(vec![Dim::sym("batch"), Dim::Fixed(HEADS), Dim::sym("seq"), Dim::Fixed(D)]);
    let q = b.input("q", DType::F32, heads()).unwrap();
    let k = b.input("k", DType::F32, heads()).unwrap();
    let v = b.input("v", DType::F32, heads()).unwrap();
    let positions = b.input("positions", DType::U32, Shape(vec![Dim::sym("batch"), Dim::sym("seq")])).unwrap();
    let slots = b.input("slots", DType::U32, Shape(vec![Dim::sym("batch")])).unwrap();
    let tail = b.input("tail", DType::F32, Shape(vec![Dim::sym("batch"), Dim::sym("m")])).unwrap();
    let kc = b.add("k_cache", Op::KvCache { x: k, positions, slots, capacity: 16 }).unwrap();
    let vc = b.add("v_cache", Op::KvCache { x: v, positions, slots, capacity: 16 }).unwrap();
    let attn = Op::Attention { q, k: kc, v: vc, mask: None, causal: false, scale: 0.5, q_positions: Some(positions) };
    let a = b.add("attn", attn).unwrap();
    let last = b.add("tail_last", Op::TakeLast { x: tail, axis: 1 }).unwrap();
    b.output("out", a);
    b.output("last", last);
    CandleBackend::cpu().prepare(&b.build().unwrap(), &HostWeights::new(), &PrepareOptions::default()).unwrap()
}

/// One row into `slot` from `start`, `tokens` tokens, with `tail` of `m` columns; `salt` varies
/// the values.
fn step(
    exe: &dyn Executable,
    state: &mut SessionState,
    (slot, start, tokens): (u32, u32, usize),
    m: usize,
    salt: usize,
) -> accelrt_core::Result<Outputs> {
    let values = |n: usize, k: usize| -> Vec<f32> {
        (0..n).map(|i| (((i + 7 * k + 13 * salt) * 17 % 23) as f32 - 11.0) / 8.0).collect()
    };
    let shape = vec![1, HEADS, tokens, D];
    let n = HEADS * tokens * D;
    let inputs = [
        ("q", HostTensor::f32(shape.clone(), values(n, 1)).unwrap()),
        ("k", HostTensor::f32(shape.clone(), values(n, 2)).unwrap()),
        ("v", HostTensor::f32(shape, values(n, 3)).unwrap()),
        ("positions", HostTensor::u32(vec![1, tokens], (start..start + tokens as u32).collect()).unwrap()),
        ("slots", HostTensor::u32(vec![1], vec![slot]).unwrap()),
        ("tail", HostTensor::f32(vec![1, m], values(m, 4)).unwrap()),
    ];
    let feed: Vec<(&str, &HostTensor)> = inputs.iter().map(|(n, t)| (*n, t)).collect();
    exe.run_with_state(state, &feed)
}

fn lengths(state: &SessionState) -> [usize; 2] {
    [state.slot_len(0), state.slot_len(1)]
}

#[test]
fn a_step_whose_later_op_fails_leaves_the_session_as_it_was() {
    let exe = graph_with_a_late_failure();
    let fails = |state: &mut SessionState, row: (u32, u32, usize)| {
        let err = step(exe.as_ref(), state, row, 0, 9).unwrap_err().to_string();
        assert!(err.contains("tail_last") && err.contains("empty"), "{err}");
    };
    // The session without the failed steps: 5 tokens into slot 0, then 2 more.
    let mut clean = exe.new_state(2).unwrap();
    let want = [
        step(exe.as_ref(), &mut clean, (0, 0, 5), 1, 0).unwrap(),
        step(exe.as_ref(), &mut clean, (0, 5, 2), 2, 1).unwrap(),
    ];

    let mut state = exe.new_state(2).unwrap();
    fails(&mut state, (0, 0, 3));
    fails(&mut state, (1, 0, 2));
    assert_eq!(lengths(&state), [0, 0], "a failed step records nothing");
    assert_eq!(step(exe.as_ref(), &mut state, (0, 0, 5), 1, 0).unwrap(), want[0]);
    // Appending to slot 0, and rewriting positions 1..4 that it holds (the caches' entries there
    // must be the first step's again, or the next step reads the failed one's).
    fails(&mut state, (0, 5, 3));
    fails(&mut state, (0, 1, 3));
    assert_eq!(lengths(&state), [5, 0], "a failed step records nothing");
    // Had a failed step been recorded (positions 1..4 or 5..8), slot 0 would not hold 5 now.
    assert_eq!(step(exe.as_ref(), &mut state, (0, 5, 2), 2, 1).unwrap(), want[1]);
    assert_eq!(lengths(&state), [7, 0]);
}
