//! Training data for accelrt, everything a training loop needs that is not the gradient itself:
//!
//! - [`rng`]: the seeded generator behind the shuffles;
//! - [`schedule`]: learning-rate schedules (constant, linear warm-up + cosine) as functions of the step.
//!
//! More modules (data set, readers, batching, step log) join as they are written; see docs/training.md.
//!
//! The file format and derivation are described in docs/training.md.

mod error;
pub mod rng;
pub mod schedule;

pub use error::TrainError;
pub use schedule::LrSchedule;

/// Results of this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
