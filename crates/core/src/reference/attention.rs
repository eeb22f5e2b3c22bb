//! Attention semantics: scaled dot-product attention, its weights, rotary embeddings.

use super::{as_f64, softmax_in_place, Args, Val};
use crate::{Result, RopeStyle, ValueId};
use ndarray::{ArrayD, IxDyn};

/// Which keys each query may see (besides the padding mask).
enum Visibility {
    All,
    /// Query i sits at position kv_len − q_len + i.
    Causal,
    /// Query (b, i) sits at the given position.
    Positions(ArrayD<i64>),
}

fn visibility(a: &Args<'_>, causal: bool, q_positions: Option<ValueId>) -> Result<Visibility> {
    Ok(match q_positions {
        Some(p) => Visibility::Positions(a.i(p)?.clone()),
        None if causal => Visibility::Causal,
        None => Visibility::All,
    })
}

pub(super) fn attention(
    a: &Args<'_>,
    [q, k, v]: [ValueId; 3],
    mask: Option<ValueId>,
    causal: bool,
    q_positions: Option<ValueId>,
    scale: f64,
) -> Result<Val> {
    let visibility = visibility(a, causal, q_positions)?;
    let mask = mask.map(|m| a.val(m));
    let (q, k, v) = (a.f(q)?, a.f(k)?, a.f(v)?);
    let (b, hq, sq) = (q.shape()[0], q.shape()[1], q.shape()[2]);
    let (hkv, t, dv) = (k.shape()[1], k.shape()[2], v.shape()[3]);
    if v.shape()[..3] != [b, hkv, t] {
        return Err(a.fail(format!("incompatible q {:?}, k {:?}, v {:?}", q.shape(), k.shape(), v.shape())));
    }
    let p = probs(q, k, mask, &visibility, scale).map_err(|m| a.fail(m))?;
    let group = hq / hkv;
    let mut out = ArrayD::<f64>::zeros(IxDyn(&[b, hq, sq, dv]));
    for bi in 0..b {
        for h in 0..hq {
            for i in 0..sq {
                for j in 0..t {
                    let w = p[[bi, h, i, j]];
                    if w != 0.0 {
                        for c in 0..dv {
                            out[[bi, h, i, c]] += w * v[[bi, h / group, j, c]];
                        }
                    }
                }
            }
        }
    }
    Ok(Val::F(out))
}

pub(super) fn attention_probs(
    a: &Args<'_>,
    [q, k]: [ValueId; 2],
    mask: Option<ValueId>,
    causal: bool,
    q_positions: Option<ValueId>,
    scale: f64,
) -> Result<Val> {
    let visibility = visibility(a, causal, q_positions)?;
    let mask = mask.map(|m| a.val(m));
    Ok(Val::F(probs(a.f(q)?, a.f(k)?, mask, &visibility, scale).map_err(|m| a.fail(m))?))
}

/// The attention weights `[b, hq, sq, t]`: softmax over the visible keys, exactly 0 for hidden ones
/// (a query that sees no key gets a row of zeros).
fn probs(
    q: &ArrayD<f64>,
    k: &ArrayD<f64>,
    mask: Option<&Val>,
    visibility: &Visibility,
    scale: f64,
) -> Result<ArrayD<f64>, String> {
    let causal = matches!(visibility, Visibility::Causal);
    let (b, hq, sq, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, t) = (k.shape()[1], k.shape()[2]);
    if k.shape() != [b, hkv, t, d] || hkv == 0 || hq % hkv != 0 {
        return Err(format!("incompatible q {:?}, k {:?}", q.shape(), k.shape()));
    }
    if causal && sq > t {
        return Err(format!("causal attention needs kv length ({t}) ≥ query length ({sq})"));
    }
    let mask = mask.map(as_f64);
    if let Some(m) = &mask {
        if m.shape() != [b, t] {
            return Err(format!("mask shape {:?}, expected [{b}, {t}]", m.shape()));
        }
    }
    let group = hq / hkv;
    let mut out = ArrayD::<f64>::zeros(IxDyn(&[b, hq, sq, t]));
    for bi in 0..b {
        for h in 0..hq {
            let kh = h / group;
            for i in 0..sq {
                let limit = match visibility {
                    Visibility::All => i64::MAX,
                    Visibility::Causal => (t - sq + i) as i64,
                    Visibility::Positions(p) => p[[bi, i]],
                };
                let visible: Vec<usize> = (0..t)
                    .filter(|&j| (j as i64) <= limit && mask.as_ref().is_none_or(|m| m[[bi, j]] != 0.0))
                    .collect();
                let mut w: Vec<f64> = visible
                    .iter()
                    .map(|&j| (0..d).map(|c| q[[bi, h, i, c]] * k[[bi, kh, j, c]]).sum::<f64>() * scale)
                    .collect();
                softmax_in_place(&mut w);
                for (&j, &wj) in visible.iter().zip(&w) {
                    out[[bi, h, i, j]] = wj;
                }
            }
        }
    }
    Ok(out)
}

pub(super) fn rope(a: &Args<'_>, x: ValueId, positions: ValueId, base: f64, style: RopeStyle) -> Result<Val> {
    let (x, pos) = (a.f(x)?, a.i(positions)?);
    let (b, h, s, d) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let position = |bi: usize, si: usize| -> i64 {
        if pos.ndim() == 1 {
            pos[[si]]
        } else {
            pos[[bi, si]]
        }
    };
    if pos.shape().last() != Some(&s) || (pos.ndim() == 2 && pos.shape()[0] != b) {
        return Err(a.fail(format!("positions {:?} do not match x {:?}", pos.shape(), x.shape())));
    }
    let mut out = x.clone();
    let half = d / 2;
    for bi in 0..b {
        for hi in 0..h {
            for si in 0..s {
                let p = position(bi, si) as f64;
                for i in 0..half {
                    let theta = p * base.powf(-2.0 * i as f64 / d as f64);
                    let (sin, cos) = theta.sin_cos();
                    let (l, r) = match style {
                        RopeStyle::HalfSplit => (i, i + half),
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    };
                    let (x0, x1) = (x[[bi, hi, si, l]], x[[bi, hi, si, r]]);
                    out[[bi, hi, si, l]] = x0 * cos - x1 * sin;
                    out[[bi, hi, si, r]] = x1 * cos + x0 * sin;
                }
            }
        }
    }
    Ok(Val::F(out))
}
