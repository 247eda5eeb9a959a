//! Counting: what was sent, how it ended, and how long it took.
//!
//! A [`Recorder`] is shared by the scheduler (which counts sends) and every request task (which
//! counts outcomes). Counters are relaxed atomics — they are only read for reports, which
//! need no ordering with the requests themselves. Latencies go into an HDR histogram behind a
//! mutex held for one `record` call; two histograms are kept so the periodic line can show
//! the last interval's percentiles while the summary shows the whole run's.
//!
//! Latency is recorded in microseconds from the request's *intended* send time to the end of
//! its response body, for every request that got a complete response (any status). Requests
//! without one (refused, timed out, overloaded) have no latency; they are counted by reason.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use http::StatusCode;

use crate::accuracy::KeyCounts;
use crate::keys::KeyId;
use crate::outcome::{FailReason, Outcome};

/// Highest latency the histogram resolves (one hour, in µs); longer ones are clamped to it.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Status codes are counted in a dense array indexed by code.
const STATUS_SLOTS: usize = 600;

/// Counters for one target or one key.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    admitted: AtomicU64,
    blocked: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Admitted => &self.admitted,
            Outcome::Blocked => &self.blocked,
            Outcome::Failed(_) => &self.failed,
        }
        .fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> CountSnapshot {
        CountSnapshot {
            sent: self.sent.load(Relaxed),
            admitted: self.admitted.load(Relaxed),
            blocked: self.blocked.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }
}

/// Plain counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountSnapshot {
    /// Requests scheduled and issued (including those failed as `overload`).
    pub sent: u64,
    /// 2xx responses.
    pub admitted: u64,
    /// 429 responses.
    pub blocked: u64,
    /// Everything else.
    pub failed: u64,
}

impl CountSnapshot {
    /// Requests with an answer from the limiter: admitted + blocked.
    pub fn success(&self) -> u64 {
        self.admitted + self.blocked
    }

    /// Requests issued but not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.success() + self.failed)
    }

    /// Per-key view for the accuracy report.
    pub fn key_counts(&self) -> KeyCounts {
        KeyCounts {
            requests: self.sent,
            admitted: self.admitted,
            denied: self.blocked,
        }
    }
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    /// Number of latencies recorded.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Summarizes a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// A new latency histogram in µs with 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

#[derive(Debug)]
struct Latencies {
    interval: Histogram<u64>,
    total: Histogram<u64>,
}

/// Shared counters for one run.
#[derive(Debug)]
pub struct Recorder {
    all: Counters,
    reasons: [AtomicU64; FailReason::ALL.len()],
    statuses: Box<[AtomicU64]>,
    targets: Box<[Counters]>,
    /// One slot per indexed key; empty for `unique`, whose keys are counted only in total.
    keys: Box<[Counters]>,
    latencies: Mutex<Latencies>,
    /// Offset of the latest response from the run start, in ns, for the elapsed time `D`.
    last_response_ns: AtomicU64,
}

impl Recorder {
    /// A recorder for `targets` targets and `keys` indexed keys.
    pub fn new(targets: usize, keys: usize) -> Self {
        Recorder {
            all: Counters::default(),
            reasons: Default::default(),
            statuses: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            targets: (0..targets).map(|_| Counters::default()).collect(),
            keys: (0..keys).map(|_| Counters::default()).collect(),
            latencies: Mutex::new(Latencies {
                interval: latency_histogram(),
                total: latency_histogram(),
            }),
            last_response_ns: AtomicU64::new(0),
        }
    }

    /// Counts a request as issued.
    pub fn sent(&self, target: usize, key: KeyId) {
        self.all.sent.fetch_add(1, Relaxed);
        self.targets[target].sent.fetch_add(1, Relaxed);
        if let KeyId::Indexed(i) = key {
            self.keys[i].sent.fetch_add(1, Relaxed);
        }
    }

