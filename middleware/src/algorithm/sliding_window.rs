//! Sliding window, approximated with two counters (the Cloudflare/Kong method).
//!
//! The count over the last period is estimated as
//! `previous × (remaining share of the window) + current`, where *previous* is the
//! cost admitted in the last fixed window and *current* the cost in this one. It
//! smooths the fixed window's boundary effect with two integers per key. The estimate
//! assumes the previous window's requests were spread evenly; when they were bunched at
//! its end, slightly more than `quota` can pass within one period.
//!
//! Everything is scaled by the window length in milliseconds so the weighting stays
//! in integers: the comparison `used + cost ≤ quota` becomes
//! `previous × (W − elapsed) + (current + cost) × W ≤ quota × W`.

use super::{clamp_remaining, window_counts, LimitSpec, Outcome, State, Verdict};

#[inline]
pub(super) fn decide(spec: &LimitSpec, now: i64, state: Option<State>, cost: u64) -> Outcome {
    let window_ms = spec.period_ms();
    let now_ms = now.div_euclid(1000);
    let start_ms = now_ms - now_ms.rem_euclid(window_ms);
    let elapsed_ms = now_ms - start_ms;
    let quota = spec.quota() as i64;
    let (current, previous) = window_counts(state, start_ms, window_ms);
    // Both terms are at most quota × W < 2^50 (`LimitSpec::new`).
    let used_scaled = previous * (window_ms - elapsed_ms) + current * window_ms;
    let capacity_scaled = quota * window_ms;
    let reset_after = |current: i64| {
        if current > 0 {
            (start_ms + 2 * window_ms) * 1000 - now
        } else if previous > 0 {
            (start_ms + window_ms) * 1000 - now
        } else {
            0
        }
    };
    if cost > spec.quota() {
        return Outcome {
            verdict: Verdict {
                allowed: false,
                remaining: clamp_remaining((capacity_scaled - used_scaled) / window_ms),
                reset_after_us: reset_after(current),
                retry_after_us: window_ms * 1000,
            },
            next: None,
        };
    }
    let cost = cost as i64;
    if used_scaled + cost * window_ms > capacity_scaled {
        // Earliest elapsed time (ms) at which the weighted count leaves room for `cost`.
        let retry_at_ms = if current + cost <= quota {
            // Only the previous window's weight is in the way; it decays within this window.
            let room = quota - cost - current;
            start_ms + window_ms - room * window_ms / previous
        } else {
            // This window is full: wait for the next, where `current` becomes the weight.
            let room = quota - cost;
            let wait = window_ms - room * window_ms / current;
            start_ms + window_ms + wait.max(0)
        };
        return Outcome {
            verdict: Verdict {
                allowed: false,
                remaining: clamp_remaining((capacity_scaled - used_scaled) / window_ms),
                reset_after_us: reset_after(current),
                retry_after_us: retry_at_ms * 1000 - now,
            },
            next: None,
        };
    }
    let current = current + cost;
    let used_scaled = used_scaled + cost * window_ms;
    Outcome {
        verdict: Verdict {
            allowed: true,
            remaining: clamp_remaining((capacity_scaled - used_scaled) / window_ms),
            reset_after_us: reset_after(current),
            retry_after_us: 0,
        },
        next: Some((
            State::Window {
                start_ms,
                current,
                previous,
            },
            (start_ms + 2 * window_ms) * 1000 - now,
        )),
    }
}
