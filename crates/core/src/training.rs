//! A training step as one graph, and a session that runs it on any backend holding variables.
//!
//! [`training_graph`] turns a forward graph with a loss into the graph of one optimiser step:
//! the trained weights become [`Op::Variable`]s (initialised from the weights), the optimiser's
//! moments become zero-initialised variables, and the step appends the backward pass
//! ([`crate::autodiff::grad`]), optional clipping by global norm and the update, ending in one
//! [`Op::Assign`] per variable. Parameters and moments therefore live **in the session state, on
//! the device**, across steps, exactly as a KV cache does; each step moves only the batch in and
//! the loss out, and a compiled backend sees one program. The learning rate ([`LR_INPUT`]) and the
//! step number ([`STEP_INPUT`], from 1) are scalar inputs, so schedules need no recompilation.
//!
//! [`TrainingSession`] is the host side: prepare once, `step(batch, lr) → loss`, read parameters
//! back, save and restore the optimiser state.

use crate::autodiff::{grad, AutodiffError};
use crate::optim::{adamw_update, clip_by_global_norm, sgd_update, AdamW, Sgd};
use crate::{
    Backend, DType, Error, Executable, Graph, GraphBuilder, HostTensor, Op, PrepareOptions, Result, SessionState,
    Shape, ValueId, VariableInit, WeightSource,
};

/// The scalar f32 input carrying the learning rate of a step.
pub const LR_INPUT: &str = "optim.lr";
/// The scalar f32 input carrying the step number (1 for the first update), for bias correction.
pub const STEP_INPUT: &str = "optim.step";
/// The output carrying the step's loss (before the update).
pub const LOSS_OUTPUT: &str = "loss";
/// The output carrying the global gradient norm before clipping (with clipping only).
pub const GRAD_NORM_OUTPUT: &str = "grad_norm";

/// Which update a training step applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    AdamW(AdamW),
    Sgd(Sgd),
}

/// How a training step updates the parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingConfig {
    pub optimizer: Optimizer,
    /// Clip gradients to this global norm first (`clip_grad_norm_`), or not at all.
    pub clip_norm: Option<f64>,
}

/// The graph of one training step and the names of what persists between steps.
#[derive(Debug, Clone)]
pub struct TrainingGraph {
    pub graph: Graph,
    /// The trained parameters (variables named as the weights they start from).
    pub params: Vec<String>,
    /// The optimiser's variables: `<param>.adam_m` and `<param>.adam_v` for AdamW,
    /// `<param>.momentum` for SGD.
    pub optimizer_state: Vec<String>,
}

/// Builds the training step of `forward`: `loss` names the scalar loss (an output or a node),
/// `params` the f32 weights to train (the others stay frozen weights). The step's outputs are the
/// forward graph's, plus [`LOSS_OUTPUT`] and, with clipping, [`GRAD_NORM_OUTPUT`]; its inputs
/// the forward graph's plus [`LR_INPUT`] and [`STEP_INPUT`].
pub fn training_graph(
    forward: &Graph,
    loss: &str,
    params: &[&str],
    config: &TrainingConfig,
) -> std::result::Result<TrainingGraph, AutodiffError> {
    let find = |name: &str| -> std::result::Result<ValueId, AutodiffError> {
        forward
            .outputs()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
            .or_else(|| forward.nodes().iter().position(|n| n.name == name).map(|i| ValueId(i as u32)))
            .ok_or_else(|| AutodiffError::UnknownName(name.to_string()))
    };
    let loss = find(loss)?;
    let mut param_ids = Vec::with_capacity(params.len());
    for &p in params {
        let id = find(p)?;
        let node = forward.node(id);
        if !matches!(node.op, Op::Weight { .. }) || node.dtype != DType::F32 {
            return Err(Error::node(
                p,
                format!("a trained parameter must be an f32 weight, not {} {}", node.op.kind(), node.dtype),
            )
            .into());
        }
        param_ids.push(id);
    }
    // The same nodes in the same order (so every ValueId stays), trained weights as variables.
    let mut b = GraphBuilder::new(forward.name());
    for (i, node) in forward.nodes().iter().enumerate() {
        let op = match &node.op {
            Op::Weight { dtype, shape } if param_ids.iter().any(|p| p.index() == i) => {
                Op::Variable { dtype: *dtype, shape: shape.clone(), init: VariableInit::Weight }
            }
            op => op.clone(),
        };
        b.add(node.name.clone(), op)?;
    }
    for (name, id) in forward.outputs() {
        b.output(name, *id);
    }
    let lr = b.input(LR_INPUT, DType::F32, Shape(vec![]))?;
    let step = b.input(STEP_INPUT, DType::F32, Shape(vec![]))?;
    let mut grads = grad(&mut b, loss, &param_ids)?;
    if let Some(max_norm) = config.clip_norm {
        let (clipped, norm) = clip_by_global_norm(&mut b, "optim.clip", &grads, max_norm)?;
        grads = clipped;
        b.output(GRAD_NORM_OUTPUT, norm);
    }
    let mut optimizer_state = Vec::new();
    let mut variable = |b: &mut GraphBuilder, name: String, like: ValueId| -> Result<ValueId> {
        let node = b.node(like);
        let op = Op::Variable { dtype: node.dtype, shape: node.shape.clone(), init: VariableInit::Zeros };
        optimizer_state.push(name.clone());
        b.add(name, op)
    };
    match config.optimizer {
        Optimizer::AdamW(adamw) => {
            for (&p, &g) in param_ids.iter().zip(&grads) {
                let name = forward.node(p).name.clone();
                let m = variable(&mut b, format!("{name}.adam_m"), p)?;
                let v = variable(&mut b, format!("{name}.adam_v"), p)?;
                let (p2, m2, v2) = adamw_update(&mut b, &format!("optim.{name}"), &adamw, lr, step, p, g, m, v)?;
                for (var, value, what) in [(p, p2, "param"), (m, m2, "m"), (v, v2, "v")] {
                    b.add(format!("optim.{name}.assign_{what}"), Op::Assign { var, value })?;
                }
            }
        }
        Optimizer::Sgd(sgd) => {
            for (&p, &g) in param_ids.iter().zip(&grads) {
                let name = forward.node(p).name.clone();
                let buf = variable(&mut b, format!("{name}.momentum"), p)?;
                let (p2, buf2) = sgd_update(&mut b, &format!("optim.{name}"), &sgd, lr, p, g, buf)?;
                b.add(format!("optim.{name}.assign_param"), Op::Assign { var: p, value: p2 })?;
                b.add(format!("optim.{name}.assign_momentum"), Op::Assign { var: buf, value: buf2 })?;
            }
        }
    }
    match b.outputs().iter().find(|(n, _)| n == LOSS_OUTPUT) {
        Some((_, id)) if *id == loss => {}
        Some(_) => {
            return Err(Error::Graph(format!("the forward graph has another output called `{LOSS_OUTPUT}`")).into())
        }
        None => {
            b.output(LOSS_OUTPUT, loss);
        }
    }
    Ok(TrainingGraph { graph: b.build()?, params: params.iter().map(|p| p.to_string()).collect(), optimizer_state })
}

