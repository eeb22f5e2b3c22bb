//! `Op::Dropout` in the reference evaluator: the mask is the documented MurmurHash3 formula bit for
//! bit, p = 0 is the identity, and bad probabilities or seeds are refused when the graph is built.

use accelrt_core::*;

/// The dropout of `x` (f32, shape [n]) with `seed`, `p` and `stream`, by the reference evaluator.
fn dropout(x: &HostTensor, seed: u32, p: f64, stream: u32) -> Vec<f64> {
    let mut b = GraphBuilder::new("dropout");
    let xi = b.input("x", DType::F32, Shape(vec![Dim::sym("n")])).unwrap();
    let s = b.input("seed", DType::U32, Shape(vec![])).unwrap();
    let y = b.add("y", Op::Dropout { x: xi, seed: s, p, stream }).unwrap();
    b.output("y", y);
    let graph = b.build().unwrap();
    let seed = HostTensor::u32(vec![], vec![seed]).unwrap();
    let out = reference::evaluate(&graph, &HostWeights::new(), &[("x", x), ("seed", &seed)]).unwrap();
    out.get("y").unwrap().to_f64_vec()
}

fn ones(n: usize) -> HostTensor {
    HostTensor::f32(vec![n], vec![1.0; n]).unwrap()
}

/// MurmurHash3_x86_32 of le32(stream) ‖ le32(index) with `seed`, computed independently by the
/// Python `mmh3` package (a wrapper of SMHasher's MurmurHash3.cpp):
/// `mmh3.hash(struct.pack('<II', stream, index), seed, signed=False)`.
const PINNED: [(u32, u32, usize, u32); 5] = [
    (0, 0, 0, 1_669_671_676),
    (42, 0, 1, 2_987_933_509),
    (42, 3, 7, 3_131_113_838),
    (0xDEAD_BEEF, 1, 1000, 2_239_758_814),
    (123_456_789, 2, 999, 3_572_630_447),
];

#[test]
fn the_mask_is_murmur3_of_stream_and_index_bit_for_bit() {
    // An element is kept iff its hash H ≥ ⌊p·2³²⌋: with p = H/2³² it is kept (scaled by
    // 1/(1 − p)), with p = (H + 1)/2³² it is dropped. This pins every bit of H.
    for (seed, stream, index, hash) in PINNED {
        let x = ones(index + 1);
        let p = hash as f64 / 4_294_967_296.0;
        let kept = dropout(&x, seed, p, stream)[index];
        let want = (1.0 / (1.0 - p)) as f32 as f64;
        assert_eq!(kept, want, "seed {seed} stream {stream} index {index}: should be kept at threshold {hash}");
        let p_next = (hash as f64 + 1.0) / 4_294_967_296.0;
        let dropped = dropout(&x, seed, p_next, stream)[index];
        assert_eq!(dropped, 0.0, "seed {seed} stream {stream} index {index}: should be dropped above {hash}");
    }
}

#[test]
fn zero_probability_is_the_identity() {
    let x = HostTensor::f32(vec![5], vec![-1.5, 0.0, 2.25, 7.0, -0.125]).unwrap();
    assert_eq!(dropout(&x, 9, 0.0, 0), x.to_f64_vec());
}

#[test]
fn about_p_of_the_elements_are_dropped_and_the_rest_scaled() {
    let n = 20_000;
    let y = dropout(&ones(n), 2024, 0.25, 0);
    let dropped = y.iter().filter(|&&v| v == 0.0).count();
    // Fixed by the hash, so not flaky; a binomial's σ here is ≈ 61 elements.
    assert!((4_700..=5_300).contains(&dropped), "{dropped} of {n} dropped at p = 0.25");
    let scale = (1.0f64 / 0.75) as f32 as f64;
    assert!(y.iter().all(|&v| v == 0.0 || v == scale));
    // Another seed or another stream draws another mask.
    assert_ne!(y, dropout(&ones(n), 2025, 0.25, 0));
    assert_ne!(y, dropout(&ones(n), 2024, 0.25, 1));
}

#[test]
fn probabilities_outside_zero_to_one_and_bad_seeds_are_refused() {
    for p in [1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
        let mut b = GraphBuilder::new("bad");
        let x = b.input("x", DType::F32, Shape::new([3])).unwrap();
        let s = b.input("seed", DType::U32, Shape(vec![])).unwrap();
        let err = b.add("drop", Op::Dropout { x, seed: s, p, stream: 0 }).unwrap_err().to_string();
        assert!(err.contains("drop") && err.contains("[0, 1)"), "p = {p}: {err}");
    }
    for (dtype, shape) in [(DType::I64, Shape(vec![])), (DType::U32, Shape::new([1])), (DType::F32, Shape(vec![]))] {
        let mut b = GraphBuilder::new("bad_seed");
        let x = b.input("x", DType::F32, Shape::new([3])).unwrap();
        let s = b.input("seed", dtype, shape).unwrap();
        let err = b.add("drop", Op::Dropout { x, seed: s, p: 0.1, stream: 0 }).unwrap_err().to_string();
        assert!(err.contains("u32 scalar"), "{err}");
    }
    let mut b = GraphBuilder::new("int_x");
    let x = b.input("x", DType::U32, Shape::new([3])).unwrap();
    let s = b.input("seed", DType::U32, Shape(vec![])).unwrap();
    assert!(b.add("drop", Op::Dropout { x, seed: s, p: 0.1, stream: 0 }).is_err());
}

#[test]
fn a_dropout_graph_round_trips_through_json_and_a_tampered_probability_is_refused() {
    let mut b = GraphBuilder::new("dropout_json");
    let x = b.input("x", DType::F32, Shape(vec![Dim::sym("n")])).unwrap();
    let s = b.input("seed", DType::U32, Shape(vec![])).unwrap();
    let y = b.add("y", Op::Dropout { x, seed: s, p: 0.125, stream: 3 }).unwrap();
    b.output("y", y);
    let graph = b.build().unwrap();
    let json = graph.to_json();
    assert!(json.contains("\"kind\": \"dropout\""), "{json}");
    let back = Graph::from_json(&json).unwrap();
    assert_eq!(back, graph);
    assert_eq!(back.content_hash(), graph.content_hash());
    // The stream and the probability are part of what the hash covers.
    let other = Graph::from_json(&json.replace("\"stream\": 3", "\"stream\": 4")).unwrap();
    assert_ne!(other.content_hash(), graph.content_hash());
    let err = Graph::from_json(&json.replace("0.125", "1.5")).unwrap_err().to_string();
    assert!(err.contains("[0, 1)"), "{err}");
}
