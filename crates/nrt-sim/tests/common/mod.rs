//! Shared by the simulator's tests: StableHLO → HLO proto with XLA's own converter (jaxlib, as
//! `accelrt compile` does it), manifests, and thin wrappers of the simulator's C functions called
//! from the rlib (each asserts success).
#![allow(dead_code)]

use accelrt_core::DType;
use accelrt_stablehlo::{Argument, ArgumentRole, Bucket, Manifest, Output, OutputRole, MANIFEST_FORMAT};
use nrt_sim::{Model, Tensor, TensorSet};
use std::ffi::{c_void, CString};
use std::path::Path;
use std::process::Command;
use std::ptr::null_mut;
use std::sync::Mutex;

const SUCCESS: i32 = 0;

/// The simulator's runtime, failure injection and live counts are process-wide: the tests of one
/// binary take turns through this lock (each test binary has its own).
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the binary's turn and initialises the runtime once.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| assert_eq!(unsafe { nrt_sim::nrt_init(1, c"".as_ptr(), c"".as_ptr()) }, SUCCESS));
    guard
}

/// The simulator's live object counts (`nrt_sim_live_objects`).
pub fn live() -> [i64; 4] {
    let mut out = [0i64; 4];
    unsafe { nrt_sim::nrt_sim_live_objects(out.as_mut_ptr()) };
    out
}

pub fn write(t: *mut Tensor, data: &[u8]) {
    assert_eq!(unsafe { nrt_sim::nrt_tensor_write(t, data.as_ptr().cast(), 0, data.len()) }, SUCCESS);
}

pub fn read(t: *mut Tensor) -> Vec<u8> {
    let mut buf = vec![0u8; unsafe { nrt_sim::nrt_tensor_get_size(t) }];
    assert_eq!(unsafe { nrt_sim::nrt_tensor_read(t, buf.as_mut_ptr() as *mut c_void, 0, buf.len()) }, SUCCESS);
    buf
}

pub fn free(mut t: *mut Tensor) {
    unsafe { nrt_sim::nrt_tensor_free(&mut t) };
}

/// A tensor set holding `tensors` under their names.
pub fn set(tensors: &[(&str, *mut Tensor)]) -> *mut TensorSet {
    let mut s = null_mut();
    assert_eq!(unsafe { nrt_sim::nrt_allocate_tensor_set(&mut s) }, SUCCESS);
    for (name, t) in tensors {
        let name = CString::new(*name).unwrap();
        assert_eq!(unsafe { nrt_sim::nrt_add_tensor_to_tensor_set(s, name.as_ptr(), *t) }, SUCCESS);
    }
    s
}

pub fn destroy(mut s: *mut TensorSet) {
    unsafe { nrt_sim::nrt_destroy_tensor_set(&mut s) };
}

/// `nrt_execute`'s status.
pub fn execute(model: *mut Model, ins: *mut TensorSet, outs: *mut TensorSet) -> i32 {
    unsafe { nrt_sim::nrt_execute(model, ins, outs) }
}

/// The serialized `HloModuleProto` of a StableHLO module, converted by
/// `tests/stablehlo_to_hlo.py` (python3 + jax). A missing Python or jax fails the test with the
/// reason; it is never skipped.
pub fn hlo_from_mlir(mlir: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("m.mlir"), dir.path().join("m.hlo.pb"));
    std::fs::write(&src, mlir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stablehlo_to_hlo.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed to convert StableHLO to an HLO proto: {e}"));
    assert!(
        out.status.success(),
        "converting StableHLO to HLO failed (python3 with jax 0.10.2 is needed, see tests/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&dst).unwrap()
}

pub fn arg(name: &str, dtype: DType, shape: &[usize], role: ArgumentRole) -> Argument {
    Argument { name: name.into(), dtype, shape: shape.to_vec(), role }
}

pub fn out(name: &str, dtype: DType, shape: &[usize], role: OutputRole) -> Output {
    Output { name: name.into(), dtype, shape: shape.to_vec(), role }
}

pub fn manifest(arguments: Vec<Argument>, outputs: Vec<Output>) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        graph: "test".into(),
        graph_hash: "0".repeat(64),
        bucket: Bucket::new([("seq", 1)]),
        compute_dtype: DType::F32,
        mlir_sha256: "0".repeat(64),
        arguments,
        outputs,
    }
}

/// x·w written into row `pos` of a [3, 2] cache (aliased to result 1); result 0 is the sum of the
/// cache's rows after the update.
pub const KV_MLIR: &str = r#"
module @kv {
  func.func public @main(%x: tensor<2xf32>, %w: tensor<2xf32>, %cache: tensor<3x2xf32> {tf.aliasing_output = 1 : i32}, %pos: tensor<i64>) -> (tensor<2xf32>, tensor<3x2xf32>) {
    %y = stablehlo.multiply %x, %w : tensor<2xf32>
    %row = stablehlo.reshape %y : (tensor<2xf32>) -> tensor<1x2xf32>
    %zero = stablehlo.constant dense<0> : tensor<i64>
    %c = stablehlo.dynamic_update_slice %cache, %row, %pos, %zero : (tensor<3x2xf32>, tensor<1x2xf32>, tensor<i64>, tensor<i64>) -> tensor<3x2xf32>
    %zf = stablehlo.constant dense<0.0> : tensor<f32>
    %s = stablehlo.reduce(%c init: %zf) applies stablehlo.add across dimensions = [0] : (tensor<3x2xf32>, tensor<f32>) -> tensor<2xf32>
    return %s, %c : tensor<2xf32>, tensor<3x2xf32>
  }
}
"#;

pub fn kv_manifest() -> Manifest {
    let state = || ArgumentRole::State { cache: "kv".into() };
    manifest(
        vec![
            arg("x", DType::F32, &[2], ArgumentRole::Input),
            arg("w", DType::F32, &[2], ArgumentRole::Weight { weight: "w".into(), source_dtype: DType::F32 }),
            arg("kv", DType::F32, &[3, 2], state()),
            arg("pos", DType::I64, &[], ArgumentRole::Input),
        ],
        vec![
            out("s", DType::F32, &[2], OutputRole::Output),
            out("kv", DType::F32, &[3, 2], OutputRole::State { cache: "kv".into() }),
        ],
    )
}

/// The KV module's HLO proto, converted once per test process.
pub fn kv_hlo() -> Vec<u8> {
    static HLO: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    HLO.get_or_init(|| hlo_from_mlir(KV_MLIR)).clone()
}

/// The KV module as an HLO NEFF for inf2.
pub fn kv_neff() -> Vec<u8> {
    nrt_sim::compile_hlo(&kv_hlo(), &kv_manifest(), "inf2", &[]).unwrap()
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}
