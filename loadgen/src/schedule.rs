//! The arrival schedule: when request *i* is meant to be sent, as a pure function of time.
//!
//! The loadgen is **open loop**: request *i* has an intended send time `t_i` fixed in advance
//! by the arrival rate, whatever the server is doing. Latency is measured from `t_i`, so a
//! server that stalls is charged for every request that should have gone out during the stall
//! (no coordinated omission).
//!
//! The rate is piecewise constant. Time starts steady at `rate`; with bursts on, a burst of
//! `duration` seconds at `rate × multiplier` starts at every multiple of `interval` after the
//! first (`[k·I, k·I + B)` for k ≥ 1), then the rate drops back to steady.
//!
//! With `Λ(t)` the expected number of arrivals in `[0, t)` (the integral of the rate), request
//! *i* is scheduled at `t_i = Λ⁻¹(i)`: with a constant rate that is just `i / rate`. Both
//! directions are closed-form here, so the scheduler never accumulates rounding error and tests
//! can check phase times and counts without sleeping. The number of requests a run of length
//! `D` sends is `ceil(Λ(D))` — the arrivals with `t_i < D` — independent of machine speed.

use std::time::Duration;

/// Periodic bursts on top of the steady rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstPlan {
    /// Rate multiplier during a burst.
    pub multiplier: f64,
    /// Burst length in seconds; shorter than `interval`.
    pub duration: f64,
    /// Seconds between burst starts; the first burst starts at `interval`.
    pub interval: f64,
}

/// Which rate is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The configured `RPS`.
    Steady,
    /// `RPS × BURST_MULTIPLIER`.
    Burst,
}

/// Arrival times for a steady rate with optional periodic bursts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate: f64,
    burst: Option<BurstPlan>,
}

impl Schedule {
    /// A schedule at `rate` requests per second with optional bursts.
    ///
    /// `rate` must be positive and finite, and a burst's `duration` shorter than its
    /// `interval` with a positive `multiplier`; [`crate::config::Config`] guarantees both.
    pub fn new(rate: f64, burst: Option<BurstPlan>) -> Self {
        debug_assert!(rate.is_finite() && rate > 0.0);
        debug_assert!(
            burst.is_none_or(|b| b.multiplier > 0.0 && b.duration > 0.0 && b.duration < b.interval)
        );
        Schedule { rate, burst }
    }

    /// The steady rate in requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The burst plan, if bursts are on.
    pub fn burst(&self) -> Option<BurstPlan> {
        self.burst
    }

    /// The phase in force at `elapsed` since the start.
    pub fn phase_at(&self, elapsed: Duration) -> Phase {
        let Some(b) = self.burst else {
            return Phase::Steady;
        };
        let t = elapsed.as_secs_f64();
        let k = (t / b.interval).floor();
        if k >= 1.0 && t - k * b.interval < b.duration {
            Phase::Burst
        } else {
            Phase::Steady
        }
    }

    /// The rate in force at `elapsed`, in requests per second.
    pub fn rate_at(&self, elapsed: Duration) -> f64 {
        match (self.phase_at(elapsed), self.burst) {
            (Phase::Burst, Some(b)) => self.rate * b.multiplier,
            _ => self.rate,
        }
    }

    /// The first phase change strictly after `elapsed`, or `None` without bursts.
    pub fn next_phase_change(&self, elapsed: Duration) -> Option<Duration> {
        let b = self.burst?;
        let t = elapsed.as_secs_f64();
        let k = (t / b.interval).floor();
        let burst_end = k * b.interval + b.duration;
        let next = if k >= 1.0 && t < burst_end {
            burst_end
        } else {
            (k + 1.0) * b.interval
        };
        Some(Duration::from_secs_f64(next))
    }

    /// When the phase in force at `elapsed` began.
    pub fn phase_started(&self, elapsed: Duration) -> Duration {
        let Some(b) = self.burst else {
            return Duration::ZERO;
        };
        let t = elapsed.as_secs_f64();
        let k = (t / b.interval).floor();
        let start = match self.phase_at(elapsed) {
            Phase::Burst => k * b.interval,
            Phase::Steady if k >= 1.0 => k * b.interval + b.duration,
            Phase::Steady => 0.0,
        };
        secs(start)
    }

    /// `Λ(t)`: the expected number of arrivals in `[0, elapsed)`, fractional.
    pub fn arrivals_before(&self, elapsed: Duration) -> f64 {
        let t = elapsed.as_secs_f64();
        let Some(b) = self.burst else {
            return self.rate * t;
        };
        let k = (t / b.interval).floor();
        // Bursts 1..k-1 are complete by k·I; burst k is partly done.
        let burst_secs = if k >= 1.0 {
            (k - 1.0) * b.duration + (t - k * b.interval).min(b.duration)
        } else {
            0.0
        };
        self.rate * t + self.rate * (b.multiplier - 1.0) * burst_secs
    }

    /// How many requests a run of length `run` sends: those with `t_i < run`.
    pub fn count_within(&self, run: Duration) -> u64 {
        // `ceil(Λ(run))` up to float rounding (the cast saturates); then settle the last step
        // against `send_time` itself, so the count agrees exactly with the times the loop uses.
        let mut n = self.arrivals_before(run).ceil() as u64;
        while n > 0 && self.send_time(n - 1) >= run {
            n -= 1;
        }
        while self.send_time(n) < run {
            n += 1;
        }
        n
    }

