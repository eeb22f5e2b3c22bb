//! The step log (`accelrt train --log FILE`): one JSON object per line, one line per optimiser
//! step, written and flushed as the step finishes, so a crashed or interrupted run keeps every
//! completed step and `tail -f` shows progress.
//!
//! ```json
//! {"step":1,"loss":2.0794,"lr":0.0001,"tokens":2048,"seconds":0.412}
//! ```
//!
//! `step` counts optimiser steps from 1 (the line is written after the step); `loss` is the
//! training loss of that step's batch (before the update); `lr` the learning rate the update used;
//! `tokens` the non-padding input tokens of the batch; `seconds` the wall time of the step (data,
//! forward, backward, update). Only finite numbers are written: a non-finite loss is an error for
//! the caller to stop on. No held-out loss is logged: `accelrt train` runs no evaluation during
//! training. Reading ignores keys it does not know.

use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// One line of the step log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Optimiser steps done, counting from 1; strictly increasing within a log.
    pub step: u64,
    /// Training loss of the step's batch before the update (MNRL or causal-LM cross-entropy,
    /// natural log); finite.
    pub loss: f64,
    /// The learning rate the update used (from the [`LrSchedule`](crate::LrSchedule)); finite.
    pub lr: f64,
    /// Non-padding input tokens of the step's batch (every micro-batch of a
    /// gradient-accumulation step).
    pub tokens: u64,
    /// Wall time of the step in seconds: data, forward, backward and update; finite.
    pub seconds: f64,
}

/// An open step log.
#[derive(Debug)]
pub struct StepLog {
    path: PathBuf,
    file: File,
    last_step: Option<u64>,
}

/// The longest step-log line read back (64 KiB; a line is about 100 bytes).
const MAX_LOG_LINE: u64 = 1 << 16;

/// Refuses a `path` that exists and is not a regular file: opening a FIFO waits for its other
/// end, and a device or directory is no log.
fn check_regular_or_missing(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(TrainError::BadFile {
            path: path.to_path_buf(),
            message: "exists and is not a regular file; the step log must be a file".into(),
        }),
        _ => Ok(()),
    }
}

impl StepLog {
    /// Starts a new log at `path` (an existing regular file is replaced).
    ///
    /// # Errors
    ///
    /// [`TrainError::BadFile`] when `path` exists and is not a regular file;
    /// [`TrainError::Io`] when it cannot be created.
    pub fn create(path: impl AsRef<Path>) -> Result<StepLog> {
        let path = path.as_ref().to_path_buf();
        check_regular_or_missing(&path)?;
        let file = File::create(&path).map_err(|e| TrainError::io(&path, e))?;
        Ok(StepLog { path, file, last_step: None })
    }

