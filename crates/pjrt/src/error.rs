//! The crate's error type, and the conversion of a `PJRT_Error*` into it (message and code copied,
//! the plugin's error object destroyed).

use crate::ffi;
use std::path::PathBuf;

/// `PJRT_Error_Code`: the absl status codes, by their numbers (`absl/status/status.h`). Unknown
/// numbers are kept as [`ErrorCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1, `CANCELLED`: the operation was cancelled, usually by the caller.
    Cancelled,
    /// 2, `UNKNOWN`: the plugin gave no more specific code. Also used here when the plugin cannot
    /// report a code (no `PJRT_Error_GetCode`, or that call itself failed).
    Unknown,
    /// 3, `INVALID_ARGUMENT`: the request is wrong whatever the state (a malformed program, a
    /// buffer of the wrong byte size, a bad option).
    InvalidArgument,
    /// 4, `DEADLINE_EXCEEDED`: the operation did not finish in time.
    DeadlineExceeded,
    /// 5, `NOT_FOUND`: a named entity (a file, a device, a function) does not exist.
    NotFound,
    /// 6, `ALREADY_EXISTS`: what was to be created exists already.
    AlreadyExists,
    /// 7, `PERMISSION_DENIED`: the caller may not do this.
    PermissionDenied,
    /// 8, `RESOURCE_EXHAUSTED`: out of memory (host or device) or another quota; smaller batches
    /// or fewer live buffers may help.
    ResourceExhausted,
    /// 9, `FAILED_PRECONDITION`: the system is not in a state that allows the call; retrying
    /// will not help until that state is fixed.
    FailedPrecondition,
    /// 10, `ABORTED`: the operation was aborted, typically by a concurrency conflict; retrying
    /// may succeed.
    Aborted,
    /// 11, `OUT_OF_RANGE`: an index or offset past the valid range.
    OutOfRange,
    /// 12, `UNIMPLEMENTED`: the plugin does not support this operation or option (compare
    /// [`PjrtError::Unimplemented`], raised when the entry point is missing altogether).
    Unimplemented,
    /// 13, `INTERNAL`: an invariant inside the plugin or compiler broke; a bug on its side.
    Internal,
    /// 14, `UNAVAILABLE`: the device or service is temporarily unavailable; retrying may succeed.
    Unavailable,
    /// 15, `DATA_LOSS`: unrecoverable data loss or corruption.
    DataLoss,
    /// 16, `UNAUTHENTICATED`: the caller has no valid credentials for the operation.
    Unauthenticated,
    /// A code this binding does not know (a newer plugin).
    Other(i32),
}

impl ErrorCode {
    /// The code for a `PJRT_Error_Code` value.
    pub fn from_raw(code: i32) -> ErrorCode {
        use ErrorCode::*;
        match code {
            1 => Cancelled,
            2 => Unknown,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            other => Other(other),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Other(n) => write!(f, "code {n}"),
            named => write!(f, "{named:?}"),
        }
    }
}

/// Everything that can go wrong finding, loading or using a PJRT plugin.
#[derive(Debug, thiserror::Error)]
pub enum PjrtError {
    /// No plugin library could be opened: the path does not exist, or `dlopen` refused it (wrong
    /// architecture, a missing dependency). Check the path or `$ACCELRT_PJRT_PLUGIN`.
    #[error("no PJRT plugin could be loaded; tried: {}", tried.join("; "))]
    PluginNotFound {
        /// One entry per candidate, in the order tried, naming the path and why it failed.
        tried: Vec<String>,
    },

    /// The library opened but lacks `GetPjrtApi`, or that function returned null: the file is not a
    /// PJRT plugin.
    #[error("{library}: symbol `GetPjrtApi` is missing ({message}); is this a PJRT plugin?")]
    NotAPlugin {
        /// The library file (canonicalised where that succeeded).
        library: PathBuf,
        /// The loader's reason.
        message: String,
    },

