//! The simulator's stand-in for NEFF files: an accelrt graph, its weights and the static shapes it
//! was "compiled" for. Real NEFFs come from neuronx-cc; these come from `pack`, for tests only.

use accelrt_core::{reference, DType, Error, Graph, HostTensor, Result, WeightSource, WeightView};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// First bytes of a simulator NEFF (a real NEFF starts with its own 1024-byte header).
pub const MAGIC: &[u8; 16] = b"ACCELRT-SIM-NEFF";

/// A NEFF tensor: its name in tensor sets, element type and static shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorDecl {
    /// The name the tensor must be bound under in a tensor set: a graph input or output name
    /// for graph NEFFs, `input{i}` / `output{j}` for HLO NEFFs.
    pub name: String,
    /// Its element type.
    pub dtype: DType,
    /// Its static shape in elements, outermost first.
    pub shape: Vec<usize>,
}

impl TensorDecl {
    /// The tensor's size in bytes (0 for a dtype without a fixed size).
    pub fn bytes(&self) -> usize {
        self.dtype.storage_bytes(self.shape.iter().product()).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WeightDecl {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    offset: usize,
    len: usize,
}

#[derive(Serialize, Deserialize)]
struct Header {
    graph: String,
    inputs: Vec<TensorDecl>,
    outputs: Vec<TensorDecl>,
    weights: Vec<WeightDecl>,
}

/// A parsed graph NEFF. It is also the [`WeightSource`] of its graph: the weights packed in it.
pub struct SimNeff {
    /// The graph it runs, re-validated by `Graph::from_json`.
    pub graph: Graph,
    /// The graph's inputs at the shapes it was packed for, in the order given to [`pack`].
    pub inputs: Vec<TensorDecl>,
    /// The graph's outputs at the shapes the example inputs gave them, in the graph's output
    /// order.
    pub outputs: Vec<TensorDecl>,
    weights: Vec<WeightDecl>,
    blob: Vec<u8>,
}

impl WeightSource for SimNeff {
    fn get(&self, name: &str) -> Result<WeightView<'_>> {
        let w = self
            .weights
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| Error::Weight { name: name.into(), message: "not in the simulator NEFF".into() })?;
        Ok(WeightView {
            dtype: w.dtype,
            shape: w.shape.clone(),
            bytes: Cow::Borrowed(&self.blob[w.offset..w.offset + w.len]),
        })
    }
}

/// "Compiles" `graph` with `weights` for one static shape: `inputs` are example inputs of that
/// shape (their values only serve to work out the output shapes). The result is [`MAGIC`], the
/// JSON header's length (u64, little-endian), the header (graph, tensors, weight table) and the
/// weights' bytes as the source gives them.
///
/// # Errors
///
/// The reference evaluator's error when the graph does not run on `inputs`, a missing weight, or
/// a header that does not serialise.
pub fn pack(graph: &Graph, weights: &dyn WeightSource, inputs: &[(&str, &HostTensor)]) -> Result<Vec<u8>> {
    let outputs = reference::evaluate(graph, weights, inputs)?;
    let mut blob = Vec::new();
    let mut decls = Vec::new();
    for (_, node) in graph.weights() {
        let view = weights.get(&node.name)?;
        decls.push(WeightDecl {
            name: node.name.clone(),
            dtype: view.dtype,
            shape: view.shape.clone(),
            offset: blob.len(),
            len: view.bytes.len(),
        });
        blob.extend_from_slice(&view.bytes);
    }
    let header = Header {
        graph: graph.to_json(),
        inputs: inputs
            .iter()
            .map(|(n, t)| TensorDecl { name: n.to_string(), dtype: t.dtype(), shape: t.shape().to_vec() })
            .collect(),
        outputs: outputs
            .iter()
            .map(|(n, t)| TensorDecl { name: n.to_string(), dtype: t.dtype(), shape: t.shape().to_vec() })
            .collect(),
        weights: decls,
    };
    let json = serde_json::to_vec(&header)?;
    let mut out = MAGIC.to_vec();
    out.extend((json.len() as u64).to_le_bytes());
    out.extend(json);
    out.extend(blob);
    Ok(out)
}

impl SimNeff {
    /// Reads a graph NEFF made by [`pack`].
    ///
    /// # Errors
    ///
    /// A message when the bytes do not start with [`MAGIC`], the header is truncated or is not
    /// valid JSON, a weight lies past the end, or the graph fails validation.
    pub fn parse(bytes: &[u8]) -> std::result::Result<SimNeff, String> {
        if bytes.len() < 24 || &bytes[..16] != MAGIC {
            return Err("not a simulator NEFF (the test double runs only files made by nrt_sim::pack)".into());
        }
        let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) as usize;
        let json = bytes.get(24..24usize.saturating_add(len)).ok_or("truncated header")?;
        let header: Header = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let blob = bytes[24 + len..].to_vec();
        if header.weights.iter().any(|w| w.offset.checked_add(w.len).is_none_or(|end| end > blob.len())) {
            return Err("truncated weights".into());
        }
        let graph = Graph::from_json(&header.graph).map_err(|e| e.to_string())?;
        Ok(SimNeff { graph, inputs: header.inputs, outputs: header.outputs, weights: header.weights, blob })
    }
}
