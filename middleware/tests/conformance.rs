//! The memory store and the Redis store make identical decisions.
//!
//! Both are driven through the same scenarios — sequences of (time step, cost, limits)
//! — with the same injected clock, and must agree on every verdict: allowed, remaining,
//! reset and retry times. The Redis side runs the production Lua script against a real
//! `redis-server`.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use support::{RedisServer, T0};
use tollgate::algorithm::Verdict;
use tollgate::store::{Check, MemoryStore, RedisStore, Store};
use tollgate::{Algorithm, LimitSpec, ManualClock};

struct Pair {
    clock: ManualClock,
    memory: MemoryStore,
    redis: RedisStore,
}

impl Pair {
    fn new(server: &RedisServer, prefix: &str) -> Self {
        let clock = ManualClock::new(T0);
        Pair {
            memory: MemoryStore::builder().clock(clock.clone()).build(),
            redis: RedisStore::builder(server.url())
                .prefix(prefix)
                .clock(clock.clone())
                // Keys must outlive the test even though the injected clock stands still.
                .key_grace(Duration::from_secs(3600))
                .response_timeout(Duration::from_secs(5))
                .build()
                .expect("valid url"),
            clock,
        }
    }

    async fn both(&self, checks: &[Check], cost: u64) -> (Vec<Verdict>, Vec<Verdict>) {
        let m = self
            .memory
            .check(checks, cost)
            .await
            .expect("memory decides");
        let r = self.redis.check(checks, cost).await.expect("redis decides");
        (m, r)
    }
}

fn spec(algorithm: Algorithm, quota: u64, period_ms: u64, burst: Option<u64>) -> LimitSpec {
    LimitSpec::new(algorithm, quota, Duration::from_millis(period_ms), burst).expect("valid")
}

const ALGORITHMS: [Algorithm; 3] = [
    Algorithm::Gcra,
    Algorithm::FixedWindow,
    Algorithm::SlidingWindow,
];

#[tokio::test]
async fn scripted_scenarios_agree() {
    let server = RedisServer::start();
    for (n, algorithm) in ALGORITHMS.into_iter().enumerate() {
        let pair = Pair::new(&server, &format!("scripted{n}"));
        let checks = [Check::new("k", spec(algorithm, 5, 10_000, None))];
        // Bursts, steady trickle, idle gaps longer than the period, costly requests.
        let steps: &[(u64, u64)] = &[
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 2),
            (0, 1),
            (0, 1),
            (1999, 1),
            (1, 1),
            (500, 3),
            (9_000, 1),
            (1, 6),
            (0, 0),
            (25_000, 5),
            (0, 1),
            (3_333, 1),
            (6_667, 2),
            (10_000, 1),
            (123, 1),
            (4_321, 4),
        ];
        let mut allowed = 0;
        for (i, &(advance_ms, cost)) in steps.iter().enumerate() {
            pair.clock.advance(Duration::from_millis(advance_ms));
            let (m, r) = pair.both(&checks, cost).await;
            assert_eq!(m, r, "{algorithm} step {i}");
            allowed += usize::from(m[0].allowed);
        }
        // The scenario exercises both outcomes.
        assert!(
            allowed > 3 && allowed < steps.len(),
            "{algorithm}: {allowed}"
        );
    }
}

#[tokio::test]
async fn several_limits_are_all_or_nothing_in_both_stores() {
    let server = RedisServer::start();
    let pair = Pair::new(&server, "multi");
    let checks = [
        Check::new("{k}:burst", spec(Algorithm::Gcra, 2, 1000, None)),
        Check::new(
            "{k}:minute",
            spec(Algorithm::SlidingWindow, 5, 60_000, None),
        ),
        Check::new(
            "{k}:hour",
            spec(Algorithm::FixedWindow, 100, 3_600_000, None),
        ),
    ];
    for step in 0..12 {
        let (m, r) = pair.both(&checks, 1).await;
        assert_eq!(m, r, "step {step}");
        pair.clock.advance(Duration::from_millis(400));
    }
    // After 12 attempts at 2.5/s, the per-minute limit has admitted exactly 5, and the
    // hour limit counted only admitted requests: refused ones consumed nothing.
    let (m, r) = pair.both(&checks, 0).await;
    assert_eq!(m, r);
    assert_eq!(m[2].remaining, 95);
    assert_eq!(m[1].remaining, 0);
}

