//! `NRT_STATUS` codes and the crate's error type.

use std::path::PathBuf;

/// A status returned by the Neuron runtime. Unknown codes are kept as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NrtStatus(pub i32);

impl NrtStatus {
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

#[derive(Debug, thiserror::Error)]
pub enum NeuronError {
    /// No Neuron runtime library could be opened.
    #[error("the Neuron runtime library could not be loaded; tried: {}", tried.join("; "))]
    LibraryNotFound { tried: Vec<String> },

    #[error("{library}: symbol `{symbol}` is missing ({message}); is this a Neuron runtime 2.x library?")]
    MissingSymbol { library: PathBuf, symbol: &'static str, message: String },

    /// A runtime call returned a status other than success.
    #[error("{call} failed: {status}")]
    Status { call: &'static str, status: NrtStatus },

    #[error("the Neuron runtime was closed in this process and cannot be initialised again")]
    Closed,

    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = NeuronError> = std::result::Result<T, E>;

/// Turns a status into `Ok` or a typed error naming the call.
pub(crate) fn check(call: &'static str, code: i32) -> Result<()> {
    match code {
        0 => Ok(()),
        other => Err(NeuronError::Status { call, status: NrtStatus(other) }),
    }
}
