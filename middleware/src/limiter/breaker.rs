//! A circuit breaker, so an outage costs one timeout, not one per request.
//!
//! Closed: every decision goes to the store; `threshold` consecutive failures open
//! the breaker. Open: decisions skip the store (the failure mode answers at once) for
//! `cooldown`. Then half-open: one request probes the store; success closes the
//! breaker, failure opens it for another cooldown. A probe that never reports back (its
//! request was cancelled) is replaced after another cooldown, so the breaker cannot
//! stick open.
//!
//! Lock-free: three atomics, read on every decision. Time comes from tokio's clock, so
//! tests drive it with paused time.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The breaker's state, as exported in `ratelimiter_circuit_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Decisions go to the store.
    Closed = 0,
    /// Decisions skip the store.
    Open = 1,
    /// One probe may go to the store.
    HalfOpen = 2,
}

/// When the breaker opens and how long it stays open.
///
/// ```
/// use std::time::Duration;
/// use tollgate::limiter::BreakerConfig;
///
/// let config = BreakerConfig::new(5, Duration::from_secs(1));
/// assert_eq!(config.threshold, 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 3; 0 disables the breaker).
    pub threshold: u32,
    /// How long it stays open before a probe (default 500 ms).
    pub cooldown: Duration,
}

impl BreakerConfig {
    /// Opens after `threshold` consecutive failures (0 disables the breaker) for
    /// `cooldown`, then lets one probe through.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        BreakerConfig {
            threshold,
            cooldown,
        }
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 3,
            cooldown: Duration::from_millis(500),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    epoch: Instant,
    failures: AtomicU32,
    /// Microseconds since `epoch` until which the breaker is open; 0 = closed.
    open_until: AtomicI64,
    /// When the current probe started (µs since `epoch`); 0 = no probe.
    probe_started: AtomicI64,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicI64::new(0),
            probe_started: AtomicI64::new(0),
        }
    }

    fn now(&self) -> i64 {
        // +1 so that "now" is never the 0 sentinel.
        i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX) + 1
    }

    fn cooldown_us(&self) -> i64 {
        i64::try_from(self.config.cooldown.as_micros()).unwrap_or(i64::MAX)
    }

    /// Whether this decision may use the store.
    pub(crate) fn allow(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now();
        if now < until {
            return false;
        }
        let probe = self.probe_started.load(Ordering::Acquire);
        if probe != 0 && now - probe < self.cooldown_us() {
            return false;
        }
        self.probe_started
            .compare_exchange(probe, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn success(&self) {
        self.failures.store(0, Ordering::Release);
        self.probe_started.store(0, Ordering::Release);
        self.open_until.store(0, Ordering::Release);
    }

    pub(crate) fn failure(&self) {
        if self.config.threshold == 0 {
            return;
        }
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let half_open = self.open_until.load(Ordering::Acquire) != 0;
        if half_open || failures >= self.config.threshold {
            self.open_until
                .store(self.now() + self.cooldown_us(), Ordering::Release);
            self.probe_started.store(0, Ordering::Release);
        }
    }

    pub(crate) fn state(&self) -> CircuitState {
        match self.open_until.load(Ordering::Acquire) {
            0 => CircuitState::Closed,
            until if self.now() < until => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }

    /// How long until the next probe: a fair `Retry-After` while failing closed.
    pub(crate) fn remaining_open(&self) -> Duration {
        let until = self.open_until.load(Ordering::Acquire);
        let left = (until - self.now()).max(0);
        Duration::from_micros(u64::try_from(left).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_probes_once_and_closes_on_success() {
        let b = Breaker::new(BreakerConfig {
            threshold: 2,
            cooldown: Duration::from_secs(1),
        });
        assert!(b.allow());
        b.failure();
        assert_eq!(b.state(), CircuitState::Closed);
        b.failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!b.allow());
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.allow(), "one probe");
        assert!(!b.allow(), "only one probe");
        b.failure();
        assert_eq!(b.state(), CircuitState::Open, "failed probe reopens");
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.allow() && b.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_probe_is_replaced() {
        let b = Breaker::new(BreakerConfig {
            threshold: 1,
            cooldown: Duration::from_secs(1),
        });
        b.failure();
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.allow());
        // The probe's request is dropped and never reports.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(!b.allow());
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(b.allow(), "a new probe after a cooldown");
    }

    #[tokio::test(start_paused = true)]
    async fn threshold_zero_never_opens() {
        let b = Breaker::new(BreakerConfig {
            threshold: 0,
            cooldown: Duration::from_secs(1),
        });
        for _ in 0..10 {
            b.failure();
        }
        assert!(b.allow());
    }
}
