//! Peers driven by the same harness: an external runner process (benches/peers/*.py) that loads the
//! model itself and answers one JSON line per query. Protocol (one JSON object per line):
//!
//! - runner → harness, once, after loading: `{"ready": true, "system": "pytorch", "versions": {…}, "dtype": "f32"}`
//!   (or `{"error": "…"}` and exit)
//! - harness → runner, per query: `{"texts": ["…", …]}`
//! - runner → harness, per query, after the embeddings are computed: `{"n": <count>}` or `{"error": "…"}`
//! - harness closes the runner's stdin to end it.
//!
//! Text generation (runners started with `--max-tokens N`): the query is `{"prompts": ["…", …]}`
//! (each a full prompt, chat template applied) and the reply
//! `{"n": <count>, "requests": [{"prompt_tokens": …, "output_tokens": …, "ttft_ms": …, "tpot_ms": …}, …]}`.
//!
//! The harness times each query around that exchange, so a peer's latency includes a few tens of
//! microseconds of pipe and JSON overhead that accelrt's in-process runs do not have.

use crate::workload::{cycle, RequestStats, Workload};
use crate::{BenchError, Result};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read, Write};

/// The longest reply line read from a peer runner, in bytes.
const MAX_REPLY_BYTES: u64 = 16 << 20;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The longest a runner may take to answer anything (loading a model, one query, one training
/// step): far above any real step (a minute on a loaded 2-vCPU machine), short of forever.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long a runner gets to exit once its input is closed before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// What a runner says about itself when it is ready.
#[derive(Debug, Clone, Deserialize)]
pub struct PeerInfo {
    /// The system's name as results record it (e.g. `pytorch`, `onnxruntime`); a name already
    /// measured in the run (such as `accelrt`) makes its result refused.
    pub system: String,
    /// Library versions it reports (e.g. `{"torch": "2.4.0"}`), copied into the result's
    /// environment details.
    #[serde(default)]
    pub versions: serde_json::Map<String, serde_json::Value>,
    /// The dtype it computes in (`f32`, `f16`, …), as it says.
    #[serde(default)]
    pub dtype: Option<String>,
    /// The device it ran on (e.g. `cpu`, `cuda:0`); `None`: the `--peer-device` it was given.
    #[serde(default)]
    pub device: Option<String>,
}

/// How a peer runs: threads, device (`cpu`, `cuda`) and dtype (`f32`, `f16`), passed to the runner.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// CPU threads the runner may use (`--threads`); the harness passes this machine's available
    /// parallelism, as accelrt uses.
    pub threads: usize,
    /// The device the runner should use (`--device`, from `--peer-device`).
    pub device: String,
    /// The dtype the runner should compute in (`--dtype`, from `--peer-dtype`).
    pub dtype: String,
    /// Text generation: new tokens per request (the runner then answers generation queries).
    pub max_tokens: Option<usize>,
}

/// A peer runner's process (`$ACCELRT_PYTHON script --model-dir … --threads … --device … --dtype
/// … extra…`): one JSON line in per query, one JSON line back, read up to `max_line` bytes.
/// Inference and training peers both talk to their runner through it.
pub(crate) struct RunnerProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Reply lines, read by a thread of their own so that a wait can time out or be interrupted.
    replies: Receiver<std::io::Result<Option<String>>>,
    max_line: u64,
}

