//! A candle session state runs only with the executable that made it.

use accelrt_core::PrepareOptions;

#[test]
fn a_session_state_runs_only_with_the_executable_that_made_it() {
    let backend = accelrt_candle::CandleBackend::cpu();
    accelrt_conformance::check_session_owner(&backend, &PrepareOptions::default()).unwrap();
}
