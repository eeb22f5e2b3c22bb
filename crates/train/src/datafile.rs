//! Opening a training data file: regular files only, and what identifies its contents.
//!
//! A FIFO or a character device such as `/dev/zero` never ends (reading one for training would
//! hang or fill memory), and a directory is no data; all three are refused before anything is
//! read. The readers bound how much they read, and hash what they read into a [`DataIdentity`]
//! (byte count and SHA-256), which a checkpoint records so that a resumed run can refuse other
//! data behind the same path.

use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::Path;

/// What a data file held when it was read: its length in bytes and the SHA-256 of those bytes
/// (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataIdentity {
    /// Bytes read (the whole file as it was when opened).
    pub bytes: u64,
    /// SHA-256 of those bytes, 64 lower-case hex digits.
    pub sha256: String,
}

impl std::fmt::Display for DataIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, SHA-256 {}", self.bytes, self.sha256)
    }
}

/// Hashes bytes as they are read, into a [`DataIdentity`].
#[derive(Default)]
pub(crate) struct IdentityHasher {
    hasher: Sha256,
    bytes: u64,
}

impl IdentityHasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
    }

    pub(crate) fn finish(self) -> DataIdentity {
        DataIdentity { bytes: self.bytes, sha256: hex::encode(self.hasher.finalize()) }
    }
}

/// Opens `path` for reading if it is a regular file (symbolic links followed) of at most
/// `max_bytes`, and returns it with its length. Anything else — a directory, a FIFO, a device,
/// a socket — is refused by name **before** it is opened, since opening a FIFO for reading blocks
/// until a writer appears; the opened file is checked again, so a path swapped in between is
/// refused too (short of a FIFO swapped in during that window, whose `open` would wait).
///
/// # Errors
///
/// [`TrainError::Io`] when the path cannot be examined or opened (missing, no permission);
/// [`TrainError::BadFile`] when it is not a regular file or is longer than `max_bytes`.
pub fn open_regular(path: &Path, max_bytes: u64) -> Result<(File, u64)> {
    let not_regular = |kind: &str| TrainError::BadFile {
        path: path.to_path_buf(),
        message: format!("is {kind}, not a regular file; training data must be a file"),
    };
    let kind = |meta: &std::fs::Metadata| -> Option<&'static str> {
        let t = meta.file_type();
        if t.is_file() {
            return None;
        }
        if t.is_dir() {
            return Some("a directory");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if t.is_fifo() {
                return Some("a FIFO (named pipe)");
            }
            if t.is_char_device() || t.is_block_device() {
                return Some("a device");
            }
            if t.is_socket() {
                return Some("a socket");
            }
        }
        Some("not a regular file")
    };
    let meta = std::fs::metadata(path).map_err(|e| TrainError::io(path, e))?;
    if let Some(k) = kind(&meta) {
        return Err(not_regular(k));
    }
    let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
    let meta = file.metadata().map_err(|e| TrainError::io(path, e))?;
    if let Some(k) = kind(&meta) {
        return Err(not_regular(k));
    }
    if meta.len() > max_bytes {
        return Err(TrainError::BadFile {
            path: path.to_path_buf(),
            message: format!("{} bytes, more than the {max_bytes}-byte limit", meta.len()),
        });
    }
    Ok((file, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.txt");
        std::fs::write(&file, b"hello").unwrap();
        assert_eq!(open_regular(&file, 5).unwrap().1, 5);
        let big = open_regular(&file, 4).unwrap_err().to_string();
        assert!(big.contains("more than the 4-byte limit"), "{big}");
        let d = open_regular(dir.path(), 1 << 20).unwrap_err().to_string();
        assert!(d.contains("is a directory, not a regular file"), "{d}");
        #[cfg(unix)]
        {
            let dev = open_regular(Path::new("/dev/zero"), 1 << 20).unwrap_err().to_string();
            assert!(dev.contains("is a device"), "{dev}");
        }
        let missing = open_regular(&dir.path().join("nope"), 10).unwrap_err();
        assert!(matches!(missing, TrainError::Io { .. }));
    }

    /// A FIFO is refused without being opened (opening it would wait for a writer forever).
    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        let msg = open_regular(&fifo, 1 << 20).unwrap_err().to_string();
        assert!(msg.contains("a FIFO"), "{msg}");
    }

    #[test]
    fn the_identity_is_length_and_sha256() {
        let mut h = IdentityHasher::default();
        h.update(b"ab");
        h.update(b"c");
        let id = h.finish();
        assert_eq!(id.bytes, 3);
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(id.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
