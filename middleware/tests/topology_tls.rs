//! `RedisStore::cluster` and `RedisStore::sentinel` with TLS and ACL users, against real
//! deployments whose certificates the test makes: a six-node Redis Cluster that speaks
//! only TLS (to clients, on its bus and for replication), and a TLS primary and replica
//! behind TLS sentinels; the `default` user is off everywhere.
//!
//! The store gets its user, password and CA from the builder, not from the URLs; its
//! user holds exactly the documented ACL line, and every server's `ACL LOG` stays empty.
//! A CA that did not sign the servers' certificates is refused as `tls`, a wrong
//! password as `auth`.

mod support;
#[path = "support/topology.rs"]
mod topology;

use std::time::Duration;

use support::request;
use support::tls::{Pki, CLUSTER_ACL, MINIMAL_ACL, SENTINEL_ACL, SENTINEL_USER_ACL};
use tollgate::key::Key;
use tollgate::policy::Policy;
use tollgate::store::{Check, RedisStore, RedisStoreBuilder, RedisTls, Store, StoreErrorKind};
use tollgate::{DecisionKind, FailureMode, RateLimiter};
use topology::{Cluster, Security, Sentinels};

/// Generous for a loaded 2-core machine: TLS handshakes plus a script, not a speed bound.
/// No test here expects a timeout (refusals are `tls`, `auth` or `config`, and come at
/// once), so a long one costs nothing; 2 s was once exceeded by the wrong-CA probe of a
/// TLS cluster at load average 10, which then read `timeout` instead of `tls`.
const TIMEOUT: Duration = Duration::from_secs(5);
const PASSWORD: &str = "tollgate-pw";
/// Every key's limit: nothing refills during a test.
const LIMIT: usize = 5;

fn secured(pki: &Pki) -> Security {
    Security::tls_and_acl(pki.server_args("node", false), pki.path("ca.pem"))
}

fn trusting(pki: &Pki, ca: &str) -> RedisTls {
    RedisTls::new().ca_pem(pki.read(ca))
}

/// `builder` as the `tollgate` user with `password`, trusting `ca`.
fn as_tollgate(builder: RedisStoreBuilder, pki: &Pki, ca: &str, password: &str) -> RedisStore {
    builder
        .username("tollgate")
        .password(password)
        .tls(trusting(pki, ca))
        .response_timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .build()
        .expect("valid store")
}

/// `ACL SETUSER tollgate on >PASSWORD <rules…>`.
fn setuser(rules: &[&[&str]]) -> Vec<String> {
    let mut args: Vec<String> = ["ACL", "SETUSER", "tollgate", "on"]
        .map(String::from)
        .to_vec();
    args.push(format!(">{PASSWORD}"));
    args.extend(rules.iter().flat_map(|r| r.iter().map(|s| (*s).to_owned())));
    args
}

fn limiter(store: RedisStore) -> RateLimiter {
    RateLimiter::builder()
        .store(store)
        .policy(Policy::single(
            "p",
            format!("{LIMIT}/h").parse().expect("spec"),
            Key::header("x-key"),
        ))
        .failure_mode(FailureMode::Open)
        .timeout(TIMEOUT)
        .deny_cache(false)
        .build()
        .expect("valid limiter")
}

/// Sends `LIMIT + 3` requests for `key`; how many were admitted. A failure-mode answer
/// fails the test: every answer must come from the servers.
async fn admitted(limiter: &RateLimiter, key: &str) -> usize {
    let mut admitted = 0;
    for _ in 0..LIMIT + 3 {
        let decision = limiter.check(&request(key)).await;
        assert_ne!(decision.kind, DecisionKind::FailedOpen, "{decision:?}");
        if decision.kind == DecisionKind::Allowed {
            admitted += 1;
        }
    }
    admitted
}

/// One decision straight from the store: its error kind and message, if it failed.
async fn decide(store: &RedisStore) -> Result<(), (StoreErrorKind, String)> {
    let checks = [Check::new("probe", "5/s".parse().expect("spec"))];
    store
        .check(&checks, 1)
        .await
        .map(|_| ())
        .map_err(|e| (e.kind(), e.to_string()))
}

fn ok(out: Option<String>) -> bool {
    out.as_deref().map(str::trim) == Some("OK")
}

