//! Gradients of element-wise ops: binary ops with NumPy broadcasting (each operand's gradient is
//! summed back to its own shape), activations, casts between float types, and dropout.

use super::{Ctx, R};
use crate::{BinaryOp, Op, UnaryOp, ValueId};
use std::f64::consts::{FRAC_1_SQRT_2, PI};

pub(super) fn binary(
    ctx: &mut Ctx<'_>,
    op: BinaryOp,
    a: ValueId,
    b: ValueId,
    y: ValueId,
    g: ValueId,
    wants: &dyn Fn(ValueId) -> bool,
) -> R<Vec<(ValueId, ValueId)>> {
    let mut out = Vec::new();
    if wants(a) {
        let da = match op {
            BinaryOp::Add | BinaryOp::Sub => g,
            BinaryOp::Mul => ctx.mul(g, b)?,
            BinaryOp::Div => ctx.div(g, b)?,
        };
        out.push((a, ctx.sum_to(da, a)?));
    }
    if wants(b) {
        let db = match op {
            BinaryOp::Add => g,
            BinaryOp::Sub => ctx.affine(g, -1.0, 0.0)?,
            BinaryOp::Mul => ctx.mul(g, a)?,
            // d(a/b)/db = −a/b² = −y/b
            BinaryOp::Div => {
                let gy = ctx.mul(g, y)?;
                let q = ctx.div(gy, b)?;
                ctx.affine(q, -1.0, 0.0)?
            }
        };
        out.push((b, ctx.sum_to(db, b)?));
    }
    Ok(out)
}

/// y = op(x); the contribution to x is g · op'(x), with op' built from x or y.
pub(super) fn unary(ctx: &mut Ctx<'_>, op: UnaryOp, x: ValueId, y: ValueId, g: ValueId) -> R<Vec<(ValueId, ValueId)>> {
    let derivative = match op {
        // Φ(x) + x·φ(x), Φ(x) = (1 + erf(x/√2))/2, φ(x) = e^(−x²/2)/√(2π)
        UnaryOp::Gelu => {
            let scaled = ctx.affine(x, FRAC_1_SQRT_2, 0.0)?;
            let erf = ctx.unary(UnaryOp::Erf, scaled)?;
            let cdf = ctx.affine(erf, 0.5, 0.5)?;
            let x2 = ctx.mul(x, x)?;
            let e = ctx.affine(x2, -0.5, 0.0)?;
            let e = ctx.unary(UnaryOp::Exp, e)?;
            let xe = ctx.mul(x, e)?;
            let pdf = ctx.affine(xe, 1.0 / (2.0 * PI).sqrt(), 0.0)?;
            ctx.plus(cdf, pdf)?
        }
        // y = x/2 · (1 + tanh(u)), u = k(x + a x³):
        // y' = (1 + t)/2 + x/2 · (1 − t²) · k(1 + 3a x²)
        UnaryOp::GeluTanh => {
            let (k, a) = ((2.0 / PI).sqrt(), 0.044715);
            let x2 = ctx.mul(x, x)?;
            let x3 = ctx.mul(x2, x)?;
            let ax3 = ctx.affine(x3, a, 0.0)?;
            let inner = ctx.plus(x, ax3)?;
            let u = ctx.affine(inner, k, 0.0)?;
            let t = ctx.unary(UnaryOp::Tanh, u)?;
            let left = ctx.affine(t, 0.5, 0.5)?;
            let t2 = ctx.mul(t, t)?;
            let sech2 = ctx.affine(t2, -1.0, 1.0)?;
            let du = ctx.affine(x2, 3.0 * a * k, k)?;
            let half_x = ctx.affine(x, 0.5, 0.0)?;
            let r = ctx.mul(sech2, du)?;
            let right = ctx.mul(half_x, r)?;
            ctx.plus(left, right)?
        }
        // σ(x) · (1 + x(1 − σ(x)))
        UnaryOp::Silu => {
            let s = ctx.unary(UnaryOp::Sigmoid, x)?;
            let one_minus = ctx.affine(s, -1.0, 1.0)?;
            let xm = ctx.mul(x, one_minus)?;
            let inner = ctx.affine(xm, 1.0, 1.0)?;
            ctx.mul(s, inner)?
        }
        UnaryOp::Relu => ctx.unary(UnaryOp::Step, x)?,
        UnaryOp::Tanh => {
            let y2 = ctx.mul(y, y)?;
            ctx.affine(y2, -1.0, 1.0)?
        }
        UnaryOp::Exp => y,
        UnaryOp::Sigmoid => {
            let one_minus = ctx.affine(y, -1.0, 1.0)?;
            ctx.mul(y, one_minus)?
        }
        // 2/√π · e^(−x²)
        UnaryOp::Erf => {
            let x2 = ctx.mul(x, x)?;
            let e = ctx.affine(x2, -1.0, 0.0)?;
            let e = ctx.unary(UnaryOp::Exp, e)?;
            ctx.affine(e, 2.0 / PI.sqrt(), 0.0)?
        }
        // Zero almost everywhere: no contribution.
        UnaryOp::Step => return Ok(vec![]),
        // g / (2√x) = g / (2y)
        UnaryOp::Sqrt => {
            let q = ctx.div(g, y)?;
            return Ok(vec![(x, ctx.affine(q, 0.5, 0.0)?)]);
        }
        UnaryOp::Log => return Ok(vec![(x, ctx.div(g, x)?)]),
    };
    Ok(vec![(x, ctx.mul(g, derivative)?)])
}

