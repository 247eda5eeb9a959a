//! The sidecar as a proxy, over real sockets: methods, headers, streamed bodies, h2c,
//! hop-by-hop removal, 502/504, limits, and three sidecars sharing one Redis.

mod common;
#[path = "../../middleware/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use support::RedisServer;
use tollgate_sidecar::config::{RedisSection, UpstreamSection};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

#[tokio::test]
async fn methods_headers_and_hop_by_hop() {
    let upstream = common::upstream().await;
    let sc = common::start(common::config(upstream, "100/m", "ip")).await;
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
        let res = client()
            .request(
                method.parse().expect("method"),
                format!("http://{}/echo/a?b=c", sc.proxy),
            )
            .header("x-custom", "kept")
            .header("connection", "keep-alive, x-drop-me")
            .header("x-drop-me", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "secret")
            .header("x-forwarded-for", "203.0.113.9")
            .body("hello")
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 200, "{method}");
        let echo: Value = res.json().await.expect("json");
        assert_eq!(echo["method"], method);
        assert_eq!(echo["path"], "/echo/a?b=c");
        let h = &echo["headers"];
        assert_eq!(h["x-custom"], "kept");
        for gone in ["x-drop-me", "keep-alive", "proxy-authorization"] {
            assert!(h.get(gone).is_none(), "{gone} forwarded");
        }
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], format!("{}", sc.proxy));
        assert_eq!(
            h["host"],
            format!("{}", sc.proxy),
            "Host preserved by default"
        );
        assert_eq!(echo["body_bytes"], 5);
    }
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let upstream = common::upstream().await;
    let sc = common::start(common::config(upstream, "100/m", "ip")).await;
    // Upload 16 MiB as a stream of chunks the client produces lazily.
    let chunks =
        futures_util::stream::iter((0..16).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 1 << 20])));
    let res = client()
        .post(format!("http://{}/echo/upload", sc.proxy))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("send");
    let echo: Value = res.json().await.expect("json");
    assert_eq!(echo["body_bytes"], 16 << 20);
    // Download 8 MiB chunk by chunk.
    let res = common::get_url(format!("http://{}/download", sc.proxy)).await;
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let (mut total, mut frames) = (0usize, 0usize);
    while let Some(chunk) = stream.next().await {
        total += chunk.expect("chunk").len();
        frames += 1;
    }
    assert_eq!(total, 8 << 20);
    assert!(frames > 1, "the body arrived in one piece: buffered?");
}

#[tokio::test]
async fn h2c_in_and_out() {
    let upstream = common::upstream().await;
    let mut file = common::config(upstream, "100/m", "ip");
    file.upstreams.insert(
        "app".into(),
        UpstreamSection {
            endpoints: vec![format!("http://{upstream}")],
            protocol: Some("h2c".into()),
        },
    );
    let sc = common::start(file).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let res = h2
        .get(format!("http://{}/echo/h2", sc.proxy))
        .send()
        .await
        .expect("send");
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    let echo: Value = res.json().await.expect("json");
    assert_eq!(echo["version"], "HTTP/2.0");
    // HTTP/1.1 clients on the same port still work.
    let res = common::get_url(format!("http://{}/echo/h1", sc.proxy)).await;
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
}

