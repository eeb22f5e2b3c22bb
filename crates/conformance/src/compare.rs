use crate::Case;
use accelrt_core::{reference, Backend, DType, HostTensor, Outputs, PrepareOptions};

/// Element-wise bound: |got − want| ≤ abs + rel·|want|, in f64 on the values as the outputs hold
/// them. A NaN on either side never passes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// The absolute term, in the outputs' own units.
    pub abs: f64,
    /// The relative term: a fraction of |want| (1e-4 is 0.01 %).
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
/// A case with several steps runs them in one session on each side and compares every step.
///
/// The bound is [`Tolerance::for_compute`] of `options.compute_dtype` (f32 when unset), widened
/// term by term to the case's `min_tolerance` and, in f16/bf16, its `half_tolerance`.
///
/// # Errors
///
/// A message naming what failed: `prepare`, `new_state`, `run` or the reference evaluator (with
/// the step for multi-step cases), an output missing or of another dtype or shape than the
/// reference's, or the element that is furthest outside the bound (got, want and the tolerance).
/// Outputs the reference does not produce are not checked.
pub fn run_case(backend: &dyn Backend, case: &Case, options: &PrepareOptions) -> Result<(), String> {
    let compute = options.compute_dtype.unwrap_or(DType::F32);
    let mut tol = Tolerance::for_compute(compute);
    let half = matches!(compute, DType::F16 | DType::BF16).then_some(case.half_tolerance).flatten();
    if let Some(min) = case
        .min_tolerance
        .into_iter()
        .chain(half)
        .reduce(|a, b| Tolerance { abs: a.abs.max(b.abs), rel: a.rel.max(b.rel) })
    {
        tol = Tolerance { abs: tol.abs.max(min.abs), rel: tol.rel.max(min.rel) };
    }
    let exe = backend.prepare(&case.graph, &case.weights, options).map_err(|e| format!("prepare: {e}"))?;
    if case.later_steps.is_empty() {
        let inputs: Vec<(&str, &HostTensor)> = case.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let want = reference::evaluate(&case.graph, &case.weights, &inputs).map_err(|e| format!("reference: {e}"))?;
        let got = exe.run(&inputs).map_err(|e| format!("run: {e}"))?;
        return compare(&want, &got, tol);
    }
    let mut want_state = reference::new_state(case.slots);
    let mut got_state = exe.new_state(case.slots).map_err(|e| format!("new_state: {e}"))?;
    for (i, step) in std::iter::once(&case.inputs).chain(&case.later_steps).enumerate() {
        let inputs: Vec<(&str, &HostTensor)> = step.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let want = reference::evaluate_with_state(&case.graph, &case.weights, &inputs, &mut want_state)
            .map_err(|e| format!("step {i}: reference: {e}"))?;
        let got = exe.run_with_state(&mut got_state, &inputs).map_err(|e| format!("step {i}: run: {e}"))?;
        compare(&want, &got, tol).map_err(|e| format!("step {i}: {e}"))?;
    }
    Ok(())
}

/// The first output of `want` that `got` lacks, or holds at another dtype or shape, or outside
/// `tol`.
pub(crate) fn compare(want: &Outputs, got: &Outputs, tol: Tolerance) -> Result<(), String> {
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
