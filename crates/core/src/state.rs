//! Session state: what persists between runs of one prepared graph (the `KvCache` contents).
//!
//! The bookkeeping every backend needs (which slot holds how many positions, whether a write is
//! valid) lives here, so that all backends accept and refuse the same steps; the cache tensors
//! themselves are backend-specific and sit behind `inner`.

use crate::{Error, Result};
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// One row's write into a cache: positions `start..start + count` of slot `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowWrite {
    /// The session slot (sequence) this batch row writes to, below the state's slot count.
    pub slot: usize,
    /// First cache position written; at most the positions the slot already held.
    pub start: usize,
    /// Number of positions written (the step's tokens per row).
    pub count: usize,
}

/// A validated cache write of one step: one `RowWrite` per batch row, and the length of the
/// cached sequence the step yields (the longest row's end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheWrite {
    /// One write per batch row, in batch order.
    pub rows: Vec<RowWrite>,
    /// The largest `start + count` over the rows: how many cache positions attention reads this
    /// step.
    pub kv_len: usize,
}

/// Which executable made a session state: unique within the process. Each executable takes one
/// with [`ExecutableId::fresh`] when it is prepared and stamps it into every state it makes, so a
/// state cannot be run by another executable — of another graph, or of the same graph prepared
/// again, whose caches and variables would be other tensors — even of the same backend type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExecutableId(u64);

impl ExecutableId {
    /// An id no other call in this process returns.
    pub fn fresh() -> ExecutableId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ExecutableId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for ExecutableId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "executable #{}", self.0)
    }
}

/// The state of one session: `slots` sequences, each with its own cache of up to the graph's
/// capacity positions. Made by `Executable::new_state`; only the executable that made it runs with
/// it: the backend's part is reached only through the owner's id ([`SessionState::inner`]), and a
/// backend checks [`SessionState::check_owner`] before anything else in a step.
pub struct SessionState {
    backend: &'static str,
    owner: ExecutableId,
    slots: usize,
    /// Positions written so far, per cache node (by node index) and slot.
    written: HashMap<usize, Vec<usize>>,
    inner: Box<dyn Any + Send>,
}

impl SessionState {
    /// A state of `slots` sequences made by the executable `owner` of `backend`, holding the
    /// backend's own part `inner`.
    pub fn new(backend: &'static str, owner: ExecutableId, slots: usize, inner: Box<dyn Any + Send>) -> SessionState {
        SessionState { backend, owner, slots, written: HashMap::new(), inner }
    }

    /// The executable that made this state.
    pub fn owner(&self) -> ExecutableId {
        self.owner
    }

    /// `Ok` when `executable` made this state; otherwise an error naming both (nothing changes).
    pub fn check_owner(&self, executable: ExecutableId) -> Result<()> {
        if executable == self.owner {
            return Ok(());
        }
        Err(Error::Backend {
            backend: self.backend.to_string(),
            message: format!(
                "this session state was made by {} ({}), not by {executable} that was asked to run with it; \
                 a state runs only with the executable whose new_state made it",
                self.owner, self.backend
            ),
        })
    }

    /// How many sequences this state holds at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// How many positions slot `slot` holds (the most over the graph's caches).
    pub fn slot_len(&self, slot: usize) -> usize {
        self.written.values().filter_map(|w| w.get(slot)).copied().max().unwrap_or(0)
    }

    /// Forgets the sequence in `slot`, so a new one can start there at position 0.
    pub fn reset_slot(&mut self, slot: usize) {
        for w in self.written.values_mut() {
            if let Some(len) = w.get_mut(slot) {
                *len = 0;
            }
        }
    }