    /// Continues the log of a run resumed from a checkpoint taken after step `checkpoint_step`:
    /// the file is cut before the first line of a later step (written after the checkpoint,
    /// before the run stopped; those steps run again). The lines kept are kept **byte for byte**
    /// (never parsed and written again, which could change a float's last digit). A missing file
    /// starts a new log.
    ///
    /// # Errors
    ///
    /// [`TrainError::BadLine`] for a line up to the cut that is longer than 64 KiB, not UTF-8 or
    /// not a step record (the file is then left as it was); [`TrainError::BadFile`] and
    /// [`TrainError::Io`] as for [`StepLog::create`], or when copying and renaming fail.
    pub fn resume(path: impl AsRef<Path>, checkpoint_step: u64) -> Result<StepLog> {
        let path = path.as_ref().to_path_buf();
        check_regular_or_missing(&path)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return StepLog::create(&path),
            Err(e) => return Err(TrainError::io(&path, e)),
        };
        let (keep, last_step, ends_with_newline) = kept_prefix(&file, &path, checkpoint_step)?;
        // The kept bytes are copied aside and renamed over the log, so an interruption leaves the
        // old log, not half of one.
        let tmp = path.with_extension(format!("partial-{}", std::process::id()));
        let copy = || -> std::io::Result<()> {
            use std::io::Seek;
            let mut from = &file;
            from.seek(std::io::SeekFrom::Start(0))?;
            let mut out = File::create(&tmp)?;
            let copied = std::io::copy(&mut from.take(keep), &mut out)?;
            if copied != keep {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the log shrank while it was read"));
            }
            if !ends_with_newline {
                out.write_all(b"\n")?;
            }
            out.sync_all()
        };
        copy().map_err(|e| TrainError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| TrainError::io(&path, e))?;
        let file = OpenOptions::new().append(true).open(&path).map_err(|e| TrainError::io(&path, e))?;
        Ok(StepLog { path, file, last_step })
    }

    /// Appends one step's line and flushes it. Steps must increase; numbers must be finite.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] for a non-finite `loss`, `lr` or `seconds`, or a step not
    /// above the last one logged (nothing is written then); [`TrainError::Io`]
    /// when writing fails.
    pub fn write(&mut self, record: &StepRecord) -> Result<()> {
        let numbers = [("loss", record.loss), ("lr", record.lr), ("seconds", record.seconds)];
        for (name, v) in numbers {
            if !v.is_finite() {
                return Err(TrainError::InvalidArgument(format!("step {}: {name} is {v}", record.step)));
            }
        }
        if let Some(last) = self.last_step.filter(|&l| record.step <= l) {
            return Err(TrainError::InvalidArgument(format!(
                "step {} logged after step {last}: steps must increase",
                record.step
            )));
        }
        write_line(&mut self.file, record).map_err(|e| TrainError::io(&self.path, e))?;
        self.last_step = Some(record.step);
        Ok(())
    }
}

fn write_line(out: &mut File, record: &StepRecord) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(record)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

/// Scans a log for the lines to keep on resuming at `checkpoint_step`: everything before the
/// first line of a later step. Returns the byte length of that prefix, the last kept step, and
/// whether the prefix ends with a newline (an empty one counts as ending with one).
fn kept_prefix(file: &File, path: &Path, checkpoint_step: u64) -> Result<(u64, Option<u64>, bool)> {
    let mut reader = BufReader::new(file);
    let (mut keep, mut last_step, mut ends_with_newline) = (0u64, None, true);
    let mut buf = Vec::new();
    for line in 1u64.. {
        let Some((n, record)) = read_line(&mut reader, &mut buf, path, line)? else { break };
        if let Some(r) = record {
            if r.step > checkpoint_step {
                break;
            }
            last_step = Some(r.step);
        }
        keep += n as u64;
        ends_with_newline = buf.last() == Some(&b'\n');
    }
    Ok((keep, last_step, ends_with_newline))
}

/// Reads line number `line` of a log into `buf` (with its newline, if any), reading at most
/// [`MAX_LOG_LINE`] + 1 bytes. Returns `None` at the end of the file, else the bytes read and the
/// record (`None` for a blank line).
fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    path: &Path,
    line: u64,
) -> Result<Option<(usize, Option<StepRecord>)>> {
    buf.clear();
    let n = reader.by_ref().take(MAX_LOG_LINE + 1).read_until(b'\n', buf).map_err(|e| TrainError::io(path, e))?;
    if n == 0 {
        return Ok(None);
    }
    let bad = |message: String| TrainError::BadLine { path: path.to_path_buf(), line, message };
    if n as u64 > MAX_LOG_LINE {
        return Err(bad(format!("line longer than {MAX_LOG_LINE} bytes: not a step log")));
    }
    let text = std::str::from_utf8(buf).map_err(|_| bad("not UTF-8: not a step log".into()))?;
    if text.trim().is_empty() {
        return Ok(Some((n, None)));
    }
    let record = serde_json::from_str(text).map_err(|e| bad(format!("not a step record: {e}")))?;
    Ok(Some((n, Some(record))))
}

