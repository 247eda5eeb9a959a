//! Where "now" comes from.
//!
//! The memory store and the local deny cache read a [`Clock`]; the Redis store reads
//! the Redis server's `TIME` so that every node agrees whatever its own clock says.
//! Tests inject a [`ManualClock`] and move time by hand instead of sleeping.
//!
//! The default is [`MonotonicClock`]: the wall clock read once, then the time elapsed
//! since, from the CPU's time-stamp counter where it is invariant. Reading the system
//! clock costs a `clock_gettime` and a conversion on every decision, as much as the
//! rest of an in-memory decision together (measured in `benches/governor.rs`); the
//! counter is a few nanoseconds. Being monotonic, it also means that a wall-clock step
//! (NTP, an operator) can neither refund nor freeze anyone's budget.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in microseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// The current time in microseconds since the Unix epoch.
    fn now_us(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> i64 {
        // A clock before 1970 or after year 292,277 is a broken machine; count it as 0
        // rather than panic inside a request.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }
}

/// Wall-clock time at creation plus the monotonic time elapsed since: the default clock
/// of the memory store and the limiter (see the [module docs](self) for why).
///
/// Elapsed time comes from the CPU's time-stamp counter, calibrated once per process
/// against the OS monotonic clock (up to 200 ms, on the first clock built), or from
/// the OS monotonic clock itself where the counter is not invariant. It does not follow
/// later wall-clock adjustments; what it measures is time spent, which is what a rate
/// limit needs. Clones share the same origin.
///
/// ```
/// use tollgate::{Clock, MonotonicClock, SystemClock};
///
/// let clock = MonotonicClock::new();
/// let (a, b) = (clock.now_us(), clock.now_us());
/// assert!(b >= a);
/// // Anchored to the wall clock when it was built.
/// assert!((a - SystemClock.now_us()).abs() < 1_000_000);
/// ```
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    origin_us: i64,
    origin_raw: u64,
    counter: quanta::Clock,
}

impl MonotonicClock {
    /// A clock that reads the wall clock now and counts from there.
    pub fn new() -> Self {
        let counter = quanta::Clock::new();
        let origin_raw = counter.raw();
        MonotonicClock {
            origin_us: SystemClock.now_us(),
            origin_raw,
            counter,
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_us(&self) -> i64 {
        let elapsed_ns = self
            .counter
            .delta_as_nanos(self.origin_raw, self.counter.raw());
        // u64 nanoseconds / 1000 fits an i64 (584,000 years of uptime).
        self.origin_us
            .saturating_add(i64::try_from(elapsed_ns / 1_000).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to: for deterministic tests.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_000_000);
/// clock.advance(Duration::from_millis(5));
/// assert_eq!(clock.now_us(), 1_005_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock that reads `start_us` until moved.
    pub fn new(start_us: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start_us)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.0.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to an absolute time.
    pub fn set(&self, now_us: i64) {
        self.0.store(now_us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_us(&self) -> i64 {
        (**self).now_us()
    }
}
