//! Shape rules of the ops that move values without computing: reshape, permute, slice, concat,
//! the last entry along an axis, position ids — and the concrete target of a reshape, which every
//! evaluator needs at run time.

use super::Cx;
use crate::{DType, Dim, ReshapeDim, Result, Shape, ValueId};

pub(super) fn reshape(cx: &Cx<'_>, x: ValueId, dims: &[ReshapeDim]) -> Result<(DType, Shape)> {
    let n = cx.get(x);
    if dims.iter().filter(|d| matches!(d, ReshapeDim::Infer)).count() > 1 {
        return Err(cx.fail("at most one reshape dimension can be inferred".into()));
    }
    let mut out = Vec::with_capacity(dims.len());
    for (axis, d) in dims.iter().enumerate() {
        out.push(match d {
            ReshapeDim::Keep(i) => n
                .shape
                .0
                .get(*i)
                .cloned()
                .ok_or_else(|| cx.fail(format!("keeps input axis {i} but input has shape {}", n.shape)))?,
            ReshapeDim::Fixed(s) => Dim::Fixed(*s),
            ReshapeDim::Infer => cx.derived(axis),
        });
    }
    // With a fully known input, check the element count (and resolve the inferred axis).
    if let Some(total) = n.shape.concrete().map(|s| s.iter().product::<usize>()) {
        let known: Option<usize> =
            dims.iter().zip(&out).filter(|(d, _)| !matches!(d, ReshapeDim::Infer)).map(|(_, o)| o.fixed()).product();
        if let Some(known) = known {
            match dims.iter().position(|d| matches!(d, ReshapeDim::Infer)) {
                Some(axis) if known > 0 && total % known == 0 => out[axis] = Dim::Fixed(total / known),
                None if known == total => {}
                _ => return Err(cx.fail(format!("cannot reshape {} ({total} elements) to {dims:?}", n.shape))),
            }
        }
    }
    Ok((n.dtype, Shape(out)))
}

/// The concrete output shape of a reshape of a value of shape `src` (what `Op::Reshape` means
/// once the symbols are bound): `Keep(i)` is `src[i]`, `Fixed(n)` is n, `Infer` takes the rest.
/// An error when the element counts cannot match or an axis to keep does not exist.
pub fn reshape_target(src: &[usize], dims: &[ReshapeDim]) -> Result<Vec<usize>, String> {
    let total: usize = src.iter().product();
    let mut out = Vec::with_capacity(dims.len());
    for d in dims {
        out.push(match d {
            ReshapeDim::Keep(i) => *src.get(*i).ok_or_else(|| format!("input {src:?} has no axis {i}"))?,
            ReshapeDim::Fixed(n) => *n,
            ReshapeDim::Infer => 0,
        });
    }
    let known: usize = dims.iter().zip(&out).filter(|(d, _)| !matches!(d, ReshapeDim::Infer)).map(|(_, n)| n).product();
    if let Some(axis) = dims.iter().position(|d| matches!(d, ReshapeDim::Infer)) {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {src:?} to {dims:?}"));
        }
        out[axis] = total / known;
    } else if known != total {
        return Err(format!("cannot reshape {src:?} ({total} elements) to {out:?}"));
    }
    Ok(out)
}

pub(super) fn permute(cx: &Cx<'_>, x: ValueId, perm: &[usize]) -> Result<(DType, Shape)> {
    let n = cx.get(x);
    let mut seen = vec![false; n.shape.rank()];
    if perm.len() != n.shape.rank() || !perm.iter().all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true)) {
        return Err(cx.fail(format!("{perm:?} is not a permutation of the axes of {}", n.shape)));
    }
    Ok((n.dtype, Shape(perm.iter().map(|&p| n.shape.0[p].clone()).collect())))
}

pub(super) fn slice(cx: &Cx<'_>, x: ValueId, axis: usize, start: usize, end: Option<usize>) -> Result<(DType, Shape)> {
    let n = cx.get(x);
    let dim = n.shape.0.get(axis).ok_or_else(|| cx.fail(format!("axis {axis} out of range for {}", n.shape)))?;
    let size = match (end, dim.fixed()) {
        (Some(e), _) if e < start => return Err(cx.fail(format!("slice end {e} before start {start}"))),
        (Some(e), Some(d)) if e > d => return Err(cx.fail(format!("slice end {e} past size {d}"))),
        (None, Some(d)) if start > d => return Err(cx.fail(format!("slice start {start} past size {d}"))),
        (Some(e), _) => Dim::Fixed(e - start),
        (None, Some(d)) => Dim::Fixed(d - start),
        (None, None) if start == 0 => dim.clone(),
        (None, None) => cx.derived(axis),
    };
    let mut shape = n.shape.clone();
    shape.0[axis] = size;
    Ok((n.dtype, shape))
}

