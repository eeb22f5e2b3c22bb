//! Gradients of reductions over an axis: layer and RMS norms, softmax and log-softmax, L2
//! normalisation, masked mean pooling, and sums over axes. Norms recompute their statistics from
//! x (cheap next to the matmuls) rather than keeping them from the forward pass, so the forward
//! ops stay single fused ops on every backend.

use super::{Ctx, R};
use crate::{Op, ReshapeDim, UnaryOp, ValueId};

/// x̂ = (x − μ)/s, s = √(var + eps); y = x̂·γ + β.
/// dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / s with ĝ = g·γ; dγ = Σ g·x̂; dβ = Σ g (over rows).
pub(super) fn layer_norm(
    ctx: &mut Ctx<'_>,
    x: ValueId,
    gamma: ValueId,
    beta: Option<ValueId>,
    eps: f64,
    g: ValueId,
    wants: &dyn Fn(ValueId) -> bool,
) -> R<Vec<(ValueId, ValueId)>> {
    let last = ctx.dims(x).len() - 1;
    let n = ctx.fixed(x, last, "feature axis")? as f64;
    let sum = ctx.sum_last_keep(x)?;
    let mean = ctx.affine(sum, 1.0 / n, 0.0)?;
    let centred = ctx.minus(x, mean)?;
    let sq = ctx.mul(centred, centred)?;
    let sq_sum = ctx.sum_last_keep(sq)?;
    let var_eps = ctx.affine(sq_sum, 1.0 / n, eps)?;
    let s = ctx.unary(UnaryOp::Sqrt, var_eps)?;
    let xhat = ctx.div(centred, s)?;
    let mut out = Vec::new();
    if wants(gamma) {
        let gx = ctx.mul(g, xhat)?;
        out.push((gamma, ctx.sum_to(gx, gamma)?));
    }
    if let Some(b) = beta.filter(|b| wants(*b)) {
        out.push((b, ctx.sum_to(g, b)?));
    }
    if wants(x) {
        let gg = ctx.mul(g, gamma)?;
        let s1 = ctx.sum_last_keep(gg)?;
        let m1 = ctx.affine(s1, 1.0 / n, 0.0)?;
        let ggx = ctx.mul(gg, xhat)?;
        let s2 = ctx.sum_last_keep(ggx)?;
        let m2 = ctx.affine(s2, 1.0 / n, 0.0)?;
        let t = ctx.minus(gg, m1)?;
        let xm2 = ctx.mul(xhat, m2)?;
        let t = ctx.minus(t, xm2)?;
        out.push((x, ctx.div(t, s)?));
    }
    Ok(out)
}

/// x̂ = x/s, s = √(mean(x²) + eps); y = x̂·γ. dx = (ĝ − x̂·mean(ĝ·x̂)) / s; dγ = Σ g·x̂.
pub(super) fn rms_norm(
    ctx: &mut Ctx<'_>,
    x: ValueId,
    gamma: ValueId,
    eps: f64,
    g: ValueId,
    wants: &dyn Fn(ValueId) -> bool,
) -> R<Vec<(ValueId, ValueId)>> {
    let last = ctx.dims(x).len() - 1;
    let n = ctx.fixed(x, last, "feature axis")? as f64;
    let sq = ctx.mul(x, x)?;
    let sq_sum = ctx.sum_last_keep(sq)?;
    let ms_eps = ctx.affine(sq_sum, 1.0 / n, eps)?;
    let s = ctx.unary(UnaryOp::Sqrt, ms_eps)?;
    let xhat = ctx.div(x, s)?;
    let mut out = Vec::new();
    if wants(gamma) {
        let gx = ctx.mul(g, xhat)?;
        out.push((gamma, ctx.sum_to(gx, gamma)?));
    }
    if wants(x) {
        let gg = ctx.mul(g, gamma)?;
        let ggx = ctx.mul(gg, xhat)?;
        let s2 = ctx.sum_last_keep(ggx)?;
        let m2 = ctx.affine(s2, 1.0 / n, 0.0)?;
        let xm2 = ctx.mul(xhat, m2)?;
        let t = ctx.minus(gg, xm2)?;
        out.push((x, ctx.div(t, s)?));
    }
    Ok(out)
}

/// dx = y ⊙ (g − Σ g·y).
pub(super) fn softmax(ctx: &mut Ctx<'_>, x: ValueId, y: ValueId, g: ValueId) -> R<Vec<(ValueId, ValueId)>> {
    Ok(vec![(x, softmax_backward(ctx, y, g)?)])
}

/// The gradient of softmax's input, from its output `p` and the gradient `g` of that output.
pub(super) fn softmax_backward(ctx: &mut Ctx<'_>, p: ValueId, g: ValueId) -> R<ValueId> {
    let gp = ctx.mul(g, p)?;
    let s = ctx.sum_last_keep(gp)?;
    let centred = ctx.minus(g, s)?;
    ctx.mul(p, centred)
}

/// dx = g − softmax(x) · Σ g, softmax(x) = e^y.
pub(super) fn log_softmax(ctx: &mut Ctx<'_>, x: ValueId, y: ValueId, g: ValueId) -> R<Vec<(ValueId, ValueId)>> {
    let p = ctx.unary(UnaryOp::Exp, y)?;
    let s = ctx.sum_last_keep(g)?;
    let ps = ctx.mul(p, s)?;
    Ok(vec![(x, ctx.minus(g, ps)?)])
}

