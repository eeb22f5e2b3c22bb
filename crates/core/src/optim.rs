//! Optimiser updates and gradient clipping as graph-building functions, so that a whole training
//! step — forward, loss, backward, clipping, update — is one graph, hence one program on a
//! compiled backend. The learning rate and the step number are graph **inputs** (scalars, shape
//! []), so a schedule (warm-up, cosine) changes them per step with no recompilation.
//!
//! The formulas are PyTorch's, step for step, so the weights after a step can be compared with
//! `torch.optim.AdamW` / `torch.optim.SGD` and `torch.nn.utils.clip_grad_norm_`.

use crate::{BinaryOp, Error, GraphBuilder, Op, Result, UnaryOp, ValueId};

/// AdamW's hyper-parameters (PyTorch's defaults: β = (0.9, 0.999), eps 1e-8, weight decay 0.01).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
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
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

/// The scalars one AdamW step shares between all parameters.
#[derive(Debug, Clone, Copy)]
pub struct AdamWScalars {
    /// 1 − lr·weight_decay.
    decay: ValueId,
    /// lr / (1 − β1^t).
    step_size: ValueId,
    /// √(1 − β2^t).
    sqrt_bc2: ValueId,
    config: AdamW,
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

impl AdamW {
    /// The per-step scalars from the learning rate `lr` and the step number `step` (both float
    /// scalars, shape []; `step` counts from 1 for the first update): β^t = e^(t·ln β).
    pub fn scalars(&self, b: &mut GraphBuilder, name: &str, lr: ValueId, step: ValueId) -> Result<AdamWScalars> {
        scalar_input_check(b, name, lr, "the learning rate")?;
        scalar_input_check(b, name, step, "the step number")?;
        let bias_correction = |b: &mut GraphBuilder, which: &str, beta: f64| -> Result<ValueId> {
            let log = affine(b, format!("{name}.{which}.t_ln_beta"), step, beta.ln(), 0.0)?;
            let pow = unary(b, format!("{name}.{which}.beta_pow_t"), UnaryOp::Exp, log)?;
            affine(b, format!("{name}.{which}.correction"), pow, -1.0, 1.0)
        };
        let bc1 = bias_correction(b, "bc1", self.beta1)?;
        let bc2 = bias_correction(b, "bc2", self.beta2)?;
        let sqrt_bc2 = unary(b, format!("{name}.sqrt_bc2"), UnaryOp::Sqrt, bc2)?;
        let step_size = binary(b, format!("{name}.step_size"), BinaryOp::Div, lr, bc1)?;
        let decay = affine(b, format!("{name}.decay"), lr, -self.weight_decay, 1.0)?;
        Ok(AdamWScalars { decay, step_size, sqrt_bc2, config: *self })
    }
}

/// One AdamW update of parameter `param` with gradient `grad` and moments `m`, `v` (each of the
/// parameter's shape), following `torch.optim.AdamW` (not amsgrad):
///
/// p ← p·(1 − lr·wd); m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²;
/// p ← p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + eps).
///
/// Returns (new parameter, new m, new v). `name` prefixes the nodes (one per parameter).
pub fn adamw_update(
    b: &mut GraphBuilder,
    name: &str,
    s: &AdamWScalars,
    param: ValueId,
    grad: ValueId,
    m: ValueId,
    v: ValueId,
) -> Result<(ValueId, ValueId, ValueId)> {
    let c = s.config;
    let n = |what: &str| format!("{name}.{what}");
    let decayed = binary(b, n("decayed"), BinaryOp::Mul, param, s.decay)?;
    let m_old = affine(b, n("m_kept"), m, c.beta1, 0.0)?;
    let m_new = affine(b, n("m_added"), grad, 1.0 - c.beta1, 0.0)?;
    let m_new = binary(b, n("m"), BinaryOp::Add, m_old, m_new)?;
    let g2 = binary(b, n("grad_sq"), BinaryOp::Mul, grad, grad)?;
    let v_old = affine(b, n("v_kept"), v, c.beta2, 0.0)?;
    let v_new = affine(b, n("v_added"), g2, 1.0 - c.beta2, 0.0)?;
    let v_new = binary(b, n("v"), BinaryOp::Add, v_old, v_new)?;
    let root = unary(b, n("v_sqrt"), UnaryOp::Sqrt, v_new)?;
    let root = binary(b, n("v_sqrt_corrected"), BinaryOp::Div, root, s.sqrt_bc2)?;
    let denom = affine(b, n("denom"), root, 1.0, c.eps)?;
    let ratio = binary(b, n("ratio"), BinaryOp::Div, m_new, denom)?;
    let update = binary(b, n("update"), BinaryOp::Mul, ratio, s.step_size)?;
    let p_new = binary(b, n("param"), BinaryOp::Sub, decayed, update)?;
    Ok((p_new, m_new, v_new))
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

    /// torch.optim.AdamW's update, written out in f64 for one element.
    fn torch_adamw(c: AdamW, lr: f64, t: f64, p: f64, g: f64, m: f64, v: f64) -> (f64, f64, f64) {
        let p = p * (1.0 - lr * c.weight_decay);
        let m = c.beta1 * m + (1.0 - c.beta1) * g;
        let v = c.beta2 * v + (1.0 - c.beta2) * g * g;
        let (bc1, bc2) = (1.0 - c.beta1.powf(t), 1.0 - c.beta2.powf(t));
        let denom = v.sqrt() / bc2.sqrt() + c.eps;
        (p - lr / bc1 * m / denom, m, v)
    }

    #[test]
    fn adamw_matches_pytorchs_formula() {
        let c = AdamW { beta1: 0.8, beta2: 0.95, eps: 1e-6, weight_decay: 0.1 };
        let mut b = GraphBuilder::new("adamw");
        let (lr, step) = (scalar(&mut b, "lr"), scalar(&mut b, "step"));
        let (p, g, m, v) = (vector(&mut b, "p"), vector(&mut b, "g"), vector(&mut b, "m"), vector(&mut b, "v"));
        let s = c.scalars(&mut b, "adamw", lr, step).unwrap();
        let (p2, m2, v2) = adamw_update(&mut b, "w", &s, p, g, m, v).unwrap();
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
