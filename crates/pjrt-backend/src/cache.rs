//! The on-disk compile cache: compiled programs serialised by the plugin, keyed by what the program
//! is (the module's SHA-256, which covers graph, bucket and dtypes but never weight values — they
//! are arguments) and what compiled it (plugin identity and compile options).
//!
//! `<dir>/<key>.xla` holds the plugin's serialised executable, `<dir>/<key>.sha256` its hash (a
//! truncated or altered file is reported, never loaded or silently replaced), and `<dir>/<key>.json`
//! the manifest, for people. A plugin that cannot serialise executables gets `<dir>/<key>.mlir`
//! instead: the module is kept, the compile is redone in every process.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Environment variable: the cache directory, or `off` for no on-disk cache.
pub const CACHE_ENV: &str = "ACCELRT_PJRT_CACHE";

/// Where the cache lives: `$ACCELRT_PJRT_CACHE` (`off`: none), else `<accelrt cache>/pjrt/programs`.
pub fn cache_dir_from_env() -> Option<PathBuf> {
    match std::env::var_os(CACHE_ENV) {
        Some(v) if v == "off" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => Some(accelrt_pjrt::fetch::default_cache_dir().join("pjrt").join("programs")),
    }
}

/// The cache key of one program for one compiler.
pub(crate) fn key(mlir_sha256: &str, compiler: &str, options: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [mlir_sha256.as_bytes(), b"\0", compiler.as_bytes(), b"\0", options] {
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// A cached program's files.
pub(crate) struct Entry {
    pub program: PathBuf,
    pub checksum: PathBuf,
    pub manifest: PathBuf,
    pub mlir: PathBuf,
}

impl Entry {
    pub fn new(dir: &Path, key: &str) -> Entry {
        Entry {
            program: dir.join(format!("{key}.xla")),
            checksum: dir.join(format!("{key}.sha256")),
            manifest: dir.join(format!("{key}.json")),
            mlir: dir.join(format!("{key}.mlir")),
        }
    }

    /// The serialised program, if cached; a file whose hash is not the recorded one is an error.
    pub fn read(&self) -> Result<Option<Vec<u8>>, String> {
        let bytes = match std::fs::read(&self.program) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", self.program.display())),
        };
        let recorded = std::fs::read_to_string(&self.checksum).map_err(|e| {
            format!("{}: {e} (delete {} to compile again)", self.checksum.display(), self.program.display())
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if recorded.trim() != actual {
            return Err(format!(
                "{}: SHA-256 is {actual}, the cache recorded {} (delete the file to compile again)",
                self.program.display(),
                recorded.trim()
            ));
        }
        Ok(Some(bytes))
    }

    /// Records a compiled program (each file written aside, then renamed into place, so a reader
    /// never sees part of one; the checksum goes last, so a program without it is never trusted).
    pub fn write(&self, program: &[u8], manifest: &str) -> Result<(), String> {
        write_atomic(&self.manifest, manifest.as_bytes())?;
        write_atomic(&self.program, program)?;
        write_atomic(&self.checksum, hex::encode(Sha256::digest(program)).as_bytes())
    }

    /// Records only the module (a plugin that cannot serialise executables).
    pub fn write_mlir(&self, mlir: &str, manifest: &str) -> Result<(), String> {
        write_atomic(&self.manifest, manifest.as_bytes())?;
        write_atomic(&self.mlir, mlir.as_bytes())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let fail = |e: std::io::Error| {
        format!("writing the compile cache {}: {e} (set {CACHE_ENV}=off to run without it)", path.display())
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension(format!("partial-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::write(&tmp, bytes).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}
