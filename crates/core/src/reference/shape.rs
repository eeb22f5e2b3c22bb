//! Semantics of the ops that move values without computing: reshape, permute, slice, concat, the
//! last entry along an axis, position ids (on float and integer values alike).

use super::{map_val, Args, Val};
use crate::{ReshapeDim, Result, ValueId};
use ndarray::{concatenate, ArrayD, Axis, IxDyn};

pub(super) fn reshape(a: &Args<'_>, x: ValueId, dims: &[ReshapeDim]) -> Result<Val> {
    // The concrete target is the op's rule (`crate::reshape_target`, tested on its own).
    let target = crate::reshape_target(a.val(x).shape(), dims).map_err(|m| a.fail(m))?;
    Ok(map_val(
        a.val(x),
        |v| v.as_standard_layout().into_owned().into_shape_with_order(target.clone()).expect("sizes checked"),
        |v| v.as_standard_layout().into_owned().into_shape_with_order(target.clone()).expect("sizes checked"),
    ))
}

pub(super) fn permute(a: &Args<'_>, x: ValueId, perm: &[usize]) -> Val {
    map_val(
        a.val(x),
        |v| v.clone().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned(),
        |v| v.clone().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned(),
    )
}

pub(super) fn slice(a: &Args<'_>, x: ValueId, axis: usize, start: usize, end: Option<usize>) -> Result<Val> {
    let size = a.val(x).shape()[axis];
    let end = end.unwrap_or(size);
    if start > end || end > size {
        return Err(a.fail(format!("slice {start}..{end} out of range for size {size}")));
    }
    Ok(map_val(
        a.val(x),
        |v| v.slice_axis(Axis(axis), (start..end).into()).to_owned(),
        |v| v.slice_axis(Axis(axis), (start..end).into()).to_owned(),
    ))
}

pub(super) fn concat(a: &Args<'_>, xs: &[ValueId], axis: usize) -> Result<Val> {
    let shapes: Vec<&[usize]> = xs.iter().map(|x| a.val(*x).shape()).collect();
    for s in &shapes {
        let same = s.iter().zip(shapes[0]).enumerate().all(|(k, (p, q))| k == axis || p == q);
        if !same {
            return Err(a.fail(format!("cannot concatenate shapes {shapes:?} along axis {axis}")));
        }
    }
    Ok(match a.val(xs[0]) {
        Val::F(_) => {
            let parts = xs.iter().map(|x| a.f(*x).map(|v| v.view())).collect::<Result<Vec<_>>>()?;
            Val::F(concatenate(Axis(axis), &parts).expect("shapes checked"))
        }
        Val::I(_) => {
            let parts = xs.iter().map(|x| a.i(*x).map(|v| v.view())).collect::<Result<Vec<_>>>()?;
            Val::I(concatenate(Axis(axis), &parts).expect("shapes checked"))
        }
    })
}

pub(super) fn take_last(a: &Args<'_>, x: ValueId, axis: usize) -> Result<Val> {
    let size = a.val(x).shape()[axis];
    if size == 0 {
        return Err(a.fail(format!("axis {axis} is empty")));
    }
    Ok(map_val(
        a.val(x),
        |v| v.slice_axis(Axis(axis), (size - 1..size).into()).to_owned(),
        |v| v.slice_axis(Axis(axis), (size - 1..size).into()).to_owned(),
    ))
}

/// The integers 0..n, n the size of `like`'s axis `axis`.
pub(super) fn positions(a: &Args<'_>, like: ValueId, axis: usize) -> Val {
    let n = a.val(like).shape()[axis];
    Val::I(ArrayD::from_shape_fn(IxDyn(&[n]), |ix| ix[0] as i64))
}
