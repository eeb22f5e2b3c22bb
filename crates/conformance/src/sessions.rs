//! The rules every backend that holds sessions must keep: a `SessionState` runs only with the
//! executable whose `new_state` made it — not with another executable of the same backend, even of
//! the same graph (its caches would be other tensors, its slots another program's); and a step
//! that is refused leaves the session as it was (`SessionState::record_lengths`).

use crate::cases::{self, Case};
use crate::compare::compare;
use crate::Tolerance;
use accelrt_core::{reference, Backend, DType, HostTensor, PrepareOptions, SessionState};

/// The cases [`check_session_owner`] runs (a backend that compiles ahead of time prepares their
/// first steps' buckets first): a session with KV caches, and a graph without state.
pub fn session_owner_cases() -> Vec<Case> {
    vec![cases::kv_cache_session(), cases::linear()]
}

/// For each of [`session_owner_cases`]: prepares the graph twice on `backend`; a state made by
/// the first executable is refused by the second with an error naming its maker, and records
/// nothing (the first then runs its first step with it and matches the reference evaluator).
pub fn check_session_owner(backend: &dyn Backend, options: &PrepareOptions) -> Result<(), String> {
    for case in session_owner_cases() {
        let name = case.name;
        let prepare =
            || backend.prepare(&case.graph, &case.weights, options).map_err(|e| format!("{name}: prepare: {e}"));
        let (maker, other) = (prepare()?, prepare()?);
        let mut state = maker.new_state(case.slots).map_err(|e| format!("{name}: new_state: {e}"))?;
        let inputs: Vec<(&str, &HostTensor)> = case.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        match other.run_with_state(&mut state, &inputs) {
            Ok(_) => return Err(format!("{name}: another executable ran with a state it did not make")),
            Err(e) if e.to_string().contains("made by executable #") => {}
            Err(e) => return Err(format!("{name}: refused, but not for the state's owner: {e}")),
        }
        if (0..case.slots).any(|slot| state.slot_len(slot) != 0) {
            return Err(format!("{name}: the refused step was recorded in the state"));
        }
        let got = maker.run_with_state(&mut state, &inputs).map_err(|e| format!("{name}: its maker: {e}"))?;
        let want = reference::evaluate(&case.graph, &case.weights, &inputs).map_err(|e| format!("{name}: {e}"))?;
        for (out, w) in want.iter() {
            let g = got.get(out).ok_or_else(|| format!("{name}: output `{out}` missing"))?;
            let worst = g.to_f64_vec().iter().zip(w.to_f64_vec()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            if g.shape() != w.shape() || worst > 1e-3 {
                return Err(format!("{name}: output `{out}` differs from the reference by {worst}"));
            }
        }
    }
    Ok(())
}

/// The cases [`check_refused_steps`] runs (a backend that compiles ahead of time prepares the
/// buckets of every step of each first: the refused steps have the sizes of the valid ones): a
/// session of two slots whose value cache takes its positions from an input of its own.
pub fn refused_step_cases() -> Vec<Case> {
    vec![cases::kv_cache_own_positions()]
}

/// For each of [`refused_step_cases`]: runs its steps in one session of `backend`, and before each
/// one a step the value cache refuses after the key cache accepted its write — in a fresh session,
/// into a slot the session has not written yet, with a row past what its slot holds, rewriting
/// positions a slot holds, and appending. Each refused step must fail naming `v_cache`, leave
/// every slot's length as it was, and leave the caches as they were: every valid step matches the
/// reference evaluator's session without the refused ones (within [`Tolerance::for_compute`] of
/// `options.compute_dtype`).
pub fn check_refused_steps(backend: &dyn Backend, options: &PrepareOptions) -> Result<(), String> {
    let tol = Tolerance::for_compute(options.compute_dtype.unwrap_or(DType::F32));
    for case in refused_step_cases() {
        let name = case.name;
        let exe = backend.prepare(&case.graph, &case.weights, options).map_err(|e| format!("{name}: prepare: {e}"))?;
        let mut state = exe.new_state(case.slots).map_err(|e| format!("{name}: new_state: {e}"))?;
        let mut oracle = reference::new_state(case.slots);
        let lengths = |state: &SessionState| (0..case.slots).map(|s| state.slot_len(s)).collect::<Vec<_>>();
        let steps = std::iter::once(&case.inputs).chain(&case.later_steps);
        for (i, (step, refused)) in steps.zip(refused_steps()).enumerate() {
            let bad = replaced(step, &refused);
            let held = lengths(&state);
            let feed: Vec<(&str, &HostTensor)> = bad.iter().map(|(n, t)| (n.as_str(), t)).collect();
            match exe.run_with_state(&mut state, &feed) {
                Ok(_) => return Err(format!("{name}: refused step before step {i} ran")),
                Err(e) if e.to_string().contains("v_cache") => {}
                Err(e) => {
                    return Err(format!("{name}: refused step before step {i}: refused, but not by v_cache: {e}"))
                }
            }
            if lengths(&state) != held {
                return Err(format!(
                    "{name}: refused step before step {i} changed the slot lengths from {held:?} to {:?}",
                    lengths(&state)
                ));
            }
            let feed: Vec<(&str, &HostTensor)> = step.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let want = reference::evaluate_with_state(&case.graph, &case.weights, &feed, &mut oracle)
                .map_err(|e| format!("{name}: step {i}: reference: {e}"))?;
            let got = exe
                .run_with_state(&mut state, &feed)
                .map_err(|e| format!("{name}: step {i} after a refused one: {e}"))?;
            compare(&want, &got, tol).map_err(|e| format!("{name}: step {i} after a refused one: {e}"))?;
            if lengths(&state) != lengths(&oracle) {
                return Err(format!(
                    "{name}: step {i}: slot lengths {:?}, want {:?}",
                    lengths(&state),
                    lengths(&oracle)
                ));
            }
        }
    }
    Ok(())
}

/// Per valid step of `kv_cache_own_positions` (slots held before it: [0, 0], [4, 0], [4, 3],
/// [5, 4], [7, 4]), the key and value positions of a step of its sizes that the value cache
/// refuses.
fn refused_steps() -> Vec<[(&'static str, Vec<u32>); 2]> {
    vec![
        // A fresh session: v's positions skip 3.
        [("positions", vec![0, 1, 2, 3]), ("v_positions", vec![0, 1, 2, 4])],
        // Slot 1's first write.
        [("positions", vec![0, 1, 2]), ("v_positions", vec![0, 2, 3])],
        // Two rows; the second's v write starts past what slot 1 holds.
        [("positions", vec![4, 3]), ("v_positions", vec![4, 5])],
        // Rewrites positions 2 and 3, which slot 0 holds (and step 3 reads).
        [("positions", vec![2, 3]), ("v_positions", vec![2, 4])],
        // Appends; v's write starts past what slot 0 holds.
        [("positions", vec![7, 8]), ("v_positions", vec![15, 16])],
    ]
}

/// `step` with the inputs named in `values` replaced (same shapes, new values).
fn replaced(step: &[(String, HostTensor)], values: &[(&str, Vec<u32>)]) -> Vec<(String, HostTensor)> {
    step.iter()
        .map(|(n, t)| match values.iter().find(|(name, _)| name == n) {
            Some((_, v)) => (n.clone(), HostTensor::u32(t.shape().to_vec(), v.clone()).expect("the step's shape")),
            None => (n.clone(), t.clone()),
        })
        .collect()
}
