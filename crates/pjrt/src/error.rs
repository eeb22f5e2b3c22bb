//! The crate's error type, and the conversion of a `PJRT_Error*` into it (message and code copied,
//! the plugin's error object destroyed).

use crate::ffi;
use std::path::PathBuf;

/// `PJRT_Error_Code` (the absl status codes). Unknown numbers are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
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
    /// No plugin library could be opened.
    #[error("no PJRT plugin could be loaded; tried: {}", tried.join("; "))]
    PluginNotFound { tried: Vec<String> },

    /// The library opened but lacks `GetPjrtApi` (not a PJRT plugin).
    #[error("{library}: symbol `GetPjrtApi` is missing ({message}); is this a PJRT plugin?")]
    NotAPlugin { library: PathBuf, message: String },

    /// The plugin implements an API version these declarations do not describe.
    #[error(
        "{library} implements PJRT C API {plugin_major}.{plugin_minor}, but accelrt's declarations were written \
         for {expected_major}.{expected_minor} (same major, minor at least {expected_minor} is required)"
    )]
    ApiVersion { library: PathBuf, plugin_major: i32, plugin_minor: i32, expected_major: i32, expected_minor: i32 },

    /// The plugin's function table does not provide an entry point accelrt calls.
    #[error("the PJRT plugin does not implement {function}")]
    Unimplemented { function: &'static str },

    /// A PJRT call returned an error; `message` is the plugin's own.
    #[error("{call} failed ({code}): {message}")]
    Plugin { call: &'static str, code: ErrorCode, message: String },

    /// The plugin could not be fetched; each source tried and why it failed.
    #[error("the {plugin} PJRT plugin is not available; tried: {}", tried.join("; "))]
    FetchFailed { plugin: String, tried: Vec<String> },

    /// A file's SHA-256 is not the pinned one.
    #[error("{file}: SHA-256 is {actual}, expected {expected} (delete the file or directory to fetch it again)")]
    Checksum { file: PathBuf, expected: String, actual: String },

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// `execute` was given a different number of arguments than `@main` has parameters.
    #[error("the program takes {expected} arguments, {actual} were given")]
    ArgumentCount { expected: usize, actual: usize },

    /// An argument's element type or dimensions differ from its parameter's.
    #[error("argument {index}: the program takes {expected}, the buffer is {actual}")]
    ArgumentMismatch { index: usize, expected: String, actual: String },

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
