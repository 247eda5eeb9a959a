//! Each algorithm against an independent reference model, and against the bound it
//! promises, over random arrival sequences.
//!
//! The models are deliberately written differently from the implementation: a leaky
//! bucket of "debt" for GCRA, a per-window ledger for the fixed window, and a full
//! request log with exact rational weighting for the sliding window.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use tollgate::algorithm::{decide, State};
use tollgate::{Algorithm, LimitSpec};

const T0: i64 = 1_700_000_040_000_000;

/// Runs the implementation over `steps` (advance µs, cost), committing admitted states.
fn run(spec: &LimitSpec, steps: &[(i64, u64)]) -> Vec<(i64, u64, bool, u64)> {
    let mut now = T0;
    let mut state: Option<State> = None;
    let mut out = Vec::new();
    for &(advance, cost) in steps {
        now += advance;
        let o = decide(spec, now, state, cost);
        if let Some((s, _)) = o.next {
            state = Some(s);
        }
        out.push((now, cost, o.verdict.allowed, o.verdict.remaining));
    }
    out
}

fn steps() -> impl Strategy<Value = Vec<(i64, u64)>> {
    prop::collection::vec(
        (
            prop_oneof![Just(0i64), 0i64..50_000, 0i64..5_000_000],
            0u64..4,
        ),
        1..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn gcra_matches_a_leaky_bucket_of_debt(
        quota in 1u64..50, period_ms in 1u64..120_000, burst in 1u64..60, steps in steps(),
    ) {
        let Ok(spec) = LimitSpec::new(Algorithm::Gcra, quota, Duration::from_millis(period_ms), Some(burst)) else {
            return Ok(());
        };
        let t = spec.interval_us();
        let depth = burst as i64 * t;
        // Debt in µs: each unit adds T, time pays it back; admit while debt + cost×T ≤ depth.
        let mut debt = 0i64;
        let mut last = T0;
        for (now, cost, allowed, remaining) in run(&spec, &steps) {
            debt = (debt - (now - last)).max(0);
            last = now;
            let fits = cost <= burst && debt + cost as i64 * t <= depth;
            prop_assert_eq!(allowed, fits);
            if fits {
                debt += cost as i64 * t;
            }
            prop_assert_eq!(remaining as i64, (depth - debt) / t);
        }
    }

    #[test]
    fn gcra_never_exceeds_burst_plus_rate(
        quota in 1u64..50, period_ms in 100u64..120_000, steps in steps(),
    ) {
        let spec = LimitSpec::new(Algorithm::Gcra, quota, Duration::from_millis(period_ms), None).expect("valid");
        let runs = run(&spec, &steps);
        let mut admitted = 0u64;
        for (now, cost, allowed, _) in &runs {
            if *allowed {
                admitted += cost;
            }
            let elapsed = (now - T0) as u64;
            // burst + elapsed / T: the token-bucket bound.
            let bound = spec.burst() + elapsed / spec.interval_us() as u64;
            prop_assert!(admitted <= bound, "{} > {}", admitted, bound);
        }
    }

    #[test]
    fn fixed_window_matches_a_window_ledger(
        quota in 1u64..30, period_ms in 1u64..60_000, steps in steps(),
    ) {
        let spec = LimitSpec::new(Algorithm::FixedWindow, quota, Duration::from_millis(period_ms), None).expect("valid");
        let mut ledger: HashMap<i64, u64> = HashMap::new();
        for (now, cost, allowed, remaining) in run(&spec, &steps) {
            let window = (now / 1000) / period_ms as i64;
            let used = ledger.entry(window).or_default();
            let fits = *used + cost <= quota;
            prop_assert_eq!(allowed, fits);
            if fits {
                *used += cost;
            }
            prop_assert_eq!(remaining, quota - *used);
        }
    }

    #[test]
    fn sliding_window_matches_a_request_log(
        quota in 1u64..30, period_ms in 1u64..60_000, steps in steps(),
    ) {
        let spec = LimitSpec::new(Algorithm::SlidingWindow, quota, Duration::from_millis(period_ms), None).expect("valid");
        let w = period_ms as i128;
        let mut log: Vec<(i128, u64)> = Vec::new(); // (ms, cost) of admitted requests
        for (now, cost, allowed, _) in run(&spec, &steps) {
            let now_ms = (now / 1000) as i128;
            let start = now_ms - now_ms % w;
            let sum = |from: i128, to: i128| -> i128 {
                log.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, c)| *c as i128).sum()
            };
            let current = sum(start, start + w);
            let previous = sum(start - w, start);
            // previous × (w − elapsed)/w + current + cost ≤ quota, in exact rationals.
            let fits = cost <= quota
                && previous * (w - (now_ms - start)) + (current + cost as i128) * w <= quota as i128 * w;
            prop_assert_eq!(allowed, fits, "now_ms {} prev {} cur {} cost {}", now_ms, previous, current, cost);
            if fits {
                log.push((now_ms, cost));
            }
        }
    }

    #[test]
    fn retry_after_is_exact_for_gcra(
        quota in 1u64..20, period_ms in 100u64..60_000, burst in 1u64..20, steps in steps(),
    ) {
        // Waiting exactly retry_after admits the same request; one µs less does not.
        let spec = LimitSpec::new(Algorithm::Gcra, quota, Duration::from_millis(period_ms), Some(burst)).expect("valid");
        let mut now = T0;
        let mut state = None;
        for (advance, cost) in steps {
            now += advance;
            let o = decide(&spec, now, state, cost);
            if let Some((s, _)) = o.next {
                state = Some(s);
            } else if cost <= burst {
                let wait = o.verdict.retry_after_us;
                prop_assert!(wait > 0);
                prop_assert!(!decide(&spec, now + wait - 1, state, cost).verdict.allowed);
                prop_assert!(decide(&spec, now + wait, state, cost).verdict.allowed);
            }
        }
    }

    #[test]
    fn window_retry_after_admits_when_reached(
        algorithm in prop::sample::select(vec![Algorithm::FixedWindow, Algorithm::SlidingWindow]),
        quota in 1u64..20, period_ms in 1u64..60_000, steps in steps(),
    ) {
        let spec = LimitSpec::new(algorithm, quota, Duration::from_millis(period_ms), None).expect("valid");
        let mut now = T0;
        let mut state = None;
        for (advance, cost) in steps {
            now += advance;
            let o = decide(&spec, now, state, cost);
            if let Some((s, _)) = o.next {
                state = Some(s);
            } else if cost <= quota {
                let wait = o.verdict.retry_after_us;
                prop_assert!(wait > 0);
                prop_assert!(decide(&spec, now + wait, state, cost).verdict.allowed, "{} wait {}", algorithm, wait);
            }
        }
    }
}
