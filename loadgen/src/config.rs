//! Validated configuration: every raw string from [`crate::cli::Args`] becomes a typed value,
//! or a [`ConfigError`] that names the variable and flag at fault.
//!
//! All validation happens here, before anything binds a socket or sends a request, so a bad
//! value costs the user one clear message (and exit code 64 from `main`) instead of a
//! half-started run. Values that only matter in one mode (the proxy method, say) are still
//! validated, so a typo never waits for a mode switch to surface.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use http::{HeaderName, Method, Uri};

use crate::accuracy::{Algorithm, Policy};
use crate::cli::Args;
use crate::keys::KeyDist;
use crate::schedule::{BurstPlan, Schedule};

/// Highest steady rate accepted; far beyond what one process can send, so a larger value is a typo.
const MAX_RPS: f64 = 10_000_000.0;
/// Longest duration-like setting accepted (about 31 years), so `Duration::from_secs_f64` cannot overflow.
const MAX_SECONDS: f64 = 1e9;
/// Highest `MAX_IN_FLIGHT`; also keeps it within a tokio semaphore's permit range.
const MAX_IN_FLIGHT_CAP: u64 = 1_000_000;
/// Most connections per target; beyond this the machine runs out of ports first.
const MAX_CONNECTIONS: u64 = 60_000;

/// A configuration problem, reported before any traffic is sent.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line itself could not be parsed (unknown flag, missing value, `--help`).
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// A setting has a value that cannot be used.
    #[error("invalid {var} (--{flag}) {value:?}: {expected}")]
    Invalid {
        /// The environment variable that configures the setting.
        var: &'static str,
        /// The flag (without dashes) that configures the setting.
        flag: &'static str,
        /// The value as given.
        value: String,
        /// What a valid value looks like.
        expected: String,
    },
}

impl ConfigError {
    fn invalid(
        var: &'static str,
        flag: &'static str,
        value: &str,
        expected: impl fmt::Display,
    ) -> Self {
        ConfigError::Invalid {
            var,
            flag,
            value: value.to_owned(),
            expected: expected.to_string(),
        }
    }

    /// `true` when this is a `--help` or `--version` request rather than a mistake.
    pub fn is_informational(&self) -> bool {
        matches!(
            self,
            ConfigError::Usage(e) if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            )
        )
    }
}

/// What each request does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `POST {target}/check` with the decision-API JSON body.
    Check,
    /// A request through the sidecar to its upstream, with the key in a header.
    Proxy {
        /// Request method.
        method: Method,
        /// Path and query appended to each target's base URL.
        path: String,
        /// Header carrying the key.
        key_header: HeaderName,
    },
}

impl Mode {
    /// The mode's name as configured (`check` or `proxy`).
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Check => "check",
            Mode::Proxy { .. } => "proxy",
        }
    }
}

/// When to draw a progress bar instead of plain lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A bar when stdout is a terminal, plain lines otherwise (containers, CI).
    Auto,
    /// Always a bar.
    Always,
    /// Always plain lines.
    Never,
}

/// A fully validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URLs without a trailing slash, used round-robin in this order.
    pub targets: Vec<Target>,
    /// Arrival rates over time (steady rate and burst phases).
    pub schedule: Schedule,
    /// Stop issuing after this long; `None` runs until the shutdown signal.
    pub duration: Option<Duration>,
    /// What each request does.
    pub mode: Mode,
    /// How keys are drawn.
    pub keys: KeyDist,
    /// Prefix of every generated key.
    pub key_prefix: String,
    /// The limit sent in check mode and assumed by the accuracy report.
    pub policy: Policy,
    /// Time between stats lines.
    pub stats_interval: Duration,
    /// Bound on one request, from dispatch to the end of its body.
    pub request_timeout: Duration,
    /// Requests allowed in flight before new ones are counted as `overload` failures.
    pub max_in_flight: usize,
    /// Most keep-alive connections per target.
    pub connections: usize,
    /// How long a stop waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Progress display choice.
    pub progress: Progress,
    /// Where to write the JSON summary, if anywhere.
    pub json: Option<PathBuf>,
}

