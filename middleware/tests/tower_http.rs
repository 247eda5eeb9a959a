//! tower-http's layers compose with Tollgate's, outside and inside it, the way users
//! write their stacks: around a `Router`, on one route (`route_layer`,
//! `MethodRouter::layer`), and around a whole `Router` served by `axum::serve`.
//! Every stack is exercised over a real socket.
//!
//! CORS outside the limiter matters: a browser can only read a 429 that carries
//! `Access-Control-Allow-Origin`.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use http::StatusCode;
use support::serve_app as serve_router;
use tollgate::key::Key;
use tollgate::policy::Policy;
use tollgate::{RateLimitLayer, RateLimiter};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tower_http::validate_request::ValidateRequestHeaderLayer;

fn limit() -> RateLimitLayer {
    let limiter = RateLimiter::builder()
        .policy(Policy::single(
            "p",
            "2/m".parse().expect("spec"),
            Key::global(),
        ))
        .build()
        .expect("limiter");
    RateLimitLayer::new(limiter)
}

fn timeout() -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(10))
}

/// Two requests pass with `RateLimit` headers, the third is a 429 with `Retry-After`;
/// with CORS outside the limiter, the 429 is readable by a browser.
/// A request the validator refuses gets its 406 when the validator sits outside the
/// limiter, and the limiter's 429 (the key is exhausted) when it sits inside.
async fn expect_limited(addr: SocketAddr, path: &str, cors_on_429: bool, validator_outside: bool) {
    let client = reqwest::Client::new();
    let send = || {
        client
            .get(format!("http://{addr}{path}"))
            .header("origin", "https://app.example")
            .header("accept", "application/json")
            .header("accept-encoding", "gzip")
            .send()
    };
    for i in 0..2 {
        let res = send().await.expect("send");
        assert_eq!(res.status(), 200, "{path}: request {i}");
        assert!(
            res.headers().contains_key("ratelimit"),
            "{path}: request {i}"
        );
        assert!(res.headers().contains_key("access-control-allow-origin"));
    }
    let res = send().await.expect("send");
    assert_eq!(res.status(), 429, "{path}");
    assert!(res.headers().contains_key("retry-after"), "{path}");
    assert_eq!(
        res.headers().contains_key("access-control-allow-origin"),
        cors_on_429,
        "{path}"
    );
    let refused = client
        .get(format!("http://{addr}{path}"))
        .header("accept", "text/plain")
        .send()
        .await
        .expect("send");
    let expected = if validator_outside {
        StatusCode::NOT_ACCEPTABLE
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    assert_eq!(refused.status(), expected, "{path}");
}

#[tokio::test]
async fn tower_http_layers_outside_the_limiter() {
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
            .layer(CorsLayer::permissive())
            .layer(timeout())
            .layer(CompressionLayer::new())
            .layer(ValidateRequestHeaderLayer::accept("application/json"))
            .layer(limit()),
    );
    expect_limited(serve_router(app).await, "/", true, true).await;
}

#[tokio::test]
async fn tower_http_layers_inside_the_limiter() {
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(limit())
            .layer(TraceLayer::new_for_http())
            .layer(CorsLayer::permissive())
            .layer(timeout())
            .layer(CompressionLayer::new())
            .layer(ValidateRequestHeaderLayer::accept("application/json")),
    );
    // Refused before CORS runs: no CORS header on the 429 (the reason to put CORS
    // outside), but everything else works.
    expect_limited(serve_router(app).await, "/", false, false).await;
}

#[tokio::test]
async fn on_one_route_with_route_layer_and_method_router_layer() {
    let app = Router::new()
        .route("/routed", get(|| async { "ok" }))
        .route_layer(
            ServiceBuilder::new()
                .layer(CorsLayer::permissive())
                .layer(timeout())
                .layer(ValidateRequestHeaderLayer::accept("application/json"))
                .layer(limit()),
        )
        .route(
            "/method",
            get(|| async { "ok" }).layer(
                ServiceBuilder::new()
                    .layer(CorsLayer::permissive())
                    .layer(CompressionLayer::new())
                    .layer(ValidateRequestHeaderLayer::accept("application/json"))
                    .layer(limit())
                    .layer(timeout()),
            ),
        );
    let addr = serve_router(app).await;
    expect_limited(addr, "/routed", true, true).await;
    expect_limited(addr, "/method", true, true).await;
}

#[tokio::test]
async fn around_a_whole_router_served_by_axum_serve() {
    let router = Router::new().route("/", get(|| async { "ok" }));
    // `axum::serve` wants axum's own response type: the one adapter tower-http's layers
    // need there too (their bodies are not axum's either).
    let app = ServiceBuilder::new()
        .map_response(axum::response::IntoResponse::into_response)
        .layer(TraceLayer::new_for_http())
        .layer(CorsLayer::permissive())
        .layer(timeout())
        .layer(CompressionLayer::new())
        .layer(limit())
        .layer(ValidateRequestHeaderLayer::accept("application/json"))
        .service(router);
    let (listener, addr) = support::loopback_listener().await;
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                SocketAddr,
            >(app),
        )
        .await
    });
    expect_limited(addr, "/", true, false).await;
}

/// The layer asks nothing of the inner service but `Clone`: neither it, its future nor
/// the request body need be `Send` (a single-threaded server, a service holding an
/// `Rc`).
#[tokio::test(flavor = "current_thread")]
async fn the_inner_service_and_body_need_not_be_send() {
    let local = Rc::new("not Send");
    let inner = service_fn(move |request: http::Request<Rc<str>>| {
        let local = local.clone();
        async move {
            let body = format!("{local}: {}", request.body());
            Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from(body),
            )))
        }
    });
    let service = ServiceBuilder::new().layer(limit()).service(inner);
    let request = || http::Request::new(Rc::<str>::from("body"));
    for _ in 0..2 {
        let res = service
            .clone()
            .oneshot(request())
            .await
            .expect("infallible");
        assert_eq!(res.status(), 200);
    }
    let res = service.oneshot(request()).await.expect("infallible");
    assert_eq!(res.status(), 429);
}
