//! The Redis store makes the same decisions as the memory store.
//!
//! `tollgate::testing` replays its scripted scenarios and seeded random sequences
//! against the production Lua script on a real `redis-server` and, step by step,
//! against `MemoryStore`, both clocked by one injected clock; every verdict — allowed,
//! remaining, reset and retry times — must be equal. The proptest below adds random
//! sequences that shrink to a minimal failing case.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use support::RedisServer;
use tollgate::store::{Check, MemoryStore, RedisStore};
use tollgate::testing::{self, Scenario, Step};
use tollgate::{Algorithm, LimitSpec, ManualClock};

/// A Redis store reading `clock`, under a prefix no other store of the test uses.
fn redis(url: &str, clock: ManualClock) -> RedisStore {
    static PREFIX: AtomicU64 = AtomicU64::new(0);
    RedisStore::builder(url)
        .prefix(format!(
            "conformance{}",
            PREFIX.fetch_add(1, Ordering::Relaxed)
        ))
        .clock(clock)
        // Keys must outlive the test even though the injected clock stands still.
        .key_grace(Duration::from_secs(3600))
        .response_timeout(Duration::from_secs(5))
        .build()
        .expect("valid url")
}

#[tokio::test]
async fn redis_store_conforms() {
    let server = RedisServer::start();
    let url = server.url();
    testing::assert_conformance(|clock| redis(&url, clock)).await;
}

const ALGORITHMS: [Algorithm; 3] = [
    Algorithm::Gcra,
    Algorithm::FixedWindow,
    Algorithm::SlidingWindow,
];

