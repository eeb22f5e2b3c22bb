//! A fork-join team for the CPU kernels of a decode step.
//!
//! A decode step runs a few hundred matrix-vector products of 20–100 µs each. Handing each to a
//! general thread pool costs a wake-up (a futex call, slow in a VM) whenever the workers have gone
//! to sleep in between. The team's helpers instead spin for a short while after each job, so the
//! next job of the step finds them awake; the calling thread works on its share too. After about
//! a millisecond without work the helpers park, so an idle process does not burn CPU.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long helpers spin for the next job before they park.
const SPIN: Duration = Duration::from_millis(1);

/// The job of one `Team::run`: `parts` calls of `f`, taken in order by whoever is free.
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    parts: usize,
    next: AtomicUsize,
}

struct Shared {
    /// Bumped for every job; helpers watch it.
    generation: AtomicU64,
    job: AtomicPtr<Job>,
    /// Helpers still working on the current job.
    pending: AtomicUsize,
    /// Helpers that are parked (or about to park).
    parked: AtomicUsize,
}

pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<Thread>,
    /// Held while a job runs: the team serves one caller at a time.
    busy: Mutex<()>,
}

impl Team {
    fn new(helpers: usize) -> Team {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            pending: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
        });
        let helpers = (0..helpers)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("accelrt-team-{i}"))
                    .spawn(move || helper(&shared))
                    .expect("the kernel team's threads start")
                    .thread()
                    .clone()
            })
            .collect();
        Team { shared, helpers, busy: Mutex::new(()) }
    }

    /// Threads working on a job, the caller included.
    pub fn size(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Calls `f(0..parts)`, spread over the team; returns when all calls are done. While another
    /// thread's job holds the team (two models running at once), the caller runs its job alone.
    pub fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.helpers.is_empty() || parts <= 1 {
            (0..parts).for_each(f);
            return;
        }
        let Ok(_busy) = self.busy.try_lock() else {
            (0..parts).for_each(f);
            return;
        };
        // SAFETY (lifetime erasure): helpers only dereference `f` between seeing this job's
        // generation and decrementing `pending`, and this function does not return before
        // `pending` is back to zero.
        let f: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        let job = Job { f, parts, next: AtomicUsize::new(0) };
        let shared = &self.shared;
        shared.pending.store(self.helpers.len(), Ordering::Relaxed);
        shared.job.store(&job as *const Job as *mut Job, Ordering::Relaxed);
        // SeqCst here and in the helper's park path: each side writes one flag and then reads the
        // other's, and only a total order guarantees that at least one of them sees the other.
        shared.generation.fetch_add(1, Ordering::SeqCst);
        if shared.parked.load(Ordering::SeqCst) > 0 {
            self.helpers.iter().for_each(Thread::unpark);
        }
        work(&job);
        while shared.pending.load(Ordering::Acquire) > 0 {
            std::hint::spin_loop();
        }
    }
}

fn work(job: &Job) {
    loop {
        let i = job.next.fetch_add(1, Ordering::Relaxed);
        if i >= job.parts {
            return;
        }
        // SAFETY: see `Team::run`.
        unsafe { (*job.f)(i) };
    }
}

fn helper(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let started = Instant::now();
        let mut spins = 0u32;
        let generation = loop {
            let g = shared.generation.load(Ordering::Acquire);
            if g != seen {
                break g;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && started.elapsed() > SPIN {
                shared.parked.fetch_add(1, Ordering::SeqCst);
                // Re-check after announcing: a job published before the announcement is not missed,
                // and one published after it unparks this thread (park returns at once then).
                if shared.generation.load(Ordering::SeqCst) == seen {
                    std::thread::park();
                }
                shared.parked.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            std::hint::spin_loop();
        };
        seen = generation;
        let job = shared.job.load(Ordering::Relaxed);
        // SAFETY: the job outlives this use (see `Team::run`).
        work(unsafe { &*job });
        shared.pending.fetch_sub(1, Ordering::Release);
    }
}

/// The process-wide team: one thread per core (`ACCELRT_THREADS` or `RAYON_NUM_THREADS` to change).
pub fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let threads = ["ACCELRT_THREADS", "RAYON_NUM_THREADS"]
            .iter()
            .find_map(|v| std::env::var(v).ok().and_then(|s| s.parse::<usize>().ok()).filter(|&n| n > 0))
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Team::new(threads - 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_across_many_jobs() {
        let team = Team::new(3);
        for parts in [0, 1, 2, 7, 64] {
            for _ in 0..200 {
                let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
                team.run(parts, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
        // Callers on several threads at once each get their job done.
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        let hits: Vec<AtomicUsize> = (0..9).map(|_| AtomicUsize::new(0)).collect();
                        team.run(9, &|i| {
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                    }
                });
            }
        });
        // After the helpers have parked, a job still completes.
        std::thread::sleep(Duration::from_millis(20));
        let total = AtomicUsize::new(0);
        team.run(16, &|i| {
            total.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), (0..16).sum::<usize>());
    }
}
