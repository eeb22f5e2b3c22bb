//! An xla:cpu session state runs only with the executable that made it.

use accelrt_core::{DeviceSpec, PrepareOptions};
use accelrt_pjrt_backend::PjrtBackend;

#[test]
fn a_session_state_runs_only_with_the_executable_that_made_it() {
    let backend = PjrtBackend::new(&DeviceSpec::XlaCpu)
        .unwrap_or_else(|e| panic!("xla:cpu is needed (python3 with pip fetches the plugin): {e}"));
    accelrt_conformance::check_session_owner(&backend, &PrepareOptions::default()).unwrap();
}
