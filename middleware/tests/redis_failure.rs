//! What the limiter does when Redis fails, against a real `redis-server` that the tests
//! kill, restart empty and freeze.
//!
//! The limiters here use a 500 ms timeout (production default: 50 ms) so that a loaded
//! CI machine never times out a healthy call. The bound on answer time during faults,
//! 2 s, is a correctness bound — a request must never wait out the redis-rs defaults'
//! seconds of retries (9 s measured) — not a speed measurement.

mod support;

use std::time::{Duration, Instant};

use support::request;
use support::RedisServer;
use tollgate::key::Key;
use tollgate::limiter::BreakerConfig;
use tollgate::policy::Policy;
use tollgate::store::RedisStore;
use tollgate::{DecisionKind, FailureMode, RateLimiter};

const GENEROUS: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_millis(500);

fn limiter(server: &RedisServer, mode: FailureMode, spec: &str, deny_cache: bool) -> RateLimiter {
    let store = RedisStore::builder(server.url())
        .response_timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .build()
        .expect("valid url");
    RateLimiter::builder()
        .store(store)
        .policy(Policy::single(
            "per-key",
            spec.parse().expect("spec"),
            Key::header("x-key"),
        ))
        .failure_mode(mode)
        .timeout(TIMEOUT)
        .circuit_breaker(BreakerConfig::new(2, Duration::from_millis(200)))
        .deny_cache(deny_cache)
        .build()
        .expect("valid limiter")
}

async fn timed(limiter: &RateLimiter, key: &str) -> (DecisionKind, Duration) {
    let started = Instant::now();
    let decision = limiter.check(&request(key)).await;
    (decision.kind, started.elapsed())
}

