//! Optimiser updates and gradient clipping as graph-building functions, so that a whole training
//! step — forward, loss, backward, clipping, update — is one graph, hence one program on a
//! compiled backend. The learning rate and the step number are graph **inputs** (scalars, shape
//! `[]`), so a schedule (warm-up, cosine) changes them per step with no recompilation.
//!
//! The formulas are PyTorch's, step for step, so the weights after a step can be compared with
//! `torch.optim.AdamW` / `torch.optim.SGD` and `torch.nn.utils.clip_grad_norm_`.

use crate::{BinaryOp, Error, GraphBuilder, Op, ReshapeDim, Result, UnaryOp, ValueId};

/// AdamW's hyper-parameters (PyTorch's defaults: β = (0.9, 0.999), eps 1e-8, weight decay 0.01).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    /// Decay rate of the first moment (running mean of gradients), in `[0, 1)`.
    pub beta1: f64,
    /// Decay rate of the second moment (running mean of squared gradients), in `[0, 1)`.
    pub beta2: f64,
    /// Added to the bias-corrected √v in the denominator, to keep the step finite where v ≈ 0.
    pub eps: f64,
    /// Decoupled weight decay: p ← p·(1 − lr·weight_decay) before the Adam step.
    pub weight_decay: f64,
}

impl Default for AdamW {
    fn default() -> AdamW {
        AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// SGD with momentum, as `torch.optim.SGD(momentum, weight_decay, nesterov)` with dampening 0:
/// g ← g + weight_decay·p; buf ← momentum·buf + g (buf starts at 0, so the first step's buf is g,
/// as PyTorch's); p ← p − lr·(nesterov ? g + momentum·buf : buf).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sgd {
    /// Momentum factor; 0 (the default) is plain SGD.
    pub momentum: f64,
    /// L2 penalty added to the gradient (coupled, unlike AdamW's); 0 turns it off.
    pub weight_decay: f64,
    /// Nesterov momentum: step along g + momentum·buf instead of buf.
    pub nesterov: bool,
}

fn add(b: &mut GraphBuilder, name: String, op: Op) -> Result<ValueId> {
    b.add(name, op)
}

fn affine(b: &mut GraphBuilder, name: String, x: ValueId, mul: f64, add_: f64) -> Result<ValueId> {
    add(b, name, Op::Affine { x, mul, add: add_ })
}

fn binary(b: &mut GraphBuilder, name: String, op: BinaryOp, a: ValueId, b_: ValueId) -> Result<ValueId> {
    add(b, name, Op::Binary { op, a, b: b_ })
}

fn unary(b: &mut GraphBuilder, name: String, op: UnaryOp, x: ValueId) -> Result<ValueId> {
    add(b, name, Op::Unary { op, x })
}

fn scalar_input_check(b: &GraphBuilder, name: &str, id: ValueId, what: &str) -> Result<()> {
    let node = b.node(id);
    if node.shape.rank() != 0 || !node.dtype.is_float() {
        return Err(Error::node(
            name,
            format!("{what} must be a float scalar (shape []), got {} {}", node.dtype, node.shape),
        ));
    }
    Ok(())
}

/// The per-step coefficients of `Op::AdamWStep` (`torch.optim.AdamW`, not amsgrad), from the
/// hyper-parameters, the learning rate and the step number t (from 1), in f64, for backends'
/// kernels (candle's CPU kernel applies them with [`AdamWCoefficients::apply`]). The reference
/// evaluator writes the formula out on its own, so that it checks this code rather than shares it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWCoefficients {
    /// 1 − lr·weight_decay (decoupled weight decay).
    pub decay: f64,
    /// lr / (1 − β1^t).
    pub step_size: f64,
    /// √(1 − β2^t).
    pub sqrt_bc2: f64,
    /// [`AdamW::beta1`], copied.
    pub beta1: f64,
    /// [`AdamW::beta2`], copied.
    pub beta2: f64,
    /// [`AdamW::eps`], copied.
    pub eps: f64,
}

