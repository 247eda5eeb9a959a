//! The demo upstream: a small axum app to put the sidecar in front of.
//!
//! `GET /health` answers `ok`; every other request gets a JSON echo of its method,
//! path and the `X-Forwarded-*` headers the sidecar added. `/demo/limited` is itself
//! behind the `tollgate` layer (3 per 10 s per client IP), to show the library in use
//! inside a service as well as in front of it.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tollgate::key::Key;
use tollgate::policy::Policy;
use tollgate::{RateLimitLayer, RateLimiter};

async fn echo(request: Request) -> Json<serde_json::Value> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Json(json!({
        "service": "tollgate-demo-upstream",
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "x_forwarded_for": header("x-forwarded-for"),
        "x_forwarded_host": header("x-forwarded-host"),
    }))
}

/// The demo app.
///
/// # Errors
///
/// Never in practice: the built-in policy is valid.
pub fn app() -> Result<Router, tollgate::limiter::BuildError> {
    let spec = "3/10s"
        .parse()
        .unwrap_or_else(|e| unreachable!("valid literal: {e}"));
    let limiter = RateLimiter::builder()
        .policy(
            Policy::single(
                "demo-per-ip",
                spec,
                Key::client_ip(["127.0.0.0/8"
                    .parse()
                    .unwrap_or_else(|e| unreachable!("{e}"))]),
            )
            .path_prefix("/demo/limited"),
        )
        .build()?;
    Ok(Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .fallback(echo)
        .layer(RateLimitLayer::new(limiter)))
}

/// Serves the demo app on `listener` forever.
///
/// # Errors
///
/// When serving fails.
pub async fn serve(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    axum::serve(
        listener,
        app()?.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

/// `--demo`: a demo upstream on a free loopback port, and the flags that put the
/// sidecar in front of it (10 per minute per client IP, this machine only) unless the
/// user gave their own. Bound before the configuration is validated, so the flags can
/// name its address; it starts serving with [`DemoUpstream::spawn`].
pub struct DemoUpstream {
    listener: std::net::TcpListener,
}

impl DemoUpstream {
    /// Binds the demo upstream and points `cli` at it.
    ///
    /// # Errors
    ///
    /// When `--upstream` is also given (the demo is its own upstream: say which you
    /// mean), or no loopback port can be bound.
    pub fn prepare(cli: &mut crate::cli::Cli) -> anyhow::Result<Self> {
        if !cli.upstream.is_empty() {
            anyhow::bail!(
                "--demo starts its own upstream and cannot be combined with --upstream \
                 (or TOLLGATE_UPSTREAM): drop one of them"
            );
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        cli.upstream = vec![format!("http://{}", listener.local_addr()?)];
        cli.limit.get_or_insert_with(|| "10/m".into());
        // A demo is for this machine only, unless asked otherwise.
        cli.listen.get_or_insert_with(|| "127.0.0.1:8000".into());
        cli.admin_listen
            .get_or_insert_with(|| "127.0.0.1:9000".into());
        Ok(DemoUpstream { listener })
    }

    /// Serves the demo upstream in the background (inside a Tokio runtime).
    ///
    /// # Errors
    ///
    /// When the socket cannot be handed to Tokio.
    pub fn spawn(self) -> std::io::Result<()> {
        self.listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        tokio::spawn(async move {
            if let Err(e) = serve(listener).await {
                tracing::error!(error = %e, "demo upstream failed");
            }
        });
        Ok(())
    }
}
