//! Shape rules of attention, its weights, and rotary position embeddings.

use super::Cx;
use crate::{DType, Result, Shape, ValueId};

/// Which keys a query may see besides all of them: the operands and flags `Attention` and
/// `AttentionProbs` share.
pub(super) struct Visibility {
    pub mask: Option<ValueId>,
    pub causal: bool,
    pub q_positions: Option<ValueId>,
}

pub(super) fn attention(
    cx: &Cx<'_>,
    q: ValueId,
    k: ValueId,
    v: ValueId,
    visibility: Visibility,
    scale: f64,
) -> Result<(DType, Shape)> {
    let d = cx.float_of(q, "q")?;
    for (id, what) in [(k, "k"), (v, "v")] {
        if cx.float_of(id, what)? != d {
            return Err(cx.fail(format!("{what} must have q's dtype {d}")));
        }
    }
    let qs = cx.rank_is(q, &[4], "q")?;
    let ks = cx.rank_is(k, &[4], "k")?;
    let vs = cx.rank_is(v, &[4], "v")?;
    cx.same_dim(&qs.0[0], &ks.0[0], "batch of q vs k")?;
    cx.same_dim(&ks.0[0], &vs.0[0], "batch of k vs v")?;
    cx.same_dim(&ks.0[1], &vs.0[1], "heads of k vs v")?;
    cx.same_dim(&ks.0[2], &vs.0[2], "kv length of k vs v")?;
    check_attention(cx, qs, ks, &visibility, scale)?;
    Ok((d, Shape(vec![qs.0[0].clone(), qs.0[1].clone(), qs.0[2].clone(), vs.0[3].clone()])))
}

pub(super) fn attention_probs(
    cx: &Cx<'_>,
    q: ValueId,
    k: ValueId,
    visibility: Visibility,
    scale: f64,
) -> Result<(DType, Shape)> {
    let d = cx.float_of(q, "q")?;
    if cx.float_of(k, "k")? != d {
        return Err(cx.fail(format!("k must have q's dtype {d}")));
    }
    let qs = cx.rank_is(q, &[4], "q")?;
    let ks = cx.rank_is(k, &[4], "k")?;
    cx.same_dim(&qs.0[0], &ks.0[0], "batch of q vs k")?;
    check_attention(cx, qs, ks, &visibility, scale)?;
    Ok((d, Shape(vec![qs.0[0].clone(), qs.0[1].clone(), qs.0[2].clone(), ks.0[2].clone()])))
}

/// What Attention and AttentionProbs both require of q `[batch, heads, seq, d]` and k
/// `[batch, kv_heads, kv_len, d]`, the mask, the query positions and the scale.
fn check_attention(cx: &Cx<'_>, qs: &Shape, ks: &Shape, visibility: &Visibility, scale: f64) -> Result<()> {
    cx.same_dim(&qs.0[3], &ks.0[3], "head size of q vs k")?;
    if let (Some(hq), Some(hkv)) = (qs.0[1].fixed(), ks.0[1].fixed()) {
        if hkv == 0 || hq % hkv != 0 {
            return Err(cx.fail(format!("q heads ({hq}) must be a multiple of kv heads ({hkv})")));
        }
    }
    if let Some(m) = visibility.mask {
        let ms = cx.rank_is(m, &[2], "mask")?;
        cx.same_dim(&ms.0[0], &qs.0[0], "mask batch")?;
        cx.same_dim(&ms.0[1], &ks.0[2], "mask length vs kv length")?;
    }
    if let Some(p) = visibility.q_positions {
        cx.int_of(p, "q_positions")?;
        let ps = cx.rank_is(p, &[2], "q_positions")?;
        cx.same_dim(&ps.0[0], &qs.0[0], "q_positions batch")?;
        cx.same_dim(&ps.0[1], &qs.0[2], "q_positions length vs query length")?;
        if visibility.causal {
            return Err(cx.fail("`causal` and `q_positions` are two ways to mask the future; give one".into()));
        }
    }
    if !scale.is_finite() {
        return Err(cx.fail(format!("scale must be finite, got {scale}")));
    }
    Ok(())
}

pub(super) fn rope(cx: &Cx<'_>, x: ValueId, positions: ValueId, base: f64) -> Result<(DType, Shape)> {
    let d = cx.float_of(x, "x")?;
    let xs = cx.rank_is(x, &[4], "x")?;
    cx.int_of(positions, "positions")?;
    let ps = cx.rank_is(positions, &[1, 2], "positions")?;
    cx.same_dim(ps.0.last().expect("rank ≥ 1"), &xs.0[2], "positions length vs sequence")?;
    if ps.rank() == 2 {
        cx.same_dim(&ps.0[0], &xs.0[0], "positions batch")?;
    }
    if let Some(h) = xs.0[3].fixed() {
        if h % 2 != 0 {
            return Err(cx.fail(format!("head size must be even for rotary embedding, got {h}")));
        }
    }
    if !(base.is_finite() && base > 1.0) {
        return Err(cx.fail(format!("rope base must be > 1, got {base}")));
    }
    Ok((d, xs.clone()))
}
