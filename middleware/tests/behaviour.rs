//! Layer behaviours over real sockets: shadow mode, header styles, custom refusals,
//! request cost, missing keys, fail-closed answers for HTTP and gRPC clients, metrics.

mod support;

use std::net::SocketAddr;

use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use support::RedisServer;
use tollgate::key::Key;
use tollgate::policy::{Cost, MissingKey, Policy};
use tollgate::response::{HeaderStyle, Responder};
use tollgate::store::{MemoryStore, RedisStore};
use tollgate::{FailureMode, RateLimitLayer, RateLimiter};

async fn serve(layer: RateLimitLayer) -> SocketAddr {
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/users/{id}", get(|| async { "user" }))
        .route(
            "/own-limits",
            get(|| async {
                (
                    [
                        ("ratelimit-policy", "\"inner\";q=5;w=1"),
                        ("ratelimit", "\"inner\";r=4;t=1"),
                    ],
                    "limited inside too",
                )
            }),
        )
        .route("/upload", post(|| async { "stored" }))
        .layer(layer);
    support::serve_app(app).await
}

/// A limiter on a real Redis (generous 500 ms timeouts: the first call connects and
/// loads the script on a possibly loaded machine; these tests are about answers).
fn redis_limiter(server: &RedisServer, policy: Policy, mode: FailureMode) -> RateLimiter {
    let store = RedisStore::builder(server.url())
        .response_timeout(std::time::Duration::from_millis(500))
        .build()
        .expect("store");
    RateLimiter::builder()
        .store(store)
        .policy(policy)
        .failure_mode(mode)
        .timeout(std::time::Duration::from_millis(500))
        .build()
        .expect("limiter")
}

fn spec(s: &str) -> tollgate::LimitSpec {
    s.parse().expect("valid spec")
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get_url(url: String) -> reqwest::Response {
    client().get(url).send().await.expect("send")
}

#[tokio::test]
async fn shadow_mode_records_but_never_refuses() {
    let limiter = RateLimiter::builder()
        .policy(Policy::single("p", spec("1/h"), Key::global()).shadow(true))
        .build()
        .expect("limiter");
    let addr = serve(RateLimitLayer::new(limiter)).await;
    for remaining in [0, 0, 0] {
        let res = get_url(format!("http://{addr}/")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["ratelimit"],
            format!("\"p\";r={remaining};t=3600")
        );
    }
}

/// Shadow mode never refuses: not for a missing key, not for a bad cost, not while the
/// store is down in fail-closed mode. Each outcome is still recorded under its own label.
#[tokio::test]
async fn shadow_mode_never_refuses_for_any_reason() {
    let mut server = RedisServer::start();
    let policy = Policy::single("trial", spec("100/m"), Key::header("x-api-key"))
        .cost(Cost::header("x-cost", 1, 10))
        .shadow(true);
    let limiter = redis_limiter(&server, policy, FailureMode::Closed);
    let addr = serve(RateLimitLayer::new(limiter.clone())).await;
    let keyed = |cost: &str| {
        client()
            .get(format!("http://{addr}/"))
            .header("x-api-key", "k")
            .header("x-cost", cost)
            .send()
    };
    assert_eq!(keyed("1").await.expect("send").status(), 200);
    // No key, and a cost that is not a number: both would be 400 outside shadow.
    assert_eq!(get_url(format!("http://{addr}/")).await.status(), 200);
    assert_eq!(keyed("lots").await.expect("send").status(), 200);
    let parts = |key: Option<&str>, cost: &str| {
        let mut request = http::Request::get("/").header("x-cost", cost);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.body(()).expect("request").into_parts().0
    };
    assert_eq!(
        limiter.check(&parts(None, "1")).await.metric_label(),
        "shadow_invalid"
    );
    assert_eq!(
        limiter
            .check(&parts(Some("k"), "lots"))
            .await
            .metric_label(),
        "shadow_invalid"
    );
    // Redis down, fail-closed: would be 503.
    server.kill();
    assert_eq!(keyed("1").await.expect("send").status(), 200);
    let decision = limiter.check(&parts(Some("k"), "1")).await;
    assert!(decision.passes());
    assert_eq!(decision.metric_label(), "shadow_error");
}

/// `Key::peer_ip()` in an app served without connect info: the 400 says why.
#[tokio::test]
async fn a_missing_peer_address_is_explained_in_the_400() {
    let limiter = RateLimiter::builder()
        .policy(Policy::single("per-ip", spec("10/m"), Key::peer_ip()))
        .build()
        .expect("limiter");
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(RateLimitLayer::new(limiter));
    let (listener, addr) = support::loopback_listener().await;
    // Served without `into_make_service_with_connect_info`.
    tokio::spawn(async move { axum::serve(listener, app).await });
    let res = get_url(format!("http://{addr}/")).await;
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.expect("problem+json");
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("no peer address: serve with connect info"),
        "{detail}"
    );
    assert!(
        detail.contains("into_make_service_with_connect_info"),
        "{detail}"
    );
}

