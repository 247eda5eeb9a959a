//! Hand-worked scenarios for each algorithm. The property tests in `tests/` compare
//! them against independent reference models; these pin exact numbers.

use super::*;
use std::time::Duration;

const S: i64 = 1_000_000;
/// A start time aligned to every window used here, far from zero like a real clock.
const T0: i64 = 1_700_000_040 * S;

fn spec(algorithm: Algorithm, quota: u64, period_s: u64, burst: Option<u64>) -> LimitSpec {
    LimitSpec::new(algorithm, quota, Duration::from_secs(period_s), burst).expect("valid spec")
}

/// Runs `cost`-1 requests at the given times, committing as a store would.
fn run(spec: &LimitSpec, times: &[i64]) -> Vec<Verdict> {
    let mut state = None;
    times
        .iter()
        .map(|&now| {
            let out = decide(spec, now, state, 1);
            if let Some((next, _)) = out.next {
                state = Some(next);
            }
            out.verdict
        })
        .collect()
}

#[test]
fn gcra_admits_the_burst_then_one_per_interval() {
    // 10 per 10 s, burst 3: T = 1 s.
    let spec = spec(Algorithm::Gcra, 10, 10, Some(3));
    let v = run(&spec, &[T0, T0, T0, T0, T0 + S - 1, T0 + S]);
    let allowed: Vec<bool> = v.iter().map(|v| v.allowed).collect();
    assert_eq!(allowed, [true, true, true, false, false, true]);
    assert_eq!(v[0].remaining, 2);
    assert_eq!(v[2].remaining, 0);
    assert_eq!(v[2].reset_after_us, 3 * S);
    assert_eq!(v[3].retry_after_us, S);
    assert_eq!(v[4].retry_after_us, 1);
    assert_eq!(v[5].remaining, 0);
}

#[test]
fn gcra_recovers_fully_after_the_reset_time() {
    let spec = spec(Algorithm::Gcra, 5, 5, None);
    let mut times = vec![T0; 5];
    times.extend([T0 + 5 * S; 6]);
    let v = run(&spec, &times);
    assert!(v[..5].iter().all(|v| v.allowed));
    assert!(v[5..10].iter().all(|v| v.allowed));
    assert!(!v[10].allowed);
}

#[test]
fn cost_above_capacity_is_never_admitted() {
    for algorithm in [
        Algorithm::Gcra,
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
    ] {
        let spec = spec(algorithm, 5, 60, None);
        let out = decide(&spec, T0, None, 6);
        assert!(!out.verdict.allowed, "{algorithm}");
        assert_eq!(out.verdict.retry_after_us, 60 * S, "{algorithm}");
        assert_eq!(out.verdict.remaining, 5, "{algorithm}");
        assert!(out.next.is_none());
    }
}

#[test]
fn fixed_window_resets_at_the_boundary() {
    let spec = spec(Algorithm::FixedWindow, 2, 60, None);
    let v = run(&spec, &[T0 + 59 * S, T0 + 59 * S, T0 + 59 * S, T0 + 60 * S]);
    let allowed: Vec<bool> = v.iter().map(|v| v.allowed).collect();
    assert_eq!(allowed, [true, true, false, true]);
    assert_eq!(v[2].retry_after_us, S);
    assert_eq!(v[3].remaining, 1);
    assert_eq!(v[3].reset_after_us, 60 * S);
}

#[test]
fn sliding_window_weights_the_previous_window() {
    let spec = spec(Algorithm::SlidingWindow, 10, 60, None);
    // Fill the first window.
    let mut state = None;
    for _ in 0..10 {
        let out = decide(&spec, T0 + 30 * S, state, 1);
        assert!(out.verdict.allowed);
        state = out.next.map(|(s, _)| s);
    }
    // 15 s into the next window, 10 × 45/60 = 7.5 are still counted: 2 more fit.
    let now = T0 + 75 * S;
    let a = decide(&spec, now, state, 2);
    assert!(a.verdict.allowed);
    assert_eq!(a.verdict.remaining, 0);
    let b = decide(&spec, now, a.next.map(|(s, _)| s), 1);
    assert!(!b.verdict.allowed);
    // One more fits once 10 × (60 − e)/60 + 2 + 1 ≤ 10, i.e. e ≥ 18 s: 3 s from now.
    assert_eq!(b.verdict.retry_after_us, 3 * S);
    let c = decide(&spec, now + 3 * S, a.next.map(|(s, _)| s), 1);
    assert!(c.verdict.allowed);
}

#[test]
fn sliding_window_full_current_window_waits_for_the_next() {
    let spec = spec(Algorithm::SlidingWindow, 4, 10, None);
    let times = [T0 + S, T0 + S, T0 + S, T0 + S, T0 + 2 * S];
    let v = run(&spec, &times);
    assert!(!v[4].allowed);
    // The next window starts at T0+10 s with previous = 4: room for 3 once
    // 4 × (10 − e)/10 ≤ 3, i.e. e ≥ 2.5 s, so at T0+12.5 s: 10.5 s from now.
    assert_eq!(v[4].retry_after_us, 10 * S + S / 2);
}

#[test]
fn denial_never_writes_state() {
    for algorithm in [
        Algorithm::Gcra,
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
    ] {
        let spec = spec(algorithm, 1, 60, None);
        let first = decide(&spec, T0, None, 1);
        let second = decide(&spec, T0, first.next.map(|(s, _)| s), 1);
        assert!(first.verdict.allowed && !second.verdict.allowed);
        assert!(second.next.is_none(), "{algorithm}");
    }
}

#[test]
fn specs_parse_and_refuse_what_they_cannot_decide() {
    let s: LimitSpec = "100/1m".parse().expect("parses");
    assert_eq!((s.quota(), s.period_ms(), s.burst()), (100, 60_000, 100));
    let s: LimitSpec = " 10/s, burst=20 ".parse().expect("parses");
    assert_eq!((s.quota(), s.period_ms(), s.burst()), (10, 1000, 20));
    assert_eq!(
        "1000/d".parse::<LimitSpec>().map(|s| s.window_secs()),
        Ok(86_400)
    );
    for bad in [
        "",
        "100",
        "/1m",
        "x/1m",
        "100/",
        "100/1y",
        "0/1m",
        "100/0s",
        "10/s,burst=0",
        "10/s,burst=",
        "10/s,foo=1",
        "10/s,burst=1,burst=2",
        "-1/s",
        "10/s,",
    ] {
        assert!(
            bad.parse::<LimitSpec>().is_err(),
            "{bad:?} should be refused"
        );
    }
    assert!(matches!(
        LimitSpec::new(Algorithm::FixedWindow, 10, Duration::from_secs(1), Some(5)),
        Err(SpecError::BurstWithWindow(_))
    ));
    assert!(matches!(
        "2000000/s".parse::<LimitSpec>(),
        Err(SpecError::TooFine { .. })
    ));
    assert_eq!(
        LimitSpec::new(
            Algorithm::SlidingWindow,
            u32::MAX as u64,
            Duration::from_secs(86_400 * 365),
            None
        ),
        Err(SpecError::TooLarge)
    );
    assert_eq!(
        LimitSpec::per(1, Duration::from_micros(1500)),
        Err(SpecError::Period0)
    );
}
