//! `$ACCELRT_PJRT_PLUGIN` names the plugin; a missing file is an error naming it, never a silent
//! fallback to the fetched plugin. (Its own test binary: it sets a process-wide variable.)

use accelrt_pjrt::{locate_xla_cpu, PjrtError, PluginStore, PLUGIN_ENV};

#[test]
fn plugin_path_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let store = PluginStore::new(dir.path()).with_python("/nonexistent/python3");
    std::env::set_var(PLUGIN_ENV, "/nonexistent/override/pjrt.so");
    match locate_xla_cpu(&store) {
        Err(PjrtError::PluginNotFound { tried }) => {
            assert!(tried[0].contains("ACCELRT_PJRT_PLUGIN") && tried[0].contains("/nonexistent/override/pjrt.so"))
        }
        other => panic!("expected PluginNotFound, got {other:?}"),
    }
    let file = dir.path().join("plugin.so");
    std::fs::write(&file, b"").unwrap();
    std::env::set_var(PLUGIN_ENV, &file);
    assert_eq!(locate_xla_cpu(&store).unwrap(), file);
    std::env::remove_var(PLUGIN_ENV);
    assert!(matches!(locate_xla_cpu(&store), Err(PjrtError::FetchFailed { .. })));
}
