//! Products and lookups: matmul, linear layers, embedding rows.

use crate::emit::{Elem, Emitter, R, V};

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
