//! What the exporter writes, checked without running it: the StableHLO ops each op lowers to, the
//! manifest's order and roles, state and quantised weights, and the typed errors.

use accelrt_conformance::cases;
use accelrt_core::{DType, Dim, GraphBuilder, HostTensor, Op, QuantType, Shape};
use accelrt_stablehlo::{
    export, weight_argument, ArgumentRole, Bucket, ExportError, ExportOptions, Manifest, Module, OutputRole,
    MANIFEST_FORMAT,
};

fn export_case(case: &accelrt_conformance::Case) -> Module {
    let inputs: Vec<(&str, &HostTensor)> = case.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut bucket = Bucket::from_bindings(&case.graph.bind_inputs(&inputs).unwrap());
    if case.slots > 0 {
        bucket = bucket.with_slots(case.slots);
    }
    export(&case.graph, &bucket, &ExportOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

fn has(module: &Module, ops: &[&str]) {
    for op in ops {
        assert!(module.mlir.contains(&format!("\"{op}\"")), "no {op} in:\n{}", module.mlir);
    }
}

#[test]
fn each_op_family_lowers_to_its_stablehlo_ops() {
    type Make = fn() -> accelrt_conformance::Case;
    let expect: &[(Make, &[&str])] = &[
        (cases::embedding, &["stablehlo.gather", "stablehlo.convert"]),
        (cases::matmul_batched_broadcast, &["stablehlo.broadcast_in_dim", "stablehlo.dot_general"]),
        (cases::matmul_transposed, &["stablehlo.dot_general"]),
        (cases::linear, &["stablehlo.dot_general", "stablehlo.add"]),
        (cases::binary_broadcast, &["stablehlo.add", "stablehlo.subtract", "stablehlo.multiply", "stablehlo.divide"]),
        (
            cases::unary,
            &["chlo.erf", "stablehlo.tanh", "stablehlo.logistic", "stablehlo.maximum", "stablehlo.exponential"],
        ),
        (cases::layer_norm, &["stablehlo.reduce", "stablehlo.rsqrt"]),
        (cases::rms_norm, &["stablehlo.reduce", "stablehlo.rsqrt"]),
        (cases::softmax, &["stablehlo.reduce", "stablehlo.exponential", "stablehlo.divide"]),
        (cases::attention_padding_mask, &["stablehlo.dot_general", "stablehlo.compare", "stablehlo.select"]),
        (cases::attention_causal, &["stablehlo.iota", "stablehlo.compare", "stablehlo.select"]),
        (cases::rope_half_split, &["stablehlo.sine", "stablehlo.cosine", "stablehlo.concatenate"]),
        (cases::rope_interleaved_per_row, &["stablehlo.sine", "stablehlo.reshape", "stablehlo.concatenate"]),
        (cases::reshape_permute, &["stablehlo.reshape", "stablehlo.transpose"]),
        (cases::slice_concat, &["stablehlo.slice", "stablehlo.concatenate"]),
        (cases::mean_pool, &["stablehlo.reduce", "stablehlo.convert"]),
        (cases::l2_normalize, &["stablehlo.sqrt", "stablehlo.maximum"]),
        (cases::cast, &["stablehlo.convert"]),
        (cases::positions, &["stablehlo.iota"]),
        (cases::take_last, &["stablehlo.slice"]),
        (cases::kv_cache_session, &["stablehlo.dynamic_update_slice", "stablehlo.dynamic_slice"]),
        (
            cases::dropout,
            &["stablehlo.iota", "stablehlo.xor", "stablehlo.shift_right_logical", "stablehlo.or", "stablehlo.select"],
        ),
    ];
    for (make, ops) in expect {
        let module = export_case(&make());
        assert!(module.mlir.contains("func.func public @main("), "{}", module.mlir);
        has(&module, ops);
    }
}

#[test]
fn every_conformance_graph_exports() {
    for case in cases::all() {
        let module = export_case(&case);
        // Comments name every node, so a compiler's complaint can be traced back to the graph.
        for node in case.graph.nodes().iter().filter(|n| !matches!(n.op, Op::Input { .. } | Op::Weight { .. })) {
            assert!(module.mlir.contains(&format!("`{}`", node.name)), "{}: node {} not named", case.name, node.name);
        }
    }
}

#[test]
fn manifest_lists_inputs_weights_then_state_and_round_trips() {
    let case = cases::kv_cache_session();
    let module = export_case(&case);
    let m = &module.manifest;
    let names: Vec<&str> = m.arguments.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["q", "k", "v", "positions", "slots", "k_cache", "v_cache"]);
    assert!(matches!(m.arguments[0].role, ArgumentRole::Input));
    assert_eq!(m.arguments[5].role, ArgumentRole::State { cache: "k_cache".into() });
    // [slots, kv heads, capacity, head size]
    assert_eq!(m.arguments[5].shape, [2, 2, 24, 8]);
    assert_eq!(m.arguments[3].dtype, DType::U32);
    let outs: Vec<(&str, &OutputRole)> = m.outputs.iter().map(|o| (o.name.as_str(), &o.role)).collect();
    assert_eq!(outs[0], ("out", &OutputRole::Output));
    assert_eq!(outs[1], ("k_cache", &OutputRole::State { cache: "k_cache".into() }));
    assert_eq!(outs[2], ("v_cache", &OutputRole::State { cache: "v_cache".into() }));
    assert_eq!(m.state_pairs(), [(5, 1), (6, 2)]);
    assert_eq!(m.bucket.to_string(), "batch=1,seq=5,slots=2");
    assert_eq!(m.graph_hash, case.graph.content_hash());
    assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), *m);
    // A manifest of another format is refused as such (the format used not to be checked), also
    // when the rest of its layout differs.
    let other = m.to_json().replacen(&format!("\"format\": {MANIFEST_FORMAT}"), "\"format\": 99", 1);
    assert_ne!(other, m.to_json());
    let err = Manifest::from_json(&other).unwrap_err().to_string();
    assert!(err.contains("manifest format 99") && err.contains(&format!("format {MANIFEST_FORMAT}")), "{err}");
    let err = Manifest::from_json(r#"{"format": 2, "programs": []}"#).unwrap_err().to_string();
    assert!(err.contains("manifest format 2"), "{err}");
    // The function's signature has the manifest's arguments, in order, and each cache is aliased
    // to its state output (so a runtime that donates it gets the update in place).
    let sig = module.mlir.lines().find(|l| l.contains("func.func")).unwrap();
    assert!(
        sig.contains(
            "%arg5: tensor<2x2x24x8xf32> {tf.aliasing_output = 1 : i32}, \
             %arg6: tensor<2x2x24x8xf32> {tf.aliasing_output = 2 : i32})"
        ),
        "{sig}"
    );
    assert_eq!(sig.matches("tf.aliasing_output").count(), 2, "only caches are aliased: {sig}");
}