    /// `t_i`: the intended send time of request `i` (0-based), as an offset from the start.
    pub fn send_time(&self, i: u64) -> Duration {
        let x = i as f64;
        let Some(b) = self.burst else {
            return secs(x / self.rate);
        };
        let first_cycle = self.rate * b.interval;
        if x < first_cycle {
            return secs(x / self.rate);
        }
        let burst_arrivals = self.rate * b.multiplier * b.duration;
        let per_cycle = burst_arrivals + self.rate * (b.interval - b.duration);
        let into = x - first_cycle;
        let cycle = (into / per_cycle).floor();
        let rem = into - cycle * per_cycle;
        let cycle_start = (cycle + 1.0) * b.interval;
        if rem < burst_arrivals {
            secs(cycle_start + rem / (self.rate * b.multiplier))
        } else {
            secs(cycle_start + b.duration + (rem - burst_arrivals) / self.rate)
        }
    }
}

fn secs(s: f64) -> Duration {
    // Saturate instead of panicking if a run is long enough to overflow (it cannot be, in practice).
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn bursty() -> Schedule {
        Schedule::new(
            10.0,
            Some(BurstPlan {
                multiplier: 5.0,
                duration: 5.0,
                interval: 30.0,
            }),
        )
    }

    #[test]
    fn steady_rate_spaces_requests_evenly() {
        let s = Schedule::new(4.0, None);
        assert_eq!(s.send_time(0), ms(0));
        assert_eq!(s.send_time(1), ms(250));
        assert_eq!(s.send_time(40), ms(10_000));
        assert_eq!(s.count_within(ms(1000)), 4);
        assert_eq!(s.count_within(ms(1001)), 5);
        assert_eq!(s.phase_at(ms(1_000_000)), Phase::Steady);
        assert_eq!(s.next_phase_change(ms(0)), None);
    }

    #[test]
    fn phases_follow_the_burst_plan() {
        let s = bursty();
        assert_eq!(s.phase_at(ms(0)), Phase::Steady);
        assert_eq!(s.phase_at(ms(29_999)), Phase::Steady);
        assert_eq!(s.phase_at(ms(30_000)), Phase::Burst);
        assert_eq!(s.phase_at(ms(34_999)), Phase::Burst);
        assert_eq!(s.phase_at(ms(35_000)), Phase::Steady);
        assert_eq!(s.phase_at(ms(60_000)), Phase::Burst);
        assert_eq!(s.rate_at(ms(31_000)), 50.0);
        assert_eq!(s.rate_at(ms(36_000)), 10.0);
    }

    #[test]
    fn next_phase_change_walks_the_boundaries() {
        let s = bursty();
        assert_eq!(s.next_phase_change(ms(0)), Some(ms(30_000)));
        assert_eq!(s.next_phase_change(ms(30_000)), Some(ms(35_000)));
        assert_eq!(s.next_phase_change(ms(35_000)), Some(ms(60_000)));
        assert_eq!(s.next_phase_change(ms(61_000)), Some(ms(65_000)));
    }

    #[test]
    fn phase_started_finds_the_boundary_behind() {
        let s = bursty();
        assert_eq!(s.phase_started(ms(10_000)), ms(0));
        assert_eq!(s.phase_started(ms(31_500)), ms(30_000));
        assert_eq!(s.phase_started(ms(35_000)), ms(35_000));
        assert_eq!(s.phase_started(ms(59_999)), ms(35_000));
    }

    #[test]
    fn arrival_count_integrates_the_rate() {
        let s = bursty();
        assert_eq!(s.arrivals_before(ms(30_000)), 300.0);
        assert_eq!(s.arrivals_before(ms(35_000)), 550.0);
        assert_eq!(s.arrivals_before(ms(60_000)), 800.0);
        assert_eq!(s.arrivals_before(ms(62_000)), 900.0);
        assert_eq!(s.count_within(ms(62_000)), 900);
    }

    #[test]
    fn send_times_invert_the_arrival_count() {
        let s = bursty();
        assert_eq!(s.send_time(300), ms(30_000));
        assert_eq!(s.send_time(301), ms(30_020));
        assert_eq!(s.send_time(550), ms(35_000));
        assert_eq!(s.send_time(551), ms(35_100));
        assert_eq!(s.send_time(800), ms(60_000));
        for i in 0..3000 {
            let t = s.send_time(i);
            // Λ(t_i) = i, up to float rounding.
            assert!((s.arrivals_before(t) - i as f64).abs() < 1e-6, "i={i}");
            assert!(s.send_time(i + 1) > t, "times strictly increase at i={i}");
        }
    }

    #[test]
    fn count_matches_send_times() {
        let s = Schedule::new(
            50.0,
            Some(BurstPlan {
                multiplier: 4.0,
                duration: 0.5,
                interval: 1.0,
            }),
        );
        for run_ms in [0_u64, 1, 999, 1000, 1250, 1500, 2200, 5123] {
            let run = ms(run_ms);
            let by_times = (0..).take_while(|&i| s.send_time(i) < run).count() as u64;
            assert_eq!(s.count_within(run), by_times, "run={run_ms}ms");
        }
        assert_eq!(s.count_within(ms(2200)), 215);
    }
}
