//! [`LimitSpec`]: one validated limit (algorithm, quota, period, burst).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The largest value any intermediate product may reach (2^50); see the module docs.
pub const MAX_EXACT: i64 = 1 << 50;

/// How a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// Generic cell rate algorithm: a smooth token bucket that stores one timestamp.
    /// `quota` units per `period`, up to `burst` at once. The default.
    #[default]
    Gcra,
    /// Weighted two-counter sliding window: the previous window's count is weighted by
    /// how much of it still overlaps the sliding window.
    SlidingWindow,
    /// Fixed window: at most `quota` units per calendar-aligned window.
    FixedWindow,
}

impl Algorithm {
    /// The name used in configuration files and the Lua script.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Gcra => "gcra",
            Algorithm::SlidingWindow => "sliding-window",
            Algorithm::FixedWindow => "fixed-window",
        }
    }

    /// The small integer the Lua script switches on.
    #[cfg(feature = "redis")]
    pub(crate) fn code(self) -> u8 {
        match self {
            Algorithm::Gcra => 0,
            Algorithm::FixedWindow => 1,
            Algorithm::SlidingWindow => 2,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gcra" | "token-bucket" => Ok(Algorithm::Gcra),
            "sliding-window" | "sliding_window" => Ok(Algorithm::SlidingWindow),
            "fixed-window" | "fixed_window" => Ok(Algorithm::FixedWindow),
            other => Err(SpecError::UnknownAlgorithm(other.to_owned())),
        }
    }
}

/// Why a limit specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The text is not of the form `N/period[,burst=B]`.
    #[error("invalid limit {0:?}: expected N/period with an optional ,burst=B (e.g. 100/1m, 10/s,burst=20)")]
    Syntax(String),
    /// The period is not a duration this crate understands.
    #[error(
        "invalid period {0:?}: expected a number and a unit among ms, s, m, h, d (e.g. 30s, 1m)"
    )]
    Period(String),
    /// The quota is zero.
    #[error("quota must be at least 1")]
    ZeroQuota,
    /// The period is shorter than a millisecond or not a whole number of milliseconds.
    #[error("period must be a whole number of milliseconds, at least 1ms")]
    Period0,
    /// The period is longer than a year.
    #[error("period must be at most 365 days")]
    PeriodTooLong,
    /// More than one unit per microsecond.
    #[error("quota {quota} per {period:?} is finer than one unit per microsecond")]
    TooFine {
        /// Units per period.
        quota: u64,
        /// The period.
        period: Duration,
    },
    /// The burst is zero or is used with a window algorithm.
    #[error("burst must be at least 1")]
    ZeroBurst,
    /// A burst was given for a window algorithm, which has no bucket to size.
    #[error("burst applies to gcra only; {0} admits at most the quota per window")]
    BurstWithWindow(Algorithm),
    /// The numbers are too large to decide exactly (see [`MAX_EXACT`]).
    #[error("limit too large to decide exactly: quota × period (ms) and burst × interval must stay below 2^50")]
    TooLarge,
    /// The algorithm name is unknown.
    #[error("unknown algorithm {0:?}: expected gcra, sliding-window or fixed-window")]
    UnknownAlgorithm(String),
}

/// One validated limit: `quota` units per `period` counted by `algorithm`, with `burst`
/// (GCRA only) the most that may be admitted at once.
///
/// Parse the compact form used by the sidecar's flags, or build it in code:
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Algorithm, LimitSpec};
///
/// let a: LimitSpec = "100/1m".parse()?;
/// assert_eq!(a.quota(), 100);
/// assert_eq!(a.period(), Duration::from_secs(60));
///
/// let b: LimitSpec = "10/s,burst=20".parse()?;
/// assert_eq!(b.burst(), 20);
///
/// let c = LimitSpec::new(Algorithm::SlidingWindow, 1000, Duration::from_secs(86_400), None)?;
/// assert_eq!(c.algorithm(), Algorithm::SlidingWindow);
/// # Ok::<(), tollgate::SpecError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitSpec {
    algorithm: Algorithm,
    quota: u64,
    period_ms: i64,
    burst: u64,
    /// GCRA emission interval: the period divided by the quota, in whole microseconds
    /// (rounded down, so a limit is never stricter than asked by more than 1 µs per unit).
    interval_us: i64,
}

