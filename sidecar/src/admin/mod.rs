//! The admin server: a separate port for operators and orchestrators.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /health` | `200 ok` while the process runs (liveness) |
//! | `GET /ready` | `200` when serving: not shutting down, and the store answers a ping or the failure mode allows serving without it (`open`, `local`) — except for a misconfiguration (`auth`, `tls`: a wrong password, a certificate that does not verify), which no failure mode waits out; else `503`. The JSON names the error's `kind` and reason |
//! | `GET /metrics` | Prometheus text: every series of the process (the limiter's and the proxy's), each labelled `node`; `404` with a message when metrics go to the application's own recorder |
//! | `GET /config` | the effective configuration as JSON, secrets redacted |
//! | `POST /check` | the decision API (see [`check`]) |
//!
//! With `admin_token_file` set, `GET /config` and `POST /check` require
//! `Authorization: Bearer <token>` (compared in constant time; `401` problem+json
//! otherwise); `/health`, `/ready` and `/metrics` stay open for probes and Prometheus.
//! The token is read from the configuration in force, so a reload rotates it.

pub mod check;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tollgate::store::StoreErrorKind;
use tollgate::FailureMode;

use crate::runtime::Shared;
use crate::telemetry::Exposition;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// The current runtime.
    pub runtime: Shared,
    /// What `/metrics` renders.
    pub metrics: Exposition,
    /// Cleared when shutdown begins, so `/ready` turns 503 before the drain.
    pub serving: Arc<AtomicBool>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .merge(
            Router::new()
                .route("/config", get(config))
                .route("/check", post(check::check))
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    require_token,
                )),
        )
        .with_state(state)
}

/// Lets a request through when no token is configured or it carries the token.
async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let runtime = state.runtime.load_full();
    let Some(token) = &runtime.config.admin_token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    if presented.is_some_and(|p| token.matches(p)) {
        return next.run(request).await;
    }
    let body = json!({
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "this endpoint requires Authorization: Bearer <token> (the sidecar's admin_token_file)",
    });
    (
        StatusCode::UNAUTHORIZED,
        [
            (axum::http::header::CONTENT_TYPE, "application/problem+json"),
            (axum::http::header::WWW_AUTHENTICATE, "Bearer"),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    if !state.serving.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": "shutting down"})),
        );
    }
    let runtime = state.runtime.load_full();
    let limiter = &runtime.limiter;
    let store = limiter.ping().await;
    let reachable = store.is_ok();
    // The ping's error, else that of the latest failed decision: a Redis user may be
    // allowed PING but not EVALSHA.
    let error = match &store {
        Err(e) => Some((e.kind(), e.to_string())),
        Ok(()) => limiter
            .last_store_error()
            .filter(|(kind, _)| matches!(kind, StoreErrorKind::Auth | StoreErrorKind::Tls))
            .map(|(kind, message)| (kind.as_str(), message)),
    };
    let kind = error.as_ref().map(|(kind, _)| *kind);
    // A wrong password, a missing permission or a certificate that does not verify does
    // not heal by itself: serving on the failure mode would hide it for as long as
    // nobody looks. Not ready, so that a rollout which brought it stops there.
    let misconfigured = matches!(kind, Some("auth" | "tls"));
    let ready = !misconfigured && (reachable || limiter.failure_mode() != FailureMode::Closed);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "store": limiter.store_kind(),
            "store_reachable": reachable,
            "store_error": error.as_ref().map(|(_, message)| message),
            "store_error_kind": kind,
            "failure_mode": format!("{:?}", limiter.failure_mode()).to_lowercase(),
        })),
    )
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    match state.metrics.render() {
        Some(text) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            text,
        ),
        None => (
            StatusCode::NOT_FOUND,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            "this sidecar records its metrics into the application's own `metrics` recorder \
             (Recorder::Application): they are exported wherever the application exports them\n"
                .to_owned(),
        ),
    }
}

async fn config(State(state): State<AdminState>) -> impl IntoResponse {
    Json(state.runtime.load().config.effective.clone())
}
