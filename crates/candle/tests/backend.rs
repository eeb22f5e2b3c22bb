//! candle-specific behaviour beyond the shared suite: input errors and device choice.

use accelrt_candle::CandleBackend;
use accelrt_core::*;

fn embedding_graph() -> (Graph, HostWeights) {
    let mut b = GraphBuilder::new("emb");
    let ids = b.input("ids", DType::U32, Shape(vec![Dim::sym("n")])).unwrap();
    let t = b.weight("t", DType::F32, Shape::new([4, 2])).unwrap();
    let y = b.add("lookup", Op::Embedding { table: t, ids }).unwrap();
    b.output("y", y);
    let mut w = HostWeights::new();
    w.insert("t", HostTensor::f32(vec![4, 2], (0..8).map(|x| x as f32).collect()).unwrap());
    (b.build().unwrap(), w)
}

#[test]
fn out_of_range_ids_are_an_input_error() {
    let (g, w) = embedding_graph();
    let exe = CandleBackend::cpu().prepare(&g, &w, &PrepareOptions::default()).unwrap();
    let ok = HostTensor::u32(vec![2], vec![3, 0]).unwrap();
    let out = exe.run(&[("ids", &ok)]).unwrap();
    assert_eq!(out.get("y").unwrap().as_f32().unwrap(), &[6.0, 7.0, 0.0, 1.0]);
    let bad = HostTensor::u32(vec![2], vec![1, 4]).unwrap();
    let err = exe.run(&[("ids", &bad)]).unwrap_err().to_string();
    assert!(err.contains("input `ids`") && err.contains("id 4 is out of range"), "{err}");
}

#[test]
fn weights_that_do_not_match_the_graph_are_refused_at_prepare() {
    let (g, _) = embedding_graph();
    let mut w = HostWeights::new();
    w.insert("t", HostTensor::f32(vec![4, 3], vec![0.0; 12]).unwrap());
    let err = CandleBackend::cpu().prepare(&g, &w, &PrepareOptions::default()).err().unwrap().to_string();
    assert!(err.contains("weight `t`"), "{err}");
}

#[test]
fn integer_compute_dtype_is_refused() {
    let (g, w) = embedding_graph();
    let options = PrepareOptions { compute_dtype: Some(DType::U32) };
    let err = CandleBackend::cpu().prepare(&g, &w, &options).err().unwrap().to_string();
    assert!(err.contains("compute dtype u32"), "{err}");
}

#[test]
fn gpus_and_neuron_cores_are_not_faked_on_the_cpu() {
    for spec in ["cuda:0", "neuron:0"] {
        let err = CandleBackend::new(&spec.parse().unwrap()).err().unwrap();
        assert!(matches!(err, Error::Unavailable { .. }), "{spec}: {err}");
    }
    assert_eq!(CandleBackend::new(&DeviceSpec::Cpu).unwrap().device(), &DeviceSpec::Cpu);
}

#[test]
fn runtime_shape_errors_name_the_node() {
    // Two symbols that the graph cannot relate must still agree at run time.
    let mut b = GraphBuilder::new("mm");
    let a = b.input("a", DType::F32, Shape(vec![Dim::sym("m"), Dim::sym("k")])).unwrap();
    let c = b.input("c", DType::F32, Shape(vec![Dim::sym("k2"), Dim::sym("n")])).unwrap();
    let y = b.add("product", Op::MatMul { a, b: c, transpose_b: false }).unwrap();
    b.output("y", y);
    let g = b.build().unwrap();
    let exe = CandleBackend::cpu().prepare(&g, &HostWeights::new(), &PrepareOptions::default()).unwrap();
    let x = HostTensor::f32(vec![2, 3], vec![0.0; 6]).unwrap();
    let z = HostTensor::f32(vec![4, 2], vec![0.0; 8]).unwrap();
    let err = exe.run(&[("a", &x), ("c", &z)]).unwrap_err().to_string();
    assert!(err.contains("node `product`"), "{err}");
}
