//! Lowering of a specialised graph to one StableHLO function: arguments, one lowering per node
//! (by op family, in the submodules), results.

mod attention;
mod cache;
mod elementwise;
mod linalg;
mod norm;

use crate::bucket::Specialised;
use crate::emit::{Elem, Emitter, Ty, V};
use crate::manifest::{Argument, ArgumentRole, Output, OutputRole};
use crate::ExportError;
use accelrt_core::{DType, Graph, Op};
use std::fmt::Write;

/// The function's text and its signature, for the manifest.
pub(crate) struct Lowered {
    pub text: String,
    pub arguments: Vec<Argument>,
    pub outputs: Vec<Output>,
}

/// The element type a value of `dtype` has in the module: f32 values are computed in `compute`.
fn elem_of(dtype: DType, compute: Elem) -> Elem {
    match dtype {
        DType::F32 | DType::Quant(_) => compute,
        DType::F16 => Elem::F16,
        DType::BF16 => Elem::BF16,
        DType::I64 => Elem::I64,
        DType::U32 => Elem::U32,
        DType::U8 => Elem::U8,
    }
}

/// The exact element type of `dtype` (for the function's edges).
fn exact_elem(dtype: DType) -> Elem {
    elem_of(dtype, Elem::F32)
}

fn dtype_of(elem: Elem) -> DType {
    match elem {
        Elem::F32 => DType::F32,
        Elem::F16 => DType::F16,
        Elem::BF16 => DType::BF16,
        Elem::I64 => DType::I64,
        Elem::U32 => DType::U32,
        Elem::U8 => DType::U8,
        Elem::I32 | Elem::I1 => unreachable!("never at the function's edges"),
    }
}

