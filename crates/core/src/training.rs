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
//! **Gradient accumulation** ([`accumulating_training_graph`] with N > 1 micro-batches per
//! optimiser step) stays one program: each parameter gets an accumulator variable
//! (`<param>.grad_acc`, zeros), and a scalar input [`APPLY_INPUT`] says whether this micro-step
//! applies the update (1) or only accumulates (0). Every micro-step adds its gradient × 1/N into
//! the running total `acc + g/N`; the optimiser (clipping included) always computes the update
//! from that total, and the assignments keep either the new or the old values:
//! `p ← apply·p' + (1 − apply)·p` (likewise m, v), `acc ← (1 − apply)·(acc + g/N)`. Multiplying
//! by exactly 0 or 1 and adding ±0 is exact in floating point, so the kept values are bit for bit
//! the update's or the old ones (as long as they are finite: 0·∞ is NaN, and a non-finite loss
//! stops training anyway). For a loss that is a mean over equally many terms per micro-batch (the
//! causal-LM loss over windows of one length), the update equals that of one batch N times as
//! large, up to float rounding. The cost: one more parameter-sized variable per parameter, and
//! the update computed (and discarded) on the accumulating micro-steps.
//!
//! [`TrainingSession`] is the host side: prepare once, `step(batch, lr) → loss` (or
//! [`TrainingSession::accumulated_step`] over N micro-batches), read parameters back, save and
//! restore the optimiser state. Between optimiser steps the accumulators are always zero, so a
//! checkpoint holds only the parameters and the optimiser's moments.

use crate::autocast;
use crate::autodiff::{grad, AutodiffError};
use crate::optim::{adamw_update, clip_by_global_norm, sgd_update, AdamW, Sgd};
use crate::{
    Backend, BinaryOp, DType, Error, Executable, Graph, GraphBuilder, HostTensor, Op, PrepareOptions, Result,
    SessionState, Shape, ValueId, VariableInit, WeightSource,
};

/// The scalar f32 input carrying the learning rate of a step.
pub const LR_INPUT: &str = "optim.lr";
/// The scalar f32 input carrying the step number (1 for the first update), for bias correction.
pub const STEP_INPUT: &str = "optim.step";
/// The output carrying the step's loss (before the update).
pub const LOSS_OUTPUT: &str = "loss";
/// The output carrying the global gradient norm before clipping (with clipping only).
pub const GRAD_NORM_OUTPUT: &str = "grad_norm";
/// With gradient accumulation: the scalar f32 input that is 1 on the micro-step that applies the
/// update (the last of an optimiser step) and 0 on the ones that only accumulate.
pub const APPLY_INPUT: &str = "optim.apply";
/// The suffix of a parameter's gradient accumulator variable (`<param>.grad_acc`).
pub const GRAD_ACC_SUFFIX: &str = ".grad_acc";

/// Which update a training step applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// `torch.optim.AdamW`; keeps two moment variables per parameter (`<param>.adam_m`,
    /// `<param>.adam_v`).
    AdamW(AdamW),
    /// `torch.optim.SGD` with momentum; keeps one buffer per parameter (`<param>.momentum`).
    Sgd(Sgd),
}

/// How a training step updates the parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingConfig {
    /// The update rule and its hyper-parameters (the learning rate is a per-step input instead).
    pub optimizer: Optimizer,
    /// Clip gradients to this global norm first (`clip_grad_norm_`), or not at all.
    pub clip_norm: Option<f64>,
    /// Mixed precision: `Some(DType::BF16)` runs the matrix products (linear layers, matmuls,
    /// attention) of the forward and backward passes in bf16 and everything else — norms,
    /// softmax, the loss, gradient sums, clipping and the optimiser — in f32 on f32 master
    /// weights, as `torch.autocast(dtype=torch.bfloat16)` does (see [`autocast`]). `None`: all f32.
    /// f16 is refused: without loss scaling its gradients underflow.
    pub mixed_precision: Option<DType>,
}

