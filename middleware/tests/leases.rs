//! Leased budgets (issue 13) against a real `redis-server`: several limiters, each with
//! its own `RedisStore` ("nodes"), share one hot key.
//!
//! What is asserted is what the design promises (docs/design.md, "Leased budgets"):
//! never more than the limit admitted across nodes, nearly all of it admitted, unused
//! units back in Redis after `return_leases`, small limits and small budgets decided
//! exactly, a node's lease spent through an outage and the failure mode after it, and
//! the memory store exact either way. No assertion depends on speed: loads are bounded
//! by count and by time, and the bounds hold whatever the machine's load.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::RedisServer;
use tollgate::algorithm::Verdict;
use tollgate::key::Key;
use tollgate::policy::{Consistency, Limit, Policy};
use tollgate::store::{Charged, Check, RedisStore, Store, StoreFuture};
use tollgate::{
    Algorithm, DecisionKind, FailureMode, LeaseConfig, LimitSpec, ManualClock, RateLimiter,
};

/// Generous for a loaded CI machine; what is bounded here is counts, not time.
const TIMEOUT: Duration = Duration::from_millis(500);

/// A `RedisStore` that counts the calls the limiter makes, so a test can tell leased
/// decisions (charges, few store calls) from exact ones (one `check` each).
struct Counted {
    inner: RedisStore,
    checks: AtomicU64,
    charges: AtomicU64,
    give_backs: AtomicU64,
}

impl Counted {
    fn new(server: &RedisServer) -> Arc<Self> {
        let inner = RedisStore::builder(server.url())
            .response_timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .build()
            .expect("valid url");
        Arc::new(Counted {
            inner,
            checks: AtomicU64::new(0),
            charges: AtomicU64::new(0),
            give_backs: AtomicU64::new(0),
        })
    }

    fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    fn charges(&self) -> u64 {
        self.charges.load(Ordering::Relaxed)
    }
}

impl Store for Counted {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn check<'a>(&'a self, checks: &'a [Check], cost: u64) -> StoreFuture<'a, Vec<Verdict>> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        self.inner.check(checks, cost)
    }

    fn charge<'a>(&'a self, check: &'a Check, units: u64) -> StoreFuture<'a, Charged> {
        self.charges.fetch_add(1, Ordering::Relaxed);
        self.inner.charge(check, units)
    }

    fn give_back<'a>(&'a self, check: &'a Check, mark: i64, units: u64) -> StoreFuture<'a, ()> {
        self.give_backs.fetch_add(1, Ordering::Relaxed);
        self.inner.give_back(check, mark, units)
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.inner.ping()
    }
}

fn node(store: &Arc<Counted>, mode: FailureMode, lease: LeaseConfig) -> RateLimiter {
    RateLimiter::builder()
        .shared_store(store.clone())
        .failure_mode(mode)
        .timeout(TIMEOUT)
        .deny_cache(false)
        .lease(lease)
        .build()
        .expect("valid limiter")
}

fn leased(name: &str, spec: LimitSpec) -> Limit {
    Limit::new(name, spec, Key::global()).with_consistency(Consistency::Leased)
}

/// Seconds left in the current `period_s` window by the Redis clock.
fn window_left(server: &RedisServer, period_s: u64) -> u64 {
    let time = server.cli(&["TIME"]).expect("TIME");
    let secs: u64 = time
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("seconds");
    period_s - secs % period_s
}

/// Hammers `limit` on key `hot` from every node with `tasks` tasks each, until `until`,
/// `max_per_task` decisions per task, or 50 refusals in a row (the budget is gone);
/// returns the admissions.
async fn hammer(
    nodes: &[RateLimiter],
    limit: &Limit,
    tasks: usize,
    max_per_task: u64,
    until: Instant,
) -> u64 {
    let admitted = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for node in nodes {
        for _ in 0..tasks {
            let (node, limit, admitted) = (node.clone(), limit.clone(), admitted.clone());
            handles.push(tokio::spawn(async move {
                let mut refused = 0;
                for _ in 0..max_per_task {
                    if Instant::now() >= until || refused == 50 {
                        break;
                    }
                    let d = node.decide_one(&limit, "hot", 1).await.expect("valid");
                    match d.kind {
                        DecisionKind::Allowed => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            refused = 0;
                        }
                        DecisionKind::Limited => refused += 1,
                        other => panic!("unexpected decision {other:?}"),
                    }
                }
            }));
        }
    }
    for h in handles {
        h.await.expect("task");
    }
    admitted.load(Ordering::Relaxed)
}

