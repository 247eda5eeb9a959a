//! `RedisStore::cluster` against a real Redis Cluster: three primaries and three
//! replicas on loopback ports, started once for the whole file (one test, in phases:
//! starting a cluster costs seconds, and the failover phase destroys it).
//!
//! Phases: the store conformance suite (slot-spanning batches included); exact
//! admission for keys spread over every primary, sequentially and under 300
//! concurrent requests; a policy spanning slots under concurrency (never over-admits;
//! spurious refusals from refunds measured); cost of the spanning path; resharding
//! under load (no failed decision, no over-admission); and a primary killed under load
//! (its keys follow the failure mode until a replica is promoted, other keys exact
//! throughout; recovery time and consumption lost with the primary measured).
//!
//! Run with `--nocapture` to see the measured figures (docs/design.md quotes them).

mod support;
#[path = "support/topology.rs"]
mod topology;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::request;
use tollgate::key::Key;
use tollgate::policy::{Limit, Policy};
use tollgate::store::{Check, RedisStore, Store};
use tollgate::{DecisionKind, FailureMode, RateLimiter};
use topology::Cluster;

/// Generous for a loaded 2-core machine: a healthy call never times out.
const TIMEOUT: Duration = Duration::from_millis(500);

fn store(urls: &[String], prefix: &str) -> RedisStore {
    RedisStore::cluster(urls.to_vec())
        .prefix(prefix)
        .response_timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .build()
        .expect("valid cluster store")
}

fn limiter(store: RedisStore, policy: Policy) -> RateLimiter {
    RateLimiter::builder()
        .store(store)
        .policy(policy)
        .failure_mode(FailureMode::Closed)
        .timeout(TIMEOUT)
        .deny_cache(false)
        .build()
        .expect("valid limiter")
}

/// The Redis key of a one-limit policy `policy` (limit named like it) for `key`.
fn redis_key(prefix: &str, policy: &str, key: &str) -> String {
    format!("{prefix}:{{{policy}:{key}}}:{policy}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_end_to_end() {
    let mut cluster = Cluster::start();
    let urls = cluster.urls();
    conformance(&urls).await;
    exact_admission(&cluster, &urls).await;
    spanning_policy(&urls).await;
    spanning_cost(&urls).await;
    resharding(&cluster, &urls).await;
    failover(&mut cluster, &urls).await;
}

async fn conformance(urls: &[String]) {
    static PREFIX: AtomicU64 = AtomicU64::new(0);
    let started = Instant::now();
    tollgate::testing::assert_conformance(|clock| {
        RedisStore::cluster(urls.to_vec())
            .prefix(format!("conf{}", PREFIX.fetch_add(1, Ordering::Relaxed)))
            .clock(clock)
            .key_grace(Duration::from_secs(3600))
            .response_timeout(Duration::from_secs(5))
            .build()
            .expect("valid cluster store")
    })
    .await;
    eprintln!(
        "conformance on the cluster: passed in {:?}",
        started.elapsed()
    );
}

async fn exact_admission(cluster: &Cluster, urls: &[String]) {
    // Sequential: 60 keys, 7 requests each against 5/h.
    let seq = limiter(
        store(urls, "seq"),
        Policy::single("seq", "5/h".parse().expect("spec"), Key::header("x-key")),
    );
    let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    let owners: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| cluster.owner(&redis_key("seq", "seq", k)))
        .collect();
    assert_eq!(owners.len(), 3, "the keys cover every primary");
    for key in &keys {
        let mut admitted = 0;
        for _ in 0..7 {
            match seq.check(&request(key)).await.kind {
                DecisionKind::Allowed => admitted += 1,
                DecisionKind::Limited => {}
                other => panic!("unexpected {other:?} for {key}"),
            }
        }
        assert_eq!(admitted, 5, "key {key}");
    }

    // 300 concurrent requests: 30 keys × 10 against 4/h, then one key × 300 against 100/h.
    let conc = limiter(
        store(urls, "conc"),
        Policy::single("conc", "4/h".parse().expect("spec"), Key::header("x-key")),
    );
    let counts = concurrent(&conc, (0..300).map(|i| format!("c{}", i % 30))).await;
    assert_eq!(counts.values().sum::<u32>(), 120, "{counts:?}");
    assert!(counts.values().all(|&n| n == 4), "{counts:?}");
    let hot = limiter(
        store(urls, "hot"),
        Policy::single("hot", "100/h".parse().expect("spec"), Key::header("x-key")),
    );
    let counts = concurrent(&hot, (0..300).map(|_| "hot".to_string())).await;
    assert_eq!(counts.values().sum::<u32>(), 100);
    eprintln!("exact admission on the cluster: sequential 300/300, concurrent 120/120 and 100/100");
}

