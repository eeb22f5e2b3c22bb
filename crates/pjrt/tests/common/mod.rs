//! Shared by the plugin tests: the real XLA CPU plugin, fetched into the accelrt cache on first use.
#![allow(dead_code)]

use accelrt_pjrt::{Client, Plugin, PluginStore, XLA_CPU};
use std::sync::{Arc, OnceLock};

/// The XLA CPU plugin. A missing Python or pip fails the test with the reason, never skips it.
pub fn plugin() -> Arc<Plugin> {
    static PLUGIN: OnceLock<Arc<Plugin>> = OnceLock::new();
    PLUGIN
        .get_or_init(|| {
            let installed = PluginStore::from_env().ensure(&XLA_CPU).unwrap_or_else(|e| {
                panic!("the XLA CPU plugin is needed (fetched with `python3 -m pip download xla-cpu-pjrt`): {e}")
            });
            Plugin::load(&installed.library).unwrap_or_else(|e| panic!("loading the XLA CPU plugin: {e}"))
        })
        .clone()
}

/// A client of the plugin, shared by the tests of one binary.
pub fn client() -> Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| Client::new(&plugin()).expect("creating an XLA CPU client")).clone()
}

/// `a` and `b` are equal within `tol` element by element.
pub fn assert_close(actual: &[f32], expected: &[f32], tol: f32) {
    assert_eq!(actual.len(), expected.len(), "lengths differ: {actual:?} vs {expected:?}");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol, "element {i}: {a} vs {e} (all: {actual:?} vs {expected:?})");
    }
}
