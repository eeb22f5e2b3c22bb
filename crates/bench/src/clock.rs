//! Time as the scenarios see it: the wall clock when measuring, a virtual clock in tests (a fake
//! workload advances it by known service times, so percentiles and throughput are exact).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The time source of a scenario. Times are offsets from the clock's own start, not wall-clock
/// instants, so a real and a virtual clock read the same way.
pub trait Clock: Send + Sync {
    /// Time since the clock started.
    fn now(&self) -> Duration;
    /// Waits until `now() ≥ t`.
    fn sleep_until(&self, t: Duration);
}

/// The monotonic wall clock ([`Instant`]), started when made; what every measured run uses.
pub struct RealClock {
    start: Instant,
}

impl RealClock {
    /// A clock reading zero now.
    pub fn new() -> RealClock {
        RealClock { start: Instant::now() }
    }
}

impl Default for RealClock {
    fn default() -> Self {
        RealClock::new()
    }
}

impl Clock for RealClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn sleep_until(&self, t: Duration) {
        let now = self.now();
        if t > now {
            std::thread::sleep(t - now);
        }
    }
}

/// A clock that only moves when told to: [`Clock::sleep_until`] jumps to the target instead of
/// waiting, so tests of the scenarios run instantly and give exact numbers.
#[derive(Default)]
pub struct VirtualClock {
    now: Mutex<Duration>,
}

impl VirtualClock {
    /// A clock at zero; it stays there until [`VirtualClock::advance`] or [`Clock::sleep_until`]
    /// moves it.
    pub fn new() -> VirtualClock {
        VirtualClock::default()
    }

    /// Moves the clock forward by `d` (a fake workload calls this with its service time).
    pub fn advance(&self, d: Duration) {
        *self.now.lock().expect("clock lock") += d;
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Duration {
        *self.now.lock().expect("clock lock")
    }

    fn sleep_until(&self, t: Duration) {
        let mut now = self.now.lock().expect("clock lock");
        if t > *now {
            *now = t;
        }
    }
}
