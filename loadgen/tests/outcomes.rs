//! Classification of answers and failures, overload, proxy mode and stopping, against real servers.

mod common;

use std::future::pending;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{
    alternating_server, closed_port, closing_server, config, ok_server, recording_server,
    status_server,
};
use tollgate_loadgen::console::Console;
use tollgate_loadgen::summary::StopCause;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_refused_connections_are_classified() {
    let ok = ok_server().await;
    let alternating = alternating_server().await;
    let broken = status_server(StatusCode::INTERNAL_SERVER_ERROR, Duration::ZERO).await;
    let refused = closed_port().await;
    let cfg = config(
        &[&ok.url, &alternating.url, &broken.url, &refused],
        &["--rps", "200", "--duration", "1"],
    );

    let s = tollgate_loadgen::run(cfg, Console::capture().0, pending()).await;

    assert_eq!(s.requests, 200);
    let per: Vec<(u64, u64, u64, u64)> = s
        .per_target
        .iter()
        .map(|t| (t.requests, t.admitted, t.blocked, t.failed))
        .collect();
    assert_eq!(
        per,
        [
            (50, 50, 0, 0),
            (50, 25, 25, 0),
            (50, 0, 0, 50),
            (50, 0, 0, 50)
        ]
    );
    assert_eq!(
        (s.success, s.admitted, s.blocked, s.failed),
        (100, 75, 25, 100)
    );
    assert_eq!(s.failures["status"], 50);
    assert_eq!(s.failures["connect"], 50);
    assert_eq!(s.statuses["200"], 75);
    assert_eq!(s.statuses["429"], 25);
    assert_eq!(s.statuses["500"], 50);
    // Every complete response has a latency, whatever its status; refused ones do not.
    assert_eq!(s.latency_ms.count, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_time_out() {
    let slow = status_server(StatusCode::OK, Duration::from_millis(600)).await;
    let cfg = config(
        &[&slow.url],
        &[
            "--rps",
            "20",
            "--duration",
            "0.5",
            "--request-timeout-ms",
            "100",
        ],
    );

    let s = tollgate_loadgen::run(cfg, Console::capture().0, pending()).await;

    assert_eq!(s.requests, 10);
    assert_eq!(s.failures["timeout"], 10);
    assert_eq!(s.failed, 10);
    assert_eq!(s.latency_ms.count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_fails_fast_and_never_slows_the_schedule() {
    let slow = status_server(StatusCode::OK, Duration::from_millis(800)).await;
    let cfg = config(
        &[&slow.url],
        &["--rps", "100", "--duration", "1", "--max-in-flight", "5"],
    );

    let began = Instant::now();
    let s = tollgate_loadgen::run(cfg, Console::capture().0, pending()).await;

    // All 100 were scheduled on time although only 5 could be outstanding at once.
    assert_eq!(s.requests, 100);
    assert!(s.issue_window_ms < 1100.0, "{}", s.issue_window_ms);
    assert_eq!(s.failures["overload"] + s.admitted, 100);
    assert!(s.failures["overload"] >= 85, "{:?}", s.failures);
    assert!(
        s.admitted >= 5,
        "the first five and those sent after slots freed up: {}",
        s.admitted
    );
    // The admitted ones waited for the slow server, and that shows in latency.
    assert!(s.latency_ms.min >= 790.0, "{:?}", s.latency_ms);
    assert!(began.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_mode_sends_method_path_and_key_header() {
    let server = recording_server("x-user").await;
    let cfg = config(
        &[&server.url],
        &[
            "--mode",
            "proxy",
            "--method",
            "POST",
            "--path",
            "/api/items?page=2",
            "--key-header",
            "x-user",
            "--keys",
            "fixed:3",
            "--key-prefix",
            "tenant-",
            "--rps",
            "100",
            "--duration",
            "0.3",
        ],
    );

    let s = tollgate_loadgen::run(cfg, Console::capture().0, pending()).await;

    assert_eq!(s.requests, 30);
    assert_eq!(s.admitted, 30);
    let seen = server.seen.requests.lock().expect("test lock").clone();
    assert_eq!(seen.len(), 30);
    for line in &seen {
        assert!(
            [
                "POST /api/items?page=2 tenant-0",
                "POST /api/items?page=2 tenant-1",
                "POST /api/items?page=2 tenant-2"
            ]
            .contains(&line.as_str()),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_signal_drains_in_flight_requests() {
    let slow = status_server(StatusCode::OK, Duration::from_millis(300)).await;
    let cfg = config(&[&slow.url], &["--rps", "50", "--duration", "0"]);
    let (console, lines) = Console::capture();

    let began = Instant::now();
    let s = tollgate_loadgen::run(
        cfg,
        console,
        tokio::time::sleep(Duration::from_millis(1000)),
    )
    .await;

    assert_eq!(s.stopped_by, StopCause::Signal);
    assert!(
        (49..=52).contains(&s.requests),
        "about 1 s at 50 rps: {}",
        s.requests
    );
    // Requests still in flight at the stop were waited for, not dropped.
    assert_eq!(s.failed, 0);
    assert_eq!(s.admitted, s.requests);
    assert!(
        began.elapsed() >= Duration::from_millis(1250),
        "drain waited for the last answers"
    );
    assert!(!lines
        .lock()
        .expect("test lock")
        .iter()
        .any(|l| l.starts_with("warning")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_runs_out_counts_the_rest_as_aborted() {
    let stuck = status_server(StatusCode::OK, Duration::from_secs(5)).await;
    let cfg = config(
        &[&stuck.url],
        &[
            "--rps",
            "20",
            "--duration",
            "0",
            "--drain-timeout-ms",
            "200",
        ],
    );
    let (console, lines) = Console::capture();

    let began = Instant::now();
    let s =
        tollgate_loadgen::run(cfg, console, tokio::time::sleep(Duration::from_millis(500))).await;

    assert!(
        began.elapsed() < Duration::from_secs(2),
        "the drain is bounded"
    );
    assert!((10..=11).contains(&s.requests), "{}", s.requests);
    assert_eq!(s.failures["aborted"], s.requests);
    assert_eq!(s.failed, s.requests);
    assert_eq!(s.per_target[0].failed, s.requests);
    assert!(lines
        .lock()
        .expect("test lock")
        .iter()
        .any(|l| l.starts_with("warning:") && l.contains("aborted")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_by_the_server_are_reopened() {
    let server = closing_server().await;
    let cfg = config(&[&server.url], &["--rps", "200", "--duration", "0.5"]);

    let s = tollgate_loadgen::run(cfg, Console::capture().0, pending()).await;

    assert_eq!(
        (s.requests, s.admitted, s.failed),
        (100, 100, 0),
        "{:?}",
        s.failures
    );
    assert_eq!(server.seen.hits(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_its_failure_budget_is_judged_failed() {
    let ok = ok_server().await;
    let refused = closed_port().await;
    // Half the requests are refused: far over the default 1 %, within a budget of 50 %.
    let cfg = config(&[&ok.url, &refused], &["--rps", "100", "--duration", "0.2"]);
    let mut budget = cfg.failure_budget.clone();

    let s = tollgate_loadgen::run(cfg, Console::capture().0, pending()).await;

    assert_eq!((s.requests, s.failed), (20, 10));
    let err = s.check_failures(&budget).expect_err("50 % failed");
    assert_eq!((err.failed, err.requests, err.percent), (10, 20, 50.0));
    assert!(err.detail.contains("connect=10"), "{err}");
    assert!(
        !err.detail.contains("admin port"),
        "no check-mode hint without 4xx answers: {err}"
    );
    budget.max_percent = 50.0;
    assert_eq!(s.check_failures(&budget), Ok(()));
}