/// An upstream that counts the TCP connections it accepts and answers `/empty` with
/// 204 and everything else with a short body.
async fn counting_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let mut res = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"hello"),
                        ));
                        if req.uri().path() == "/empty" {
                            *res.body_mut() = http_body_util::Full::new(bytes::Bytes::new());
                            *res.status_mut() = http::StatusCode::NO_CONTENT;
                        }
                        Ok::<_, std::convert::Infallible>(res)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    use std::sync::atomic::Ordering;
    let (upstream, accepted) = counting_upstream().await;
    let sc = common::start(common::config(upstream, "100/m", "ip")).await;
    let client = client();
    for i in 0..60 {
        let url = match i % 3 {
            0 => format!("http://{}/a", sc.proxy),
            1 => format!("http://{}/empty", sc.proxy),
            _ => format!("http://{}/b", sc.proxy),
        };
        let res = if i % 5 == 0 {
            client.head(url)
        } else {
            client.get(url)
        }
        .send()
        .await
        .expect("send");
        assert!(res.status().is_success(), "{}", res.status());
        let _ = res.bytes().await.expect("body");
    }
    // Sequential requests through one keep-alive pool: a handful of connections at most
    // (a connection returned a moment before it is ready again may be replaced).
    let n = accepted.load(Ordering::SeqCst);
    assert!(
        n <= 5,
        "{n} upstream connections for 60 sequential requests"
    );
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    // A port with nothing listening, held so that no other test's server takes it.
    let (_held, dead) = common::refusing_addr();
    let sc = common::start(common::config(dead, "100/m", "ip")).await;
    let res = common::get_url(format!("http://{}/echo", sc.proxy)).await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.text().await.expect("body"), "upstream unavailable\n");

    let upstream = common::upstream().await;
    let mut file = common::config(upstream, "100/m", "ip");
    file.proxy.request_timeout_ms = Some(300);
    let sc = common::start(file).await;
    let res = common::get_url(format!("http://{}/slow", sc.proxy)).await;
    assert_eq!(res.status(), 504);
    // The proxy keeps serving after both.
    let res = common::get_url(format!("http://{}/echo", sc.proxy)).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn limits_apply_with_headers_and_admin_endpoints_answer() {
    let upstream = common::upstream().await;
    let sc = common::start(common::config(upstream, "2/m", "header:x-api-key")).await;
    let get = |key: &'static str| {
        client()
            .get(format!("http://{}/echo/limited", sc.proxy))
            .header("x-api-key", key)
            .send()
    };
    assert_eq!(get("a").await.expect("send").status(), 200);
    let second = get("a").await.expect("send");
    assert_eq!(second.headers()["ratelimit"], "\"per-key\";r=0;t=60");
    let third = get("a").await.expect("send");
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "30");
    assert_eq!(get("b").await.expect("send").status(), 200);
    let missing = common::get_url(format!("http://{}/echo/limited", sc.proxy)).await;
    assert_eq!(missing.status(), 400);
    // Outside the policy's prefix: not limited.
    for _ in 0..5 {
        assert_eq!(
            common::get_url(format!("http://{}/echo/free", sc.proxy))
                .await
                .status(),
            200
        );
    }

    let admin = |path: &str| client().get(format!("http://{}{path}", sc.admin)).send();
    assert_eq!(admin("/health").await.expect("send").status(), 200);
    let ready: Value = admin("/ready")
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["store"], "memory");
    let metrics = admin("/metrics")
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("ratelimiter_requests_checked_total{"),
        "{metrics}"
    );
    assert!(metrics.contains("decision=\"limited\""), "{metrics}");
    assert!(
        metrics.contains("tollgate_proxy_requests_total{"),
        "{metrics}"
    );
    assert!(metrics.contains("node=\""), "{metrics}");
    let config: Value = admin("/config")
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(config["policies"][0]["name"], "limited");
}

