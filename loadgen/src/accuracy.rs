//! The accuracy report: did the limiter admit more than its policy allows?
//!
//! Given the policy (sent with every request in `check` mode, or told to the loadgen in
//! `proxy` mode) and the run's elapsed time `D`, [`Policy::allowed_max`] is the most requests a
//! correct limiter can admit for one key. For every key that received traffic the report
//! compares admitted (HTTP 200) with that maximum, and sums the excess over all keys — across
//! all targets, because the counts are per key, not per target. When three sidecars share one
//! limit the excess stays 0; when each counts on its own, the hot keys get up to three times
//! their share and the excess shows it.
//!
//! ## The bounds, for `D` in milliseconds and window `W = WINDOW_MS`
//!
//! - **gcra**: `BURST + floor(LIMIT · D / W)` — the bucket starts at most full (`BURST`) and
//!   refills one request every `W / LIMIT` ms.
//! - **fixed-window**: `LIMIT · (ceil(D / W) + 1)` — each window admits `LIMIT`, and a span of
//!   length `D` that starts anywhere touches at most `ceil(D / W) + 1` windows (the span
//!   `[a, a + D]` meets windows `floor(a/W) ..= floor((a+D)/W)`, and
//!   `floor(x + y) − floor(x) ≤ ceil(y)`). That equals `floor(D / W) + 2` except when `D` is an
//!   exact multiple of `W`, where the `+2` form would count one window the span cannot reach.
//! - **sliding-window**: `LIMIT · (ceil(D / W) + 1)` — split the span into `ceil(D / W)` pieces
//!   no longer than `W` plus its closing instant; each admits at most `LIMIT`. This also holds
//!   for the weighted two-window approximation, which never admits more than a fixed window.
//!
//! `D` runs from the first intended send to the last response, which contains every decision
//! the limiter made for this run, so the bound is never too tight. The over-admission
//! percentage is `100 · Σ max(0, admitted_k − allowed_max) / Σ allowed_max`, both sums over the
//! keys that received at least one request.
//!
//! The other direction — did it admit *less* than it could? — is `admitted_pct_of_ideal`:
//! `100 · Σ admitted_k / Σ min(requests_k, allowed_max)`. The ideal per key is what a limiter
//! that never refuses early could admit: every request while under the maximum. It is an upper
//! bound (a perfect limiter reaches it under steady load at or above the limit; bursts that
//! arrive before tokens refill make it unreachable), so 100 % is the aim and a limiter that
//! strands budget — units leased by one node while another refuses (`consistency = "leased"`)
//! — shows below it. Above 100 % only together with an over-admission.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The limiting algorithm whose bound the report uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Generic cell rate algorithm (a token bucket with capacity `BURST`).
    Gcra,
    /// A sliding window of `WINDOW_MS`.
    SlidingWindow,
    /// Windows aligned to multiples of `WINDOW_MS`.
    FixedWindow,
}

/// A value that is not one of the three algorithm names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected gcra, sliding-window or fixed-window")]
pub struct UnknownAlgorithm;

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gcra" => Ok(Algorithm::Gcra),
            "sliding-window" => Ok(Algorithm::SlidingWindow),
            "fixed-window" => Ok(Algorithm::FixedWindow),
            _ => Err(UnknownAlgorithm),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Gcra => "gcra",
            Algorithm::SlidingWindow => "sliding-window",
            Algorithm::FixedWindow => "fixed-window",
        })
    }
}

/// The rate-limit policy a key is subject to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Which bound applies.
    pub algorithm: Algorithm,
    /// Requests per window.
    pub limit: u64,
    /// Window length in milliseconds (> 0).
    pub window_ms: u64,
    /// GCRA bucket capacity; ignored by the window algorithms.
    pub burst: u64,
}

impl Policy {
    /// The most requests one key can be admitted over a run of length `elapsed`.
    pub fn allowed_max(&self, elapsed: Duration) -> u64 {
        // f64 is exact for the millisecond spans and limits accepted by the config.
        let d = elapsed.as_secs_f64() * 1000.0;
        let w = self.window_ms as f64;
        let limit = self.limit as f64;
        let max = match self.algorithm {
            Algorithm::Gcra => self.burst as f64 + (limit * d / w).floor(),
            Algorithm::FixedWindow | Algorithm::SlidingWindow => limit * ((d / w).ceil() + 1.0),
        };
        max as u64
    }
}