    /// The backend's own part of the state, to read, for the executable `owner` (which must have
    /// made it: [`SessionState::check_owner`]).
    pub fn inner<T: 'static>(&self, owner: ExecutableId) -> Result<&T> {
        self.check_owner(owner)?;
        self.inner.downcast_ref::<T>().ok_or_else(|| self.wrong_type())
    }

    /// The backend's own part of the state, for the executable `owner` (which must have made it).
    pub fn inner_mut<T: 'static>(&mut self, owner: ExecutableId) -> Result<&mut T> {
        self.check_owner(owner)?;
        let err = self.wrong_type();
        self.inner.downcast_mut::<T>().ok_or(err)
    }

    /// The owner matches but the backend's part has another type: a backend bug, reported as one.
    fn wrong_type(&self) -> Error {
        Error::Backend {
            backend: self.backend.to_string(),
            message: format!("the session state of {} does not hold this backend's state type", self.owner),
        }
    }

    /// Checks a cache write (`positions` `[batch, count]` and `slots` `[batch]`, row-major) against
    /// the rules of `Op::KvCache` and records it. Nothing is recorded when it is refused.
    pub fn plan_cache_write(
        &mut self,
        node: usize,
        capacity: usize,
        positions: &[i64],
        slots: &[i64],
    ) -> std::result::Result<CacheWrite, CacheWriteError> {
        let batch = slots.len();
        if batch == 0 || !positions.len().is_multiple_of(batch) {
            return Err(CacheWriteError::Uneven { positions: positions.len(), rows: batch });
        }
        let count = positions.len() / batch;
        let written = self.written.entry(node).or_insert_with(|| vec![0; self.slots]);
        let mut rows = Vec::with_capacity(batch);
        for (r, &slot) in slots.iter().enumerate() {
            if slot < 0 || slot as usize >= self.slots {
                return Err(CacheWriteError::SlotOutOfRange { row: r, slot, slots: self.slots });
            }
            let slot = slot as usize;
            if rows.iter().any(|w: &RowWrite| w.slot == slot) {
                return Err(CacheWriteError::DuplicateSlot { row: r, slot });
            }
            let row = &positions[r * count..(r + 1) * count];
            // A step of no tokens writes nothing: it starts where the slot ends, so the slot keeps
            // its length (starting at 0 would make it forget the cached sequence).
            let start = row.first().copied().unwrap_or(written[slot] as i64);
            if row.iter().enumerate().any(|(i, &p)| start.checked_add(i as i64) != Some(p)) || start < 0 {
                return Err(CacheWriteError::NotConsecutive { row: r, positions: row.to_vec() });
            }
            let start = start as usize;
            if start > written[slot] {
                return Err(CacheWriteError::Gap { row: r, start, slot, held: written[slot] });
            }
            if start + count > capacity {
                return Err(CacheWriteError::OverCapacity { row: r, last: start + count - 1, capacity });
            }
            rows.push(RowWrite { slot, start, count });
        }
        for w in &rows {
            written[w.slot] = w.start + w.count;
        }
        let kv_len = rows.iter().map(|w| w.start + w.count).max().unwrap_or(0);
        Ok(CacheWrite { rows, kv_len })
    }
}

/// Why a cache write breaks the rules of `Op::KvCache` ([`SessionState::plan_cache_write`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheWriteError {
    /// The positions are not `count` per row of the batch.
    #[error("{positions} positions do not split over {rows} rows")]
    Uneven {
        /// Number of position ids given.
        positions: usize,
        /// Number of batch rows (entries of `slots`); 0 is refused too.
        rows: usize,
    },
    /// A row names a slot that is negative or not below the session's slot count; make the state
    /// with more slots (`Executable::new_state`).
    #[error("row {row}: slot {slot} is outside this session's {slots} slots")]
    SlotOutOfRange {
        /// Batch row, from 0.
        row: usize,
        /// The slot id given.
        slot: i64,
        /// The session's slot count.
        slots: usize,
    },
    /// Two rows of one step write the same slot; each sequence may appear once per step.
    #[error("row {row}: slot {slot} appears twice in one step")]
    DuplicateSlot {
        /// The second row naming the slot.
        row: usize,
        /// The repeated slot.
        slot: usize,
    },
    /// A row's positions are not `start, start + 1, …` with `start ≥ 0`.
    #[error("row {row}: positions {positions:?} are not consecutive from ≥ 0")]
    NotConsecutive {
        /// Batch row, from 0.
        row: usize,
        /// That row's positions as given.
        positions: Vec<i64>,
    },
    /// The row would start past what its slot holds, leaving positions unwritten.
    #[error("row {row}: writes position {start} but slot {slot} holds only {held} (positions would be skipped)")]
    Gap {
        /// Batch row, from 0.
        row: usize,
        /// The row's first position.
        start: usize,
        /// The slot it writes.
        slot: usize,
        /// Positions the slot holds so far.
        held: usize,
    },
    /// The row's last position is not below the cache's capacity (the graph's maximum sequence
    /// length); end the sequence or build the graph with a larger cache.
    #[error("row {row}: positions up to {last} exceed the cache capacity of {capacity}")]
    OverCapacity {
        /// Batch row, from 0.
        row: usize,
        /// The last position the row would write.
        last: usize,
        /// The cache's capacity in positions.
        capacity: usize,
    },
}

