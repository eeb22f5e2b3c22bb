//! Reductions over the last axis (softmax, layer and RMS norms, L2 normalisation) and masked mean
//! pooling. Each follows the reference's formula step by step.

use crate::emit::{Emitter, R, V};

/// A per-feature parameter (gain, bias) in x's type, broadcast to x's shape.
fn feature(e: &mut Emitter, p: &V, x: &V) -> R<V> {
    let p = e.convert(p, x.elem());
    e.broadcast_to(&p, x.shape())
}

/// mean over the last axis, kept as an axis of size 1.
fn mean_last(e: &mut Emitter, x: &V) -> R<V> {
    let n = *x.shape().last().ok_or("a scalar has no last axis")? as f64;
    let s = e.sum_last_keep(x)?;
    e.binary_const("divide", &s, n)
}

/// Softmax over the last axis, shifted by the maximum.
pub(crate) fn softmax(e: &mut Emitter, x: &V) -> R<V> {
    let m = e.max_last_keep(x)?;
    let m = e.broadcast_to(&m, x.shape())?;
    let shifted = e.binary("subtract", x, &m)?;
    let ex = e.unary("exponential", &shifted);
    let s = e.sum_last_keep(&ex)?;
    let s = e.broadcast_to(&s, x.shape())?;
    e.binary("divide", &ex, &s)
}

/// (x − mean) / sqrt(var + eps) · gamma + beta, variance of the centred values.
pub(super) fn layer_norm(e: &mut Emitter, x: &V, gamma: &V, beta: Option<&V>, eps: f64) -> R<V> {
    let mean = mean_last(e, x)?;
    let mean = e.broadcast_to(&mean, x.shape())?;
    let centred = e.binary("subtract", x, &mean)?;
    let sq = e.binary("multiply", &centred, &centred)?;
    let var = mean_last(e, &sq)?;
    let var = e.binary_const("add", &var, eps)?;
    let inv = e.unary("rsqrt", &var);
    let inv = e.broadcast_to(&inv, x.shape())?;
    let y = e.binary("multiply", &centred, &inv)?;
    let g = feature(e, gamma, x)?;
    let y = e.binary("multiply", &y, &g)?;
    match beta {
        Some(b) => {
            let b = feature(e, b, x)?;
            e.binary("add", &y, &b)
        }
        None => Ok(y),
    }
}

/// x / sqrt(mean(x²) + eps) · gamma.
pub(super) fn rms_norm(e: &mut Emitter, x: &V, gamma: &V, eps: f64) -> R<V> {
    let sq = e.binary("multiply", x, x)?;
    let ms = mean_last(e, &sq)?;
    let ms = e.binary_const("add", &ms, eps)?;
    let inv = e.unary("rsqrt", &ms);
    let inv = e.broadcast_to(&inv, x.shape())?;
    let y = e.binary("multiply", x, &inv)?;
    let g = feature(e, gamma, x)?;
    e.binary("multiply", &y, &g)
}

/// x / max(‖x‖₂, eps) over the last axis.
pub(super) fn l2_normalize(e: &mut Emitter, x: &V, eps: f64) -> R<V> {
    let sq = e.binary("multiply", x, x)?;
    let s = e.sum_last_keep(&sq)?;
    let norm = e.unary("sqrt", &s);
    let norm = e.binary_const("maximum", &norm, eps)?;
    let norm = e.broadcast_to(&norm, x.shape())?;
    e.binary("divide", x, &norm)
}

/// Σ x·m / max(Σ m, 1e-9) over the sequence axis of x [batch, seq, hidden], mask [batch, seq]
/// (its values are the weights, as in the reference).
pub(super) fn mean_pool(e: &mut Emitter, x: &V, mask: &V) -> R<V> {
    let m = e.convert(mask, x.elem());
    let m3 = e.broadcast_in_dim(&m, x.shape(), &[0, 1])?;
    let weighted = e.binary("multiply", x, &m3)?;
    let sum = e.reduce(&weighted, &[1], "add", 0.0);
    let count = e.reduce(&m, &[1], "add", 0.0);
    let count = e.binary_const("maximum", &count, 1e-9)?;
    let count = e.broadcast_in_dim(&count, sum.shape(), &[0])?;
    e.binary("divide", &sum, &count)
}

/// Σ x over `axes`, kept as size-1 axes when `keep_dims`.
pub(super) fn reduce_sum(e: &mut Emitter, x: &V, axes: &[usize], keep_dims: bool) -> R<V> {
    if axes.is_empty() {
        return Ok(x.clone());
    }
    let r = e.reduce(x, axes, "add", 0.0);
    if !keep_dims {
        return Ok(r);
    }
    let shape: Vec<usize> = x.shape().iter().enumerate().map(|(i, &n)| if axes.contains(&i) { 1 } else { n }).collect();
    e.reshape(&r, &shape)
}

/// x − max − log Σ exp(x − max) over the last axis, as the reference computes it.
pub(super) fn log_softmax(e: &mut Emitter, x: &V) -> R<V> {
    let m = e.max_last_keep(x)?;
    let m = e.broadcast_to(&m, x.shape())?;
    let shifted = e.binary("subtract", x, &m)?;
    let ex = e.unary("exponential", &shifted);
    let s = e.sum_last_keep(&ex)?;
    let lse = e.unary("log", &s);
    let lse = e.broadcast_to(&lse, x.shape())?;
    e.binary("subtract", &shifted, &lse)
}
