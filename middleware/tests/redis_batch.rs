//! Batched decisions (`RedisStore::batch_max`) against a real `redis-server`: many
//! concurrent requests share script calls and still never admit more than a limit
//! allows, each request stays all or nothing across its own limits, foreign values and
//! old-format keys do not break decisions, and a restarted (empty, script-less) Redis
//! is survived.
//!
//! Timeouts here are far above any scheduling delay: these tests are about counting,
//! not speed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::RedisServer;
use tollgate::store::{Check, RedisStore, Store};

const PATIENT: Duration = Duration::from_secs(10);

fn store(server: &RedisServer, batch_max: usize) -> Arc<RedisStore> {
    Arc::new(
        RedisStore::builder(server.url())
            .response_timeout(PATIENT)
            .connect_timeout(PATIENT)
            .batch_max(batch_max)
            .build()
            .expect("valid url"),
    )
}

/// `EVALSHA` calls the server has run since the last `CONFIG RESETSTAT`.
fn evalsha_calls(server: &RedisServer) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]).expect("INFO answers");
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn check(key: &str, spec: &str) -> Check {
    Check::new(key, spec.parse().expect("spec"))
}

/// Runs `checks` (one request each) concurrently; returns per request whether every
/// limit admitted it, with the verdicts' `allowed` flags.
async fn concurrently(store: &Arc<RedisStore>, requests: Vec<Vec<Check>>) -> Vec<Vec<bool>> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|checks| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let verdicts = store.check(&checks, 1).await.expect("decided");
                assert_eq!(verdicts.len(), checks.len(), "one verdict per limit");
                verdicts.iter().map(|v| v.allowed).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_batched_into_few_calls_never_over_admit() {
    let server = RedisServer::start();
    let store = store(&server, 64);
    // Warm up: connection and script cache, so the count below is only decisions.
    store.check(&[check("warm", "1/s")], 1).await.expect("up");
    server.cli(&["CONFIG", "RESETSTAT"]).expect("reset");

    // 600 requests on three keys of 100 per hour each (GCRA, fixed, sliding).
    let algorithms = ["gcra", "fixed_window", "sliding_window"];
    let requests: Vec<Vec<Check>> = (0..600)
        .map(|i| {
            let k = i % 3;
            let spec = tollgate::algorithm::LimitSpec::parse_with(
                "100/h",
                algorithms[k].parse().expect("algorithm"),
            )
            .expect("spec");
            vec![Check::new(format!("{{shared:{k}}}:l"), spec)]
        })
        .collect();
    let answers = concurrently(&store, requests).await;
    for (k, algorithm) in algorithms.iter().enumerate() {
        let admitted = answers
            .iter()
            .skip(k)
            .step_by(3)
            .filter(|a| a.iter().all(|&x| x))
            .count();
        assert_eq!(admitted, 100, "{algorithm}: exactly the limit");
    }
    let calls = evalsha_calls(&server);
    assert!(
        calls < 600,
        "600 concurrent decisions took {calls} calls: nothing was batched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_mixing_admitted_and_refused_requests_keeps_each_all_or_nothing() {
    let server = RedisServer::start();
    let store = store(&server, 64);
    store.check(&[check("warm", "1/s")], 1).await.expect("up");
    server.cli(&["CONFIG", "RESETSTAT"]).expect("reset");

    // 20 users of 1 per hour each, all under one global limit of 15 per hour; every
    // user sends 3 requests. At most one per user passes (the user limit refuses the
    // others) and 15 in all (the global limit refuses the rest).
    let requests: Vec<Vec<Check>> = (0..60)
        .map(|i| {
            vec![
                check(&format!("{{u{}}}:user", i % 20), "1/h"),
                global("15/h"),
            ]
        })
        .collect();
    let answers = concurrently(&store, requests).await;
    let admitted: Vec<usize> = (0..60).filter(|&i| answers[i].iter().all(|&x| x)).collect();
    assert_eq!(admitted.len(), 15, "the global limit admits exactly 15");
    let mut users_admitted = [0; 20];
    for &i in &admitted {
        users_admitted[i % 20] += 1;
    }
    assert!(users_admitted.iter().all(|&n| n <= 1), "{users_admitted:?}");
    let calls = evalsha_calls(&server);
    assert!(calls < 60, "60 concurrent decisions took {calls} calls");

    // Refused requests consumed nothing: a user none of whose requests passed still
    // has its unit (the global refusals did not charge it), and the global limit
    // counted only the 15 admissions (the user refusals did not charge it).
    for user in (0..20).filter(|&u| users_admitted[u] == 0) {
        let alone = store
            .check(&[check(&format!("{{u{user}}}:user"), "1/h")], 1)
            .await
            .expect("decided");
        assert!(
            alone[0].allowed,
            "user {user} was charged by a refused request"
        );
    }
    let full = store.check(&[global("15/h")], 0).await.expect("decided");
    assert_eq!(full[0].remaining, 0);
    let wider = store.check(&[global("100/h")], 0).await.expect("decided");
    // The same counter under a wider limit reports what is stored: 15 units used.
    assert_eq!(
        wider[0].remaining, 85,
        "global counted exactly the admissions"
    );
}

/// The global limit of the mixing test: a fixed window, whose stored count can be read
/// back exactly under a wider limit.
fn global(spec: &str) -> Check {
    let spec = tollgate::algorithm::LimitSpec::parse_with(
        spec,
        tollgate::algorithm::Algorithm::FixedWindow,
    )
    .expect("spec");
    Check::new("{global}:all", spec)
}

#[tokio::test]
async fn foreign_and_old_format_values_never_fail_a_decision() {
    let server = RedisServer::start();
    for batch_max in [1, 64] {
        let store = store(&server, batch_max);
        let hashed = check(&format!("{{h{batch_max}}}:l"), "1/h");
        let garbage = check(&format!("{{g{batch_max}}}:l"), "1/h");
        let old = check(&format!("{{o{batch_max}}}:l"), "1/h");
        // A hash (what the format before `:v2` stored) where this version's key lives,
        // a string that is no state, and the old format under its old name.
        let hkey = store.redis_key(&hashed);
        server
            .cli(&["HSET", &hkey, "t", "99999999999999999"])
            .expect("HSET");
        server
            .cli(&["SET", &store.redis_key(&garbage), "not:a:number"])
            .expect("SET");
        let old_key = store.redis_key(&old);
        let old_key = old_key.strip_suffix(":v2").expect("versioned key");
        server.cli(&["HSET", old_key, "t", "1"]).expect("HSET");
        for c in [&hashed, &garbage, &old] {
            let first = store.check(std::slice::from_ref(c), 1).await;
            let first = first.unwrap_or_else(|e| panic!("{}: {e}", c.key));
            assert!(
                first[0].allowed,
                "{}: no state reads as a fresh limit",
                c.key
            );
            let second = store.check(std::slice::from_ref(c), 1).await.expect("ok");
            assert!(!second[0].allowed, "{}: the new state is enforced", c.key);
        }
        assert_eq!(
            server.cli(&["TYPE", &hkey]).expect("TYPE").trim(),
            "string",
            "the hash was replaced"
        );
        // The old-format key is left to old nodes, untouched.
        assert_eq!(server.cli(&["TYPE", old_key]).expect("TYPE").trim(), "hash");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_recovers_after_a_redis_restart() {
    let mut server = RedisServer::start();
    let store = Arc::new(
        RedisStore::builder(server.url())
            .response_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(500))
            .max_reconnect_delay(Duration::from_millis(50))
            .build()
            .expect("valid url"),
    );
    let requests = |tag: &str| -> Vec<Vec<Check>> {
        (0..50)
            .map(|i| vec![check(&format!("{{{tag}{i}}}:l"), "5/h")])
            .collect()
    };
    let before = concurrently(&store, requests("a")).await;
    assert!(before.iter().all(|a| a[0]));

    // Down: every request of a batch fails with an error, none hangs or panics.
    server.kill();
    let tasks: Vec<_> = requests("b")
        .into_iter()
        .map(|checks| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.check(&checks, 1).await.map(|_| ()) })
        })
        .collect();
    for t in tasks {
        let result = tokio::time::timeout(PATIENT, t).await.expect("answered");
        assert!(result.expect("task").is_err(), "no decision without Redis");
    }

    // Back, empty and without the script: decisions resume (NOSCRIPT is handled).
    server.restart();
    let deadline = tokio::time::Instant::now() + PATIENT;
    loop {
        if store.check(&[check("probe", "1000/s")], 1).await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.cli(&["CONFIG", "RESETSTAT"]).expect("reset");
    let after = concurrently(&store, requests("c")).await;
    assert!(
        after.iter().all(|a| a[0]),
        "every request decided and admitted"
    );
    assert!(
        evalsha_calls(&server) < 50,
        "still batched after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_do_not_disturb_the_others() {
    let server = RedisServer::start();
    let store = store(&server, 64);
    store.check(&[check("warm", "1/s")], 1).await.expect("up");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let checks = [check(&format!("{{k{}}}:l", i % 7), "1000/h")];
                if i % 2 == 0 {
                    // Gives up at once, as the limiter's timeout would.
                    let _ = tokio::time::timeout(Duration::ZERO, store.check(&checks, 1)).await;
                    None
                } else {
                    Some(store.check(&checks, 1).await)
                }
            })
        })
        .collect();
    for t in tasks {
        if let Some(result) = t.await.expect("task") {
            assert!(result.expect("decided")[0].allowed);
        }
    }
    // And the store keeps working.
    assert!(store.check(&[check("after", "1/s")], 1).await.expect("ok")[0].allowed);
}