#[tokio::test]
async fn legacy_headers_and_custom_refusals() {
    let limiter = RateLimiter::builder()
        .policy(Policy::single("p", spec("1/m"), Key::peer_ip()))
        .build()
        .expect("limiter");
    let responder = Responder::default()
        .headers(HeaderStyle::default().ietf(true).legacy(true))
        .custom(|decision, _parts| {
            let mut res = http::Response::new(Bytes::from(format!(
                "slow down, {} s",
                tollgate::response::retry_after_secs(decision.retry_after())
            )));
            *res.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
            res
        });
    let addr = serve(RateLimitLayer::new(limiter).responder(responder)).await;
    let ok = get_url(format!("http://{addr}/")).await;
    assert_eq!(ok.headers()["x-ratelimit-limit"], "1");
    assert_eq!(ok.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(ok.headers()["x-ratelimit-reset"], "60");
    let refused = get_url(format!("http://{addr}/")).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "60");
    assert_eq!(refused.headers()["ratelimit"], "\"p\";r=0;t=60");
    assert_eq!(refused.text().await.expect("body"), "slow down, 60 s");
}

#[tokio::test]
async fn cost_from_a_header_and_its_validation() {
    let policy = Policy::single("uploads", spec("10/m"), Key::header("x-api-key"))
        .methods([http::Method::POST])
        .path_prefix("/upload")
        .cost(Cost::header("x-cost", 1, 8));
    let limiter = RateLimiter::builder()
        .policy(policy)
        .build()
        .expect("limiter");
    let addr = serve(RateLimitLayer::new(limiter)).await;
    let post = |cost: &str| {
        client()
            .post(format!("http://{addr}/upload"))
            .header("x-api-key", "k")
            .header("x-cost", cost)
            .send()
    };
    let res = post("8").await.expect("send");
    assert_eq!(res.status(), 200);
    assert!(res.headers()["ratelimit"]
        .to_str()
        .expect("ascii")
        .starts_with("\"uploads\";r=2;"));
    assert_eq!(post("3").await.expect("send").status(), 429);
    let bad = post("9").await.expect("send");
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.expect("json");
    assert_eq!(body["detail"], "x-cost must be at most 8");
    assert_eq!(post("two").await.expect("send").status(), 400);
    // GET / matches no policy: no headers, never limited.
    let free = get_url(format!("http://{addr}/")).await;
    assert_eq!(free.status(), 200);
    assert!(free.headers().get("ratelimit").is_none());
}

#[tokio::test]
async fn route_keys_share_a_bucket_per_route_template() {
    let limiter = RateLimiter::builder()
        .policy(Policy::single("per-route", spec("2/h"), Key::route()))
        .build()
        .expect("limiter");
    let addr = serve(RateLimitLayer::new(limiter)).await;
    let status = |path: &'static str| {
        let url = format!("http://{addr}{path}");
        async move { get_url(url).await.status() }
    };
    assert_eq!(status("/users/1").await, 200);
    assert_eq!(status("/users/2").await, 200);
    assert_eq!(
        status("/users/3").await,
        429,
        "all /users/{{id}} share one bucket"
    );
    assert_eq!(status("/").await, 200, "another route, another bucket");
}

#[tokio::test]
async fn inner_rate_limit_fields_are_extended_not_replaced() {
    let limiter = RateLimiter::builder()
        .policy(Policy::single("outer", spec("10/m"), Key::global()))
        .build()
        .expect("limiter");
    let addr = serve(RateLimitLayer::new(limiter)).await;
    let res = get_url(format!("http://{addr}/own-limits")).await;
    assert_eq!(
        res.headers()["ratelimit-policy"],
        "\"inner\";q=5;w=1, \"outer\";q=10;w=60"
    );
    assert_eq!(
        res.headers()["ratelimit"],
        "\"inner\";r=4;t=1, \"outer\";r=9;t=6"
    );
}

