//! The tower middleware: [`RateLimitLayer`] wraps a service in [`RateLimit`].
//!
//! Not to be confused with `tower::limit::{RateLimitLayer, RateLimit}`, which delay
//! requests (back-pressure through `poll_ready`) to a fixed rate for one service in one
//! process. These decide per key, against a store shared by every node, and answer a
//! refusal with `429` at once. Import them by path (`tollgate::RateLimitLayer`) when
//! both are in scope.
//!
//! For each request the service asks the [`RateLimiter`] and either
//! calls the inner service (adding the `RateLimit` headers to its response) or answers
//! itself with the refusal built by [`Responder`] — a
//! response, never an error, so the connection stays usable.
//!
//! The response body is [`ResponseBody`]: the inner service's body or the refusal's
//! bytes. It implements `http_body::Body`, so the same layer fits axum routers, tonic
//! servers and bare hyper services.
//!
//! Decisions that need no I/O (the memory store, a cached refusal) are made inside
//! `call`, and the [`ResponseFuture`] then only drives the inner service; a decision
//! that waits on Redis is one boxed future.

mod body;
mod future;
mod service;

use tower_layer::Layer;

pub use self::body::ResponseBody;
pub use self::future::ResponseFuture;
pub use self::service::RateLimit;
use crate::response::{HeaderStyle, Responder};
use crate::RateLimiter;

/// Applies [`RateLimit`] to a service.
///
/// ```
/// use std::convert::Infallible;
/// use tollgate::key::Key;
/// use tollgate::policy::Policy;
/// use tollgate::{RateLimitLayer, RateLimiter};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RateLimiter::builder()
///     .policy(Policy::single("per-key", "1/m".parse()?, Key::header("x-api-key")))
///     .build()?;
/// let svc = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(limiter))
///     .service(service_fn(|_req: http::Request<String>| async {
///         Ok::<_, Infallible>(http::Response::new(String::from("hello")))
///     }));
///
/// let req = || http::Request::get("/").header("x-api-key", "k").body(String::new());
/// let first = svc.clone().oneshot(req()?).await?;
/// assert_eq!(first.status(), 200);
/// assert_eq!(first.headers()["ratelimit"], "\"per-key\";r=0;t=60");
/// let second = svc.oneshot(req()?).await?;
/// assert_eq!(second.status(), 429);
/// assert_eq!(second.headers()["retry-after"], "60");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    responder: Responder,
}

impl RateLimitLayer {
    /// A layer deciding with `limiter` and answering refusals with the defaults.
    pub fn new(limiter: RateLimiter) -> Self {
        RateLimitLayer {
            limiter,
            responder: Responder::default(),
        }
    }

    /// Answer your way (headers are still added).
    pub fn responder(mut self, responder: Responder) -> Self {
        self.responder = responder;
        self
    }

    /// The earlier name of [`responder`](Self::responder).
    #[deprecated(since = "0.2.0", note = "renamed to `responder`")]
    pub fn rejections(self, responder: Responder) -> Self {
        self.responder(responder)
    }

    /// Which rate-limit headers to send.
    pub fn headers(mut self, style: HeaderStyle) -> Self {
        self.responder = self.responder.headers(style);
        self
    }

    /// The limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.limiter.clone(), self.responder.clone())
    }
}
