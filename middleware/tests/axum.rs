//! The axum example, served on a real socket, exercised with a real HTTP client.

#[path = "../examples/axum.rs"]
#[allow(dead_code)]
mod example;
mod support;

use std::net::SocketAddr;

use support::RedisServer;
use tollgate::RateLimiter;

async fn serve(limiter: RateLimiter) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = example::app(limiter).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> reqwest::Response {
    let client = reqwest::Client::new();
    let mut req = client.get(format!("http://{addr}{path}"));
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    req.send().await.expect("request")
}

async fn exercise(addr: SocketAddr) {
    for remaining in (0..5).rev() {
        let res = get(addr, "/api/hello", Some("alice")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["ratelimit-policy"],
            "\"per-key\";q=5;w=10, \"per-key-daily\";q=1000;w=86400"
        );
        let state = res.headers()["ratelimit"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            state.starts_with(&format!("\"per-key\";r={remaining};t=")),
            "{state}"
        );
        assert_eq!(res.text().await.expect("body"), "hello\n");
    }

    let refused = get(addr, "/api/hello", Some("alice")).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("numeric Retry-After");
    assert!((1..=2).contains(&retry), "retry {retry}");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(
        body["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    assert_eq!(body["status"], 429);
    assert_eq!(body["violated-policies"], serde_json::json!(["per-key"]));

    // Another key has its own bucket; a missing key is a clear 400.
    assert_eq!(get(addr, "/api/hello", Some("bob")).await.status(), 200);
    let missing = get(addr, "/api/hello", None).await;
    assert_eq!(missing.status(), 400);
    let body: serde_json::Value = missing.json().await.expect("json");
    assert!(body["detail"].as_str().expect("detail").contains("per-key"));

    // Outside /api the per-IP policy applies, keyed by the real peer address.
    let res = get(addr, "/", None).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["ratelimit"]
        .to_str()
        .expect("ascii")
        .starts_with("\"per-ip\";r=59;"));
}

#[tokio::test]
async fn memory_store_over_real_sockets() {
    let addr = serve(example::limiter(None).expect("limiter")).await;
    exercise(addr).await;
}

/// The first decision of a fresh app connects to Redis and loads the script; on a
/// loaded CI machine that can exceed the 50 ms decision timeout and fail open. Warm the
/// connection with another key until Redis answers (the `RateLimit` header appears).
async fn warm_up(addr: SocketAddr) {
    for _ in 0..100 {
        let res = get(addr, "/api/hello", Some("warm-up")).await;
        if res.headers().contains_key("ratelimit") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the app never reached Redis");
}

#[tokio::test]
async fn redis_store_over_real_sockets() {
    let server = RedisServer::start();
    let addr = serve(example::limiter(Some(&server.url())).expect("limiter")).await;
    warm_up(addr).await;
    exercise(addr).await;
    // A second app instance on the same Redis shares the counts.
    let other = serve(example::limiter(Some(&server.url())).expect("limiter")).await;
    warm_up(other).await;
    assert_eq!(get(other, "/api/hello", Some("alice")).await.status(), 429);
}