#[tokio::test]
async fn check_api_valid_and_invalid() {
    let upstream = common::upstream().await;
    let sc = common::start(common::config(upstream, "2/m", "ip")).await;
    let check = |body: &'static str| {
        client()
            .post(format!("http://{}/check", sc.admin))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let body = r#"{"key":"k","limit":2,"window_ms":60000}"#;
    let first = check(body).await.expect("send");
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["ratelimit-policy"], "\"check\";q=2;w=60");
    let v: Value = first.json().await.expect("json");
    assert_eq!(
        v,
        serde_json::json!({"allowed": true, "limit": 2, "remaining": 1, "reset_ms": 30000, "retry_after_ms": 0})
    );
    assert_eq!(check(body).await.expect("send").status(), 200);
    let limited = check(body).await.expect("send");
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "30");
    let v: Value = limited.json().await.expect("json");
    assert_eq!(v["allowed"], false);
    // 30 s minus the few milliseconds since the first call.
    let retry = v["retry_after_ms"].as_u64().expect("number");
    assert!((29_000..=30_000).contains(&retry), "{retry}");
    // The same key under another limit is another bucket.
    let other = check(r#"{"key":"k","limit":5,"window_ms":60000,"cost":5}"#)
        .await
        .expect("send");
    assert_eq!(other.status(), 200);

    for (bad, field) in [
        ("{", "(body)"),
        (r#"{"limit":2,"window_ms":1000}"#, "key"),
        (r#"{"key":"k","limit":0,"window_ms":1000}"#, "limit"),
        (r#"{"key":"k","limit":2,"window_ms":-5}"#, "window_ms"),
        (
            r#"{"key":"k","limit":2,"window_ms":1000,"cost":"1"}"#,
            "cost",
        ),
    ] {
        let res = check(bad).await.expect("send");
        assert_eq!(res.status(), 400, "{bad}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let v: Value = res.json().await.expect("json");
        assert_eq!(v["field"], field, "{bad}");
    }
}

#[tokio::test]
async fn three_sidecars_share_one_redis_limit_exactly() {
    let redis = RedisServer::start();
    let upstream = common::upstream().await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut file = common::config(upstream, "25/h", "header:x-api-key");
        file.node_id = Some(format!("node-{i}"));
        file.redis = Some(RedisSection {
            url: redis.url(),
            // Generous: this test is about sharing, not about timeouts.
            timeout_ms: Some(5_000),
            ..RedisSection::default()
        });
        file.limiter.timeout_ms = Some(5_000);
        file.limiter.failure_mode = Some("closed".into());
        nodes.push(common::start(file).await);
    }
    let mut tasks = Vec::new();
    for i in 0..90 {
        let url = format!("http://{}/echo/limited", nodes[i % 3].proxy);
        tasks.push(tokio::spawn(async move {
            client()
                .get(url)
                .header("x-api-key", "shared")
                .send()
                .await
                .expect("send")
                .status()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task").as_u16() {
            200 => ok += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 25);
}

#[tokio::test]
async fn redis_outage_follows_the_failure_mode_and_recovers() {
    let mut redis = RedisServer::start();
    let upstream = common::upstream().await;
    let start = |mode: &str| {
        let mut file = common::config(upstream, "100/h", "header:x-api-key");
        file.redis = Some(RedisSection {
            url: redis.url(),
            timeout_ms: Some(500),
            ..RedisSection::default()
        });
        file.limiter.timeout_ms = Some(500);
        file.limiter.failure_mode = Some(mode.into());
        common::start(file)
    };
    let open = start("open").await;
    let closed = start("closed").await;
    let get = |addr: std::net::SocketAddr| {
        client()
            .get(format!("http://{addr}/echo/limited"))
            .header("x-api-key", "k")
            .send()
    };
    assert_eq!(get(open.proxy).await.expect("send").status(), 200);
    assert_eq!(get(closed.proxy).await.expect("send").status(), 200);
    redis.kill();
    assert_eq!(get(open.proxy).await.expect("send").status(), 200);
    let refused = get(closed.proxy).await.expect("send");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let ready = common::get_url(format!("http://{}/ready", closed.admin)).await;
    assert_eq!(
        ready.status(),
        503,
        "fail-closed sidecar without its store is not ready"
    );
    let ready = common::get_url(format!("http://{}/ready", open.admin)).await;
    assert_eq!(
        ready.status(),
        200,
        "fail-open sidecar serves without its store"
    );
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = get(closed.proxy).await.expect("send");
        if res.status() == 200 && res.headers().contains_key("ratelimit") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered: {}",
            res.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_demo_upstream_limits_its_own_route_with_the_layer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(tollgate_sidecar::demo::serve(listener));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            common::get_url(format!("http://{addr}/demo/limited"))
                .await
                .status()
                .as_u16(),
        );
    }
    // 3 per 10 s per client IP: the peer address must reach the key extractor.
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let health = common::get_url(format!("http://{addr}/health")).await;
    assert_eq!(health.status(), 200);
}
