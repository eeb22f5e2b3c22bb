//! accelrt-core: the model graph every backend runs, host tensors, weights by name, the reference
//! evaluator used as the test oracle, and the `Backend` trait.

#![warn(missing_docs)]

pub mod autocast;
pub mod autodiff;
mod backend;
mod device;
mod dtype;
mod error;
pub mod files;
mod graph;
pub mod host;
mod infer;
pub mod loss;
mod op;
pub mod optim;
pub mod padding;
pub mod quant;
pub mod reference;
mod shape;
mod state;
mod tensor;
pub mod training;
mod weights;

pub use backend::{check_variable_value, Backend, Executable, Outputs, PrepareOptions};
pub use device::{DeviceInfo, DeviceKind, DeviceSpec};
pub use dtype::{DType, QuantType};
pub use error::{Error, Result};
pub use graph::{Graph, GraphBuilder, Node, GRAPH_FORMAT_VERSION};
pub use infer::{reshape_target, KV_LEN};
pub use op::{BinaryOp, Op, ReshapeDim, RopeStyle, UnaryOp, ValueId, VariableInit};
pub use shape::{Bindings, Dim, Shape};
pub use state::{one_shot_slots, CacheWrite, CacheWriteError, ExecutableId, RowWrite, SessionState, SlotLengths};
pub use tensor::{HostTensor, TensorData};
pub use weights::{load_weight, HostWeights, WeightSource, WeightView};