#[tokio::test]
async fn missing_key_choices() {
    let allow = RateLimiter::builder()
        .policy(
            Policy::single("p", spec("1/h"), Key::header("x-api-key"))
                .missing_key(MissingKey::Allow),
        )
        .build()
        .expect("limiter");
    let addr = serve(RateLimitLayer::new(allow)).await;
    for _ in 0..3 {
        let res = get_url(format!("http://{addr}/")).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("ratelimit").is_none());
    }
    let fallback = RateLimiter::builder()
        .policy(
            Policy::single("p", spec("1/h"), Key::header("x-api-key"))
                .missing_key(MissingKey::Fallback("anonymous".into())),
        )
        .build()
        .expect("limiter");
    let addr = serve(RateLimitLayer::new(fallback)).await;
    assert_eq!(get_url(format!("http://{addr}/")).await.status(), 200);
    assert_eq!(get_url(format!("http://{addr}/")).await.status(), 429);
    let keyed = client()
        .get(format!("http://{addr}/"))
        .header("x-api-key", "k")
        .send()
        .await
        .expect("send");
    assert_eq!(keyed.status(), 200);
}

#[tokio::test]
async fn fail_closed_is_503_for_http_and_unavailable_for_grpc() {
    let mut server = RedisServer::start();
    let policy = Policy::single("p", spec("100/m"), Key::global());
    let limiter = redis_limiter(&server, policy, FailureMode::Closed);
    let addr = serve(RateLimitLayer::new(limiter)).await;
    assert_eq!(get_url(format!("http://{addr}/")).await.status(), 200);
    server.kill();
    let res = get_url(format!("http://{addr}/")).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let grpc = client()
        .post(format!("http://{addr}/"))
        .header("content-type", "application/grpc")
        .send()
        .await
        .expect("send");
    assert_eq!(grpc.status(), 200);
    assert_eq!(grpc.headers()["grpc-status"], "14");
    assert_eq!(grpc.headers()["content-type"], "application/grpc");
}

#[test]
fn metrics_count_decisions_by_policy_and_outcome() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let limiter = RateLimiter::builder()
        .policy(Policy::single("metered", spec("2/h"), Key::global()))
        .build()
        .expect("limiter");
    let parts = http::Request::get("/")
        .body(())
        .expect("valid")
        .into_parts()
        .0;
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        for _ in 0..3 {
            runtime.block_on(limiter.check(&parts));
        }
    });
    let text = handle.render();
    assert!(
        text.contains(
            r#"ratelimiter_requests_checked_total{policy="metered",decision="allowed"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"ratelimiter_requests_checked_total{policy="metered",decision="limited"} 1"#
        ),
        "{text}"
    );
}

