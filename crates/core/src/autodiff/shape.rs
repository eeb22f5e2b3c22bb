//! Gradients of ops that move values without changing them: reshape, permute, slice, concat and
//! take-last. Each moves the gradient back; positions that were dropped get zeros.

use super::{Ctx, R};
use crate::{Dim, Op, ReshapeDim, ValueId};

/// Reshapes the gradient back to x's shape. x's symbolic axes are found among y's by symbol
/// (`Keep`); at most one that cannot be found is inferred.
pub(super) fn reshape(ctx: &mut Ctx<'_>, x: ValueId, y: ValueId, g: ValueId) -> R<Vec<(ValueId, ValueId)>> {
    let (xs, ys) = (ctx.dims(x), ctx.dims(y));
    let mut dims = Vec::with_capacity(xs.len());
    let mut inferred = 0;
    for d in &xs {
        dims.push(match d {
            Dim::Fixed(n) => ReshapeDim::Fixed(*n),
            Dim::Sym(_) => match ys.iter().position(|e| e == d) {
                Some(j) => ReshapeDim::Keep(j),
                None => {
                    inferred += 1;
                    ReshapeDim::Infer
                }
            },
        });
    }
    if inferred > 1 {
        return Err(ctx.not_differentiable(format!(
            "the input shape {} has {inferred} symbolic axes that the output does not keep",
            ctx.node(x).shape
        )));
    }
    Ok(vec![(x, ctx.reshape(g, dims)?)])
}

pub(super) fn permute(ctx: &mut Ctx<'_>, x: ValueId, perm: &[usize], g: ValueId) -> R<Vec<(ValueId, ValueId)>> {
    let mut inverse = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    Ok(vec![(x, ctx.permute(g, inverse)?)])
}

/// The gradient in the slice's place, zeros before and after it.
pub(super) fn slice(
    ctx: &mut Ctx<'_>,
    x: ValueId,
    axis: usize,
    start: usize,
    end: Option<usize>,
    g: ValueId,
) -> R<Vec<(ValueId, ValueId)>> {
    let size = ctx.dims(x)[axis].clone();
    let whole_tail = match end {
        None => true,
        Some(e) => size == Dim::Fixed(e),
    };
    if start == 0 && whole_tail {
        return Ok(vec![(x, g)]);
    }
    let zeros = ctx.zeros_like(x)?;
    let mut parts = Vec::new();
    if start > 0 {
        parts.push(ctx.add("zeros", Op::Slice { x: zeros, axis, start: 0, end: Some(start) })?);
    }
    parts.push(g);
    if let (Some(e), false) = (end, whole_tail) {
        parts.push(ctx.add("zeros", Op::Slice { x: zeros, axis, start: e, end: None })?);
    }
    Ok(vec![(x, ctx.add("concat", Op::Concat { xs: parts, axis })?)])
}

/// Each operand gets its own stretch of the gradient; every stretch but the last needs a fixed
/// length (its end is where the next begins).
pub(super) fn concat(
    ctx: &mut Ctx<'_>,
    xs: &[ValueId],
    axis: usize,
    g: ValueId,
    wants: &dyn Fn(ValueId) -> bool,
) -> R<Vec<(ValueId, ValueId)>> {
    let mut out = Vec::new();
    let mut offset = Some(0usize);
    for (i, &x) in xs.iter().enumerate() {
        let len = ctx.dims(x)[axis].fixed();
        let last = i + 1 == xs.len();
        if wants(x) {
            let start = offset.ok_or_else(|| {
                ctx.not_differentiable("an operand after one of symbolic length along the axis has no known offset")
            })?;
            let end = match (len, last) {
                (Some(n), _) => Some(start + n),
                (None, true) => None,
                (None, false) => {
                    return Err(ctx.not_differentiable(format!(
                        "operand {i} has a symbolic length along the axis and is not the last"
                    )))
                }
            };
            out.push((x, ctx.add("slice", Op::Slice { x: g, axis, start, end })?));
        }
        offset = offset.zip(len).map(|(o, n)| o + n);
    }
    Ok(out)
}

/// Zeros everywhere but the last entry along the axis, which gets the gradient.
pub(super) fn take_last(ctx: &mut Ctx<'_>, x: ValueId, axis: usize, g: ValueId) -> R<Vec<(ValueId, ValueId)>> {
    if ctx.dims(x)[axis] == Dim::Fixed(1) {
        return Ok(vec![(x, g)]);
    }
    let zeros = ctx.zeros_like(x)?;
    // size − 1 zeros: the slice from 1 has that length whatever the size.
    let before = ctx.add("zeros", Op::Slice { x: zeros, axis, start: 1, end: None })?;
    Ok(vec![(x, ctx.add("concat", Op::Concat { xs: vec![before, g], axis })?)])
}

#[cfg(test)]
mod tests {
    use super::super::check::Check;
    use crate::{Dim, Op, ReshapeDim};

    #[test]
    fn reshape_and_permute_split_heads() {
        let mut c = Check::new("heads");
        let x = c.input("x", &[Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(6)], &[2, 3, 6]);
        let dims = vec![ReshapeDim::Keep(0), ReshapeDim::Keep(1), ReshapeDim::Fixed(2), ReshapeDim::Infer];
        let r = c.op(Op::Reshape { x, dims });
        let y = c.op(Op::Permute { x: r, perm: vec![0, 2, 1, 3] });
        c.run(y);
    }

    #[test]
    fn reshape_that_merges_a_symbolic_axis() {
        let mut c = Check::new("merge");
        let x = c.input("x", &[Dim::sym("rows"), Dim::Fixed(2), Dim::Fixed(3)], &[4, 2, 3]);
        let y = c.op(Op::Reshape { x, dims: vec![ReshapeDim::Infer, ReshapeDim::Fixed(3)] });
        c.run(y);
    }

    #[test]
    fn slices_in_the_middle_at_the_start_and_to_the_end() {
        for (start, end) in [(1, Some(3)), (0, Some(2)), (2, None)] {
            let mut c = Check::new("slice");
            let x = c.input("x", &[Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(3)], &[2, 5, 3]);
            let y = c.op(Op::Slice { x, axis: 1, start, end });
            c.run(y);
        }
    }

    #[test]
    fn concat_with_a_symbolic_last_part_and_a_repeated_operand() {
        let mut c = Check::new("concat");
        let a = c.input("a", &[Dim::sym("batch"), Dim::Fixed(2)], &[3, 2]);
        let b = c.input("b", &[Dim::sym("batch"), Dim::sym("n")], &[3, 4]);
        let y = c.op(Op::Concat { xs: vec![a, a, b], axis: 1 });
        c.run(y);
    }

    #[test]
    fn take_last() {
        let mut c = Check::new("take_last");
        let x = c.input("x", &[Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(3)], &[2, 4, 3]);
        let y = c.op(Op::TakeLast { x, axis: 1 });
        c.run(y);
    }
}
