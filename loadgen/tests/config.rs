//! Configuration: parsing, defaults per mode, and errors that name the variable and the flag.
//!
//! These go through the public [`Config::parse_from`], as `main` does; the binary's exit codes
//! are covered in `cli.rs`.

use std::time::Duration;

use tollgate_loadgen::accuracy::{Algorithm, Policy};
use tollgate_loadgen::config::{Config, ConfigError, Mode};
use tollgate_loadgen::keys::KeyDist;

fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
    let mut args = vec!["tollgate-loadgen"];
    args.extend_from_slice(extra);
    Config::parse_from(args)
}

fn invalid_var(result: Result<Config, ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid { var, .. }) => var,
        other => panic!("expected an invalid-value error, got {other:?}"),
    }
}

fn bases(c: &Config) -> Vec<&str> {
    c.targets.iter().map(|t| t.base.as_str()).collect()
}

#[test]
fn targets_are_parsed_once_into_what_is_dialled() {
    let c = parse(&["--targets", "http://[::1]:9000/,http://app"]).expect("valid");
    assert_eq!(bases(&c), ["http://[::1]:9000", "http://app"]);
    assert_eq!(
        (c.targets[0].host.as_str(), c.targets[0].port),
        ("::1", 9000)
    );
    assert_eq!(c.targets[0].authority.as_str(), "[::1]:9000");
    assert_eq!((c.targets[1].host.as_str(), c.targets[1].port), ("app", 80));
}

#[test]
fn defaults_match_the_demo_contract() {
    let c = parse(&[]).expect("defaults are valid");
    // Check mode is the default, and POST /check lives on the sidecars' admin port.
    assert_eq!(
        bases(&c),
        [
            "http://sidecar-1:9000",
            "http://sidecar-2:9000",
            "http://sidecar-3:9000"
        ]
    );
    assert_eq!(c.schedule.rate(), 10.0);
    assert_eq!(c.duration, None);
    let burst = c.schedule.burst().expect("bursts are on by default");
    assert_eq!(
        (burst.multiplier, burst.duration, burst.interval),
        (5.0, 5.0, 30.0)
    );
    assert_eq!(c.mode, Mode::Check);
    assert_eq!(c.keys, KeyDist::Fixed(10));
    assert_eq!(
        c.policy,
        Policy {
            algorithm: Algorithm::Gcra,
            limit: 100,
            window_ms: 60_000,
            burst: 100
        }
    );
    assert_eq!(c.stats_interval, Duration::from_secs(10));
    assert_eq!(c.request_timeout, Duration::from_millis(2000));
    assert_eq!(c.max_in_flight, 10_000);
    assert_eq!(c.connections, 256);
    assert_eq!(c.failure_budget.max_percent, 1.0);
    assert_eq!(
        c.failure_budget.setting,
        "MAX_FAILED_PERCENT (--max-failed-percent)"
    );
}

#[test]
fn default_targets_follow_the_mode() {
    let check = parse(&["--mode", "check"]).expect("valid");
    assert_eq!(
        bases(&check),
        [
            "http://sidecar-1:9000",
            "http://sidecar-2:9000",
            "http://sidecar-3:9000"
        ]
    );
    let proxy = parse(&["--mode", "proxy"]).expect("valid");
    assert_eq!(
        bases(&proxy),
        [
            "http://sidecar-1:8000",
            "http://sidecar-2:8000",
            "http://sidecar-3:8000"
        ]
    );
    // Given targets are used as they are, whatever the mode.
    let given = parse(&["--mode", "proxy", "--targets", "http://127.0.0.1:9000"]).expect("valid");
    assert_eq!(bases(&given), ["http://127.0.0.1:9000"]);
}

#[test]
fn failure_budget_is_a_percentage() {
    for (raw, want) in [("0", 0.0), ("2.5", 2.5), (" 100 ", 100.0)] {
        let c = parse(&["--max-failed-percent", raw]).expect("valid percentage");
        assert_eq!(c.failure_budget.max_percent, want);
    }
    for bad in ["-1", "100.5", "NaN", "lots", ""] {
        assert_eq!(
            invalid_var(parse(&["--max-failed-percent", bad])),
            "MAX_FAILED_PERCENT",
            "{bad:?}"
        );
    }
}

#[test]
fn every_setting_has_one_variable_and_one_flag() {
    use clap::CommandFactory;
    let command = tollgate_loadgen::cli::Args::command();
    let mut vars = std::collections::BTreeSet::new();
    for arg in command.get_arguments() {
        let var = arg.get_env().map(|v| v.to_string_lossy().into_owned());
        assert!(
            var.is_some() && arg.get_long().is_some(),
            "{}",
            arg.get_id()
        );
        assert!(vars.insert(var), "{} reuses a variable", arg.get_id());
    }
}

