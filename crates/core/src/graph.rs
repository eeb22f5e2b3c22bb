//! The model graph: typed SSA nodes, named inputs/outputs, weights referenced by name.

use crate::infer::infer;
use crate::{Bindings, DType, Dim, Error, HostTensor, Op, Result, Shape, ValueId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Version of the serialised form; part of the content hash.
pub const GRAPH_FORMAT_VERSION: u32 = 1;

/// One node: an operation and the (inferred) type of the value it produces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique within the graph. For inputs and weights it is the input's or weight's name.
    pub name: String,
    /// What the node computes; its operands are earlier nodes' `ValueId`s.
    pub op: Op,
    /// The element type of the node's value, as shape inference gives it (checked again when a
    /// graph is validated or loaded).
    pub dtype: DType,
    /// The shape of the node's value. Symbols are the inputs' (`batch`, `seq`), `kv_len` after a
    /// `KvCache`, or derived ones named `<node>:<axis>` for sizes only a run knows.
    pub shape: Shape,
}

/// A validated model graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Graph {
    format: u32,
    name: String,
    nodes: Vec<Node>,
    outputs: Vec<(String, ValueId)>,
}

/// The serialised form, re-validated on load.
#[derive(Deserialize)]
struct RawGraph {
    format: u32,
    name: String,
    nodes: Vec<Node>,
    outputs: Vec<(String, ValueId)>,
}

impl<'de> Deserialize<'de> for Graph {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        let raw = RawGraph::deserialize(de)?;
        if raw.format != GRAPH_FORMAT_VERSION {
            return Err(serde::de::Error::custom(format!(
                "graph format {} is not supported (this build reads {GRAPH_FORMAT_VERSION})",
                raw.format
            )));
        }
        let graph = Graph { format: raw.format, name: raw.name, nodes: raw.nodes, outputs: raw.outputs };
        graph.validate().map_err(serde::de::Error::custom)?;
        Ok(graph)
    }
}

impl Graph {
    /// The model's name, as given to `GraphBuilder::new`; part of the content hash.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every node in order: a node's `ValueId` is its index, and operands precede their users,
    /// so evaluating in this order is a valid schedule.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node that produces `id`.
    ///
    /// # Panics
    /// If `id` is not an index of this graph's nodes (e.g. an id from another graph).
    pub fn node(&self, id: ValueId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Graph inputs in declaration order.
    pub fn inputs(&self) -> impl Iterator<Item = (ValueId, &Node)> {
        self.with_op(|op| matches!(op, Op::Input { .. }))
    }

    /// Weights in declaration order.
    pub fn weights(&self) -> impl Iterator<Item = (ValueId, &Node)> {
        self.with_op(|op| matches!(op, Op::Weight { .. }))
    }

    /// The named outputs as (name, value) pairs, in the order they were declared, which is the
    /// order runs return them in.
    pub fn outputs(&self) -> &[(String, ValueId)] {
        &self.outputs
    }

    fn with_op(&self, pred: impl Fn(&Op) -> bool) -> impl Iterator<Item = (ValueId, &Node)> {
        self.nodes.iter().enumerate().filter(move |(_, n)| pred(&n.op)).map(|(i, n)| (ValueId(i as u32), n))
    }

    /// Checks every invariant: operands precede their users, inferred types match the stored ones,
    /// names are unique, outputs exist.
    ///
    /// # Errors
    /// `Error::Node` naming the first node whose name repeats or whose op breaks its shape rule or
    /// disagrees with the stored type; `Error::Graph` when there are no outputs, an output refers
    /// to no node, or two outputs share a name.
    pub fn validate(&self) -> Result<()> {
        let mut names = BTreeSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if !names.insert(node.name.as_str()) {
                return Err(Error::node(&node.name, "name used by more than one node"));
            }
            let (dtype, shape) = infer(&node.name, &node.op, &self.nodes[..i])?;
            if dtype != node.dtype || shape != node.shape {
                return Err(Error::node(
                    &node.name,
                    format!("declared {} {} but the operands give {dtype} {shape}", node.dtype, node.shape),
                ));
            }
        }
        if self.outputs.is_empty() {
            return Err(Error::Graph("a graph needs at least one output".into()));
        }
        let mut out_names = BTreeSet::new();
        for (name, id) in &self.outputs {
            if id.index() >= self.nodes.len() {
                return Err(Error::Graph(format!("output `{name}` refers to node {} which does not exist", id.0)));
            }
            if !out_names.insert(name) {
                return Err(Error::Graph(format!("output name `{name}` used twice")));
            }
        }
        Ok(())
    }

    /// A stable hex SHA-256 of the serialised graph (format version included). Compiled backends
    /// key their artifacts by it; weights' values are not part of it, only their names and types.
    pub fn content_hash(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a graph always serialises");
        hex::encode(Sha256::digest(bytes))
    }

