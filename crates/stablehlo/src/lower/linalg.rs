//! Products and lookups: matmul, linear layers, embedding rows.

use crate::emit::{Cmp, Elem, Emitter, R, V};

/// Rows of `table` at `ids`. Ids are taken as i32 (vocabularies are far below 2³¹); an id out of
/// range is clamped by `gather`, so a runtime checks ids on the host, as the reference refuses them.
pub(super) fn embedding(e: &mut Emitter, table: &V, ids: &V) -> V {
    let ids = e.convert(ids, Elem::I32);
    e.gather_rows(table, &ids)
}

/// Batched a · b over the last two axes, leading axes broadcast to `out`'s.
pub(super) fn matmul(e: &mut Emitter, a: &V, b: &V, transpose_b: bool, out: &[usize]) -> R<V> {
    let nb = out.len() - 2;
    let batch = &out[..nb];
    let full = |e: &mut Emitter, x: &V| -> R<V> {
        let mut shape = batch.to_vec();
        shape.extend_from_slice(&x.shape()[x.ty.rank() - 2..]);
        e.broadcast_to(x, &shape)
    };
    let (a, b) = (full(e, a)?, full(e, b)?);
    let axes: Vec<usize> = (0..nb).collect();
    let b_contract = if transpose_b { nb + 1 } else { nb };
    e.dot_general(&a, &b, (&axes, &axes), (&[nb + 1], &[b_contract]))
}

/// x · weightᵀ + bias with weight [out, in].
pub(super) fn linear(e: &mut Emitter, x: &V, weight: &V, bias: Option<&V>) -> R<V> {
    let weight = e.convert(weight, x.elem());
    let y = e.dot_general(x, &weight, (&[], &[]), (&[x.ty.rank() - 1], &[1]))?;
    match bias {
        Some(b) => {
            let b = e.convert(b, x.elem());
            let b = e.broadcast_to(&b, y.shape())?;
            e.binary("add", &y, &b)
        }
        None => Ok(y),
    }
}

/// ids.shape + [depth] of `elem`: 1 where the id equals the class, else 0 (ids outside 0..depth
/// match no class). Compared in i64, so no id wraps into range.
pub(super) fn one_hot(e: &mut Emitter, ids: &V, depth: usize, elem: Elem) -> R<V> {
    let ids = e.convert(ids, Elem::I64);
    let mut shape = ids.shape().to_vec();
    shape.push(depth);
    let dims: Vec<usize> = (0..ids.ty.rank()).collect();
    let ids = e.broadcast_in_dim(&ids, &shape, &dims)?;
    let classes = e.iota(Elem::I64, &shape, shape.len() - 1);
    let hit = e.compare(&ids, &classes, Cmp::Eq)?;
    let one = e.splat(elem, 1.0, &shape);
    let zero = e.splat(elem, 0.0, &shape);
    e.select(&hit, &one, &zero)
}

/// A zero [rows, width] with the rows of `src` (ids.shape + [width]) added at `ids` (a scatter).
/// As with `embedding`, ids out of range are the host's to refuse (scatter skips them).
pub(super) fn index_add(e: &mut Emitter, ids: &V, src: &V, rows: usize) -> R<V> {
    let n: usize = ids.shape().iter().product();
    let width = *src.shape().last().ok_or("src has no axes")?;
    let ids = e.convert(ids, Elem::I32);
    let ids = e.reshape(&ids, &[n])?;
    let src = e.reshape(src, &[n, width])?;
    e.scatter_add_rows(&ids, &src, rows)
}
