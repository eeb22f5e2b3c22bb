//! Where accelrt keeps what it fetches and compiles, and how it checks files: the rules every crate
//! with a cache (models, PJRT plugins and programs, NEFFs) follows, written once.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the cache directory.
pub const CACHE_ENV: &str = "ACCELRT_CACHE";

/// The cache directory: `$ACCELRT_CACHE`, else `$XDG_CACHE_HOME/accelrt`, else `~/.cache/accelrt`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("accelrt");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("accelrt")
}

/// Hex SHA-256 of a file, streamed in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
