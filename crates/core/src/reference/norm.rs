//! Normalisation and reduction semantics: layer/RMS/L2 norms, softmax and log-softmax over the
//! last axis, masked mean pooling, sums over axes.

use super::{as_f64, map_last_axis, softmax_in_place, Args, Val};
use crate::{Result, ValueId};
use ndarray::{Array2, Axis};

pub(super) fn layer_norm(a: &Args<'_>, x: ValueId, gamma: ValueId, beta: Option<ValueId>, eps: f64) -> Result<Val> {
    let (g, b) = (a.f(gamma)?, beta.map(|b| a.f(b)).transpose()?);
    Ok(Val::F(map_last_axis(a.f(x)?, |lane| {
        let n = lane.len() as f64;
        let mean = lane.iter().sum::<f64>() / n;
        let var = lane.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for (k, v) in lane.iter_mut().enumerate() {
            *v = (*v - mean) * inv * g[k] + b.map_or(0.0, |b| b[k]);
        }
    })))
}

pub(super) fn rms_norm(a: &Args<'_>, x: ValueId, gamma: ValueId, eps: f64) -> Result<Val> {
    let g = a.f(gamma)?;
    Ok(Val::F(map_last_axis(a.f(x)?, |lane| {
        let ms = lane.iter().map(|v| v * v).sum::<f64>() / lane.len() as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for (k, v) in lane.iter_mut().enumerate() {
            *v *= inv * g[k];
        }
    })))
}

pub(super) fn softmax(a: &Args<'_>, x: ValueId) -> Result<Val> {
    Ok(Val::F(map_last_axis(a.f(x)?, softmax_in_place)))
}

pub(super) fn log_softmax(a: &Args<'_>, x: ValueId) -> Result<Val> {
    Ok(Val::F(map_last_axis(a.f(x)?, |lane| {
        let max = lane.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = lane.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        lane.iter_mut().for_each(|v| *v = *v - max - lse);
    })))
}

pub(super) fn l2_normalize(a: &Args<'_>, x: ValueId, eps: f64) -> Result<Val> {
    Ok(Val::F(map_last_axis(a.f(x)?, |lane| {
        let norm = lane.iter().map(|v| v * v).sum::<f64>().sqrt().max(eps);
        lane.iter_mut().for_each(|v| *v /= norm);
    })))
}

pub(super) fn mean_pool(a: &Args<'_>, x: ValueId, mask: ValueId) -> Result<Val> {
    let x = a.f(x)?;
    let m = as_f64(a.val(mask));
    let (b, s, h) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    if m.shape() != [b, s] {
        return Err(a.fail(format!("mask shape {:?} does not match x {:?}", m.shape(), x.shape())));
    }
    let mut out = Array2::<f64>::zeros((b, h));
    for bi in 0..b {
        let count: f64 = (0..s).map(|si| m[[bi, si]]).sum();
        for si in 0..s {
            for hi in 0..h {
                out[[bi, hi]] += x[[bi, si, hi]] * m[[bi, si]];
            }
        }
        out.row_mut(bi).mapv_inplace(|v| v / count.max(1e-9));
    }
    Ok(Val::F(out.into_dyn()))
}

pub(super) fn reduce_sum(a: &Args<'_>, x: ValueId, axes: &[usize], keep_dims: bool) -> Result<Val> {
    let mut out = a.f(x)?.clone();
    // From the last axis down, so the indices of the axes still to sum do not move.
    for &axis in axes.iter().rev() {
        out = out.sum_axis(Axis(axis));
        if keep_dims {
            out = out.insert_axis(Axis(axis));
        }
    }
    Ok(Val::F(out))
}
