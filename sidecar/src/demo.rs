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
        .expect("a literal limit in the spec's syntax");
    let limiter = RateLimiter::builder()
        .policy(
            Policy::single(
                "demo-per-ip",
                spec,
                Key::client_ip(["127.0.0.0/8".parse().expect("a literal CIDR")]),
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

/// The `--demo` upstream: bound on a free loopback port before the configuration is
/// validated, so the flags can name its address
/// ([`Cli::prepare_demo`](crate::cli::Cli::prepare_demo)); it starts serving with
/// [`DemoUpstream::spawn`].
pub struct DemoUpstream {
    listener: std::net::TcpListener,
}

impl DemoUpstream {
    /// Binds a free loopback port for the demo upstream.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub fn bind() -> std::io::Result<Self> {
        Ok(DemoUpstream {
            listener: std::net::TcpListener::bind("127.0.0.1:0")?,
        })
    }

    /// The address it serves on.
    ///
    /// # Errors
    ///
    /// When the socket cannot report it.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
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
