//! Every failure is a typed error: bad arguments, bad programs, missing or foreign plugins, API
//! versions, fetch failures and corrupt downloads.

mod common;

use accelrt_pjrt::{check_version, ApiVersion, ErrorCode, PjrtError, Plugin, PluginStore, XLA_CPU};
use common::client;
use std::path::{Path, PathBuf};

const ADD: &str = r#"func.func @main(%a: tensor<2x3xf32>, %b: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %0 = stablehlo.add %a, %b : tensor<2x3xf32>
  return %0 : tensor<2x3xf32>
}"#;

#[test]
fn wrong_argument_count_is_a_typed_error() {
    let client = client();
    let exe = client.compile_mlir(ADD).unwrap();
    let a = client.buffer_from_host(&[0f32; 6], &[2, 3]).unwrap();
    match exe.execute(&[&a]) {
        Err(PjrtError::ArgumentCount { expected: 2, actual: 1 }) => {}
        other => panic!("expected ArgumentCount, got {other:?}"),
    }
    match exe.execute(&[&a, &a, &a]) {
        Err(PjrtError::ArgumentCount { expected: 2, actual: 3 }) => {}
        other => panic!("expected ArgumentCount, got {other:?}"),
    }
}

#[test]
fn wrong_shape_or_type_is_a_typed_error() {
    let client = client();
    let exe = client.compile_mlir(ADD).unwrap();
    let a = client.buffer_from_host(&[0f32; 6], &[2, 3]).unwrap();
    // Same byte size, other shape: the plugin alone would run it.
    let transposed = client.buffer_from_host(&[0f32; 6], &[3, 2]).unwrap();
    let err = exe.execute(&[&a, &transposed]).unwrap_err();
    assert!(
        matches!(&err, PjrtError::ArgumentMismatch { index: 1, expected, actual }
            if expected == "tensor<2x3xf32>" && actual == "tensor<3x2xf32>"),
        "{err:?}"
    );
    // Same byte size, other element type.
    let ints = client.buffer_from_host(&[0i32; 6], &[2, 3]).unwrap();
    let err = exe.execute(&[&ints, &a]).unwrap_err();
    assert!(matches!(&err, PjrtError::ArgumentMismatch { index: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("tensor<2x3xi32>"), "{err}");
}

#[test]
fn the_plugin_checks_what_the_signature_cannot_tell() {
    // Dynamic dimensions are not read from the text, so the plugin's own size check answers.
    let client = client();
    let exe = client
        .compile_mlir(
            r#"func.func @main(%a: tensor<?xf32>) -> tensor<?xf32> {
  return %a : tensor<?xf32>
}"#,
        )
        .map(Some)
        .or_else(|e| match e {
            // Dynamic shapes may be refused at compile time; that is a typed error too.
            PjrtError::Plugin { call: "PJRT_Client_Compile", .. } => Ok(None),
            other => Err(other),
        })
        .unwrap();
    if let Some(exe) = exe {
        assert!(exe.parameters().is_none());
        let a = client.buffer_from_host(&[0f32; 6], &[2, 3]).unwrap();
        let err = exe.execute(&[&a, &a]).unwrap_err();
        assert!(matches!(err, PjrtError::Plugin { call: "PJRT_LoadedExecutable_Execute", .. }), "{err:?}");
    }
}

#[test]
fn data_that_does_not_fit_the_dimensions_is_refused() {
    let client = client();
    for (len, dims) in [(5usize, vec![2i64, 3]), (7, vec![2, 3]), (1, vec![-1]), (1, vec![i64::MAX, 4])] {
        let err = client.buffer_from_host(&vec![0f32; len], &dims).unwrap_err();
        assert!(matches!(err, PjrtError::Invalid(_)), "{len} values for {dims:?}: {err:?}");
    }
    let err = client.buffer_from_bytes(accelrt_pjrt::ElementType::Other(17), &[0; 4], &[1], None).unwrap_err();
    assert!(matches!(err, PjrtError::Invalid(_)), "{err:?}");
    assert_eq!(client.live_objects().buffers, 0, "no buffer was made");
}

#[test]
fn malformed_mlir_carries_the_plugin_message() {
    let client = client();
    let err = client.compile_mlir("func.func @main(%a: tensor<2xf32> -> tensor<2xf32> {").unwrap_err();
    match &err {
        PjrtError::Plugin { call: "PJRT_Client_Compile", message, .. } => {
            assert!(message.contains("error"), "the plugin's diagnostic is kept: {message}")
        }
        other => panic!("expected a plugin error, got {other:?}"),
    }
    // Well-formed text that does not type-check is also the plugin's error, with its reason.
    let err = client
        .compile_mlir(
            r#"func.func @main(%a: tensor<2xf32>, %b: tensor<3xf32>) -> tensor<2xf32> {
  %0 = stablehlo.add %a, %b : (tensor<2xf32>, tensor<3xf32>) -> tensor<2xf32>
  return %0 : tensor<2xf32>
}"#,
        )
        .unwrap_err();
    let PjrtError::Plugin { message, code, .. } = &err else { panic!("expected a plugin error, got {err:?}") };
    assert!(!message.is_empty());
    assert_ne!(*code, ErrorCode::Other(0));
    assert!(client.compile_mlir("").is_err());
}

