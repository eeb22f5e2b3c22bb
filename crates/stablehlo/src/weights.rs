//! Weight arguments: a weight as stored in the model file, turned into the tensor the exported
//! function takes (what a runtime uploads once).

use crate::{Argument, ArgumentRole, ExportError};
use accelrt_core::{load_weight, quant, DType, HostTensor, Node, Op, Shape, WeightSource};

/// The tensor to pass for the weight argument `argument`: the weight it names, read from `source`
/// and checked against the stored dtype and shape the graph declared (`load_weight`'s checks),
/// dequantised with `accelrt_core::quant` if block-quantised, then converted to the argument's
/// dtype (e.g. f32 → bf16 for a bf16 export).
///
/// Errors: `ExportError::Weight` if the argument is not a weight, or the weight is missing, of
/// another type or shape, truncated, or of a quantised type with no dequantiser.
pub fn weight_argument(argument: &Argument, source: &dyn WeightSource) -> Result<HostTensor, ExportError> {
    let ArgumentRole::Weight { weight, source_dtype } = &argument.role else {
        return Err(ExportError::Weight {
            name: argument.name.clone(),
            source: accelrt_core::Error::Graph(format!("argument `{}` is not a weight", argument.name)),
        });
    };
    let fail = |source| ExportError::Weight { name: weight.clone(), source };
    let shape = Shape::new(argument.shape.iter().copied());
    let node = Node {
        name: weight.clone(),
        op: Op::Weight { dtype: *source_dtype, shape: shape.clone() },
        dtype: *source_dtype,
        shape,
    };
    let view = load_weight(source, &node).map_err(fail)?;
    let stored = match view.dtype {
        DType::Quant(q) => {
            let values = quant::dequantize(q, &view.bytes).map_err(fail)?;
            HostTensor::f32(view.shape.clone(), values).map_err(fail)?
        }
        _ => view.to_host().map_err(fail)?,
    };
    if stored.dtype() == argument.dtype {
        return Ok(stored);
    }
    HostTensor::from_f64(argument.dtype, stored.shape().to_vec(), &stored.to_f64_vec()).map_err(fail)
}
