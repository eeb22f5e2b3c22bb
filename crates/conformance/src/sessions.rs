//! The rule every backend that holds sessions must keep: a `SessionState` runs only with the
//! executable whose `new_state` made it — not with another executable of the same backend, even of
//! the same graph (its caches would be other tensors, its slots another program's).

use crate::cases::{self, Case};
use accelrt_core::{reference, Backend, HostTensor, PrepareOptions};

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
