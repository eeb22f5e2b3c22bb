//! Graph construction, validation, serialisation and input binding.

use accelrt_core::*;

fn sym(s: &str) -> Dim {
    Dim::sym(s)
}

fn small_graph() -> Graph {
    let mut b = GraphBuilder::new("small");
    let x = b.input("x", DType::F32, Shape(vec![sym("batch"), Dim::Fixed(4)])).unwrap();
    let w = b.weight("w", DType::F32, Shape::new([3, 4])).unwrap();
    let y = b.add("proj", Op::Linear { x, weight: w, bias: None }).unwrap();
    let z = b.add("act", Op::Unary { op: UnaryOp::Gelu, x: y }).unwrap();
    b.output("out", z);
    b.build().unwrap()
}

#[test]
fn shapes_are_inferred_with_symbols() {
    let g = small_graph();
    let out = g.node(g.outputs()[0].1);
    assert_eq!(out.shape, Shape(vec![sym("batch"), Dim::Fixed(3)]));
    assert_eq!(out.dtype, DType::F32);
    assert_eq!(g.inputs().count(), 1);
    assert_eq!(g.weights().map(|(_, n)| n.name.as_str()).collect::<Vec<_>>(), ["w"]);
}

#[test]
fn build_errors_name_the_node() {
    let mut b = GraphBuilder::new("bad");
    let x = b.input("x", DType::F32, Shape(vec![sym("batch"), Dim::Fixed(4)])).unwrap();
    let w = b.weight("w", DType::F32, Shape::new([3, 5])).unwrap();
    let err = b.add("proj", Op::Linear { x, weight: w, bias: None }).unwrap_err().to_string();
    assert!(err.starts_with("node `proj`"), "{err}");
    assert!(err.contains("input features"), "{err}");

    let ids = b.input("ids", DType::F32, Shape::new([2])).unwrap();
    let table = b.weight("table", DType::F32, Shape::new([10, 4])).unwrap();
    let err = b.add("emb", Op::Embedding { table, ids }).unwrap_err().to_string();
    assert!(err.contains("node `emb`") && err.contains("must be integer"), "{err}");

    let err = b.add("x", Op::Softmax { x }).unwrap_err().to_string();
    assert!(err.contains("more than one node"), "{err}");

    let err = b.add("perm", Op::Permute { x, perm: vec![0, 0] }).unwrap_err().to_string();
    assert!(err.contains("not a permutation"), "{err}");

    let q = b.input("q", DType::F32, Shape::new([1, 6, 2, 8])).unwrap();
    let k = b.input("k", DType::F32, Shape::new([1, 4, 2, 8])).unwrap();
    let err = b
        .add("attn", Op::Attention { q, k, v: k, mask: None, causal: true, scale: 1.0, q_positions: None })
        .unwrap_err();
    assert!(err.to_string().contains("multiple of kv heads"), "{err}");
}

#[test]
fn json_round_trips_and_hash_is_stable() {
    let g = small_graph();
    let back = Graph::from_json(&g.to_json()).unwrap();
    assert_eq!(back, g);
    assert_eq!(back.content_hash(), g.content_hash());
    // The hash is part of compiled artifacts' names; it changes only with the graph.
    assert_eq!(g.content_hash(), small_graph().content_hash());
    assert_eq!(g.content_hash().len(), 64);
}

#[test]
fn hash_changes_with_any_op_parameter() {
    let g = small_graph();
    let json = g.to_json().replace("\"gelu\"", "\"silu\"");
    let other = Graph::from_json(&json).unwrap();
    assert_ne!(other.content_hash(), g.content_hash());
}

#[test]
fn tampered_json_is_rejected_with_the_node_name() {
    let g = small_graph();
    let json = g.to_json();
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let proj = &mut value["nodes"][2];
    assert_eq!(proj["name"], "proj");
    proj["shape"][1] = 7.into();
    let tampered = value.to_string();
    let err = Graph::from_json(&tampered).unwrap_err().to_string();
    assert!(err.contains("node `proj`") && err.contains("declared"), "{err}");

    let wrong_version = json.replace("\"format\": 1", "\"format\": 99");
    let err = Graph::from_json(&wrong_version).unwrap_err().to_string();
    assert!(err.contains("format 99 is not supported"), "{err}");

    assert!(Graph::from_json("{ not json").is_err());
}

