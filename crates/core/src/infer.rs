//! Shape and dtype inference. Fixed sizes are checked when the graph is built; symbolic sizes are
//! checked by the evaluators when the graph runs.

use crate::graph::Node;
use crate::{DType, Dim, Error, Op, ReshapeDim, Result, Shape, ValueId};

/// The symbol for the length of the cached sequence a `KvCache` yields (shared by every cache of a
/// graph: all are written at the same positions in a step).
pub const KV_LEN: &str = "kv_len";

/// Infers the dtype and shape a node produces from its operands (which must precede it).
pub(crate) fn infer(name: &str, op: &Op, earlier: &[Node]) -> Result<(DType, Shape)> {
    let fail = |msg: String| Error::node(name, msg);
    for id in op.operands() {
        if id.index() >= earlier.len() {
            return Err(fail(format!("operand {} does not refer to an earlier node", id.0)));
        }
    }
    let get = |id: ValueId| -> &Node { &earlier[id.index()] };
    // A dimension the graph cannot know before running (e.g. the result of an inferred reshape).
    let derived = |axis: usize| Dim::Sym(format!("{name}:{axis}"));

    let float_of = |id: ValueId, what: &str| -> Result<DType> {
        let n = get(id);
        if n.dtype.is_float() {
            Ok(n.dtype)
        } else {
            Err(fail(format!("{what} `{}` must be floating point, not {}", n.name, n.dtype)))
        }
    };
    let int_of = |id: ValueId, what: &str| -> Result<()> {
        let n = get(id);
        if n.dtype.is_int() {
            Ok(())
        } else {
            Err(fail(format!("{what} `{}` must be integer, not {}", n.name, n.dtype)))
        }
    };
    let rank_is = |id: ValueId, ranks: &[usize], what: &str| -> Result<&Shape> {
        let n = get(id);
        if ranks.contains(&n.shape.rank()) {
            Ok(&n.shape)
        } else {
            Err(fail(format!("{what} `{}` must have rank {ranks:?}, has shape {}", n.name, n.shape)))
        }
    };
    let same_dim = |a: &Dim, b: &Dim, what: &str| -> Result<()> {
        if a.compatible(b) {
            Ok(())
        } else {
            Err(fail(format!("{what}: {a} vs {b}")))
        }
    };
    // A per-feature parameter (norm gain, bias) must be a vector matching the last axis of x.
    let feature_vector = |param: ValueId, x_shape: &Shape, what: &str| -> Result<()> {
        let p = rank_is(param, &[1], what)?;
        same_dim(&p.0[0], x_shape.0.last().unwrap_or(&Dim::Fixed(1)), &format!("{what} size vs last axis"))
    };

    // What Attention and AttentionProbs both require of q [batch, heads, seq, d] and k
    // [batch, kv heads, kv_len, d], the mask, the query positions and the scale.
    let check_attention = |qs: &Shape,
                           ks: &Shape,
                           mask: Option<ValueId>,
                           q_positions: Option<ValueId>,
                           causal: bool,
                           scale: f64|
     -> Result<()> {
        same_dim(&qs.0[3], &ks.0[3], "head size of q vs k")?;
        if let (Some(hq), Some(hkv)) = (qs.0[1].fixed(), ks.0[1].fixed()) {
            if hkv == 0 || hq % hkv != 0 {
                return Err(fail(format!("q heads ({hq}) must be a multiple of kv heads ({hkv})")));
            }
        }
        if let Some(m) = mask {
            let ms = rank_is(m, &[2], "mask")?;
            same_dim(&ms.0[0], &qs.0[0], "mask batch")?;
            same_dim(&ms.0[1], &ks.0[2], "mask length vs kv length")?;
        }
        if let Some(p) = q_positions {
            int_of(p, "q_positions")?;
            let ps = rank_is(p, &[2], "q_positions")?;
            same_dim(&ps.0[0], &qs.0[0], "q_positions batch")?;
            same_dim(&ps.0[1], &qs.0[2], "q_positions length vs query length")?;
            if causal {
                return Err(fail("`causal` and `q_positions` are two ways to mask the future; give one".into()));
            }
        }
        if !scale.is_finite() {
            return Err(fail(format!("scale must be finite, got {scale}")));
        }
        Ok(())
    };

    Ok(match op {
        Op::Input { dtype, shape } => {
            if let DType::Quant(_) = dtype {
                return Err(fail("inputs cannot be block-quantised".into()));
            }
            (*dtype, shape.clone())
        }
        Op::Weight { dtype, shape } => {
            if shape.concrete().is_none() {
                return Err(fail(format!("weights need fixed shapes, got {shape}")));
            }
            (*dtype, shape.clone())
        }
        Op::Variable { dtype, shape, .. } => {
            if shape.concrete().is_none() || !dtype.is_float() {
                return Err(fail(format!("variables need a fixed shape and a float dtype, got {dtype} {shape}")));
            }
            (*dtype, shape.clone())
        }
        Op::Assign { var, value } => {
            let (v, x) = (get(*var), get(*value));
            if !matches!(v.op, Op::Variable { .. }) {
                return Err(fail(format!("`{}` is not a variable", v.name)));
            }
            if v.dtype != x.dtype
                || v.shape.rank() != x.shape.rank()
                || !v.shape.0.iter().zip(&x.shape.0).all(|(a, b)| a.compatible(b))
            {
                return Err(fail(format!(
                    "value {} {} does not fit variable `{}` ({} {})",
                    x.dtype, x.shape, v.name, v.dtype, v.shape
                )));
            }
            if earlier.iter().any(|n| matches!(n.op, Op::Assign { var: other, .. } if other == *var)) {
                return Err(fail(format!("variable `{}` is assigned more than once", v.name)));
            }
            (v.dtype, v.shape.clone())
        }
        Op::AdamWStep { param, grad, m, v, lr, step, beta1, beta2, eps, weight_decay } => {
            let p = get(*param);
            float_of(*param, "param")?;
            for (id, what) in [(*grad, "grad"), (*m, "m"), (*v, "v")] {
                let n = get(id);
                let fits = n.dtype == p.dtype
                    && n.shape.rank() == p.shape.rank()
                    && n.shape.0.iter().zip(&p.shape.0).all(|(a, b)| a.compatible(b));
                if !fits {
                    return Err(fail(format!(
                        "{what} `{}` ({} {}) must match param ({} {})",
                        n.name, n.dtype, n.shape, p.dtype, p.shape
                    )));
                }
            }
            for (id, what) in [(*lr, "lr"), (*step, "step")] {
                if get(id).shape.rank() != 0 || float_of(id, what)? != p.dtype {
                    return Err(fail(format!("{what} must be a scalar of the param's dtype {}", p.dtype)));
                }
            }
            let ok = |b: f64| b.is_finite() && (0.0..1.0).contains(&b);
            if !(ok(*beta1) && ok(*beta2) && eps.is_finite() && *eps >= 0.0 && weight_decay.is_finite()) {
                return Err(fail(format!(
                    "AdamW needs 0 ≤ β < 1, eps ≥ 0: β1 {beta1}, β2 {beta2}, eps {eps}, wd {weight_decay}"
                )));
            }
            let mut shape = vec![Dim::Fixed(3)];
            shape.extend(p.shape.0.iter().cloned());
            (p.dtype, Shape(shape))
        }
        Op::Embedding { table, ids } => {
            let t = rank_is(*table, &[2], "table")?;
            int_of(*ids, "ids")?;
            let dtype = match get(*table).dtype {
                DType::Quant(_) => DType::F32,
                d if d.is_float() => d,
                d => return Err(fail(format!("table must be floating point or quantised, not {d}"))),
            };
            let mut shape = get(*ids).shape.clone();
            shape.0.push(t.0[1].clone());
            (dtype, shape)
        }
        Op::MatMul { a, b, transpose_b } => {
            let da = float_of(*a, "a")?;
            let db = float_of(*b, "b")?;
            if da != db {
                return Err(fail(format!("operand dtypes differ: {da} vs {db}")));
            }
            let sa = &get(*a).shape;
            let sb = &get(*b).shape;
            if sa.rank() < 2 || sb.rank() < 2 {
                return Err(fail(format!("matmul needs rank ≥ 2, got {sa} and {sb}")));
            }
            let (m, k) = (&sa.0[sa.rank() - 2], &sa.0[sa.rank() - 1]);
            let (kb, n) = if *transpose_b {
                (&sb.0[sb.rank() - 1], &sb.0[sb.rank() - 2])
            } else {
                (&sb.0[sb.rank() - 2], &sb.0[sb.rank() - 1])
            };
            same_dim(k, kb, "contraction sizes differ")?;
            let batch = broadcast(&Shape(sa.0[..sa.rank() - 2].to_vec()), &Shape(sb.0[..sb.rank() - 2].to_vec()))
                .map_err(|m| fail(format!("batch axes: {m}")))?;
            let mut shape = batch.0;
            shape.push(m.clone());
            shape.push(n.clone());
            (da, Shape(shape))
        }
        Op::Linear { x, weight, bias } => {
            let dx = float_of(*x, "x")?;
            let w = get(*weight);
            if !(w.dtype.is_float() || matches!(w.dtype, DType::Quant(_))) {
                return Err(fail(format!("weight must be floating point or quantised, not {}", w.dtype)));
            }
            let ws = rank_is(*weight, &[2], "weight")?;
            let xs = &get(*x).shape;
            if xs.rank() == 0 {
                return Err(fail("x must have at least one axis".into()));
            }
            same_dim(&xs.0[xs.rank() - 1], &ws.0[1], "input features vs weight [out, in]")?;
            if let Some(b) = bias {
                let bs = rank_is(*b, &[1], "bias")?;
                same_dim(&bs.0[0], &ws.0[0], "bias size vs output features")?;
            }
            let mut shape = xs.0.clone();
            *shape.last_mut().expect("rank checked") = ws.0[0].clone();
            (dx, Shape(shape))
        }
        Op::Binary { a, b, .. } => {
            let (na, nb) = (get(*a), get(*b));
            if na.dtype != nb.dtype || matches!(na.dtype, DType::Quant(_)) {
                return Err(fail(format!("operand dtypes must match: {} vs {}", na.dtype, nb.dtype)));
            }
            let shape = broadcast(&na.shape, &nb.shape).map_err(fail)?;
            (na.dtype, shape)
        }
        Op::Unary { x, .. } | Op::Affine { x, .. } | Op::Softmax { x } => (float_of(*x, "x")?, get(*x).shape.clone()),
        Op::LogSoftmax { x } => {
            let d = float_of(*x, "x")?;
            if get(*x).shape.rank() == 0 {
                return Err(fail("log_softmax needs at least one axis".into()));
            }
            (d, get(*x).shape.clone())
        }
        Op::ReduceSum { x, axes, keep_dims } => {
            let d = float_of(*x, "x")?;
            let xs = &get(*x).shape;
            if axes.windows(2).any(|w| w[0] >= w[1]) || axes.iter().any(|&a| a >= xs.rank()) {
                return Err(fail(format!("axes {axes:?} must be ascending, distinct and below the rank of {xs}")));
            }
            let mut shape = Vec::with_capacity(xs.rank());
            for (i, dim) in xs.0.iter().enumerate() {
                match (axes.contains(&i), keep_dims) {
                    (false, _) => shape.push(dim.clone()),
                    (true, true) => shape.push(Dim::Fixed(1)),
                    (true, false) => {}
                }
            }
            (d, Shape(shape))
        }
        Op::OneHot { ids, depth, dtype } => {
            int_of(*ids, "ids")?;
            if !dtype.is_float() {
                return Err(fail(format!("one-hot rows must be floating point, not {dtype}")));
            }
            if *depth == 0 {
                return Err(fail("one-hot depth must be at least 1".into()));
            }
            let mut shape = get(*ids).shape.clone();
            shape.0.push(Dim::Fixed(*depth));
            (*dtype, shape)
        }
        Op::IndexAdd { ids, src, rows } => {
            int_of(*ids, "ids")?;
            let d = float_of(*src, "src")?;
            let (is, ss) = (&get(*ids).shape, &get(*src).shape);
            if ss.rank() != is.rank() + 1 {
                return Err(fail(format!("src {ss} must be ids' shape {is} plus one axis")));
            }
            for (i, (a, b)) in is.0.iter().zip(&ss.0).enumerate() {
                same_dim(a, b, &format!("axis {i} of ids vs src"))?;
            }
            if *rows == 0 {
                return Err(fail("index_add needs at least one row".into()));
            }
            (d, Shape(vec![Dim::Fixed(*rows), ss.0[ss.rank() - 1].clone()]))
        }
        Op::AttentionProbs { q, k, mask, causal, scale, q_positions } => {
            let d = float_of(*q, "q")?;
            if float_of(*k, "k")? != d {
                return Err(fail(format!("k must have q's dtype {d}")));
            }
            let qs = rank_is(*q, &[4], "q")?;
            let ks = rank_is(*k, &[4], "k")?;
            same_dim(&qs.0[0], &ks.0[0], "batch of q vs k")?;
            check_attention(qs, ks, *mask, *q_positions, *causal, *scale)?;
            (d, Shape(vec![qs.0[0].clone(), qs.0[1].clone(), qs.0[2].clone(), ks.0[2].clone()]))
        }
        Op::Dropout { x, seed, p, .. } => {
            let d = float_of(*x, "x")?;
            let s = get(*seed);
            if s.dtype != DType::U32 || s.shape.rank() != 0 {
                return Err(fail(format!(
                    "seed `{}` must be a u32 scalar (shape []), not {} {}",
                    s.name, s.dtype, s.shape
                )));
            }
            if !(0.0..1.0).contains(p) {
                return Err(fail(format!("dropout probability must be in [0, 1), got {p}")));
            }
            (d, get(*x).shape.clone())
        }
        Op::LayerNorm { x, gamma, beta, eps } => {
            let d = float_of(*x, "x")?;
            let xs = &get(*x).shape;
            feature_vector(*gamma, xs, "gamma")?;
            if let Some(b) = beta {
                feature_vector(*b, xs, "beta")?;
            }
            check_eps(*eps).map_err(fail)?;
            (d, xs.clone())
        }
        Op::RmsNorm { x, gamma, eps } => {
            let d = float_of(*x, "x")?;
            let xs = &get(*x).shape;
            feature_vector(*gamma, xs, "gamma")?;
            check_eps(*eps).map_err(fail)?;
            (d, xs.clone())
        }
        Op::L2Normalize { x, eps } => {
            check_eps(*eps).map_err(fail)?;
            (float_of(*x, "x")?, get(*x).shape.clone())
        }
        Op::Attention { q, k, v, mask, scale, q_positions, causal } => {
            let d = float_of(*q, "q")?;
            for (id, what) in [(*k, "k"), (*v, "v")] {
                if float_of(id, what)? != d {
                    return Err(fail(format!("{what} must have q's dtype {d}")));
                }
            }
            let qs = rank_is(*q, &[4], "q")?;
            let ks = rank_is(*k, &[4], "k")?;
            let vs = rank_is(*v, &[4], "v")?;
            same_dim(&qs.0[0], &ks.0[0], "batch of q vs k")?;
            same_dim(&ks.0[0], &vs.0[0], "batch of k vs v")?;
            same_dim(&ks.0[1], &vs.0[1], "heads of k vs v")?;
            same_dim(&ks.0[2], &vs.0[2], "kv length of k vs v")?;
            check_attention(qs, ks, *mask, *q_positions, *causal, *scale)?;
            (d, Shape(vec![qs.0[0].clone(), qs.0[1].clone(), qs.0[2].clone(), vs.0[3].clone()]))
        }
        Op::Rope { x, positions, base, .. } => {
            let d = float_of(*x, "x")?;
            let xs = rank_is(*x, &[4], "x")?;
            int_of(*positions, "positions")?;
            let ps = rank_is(*positions, &[1, 2], "positions")?;
            same_dim(ps.0.last().expect("rank ≥ 1"), &xs.0[2], "positions length vs sequence")?;
            if ps.rank() == 2 {
                same_dim(&ps.0[0], &xs.0[0], "positions batch")?;
            }
            if let Some(h) = xs.0[3].fixed() {
                if h % 2 != 0 {
                    return Err(fail(format!("head size must be even for rotary embedding, got {h}")));
                }
            }
            if !(base.is_finite() && *base > 1.0) {
                return Err(fail(format!("rope base must be > 1, got {base}")));
            }
            (d, xs.clone())
        }
        Op::Reshape { x, dims } => {
            let n = get(*x);
            if dims.iter().filter(|d| matches!(d, ReshapeDim::Infer)).count() > 1 {
                return Err(fail("at most one reshape dimension can be inferred".into()));
            }
            let mut out = Vec::with_capacity(dims.len());
            for (axis, d) in dims.iter().enumerate() {
                out.push(match d {
                    ReshapeDim::Keep(i) => n
                        .shape
                        .0
                        .get(*i)
                        .cloned()
                        .ok_or_else(|| fail(format!("keeps input axis {i} but input has shape {}", n.shape)))?,
                    ReshapeDim::Fixed(s) => Dim::Fixed(*s),
                    ReshapeDim::Infer => derived(axis),
                });
            }
            // With a fully known input, check the element count (and resolve the inferred axis).
            if let Some(total) = n.shape.concrete().map(|s| s.iter().product::<usize>()) {
                let known: Option<usize> = dims
                    .iter()
                    .zip(&out)
                    .filter(|(d, _)| !matches!(d, ReshapeDim::Infer))
                    .map(|(_, o)| o.fixed())
                    .product();
                if let Some(known) = known {
                    match dims.iter().position(|d| matches!(d, ReshapeDim::Infer)) {
                        Some(axis) if known > 0 && total % known == 0 => out[axis] = Dim::Fixed(total / known),
                        None if known == total => {}
                        _ => return Err(fail(format!("cannot reshape {} ({total} elements) to {dims:?}", n.shape))),
                    }
                }
            }
            (n.dtype, Shape(out))
        }
        Op::Permute { x, perm } => {
            let n = get(*x);
            let mut seen = vec![false; n.shape.rank()];
            if perm.len() != n.shape.rank()
                || !perm.iter().all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true))
            {
                return Err(fail(format!("{perm:?} is not a permutation of the axes of {}", n.shape)));
            }
            (n.dtype, Shape(perm.iter().map(|&p| n.shape.0[p].clone()).collect()))
        }
        Op::Slice { x, axis, start, end } => {
            let n = get(*x);
            let dim = n.shape.0.get(*axis).ok_or_else(|| fail(format!("axis {axis} out of range for {}", n.shape)))?;
            let size = match (end, dim.fixed()) {
                (Some(e), _) if e < start => return Err(fail(format!("slice end {e} before start {start}"))),
                (Some(e), Some(d)) if *e > d => return Err(fail(format!("slice end {e} past size {d}"))),
                (None, Some(d)) if *start > d => return Err(fail(format!("slice start {start} past size {d}"))),
                (Some(e), _) => Dim::Fixed(e - start),
                (None, Some(d)) => Dim::Fixed(d - start),
                (None, None) if *start == 0 => dim.clone(),
                (None, None) => derived(*axis),
            };
            let mut shape = n.shape.clone();
            shape.0[*axis] = size;
            (n.dtype, shape)
        }
        Op::Concat { xs, axis } => {
            let first = get(*xs.first().ok_or_else(|| fail("concat of nothing".into()))?);
            if *axis >= first.shape.rank() {
                return Err(fail(format!("axis {axis} out of range for {}", first.shape)));
            }
            let mut total = Some(0usize);
            for id in xs {
                let n = get(*id);
                if n.dtype != first.dtype || n.shape.rank() != first.shape.rank() {
                    return Err(fail(format!(
                        "operand `{}` ({} {}) differs from `{}` ({} {})",
                        n.name, n.dtype, n.shape, first.name, first.dtype, first.shape
                    )));
                }
                for (i, (a, b)) in n.shape.0.iter().zip(&first.shape.0).enumerate() {
                    if i != *axis {
                        same_dim(a, b, &format!("axis {i} of `{}`", n.name))?;
                    }
                }
                total = total.zip(n.shape.0[*axis].fixed()).map(|(t, s)| t + s);
            }
            let mut shape = first.shape.clone();
            shape.0[*axis] = total.map(Dim::Fixed).unwrap_or_else(|| derived(*axis));
            (first.dtype, shape)
        }
        Op::MeanPool { x, mask } => {
            let d = float_of(*x, "x")?;
            let xs = rank_is(*x, &[3], "x")?;
            let ms = rank_is(*mask, &[2], "mask")?;
            same_dim(&ms.0[0], &xs.0[0], "mask batch")?;
            same_dim(&ms.0[1], &xs.0[1], "mask length vs sequence")?;
            (d, Shape(vec![xs.0[0].clone(), xs.0[2].clone()]))
        }
        Op::Cast { x, dtype } => {
            if matches!(dtype, DType::Quant(_)) || matches!(get(*x).dtype, DType::Quant(_)) {
                return Err(fail(
                    "cast to or from block-quantised types is not an op; weights are dequantised by backends".into(),
                ));
            }
            (*dtype, get(*x).shape.clone())
        }
        Op::KvCache { x, positions, slots, capacity } => {
            let d = float_of(*x, "x")?;
            let xs = rank_is(*x, &[4], "x")?;
            int_of(*positions, "positions")?;
            int_of(*slots, "slots")?;
            let ps = rank_is(*positions, &[2], "positions")?;
            let ss = rank_is(*slots, &[1], "slots")?;
            same_dim(&ps.0[0], &xs.0[0], "positions batch")?;
            same_dim(&ps.0[1], &xs.0[2], "positions length vs new entries")?;
            same_dim(&ss.0[0], &xs.0[0], "slots batch")?;
            if *capacity == 0 {
                return Err(fail("cache capacity must be at least 1".into()));
            }
            if let Some(n) = xs.0[2].fixed() {
                if n > *capacity {
                    return Err(fail(format!("{n} new entries exceed the cache capacity {capacity}")));
                }
            }
            (d, Shape(vec![xs.0[0].clone(), xs.0[1].clone(), Dim::sym(KV_LEN), xs.0[3].clone()]))
        }
        Op::TakeLast { x, axis } => {
            let n = get(*x);
            if *axis >= n.shape.rank() {
                return Err(fail(format!("axis {axis} out of range for {}", n.shape)));
            }
            if matches!(n.dtype, DType::Quant(_)) {
                return Err(fail("x cannot be block-quantised".into()));
            }
            let mut shape = n.shape.clone();
            shape.0[*axis] = Dim::Fixed(1);
            (n.dtype, shape)
        }
        Op::Positions { like, axis } => {
            let n = get(*like);
            let dim = n.shape.0.get(*axis).ok_or_else(|| fail(format!("axis {axis} out of range for {}", n.shape)))?;
            (DType::U32, Shape(vec![dim.clone()]))
        }
    })
}

fn check_eps(eps: f64) -> Result<(), String> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(format!("eps must be finite and ≥ 0, got {eps}"))
    }
}

/// NumPy broadcasting of two shapes.
pub(crate) fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let at = |s: &Shape, i: usize| -> Dim {
        let offset = rank - s.rank();
        if i < offset {
            Dim::Fixed(1)
        } else {
            s.0[i - offset].clone()
        }
    };
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let (x, y) = (at(a, i), at(b, i));
        out.push(match (&x, &y) {
            (Dim::Fixed(1), _) => y,
            (_, Dim::Fixed(1)) => x,
            (Dim::Fixed(p), Dim::Fixed(q)) if p != q => {
                return Err(format!("shapes {a} and {b} do not broadcast (axis {i}: {p} vs {q})"))
            }
            (Dim::Sym(_), Dim::Fixed(_)) => y,
            _ => x,
        });
    }
    Ok(Shape(out))
}
