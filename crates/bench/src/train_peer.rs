//! Training peers: an external runner (benches/peers/pytorch_train_runner.py) that takes one
//! training step (forward, backward, optimiser update) per query on a batch the harness sends, so
//! the harness can time a peer's step on exactly the batches accelrt trains on.
//!
//! Protocol (one JSON object per line, as for inference peers in [`crate::peers`]):
//!
//! - runner → harness, once, after loading: `{"ready": true, "system": "pytorch", "versions": {…},
//!   "dtype": "f32", "device": "cpu", "task": "mnrl" | "causal-lm", "parameters": N}`
//! - harness → runner, per step: `{"train": {"pairs": [{"anchor": "…", "positive": "…"}, …]}}`
//!   (MNRL) or `{"train": {"windows": [[id, …], …]}}` (causal LM)
//! - runner → harness, per step: `{"n": rows, "loss": …, "tokens": …, "step_ms": …,
//!   "peak_memory_bytes": …}` or `{"error": "…"}`
//! - the harness closes the runner's stdin to end it.
//!
//! The runner is started with `--model-dir DIR --threads N --device D --dtype T --lr X
//! --weight-decay W --dropout P`.

use crate::peers::{PeerInfo, PeerOptions, RunnerProcess};
use crate::{BenchError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// The longest reply line read from a training runner (replies are a few hundred bytes).
const MAX_REPLY_BYTES: u64 = 1 << 20;
/// The most tokens a runner may report for one step (a billion: far above any batch it is sent).
const MAX_STEP_TOKENS: u64 = 1 << 30;
/// The largest peak memory a runner may report: 64 TiB, above any EC2 instance's memory.
const MAX_PEAK_BYTES: u64 = 64 << 40;

/// The optimiser settings a training runner uses (the same as the accelrt side of the run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainHyper {
    /// AdamW's learning rate (constant, no schedule), passed as `--lr`.
    pub lr: f64,
    /// AdamW's decoupled weight decay, passed as `--weight-decay`.
    pub weight_decay: f64,
    /// Dropout probability in `[0, 1)`, passed as `--dropout`; the harness always sends 0.
    pub dropout: f64,
}

/// One step's batch.
#[derive(Debug, Clone, Copy)]
pub enum TrainBatch<'a> {
    /// (anchor, positive) texts, for MultipleNegativesRankingLoss.
    Pairs(&'a [(&'a str, &'a str)]),
    /// Rows of token ids of equal length, for next-token cross-entropy.
    Windows(&'a [&'a [u32]]),
}

impl TrainBatch<'_> {
    fn rows(&self) -> usize {
        match self {
            TrainBatch::Pairs(p) => p.len(),
            TrainBatch::Windows(w) => w.len(),
        }
    }

    fn to_query(self) -> serde_json::Value {
        match self {
            TrainBatch::Pairs(pairs) => serde_json::json!({
                "train": { "pairs": pairs.iter().map(|(a, p)| serde_json::json!({"anchor": a, "positive": p})).collect::<Vec<_>>() }
            }),
            TrainBatch::Windows(rows) => serde_json::json!({ "train": { "windows": rows } }),
        }
    }
}

/// What a runner reports for one step, and the harness's own time around the exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStep {
    /// Rows of the batch (pairs or windows); checked to equal what was sent.
    pub rows: usize,
    /// The batch's loss before the update (finite, not negative).
    pub loss: f64,
    /// Non-padding input tokens of the batch, as the runner counted them (windows: checked to be
    /// rows × sequence length).
    pub tokens: u64,
    /// Timed by the runner around the step itself.
    pub step: Duration,
    /// Timed by the harness around query and reply (adds pipe and JSON time).
    pub round_trip: Duration,
    /// The runner's peak resident memory so far (its `VmHWM`), in bytes, if it reports one.
    pub peak_memory_bytes: Option<u64>,
}