    /// The plugin implements an API version these declarations do not describe: another major
    /// version, or an older minor one (see [`check_version`](crate::check_version)). Use a plugin
    /// built against [`SUPPORTED_API`](crate::SUPPORTED_API) or newer within the same major.
    #[error(
        "{library} implements PJRT C API {plugin_major}.{plugin_minor}, but accelrt's declarations were written \
         for {expected_major}.{expected_minor} (same major, minor at least {expected_minor} is required)"
    )]
    ApiVersion {
        /// The library file.
        library: PathBuf,
        /// The plugin's major version.
        plugin_major: i32,
        /// The plugin's minor version.
        plugin_minor: i32,
        /// The major version accelrt's declarations describe.
        expected_major: i32,
        /// The lowest minor version accelrt accepts.
        expected_minor: i32,
    },

    /// The plugin's function table does not provide an entry point accelrt calls (the slot is null,
    /// or lies past the table's `struct_size`). The operation cannot be done with this plugin.
    #[error("the PJRT plugin does not implement {function}")]
    Unimplemented {
        /// The C API entry point, e.g. `PJRT_Executable_Serialize`.
        function: &'static str,
    },

    /// A PJRT call returned an error; `message` is the plugin's own (for a compile error, the
    /// compiler's diagnostic).
    #[error("{call} failed ({code}): {message}")]
    Plugin {
        /// The C API entry point that failed, e.g. `PJRT_Client_Compile`.
        call: &'static str,
        /// The plugin's status code.
        code: ErrorCode,
        /// The plugin's message, lossily decoded as UTF-8; empty if it gave none.
        message: String,
    },

    /// The plugin is not in the cache and could not be fetched: no pip, no network, or a platform
    /// the wheel is not published for. Install it by hand or set `$ACCELRT_PJRT_PLUGIN`.
    #[error("the {plugin} PJRT plugin is not available; tried: {}", tried.join("; "))]
    FetchFailed {
        /// The wheel's package name, e.g. `xla-cpu-pjrt`.
        plugin: String,
        /// Each source tried and why it failed, in order.
        tried: Vec<String>,
    },

    /// A file on disk has not the pinned SHA-256: a corrupt download, a tampered cache, or a wheel
    /// that is not the pinned build. A cached file with a wrong hash is reported, never replaced;
    /// delete it (or the plugin's install directory) to fetch it again.
    #[error("{file}: SHA-256 is {actual}, expected {expected} (delete the file or directory to fetch it again)")]
    Checksum {
        /// The file checked, a path on disk: the wheel, or a file of the installed plugin.
        file: PathBuf,
        /// The pinned hash, lowercase hex.
        expected: String,
        /// The hash found, lowercase hex.
        actual: String,
    },

    /// A file inside a wheel has not its pinned SHA-256, although the wheel itself has its own. The
    /// pins of the [`PinnedWheel`](crate::fetch::PinnedWheel) disagree with each other, so fetching the
    /// wheel again cannot help: the member's pin (or the wheel's) must be corrected. Nothing was
    /// installed.
    #[error(
        "{member} inside the wheel {}: SHA-256 is {actual}, expected {expected}; the wheel matches its own pinned \
         SHA-256, so the pinned hashes disagree: correct the member's pin (fetching the wheel again will not help); \
         nothing was installed",
        wheel.display()
    )]
    WheelMember {
        /// The wheel file on disk (it matched its pinned SHA-256).
        wheel: PathBuf,
        /// The member's path inside the wheel, e.g. `xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so`.
        member: String,
        /// The member's pinned hash, lowercase hex.
        expected: String,
        /// The hash of the member's bytes, lowercase hex.
        actual: String,
    },

    /// Reading or writing a file failed: the plugin cache, a wheel, or a file being hashed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// `execute` was given a different number of arguments than `@main` has parameters. Checked only
    /// when the program was compiled from MLIR text whose signature could be read.
    #[error("the program takes {expected} arguments, {actual} were given")]
    ArgumentCount {
        /// Parameters of `@main`.
        expected: usize,
        /// Arguments given.
        actual: usize,
    },

    /// An argument's element type or dimensions differ from its parameter's (checked as for
    /// [`PjrtError::ArgumentCount`]; the XLA CPU plugin itself compares only byte sizes).
    #[error("argument {index}: the program takes {expected}, the buffer is {actual}")]
    ArgumentMismatch {
        /// The argument's position, from 0.
        index: usize,
        /// The parameter's type, as `tensor<2x3xf32>`.
        expected: String,
        /// The buffer's type, in the same form.
        actual: String,
    },

    /// A request the binding refuses before calling the plugin (wrong data length, wrong type, …).
    #[error("{0}")]
    Invalid(String),
}

impl PjrtError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> PjrtError {
        PjrtError::Io { path: path.into(), source }
    }

    /// The plugin's error code, when the plugin reported the error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            PjrtError::Plugin { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = PjrtError> = std::result::Result<T, E>;

/// Turns a returned `PJRT_Error*` into `Ok` (null) or a typed error, destroying the plugin's object.
///
/// # Safety
/// `error` is null or an error just returned by a function of `api`, not yet destroyed.
pub(crate) unsafe fn check(api: &ffi::PJRT_Api, call: &'static str, error: *mut ffi::PJRT_Error) -> Result<()> {
    if error.is_null() {
        return Ok(());
    }
    let mut message = ffi::PJRT_Error_Message_Args::new();
    message.error = error;
    let text = match api.PJRT_Error_Message {
        Some(f) => {
            f(&mut message);
            if message.message.is_null() {
                String::new()
            } else {
                let bytes = std::slice::from_raw_parts(message.message.cast::<u8>(), message.message_size);
                String::from_utf8_lossy(bytes).into_owned()
            }
        }
        None => "(the plugin gives no message)".into(),
    };
    let mut code = ffi::PJRT_Error_GetCode_Args::new();
    code.error = error;
    let code = match api.PJRT_Error_GetCode {
        Some(f) => {
            let inner = f(&mut code);
            if inner.is_null() {
                ErrorCode::from_raw(code.code)
            } else {
                destroy(api, inner);
                ErrorCode::Unknown
            }
        }
        None => ErrorCode::Unknown,
    };
    destroy(api, error);
    Err(PjrtError::Plugin { call, code, message: text })
}

/// Destroys an error whose content is not wanted (from a destructor, where it cannot be returned).
///
/// # Safety
/// As for [`check`].
pub(crate) unsafe fn destroy(api: &ffi::PJRT_Api, error: *mut ffi::PJRT_Error) {
    if error.is_null() {
        return;
    }
    if let Some(f) = api.PJRT_Error_Destroy {
        let mut args = ffi::PJRT_Error_Destroy_Args::new();
        args.error = error;
        f(&mut args);
    }
}
