//! Shape rules of the linear-algebra ops: embedding lookups, matmuls, linear layers, one-hot rows
//! and the scatter-add that is the embedding's adjoint.

use super::{broadcast, Cx};
use crate::{DType, Dim, Result, Shape, ValueId};

pub(super) fn embedding(cx: &Cx<'_>, table: ValueId, ids: ValueId) -> Result<(DType, Shape)> {
    let t = cx.rank_is(table, &[2], "table")?;
    cx.int_of(ids, "ids")?;
    let dtype = match cx.get(table).dtype {
        DType::Quant(_) => DType::F32,
        d if d.is_float() => d,
        d => return Err(cx.fail(format!("table must be floating point or quantised, not {d}"))),
    };
    let mut shape = cx.get(ids).shape.clone();
    shape.0.push(t.0[1].clone());
    Ok((dtype, shape))
}

pub(super) fn matmul(cx: &Cx<'_>, a: ValueId, b: ValueId, transpose_b: bool) -> Result<(DType, Shape)> {
    let da = cx.float_of(a, "a")?;
    let db = cx.float_of(b, "b")?;
    if da != db {
        return Err(cx.fail(format!("operand dtypes differ: {da} vs {db}")));
    }
    let sa = &cx.get(a).shape;
    let sb = &cx.get(b).shape;
    if sa.rank() < 2 || sb.rank() < 2 {
        return Err(cx.fail(format!("matmul needs rank ≥ 2, got {sa} and {sb}")));
    }
    let (m, k) = (&sa.0[sa.rank() - 2], &sa.0[sa.rank() - 1]);
    let (kb, n) = if transpose_b {
        (&sb.0[sb.rank() - 1], &sb.0[sb.rank() - 2])
    } else {
        (&sb.0[sb.rank() - 2], &sb.0[sb.rank() - 1])
    };
    cx.same_dim(k, kb, "contraction sizes differ")?;
    let batch = broadcast(&Shape(sa.0[..sa.rank() - 2].to_vec()), &Shape(sb.0[..sb.rank() - 2].to_vec()))
        .map_err(|m| cx.fail(format!("batch axes: {m}")))?;
    let mut shape = batch.0;
    shape.push(m.clone());
    shape.push(n.clone());
    Ok((da, Shape(shape)))
}

pub(super) fn linear(cx: &Cx<'_>, x: ValueId, weight: ValueId, bias: Option<ValueId>) -> Result<(DType, Shape)> {
    let dx = cx.float_of(x, "x")?;
    let w = cx.get(weight);
    if !(w.dtype.is_float() || matches!(w.dtype, DType::Quant(_))) {
        return Err(cx.fail(format!("weight must be floating point or quantised, not {}", w.dtype)));
    }
    let ws = cx.rank_is(weight, &[2], "weight")?;
    let xs = &cx.get(x).shape;
    if xs.rank() == 0 {
        return Err(cx.fail("x must have at least one axis".into()));
    }
    cx.same_dim(&xs.0[xs.rank() - 1], &ws.0[1], "input features vs weight [out, in]")?;
    if let Some(b) = bias {
        let bs = cx.rank_is(b, &[1], "bias")?;
        cx.same_dim(&bs.0[0], &ws.0[0], "bias size vs output features")?;
    }
    let mut shape = xs.0.clone();
    *shape.last_mut().expect("rank checked") = ws.0[0].clone();
    Ok((dx, Shape(shape)))
}

pub(super) fn one_hot(cx: &Cx<'_>, ids: ValueId, depth: usize, dtype: DType) -> Result<(DType, Shape)> {
    cx.int_of(ids, "ids")?;
    if !dtype.is_float() {
        return Err(cx.fail(format!("one-hot rows must be floating point, not {dtype}")));
    }
    if depth == 0 {
        return Err(cx.fail("one-hot depth must be at least 1".into()));
    }
    let mut shape = cx.get(ids).shape.clone();
    shape.0.push(Dim::Fixed(depth));
    Ok((dtype, shape))
}

pub(super) fn index_add(cx: &Cx<'_>, ids: ValueId, src: ValueId, rows: usize) -> Result<(DType, Shape)> {
    cx.int_of(ids, "ids")?;
    let d = cx.float_of(src, "src")?;
    let (is, ss) = (&cx.get(ids).shape, &cx.get(src).shape);
    if ss.rank() != is.rank() + 1 {
        return Err(cx.fail(format!("src {ss} must be ids' shape {is} plus one axis")));
    }
    for (i, (a, b)) in is.0.iter().zip(&ss.0).enumerate() {
        cx.same_dim(a, b, &format!("axis {i} of ids vs src"))?;
    }
    if rows == 0 {
        return Err(cx.fail("index_add needs at least one row".into()));
    }
    Ok((d, Shape(vec![Dim::Fixed(rows), ss.0[ss.rank() - 1].clone()])))
}
