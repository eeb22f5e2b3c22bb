//! Gradients of products and lookups: matmul (batched, broadcast, transposed b), linear layers,
//! embedding lookups (a scatter-add into the table) and the scatter-add itself (a lookup).

use super::{Ctx, R};
use crate::{Op, ReshapeDim, ValueId};

/// y = a · B with B = b or bᵀ: da = g · Bᵀ, dB = aᵀ · g, each summed over broadcast batch axes.
pub(super) fn matmul(
    ctx: &mut Ctx<'_>,
    a: ValueId,
    b: ValueId,
    transpose_b: bool,
    g: ValueId,
    wants: &dyn Fn(ValueId) -> bool,
) -> R<Vec<(ValueId, ValueId)>> {
    let mut out = Vec::new();
    if wants(a) {
        let da = ctx.matmul(g, b, !transpose_b)?;
        out.push((a, ctx.sum_to(da, a)?));
    }
    if wants(b) {
        let db = if transpose_b {
            // b is [n, k] and y = a·bᵀ: db = gᵀ · a
            let gt = ctx.swap_last(g)?;
            ctx.matmul(gt, a, false)?
        } else {
            let at = ctx.swap_last(a)?;
            ctx.matmul(at, g, false)?
        };
        out.push((b, ctx.sum_to(db, b)?));
    }
    Ok(out)
}

/// y = x · Wᵀ + bias: dx = g · W, dW = Σ gᵀ · x over all rows, dbias = Σ g over all rows.
pub(super) fn linear(
    ctx: &mut Ctx<'_>,
    x: ValueId,
    weight: ValueId,
    bias: Option<ValueId>,
    g: ValueId,
    wants: &dyn Fn(ValueId) -> bool,
) -> R<Vec<(ValueId, ValueId)>> {
    let mut out = Vec::new();
    let rank = ctx.dims(x).len();
    if wants(x) {
        if !ctx.node(weight).dtype.is_float() {
            return Err(ctx.not_differentiable("the gradient with respect to x needs a float (not quantised) weight"));
        }
        // Linear with the transposed weight [in, out] computes g · W.
        let wt = ctx.permute(weight, vec![1, 0])?;
        out.push((x, ctx.add("linear", Op::Linear { x: g, weight: wt, bias: None })?));
    }
    if wants(weight) {
        // Every leading axis becomes one row axis, so one matmul sums over all of them.
        let rows = vec![ReshapeDim::Infer, ReshapeDim::Keep(rank - 1)];
        let g2 = ctx.reshape(g, rows.clone())?;
        let x2 = ctx.reshape(x, rows)?;
        let gt = ctx.swap_last(g2)?;
        out.push((weight, ctx.matmul(gt, x2, false)?));
    }
    if let Some(b) = bias.filter(|b| wants(*b)) {
        out.push((b, ctx.sum(g, (0..rank - 1).collect(), false)?));
    }
    Ok(out)
}

/// The rows looked up are added back into a zero table at their ids (repeated ids accumulate).
pub(super) fn embedding(ctx: &mut Ctx<'_>, table: ValueId, ids: ValueId, g: ValueId) -> R<Vec<(ValueId, ValueId)>> {
    let rows = ctx.fixed(table, 0, "table size")?;
    Ok(vec![(table, ctx.add("index_add", Op::IndexAdd { ids, src: g, rows })?)])
}

/// The adjoint of a scatter-add is the lookup of the same rows.
pub(super) fn index_add(ctx: &mut Ctx<'_>, ids: ValueId, src: ValueId, g: ValueId) -> R<Vec<(ValueId, ValueId)>> {
    Ok(vec![(src, ctx.add("embedding", Op::Embedding { table: g, ids })?)])
}

#[cfg(test)]
mod tests {
    use super::super::check::Check;
    use crate::{Dim, HostTensor, Op};

    #[test]
    fn matmul_batched_broadcast() {
        let mut c = Check::new("matmul");
        let a = c.input("a", &[Dim::sym("batch"), Dim::Fixed(2), Dim::sym("m"), Dim::Fixed(4)], &[2, 2, 3, 4]);
        let b = c.input("b", &[Dim::Fixed(4), Dim::Fixed(5)], &[4, 5]);
        let y = c.op(Op::MatMul { a, b, transpose_b: false });
        c.run(y);
    }

    #[test]
    fn matmul_transposed_with_size_one_batch() {
        let mut c = Check::new("matmul_t");
        let a = c.input("a", &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(4)], &[1, 3, 4]);
        let b = c.input("b", &[Dim::Fixed(2), Dim::Fixed(5), Dim::Fixed(4)], &[2, 5, 4]);
        let y = c.op(Op::MatMul { a, b, transpose_b: true });
        c.run(y);
    }

    #[test]
    fn linear_with_and_without_bias() {
        for with_bias in [true, false] {
            let mut c = Check::new("linear");
            let x = c.input("x", &[Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(4)], &[2, 3, 4]);
            let weight = c.weight("w", &[5, 4], 0.5);
            let bias = with_bias.then(|| c.weight("b", &[5], 1.0));
            let y = c.op(Op::Linear { x, weight, bias });
            c.run(y);
        }
    }

    #[test]
    fn linear_of_a_vector() {
        let mut c = Check::new("linear_vec");
        let x = c.input("x", &[Dim::Fixed(3)], &[3]);
        let weight = c.weight("w", &[2, 3], 0.5);
        let y = c.op(Op::Linear { x, weight, bias: None });
        c.run(y);
    }

    #[test]
    fn embedding_with_repeated_ids() {
        let mut c = Check::new("embedding");
        let table = c.weight("table", &[6, 3], 1.0);
        let ids = HostTensor::u32(vec![2, 3], vec![0, 5, 2, 2, 5, 2]).unwrap();
        let ids = c.fixed_input("ids", &[Dim::sym("batch"), Dim::sym("seq")], ids);
        let y = c.op(Op::Embedding { table, ids });
        c.run(y);
    }

    #[test]
    fn index_add() {
        let mut c = Check::new("index_add");
        let src = c.input("src", &[Dim::sym("n"), Dim::Fixed(3)], &[4, 3]);
        let ids = HostTensor::i64(vec![4], vec![1, 0, 1, 3]).unwrap();
        let ids = c.fixed_input("ids", &[Dim::sym("n")], ids);
        let y = c.op(Op::IndexAdd { ids, src, rows: 5 });
        c.run(y);
    }
}
