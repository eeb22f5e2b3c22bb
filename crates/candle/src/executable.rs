//! A graph prepared on a candle device: weights uploaded once, then runs op by op.

use crate::convert::{candle_err, download, to_candle_dtype, upload, upload_weight, BACKEND};
use crate::ops::{eval, RunContext};
use accelrt_core::{
    load_weight, DType, Error, Executable, Graph, HostTensor, Op, Outputs, Result, ValueId, WeightSource,
};
use candle_core::{Device, Tensor};
use std::collections::{HashMap, HashSet};

pub struct CandleExecutable {
    graph: Graph,
    device: Device,
    /// The dtype floating-point work runs in, when the caller overrode the graph's.
    compute_override: Option<candle_core::DType>,
    /// Uploaded weights, by node index.
    weights: HashMap<usize, Tensor>,
    /// Weights that only ever serve as a linear layer's [out, in] matrix are stored transposed,
    /// [in, out] and contiguous: the GEMM then reads them row-major, which is faster, most of all
    /// for the few-row products of batch-1 inference.
    transposed: HashSet<usize>,
    /// For each node, the index of the last node that reads it (values are freed after it).
    last_use: Vec<usize>,
    /// Graph inputs whose integer values index an embedding table: (input node, table rows).
    /// Checked on the host before a run, so bad ids are an input error, not a device fault.
    id_inputs: Vec<(usize, usize)>,
}

impl CandleExecutable {
    pub(crate) fn prepare(
        graph: &Graph,
        weights: &dyn WeightSource,
        device: Device,
        compute_dtype: Option<DType>,
    ) -> Result<CandleExecutable> {
        let compute_override = match compute_dtype {
            None => None,
            Some(d) if d.is_float() => Some(to_candle_dtype(d)?),
            Some(d) => return Err(Error::Unsupported { backend: BACKEND.into(), what: format!("compute dtype {d}") }),
        };
        let transposed = linear_only_weights(graph);
        let mut uploaded = HashMap::new();
        for (id, node) in graph.weights() {
            let view = load_weight(weights, node)?;
            let mut t = upload_weight(&view, &device)?;
            if let (true, Some(compute)) = (node.dtype.is_float(), compute_override) {
                t = t.to_dtype(compute).map_err(candle_err)?;
            }
            if transposed.contains(&id.index()) {
                t = t.t().and_then(|t| t.contiguous()).map_err(candle_err)?;
            }
            uploaded.insert(id.index(), t);
        }
        let n = graph.nodes().len();
        let mut last_use: Vec<usize> = (0..n).collect();
        for (i, node) in graph.nodes().iter().enumerate() {
            for operand in node.op.operands() {
                last_use[operand.index()] = i;
            }
        }
        for (_, id) in graph.outputs() {
            last_use[id.index()] = usize::MAX;
        }
        let mut id_inputs = Vec::new();
        for node in graph.nodes() {
            if let Op::Embedding { table, ids } = node.op {
                if matches!(graph.node(ids).op, Op::Input { .. }) {
                    let rows = graph.node(table).shape.0[0].fixed().expect("weights have fixed shapes");
                    id_inputs.push((ids.index(), rows));
                }
            }
        }
        Ok(CandleExecutable {
            graph: graph.clone(),
            device,
            compute_override,
            weights: uploaded,
            transposed,
            last_use,
            id_inputs,
        })
    }

    fn check_ids(&self, inputs: &[(&str, &HostTensor)]) -> Result<()> {
        for &(node, rows) in &self.id_inputs {
            let name = &self.graph.nodes()[node].name;
            let tensor = inputs.iter().find(|(n, _)| n == name).expect("inputs are bound").1;
            let ids = tensor.to_i64_vec().expect("embedding ids are integers (checked by inference)");
            if let Some(bad) = ids.iter().find(|&&id| id < 0 || id as usize >= rows) {
                return Err(Error::Input {
                    name: name.clone(),
                    message: format!("id {bad} is out of range for an embedding table of {rows} rows"),
                });
            }
        }
        Ok(())
    }
}

/// Float weights whose every use is as the `weight` of a `Linear` (and that are not outputs).
fn linear_only_weights(graph: &Graph) -> HashSet<usize> {
    let mut linear = HashSet::new();
    let mut other = HashSet::new();
    for node in graph.nodes() {
        for operand in node.op.operands() {
            match node.op {
                Op::Linear { weight, .. } if weight == operand => linear.insert(operand.index()),
                _ => other.insert(operand.index()),
            };
        }
    }
    for (_, id) in graph.outputs() {
        other.insert(id.index());
    }
    linear.retain(|i| !other.contains(i) && graph.nodes()[*i].dtype.is_float());
    linear
}

impl Executable for CandleExecutable {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn run(&self, inputs: &[(&str, &HostTensor)]) -> Result<Outputs> {
        self.graph.bind_inputs(inputs)?;
        self.check_ids(inputs)?;
        let mut ctx = RunContext {
            device: &self.device,
            compute_override: self.compute_override,
            transposed: &self.transposed,
            attention_bias: HashMap::new(),
        };
        let mut vals: Vec<Option<Tensor>> = vec![None; self.graph.nodes().len()];
        for (i, node) in self.graph.nodes().iter().enumerate() {
            let value = match &node.op {
                Op::Input { .. } => {
                    let host = inputs.iter().find(|(n, _)| *n == node.name).expect("inputs are bound").1;
                    let t = upload(host, &self.device)?;
                    match self.compute_override {
                        Some(compute) if node.dtype.is_float() => t.to_dtype(compute).map_err(candle_err)?,
                        _ => t,
                    }
                }
                Op::Weight { .. } => self.weights[&i].clone(),
                op => {
                    let get = |id: ValueId| vals[id.index()].clone().expect("operands are evaluated first");
                    eval(op, &get, &mut ctx).map_err(|e| Error::node(&node.name, format!("{}: {e}", op.kind())))?
                }
            };
            vals[i] = Some(value);
            for operand in node.op.operands() {
                if self.last_use[operand.index()] == i {
                    vals[operand.index()] = None;
                }
            }
        }
        let mut outputs = Vec::with_capacity(self.graph.outputs().len());
        for (name, id) in self.graph.outputs() {
            let t = vals[id.index()].as_ref().expect("outputs are kept");
            outputs.push((name.clone(), download(t, self.graph.node(*id).dtype)?));
        }
        Ok(Outputs::new(outputs))
    }

    fn synchronize(&self) -> Result<()> {
        self.device.synchronize().map_err(candle_err)
    }
}
