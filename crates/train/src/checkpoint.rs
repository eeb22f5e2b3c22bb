//! What a training checkpoint records besides its tensors: `DIR/checkpoint/trainer.json`, next to
//! `state.safetensors` (every parameter and optimiser moment, see [`crate::step::save_state`]).
//!
//! A checkpoint is read back by `accelrt train --resume`, so it is input like any other and is
//! checked before anything is restored: the file must be a regular file of at most
//! [`MAX_TRAINER_JSON_BYTES`], every count is bounded ([`MAX_STEPS`], [`MAX_GRAD_ACCUM`]), and the
//! data position must be the one the step count implies (`epoch · batches_per_epoch + batch =
//! steps · grad_accum`), so no count can wrap arithmetic later. [`TrainerState::differences`] names
//! the settings in which a checkpoint differs from the run that wants to resume it.

use crate::datafile::{self, DataIdentity};
use crate::step::DropoutRates;
use crate::{Result, SamplerState, TrainError};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The checkpoint's JSON file name.
pub const TRAINER_JSON: &str = "trainer.json";
/// The checkpoint's tensors' file name.
pub const STATE_FILE: &str = "state.safetensors";
/// The most optimiser steps a run may have (2³²): far beyond any real run, and small enough that
/// steps × micro-batches × tokens stay far from `u64`'s limits.
pub const MAX_STEPS: u64 = 1 << 32;
/// The most micro-batches per optimiser step (`--grad-accum`).
pub const MAX_GRAD_ACCUM: u64 = 1 << 16;
/// The largest `trainer.json` read (1 MiB; a real one is under 1 KiB).
pub const MAX_TRAINER_JSON_BYTES: u64 = 1 << 20;

/// `trainer.json`: the step count, the data position, and the settings a resumed run must share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// Optimiser steps applied so far.
    pub steps: u64,
    /// Micro-batches per optimiser step (`--grad-accum`).
    pub grad_accum: u64,
    /// The data position (in micro-batches) and order: the next batch after a resume is the one
    /// the uninterrupted run would have had.
    pub sampler: SamplerState,
    /// `mnrl` or `causal-lm`.
    pub task: String,
    /// The `--model` argument.
    pub model: String,
    /// The data file as it was named (for messages; the data is identified by `data_identity`).
    pub data: PathBuf,
    /// Length and SHA-256 of the data file's bytes as the run read them.
    pub data_identity: DataIdentity,
    /// Tokens per window (decoders).
    pub seq_len: Option<usize>,
    /// The dropout probabilities the step applies.
    pub dropout: DropoutRates,
    /// The run seed the dropout masks derive from (only with dropout).
    pub dropout_seed: Option<u64>,
    /// The compute dtype of mixed precision (`--mixed-precision`), `None` for all-f32 training
    /// (also what a checkpoint written before the option existed reads as).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "mixed_precision_name")]
    pub mixed_precision: Option<accelrt_core::DType>,
}

/// `mixed_precision` as the CLI spells it (`"bf16"`), not as `DType`'s serde names it; any other
/// value is refused when trainer.json is read, since nothing else is a mixed precision.
mod mixed_precision_name {
    use accelrt_core::DType;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<DType>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_str(&d.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DType>, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None => Ok(None),
            Some("bf16") => Ok(Some(DType::BF16)),
            Some(other) => {
                Err(serde::de::Error::custom(format!("mixed_precision `{other}` is not one (only `bf16` is)")))
            }
        }
    }
}

impl TrainerState {
    /// Micro-batches consumed so far: `steps · grad_accum` (bounded by [`TrainerState::check`]).
    pub fn micro_batches(&self) -> u64 {
        self.steps * self.grad_accum
    }