#[derive(Deserialize)]
struct ReadyLine {
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    parameters: Option<u64>,
    #[serde(flatten)]
    info: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct StepLine {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    n: Option<usize>,
    #[serde(default)]
    loss: Option<f64>,
    #[serde(default)]
    tokens: Option<u64>,
    #[serde(default)]
    step_ms: Option<f64>,
    #[serde(default)]
    peak_memory_bytes: Option<u64>,
}

/// A running training peer.
pub struct TrainingPeer {
    process: RunnerProcess,
    /// What the runner said about itself.
    pub info: PeerInfo,
    /// `mnrl` or `causal-lm`, as the runner chose from the model directory.
    pub task: String,
    /// Trainable parameters, as the runner counted them.
    pub parameters: Option<u64>,
}

impl TrainingPeer {
    /// Starts `script` on `model_dir` and waits until it has loaded the model and its optimiser.
    ///
    /// # Errors
    /// [`BenchError::Peer`] when the script is missing or cannot be started, or its first line is
    /// an error, not JSON, not `ready`, or names no `task`; also when it exits or stays silent past
    /// [`REPLY_TIMEOUT`](crate::peers::REPLY_TIMEOUT). [`BenchError::Interrupted`] on Ctrl-C.
    pub fn spawn(
        name: &str,
        script: &Path,
        model_dir: &Path,
        options: &PeerOptions,
        hyper: &TrainHyper,
    ) -> Result<TrainingPeer> {
        let extra: Vec<String> = vec![
            "--lr".into(),
            hyper.lr.to_string(),
            "--weight-decay".into(),
            hyper.weight_decay.to_string(),
            "--dropout".into(),
            hyper.dropout.to_string(),
        ];
        let process = RunnerProcess::spawn(name, script, model_dir, options, &extra, MAX_REPLY_BYTES)?;
        let mut peer = TrainingPeer {
            process,
            info: PeerInfo { system: name.into(), versions: Default::default(), dtype: None, device: None },
            task: String::new(),
            parameters: None,
        };
        let line = peer.process.read_line()?;
        let ready: ReadyLine =
            serde_json::from_str(&line).map_err(|e| peer.fail(format!("bad ready line {line:?}: {e}")))?;
        if let Some(e) = ready.error {
            return Err(peer.fail(e));
        }
        if !ready.ready {
            return Err(peer.fail("the runner's first line was not `ready`".into()));
        }
        peer.task = ready.task.ok_or_else(|| peer.fail("the ready line names no `task`".into()))?;
        peer.parameters = ready.parameters;
        peer.info = serde_json::from_value(serde_json::Value::Object(ready.info))
            .map_err(|e| peer.fail(format!("ready line: {e}")))?;
        Ok(peer)
    }

    /// The runner's process id (its CPU time counts as the run's).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends one batch, waits for the step to finish, returns what the runner measured.
    ///
    /// # Errors
    /// [`BenchError::Peer`] when the runner reports an error, answers for another number of rows,
    /// omits `loss`, `tokens` or `step_ms`, reports a negative or non-finite loss, a step time
    /// outside 0 to 24 h, a token count of 0, above 2^30 or (windows) not the batch's, or a peak
    /// memory above 64 TiB. [`BenchError::Interrupted`] on Ctrl-C while waiting.
    pub fn step(&mut self, batch: TrainBatch<'_>) -> Result<PeerStep> {
        let rows = batch.rows();
        let line = RunnerProcess::line(&batch.to_query());
        let start = Instant::now();
        self.process.send(&line, "a batch")?;
        let line = self.process.read_line()?;
        let round_trip = start.elapsed();
        let reply: StepLine = serde_json::from_str(&line).map_err(|e| self.fail(format!("bad reply {line:?}: {e}")))?;
        if let Some(e) = reply.error {
            return Err(self.fail(e));
        }
        if reply.n != Some(rows) {
            return Err(self.fail(format!("answered {:?} rows for a batch of {rows}", reply.n)));
        }
        let (Some(loss), Some(tokens), Some(step_ms)) = (reply.loss, reply.tokens, reply.step_ms) else {
            return Err(self.fail(format!("a step reply needs loss, tokens and step_ms: {line:?}")));
        };
        // Losses here (cross-entropy, MNRL) are never negative; a step takes under a day.
        if !loss.is_finite() || loss < 0.0 || !step_ms.is_finite() || !(0.0..=8.64e7).contains(&step_ms) {
            return Err(self.fail(format!("reported loss {loss} and step time {step_ms} ms")));
        }
        if tokens == 0 || tokens > MAX_STEP_TOKENS {
            return Err(self.fail(format!("reported {tokens} tokens for a batch of {rows}")));
        }
        if let TrainBatch::Windows(w) = batch {
            // The harness knows a window batch's tokens exactly.
            let want: usize = w.iter().map(|r| r.len()).sum();
            if tokens != want as u64 {
                return Err(self.fail(format!("reported {tokens} tokens for windows of {want}")));
            }
        }
        if reply.peak_memory_bytes.is_some_and(|b| b > MAX_PEAK_BYTES) {
            return Err(self.fail(format!("reported a peak memory of {:?} bytes", reply.peak_memory_bytes)));
        }
        Ok(PeerStep {
            rows,
            loss,
            tokens,
            step: Duration::from_secs_f64(step_ms / 1e3),
            round_trip,
            peak_memory_bytes: reply.peak_memory_bytes,
        })
    }

    fn fail(&self, message: String) -> BenchError {
        self.process.fail(message)
    }
}
