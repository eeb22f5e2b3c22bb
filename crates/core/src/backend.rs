//! The Backend trait: prepare a graph and its weights for one device, then run it on host tensors.
//!
//! The split follows compiled runtimes: `Backend::prepare` does everything that can be done once
//! (upload weights, compile, load programs), and the `Executable` it returns only moves inputs in and
//! outputs out. A static-shape backend (Neuron) compiles or loads per-shape programs in `prepare` and
//! refuses, with `Error::Unsupported`, the input shapes it has no program for.

use crate::{DType, DeviceInfo, DeviceSpec, Graph, HostTensor, Result, SessionState, WeightSource};

/// Choices a caller makes when preparing a graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrepareOptions {
    /// Run floating-point work in this dtype instead of the graph's own (e.g. f16 on a GPU): the
    /// linear layers at least; a backend may keep the other ops in f32 where that is faster on its
    /// hardware, as torch.autocast does (the candle backend does so for bf16 on CPUs with AVX-512
    /// BF16). Outputs are still returned in the graph's declared dtypes, within the conformance
    /// tolerance of this dtype. `None` keeps the graph's dtypes.
    pub compute_dtype: Option<DType>,
}

/// A backend bound to one device.
pub trait Backend: Send + Sync {
    /// A short backend name for results, e.g. `candle`.
    fn name(&self) -> &'static str;

    /// The device this backend was opened on.
    fn device(&self) -> &DeviceSpec;

    /// Facts about the device (name, memory, versions).
    fn device_info(&self) -> Result<DeviceInfo>;

    /// Prepares `graph` with `weights` for this device. Weights are read (and uploaded) here, once.
    fn prepare(
        &self,
        graph: &Graph,
        weights: &dyn WeightSource,
        options: &PrepareOptions,
    ) -> Result<Box<dyn Executable>>;
}

/// A graph prepared for one device.
pub trait Executable: Send + Sync {
    /// The graph this was prepared from.
    fn graph(&self) -> &Graph;

    /// Runs the graph on named host inputs and returns every graph output on the host.
    /// Returns only after the device has finished (outputs are read back). A graph with caches
    /// (`Op::KvCache`) runs here on empty ones, as the first step of a fresh session would.
    fn run(&self, inputs: &[(&str, &HostTensor)]) -> Result<Outputs>;

    /// A fresh session state for `slots` concurrent sequences: the graph's caches live in it, on
    /// the device, between runs (a generation's prefill, then one step per token).
    fn new_state(&self, slots: usize) -> Result<SessionState>;

    /// Runs one step of a session: like `run`, but the caches are read from and written to `state`.
    fn run_with_state(&self, state: &mut SessionState, inputs: &[(&str, &HostTensor)]) -> Result<Outputs>;

    /// Waits until all work queued on the device has finished (a no-op on synchronous devices).
    fn synchronize(&self) -> Result<()>;

    /// The current value in `state` of the graph variable (`Op::Variable`) called `name`, on the
    /// host (its initial value if no step has assigned it yet). Backends that do not hold
    /// variables refuse with `Error::Unsupported`.
    fn read_variable(&self, state: &SessionState, name: &str) -> Result<HostTensor> {
        let _ = (state, name);
        Err(crate::Error::Unsupported {
            backend: "this backend".into(),
            what: "graph variables (training state)".into(),
        })
    }

    /// Sets the variable `name` in `state` to `value` (its declared dtype and shape): restoring
    /// a checkpoint's parameters or optimiser moments.
    fn write_variable(&self, state: &mut SessionState, name: &str, value: &HostTensor) -> Result<()> {
        let _ = (state, name, value);
        Err(crate::Error::Unsupported {
            backend: "this backend".into(),
            what: "graph variables (training state)".into(),
        })
    }
}

/// The check every [`Executable::write_variable`] makes before it writes anything: `value` has
/// the variable's declared `dtype` and (fixed) `shape`.
///
/// # Errors
/// `Error::Graph` naming the variable, its declared type and the value's.
pub fn check_variable_value(name: &str, dtype: DType, shape: &[usize], value: &HostTensor) -> Result<()> {
    if value.dtype() == dtype && value.shape() == shape {
        return Ok(());
    }
    Err(crate::Error::Graph(format!(
        "variable `{name}` is {dtype} {shape:?}; got {} {:?}",
        value.dtype(),
        value.shape()
    )))
}

/// Named output tensors, in the graph's output order.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs(Vec<(String, HostTensor)>);

impl Outputs {
    /// Wraps `(name, tensor)` pairs; a backend passes them in the graph's output order. Names are
    /// not checked for duplicates (the graph already guarantees unique output names).
    pub fn new(outputs: Vec<(String, HostTensor)>) -> Outputs {
        Outputs(outputs)
    }

    /// The output called `name`, or `None` if the graph has no such output.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Removes and returns the output called `name`.
    pub fn take(&mut self, name: &str) -> Option<HostTensor> {
        let i = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(i).1)
    }

    /// `(name, tensor)` pairs in the graph's output order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &HostTensor)> {
        self.0.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of outputs held (fewer than the graph's after [`Outputs::take`]).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no outputs are left (every one was taken).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