#[test]
fn inputs_are_bound_and_checked() {
    let g = small_graph();
    let ok = HostTensor::f32(vec![2, 4], vec![0.0; 8]).unwrap();
    let bindings = g.bind_inputs(&[("x", &ok)]).unwrap();
    assert_eq!(bindings.get("batch"), Some(2));

    let err = g.bind_inputs(&[]).unwrap_err().to_string();
    assert_eq!(err, "missing input `x`");
    let err = g.bind_inputs(&[("x", &ok), ("y", &ok)]).unwrap_err().to_string();
    assert!(err.contains("unknown input `y`") && err.contains("inputs are: x"), "{err}");
    let wrong_dtype = HostTensor::u32(vec![2, 4], vec![0; 8]).unwrap();
    let err = g.bind_inputs(&[("x", &wrong_dtype)]).unwrap_err().to_string();
    assert!(err.contains("expected dtype f32, got u32"), "{err}");
    let wrong_size = HostTensor::f32(vec![2, 5], vec![0.0; 10]).unwrap();
    let err = g.bind_inputs(&[("x", &wrong_size)]).unwrap_err().to_string();
    assert!(err.contains("expected shape [batch, 4]"), "{err}");
}

#[test]
fn one_symbol_gets_one_size() {
    let mut b = GraphBuilder::new("two");
    let a = b.input("a", DType::F32, Shape(vec![sym("batch"), Dim::Fixed(2)])).unwrap();
    let c = b.input("c", DType::F32, Shape(vec![sym("batch"), Dim::Fixed(2)])).unwrap();
    let s = b.add("sum", Op::Binary { op: BinaryOp::Add, a, b: c }).unwrap();
    b.output("s", s);
    let g = b.build().unwrap();
    let x = HostTensor::f32(vec![3, 2], vec![0.0; 6]).unwrap();
    let y = HostTensor::f32(vec![4, 2], vec![0.0; 8]).unwrap();
    let err = g.bind_inputs(&[("a", &x), ("c", &y)]).unwrap_err().to_string();
    assert!(err.contains("`batch` is 4 here but 3"), "{err}");
}

#[test]
fn host_tensors_check_their_sizes() {
    assert!(HostTensor::f32(vec![2, 3], vec![0.0; 5]).is_err());
    let t = HostTensor::from_le_bytes(DType::F32, vec![2], &[0, 0, 128, 63, 0, 0, 0, 64]).unwrap();
    assert_eq!(t.as_f32().unwrap(), &[1.0, 2.0]);
    assert!(HostTensor::from_le_bytes(DType::F32, vec![3], &[0; 8]).is_err());
}

#[test]
fn weights_are_checked_against_the_graph() {
    let g = small_graph();
    let node = g.weights().next().unwrap().1;
    let mut w = HostWeights::new();
    w.insert("w", HostTensor::f32(vec![4, 3], vec![0.0; 12]).unwrap());
    let err = load_weight(&w, node).unwrap_err().to_string();
    assert!(err.contains("expects f32 [3, 4]") && err.contains("holds f32 [4, 3]"), "{err}");
    let err = load_weight(&HostWeights::new(), node).unwrap_err().to_string();
    assert_eq!(err, "weight `w`: not found");
}

#[test]
fn ops_over_the_last_axis_refuse_a_scalar_at_build() {
    let mut b = GraphBuilder::new("scalar");
    let x = b.input("x", DType::F32, Shape(vec![])).unwrap();
    let g = b.weight("g", DType::F32, Shape::new([1])).unwrap();
    for (name, op) in [
        ("softmax", Op::Softmax { x }),
        ("log_softmax", Op::LogSoftmax { x }),
        ("l2", Op::L2Normalize { x, eps: 1e-12 }),
        ("ln", Op::LayerNorm { x, gamma: g, beta: None, eps: 1e-5 }),
        ("rms", Op::RmsNorm { x, gamma: g, eps: 1e-5 }),
    ] {
        let err = b.add(name, op).unwrap_err().to_string();
        assert!(err.contains("last axis") && err.contains("scalar"), "{name}: {err}");
    }
}

#[test]
fn an_input_given_twice_is_refused() {
    let g = small_graph();
    let x = HostTensor::f32(vec![1, 4], vec![0.0; 4]).unwrap();
    let err = g.bind_inputs(&[("x", &x), ("x", &x)]).unwrap_err().to_string();
    assert!(err.contains("given twice"), "{err}");
}

#[test]
fn a_shape_whose_size_overflows_is_refused_not_wrapped() {
    // 2^62 · 4 bytes wraps to 0 in 64-bit arithmetic, which would match an empty buffer.
    let err = HostTensor::from_le_bytes(DType::F32, vec![1 << 62], &[]).unwrap_err().to_string();
    assert!(err.contains("more than fits"), "{err}");
    let err = HostTensor::f32(vec![1 << 32, 1 << 32], vec![]).unwrap_err().to_string();
    assert!(err.contains("more than fits"), "{err}");
}
