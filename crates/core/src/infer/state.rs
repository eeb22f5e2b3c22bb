//! Shape rules of the values a graph starts from or keeps across runs: inputs, weights, variables
//! and their assignments, and KV caches.

use super::{Cx, KV_LEN};
use crate::{DType, Dim, Op, Result, Shape, ValueId};

pub(super) fn input(cx: &Cx<'_>, dtype: DType, shape: &Shape) -> Result<(DType, Shape)> {
    if let DType::Quant(_) = dtype {
        return Err(cx.fail("inputs cannot be block-quantised".into()));
    }
    Ok((dtype, shape.clone()))
}

pub(super) fn weight(cx: &Cx<'_>, dtype: DType, shape: &Shape) -> Result<(DType, Shape)> {
    if shape.concrete().is_none() {
        return Err(cx.fail(format!("weights need fixed shapes, got {shape}")));
    }
    Ok((dtype, shape.clone()))
}

pub(super) fn variable(cx: &Cx<'_>, dtype: DType, shape: &Shape) -> Result<(DType, Shape)> {
    if shape.concrete().is_none() || !dtype.is_float() {
        return Err(cx.fail(format!("variables need a fixed shape and a float dtype, got {dtype} {shape}")));
    }
    Ok((dtype, shape.clone()))
}

pub(super) fn assign(cx: &Cx<'_>, var: ValueId, value: ValueId) -> Result<(DType, Shape)> {
    let (v, x) = (cx.get(var), cx.get(value));
    if !matches!(v.op, Op::Variable { .. }) {
        return Err(cx.fail(format!("`{}` is not a variable", v.name)));
    }
    if !cx.fits(var, value) {
        return Err(cx.fail(format!(
            "value {} {} does not fit variable `{}` ({} {})",
            x.dtype, x.shape, v.name, v.dtype, v.shape
        )));
    }
    if cx.earlier.iter().any(|n| matches!(n.op, Op::Assign { var: other, .. } if other == var)) {
        return Err(cx.fail(format!("variable `{}` is assigned more than once", v.name)));
    }
    Ok((v.dtype, v.shape.clone()))
}

pub(super) fn kv_cache(
    cx: &Cx<'_>,
    x: ValueId,
    positions: ValueId,
    slots: ValueId,
    capacity: usize,
) -> Result<(DType, Shape)> {
    let d = cx.float_of(x, "x")?;
    let xs = cx.rank_is(x, &[4], "x")?;
    cx.int_of(positions, "positions")?;
    cx.int_of(slots, "slots")?;
    let ps = cx.rank_is(positions, &[2], "positions")?;
    let ss = cx.rank_is(slots, &[1], "slots")?;
    cx.same_dim(&ps.0[0], &xs.0[0], "positions batch")?;
    cx.same_dim(&ps.0[1], &xs.0[2], "positions length vs new entries")?;
    cx.same_dim(&ss.0[0], &xs.0[0], "slots batch")?;
    if capacity == 0 {
        return Err(cx.fail("cache capacity must be at least 1".into()));
    }
    if let Some(n) = xs.0[2].fixed() {
        if n > capacity {
            return Err(cx.fail(format!("{n} new entries exceed the cache capacity {capacity}")));
        }
    }
    Ok((d, Shape(vec![xs.0[0].clone(), xs.0[1].clone(), Dim::sym(KV_LEN), xs.0[3].clone()])))
}