/// What one step returns.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// The loss on the batch, before the update.
    pub loss: f64,
    /// The global gradient norm before clipping (with clipping configured).
    pub grad_norm: Option<f64>,
}

/// Everything needed to resume training exactly: the step count, the parameters and the
/// optimiser's moments (by variable name).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingState {
    pub steps: u64,
    pub variables: Vec<(String, HostTensor)>,
}

/// A training step prepared once on a backend, with its parameters and optimiser state held in a
/// session on the device.
pub struct TrainingSession {
    exe: Box<dyn Executable>,
    state: SessionState,
    steps: u64,
    params: Vec<String>,
    optimizer_state: Vec<String>,
}

impl TrainingSession {
    /// Prepares `training.graph` on `backend` (weights read once: frozen ones and the trained
    /// parameters' starting values).
    pub fn new(
        backend: &dyn Backend,
        training: &TrainingGraph,
        weights: &dyn WeightSource,
        options: &PrepareOptions,
    ) -> Result<TrainingSession> {
        let exe = backend.prepare(&training.graph, weights, options)?;
        let state = exe.new_state(0)?;
        Ok(TrainingSession {
            exe,
            state,
            steps: 0,
            params: training.params.clone(),
            optimizer_state: training.optimizer_state.clone(),
        })
    }

    /// Runs one step on `batch` (the forward graph's inputs) at learning rate `lr` and returns the
    /// loss; the parameters and moments are updated in the session.
    pub fn step(&mut self, batch: &[(&str, &HostTensor)], lr: f64) -> Result<StepResult> {
        let lr_t = HostTensor::f32(vec![], vec![lr as f32])?;
        let step_t = HostTensor::f32(vec![], vec![(self.steps + 1) as f32])?;
        let mut inputs = batch.to_vec();
        inputs.push((LR_INPUT, &lr_t));
        inputs.push((STEP_INPUT, &step_t));
        let out = self.exe.run_with_state(&mut self.state, &inputs)?;
        self.steps += 1;
        let scalar = |name: &str| out.get(name).map(|t| t.to_f64_vec()[0]);
        Ok(StepResult {
            loss: scalar(LOSS_OUTPUT).ok_or_else(|| Error::Graph("the training graph has no loss output".into()))?,
            grad_norm: scalar(GRAD_NORM_OUTPUT),
        })
    }

    /// Updates applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The current value of a trained parameter.
    pub fn parameter(&self, name: &str) -> Result<HostTensor> {
        self.exe.read_variable(&self.state, name)
    }

    /// Every trained parameter, by name (to save the model).
    pub fn parameters(&self) -> Result<Vec<(String, HostTensor)>> {
        self.params.iter().map(|p| Ok((p.clone(), self.parameter(p)?))).collect()
    }