pub(super) fn concat(cx: &Cx<'_>, xs: &[ValueId], axis: usize) -> Result<(DType, Shape)> {
    let first = cx.get(*xs.first().ok_or_else(|| cx.fail("concat of nothing".into()))?);
    if axis >= first.shape.rank() {
        return Err(cx.fail(format!("axis {axis} out of range for {}", first.shape)));
    }
    let mut total = Some(0usize);
    for id in xs {
        let n = cx.get(*id);
        if n.dtype != first.dtype || n.shape.rank() != first.shape.rank() {
            return Err(cx.fail(format!(
                "operand `{}` ({} {}) differs from `{}` ({} {})",
                n.name, n.dtype, n.shape, first.name, first.dtype, first.shape
            )));
        }
        for (i, (a, b)) in n.shape.0.iter().zip(&first.shape.0).enumerate() {
            if i != axis {
                cx.same_dim(a, b, &format!("axis {i} of `{}`", n.name))?;
            }
        }
        total = total.zip(n.shape.0[axis].fixed()).map(|(t, s)| t + s);
    }
    let mut shape = first.shape.clone();
    shape.0[axis] = total.map(Dim::Fixed).unwrap_or_else(|| cx.derived(axis));
    Ok((first.dtype, shape))
}

pub(super) fn take_last(cx: &Cx<'_>, x: ValueId, axis: usize) -> Result<(DType, Shape)> {
    let n = cx.get(x);
    if axis >= n.shape.rank() {
        return Err(cx.fail(format!("axis {axis} out of range for {}", n.shape)));
    }
    if matches!(n.dtype, DType::Quant(_)) {
        return Err(cx.fail("x cannot be block-quantised".into()));
    }
    let mut shape = n.shape.clone();
    shape.0[axis] = Dim::Fixed(1);
    Ok((n.dtype, shape))
}

pub(super) fn positions(cx: &Cx<'_>, like: ValueId, axis: usize) -> Result<(DType, Shape)> {
    let n = cx.get(like);
    let dim = n.shape.0.get(axis).ok_or_else(|| cx.fail(format!("axis {axis} out of range for {}", n.shape)))?;
    Ok((DType::U32, Shape(vec![dim.clone()])))
}

#[cfg(test)]
mod tests {
    use super::reshape_target;
    use crate::ReshapeDim::{Fixed, Infer, Keep};

    #[test]
    fn a_reshape_target_keeps_fixes_and_infers_axes() {
        // BERT's head split [2, 5, 12] → [2, 5, 3, 4] and the merge back.
        assert_eq!(reshape_target(&[2, 5, 12], &[Keep(0), Keep(1), Fixed(3), Infer]), Ok(vec![2, 5, 3, 4]));
        assert_eq!(reshape_target(&[2, 5, 3, 4], &[Keep(0), Keep(1), Infer]), Ok(vec![2, 5, 12]));
        assert_eq!(reshape_target(&[6, 4], &[Fixed(24)]), Ok(vec![24]));
        assert_eq!(reshape_target(&[0, 4], &[Keep(0), Fixed(2), Fixed(2)]), Ok(vec![0, 2, 2]));
    }

    #[test]
    fn a_reshape_target_that_cannot_hold_the_elements_is_an_error() {
        assert!(reshape_target(&[2, 5], &[Fixed(3), Infer]).unwrap_err().contains("cannot reshape"));
        assert!(reshape_target(&[2, 5], &[Fixed(3), Fixed(3)]).unwrap_err().contains("10 elements"));
        assert!(reshape_target(&[2, 5], &[Keep(2), Infer]).unwrap_err().contains("no axis 2"));
        // An inferred axis next to a zero-size one is undetermined.
        assert!(reshape_target(&[0, 5], &[Fixed(0), Infer]).is_err());
    }
}
