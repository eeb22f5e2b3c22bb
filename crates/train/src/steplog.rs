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
//! forward, backward, update). `eval_loss`, when present, is the held-out loss measured after the
//! step. Only finite numbers are written: a non-finite loss is an error for the caller to stop on.

use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// One line of the step log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub tokens: u64,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
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
    pub fn write(&mut self, record: &StepRecord) -> Result<()> {
        let numbers = [("loss", record.loss), ("lr", record.lr), ("seconds", record.seconds)];
        for (name, v) in numbers.into_iter().chain(record.eval_loss.map(|v| ("eval_loss", v))) {
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
        buf.clear();
        let n =
            (&mut reader).take(MAX_LOG_LINE + 1).read_until(b'\n', &mut buf).map_err(|e| TrainError::io(path, e))?;
        if n == 0 {
            break;
        }
        let bad = |message: String| TrainError::BadLine { path: path.to_path_buf(), line, message };
        if n as u64 > MAX_LOG_LINE {
            return Err(bad(format!("line longer than {MAX_LOG_LINE} bytes: not a step log")));
        }
        let text = std::str::from_utf8(&buf).map_err(|_| bad("not UTF-8: not a step log".into()))?;
        if !text.trim().is_empty() {
            let r: StepRecord = serde_json::from_str(text).map_err(|e| bad(format!("not a step record: {e}")))?;
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

fn read_records(reader: impl BufRead, path: &Path) -> Result<Vec<StepRecord>> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let r = serde_json::from_str(&line).map_err(|e| TrainError::BadLine {
            path: path.to_path_buf(),
            line: i as u64 + 1,
            message: format!("not a step record: {e}"),
        })?;
        out.push(r);
    }
    Ok(out)
}

/// Reads a whole step log (for tools and tests).
pub fn read_step_log(path: impl AsRef<Path>) -> Result<Vec<StepRecord>> {
    let path = path.as_ref();
    let f = File::open(path).map_err(|e| TrainError::io(path, e))?;
    read_records(BufReader::new(f), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: u64, loss: f64) -> StepRecord {
        StepRecord { step, loss, lr: 1e-4, tokens: 512, seconds: 0.25, eval_loss: None }
    }

    #[test]
    fn one_json_line_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let mut log = StepLog::create(&path).unwrap();
        log.write(&rec(1, 2.5)).unwrap();
        log.write(&StepRecord { eval_loss: Some(2.25), ..rec(2, 2.0) }).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"{"step":1,"loss":2.5,"lr":0.0001,"tokens":512,"seconds":0.25}"#);
        assert!(lines[1].ends_with(r#""eval_loss":2.25}"#), "{}", lines[1]);
        assert_eq!(read_step_log(&path).unwrap()[1].eval_loss, Some(2.25));
    }

    #[test]
    fn non_finite_numbers_and_repeated_steps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = StepLog::create(dir.path().join("log.jsonl")).unwrap();
        assert!(log.write(&rec(1, f64::NAN)).unwrap_err().to_string().contains("loss is NaN"));
        log.write(&rec(1, 1.0)).unwrap();
        assert!(log.write(&rec(1, 1.0)).is_err());
        assert!(log.write(&StepRecord { eval_loss: Some(f64::INFINITY), ..rec(2, 1.0) }).is_err());
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
    }
}
