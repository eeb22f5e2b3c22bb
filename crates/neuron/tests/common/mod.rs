//! Shared set-up: every test process uses the simulator (`accelrt-nrt-sim`, a TEST DOUBLE of
//! libnrt built in this workspace) through the real FFI path.
#![allow(dead_code)]

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
