//! The shared conformance suite on candle's CPU device, in f32 and in the half-precision compute
//! dtypes (with the suite's looser tolerances for those).

use accelrt_candle::CandleBackend;
use accelrt_core::{DType, PrepareOptions};

fn with_compute(dtype: DType) -> PrepareOptions {
    PrepareOptions { compute_dtype: Some(dtype) }
}

mod cpu_f32 {
    use super::*;
    accelrt_conformance::conformance_tests!(CandleBackend::cpu(), PrepareOptions::default());
}

mod cpu_bf16 {
    use super::*;
    accelrt_conformance::conformance_tests!(CandleBackend::cpu(), with_compute(DType::BF16));
}

mod cpu_f16 {
    use super::*;
    accelrt_conformance::conformance_tests!(CandleBackend::cpu(), with_compute(DType::F16));
}
