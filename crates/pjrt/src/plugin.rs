//! A PJRT plugin library loaded at run time: `dlopen`, `GetPjrtApi`, the API version check and
//! `PJRT_Plugin_Initialize`. A plugin is loaded and initialised once per process and never unloaded
//! (the C API has no shutdown, and XLA's libraries do not survive `dlclose`).

use crate::error::{check, PjrtError, Result};
use crate::ffi;
use libloading::Library;
use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The PJRT C API version a plugin implements (`PJRT_Api.pjrt_api_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    /// Incremented for incompatible changes; must equal [`SUPPORTED_API`]'s.
    pub major: i32,
    /// Incremented when fields and functions are appended; must be at least [`SUPPORTED_API`]'s.
    pub minor: i32,
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The version these declarations were written for.
pub const SUPPORTED_API: ApiVersion = ApiVersion { major: ffi::API_MAJOR, minor: ffi::API_MINOR };

/// A plugin attribute's value (`PJRT_NamedValue`). Variants are its `PJRT_NamedValue_Type` tags
/// (`PJRT_NamedValue_kString`, …).
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// `kString`, lossily decoded as UTF-8. A value of a type this binding does not know is also
    /// kept here, as a text naming its type number.
    String(String),
    /// `kInt64`, e.g. `xla_version` = 2 on the XLA CPU plugin.
    Int64(i64),
    /// `kInt64List`, e.g. `stablehlo_current_version` = `[1, 13, 3]`; empty if the plugin gave a
    /// null list.
    Int64List(Vec<i64>),
    /// `kFloat`: a 32-bit float.
    Float(f32),
    /// `kBool`: a boolean.
    Bool(bool),
}

impl std::fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttributeValue::String(s) => write!(f, "{s}"),
            AttributeValue::Int64(v) => write!(f, "{v}"),
            AttributeValue::Int64List(v) => write!(f, "{v:?}"),
            AttributeValue::Float(v) => write!(f, "{v}"),
            AttributeValue::Bool(v) => write!(f, "{v}"),
        }
    }
}

/// A loaded, initialised PJRT plugin. Shared (`Arc`) by every client made from it.
pub struct Plugin {
    path: PathBuf,
    /// A copy of the plugin's function table, zero beyond the plugin's `struct_size`: an entry point
    /// an older plugin lacks reads as `None` instead of past the end of its table.
    api: ffi::PJRT_Api,
    version: ApiVersion,
    attributes: Vec<(String, AttributeValue)>,
    /// Keeps the code the table points into mapped (never dropped: plugins stay in [`LOADED`]).
    _library: Library,
}

// SAFETY: the table is immutable after load; PJRT entry points are thread-safe by contract.
unsafe impl Send for Plugin {}
unsafe impl Sync for Plugin {}

/// Plugins loaded in this process, by canonical path: each is loaded and initialised only once.
static LOADED: Mutex<Vec<Arc<Plugin>>> = Mutex::new(Vec::new());

/// Calls a PJRT entry point by its table name, converting a returned error.
macro_rules! pjrt_call {
    ($plugin:expr, $func:ident, $args:expr) => {{
        let plugin: &$crate::plugin::Plugin = $plugin;
        plugin.invoke(stringify!($func), plugin.api().$func, $args)
    }};
}
pub(crate) use pjrt_call;

impl Plugin {
    /// Loads the plugin at `path` (or returns the one already loaded from there), checks its API
    /// version and initialises it.
    ///
    /// # Errors
    /// [`PjrtError::PluginNotFound`] if the library does not open, [`PjrtError::NotAPlugin`] without
    /// `GetPjrtApi`, [`PjrtError::ApiVersion`] for an unsupported version, and
    /// [`PjrtError::Plugin`] or [`PjrtError::Unimplemented`] if `PJRT_Plugin_Initialize` fails.
    pub fn load(path: impl AsRef<Path>) -> Result<Arc<Plugin>> {
        let path = path.as_ref();
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some(plugin) = loaded.iter().find(|p| p.path == key) {
            return Ok(plugin.clone());
        }
        // SAFETY: loading a shared library runs its initialisers; a PJRT plugin's are the intended ones.
        let library = unsafe { Library::new(&key) }
            .map_err(|e| PjrtError::PluginNotFound { tried: vec![format!("{}: {e}", path.display())] })?;
        let plugin = Arc::new(Plugin::init(key, library)?);
        loaded.push(plugin.clone());
        Ok(plugin)
    }

    /// Loads the first of `candidates` that opens; the error lists every path tried and why.
    pub fn load_first(candidates: &[PathBuf]) -> Result<Arc<Plugin>> {
        let mut tried = Vec::new();
        for path in candidates {
            match Plugin::load(path) {
                Err(PjrtError::PluginNotFound { tried: t }) => tried.extend(t),
                other => return other,
            }
        }
        Err(PjrtError::PluginNotFound { tried })
    }

    fn init(path: PathBuf, library: Library) -> Result<Plugin> {
        // SAFETY: `GetPjrtApi` is the documented entry point of every PJRT plugin.
        let get_api: libloading::Symbol<ffi::GetPjrtApi> = unsafe { library.get(b"GetPjrtApi\0") }
            .map_err(|e| PjrtError::NotAPlugin { library: path.clone(), message: e.to_string() })?;
        // SAFETY: returns a pointer to the plugin's static table.
        let table = unsafe { get_api() };
        if table.is_null() {
            return Err(PjrtError::NotAPlugin { library: path, message: "GetPjrtApi returned null".into() });
        }
        // SAFETY: every table starts with struct_size, extension_start and the version struct, which
        // have not moved since the first API version; only `struct_size` bytes are copied.
        let api = unsafe {
            let size = (*table).struct_size.min(std::mem::size_of::<ffi::PJRT_Api>());
            let mut api: ffi::PJRT_Api = std::mem::zeroed();
            std::ptr::copy_nonoverlapping(table.cast::<u8>(), (&mut api as *mut ffi::PJRT_Api).cast::<u8>(), size);
            api
        };
        let version =
            ApiVersion { major: api.pjrt_api_version.major_version, minor: api.pjrt_api_version.minor_version };
        check_version(&path, version)?;
        let mut plugin = Plugin { path, api, version, attributes: Vec::new(), _library: library };
        pjrt_call!(&plugin, PJRT_Plugin_Initialize, &mut ffi::PJRT_Plugin_Initialize_Args::new())?;
        // Attributes are optional (older plugins lack them); their absence is not an error.
        plugin.attributes = plugin.read_attributes().unwrap_or_default();
        Ok(plugin)
    }

    fn read_attributes(&self) -> Result<Vec<(String, AttributeValue)>> {
        let mut args = ffi::PJRT_Plugin_Attributes_Args::new();
        pjrt_call!(self, PJRT_Plugin_Attributes, &mut args)?;
        if args.attributes.is_null() {
            return Ok(Vec::new());
        }
        // SAFETY: `num_attributes` values with the lifetime of the process.
        let values = unsafe { std::slice::from_raw_parts(args.attributes, args.num_attributes) };
        Ok(values.iter().map(|v| unsafe { named_value(v) }).collect())
    }

    /// The library file this plugin was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The PJRT C API version the plugin implements.
    pub fn api_version(&self) -> ApiVersion {
        self.version
    }

    /// The plugin's attributes (`xla_version`, `stablehlo_current_version`, …); empty if it has none.
    /// Part of any compile-cache key: they name the compiler that made a program.
    pub fn attributes(&self) -> &[(String, AttributeValue)] {
        &self.attributes
    }

    /// One attribute by name.
    pub fn attribute(&self, name: &str) -> Option<&AttributeValue> {
        self.attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub(crate) fn api(&self) -> &ffi::PJRT_Api {
        &self.api
    }

    /// Calls one entry point; use through `pjrt_call!`, which names it.
    pub(crate) fn invoke<A>(&self, name: &'static str, f: ffi::Fn<A>, args: &mut A) -> Result<()> {
        let f = f.ok_or(PjrtError::Unimplemented { function: name })?;
        // SAFETY: `args` is the argument struct of this entry point (the table's type says so), with
        // `struct_size` set by its constructor; a returned error is converted and destroyed by `check`.
        unsafe { check(&self.api, name, f(args)) }
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("path", &self.path).field("api_version", &self.version).finish()
    }
}

/// Same major version, and a minor at least the one the declarations were written for: minors only
/// append fields and functions, so a newer plugin reads the structs written here correctly, while an
/// older one may lack entry points or fields that have not been checked against its header.
///
/// # Errors
/// [`PjrtError::ApiVersion`] naming `library` when `version` is not accepted.
pub fn check_version(library: &Path, version: ApiVersion) -> Result<()> {
    if version.major != SUPPORTED_API.major || version.minor < SUPPORTED_API.minor {
        return Err(PjrtError::ApiVersion {
            library: library.to_path_buf(),
            plugin_major: version.major,
            plugin_minor: version.minor,
            expected_major: SUPPORTED_API.major,
            expected_minor: SUPPORTED_API.minor,
        });
    }
    Ok(())
}

/// Bytes of a (pointer, length) string from the plugin, as text.
///
/// # Safety
/// `ptr` is null or points at `len` readable bytes.
pub(crate) unsafe fn c_str(ptr: *const c_char, len: usize) -> String {
    if ptr.is_null() {
        return String::new();
    }
    String::from_utf8_lossy(std::slice::from_raw_parts(ptr.cast::<u8>(), len)).into_owned()
}

/// # Safety
/// `v` is a value filled in by the plugin, its pointers valid.
unsafe fn named_value(v: &ffi::PJRT_NamedValue) -> (String, AttributeValue) {
    let name = c_str(v.name, v.name_size);
    let value = match v.value_type {
        ffi::NAMED_VALUE_STRING => AttributeValue::String(c_str(v.value.string_value, v.value_size)),
        ffi::NAMED_VALUE_INT64 => AttributeValue::Int64(v.value.int64_value),
        ffi::NAMED_VALUE_INT64_LIST if !v.value.int64_array_value.is_null() => {
            AttributeValue::Int64List(std::slice::from_raw_parts(v.value.int64_array_value, v.value_size).to_vec())
        }
        ffi::NAMED_VALUE_INT64_LIST => AttributeValue::Int64List(Vec::new()),
        ffi::NAMED_VALUE_FLOAT => AttributeValue::Float(v.value.float_value),
        ffi::NAMED_VALUE_BOOL => AttributeValue::Bool(v.value.bool_value),
        other => AttributeValue::String(format!("(value of unknown type {other})")),
    };
    (name, value)
}
