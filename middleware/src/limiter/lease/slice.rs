//! One key's lease on one node: the slice it holds, how much of it may still be spent,
//! how fast the node sees the key's traffic, and how big the next slice should be.
//!
//! Everything here is synchronous arithmetic under the key's lock; the store calls live
//! in `mod.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::LeaseConfig;
use crate::algorithm::{Algorithm, LimitSpec, Verdict};
use crate::store::Check;

/// A refill is refused (the key goes exact) when the store's last reported remaining
/// budget holds fewer than this many slices: near the end of a budget every unit is
/// decided by the store, so the stranded units of other nodes' leases cannot make a
/// node refuse while budget is left.
pub(super) const LOW_WATER_SLICES: u64 = 4;

/// A slice of fewer units is not worth a lease: the key stays exact.
pub(super) const MIN_SLICE: u64 = 2;

/// The rate is re-estimated once this much time has passed since the last estimate.
const RATE_TICK: Duration = Duration::from_millis(10);

/// After this long without traffic the old estimate says nothing about the new one.
const RATE_STALE: Duration = Duration::from_secs(1);

/// Units a node has taken from the store in advance, to spend locally.
#[derive(Debug)]
pub(super) struct Lease {
    /// The policy, for the metrics of a give-back.
    pub(super) policy: Arc<str>,
    /// The check the units were charged against (to give them back).
    pub(super) check: Check,
    /// The local instant just *before* the charge was sent: never later than the
    /// store's instant of the charge, so every deadline computed from it is early.
    pub(super) taken: Instant,
    /// Units charged.
    pub(super) units: u64,
    /// Units admitted locally so far.
    pub(super) spent: u64,
    /// No unit is spent at or after this instant: `taken` + the smaller of `max_age`
    /// and, for the window algorithms, the end of the window the units were counted in.
    pub(super) expires: Instant,
    /// GCRA only: `(top_us, interval_us)`. The charge left the store's backlog
    /// `top_us` µs deep (its `reset_after`), this lease's units on top; the backlog
    /// drains from the bottom at one unit per interval, and a unit whose place has
    /// drained is no longer covered by the store's state, so it is forfeited rather
    /// than spent (the burst bound in docs/design.md rests on this).
    pub(super) backing: Option<(i64, i64)>,
    /// The store's remaining budget right after the charge.
    pub(super) remaining_after: u64,
    /// The store's `reset_after_us` right after the charge.
    pub(super) reset_after_us: i64,
    /// The refund mark; `None` when the store cannot give units back.
    pub(super) mark: Option<i64>,
    /// Distinguishes this lease from the key's later ones (expiry timers check it).
    pub(super) generation: u64,
}

impl Lease {
    fn elapsed_us(&self, now: Instant) -> i64 {
        i64::try_from(now.saturating_duration_since(self.taken).as_micros()).unwrap_or(i64::MAX)
    }

    /// Units that may still be spent at `now`.
    pub(super) fn spendable(&self, now: Instant) -> u64 {
        if now >= self.expires {
            return 0;
        }
        let left = self.units.saturating_sub(self.spent);
        match self.backing {
            None => left,
            Some((top_us, interval_us)) => {
                let backed = top_us.saturating_sub(self.elapsed_us(now)).max(0) / interval_us;
                left.min(u64::try_from(backed).unwrap_or(0))
            }
        }
    }

    /// Units charged but never spent (what a give-back may return).
    pub(super) fn unspent(&self) -> u64 {
        self.units.saturating_sub(self.spent)
    }

    /// Spends `cost` units if the lease still covers them, answering the verdict "as
    /// known": the store's remaining at the charge plus what this lease still holds.
    pub(super) fn reserve(&mut self, now: Instant, cost: u64) -> Option<Verdict> {
        let available = self.spendable(now);
        if available < cost {
            return None;
        }
        self.spent += cost;
        Some(Verdict {
            allowed: true,
            remaining: self.remaining_after.saturating_add(available - cost),
            reset_after_us: self
                .reset_after_us
                .saturating_sub(self.elapsed_us(now))
                .max(0),
            retry_after_us: 0,
        })
    }
}

/// The node's observed traffic for one key, in units per second.
#[derive(Debug)]
pub(super) struct RateMeter {
    since: Instant,
    units: u64,
    per_sec: f64,
}

