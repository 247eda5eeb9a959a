//! `RedisStore` against a real `redis-server` with TLS and ACL users, with certificates
//! the test makes: exact shared limits over TLS, no insecure fallback, mutual TLS, the
//! documented least-privilege ACL line, and a distinct error kind for each
//! misconfiguration.

mod support;

use std::time::Duration;

use support::tls::{Pki, MINIMAL_ACL};
use support::RedisServer;
use tollgate::key::Key;
use tollgate::policy::Policy;
use tollgate::store::{Check, RedisStore, RedisStoreBuilder, RedisTls, Store, StoreErrorKind};
use tollgate::{DecisionKind, FailureMode, RateLimiter};

/// Generous for a loaded CI machine: a TLS handshake plus a script, not a speed bound.
const TIMEOUT: Duration = Duration::from_secs(2);

fn builder(url: String) -> RedisStoreBuilder {
    RedisStore::builder(url)
        .response_timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
}

fn trusting(pki: &Pki) -> RedisTls {
    RedisTls::new().ca_pem(pki.read("ca.pem"))
}

fn with_client_cert(pki: &Pki) -> RedisTls {
    trusting(pki).client_identity(pki.read("client.pem"), pki.read("client-key.pem"))
}

fn limiter(store: RedisStore) -> RateLimiter {
    RateLimiter::builder()
        .store(store)
        .policy(Policy::single(
            "tls",
            "10/m".parse().expect("spec"),
            Key::header("x-key"),
        ))
        .failure_mode(FailureMode::Open)
        .timeout(TIMEOUT)
        .build()
        .expect("valid limiter")
}

fn request(key: &str) -> http::request::Parts {
    http::Request::get("/")
        .header("x-key", key)
        .body(())
        .expect("valid")
        .into_parts()
        .0
}

/// One decision straight from the store: its error kind, if it failed.
async fn decide(store: &RedisStore) -> Result<(), (StoreErrorKind, String)> {
    let checks = [Check::new("probe", "5/s".parse().expect("spec"))];
    store
        .check(&checks, 1)
        .await
        .map(|_| ())
        .map_err(|e| (e.kind(), e.to_string()))
}

