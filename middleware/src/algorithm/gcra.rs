//! GCRA, the generic cell rate algorithm.
//!
//! A token bucket expressed as one timestamp: the *theoretical arrival time* (TAT) at
//! which the bucket would be full again. Each unit of cost pushes the TAT forward by
//! the emission interval `T = period / quota`; a request is admitted while the pushed
//! TAT stays within `burst × T` of now. One stored integer per key, no background
//! refill, and it never admits more than `burst + quota × elapsed / period`.

use super::{clamp_remaining, LimitSpec, Outcome, State, Verdict};

// Always inlined (see `super::decide`): the usual algorithm, and the memory store calls it
// from two places, where a plain hint left it a call.
#[inline(always)]
pub(super) fn decide(spec: &LimitSpec, now: i64, state: Option<State>, cost: u64) -> Outcome {
    let interval = spec.interval_us();
    // `burst × T` is the bucket's depth in time; `LimitSpec::new` keeps it below 2^50.
    let capacity = spec.burst() as i64 * interval;
    let tat = match state {
        Some(State::Gcra { tat }) if tat > now => tat,
        _ => now,
    };
    if cost > spec.burst() {
        return Outcome {
            verdict: Verdict {
                allowed: false,
                remaining: clamp_remaining((capacity - (tat - now)) / interval),
                reset_after_us: tat - now,
                retry_after_us: spec.period_ms() * 1000,
            },
            next: None,
        };
    }
    let new_tat = tat + cost as i64 * interval;
    let allow_at = new_tat - capacity;
    if allow_at > now {
        return Outcome {
            verdict: Verdict {
                allowed: false,
                remaining: clamp_remaining((capacity - (tat - now)) / interval),
                reset_after_us: tat - now,
                retry_after_us: allow_at - now,
            },
            next: None,
        };
    }
    Outcome {
        verdict: Verdict {
            allowed: true,
            remaining: clamp_remaining((capacity - (new_tat - now)) / interval),
            reset_after_us: new_tat - now,
            retry_after_us: 0,
        },
        next: Some((State::Gcra { tat: new_tat }, new_tat - now)),
    }
}