    /// Counts how a request ended. `timing` is `(latency, offset of the response from the
    /// start)`, given when a complete response arrived.
    pub fn finished(
        &self,
        target: usize,
        key: KeyId,
        outcome: Outcome,
        status: Option<StatusCode>,
        timing: Option<(Duration, Duration)>,
    ) {
        self.all.record(outcome);
        self.targets[target].record(outcome);
        if let KeyId::Indexed(i) = key {
            self.keys[i].record(outcome);
        }
        if let Outcome::Failed(reason) = outcome {
            self.reasons[reason.index()].fetch_add(1, Relaxed);
        }
        if let Some(slot) = status.and_then(|s| self.statuses.get(usize::from(s.as_u16()))) {
            slot.fetch_add(1, Relaxed);
        }
        if let Some((latency, at)) = timing {
            let us = u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .clamp(1, MAX_LATENCY_US);
            self.lock().interval.saturating_record(us);
            self.last_response_ns
                .fetch_max(u64::try_from(at.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Latencies> {
        // A panic while holding the lock cannot leave a histogram half-updated in a way that
        // matters for reporting, so a poisoned lock is still usable.
        self.latencies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Totals so far.
    pub fn totals(&self) -> CountSnapshot {
        self.all.snapshot()
    }

    /// Per-target counts, in target order.
    pub fn targets(&self) -> Vec<CountSnapshot> {
        self.targets.iter().map(Counters::snapshot).collect()
    }

    /// Per-key counts, in key index order (empty for `unique`).
    pub fn keys(&self) -> Vec<CountSnapshot> {
        self.keys.iter().map(Counters::snapshot).collect()
    }

    /// Failures by reason, in [`FailReason::ALL`] order.
    pub fn reasons(&self) -> [u64; FailReason::ALL.len()] {
        std::array::from_fn(|i| self.reasons[i].load(Relaxed))
    }

    /// `(status, count)` for every status seen.
    pub fn statuses(&self) -> Vec<(u16, u64)> {
        (0..STATUS_SLOTS)
            .filter_map(|code| {
                let n = self.statuses[code].load(Relaxed);
                (n > 0).then_some((code as u16, n))
            })
            .collect()
    }

    /// Offset of the latest complete response from the start, if any.
    pub fn last_response(&self) -> Option<Duration> {
        match self.last_response_ns.load(Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Percentiles of the interval since the last call, which is folded into the run total.
    pub fn take_interval(&self) -> Percentiles {
        let mut guard = self.lock();
        let l = &mut *guard;
        let p = Percentiles::of(&l.interval);
        // Both histograms share bounds, so adding cannot fail; if it somehow did, the total
        // would only miss this interval.
        let _ = l.total.add(&l.interval);
        l.interval.reset();
        p
    }

    /// Percentiles over the whole run so far.
    pub fn total_latency(&self) -> Percentiles {
        let mut guard = self.lock();
        let l = &mut *guard;
        let _ = l.total.add(&l.interval);
        l.interval.reset();
        Percentiles::of(&l.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_everywhere() {
        let r = Recorder::new(2, 3);
        let ms = Duration::from_millis;
        r.sent(0, KeyId::Indexed(2));
        r.finished(
            0,
            KeyId::Indexed(2),
            Outcome::Admitted,
            Some(StatusCode::OK),
            Some((ms(2), ms(5))),
        );
        r.sent(1, KeyId::Indexed(2));
        r.finished(
            1,
            KeyId::Indexed(2),
            Outcome::Blocked,
            Some(StatusCode::TOO_MANY_REQUESTS),
            Some((ms(4), ms(9))),
        );
        r.sent(1, KeyId::Unique(9));
        r.finished(
            1,
            KeyId::Unique(9),
            Outcome::Failed(FailReason::Connect),
            None,
            None,
        );
        r.sent(0, KeyId::Indexed(0));

        let t = r.totals();
        assert_eq!(
            (t.sent, t.admitted, t.blocked, t.failed, t.in_flight()),
            (4, 1, 1, 1, 1)
        );
        assert_eq!(
            r.targets()[1],
            CountSnapshot {
                sent: 2,
                admitted: 0,
                blocked: 1,
                failed: 1
            }
        );
        assert_eq!(
            r.keys()[2].key_counts(),
            KeyCounts {
                requests: 2,
                admitted: 1,
                denied: 1
            }
        );
        assert_eq!(r.reasons()[FailReason::Connect.index()], 1);
        assert_eq!(r.statuses(), [(200, 1), (429, 1)]);
        assert_eq!(r.last_response(), Some(ms(9)));

        let interval = r.take_interval();
        assert_eq!(interval.count, 2);
        assert_eq!(r.take_interval().count, 0);
        let total = r.total_latency();
        assert_eq!(total.count, 2);
        assert!((1.9..2.1).contains(&total.p50), "{total:?}");
        assert!((3.9..4.1).contains(&total.max), "{total:?}");
    }
}
