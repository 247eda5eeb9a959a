//! The admin server: a separate port for operators and orchestrators.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /health` | `200 ok` while the process runs (liveness) |
//! | `GET /ready` | `200` when serving: not shutting down, and the store answers a ping or the failure mode allows serving without it (`open`, `local`); else `503` |
//! | `GET /metrics` | Prometheus text: every series of the process (the limiter's and the proxy's), each labelled `node`; `404` with a message when metrics go to the application's own recorder |
//! | `GET /config` | the effective configuration as JSON, Redis password redacted |
//! | `POST /check` | the decision API (see [`check`]) |

pub mod check;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
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
        .route("/config", get(config))
        .route("/check", post(check::check))
        .with_state(state)
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
    let ready = reachable || limiter.failure_mode() != FailureMode::Closed;
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
            "store_error": store.err().map(|e| e.to_string()),
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
