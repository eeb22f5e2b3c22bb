//! Element-wise ops: binary with NumPy broadcasting, activations, affine maps, dropout.

use crate::emit::{Cmp, Elem, Emitter, R, V};
use accelrt_core::{BinaryOp, UnaryOp};

/// `a op b`, both broadcast to `shape` (the graph's broadcast of the two).
pub(super) fn binary(e: &mut Emitter, op: BinaryOp, a: &V, b: &V, shape: &[usize]) -> R<V> {
    let (a, b) = (e.broadcast_to(a, shape)?, e.broadcast_to(b, shape)?);
    let name = match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "subtract",
        BinaryOp::Mul => "multiply",
        // Integer division truncates toward zero in StableHLO, as in the reference.
        BinaryOp::Div => "divide",
    };
    e.binary(name, &a, &b)
}

pub(super) fn unary(e: &mut Emitter, op: UnaryOp, x: &V) -> R<V> {
    match op {
        // x · Φ(x) = x/2 · (1 + erf(x/√2)). `chlo.erf` is the op jax itself emits for erf; every
        // consumer of jax's modules (XLA, the Neuron compiler) expands it to its own
        // implementation, which for f32 is accurate to a few ulp.
        UnaryOp::Gelu => {
            let scaled = e.binary_const("multiply", x, std::f64::consts::FRAC_1_SQRT_2)?;
            let erf = e.unary("erf", &scaled);
            let one_plus = e.binary_const("add", &erf, 1.0)?;
            let half_x = e.binary_const("multiply", x, 0.5)?;
            e.binary("multiply", &half_x, &one_plus)
        }
        // x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))
        UnaryOp::GeluTanh => {
            let x2 = e.binary("multiply", x, x)?;
            let x3 = e.binary("multiply", &x2, x)?;
            let c3 = e.binary_const("multiply", &x3, 0.044715)?;
            let inner = e.binary("add", x, &c3)?;
            let inner = e.binary_const("multiply", &inner, (2.0 / std::f64::consts::PI).sqrt())?;
            let t = e.unary("tanh", &inner);
            let one_plus = e.binary_const("add", &t, 1.0)?;
            let half_x = e.binary_const("multiply", x, 0.5)?;
            e.binary("multiply", &half_x, &one_plus)
        }
        // x · σ(x)
        UnaryOp::Silu => {
            let s = e.unary("logistic", x);
            e.binary("multiply", x, &s)
        }
        UnaryOp::Relu => e.binary_const("maximum", x, 0.0),
        UnaryOp::Tanh => Ok(e.unary("tanh", x)),
        UnaryOp::Exp => Ok(e.unary("exponential", x)),
        UnaryOp::Sigmoid => Ok(e.unary("logistic", x)),
        UnaryOp::Erf => Ok(e.unary("erf", x)),
        UnaryOp::Step => {
            let zero = e.splat(x.elem(), 0.0, x.shape());
            let one = e.splat(x.elem(), 1.0, x.shape());
            let positive = e.compare(x, &zero, Cmp::Gt)?;
            e.select(&positive, &one, &zero)
        }
        UnaryOp::Sqrt => Ok(e.unary("sqrt", x)),
        UnaryOp::Log => Ok(e.unary("log", x)),
    }
}

/// x · mul + add.
pub(super) fn affine(e: &mut Emitter, x: &V, mul: f64, add: f64) -> R<V> {
    let y = e.binary_const("multiply", x, mul)?;
    e.binary_const("add", &y, add)
}

