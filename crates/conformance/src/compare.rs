use crate::Case;
use accelrt_core::{reference, Backend, DType, PrepareOptions};

/// Element-wise bound: |got − want| ≤ abs + rel·|want|.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

impl Tolerance {
    /// The stated tolerances of the suite, by the dtype a backend computes in.
    /// f32: 1e-4 abs + 1e-4 rel; f16: 1e-2 + 1e-2; bf16: 5e-2 + 5e-2 (8 bits of mantissa).
    pub fn for_compute(dtype: DType) -> Tolerance {
        match dtype {
            DType::F16 => Tolerance { abs: 1e-2, rel: 1e-2 },
            DType::BF16 => Tolerance { abs: 5e-2, rel: 5e-2 },
            _ => Tolerance { abs: 1e-4, rel: 1e-4 },
        }
    }
}

/// Runs `case` on `backend` and on the reference evaluator; describes the first mismatch.
pub fn run_case(backend: &dyn Backend, case: &Case, options: &PrepareOptions) -> Result<(), String> {
    let tol = Tolerance::for_compute(options.compute_dtype.unwrap_or(DType::F32));
    let inputs: Vec<(&str, &accelrt_core::HostTensor)> = case.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let want = reference::evaluate(&case.graph, &case.weights, &inputs).map_err(|e| format!("reference: {e}"))?;
    let exe = backend.prepare(&case.graph, &case.weights, options).map_err(|e| format!("prepare: {e}"))?;
    let got = exe.run(&inputs).map_err(|e| format!("run: {e}"))?;
    for (name, w) in want.iter() {
        let g = got.get(name).ok_or_else(|| format!("output `{name}` missing"))?;
        if g.shape() != w.shape() || g.dtype() != w.dtype() {
            return Err(format!(
                "output `{name}`: got {} {:?}, want {} {:?}",
                g.dtype(),
                g.shape(),
                w.dtype(),
                w.shape()
            ));
        }
        let (gv, wv) = (g.to_f64_vec(), w.to_f64_vec());
        let mut worst: Option<(usize, f64)> = None;
        for (i, (a, b)) in gv.iter().zip(&wv).enumerate() {
            let excess = (a - b).abs() - (tol.abs + tol.rel * b.abs());
            if (excess > 0.0 || excess.is_nan()) && worst.is_none_or(|(_, e)| excess > e || e.is_nan()) {
                worst = Some((i, excess));
            }
        }
        if let Some((i, _)) = worst {
            return Err(format!("output `{name}` element {i}: got {}, want {} (tolerance {:?})", gv[i], wv[i], tol));
        }
    }
    Ok(())
}

/// Like [`run_case`], panicking with the case name and the mismatch (for `#[test]`s).
pub fn assert_case(backend: &dyn Backend, case: &Case, options: &PrepareOptions) {
    if let Err(e) = run_case(backend, case, options) {
        panic!("conformance case `{}` on {} ({}): {e}", case.name, backend.name(), backend.device());
    }
}
