//! `pairs.jsonl`: one `{"anchor": "…", "positive": "…"}` object per line, the input of
//! MultipleNegativesRankingLoss training.
//!
//! The file is read once to check every line and remember where each example starts; examples are
//! then read back by offset when a batch needs them. Memory is 24 bytes per example, not the file,
//! and a line longer than [`MAX_LINE_BYTES`] is an error, not an allocation as large as the file.
//! Only a regular file of at most [`MAX_PAIRS_FILE_BYTES`] is read (see [`crate::datafile`]), and
//! what was read is identified by its length and SHA-256 ([`PairsFile::identity`]).

use crate::datafile::{self, DataIdentity, IdentityHasher};
use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The longest line accepted (1 MiB): far above any sentence an encoder with a 512-token limit
/// can use, low enough that a file without newlines cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The largest pairs file read (1 GiB): millions of pairs, while the index of the smallest
/// possible lines (30 bytes each) stays under 1 GB of memory.
pub const MAX_PAIRS_FILE_BYTES: u64 = 1 << 30;

/// One training example: a text and the text that should embed close to it. The other positives
/// of a batch are its negatives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    /// The query side (JSON key `anchor`): non-empty and not only whitespace.
    pub anchor: String,
    /// The text that should embed close to `anchor` (JSON key `positive`); the same rules.
    pub positive: String,
}

/// Where one example's line lies in the file.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    len: u32,
    line: u64,
}

/// A checked `pairs.jsonl` file with an index of its examples.
#[derive(Debug)]
pub struct PairsFile {
    path: PathBuf,
    file: File,
    entries: Vec<Entry>,
    file_len: u64,
    identity: DataIdentity,
}

/// Parses one line (without its newline) as a [`Pair`]; `line` is 1-based, for the message.
///
/// # Errors
///
/// [`TrainError::BadLine`] when the line is not a JSON object with exactly the string keys
/// `anchor` and `positive`, or when either text is empty or only whitespace.
pub fn parse_pair_line(path: &Path, line: u64, bytes: &[u8]) -> Result<Pair> {
    let bad = |message: String| TrainError::BadLine { path: path.to_path_buf(), line, message };
    let expected = "expected a JSON object {\"anchor\": \"…\", \"positive\": \"…\"}";
    // serde would also build the struct from a two-element array; only the object form is the format.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(bad(expected.into()));
    }
    let pair: Pair = serde_json::from_slice(bytes).map_err(|e| bad(format!("{expected} ({e})")))?;
    // A text of only whitespace tokenises to nothing but the special tokens: no example at all.
    for (key, text) in [("anchor", &pair.anchor), ("positive", &pair.positive)] {
        if text.is_empty() {
            return Err(bad(format!("\"{key}\" is an empty string")));
        }
        if text.trim().is_empty() {
            return Err(bad(format!("\"{key}\" is only whitespace")));
        }
    }
    Ok(pair)
}

/// Reads the next line of at most `max` bytes into `buf` (without `\n` or `\r\n`), hashing the
/// raw bytes into `hasher`. Returns the raw length read, `None` at the end of the file.
fn read_bounded_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
    hasher: &mut IdentityHasher,
) -> std::io::Result<Option<usize>> {
    buf.clear();
    // +1 for the newline, +1 more to tell "exactly max" from "longer than max".
    let n = reader.take(max as u64 + 2).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    hasher.update(buf);
    let raw = n;
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    Ok(Some(raw))
}

