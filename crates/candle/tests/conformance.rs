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

/// The same suite on the first GPU, when built with `--features cuda` (it must have one).
#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use accelrt_core::DeviceSpec;

    fn gpu() -> CandleBackend {
        CandleBackend::new(&DeviceSpec::Cuda(0)).expect("the cuda tests need cuda:0")
    }

    mod f32 {
        use super::*;
        accelrt_conformance::conformance_tests!(gpu(), PrepareOptions::default());
    }

    mod f16 {
        use super::*;
        accelrt_conformance::conformance_tests!(gpu(), with_compute(DType::F16));
    }

    mod bf16 {
        use super::*;
        accelrt_conformance::conformance_tests!(gpu(), with_compute(DType::BF16));
    }
}