impl AdamWCoefficients {
    /// The coefficients for learning rate `lr` at step `t` (from 1; at `t` = 0 the bias
    /// corrections divide by zero and give infinities or NaN).
    pub fn new(config: &AdamW, lr: f64, t: f64) -> AdamWCoefficients {
        AdamWCoefficients {
            decay: 1.0 - lr * config.weight_decay,
            step_size: lr / (1.0 - config.beta1.powf(t)),
            sqrt_bc2: (1.0 - config.beta2.powf(t)).sqrt(),
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.eps,
        }
    }

    /// One element: (p, g, m, v) → (p', m', v') with m' = β1·m + (1 − β1)·g,
    /// v' = β2·v + (1 − β2)·g², p' = p·decay − step_size · m' / (√v' / √(1 − β2^t) + eps).
    #[inline]
    pub fn apply(&self, p: f64, g: f64, m: f64, v: f64) -> (f64, f64, f64) {
        let m = self.beta1 * m + (1.0 - self.beta1) * g;
        let v = self.beta2 * v + (1.0 - self.beta2) * g * g;
        let denom = v.sqrt() / self.sqrt_bc2 + self.eps;
        (p * self.decay - self.step_size * (m / denom), m, v)
    }
}

/// One AdamW update of parameter `param` with gradient `grad` and moments `m`, `v` (each of the
/// parameter's shape) at learning rate `lr` and step `step` (float scalars, shape `[]`; `step`
/// counts from 1), as one fused `Op::AdamWStep` (formula: [`AdamWCoefficients`]).
///
/// Returns (new parameter, new m, new v). `name` prefixes the nodes (one per parameter).
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    b: &mut GraphBuilder,
    name: &str,
    config: &AdamW,
    lr: ValueId,
    step: ValueId,
    param: ValueId,
    grad: ValueId,
    m: ValueId,
    v: ValueId,
) -> Result<(ValueId, ValueId, ValueId)> {
    scalar_input_check(b, name, lr, "the learning rate")?;
    scalar_input_check(b, name, step, "the step number")?;
    let AdamW { beta1, beta2, eps, weight_decay } = *config;
    let stacked = add(
        b,
        format!("{name}.adamw"),
        Op::AdamWStep { param, grad, m, v, lr, step, beta1, beta2, eps, weight_decay },
    )?;
    let rank = b.node(param).shape.rank();
    let mut parts = Vec::with_capacity(3);
    for (i, what) in ["param", "m", "v"].into_iter().enumerate() {
        let one =
            add(b, format!("{name}.{what}_slice"), Op::Slice { x: stacked, axis: 0, start: i, end: Some(i + 1) })?;
        let dims = (1..=rank).map(ReshapeDim::Keep).collect();
        parts.push(add(b, format!("{name}.{what}"), Op::Reshape { x: one, dims })?);
    }
    Ok((parts[0], parts[1], parts[2]))
}

/// One SGD-with-momentum update (see [`Sgd`]); `lr` is a float scalar. Returns (new parameter,
/// new momentum buffer). With momentum 0 the buffer is just the (decayed) gradient.
pub fn sgd_update(
    b: &mut GraphBuilder,
    name: &str,
    config: &Sgd,
    lr: ValueId,
    param: ValueId,
    grad: ValueId,
    buf: ValueId,
) -> Result<(ValueId, ValueId)> {
    scalar_input_check(b, name, lr, "the learning rate")?;
    let n = |what: &str| format!("{name}.{what}");
    let g = if config.weight_decay != 0.0 {
        let wd = affine(b, n("weight_decay"), param, config.weight_decay, 0.0)?;
        binary(b, n("grad_decayed"), BinaryOp::Add, grad, wd)?
    } else {
        grad
    };
    let kept = affine(b, n("buf_kept"), buf, config.momentum, 0.0)?;
    let buf_new = binary(b, n("buf"), BinaryOp::Add, kept, g)?;
    let direction = if config.nesterov {
        let ahead = affine(b, n("buf_ahead"), buf_new, config.momentum, 0.0)?;
        binary(b, n("direction"), BinaryOp::Add, g, ahead)?
    } else {
        buf_new
    };
    let step = binary(b, n("update"), BinaryOp::Mul, direction, lr)?;
    let p_new = binary(b, n("param"), BinaryOp::Sub, param, step)?;
    Ok((p_new, buf_new))
}