impl LimitSpec {
    /// Validates and builds a limit. `burst` defaults to `quota`.
    ///
    /// # Errors
    ///
    /// A [`SpecError`] naming the reason: zero quota or burst, a period that is not a
    /// whole number of milliseconds between 1 ms and 365 days, a burst given to a
    /// window algorithm, or numbers too large to decide exactly.
    pub fn new(
        algorithm: Algorithm,
        quota: u64,
        period: Duration,
        burst: Option<u64>,
    ) -> Result<Self, SpecError> {
        if quota == 0 {
            return Err(SpecError::ZeroQuota);
        }
        let period_us = period.as_micros();
        if period_us < 1000 || !period_us.is_multiple_of(1000) {
            return Err(SpecError::Period0);
        }
        if period > Duration::from_secs(365 * 86_400) {
            return Err(SpecError::PeriodTooLong);
        }
        // Bounded by the year check above, so these casts cannot truncate.
        let period_ms = (period_us / 1000) as i64;
        let quota_i = i64::try_from(quota).map_err(|_| SpecError::TooLarge)?;
        let interval_us = (period_ms * 1000) / quota_i;
        if interval_us < 1 {
            return Err(SpecError::TooFine { quota, period });
        }
        if burst.is_some() && algorithm != Algorithm::Gcra {
            return Err(SpecError::BurstWithWindow(algorithm));
        }
        let burst = burst.unwrap_or(quota);
        if burst == 0 {
            return Err(SpecError::ZeroBurst);
        }
        let burst_i = i64::try_from(burst).map_err(|_| SpecError::TooLarge)?;
        let exact = match algorithm {
            Algorithm::Gcra => burst_i.checked_mul(interval_us),
            Algorithm::FixedWindow | Algorithm::SlidingWindow => quota_i.checked_mul(period_ms),
        };
        match exact {
            Some(v) if v < MAX_EXACT => {}
            _ => return Err(SpecError::TooLarge),
        }
        Ok(LimitSpec {
            algorithm,
            quota,
            period_ms,
            burst,
            interval_us,
        })
    }

    /// A GCRA limit of `quota` per `period` (burst = quota).
    ///
    /// # Errors
    ///
    /// As [`LimitSpec::new`].
    pub fn per(quota: u64, period: Duration) -> Result<Self, SpecError> {
        Self::new(Algorithm::Gcra, quota, period, None)
    }

    /// The same limit counted by another algorithm. A burst other than the quota is
    /// kept for GCRA and refused for a window algorithm, which has no bucket to size
    /// (never dropped in silence). To parse a spec for a given algorithm, use
    /// [`LimitSpec::parse_with`].
    ///
    /// # Errors
    ///
    /// As [`LimitSpec::new`]; [`SpecError::BurstWithWindow`] for a burst given to a
    /// window algorithm.
    pub fn with_algorithm(self, algorithm: Algorithm) -> Result<Self, SpecError> {
        let burst =
            (self.algorithm == Algorithm::Gcra && self.burst != self.quota).then_some(self.burst);
        Self::new(algorithm, self.quota, self.period(), burst)
    }

