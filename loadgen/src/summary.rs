//! The end-of-run summary: a serializable [`Summary`] (written by `--json`) and its text form.
//!
//! Rates: `send_rps` is requests / issuing window (what the schedule produced) and
//! `achieved_rps` is successful answers / max(issuing window, time of the last response) — the
//! rate the system under test actually sustained, which drops below the target as soon as
//! responses lag behind the schedule.
//!
//! Key classes split the keys by what a correct limiter must do with them: `over_limit` keys
//! were sent more requests than the policy's maximum for the run (the limiter must deny some),
//! `within_limit` keys were not (the limiter should deny none, so any denial there is a false
//! positive). With `unique` keys every request is its own class member: the class is `unique`.
//!
//! [`Summary::check_failures`] judges the run against its [`FailureBudget`], so a run whose
//! requests mostly failed (a wrong port, a dead target) cannot pass for a measurement.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::accuracy::AccuracyReport;
use crate::config::FailureBudget;
use crate::report::{fmt_ms, stats_line};
use crate::schedule::Phase;
use crate::stats::{CountSnapshot, Percentiles};

/// Why issuing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopCause {
    /// `DURATION` elapsed.
    Duration,
    /// SIGINT/SIGTERM (or the shutdown future, in-process).
    Signal,
}

/// A phase switch, as printed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhaseChange {
    /// When the new phase started, in ms from the run start (by the schedule, not the clock).
    pub at_ms: f64,
    /// The phase entered.
    pub phase: Phase,
}

/// Counts for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSummary {
    /// The base URL.
    pub target: String,
    /// Requests sent to it.
    pub requests: u64,
    /// 2xx answers.
    pub admitted: u64,
    /// 429 answers.
    pub blocked: u64,
    /// Failures.
    pub failed: u64,
}

/// Counts for one key class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassSummary {
    /// `over_limit`, `within_limit` or `unique`.
    pub class: String,
    /// Keys in the class (requests, for `unique`).
    pub keys: u64,
    /// Requests sent with those keys.
    pub requests: u64,
    /// 2xx answers.
    pub admitted: u64,
    /// 429 answers.
    pub denied: u64,
    /// Failures.
    pub failed: u64,
}

impl ClassSummary {
    /// An empty class named `class`.
    pub fn new(class: &str) -> Self {
        ClassSummary {
            class: class.to_owned(),
            keys: 0,
            requests: 0,
            admitted: 0,
            denied: 0,
            failed: 0,
        }
    }

    /// Adds one key's counts.
    pub fn add(&mut self, c: &CountSnapshot) {
        self.keys += 1;
        self.requests += c.sent;
        self.admitted += c.admitted;
        self.denied += c.blocked;
        self.failed += c.failed;
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `check` or `proxy`.
    pub mode: String,
    /// The key distribution, as configured.
    pub keys: String,
    /// Configured steady rate.
    pub target_rps: f64,
    /// Why issuing stopped.
    pub stopped_by: StopCause,
    /// From the start to the end of the drain, in ms.
    pub duration_ms: f64,
    /// How long requests were issued, in ms.
    pub issue_window_ms: f64,
    /// Requests issued (every scheduled request, including `overload` failures).
    pub requests: u64,
    /// 2xx + 429.
    pub success: u64,
    /// 2xx.
    pub admitted: u64,
    /// 429.
    pub blocked: u64,
    /// Everything else.
    pub failed: u64,
    /// Failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// Responses by status code.
    pub statuses: BTreeMap<String, u64>,
    /// requests / issuing window.
    pub send_rps: f64,
    /// success / max(issuing window, last response).
    pub achieved_rps: f64,
    /// From intended send time to end of response body.
    pub latency_ms: Percentiles,
    /// How late the scheduler dispatched requests versus their intended time.
    pub send_lag_ms: Percentiles,
    /// Connections opened, over all targets.
    pub connections: usize,
    /// Counts per target, in round-robin order.
    pub per_target: Vec<TargetSummary>,
    /// Counts per key class.
    pub per_key_class: Vec<ClassSummary>,
    /// The accuracy report; absent for `unique` keys, where each key is used once.
    pub accuracy: Option<AccuracyReport>,
    /// Phase switches in order.
    pub phases: Vec<PhaseChange>,
}

/// How many per-key lines the text summary shows (the JSON has more).
const KEYS_SHOWN: usize = 5;

/// A run in which more requests failed than its [`FailureBudget`] allows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{failed} of {requests} requests failed ({percent:.2} %), more than the {max_percent} % \
     allowed by {setting}; {detail}"
)]
pub struct TooManyFailures {
    /// Requests that failed.
    pub failed: u64,
    /// Requests issued.
    pub requests: u64,
    /// `failed` as a percentage of `requests`.
    pub percent: f64,
    /// The budget that was exceeded.
    pub max_percent: f64,
    /// The setting that configures the budget, as `VAR (--flag)`.
    pub setting: String,
    /// Failures by reason and statuses, and a hint when they point at a likely cause.
    pub detail: String,
}

