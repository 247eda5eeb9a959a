//! `RedisStore::sentinel` against a real primary, one replica and three sentinels:
//! kill the primary under load, and decisions resume on the promoted replica without
//! restarting the limiter.

mod support;
#[path = "support/topology.rs"]
mod topology;

use std::time::{Duration, Instant};

use support::request;
use tollgate::key::Key;
use tollgate::limiter::BreakerConfig;
use tollgate::policy::Policy;
use tollgate::store::{Check, RedisStore, Store, StoreErrorKind};
use tollgate::{DecisionKind, FailureMode, RateLimiter};
use topology::Sentinels;

const TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_follow_a_sentinel_failover() {
    let mut deployment = Sentinels::start();
    let store = RedisStore::sentinel(deployment.urls(), Sentinels::MASTER)
        .response_timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .build()
        .expect("valid sentinel store");
    let limiter = RateLimiter::builder()
        .store(store)
        .policy(Policy::single(
            "s",
            "5/h".parse().expect("spec"),
            Key::header("x-key"),
        ))
        .failure_mode(FailureMode::Closed)
        .timeout(TIMEOUT)
        .circuit_breaker(BreakerConfig::new(3, Duration::from_millis(200)))
        .deny_cache(false)
        .build()
        .expect("valid limiter");

    // Exact on the first primary.
    let mut admitted = 0;
    for _ in 0..7 {
        if limiter.check(&request("before")).await.kind == DecisionKind::Allowed {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
    // Let the replica receive the writes before the primary dies.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let old = deployment.primary.port;
    deployment.primary.kill();
    let killed = Instant::now();
    let mut failed = 0;
    let mut resumed = None;
    let mut n = 0u32;
    while killed.elapsed() < Duration::from_secs(30) {
        n += 1;
        match limiter.check(&request(&format!("after{n}"))).await.kind {
            DecisionKind::Allowed => {
                resumed = Some(killed.elapsed());
                break;
            }
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumed = resumed.expect("decisions resume after the failover");
    let new = deployment.primary_port().expect("a primary");
    assert_ne!(new, old, "the replica was promoted");
    eprintln!(
        "sentinel failover: decisions failed closed for {resumed:?} ({failed} decisions), then resumed on the promoted replica"
    );

    // Exact again on the new primary, and the replicated consumption survived.
    let mut admitted = 0;
    for _ in 0..7 {
        if limiter.check(&request("later")).await.kind == DecisionKind::Allowed {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
    assert_eq!(
        limiter.check(&request("before")).await.kind,
        DecisionKind::Limited,
        "consumption replicated before the kill survives the failover"
    );
}

/// A "sentinel" that accepts connections and never answers (a frozen process, a
/// half-open network path): the lookup must fail within the store's lookup timeout
/// instead of holding the decision, with no limiter timeout around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sentinel_fails_the_lookup_within_its_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Accept and keep every connection open without reading a byte.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let lookup = Duration::from_millis(200);
    let store = RedisStore::sentinel([format!("redis://{addr}")], Sentinels::MASTER)
        .response_timeout(Duration::from_millis(100))
        .connect_timeout(Duration::from_millis(100))
        .sentinel_lookup_timeout(lookup)
        .build()
        .expect("valid sentinel store");
    let checks = [Check::new("{silent}:l", "5/h".parse().expect("spec"))];
    for _ in 0..3 {
        let started = Instant::now();
        // The outer bound only keeps a regression from hanging the test.
        let answer = tokio::time::timeout(Duration::from_secs(10), store.check(&checks, 1))
            .await
            .expect("the lookup is bounded by the store itself");
        let took = started.elapsed();
        let error = answer.expect_err("no primary was found");
        assert_eq!(error.kind(), StoreErrorKind::Timeout, "{error}");
        // Below redis-rs' own 1 s connect timeout, which bounded the lookup before.
        assert!(
            took >= lookup && took < Duration::from_millis(900),
            "failed after {took:?} with a {lookup:?} lookup timeout"
        );
    }
    silent.abort();
}

#[test]
fn a_zero_lookup_timeout_is_a_config_error() {
    let error = RedisStore::sentinel(["redis://127.0.0.1:1"], Sentinels::MASTER)
        .sentinel_lookup_timeout(Duration::ZERO)
        .build()
        .expect_err("zero is refused");
    assert_eq!(error.kind(), StoreErrorKind::Config);
}
