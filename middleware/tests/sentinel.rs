//! `RedisStore::sentinel` against a real primary, one replica and three sentinels:
//! kill the primary under load, and decisions resume on the promoted replica without
//! restarting the limiter.

mod support;
#[path = "support/topology.rs"]
mod topology;

use std::time::{Duration, Instant};

use http::request::Parts;
use tollgate::key::Key;
use tollgate::limiter::BreakerConfig;
use tollgate::policy::Policy;
use tollgate::store::RedisStore;
use tollgate::{DecisionKind, FailureMode, RateLimiter};
use topology::Sentinels;

const TIMEOUT: Duration = Duration::from_millis(500);

fn request(key: &str) -> Parts {
    http::Request::get("/")
        .header("x-key", key)
        .body(())
        .expect("valid")
        .into_parts()
        .0
}

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
