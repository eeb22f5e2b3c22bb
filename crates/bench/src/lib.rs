//! accelrt-bench: the benchmark harness. MLPerf LoadGen-style scenarios over a workload, the
//! environment of every run, the instance catalog and cost per 1M inferences, versioned result
//! files, merged reports with charts, and peers driven through an external-runner protocol.

#![warn(missing_docs)]

pub mod catalog;
mod chart;
pub mod clock;
pub mod environment;
mod error;
pub mod hardware;
pub mod http_target;
pub mod imds;
pub mod interrupt;
pub mod limits;
pub mod load;
pub mod peers;
pub mod progress;
pub mod report;
pub mod result;
pub mod run;
pub mod scenario;
pub mod stats;
mod summary;
pub mod train_peer;
pub mod training;
pub mod workload;

pub use error::{BenchError, Result};
pub use result::{BenchResult, Pricing};
pub use run::{run, BenchConfig};
pub use scenario::{Measurement, RunRules, ScenarioKind};
pub use summary::summary;
