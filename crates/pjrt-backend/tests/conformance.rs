//! The shared conformance suite on `xla:cpu` (the XLA CPU PJRT plugin, fetched into the cache on
//! first use): every case in f32, and in the half-precision compute dtypes the plugin runs.

use accelrt_core::{DType, DeviceSpec, PrepareOptions};
use accelrt_pjrt_backend::PjrtBackend;

fn xla_cpu() -> PjrtBackend {
    PjrtBackend::new(&DeviceSpec::XlaCpu)
        .unwrap_or_else(|e| panic!("xla:cpu is needed (python3 with pip fetches the plugin): {e}"))
}

fn with_compute(dtype: DType) -> PrepareOptions {
    PrepareOptions { compute_dtype: Some(dtype) }
}

mod xla_cpu_f32 {
    use super::*;
    accelrt_conformance::conformance_tests!(xla_cpu(), PrepareOptions::default());
}

mod xla_cpu_bf16 {
    use super::*;
    accelrt_conformance::conformance_tests!(xla_cpu(), with_compute(DType::BF16));
}

mod xla_cpu_f16 {
    use super::*;
    accelrt_conformance::conformance_tests!(xla_cpu(), with_compute(DType::F16));
}