/// Lowers `spec` (the specialisation of `original`) computing f32 values in `compute`.
pub(crate) fn lower(original: &Graph, spec: &Specialised, compute: DType) -> Result<Lowered, ExportError> {
    let compute = exact_elem(compute);
    let graph = &spec.graph;
    let mut e = Emitter::default();
    let mut values: Vec<Option<V>> = vec![None; graph.nodes().len()];
    let mut params: Vec<V> = Vec::new();
    let mut arguments = Vec::new();
    let mut param = |ty: Ty| -> V {
        let v = V { name: format!("%arg{}", params.len()), ty };
        params.push(v.clone());
        v
    };

    // Arguments: inputs, then weights, then one cache per KvCache node, each in graph order.
    for (id, node) in graph.inputs() {
        let arg = param(Ty::new(exact_elem(node.dtype), &spec.shapes[id.index()]));
        arguments.push(Argument {
            name: node.name.clone(),
            dtype: node.dtype,
            shape: arg.shape().to_vec(),
            role: ArgumentRole::Input,
        });
        values[id.index()] = Some(arg);
    }
    for (id, node) in graph.weights() {
        let elem = elem_of(node.dtype, compute);
        let arg = param(Ty::new(elem, &spec.shapes[id.index()]));
        let source_dtype = original.node(id).dtype;
        arguments.push(Argument {
            name: node.name.clone(),
            dtype: dtype_of(elem),
            shape: arg.shape().to_vec(),
            role: ArgumentRole::Weight { weight: node.name.clone(), source_dtype },
        });
        values[id.index()] = Some(arg);
    }
    let mut caches: Vec<(usize, V)> = Vec::new();
    for (index, node) in graph.nodes().iter().enumerate() {
        if let Op::KvCache { x, capacity, .. } = node.op {
            let xs = &spec.shapes[x.index()];
            let elem = elem_of(node.dtype, compute);
            let arg = param(Ty::new(elem, &[spec.slots, xs[1], capacity, xs[3]]));
            arguments.push(Argument {
                name: node.name.clone(),
                dtype: dtype_of(elem),
                shape: arg.shape().to_vec(),
                role: ArgumentRole::State { cache: node.name.clone() },
            });
            caches.push((index, arg));
        }
    }
    // Variables (training state): exact dtype at the edge, like weights; their values persist
    // between runs as the caches' do, so each is aliased to its next value below.
    let mut variables: Vec<(usize, V)> = Vec::new();
    for (index, node) in graph.nodes().iter().enumerate() {
        if let Op::Variable { init, .. } = node.op {
            let arg = param(Ty::new(exact_elem(node.dtype), &spec.shapes[index]));
            arguments.push(Argument {
                name: node.name.clone(),
                dtype: node.dtype,
                shape: arg.shape().to_vec(),
                role: ArgumentRole::Variable { variable: node.name.clone(), init },
            });
            variables.push((index, arg));
        }
    }
    let cache_params: Vec<String> = caches.iter().map(|(_, v)| v.name.clone()).collect();
    let variable_params: Vec<String> = variables.iter().map(|(_, v)| v.name.clone()).collect();
    for (index, arg) in &variables {
        values[*index] = Some(e.convert(arg, elem_of(graph.nodes()[*index].dtype, compute)));
    }
    // Inputs enter at their exact types; f32 ones are computed in `compute` from here on.
    for (id, node) in graph.inputs() {
        let v = values[id.index()].take().expect("set above");
        values[id.index()] = Some(e.convert(&v, elem_of(node.dtype, compute)));
    }

    // Which values depend on a cache's contents (and so have its capacity where the graph says kv_len).
    let mut from_cache = vec![false; graph.nodes().len()];
    for (index, node) in graph.nodes().iter().enumerate() {
        from_cache[index] =
            matches!(node.op, Op::KvCache { .. }) || node.op.operands().iter().any(|id| from_cache[id.index()]);
        if matches!(node.op, Op::Input { .. } | Op::Weight { .. } | Op::Variable { .. }) {
            continue;
        }
        e.comment(&format!("{} `{}`", node.op.kind(), node.name));
        let want = Ty::new(elem_of(node.dtype, compute), &spec.shapes[index]);
        let unsupported =
            |reason: String| ExportError::Unsupported { node: node.name.clone(), kind: node.op.kind(), reason };
        check_static(&node.op, &from_cache).map_err(unsupported)?;
        let get = |id: accelrt_core::ValueId| values[id.index()].clone().expect("operands precede their users");
        let v = match &node.op {
            Op::KvCache { x, positions, slots, .. } => {
                let slot = caches.iter().position(|(i, _)| *i == index).expect("one cache per KvCache node");
                let (out, updated) = cache::kv_cache(&mut e, &get(*x), &get(*positions), &get(*slots), &caches[slot].1)
                    .map_err(unsupported)?;
                caches[slot].1 = updated;
                out
            }
            Op::Assign { var, value } => {
                // The variable's next value, at its exact type (the function's result).
                let slot = variables.iter().position(|(i, _)| *i == var.index()).expect("Assign targets a Variable");
                let dtype = graph.node(*var).dtype;
                variables[slot].1 = e.convert(&get(*value), exact_elem(dtype));
                get(*value)
            }
            op => lower_op(&mut e, op, &get, &want).map_err(unsupported)?,
        };
        if v.ty != want {
            return Err(unsupported(format!("lowered to {} where the graph says {want}", v.ty)));
        }
        values[index] = Some(v);
    }

    // Results: graph outputs at their exact types, then the updated caches.
    let mut results: Vec<V> = Vec::new();
    let mut outputs = Vec::new();
    for (name, id) in graph.outputs() {
        let node = graph.node(*id);
        let v = values[id.index()].clone().expect("every node lowered");
        let v = e.convert(&v, exact_elem(node.dtype));
        outputs.push(Output {
            name: name.clone(),
            dtype: node.dtype,
            shape: v.shape().to_vec(),
            role: OutputRole::Output,
        });
        results.push(v);
    }
    for (index, v) in &caches {
        let name = graph.nodes()[*index].name.clone();
        outputs.push(Output {
            name: name.clone(),
            dtype: dtype_of(v.elem()),
            shape: v.shape().to_vec(),
            role: OutputRole::State { cache: name },
        });
        results.push(v.clone());
    }
    for (index, v) in &variables {
        let name = graph.nodes()[*index].name.clone();
        outputs.push(Output {
            name: name.clone(),
            dtype: dtype_of(v.elem()),
            shape: v.shape().to_vec(),
            role: OutputRole::Variable { variable: name },
        });
        results.push(v.clone());
    }

    let mut text = String::new();
    // Each cache parameter is aliased to its updated cache (`tf.aliasing_output`, which XLA's
    // MLIR-to-HLO conversion turns into the module's input_output_alias): a runtime that donates
    // the cache gets the update written in place instead of a copy of every cache per step.
    // Variables are aliased the same way: the optimiser's update is written over the parameter.
    let first_state_output = results.len() - caches.len() - variables.len();
    let state_params = cache_params.iter().chain(&variable_params);
    let aliased: Vec<&String> = state_params.collect();
    let signature: Vec<String> = params
        .iter()
        .map(|p| match aliased.iter().position(|name| **name == p.name) {
            Some(k) => format!("{}: {} {{tf.aliasing_output = {} : i32}}", p.name, p.ty, first_state_output + k),
            None => format!("{}: {}", p.name, p.ty),
        })
        .collect();
    let result_types: Vec<String> = results.iter().map(|r| r.ty.to_string()).collect();
    let result_names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
    let _ = writeln!(text, "module {{");
    let _ = writeln!(text, "  func.func public @main({}) -> ({}) {{", signature.join(", "), result_types.join(", "));
    text.push_str(e.body());
    let _ = writeln!(text, "    func.return {} : {}", result_names.join(", "), result_types.join(", "));
    let _ = writeln!(text, "  }}");
    let _ = writeln!(text, "}}");
    Ok(Lowered { text, arguments, outputs })
}