/// One test in phases: a TLS cluster costs seconds to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_with_the_documented_acl_user_decides_exactly() {
    let pki = Pki::generate();
    let cluster = Cluster::start_with(&secured(&pki));
    let args = setuser(&[MINIMAL_ACL, CLUSTER_ACL]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(
        cluster.cli_everywhere(&args).into_iter().all(ok),
        "ACL SETUSER"
    );
    assert!(cluster
        .cli_everywhere(&["ACL", "LOG", "RESET"])
        .into_iter()
        .all(ok));

    // Exact: keys owned by every primary, through TLS seed URLs without credentials.
    let store = as_tollgate(
        RedisStore::cluster(cluster.urls()),
        &pki,
        "ca.pem",
        PASSWORD,
    );
    decide(&store).await.expect("first decision");
    let limiter = limiter(store.clone());
    let primaries: Vec<u16> = cluster.primaries().into_iter().map(|p| p.1).collect();
    assert_eq!(primaries.len(), 3, "three primaries");
    let mut candidates = (0..1000).map(|i| format!("k{i}"));
    for &primary in &primaries {
        let key = candidates
            .find(|k| cluster.owner(&format!("tollgate:{{p:{k}}}:p")) == primary)
            .expect("a key for every primary among 1000 candidates");
        assert_eq!(
            admitted(&limiter, &key).await,
            LIMIT,
            "key {key} on {primary}"
        );
    }
    // The script cache flushed everywhere: the SCRIPT LOAD path, then PING.
    cluster.cli_everywhere(&["SCRIPT", "FLUSH"]);
    decide(&store).await.expect("after SCRIPT FLUSH");
    store.ping().await.expect("ping");
    for (node, log) in cluster
        .nodes
        .iter()
        .zip(cluster.cli_everywhere(&["ACL", "LOG"]))
    {
        let log = log.expect("ACL LOG");
        assert!(
            log.trim().is_empty(),
            "node {}: the cluster ACL line misses something: {log}",
            node.port
        );
    }

    // A CA that did not sign the servers' certificates: refused, as `tls`.
    let other = as_tollgate(
        RedisStore::cluster(cluster.urls()),
        &pki,
        "other-ca.pem",
        PASSWORD,
    );
    let (kind, message) = decide(&other).await.expect_err("no insecure fallback");
    assert_eq!(kind, StoreErrorKind::Tls, "{message}");
    let ping = limiter_ping(other).await;
    assert_eq!(ping, "tls");

    // A wrong password: `auth`, for decisions and for the readiness probe.
    let wrong = as_tollgate(
        RedisStore::cluster(cluster.urls()),
        &pki,
        "ca.pem",
        "not-it",
    );
    let (kind, message) = decide(&wrong).await.expect_err("wrong password");
    assert_eq!(kind, StoreErrorKind::Auth, "{message}");
    assert_eq!(limiter_ping(wrong).await, "auth");

    // No credentials at all: the `default` user is off.
    let anonymous = RedisStore::cluster(cluster.urls())
        .tls(trusting(&pki, "ca.pem"))
        .response_timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .build()
        .expect("valid store");
    let (kind, message) = decide(&anonymous).await.expect_err("default user is off");
    assert_eq!(kind, StoreErrorKind::Auth, "{message}");
}

