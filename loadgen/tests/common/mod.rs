//! Real HTTP servers on 127.0.0.1:0 for the loadgen's integration tests.
//!
//! Each server counts what it receives, so tests can compare the loadgen's own report with
//! what actually arrived. All traffic in these tests stays on the loopback interface.

#![allow(dead_code, unreachable_pub)] // Each test binary uses a different subset.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::{any, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tollgate_loadgen::config::Config;

/// What a server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Requests received.
    pub hits: AtomicU64,
    /// When each arrived.
    pub times: Mutex<Vec<Instant>>,
    /// `method path key-header` of each request (proxy tests).
    pub requests: Mutex<Vec<String>>,
}

impl Seen {
    fn note(&self) -> u64 {
        self.times.lock().expect("test lock").push(Instant::now());
        self.hits.fetch_add(1, Ordering::SeqCst)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn times(&self) -> Vec<Instant> {
        self.times.lock().expect("test lock").clone()
    }
}

/// A running test server.
pub struct Server {
    pub url: String,
    pub seen: Arc<Seen>,
}

async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr: SocketAddr = listener.local_addr().expect("bound address");
    // The server lives as long as the test's runtime.
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// Answers every request with `status`, after `delay`.
pub async fn status_server(status: StatusCode, delay: Duration) -> Server {
    let seen = Arc::new(Seen::default());
    let router = Router::new()
        .fallback(any(move |State(seen): State<Arc<Seen>>| async move {
            seen.note();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            (status, "ok")
        }))
        .with_state(Arc::clone(&seen));
    Server {
        url: serve(router).await,
        seen,
    }
}

/// Answers 200.
pub async fn ok_server() -> Server {
    status_server(StatusCode::OK, Duration::ZERO).await
}

/// Answers 200, 429, 200, 429, ... in arrival order.
pub async fn alternating_server() -> Server {
    let seen = Arc::new(Seen::default());
    let router = Router::new()
        .fallback(any(|State(seen): State<Arc<Seen>>| async move {
            if seen.note() % 2 == 0 {
                StatusCode::OK
            } else {
                StatusCode::TOO_MANY_REQUESTS
            }
        }))
        .with_state(Arc::clone(&seen));
    Server {
        url: serve(router).await,
        seen,
    }
}

/// Answers 500 to the first request and 200 to every later one: one failure per run.
pub async fn first_fails_server() -> Server {
    let seen = Arc::new(Seen::default());
    let router = Router::new()
        .fallback(any(|State(seen): State<Arc<Seen>>| async move {
            if seen.note() == 0 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }))
        .with_state(Arc::clone(&seen));
    Server {
        url: serve(router).await,
        seen,
    }
}

/// Records `method path header-value` for every request and answers 200.
pub async fn recording_server(header: &'static str) -> Server {
    let seen = Arc::new(Seen::default());
    let router =
        Router::new()
            .fallback(any(
                move |State(seen): State<Arc<Seen>>,
                      method: Method,
                      uri: Uri,
                      headers: HeaderMap| async move {
                    seen.note();
                    let key = headers
                        .get(header)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    seen.requests
                        .lock()
                        .expect("test lock")
                        .push(format!("{method} {uri} {key}"));
                    StatusCode::OK
                },
            ))
            .with_state(Arc::clone(&seen));
    Server {
        url: serve(router).await,
        seen,
    }
}

/// A base URL on which nothing listens: connections are refused.
pub async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound address");
    drop(listener);
    format!("http://{addr}")
}

/// Per-key fixed-window counters, as a real limiter would keep them.
#[derive(Debug, Default)]
pub struct FixedWindowStore {
    windows: Mutex<HashMap<String, (u64, u64)>>,
}

#[derive(serde::Deserialize)]
struct CheckRequest {
    key: String,
    limit: u64,
    window_ms: u64,
}

/// A fake decision API: `POST /check` with a fixed window per key, epoch-aligned, kept in `store`.
/// Servers sharing a store share one limit; servers with their own stores do not.
pub async fn check_server(store: Arc<FixedWindowStore>) -> Server {
    let seen = Arc::new(Seen::default());
    let state = (Arc::clone(&seen), store);
    let router = Router::new()
        .route(
            "/check",
            post(|State((seen, store)): State<(Arc<Seen>, Arc<FixedWindowStore>)>, Json(req): Json<CheckRequest>| async move {
                seen.note();
                let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64;
                let window = now_ms / req.window_ms;
                let mut windows = store.windows.lock().expect("test lock");
                let entry = windows.entry(req.key).or_insert((window, 0));
                if entry.0 != window {
                    *entry = (window, 0);
                }
                let allowed = entry.1 < req.limit;
                if allowed {
                    entry.1 += 1;
                }
                let body = serde_json::json!({
                    "allowed": allowed,
                    "limit": req.limit,
                    "remaining": req.limit - entry.1,
                    "reset_ms": (window + 1) * req.window_ms - now_ms,
                    "retry_after_ms": if allowed { 0 } else { (window + 1) * req.window_ms - now_ms },
                });
                let status = if allowed { StatusCode::OK } else { StatusCode::TOO_MANY_REQUESTS };
                (status, Json(body))
            }),
        )
        .with_state(state);
    Server {
        url: serve(router).await,
        seen,
    }
}

/// A config for `targets` with bursts off, quiet stats, and `extra` flags on top.
pub fn config(targets: &[&str], extra: &[&str]) -> Config {
    let joined = targets.join(",");
    let mut args = vec![
        "tollgate-loadgen",
        "--targets",
        &joined,
        "--burst-enabled",
        "false",
        "--stats-interval",
        "1000",
        "--progress",
        "never",
    ];
    args.extend_from_slice(extra);
    Config::parse_from(args).expect("test config is valid")
}

/// Answers 200 with `Connection: close`, so every connection carries one request and the
/// loadgen must notice the close and reconnect.
pub async fn closing_server() -> Server {
    let seen = Arc::new(Seen::default());
    let router = Router::new()
        .fallback(any(|State(seen): State<Arc<Seen>>| async move {
            seen.note();
            (
                StatusCode::OK,
                [(axum::http::header::CONNECTION, "close")],
                "bye",
            )
        }))
        .with_state(Arc::clone(&seen));
    Server {
        url: serve(router).await,
        seen,
    }
}
