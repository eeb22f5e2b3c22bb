//! Element-wise semantics: binary ops with NumPy broadcasting, activations, casts, dropout, and
//! the fused AdamW update.

use super::{as_f64, concrete, Args, Val};
use crate::infer::broadcast;
use crate::{BinaryOp, DType, Result, UnaryOp, ValueId};
use ndarray::{ArrayD, IxDyn};

pub(super) fn binary(a: &Args<'_>, op: BinaryOp, l: ValueId, r: ValueId) -> Result<Val> {
    // ndarray panics on shapes that do not broadcast; check first.
    broadcast(&concrete(a.val(l).shape()), &concrete(a.val(r).shape())).map_err(|m| a.fail(m))?;
    Ok(match (a.val(l), a.val(r)) {
        (Val::F(x), Val::F(y)) => Val::F(match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
        }),
        (Val::I(x), Val::I(y)) => Val::I(match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => {
                if y.iter().any(|&v| v == 0) {
                    return Err(a.fail("integer division by zero".into()));
                }
                x / y
            }
        }),
        _ => return Err(a.fail("operand kinds differ".into())),
    })
}

pub(super) fn unary(a: &Args<'_>, op: UnaryOp, x: ValueId) -> Result<Val> {
    Ok(Val::F(a.f(x)?.mapv(|v| unary_value(op, v))))
}

fn unary_value(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        UnaryOp::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x.powi(3))).tanh())
        }
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Erf => libm::erf(x),
        UnaryOp::Step => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Log => x.ln(),
    }
}

/// To a float type: the value (rounded by the caller); to an integer type: truncated.
pub(super) fn cast(a: &Args<'_>, x: ValueId, dtype: DType) -> Val {
    match (a.val(x), dtype.is_float()) {
        (v, true) => Val::F(as_f64(v)),
        (Val::F(v), false) => Val::I(v.mapv(|x| x.trunc() as i64)),
        (Val::I(v), false) => Val::I(v.clone()),
    }
}

/// `Op::Dropout`: elements whose hash of (seed, stream, row-major index) reaches ⌊p·2³²⌋ are kept
/// and scaled by 1/(1 − p), the others are 0.
pub(super) fn dropout(a: &Args<'_>, x: ValueId, seed: ValueId, p: f64, stream: u32) -> Result<Val> {
    let seed = a.i(seed)?.iter().next().copied().ok_or_else(|| a.fail("seed has no value".into()))? as u32;
    // p < 1, so p·2³² < 2³² and the threshold fits a u32 (at most 2³² − 1).
    let threshold = (p * 4_294_967_296.0).floor() as u64;
    let scale = 1.0 / (1.0 - p);
    let x = a.f(x)?.as_standard_layout();
    let kept = x.iter().enumerate().map(|(index, &v)| {
        if u64::from(murmur3_x86_32(&[stream, index as u32], seed)) >= threshold {
            v * scale
        } else {
            0.0
        }
    });
    Ok(Val::F(ArrayD::from_shape_vec(x.raw_dim(), kept.collect()).expect("one value per element")))
}

/// MurmurHash3_x86_32 (Austin Appleby, SMHasher `MurmurHash3.cpp`) of a key made of whole
/// little-endian 32-bit blocks (so no tail bytes).
fn murmur3_x86_32(blocks: &[u32], seed: u32) -> u32 {
    let mut h = seed;
    for &block in blocks {
        let k = block.wrapping_mul(0xcc9e_2d51).rotate_left(15).wrapping_mul(0x1b87_3593);
        h = (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    h ^= (blocks.len() * 4) as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// `Op::AdamWStep` as `torch.optim.AdamW` writes it, element by element in f64, from `[param, grad,
/// m, v]`, the scalars lr and step t, and `[β1, β2, eps, weight decay]`:
/// m' = β1·m + (1 − β1)·g; v' = β2·v + (1 − β2)·g²;
/// p' = p·(1 − lr·wd) − lr/(1 − β1^t) · m' / (√v' / √(1 − β2^t) + eps); yields `[p', m', v']` stacked.
pub(super) fn adamw_step(
    a: &Args<'_>,
    [param, grad, m, v]: [ValueId; 4],
    lr: ValueId,
    step: ValueId,
    [beta1, beta2, eps, weight_decay]: [f64; 4],
) -> Result<Val> {
    let scalar = |id: ValueId| a.f(id).map(|v| v.iter().next().copied().unwrap_or(f64::NAN));
    let (lr, t) = (scalar(lr)?, scalar(step)?);
    let (p, g, m, v) = (a.f(param)?, a.f(grad)?, a.f(m)?, a.f(v)?);
    if g.shape() != p.shape() || m.shape() != p.shape() || v.shape() != p.shape() {
        return Err(a.fail("param, grad, m and v differ in shape".into()));
    }
    let mut shape = vec![3];
    shape.extend_from_slice(p.shape());
    let mut out = ArrayD::<f64>::zeros(IxDyn(&shape));
    let n = p.len();
    let flat = out.as_slice_mut().expect("fresh arrays are contiguous");
    for (i, (((&p, &g), &m), &v)) in p.iter().zip(g.iter()).zip(m.iter()).zip(v.iter()).enumerate() {
        let m2 = beta1 * m + (1.0 - beta1) * g;
        let v2 = beta2 * v + (1.0 - beta2) * g * g;
        let denom = v2.sqrt() / (1.0 - beta2.powf(t)).sqrt() + eps;
        let p2 = p * (1.0 - lr * weight_decay) - lr / (1.0 - beta1.powf(t)) * (m2 / denom);
        (flat[i], flat[n + i], flat[2 * n + i]) = (p2, m2, v2);
    }
    Ok(Val::F(out))
}
