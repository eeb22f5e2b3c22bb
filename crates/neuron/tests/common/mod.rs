//! Shared set-up: every test process uses the simulator (`accelrt-nrt-sim`, a TEST DOUBLE of
//! libnrt built in this workspace) through the real FFI path.
#![allow(dead_code)]

use accelrt_core::{DType, Dim, Graph, GraphBuilder, HostTensor, HostWeights, Op, Shape};
use std::path::PathBuf;

/// The simulator library next to the test binary (cargo builds it as a dev-dependency).
pub fn simulator_library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let candidate = dir.join(format!("{}nrt_sim{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX));
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("the simulator library (libnrt_sim) was not built next to {}", exe.display());
}

pub fn use_simulator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var(accelrt_neuron::LIBRARY_ENV, simulator_library()));
}

/// Test hook of the simulator: the next `times` calls of `call` return `status`.
pub fn inject(call: &str, status: i32, times: u32) {
    use std::ffi::{c_char, c_int, CString};
    let lib = unsafe { libloading::Library::new(simulator_library()) }.unwrap();
    let f: unsafe extern "C" fn(*const c_char, c_int, u32) -> c_int =
        unsafe { *lib.get(b"nrt_sim_inject_failure").unwrap() };
    let c = CString::new(call).unwrap();
    assert_eq!(unsafe { f(c.as_ptr(), status, times) }, 0);
    std::mem::forget(lib); // the runtime keeps the same library loaded
}

/// "Compiles" `graph` at `bucket` the way `accelrt compile --target inf2` does — export, XLA's
/// StableHLO → HLO conversion, the compiler — with the test double standing in for `neuronx-cc`
/// (`nrt_sim::compile_hlo`, which reports version `nrt_sim::COMPILER_VERSION`), and installs the
/// NEFF and its manifest into `cache`. Returns the NEFF's path.
pub fn compile_bucket(cache: &std::path::Path, graph: &accelrt_core::Graph, bucket: &str, flags: &[String]) -> PathBuf {
    let version = accelrt_neuron::CompilerVersion::find(nrt_sim::COMPILER_VERSION).unwrap();
    compile_with(cache, graph, bucket, flags, &version)
}

/// [`compile_bucket`] as if by compiler `version`.
pub fn compile_with(
    cache: &std::path::Path,
    graph: &accelrt_core::Graph,
    bucket: &str,
    flags: &[String],
    version: &accelrt_neuron::CompilerVersion,
) -> PathBuf {
    use accelrt_stablehlo::{export, hlo_proto, ExportOptions};
    let module = export(graph, &bucket.parse().unwrap(), &ExportOptions::default()).unwrap();
    let hlo = hlo_proto(&module.mlir).unwrap_or_else(|e| panic!("HLO of bucket {bucket}: {e}"));
    let neff = nrt_sim::compile_hlo(&hlo, &module.manifest, "inf2", flags).unwrap();
    accelrt_neuron::NeffKey::new(&module.manifest, "inf2", version, flags)
        .install(cache, &neff, &module.manifest)
        .unwrap()
}

/// Width of [`last_position_decoder`]'s `x`.
pub const HIDDEN: usize = 8;

/// A decoder-like session graph: x → k, v projections → caches (capacity 16) → attention by
/// position → the last position. Its `seq` may be chunked (`chunkable_symbol`), not padded.
pub fn last_position_decoder() -> (Graph, HostWeights) {
    let (heads, d, capacity) = (2, HIDDEN / 2, 16);
    let mut b = GraphBuilder::new("last_position_decoder");
    let x = b.input("x", DType::F32, Shape(vec![Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(HIDDEN)])).unwrap();
    let positions = b.input("positions", DType::U32, Shape(vec![Dim::sym("batch"), Dim::sym("seq")])).unwrap();
    let slots = b.input("slots", DType::U32, Shape(vec![Dim::sym("batch")])).unwrap();
    let mut weights = HostWeights::new();
    let mut heads_of = |b: &mut GraphBuilder, name: &str, k: f32| {
        let w = b.weight(name, DType::F32, Shape::new([HIDDEN, HIDDEN])).unwrap();
        weights.insert(
            name,
            HostTensor::f32(
                vec![HIDDEN, HIDDEN],
                (0..HIDDEN * HIDDEN).map(|i| ((i * 7 % 13) as f32 - 6.0) * k).collect(),
            )
            .unwrap(),
        );
        let y = b.add(format!("{name}_y"), Op::Linear { x, weight: w, bias: None }).unwrap();
        let r = b
            .add(
                format!("{name}_r"),
                Op::Reshape {
                    x: y,
                    dims: vec![
                        accelrt_core::ReshapeDim::Keep(0),
                        accelrt_core::ReshapeDim::Keep(1),
                        accelrt_core::ReshapeDim::Fixed(heads),
                        accelrt_core::ReshapeDim::Fixed(d),
                    ],
                },
            )
            .unwrap();
        b.add(format!("{name}_t"), Op::Permute { x: r, perm: vec![0, 2, 1, 3] }).unwrap()
    };
    let q = heads_of(&mut b, "wq", 0.05);
    let k = heads_of(&mut b, "wk", 0.04);
    let v = heads_of(&mut b, "wv", 0.03);
    let kc = b.add("k_cache", Op::KvCache { x: k, positions, slots, capacity }).unwrap();
    let vc = b.add("v_cache", Op::KvCache { x: v, positions, slots, capacity }).unwrap();
    let a = b
        .add(
            "attn",
            Op::Attention { q, k: kc, v: vc, mask: None, causal: false, scale: 0.5, q_positions: Some(positions) },
        )
        .unwrap();
    let last = b.add("last_pos", Op::TakeLast { x: a, axis: 2 }).unwrap();
    b.output("last", last);
    (b.build().unwrap(), weights)
}

/// The decoder's inputs for one step: per row (slot, first position, tokens), every row with
/// the same number of tokens; `salt` varies `x`.
pub fn decoder_step(rows: &[(u32, u32, usize)], salt: usize) -> Vec<(String, HostTensor)> {
    let (batch, n) = (rows.len(), rows[0].2);
    let x = (0..batch * n * HIDDEN).map(|i| (((i + salt * 31) * 17 % 29) as f32 - 14.0) / 10.0).collect();
    let positions = rows.iter().flat_map(|&(_, start, n)| start..start + n as u32).collect();
    vec![
        ("x".into(), HostTensor::f32(vec![batch, n, HIDDEN], x).unwrap()),
        ("positions".into(), HostTensor::u32(vec![batch, n], positions).unwrap()),
        ("slots".into(), HostTensor::u32(vec![batch], rows.iter().map(|r| r.0).collect()).unwrap()),
    ]
}