    /// The graph as pretty-printed JSON, the form `from_json` reads back (its `format` field is
    /// `GRAPH_FORMAT_VERSION`). `content_hash` hashes the compact form, not this text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a graph always serialises")
    }

    /// Reads a graph written by `to_json` and validates it, so a tampered file is rejected.
    ///
    /// # Errors
    /// `Error::Serde` for malformed JSON, a `format` other than `GRAPH_FORMAT_VERSION`, or a graph
    /// that fails `validate` (the message says which node and why).
    pub fn from_json(text: &str) -> Result<Graph> {
        Ok(serde_json::from_str(text)?)
    }

    /// Checks named inputs against the declared inputs (names, dtypes, ranks, fixed sizes, and
    /// that each symbol gets one size) and returns the symbol bindings.
    ///
    /// # Errors
    /// `Error::UnknownInput` for a name the graph does not declare; `Error::MissingInput` for a
    /// declared input not given; `Error::Input` for an input given twice, a wrong dtype, rank or
    /// fixed size, or a symbol given two different sizes.
    pub fn bind_inputs<'a>(&self, inputs: &[(&'a str, &'a HostTensor)]) -> Result<Bindings> {
        let mut bindings = Bindings::default();
        for (i, (name, _)) in inputs.iter().enumerate() {
            if !self.inputs().any(|(_, n)| n.name == *name) {
                let expected = self.inputs().map(|(_, n)| n.name.as_str()).collect::<Vec<_>>().join(", ");
                return Err(Error::UnknownInput { name: name.to_string(), expected });
            }
            // Two tensors for one input: which one runs would be an accident of the order.
            if inputs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(Error::Input { name: name.to_string(), message: "given twice".into() });
            }
        }
        for (_, node) in self.inputs() {
            let tensor = inputs
                .iter()
                .find(|(n, _)| *n == node.name)
                .map(|(_, t)| *t)
                .ok_or_else(|| Error::MissingInput(node.name.clone()))?;
            let bad = |message: String| Error::Input { name: node.name.clone(), message };
            if tensor.dtype() != node.dtype {
                return Err(bad(format!("expected dtype {}, got {}", node.dtype, tensor.dtype())));
            }
            if tensor.shape().len() != node.shape.rank() {
                return Err(bad(format!("expected shape {}, got {:?}", node.shape, tensor.shape())));
            }
            for (dim, &size) in node.shape.0.iter().zip(tensor.shape()) {
                match dim {
                    Dim::Fixed(n) if *n != size => {
                        return Err(bad(format!("expected shape {}, got {:?}", node.shape, tensor.shape())))
                    }
                    Dim::Fixed(_) => {}
                    Dim::Sym(s) => bindings
                        .bind(s, size)
                        .map_err(|old| bad(format!("`{s}` is {size} here but {old} in an earlier input")))?,
                }
            }
        }
        Ok(bindings)
    }
}

/// Builds a graph node by node, inferring and checking types as it goes.
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    name: String,
    nodes: Vec<Node>,
    outputs: Vec<(String, ValueId)>,
}

impl GraphBuilder {
    /// An empty graph called `name` (the name is part of the graph's content hash).
    pub fn new(name: impl Into<String>) -> GraphBuilder {
        GraphBuilder { name: name.into(), nodes: Vec::new(), outputs: Vec::new() }
    }

    /// Adds a node named `name` (which must be unique) and returns its value.
    ///
    /// # Errors
    /// `Error::Node` if the name is taken, an operand is not an earlier node, or the operands do
    /// not fit the op's shape and dtype rule; nothing is added then.
    pub fn add(&mut self, name: impl Into<String>, op: Op) -> Result<ValueId> {
        let name = name.into();
        if self.nodes.iter().any(|n| n.name == name) {
            return Err(Error::node(&name, "name used by more than one node"));
        }
        let (dtype, shape) = infer(&name, &op, &self.nodes)?;
        self.nodes.push(Node { name, op, dtype, shape });
        Ok(ValueId(self.nodes.len() as u32 - 1))
    }

    /// Adds a graph input (`Op::Input`); callers pass a tensor named `name` at every run. Errors as
    /// `add` (a block-quantised dtype is refused).
    pub fn input(&mut self, name: &str, dtype: DType, shape: Shape) -> Result<ValueId> {
        self.add(name, Op::Input { dtype, shape })
    }

    /// Adds a weight (`Op::Weight`), read as `name` from the weight source when the graph is
    /// prepared. Errors as `add` (the shape must be fixed).
    pub fn weight(&mut self, name: &str, dtype: DType, shape: Shape) -> Result<ValueId> {
        self.add(name, Op::Weight { dtype, shape })
    }

    /// The node added as `id`.
    ///
    /// # Panics
    /// If `id` was not returned by this builder.
    pub fn node(&self, id: ValueId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Reopens a built graph to append nodes and outputs to it (gradients, losses, optimiser
    /// updates): its nodes, names and outputs are kept as they are.
    pub fn from_graph(graph: Graph) -> GraphBuilder {
        GraphBuilder { name: graph.name, nodes: graph.nodes, outputs: graph.outputs }
    }

    /// The nodes added so far, in order (a node's `ValueId` is its index).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The outputs named so far.
    pub fn outputs(&self) -> &[(String, ValueId)] {
        &self.outputs
    }

    /// Whether a node is already called `name`.
    pub fn has_name(&self, name: &str) -> bool {
        self.nodes.iter().any(|n| n.name == name)
    }

    /// Declares `id` as a graph output called `name`, and returns the builder for chaining. Nothing
    /// is checked here: `build` refuses an unknown id or a repeated name.
    pub fn output(&mut self, name: &str, id: ValueId) -> &mut Self {
        self.outputs.push((name.to_string(), id));
        self
    }

    /// Finishes and validates the graph (`Graph::validate`).
    ///
    /// # Errors
    /// `Error::Graph` when no output was declared, an output refers to no node, or two outputs
    /// share a name.
    pub fn build(self) -> Result<Graph> {
        let graph = Graph { format: GRAPH_FORMAT_VERSION, name: self.name, nodes: self.nodes, outputs: self.outputs };
        graph.validate()?;
        Ok(graph)
    }
}
