//! Tollgate: distributed rate limiting as a tower [`Layer`](tower_layer::Layer).
//!
//! Add one layer to an axum router, a tonic server or any hyper service, and every
//! request is checked against per-key limits held in Redis (shared by every node) or
//! in process memory (the embedded default). Refused HTTP requests get `429` with
//! `Retry-After`, the IETF `RateLimit`/`RateLimit-Policy` headers and a problem+json
//! body; refused gRPC calls get `RESOURCE_EXHAUSTED`.
//!
//! ```
//! use tollgate::key::Key;
//! use tollgate::policy::{Limit, Policy};
//! use tollgate::{RateLimitLayer, RateLimiter};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = RateLimiter::builder()
//!     .policy(
//!         Policy::new("api")
//!             .path_prefix("/api")
//!             .limit(Limit::new("per-second", "10/s,burst=20".parse()?, Key::header("x-api-key")))
//!             .limit(Limit::new("per-day", "10000/d".parse()?, Key::header("x-api-key"))),
//!     )
//!     .build()?;
//! let app = axum::Router::<()>::new().layer(RateLimitLayer::new(limiter));
//! # let _ = app; Ok(()) }
//! ```
//!
//! [`RateLimitLayer`] and [`RateLimit`] share their names with
//! `tower::limit::{RateLimitLayer, RateLimit}`, a different thing: tower's delays
//! requests to a fixed rate for one service in one process (back-pressure), Tollgate's
//! decides per key against a shared store and answers refusals with `429`.
//!
//! # Layout
//!
//! Each module is one idea; a module uses only those above it in this list.
//!
//! - [`clock`]: wall-clock sources, including a manual one for tests.
//! - [`algorithm`]: GCRA, sliding window and fixed window as pure integer functions.
//! - [`store`]: where state lives — [`store::MemoryStore`] and, with the `redis`
//!   feature (on by default), `store::RedisStore` (one atomic Lua script per decision,
//!   clocked by the Redis server). Anyone can write a store: see [`store`].
//! - [`key`]: which bucket a request counts against (headers, peer IP, client IP behind
//!   trusted proxies, method, path, constants, tuples, closures).
//! - [`policy`]: which limits apply to a request, its cost, missing-key behaviour.
//! - [`limiter`]: the decision engine — deny cache, circuit breaker, timeout, failure
//!   modes, metrics.
//! - [`response`]: the HTTP/gRPC mapping of decisions (statuses, headers, bodies).
//! - [`layer`]: the tower `Layer`, `Service`, `ResponseFuture` and body.
//! - `testing` (feature `testing`): the conformance suite a new store proves itself with.
//!
//! The design — algorithms, the Lua script, the clock, failure modes and what can be
//! over-admitted when — is in `docs/design.md`; metrics in `docs/metrics.md`.
//!
//! # Features
//!
//! - `redis` (default): `store::RedisStore`. Without it redis-rs is not compiled.
//! - `redis-tls`: `rediss://` URLs and `store::RedisTls` (private CA, mutual TLS),
//!   through redis-rs' rustls support with the `ring` provider: no OpenSSL, no C crypto
//!   build. Without it rustls is not compiled.
//! - `axum`, `tonic`: recognise their connection info as the peer address.
//! - `testing`: `tollgate::testing`, the store conformance suite.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod algorithm;
pub mod clock;
pub mod key;
pub mod layer;
pub mod limiter;
pub mod policy;
pub mod response;
pub mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use algorithm::{Algorithm, LimitSpec, SpecError};
pub use clock::{Clock, ManualClock, MonotonicClock, SystemClock};
pub use layer::{RateLimit, RateLimitLayer};
pub use limiter::{
    describe_metrics, BuildError, Decision, DecisionKind, FailureMode, LeaseConfig, RateLimiter,
    RateLimiterBuilder, UnknownFailureMode,
};