#[test]
fn quantised_weights_are_f32_arguments_that_remember_their_source() {
    let case = cases::quantised_linear();
    let module = export_case(&case);
    let w = module.manifest.arguments.iter().find(|a| a.name == "w_q4_1").unwrap();
    assert_eq!(w.dtype, DType::F32);
    assert_eq!(w.role, ArgumentRole::Weight { weight: "w_q4_1".into(), source_dtype: DType::Quant(QuantType::Q4_1) });
    let t = weight_argument(w, &case.weights).unwrap();
    assert_eq!((t.dtype(), t.shape()), (DType::F32, &[40usize, 64][..]));
    let (_, _, _, bytes) = case.weights.quantised.iter().find(|(n, ..)| n == "w_q4_1").unwrap();
    assert_eq!(t.as_f32().unwrap(), accelrt_core::quant::dequantize(QuantType::Q4_1, bytes).unwrap());
    // A plain weight passes through.
    let bias = module.manifest.arguments.iter().find(|a| a.name == "bias").unwrap();
    assert_eq!(&weight_argument(bias, &case.weights).unwrap(), case.weights.plain.get_tensor("bias").unwrap());
    // Not a weight, or missing from the source: typed errors naming it.
    let x = &module.manifest.arguments[0];
    assert!(matches!(weight_argument(x, &case.weights), Err(ExportError::Weight { .. })));
    let err = weight_argument(w, &accelrt_core::HostWeights::new()).unwrap_err();
    assert!(err.to_string().contains("w_q4_1"), "{err}");
}

#[test]
fn bf16_compute_takes_bf16_weights_and_keeps_edge_types() {
    let case = cases::linear();
    let inputs: Vec<(&str, &HostTensor)> = case.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let bucket = Bucket::from_bindings(&case.graph.bind_inputs(&inputs).unwrap());
    let module = export(&case.graph, &bucket, &ExportOptions { compute_dtype: Some(DType::BF16) }).unwrap();
    let m = &module.manifest;
    assert_eq!(m.compute_dtype, DType::BF16);
    assert_eq!(m.arguments[0].dtype, DType::F32, "inputs keep the graph's dtype");
    assert_eq!(m.arguments[1].dtype, DType::BF16);
    assert_eq!(m.arguments[1].role, ArgumentRole::Weight { weight: "w".into(), source_dtype: DType::F32 });
    assert_eq!(m.outputs[0].dtype, DType::F32, "outputs keep the graph's dtype");
    assert!(module.mlir.contains("tensor<2x5x48xbf16>"));
    let w = weight_argument(&m.arguments[1], &case.weights).unwrap();
    assert_eq!(w.dtype(), DType::BF16);
    assert!(matches!(
        export(&case.graph, &bucket, &ExportOptions { compute_dtype: Some(DType::U32) }),
        Err(ExportError::ComputeDType(DType::U32))
    ));
}