/// Per-key counts the report is built from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCounts {
    /// Requests sent with this key.
    pub requests: u64,
    /// Answered 200 (admitted).
    pub admitted: u64,
    /// Answered 429 (denied).
    pub denied: u64,
}

/// One key's line in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAccuracy {
    /// The key.
    pub key: String,
    /// Requests sent with it.
    pub requests: u64,
    /// Admitted (200).
    pub admitted: u64,
    /// Denied (429).
    pub denied: u64,
    /// The policy's maximum over the run.
    pub allowed_max: u64,
    /// `max(0, admitted − allowed_max)`.
    pub excess: u64,
}

/// How many per-key lines the report keeps (the worst first); totals always cover every key.
pub const MAX_KEYS_LISTED: usize = 1000;

/// The whole accuracy report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuracyReport {
    /// The policy assumed.
    pub policy: Policy,
    /// `D`: first intended send to last response, in milliseconds.
    pub elapsed_ms: f64,
    /// Keys that received at least one request.
    pub keys: u64,
    /// Per-key maximum for this run.
    pub allowed_max_per_key: u64,
    /// Σ admitted over those keys.
    pub admitted: u64,
    /// Σ allowed_max over those keys.
    pub allowed_max_total: u64,
    /// Σ excess over those keys.
    pub excess: u64,
    /// Keys whose admitted count exceeded the maximum.
    pub keys_over: u64,
    /// `100 · excess / allowed_max_total`.
    pub over_admission_pct: f64,
    /// Σ min(requests, allowed_max) over those keys: the most a limiter could have admitted
    /// of what was sent.
    pub ideal_total: u64,
    /// `100 · admitted / ideal_total`: below 100 % is budget left unused (under-admission).
    pub admitted_pct_of_ideal: f64,
    /// Per-key lines, worst excess first then most admitted, at most [`MAX_KEYS_LISTED`].
    pub per_key: Vec<KeyAccuracy>,
    /// Keys left out of `per_key` by the cap.
    pub per_key_omitted: u64,
}

