//! **Test double** of the AWS Neuron runtime library (`libnrt.so.1`). It exports the same C
//! functions with the same signatures and status codes as the documented runtime API, so accelrt's
//! Neuron binding can be exercised through its real FFI path on machines without Neuron hardware.
//!
//! It does not run NEFF programs. It runs *simulator NEFFs*: files made by [`pack`] from an accelrt
//! graph, its weights and one static input shape, which it "executes" with the reference evaluator.
//! Tests can make calls fail with any status ([`nrt_sim_inject_failure`]) and can count live
//! objects ([`nrt_sim_live_objects`]) to check that nothing leaks.

mod neff;
mod runtime;

pub use neff::{pack, SimNeff, MAGIC};
pub use runtime::*;