#[tokio::test]
async fn two_limiters_on_one_tls_redis_admit_exactly_the_limit() {
    let pki = Pki::generate();
    let server = RedisServer::start_tls(pki.server_args("server", false));
    let a = limiter(
        builder(server.tls_url("127.0.0.1"))
            .tls(trusting(&pki))
            .build()
            .expect("store"),
    );
    // The other one by name: the certificate names both.
    let b = limiter(
        builder(server.tls_url("localhost"))
            .tls(trusting(&pki))
            .build()
            .expect("store"),
    );
    let mut admitted = 0;
    for i in 0..30 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        let decision = limiter.check(&request("shared")).await;
        assert_ne!(decision.kind, DecisionKind::FailedOpen, "{decision:?}");
        if decision.kind == DecisionKind::Allowed {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_as_tls() {
    let pki = Pki::generate();
    let server = RedisServer::start_tls(pki.server_args("other-server", false));
    let store = builder(server.tls_url("127.0.0.1"))
        .tls(trusting(&pki))
        .build()
        .expect("store");
    let (kind, message) = decide(&store).await.expect_err("no insecure fallback");
    assert_eq!(kind, StoreErrorKind::Tls, "{message}");
    assert!(message.contains("certificate"), "{message}");
    // The readiness probe says the same.
    let ping = limiter(store).ping().await.expect_err("refused");
    assert_eq!(ping.kind(), "tls", "{ping}");
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused_as_tls() {
    let pki = Pki::generate();
    let server = RedisServer::start_tls(pki.server_args("wrong-host", false));
    let store = builder(server.tls_url("127.0.0.1"))
        .tls(trusting(&pki))
        .build()
        .expect("store");
    let (kind, message) = decide(&store).await.expect_err("host mismatch");
    assert_eq!(kind, StoreErrorKind::Tls, "{message}");
    assert!(message.contains("not valid for name"), "{message}");
}

#[tokio::test]
async fn mutual_tls_works_with_the_client_certificate_and_fails_without() {
    let pki = Pki::generate();
    let server = RedisServer::start_tls(pki.server_args("server", true));
    let with = builder(server.tls_url("localhost"))
        .tls(with_client_cert(&pki))
        .build()
        .expect("store");
    decide(&with).await.expect("mutual TLS");
    let without = builder(server.tls_url("localhost"))
        .tls(trusting(&pki))
        .build()
        .expect("store");
    let (kind, message) = decide(&without).await.expect_err("no client certificate");
    assert_eq!(kind, StoreErrorKind::Tls, "{message}");
    assert!(message.contains("alert"), "{message}");
}

#[tokio::test]
async fn the_documented_acl_line_suffices_with_the_default_user_off() {
    let pki = Pki::generate();
    let server = RedisServer::start_tls(pki.server_args("server", false)).with_admin();
    let mut setuser = vec!["ACL", "SETUSER", "tollgate", "on", ">s3cret-pw"];
    setuser.extend_from_slice(MINIMAL_ACL);
    assert_eq!(server.cli(&setuser).as_deref().map(str::trim), Some("OK"));
    let off = server.cli(&["ACL", "SETUSER", "default", "off"]);
    assert_eq!(off.as_deref().map(str::trim), Some("OK"));
    assert_eq!(
        server
            .cli(&["ACL", "LOG", "RESET"])
            .as_deref()
            .map(str::trim),
        Some("OK")
    );

    let store = builder(server.tls_url("localhost"))
        .username("tollgate")
        .password("s3cret-pw")
        .tls(trusting(&pki))
        .build()
        .expect("store");
    // A fresh server has no script cached: the first call takes the SCRIPT LOAD path.
    decide(&store).await.expect("first decision");
    server.cli(&["SCRIPT", "FLUSH"]).expect("flush");
    decide(&store)
        .await
        .expect("after the script cache was flushed");
    store.ping().await.expect("ping");
    let log = server.cli(&["ACL", "LOG"]).expect("acl log");
    assert!(
        log.trim().is_empty(),
        "the ACL line misses something: {log}"
    );

    // Without credentials the default user is gone: refused, as `auth`.
    let anonymous = builder(server.tls_url("localhost"))
        .tls(trusting(&pki))
        .build()
        .expect("store");
    let (kind, message) = decide(&anonymous).await.expect_err("default user is off");
    assert_eq!(kind, StoreErrorKind::Auth, "{message}");
    // A wrong password likewise.
    let wrong = builder(server.tls_url("localhost"))
        .username("tollgate")
        .password("not-it")
        .tls(trusting(&pki))
        .build()
        .expect("store");
    let (kind, message) = decide(&wrong).await.expect_err("wrong password");
    assert_eq!(kind, StoreErrorKind::Auth, "{message}");
}

#[tokio::test]
async fn a_user_without_evalsha_gets_noperm_as_auth() {
    let server = RedisServer::start();
    let mut setuser = vec!["ACL", "SETUSER", "weak", "on", ">weak-pw"];
    setuser.extend(MINIMAL_ACL.iter().filter(|r| **r != "+evalsha"));
    assert_eq!(server.cli(&setuser).as_deref().map(str::trim), Some("OK"));
    let store = builder(format!("redis://weak:weak-pw@127.0.0.1:{}", server.port))
        .build()
        .expect("store");
    store.ping().await.expect("PING is allowed");
    let (kind, message) = decide(&store).await.expect_err("NOPERM");
    assert_eq!(kind, StoreErrorKind::Auth, "{message}");
    assert!(message.contains("evalsha"), "{message}");
}

#[tokio::test]
async fn bad_tls_material_and_doubled_passwords_are_refused_when_built() {
    let pki = Pki::generate();
    let url = "rediss://127.0.0.1:1";
    let kind = |b: RedisStoreBuilder| b.build().map(|_| ()).map_err(|e| (e.kind(), e.to_string()));

    let (k, m) = kind(builder(url.into()).tls(RedisTls::new().ca_pem("not a pem"))).unwrap_err();
    assert_eq!(k, StoreErrorKind::Config, "{m}");
    assert!(m.contains("the CA"), "{m}");
    let no_key = RedisTls::new().client_identity(pki.read("client.pem"), pki.read("client.pem"));
    let (k, m) = kind(builder(url.into()).tls(no_key)).unwrap_err();
    assert_eq!(k, StoreErrorKind::Config, "{m}");
    assert!(m.contains("client key"), "{m}");
    let (k, m) = kind(builder("redis://127.0.0.1:1".into()).tls(trusting(&pki))).unwrap_err();
    assert_eq!(k, StoreErrorKind::Config, "{m}");
    assert!(m.contains("rediss://"), "{m}");
    let (k, m) = kind(builder("redis://:a@127.0.0.1:1".into()).password("b")).unwrap_err();
    assert_eq!(k, StoreErrorKind::Config, "{m}");
    assert!(!m.contains('a') || !m.contains(":a@"), "{m}");
    kind(builder(url.into()).tls(with_client_cert(&pki))).expect("valid material");
}
