//! An xla:cpu session step that is refused — by a cache's write rules, or because its program
//! cannot be had — leaves the session as it was: the same slot lengths, and later steps give what
//! they give without it.

use accelrt_conformance::cases;
use accelrt_core::{Backend, DeviceSpec, HostTensor, Outputs, PrepareOptions, SessionState};
use accelrt_pjrt_backend::{BucketPolicy, PjrtBackend, PjrtOptions};

fn xla_cpu(cache_dir: Option<std::path::PathBuf>) -> PjrtBackend {
    let options = PjrtOptions { buckets: BucketPolicy::default(), cache_dir };
    PjrtBackend::with_options(&DeviceSpec::XlaCpu, options)
        .unwrap_or_else(|e| panic!("xla:cpu is needed (python3 with pip fetches the plugin): {e}"))
}

#[test]
fn a_refused_step_leaves_the_session_as_it_was() {
    accelrt_conformance::check_refused_steps(&xla_cpu(None), &PrepareOptions::default()).unwrap();
}

fn run(exe: &dyn accelrt_core::Executable, state: &mut SessionState, step: &[(String, HostTensor)]) -> Outputs {
    let feed: Vec<(&str, &HostTensor)> = step.iter().map(|(n, t)| (n.as_str(), t)).collect();
    exe.run_with_state(state, &feed).unwrap()
}

fn lengths(state: &SessionState) -> [usize; 2] {
    [state.slot_len(0), state.slot_len(1)]
}

/// The program of a step's bucket is looked up after the cache writes are checked; when it cannot
/// be had (here: its file in the compile cache is altered, so loading it is refused), the step
/// fails and its writes are not recorded.
#[test]
fn a_step_whose_program_cannot_be_loaded_leaves_the_session_as_it_was() {
    let case = cases::kv_cache_session();
    let steps: Vec<&Vec<(String, HostTensor)>> = std::iter::once(&case.inputs).chain(&case.later_steps).collect();
    let cache = tempfile::tempdir().unwrap();
    let backend = xla_cpu(Some(cache.path().to_path_buf()));

    // The session in full, which also fills the compile cache with every step's program.
    let exe = backend.prepare(&case.graph, &case.weights, &PrepareOptions::default()).unwrap();
    let mut clean = exe.new_state(case.slots).unwrap();
    let want: Vec<Outputs> = steps.iter().map(|s| run(exe.as_ref(), &mut clean, s)).collect();

    // A new executable runs the first two steps (one row each), which keeps their program in
    // memory; then every cached program file is altered, so step 2's (two rows) does not load.
    let exe = backend.prepare(&case.graph, &case.weights, &PrepareOptions::default()).unwrap();
    let mut state = exe.new_state(case.slots).unwrap();
    for (i, step) in steps[..2].iter().enumerate() {
        assert_eq!(run(exe.as_ref(), &mut state, step), want[i], "step {i}");
    }
    assert_eq!(lengths(&state), [5, 11]);
    let mut altered = 0;
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "xla") {
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[0] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
            altered += 1;
        }
    }
    assert!(altered > 0, "the compile cache holds no program");
    let feed: Vec<(&str, &HostTensor)> = steps[2].iter().map(|(n, t)| (n.as_str(), t)).collect();
    let err = exe.run_with_state(&mut state, &feed).unwrap_err().to_string();
    assert!(err.contains("SHA-256"), "{err}");
    assert_eq!(lengths(&state), [5, 11], "a refused step records nothing");

    // With the cache emptied the program compiles again, and the session goes on as if the
    // refused step had never been sent.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for (i, step) in steps.iter().enumerate().skip(2) {
        assert_eq!(run(exe.as_ref(), &mut state, step), want[i], "step {i}");
    }
}