/// The graph of one training step and the names of what persists between steps.
#[derive(Debug, Clone)]
pub struct TrainingGraph {
    /// The whole step (forward, loss, backward, clipping, update, assignments), to prepare on a
    /// backend that holds variables.
    pub graph: Graph,
    /// The trained parameters (variables named as the weights they start from).
    pub params: Vec<String>,
    /// The optimiser's variables: `<param>.adam_m` and `<param>.adam_v` for AdamW,
    /// `<param>.momentum` for SGD.
    pub optimizer_state: Vec<String>,
    /// Micro-batches per optimiser step (1: no accumulation). With more, the graph has the
    /// [`APPLY_INPUT`] input and one `<param>.grad_acc` variable per parameter.
    pub micro_batches: usize,
}

impl TrainingGraph {
    /// Checks that `variables` is exactly this graph's training state — every parameter and
    /// optimiser variable once, nothing else, each with the variable's dtype and shape — and
    /// names what is missing, unexpected or mis-shaped. A checkpoint that fails this would
    /// restore a session in which some state silently kept its initial value.
    pub fn check_state(&self, variables: &[(String, HostTensor)]) -> Result<()> {
        check_state(&self.graph, self.params.iter().chain(&self.optimizer_state), variables)
    }
}

/// [`TrainingGraph::check_state`] against `graph`'s variable nodes; `expected` names the saved ones.
fn check_state<'a>(
    graph: &Graph,
    expected: impl Iterator<Item = &'a String>,
    variables: &[(String, HostTensor)],
) -> Result<()> {
    let expected: Vec<&String> = expected.collect();
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, value) in variables {
        if !seen.insert(name.as_str()) {
            problems.push(format!("`{name}` appears twice"));
            continue;
        }
        if !expected.contains(&name) {
            problems.push(format!("unexpected tensor `{name}` (not a parameter or optimiser state of this model)"));
            continue;
        }
        let node = graph.nodes().iter().find(|n| &n.name == name && matches!(n.op, Op::Variable { .. }));
        let Some(node) = node else {
            problems.push(format!("`{name}` is not a variable of the training graph"));
            continue;
        };
        let shape = node.shape.concrete();
        if value.dtype() != node.dtype || shape.as_deref() != Some(value.shape()) {
            problems.push(format!(
                "`{name}` is {} {:?}, expected {} {}",
                value.dtype(),
                value.shape(),
                node.dtype,
                node.shape
            ));
        }
    }
    let missing: Vec<&str> = expected.iter().filter(|e| !seen.contains(e.as_str())).map(|e| e.as_str()).collect();
    if !missing.is_empty() {
        const SHOWN: usize = 8;
        let more = missing.len().saturating_sub(SHOWN);
        let list = missing.iter().take(SHOWN).map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ");
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        problems.insert(0, format!("missing {} of {} tensors: {list}{more}", missing.len(), expected.len()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Graph(format!("the saved training state does not fit this training step: {}", problems.join("; "))))
    }
}

/// Builds the training step of `forward`: `loss` names the scalar loss (an output or a node),
/// `params` the f32 weights to train (the others stay frozen weights). The step's outputs are the
/// forward graph's, plus [`LOSS_OUTPUT`] and, with clipping, [`GRAD_NORM_OUTPUT`]; its inputs
/// the forward graph's plus [`LR_INPUT`] and [`STEP_INPUT`]. No gradient accumulation: the same
/// as [`accumulating_training_graph`] with 1 micro-batch.
pub fn training_graph(
    forward: &Graph,
    loss: &str,
    params: &[&str],
    config: &TrainingConfig,
) -> std::result::Result<TrainingGraph, AutodiffError> {
    accumulating_training_graph(forward, loss, params, config, 1)
}