/// The kind of the readiness probe's error (the label `ratelimiter_store_errors_total`
/// and `/ready` report).
async fn limiter_ping(store: RedisStore) -> &'static str {
    limiter(store).ping().await.expect_err("refused").kind()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_primary_behind_tls_sentinels_decides_exactly_with_the_builders_password() {
    let pki = Pki::generate();
    let deployment = Sentinels::start_with(&secured(&pki));
    let args = setuser(&[MINIMAL_ACL, SENTINEL_ACL]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for node in [&deployment.primary, &deployment.replica] {
        assert!(ok(node.cli(&args)), "ACL SETUSER on {}", node.port);
        assert!(ok(node.cli(&["ACL", "LOG", "RESET"])));
    }
    // The sentinels' own user rides in their URLs; the primary's comes from the builder.
    let sentinels = deployment.urls_as("admin:admin-pw@");
    let store = as_tollgate(
        RedisStore::sentinel(sentinels.clone(), Sentinels::MASTER),
        &pki,
        "ca.pem",
        PASSWORD,
    );
    // A fresh server has no script cached: the first call takes the SCRIPT LOAD path.
    decide(&store).await.expect("first decision");
    let by_builder = limiter(store.clone());
    assert_eq!(admitted(&by_builder, "a").await, LIMIT);
    assert_eq!(admitted(&by_builder, "b").await, LIMIT);
    deployment.primary.cli(&["SCRIPT", "FLUSH"]).expect("flush");
    decide(&store).await.expect("after SCRIPT FLUSH");
    store.ping().await.expect("ping");
    let log = deployment.primary.cli(&["ACL", "LOG"]).expect("ACL LOG");
    assert!(
        log.trim().is_empty(),
        "the sentinel ACL line misses something: {log}"
    );

    // One ACL user `tollgate` on the sentinels (its own password there, in the URLs) and
    // on the servers: the URLs' user name serves for the primary too, their password
    // does not.
    let sentinel_user = ["ACL", "SETUSER", "tollgate", "on", ">sentinel-pw"];
    for sentinel in &deployment.sentinels {
        let mut args = sentinel_user.to_vec();
        args.extend_from_slice(SENTINEL_USER_ACL);
        assert!(
            ok(sentinel.cli(&args)),
            "ACL SETUSER on sentinel {}",
            sentinel.port
        );
        assert!(ok(sentinel.cli(&["ACL", "LOG", "RESET"])));
    }
    let by_url = RedisStore::sentinel(
        deployment.urls_as("tollgate:sentinel-pw@"),
        Sentinels::MASTER,
    )
    .password(PASSWORD)
    .tls(trusting(&pki, "ca.pem"))
    .response_timeout(TIMEOUT)
    .connect_timeout(TIMEOUT)
    .build()
    .expect("valid store");
    decide(&by_url)
        .await
        .expect("through the sentinels' own user");
    assert_eq!(admitted(&limiter(by_url), "c").await, LIMIT);
    for sentinel in &deployment.sentinels {
        let log = sentinel.cli(&["ACL", "LOG"]).expect("ACL LOG");
        assert!(
            log.trim().is_empty(),
            "sentinel {}: the sentinel user's ACL misses something: {log}",
            sentinel.port
        );
    }

    // A wrong password for the primary: `auth`, although the sentinels answered.
    let wrong = as_tollgate(
        RedisStore::sentinel(sentinels.clone(), Sentinels::MASTER),
        &pki,
        "ca.pem",
        "not-it",
    );
    let (kind, message) = decide(&wrong).await.expect_err("wrong password");
    assert_eq!(kind, StoreErrorKind::Auth, "{message}");

    // A CA that did not sign the certificates: `tls`.
    let other = as_tollgate(
        RedisStore::sentinel(sentinels, Sentinels::MASTER),
        &pki,
        "other-ca.pem",
        PASSWORD,
    );
    let (kind, message) = decide(&other).await.expect_err("no insecure fallback");
    assert_eq!(kind, StoreErrorKind::Tls, "{message}");
}

#[test]
fn credentials_given_twice_or_tls_on_plain_urls_are_refused_when_built() {
    let pki = Pki::generate();
    let refused = |b: RedisStoreBuilder| {
        let e = b.build().map(|_| ()).expect_err("refused");
        assert_eq!(e.kind(), StoreErrorKind::Config, "{e}");
        e.to_string()
    };
    // The cluster builder runs a task: inside a runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let seeds = ["rediss://127.0.0.1:1", "rediss://u:in-url@127.0.0.1:2"];
    let m = refused(RedisStore::cluster(seeds).password("from-file"));
    assert!(m.contains("both"), "{m}");
    assert!(!m.contains("in-url"), "{m}");
    let m = refused(
        RedisStore::cluster(["rediss://127.0.0.1:1", "redis://127.0.0.1:2"])
            .tls(trusting(&pki, "ca.pem")),
    );
    assert!(m.contains("rediss://"), "{m}");
    let m = refused(
        RedisStore::sentinel(["redis://a:1@127.0.0.1:1", "redis://a:2@127.0.0.1:2"], "m")
            .password("p"),
    );
    assert!(m.contains("same user and password"), "{m}");
    let m = refused(
        RedisStore::sentinel(["rediss://127.0.0.1:1", "redis://127.0.0.1:2"], "m")
            .tls(trusting(&pki, "ca.pem")),
    );
    assert!(m.contains("all rediss://"), "{m}");
    // Bad PEM is refused for these topologies as for one Redis.
    let m = refused(RedisStore::cluster(["rediss://127.0.0.1:1"]).tls(RedisTls::new().ca_pem("x")));
    assert!(m.contains("the CA"), "{m}");
    let m = refused(
        RedisStore::sentinel(["redis://127.0.0.1:1"], "m").tls(RedisTls::new().ca_pem("x")),
    );
    assert!(m.contains("the CA"), "{m}");
    // What is valid builds: a cluster over TLS with separate credentials, sentinels
    // with their own password in the URL and the primary's apart, over TLS.
    RedisStore::cluster(["rediss://127.0.0.1:1", "rediss://u@127.0.0.1:2"])
        .password("p")
        .tls(trusting(&pki, "ca.pem"))
        .build()
        .expect("valid cluster store");
    RedisStore::sentinel(["redis://:s@127.0.0.1:1"], "m")
        .username("u")
        .password("p")
        .tls(trusting(&pki, "ca.pem"))
        .build()
        .expect("valid sentinel store");
}