/// Refuses what a static-shape program cannot express with the reference's meaning.
fn check_static(op: &Op, from_cache: &[bool]) -> Result<(), String> {
    if let Op::Attention { k, mask, causal, q_positions: None, .. } = op {
        // Keys from a cache are exported at the full capacity: which of them a query may see must
        // come from its position (or a padding mask), never from the cache's length.
        if from_cache[k.index()] && (*causal || mask.is_none()) {
            return Err(format!(
                "attention over a KV cache is exported at the cache's capacity, so it needs q_positions{}",
                if *causal { " (causal masking by kv_len cannot be kept)" } else { " or a padding mask" }
            ));
        }
    }
    Ok(())
}

/// Lowers one op that is not a cache; `want` is the type the graph declares for its value.
fn lower_op(e: &mut Emitter, op: &Op, get: &dyn Fn(accelrt_core::ValueId) -> V, want: &Ty) -> Result<V, String> {
    Ok(match op {
        Op::Input { .. } | Op::Weight { .. } | Op::KvCache { .. } => unreachable!("handled by the caller"),
        Op::Variable { .. } | Op::Assign { .. } => unreachable!("handled by the caller"),
        Op::Embedding { table, ids } => linalg::embedding(e, &get(*table), &get(*ids)),
        Op::MatMul { a, b, transpose_b } => linalg::matmul(e, &get(*a), &get(*b), *transpose_b, &want.shape)?,
        Op::Linear { x, weight, bias } => linalg::linear(e, &get(*x), &get(*weight), bias.map(get).as_ref())?,
        Op::Binary { op, a, b } => elementwise::binary(e, *op, &get(*a), &get(*b), &want.shape)?,
        Op::Unary { op, x } => elementwise::unary(e, *op, &get(*x))?,
        Op::Affine { x, mul, add } => elementwise::affine(e, &get(*x), *mul, *add)?,
        Op::Cast { x, .. } => e.convert(&get(*x), want.elem),
        Op::LayerNorm { x, gamma, beta, eps } => {
            norm::layer_norm(e, &get(*x), &get(*gamma), beta.map(get).as_ref(), *eps)?
        }
        Op::RmsNorm { x, gamma, eps } => norm::rms_norm(e, &get(*x), &get(*gamma), *eps)?,
        Op::Softmax { x } => norm::softmax(e, &get(*x))?,
        Op::L2Normalize { x, eps } => norm::l2_normalize(e, &get(*x), *eps)?,
        Op::MeanPool { x, mask } => norm::mean_pool(e, &get(*x), &get(*mask))?,
        Op::Attention { q, k, v, mask, causal, scale, q_positions } => {
            let visibility = match q_positions {
                Some(p) => attention::Visibility::Positions(get(*p)),
                None if *causal => attention::Visibility::Causal,
                None => attention::Visibility::All,
            };
            attention::attention(e, &get(*q), &get(*k), &get(*v), mask.map(get).as_ref(), &visibility, *scale)?
        }
        Op::Rope { x, positions, base, style } => attention::rope(e, &get(*x), &get(*positions), *base, *style)?,
        Op::Reshape { x, .. } => e.reshape(&get(*x), &want.shape)?,
        Op::Permute { x, perm } => e.transpose(&get(*x), perm),
        Op::Slice { x, axis, start, end } => {
            let x = get(*x);
            let end = end.unwrap_or(x.shape()[*axis]);
            e.slice_axis(&x, *axis, *start, end)
        }
        Op::Concat { xs, axis } => {
            let xs: Vec<V> = xs.iter().map(|x| get(*x)).collect();
            e.concatenate(&xs.iter().collect::<Vec<_>>(), *axis)?
        }
        Op::TakeLast { x, axis } => {
            let x = get(*x);
            let size = x.shape()[*axis];
            if size == 0 {
                return Err(format!("axis {axis} is empty"));
            }
            e.slice_axis(&x, *axis, size - 1, size)
        }
        Op::Positions { .. } => e.iota(Elem::U32, &want.shape, 0),
        Op::ReduceSum { x, axes, keep_dims } => norm::reduce_sum(e, &get(*x), axes, *keep_dims)?,
        Op::AdamWStep { param, grad, m, v, lr, step, beta1, beta2, eps, weight_decay } => elementwise::adamw_step(
            e,
            &get(*param),
            &get(*grad),
            &get(*m),
            &get(*v),
            &get(*lr),
            &get(*step),
            (*beta1, *beta2, *eps, *weight_decay),
        )?,
        Op::Dropout { x, seed, p, stream } => elementwise::dropout(e, &get(*x), &get(*seed), *p, *stream)?,
        Op::LogSoftmax { x } => norm::log_softmax(e, &get(*x))?,
        Op::OneHot { ids, depth, .. } => linalg::one_hot(e, &get(*ids), *depth, want.elem)?,
        Op::IndexAdd { ids, src, rows } => linalg::index_add(e, &get(*ids), &get(*src), *rows)?,
        Op::AttentionProbs { q, k, mask, causal, scale, q_positions } => {
            let visibility = match q_positions {
                Some(p) => attention::Visibility::Positions(get(*p)),
                None if *causal => attention::Visibility::Causal,
                None => attention::Visibility::All,
            };
            attention::attention_probs(e, &get(*q), &get(*k), mask.map(get).as_ref(), &visibility, *scale)?
        }
    })
}