impl RateMeter {
    pub(super) fn new(now: Instant) -> Self {
        RateMeter {
            since: now,
            units: 0,
            per_sec: 0.0,
        }
    }

    /// Counts `cost` units seen at `now`.
    pub(super) fn record(&mut self, now: Instant, cost: u64) {
        self.units = self.units.saturating_add(cost);
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= RATE_TICK {
            let sample = self.units as f64 / elapsed.as_secs_f64();
            // Half old, half new: follows a change within a few ticks, and one odd tick
            // does not halve or double the slice.
            self.per_sec = if self.per_sec == 0.0 || elapsed >= RATE_STALE {
                sample
            } else {
                (self.per_sec + sample) / 2.0
            };
            self.since = now;
            self.units = 0;
        }
    }

    /// The estimate (0 until one tick has passed).
    pub(super) fn per_sec(&self) -> f64 {
        self.per_sec
    }
}

/// What one node knows about one leased key.
#[derive(Debug)]
pub(super) struct KeyLease {
    pub(super) rate: RateMeter,
    pub(super) lease: Option<Lease>,
    /// A charge for this key is in flight: other requests meanwhile go exact rather
    /// than charge a second slice.
    pub(super) refilling: bool,
    /// The store's remaining budget at its last answer for this key (charge or exact
    /// decision); `None` before the first.
    pub(super) last_remaining: Option<u64>,
    /// The generation the next lease gets.
    pub(super) generation: u64,
    pub(super) last_seen: Instant,
}

impl KeyLease {
    pub(super) fn new(now: Instant) -> Self {
        KeyLease {
            rate: RateMeter::new(now),
            lease: None,
            refilling: false,
            last_remaining: None,
            generation: 0,
            last_seen: now,
        }
    }

    /// Spends from the current lease, if it covers `cost`.
    pub(super) fn reserve(&mut self, now: Instant, cost: u64) -> Option<Verdict> {
        self.lease.as_mut()?.reserve(now, cost)
    }

    /// Puts back `cost` units reserved from the lease of `generation` (a request of
    /// several limits refused by another limit).
    pub(super) fn release(&mut self, generation: u64, cost: u64) {
        if let Some(lease) = self.lease.as_mut().filter(|l| l.generation == generation) {
            lease.spent = lease.spent.saturating_sub(cost);
        }
    }

    /// The generation of the current lease (for [`release`](Self::release)).
    pub(super) fn current_generation(&self) -> u64 {
        self.lease.as_ref().map_or(0, |l| l.generation)
    }
}

/// The size of the next slice for a request of `cost`, or `None` when the key must be
/// decided exactly: cold (the slice would hold fewer than [`MIN_SLICE`] units or less
/// than the request), or its remaining budget is small.
pub(super) fn slice_size(
    config: &LeaseConfig,
    spec: &LimitSpec,
    per_sec: f64,
    last_remaining: Option<u64>,
    cost: u64,
) -> Option<u64> {
    let capacity = match spec.algorithm() {
        Algorithm::Gcra => spec.burst(),
        Algorithm::FixedWindow | Algorithm::SlidingWindow => spec.quota(),
    };
    // `as` saturates: a fraction of at most 1 of a u64 stays a u64.
    let cap = (capacity as f64 * config.get_max_fraction()).floor() as u64;
    let wanted = (per_sec * config.get_target().as_secs_f64()).ceil() as u64;
    // Near the end of the budget, slices shrink so that several fit in what is left,
    // then the key goes exact.
    let room = last_remaining? / LOW_WATER_SLICES;
    let slice = wanted.min(cap).min(room);
    (slice >= MIN_SLICE && slice >= cost).then_some(slice)
}

/// How long after the charge a lease may be spent: `max_age`, and for the window
/// algorithms never past the end of the window the charge counted its units in, which
/// the verdict's `reset_after_us` gives (`now` to the window's end for a fixed window,
/// to one window after it for a sliding one).
pub(super) fn lifetime(config: &LeaseConfig, spec: &LimitSpec, verdict: &Verdict) -> Duration {
    let max_age = max_age(config);
    let window_end_us = match spec.algorithm() {
        Algorithm::Gcra => return max_age,
        Algorithm::FixedWindow => verdict.reset_after_us,
        Algorithm::SlidingWindow => verdict.reset_after_us - spec.period_ms() * 1000,
    };
    let window_end = Duration::from_micros(u64::try_from(window_end_us).unwrap_or(0));
    max_age.min(window_end)
}

