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
use tollgate::store::RedisStore;
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

thread_local! {
    static SERVER: RedisServer = RedisServer::start();
}