#[test]
fn static_metric_labels_keep_two_limiters_apart_and_every_family_is_described() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let limiter = |node: &str| {
        RateLimiter::builder()
            .policy(Policy::single("metered", spec("2/h"), Key::global()))
            .metric_label("node", node)
            .build()
            .expect("limiter")
    };
    let parts = http::Request::get("/")
        .body(())
        .expect("valid")
        .into_parts()
        .0;
    metrics::with_local_recorder(&recorder, || {
        let (a, b) = (limiter("a"), limiter("b"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        for _ in 0..3 {
            runtime.block_on(a.check(&parts));
        }
        runtime.block_on(b.check(&parts));
    });
    let text = handle.render();
    for series in [
        r#"ratelimiter_requests_checked_total{node="a",policy="metered",decision="allowed"} 2"#,
        r#"ratelimiter_requests_checked_total{node="a",policy="metered",decision="limited"} 1"#,
        r#"ratelimiter_requests_checked_total{node="b",policy="metered",decision="allowed"} 1"#,
        "# HELP ratelimiter_requests_checked_total ",
    ] {
        assert!(text.contains(series), "{series} in\n{text}");
    }
    assert!(
        !text.contains(r#"node="b",policy="metered",decision="limited""#),
        "{text}"
    );
}

#[test]
fn bad_static_metric_labels_are_refused_by_name() {
    for (name, reason) in [
        ("policy", "sets this label itself"),
        ("no-dash", "not a Prometheus label name"),
        ("", "not a Prometheus label name"),
        ("__reserved", "reserved"),
    ] {
        let error = RateLimiter::builder()
            .metric_label(name, "x")
            .build()
            .expect_err(name);
        let message = error.to_string();
        assert!(message.contains(&format!("{name:?}")), "{message}");
        assert!(message.contains(reason), "{message}");
    }
    let twice = RateLimiter::builder()
        .metric_label("node", "a")
        .metric_label("node", "b")
        .build()
        .expect_err("twice");
    assert!(twice.to_string().contains("given twice"), "{twice}");
}

#[test]
fn memory_store_stays_within_its_key_bound() {
    let store = MemoryStore::builder().max_keys(1_000).shards(4).build();
    let limit = spec("5/h");
    for i in 0..50_000 {
        let check = tollgate::store::Check::new(format!("attacker-{i}"), limit);
        assert!(store.decide(std::slice::from_ref(&check), 1)[0].allowed);
    }
    assert!(store.len() <= 1_000, "{} keys held", store.len());
    // The newest keys are still remembered exactly.
    let recent = tollgate::store::Check::new("attacker-49999", limit);
    let again = store.decide(std::slice::from_ref(&recent), 1);
    assert_eq!(again[0].remaining, 3);
}

/// `check_now` (one call, and for a one-limit policy no `Pending`) answers and counts
/// exactly as `prepare` then `try_decide_now` do, whatever the policy's options.
#[test]
fn check_now_decides_and_counts_as_prepare_then_try_decide_now() {
    use tollgate::limiter::Prepared;
    use tollgate::policy::Limit;
    use tollgate::ManualClock;

    let policies = || {
        vec![
            Policy::single("posts", spec("1/h"), Key::header("x-api-key"))
                .methods([http::Method::POST]),
            Policy::single("shadowed", spec("1/h"), Key::header("x-api-key"))
                .path_prefix("/shadow")
                .shadow(true),
            Policy::single("allow", spec("1/h"), Key::header("x-api-key"))
                .path_prefix("/allow")
                .missing_key(MissingKey::Allow),
            Policy::single("fallback", spec("1/h"), Key::header("x-api-key"))
                .path_prefix("/fallback")
                .missing_key(MissingKey::Fallback("anonymous".into())),
            Policy::new("two")
                .path_prefix("/two")
                .limit(Limit::new("a", spec("2/h"), Key::header("x-api-key")))
                .limit(Limit::new("b", spec("1/h"), Key::global())),
            Policy::single("costly", spec("3/h"), Key::header("x-api-key"))
                .path_prefix("/")
                .cost(Cost::header("x-cost", 1, 2)),
        ]
    };
    let request = |method: http::Method, path: &str, key: Option<&str>, cost: Option<&str>| {
        let mut builder = http::Request::builder().method(method).uri(path);
        if let Some(key) = key {
            builder = builder.header("x-api-key", key);
        }
        if let Some(cost) = cost {
            builder = builder.header("x-cost", cost);
        }
        builder.body(()).expect("request").into_parts().0
    };
    let get = http::Method::GET;
    let mut requests = Vec::new();
    for path in ["/shadow", "/allow", "/fallback", "/two", "/"] {
        for key in [Some("k1"), Some("k2"), None, Some("k1")] {
            requests.push(request(get.clone(), path, key, None));
        }
    }
    for cost in ["2", "x", "3", "1", "1"] {
        requests.push(request(get.clone(), "/", Some("c"), Some(cost)));
    }
    requests.push(request(http::Method::POST, "/", Some("p"), None));
    requests.push(request(http::Method::POST, "/", Some("p"), None));
    requests.push(request(http::Method::POST, "/", None, None));

    // The same limiter twice, on one manual clock so that verdicts compare equal.
    let clock = ManualClock::new(1_000_000_000);
    let build = || {
        policies()
            .into_iter()
            .fold(RateLimiter::builder(), |b, p| b.policy(p))
            .clock(clock.clone())
            .build()
            .expect("limiter")
    };
    let (one_call, two_steps) = (build(), build());
    let first = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let second = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    for parts in &requests {
        let a = metrics::with_local_recorder(&first, || {
            one_call.check_now(parts).expect("memory answers now")
        });
        let b = metrics::with_local_recorder(&second, || match two_steps.prepare(parts) {
            Prepared::Done(decision) => decision,
            Prepared::Pending(pending) => two_steps
                .try_decide_now(pending)
                .expect("memory answers now"),
        });
        assert_eq!(a, b, "{} {:?}", parts.uri, parts.headers);
        clock.advance(std::time::Duration::from_millis(1));
    }
    // The same series and counts; the exporter's order of series is not fixed.
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines.join("\n")
    };
    let (a, b) = (first.handle().render(), second.handle().render());
    assert_eq!(sorted(a.clone()), sorted(b));
    for expected in [
        r#"{policy="shadowed",decision="shadow_limited"} 1"#,
        r#"{policy="shadowed",decision="shadow_invalid"} 1"#,
        r#"{policy="allow",decision="allowed"} 3"#,
        r#"{policy="fallback",decision="limited"} 1"#,
        r#"{policy="two",decision="limited"} 2"#,
        r#"{policy="costly",decision="invalid"} 3"#,
        r#"{policy="posts",decision="limited"} 1"#,
    ] {
        assert!(a.contains(expected), "{expected} in {a}");
    }
}