    /// Parses `N/period[,burst=B]` (see the [`FromStr`] impl) as a limit counted by
    /// `algorithm`: a burst with a window algorithm is an error here, in one place.
    ///
    /// ```
    /// use tollgate::{Algorithm, LimitSpec, SpecError};
    ///
    /// let day = LimitSpec::parse_with("1000/d", Algorithm::SlidingWindow)?;
    /// assert_eq!(day.algorithm(), Algorithm::SlidingWindow);
    /// assert_eq!(
    ///     LimitSpec::parse_with("10/s,burst=20", Algorithm::FixedWindow),
    ///     Err(SpecError::BurstWithWindow(Algorithm::FixedWindow))
    /// );
    /// # Ok::<(), SpecError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`SpecError`] for a malformed text or an invalid limit.
    pub fn parse_with(text: &str, algorithm: Algorithm) -> Result<Self, SpecError> {
        let (quota, period, burst) = parse_parts(text)?;
        LimitSpec::new(algorithm, quota, period, burst)
    }

    /// The same limit with another burst (GCRA only).
    ///
    /// # Errors
    ///
    /// As [`LimitSpec::new`].
    pub fn with_burst(self, burst: u64) -> Result<Self, SpecError> {
        Self::new(self.algorithm, self.quota, self.period(), Some(burst))
    }

    /// How the limit counts.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// Units admitted per period.
    pub fn quota(&self) -> u64 {
        self.quota
    }
    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms as u64)
    }
    /// The period in milliseconds.
    pub fn period_ms(&self) -> i64 {
        self.period_ms
    }
    /// The most units admitted at once (GCRA); the quota for window algorithms.
    pub fn burst(&self) -> u64 {
        self.burst
    }
    /// The GCRA emission interval in microseconds.
    pub fn interval_us(&self) -> i64 {
        self.interval_us
    }
    /// The period rounded up to whole seconds, as the IETF `w` parameter wants it.
    pub fn window_secs(&self) -> u64 {
        (self.period_ms as u64).div_ceil(1000)
    }
}

impl fmt::Display for LimitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}ms", self.quota, self.period_ms)?;
        if self.algorithm == Algorithm::Gcra && self.burst != self.quota {
            write!(f, ",burst={}", self.burst)?;
        }
        Ok(())
    }
}

impl FromStr for LimitSpec {
    type Err = SpecError;

    /// Parses `N/period[,burst=B]`, where period is `[count]unit` with unit one of
    /// `ms`, `s`, `m`, `h`, `d` (also `sec`, `min`, `hour`, `day`): `100/1m`,
    /// `10/s,burst=20`, `1000/d`. The algorithm is GCRA; for another, use
    /// [`LimitSpec::parse_with`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LimitSpec::parse_with(s, Algorithm::Gcra)
    }
}

/// `N/period[,burst=B]` → quota, period and the burst if given.
fn parse_parts(s: &str) -> Result<(u64, Duration, Option<u64>), SpecError> {
    let syntax = || SpecError::Syntax(s.to_owned());
    let mut parts = s.trim().split(',');
    let rate = parts.next().ok_or_else(syntax)?;
    let (quota, period) = rate.split_once('/').ok_or_else(syntax)?;
    let quota: u64 = quota.trim().parse().map_err(|_| syntax())?;
    let period = parse_period(period.trim())?;
    let mut burst = None;
    for option in parts {
        let (name, value) = option.split_once('=').ok_or_else(syntax)?;
        match name.trim() {
            "burst" if burst.is_none() => {
                burst = Some(value.trim().parse().map_err(|_| syntax())?);
            }
            _ => return Err(syntax()),
        }
    }
    Ok((quota, period, burst))
}

/// Parses `1m`, `30s`, `s`, `250ms`, `1d`.
pub(crate) fn parse_period(text: &str) -> Result<Duration, SpecError> {
    let err = || SpecError::Period(text.to_owned());
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (count, unit) = text.split_at(split);
    let count: u64 = if count.is_empty() {
        1
    } else {
        count.parse().map_err(|_| err())?
    };
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" | "sec" | "second" => 1000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" => 3_600_000,
        "d" | "day" => 86_400_000,
        _ => return Err(err()),
    };
    count
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(err)
}
