//! `NRT_STATUS` codes and the crate's error type.
//!
//! The codes and names are those of the `NRT_STATUS` enum as the project's reference notes list
//! them (`../shared/reference/neuron-runtime.md`, beside the repository; collected from the public
//! Neuron SDK 2.28 documentation). The SDK headers themselves are proprietary and not copied.

use std::path::PathBuf;

/// A status returned by the Neuron runtime. Unknown codes are kept as numbers.
///
/// Displayed as `NAME (code)` plus, for a few codes, what usually causes them, e.g.
/// `NRT_EXEC_NC_BUSY (1005) (the NeuronCores are held by another process)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NrtStatus(
    /// The raw `NRT_STATUS` value the C call returned.
    pub i32,
);

impl NrtStatus {
    /// `NRT_SUCCESS` (0): the only status that is not an error.
    pub const SUCCESS: NrtStatus = NrtStatus(0);

    /// The status's name as in the Neuron documentation (`NRT_TIMEOUT`, …).
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "NRT_SUCCESS",
            1 => "NRT_FAILURE",
            2 => "NRT_INVALID",
            3 => "NRT_INVALID_HANDLE",
            4 => "NRT_RESOURCE",
            5 => "NRT_TIMEOUT",
            6 => "NRT_HW_ERROR",
            7 => "NRT_QUEUE_FULL",
            9 => "NRT_LOAD_NOT_ENOUGH_NC",
            10 => "NRT_UNSUPPORTED_NEFF_VERSION",
            13 => "NRT_UNINITIALIZED",
            14 => "NRT_CLOSED",
            15 => "NRT_QUEUE_EMPTY",
            101 => "NRT_EXEC_UNIT_UNRECOVERABLE",
            1002 => "NRT_EXEC_BAD_INPUT",
            1003 => "NRT_EXEC_COMPLETED_WITH_NUM_ERR",
            1004 => "NRT_EXEC_COMPLETED_WITH_ERR",
            1005 => "NRT_EXEC_NC_BUSY",
            1006 => "NRT_EXEC_OOB",
            1100 => "NRT_COLL_PENDING",
            1200 => "NRT_EXEC_HW_ERR_COLLECTIVES",
            1201 => "NRT_EXEC_HW_ERR_HBM_UE",
            1202 => "NRT_EXEC_HW_ERR_NC_UE",
            1203 => "NRT_EXEC_HW_ERR_DMA_ABORT",
            1204 => "NRT_EXEC_SW_NQ_OVERFLOW",
            1205 => "NRT_EXEC_HW_ERR_REPAIRABLE_HBM_UE",
            1206 => "NRT_NETWORK_PROXY_FAILURE",
            _ => "unknown NRT_STATUS",
        }
    }

    /// What a user should know about this status, where there is something to say.
    fn hint(self) -> &'static str {
        match self.0 {
            1003 => " (the program produced NaN or Inf)",
            1005 => " (the NeuronCores are held by another process)",
            5 => " (see NEURON_RT_EXEC_TIMEOUT)",
            9 => " (fewer free NeuronCores than the program needs; check NEURON_RT_VISIBLE_CORES)",
            10 => " (the NEFF was compiled for another runtime version)",
            14 => " (the runtime was closed; it cannot be re-initialised in this process)",
            _ => "",
        }
    }
}

impl std::fmt::Display for NrtStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}){}", self.name(), self.0, self.hint())
    }
}

/// What can go wrong loading or calling the Neuron runtime.
#[derive(Debug, thiserror::Error)]
pub enum NeuronError {
    /// No usable Neuron runtime library was found: none of the places searched had a library
    /// that opened and had every function the binding needs. Usually the runtime is not installed
    /// (package `aws-neuronx-runtime-lib`, in `/opt/aws/neuron/lib`), or not where
    /// `ACCELRT_NEURON_LIB` points. Install the runtime or set that variable to the library's path.
    #[error("the Neuron runtime library could not be loaded; tried: {}", tried.join("; "))]
    LibraryNotFound {
        /// Each place tried, with why it failed: the loader's reason, or the symbol the library
        /// that opened there lacks.
        tried: Vec<String>,
    },

    /// The library `ACCELRT_NEURON_LIB` names opened but lacks a function the binding needs: most
    /// likely not a Neuron runtime 2.x library (its symbols are versioned `NRT_2.0.0`). Point
    /// `ACCELRT_NEURON_LIB` at the SDK's `libnrt.so.1`. (In the default search such a library is
    /// skipped, and reported in [`NeuronError::LibraryNotFound`] if nothing else loads.)
    #[error("{library}: symbol `{symbol}` is missing ({message}); is this a Neuron runtime 2.x library?")]
    MissingSymbol {
        /// The library file that was opened.
        library: PathBuf,
        /// The C function that could not be resolved, e.g. `nrt_execute`.
        symbol: &'static str,
        /// The dynamic loader's message.
        message: String,
    },

    /// A runtime call returned a status other than success. The runtime's log (stderr, more
    /// with `NEURON_RT_LOG_LEVEL`) usually says why.
    #[error("{call} failed: {status}")]
    Status {
        /// The C function that failed, e.g. `nrt_load`.
        call: &'static str,
        /// What it returned.
        status: NrtStatus,
    },

    /// [`Runtime::shutdown`](crate::Runtime::shutdown) closed the runtime earlier in this
    /// process; the runtime cannot be initialised twice in one process, so start a new process.
    #[error("the Neuron runtime was closed in this process and cannot be initialised again")]
    Closed,

    /// A misuse or an answer the binding cannot accept, checked on the Rust side: a tensor name
    /// with a NUL byte, a read or write outside a tensor, a shutdown while handles are alive, a
    /// runtime call that succeeded but returned no object or an unknown tensor usage. The message
    /// says which.
    #[error("{0}")]
    Invalid(String),
}

/// This crate's result type: errors are [`NeuronError`] unless stated otherwise.
pub type Result<T, E = NeuronError> = std::result::Result<T, E>;

/// Turns a status into `Ok` or a typed error naming the call.
pub(crate) fn check(call: &'static str, code: i32) -> Result<()> {
    match code {
        0 => Ok(()),
        other => Err(NeuronError::Status { call, status: NrtStatus(other) }),
    }
}