/// Polls (for up to 10 s) until a decision for `key` satisfies `done`; returns it.
/// The breaker probes every 200 ms, so recovery shows within a few polls.
async fn until(
    limiter: &RateLimiter,
    key: &str,
    done: impl Fn(&tollgate::Decision) -> bool,
) -> tollgate::Decision {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let decision = limiter.check(&request(key)).await;
        if done(&decision) {
            return decision;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered; last {decision:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until the limiter answers `want` again.
async fn until_kind(limiter: &RateLimiter, key: &str, want: DecisionKind) {
    until(limiter, key, |d| d.kind == want).await;
}

#[tokio::test]
async fn fail_open_answers_fast_and_recovers_after_restart() {
    let mut server = RedisServer::start();
    let limiter = limiter(&server, FailureMode::Open, "100/m", true);
    assert_eq!(timed(&limiter, "a").await.0, DecisionKind::Allowed);
    server.kill();
    for _ in 0..20 {
        let (kind, took) = timed(&limiter, "a").await;
        assert_eq!(kind, DecisionKind::FailedOpen);
        assert!(took < GENEROUS, "waited {took:?}");
    }
    assert_eq!(
        limiter.circuit_state(),
        tollgate::limiter::CircuitState::Open
    );
    server.restart();
    until_kind(&limiter, "a", DecisionKind::Allowed).await;
    assert_eq!(
        limiter.circuit_state(),
        tollgate::limiter::CircuitState::Closed
    );
}

#[tokio::test]
async fn fail_closed_refuses_with_a_retry_after() {
    let mut server = RedisServer::start();
    let limiter = limiter(&server, FailureMode::Closed, "100/m", true);
    server.kill();
    let decision = limiter.check(&request("a")).await;
    assert!(matches!(decision.kind, DecisionKind::FailedClosed { .. }));
    assert!(!decision.passes());
    assert!(decision.retry_after() >= Duration::from_secs(1));
    server.restart();
    until_kind(&limiter, "a", DecisionKind::Allowed).await;
}

#[tokio::test]
async fn local_fallback_keeps_limiting_during_the_outage() {
    let mut server = RedisServer::start();
    let limiter = limiter(&server, FailureMode::Local, "3/m", true);
    server.kill();
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let d = limiter.check(&request("a")).await;
        assert!(d.from_fallback);
        kinds.push(d.kind);
    }
    assert_eq!(
        kinds,
        [
            DecisionKind::Allowed,
            DecisionKind::Allowed,
            DecisionKind::Allowed,
            DecisionKind::Limited
        ]
    );
    server.restart();
    // Redis restarted empty: once the breaker probes, decisions come from it again and
    // the shared count starts over.
    let d = until(&limiter, "a", |d| !d.from_fallback).await;
    assert_eq!(d.kind, DecisionKind::Allowed);
}

#[tokio::test]
async fn a_frozen_redis_costs_at_most_the_timeout() {
    let server = RedisServer::start();
    let limiter = limiter(&server, FailureMode::Open, "100/m", true);
    assert_eq!(timed(&limiter, "a").await.0, DecisionKind::Allowed);
    server.freeze();
    for _ in 0..5 {
        let (kind, took) = timed(&limiter, "a").await;
        assert_eq!(kind, DecisionKind::FailedOpen);
        assert!(took < GENEROUS, "waited {took:?}");
    }
    server.thaw();
    until_kind(&limiter, "a", DecisionKind::Allowed).await;
}

#[tokio::test]
async fn deny_cache_answers_refused_keys_without_redis() {
    let mut server = RedisServer::start();
    let cached = limiter(&server, FailureMode::Open, "1/h", true);
    let uncached = limiter(&server, FailureMode::Open, "1/h", false);
    assert_eq!(timed(&cached, "a").await.0, DecisionKind::Allowed);
    assert_eq!(timed(&cached, "a").await.0, DecisionKind::Limited);
    assert_eq!(timed(&uncached, "a").await.0, DecisionKind::Limited);
    server.kill();
    // The refusal is remembered locally for its Retry-After (about an hour)...
    let d = cached.check(&request("a")).await;
    assert_eq!(d.kind, DecisionKind::Limited);
    assert!(d.retry_after() > Duration::from_secs(3000));
    // ...while without the cache the outage shows.
    assert_eq!(timed(&uncached, "a").await.0, DecisionKind::FailedOpen);
    // Other keys were never refused, so they see the outage too.
    assert_eq!(timed(&cached, "b").await.0, DecisionKind::FailedOpen);
}

#[tokio::test]
async fn script_cache_flush_is_survived() {
    let server = RedisServer::start();
    let limiter = limiter(&server, FailureMode::Closed, "100/m", true);
    assert_eq!(timed(&limiter, "a").await.0, DecisionKind::Allowed);
    server.cli(&["SCRIPT", "FLUSH"]).expect("flush");
    assert_eq!(timed(&limiter, "a").await.0, DecisionKind::Allowed);
}

#[tokio::test]
async fn keys_carry_a_ttl() {
    let server = RedisServer::start();
    let limiter = limiter(&server, FailureMode::Closed, "10/m", true);
    assert_eq!(timed(&limiter, "ttl-key").await.0, DecisionKind::Allowed);
    let key = "tollgate:{per-key:ttl-key}:per-key:v2";
    let ttl: i64 = server
        .cli(&["PTTL", key])
        .and_then(|s| s.trim().parse().ok())
        .expect("PTTL answers");
    // One unit of 10/m is 6 s of GCRA debt, plus the 1 s grace.
    assert!(ttl > 0 && ttl <= 7_000, "ttl {ttl}");
}

#[tokio::test]
async fn three_nodes_share_one_limit_exactly() {
    let server = RedisServer::start();
    // This test is about atomicity, not outages: timeouts far above any scheduling
    // delay, so that no decision can fail on a loaded machine.
    let nodes: Vec<RateLimiter> = (0..3)
        .map(|_| {
            let store = RedisStore::builder(server.url())
                .response_timeout(Duration::from_secs(10))
                .build()
                .expect("valid url");
            RateLimiter::builder()
                .store(store)
                .policy(Policy::single(
                    "per-key",
                    "50/h".parse().expect("spec"),
                    Key::header("x-key"),
                ))
                .failure_mode(FailureMode::Closed)
                .timeout(Duration::from_secs(10))
                .deny_cache(false)
                .build()
                .expect("valid limiter")
        })
        .collect();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let node = nodes[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            node.check(&request("shared")).await.kind
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        match t.await.expect("task") {
            DecisionKind::Allowed => allowed += 1,
            DecisionKind::Limited => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(allowed, 50);
}
