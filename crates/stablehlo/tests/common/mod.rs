//! Running exported modules in jax (scripts/run_stablehlo.py): a job of sessions of steps, written
//! to a temporary directory, run by one python3 process, outputs read back by manifest.
#![allow(dead_code)]

use accelrt_core::{HostTensor, WeightSource};
use accelrt_stablehlo::{weight_argument, ArgumentRole, Module, OutputRole};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Fails (never skips) when python3 cannot import jax, saying how to install it.
pub fn require_jax() {
    let ok = Command::new("python3")
        .args(["-c", "import jax, jax.extend.backend, ml_dtypes"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "these tests run the exported StableHLO in jax/jaxlib; python3 cannot import jax. Install it with: \
         python3 -m pip install -r tests/jax/requirements.txt"
    );
}

/// Where one step's results land.
#[derive(Debug, Clone, Copy)]
pub struct StepId(usize);

struct Step {
    session: String,
    dir: PathBuf,
    module: Module,
    /// Argument name → file, for every non-state argument.
    paths: serde_json::Map<String, serde_json::Value>,
}

pub struct JaxJob {
    dir: tempfile::TempDir,
    steps: Vec<Step>,
    /// Weight files already written, by (session, name, dtype): the buckets of one session's
    /// graph share them.
    weights: std::collections::HashMap<(String, String, String), PathBuf>,
}

impl Default for JaxJob {
    fn default() -> Self {
        JaxJob {
            dir: tempfile::tempdir().expect("a temporary directory"),
            steps: Vec::new(),
            weights: Default::default(),
        }
    }
}

impl JaxJob {
    /// Adds a step of `session` (steps of one session share their caches, in order): writes the
    /// module, its manifest, the inputs and the weights as the manifest's arguments.
    pub fn add_step(
        &mut self,
        session: &str,
        module: Module,
        inputs: &[(&str, &HostTensor)],
        weights: &dyn WeightSource,
    ) -> StepId {
        let id = self.steps.len();
        let dir = self.dir.path().join(format!("step{id}"));
        std::fs::create_dir_all(dir.join("args")).unwrap();
        std::fs::write(dir.join("module.mlir"), &module.mlir).unwrap();
        std::fs::write(dir.join("manifest.json"), module.manifest.to_json()).unwrap();
        let mut paths = serde_json::Map::new();
        for (i, arg) in module.manifest.arguments.iter().enumerate() {
            let path = dir.join(format!("args/{i}.bin"));
            let tensor = match &arg.role {
                ArgumentRole::Input => {
                    let t =
                        inputs.iter().find(|(n, _)| *n == arg.name).unwrap_or_else(|| panic!("input {}", arg.name)).1;
                    assert_eq!(t.shape(), arg.shape.as_slice(), "input {} must be padded to the bucket", arg.name);
                    assert_eq!(t.dtype(), arg.dtype, "input {}", arg.name);
                    t.clone()
                }
                ArgumentRole::Weight { .. } => {
                    let key = (session.to_string(), arg.name.clone(), arg.dtype.to_string());
                    if let Some(written) = self.weights.get(&key) {
                        paths.insert(arg.name.clone(), written.display().to_string().into());
                        continue;
                    }
                    self.weights.insert(key, path.clone());
                    weight_argument(arg, weights).unwrap()
                }
                // Session state (caches; no conformance case has variables) stays with the runner.
                ArgumentRole::State { .. } | ArgumentRole::Variable { .. } => continue,
            };
            std::fs::write(&path, tensor.to_le_bytes()).unwrap();
            paths.insert(arg.name.clone(), path.display().to_string().into());
        }
        self.steps.push(Step { session: session.to_string(), dir, module, paths });
        StepId(id)
    }

    /// Runs every step in one python3 process.
    pub fn run(&self) {
        let mut sessions: Vec<(String, Vec<serde_json::Value>)> = Vec::new();
        for step in &self.steps {
            let args = &step.paths;
            let entry = serde_json::json!({
                "mlir": step.dir.join("module.mlir"),
                "manifest": step.dir.join("manifest.json"),
                "args": args,
                "out_dir": step.dir.join("out"),
            });
            match sessions.last_mut() {
                Some((name, steps)) if *name == step.session => steps.push(entry),
                _ => sessions.push((step.session.clone(), vec![entry])),
            }
        }
        let job = serde_json::json!({
            "sessions": sessions.iter().map(|(n, s)| serde_json::json!({"name": n, "steps": s})).collect::<Vec<_>>()
        });
        let job_path = self.dir.path().join("job.json");
        std::fs::write(&job_path, job.to_string()).unwrap();
        let out = Command::new("python3")
            .arg(repo_root().join("scripts/run_stablehlo.py"))
            .arg(&job_path)
            .output()
            .expect("python3 runs");
        assert!(out.status.success(), "run_stablehlo.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }

    /// The graph outputs of a step, by name, or jax's error.
    pub fn outputs(&self, id: StepId) -> Result<Vec<(String, HostTensor)>, String> {
        let step = &self.steps[id.0];
        let out = step.dir.join("out");
        if let Ok(error) = std::fs::read_to_string(out.join("error.txt")) {
            return Err(error);
        }
        let mut outputs = Vec::new();
        for (i, o) in step.module.manifest.outputs.iter().enumerate() {
            if o.role != OutputRole::Output {
                continue;
            }
            let bytes = std::fs::read(out.join(format!("{i}.bin")))
                .map_err(|e| format!("output {} missing (an earlier step failed?): {e}", o.name))?;
            outputs.push((o.name.clone(), HostTensor::from_le_bytes(o.dtype, o.shape.clone(), &bytes).unwrap()));
        }
        Ok(outputs)
    }

    pub fn module(&self, id: StepId) -> &Module {
        &self.steps[id.0].module
    }
}

/// The worst element-wise excess over |got − want| ≤ abs + rel·|want|, with its index and values.
pub fn worst_excess(got: &HostTensor, want: &HostTensor, abs: f64, rel: f64) -> Option<(usize, f64, f64)> {
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let mut worst: Option<(usize, f64)> = None;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let excess = (a - b).abs() - (abs + rel * b.abs());
        if (excess > 0.0 || excess.is_nan()) && worst.is_none_or(|(_, e)| excess > e || e.is_nan()) {
            worst = Some((i, excess));
        }
    }
    worst.map(|(i, _)| (i, g[i], w[i]))
}
