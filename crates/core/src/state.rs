//! Session state: what persists between runs of one prepared graph (the `KvCache` contents).
//!
//! The bookkeeping every backend needs (which slot holds how many positions, whether a write is
//! valid) lives here, so that all backends accept and refuse the same steps; the cache tensors
//! themselves are backend-specific and sit behind `inner`.
//!
//! # A refused or failed step changes nothing
//!
//! A step records its cache writes ([`SessionState::plan_cache_write`]) before it has run, and may
//! still be refused or fail after that: a later cache's write is refused, the backend has no
//! program for the step's sizes, an op fails at run time, the device fails. Every backend keeps the
//! same rule: such a step leaves the session exactly as it was, and the next valid step gives what
//! it would have given had the failed one never been sent. So a backend takes the lengths of the
//! slots a step writes before it records anything ([`SessionState::record_lengths`], into a
//! [`SlotLengths`]) and, when the step does not succeed, puts them back
//! ([`SessionState::restore_lengths`]). A backend whose caches are written in place as the step
//! goes (on the host, or on a device that can copy back) also puts back the entries the step
//! overwrote that a slot already held ([`SlotLengths::overwritten`] says which). One that cannot
//! undo what the device wrote uses [`SessionState::restore_lengths_cut_back`] and says so where
//! it does.

use crate::{Error, Result};
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
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

/// Every cache's length in some slots of a session, taken before a step writes them
/// ([`SessionState::record_lengths`]), so that a step that is refused or fails can put them back
/// ([`SessionState::restore_lengths`]; see the module's documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotLengths {
    /// By slot: each cache's length (by node index) when the slot was recorded; a cache missing
    /// here held nothing in it.
    held: BTreeMap<usize, BTreeMap<usize, usize>>,
}

impl SlotLengths {
    /// Nothing recorded yet.
    pub fn new() -> SlotLengths {
        SlotLengths::default()
    }

    /// Whether no slot is recorded.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The positions cache `node` held in `slot` when the slot was recorded; `None` when it was not.
    pub fn held(&self, node: usize, slot: usize) -> Option<usize> {
        self.held.get(&slot).map(|caches| caches.get(&node).copied().unwrap_or(0))
    }

    /// The positions of `write` (into cache `node`) that overwrite entries its slot held when it
    /// was recorded: what a backend that writes its caches in place saves first, to put back if
    /// the step does not succeed. Empty when the write only appends (or its slot was not
    /// recorded).
    pub fn overwritten(&self, node: usize, write: &RowWrite) -> Range<usize> {
        let held = self.held(node, write.slot).unwrap_or(0);
        write.start..(write.start + write.count).min(held).max(write.start)
    }
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

    /// Records in `into` every cache's length in each slot of `slots` (slot ids as a step gives
    /// them) that `into` does not hold yet. Call it before the step records a write into those
    /// slots: a backend that knows the step's slots before it runs records them all at once, one
    /// that learns them as the graph runs records each cache's slots just before its write (a
    /// slot recorded earlier in the step keeps its first record). Ids outside the session are
    /// skipped (the write plan refuses them).
    pub fn record_lengths(&self, into: &mut SlotLengths, slots: &[i64]) {
        for &slot in slots {
            let Some(slot) = usize::try_from(slot).ok().filter(|&s| s < self.slots) else { continue };
            into.held.entry(slot).or_insert_with(|| {
                self.written
                    .iter()
                    .filter_map(|(&node, w)| Some((node, *w.get(slot)?)))
                    .filter(|&(_, n)| n > 0)
                    .collect()
            });
        }
    }

    /// Puts back every cache's length in the slots recorded in `before`
    /// ([`SessionState::record_lengths`]), after a step that was refused or failed: those slots
    /// hold what they held before it, in every cache (one the step wrote first holds nothing
    /// again). Slots not recorded are left alone.
    pub fn restore_lengths(&mut self, before: &SlotLengths) {
        for (&slot, held) in &before.held {
            for (node, w) in &mut self.written {
                if let Some(len) = w.get_mut(slot) {
                    *len = held.get(node).copied().unwrap_or(0);
                }
            }
        }
    }

