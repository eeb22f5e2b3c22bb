//! Giving memory back after a spike. A large batch or request body allocates hundreds of MB that
//! glibc keeps in its arenas after they are freed (freed chunks inside an arena are not returned,
//! and after a large free the mmap threshold rises so the next large blocks come from the arenas
//! too); the process then holds its peak for good. Work that allocates a lot says so with
//! [`note`]; once such work has added up to [`SPIKE_BYTES`] and traffic has calmed down (a tick
//! with little new work), the server calls `malloc_trim(0)`, which returns the free pages of every
//! arena. Under steady heavy load nothing is trimmed: the memory is being reused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Work since the last trim (bytes, roughly) that makes a trim worth its cost.
pub const SPIKE_BYTES: usize = 64 << 20;
/// How often the trimmer looks.
pub const TICK: Duration = Duration::from_secs(1);

static RECENT: AtomicUsize = AtomicUsize::new(0);

/// Records that about `bytes` were allocated and freed by one piece of work (a batch's activations,
/// a request body and its parsed form).
pub fn note(bytes: usize) {
    RECENT.fetch_add(bytes, Ordering::Relaxed);
}

/// Returns free heap memory to the operating system; false where the allocator has no such call.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Safety: malloc_trim takes no pointers; it only walks the allocator's own free lists.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The trimmer's state: what was noted since the last trim.
#[derive(Debug, Default)]
pub struct Trimmer {
    since_trim: usize,
}

impl Trimmer {
    /// One tick: takes what was noted since the last tick; true when a trim is due now (a spike has
    /// happened since the last trim, and the last tick was quiet).
    pub fn tick(&mut self) -> bool {
        let recent = RECENT.swap(0, Ordering::Relaxed);
        self.since_trim = self.since_trim.saturating_add(recent);
        if self.since_trim >= SPIKE_BYTES && recent < SPIKE_BYTES / 4 {
            self.since_trim = 0;
            return true;
        }
        false
    }
}

/// Runs until dropped (the server's lifetime): trims after spikes, off the async executor.
pub async fn trim_after_spikes() {
    let mut trimmer = Trimmer::default();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if trimmer.tick() {
            let started = std::time::Instant::now();
            if tokio::task::spawn_blocking(trim).await.unwrap_or(false) {
                tracing::debug!(
                    ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
                    "returned free memory (malloc_trim)"
                );
            }
        }
    }
}
