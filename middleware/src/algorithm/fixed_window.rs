//! Fixed window: at most `quota` units in each period-long window aligned to the epoch.
//!
//! The cheapest and most familiar algorithm, and the one with the known edge effect:
//! a client can spend a full quota at the end of one window and another at the start
//! of the next, so up to `2 × quota` can pass within one period around a boundary.

use super::{clamp_remaining, window_counts, LimitSpec, Outcome, State, Verdict};

#[inline]
pub(super) fn decide(spec: &LimitSpec, now: i64, state: Option<State>, cost: u64) -> Outcome {
    let window_ms = spec.period_ms();
    let now_ms = now.div_euclid(1000);
    let start_ms = now_ms - now_ms.rem_euclid(window_ms);
    let quota = spec.quota() as i64;
    let (current, _) = window_counts(state, start_ms, window_ms);
    let window_end_us = (start_ms + window_ms) * 1000 - now;
    let reset_after_us = if current > 0 { window_end_us } else { 0 };
    if cost > spec.quota() {
        return Outcome {
            verdict: Verdict {
                allowed: false,
                remaining: clamp_remaining(quota - current),
                reset_after_us,
                retry_after_us: window_ms * 1000,
            },
            next: None,
        };
    }
    let cost = cost as i64;
    if current + cost > quota {
        return Outcome {
            verdict: Verdict {
                allowed: false,
                remaining: clamp_remaining(quota - current),
                reset_after_us,
                retry_after_us: window_end_us,
            },
            next: None,
        };
    }
    let current = current + cost;
    Outcome {
        verdict: Verdict {
            allowed: true,
            remaining: clamp_remaining(quota - current),
            reset_after_us: if current > 0 { window_end_us } else { 0 },
            retry_after_us: 0,
        },
        next: Some((
            State::Window {
                start_ms,
                current,
                previous: 0,
            },
            window_end_us,
        )),
    }
}
