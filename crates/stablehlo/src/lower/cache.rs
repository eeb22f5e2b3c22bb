//! KV caches as explicit state: the cache tensor comes in as an argument and its updated value
//! goes out as a result.

use crate::emit::{Elem, Emitter, R, V};

/// Writes x [b, h, n, d] into `cache` [slots, h, capacity, d]: row r at slot slots[r], positions
/// positions[r, 0] .. + n. Returns every row's whole cache [b, h, capacity, d] (`kv_len` is the
/// capacity; attention with q_positions never reads past a row's position) and the updated cache.
///
/// Rows are unrolled (the bucket fixes the batch). `dynamic_update_slice` clamps a start that
/// would overflow the capacity, so the runtime checks writes first (`SessionState::plan_cache_write`).
pub(super) fn kv_cache(e: &mut Emitter, x: &V, positions: &V, slots: &V, cache: &V) -> R<(V, V)> {
    let [b, h, n, d] = <[usize; 4]>::try_from(x.shape()).map_err(|_| format!("x {} is not rank 4", x.ty))?;
    let capacity = cache.shape()[2];
    if cache.shape() != [cache.shape()[0], h, capacity, d] || cache.elem() != x.elem() {
        return Err(format!("cache {} does not hold x {}", cache.ty, x.ty));
    }
    if n == 0 || n > capacity {
        return Err(format!("{n} new entries for a cache of capacity {capacity}"));
    }
    let positions = e.convert(positions, Elem::I32);
    let slots = e.convert(slots, Elem::I32);
    let zero = e.scalar(Elem::I32, 0.0);
    let mut row_slots = Vec::with_capacity(b);
    let mut updated = cache.clone();
    for r in 0..b {
        let slot = e.element(&slots, &[r])?;
        let start = e.element(&positions, &[r, 0])?;
        let row = e.slice_axis(x, 0, r, r + 1);
        updated = e.dynamic_update_slice(&updated, &row, &[&slot, &zero, &start, &zero]);
        row_slots.push(slot);
    }
    let mut rows = Vec::with_capacity(b);
    for slot in &row_slots {
        rows.push(e.dynamic_slice(&updated, &[slot, &zero, &zero, &zero], &[1, h, capacity, d]));
    }
    let out = e.concatenate(&rows.iter().collect::<Vec<_>>(), 0)?;
    Ok((out, updated))
}