fn read_records(mut reader: impl BufRead, path: &Path) -> Result<Vec<StepRecord>> {
    let (mut out, mut buf) = (Vec::new(), Vec::new());
    for line in 1u64.. {
        match read_line(&mut reader, &mut buf, path, line)? {
            None => break,
            Some((_, Some(r))) => out.push(r),
            Some((_, None)) => {}
        }
    }
    Ok(out)
}

/// Reads a whole step log (for tools and tests); blank lines are skipped.
///
/// # Errors
///
/// [`TrainError::Io`] when the file cannot be read; [`TrainError::BadLine`] for a line that is
/// longer than 64 KiB (refused after reading at most that much), not UTF-8 or not a step record.
pub fn read_step_log(path: impl AsRef<Path>) -> Result<Vec<StepRecord>> {
    let path = path.as_ref();
    let f = File::open(path).map_err(|e| TrainError::io(path, e))?;
    read_records(BufReader::new(f), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: u64, loss: f64) -> StepRecord {
        StepRecord { step, loss, lr: 1e-4, tokens: 512, seconds: 0.25 }
    }

    #[test]
    fn one_json_line_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let mut log = StepLog::create(&path).unwrap();
        log.write(&rec(1, 2.5)).unwrap();
        log.write(&rec(2, 2.0)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"{"step":1,"loss":2.5,"lr":0.0001,"tokens":512,"seconds":0.25}"#);
        assert_eq!(read_step_log(&path).unwrap()[1], rec(2, 2.0));
        // A line with a key this build does not write (older builds declared `eval_loss`) reads.
        std::fs::write(&path, "{\"step\":1,\"loss\":1,\"lr\":0,\"tokens\":1,\"seconds\":1,\"eval_loss\":2}\n").unwrap();
        assert_eq!(read_step_log(&path).unwrap()[0].step, 1);
    }

    /// The fields docs/training.md lists for a step-log line are exactly the ones every line has
    /// (it listed an `eval_loss` that `accelrt train` never wrote).
    #[test]
    fn the_documented_fields_are_the_written_ones() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/training.md")).unwrap();
        let section = doc.split("## The step log").nth(1).expect("docs/training.md has the step-log section");
        let table = section.split("| field | meaning |").nth(1).expect("the step log's field table");
        let mut documented: Vec<&str> = table
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.trim_start_matches("| `").split('`').next().unwrap())
            .collect();
        let line = serde_json::to_value(rec(1, 1.0)).unwrap();
        let mut written: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        documented.sort_unstable();
        written.sort_unstable();
        assert_eq!(documented, written);
    }

    #[test]
    fn non_finite_numbers_and_repeated_steps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = StepLog::create(dir.path().join("log.jsonl")).unwrap();
        assert!(log.write(&rec(1, f64::NAN)).unwrap_err().to_string().contains("loss is NaN"));
        log.write(&rec(1, 1.0)).unwrap();
        assert!(log.write(&rec(1, 1.0)).is_err());
        assert!(log.write(&StepRecord { seconds: f64::INFINITY, ..rec(2, 1.0) }).is_err());
    }

    #[test]
    fn resume_drops_the_steps_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let mut log = StepLog::create(&path).unwrap();
        for s in 1..=5 {
            log.write(&rec(s, 10.0 - s as f64)).unwrap();
        }
        drop(log);
        let mut log = StepLog::resume(&path, 3).unwrap();
        assert!(log.write(&rec(3, 0.0)).is_err(), "step 3 is already in the log");
        log.write(&rec(4, 0.5)).unwrap();
        let steps: Vec<(u64, f64)> = read_step_log(&path).unwrap().iter().map(|r| (r.step, r.loss)).collect();
        assert_eq!(steps, vec![(1, 9.0), (2, 8.0), (3, 7.0), (4, 0.5)]);
        let fresh = dir.path().join("new.jsonl");
        StepLog::resume(&fresh, 10).unwrap().write(&rec(11, 1.0)).unwrap();
        assert_eq!(read_step_log(&fresh).unwrap().len(), 1);
    }

    /// Resuming keeps the earlier lines byte for byte, however they were written (it used to parse
    /// and print them again, which may change a float's digits).
    #[test]
    fn resume_keeps_earlier_lines_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let kept = "{\"step\":1,\"loss\":2.46400000000000019,\"lr\":1e-4,\"tokens\":512,\"seconds\":0.1}\n\n\
                    {\"seconds\":3.0E0,\"step\":2,\"loss\":0.30000000000000004,\"lr\":0.0,\"tokens\":7}\n";
        std::fs::write(&path, format!("{kept}{{\"step\":3,\"loss\":1,\"lr\":0,\"tokens\":1,\"seconds\":1}}\n"))
            .unwrap();
        let mut log = StepLog::resume(&path, 2).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), kept);
        log.write(&rec(3, 0.5)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(kept) && text.lines().count() == 4, "{text}");
        // A last line without its newline (a run killed mid-write, kept) gets one before the next.
        std::fs::write(&path, "{\"step\":1,\"loss\":1,\"lr\":0,\"tokens\":1,\"seconds\":1}").unwrap();
        StepLog::resume(&path, 1).unwrap().write(&rec(2, 0.5)).unwrap();
        assert_eq!(read_step_log(&path).unwrap().len(), 2);
    }

    /// A log path that is a FIFO or a directory is refused, not opened (a FIFO would block).
    #[cfg(unix)]
    #[test]
    fn a_log_that_is_not_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        for path in [fifo.as_path(), dir.path()] {
            assert!(StepLog::create(path).unwrap_err().to_string().contains("not a regular file"));
            assert!(StepLog::resume(path, 1).unwrap_err().to_string().contains("not a regular file"));
        }
    }

    #[test]
    fn a_corrupt_log_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "{\"step\":1,\"loss\":1,\"lr\":0,\"tokens\":1,\"seconds\":1}\ngarbage\n").unwrap();
        let msg = StepLog::resume(&path, 5).unwrap_err().to_string();
        assert!(msg.contains(":2: not a step record"), "{msg}");
        let msg = read_step_log(&path).unwrap_err().to_string();
        assert!(msg.contains(":2: not a step record"), "{msg}");
    }

    /// `read_step_log` caps a line at 64 KiB as `resume` does: a huge line is an error naming the
    /// file and the line, read no further than the cap (it used to be read whole into memory).
    #[test]
    fn read_step_log_refuses_a_line_over_64_kib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let first = "{\"step\":1,\"loss\":1,\"lr\":0,\"tokens\":1,\"seconds\":1}\n";
        // A valid record padded with spaces past the cap: only the cap rejects it.
        let long = format!("{{\"step\":2,\"loss\":1,\"lr\":0,\"tokens\":1,\"seconds\":1{}}}\n", " ".repeat(1 << 17));
        std::fs::write(&path, format!("{first}{long}")).unwrap();
        let err = read_step_log(&path).unwrap_err();
        match &err {
            TrainError::BadLine { path: p, line, message } => {
                assert_eq!((p.as_path(), *line), (path.as_path(), 2));
                assert!(message.contains("longer than 65536 bytes"), "{message}");
            }
            other => panic!("expected BadLine, got {other:?}"),
        }
        assert!(err.to_string().starts_with(&format!("{}:2:", path.display())), "{err}");
        // A line of exactly 64 KiB, newline included, is still read.
        let head = "{\"step\":1,\"loss\":1,\"lr\":0,\"tokens\":1,\"seconds\":1";
        let at_cap = format!("{head}{}}}\n", " ".repeat(MAX_LOG_LINE as usize - head.len() - 2));
        assert_eq!(at_cap.len() as u64, MAX_LOG_LINE);
        std::fs::write(&path, &at_cap).unwrap();
        assert_eq!(read_step_log(&path).unwrap().len(), 1);
    }
}