#[test]
fn flags_are_parsed_and_normalised() {
    let c = parse(&[
        "--targets",
        " http://127.0.0.1:1/ ,http://127.0.0.1:2",
        "--rps",
        "250.5",
        "--duration",
        "1.5",
        "--burst-enabled",
        "off",
        "--mode",
        "proxy",
        "--method",
        "post",
        "--path",
        "/api/items?x=1",
        "--keys",
        "zipf:50:1.1",
        "--algorithm",
        "fixed-window",
        "--burst",
        "7",
    ])
    .expect("valid flags");
    assert_eq!(bases(&c), ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
    assert_eq!(c.schedule.rate(), 250.5);
    assert!(c.schedule.burst().is_none());
    assert_eq!(c.duration, Some(Duration::from_millis(1500)));
    match &c.mode {
        // Method names are case-sensitive in HTTP; `post` is an extension method, not POST.
        Mode::Proxy {
            method,
            path,
            key_header,
        } => {
            assert_eq!(method.as_str(), "post");
            assert_eq!(path, "/api/items?x=1");
            assert_eq!(key_header.as_str(), "x-api-key");
        }
        Mode::Check => panic!("expected proxy mode"),
    }
    assert_eq!(c.keys, KeyDist::Zipf { n: 50, s: 1.1 });
    assert_eq!(c.policy.algorithm, Algorithm::FixedWindow);
    assert_eq!(c.policy.burst, 7);
}

#[test]
fn bad_values_name_their_variable() {
    assert_eq!(invalid_var(parse(&["--rps", "fast"])), "RPS");
    assert_eq!(invalid_var(parse(&["--rps", "0"])), "RPS");
    assert_eq!(invalid_var(parse(&["--rps", "NaN"])), "RPS");
    assert_eq!(invalid_var(parse(&["--duration", "-1"])), "DURATION");
    assert_eq!(
        invalid_var(parse(&["--burst-enabled", "maybe"])),
        "BURST_ENABLED"
    );
    assert_eq!(
        invalid_var(parse(&["--burst-multiplier", "0"])),
        "BURST_MULTIPLIER"
    );
    assert_eq!(
        invalid_var(parse(&["--burst-duration", "30"])),
        "BURST_DURATION"
    );
    assert_eq!(
        invalid_var(parse(&["--burst-interval", "x"])),
        "BURST_INTERVAL"
    );
    assert_eq!(invalid_var(parse(&["--keys", "fixed:0"])), "KEYS");
    assert_eq!(invalid_var(parse(&["--keys", "zipf:10"])), "KEYS");
    assert_eq!(invalid_var(parse(&["--mode", "spray"])), "MODE");
    assert_eq!(invalid_var(parse(&["--targets", "ftp://x"])), "TARGETS");
    assert_eq!(
        invalid_var(parse(&["--targets", "http://x/api"])),
        "TARGETS"
    );
    assert_eq!(invalid_var(parse(&["--targets", " , "])), "TARGETS");
    assert_eq!(invalid_var(parse(&["--limit", "-5"])), "LIMIT");
    assert_eq!(invalid_var(parse(&["--window-ms", "0"])), "WINDOW_MS");
    assert_eq!(invalid_var(parse(&["--algorithm", "leaky"])), "ALGORITHM");
    assert_eq!(invalid_var(parse(&["--burst", "0"])), "BURST");
    assert_eq!(
        invalid_var(parse(&["--stats-interval", "0"])),
        "STATS_INTERVAL"
    );
    assert_eq!(
        invalid_var(parse(&["--request-timeout-ms", "1.5"])),
        "REQUEST_TIMEOUT_MS"
    );
    assert_eq!(
        invalid_var(parse(&["--max-in-flight", "0"])),
        "MAX_IN_FLIGHT"
    );
    assert_eq!(
        invalid_var(parse(&["--key-header", "bad header"])),
        "KEY_HEADER"
    );
    assert_eq!(invalid_var(parse(&["--path", "no-slash"])), "REQUEST_PATH");
    assert_eq!(invalid_var(parse(&["--progress", "sometimes"])), "PROGRESS");
    assert_eq!(
        invalid_var(parse(&["--key-prefix", "user\n"])),
        "KEY_PREFIX"
    );
    assert_eq!(invalid_var(parse(&["--method", "GE T"])), "REQUEST_METHOD");
    assert_eq!(
        invalid_var(parse(&["--drain-timeout-ms", "0"])),
        "DRAIN_TIMEOUT_MS"
    );
    assert_eq!(invalid_var(parse(&["--connections", "0"])), "CONNECTIONS");
    assert_eq!(
        invalid_var(parse(&["--rps", "100000", "--burst-multiplier", "1000"])),
        "BURST_MULTIPLIER"
    );
}

#[test]
fn messages_across_settings_use_their_names() {
    let err = parse(&["--burst-duration", "30"]).expect_err("invalid");
    let msg = err.to_string();
    assert!(
        msg.contains("BURST_DURATION (--burst-duration)") && msg.contains("BURST_INTERVAL"),
        "{msg}"
    );
    let err = parse(&["--rps", "100000", "--burst-multiplier", "1000"]).expect_err("invalid");
    assert!(err.to_string().contains("RPS x BURST_MULTIPLIER"), "{err}");
}

#[test]
fn burst_relationship_is_only_checked_when_bursts_are_on() {
    assert!(parse(&["--burst-enabled", "false", "--burst-duration", "60"]).is_ok());
}

#[test]
fn message_names_variable_and_flag() {
    let err = parse(&["--rps", "fast"]).expect_err("invalid");
    let msg = err.to_string();
    assert!(
        msg.contains("RPS") && msg.contains("--rps") && msg.contains("fast"),
        "{msg}"
    );
}

#[test]
fn help_is_informational() {
    assert!(parse(&["--help"]).expect_err("help").is_informational());
    assert!(!parse(&["--no-such-flag"])
        .expect_err("unknown")
        .is_informational());
}