    /// [`SessionState::restore_lengths`] for a backend that cannot undo what a failed run wrote
    /// into its caches: `ran` is the rows the run may have written, per cache node. A write past
    /// what its slot held is harmless (it is not counted, and attention never reads past a row's
    /// positions), but a write that started inside what the slot held may have replaced entries
    /// the slot still counts, so that cache is cut back to where the write started. The next step
    /// must then write from there; the backend documents where it does this.
    pub fn restore_lengths_cut_back(&mut self, before: &SlotLengths, ran: impl IntoIterator<Item = (usize, RowWrite)>) {
        self.restore_lengths(before);
        for (node, row) in ran {
            if !before.held.contains_key(&row.slot) {
                continue;
            }
            if let Some(len) = self.written.get_mut(&node).and_then(|w| w.get_mut(row.slot)) {
                *len = (*len).min(row.start);
            }
        }
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

    /// A state of `slots` slots where caches 0 and 1 hold `held` positions in slot 0.
    fn holding(slots: usize, held: usize) -> SessionState {
        let mut state = SessionState::new("test", ExecutableId::fresh(), slots, Box::new(()));
        let positions: Vec<i64> = (0..held as i64).collect();
        for node in [0, 1] {
            state.plan_cache_write(node, 8, &positions, &[0]).unwrap();
        }
        state
    }

    #[test]
    fn restoring_puts_back_what_a_step_recorded_before_it_was_refused() {
        let mut state = holding(3, 3);
        let mut before = SlotLengths::new();
        assert!(before.is_empty());
        state.record_lengths(&mut before, &[0, 1, -1, 7]);
        assert_eq!((before.held(0, 0), before.held(1, 1), before.held(0, 2)), (Some(3), Some(0), None));
        // Cache 0 accepts both rows, cache 1 refuses the second, cache 2 (new) took slot 1 first.
        state.plan_cache_write(2, 8, &[0, 1], &[1]).unwrap();
        state.plan_cache_write(0, 8, &[3, 0], &[0, 1]).unwrap();
        assert!(state.plan_cache_write(1, 8, &[3, 5], &[0, 1]).is_err());
        assert_eq!((state.slot_len(0), state.slot_len(1)), (4, 2));
        state.restore_lengths(&before);
        assert_eq!((state.slot_len(0), state.slot_len(1), state.slot_len(2)), (3, 0, 0));
        // Every cache is as before: caches 0 and 1 hold 3 positions of slot 0, none of slot 1;
        // cache 2 holds nothing.
        let err = state.plan_cache_write(2, 8, &[1], &[1]).unwrap_err();
        assert!(matches!(err, CacheWriteError::Gap { held: 0, .. }), "{err:?}");
        for node in [0, 1] {
            assert_eq!(state.plan_cache_write(node, 8, &[3, 0], &[0, 1]).unwrap().kv_len, 4);
        }
    }

    #[test]
    fn a_slot_keeps_its_first_record_and_unrecorded_slots_are_left_alone() {
        let mut state = holding(2, 3);
        let mut before = SlotLengths::new();
        state.record_lengths(&mut before, &[0]);
        state.plan_cache_write(0, 8, &[3, 4], &[0]).unwrap();
        // Recorded again later in the step (a second cache's slots): the first record stands.
        state.record_lengths(&mut before, &[0, 1]);
        assert_eq!((before.held(0, 0), before.held(1, 0), before.held(0, 1)), (Some(3), Some(3), Some(0)));
        let mut only_slot_1 = SlotLengths::new();
        state.record_lengths(&mut only_slot_1, &[1]);
        state.restore_lengths(&only_slot_1);
        assert_eq!(state.slot_len(0), 5, "slot 0 was not recorded in this snapshot");
        state.restore_lengths(&before);
        assert_eq!(state.slot_len(0), 3);
    }

    #[test]
    fn overwritten_is_the_part_of_a_write_inside_what_the_slot_held() {
        let state = holding(2, 5);
        let mut before = SlotLengths::new();
        state.record_lengths(&mut before, &[0, 1]);
        let row = |slot, start, count| RowWrite { slot, start, count };
        assert_eq!(before.overwritten(0, &row(0, 3, 4)), 3..5);
        assert_eq!(before.overwritten(1, &row(0, 0, 2)), 0..2);
        assert!(before.overwritten(0, &row(0, 5, 2)).is_empty(), "an append overwrites nothing");
        assert!(before.overwritten(0, &row(1, 0, 2)).is_empty(), "slot 1 held nothing");
        assert!(before.overwritten(7, &row(0, 0, 2)).is_empty(), "cache 7 held nothing");
        assert!(SlotLengths::new().overwritten(0, &row(0, 0, 2)).is_empty(), "not recorded");
    }

    #[test]
    fn cutting_back_keeps_only_what_came_before_a_rewrite_in_each_cache_it_ran() {
        let mut state = holding(2, 6);
        let mut before = SlotLengths::new();
        state.record_lengths(&mut before, &[0, 1]);
        // A run that rewrote 2..4 of slot 0 in cache 0 and appended to slot 1 in both caches.
        let w0 = state.plan_cache_write(0, 8, &[2, 3, 0, 1], &[0, 1]).unwrap();
        let w1 = state.plan_cache_write(1, 8, &[0, 1], &[1]).unwrap();
        let ran = w0.rows.iter().map(|&r| (0, r)).chain(w1.rows.iter().map(|&r| (1, r)));
        state.restore_lengths_cut_back(&before, ran);
        assert_eq!(state.slot_len(1), 0, "an append is not counted");
        // Cache 0 holds 2 positions of slot 0 now, cache 1 (not rewritten) still 6.
        let err = state.plan_cache_write(0, 8, &[3], &[0]).unwrap_err();
        assert!(matches!(err, CacheWriteError::Gap { held: 2, .. }), "{err:?}");
        assert_eq!(state.plan_cache_write(1, 8, &[6], &[0]).unwrap().kv_len, 7);
    }
}