/// A refused request consumed nothing, so the limits that would have admitted it must
/// report the state as it is: `5/m` and `100/h` per key, after 5 admitted requests the
/// refusal says the hour limit has 95 left (not 94), with the same reset as before.
#[tokio::test]
async fn a_refusal_reports_the_other_limits_as_they_are() {
    let server = RedisServer::start();
    for (n, algorithm) in ALGORITHMS.into_iter().enumerate() {
        let pair = Pair::new(&server, &format!("asis{n}"));
        let checks = [
            Check::new("{k}:per-minute", spec(algorithm, 5, 60_000, None)),
            Check::new("{k}:per-hour", spec(algorithm, 100, 3_600_000, None)),
        ];
        // The same admitted requests, without the refused ones in between.
        let baseline = MemoryStore::builder().clock(pair.clock.clone()).build();
        let mut last = Vec::new();
        for i in 0..5 {
            baseline.decide(&checks, 1);
            let (m, r) = pair.both(&checks, 1).await;
            assert_eq!(m, r, "{algorithm}: request {i}");
            assert!(m.iter().all(|v| v.allowed), "{algorithm}: request {i}");
            last = m;
        }
        assert_eq!(last[1].remaining, 95, "{algorithm}");
        for attempt in 0..3 {
            let (m, r) = pair.both(&checks, 1).await;
            assert_eq!(m, r, "{algorithm}: refusal {attempt}");
            assert!(!m[0].allowed, "{algorithm}: the minute limit refuses");
            assert!(m[1].allowed, "{algorithm}: the hour limit would admit");
            assert_eq!(m[1].remaining, 95, "{algorithm}: refusal {attempt}");
            assert_eq!(m[1].reset_after_us, last[1].reset_after_us, "{algorithm}");
            assert_eq!(m[1].retry_after_us, 0, "{algorithm}");
        }
        // Once the minute has recovered, the next request sees what it would have seen
        // had the refused ones never been sent.
        pair.clock.advance(Duration::from_secs(150));
        let (m, r) = pair.both(&checks, 1).await;
        assert_eq!(m, r, "{algorithm}: after the minute");
        assert!(m[0].allowed && m[1].allowed, "{algorithm}");
        assert_eq!(m, baseline.decide(&checks, 1), "{algorithm}");
    }
}

fn arb_spec() -> impl Strategy<Value = LimitSpec> {
    (
        prop::sample::select(ALGORITHMS.to_vec()),
        1u64..20,
        prop::sample::select(vec![1_000u64, 3_000, 10_000, 60_000, 3_600_000]),
        prop::option::of(1u64..30),
    )
        .prop_map(|(algorithm, quota, period, burst)| {
            let burst = burst.filter(|_| algorithm == Algorithm::Gcra);
            spec(algorithm, quota, period, burst)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random limits, random arrival times and costs: identical verdicts.
    #[test]
    fn random_sequences_agree(
        specs in prop::collection::vec(arb_spec(), 1..4),
        steps in prop::collection::vec((0u64..4_000_000, 0u64..6), 1..40),
    ) {
        let server = SERVER.with(|s| s.url());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let case = CASE.with(|c| { let n = c.get(); c.set(n + 1); n });
            let clock = ManualClock::new(T0);
            let memory = MemoryStore::builder().clock(clock.clone()).build();
            let redis = RedisStore::builder(server)
                .prefix(format!("prop{case}"))
                .clock(clock.clone())
                .key_grace(Duration::from_secs(3600))
                .response_timeout(Duration::from_secs(5))
                .build()
                .expect("valid url");
            let checks: Vec<Check> = specs
                .iter()
                .enumerate()
                .map(|(i, s)| Check::new(format!("{{k}}:{i}"), *s))
                .collect();
            for (i, (advance_us, cost)) in steps.iter().enumerate() {
                clock.advance(Duration::from_micros(*advance_us));
                let m = memory.check(&checks, *cost).await.expect("memory");
                let r = redis.check(&checks, *cost).await.expect("redis");
                prop_assert_eq!(m, r, "step {}", i);
            }
            Ok(())
        })?;
    }
}

thread_local! {
    static SERVER: RedisServer = RedisServer::start();
    static CASE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}