impl RunnerProcess {
    pub(crate) fn spawn(
        name: &str,
        script: &Path,
        model_dir: &Path,
        options: &PeerOptions,
        extra: &[String],
        max_line: u64,
    ) -> Result<RunnerProcess> {
        let fail = |message: String| BenchError::Peer { peer: name.into(), message };
        if !script.is_file() {
            return Err(fail(format!("runner script {} not found", script.display())));
        }
        let python = std::env::var("ACCELRT_PYTHON").unwrap_or_else(|_| "python3".into());
        // Its own process group: Ctrl-C on the terminal reaches the harness, which stops between
        // queries and ends the runner itself, instead of killing the runner mid-step.
        let mut child = Command::new(&python)
            .process_group(0)
            .arg(script)
            .arg("--model-dir")
            .arg(model_dir)
            .args(["--threads", &options.threads.to_string(), "--device", &options.device, "--dtype", &options.dtype])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| fail(format!("could not start `{python} {}`: {e}", script.display())))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let (send, replies) = std::sync::mpsc::channel();
        std::thread::spawn(move || loop {
            // A runner that prints without end must not grow this process without bound: a line
            // is read up to `max_line` bytes (one more says it is longer), then reading stops.
            let mut line = String::new();
            let read = (&mut stdout).take(max_line + 1).read_line(&mut line);
            let done = !matches!(read, Ok(n) if n > 0 && n as u64 <= max_line);
            let message = match read {
                Ok(0) => Ok(None),
                Ok(_) => Ok(Some(line)),
                Err(e) => Err(e),
            };
            if send.send(message).is_err() || done {
                return;
            }
        });
        Ok(RunnerProcess { name: name.into(), child, stdin, replies, max_line })
    }

    /// The runner's process id (its CPU time counts as the run's, not as other load).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `message` as one JSON line, ready for [`send`](Self::send) (serialised apart so that a
    /// caller can keep the serialising out of what it times).
    pub(crate) fn line(message: &serde_json::Value) -> Vec<u8> {
        let mut line = serde_json::to_vec(message).expect("serialisable");
        line.push(b'\n');
        line
    }

    /// Sends one line made by [`line`](Self::line); `what` names it in the error.
    pub(crate) fn send(&mut self, line: &[u8], what: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().expect("open until drop");
        stdin.write_all(line).and_then(|_| stdin.flush()).map_err(|e| self.fail(format!("sending {what}: {e}")))
    }

    /// The next reply line, waiting at most [`REPLY_TIMEOUT`]; Ctrl-C ends the wait
    /// (`BenchError::Interrupted`).
    pub(crate) fn read_line(&mut self) -> Result<String> {
        let start = Instant::now();
        let reply = loop {
            match self.replies.recv_timeout(Duration::from_millis(200)) {
                Ok(reply) => break reply,
                Err(RecvTimeoutError::Disconnected) => break Ok(None),
                Err(RecvTimeoutError::Timeout) => {
                    if crate::interrupt::requested() {
                        return Err(BenchError::Interrupted);
                    }
                    if start.elapsed() > REPLY_TIMEOUT {
                        return Err(self.fail(format!("no reply within {} s", REPLY_TIMEOUT.as_secs())));
                    }
                }
            }
        };
        match reply.map_err(|e| self.fail(format!("reading its output: {e}")))? {
            Some(line) if line.len() as u64 > self.max_line => {
                Err(self.fail(format!("a reply line is longer than {} bytes", self.max_line)))
            }
            Some(line) => Ok(line),
            None => {
                let status = self.finish().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                Err(self.fail(format!("the runner exited ({status}); see its messages above")))
            }
        }
    }

    /// Closes the runner's input and waits for it to exit, killing it after [`EXIT_GRACE`]
    /// (a runner stuck writing to a pipe nobody reads, or ignoring the end of its input).
    fn finish(&mut self) -> std::io::Result<std::process::ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + EXIT_GRACE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn fail(&self, message: String) -> BenchError {
        BenchError::Peer { peer: self.name.clone(), message }
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// An inference peer as a [`Workload`]: a runner process fed the same input set, one query per
/// JSON line. Dropping it closes the runner's input and waits for it to exit (killing it after 5 s).
pub struct ExternalRunner {
    process: RunnerProcess,
    texts: Vec<String>,
    max_tokens: Option<usize>,
    requests: Vec<RequestStats>,
    /// What the runner said about itself in its ready line.
    pub info: PeerInfo,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    n: Option<usize>,
    #[serde(default)]
    error: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl ExternalRunner {
    /// Starts `script` (a Python runner, run with `$ACCELRT_PYTHON`, else `python3`) on `model_dir`
    /// and waits until it has loaded the model. `texts` are the inputs (generation: full prompts,
    /// chat template applied).
    ///
    /// # Errors
    /// [`BenchError::Peer`] when the script is missing, cannot be started, reports an error, exits,
    /// sends something other than a ready line first, or does not answer within [`REPLY_TIMEOUT`];
    /// [`BenchError::Interrupted`] on Ctrl-C while waiting.
    pub fn spawn(
        name: &str,
        script: &Path,
        model_dir: &Path,
        options: &PeerOptions,
        texts: Vec<String>,
    ) -> Result<ExternalRunner> {
        let fail = |message: String| BenchError::Peer { peer: name.into(), message };
        let extra: Vec<String> =
            options.max_tokens.map(|n| vec!["--max-tokens".into(), n.to_string()]).unwrap_or_default();
        let process = RunnerProcess::spawn(name, script, model_dir, options, &extra, MAX_REPLY_BYTES)?;
        let mut runner = ExternalRunner {
            process,
            texts,
            max_tokens: options.max_tokens,
            requests: Vec::new(),
            info: PeerInfo { system: name.into(), versions: Default::default(), dtype: None, device: None },
        };
        let reply = runner.read_reply()?;
        if !reply.ready {
            return Err(fail("the runner's first line was not `ready`".into()));
        }
        runner.info = serde_json::from_value(serde_json::Value::Object(reply.rest))
            .map_err(|e| fail(format!("ready line: {e}")))?;
        Ok(runner)
    }

    /// The runner's process id (its CPU time counts as the run's, not as other load).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn read_reply(&mut self) -> Result<Reply> {
        let line = self.process.read_line()?;
        let reply: Reply = serde_json::from_str(&line).map_err(|e| self.fail(format!("bad reply {line:?}: {e}")))?;
        if let Some(e) = reply.error {
            return Err(self.fail(e));
        }
        Ok(reply)
    }

    fn fail(&self, message: String) -> BenchError {
        self.process.fail(message)
    }
}

impl Workload for ExternalRunner {
    fn run(&mut self, first: usize, count: usize) -> Result<()> {
        let texts: Vec<&String> = cycle(&self.texts, first, count).collect();
        let query = match self.max_tokens {
            Some(_) => serde_json::json!({ "prompts": texts }),
            None => serde_json::json!({ "texts": texts }),
        };
        self.process.send(&RunnerProcess::line(&query), "a query")?;
        let reply = self.read_reply()?;
        match reply.n {
            Some(n) if n == count => {}
            other => return Err(self.fail(format!("answered {other:?} results for {count} inputs"))),
        }
        if self.max_tokens.is_some() {
            let requests: Vec<PeerRequest> = reply
                .rest
                .get("requests")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| self.fail(format!("bad `requests`: {e}")))?
                .unwrap_or_default();
            if requests.len() != count {
                return Err(self.fail(format!("reported {} requests for {count} prompts", requests.len())));
            }
            // A peer's times become Durations: anything but a finite time up to a day is a broken
            // runner (a huge or infinite one would panic `Duration::from_secs_f64`).
            for r in &requests {
                let bad = |v: f64| !v.is_finite() || !(0.0..=8.64e7).contains(&v);
                if bad(r.ttft_ms) || r.tpot_ms.is_some_and(bad) {
                    return Err(self.fail(format!("reported ttft_ms {} and tpot_ms {:?}", r.ttft_ms, r.tpot_ms)));
                }
            }
            let ms = |v: f64| Duration::from_secs_f64(v / 1e3);
            self.requests.extend(requests.into_iter().map(|r| RequestStats {
                prompt_tokens: r.prompt_tokens,
                output_tokens: r.output_tokens,
                time_to_first_token: ms(r.ttft_ms),
                time_per_output_token: r.tpot_ms.map(ms),
            }));
        }
        Ok(())
    }

    fn start_measuring(&mut self) {
        self.requests.clear();
    }

    fn take_requests(&mut self) -> Vec<RequestStats> {
        std::mem::take(&mut self.requests)
    }
}

#[derive(Deserialize)]
struct PeerRequest {
    prompt_tokens: usize,
    output_tokens: usize,
    ttft_ms: f64,
    tpot_ms: Option<f64>,
}