/// y = x / max(n, eps), n = ‖x‖: `dx = (g − y·(y·g)·[n > eps]) / max(n, eps)`.
pub(super) fn l2_normalize(
    ctx: &mut Ctx<'_>,
    x: ValueId,
    eps: f64,
    y: ValueId,
    g: ValueId,
) -> R<Vec<(ValueId, ValueId)>> {
    let sq = ctx.mul(x, x)?;
    let sq_sum = ctx.sum_last_keep(sq)?;
    let norm = ctx.unary(UnaryOp::Sqrt, sq_sum)?;
    let denominator = ctx.at_least(norm, eps)?;
    let over = ctx.affine(norm, 1.0, -eps)?;
    let above = ctx.unary(UnaryOp::Step, over)?;
    let yg = ctx.mul(y, g)?;
    let dot = ctx.sum_last_keep(yg)?;
    let dot = ctx.mul(dot, above)?;
    let ydot = ctx.mul(y, dot)?;
    let t = ctx.minus(g, ydot)?;
    Ok(vec![(x, ctx.div(t, denominator)?)])
}

/// `y[b] = Σ_s x[b, s]·w[b, s]` with w = m / max(Σ m, 1e-9): `dx[b, s, :] = g[b, :]·w[b, s]`.
pub(super) fn mean_pool(ctx: &mut Ctx<'_>, x: ValueId, mask: ValueId, g: ValueId) -> R<Vec<(ValueId, ValueId)>> {
    let dtype = ctx.node(x).dtype;
    let m = ctx.add("mask", Op::Cast { x: mask, dtype })?;
    let count = ctx.sum(m, vec![1], true)?;
    let count = ctx.at_least(count, 1e-9)?;
    let w = ctx.div(m, count)?;
    let w = ctx.reshape(w, vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Fixed(1)])?;
    let g = ctx.reshape(g, vec![ReshapeDim::Keep(0), ReshapeDim::Fixed(1), ReshapeDim::Keep(1)])?;
    Ok(vec![(x, ctx.mul(w, g)?)])
}

/// Every summed element gets the gradient of its sum: g broadcast back over the summed axes.
pub(super) fn reduce_sum(
    ctx: &mut Ctx<'_>,
    x: ValueId,
    axes: &[usize],
    keep_dims: bool,
    g: ValueId,
) -> R<Vec<(ValueId, ValueId)>> {
    if axes.is_empty() {
        return Ok(vec![(x, g)]);
    }
    let rank = ctx.dims(x).len();
    let kept = if keep_dims {
        g
    } else {
        let mut dims = Vec::with_capacity(rank);
        let mut j = 0;
        for i in 0..rank {
            if axes.contains(&i) {
                dims.push(ReshapeDim::Fixed(1));
            } else {
                dims.push(ReshapeDim::Keep(j));
                j += 1;
            }
        }
        ctx.reshape(g, dims)?
    };
    let zeros = ctx.zeros_like(x)?;
    Ok(vec![(x, ctx.plus(zeros, kept)?)])
}

#[cfg(test)]
mod tests {
    use super::super::check::Check;
    use crate::{Dim, HostTensor, Op};

    fn rows(c: &mut Check, n: usize) -> crate::ValueId {
        c.input("x", &[Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(n)], &[2, 3, n])
    }

    #[test]
    fn layer_norm_with_and_without_beta() {
        for with_beta in [true, false] {
            let mut c = Check::new("layer_norm");
            let x = rows(&mut c, 6);
            let gamma = c.weight("g", &[6], 1.0);
            let beta = with_beta.then(|| c.weight("b", &[6], 1.0));
            let y = c.op(Op::LayerNorm { x, gamma, beta, eps: 1e-5 });
            c.run(y);
        }
    }

    #[test]
    fn rms_norm() {
        let mut c = Check::new("rms_norm");
        let x = rows(&mut c, 5);
        let gamma = c.weight("g", &[5], 1.0);
        let y = c.op(Op::RmsNorm { x, gamma, eps: 1e-5 });
        c.run(y);
    }

    #[test]
    fn softmax_and_log_softmax() {
        for log in [false, true] {
            let mut c = Check::new("softmax");
            let x = rows(&mut c, 7);
            let y = c.op(if log { Op::LogSoftmax { x } } else { Op::Softmax { x } });
            c.run(y);
        }
    }

    #[test]
    fn l2_normalize_above_and_below_eps() {
        // Scale 1: the norm is far above eps. Scale 1e-3 with eps 0.1: the norm is below eps.
        for (scale, eps) in [(1.0, 1e-12), (1e-3, 0.1)] {
            let mut c = Check::new("l2");
            let x = c.scaled_input("x", &[Dim::sym("batch"), Dim::Fixed(4)], &[3, 4], scale);
            let y = c.op(Op::L2Normalize { x, eps });
            let y = c.op(Op::Affine { x: y, mul: 1.0 / scale, add: 0.0 });
            c.run(y);
        }
    }

    #[test]
    fn mean_pool_with_padding() {
        let mut c = Check::new("mean_pool");
        let x = rows(&mut c, 4);
        let mask = HostTensor::u32(vec![2, 3], vec![1, 1, 1, 1, 0, 0]).unwrap();
        let mask = c.fixed_input("mask", &[Dim::sym("batch"), Dim::sym("seq")], mask);
        let y = c.op(Op::MeanPool { x, mask });
        c.run(y);
    }

    #[test]
    fn reduce_sum_kept_and_dropped() {
        for (axes, keep_dims) in [(vec![1], true), (vec![0, 2], false), (vec![0, 1, 2], false)] {
            let mut c = Check::new("reduce_sum");
            let x = rows(&mut c, 4);
            let y = c.op(Op::ReduceSum { x, axes, keep_dims });
            c.run(y);
        }
    }
}
