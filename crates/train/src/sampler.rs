//! Batches of example indices: in file order (`--no-shuffle`) or in a seeded random order that is
//! drawn anew every epoch, with a position that is saved in a checkpoint and restored exactly.
//!
//! An epoch is one pass over the examples in batches of `batch_size`; the last partial batch is
//! dropped (sentence-transformers' MNRL scores each anchor against the batch's positives, so a
//! smaller last batch would be an easier task with a different loss scale; for windows of a
//! corpus it keeps every step at the same token count). The dropped examples come back in other
//! epochs under shuffling, in a different position.
//!
//! Epoch `e`'s order is a Fisher–Yates shuffle driven by [`SplitMix64`] seeded with a mix of the
//! seed and `e`, so the order of any epoch is a pure function of (seed, epoch, example count):
//! restoring a position needs no generator state beyond the [`SamplerState`] itself.

use crate::rng::SplitMix64;
use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};

/// The order examples are visited in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Order {
    /// File order every epoch (`--no-shuffle`): batch `b` is examples `b*B .. (b+1)*B`.
    FileOrder,
    /// A new seeded permutation every epoch (`--seed`).
    Shuffled {
        /// The run's seed; with the epoch it fixes every epoch's permutation.
        seed: u64,
    },
}

/// Where the next batch comes from: epoch and batch within it (both 0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    /// Passes over the data completed so far; at most [`MAX_EPOCH`].
    pub epoch: u64,
    /// Batches already taken in this epoch; below [`Sampler::batches_per_epoch`].
    pub batch: u64,
}

/// Everything needed to continue the same sequence of batches: saved in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    /// Number of examples of the data set it was made for (checked on restore).
    pub examples: u64,
    /// Examples per batch, at least 1 and at most `examples`.
    pub batch_size: u64,
    /// File order or the seeded shuffle.
    pub order: Order,
    /// Where the next batch comes from.
    pub position: DataPosition,
}

/// Hands out batches of example indices.
#[derive(Debug, Clone)]
pub struct Sampler {
    state: SamplerState,
    /// The current epoch's order (empty for file order, which needs none).
    permutation: Vec<u32>,
}

/// The highest epoch a state may be at (2⁴⁸): every epoch takes at least one batch, so a run
/// within [`crate::checkpoint::MAX_STEPS`] × [`crate::checkpoint::MAX_GRAD_ACCUM`] batches never
/// gets there, and counting epochs can never overflow.
pub const MAX_EPOCH: u64 = 1 << 48;

fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    // Two independent SplitMix64 outputs combined, so epochs do not get shifted copies of one
    // stream (seeding with seed + epoch would: SplitMix64's state advances by a constant).
    SplitMix64::new(seed).next_u64() ^ SplitMix64::new(epoch ^ 0x005E_ED0F_E90C_4000).next_u64()
}

impl Sampler {
    /// A sampler at the start of epoch 0.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] for a batch size of 0, fewer examples than one batch, or
    /// more than `u32::MAX` examples.
    pub fn new(examples: usize, batch_size: usize, order: Order) -> Result<Sampler> {
        Self::restore(
            SamplerState {
                examples: examples as u64,
                batch_size: batch_size as u64,
                order,
                position: DataPosition { epoch: 0, batch: 0 },
            },
            examples,
        )
    }

    /// Continues from a saved state, for a data set of `examples` examples (which must be the
    /// count the state was saved with: another file would give other batches).
    ///
    /// # Errors
    ///
    /// [`TrainError::Restore`] when `examples` differs from the saved count or the position is
    /// past [`MAX_EPOCH`] or past the end of an epoch; [`TrainError::InvalidArgument`] as for
    /// [`Sampler::new`].
    pub fn restore(state: SamplerState, examples: usize) -> Result<Sampler> {
        if state.batch_size == 0 {
            return Err(TrainError::InvalidArgument("--batch-size must be at least 1".into()));
        }
        if state.examples != examples as u64 {
            return Err(TrainError::Restore(format!(
                "the checkpoint was made with {} examples, the data now has {examples}",
                state.examples
            )));
        }
        if examples as u64 > u32::MAX as u64 {
            return Err(TrainError::InvalidArgument(format!(
                "{examples} examples: at most {} are supported",
                u32::MAX
            )));
        }
        if state.examples < state.batch_size {
            return Err(TrainError::InvalidArgument(format!(
                "{examples} examples are fewer than one batch of {}",
                state.batch_size
            )));
        }
        if state.position.epoch > MAX_EPOCH {
            return Err(TrainError::Restore(format!(
                "epoch {} is past the highest possible ({MAX_EPOCH})",
                state.position.epoch
            )));
        }
        let mut sampler = Sampler { state, permutation: Vec::new() };
        if state.position.batch >= sampler.batches_per_epoch() {
            return Err(TrainError::Restore(format!(
                "batch {} is past the end of an epoch of {} batches",
                state.position.batch,
                sampler.batches_per_epoch()
            )));
        }
        sampler.draw_epoch();
        Ok(sampler)
    }