/// Like [`training_graph`], with the gradients of `micro_batches` runs summed (each × 1 /
/// `micro_batches`) before one update (see the module documentation). With more than one
/// micro-batch the graph also takes [`APPLY_INPUT`]; with one it is exactly [`training_graph`]'s.
pub fn accumulating_training_graph(
    forward: &Graph,
    loss: &str,
    params: &[&str],
    config: &TrainingConfig,
    micro_batches: usize,
) -> std::result::Result<TrainingGraph, AutodiffError> {
    if micro_batches == 0 {
        return Err(Error::Graph("gradient accumulation needs at least 1 micro-batch per step".into()).into());
    }
    match config.mixed_precision {
        None | Some(DType::BF16) => {}
        Some(DType::F16) => return Err(Error::Graph(
            "mixed precision in f16 needs loss scaling (its gradients underflow), which accelrt does not do; use bf16"
                .into(),
        )
        .into()),
        Some(other) => return Err(Error::Graph(format!("mixed precision computes in bf16, not {other}")).into()),
    }
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
    let loss_node = forward.node(loss);
    // The step reports one number and differentiates it; a tensor "loss" would be summed by the
    // backward pass but reported by its first element.
    if loss_node.shape.rank() != 0 || !loss_node.dtype.is_float() {
        return Err(Error::node(
            &loss_node.name,
            format!("the loss must be a floating-point scalar, not {} {}", loss_node.dtype, loss_node.shape),
        )
        .into());
    }
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
    // The forward nodes in their order, trained weights as variables; with mixed precision, casts
    // around the matrix products, so value ids move: `remap` takes a forward id to its new one.
    let mut b = GraphBuilder::new(forward.name());
    let mut remap: Vec<ValueId> = Vec::with_capacity(forward.nodes().len());
    let mut lowered = std::collections::HashMap::new();
    for (i, node) in forward.nodes().iter().enumerate() {
        let op = match &node.op {
            Op::Weight { dtype, shape } if param_ids.iter().any(|p| p.index() == i) => {
                Op::Variable { dtype: *dtype, shape: shape.clone(), init: VariableInit::Weight }
            }
            op => op.map_operands(|o| remap[o.index()]),
        };
        let id = match config.mixed_precision {
            Some(low) if autocast::runs_low(&op) => autocast::add_low(&mut b, &node.name, op, low, &mut lowered)?,
            _ => b.add(node.name.clone(), op)?,
        };
        remap.push(id);
    }
    for (name, id) in forward.outputs() {
        b.output(name, remap[id.index()]);
    }
    let loss = remap[loss.index()];
    let param_ids: Vec<ValueId> = param_ids.iter().map(|p| remap[p.index()]).collect();
    let lr = b.input(LR_INPUT, DType::F32, Shape(vec![]))?;
    let step = b.input(STEP_INPUT, DType::F32, Shape(vec![]))?;
    let mut grads = grad(&mut b, loss, &param_ids)?;
    // With accumulation: `apply` and `keep = 1 − apply`, scalars that select between the updated
    // and the old values; the gradients become the running totals acc + g/N.
    let mut accumulation = None;
    if micro_batches > 1 {
        let apply = b.input(APPLY_INPUT, DType::F32, Shape(vec![]))?;
        let keep = b.add("optim.keep", Op::Affine { x: apply, mul: -1.0, add: 1.0 })?;
        let mut totals = Vec::with_capacity(grads.len());
        let mut accumulators = Vec::with_capacity(grads.len());
        for (&p, &g) in param_ids.iter().zip(&grads) {
            let name = b.node(p).name.clone();
            let node = b.node(p);
            let init = Op::Variable { dtype: node.dtype, shape: node.shape.clone(), init: VariableInit::Zeros };
            let acc = b.add(format!("{name}{GRAD_ACC_SUFFIX}"), init)?;
            let part = b.add(
                format!("optim.{name}.grad_part"),
                Op::Affine { x: g, mul: 1.0 / micro_batches as f64, add: 0.0 },
            )?;
            let total = b.add(format!("optim.{name}.grad_total"), Op::Binary { op: BinaryOp::Add, a: acc, b: part })?;
            let kept = b.add(format!("optim.{name}.grad_kept"), Op::Binary { op: BinaryOp::Mul, a: total, b: keep })?;
            b.add(format!("optim.{name}.assign_grad_acc"), Op::Assign { var: acc, value: kept })?;
            totals.push(total);
            accumulators.push(acc);
        }
        grads = totals;
        accumulation = Some((apply, keep));
    }
    // The value a variable gets: the update's, or with accumulation the update's only when applied.
    let select = |b: &mut GraphBuilder, name: String, new: ValueId, old: ValueId| -> Result<ValueId> {
        let Some((apply, keep)) = accumulation else { return Ok(new) };
        let a = b.add(format!("{name}.if_applied"), Op::Binary { op: BinaryOp::Mul, a: new, b: apply })?;
        let k = b.add(format!("{name}.if_kept"), Op::Binary { op: BinaryOp::Mul, a: old, b: keep })?;
        b.add(format!("{name}.selected"), Op::Binary { op: BinaryOp::Add, a, b: k })
    };
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
                let name = b.node(p).name.clone();
                let m = variable(&mut b, format!("{name}.adam_m"), p)?;
                let v = variable(&mut b, format!("{name}.adam_v"), p)?;
                let (p2, m2, v2) = adamw_update(&mut b, &format!("optim.{name}"), &adamw, lr, step, p, g, m, v)?;
                for (var, value, what) in [(p, p2, "param"), (m, m2, "m"), (v, v2, "v")] {
                    let value = select(&mut b, format!("optim.{name}.{what}"), value, var)?;
                    b.add(format!("optim.{name}.assign_{what}"), Op::Assign { var, value })?;
                }
            }
        }
        Optimizer::Sgd(sgd) => {
            for (&p, &g) in param_ids.iter().zip(&grads) {
                let name = b.node(p).name.clone();
                let buf = variable(&mut b, format!("{name}.momentum"), p)?;
                let (p2, buf2) = sgd_update(&mut b, &format!("optim.{name}"), &sgd, lr, p, g, buf)?;
                let p2 = select(&mut b, format!("optim.{name}.param"), p2, p)?;
                let buf2 = select(&mut b, format!("optim.{name}.momentum"), buf2, buf)?;
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
    Ok(TrainingGraph {
        graph: b.build()?,
        params: params.iter().map(|p| p.to_string()).collect(),
        optimizer_state,
        micro_batches,
    })
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
    /// Optimiser updates applied so far; the next step runs with step number `steps + 1`.
    pub steps: u64,
    /// Parameters and optimiser variables by name; [`TrainingSession::save`] writes the parameters
    /// first, [`TrainingSession::restore`] accepts any order.
    pub variables: Vec<(String, HostTensor)>,
}

/// A training step prepared once on a backend, with its parameters and optimiser state held in a
/// session on the device.
pub struct TrainingSession {
    exe: Box<dyn Executable>,
    state: SessionState,
    steps: u64,
    training: TrainingGraph,
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
        Ok(TrainingSession { exe, state, steps: 0, training: training.clone() })
    }

    /// Runs one optimiser step on `batch` (the forward graph's inputs) at learning rate `lr` and
    /// returns the loss; the parameters and moments are updated in the session. For a graph built
    /// with several micro-batches, use [`TrainingSession::accumulated_step`].
    pub fn step(&mut self, batch: &[(&str, &HostTensor)], lr: f64) -> Result<StepResult> {
        self.accumulated_step(&[batch], lr)
    }

    /// Runs one optimiser step over `micro_batches` (exactly [`TrainingSession::micro_batches`] of
    /// them, each the forward graph's inputs): their gradients are accumulated (each × 1/N) and
    /// the last run applies the update. The loss returned is the mean of the micro-batches'
    /// losses; the gradient norm (with clipping) is that of the accumulated gradient.
    pub fn accumulated_step(&mut self, micro_batches: &[&[(&str, &HostTensor)]], lr: f64) -> Result<StepResult> {
        let n = self.training.micro_batches;
        if micro_batches.len() != n {
            return Err(Error::Graph(format!(
                "this training step accumulates {n} micro-batch(es) per update, got {}",
                micro_batches.len()
            )));
        }
        let step = self.steps.checked_add(1).ok_or_else(|| Error::Graph("the step count overflowed".into()))?;
        let lr_t = HostTensor::f32(vec![], vec![lr as f32])?;
        let step_t = HostTensor::f32(vec![], vec![step as f32])?;
        let (accumulate, apply) = (HostTensor::f32(vec![], vec![0.0])?, HostTensor::f32(vec![], vec![1.0])?);
        let mut loss = 0.0;
        let mut grad_norm = None;
        for (i, batch) in micro_batches.iter().enumerate() {
            let mut inputs = batch.to_vec();
            inputs.push((LR_INPUT, &lr_t));
            inputs.push((STEP_INPUT, &step_t));
            if n > 1 {
                inputs.push((APPLY_INPUT, if i + 1 == n { &apply } else { &accumulate }));
            }
            let out = match self.exe.run_with_state(&mut self.state, &inputs) {
                Ok(out) => out,
                Err(e) => {
                    // A failed micro-step may leave partial sums behind: start the step afresh.
                    if i > 0 {
                        self.clear_accumulators()?;
                    }
                    return Err(e);
                }
            };
            let scalar = |name: &str| out.get(name).map(|t| t.to_f64_vec()[0]);
            loss += scalar(LOSS_OUTPUT).ok_or_else(|| Error::Graph("the training graph has no loss output".into()))?;
            grad_norm = scalar(GRAD_NORM_OUTPUT);
        }
        self.steps = step;
        Ok(StepResult { loss: loss / n as f64, grad_norm })
    }

    /// Sets every gradient accumulator back to zero.
    fn clear_accumulators(&mut self) -> Result<()> {
        for p in &self.training.params {
            let name = format!("{p}{GRAD_ACC_SUFFIX}");
            let zeros = self.exe.read_variable(&self.state, &name)?;
            let zeros = HostTensor::from_f64(zeros.dtype(), zeros.shape().to_vec(), &vec![0.0; zeros.len()])?;
            self.exe.write_variable(&mut self.state, &name, &zeros)?;
        }
        Ok(())
    }

    /// Micro-batches per optimiser step (1 without gradient accumulation).
    pub fn micro_batches(&self) -> usize {
        self.training.micro_batches
    }

    /// Optimiser updates applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The current value of a trained parameter.
    pub fn parameter(&self, name: &str) -> Result<HostTensor> {
        self.exe.read_variable(&self.state, name)
    }

    /// Every trained parameter, by name (to save the model).
    pub fn parameters(&self) -> Result<Vec<(String, HostTensor)>> {
        self.training.params.iter().map(|p| Ok((p.clone(), self.parameter(p)?))).collect()
    }

    /// The whole training state (parameters, moments, step count), for a checkpoint. The
    /// gradient accumulators are not part of it: they are zero between optimiser steps.
    pub fn save(&self) -> Result<TrainingState> {
        let mut variables = self.parameters()?;
        for name in &self.training.optimizer_state {
            variables.push((name.clone(), self.exe.read_variable(&self.state, name)?));
        }
        Ok(TrainingState { steps: self.steps, variables })
    }

    /// Restores a state from [`TrainingSession::save`] of the same training graph. The state must
    /// hold every parameter and optimiser variable exactly once, with its dtype and shape, and
    /// nothing else ([`TrainingGraph::check_state`]); otherwise nothing is restored.
    pub fn restore(&mut self, saved: &TrainingState) -> Result<()> {
        self.training.check_state(&saved.variables)?;
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
        let config = TrainingConfig {
            optimizer: Optimizer::AdamW(AdamW::default()),
            clip_norm: Some(1.0),
            mixed_precision: None,
        };
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
    fn mixed_precision_runs_the_products_in_bf16_and_keeps_f32_master_weights() {
        let (forward, weights) = regression();
        let f32_config =
            TrainingConfig { optimizer: Optimizer::Sgd(Sgd::default()), clip_norm: None, mixed_precision: None };
        let mixed_config = TrainingConfig { mixed_precision: Some(DType::BF16), ..f32_config };
        let full = training_graph(&forward, "sq", &["w", "b"], &f32_config).unwrap();
        let mixed = training_graph(&forward, "sq", &["w", "b"], &mixed_config).unwrap();
        let node = |g: &Graph, name: &str| g.nodes().iter().find(|n| n.name == name).unwrap().clone();
        // The linear layer computes in bf16 on cast operands; its result, the loss, the
        // parameters and their moments stay f32.
        assert_eq!(node(&mixed.graph, "y").dtype, DType::BF16);
        assert!(matches!(node(&mixed.graph, "autocast:w:bf16").op, Op::Cast { dtype: DType::BF16, .. }));
        assert_eq!(node(&mixed.graph, "autocast:y:f32").dtype, DType::F32);
        assert_eq!(node(&mixed.graph, "d").dtype, DType::F32);
        for var in ["w", "b", "w.momentum", "b.momentum"] {
            let n = node(&mixed.graph, var);
            assert!(matches!(n.op, Op::Variable { .. }) && n.dtype == DType::F32, "{var}: {n:?}");
        }
        // No bf16 value reaches the update: everything after the backward products is f32.
        let update = mixed.graph.nodes().iter().filter(|n| n.name.starts_with("optim."));
        assert!(update.clone().count() > 0 && update.clone().all(|n| n.dtype == DType::F32));
        assert_eq!(mixed.params, full.params);
        assert_eq!(mixed.optimizer_state, full.optimizer_state);

        // One step on the f64 oracle (which rounds each value to its dtype): the loss and the
        // update agree with f32's to bf16's precision, and differ from it (the casts are real).
        let (x, t) = batch();
        let lr = HostTensor::f32(vec![], vec![0.1]).unwrap();
        let s = HostTensor::f32(vec![], vec![1.0]).unwrap();
        let inputs = [("x", &x), ("t", &t), (LR_INPUT, &lr), (STEP_INPUT, &s)];
        let run = |g: &Graph| {
            let mut state = reference::new_state(0);
            let out = reference::evaluate_with_state(g, &weights, &inputs, &mut state).unwrap();
            let w = reference::read_variable(g, &weights, &state, "w").unwrap();
            assert_eq!(w.dtype(), DType::F32);
            (out.get(LOSS_OUTPUT).unwrap().to_f64_vec()[0], w.to_f64_vec())
        };
        let (loss32, w32) = run(&full.graph);
        let (loss16, w16) = run(&mixed.graph);
        assert!(((loss16 - loss32) / loss32).abs() < 2e-2, "{loss16} vs {loss32}");
        assert_ne!(loss16, loss32);
        for (a, b) in w16.iter().zip(&w32) {
            assert!((a - b).abs() < 2e-2, "{w16:?} vs {w32:?}");
        }
        // The update is applied to the f32 master weight: a step far below bf16's resolution of
        // the weight still moves it (bf16 has 8 bits of mantissa; 0.5 + 1e-4 rounds to 0.5).
        let tiny = HostTensor::f32(vec![], vec![1e-6]).unwrap();
        let inputs = [("x", &x), ("t", &t), (LR_INPUT, &tiny), (STEP_INPUT, &s)];
        let mut state = reference::new_state(0);
        reference::evaluate_with_state(&mixed.graph, &weights, &inputs, &mut state).unwrap();
        let moved = reference::read_variable(&mixed.graph, &weights, &state, "w").unwrap().to_f64_vec();
        let start = weights.get_tensor("w").unwrap().to_f64_vec();
        assert!(moved.iter().zip(&start).any(|(a, b)| a != b && (a - b).abs() < 1e-4), "{moved:?} vs {start:?}");
    }

    #[test]
    fn mixed_precision_in_f16_or_a_non_float_is_refused() {
        let (forward, _) = regression();
        for dtype in [DType::F16, DType::U32, DType::F32] {
            let config = TrainingConfig {
                optimizer: Optimizer::Sgd(Sgd::default()),
                clip_norm: None,
                mixed_precision: Some(dtype),
            };
            let err = training_graph(&forward, "sq", &["w", "b"], &config).unwrap_err().to_string();
            assert!(err.contains("bf16"), "{dtype}: {err}");
        }
    }

    /// y = x·wᵀ + b with the **mean** squared error over the batch's elements (sum / count, like
    /// the causal-LM loss), so a batch split into micro-batches of equal size has the same mean.
    fn mean_regression() -> (Graph, HostWeights) {
        let (sum_graph, weights) = regression();
        let sq = sum_graph.outputs().iter().find(|(n, _)| n == "sq").unwrap().1;
        let mut b = GraphBuilder::from_graph(sum_graph);
        let d = b.nodes().iter().position(|n| n.name == "d").map(|i| ValueId(i as u32)).unwrap();
        let ones = b.add("ones", Op::Affine { x: d, mul: 0.0, add: 1.0 }).unwrap();
        let count = b.add("count", Op::ReduceSum { x: ones, axes: vec![0, 1], keep_dims: false }).unwrap();
        let mean = b.add("mse", Op::Binary { op: BinaryOp::Div, a: sq, b: count }).unwrap();
        b.output("mse", mean);
        (b.build().unwrap(), weights)
    }

    /// Rows `rows` of a [n, k] tensor.
    fn rows(t: &HostTensor, rows: std::ops::Range<usize>) -> HostTensor {
        let k = t.shape()[1];
        let v = t.as_f32().unwrap()[rows.start * k..rows.end * k].to_vec();
        HostTensor::f32(vec![rows.len(), k], v).unwrap()
    }

    /// Two micro-batches of 2 rows accumulated give the update of one batch of 4 (AdamW with the
    /// global-norm clipping active, so clipping sees the accumulated gradient), step after step;
    /// the accumulating micro-step changes no parameter or moment, bit for bit.
    #[test]
    fn accumulated_micro_batches_update_like_one_big_batch() {
        let (forward, weights) = mean_regression();
        let config = TrainingConfig {
            optimizer: Optimizer::AdamW(AdamW::default()),
            clip_norm: Some(0.3),
            mixed_precision: None,
        };
        let big = training_graph(&forward, "mse", &["w", "b"], &config).unwrap();
        let acc = accumulating_training_graph(&forward, "mse", &["w", "b"], &config, 2).unwrap();
        assert_eq!(acc.micro_batches, 2);
        assert_eq!(acc.optimizer_state, big.optimizer_state, "accumulators are not optimiser state");
        assert!(!big.graph.nodes().iter().any(|n| n.name.ends_with(GRAD_ACC_SUFFIX)));
        let (x, t) = batch();
        let (mut s_big, mut s_acc) = (reference::new_state(0), reference::new_state(0));
        let scalar = |v: f32| HostTensor::f32(vec![], vec![v]).unwrap();
        let read = |g: &TrainingGraph, s: &SessionState, name: &str| {
            reference::read_variable(&g.graph, &weights, s, name).unwrap().to_f64_vec()
        };
        for step in 1..=4 {
            let (lr, st) = (scalar(0.05), scalar(step as f32));
            let inputs = [("x", &x), ("t", &t), (LR_INPUT, &lr), (STEP_INPUT, &st)];
            let out = reference::evaluate_with_state(&big.graph, &weights, &inputs, &mut s_big).unwrap();
            let big_loss = out.get(LOSS_OUTPUT).unwrap().to_f64_vec()[0];
            let big_norm = out.get(GRAD_NORM_OUTPUT).unwrap().to_f64_vec()[0];

            let before: Vec<Vec<f64>> =
                ["w", "b", "w.adam_m", "w.adam_v"].iter().map(|n| read(&acc, &s_acc, n)).collect();
            let mut losses = vec![];
            let mut norm = 0.0;
            for (half, apply) in [(0..2, 0.0), (2..4, 1.0)] {
                let (xs, ts, a) = (rows(&x, half.clone()), rows(&t, half), scalar(apply));
                let inputs = [("x", &xs), ("t", &ts), (LR_INPUT, &lr), (STEP_INPUT, &st), (APPLY_INPUT, &a)];
                let out = reference::evaluate_with_state(&acc.graph, &weights, &inputs, &mut s_acc).unwrap();
                losses.push(out.get(LOSS_OUTPUT).unwrap().to_f64_vec()[0]);
                norm = out.get(GRAD_NORM_OUTPUT).unwrap().to_f64_vec()[0];
                if apply == 0.0 {
                    let after: Vec<Vec<f64>> =
                        ["w", "b", "w.adam_m", "w.adam_v"].iter().map(|n| read(&acc, &s_acc, n)).collect();
                    assert_eq!(after, before, "step {step}: accumulating changed the state");
                    assert!(read(&acc, &s_acc, "w.grad_acc").iter().any(|&g| g != 0.0));
                }
            }
            assert!(read(&acc, &s_acc, "w.grad_acc").iter().all(|&g| g == 0.0), "applied: accumulators reset");
            let mean = (losses[0] + losses[1]) / 2.0;
            assert!((mean - big_loss).abs() <= 1e-6 * big_loss.abs(), "step {step}: {mean} vs {big_loss}");
            assert!((norm - big_norm).abs() <= 1e-5 * big_norm, "step {step}: norm {norm} vs {big_norm}");
            assert!(big_norm > 0.3, "clipping is active");
            for name in ["w", "b", "w.adam_m", "w.adam_v", "b.adam_v"] {
                for (p, q) in read(&acc, &s_acc, name).iter().zip(read(&big, &s_big, name)) {
                    assert!((p - q).abs() <= 1e-6 * (1.0 + q.abs()), "step {step} {name}: {p} vs {q}");
                }
            }
        }
        // The parameters did move.
        assert_ne!(read(&acc, &s_acc, "w"), weights.get_tensor("w").unwrap().to_f64_vec());
        assert!(accumulating_training_graph(&forward, "mse", &["w"], &config, 0).is_err());
    }

    /// A saved state must be exactly the graph's parameters and optimiser variables, each with its
    /// dtype and shape: a missing moment, an extra tensor or a wrong shape is named.
    #[test]
    fn check_state_names_missing_extra_and_misshaped_tensors() {
        let (forward, weights) = regression();
        let config =
            TrainingConfig { optimizer: Optimizer::AdamW(AdamW::default()), clip_norm: None, mixed_precision: None };
        let training = training_graph(&forward, "sq", &["w", "b"], &config).unwrap();
        let state = reference::new_state(0);
        let full: Vec<(String, HostTensor)> = training
            .params
            .iter()
            .chain(&training.optimizer_state)
            .map(|n| (n.clone(), reference::read_variable(&training.graph, &weights, &state, n).unwrap()))
            .collect();
        training.check_state(&full).unwrap();
        let err = |v: &[(String, HostTensor)]| training.check_state(v).unwrap_err().to_string();
        let without = |name: &str| full.iter().filter(|(n, _)| n != name).cloned().collect::<Vec<_>>();
        let e = err(&without("b.adam_v"));
        assert!(e.contains("missing 1 of 6 tensors: `b.adam_v`"), "{e}");
        let e = err(&without("w"));
        assert!(e.contains("missing 1 of 6 tensors: `w`"), "{e}");
        let mut extra = full.clone();
        extra.push(("w.sneaky".into(), HostTensor::f32(vec![1], vec![0.0]).unwrap()));
        assert!(err(&extra).contains("unexpected tensor `w.sneaky`"));
        let mut twice = full.clone();
        twice.push(full[0].clone());
        assert!(err(&twice).contains("`w` appears twice"));
        let mut misshaped = without("b");
        misshaped.push(("b".into(), HostTensor::f32(vec![3], vec![0.0; 3]).unwrap()));
        let e = err(&misshaped);
        assert!(e.contains("`b` is f32 [3], expected f32 [2]"), "{e}");
        let mut wrong_type = without("b");
        wrong_type.push(("b".into(), HostTensor::u32(vec![2], vec![0; 2]).unwrap()));
        assert!(err(&wrong_type).contains("`b` is u32 [2]"));
    }

    #[test]
    fn training_graphs_refuse_what_they_cannot_train() {
        let (forward, _) = regression();
        let config =
            TrainingConfig { optimizer: Optimizer::Sgd(Sgd::default()), clip_norm: None, mixed_precision: None };
        assert!(matches!(training_graph(&forward, "nope", &["w"], &config), Err(AutodiffError::UnknownName(_))));
        let err = training_graph(&forward, "sq", &["x"], &config).unwrap_err().to_string();
        assert!(err.contains("must be an f32 weight"), "{err}");
    }
}
