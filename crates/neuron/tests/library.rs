//! Missing library, a library without the runtime's symbols, and the one-runtime-per-process rule.
//! (Its own test binary: it changes the process-wide library path.)

mod common;

use accelrt_neuron::{NeuronError, Runtime, LIBRARY_ENV};

#[test]
fn missing_libraries_and_symbols_are_named_and_close_is_final() {
    std::env::set_var(LIBRARY_ENV, "/nonexistent/libnrt.so.1");
    match Runtime::get() {
        Err(NeuronError::LibraryNotFound { tried }) => {
            assert_eq!(tried.len(), 1);
            assert!(tried[0].contains("/nonexistent/libnrt.so.1"), "{tried:?}");
        }
        other => panic!("expected LibraryNotFound, got {:?}", other.err()),
    }
    // A real shared library that is not the Neuron runtime.
    std::env::set_var(LIBRARY_ENV, "libm.so.6");
    match Runtime::probe() {
        Err(e @ NeuronError::MissingSymbol { .. }) => assert!(e.to_string().contains("nrt_init"), "{e}"),
        other => panic!("expected MissingSymbol, got {other:?}"),
    }
    std::env::set_var(LIBRARY_ENV, common::simulator_library());
    assert_eq!(Runtime::probe().unwrap(), common::simulator_library());
    let rt = Runtime::get().unwrap();
    // Closing is refused while something holds the runtime, then final.
    assert!(Runtime::shutdown().is_err());
    drop(rt);
    Runtime::shutdown().unwrap();
    assert!(matches!(Runtime::get(), Err(NeuronError::Closed)));
}