/// A float-to-float cast passes the gradient back in the operand's dtype.
pub(super) fn cast(ctx: &mut Ctx<'_>, x: ValueId, g: ValueId) -> R<Vec<(ValueId, ValueId)>> {
    let dtype = ctx.node(x).dtype;
    Ok(vec![(x, ctx.add("cast", Op::Cast { x: g, dtype })?)])
}

/// y = x · mask / (1 − p), so dx = dy · mask / (1 − p): the same dropout (same seed, stream and
/// p, hence the same mask, since dy has x's shape) applied to the incoming gradient.
pub(super) fn dropout(
    ctx: &mut Ctx<'_>,
    x: ValueId,
    seed: ValueId,
    p: f64,
    stream: u32,
    g: ValueId,
) -> R<Vec<(ValueId, ValueId)>> {
    Ok(vec![(x, ctx.add("dropout", Op::Dropout { x: g, seed, p, stream })?)])
}

#[cfg(test)]
mod tests {
    use super::super::check::Check;
    use crate::{BinaryOp, Dim, Op, UnaryOp};

    #[test]
    fn binary_ops_with_broadcasting() {
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            let mut c = Check::new("binary");
            let a = c.input("a", &[Dim::sym("batch"), Dim::Fixed(3), Dim::Fixed(4)], &[2, 3, 4]);
            let b = c.input("b", &[Dim::Fixed(3), Dim::Fixed(1)], &[3, 1]);
            // Divisors away from zero: e^b.
            let b = if op == BinaryOp::Div { c.op(Op::Unary { op: UnaryOp::Exp, x: b }) } else { b };
            let y = c.op(Op::Binary { op, a, b });
            c.run(y);
        }
    }

    #[test]
    fn one_operand_used_twice() {
        let mut c = Check::new("square");
        let x = c.input("x", &[Dim::Fixed(5)], &[5]);
        let y = c.op(Op::Binary { op: BinaryOp::Mul, a: x, b: x });
        c.run(y);
    }

    #[test]
    fn activations() {
        for op in [
            UnaryOp::Gelu,
            UnaryOp::GeluTanh,
            UnaryOp::Silu,
            UnaryOp::Relu,
            UnaryOp::Tanh,
            UnaryOp::Exp,
            UnaryOp::Sigmoid,
            UnaryOp::Erf,
        ] {
            let mut c = Check::new("unary");
            let x = c.input("x", &[Dim::sym("batch"), Dim::Fixed(7)], &[3, 7]);
            let y = c.op(Op::Unary { op, x });
            c.run(y);
        }
    }

    #[test]
    fn sqrt_and_log_of_positive_values() {
        for op in [UnaryOp::Sqrt, UnaryOp::Log] {
            let mut c = Check::new("positive");
            let x = c.input("x", &[Dim::Fixed(6)], &[6]);
            let p = c.op(Op::Unary { op: UnaryOp::Exp, x });
            let y = c.op(Op::Unary { op, x: p });
            c.run(y);
        }
    }

    #[test]
    fn affine_and_cast() {
        let mut c = Check::new("affine_cast");
        let x = c.input("x", &[Dim::Fixed(2), Dim::Fixed(3)], &[2, 3]);
        let a = c.op(Op::Affine { x, mul: -1.75, add: 0.5 });
        let h = c.op(Op::Cast { x: a, dtype: crate::DType::F16 });
        let y = c.op(Op::Cast { x: h, dtype: crate::DType::F32 });
        c.run(y);
    }

    #[test]
    fn step_has_zero_gradient() {
        let mut c = Check::new("step");
        let x = c.input("x", &[Dim::Fixed(4)], &[4]);
        let s = c.op(Op::Unary { op: UnaryOp::Step, x });
        let y = c.op(Op::Binary { op: BinaryOp::Mul, a: s, b: x });
        c.run(y);
    }

    #[test]
    fn dropout_drops_the_same_elements_of_the_gradient() {
        let mut c = Check::new("dropout");
        let x = c.input("x", &[Dim::sym("batch"), Dim::Fixed(9)], &[4, 9]);
        let seed = c.fixed_input("seed", &[], crate::HostTensor::u32(vec![], vec![77]).unwrap());
        let d = c.op(Op::Dropout { x, seed, p: 0.3, stream: 2 });
        // Through a non-linearity, so the gradient at x is not the mask alone.
        let y = c.op(Op::Unary { op: UnaryOp::Tanh, x: d });
        c.run(y);
    }
}