/// Three nodes, one hot key, a budget the offered load exceeds: admitted ≤ the limit
/// (leases are consumption in advance) and ≥ 95 % of it (few units stranded).
async fn three_nodes_share_one_budget(algorithm: Algorithm) {
    let server = RedisServer::start();
    const QUOTA: u64 = 6_000;
    // One hour: the run (≤ 8 s) stays inside one fixed window, and GCRA refills only
    // QUOTA / 3600 ≈ 1.7 units a second.
    let spec = LimitSpec::new(algorithm, QUOTA, Duration::from_secs(3600), None).expect("spec");
    if window_left(&server, 3600) < 30 {
        tokio::time::sleep(Duration::from_secs(window_left(&server, 3600) + 1)).await;
    }
    let stores: Vec<_> = (0..3).map(|_| Counted::new(&server)).collect();
    let nodes: Vec<_> = stores
        .iter()
        .map(|s| node(s, FailureMode::Closed, LeaseConfig::new()))
        .collect();
    let limit = leased("hot", spec);
    let started = Instant::now();
    let admitted = hammer(&nodes, &limit, 8, 20_000, started + Duration::from_secs(8)).await;
    let elapsed = started.elapsed();
    let charges: u64 = stores.iter().map(|s| s.charges()).sum();
    let checks: u64 = stores.iter().map(|s| s.checks()).sum();
    // GCRA also refills during the run: burst + rate × elapsed (+1 for rounding).
    let refill = match algorithm {
        Algorithm::Gcra => (elapsed.as_secs_f64() * QUOTA as f64 / 3600.0).ceil() as u64 + 1,
        _ => 0,
    };
    assert!(
        admitted <= QUOTA + refill,
        "{algorithm:?}: admitted {admitted} > {QUOTA} + {refill} ({charges} leases, {checks} exact calls)"
    );
    assert!(
        admitted * 100 >= QUOTA * 95,
        "{algorithm:?}: admitted {admitted} < 95 % of {QUOTA} ({charges} leases, {checks} exact calls)"
    );
    eprintln!(
        "{algorithm:?}: admitted {admitted} of {QUOTA} (+{refill} refill) in {elapsed:?}: \
         {charges} leases, {checks} exact store calls"
    );
    // Leases were used: far fewer store calls than admissions.
    assert!(charges > 0, "{algorithm:?}: no lease was taken");
    assert!(
        charges + checks < admitted,
        "{algorithm:?}: {charges} leases + {checks} exact calls for {admitted} admissions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_fixed_window_never_over_admits_across_three_nodes() {
    three_nodes_share_one_budget(Algorithm::FixedWindow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_gcra_never_over_admits_across_three_nodes() {
    three_nodes_share_one_budget(Algorithm::Gcra).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_sliding_window_never_over_admits_across_three_nodes() {
    three_nodes_share_one_budget(Algorithm::SlidingWindow).await;
}

/// Warms `limit` on `node` until it holds a lease (bounded: 3 s, 200 000 decisions).
async fn warm_until_leased(node: &RateLimiter, store: &Counted, limit: &Limit) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut admitted = 0;
    for _ in 0..200_000 {
        if Instant::now() >= deadline {
            break;
        }
        let d = node.decide_one(limit, "hot", 1).await.expect("valid");
        assert_eq!(d.kind, DecisionKind::Allowed);
        admitted += 1;
        if store.charges() > 0 && admitted % 64 == 0 {
            return admitted;
        }
    }
    panic!("no lease taken after {admitted} decisions");
}

/// What Redis counts against `limit` under `key`, read with an exact cost-0 decision of
/// `policy` (it consumes nothing, and does not depend on the script's storage format).
async fn counted(server: &RedisServer, policy: &str, limit: &Limit, key: &str) -> u64 {
    let probe = node(
        &Counted::new(server),
        FailureMode::Closed,
        LeaseConfig::new(),
    );
    let exact = limit.clone().with_consistency(Consistency::Exact);
    let d = probe
        .decide_many(policy, &[(exact, key.to_owned())], 0)
        .await
        .expect("valid");
    assert_eq!(d.kind, DecisionKind::Allowed, "a cost-0 probe");
    limit.spec().quota() - d.limits[0].verdict.remaining
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_leases_gives_unused_units_back() {
    let server = RedisServer::start();
    if window_left(&server, 3600) < 30 {
        tokio::time::sleep(Duration::from_secs(window_left(&server, 3600) + 1)).await;
    }
    const QUOTA: u64 = 100_000;
    let spec = LimitSpec::new(
        Algorithm::FixedWindow,
        QUOTA,
        Duration::from_secs(3600),
        None,
    )
    .unwrap();
    let limit = leased("ret", spec);
    // A long target, so the lease is large next to what the warm-up spends after it.
    let config = LeaseConfig::new()
        .target(Duration::from_millis(500))
        .max_age(Duration::from_secs(30));
    let a_store = Counted::new(&server);
    let a = node(&a_store, FailureMode::Closed, config.clone());
    let admitted_a = warm_until_leased(&a, &a_store, &limit).await;
    let before = counted(&server, "ret", &limit, "hot").await;
    assert!(
        before > admitted_a,
        "the lease counts units in advance: {before} counted, {admitted_a} admitted"
    );
    a.return_leases().await;
    assert_eq!(
        counted(&server, "ret", &limit, "hot").await,
        admitted_a,
        "after return_leases Redis counts exactly what node A admitted"
    );
    // Another node can spend every unit A did not admit.
    let b_store = Counted::new(&server);
    let b = node(&b_store, FailureMode::Closed, LeaseConfig::new());
    let rest = QUOTA - admitted_a;
    let d = b.decide_one(&limit, "hot", rest).await.expect("valid");
    assert_eq!(
        d.kind,
        DecisionKind::Allowed,
        "{rest} units left for node B"
    );
    assert_eq!(d.limits[0].verdict.remaining, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_limits_and_small_budgets_stay_exact() {
    let server = RedisServer::start();
    // A 10/m limit never leases: its slice would be under 2 units (10 % of 10 = 1).
    let store = Counted::new(&server);
    let n = node(&store, FailureMode::Closed, LeaseConfig::new());
    let small = leased("small", "10/m".parse().unwrap());
    let mut kinds = Vec::new();
    for _ in 0..200 {
        kinds.push(n.decide_one(&small, "hot", 1).await.expect("valid").kind);
    }
    let allowed = kinds
        .iter()
        .filter(|k| **k == DecisionKind::Allowed)
        .count();
    assert_eq!(allowed, 10);
    assert_eq!(store.charges(), 0, "a 10/m limit took a lease");
    assert_eq!(store.checks(), 200, "every decision was the store's");

    // A large limit whose remaining budget is small: 7 units left is under four slices
    // of the smallest slice (2), so the key stays exact to the last unit.
    if window_left(&server, 3600) < 30 {
        tokio::time::sleep(Duration::from_secs(window_left(&server, 3600) + 1)).await;
    }
    let spec = LimitSpec::new(
        Algorithm::FixedWindow,
        100_000,
        Duration::from_secs(3600),
        None,
    )
    .unwrap();
    let big = leased("big", spec);
    let exact = Limit::new("big", spec, Key::global());
    let d = n
        .decide_one(&exact, "hot", 100_000 - 7)
        .await
        .expect("valid");
    assert_eq!(d.kind, DecisionKind::Allowed);
    let before = store.checks();
    let mut allowed = 0;
    for _ in 0..2_000 {
        if n.decide_one(&big, "hot", 1).await.expect("valid").kind == DecisionKind::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 7);
    assert_eq!(store.charges(), 0, "a lease was taken from a small budget");
    assert_eq!(store.checks() - before, 2_000);
}

/// A node warms a leased key, Redis dies; the node answers from its lease, then the
/// failure mode answers. Returns how many were admitted from the lease.
async fn outage_after_lease(mode: FailureMode) -> (u64, DecisionKind) {
    let mut server = RedisServer::start();
    let store = Counted::new(&server);
    // A long lease (2 s of traffic, capped at 10 % of 10^6) that does not age out
    // during the test.
    let config = LeaseConfig::new()
        .target(Duration::from_secs(2))
        .max_age(Duration::from_secs(60));
    let n = node(&store, mode, config);
    let spec = LimitSpec::new(Algorithm::Gcra, 1_000_000, Duration::from_secs(3600), None).unwrap();
    let limit = leased("down", spec);
    warm_until_leased(&n, &store, &limit).await;
    server.kill();
    let mut from_lease = 0;
    for _ in 0..1_000_000 {
        let d = n.decide_one(&limit, "hot", 1).await.expect("valid");
        if d.kind != DecisionKind::Allowed {
            return (from_lease, d.kind);
        }
        from_lease += 1;
    }
    panic!("a lease outlived {from_lease} decisions with Redis down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_spends_the_lease_then_fails_closed() {
    let (from_lease, kind) = outage_after_lease(FailureMode::Closed).await;
    assert!(from_lease > 0, "nothing was admitted from the lease");
    assert!(
        matches!(kind, DecisionKind::FailedClosed { .. }),
        "then {kind:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_spends_the_lease_then_fails_open() {
    let (from_lease, kind) = outage_after_lease(FailureMode::Open).await;
    assert!(from_lease > 0, "nothing was admitted from the lease");
    assert_eq!(kind, DecisionKind::FailedOpen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_policy_stays_all_or_nothing() {
    let server = RedisServer::start();
    if window_left(&server, 3600) < 30 {
        tokio::time::sleep(Duration::from_secs(window_left(&server, 3600) + 1)).await;
    }
    let store = Counted::new(&server);
    let config = LeaseConfig::new().max_age(Duration::from_secs(60));
    let n = node(&store, FailureMode::Closed, config);
    let big = LimitSpec::new(
        Algorithm::FixedWindow,
        1_000_000,
        Duration::from_secs(3600),
        None,
    )
    .unwrap();
    let small = LimitSpec::new(
        Algorithm::FixedWindow,
        3_000,
        Duration::from_secs(3600),
        None,
    )
    .unwrap();
    let limits = [
        (leased("wide", big), "hot".to_owned()),
        (Limit::new("narrow", small, Key::global()), "hot".to_owned()),
    ];
    let mut allowed = 0;
    for _ in 0..4_000 {
        let d = n.decide_many("mix", &limits, 1).await.expect("valid");
        match d.kind {
            DecisionKind::Allowed => allowed += 1,
            DecisionKind::Limited => assert_eq!(d.violated().collect::<Vec<_>>(), ["narrow"]),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(allowed, 3_000, "the exact limit admits its quota");
    assert!(store.charges() > 0, "the wide limit was leased");
    // Refusals put their local units back: once the lease is returned, Redis counts
    // exactly the admitted requests against the leased limit too.
    n.return_leases().await;
    assert_eq!(counted(&server, "mix", &limits[0].0, "hot").await, 3_000);
}

/// With the memory store a leased limit decides exactly as an exact one: same verdicts
/// for the same sequence of requests and instants.
#[tokio::test]
async fn memory_store_leased_is_exact() {
    let clock = ManualClock::new(support::T0);
    let build = |consistency| {
        RateLimiter::builder()
            .clock(clock.clone())
            .policy(
                Policy::new("p")
                    .limit(
                        Limit::new("g", "50/s,burst=20".parse().unwrap(), Key::global())
                            .with_consistency(consistency),
                    )
                    .limit(
                        Limit::new(
                            "w",
                            LimitSpec::parse_with("300/s", Algorithm::SlidingWindow).unwrap(),
                            Key::global(),
                        )
                        .with_consistency(consistency),
                    ),
            )
            .build()
            .expect("valid")
    };
    let exact = build(Consistency::Exact);
    let lease = build(Consistency::Leased);
    let request = http::Request::get("/").body(()).unwrap().into_parts().0;
    let mut seed: u64 = 7;
    for step in 0..5_000 {
        // A small linear congruential generator: reproducible, no dependency.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if seed >> 60 == 0 {
            clock.advance(Duration::from_micros((seed >> 20) % 200_000));
        }
        let a = exact.check(&request).await;
        let b = lease.check(&request).await;
        assert_eq!(a.kind, b.kind, "step {step}");
        assert_eq!(a.limits, b.limits, "step {step}");
    }
}

/// `return_leases` can be spawned (the sidecar's drain runs it on a runtime's task).
#[test]
fn return_leases_is_a_send_future() {
    fn assert_send<T: Send>(_: &T) {}
    let limiter = RateLimiter::builder().build().expect("valid");
    let future = limiter.return_leases();
    assert_send(&future);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt")
        .block_on(future);
}

#[test]
fn lease_settings_are_validated() {
    for fraction in [0.0, -0.1, 1.5, f64::NAN] {
        let e = RateLimiter::builder()
            .lease(LeaseConfig::new().max_fraction(fraction))
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("max_fraction"), "{e}");
    }
    let e = RateLimiter::builder()
        .lease(LeaseConfig::new().max_age(Duration::ZERO))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("max_age"), "{e}");
    assert!(RateLimiter::builder()
        .lease(LeaseConfig::new().max_fraction(1.0))
        .build()
        .is_ok());
}

/// A request dropped while its refill waits (a client that went away) does not leave
/// the key exact for good: once Redis answers again, the node leases again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_refill_does_not_stop_leasing() {
    let server = RedisServer::start();
    let store = Counted::new(&server);
    let n = node(&store, FailureMode::Closed, LeaseConfig::new());
    let spec = LimitSpec::new(Algorithm::Gcra, 1_000_000, Duration::from_secs(3600), None).unwrap();
    let limit = leased("drop", spec);
    warm_until_leased(&n, &store, &limit).await;
    server.freeze();
    let mut dropped = false;
    for _ in 0..1_000_000 {
        let decision = n.decide_one(&limit, "hot", 1);
        if tokio::time::timeout(Duration::from_millis(50), decision)
            .await
            .is_err()
        {
            dropped = true;
            break;
        }
    }
    server.thaw();
    assert!(dropped, "no decision waited for the frozen Redis");
    let before = store.charges();
    for _ in 0..20_000 {
        n.decide_one(&limit, "hot", 1).await.expect("valid");
        if store.charges() > before {
            return;
        }
    }
    panic!("no lease taken after the dropped refill");
}

/// The lease families show from the start (at zero) for a policy with a leased limit,
/// and then count leases, local and store decisions, and returned units.
#[test]
fn lease_metrics_count_leases_decisions_and_returns() {
    let server = RedisServer::start();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let spec = LimitSpec::new(Algorithm::Gcra, 1_000_000, Duration::from_secs(3600), None).unwrap();
    let parts = http::Request::get("/").body(()).unwrap().into_parts().0;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let value = |text: &str, series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    metrics::with_local_recorder(&recorder, || {
        let limiter = runtime.block_on(async {
            RateLimiter::builder()
                .store(RedisStore::builder(server.url()).build().expect("url"))
                // Patient, and slices of a second of traffic kept for a minute: however
                // slowly a loaded machine runs this loop, the lease outlives the 64
                // decisions between looks at the metrics and its give-back is not cut
                // off, so there is always something counted as returned. With the
                // defaults (20 ms slices, 250 ms, a 500 ms timeout), a CI run under
                // plain `cargo test` returned 0 units: its ~40-unit slice was spent, or
                // the give-back timed out, before the loop looked.
                .timeout(Duration::from_secs(5))
                .lease(
                    LeaseConfig::new()
                        .target(Duration::from_secs(1))
                        .max_age(Duration::from_secs(60)),
                )
                .policy(Policy::new("hot").limit(leased("all", spec)))
                .build()
                .expect("valid")
        });
        let text = handle.render();
        for series in [
            r#"ratelimiter_leases_total{policy="hot"}"#,
            r#"ratelimiter_lease_units_returned_total{policy="hot"}"#,
            r#"ratelimiter_lease_decisions_total{policy="hot",source="local"}"#,
            r#"ratelimiter_lease_decisions_total{policy="hot",source="store"}"#,
        ] {
            assert_eq!(value(&text, series), 0, "{series}");
        }
        runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(3);
            for i in 0..200_000u64 {
                assert_eq!(limiter.check(&parts).await.kind, DecisionKind::Allowed);
                if i % 64 == 63
                    && (Instant::now() >= deadline
                        || handle
                            .render()
                            .contains(r#"ratelimiter_leases_total{policy="hot"} 1"#))
                {
                    break;
                }
            }
            limiter.return_leases().await;
        });
    });
    let text = handle.render();
    assert!(
        value(&text, r#"ratelimiter_leases_total{policy="hot"}"#) >= 1,
        "{text}"
    );
    assert!(
        value(
            &text,
            r#"ratelimiter_lease_decisions_total{policy="hot",source="local"}"#
        ) >= 1,
        "{text}"
    );
    assert!(
        value(
            &text,
            r#"ratelimiter_lease_decisions_total{policy="hot",source="store"}"#
        ) >= 1,
        "{text}"
    );
    assert!(
        value(
            &text,
            r#"ratelimiter_lease_units_returned_total{policy="hot"}"#
        ) >= 1,
        "{text}"
    );
    for family in [
        "ratelimiter_leases_total",
        "ratelimiter_lease_units_returned_total",
        "ratelimiter_lease_decisions_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family}: {text}"
        );
    }
}