#[test]
fn bucket_errors_are_typed() {
    let case = cases::linear();
    let unbound = export(&case.graph, &Bucket::new([("batch", 2)]), &ExportOptions::default()).unwrap_err();
    assert!(
        matches!(&unbound, ExportError::UnboundSymbol { node, symbol } if node == "x" && symbol == "seq"),
        "{unbound}"
    );
    let typo = export(&case.graph, &"batch=2,seq=3,sq=4".parse().unwrap(), &ExportOptions::default()).unwrap_err();
    assert!(typo.to_string().contains("`sq`"), "{typo}");
    let zero = export(&case.graph, &"batch=0,seq=3".parse().unwrap(), &ExportOptions::default()).unwrap_err();
    assert!(matches!(zero, ExportError::BadBucket { .. }), "{zero}");

    let cache = cases::kv_cache_session();
    let no_slots = export(&cache.graph, &"batch=1,seq=1".parse().unwrap(), &ExportOptions::default()).unwrap_err();
    assert!(matches!(&no_slots, ExportError::MissingSlots { node } if node == "k_cache"), "{no_slots}");
    let kv = export(&cache.graph, &"batch=1,seq=1,kv_len=5,slots=1".parse().unwrap(), &ExportOptions::default());
    assert!(matches!(kv, Err(ExportError::BucketConflict { needed: 24, .. })), "{kv:?}");
    let same = "batch=1,seq=1,kv_len=24,slots=1".parse().unwrap();
    assert!(export(&cache.graph, &same, &ExportOptions::default()).is_ok(), "kv_len may be given as the capacity");
    // More new entries than the capacity: refused by the graph's own checks.
    let long = export(&cache.graph, &"batch=1,seq=25,slots=1".parse().unwrap(), &ExportOptions::default());
    assert!(long.is_err());
}

#[test]
fn causal_attention_over_a_cache_is_refused_by_name() {
    let mut b = GraphBuilder::new("causal_cache");
    let heads = || Shape(vec![Dim::sym("batch"), Dim::Fixed(2), Dim::sym("seq"), Dim::Fixed(4)]);
    let q = b.input("q", DType::F32, heads()).unwrap();
    let k = b.input("k", DType::F32, heads()).unwrap();
    let positions = b.input("positions", DType::U32, Shape(vec![Dim::sym("batch"), Dim::sym("seq")])).unwrap();
    let slots = b.input("slots", DType::U32, Shape(vec![Dim::sym("batch")])).unwrap();
    let kc = b.add("k_cache", Op::KvCache { x: k, positions, slots, capacity: 8 }).unwrap();
    let a = b
        .add("attn", Op::Attention { q, k: kc, v: kc, mask: None, causal: true, scale: 0.5, q_positions: None })
        .unwrap();
    b.output("out", a);
    let graph = b.build().unwrap();
    let err = export(&graph, &"batch=1,seq=2,slots=1".parse().unwrap(), &ExportOptions::default()).unwrap_err();
    assert!(matches!(&err, ExportError::Unsupported { node, kind: "attention", .. } if node == "attn"), "{err}");
    assert!(err.to_string().contains("q_positions"), "{err}");
}

#[test]
fn identical_inputs_give_identical_modules() {
    let a = export_case(&cases::encoder_block());
    let b = export_case(&cases::encoder_block());
    assert_eq!(a, b);
    assert_eq!(a.manifest.mlir_sha256.len(), 64);
}

#[test]
fn variables_are_arguments_aliased_to_their_next_values() {
    // A running sum: v ← v + x each step. The variable enters at its exact type and leaves as the
    // result its argument is aliased to, after the graph's outputs.
    let mut g = GraphBuilder::new("running_sum");
    let x = g.input("x", DType::F32, Shape::new([3])).unwrap();
    let v = g
        .add(
            "total",
            Op::Variable { dtype: DType::F32, shape: Shape::new([3]), init: accelrt_core::VariableInit::Zeros },
        )
        .unwrap();
    let sum = g.add("sum", Op::Binary { op: accelrt_core::BinaryOp::Add, a: v, b: x }).unwrap();
    let assigned = g.add("assign_total", Op::Assign { var: v, value: sum }).unwrap();
    g.output("sum", assigned);
    let graph = g.build().unwrap();
    let bucket =
        Bucket::from_bindings(&graph.bind_inputs(&[("x", &HostTensor::f32(vec![3], vec![0.0; 3]).unwrap())]).unwrap());
    let module = export(&graph, &bucket, &ExportOptions::default()).unwrap();
    let m = &module.manifest;
    assert_eq!(
        m.arguments[1].role,
        ArgumentRole::Variable { variable: "total".into(), init: accelrt_core::VariableInit::Zeros }
    );
    let outs: Vec<(&str, &OutputRole)> = m.outputs.iter().map(|o| (o.name.as_str(), &o.role)).collect();
    assert_eq!(outs, [("sum", &OutputRole::Output), ("total", &OutputRole::Variable { variable: "total".into() })]);
    assert_eq!(m.state_pairs(), [(1, 1)]);
    let sig = module.mlir.lines().find(|l| l.contains("func.func")).unwrap();
    assert!(sig.contains("%arg1: tensor<3xf32> {tf.aliasing_output = 1 : i32}"), "{sig}");
    assert_eq!(sig.matches("tf.aliasing_output").count(), 1, "{sig}");
}
