//! Rate, round-robin spread, burst phases and the periodic lines, against real servers.
//!
//! Open-loop scheduling makes the number of requests a run sends a pure function of the
//! schedule, so counts are asserted exactly; only wall-clock measurements get a tolerance.

mod common;

use std::future::pending;
use std::time::{Duration, Instant};

use common::{config, ok_server};
use tollgate_loadgen::console::Console;
use tollgate_loadgen::schedule::Phase;
use tollgate_loadgen::summary::StopCause;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_is_held_and_targets_are_used_round_robin() {
    let servers = [ok_server().await, ok_server().await, ok_server().await];
    let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
    let cfg = config(&urls, &["--rps", "300", "--duration", "2"]);

    let began = Instant::now();
    let summary = tollgate_loadgen::run(cfg, Console::capture().0, pending()).await;
    let wall = began.elapsed();

    assert_eq!(summary.stopped_by, StopCause::Duration);
    assert_eq!(
        summary.requests, 600,
        "300 rps for 2 s schedules exactly 600 requests"
    );
    assert_eq!(summary.admitted, 600);
    assert_eq!(summary.failed, 0);
    for (server, target) in servers.iter().zip(&summary.per_target) {
        assert_eq!(
            server.seen.hits(),
            200,
            "round-robin gives each of 3 targets a third"
        );
        assert_eq!(target.requests, 200);
        assert_eq!(target.admitted, 200);
    }
    assert!(
        (1.95..2.2).contains(&(summary.issue_window_ms / 1000.0)),
        "{summary:?}"
    );
    assert!(
        wall >= Duration::from_secs(2) && wall < Duration::from_secs(4),
        "{wall:?}"
    );
    let rate_error = (summary.send_rps - 300.0).abs() / 300.0;
    assert!(
        rate_error < 0.03,
        "send rate {} is not within 3% of 300",
        summary.send_rps
    );
    assert!(
        (summary.achieved_rps - 300.0).abs() / 300.0 < 0.05,
        "achieved {}",
        summary.achieved_rps
    );

    // Arrivals as the servers saw them: the first second holds about a second's worth.
    let mut times: Vec<Instant> = servers.iter().flat_map(|s| s.seen.times()).collect();
    times.sort();
    let first = times[0];
    let in_first_second = times
        .iter()
        .filter(|t| t.duration_since(first) < Duration::from_secs(1))
        .count();
    assert!(
        (270..=330).contains(&in_first_second),
        "{in_first_second} arrivals in the first second"
    );
    assert_eq!(summary.latency_ms.count, 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_start_and_end_on_schedule() {
    let server = ok_server().await;
    let cfg = config(
        &[&server.url],
        &[
            "--rps",
            "50",
            "--duration",
            "2.2",
            "--burst-enabled",
            "true",
            "--burst-multiplier",
            "4",
            "--burst-duration",
            "0.5",
            "--burst-interval",
            "1",
            "--stats-interval",
            "0.5",
        ],
    );
    let (console, lines) = Console::capture();
    let summary = tollgate_loadgen::run(cfg, console, pending()).await;

    // Λ(2.2 s) = 50·2.2 + 150·(0.5 + 0.2) = 215: steady 50/s plus 150/s extra in bursts.
    assert_eq!(summary.requests, 215);
    assert_eq!(server.seen.hits(), 215);
    let phases: Vec<(f64, Phase)> = summary.phases.iter().map(|p| (p.at_ms, p.phase)).collect();
    assert_eq!(
        phases,
        [
            (1000.0, Phase::Burst),
            (1500.0, Phase::Steady),
            (2000.0, Phase::Burst)
        ]
    );

    // The burst is visible at the server: 100 requests in [1.0, 1.5) against 25 in a steady half-second.
    let times = server.seen.times();
    let first = times[0];
    let between = |a: u64, b: u64| {
        times
            .iter()
            .filter(|t| {
                (Duration::from_millis(a)..Duration::from_millis(b))
                    .contains(&t.duration_since(first))
            })
            .count()
    };
    let burst = between(1000, 1500);
    let steady = between(400, 900);
    assert!(
        (85..=115).contains(&burst),
        "{burst} requests in the burst half-second"
    );
    assert!(
        (18..=32).contains(&steady),
        "{steady} requests in a steady half-second"
    );

    let lines = lines.lock().expect("test lock").clone();
    let modes: Vec<&str> = lines
        .iter()
        .filter_map(|l| {
            if l.starts_with("BURST MODE") {
                Some("burst")
            } else if l.starts_with("STEADY MODE") {
                Some("steady")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(modes, ["burst", "steady", "burst"], "{lines:#?}");
    let stats: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("Requests: "))
        .collect();
    assert!(
        (4..=5).contains(&stats.len()),
        "one stats line per 0.5 s: {lines:#?}"
    );
    for line in stats {
        let fields: Vec<&str> = line
            .split(" | ")
            .map(|f| f.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            fields,
            ["Requests", "Success", "Failed", "Blocked", "RPS", "p50", "p99"],
            "{line}"
        );
    }
}