/// The longest a lease may live: `max_age`, capped at one hour so that adding it to an
/// `Instant` can never overflow, whatever the configuration says.
pub(super) fn max_age(config: &LeaseConfig) -> Duration {
    config.get_max_age().min(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(now: Instant, units: u64, backing: Option<(i64, i64)>) -> Lease {
        Lease {
            policy: "p".into(),
            check: Check::new("k", "100/s".parse().unwrap()),
            taken: now,
            units,
            spent: 0,
            expires: now + Duration::from_millis(250),
            backing,
            remaining_after: 50,
            reset_after_us: 1_000,
            mark: Some(1),
            generation: 1,
        }
    }

    #[test]
    fn a_lease_spends_its_units_then_refuses() {
        let now = Instant::now();
        let mut l = lease(now, 3, None);
        assert_eq!(l.reserve(now, 2).map(|v| v.remaining), Some(51));
        assert_eq!(l.reserve(now, 2), None);
        assert_eq!(l.reserve(now, 1).map(|v| v.remaining), Some(50));
        assert_eq!(l.unspent(), 0);
    }

    #[test]
    fn a_lease_is_never_spent_after_it_expires() {
        let now = Instant::now();
        let mut l = lease(now, 10, None);
        assert_eq!(l.reserve(now + Duration::from_millis(250), 1), None);
    }

    #[test]
    fn gcra_units_whose_backlog_drained_are_forfeited() {
        let now = Instant::now();
        // 10 units on top of a backlog 10 intervals (of 1 ms) deep: after 4 ms only 6
        // places are still covered.
        let l = lease(now, 10, Some((10_000, 1_000)));
        assert_eq!(l.spendable(now), 10);
        assert_eq!(l.spendable(now + Duration::from_millis(4)), 6);
        assert_eq!(l.spendable(now + Duration::from_millis(11)), 0);
        // A deeper backlog covers the whole lease longer.
        let l = lease(now, 10, Some((30_000, 1_000)));
        assert_eq!(l.spendable(now + Duration::from_millis(15)), 10);
    }

    #[test]
    fn slices_follow_the_rate_within_the_caps() {
        let config = LeaseConfig::new();
        let big: LimitSpec = "100000/s".parse().unwrap();
        // 50k/s × 20 ms = 1000 units, under 10 % of the burst.
        assert_eq!(
            slice_size(&config, &big, 50_000.0, Some(100_000), 1),
            Some(1000)
        );
        // Capped at 10 % of the burst.
        assert_eq!(
            slice_size(&config, &big, 1e9, Some(100_000), 1),
            Some(10_000)
        );
        // Shrunk so four fit in what is left, then exact.
        assert_eq!(
            slice_size(&config, &big, 50_000.0, Some(2_000), 1),
            Some(500)
        );
        assert_eq!(slice_size(&config, &big, 50_000.0, Some(7), 1), None);
        // Cold, unknown, or a small limit: exact.
        assert_eq!(slice_size(&config, &big, 10.0, Some(100_000), 1), None);
        assert_eq!(slice_size(&config, &big, 50_000.0, None, 1), None);
        let small: LimitSpec = "10/m".parse().unwrap();
        assert_eq!(slice_size(&config, &small, 1e9, Some(10), 1), None);
    }

    #[test]
    fn window_leases_end_with_their_window() {
        let config = LeaseConfig::new();
        let fixed = LimitSpec::parse_with("100/s", Algorithm::FixedWindow).unwrap();
        let v = Verdict {
            allowed: true,
            remaining: 0,
            reset_after_us: 30_000,
            retry_after_us: 0,
        };
        assert_eq!(lifetime(&config, &fixed, &v), Duration::from_millis(30));
        let sliding = LimitSpec::parse_with("100/s", Algorithm::SlidingWindow).unwrap();
        let v = Verdict {
            reset_after_us: 1_040_000,
            ..v
        };
        assert_eq!(lifetime(&config, &sliding, &v), Duration::from_millis(40));
        let gcra: LimitSpec = "100/s".parse().unwrap();
        assert_eq!(lifetime(&config, &gcra, &v), Duration::from_millis(250));
    }
}