/// `Op::AdamWStep`: the new parameter, m and v stacked as [3, …], with the step's coefficients
/// computed from the scalar arguments lr and step in the program (so a schedule needs no
/// recompilation): decay = 1 − lr·wd, step_size = lr / (1 − β1^t), √(1 − β2^t), β^t = e^(t·ln β).
#[allow(clippy::too_many_arguments)]
pub(super) fn adamw_step(
    e: &mut Emitter,
    p: &V,
    g: &V,
    m: &V,
    v: &V,
    lr: &V,
    t: &V,
    (beta1, beta2, eps, weight_decay): (f64, f64, f64, f64),
) -> R<V> {
    let shape = p.shape().to_vec();
    let correction = |e: &mut Emitter, beta: f64| -> R<V> {
        let log = e.binary_const("multiply", t, beta.ln())?;
        let pow = e.unary("exponential", &log);
        let neg = e.binary_const("multiply", &pow, -1.0)?;
        e.binary_const("add", &neg, 1.0)
    };
    let bc1 = correction(e, beta1)?;
    let bc2 = correction(e, beta2)?;
    let sqrt_bc2 = e.unary("sqrt", &bc2);
    let step_size = e.binary("divide", lr, &bc1)?;
    let decay = e.binary_const("multiply", lr, -weight_decay)?;
    let decay = e.binary_const("add", &decay, 1.0)?;
    let (sqrt_bc2, step_size, decay) =
        (e.broadcast_to(&sqrt_bc2, &shape)?, e.broadcast_to(&step_size, &shape)?, e.broadcast_to(&decay, &shape)?);
    let m_kept = e.binary_const("multiply", m, beta1)?;
    let m_new = e.binary_const("multiply", g, 1.0 - beta1)?;
    let m2 = e.binary("add", &m_kept, &m_new)?;
    let g2 = e.binary("multiply", g, g)?;
    let v_kept = e.binary_const("multiply", v, beta2)?;
    let v_new = e.binary_const("multiply", &g2, 1.0 - beta2)?;
    let v2 = e.binary("add", &v_kept, &v_new)?;
    let root = e.unary("sqrt", &v2);
    let root = e.binary("divide", &root, &sqrt_bc2)?;
    let denom = e.binary_const("add", &root, eps)?;
    let ratio = e.binary("divide", &m2, &denom)?;
    let update = e.binary("multiply", &step_size, &ratio)?;
    let decayed = e.binary("multiply", p, &decay)?;
    let p2 = e.binary("subtract", &decayed, &update)?;
    let mut one = vec![1];
    one.extend_from_slice(&shape);
    let parts = [e.reshape(&p2, &one)?, e.reshape(&m2, &one)?, e.reshape(&v2, &one)?];
    e.concatenate(&[&parts[0], &parts[1], &parts[2]], 0)
}

/// `Op::Dropout`: the keep mask as the op defines it — MurmurHash3_x86_32 of (stream, row-major
/// index) with the scalar ui32 `seed`, on ui32 (integer ops wrap, as the formula needs) — so the
/// program drops exactly the elements the reference and every other backend drop.
pub(super) fn dropout(e: &mut Emitter, x: &V, seed: &V, p: f64, stream: u32) -> R<V> {
    let shape = x.shape().to_vec();
    let len: usize = shape.iter().product();
    if len > 1 << 32 {
        return Err(format!("dropout indexes elements in 32 bits; {len} elements is too many"));
    }
    // The first block (the stream) is a constant: hashed once, on the scalar seed.
    let stream = e.scalar(Elem::U32, stream as f64);
    let h = murmur_block(e, seed, &stream)?;
    let h = e.broadcast_to(&h, &[len])?;
    let index = e.iota(Elem::U32, &[len], 0);
    let h = murmur_block(e, &h, &index)?;
    let h = e.binary_const("xor", &h, 8.0)?;
    let h = xor_shift_right(e, &h, 16)?;
    let h = e.binary_const("multiply", &h, 0x85eb_ca6b_u32 as f64)?;
    let h = xor_shift_right(e, &h, 13)?;
    let h = e.binary_const("multiply", &h, 0xc2b2_ae35_u32 as f64)?;
    let h = xor_shift_right(e, &h, 16)?;
    let h = e.reshape(&h, &shape)?;
    // Kept iff h ≥ ⌊p·2³²⌋ (p < 1, so the threshold fits a u32), written as threshold ≤ h.
    let threshold = e.splat(Elem::U32, (p * 4_294_967_296.0).floor(), &shape);
    let keep = e.compare(&threshold, &h, Cmp::Le)?;
    let scaled = e.binary_const("multiply", x, 1.0 / (1.0 - p))?;
    let zero = e.splat(x.elem(), 0.0, &shape);
    e.select(&keep, &scaled, &zero)
}

/// One 4-byte block of MurmurHash3_x86_32's body: k = rotl(block·c1, 15)·c2; h = rotl(h ^ k, 13)·5
/// + 0xe6546b64 (`h` and `block` of one ui32 type).
fn murmur_block(e: &mut Emitter, h: &V, block: &V) -> R<V> {
    let k = e.binary_const("multiply", block, 0xcc9e_2d51_u32 as f64)?;
    let k = rotate_left(e, &k, 15)?;
    let k = e.binary_const("multiply", &k, 0x1b87_3593_u32 as f64)?;
    let h = e.binary("xor", h, &k)?;
    let h = rotate_left(e, &h, 13)?;
    let h = e.binary_const("multiply", &h, 5.0)?;
    e.binary_const("add", &h, 0xe654_6b64_u32 as f64)
}

/// (x << n) | (x >> (32 − n)) on ui32.
fn rotate_left(e: &mut Emitter, x: &V, n: u32) -> R<V> {
    let high = e.binary_const("shift_left", x, n as f64)?;
    let low = e.binary_const("shift_right_logical", x, (32 - n) as f64)?;
    e.binary("or", &high, &low)
}

/// x ^ (x >> n) on ui32.
fn xor_shift_right(e: &mut Emitter, x: &V, n: u32) -> R<V> {
    let shifted = e.binary_const("shift_right_logical", x, n as f64)?;
    e.binary("xor", x, &shifted)
}