/// Clips gradients by their global norm, as `torch.nn.utils.clip_grad_norm_`: with
/// n = √(Σ over all gradients of Σ g²), every gradient is scaled by min(1, max_norm / (n + 1e-6)).
/// Returns the scaled gradients and n (a scalar, before clipping — what PyTorch returns).
pub fn clip_by_global_norm(
    b: &mut GraphBuilder,
    name: &str,
    grads: &[ValueId],
    max_norm: f64,
) -> Result<(Vec<ValueId>, ValueId)> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::node(name, format!("max_norm must be finite and > 0, got {max_norm}")));
    }
    let squares = crate::loss::sum_of_squares(b, &format!("{name}.squares"), grads)?;
    let norm = unary(b, format!("{name}.norm"), UnaryOp::Sqrt, squares)?;
    let shifted = affine(b, format!("{name}.norm_eps"), norm, 1.0, 1e-6)?;
    let max = affine(b, format!("{name}.max_norm"), norm, 0.0, max_norm)?;
    let coef = binary(b, format!("{name}.coef"), BinaryOp::Div, max, shifted)?;
    // min(1, c) = 1 − relu(1 − c)
    let over = affine(b, format!("{name}.one_minus_coef"), coef, -1.0, 1.0)?;
    let over = unary(b, format!("{name}.excess"), UnaryOp::Relu, over)?;
    let coef = affine(b, format!("{name}.coef_clamped"), over, -1.0, 1.0)?;
    let mut out = Vec::with_capacity(grads.len());
    for (i, &g) in grads.iter().enumerate() {
        out.push(binary(b, format!("{name}.clipped{i}"), BinaryOp::Mul, g, coef)?);
    }
    Ok((out, norm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{reference, DType, Dim, HostTensor, HostWeights, Shape};

    fn scalar(b: &mut GraphBuilder, name: &str) -> ValueId {
        b.input(name, DType::F32, Shape(vec![])).unwrap()
    }

    fn vector(b: &mut GraphBuilder, name: &str) -> ValueId {
        b.input(name, DType::F32, Shape(vec![Dim::sym(&format!("len_{name}"))])).unwrap()
    }

    fn run(b: GraphBuilder, inputs: &[(&str, Vec<f32>)]) -> Vec<(String, Vec<f64>)> {
        let g = b.build().unwrap();
        let tensors: Vec<(String, HostTensor)> = inputs
            .iter()
            .map(|(n, v)| {
                let shape = if ["lr", "step"].contains(n) { vec![] } else { vec![v.len()] };
                (n.to_string(), HostTensor::f32(shape, v.clone()).unwrap())
            })
            .collect();
        let feed: Vec<(&str, &HostTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let out = reference::evaluate(&g, &HostWeights::new(), &feed).unwrap();
        out.iter().map(|(n, t)| (n.to_string(), t.to_f64_vec())).collect()
    }

    /// torch.optim.AdamW's update, written out in f64 for one element, independently of
    /// `AdamWCoefficients`.
    fn torch_adamw(c: AdamW, lr: f64, t: f64, p: f64, g: f64, m: f64, v: f64) -> (f64, f64, f64) {
        let p = p * (1.0 - lr * c.weight_decay);
        let exp_avg = c.beta1 * m + (1.0 - c.beta1) * g;
        let exp_avg_sq = c.beta2 * v + (1.0 - c.beta2) * g * g;
        let step_size = lr / (1.0 - c.beta1.powi(t as i32));
        let bias_correction2_sqrt = (1.0 - c.beta2.powi(t as i32)).sqrt();
        let denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + c.eps;
        (p - step_size * exp_avg / denom, exp_avg, exp_avg_sq)
    }

    #[test]
    fn adamw_matches_pytorchs_formula() {
        let c = AdamW { beta1: 0.8, beta2: 0.95, eps: 1e-6, weight_decay: 0.1 };
        let mut b = GraphBuilder::new("adamw");
        let (lr, step) = (scalar(&mut b, "lr"), scalar(&mut b, "step"));
        let (p, g, m, v) = (vector(&mut b, "p"), vector(&mut b, "g"), vector(&mut b, "m"), vector(&mut b, "v"));
        let (p2, m2, v2) = adamw_update(&mut b, "w", &c, lr, step, p, g, m, v).unwrap();
        b.output("p", p2).output("m", m2).output("v", v2);
        let (pv, gv, mv, vv) =
            (vec![0.5f32, -1.0, 2.0], vec![0.1f32, -0.3, 0.0], vec![0.0f32, 0.2, -0.1], vec![0.0f32, 0.01, 0.04]);
        for t in [1.0f32, 7.0] {
            let out = run(
                b.clone(),
                &[
                    ("lr", vec![0.01]),
                    ("step", vec![t]),
                    ("p", pv.clone()),
                    ("g", gv.clone()),
                    ("m", mv.clone()),
                    ("v", vv.clone()),
                ],
            );
            for i in 0..3 {
                let want =
                    torch_adamw(c, 0.01f32 as f64, t as f64, pv[i] as f64, gv[i] as f64, mv[i] as f64, vv[i] as f64);
                for (k, w) in [want.0, want.1, want.2].into_iter().enumerate() {
                    let got = out[k].1[i];
                    assert!(
                        (got - w).abs() <= 1e-6 * (1.0 + w.abs()),
                        "step {t} output {} [{i}]: {got} vs {w}",
                        out[k].0
                    );
                }
            }
        }
    }

    #[test]
    fn sgd_momentum_and_nesterov_match_pytorchs_formula() {
        for nesterov in [false, true] {
            let c = Sgd { momentum: 0.9, weight_decay: 0.05, nesterov };
            let mut b = GraphBuilder::new("sgd");
            let lr = scalar(&mut b, "lr");
            let (p, g, buf) = (vector(&mut b, "p"), vector(&mut b, "g"), vector(&mut b, "buf"));
            let (p2, buf2) = sgd_update(&mut b, "w", &c, lr, p, g, buf).unwrap();
            b.output("p", p2).output("buf", buf2);
            let out =
                run(b, &[("lr", vec![0.1]), ("p", vec![1.0, -2.0]), ("g", vec![0.5, 0.25]), ("buf", vec![0.0, 1.0])]);
            for (i, (p, g, buf)) in [(1.0f64, 0.5f64, 0.0f64), (-2.0, 0.25, 1.0)].into_iter().enumerate() {
                let g = g + 0.05 * p;
                let buf = 0.9 * buf + g;
                let dir = if nesterov { g + 0.9 * buf } else { buf };
                let want_p = p - 0.1f32 as f64 * dir;
                assert!((out[0].1[i] - want_p).abs() < 1e-6, "{nesterov} p[{i}]: {} vs {want_p}", out[0].1[i]);
                assert!((out[1].1[i] - buf).abs() < 1e-6, "{nesterov} buf[{i}]");
            }
        }
    }

    #[test]
    fn clipping_scales_only_above_the_norm() {
        for (max_norm, want_coef) in [(1.0, 1.0 / (13f64.sqrt() + 1e-6)), (100.0, 1.0)] {
            let mut b = GraphBuilder::new("clip");
            let (g1, g2) = (vector(&mut b, "a"), vector(&mut b, "b"));
            let (clipped, norm) = clip_by_global_norm(&mut b, "clip", &[g1, g2], max_norm).unwrap();
            b.output("a", clipped[0]).output("b", clipped[1]).output("norm", norm);
            // ‖(2, 0, 3)‖ = √13
            let out = run(b, &[("a", vec![2.0, 0.0]), ("b", vec![3.0])]);
            assert!((out[2].1[0] - 13f64.sqrt()).abs() < 1e-6);
            assert!((out[0].1[0] - 2.0 * want_coef).abs() < 1e-6, "{max_norm}: {:?}", out[0].1);
            assert!((out[1].1[0] - 3.0 * want_coef).abs() < 1e-6, "{max_norm}: {:?}", out[1].1);
        }
    }
}
