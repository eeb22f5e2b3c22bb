//! `corpus.txt` for causal-LM training: the whole file tokenised as one stream (so no window starts
//! with an artificial document boundary), then cut into consecutive, non-overlapping windows of
//! `seq_len` tokens. Window `k` is tokens `k*seq_len .. (k+1)*seq_len`; the tail shorter than a
//! window is not used. Each window is one training sequence: inputs and labels are the same ids,
//! and the loss predicts tokens 1..seq_len from their prefixes (transformers'
//! `LlamaForCausalLM(input_ids=w, labels=w)`), so a window yields `seq_len - 1` predictions.
//!
//! The file is read whole, because tokenising pieces separately changes the tokens at the seams.
//! What bounds memory is an explicit size limit ([`DEFAULT_MAX_CORPUS_BYTES`]), not the file; only
//! a regular file is read (see [`crate::datafile`]), and what was read is identified by its length
//! and SHA-256 ([`TokenWindows::identity`]).

use crate::datafile::{self, DataIdentity, IdentityHasher};
use crate::{Result, TrainError};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest corpus file read by default (256 MiB of text; about 250 M tokens kept as `u32`).
pub const DEFAULT_MAX_CORPUS_BYTES: u64 = 256 << 20;

/// A tokenised corpus and the window length it is cut into.
#[derive(Debug, Clone)]
pub struct TokenWindows {
    tokens: Vec<u32>,
    seq_len: usize,
    source: PathBuf,
    identity: Option<DataIdentity>,
}

impl TokenWindows {
    /// Reads `path` (UTF-8, at most `max_bytes`), tokenises it with `tokenize` in one call and
    /// cuts windows of `seq_len`. `tokenize` is the model's tokenizer: the text as it is, no special
    /// tokens added (what `Tokenizer::encode(text, false)` gives).
    pub fn from_file<E: std::fmt::Display>(
        path: impl AsRef<Path>,
        seq_len: usize,
        max_bytes: u64,
        tokenize: impl FnOnce(&str) -> std::result::Result<Vec<u32>, E>,
    ) -> Result<TokenWindows> {
        let path = path.as_ref();
        let (file, len) = datafile::open_regular(path, max_bytes)?;
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(|e| TrainError::io(path, e))?;
        // The size was checked at opening; a file that grew since is still cut off here.
        if bytes.len() as u64 > max_bytes {
            return Err(TrainError::BadFile {
                path: path.to_path_buf(),
                message: format!("larger than the {max_bytes}-byte limit for a corpus"),
            });
        }
        let mut hasher = IdentityHasher::default();
        hasher.update(&bytes);
        let identity = hasher.finish();
        let text = String::from_utf8(bytes).map_err(|e| TrainError::BadFile {
            path: path.to_path_buf(),
            message: format!("not UTF-8 (first bad byte at offset {})", e.utf8_error().valid_up_to()),
        })?;
        let tokens =
            tokenize(&text).map_err(|e| TrainError::Tokenizer { path: path.to_path_buf(), message: e.to_string() })?;
        let mut windows = Self::from_tokens(tokens, seq_len, path)?;
        windows.identity = Some(identity);
        Ok(windows)
    }

    /// Windows over tokens already computed; `source` names them in messages.
    pub fn from_tokens(tokens: Vec<u32>, seq_len: usize, source: impl Into<PathBuf>) -> Result<TokenWindows> {
        let source = source.into();
        if seq_len < 2 {
            return Err(TrainError::InvalidArgument(format!(
                "--seq-len must be at least 2 (a window predicts seq_len - 1 tokens), got {seq_len}"
            )));
        }
        if tokens.len() < seq_len {
            return Err(TrainError::BadFile {
                path: source,
                message: format!("{} tokens, fewer than one window of {seq_len}", tokens.len()),
            });
        }
        Ok(TokenWindows { tokens, seq_len, source, identity: None })
    }

    /// The length and SHA-256 of the file the tokens came from ([`TokenWindows::from_file`];
    /// `None` for [`TokenWindows::from_tokens`]).
    pub fn identity(&self) -> Option<&DataIdentity> {
        self.identity.as_ref()
    }

    /// The number of whole windows.
    pub fn len(&self) -> usize {
        self.tokens.len() / self.seq_len
    }

