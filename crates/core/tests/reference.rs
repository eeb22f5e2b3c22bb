//! The oracle itself, checked against values worked out by hand.

use accelrt_core::*;

fn run1(op: impl FnOnce(&mut GraphBuilder, ValueId) -> Op, x: HostTensor) -> Vec<f64> {
    let mut b = GraphBuilder::new("t");
    let dims = Shape::new(x.shape().iter().copied());
    let xi = b.input("x", x.dtype(), dims).unwrap();
    let op = op(&mut b, xi);
    let y = b.add("y", op).unwrap();
    b.output("y", y);
    let g = b.build().unwrap();
    reference::evaluate(&g, &HostWeights::new(), &[("x", &x)]).unwrap().get("y").unwrap().to_f64_vec()
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

#[test]
fn softmax_and_gelu_by_hand() {
    let x = HostTensor::f32(vec![2], vec![0.0, 3f32.ln()]).unwrap();
    close(&run1(|_, x| Op::Softmax { x }, x), &[0.25, 0.75]);
    let x = HostTensor::f32(vec![3], vec![-1.0, 0.0, 1.0]).unwrap();
    close(&run1(|_, x| Op::Unary { op: UnaryOp::Gelu, x }, x), &[-0.158655254, 0.0, 0.841344746]);
}

#[test]
fn layer_norm_and_l2_by_hand() {
    let mut w = HostWeights::new();
    w.insert("g", HostTensor::f32(vec![2], vec![1.0, 1.0]).unwrap());
    let mut b = GraphBuilder::new("ln");
    let x = b.input("x", DType::F32, Shape::new([2])).unwrap();
    let g = b.weight("g", DType::F32, Shape::new([2])).unwrap();
    let y = b.add("ln", Op::LayerNorm { x, gamma: g, beta: None, eps: 0.0 }).unwrap();
    let n = b.add("n", Op::L2Normalize { x, eps: 1e-12 }).unwrap();
    b.output("ln", y).output("n", n);
    let graph = b.build().unwrap();
    let input = HostTensor::f32(vec![2], vec![1.0, 3.0]).unwrap();
    let out = reference::evaluate(&graph, &w, &[("x", &input)]).unwrap();
    close(&out.get("ln").unwrap().to_f64_vec(), &[-1.0, 1.0]);
    close(&out.get("n").unwrap().to_f64_vec(), &[1.0 / 10f64.sqrt(), 3.0 / 10f64.sqrt()]);
}

#[test]
fn rope_rotates_pairs_by_position() {
    // One head of size 2: the pair rotates by angle = position (frequency base^0 = 1).
    let x = HostTensor::f32(vec![1, 1, 2, 2], vec![1.0, 0.0, 1.0, 0.0]).unwrap();
    let out = run1(
        |b, x| {
            let positions = b.add("pos", Op::Positions { like: x, axis: 2 }).unwrap();
            Op::Rope { x, positions, base: 10000.0, style: RopeStyle::HalfSplit }
        },
        x,
    );
    close(&out, &[1.0, 0.0, 1f64.cos(), 1f64.sin()]);
}

#[test]
fn causal_attention_by_hand() {
    // Two positions, one head, d = 1; q·k = 0 everywhere, so visible keys get equal weight.
    let mut b = GraphBuilder::new("attn");
    let q = b.input("q", DType::F32, Shape::new([1, 1, 2, 1])).unwrap();
    let v = b.input("v", DType::F32, Shape::new([1, 1, 2, 1])).unwrap();
    let y = b.add("a", Op::Attention { q, k: q, v, mask: None, causal: true, scale: 1.0, q_positions: None }).unwrap();
    b.output("y", y);
    let g = b.build().unwrap();
    let zeros = HostTensor::f32(vec![1, 1, 2, 1], vec![0.0, 0.0]).unwrap();
    let vals = HostTensor::f32(vec![1, 1, 2, 1], vec![2.0, 4.0]).unwrap();
    let out = reference::evaluate(&g, &HostWeights::new(), &[("q", &zeros), ("v", &vals)]).unwrap();
    // Position 0 sees only v0 = 2; position 1 averages 2 and 4.
    close(&out.get("y").unwrap().to_f64_vec(), &[2.0, 3.0]);
}

#[test]
fn mean_pool_ignores_padding() {
    let mut b = GraphBuilder::new("pool");
    let x = b.input("x", DType::F32, Shape::new([1, 3, 1])).unwrap();
    let m = b.input("m", DType::U32, Shape::new([1, 3])).unwrap();
    let y = b.add("p", Op::MeanPool { x, mask: m }).unwrap();
    b.output("y", y);
    let g = b.build().unwrap();
    let xs = HostTensor::f32(vec![1, 3, 1], vec![1.0, 3.0, 100.0]).unwrap();
    let ms = HostTensor::u32(vec![1, 3], vec![1, 1, 0]).unwrap();
    let out = reference::evaluate(&g, &HostWeights::new(), &[("x", &xs), ("m", &ms)]).unwrap();
    close(&out.get("y").unwrap().to_f64_vec(), &[2.0]);
}

#[test]
fn out_of_range_ids_are_an_error_naming_the_node() {
    let mut w = HostWeights::new();
    w.insert("t", HostTensor::f32(vec![2, 1], vec![0.0, 1.0]).unwrap());
    let mut b = GraphBuilder::new("emb");
    let ids = b.input("ids", DType::U32, Shape::new([1])).unwrap();
    let t = b.weight("t", DType::F32, Shape::new([2, 1])).unwrap();
    let y = b.add("lookup", Op::Embedding { table: t, ids }).unwrap();
    b.output("y", y);
    let g = b.build().unwrap();
    let bad = HostTensor::u32(vec![1], vec![5]).unwrap();
    let err = reference::evaluate(&g, &w, &[("ids", &bad)]).unwrap_err().to_string();
    assert!(err.contains("node `lookup`") && err.contains("out of range"), "{err}");
}

#[test]
fn a_reference_session_runs_one_graph_only() {
    let graph = |name: &str| {
        let mut b = GraphBuilder::new(name);
        let x = b.input("x", DType::F32, Shape::new([2])).unwrap();
        let y = b.add("y", Op::Unary { op: UnaryOp::Exp, x }).unwrap();
        b.output("y", y);
        b.build().unwrap()
    };
    let (first, second) = (graph("first"), graph("second"));
    let x = HostTensor::f32(vec![2], vec![0.0, 1.0]).unwrap();
    let mut state = reference::new_state(0);
    let w = HostWeights::new();
    reference::evaluate_with_state(&first, &w, &[("x", &x)], &mut state).unwrap();
    reference::evaluate_with_state(&first, &w, &[("x", &x)], &mut state).unwrap();
    let err = reference::evaluate_with_state(&second, &w, &[("x", &x)], &mut state).unwrap_err().to_string();
    assert!(err.contains("ran another graph") && err.contains("second"), "{err}");
}

/// Two caches, and an op after them that fails at run time: `TakeLast` along `tail`'s axis 1,
/// empty when a step gives `tail` no columns.
fn cached_graph_with_a_late_failure() -> Graph {
    let mut b = GraphBuilder::new("late_failure");
    let heads = || Shape(vec![Dim::sym("batch"), Dim::Fixed(2), Dim::sym("seq"), Dim::Fixed(3)]);
    let (q, k, v) = (
        b.input("q", DType::F32, heads()).unwrap(),
        b.input("k", DType::F32, heads()).unwrap(),
        b.input("v", DType::F32, heads()).unwrap(),
    );
    let positions = b.input("positions", DType::U32, Shape(vec![Dim::sym("batch"), Dim::sym("seq")])).unwrap();
    let slots = b.input("slots", DType::U32, Shape(vec![Dim::sym("batch")])).unwrap();
    let tail = b.input("tail", DType::F32, Shape(vec![Dim::sym("batch"), Dim::sym("m")])).unwrap();
    let kc = b.add("k_cache", Op::KvCache { x: k, positions, slots, capacity: 8 }).unwrap();
    let vc = b.add("v_cache", Op::KvCache { x: v, positions, slots, capacity: 8 }).unwrap();
    let attn = Op::Attention { q, k: kc, v: vc, mask: None, causal: false, scale: 0.5, q_positions: Some(positions) };
    let a = b.add("attn", attn).unwrap();
    let last = b.add("tail_last", Op::TakeLast { x: tail, axis: 1 }).unwrap();
    b.output("out", a);
    b.output("last", last);
    b.build().unwrap()
}

/// One row into slot 0 from `start`, `tokens` tokens, `tail` of `m` columns; `salt` varies values.
fn cached_step(
    graph: &Graph,
    state: &mut SessionState,
    start: u32,
    tokens: usize,
    m: usize,
    salt: usize,
) -> Result<Outputs> {
    let values = |n: usize, k: usize| (0..n).map(|i| (((i + 5 * k + 11 * salt) * 7 % 19) as f32 - 9.0) / 6.0).collect();
    let shape = vec![1, 2, tokens, 3];
    let inputs = [
        ("q", HostTensor::f32(shape.clone(), values(6 * tokens, 1)).unwrap()),
        ("k", HostTensor::f32(shape.clone(), values(6 * tokens, 2)).unwrap()),
        ("v", HostTensor::f32(shape, values(6 * tokens, 3)).unwrap()),
        ("positions", HostTensor::u32(vec![1, tokens], (start..start + tokens as u32).collect()).unwrap()),
        ("slots", HostTensor::u32(vec![1], vec![0]).unwrap()),
        ("tail", HostTensor::f32(vec![1, m], values(m, 4)).unwrap()),
    ];
    let feed: Vec<(&str, &HostTensor)> = inputs.iter().map(|(n, t)| (*n, t)).collect();
    reference::evaluate_with_state(graph, &HostWeights::new(), &feed, state)
}

#[test]
fn a_reference_step_that_fails_part_way_leaves_the_session_as_it_was() {
    let graph = cached_graph_with_a_late_failure();
    let mut clean = reference::new_state(1);
    let want =
        [cached_step(&graph, &mut clean, 0, 4, 1, 0).unwrap(), cached_step(&graph, &mut clean, 4, 1, 1, 1).unwrap()];
    let mut state = reference::new_state(1);
    let fails = |state: &mut SessionState, start: u32, tokens: usize| {
        let err = cached_step(&graph, state, start, tokens, 0, 9).unwrap_err().to_string();
        assert!(err.contains("tail_last"), "{err}");
    };
    fails(&mut state, 0, 3);
    assert_eq!(state.slot_len(0), 0, "a failed step records nothing");
    // A fresh state whose only step failed is not tied to that graph.
    let other = {
        let mut b = GraphBuilder::new("other");
        let x = b.input("x", DType::F32, Shape::new([1])).unwrap();
        b.output("x", x);
        b.build().unwrap()
    };
    let one = HostTensor::f32(vec![1], vec![1.0]).unwrap();
    reference::evaluate_with_state(&other, &HostWeights::new(), &[("x", &one)], &mut reference::new_state(1)).unwrap();
    let mut fresh = reference::new_state(1);
    fails(&mut fresh, 0, 2);
    reference::evaluate_with_state(&other, &HostWeights::new(), &[("x", &one)], &mut fresh).unwrap();

    assert_eq!(cached_step(&graph, &mut state, 0, 4, 1, 0).unwrap(), want[0]);
    // Rewriting positions 1..3 that the slot holds, and appending: the caches' entries must be
    // the first step's again.
    fails(&mut state, 1, 3);
    fails(&mut state, 4, 2);
    assert_eq!(state.slot_len(0), 4, "a failed step records nothing");
    assert_eq!(cached_step(&graph, &mut state, 4, 1, 1, 1).unwrap(), want[1]);
    assert_eq!(state.slot_len(0), 5);
}
