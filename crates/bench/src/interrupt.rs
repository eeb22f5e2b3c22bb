//! Ctrl-C during a benchmark: the first one asks the run to stop after the query in flight (the
//! scenarios already completed have been written; the one running is dropped); a second one ends
//! the process at once.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// Asks the run to stop (what Ctrl-C does; also for tests).
pub fn request() {
    REQUESTED.store(true, Ordering::Relaxed);
}

/// Forgets an earlier request.
pub fn reset() {
    REQUESTED.store(false, Ordering::Relaxed);
}

extern "C" fn on_sigint(_: libc::c_int) {
    // Only async-signal-safe work: an atomic store, and the default action for the next Ctrl-C.
    REQUESTED.store(true, Ordering::Relaxed);
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

/// Installs the Ctrl-C (SIGINT) handler: the first Ctrl-C calls [`request`], the second kills.
pub fn install_handler() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic and calls signal(2), both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}