impl std::fmt::Debug for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionState")
            .field("backend", &self.backend)
            .field("owner", &self.owner)
            .field("slots", &self.slots)
            .finish()
    }
}

/// The number of slots a one-shot run (`Executable::run` without a session) needs: one more than
/// the largest slot id any `KvCache` of the graph is given.
pub fn one_shot_slots(graph: &crate::Graph, inputs: &[(&str, &crate::HostTensor)]) -> usize {
    let mut slots = 0;
    for node in graph.nodes() {
        if let crate::Op::KvCache { slots: s, .. } = node.op {
            let name = &graph.node(s).name;
            if let Some((_, t)) = inputs.iter().find(|(n, _)| n == name) {
                let max = t.to_i64_vec().unwrap_or_default().into_iter().max().unwrap_or(0);
                slots = slots.max(max.max(0) as usize + 1);
            }
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_reaches_the_backend_part_and_a_refusal_names_both() {
        let (maker, other) = (ExecutableId::fresh(), ExecutableId::fresh());
        assert_ne!(maker, other);
        let mut state = SessionState::new("test", maker, 2, Box::new(7u32));
        assert_eq!(state.owner(), maker);
        assert_eq!(*state.inner::<u32>(maker).unwrap(), 7);
        *state.inner_mut::<u32>(maker).unwrap() = 8;
        let err = state.inner::<u32>(other).unwrap_err().to_string();
        assert!(err.contains(&maker.to_string()) && err.contains(&other.to_string()), "{err}");
        assert!(state.inner_mut::<u32>(other).is_err());
        assert!(state.check_owner(other).is_err() && state.check_owner(maker).is_ok());
        // The right owner with the wrong type is a backend bug, reported as such.
        assert!(state.inner::<String>(maker).unwrap_err().to_string().contains("state type"));
        assert_eq!(*state.inner::<u32>(maker).unwrap(), 8);
    }

    #[test]
    fn a_step_of_no_tokens_keeps_the_cached_sequence() {
        let mut state = SessionState::new("test", ExecutableId::fresh(), 1, Box::new(()));
        assert_eq!(state.plan_cache_write(0, 8, &[0, 1, 2], &[0]).unwrap().kv_len, 3);
        // positions `[1, 0]`: nothing written, and the slot still holds 3 positions.
        assert_eq!(state.plan_cache_write(0, 8, &[], &[0]).unwrap().kv_len, 3);
        assert_eq!(state.plan_cache_write(0, 8, &[3], &[0]).unwrap().kv_len, 4);
    }

    #[test]
    fn positions_near_the_integer_limit_are_refused_not_wrapped() {
        let mut state = SessionState::new("test", ExecutableId::fresh(), 1, Box::new(()));
        let err = state.plan_cache_write(0, 8, &[i64::MAX, i64::MIN], &[0]).unwrap_err();
        assert!(matches!(err, CacheWriteError::NotConsecutive { row: 0, .. }), "{err:?}");
    }
}