    /// Checks the counts' bounds and that the data position is the one `steps` implies.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| TrainError::Restore(m);
        if self.steps > MAX_STEPS {
            return Err(bad(format!("{} steps: more than the {MAX_STEPS} a run may have", self.steps)));
        }
        if self.grad_accum == 0 || self.grad_accum > MAX_GRAD_ACCUM {
            return Err(bad(format!("grad_accum {} is not between 1 and {MAX_GRAD_ACCUM}", self.grad_accum)));
        }
        let s = &self.sampler;
        if s.batch_size == 0 || s.examples < s.batch_size {
            return Err(bad(format!("a batch size of {} over {} examples", s.batch_size, s.examples)));
        }
        let per_epoch = s.examples / s.batch_size;
        let consumed = s.position.epoch.checked_mul(per_epoch).and_then(|e| e.checked_add(s.position.batch));
        if s.position.batch >= per_epoch || consumed != Some(self.micro_batches()) {
            return Err(bad(format!(
                "the data position (epoch {}, batch {} of {per_epoch}) is not where {} steps of {} batch(es) end",
                s.position.epoch, s.position.batch, self.steps, self.grad_accum
            )));
        }
        Ok(())
    }

    /// Reads and checks `dir/trainer.json`.
    pub fn read(dir: &Path) -> Result<TrainerState> {
        let path = dir.join(TRAINER_JSON);
        let (file, _) = datafile::open_regular(&path, MAX_TRAINER_JSON_BYTES)?;
        let mut text = String::new();
        file.take(MAX_TRAINER_JSON_BYTES).read_to_string(&mut text).map_err(|e| TrainError::io(&path, e))?;
        let state: TrainerState = serde_json::from_str(&text).map_err(|e| TrainError::BadFile {
            path: path.clone(),
            message: format!("not a checkpoint of this version of accelrt train: {e}"),
        })?;
        state.check().map_err(|e| TrainError::BadFile { path, message: e.to_string() })?;
        Ok(state)
    }

    /// Writes `dir/trainer.json` (aside, then renamed).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("a TrainerState serialises");
        let tmp = dir.join(format!("{TRAINER_JSON}.partial"));
        std::fs::write(&tmp, json).map_err(|e| TrainError::io(&tmp, e))?;
        let path = dir.join(TRAINER_JSON);
        std::fs::rename(&tmp, &path).map_err(|e| TrainError::io(&path, e))
    }

    /// The settings in which `self` (a checkpoint) differs from `run` (the run resuming it), one
    /// phrase each; empty when the run may resume it. The step count and the data position are
    /// not settings; neither is the data's path (the same bytes elsewhere are the same data).
    pub fn differences(&self, run: &TrainerState) -> Vec<String> {
        let mut out = Vec::new();
        let mut differ = |what: &str, saved: String, now: String| {
            if saved != now {
                out.push(format!("{what}: the checkpoint has {saved}, this run {now}"));
            }
        };
        differ("task", self.task.clone(), run.task.clone());
        differ("model", self.model.clone(), run.model.clone());
        if self.data_identity != run.data_identity {
            differ(
                "data",
                format!("{} ({})", self.data_identity, self.data.display()),
                format!("{} ({})", run.data_identity, run.data.display()),
            );
        }
        differ("examples", self.sampler.examples.to_string(), run.sampler.examples.to_string());
        differ("--batch-size", self.sampler.batch_size.to_string(), run.sampler.batch_size.to_string());
        differ("order", format!("{:?}", self.sampler.order), format!("{:?}", run.sampler.order));
        differ("--grad-accum", self.grad_accum.to_string(), run.grad_accum.to_string());
        differ("--seq-len", format!("{:?}", self.seq_len), format!("{:?}", run.seq_len));
        differ("dropout", format!("{:?}", self.dropout), format!("{:?}", run.dropout));
        differ("the dropout seed (--seed)", format!("{:?}", self.dropout_seed), format!("{:?}", run.dropout_seed));
        let precision =
            |p: Option<accelrt_core::DType>| p.map_or("f32".to_string(), |d| format!("{d} mixed precision"));
        differ("--mixed-precision", precision(self.mixed_precision), precision(run.mixed_precision));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataPosition, Order};

    fn state() -> TrainerState {
        TrainerState {
            steps: 5,
            grad_accum: 2,
            // 10 batches per epoch; 5 steps × 2 micro-batches = epoch 1, batch 0.
            sampler: SamplerState {
                examples: 43,
                batch_size: 4,
                order: Order::Shuffled { seed: 7 },
                position: DataPosition { epoch: 1, batch: 0 },
            },
            task: "mnrl".into(),
            model: "all-minilm-l6-v2".into(),
            data: "pairs.jsonl".into(),
            data_identity: DataIdentity { bytes: 10, sha256: "ab".repeat(32) },
            seq_len: None,
            dropout: DropoutRates { hidden: 0.1, attention: 0.1 },
            dropout_seed: Some(7),
            mixed_precision: None,
        }
    }

    #[test]
    fn a_consistent_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        state().check().unwrap();
        state().write(dir.path()).unwrap();
        assert_eq!(TrainerState::read(dir.path()).unwrap(), state());
        assert!(state().differences(&state()).is_empty());
    }

    /// Hostile counts are refused by the check, before any arithmetic can wrap (found by a
    /// red-team run: a huge epoch or step count in trainer.json wrapped).
    #[test]
    fn hostile_counts_are_refused() {
        let huge_epoch = TrainerState {
            sampler: SamplerState { position: DataPosition { epoch: u64::MAX, batch: 0 }, ..state().sampler },
            ..state()
        };
        let huge_steps = TrainerState { steps: u64::MAX, ..state() };
        let too_many = TrainerState { steps: MAX_STEPS + 1, ..state() };
        let no_accum = TrainerState { grad_accum: 0, ..state() };
        let huge_accum = TrainerState { grad_accum: u64::MAX, ..state() };
        let elsewhere = TrainerState {
            sampler: SamplerState { position: DataPosition { epoch: 0, batch: 9 }, ..state().sampler },
            ..state()
        };
        let past_epoch = TrainerState {
            steps: 10,
            sampler: SamplerState { position: DataPosition { epoch: 0, batch: 20 }, ..state().sampler },
            ..state()
        };
        let no_batch = TrainerState { sampler: SamplerState { batch_size: 0, ..state().sampler }, ..state() };
        for (s, needle) in [
            (huge_epoch, "is not where 5 steps"),
            (huge_steps, "more than the"),
            (too_many, "more than the"),
            (no_accum, "grad_accum 0"),
            (huge_accum, "grad_accum 18446744073709551615"),
            (elsewhere, "is not where"),
            (past_epoch, "batch 20 of 10"),
            (no_batch, "a batch size of 0"),
        ] {
            let msg = s.check().unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg}");
            let dir = tempfile::tempdir().unwrap();
            s.write(dir.path()).unwrap();
            let msg = TrainerState::read(dir.path()).unwrap_err().to_string();
            assert!(msg.contains(TRAINER_JSON) && msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn unreadable_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TRAINER_JSON), "{\"steps\": 1}").unwrap();
        let msg = TrainerState::read(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("not a checkpoint of this version") && msg.contains("missing field"), "{msg}");
        std::fs::write(dir.path().join(TRAINER_JSON), vec![b' '; MAX_TRAINER_JSON_BYTES as usize + 1]).unwrap();
        assert!(TrainerState::read(dir.path()).unwrap_err().to_string().contains("limit"));
        std::fs::remove_file(dir.path().join(TRAINER_JSON)).unwrap();
        std::fs::create_dir(dir.path().join(TRAINER_JSON)).unwrap();
        assert!(TrainerState::read(dir.path()).unwrap_err().to_string().contains("directory"));
    }

    #[test]
    fn differences_name_each_setting_and_the_data_by_content() {
        let moved = TrainerState { data: "/elsewhere/pairs.jsonl".into(), ..state() };
        assert!(state().differences(&moved).is_empty(), "the same bytes at another path are the same data");
        let other_bytes =
            TrainerState { data_identity: DataIdentity { bytes: 10, sha256: "cd".repeat(32) }, ..state() };
        let d = state().differences(&other_bytes);
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("data:") && d[0].contains(&"cd".repeat(32)), "{d:?}");
        let other = TrainerState {
            grad_accum: 4,
            seq_len: Some(128),
            dropout: DropoutRates { hidden: 0.0, attention: 0.1 },
            dropout_seed: Some(8),
            mixed_precision: Some(accelrt_core::DType::BF16),
            sampler: SamplerState { batch_size: 8, order: Order::FileOrder, ..state().sampler },
            ..state()
        };
        let d = state().differences(&other).join("\n");
        for needle in
            ["--grad-accum", "--seq-len", "--batch-size", "order", "dropout:", "dropout seed", "bf16 mixed precision"]
        {
            assert!(d.contains(needle), "{d}");
        }
    }

    #[test]
    fn a_checkpoint_without_a_precision_reads_as_f32_and_f32_writes_none() {
        let json = serde_json::to_string(&state()).unwrap();
        assert!(!json.contains("mixed_precision"), "{json}");
        let mixed = TrainerState { mixed_precision: Some(accelrt_core::DType::BF16), ..state() };
        let back: TrainerState = serde_json::from_str(&serde_json::to_string(&mixed).unwrap()).unwrap();
        assert_eq!(back, mixed);
        assert_eq!(serde_json::from_str::<TrainerState>(&json).unwrap().mixed_precision, None);
        // Written and read as the CLI spells it; nothing else is a mixed precision.
        let text = serde_json::to_string(&mixed).unwrap();
        assert!(text.contains(r#""mixed_precision":"bf16""#), "{text}");
        for junk in ["u32", "f32", "f16", "b_f16", "quant"] {
            let bad = text.replace(r#""mixed_precision":"bf16""#, &format!(r#""mixed_precision":"{junk}""#));
            let err = serde_json::from_str::<TrainerState>(&bad).unwrap_err().to_string();
            assert!(err.contains("only `bf16`"), "{junk}: {err}");
        }
    }
}