impl Config {
    /// Parses the command line (and the environment) and validates it.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Usage`] for a command line clap rejects (including `--help`), and
    /// [`ConfigError::Invalid`] naming the first setting whose value is unusable.
    pub fn parse_from<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Self::from_args(Args::try_parse_from(args)?)
    }

    /// Validates already-parsed raw settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first setting whose value is unusable.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let targets = parse_targets(&args.targets)?;
        let rate = positive_f64("RPS", "rps", &args.rps, MAX_RPS)?;
        let duration = seconds("DURATION", "duration", &args.duration, true)?;
        let burst_enabled = boolean("BURST_ENABLED", "burst-enabled", &args.burst_enabled)?;
        let multiplier = positive_f64(
            "BURST_MULTIPLIER",
            "burst-multiplier",
            &args.burst_multiplier,
            1e6,
        )?;
        let burst_duration = seconds(
            "BURST_DURATION",
            "burst-duration",
            &args.burst_duration,
            false,
        )?;
        let burst_interval = seconds(
            "BURST_INTERVAL",
            "burst-interval",
            &args.burst_interval,
            false,
        )?;
        // Bursts start every interval, so one lasting as long as the interval would never end.
        if burst_enabled && burst_duration >= burst_interval {
            return Err(ConfigError::invalid(
                "BURST_DURATION",
                "burst-duration",
                &args.burst_duration,
                format!(
                    "must be shorter than BURST_INTERVAL ({} s)",
                    args.burst_interval
                ),
            ));
        }
        if rate * multiplier > MAX_RPS {
            return Err(ConfigError::invalid(
                "BURST_MULTIPLIER",
                "burst-multiplier",
                &args.burst_multiplier,
                format!("RPS x BURST_MULTIPLIER must be at most {MAX_RPS}"),
            ));
        }
        let burst = burst_enabled.then_some(BurstPlan {
            multiplier,
            duration: burst_duration,
            interval: burst_interval,
        });

        let mode = parse_mode(&args)?;
        let keys = args
            .keys
            .parse::<KeyDist>()
            .map_err(|e| ConfigError::invalid("KEYS", "keys", &args.keys, e))?;
        // The prefix lands in a header value in proxy mode, so it must be a valid one.
        if http::HeaderValue::from_str(&args.key_prefix).is_err() {
            return Err(ConfigError::invalid(
                "KEY_PREFIX",
                "key-prefix",
                &args.key_prefix,
                "visible ASCII characters only",
            ));
        }

        let limit = positive_u64("LIMIT", "limit", &args.limit, u64::from(u32::MAX))?;
        let window_ms = positive_u64("WINDOW_MS", "window-ms", &args.window_ms, 1 << 40)?;
        let algorithm = args.algorithm.parse::<Algorithm>().map_err(|_| {
            ConfigError::invalid(
                "ALGORITHM",
                "algorithm",
                &args.algorithm,
                "gcra, sliding-window or fixed-window",
            )
        })?;
        let policy_burst = match &args.burst {
            Some(b) => positive_u64("BURST", "burst", b, u64::from(u32::MAX))?,
            None => limit,
        };

        let stats_interval = seconds(
            "STATS_INTERVAL",
            "stats-interval",
            &args.stats_interval,
            false,
        )?;
        let request_timeout = millis(
            "REQUEST_TIMEOUT_MS",
            "request-timeout-ms",
            &args.request_timeout_ms,
        )?;
        let drain_timeout = millis(
            "DRAIN_TIMEOUT_MS",
            "drain-timeout-ms",
            &args.drain_timeout_ms,
        )?;
        let max_in_flight = positive_u64(
            "MAX_IN_FLIGHT",
            "max-in-flight",
            &args.max_in_flight,
            MAX_IN_FLIGHT_CAP,
        )?;
        let connections = positive_u64(
            "CONNECTIONS",
            "connections",
            &args.connections,
            MAX_CONNECTIONS,
        )?;
        let progress = match args.progress.trim().to_ascii_lowercase().as_str() {
            "auto" => Progress::Auto,
            "always" => Progress::Always,
            "never" => Progress::Never,
            _ => {
                return Err(ConfigError::invalid(
                    "PROGRESS",
                    "progress",
                    &args.progress,
                    "auto, always or never",
                ))
            }
        };

        Ok(Config {
            targets,
            schedule: Schedule::new(rate, burst),
            duration: (duration > 0.0).then(|| Duration::from_secs_f64(duration)),
            mode,
            keys,
            key_prefix: args.key_prefix,
            policy: Policy {
                algorithm,
                limit,
                window_ms,
                burst: policy_burst,
            },
            stats_interval: Duration::from_secs_f64(stats_interval),
            request_timeout,
            max_in_flight: usize::try_from(max_in_flight).unwrap_or(usize::MAX),
            connections: usize::try_from(connections).unwrap_or(usize::MAX),
            drain_timeout,
            progress,
            json: args.json.map(PathBuf::from),
        })
    }
}