    /// The whole training state (parameters, moments, step count), for a checkpoint.
    pub fn save(&self) -> Result<TrainingState> {
        let mut variables = self.parameters()?;
        for name in &self.optimizer_state {
            variables.push((name.clone(), self.exe.read_variable(&self.state, name)?));
        }
        Ok(TrainingState { steps: self.steps, variables })
    }

    /// Restores a state from [`TrainingSession::save`] of the same training graph.
    pub fn restore(&mut self, saved: &TrainingState) -> Result<()> {
        for (name, value) in &saved.variables {
            self.exe.write_variable(&mut self.state, name, value)?;
        }
        self.steps = saved.steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{loss, reference, Dim, HostWeights};

    /// A linear regression y = x·wᵀ + b with a squared-error "loss" built from graph ops.
    fn regression() -> (Graph, HostWeights) {
        let mut b = GraphBuilder::new("regression");
        let x = b.input("x", DType::F32, Shape(vec![Dim::sym("n"), Dim::Fixed(3)])).unwrap();
        let t = b.input("t", DType::F32, Shape(vec![Dim::sym("n"), Dim::Fixed(2)])).unwrap();
        let w = b.weight("w", DType::F32, Shape::new([2, 3])).unwrap();
        let bias = b.weight("b", DType::F32, Shape::new([2])).unwrap();
        let y = b.add("y", Op::Linear { x, weight: w, bias: Some(bias) }).unwrap();
        let d = b.add("d", Op::Binary { op: crate::BinaryOp::Sub, a: y, b: t }).unwrap();
        let sq = loss::sum_of_squares(&mut b, "sq", &[d]).unwrap();
        b.output("sq", sq);
        let mut weights = HostWeights::new();
        weights.insert("w", HostTensor::f32(vec![2, 3], vec![0.1, -0.2, 0.3, 0.0, 0.5, -0.5]).unwrap());
        weights.insert("b", HostTensor::f32(vec![2], vec![0.0, 0.1]).unwrap());
        (b.build().unwrap(), weights)
    }

    fn batch() -> (HostTensor, HostTensor) {
        let x = HostTensor::f32(vec![4, 3], (0..12).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
        let t = HostTensor::f32(vec![4, 2], (0..8).map(|i| (i as f32 * 0.9).cos()).collect()).unwrap();
        (x, t)
    }

    #[test]
    fn the_reference_evaluator_runs_steps_that_lower_the_loss_and_keep_state() {
        let (forward, weights) = regression();
        let config = TrainingConfig { optimizer: Optimizer::AdamW(AdamW::default()), clip_norm: Some(1.0) };
        let training = training_graph(&forward, "sq", &["w", "b"], &config).unwrap();
        assert_eq!(training.optimizer_state, ["w.adam_m", "w.adam_v", "b.adam_m", "b.adam_v"]);
        let (x, t) = batch();
        let mut state = reference::new_state(0);
        let mut losses = vec![];
        for step in 1..=30 {
            let lr = HostTensor::f32(vec![], vec![0.05]).unwrap();
            let s = HostTensor::f32(vec![], vec![step as f32]).unwrap();
            let inputs = [("x", &x), ("t", &t), (LR_INPUT, &lr), (STEP_INPUT, &s)];
            let out = reference::evaluate_with_state(&training.graph, &weights, &inputs, &mut state).unwrap();
            losses.push(out.get(LOSS_OUTPUT).unwrap().to_f64_vec()[0]);
        }
        assert!(losses[29] < 0.5 * losses[0], "{losses:?}");
        // The parameters moved, and the first AdamW step moves each by about lr (|m̂/√v̂| = 1).
        let w = reference::read_variable(&training.graph, &weights, &state, "w").unwrap();
        assert_ne!(w.to_f64_vec(), weights.get_tensor("w").unwrap().to_f64_vec());
        // A one-shot run (no session) always starts from the initial weights.
        let lr = HostTensor::f32(vec![], vec![0.05]).unwrap();
        let s = HostTensor::f32(vec![], vec![1.0]).unwrap();
        let inputs = [("x", &x), ("t", &t), (LR_INPUT, &lr), (STEP_INPUT, &s)];
        let once = reference::evaluate(&training.graph, &weights, &inputs).unwrap();
        assert_eq!(once.get(LOSS_OUTPUT).unwrap().to_f64_vec()[0], losses[0]);
    }

    #[test]
    fn training_graphs_refuse_what_they_cannot_train() {
        let (forward, _) = regression();
        let config = TrainingConfig { optimizer: Optimizer::Sgd(Sgd::default()), clip_norm: None };
        assert!(matches!(training_graph(&forward, "nope", &["w"], &config), Err(AutodiffError::UnknownName(_))));
        let err = training_graph(&forward, "sq", &["x"], &config).unwrap_err().to_string();
        assert!(err.contains("must be an f32 weight"), "{err}");
    }
}
