//! Mixed precision as a graph pass: the matrix products run in a lower float dtype, everything
//! else stays in the graph's own.
//!
//! This is the policy of `torch.autocast(dtype=torch.bfloat16)`: linear layers, matmuls and
//! attention — where the arithmetic is, and where tensor engines (Trainium's, tensor cores, AMX)
//! compute in bf16 — take bf16 operands; norms, softmax, reductions and losses keep f32, where
//! bf16's 8-bit mantissa would lose the sums. Each product's result is cast back, so the rest of
//! the graph sees exactly the dtypes it was built with, and the backward pass (the gradient of
//! `Op::Cast` casts the gradient back) runs the same products in bf16 and everything else in f32.
//! [`crate::training::training_graph`] applies it when `TrainingConfig::mixed_precision` is set,
//! which keeps the parameters, their gradients' sums and the optimiser in f32 (master weights).

use crate::{DType, GraphBuilder, Op, Result, ValueId};
use std::collections::HashMap;

/// Whether autocast runs `op` in the low dtype: `Linear`, `MatMul`, `Attention` and
/// `AttentionProbs` (autocast's lower-precision list: `linear`, `matmul`/`bmm`,
/// `scaled_dot_product_attention`).
pub fn runs_low(op: &Op) -> bool {
    matches!(op, Op::Linear { .. } | Op::MatMul { .. } | Op::Attention { .. } | Op::AttentionProbs { .. })
}

/// Adds `op` under `name`, computing in `low`: each float operand is cast to `low` (once per
/// value: `lowered` maps a value to its cast and is shared across calls, so a weight used by
/// several products is cast once), and the result is cast back to the dtype of the op's first
/// operand — the dtype the op would have had. Returns that cast, which stands for the op in the
/// rest of the graph. Integer operands (ids, masks, positions) are left alone.
///
/// # Errors
/// Whatever [`GraphBuilder::add`] refuses (the op's own shape rules apply unchanged).
pub fn add_low(
    b: &mut GraphBuilder,
    name: &str,
    op: Op,
    low: DType,
    lowered: &mut HashMap<ValueId, ValueId>,
) -> Result<ValueId> {
    let operands = op.operands();
    let Some(&first) = operands.first() else { return b.add(name, op) };
    let dtype = b.node(first).dtype;
    let mut casts = HashMap::new();
    for o in operands {
        let node = b.node(o);
        if !node.dtype.is_float() || node.dtype == low {
            continue;
        }
        let cast = match lowered.get(&o) {
            Some(&c) => c,
            None => {
                let c = b.add(format!("autocast:{}:{low}", node.name), Op::Cast { x: o, dtype: low })?;
                lowered.insert(o, c);
                c
            }
        };
        casts.insert(o, cast);
    }
    let low_op = op.map_operands(|o| casts.get(&o).copied().unwrap_or(o));
    let y = b.add(name, low_op)?;
    if b.node(y).dtype == dtype {
        return Ok(y);
    }
    b.add(format!("autocast:{name}:{dtype}"), Op::Cast { x: y, dtype })
}