/// Sends every request at once; returns admissions per key (panics on a failure).
async fn concurrent(
    limiter: &RateLimiter,
    keys: impl Iterator<Item = String>,
) -> HashMap<String, u32> {
    let tasks: Vec<_> = keys
        .map(|key| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let kind = limiter.check(&request(&key)).await.kind;
                (key, kind)
            })
        })
        .collect();
    let mut counts = HashMap::new();
    for task in tasks {
        let (key, kind) = task.await.expect("task");
        let entry = counts.entry(key).or_insert(0);
        match kind {
            DecisionKind::Allowed => *entry += 1,
            DecisionKind::Limited => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    counts
}

/// A per-key limit and a global one: two hash slots per request. `global_first`
/// puts the global limit first, the order that makes refunds refuse spuriously: a
/// request its own key refuses has already charged the global limit.
fn spanning(name: &str, algorithm: &str, global_first: bool) -> Policy {
    let spec = |s: &str| {
        tollgate::LimitSpec::parse_with(s, algorithm.parse().expect("algorithm")).expect("spec")
    };
    let per_key = Limit::new("per-key", spec("5/h"), Key::header("x-key"));
    let global = Limit::new("global", spec("50/h"), Key::global());
    match global_first {
        false => Policy::new(name.to_string()).limit(per_key).limit(global),
        true => Policy::new(name.to_string()).limit(global).limit(per_key),
    }
}

async fn spanning_policy(urls: &[String]) {
    for (algorithm, global_first) in [
        ("gcra", false),
        ("fixed-window", false),
        ("sliding-window", false),
        ("gcra", true),
        ("fixed-window", true),
        ("sliding-window", true),
    ] {
        let mut spurious = 0;
        let rounds = 5;
        for round in 0..rounds {
            let name = format!("span-{algorithm}-{global_first}-{round}");
            let lim = limiter(
                store(urls, "span"),
                spanning(&name, algorithm, global_first),
            );
            // 20 keys × 15 requests, 5/h per key and 50/h in all: exactly 50 admitted
            // by an atomic decision, whatever the interleaving.
            let counts = concurrent(&lim, (0..300).map(|i| format!("u{}", i % 20))).await;
            let admitted: u32 = counts.values().sum();
            assert!(admitted <= 50, "{algorithm}: {admitted} admitted");
            assert!(counts.values().all(|&n| n <= 5), "{algorithm}: {counts:?}");
            spurious += 50 - admitted;
            // What the spurious refusals left: the global limit still has exactly the
            // room they did not use (the refunds were exact).
            let after = concurrent(&lim, (0..60).map(|i| format!("v{}", i % 60))).await;
            assert_eq!(
                after.values().sum::<u32>(),
                50 - admitted,
                "{algorithm}: after the storm"
            );
        }
        let order = if global_first {
            "global limit first"
        } else {
            "per-key limit first"
        };
        eprintln!(
            "spanning policy, {algorithm}, {order}: 300 concurrent requests x {rounds} rounds, exact answer 50 each; \
             spurious refusals {spurious} of {} admissions ({:.2}%)",
            50 * rounds,
            f64::from(spurious) * 100.0 / f64::from(50 * rounds)
        );
    }
}

/// Latency of one decision: one slot, two slots admitted, two slots refused at the
/// second (charge, charge, refund).
async fn spanning_cost(urls: &[String]) {
    let store = store(urls, "cost");
    let spec = |s: &str| s.parse::<tollgate::LimitSpec>().expect("spec");
    let n = 300;
    let mut report = Vec::new();
    for (label, checks) in [
        ("one slot", vec![Check::new("{one:a}:x", spec("1000000/h"))]),
        (
            "two slots, admitted",
            vec![
                Check::new("{two:a}:x", spec("1000000/h")),
                Check::new("{two:b}:y", spec("1000000/h")),
            ],
        ),
        (
            "two slots, refused by the second (charge, charge, refund)",
            vec![
                Check::new("{ref:a}:x", spec("1000000/h")),
                Check::new("{ref:b}:y", spec("1/h")),
            ],
        ),
    ] {
        store.check(&checks, 1).await.expect("warm up");
        let started = Instant::now();
        for _ in 0..n {
            store.check(&checks, 1).await.expect("decision");
        }
        let per = started.elapsed() / n;
        report.push(format!("{label}: {per:?}"));
    }
    eprintln!(
        "sequential decision latency on the cluster: {}",
        report.join("; ")
    );
}

async fn resharding(cluster: &Cluster, urls: &[String]) {
    let load = limiter(
        store(urls, "rs"),
        Policy::single(
            "rs",
            "1000000/h".parse().expect("spec"),
            Key::header("x-key"),
        ),
    );
    let tight = limiter(
        store(urls, "rt"),
        Policy::single("rt", "3/h".parse().expect("spec"), Key::header("x-key")),
    );
    let tight_keys: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    for key in &tight_keys {
        for _ in 0..3 {
            assert_eq!(tight.check(&request(key)).await.kind, DecisionKind::Allowed);
        }
    }
    let primaries = cluster.primaries();
    let (from, to) = (primaries[0].0.clone(), primaries[1].0.clone());
    let before: Vec<u16> = tight_keys
        .iter()
        .map(|k| cluster.owner(&redis_key("rt", "rt", k)))
        .collect();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let over = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let (load, tight, stop) = (load.clone(), tight.clone(), stop.clone());
        let (failed, over, done) = (failed.clone(), over.clone(), done.clone());
        let tight_keys = tight_keys.clone();
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut i = t;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                i += 4;
                match load.check(&request(&format!("l{}", i % 400))).await.kind {
                    DecisionKind::Allowed => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                match tight
                    .check(&request(&tight_keys[(i % 40) as usize]))
                    .await
                    .kind
                {
                    DecisionKind::Limited => {}
                    DecisionKind::Allowed => {
                        over.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(2, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let slots = 2000;
    tokio::task::spawn_blocking({
        let (from, to) = (from.clone(), to.clone());
        let port = cluster.nodes[0].port;
        move || {
            let status = std::process::Command::new("redis-cli")
                .args([
                    "--cluster",
                    "reshard",
                    &format!("127.0.0.1:{port}"),
                    "--cluster-from",
                    &from,
                    "--cluster-to",
                    &to,
                    "--cluster-slots",
                    &slots.to_string(),
                    "--cluster-yes",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("redis-cli runs");
            assert!(status.success(), "reshard failed");
        }
    })
    .await
    .expect("reshard task");
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("load task");
    }
    let after: Vec<u16> = tight_keys
        .iter()
        .map(|k| cluster.owner(&redis_key("rt", "rt", k)))
        .collect();
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    eprintln!(
        "resharding {slots} slots under load took {took:?}: {} decisions, {} failed, {} over-admitted; \
         {moved} of 40 exhausted keys moved primary",
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        over.load(Ordering::Relaxed)
    );
    assert!(moved > 0, "the reshard moved some tested keys");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no failed decision");
    assert_eq!(over.load(Ordering::Relaxed), 0, "no over-admission");
}

async fn failover(cluster: &mut Cluster, urls: &[String]) {
    cluster.wait_healthy(Duration::from_secs(30));
    let load = limiter(
        store(urls, "fo"),
        Policy::single(
            "fo",
            "1000000/h".parse().expect("spec"),
            Key::header("x-key"),
        ),
    );
    let keys: Vec<String> = (0..60).map(|i| format!("f{i}")).collect();
    let owners: Vec<u16> = keys
        .iter()
        .map(|k| cluster.owner(&redis_key("fo", "fo", k)))
        .collect();
    let victim = owners[0];

    // Keys on the victim, exhausted just before the kill: what they admit after the
    // promotion is consumption the replica never received.
    let lost = limiter(
        store(urls, "lost"),
        Policy::single("lost", "5/h".parse().expect("spec"), Key::header("x-key")),
    );
    let lost_keys: Vec<String> = (0..400)
        .map(|i| format!("z{i}"))
        .filter(|k| cluster.owner(&redis_key("lost", "lost", k)) == victim)
        .take(20)
        .collect();

    let kill_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let log = Arc::new(std::sync::Mutex::new(Vec::<(Duration, bool, bool)>::new()));
    let mut tasks = Vec::new();
    for t in 0..6usize {
        let (load, stop, log, kill_at) = (load.clone(), stop.clone(), log.clone(), kill_at.clone());
        let (keys, owners) = (keys.clone(), owners.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut i = t;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                i += 6;
                let k = i % keys.len();
                let ok = load.check(&request(&keys[k])).await.kind == DecisionKind::Allowed;
                let since = kill_at
                    .lock()
                    .expect("lock")
                    .map(|at| at.elapsed())
                    .unwrap_or_default();
                log.lock()
                    .expect("lock")
                    .push((since, owners[k] == victim, ok));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for key in &lost_keys {
        for _ in 0..5 {
            assert_eq!(lost.check(&request(key)).await.kind, DecisionKind::Allowed);
        }
    }
    *kill_at.lock().expect("lock") = Some(Instant::now());
    cluster.node_mut(victim).kill();
    let killed = Instant::now();

    // Until the victim's keys answer again, then one more second of load.
    let mut recovered = None;
    while killed.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let log = log.lock().expect("lock");
        let failures_since = log.iter().filter(|(_, v, ok)| *v && !ok).count();
        if failures_since > 0 {
            if let Some(&(at, _, _)) = log.iter().rev().find(|(_, v, ok)| *v && !ok) {
                let later_ok = log.iter().any(|(t, v, ok)| *v && *ok && *t > at);
                if later_ok && killed.elapsed() > at + Duration::from_secs(1) {
                    recovered = Some(at);
                    break;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("load task");
    }
    let (others, others_failed, victim_failed) = {
        let log = log.lock().expect("lock");
        let others = log.iter().filter(|(t, v, _)| !v && !t.is_zero()).count();
        let others_failed = log
            .iter()
            .filter(|(t, v, ok)| !v && !t.is_zero() && !ok)
            .count();
        let victim_failed = log.iter().filter(|(_, v, ok)| *v && !ok).count();
        (others, others_failed, victim_failed)
    };
    let recovered = recovered.expect("the victim's slots answer again after a promotion");

    let mut readmitted = 0;
    for key in &lost_keys {
        for _ in 0..5 {
            if lost.check(&request(key)).await.kind == DecisionKind::Allowed {
                readmitted += 1;
            }
        }
    }
    eprintln!(
        "failover: victim's keys failed closed for {recovered:?} ({victim_failed} decisions) until a replica \
         was promoted; other primaries' keys: {} decisions after the kill, {others_failed} failed; \
         consumption lost with the primary: {readmitted} of {} units admitted again",
        others,
        lost_keys.len() * 5
    );
    assert_eq!(
        others_failed, 0,
        "keys on surviving primaries keep exact answers"
    );
    assert!(recovered < Duration::from_secs(15), "recovery within 15 s");
}