    fn draw_epoch(&mut self) {
        self.permutation.clear();
        if let Order::Shuffled { seed } = self.state.order {
            self.permutation.extend(0..self.state.examples as u32);
            SplitMix64::new(epoch_seed(seed, self.state.position.epoch)).shuffle(&mut self.permutation);
        }
    }

    /// Whole batches per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        self.state.examples / self.state.batch_size
    }

    /// The position of the next batch.
    pub fn position(&self) -> DataPosition {
        self.state.position
    }

    /// What a checkpoint stores.
    pub fn state(&self) -> SamplerState {
        self.state
    }

    /// The next batch's example indices; moves to the next epoch after the last whole batch.
    pub fn next_batch(&mut self) -> Vec<usize> {
        let b = self.state.batch_size as usize;
        let start = self.state.position.batch as usize * b;
        let batch: Vec<usize> = match self.state.order {
            Order::FileOrder => (start..start + b).collect(),
            Order::Shuffled { .. } => self.permutation[start..start + b].iter().map(|&i| i as usize).collect(),
        };
        self.state.position.batch += 1;
        if self.state.position.batch == self.batches_per_epoch() {
            self.state.position = DataPosition { epoch: self.state.position.epoch + 1, batch: 0 };
            self.draw_epoch();
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_order_is_consecutive_and_drops_the_tail() {
        let mut s = Sampler::new(7, 3, Order::FileOrder).unwrap();
        assert_eq!(s.batches_per_epoch(), 2);
        assert_eq!(s.next_batch(), vec![0, 1, 2]);
        assert_eq!(s.next_batch(), vec![3, 4, 5]);
        assert_eq!(s.position(), DataPosition { epoch: 1, batch: 0 });
        assert_eq!(s.next_batch(), vec![0, 1, 2], "example 6 is the dropped tail");
    }

    #[test]
    fn shuffled_epochs_are_permutations_that_differ() {
        let mut s = Sampler::new(10, 5, Order::Shuffled { seed: 3 }).unwrap();
        let e0: Vec<usize> = [s.next_batch(), s.next_batch()].concat();
        let e1: Vec<usize> = [s.next_batch(), s.next_batch()].concat();
        for e in [&e0, &e1] {
            let mut sorted = e.clone();
            sorted.sort();
            assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        }
        assert_ne!(e0, e1, "each epoch draws a new order");
        assert_ne!(e0, (0..10).collect::<Vec<_>>());
        let mut again = Sampler::new(10, 5, Order::Shuffled { seed: 3 }).unwrap();
        assert_eq!([again.next_batch(), again.next_batch()].concat(), e0, "same seed, same order");
        let mut other = Sampler::new(10, 5, Order::Shuffled { seed: 4 }).unwrap();
        assert_ne!([other.next_batch(), other.next_batch()].concat(), e0);
    }

    #[test]
    fn a_restored_sampler_continues_exactly() {
        for order in [Order::FileOrder, Order::Shuffled { seed: 99 }] {
            let mut a = Sampler::new(23, 4, order).unwrap();
            for _ in 0..9 {
                a.next_batch();
            }
            let saved = serde_json::to_string(&a.state()).unwrap();
            let expected: Vec<Vec<usize>> = (0..12).map(|_| a.next_batch()).collect();
            let mut b = Sampler::restore(serde_json::from_str(&saved).unwrap(), 23).unwrap();
            let got: Vec<Vec<usize>> = (0..12).map(|_| b.next_batch()).collect();
            assert_eq!(got, expected, "{order:?}");
        }
    }

    #[test]
    fn restore_refuses_other_data_and_bad_positions() {
        let mut s = Sampler::new(20, 4, Order::Shuffled { seed: 1 }).unwrap();
        s.next_batch();
        let state = s.state();
        assert!(matches!(Sampler::restore(state, 21), Err(TrainError::Restore(_))));
        let past = SamplerState { position: DataPosition { epoch: 0, batch: 5 }, ..state };
        assert!(matches!(Sampler::restore(past, 20), Err(TrainError::Restore(_))));
        let last = SamplerState { position: DataPosition { epoch: u64::MAX, batch: 4 }, ..state };
        assert!(matches!(Sampler::restore(last, 20), Err(TrainError::Restore(_))), "epoch + 1 would wrap");
    }

    #[test]
    fn impossible_batches_are_refused() {
        assert!(Sampler::new(3, 4, Order::FileOrder).unwrap_err().to_string().contains("fewer than one batch"));
        assert!(Sampler::new(3, 0, Order::FileOrder).is_err());
        assert!(Sampler::new(4, 4, Order::FileOrder).is_ok());
    }
}