impl PairsFile {
    /// Opens `path` (a regular file of at most [`MAX_PAIRS_FILE_BYTES`]), checks every line and
    /// indexes the examples. Blank lines are skipped (they still count for the line numbers of
    /// messages); anything else that is not a pair of two strings with something besides
    /// whitespace is an error naming the line.
    ///
    /// # Errors
    ///
    /// [`TrainError::Io`] or [`TrainError::BadFile`] from [`datafile::open_regular`];
    /// [`TrainError::BadLine`] for a line over [`MAX_LINE_BYTES`] or not a pair;
    /// [`TrainError::BadFile`] when the file holds no pair.
    pub fn open(path: impl AsRef<Path>) -> Result<PairsFile> {
        let path = path.as_ref().to_path_buf();
        let (file, len) = datafile::open_regular(&path, MAX_PAIRS_FILE_BYTES)?;
        // Only the length seen at opening is read: a file growing meanwhile is caught by `get`.
        let reader = file.try_clone().map_err(|e| TrainError::io(&path, e))?.take(len);
        let mut reader = BufReader::with_capacity(1 << 16, reader);
        let mut hasher = IdentityHasher::default();
        let mut entries = Vec::new();
        let mut buf = Vec::new();
        let mut offset = 0u64;
        let mut line = 0u64;
        while let Some(raw) = read_bounded_line(&mut reader, &mut buf, MAX_LINE_BYTES, &mut hasher)
            .map_err(|e| TrainError::io(&path, e))?
        {
            line += 1;
            if buf.len() > MAX_LINE_BYTES {
                return Err(TrainError::BadLine {
                    path,
                    line,
                    message: format!("line longer than {MAX_LINE_BYTES} bytes"),
                });
            }
            if !buf.iter().all(u8::is_ascii_whitespace) {
                parse_pair_line(&path, line, &buf)?;
                entries.push(Entry { offset, len: buf.len() as u32, line });
            }
            offset += raw as u64;
        }
        if entries.is_empty() {
            return Err(TrainError::BadFile { path, message: "no pairs in the file".into() });
        }
        Ok(PairsFile { path, file, entries, file_len: offset, identity: hasher.finish() })
    }

    /// The length and SHA-256 of the bytes indexed (what a checkpoint records of its data).
    pub fn identity(&self) -> &DataIdentity {
        &self.identity
    }

    /// The file this reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many pairs the file holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: [`PairsFile::open`] refuses a file without pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The 1-based line of example `index` (for messages).
    ///
    /// # Panics
    ///
    /// If `index >= self.len()`.
    pub fn line_of(&self, index: usize) -> u64 {
        self.entries[index].line
    }

    /// Reads example `index` (0-based, in file order) back from the file.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] for an index past the end; [`TrainError::BadFile`] when
    /// the file's length changed since it was indexed; [`TrainError::Io`] when reading fails;
    /// [`TrainError::BadLine`] when the bytes at the offset no longer parse.
    pub fn get(&mut self, index: usize) -> Result<Pair> {
        let entry = *self.entries.get(index).ok_or_else(|| {
            TrainError::InvalidArgument(format!("pair {index} out of range ({} pairs)", self.entries.len()))
        })?;
        let changed = |path: &Path| TrainError::BadFile {
            path: path.to_path_buf(),
            message: "the file changed while it was being read for training".into(),
        };
        let len = self.file.metadata().map_err(|e| TrainError::io(&self.path, e))?.len();
        if len != self.file_len {
            return Err(changed(&self.path));
        }
        let mut buf = vec![0u8; entry.len as usize];
        self.file.seek(SeekFrom::Start(entry.offset)).map_err(|e| TrainError::io(&self.path, e))?;
        self.file.read_exact(&mut buf).map_err(|e| TrainError::io(&self.path, e))?;
        parse_pair_line(&self.path, entry.line, &buf)
    }

    /// Reads the examples at `indices`, in that order (a batch from a [`crate::sampler::Sampler`]).
    pub fn batch(&mut self, indices: &[usize]) -> Result<Vec<Pair>> {
        indices.iter().map(|&i| self.get(i)).collect()
    }
}

