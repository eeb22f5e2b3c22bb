//! Gradients of attention (padding masks, causal, query positions, grouped-query heads), of the
//! attention weights, and of rotary embeddings.
//!
//! Attention's backward pass recomputes the weights P with `AttentionProbs` (the same masking as
//! the forward op, so hidden keys get exactly 0 and so no gradient), then
//! dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP − Σ dP·P), dQ = scale·dS·K, dK = scale·dSᵀ·Q.
//! With grouped-query heads (q_heads = group × kv_heads), q-side values `[b, q_heads, len, ·]`
//! are viewed as `[b, kv_heads, group·len, ·]` (head h = kv·group + i, row-major), so the products with
//! the shared key/value heads sum over the group by themselves.

use super::norm::softmax_backward;
use super::{Ctx, R};
use crate::{Op, ReshapeDim, RopeStyle, ValueId};

/// How q-side values line up with k/v heads.
enum Heads {
    /// As many query heads as key heads.
    Same,
    /// Query heads grouped over key heads: (q heads, kv heads).
    Grouped(usize, usize),
}

fn heads(ctx: &Ctx<'_>, q: ValueId, k: ValueId) -> R<Heads> {
    let (hq, hkv): (crate::Dim, crate::Dim) = (ctx.dims(q)[1].clone(), ctx.dims(k)[1].clone());
    match (hq.fixed(), hkv.fixed()) {
        (Some(a), Some(b)) if a == b => Ok(Heads::Same),
        (Some(a), Some(b)) => Ok(Heads::Grouped(a, b)),
        _ if hq == hkv => Ok(Heads::Same),
        _ => Err(ctx.not_differentiable("grouped-query heads need fixed head counts for the gradient")),
    }
}

/// `[b, q_heads, len, ·]` → `[b, kv_heads, group·len, ·]` (nothing with `Heads::Same`).
fn group(ctx: &mut Ctx<'_>, x: ValueId, heads: &Heads) -> R<ValueId> {
    match heads {
        Heads::Same => Ok(x),
        Heads::Grouped(_, hkv) => {
            ctx.reshape(x, vec![ReshapeDim::Keep(0), ReshapeDim::Fixed(*hkv), ReshapeDim::Infer, ReshapeDim::Keep(3)])
        }
    }
}

/// The inverse of [`group`].
fn ungroup(ctx: &mut Ctx<'_>, x: ValueId, heads: &Heads) -> R<ValueId> {
    match heads {
        Heads::Same => Ok(x),
        Heads::Grouped(hq, _) => {
            ctx.reshape(x, vec![ReshapeDim::Keep(0), ReshapeDim::Fixed(*hq), ReshapeDim::Infer, ReshapeDim::Keep(3)])
        }
    }
}

/// dQ and dK from the gradient of the (grouped) scores dS.
#[allow(clippy::too_many_arguments)]
fn scores_backward(
    ctx: &mut Ctx<'_>,
    q: ValueId,
    k: ValueId,
    ds: ValueId,
    scale: f64,
    heads: &Heads,
    wants: &dyn Fn(ValueId) -> bool,
    out: &mut Vec<(ValueId, ValueId)>,
) -> R<()> {
    if wants(q) {
        let dq = ctx.matmul(ds, k, false)?;
        let dq = ctx.affine(dq, scale, 0.0)?;
        out.push((q, ungroup(ctx, dq, heads)?));
    }
    if wants(k) {
        let qg = group(ctx, q, heads)?;
        let dst = ctx.swap_last(ds)?;
        let dk = ctx.matmul(dst, qg, false)?;
        out.push((k, ctx.affine(dk, scale, 0.0)?));
    }
    Ok(())
}

/// `probs` is the `AttentionProbs` op with the attention's own operands.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    ctx: &mut Ctx<'_>,
    q: ValueId,
    k: ValueId,
    v: ValueId,
    probs: Op,
    scale: f64,
    g: ValueId,
    wants: &dyn Fn(ValueId) -> bool,
) -> R<Vec<(ValueId, ValueId)>> {
    let heads = heads(ctx, q, k)?;
    let p = ctx.add("probs", probs)?;
    let p = group(ctx, p, &heads)?;
    let g = group(ctx, g, &heads)?;
    let mut out = Vec::new();
    if wants(v) {
        let pt = ctx.swap_last(p)?;
        out.push((v, ctx.matmul(pt, g, false)?));
    }
    if wants(q) || wants(k) {
        let dp = ctx.matmul(g, v, true)?;
        let ds = softmax_backward(ctx, p, dp)?;
        scores_backward(ctx, q, k, ds, scale, &heads, wants, &mut out)?;
    }
    Ok(out)
}

/// P = softmax(scores): dS = P ⊙ (g − Σ g·P), then as attention's.
pub(super) fn attention_probs(
    ctx: &mut Ctx<'_>,
    q: ValueId,
    k: ValueId,
    p: ValueId,
    scale: f64,
    g: ValueId,
    wants: &dyn Fn(ValueId) -> bool,
) -> R<Vec<(ValueId, ValueId)>> {
    let heads = heads(ctx, q, k)?;
    let p = group(ctx, p, &heads)?;
    let g = group(ctx, g, &heads)?;
    let ds = softmax_backward(ctx, p, g)?;
    let mut out = Vec::new();
    scores_backward(ctx, q, k, ds, scale, &heads, wants, &mut out)?;
    Ok(out)
}

