//! Refunds: giving back what an admission consumed, for decisions that span stores.
//!
//! A Redis Cluster keeps each limit's state on the primary that owns its hash slot, so a
//! policy whose limits use different keys cannot be decided by one atomic script. The
//! cluster store decides it slot by slot in a fixed order, consuming as it goes; when a
//! later slot refuses, it gives back what the earlier slots consumed with [`refund`].
//! Admissions are never over-counted: every slot only admits what its own limit allows,
//! and the request passes only if every slot admitted it. A refund may only ever give
//! back *at most* what the request really consumed — never more — so it can never open
//! room that was not there.
//!
//! [`refund`] carries the exactness argument.

use super::{LimitSpec, State};
use crate::algorithm::Algorithm;

/// The mark an admission leaves (see [`refund`]): the TAT a GCRA admission
/// stored, or the start (ms) of the window a window admission counted the request in.
pub fn refund_mark(stored: &State) -> i64 {
    match *stored {
        State::Gcra { tat } => tat,
        State::Window { start_ms, .. } => start_ms,
    }
}

/// Gives back `cost` units of `spec` that an admission leaving `mark` consumed, at
/// `now_us`, given the state stored now.
///
/// Returns the state to store and its time to live in microseconds, or `None` when
/// nothing needs writing. Never gives back more than the admission consumed.
///
/// # The mark
///
/// An admission identifies what it wrote with a *mark* ([`refund_mark`]): for GCRA the
/// theoretical arrival time (TAT) it stored, for the windows the start of the window it
/// counted the request in.
///
/// # Exactness
///
/// **Windows** (fixed and sliding) are counters, and counting commutes: if the charged
/// window is still the stored one, its counter is decremented by the cost; if the
/// stored state has moved one window on (sliding window), the charge now sits in the
/// `previous` counter, which is decremented instead; older charges no longer weigh on
/// any decision and nothing is done. The state afterwards is exactly the state had the
/// request never been admitted, whatever was admitted in between.
///
/// **GCRA** stores one timestamp, `tat`, and each admission maps it through
/// `tat ↦ max(tat, now) + cost·T`. Those maps compose to `x ↦ max(x + A, B)`, where
/// `A` is the others' consumption in between and `B ≤ now + A` (no admission happened
/// after `now`). With `base = mark − cost·T`, the TAT our charge started from, the TAT
/// without our request is `max(tat − cost·T, B)`; the refund moves the TAT back by
/// `cost·T − clamp(now − base, 0, cost·T)`, that is, to
/// `tat − cost·T + clamp(now − base, 0, cost·T)`, which is never below it:
///
/// - the bucket was backlogged at the charge (`base > now`): `B ≤ now + A < base + A`,
///   so the truth is `tat − cost·T` — the refund is **exact**;
/// - nobody wrote the key in between (`tat = mark`): the refund lands on `now` or
///   below, and so does the truth (`base ≤ now`); every TAT at or below `now` means
///   "full bucket" — **exact**;
/// - others were admitted in between from a bucket that was not backlogged: the refund
///   keeps back at most `now − base`, the time between the charge and the refund —
///   a few milliseconds of one round trip, **conservative** by at most that much.
///
/// A state that expired or changed algorithm in between is left alone.
pub fn refund(
    spec: &LimitSpec,
    now_us: i64,
    state: Option<State>,
    mark: i64,
    cost: u64,
) -> Option<(State, i64)> {
    if cost == 0 {
        return None;
    }
    // An admitted cost is at most the quota (or burst), so every product stays below
    // 2^50 like the decision's own (`LimitSpec::new`).
    let cost = cost as i64;
    match (spec.algorithm(), state?) {
        (Algorithm::Gcra, State::Gcra { tat }) => {
            if tat <= now_us {
                return None;
            }
            let give = cost * spec.interval_us();
            let kept = (now_us - (mark - give)).clamp(0, give);
            let back = give - kept;
            if back == 0 {
                return None;
            }
            let tat = tat - back;
            Some((State::Gcra { tat }, (tat - now_us).max(0)))
        }
        (
            algorithm @ (Algorithm::FixedWindow | Algorithm::SlidingWindow),
            State::Window {
                start_ms,
                current,
                previous,
            },
        ) => {
            let window_ms = spec.period_ms();
            let sliding = algorithm == Algorithm::SlidingWindow;
            let (current, previous) = if start_ms == mark {
                ((current - cost).max(0), previous)
            } else if sliding && start_ms == mark + window_ms {
                (current, (previous - cost).max(0))
            } else {
                return None;
            };
            let ends_ms = start_ms + if sliding { 2 * window_ms } else { window_ms };
            Some((
                State::Window {
                    start_ms,
                    current,
                    previous,
                },
                (ends_ms * 1000 - now_us).max(0),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::algorithm::decide;

    fn spec(algorithm: Algorithm, quota: u64, period_ms: u64, burst: Option<u64>) -> LimitSpec {
        LimitSpec::new(algorithm, quota, Duration::from_millis(period_ms), burst).expect("valid")
    }

    /// Replays `(advance_us, cost)` requests, returning the final state.
    fn run(spec: &LimitSpec, mut now: i64, steps: &[(i64, u64)]) -> (i64, Option<State>) {
        let mut state = None;
        for &(advance, cost) in steps {
            now += advance;
            if let Some((next, _)) = decide(spec, now, state, cost).next {
                state = Some(next);
            }
        }
        (now, state)
    }

    const T0: i64 = 1_700_000_040_000_000;

    /// Charge then refund with nothing in between: every later decision is the one the
    /// state without the request gives, for all three algorithms.
    #[test]
    fn an_immediate_refund_is_exact() {
        for algorithm in [
            Algorithm::Gcra,
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
        ] {
            let spec = spec(algorithm, 5, 10_000, None);
            for history in 0..6u64 {
                for delay in [0i64, 700, 1_999_000] {
                    let steps: Vec<_> = (0..history).map(|_| (300_000, 1)).collect();
                    let (now, before) = run(&spec, T0, &steps);
                    let charged = decide(&spec, now, before, 2);
                    let Some((after, _)) = charged.next else {
                        continue;
                    };
                    let refunded = refund(&spec, now + delay, Some(after), refund_mark(&after), 2)
                        .map(|(s, _)| s)
                        .or(Some(after));
                    for probe in [0i64, 1, 1_000_000, 3_000_000, 9_999_999] {
                        for cost in 0..=5 {
                            let at = now + delay + probe;
                            assert_eq!(
                                decide(&spec, at, refunded, cost).verdict,
                                decide(&spec, at, before, cost).verdict,
                                "{algorithm} history {history} delay {delay} probe {probe} cost {cost}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// With others admitted between the charge and the refund, the refund never gives
    /// back more than the request took: any later request the state without it refuses,
    /// the refunded state refuses too; windows are exact.
    #[test]
    fn an_interleaved_refund_never_gives_back_too_much() {
        for algorithm in [
            Algorithm::Gcra,
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
        ] {
            let spec = spec(algorithm, 4, 1_000, None);
            for gap in [0i64, 100, 250, 600, 1_100] {
                for others in 0..4 {
                    let (now, before) = run(&spec, T0, &[(0, 1), (gap * 1000, 1)]);
                    let charged = decide(&spec, now, before, 1);
                    let Some((mine, _)) = charged.next else {
                        continue;
                    };
                    // The state with my request, and the state the same admissions
                    // would have left without it (the requests my consumption refused
                    // stay refused: a refund cannot admit them after the fact).
                    let (mut with, mut without) = (Some(mine), before);
                    let mut at = now;
                    for _ in 0..others {
                        at += 50_000;
                        if let Some((s, _)) = decide(&spec, at, with, 1).next {
                            with = Some(s);
                            let admitted = decide(&spec, at, without, 1);
                            assert!(admitted.verdict.allowed, "less consumed, still admitted");
                            without = admitted.next.map(|(s, _)| s);
                        }
                    }
                    at += 10_000;
                    let refunded = refund(&spec, at, with, refund_mark(&mine), 1)
                        .map(|(s, _)| s)
                        .or(with);
                    for probe in [0i64, 1_000, 200_000, 900_000] {
                        for cost in 1..=4 {
                            let t = at + probe;
                            let got = decide(&spec, t, refunded, cost).verdict;
                            let truth = decide(&spec, t, without, cost).verdict;
                            if algorithm == Algorithm::Gcra {
                                assert!(
                                    truth.allowed || !got.allowed,
                                    "gcra over-refunded: gap {gap} others {others} probe {probe}"
                                );
                            } else {
                                assert_eq!(got, truth, "{algorithm} gap {gap} others {others}");
                            }
                        }
                    }
                }
            }
        }
    }
}