/// One validated target: what `TARGETS` named, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The base URL as given, without a trailing `/` (for reports).
    pub base: String,
    /// `host:port` as written, for the `Host` header.
    pub authority: http::uri::Authority,
    /// The host to dial (IPv6 literals without their brackets).
    pub host: String,
    /// The port to dial (80 when omitted).
    pub port: u16,
}

fn parse_targets(raw: &str) -> Result<Vec<Target>, ConfigError> {
    let bad = |expected: String| ConfigError::invalid("TARGETS", "targets", raw, expected);
    let mut targets = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let uri: Uri = part
            .parse()
            .map_err(|e| bad(format!("{part:?} is not a URL ({e})")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad(format!(
                "{part:?} must start with http:// (TLS is not supported)"
            )));
        }
        let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
            return Err(bad(format!("{part:?} has no host")));
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(format!(
                "{part:?} must be a base URL without a path or query"
            )));
        }
        targets.push(Target {
            base: part.trim_end_matches('/').to_owned(),
            authority: authority.clone(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri.port_u16().unwrap_or(80),
        });
    }
    if targets.is_empty() {
        return Err(bad("at least one base URL, comma-separated".into()));
    }
    Ok(targets)
}

fn parse_mode(args: &Args) -> Result<Mode, ConfigError> {
    let method = Method::from_bytes(args.method.trim().as_bytes()).map_err(|_| {
        ConfigError::invalid(
            "REQUEST_METHOD",
            "method",
            &args.method,
            "an HTTP method such as GET",
        )
    })?;
    let path = args.path.trim();
    // Parse a full URL now so every request URI built later is known to be valid.
    if !path.starts_with('/') || format!("http://h{path}").parse::<Uri>().is_err() {
        return Err(ConfigError::invalid(
            "REQUEST_PATH",
            "path",
            &args.path,
            "a path starting with '/'",
        ));
    }
    let key_header = HeaderName::from_bytes(args.key_header.trim().as_bytes()).map_err(|_| {
        ConfigError::invalid(
            "KEY_HEADER",
            "key-header",
            &args.key_header,
            "a valid header name",
        )
    })?;
    match args.mode.trim().to_ascii_lowercase().as_str() {
        "check" => Ok(Mode::Check),
        "proxy" => Ok(Mode::Proxy {
            method,
            path: path.to_owned(),
            key_header,
        }),
        _ => Err(ConfigError::invalid(
            "MODE",
            "mode",
            &args.mode,
            "check or proxy",
        )),
    }
}

fn positive_f64(
    var: &'static str,
    flag: &'static str,
    raw: &str,
    max: f64,
) -> Result<f64, ConfigError> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= max => Ok(v),
        _ => Err(ConfigError::invalid(
            var,
            flag,
            raw,
            format!("a number greater than 0 and at most {max}"),
        )),
    }
}

/// Seconds as a decimal number; `allow_zero` for settings where 0 has a meaning.
fn seconds(
    var: &'static str,
    flag: &'static str,
    raw: &str,
    allow_zero: bool,
) -> Result<f64, ConfigError> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v <= MAX_SECONDS && (v > 0.0 || (allow_zero && v == 0.0)) => {
            Ok(v)
        }
        _ if allow_zero => Err(ConfigError::invalid(
            var,
            flag,
            raw,
            "a number of seconds, 0 or more",
        )),
        _ => Err(ConfigError::invalid(
            var,
            flag,
            raw,
            "a number of seconds greater than 0",
        )),
    }
}

fn millis(var: &'static str, flag: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    // A day is far beyond any sensible timeout and keeps arithmetic on deadlines safe.
    positive_u64(var, flag, raw, 86_400_000).map(Duration::from_millis)
}

fn positive_u64(
    var: &'static str,
    flag: &'static str,
    raw: &str,
    max: u64,
) -> Result<u64, ConfigError> {
    match raw.trim().parse::<u64>() {
        Ok(v) if v > 0 && v <= max => Ok(v),
        _ => Err(ConfigError::invalid(
            var,
            flag,
            raw,
            format!("a whole number from 1 to {max}"),
        )),
    }
}

fn boolean(var: &'static str, flag: &'static str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::invalid(var, flag, raw, "true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut args = vec!["tollgate-loadgen"];
        args.extend_from_slice(extra);
        Config::parse_from(args)
    }

    fn invalid_var(result: Result<Config, ConfigError>) -> &'static str {
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
        assert_eq!(
            bases(&c),
            [
                "http://sidecar-1:8000",
                "http://sidecar-2:8000",
                "http://sidecar-3:8000"
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
}
