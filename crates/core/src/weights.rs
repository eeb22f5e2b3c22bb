//! Weights by name: the source a backend reads when it prepares a graph.

use crate::{DType, Error, HostTensor, Node, Op, Result};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The raw little-endian bytes of one weight, with its stored type and shape.
#[derive(Debug, Clone)]
pub struct WeightView<'a> {
    /// The dtype as stored, possibly a quantised block type (`DType::Quant`).
    pub dtype: DType,
    /// Size of each dimension, outermost first (for a quantised weight, the dequantised shape).
    pub shape: Vec<usize>,
    /// The stored bytes: borrowed from a memory map, or owned when converted on the way.
    pub bytes: Cow<'a, [u8]>,
}

impl WeightView<'_> {
    /// Decodes into a host tensor (plain element types only).
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] for a quantised weight (dequantise it with `quant` first);
    /// [`Error::Tensor`] if the byte count does not match the shape.
    pub fn to_host(&self) -> Result<HostTensor> {
        HostTensor::from_le_bytes(self.dtype, self.shape.clone(), &self.bytes)
    }
}

/// Something that holds weights by name: a memory-mapped safetensors file, a GGUF file, a map.
pub trait WeightSource: Sync {
    /// The weight called `name`, or `Error::Weight` if there is none.
    fn get(&self, name: &str) -> Result<WeightView<'_>>;
}

/// Reads the weight a `Weight` node (or a `Variable` initialised from a weight) names and checks
/// it has the declared dtype, shape and size.
/// Every backend loads weights through this, so a mismatched file fails the same way everywhere.
///
/// # Errors
/// [`Error::Node`] if `node` is not a weight; [`Error::Weight`] if the source lacks it, or its
/// dtype, shape or byte count differs from the declaration (a truncated or foreign file).
///
/// # Panics
/// If the node's shape is not fixed, which shape inference already rules out for weights.
pub fn load_weight<'a>(source: &'a dyn WeightSource, node: &Node) -> Result<WeightView<'a>> {
    if !matches!(node.op, Op::Weight { .. } | Op::Variable { init: crate::VariableInit::Weight, .. }) {
        return Err(Error::node(&node.name, "is not a weight"));
    }
    let view = source.get(&node.name)?;
    let bad = |message: String| Error::Weight { name: node.name.clone(), message };
    let declared = node.shape.concrete().expect("weights have fixed shapes (checked by inference)");
    if view.dtype != node.dtype || view.shape != declared {
        return Err(bad(format!(
            "the graph expects {} {:?} but the source holds {} {:?}",
            node.dtype, declared, view.dtype, view.shape
        )));
    }
    let elements = declared.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let expected = elements
        .and_then(|n| view.dtype.storage_bytes(n))
        .ok_or_else(|| bad(format!("{declared:?} is not a whole number of blocks, or too large to address")))?;
    if view.bytes.len() != expected {
        return Err(bad(format!("holds {} bytes, {expected} expected (truncated or corrupt file?)", view.bytes.len())));
    }
    Ok(view)
}

/// Weights held in memory, for tests and programmatically built models.
#[derive(Debug, Clone, Default)]
pub struct HostWeights(BTreeMap<String, HostTensor>);

impl HostWeights {
    /// An empty set, to fill with [`HostWeights::insert`].
    pub fn new() -> HostWeights {
        HostWeights::default()
    }

    /// Adds the weight `name`, replacing any weight already called that.
    pub fn insert(&mut self, name: impl Into<String>, tensor: HostTensor) {
        self.0.insert(name.into(), tensor);
    }

    /// The tensor called `name`, without the byte copy that [`WeightSource::get`] makes.
    pub fn get_tensor(&self, name: &str) -> Option<&HostTensor> {
        self.0.get(name)
    }
}

impl WeightSource for HostWeights {
    fn get(&self, name: &str) -> Result<WeightView<'_>> {
        let t =
            self.0.get(name).ok_or_else(|| Error::Weight { name: name.to_string(), message: "not found".into() })?;
        Ok(WeightView { dtype: t.dtype(), shape: t.shape().to_vec(), bytes: Cow::Owned(t.to_le_bytes()) })
    }
}
