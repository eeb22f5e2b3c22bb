//! Linear-algebra semantics: embedding lookups, matmuls, linear layers, one-hot rows and the
//! scatter-add of rows.

use super::{concrete, Args, Val};
use crate::infer::broadcast;
use crate::{Result, ValueId};
use ndarray::{s, Array2, Array3, ArrayD, Axis, IxDyn};

pub(super) fn embedding(a: &Args<'_>, table: ValueId, ids: ValueId) -> Result<Val> {
    let (t, ids) = (a.f(table)?, a.i(ids)?);
    let (vocab, hidden) = (t.shape()[0], t.shape()[1]);
    let mut out = Vec::with_capacity(ids.len() * hidden);
    for &id in ids.iter() {
        if id < 0 || id as usize >= vocab {
            return Err(a.fail(format!("id {id} out of range for a table of {vocab} rows")));
        }
        out.extend(t.slice(s![id as usize, ..]).iter());
    }
    let mut shape = ids.shape().to_vec();
    shape.push(hidden);
    Ok(Val::F(ArrayD::from_shape_vec(shape, out).expect("sizes match")))
}

pub(super) fn matmul(a: &Args<'_>, l: ValueId, r: ValueId, transpose_b: bool) -> Result<Val> {
    let b = a.f(r)?;
    let b = if transpose_b { swap_last(b) } else { b.clone() };
    Ok(Val::F(batched_matmul(a.f(l)?, &b).map_err(|m| a.fail(m))?))
}

/// x · weightᵀ (+ bias); `out_rank` is the rank the graph gives the result (1 for a vector x).
pub(super) fn linear(a: &Args<'_>, x: ValueId, weight: ValueId, bias: Option<ValueId>, out_rank: usize) -> Result<Val> {
    let (x, w) = (a.f(x)?, a.f(weight)?);
    // A vector x is one row (matmul needs two axes).
    let row;
    let x = if x.ndim() == 1 {
        row = x.clone().insert_axis(Axis(0));
        &row
    } else {
        x
    };
    let mut y = batched_matmul(x, &w.t().into_dyn().to_owned()).map_err(|m| a.fail(m))?;
    if out_rank == 1 {
        y = y.index_axis_move(Axis(0), 0);
    }
    if let Some(b) = bias {
        y = &y + a.f(b)?;
    }
    Ok(Val::F(y))
}

pub(super) fn one_hot(a: &Args<'_>, ids: ValueId, depth: usize) -> Result<Val> {
    let ids = a.i(ids)?;
    let mut shape = ids.shape().to_vec();
    shape.push(depth);
    let mut out = ArrayD::<f64>::zeros(IxDyn(&shape));
    let flat = out.as_slice_mut().expect("fresh arrays are contiguous");
    for (row, &id) in ids.iter().enumerate() {
        if id >= 0 && (id as usize) < depth {
            flat[row * depth + id as usize] = 1.0;
        }
    }
    Ok(Val::F(out))
}

pub(super) fn index_add(a: &Args<'_>, ids: ValueId, src: ValueId, rows: usize) -> Result<Val> {
    let (ids, src) = (a.i(ids)?, a.f(src)?);
    let width = *src.shape().last().expect("rank checked");
    if src.shape()[..src.ndim() - 1] != *ids.shape() {
        return Err(a.fail(format!("src {:?} does not match ids {:?}", src.shape(), ids.shape())));
    }
    let src = src.as_standard_layout();
    let flat = src.as_slice().expect("standard layout");
    let mut out = Array2::<f64>::zeros((rows, width));
    for (row, &id) in ids.iter().enumerate() {
        if id < 0 || id as usize >= rows {
            return Err(a.fail(format!("id {id} out of range for {rows} rows")));
        }
        for c in 0..width {
            out[[id as usize, c]] += flat[row * width + c];
        }
    }
    Ok(Val::F(out.into_dyn()))
}

fn swap_last(a: &ArrayD<f64>) -> ArrayD<f64> {
    let mut v = a.view();
    let r = v.ndim();
    v.swap_axes(r - 2, r - 1);
    v.as_standard_layout().into_owned()
}

/// Batched matmul over the last two axes with broadcast leading axes.
fn batched_matmul(a: &ArrayD<f64>, b: &ArrayD<f64>) -> Result<ArrayD<f64>, String> {
    let (ra, rb) = (a.ndim(), b.ndim());
    let (m, k) = (a.shape()[ra - 2], a.shape()[ra - 1]);
    let (kb, n) = (b.shape()[rb - 2], b.shape()[rb - 1]);
    if k != kb {
        return Err(format!("contraction sizes differ: {:?} × {:?}", a.shape(), b.shape()));
    }
    let batch = broadcast(&concrete(&a.shape()[..ra - 2]), &concrete(&b.shape()[..rb - 2]))?
        .concrete()
        .expect("concrete in, concrete out");
    let nb: usize = batch.iter().product();
    let full = |x: &ArrayD<f64>, r: usize, c: usize| -> Result<Array3<f64>, String> {
        let mut shape = batch.clone();
        shape.extend([r, c]);
        let view =
            x.broadcast(IxDyn(&shape)).ok_or_else(|| format!("cannot broadcast {:?} to {shape:?}", x.shape()))?;
        Ok(Array3::from_shape_vec((nb, r, c), view.iter().copied().collect()).expect("sizes match"))
    };
    let (a3, b3) = (full(a, m, k)?, full(b, k, n)?);
    let mut out = Vec::with_capacity(nb * m * n);
    for bi in 0..nb {
        out.extend(a3.index_axis(Axis(0), bi).dot(&b3.index_axis(Axis(0), bi)).iter());
    }
    let mut shape = batch;
    shape.extend([m, n]);
    Ok(ArrayD::from_shape_vec(shape, out).expect("sizes match"))
}
