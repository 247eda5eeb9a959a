//! An axum app behind Tollgate.
//!
//! ```text
//! cargo run -p tollgate --features axum --example axum
//! curl -i -H 'x-api-key: demo' http://127.0.0.1:3000/api/hello   # 5 per 10 s per key
//! curl -i http://127.0.0.1:3000/                                  # 60 per minute per IP
//! ```
//!
//! Set `REDIS_URL=redis://127.0.0.1:6379` to share the limits between several copies of
//! the app; without it the limits live in process memory. `LISTEN` sets the address.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use tollgate::key::Key;
use tollgate::policy::{Limit, Policy};
use tollgate::store::RedisStore;
use tollgate::{RateLimitLayer, RateLimiter};

/// The limits: per API key under `/api`, per client IP elsewhere.
pub fn limiter(redis_url: Option<&str>) -> Result<RateLimiter, Box<dyn std::error::Error>> {
    let mut builder = RateLimiter::builder()
        .policy(
            Policy::new("api")
                .path_prefix("/api")
                .limit(Limit::new(
                    "per-key",
                    "5/10s".parse()?,
                    Key::header("x-api-key"),
                ))
                .limit(Limit::new(
                    "per-key-daily",
                    "1000/d".parse()?,
                    Key::header("x-api-key"),
                )),
        )
        .policy(Policy::single("per-ip", "60/m".parse()?, Key::peer_ip()));
    if let Some(url) = redis_url {
        builder = builder.store(RedisStore::builder(url).build()?);
    }
    Ok(builder.build()?)
}

/// The app: two routes and one layer.
pub fn app(limiter: RateLimiter) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { "Tollgate demo: try /api/hello with an x-api-key header\n" }),
        )
        .route("/api/hello", get(|| async { "hello\n" }))
        .layer(RateLimitLayer::new(limiter))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let redis_url = std::env::var("REDIS_URL").ok();
    let limiter = limiter(redis_url.as_deref())?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "listening on http://{} ({} store)",
        listener.local_addr()?,
        limiter.store_kind()
    );
    axum::serve(
        listener,
        app(limiter).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
