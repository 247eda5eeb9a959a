//! The binary as a user runs it: exit codes, environment handling, SIGTERM and `--json`.
//!
//! Each child gets a cleared environment, so variables set on the machine running the tests
//! cannot change what is being tested.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{first_fails_server, ok_server, status_server};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-loadgen");

fn loadgen(env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn output(env: &[(&str, &str)], args: &[&str]) -> Output {
    loadgen(env, args)
        .output()
        .expect("the loadgen binary runs")
}

#[test]
fn bad_env_value_exits_64_naming_the_variable() {
    let out = output(&[("RPS", "lots")], &[]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("RPS") && stderr.contains("lots"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing is started on a bad config");
}

#[test]
fn bad_flag_value_exits_64_naming_the_variable() {
    let out = output(&[], &["--keys", "zipf:0:1.0"]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("KEYS") && stderr.contains("--keys"),
        "{stderr}"
    );

    let out = output(&[("BURST_ENABLED", "sometimes")], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BURST_ENABLED"));
}

#[test]
fn unknown_flag_exits_64_and_help_exits_0() {
    let out = output(&[], &["--frobnicate"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--frobnicate"),
        "the message names the flag"
    );
    assert!(out.stdout.is_empty(), "nothing is started on a usage error");
    assert_eq!(
        output(&[("MAX_FAILED_PERCENT", "200")], &[]).status.code(),
        Some(64)
    );
    let help = output(&[], &["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("[env: RPS=]") && text.contains("--max-in-flight"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_config_runs_to_its_duration_and_writes_json() {
    let server = ok_server().await;
    let dir = std::env::temp_dir().join(format!("loadgen-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join("summary.json");
    let json_arg = json.to_string_lossy().into_owned();
    let env = [
        ("TARGETS", server.url.as_str()),
        ("RPS", "40"),
        ("DURATION", "0.5"),
        ("BURST_ENABLED", "false"),
        ("KEYS", "fixed:4"),
    ];
    let mut cmd = loadgen(&env, &["--json", &json_arg]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("runs");

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("=== Summary ===") && stdout.contains("duration reached"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Requests: 20 | Success: 20 | Failed: 0 | Blocked: 0"),
        "{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written"))
            .expect("valid JSON");
    assert_eq!(summary["requests"], 20);
    assert_eq!(summary["per_target"][0]["admitted"], 20);
    assert_eq!(
        summary["accuracy"]["keys"].as_u64().map(|k| k <= 4),
        Some(true)
    );
    assert_eq!(server.seen.hits(), 20);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_with_a_summary() {
    let server = ok_server().await;
    let env = [
        ("TARGETS", server.url.as_str()),
        ("RPS", "100"),
        ("DURATION", "0"),
        ("STATS_INTERVAL", "0.2"),
    ];
    let mut child = loadgen(&env, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let pid = child.id().to_string();
    let stdout = child.stdout.take().expect("piped stdout");

    let outcome = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        // Wait for a stats line, so the run is well under way when the signal arrives.
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let line = line.expect("utf-8 output");
            let started = line.starts_with("Requests: ");
            seen.push(line);
            if started {
                break;
            }
        }
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let signalled = Instant::now();
        seen.extend(lines.map(|l| l.expect("utf-8 output")));
        let status = child.wait().expect("child exits");
        (seen, status, signalled.elapsed())
    });
    let (lines, status, after_signal) = tokio::time::timeout(Duration::from_secs(15), outcome)
        .await
        .expect("the loadgen stops within 15 s of starting")
        .expect("join");

    assert_eq!(status.code(), Some(0), "{lines:#?}");
    assert!(
        after_signal < Duration::from_secs(3),
        "stopped promptly: {after_signal:?}"
    );
    let text = lines.join("\n");
    assert!(
        text.contains("=== Summary ===") && text.contains("stopped by signal"),
        "{text}"
    );
    assert!(text.contains("| Failed: 0 |"), "{text}");
    assert!(server.seen.hits() > 0);
}

/// Runs the binary to its end on a blocking thread, so the test's in-process server keeps
/// answering meanwhile.
async fn run_to_exit(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = loadgen(env, args);
    let run = tokio::task::spawn_blocking(move || cmd.output());
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("a 0.5 s run ends within 20 s")
        .expect("join")
        .expect("the loadgen binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_mode_answered_with_400_exits_1_saying_why() {
    // What the proxy port answers to POST /check: the documented mistake of issue 10.
    let server = status_server(StatusCode::BAD_REQUEST, Duration::ZERO).await;
    let env = [
        ("TARGETS", server.url.as_str()),
        ("MODE", "check"),
        ("RPS", "40"),
        ("DURATION", "0.5"),
        ("BURST_ENABLED", "false"),
    ];
    let out = run_to_exit(&env, &[]).await;

    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("=== Summary ===") && stdout.contains("| Failed: 20 |"),
        "the summary is still printed: {stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("tollgate-loadgen: run failed: 20 of 20 requests failed (100.00 %)")
            && last.contains("MAX_FAILED_PERCENT (--max-failed-percent)")
            && last.contains("statuses: 400=20")
            && last.contains("admin port"),
        "{stderr}"
    );
    assert_eq!(server.seen.hits(), 20);

    // A demo that breaks things on purpose relaxes the budget.
    let relaxed = [("MAX_FAILED_PERCENT", "100")];
    let out = run_to_exit(&[&env[..], &relaxed[..]].concat(), &[]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_within_the_budget_exit_0() {
    // 100 requests, the first answered 500: exactly 1 % failed, which the default allows.
    let server = first_fails_server().await;
    let env = [
        ("TARGETS", server.url.as_str()),
        ("RPS", "200"),
        ("DURATION", "0.5"),
        ("BURST_ENABLED", "false"),
    ];
    let out = run_to_exit(&env, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Requests: 100 | Success: 99 | Failed: 1 |"),
        "{out:?}"
    );

    // The same single failure is too many for a stricter budget given as a flag.
    let server = first_fails_server().await;
    let env = [
        ("TARGETS", server.url.as_str()),
        ("MAX_FAILED_PERCENT", "5"),
    ];
    let out = run_to_exit(
        &env,
        &[
            "--rps",
            "200",
            "--duration",
            "0.5",
            "--burst-enabled",
            "false",
            "--max-failed-percent",
            "0.5",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "the flag wins: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 of 100 requests failed (1.00 %), more than the 0.5 %"),
        "{stderr}"
    );
}