    /// Always false: construction refuses a corpus shorter than one window.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens per window.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Every token of the corpus, the unused tail included.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Tokens after the last whole window (not trained on).
    pub fn unused_tail(&self) -> usize {
        self.tokens.len() % self.seq_len
    }

    /// The file the tokens came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Window `index` (0-based, in corpus order).
    pub fn window(&self, index: usize) -> Result<&[u32]> {
        if index >= self.len() {
            return Err(TrainError::InvalidArgument(format!("window {index} out of range ({} windows)", self.len())));
        }
        Ok(&self.tokens[index * self.seq_len..(index + 1) * self.seq_len])
    }

    /// The windows at `indices` as one row-major `[indices.len(), seq_len]` block of ids (a batch
    /// from a [`crate::sampler::Sampler`]).
    pub fn batch(&self, indices: &[usize]) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(indices.len() * self.seq_len);
        for &i in indices {
            out.extend_from_slice(self.window(i)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A stand-in tokenizer: one id per byte, so the expected windows are easy to write down.
    fn bytes_tokenizer(text: &str) -> std::result::Result<Vec<u32>, String> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn file_with(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f
    }

    #[test]
    fn consecutive_windows_and_a_dropped_tail() {
        let f = file_with(b"abcdefghij");
        let w = TokenWindows::from_file(f.path(), 3, 1000, bytes_tokenizer).unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!(w.unused_tail(), 1);
        assert_eq!(w.window(0).unwrap(), &[97, 98, 99]);
        assert_eq!(w.window(2).unwrap(), &[103, 104, 105]);
        assert!(w.window(3).is_err(), "the tail `j` is no window");
        assert_eq!(w.batch(&[2, 0]).unwrap(), vec![103, 104, 105, 97, 98, 99]);
    }

    #[test]
    fn the_text_is_tokenised_in_one_call() {
        let f = file_with("line one\nline two\n".as_bytes());
        let mut calls = 0;
        let w = TokenWindows::from_file(f.path(), 4, 1000, |t: &str| {
            calls += 1;
            assert_eq!(t, "line one\nline two\n");
            bytes_tokenizer(t)
        })
        .unwrap();
        assert_eq!(calls, 1);
        assert_eq!(w.tokens().len(), 18);
    }

    #[test]
    fn limits_and_bad_input_are_refused() {
        let f = file_with(b"abcdefghij");
        let too_big = TokenWindows::from_file(f.path(), 3, 9, bytes_tokenizer).unwrap_err().to_string();
        assert!(too_big.contains("9-byte limit"), "{too_big}");
        assert!(TokenWindows::from_file(f.path(), 10, 10, bytes_tokenizer).is_ok(), "exactly the limit is fine");
        let short = TokenWindows::from_file(f.path(), 11, 100, bytes_tokenizer).unwrap_err().to_string();
        assert!(short.contains("fewer than one window"), "{short}");
        assert!(TokenWindows::from_file(f.path(), 1, 100, bytes_tokenizer).is_err(), "seq_len 1 predicts nothing");
        let bad = file_with(b"ok\xff\xfe");
        let msg = TokenWindows::from_file(bad.path(), 2, 100, bytes_tokenizer).unwrap_err().to_string();
        assert!(msg.contains("not UTF-8") && msg.contains("offset 2"), "{msg}");
        let failing = TokenWindows::from_file(f.path(), 2, 100, |_: &str| Err::<Vec<u32>, _>("no vocab")).unwrap_err();
        assert!(failing.to_string().contains("no vocab"));
        // Not a file: refused before reading (a FIFO would hang, /dev/zero fill memory).
        let dir = tempfile::tempdir().unwrap();
        let msg = TokenWindows::from_file(dir.path(), 2, 100, bytes_tokenizer).unwrap_err().to_string();
        assert!(msg.contains("is a directory"), "{msg}");
        #[cfg(unix)]
        {
            let msg = TokenWindows::from_file("/dev/zero", 2, 1 << 40, bytes_tokenizer).unwrap_err().to_string();
            assert!(msg.contains("is a device"), "{msg}");
        }
    }

    #[test]
    fn the_identity_is_what_was_read() {
        let f = file_with(b"abc");
        let w = TokenWindows::from_file(f.path(), 2, 100, bytes_tokenizer).unwrap();
        let id = w.identity().unwrap();
        assert_eq!(id.bytes, 3);
        assert_eq!(id.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(TokenWindows::from_tokens(vec![1, 2], 2, "x").unwrap().identity().is_none());
    }
}