impl Summary {
    /// Checks the share of failed requests against `budget`.
    ///
    /// A run with no requests (stopped before the first was due) passes: nothing failed.
    ///
    /// # Errors
    ///
    /// [`TooManyFailures`] when more than `budget.max_percent` % of the requests failed.
    pub fn check_failures(&self, budget: &FailureBudget) -> Result<(), TooManyFailures> {
        // Compared as failed / requests > max / 100 without dividing, so 0 requests is no
        // special case; f64 holds these counts exactly far beyond any real run.
        if (self.failed as f64) * 100.0 <= budget.max_percent * (self.requests as f64) {
            return Ok(());
        }
        let mut detail = format!(
            "failures: {}; statuses: {}",
            join_counts(
                &self
                    .failures
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| (k.clone(), *n))
                    .collect()
            ),
            join_counts(&self.statuses)
        );
        // The usual cause of a run full of 400/404/405 in check mode: TARGETS names the
        // sidecar's proxy port, which does not serve the decision API.
        let client_errors = ["400", "404", "405"]
            .iter()
            .any(|code| self.statuses.contains_key(*code));
        if self.mode == "check" && client_errors {
            detail.push_str(
                ". Check mode sends POST /check, which the sidecar serves on its admin port \
                 (9000 by default), not on its proxy port (8000): check TARGETS, or use \
                 MODE=proxy for the proxy port",
            );
        }
        Err(TooManyFailures {
            failed: self.failed,
            requests: self.requests,
            percent: 100.0 * self.failed as f64 / self.requests as f64,
            max_percent: budget.max_percent,
            setting: budget.setting.clone(),
            detail,
        })
    }

    /// Counts as a snapshot, for the shared stats-line format.
    pub fn totals(&self) -> CountSnapshot {
        CountSnapshot {
            sent: self.requests,
            admitted: self.admitted,
            blocked: self.blocked,
            failed: self.failed,
        }
    }

    /// The human-readable summary, several lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored for readability.
        let _ = writeln!(out, "=== Summary ===");
        let _ = writeln!(
            out,
            "{}",
            stats_line(&self.totals(), self.send_rps, &self.latency_ms)
        );
        let stop = match self.stopped_by {
            StopCause::Duration => "duration reached",
            StopCause::Signal => "stopped by signal",
        };
        let _ = writeln!(
            out,
            "Run: {:.2} s ({stop}) | mode {} | keys {} | target {:.1} rps | sent {:.1} rps | achieved {:.1} rps",
            self.duration_ms / 1000.0,
            self.mode,
            self.keys,
            self.target_rps,
            self.send_rps,
            self.achieved_rps
        );
        let l = &self.latency_ms;
        let _ = writeln!(
            out,
            "Latency (from intended send): min {} | p50 {} | p90 {} | p99 {} | p99.9 {} | max {}",
            fmt_ms(l, l.min),
            fmt_ms(l, l.p50),
            fmt_ms(l, l.p90),
            fmt_ms(l, l.p99),
            fmt_ms(l, l.p999),
            fmt_ms(l, l.max)
        );
        let g = &self.send_lag_ms;
        let _ = writeln!(
            out,
            "Send lag: p50 {} | p99 {} | max {}",
            fmt_ms(g, g.p50),
            fmt_ms(g, g.p99),
            fmt_ms(g, g.max)
        );
        let failures: Vec<String> = self
            .failures
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "Failures: {}", failures.join(" "));
        let _ = writeln!(out, "Statuses: {}", join_counts(&self.statuses));
        let _ = writeln!(out, "Per target:");
        for t in &self.per_target {
            let _ = writeln!(
                out,
                "  {} requests={} admitted={} blocked={} failed={}",
                t.target, t.requests, t.admitted, t.blocked, t.failed
            );
        }
        let _ = writeln!(out, "Per key class:");
        for c in &self.per_key_class {
            let _ = writeln!(
                out,
                "  {} keys={} requests={} admitted={} denied={} failed={}",
                c.class, c.keys, c.requests, c.admitted, c.denied, c.failed
            );
        }
        match &self.accuracy {
            None => {
                let _ = writeln!(
                    out,
                    "Accuracy: not applicable to unique keys (each key is used once)"
                );
            }
            Some(a) => render_accuracy(&mut out, a),
        }
        out
    }
}

/// `k=v k=v`, or `-` when there is nothing to list.
fn join_counts(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "-".to_owned();
    }
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(" ")
}

fn render_accuracy(out: &mut String, a: &AccuracyReport) {
    let _ = writeln!(
        out,
        "Accuracy ({} limit {} per {} ms, burst {}; D = {:.3} s): max {} admitted per key",
        a.policy.algorithm,
        a.policy.limit,
        a.policy.window_ms,
        a.policy.burst,
        a.elapsed_ms / 1000.0,
        a.allowed_max_per_key
    );
    let _ = writeln!(
        out,
        "  keys={} admitted={} allowed_max={} excess={} keys_over={} | over-admission: {:.2}%",
        a.keys, a.admitted, a.allowed_max_total, a.excess, a.keys_over, a.over_admission_pct
    );
    let _ = writeln!(
        out,
        "  ideal={} (min of sent and max, per key) | admitted of ideal: {:.2}%",
        a.ideal_total, a.admitted_pct_of_ideal
    );
    for k in a.per_key.iter().take(KEYS_SHOWN) {
        let _ = writeln!(
            out,
            "  {} requests={} admitted={} / max {} denied={} excess={}",
            k.key, k.requests, k.admitted, k.allowed_max, k.denied, k.excess
        );
    }
    let more = a.keys.saturating_sub(KEYS_SHOWN as u64);
    if more > 0 {
        let _ = writeln!(out, "  ... {more} more keys (see --json)");
    }
}
