//! Shape rules of element-wise ops: binary ops with NumPy broadcasting, activations and affine
//! maps, casts, dropout, and the fused AdamW update.

use super::{broadcast, Cx};
use crate::{DType, Dim, Result, Shape, ValueId};

pub(super) fn binary(cx: &Cx<'_>, a: ValueId, b: ValueId) -> Result<(DType, Shape)> {
    let (na, nb) = (cx.get(a), cx.get(b));
    if na.dtype != nb.dtype || matches!(na.dtype, DType::Quant(_)) {
        return Err(cx.fail(format!("operand dtypes must match: {} vs {}", na.dtype, nb.dtype)));
    }
    let shape = broadcast(&na.shape, &nb.shape).map_err(|m| cx.fail(m))?;
    Ok((na.dtype, shape))
}

/// A float x in, the same dtype and shape out (unary ops, affine maps, softmax).
pub(super) fn same_float(cx: &Cx<'_>, x: ValueId) -> Result<(DType, Shape)> {
    Ok((cx.float_of(x, "x")?, cx.get(x).shape.clone()))
}

pub(super) fn cast(cx: &Cx<'_>, x: ValueId, dtype: DType) -> Result<(DType, Shape)> {
    if matches!(dtype, DType::Quant(_)) || matches!(cx.get(x).dtype, DType::Quant(_)) {
        return Err(
            cx.fail("cast to or from block-quantised types is not an op; weights are dequantised by backends".into())
        );
    }
    Ok((dtype, cx.get(x).shape.clone()))
}

pub(super) fn dropout(cx: &Cx<'_>, x: ValueId, seed: ValueId, p: f64) -> Result<(DType, Shape)> {
    let d = cx.float_of(x, "x")?;
    let s = cx.get(seed);
    if s.dtype != DType::U32 || s.shape.rank() != 0 {
        return Err(cx.fail(format!("seed `{}` must be a u32 scalar (shape []), not {} {}", s.name, s.dtype, s.shape)));
    }
    if !(0.0..1.0).contains(&p) {
        return Err(cx.fail(format!("dropout probability must be in [0, 1), got {p}")));
    }
    Ok((d, cx.get(x).shape.clone()))
}

/// `[param, grad, m, v]` of one shape and float dtype, `lr` and `step` scalars of that dtype,
/// `[β1, β2, eps, weight decay]`: the new parameter, m and v stacked as `[3]` + the shape.
pub(super) fn adamw_step(
    cx: &Cx<'_>,
    tensors: [ValueId; 4],
    lr: ValueId,
    step: ValueId,
    [beta1, beta2, eps, weight_decay]: [f64; 4],
) -> Result<(DType, Shape)> {
    let [param, grad, m, v] = tensors;
    let p = cx.get(param);
    cx.float_of(param, "param")?;
    for (id, what) in [(grad, "grad"), (m, "m"), (v, "v")] {
        if !cx.fits(id, param) {
            let n = cx.get(id);
            return Err(cx.fail(format!(
                "{what} `{}` ({} {}) must match param ({} {})",
                n.name, n.dtype, n.shape, p.dtype, p.shape
            )));
        }
    }
    for (id, what) in [(lr, "lr"), (step, "step")] {
        if cx.get(id).shape.rank() != 0 || cx.float_of(id, what)? != p.dtype {
            return Err(cx.fail(format!("{what} must be a scalar of the param's dtype {}", p.dtype)));
        }
    }
    let ok = |b: f64| b.is_finite() && (0.0..1.0).contains(&b);
    if !(ok(beta1) && ok(beta2) && eps.is_finite() && eps >= 0.0 && weight_decay.is_finite()) {
        return Err(
            cx.fail(format!("AdamW needs 0 ≤ β < 1, eps ≥ 0: β1 {beta1}, β2 {beta2}, eps {eps}, wd {weight_decay}"))
        );
    }
    let mut shape = vec![Dim::Fixed(3)];
    shape.extend(p.shape.0.iter().cloned());
    Ok((p.dtype, Shape(shape)))
}
