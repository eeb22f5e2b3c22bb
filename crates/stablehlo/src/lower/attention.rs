//! Scaled dot-product attention (padding mask, causal, query positions, grouped-query heads) and
//! rotary position embeddings.

use super::norm::softmax;
use crate::emit::{Cmp, Elem, Emitter, R, V};
use accelrt_core::RopeStyle;

/// Which keys each query may see, besides the padding mask.
pub(super) enum Visibility {
    All,
    /// Query i sits at position kv_len − q_len + i.
    Causal,
    /// Query (b, i) sits at positions[b, i] ([batch, q_len], integer).
    Positions(V),
}

/// softmax(q·kᵀ·scale, hidden keys excluded) · v.
///
/// q [b, hq, sq, d], k [b, hkv, t, d], v [b, hkv, t, dv] → [b, hq, sq, dv]. Query head h uses key
/// head h / (hq / hkv): q is viewed as [b, hkv, group, sq, d] so no key or value is copied. Hidden
/// scores are set to the lowest finite value, which softmax turns into exactly 0; a query that
/// sees no key at all gets the mean of v (finite, as the op allows).
pub(super) fn attention(
    e: &mut Emitter,
    q: &V,
    k: &V,
    v: &V,
    mask: Option<&V>,
    visibility: &Visibility,
    scale: f64,
) -> R<V> {
    let [b, hq, sq, _] = dims4(q)?;
    let dv = dims4(v)?[3];
    let probs = grouped_probs(e, q, k, mask, visibility, scale)?;
    let out = e.dot_general(&probs, v, (&[0, 1], &[0, 1]), (&[4], &[2]))?;
    e.reshape(&out, &[b, hq, sq, dv])
}

/// The attention weights [b, hq, sq, t] (see `Op::AttentionProbs`): hidden keys get exactly 0.
pub(super) fn attention_probs(
    e: &mut Emitter,
    q: &V,
    k: &V,
    mask: Option<&V>,
    visibility: &Visibility,
    scale: f64,
) -> R<V> {
    let [b, hq, sq, _] = dims4(q)?;
    let t = dims4(k)?[2];
    let probs = grouped_probs(e, q, k, mask, visibility, scale)?;
    e.reshape(&probs, &[b, hq, sq, t])
}

/// softmax(q·kᵀ·scale, hidden keys excluded) as [b, hkv, group, sq, t].
fn grouped_probs(e: &mut Emitter, q: &V, k: &V, mask: Option<&V>, visibility: &Visibility, scale: f64) -> R<V> {
    let [b, hq, sq, d] = dims4(q)?;
    let [_, hkv, t, _] = dims4(k)?;
    if hkv == 0 || hq % hkv != 0 {
        return Err(format!("{hq} query heads are not a multiple of {hkv} key heads"));
    }
    let group = hq / hkv;
    let grouped = e.reshape(q, &[b, hkv, group, sq, d])?;
    let scores = e.dot_general(&grouped, k, (&[0, 1], &[0, 1]), (&[4], &[3]))?;
    let scores = e.binary_const("multiply", &scores, scale)?;
    let full = [b, hkv, group, sq, t];

    let mut seen: Option<V> = None;
    if let Some(m) = mask {
        let zero = e.splat(m.elem(), 0.0, m.shape());
        let keep = e.compare(m, &zero, Cmp::Ne)?;
        seen = Some(e.broadcast_in_dim(&keep, &full, &[0, 4])?);
    }
    let by_position = match visibility {
        Visibility::All => None,
        Visibility::Causal => {
            if sq > t {
                return Err(format!("causal attention needs kv length ({t}) ≥ query length ({sq})"));
            }
            let j = e.iota(Elem::I32, &[sq, t], 1);
            let i = e.iota(Elem::I32, &[sq, t], 0);
            let limit = e.binary_const("add", &i, (t - sq) as f64)?;
            let ok = e.compare(&j, &limit, Cmp::Le)?;
            Some(e.broadcast_in_dim(&ok, &full, &[3, 4])?)
        }
        Visibility::Positions(p) => {
            let p = e.convert(p, Elem::I32);
            let p = e.broadcast_in_dim(&p, &[b, sq, t], &[0, 1])?;
            let j = e.iota(Elem::I32, &[b, sq, t], 2);
            let ok = e.compare(&j, &p, Cmp::Le)?;
            Some(e.broadcast_in_dim(&ok, &full, &[0, 3, 4])?)
        }
    };
    seen = match (seen, by_position) {
        (Some(a), Some(c)) => Some(e.binary("and", &a, &c)?),
        (a, c) => a.or(c),
    };
    let scores = match seen {
        Some(seen) => {
            let hidden = e.splat(scores.elem(), scores.elem().lowest(), &full);
            e.select(&seen, &scores, &hidden)?
        }
        None => scores,
    };
    softmax(e, &scores)
}

