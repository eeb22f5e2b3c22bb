//! Shape rules of normalisations and reductions: layer/RMS/L2 norms, log-softmax, masked mean
//! pooling, sums over axes, softmax and log-softmax (all over the last axis).

use super::{check_eps, Cx};
use crate::{DType, Dim, Result, Shape, ValueId};

/// LayerNorm, and RmsNorm (no `beta`): gains (and offsets) of the last axis's size.
pub(super) fn layer_norm(
    cx: &Cx<'_>,
    x: ValueId,
    gamma: ValueId,
    beta: Option<ValueId>,
    eps: f64,
) -> Result<(DType, Shape)> {
    let d = last_axis_float(cx, x, "layer/RMS norm")?;
    let xs = &cx.get(x).shape;
    cx.feature_vector(gamma, xs, "gamma")?;
    if let Some(b) = beta {
        cx.feature_vector(b, xs, "beta")?;
    }
    check_eps(cx, eps)?;
    Ok((d, xs.clone()))
}

pub(super) fn l2_normalize(cx: &Cx<'_>, x: ValueId, eps: f64) -> Result<(DType, Shape)> {
    check_eps(cx, eps)?;
    Ok((last_axis_float(cx, x, "l2_normalize")?, cx.get(x).shape.clone()))
}

/// Softmax and log-softmax: over the last axis, shape kept.
pub(super) fn softmax(cx: &Cx<'_>, x: ValueId, what: &str) -> Result<(DType, Shape)> {
    Ok((last_axis_float(cx, x, what)?, cx.get(x).shape.clone()))
}

/// The dtype of `x`, which an op over its last axis needs to be floating point with one axis at
/// least (a scalar has no last axis; the oracle would have nothing to normalise over).
fn last_axis_float(cx: &Cx<'_>, x: ValueId, what: &str) -> Result<DType> {
    let d = cx.float_of(x, "x")?;
    if cx.get(x).shape.rank() == 0 {
        return Err(
            cx.fail(format!("{what} works over the last axis and needs x with at least one axis, not a scalar"))
        );
    }
    Ok(d)
}

pub(super) fn mean_pool(cx: &Cx<'_>, x: ValueId, mask: ValueId) -> Result<(DType, Shape)> {
    let d = cx.float_of(x, "x")?;
    let xs = cx.rank_is(x, &[3], "x")?;
    let ms = cx.rank_is(mask, &[2], "mask")?;
    cx.same_dim(&ms.0[0], &xs.0[0], "mask batch")?;
    cx.same_dim(&ms.0[1], &xs.0[1], "mask length vs sequence")?;
    Ok((d, Shape(vec![xs.0[0].clone(), xs.0[2].clone()])))
}

pub(super) fn reduce_sum(cx: &Cx<'_>, x: ValueId, axes: &[usize], keep_dims: bool) -> Result<(DType, Shape)> {
    let d = cx.float_of(x, "x")?;
    let xs = &cx.get(x).shape;
    if axes.windows(2).any(|w| w[0] >= w[1]) || axes.iter().any(|&a| a >= xs.rank()) {
        return Err(cx.fail(format!("axes {axes:?} must be ascending, distinct and below the rank of {xs}")));
    }
    let mut shape = Vec::with_capacity(xs.rank());
    for (i, dim) in xs.0.iter().enumerate() {
        match (axes.contains(&i), keep_dims) {
            (false, _) => shape.push(dim.clone()),
            (true, true) => shape.push(Dim::Fixed(1)),
            (true, false) => {}
        }
    }
    Ok((d, Shape(shape)))
}