impl AccuracyReport {
    /// Builds the report from `(key name, counts)` pairs; keys with no requests are skipped.
    pub fn build<'a>(
        policy: Policy,
        elapsed: Duration,
        keys: impl IntoIterator<Item = (&'a str, KeyCounts)>,
    ) -> Self {
        let allowed_max = policy.allowed_max(elapsed);
        let mut lines: Vec<KeyAccuracy> = keys
            .into_iter()
            .filter(|(_, c)| c.requests > 0)
            .map(|(key, c)| KeyAccuracy {
                key: key.to_owned(),
                requests: c.requests,
                admitted: c.admitted,
                denied: c.denied,
                allowed_max,
                excess: c.admitted.saturating_sub(allowed_max),
            })
            .collect();
        let keys = lines.len() as u64;
        let admitted = lines.iter().map(|l| l.admitted).sum();
        let excess: u64 = lines.iter().map(|l| l.excess).sum();
        let keys_over = lines.iter().filter(|l| l.excess > 0).count() as u64;
        let ideal_total: u64 = lines.iter().map(|l| l.requests.min(allowed_max)).sum();
        let admitted_pct_of_ideal = if ideal_total == 0 {
            0.0
        } else {
            100.0 * admitted as f64 / ideal_total as f64
        };
        let allowed_max_total = allowed_max.saturating_mul(keys);
        let over_admission_pct = if allowed_max_total == 0 {
            0.0
        } else {
            100.0 * excess as f64 / allowed_max_total as f64
        };
        lines.sort_by(|a, b| {
            b.excess
                .cmp(&a.excess)
                .then(b.admitted.cmp(&a.admitted))
                .then(a.key.cmp(&b.key))
        });
        let per_key_omitted = lines.len().saturating_sub(MAX_KEYS_LISTED) as u64;
        lines.truncate(MAX_KEYS_LISTED);
        AccuracyReport {
            policy,
            elapsed_ms: elapsed.as_secs_f64() * 1000.0,
            keys,
            allowed_max_per_key: allowed_max,
            admitted,
            allowed_max_total,
            excess,
            keys_over,
            over_admission_pct,
            ideal_total,
            admitted_pct_of_ideal,
            per_key: lines,
            per_key_omitted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(algorithm: Algorithm) -> Policy {
        Policy {
            algorithm,
            limit: 100,
            window_ms: 60_000,
            burst: 100,
        }
    }

    #[test]
    fn gcra_bound_is_burst_plus_refill() {
        let p = policy(Algorithm::Gcra);
        assert_eq!(p.allowed_max(Duration::ZERO), 100);
        assert_eq!(p.allowed_max(Duration::from_millis(599)), 100);
        assert_eq!(p.allowed_max(Duration::from_millis(600)), 101);
        assert_eq!(p.allowed_max(Duration::from_secs(60)), 200);
        let small_burst = Policy { burst: 5, ..p };
        assert_eq!(small_burst.allowed_max(Duration::from_secs(30)), 55);
    }

    #[test]
    fn window_bounds_count_the_windows_a_span_can_touch() {
        for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindow] {
            let p = policy(algorithm);
            assert_eq!(p.allowed_max(Duration::from_millis(1)), 200, "{algorithm}");
            assert_eq!(p.allowed_max(Duration::from_secs(60)), 200, "{algorithm}");
            assert_eq!(
                p.allowed_max(Duration::from_millis(60_001)),
                300,
                "{algorithm}"
            );
            assert_eq!(p.allowed_max(Duration::from_secs(150)), 400, "{algorithm}");
        }
    }

    #[test]
    fn report_sums_excess_over_keys_with_traffic() {
        let p = Policy {
            algorithm: Algorithm::FixedWindow,
            limit: 10,
            window_ms: 1000,
            burst: 10,
        };
        // D = 1.5 s → ceil(1.5) + 1 = 3 windows → 30 per key.
        let keys = [
            (
                "hot",
                KeyCounts {
                    requests: 100,
                    admitted: 45,
                    denied: 55,
                },
            ),
            (
                "warm",
                KeyCounts {
                    requests: 20,
                    admitted: 20,
                    denied: 0,
                },
            ),
            ("idle", KeyCounts::default()),
        ];
        let r = AccuracyReport::build(p, Duration::from_millis(1500), keys);
        assert_eq!(r.keys, 2);
        assert_eq!(r.allowed_max_per_key, 30);
        assert_eq!(r.allowed_max_total, 60);
        assert_eq!(r.admitted, 65);
        assert_eq!(r.excess, 15);
        assert_eq!(r.keys_over, 1);
        assert!((r.over_admission_pct - 25.0).abs() < 1e-9);
        // Ideal: min(100, 30) for hot + min(20, 30) for warm = 50; 65 admitted of it.
        assert_eq!(r.ideal_total, 50);
        assert!((r.admitted_pct_of_ideal - 130.0).abs() < 1e-9);
        assert_eq!(r.per_key[0].key, "hot");
        assert_eq!(r.per_key[0].excess, 15);
        assert_eq!(r.per_key.len(), 2);
    }

    #[test]
    fn stranded_budget_shows_as_admitted_below_ideal() {
        let p = Policy {
            algorithm: Algorithm::Gcra,
            limit: 10,
            window_ms: 1000,
            burst: 10,
        };
        // D = 2 s → max 10 + 20 = 30; 100 sent, 24 admitted: 80 % of what it could have.
        let counts = KeyCounts {
            requests: 100,
            admitted: 24,
            denied: 76,
        };
        let r = AccuracyReport::build(p, Duration::from_secs(2), [("k", counts)]);
        assert_eq!((r.ideal_total, r.excess), (30, 0));
        assert!((r.admitted_pct_of_ideal - 80.0).abs() < 1e-9);
        // Fewer sent than the maximum: the ideal is what was sent.
        let light = KeyCounts {
            requests: 12,
            admitted: 12,
            denied: 0,
        };
        let r = AccuracyReport::build(p, Duration::from_secs(2), [("k", light)]);
        assert_eq!(r.ideal_total, 12);
        assert!((r.admitted_pct_of_ideal - 100.0).abs() < 1e-9);
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in [
            Algorithm::Gcra,
            Algorithm::SlidingWindow,
            Algorithm::FixedWindow,
        ] {
            assert_eq!(a.to_string().parse::<Algorithm>(), Ok(a));
        }
        assert_eq!("token-bucket".parse::<Algorithm>(), Err(UnknownAlgorithm));
    }
}