fn dims4(x: &V) -> R<[usize; 4]> {
    <[usize; 4]>::try_from(x.shape()).map_err(|_| format!("{} is not rank 4", x.ty))
}

/// Rotary embedding of x [b, h, s, d] at integer positions ([s] or [b, s]): pair (a, c) of each
/// head is rotated by θ = position · base^(−2i/d), with (a, c) = (i, i + d/2) (half-split) or
/// (2i, 2i + 1) (interleaved). Angles are computed in f32 (whatever the compute type) from
/// frequencies worked out in f64 on the host.
pub(super) fn rope(e: &mut Emitter, x: &V, positions: &V, base: f64, style: RopeStyle) -> R<V> {
    let [b, h, s, d] = dims4(x)?;
    let half = d / 2;
    let freqs: Vec<f64> = (0..half).map(|i| base.powf(-2.0 * i as f64 / d as f64)).collect();
    let freqs = e.vector(Elem::F32, &freqs);
    let p = e.convert(positions, Elem::F32);
    let quarter = [b, h, s, half];
    // θ as [s, half] or [b, s, half], and the axes of `quarter` it lines up with.
    let (angle, along): (V, &[usize]) = if p.ty.rank() == 1 {
        let pa = e.broadcast_in_dim(&p, &[s, half], &[0])?;
        let fa = e.broadcast_in_dim(&freqs, &[s, half], &[1])?;
        (e.binary("multiply", &pa, &fa)?, &[2, 3])
    } else {
        let pa = e.broadcast_in_dim(&p, &[b, s, half], &[0, 1])?;
        let fa = e.broadcast_in_dim(&freqs, &[b, s, half], &[2])?;
        (e.binary("multiply", &pa, &fa)?, &[0, 2, 3])
    };
    let cos = e.unary("cosine", &angle);
    let sin = e.unary("sine", &angle);
    let cos = e.convert(&cos, x.elem());
    let sin = e.convert(&sin, x.elem());
    let cos = e.broadcast_in_dim(&cos, &quarter, along)?;
    let sin = e.broadcast_in_dim(&sin, &quarter, along)?;

    let (x0, x1) = match style {
        RopeStyle::HalfSplit => (e.slice_axis(x, 3, 0, half), e.slice_axis(x, 3, half, d)),
        RopeStyle::Interleaved => {
            let pairs = e.reshape(x, &[b, h, s, half, 2])?;
            let a = e.slice_axis(&pairs, 4, 0, 1);
            let c = e.slice_axis(&pairs, 4, 1, 2);
            (e.reshape(&a, &quarter)?, e.reshape(&c, &quarter)?)
        }
    };
    // out0 = x0·cos − x1·sin; out1 = x1·cos + x0·sin
    let (a, c) = (e.binary("multiply", &x0, &cos)?, e.binary("multiply", &x1, &sin)?);
    let out0 = e.binary("subtract", &a, &c)?;
    let (a, c) = (e.binary("multiply", &x1, &cos)?, e.binary("multiply", &x0, &sin)?);
    let out1 = e.binary("add", &a, &c)?;
    match style {
        RopeStyle::HalfSplit => e.concatenate(&[&out0, &out1], 3),
        RopeStyle::Interleaved => {
            let pair = [b, h, s, half, 1];
            let (o0, o1) = (e.reshape(&out0, &pair)?, e.reshape(&out1, &pair)?);
            let joined = e.concatenate(&[&o0, &o1], 4)?;
            e.reshape(&joined, &[b, h, s, d])
        }
    }
}
