//! The finite-difference check every gradient rule's test uses: the reference evaluator, in f64
//! with no rounding, compares the gradient nodes' values with central differences of the loss.

use super::grad;
use crate::reference::evaluate_exact;
use crate::{DType, Dim, GraphBuilder, HostTensor, HostWeights, Op, Shape, ValueId};
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;

/// Builds a small graph, then checks the gradient of Σ y·R (R a fixed random probe, so every
/// element of y matters with its own weight) against central differences for every float
/// input and weight declared through [`Check::input`] / [`Check::weight`].
pub(crate) struct Check {
    b: GraphBuilder,
    inputs: Vec<(String, HostTensor)>,
    weights: HostWeights,
    exact: HashMap<String, ArrayD<f64>>,
    wrt: Vec<ValueId>,
    state: u64,
    count: usize,
}

/// Step of the central difference. With f64 and values of order 1, the truncation error
/// (h² · f''' / 6 ≈ 1e-11) and the cancellation error (ε · |loss| / h ≈ 1e-11) are both far below
/// the tolerance.
const H: f64 = 1e-5;

impl Check {
    pub fn new(name: &str) -> Check {
        let seed = name.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, c| h.rotate_left(5) ^ c as u64);
        Check {
            b: GraphBuilder::new(name),
            inputs: vec![],
            weights: HostWeights::new(),
            exact: HashMap::new(),
            wrt: vec![],
            state: seed | 1,
            count: 0,
        }
    }

    fn uniform(&mut self) -> f64 {
        // xorshift64*: plenty for test data, and no dependency.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let bits = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (bits as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal draws (Box–Muller).
    pub fn normal(&mut self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let (u, v) = (self.uniform(), self.uniform());
                (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
            })
            .collect()
    }

    fn leaf(&mut self, name: &str, sizes: &[usize], scale: f64) -> HostTensor {
        let values: Vec<f64> = self.normal(sizes.iter().product()).into_iter().map(|v| v * scale).collect();
        self.exact.insert(name.into(), ArrayD::from_shape_vec(IxDyn(sizes), values.clone()).expect("sizes"));
        HostTensor::from_f64(DType::F32, sizes.to_vec(), &values).expect("sizes")
    }

    /// A differentiable f32 input declared with `dims`, given values of `sizes`.
    pub fn input(&mut self, name: &str, dims: &[Dim], sizes: &[usize]) -> ValueId {
        self.scaled_input(name, dims, sizes, 1.0)
    }

    pub fn scaled_input(&mut self, name: &str, dims: &[Dim], sizes: &[usize], scale: f64) -> ValueId {
        let t = self.leaf(name, sizes, scale);
        self.inputs.push((name.into(), t));
        let id = self.b.input(name, DType::F32, Shape(dims.to_vec())).expect("input");
        self.wrt.push(id);
        id
    }

    /// A differentiable f32 weight.
    pub fn weight(&mut self, name: &str, shape: &[usize], scale: f64) -> ValueId {
        let t = self.leaf(name, shape, scale);
        self.weights.insert(name, t);
        let id = self.b.weight(name, DType::F32, Shape::new(shape.iter().copied())).expect("weight");
        self.wrt.push(id);
        id
    }

    /// A non-differentiable input (ids, masks, positions) with the given values.
    pub fn fixed_input(&mut self, name: &str, dims: &[Dim], t: HostTensor) -> ValueId {
        let dtype = t.dtype();
        self.inputs.push((name.into(), t));
        self.b.input(name, dtype, Shape(dims.to_vec())).expect("input")
    }

    /// The graph being built, for graph-building functions (losses).
    pub fn builder(&mut self) -> &mut GraphBuilder {
        &mut self.b
    }

    pub fn op(&mut self, op: Op) -> ValueId {
        self.count += 1;
        let name = format!("{}{}", op.kind(), self.count);
        self.b.add(name, op).unwrap_or_else(|e| panic!("{e}"))
    }

    fn feed(&self) -> Vec<(&str, &HostTensor)> {
        self.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect()
    }

    /// Builds the loss Σ y·R and its gradients and compares them with central differences.
    pub fn run(mut self, y: ValueId) {
        // The probe's shape is y's at run time.
        let mut probe_graph = self.b.clone();
        probe_graph.output("y", y);
        let graph = probe_graph.build().expect("forward graph");
        let values = evaluate_exact(&graph, &self.weights, &self.feed(), &self.exact).expect("forward");
        let y_shape = values[0].1.shape().to_vec();
        let dims: Vec<Dim> = (0..y_shape.len()).map(|i| Dim::sym(&format!("probe{i}"))).collect();
        let probe = self.scaled_input("probe", &dims, &y_shape, 1.0);
        self.wrt.pop(); // the probe is data, not a variable

        let prod = self.op(Op::Binary { op: crate::BinaryOp::Mul, a: y, b: probe });
        let axes: Vec<usize> = (0..y_shape.len()).collect();
        let loss = self.op(Op::ReduceSum { x: prod, axes, keep_dims: false });
        let wrt = self.wrt.clone();
        let grads = grad(&mut self.b, loss, &wrt).unwrap_or_else(|e| panic!("grad: {e}"));
        let mut b = self.b.clone();
        b.output("loss", loss);
        for (i, g) in grads.iter().enumerate() {
            b.output(&format!("grad{i}"), *g);
        }
        let graph = b.build().unwrap_or_else(|e| panic!("gradient graph: {e}"));
        let feed = self.feed();
        let base = evaluate_exact(&graph, &self.weights, &feed, &self.exact).expect("gradient evaluation");
        let loss_at = |exact: &HashMap<String, ArrayD<f64>>| -> f64 {
            evaluate_exact(&graph, &self.weights, &feed, exact).expect("loss evaluation")[0].1.iter().sum()
        };
        for (i, &w) in wrt.iter().enumerate() {
            let name = graph.node(w).name.clone();
            let analytic = &base[i + 1].1;
            let point = &self.exact[&name];
            assert_eq!(analytic.shape(), point.shape(), "gradient of `{name}` has the wrong shape");
            let mut largest: f64 = 0.0;
            for (e, &got) in analytic.iter().enumerate() {
                let mut shifted = self.exact.clone();
                let centre = point.as_slice().expect("standard layout")[e];
                let mut set =
                    |v: f64| shifted.get_mut(&name).expect("leaf").as_slice_mut().expect("standard layout")[e] = v;
                set(centre + H);
                let plus = loss_at(&shifted);
                let mut set =
                    |v: f64| shifted.get_mut(&name).expect("leaf").as_slice_mut().expect("standard layout")[e] = v;
                set(centre - H);
                let minus = loss_at(&shifted);
                let fd = (plus - minus) / (2.0 * H);
                largest = largest.max(fd.abs());
                assert!(
                    (got - fd).abs() <= 1e-6 * (1.0 + fd.abs()),
                    "gradient of `{name}` element {e}: rule gives {got}, central difference {fd}"
                );
            }
            assert!(largest > 1e-3, "gradient of `{name}` is all but zero ({largest}); the check would prove nothing");
        }
    }
}