fn arb_spec() -> impl Strategy<Value = LimitSpec> {
    (
        prop::sample::select(ALGORITHMS.to_vec()),
        1u64..20,
        prop::sample::select(vec![1_000u64, 3_000, 10_000, 60_000, 3_600_000]),
        prop::option::of(1u64..30),
    )
        .prop_map(|(algorithm, quota, period, burst)| {
            let burst = burst.filter(|_| algorithm == Algorithm::Gcra);
            LimitSpec::new(algorithm, quota, Duration::from_millis(period), burst).expect("valid")
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
        let url = SERVER.with(|s| s.url());
        let scenario = Scenario::new(
            "proptest",
            specs.into_iter().enumerate(),
            steps
                .into_iter()
                .map(|(us, cost)| Step::new(Duration::from_micros(us), cost))
                .collect(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let result = runtime.block_on(testing::run_scenario(&scenario, |clock| redis(&url, clock)));
        if let Err(mismatch) = result {
            prop_assert!(false, "{}", mismatch);
        }
    }
}

/// The production script, as `RedisStore` loads it.
const DECIDE_LUA: &str = include_str!("../src/store/redis/decide.lua");

/// One request of a script batch: its limits as (spec, key slot) pairs, and its cost.
type Request = (Vec<(usize, usize)>, u64);

/// A batch: how far the clock moves before it, whether it is the common shape (every
/// request one limit of spec 0, a GCRA limit: the script's fast path), and its requests.
type Batch = (u64, bool, Vec<Request>);

fn arb_batch() -> impl Strategy<Value = Batch> {
    let limits = prop::collection::vec((0usize..4, 0usize..3), 1..3);
    (
        0u64..3_000_000,
        prop::bool::ANY,
        prop::collection::vec((limits, 0u64..5), 1..12),
    )
}

/// Decides `batches` with one `decide.lua` call each (requests in order, as the
/// batching driver sends them), and each request one by one with `MemoryStore` at the
/// same instant: every verdict must be equal. Keys repeat within and across batches, so
/// a request sees what the previous ones of its batch left.
fn batches_agree(specs: &[LimitSpec], batches: Vec<Batch>, run: u64) -> Result<(), String> {
    let url = SERVER.with(|s| s.url());
    let mut redis = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .map_err(|e| e.to_string())?;
    let script = redis::Script::new(DECIDE_LUA);
    let reference = MemoryStore::new();
    let mut now = testing::START_US;
    for (b, (advance, common, requests)) in batches.into_iter().enumerate() {
        now += advance as i64;
        let requests: Vec<Request> = requests
            .into_iter()
            .map(|(limits, cost)| match common {
                true => (vec![(0, limits[0].1)], cost),
                false => {
                    let mut limits: Vec<_> = limits
                        .into_iter()
                        .map(|(s, k)| (s % specs.len(), k))
                        .collect();
                    // One check per key in a request, as a policy's limits have.
                    limits.sort_unstable();
                    limits.dedup();
                    (limits, cost)
                }
            })
            .collect();
        // The key names the limit too, as the store's keys do.
        let key = |(s, k): (usize, usize)| format!("batches{run}:s{s}:k{k}");
        let mut call = script.prepare_invoke();
        let mut ints: Vec<i64> = vec![specs.len() as i64];
        for spec in specs {
            ints.extend([
                // decide.lua's algorithm numbers.
                match spec.algorithm() {
                    Algorithm::Gcra => 0,
                    Algorithm::FixedWindow => 1,
                    Algorithm::SlidingWindow => 2,
                    other => unreachable!("no script number for {other:?}"),
                },
                spec.quota() as i64,
                spec.period_ms(),
                spec.burst() as i64,
                spec.interval_us(),
            ]);
        }
        ints.push(requests.len() as i64);
        for (limits, cost) in &requests {
            ints.extend([limits.len() as i64, *cost as i64, 0]);
            for &(s, k) in limits {
                call.key(key((s, k)));
                ints.push(s as i64 + 1);
            }
        }
        call.arg(now).arg(3_600_000).arg(ints);
        let answer: Vec<i64> = call.invoke(&mut redis).map_err(|e| e.to_string())?;
        let mut at = 0;
        for (r, (limits, cost)) in requests.iter().enumerate() {
            let checks: Vec<Check> = limits
                .iter()
                .map(|&(s, k)| Check::new(key((s, k)), specs[s]))
                .collect();
            let expected = reference.decide_at(now, &checks, *cost);
            for (i, want) in expected.iter().enumerate() {
                let got = answer.get(at..at + 4).ok_or("a short answer")?;
                let got = (got[0] == 1, got[1] as u64, got[2], got[3]);
                let want = (
                    want.allowed,
                    want.remaining,
                    want.reset_after_us,
                    want.retry_after_us,
                );
                if got != want {
                    return Err(format!(
                        "batch {b} (common shape: {common}), request {r} {limits:?} at cost {cost}, limit {i}: \
                         script {got:?}, memory {want:?}; batch {requests:?}"
                    ));
                }
                at += 4;
            }
        }
        if at != answer.len() {
            return Err(format!("{} values for {at}", answer.len()));
        }
    }
    Ok(())
}

/// GCRA first (the fast path's limit), then any.
fn arb_specs() -> impl Strategy<Value = Vec<LimitSpec>> {
    let gcra = (
        1u64..20,
        prop::sample::select(vec![1_000u64, 10_000, 60_000]),
        prop::option::of(1u64..30),
    )
        .prop_map(|(quota, period, burst)| {
            LimitSpec::new(Algorithm::Gcra, quota, Duration::from_millis(period), burst)
                .expect("valid")
        });
    (gcra, prop::collection::vec(arb_spec(), 0..3))
        .prop_map(|(first, rest)| std::iter::once(first).chain(rest).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whole batches in one script call, against the memory store one request at a
    /// time: the script's fast path (batches of one-limit GCRA requests) and its
    /// general path (any other batch) give the memory store's verdicts.
    #[test]
    fn script_batches_agree(
        specs in arb_specs(),
        batches in prop::collection::vec(arb_batch(), 1..10),
    ) {
        static RUN: AtomicU64 = AtomicU64::new(0);
        if let Err(mismatch) = batches_agree(&specs, batches, RUN.fetch_add(1, Ordering::Relaxed)) {
            prop_assert!(false, "{}", mismatch);
        }
    }
}

thread_local! {
    static SERVER: RedisServer = RedisServer::start();
}