/// Rope rotates each feature pair (x0, x1) by θ; the gradient rotates by −θ. With S swapping the
/// two features of every pair, a rotation by −θ is S ∘ rope(θ) ∘ S, so the forward op serves.
pub(super) fn rope(
    ctx: &mut Ctx<'_>,
    x: ValueId,
    positions: ValueId,
    base: f64,
    style: RopeStyle,
    g: ValueId,
) -> R<Vec<(ValueId, ValueId)>> {
    let d = ctx.fixed(g, 3, "head size")?;
    let swapped = swap_pairs(ctx, g, d, style)?;
    let rotated = ctx.add("rope", Op::Rope { x: swapped, positions, base, style })?;
    Ok(vec![(x, swap_pairs(ctx, rotated, d, style)?)])
}

fn swap_pairs(ctx: &mut Ctx<'_>, v: ValueId, d: usize, style: RopeStyle) -> R<ValueId> {
    let half = d / 2;
    let slice = |ctx: &mut Ctx<'_>, x, axis, start, end| ctx.add("slice", Op::Slice { x, axis, start, end: Some(end) });
    match style {
        RopeStyle::HalfSplit => {
            let (a, c) = (slice(ctx, v, 3, 0, half)?, slice(ctx, v, 3, half, d)?);
            ctx.add("concat", Op::Concat { xs: vec![c, a], axis: 3 })
        }
        RopeStyle::Interleaved => {
            let keep = |n: usize| (0..n).map(ReshapeDim::Keep).collect::<Vec<_>>();
            let mut pairs = keep(3);
            pairs.extend([ReshapeDim::Fixed(half), ReshapeDim::Fixed(2)]);
            let r = ctx.reshape(v, pairs)?;
            let (a, c) = (slice(ctx, r, 4, 0, 1)?, slice(ctx, r, 4, 1, 2)?);
            let swapped = ctx.add("concat", Op::Concat { xs: vec![c, a], axis: 4 })?;
            let mut back = keep(3);
            back.push(ReshapeDim::Fixed(d));
            ctx.reshape(swapped, back)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::Check;
    use crate::{Dim, HostTensor, Op, RopeStyle};

    /// q `[2, hq, sq, 4]`, k/v `[2, hkv, t, 4|3]`, with the masking given.
    #[allow(clippy::too_many_arguments)]
    fn attention_check(
        name: &str,
        hq: usize,
        hkv: usize,
        sq: usize,
        t: usize,
        mask: bool,
        causal: bool,
        by_position: bool,
    ) {
        let mut c = Check::new(name);
        let s = Dim::sym;
        let q = c.input("q", &[s("batch"), Dim::Fixed(hq), s("q_len"), Dim::Fixed(4)], &[2, hq, sq, 4]);
        let k = c.input("k", &[s("batch"), Dim::Fixed(hkv), s("kv_len"), Dim::Fixed(4)], &[2, hkv, t, 4]);
        let v = c.input("v", &[s("batch"), Dim::Fixed(hkv), s("kv_len"), Dim::Fixed(3)], &[2, hkv, t, 3]);
        let mask = mask.then(|| {
            let m = (0..2 * t).map(|i| u32::from(i < t || i - t < t - 2)).collect();
            c.fixed_input("mask", &[s("batch"), s("kv_len")], HostTensor::u32(vec![2, t], m).unwrap())
        });
        let q_positions = by_position.then(|| {
            let p = (0..2 * sq).map(|i| (if i < sq { i + t - sq } else { i - sq + 1 }) as i64).collect();
            c.fixed_input("pos", &[s("batch"), s("q_len")], HostTensor::i64(vec![2, sq], p).unwrap())
        });
        let y = c.op(Op::Attention { q, k, v, mask, causal, scale: 0.5, q_positions });
        c.run(y);
    }

    #[test]
    fn attention_plain_and_padded() {
        attention_check("attention", 2, 2, 3, 3, false, false, false);
        attention_check("attention_mask", 2, 2, 4, 4, true, false, false);
    }

    #[test]
    fn attention_causal_after_a_cache_block() {
        attention_check("attention_causal", 2, 2, 2, 5, false, true, false);
    }

    #[test]
    fn attention_grouped_query_heads_masked_by_position() {
        attention_check("attention_gqa", 6, 2, 3, 5, true, false, true);
        attention_check("attention_gqa_causal", 4, 2, 3, 3, false, true, false);
    }

    #[test]
    fn attention_probs_grouped() {
        let mut c = Check::new("probs");
        let s = Dim::sym;
        let q = c.input("q", &[s("batch"), Dim::Fixed(4), s("q_len"), Dim::Fixed(3)], &[2, 4, 3, 3]);
        let k = c.input("k", &[s("batch"), Dim::Fixed(2), s("q_len"), Dim::Fixed(3)], &[2, 2, 3, 3]);
        let y = c.op(Op::AttentionProbs { q, k, mask: None, causal: true, scale: 0.7, q_positions: None });
        c.run(y);
    }

    #[test]
    fn rope_both_styles_and_position_layouts() {
        for (style, per_row) in [(RopeStyle::HalfSplit, false), (RopeStyle::Interleaved, true)] {
            let mut c = Check::new("rope");
            let s = Dim::sym;
            let x = c.input("x", &[s("batch"), Dim::Fixed(2), s("seq"), Dim::Fixed(6)], &[2, 2, 3, 6]);
            let positions = if per_row {
                let p = HostTensor::u32(vec![2, 3], vec![0, 1, 2, 7, 8, 9]).unwrap();
                c.fixed_input("pos", &[s("batch"), s("seq")], p)
            } else {
                c.op(Op::Positions { like: x, axis: 2 })
            };
            let y = c.op(Op::Rope { x, positions, base: 100.0, style });
            c.run(y);
        }
    }
}