#[test]
fn missing_plugin_lists_what_was_tried() {
    let missing = [PathBuf::from("/nonexistent/a/libpjrt.so"), PathBuf::from("/nonexistent/b/pjrt_plugin.so")];
    match Plugin::load_first(&missing) {
        Err(PjrtError::PluginNotFound { tried }) => {
            assert_eq!(tried.len(), 2);
            assert!(tried[0].starts_with("/nonexistent/a/libpjrt.so: "), "{tried:?}");
            assert!(tried[1].starts_with("/nonexistent/b/pjrt_plugin.so: "), "{tried:?}");
        }
        other => panic!("expected PluginNotFound, got {other:?}"),
    }
    let err = Plugin::load("/nonexistent/libpjrt.so").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/libpjrt.so"), "{err}");
}

#[test]
fn a_library_that_is_not_a_plugin_is_refused() {
    // libm is on every Linux system and exports no GetPjrtApi.
    match Plugin::load("libm.so.6") {
        Err(PjrtError::NotAPlugin { message, .. }) => assert!(!message.is_empty()),
        other => panic!("expected NotAPlugin, got {other:?}"),
    }
}

#[test]
fn api_version_mismatch_names_both_versions() {
    let lib = Path::new("/some/plugin.so");
    assert!(check_version(lib, ApiVersion { major: 0, minor: 81 }).is_ok());
    assert!(check_version(lib, ApiVersion { major: 0, minor: 95 }).is_ok(), "newer minors only append");
    for (major, minor) in [(0, 54), (1, 0), (1, 81)] {
        let err = check_version(lib, ApiVersion { major, minor }).unwrap_err();
        assert!(
            matches!(err, PjrtError::ApiVersion { plugin_major, plugin_minor, expected_major: 0, expected_minor: 81, .. }
            if plugin_major == major && plugin_minor == minor)
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("{major}.{minor}")) && text.contains("0.81") && text.contains("/some/plugin.so"),
            "{text}"
        );
    }
}

#[test]
fn fetch_without_python_fails_listing_what_was_tried() {
    let cache = tempfile::tempdir().unwrap();
    let store = PluginStore::new(cache.path()).with_python("/nonexistent/python3");
    match store.ensure(&XLA_CPU) {
        Err(PjrtError::FetchFailed { plugin, tried }) => {
            assert_eq!(plugin, "xla-cpu-pjrt");
            assert_eq!(tried.len(), 2, "{tried:?}");
            assert!(tried[0].contains(&store.install_dir(&XLA_CPU).display().to_string()), "{tried:?}");
            assert!(tried[1].contains("/nonexistent/python3"), "{tried:?}");
        }
        other => panic!("expected FetchFailed, got {other:?}"),
    }
    assert!(!store.install_dir(&XLA_CPU).exists(), "nothing half-installed");
}

#[test]
fn a_corrupt_wheel_is_refused_and_nothing_is_installed() {
    let cache = tempfile::tempdir().unwrap();
    let store = PluginStore::new(cache.path());
    let wheel = cache.path().join(XLA_CPU.file_name);
    std::fs::write(&wheel, b"not the wheel").unwrap();
    match store.install_from_wheel(&XLA_CPU, &wheel) {
        Err(PjrtError::Checksum { expected, .. }) => assert_eq!(expected, XLA_CPU.sha256),
        other => panic!("expected Checksum, got {other:?}"),
    }
    assert!(!store.install_dir(&XLA_CPU).exists());
    // A corrupt download in the cache is not trusted either: with no pip it is a fetch failure.
    std::fs::create_dir_all(cache.path().join("downloads")).unwrap();
    std::fs::copy(&wheel, cache.path().join("downloads").join(XLA_CPU.file_name)).unwrap();
    let store = store.with_python("/nonexistent/python3");
    assert!(matches!(store.ensure(&XLA_CPU), Err(PjrtError::FetchFailed { .. })));
}

#[test]
fn a_tampered_cached_library_is_reported_not_used() {
    let cache = tempfile::tempdir().unwrap();
    let store = PluginStore::new(cache.path()).with_python("/nonexistent/python3");
    let dir = store.install_dir(&XLA_CPU);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("xla_cpu_pjrt.so"), b"tampered").unwrap();
    match store.ensure(&XLA_CPU) {
        Err(PjrtError::Checksum { file, .. }) => assert_eq!(file, dir.join("xla_cpu_pjrt.so")),
        other => panic!("expected Checksum, got {other:?}"),
    }
}