/// Writes pairs as JSON lines (the format [`PairsFile`] reads).
pub fn write_pairs(out: &mut impl std::io::Write, pairs: &[Pair]) -> std::io::Result<()> {
    for p in pairs {
        serde_json::to_writer(&mut *out, p)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn reads_pairs_in_file_order_by_offset() {
        let f = file_with(
            "{\"anchor\": \"a1\", \"positive\": \"p1\"}\n\n{\"positive\": \"p2 ü\", \"anchor\": \"a2\"}\r\n{\"anchor\":\"a3\",\"positive\":\"p3\"}"
                .as_bytes(),
        );
        let mut pairs = PairsFile::open(f.path()).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs.get(1).unwrap(), Pair { anchor: "a2".into(), positive: "p2 ü".into() });
        assert_eq!(pairs.line_of(1), 3, "the blank line still counts");
        let batch = pairs.batch(&[2, 0]).unwrap();
        assert_eq!(batch[0].anchor, "a3");
        assert_eq!(batch[1].positive, "p1");
        assert!(pairs.get(3).is_err());
    }

    #[test]
    fn malformed_lines_are_named() {
        let cases: &[(&str, u64, &str)] = &[
            ("{\"anchor\":\"a\",\"positive\":\"p\"}\nnot json\n", 2, "expected a JSON object"),
            ("{\"anchor\":\"a\"}\n", 1, "positive"),
            ("{\"anchor\":\"a\",\"positve\":\"p\"}\n", 1, "positve"),
            ("{\"anchor\":\"\",\"positive\":\"p\"}\n", 1, "\"anchor\" is an empty string"),
            ("\n{\"anchor\":\" \\t\\n \",\"positive\":\"p\"}\n", 2, "\"anchor\" is only whitespace"),
            ("{\"anchor\":\"a\",\"positive\":\"\\u00a0 \"}\n", 1, "\"positive\" is only whitespace"),
            ("\n\n{\"anchor\":\"a\",\"positive\":7}\n", 3, "expected a JSON object"),
            ("[\"a\", \"p\"]\n", 1, "expected a JSON object"),
        ];
        for (content, line, needle) in cases {
            let f = file_with(content.as_bytes());
            let err = PairsFile::open(f.path()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, TrainError::BadLine { line: l, .. } if l == *line), "{content:?}: {msg}");
            assert!(msg.contains(&format!(":{line}: ")) && msg.contains(needle), "{content:?}: {msg}");
        }
    }

    #[test]
    fn an_overlong_line_is_refused_without_reading_it_whole() {
        let mut content = b"{\"anchor\":\"a\",\"positive\":\"p\"}\n{\"anchor\":\"".to_vec();
        content.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        content.extend(b"\",\"positive\":\"p\"}\n");
        let f = file_with(&content);
        let msg = PairsFile::open(f.path()).unwrap_err().to_string();
        assert!(msg.contains(":2: line longer than"), "{msg}");
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted() {
        let head = "{\"anchor\":\"a\",\"positive\":\"";
        let tail = "\"}";
        let fill = MAX_LINE_BYTES - head.len() - tail.len();
        let line = format!("{head}{}{tail}\n", "y".repeat(fill));
        assert_eq!(line.len(), MAX_LINE_BYTES + 1);
        let f = file_with(line.as_bytes());
        let mut pairs = PairsFile::open(f.path()).unwrap();
        assert_eq!(pairs.get(0).unwrap().positive.len(), fill);
    }

    #[test]
    fn an_empty_file_is_refused() {
        let f = file_with(b"\n  \n");
        assert!(PairsFile::open(f.path()).unwrap_err().to_string().contains("no pairs"));
    }

    #[test]
    fn a_file_changed_after_indexing_is_detected() {
        let mut f = file_with(b"{\"anchor\":\"a\",\"positive\":\"p\"}\n");
        let mut pairs = PairsFile::open(f.path()).unwrap();
        f.write_all(b"{\"anchor\":\"b\",\"positive\":\"q\"}\n").unwrap();
        f.flush().unwrap();
        assert!(pairs.get(0).unwrap_err().to_string().contains("changed"));
    }

    #[test]
    fn written_pairs_read_back() {
        let pairs = vec![
            Pair { anchor: "say \"hi\"\n".into(), positive: "tab\there".into() },
            Pair { anchor: "x".into(), positive: "y".into() },
        ];
        let mut bytes = Vec::new();
        write_pairs(&mut bytes, &pairs).unwrap();
        let f = file_with(&bytes);
        let mut back = PairsFile::open(f.path()).unwrap();
        assert_eq!(back.batch(&[0, 1]).unwrap(), pairs);
    }
}
