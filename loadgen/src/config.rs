//! Validated configuration: every raw string from [`crate::cli::Args`] becomes a typed value,
//! or a [`ConfigError`] that names the variable and flag at fault.
//!
//! All validation happens here, before anything binds a socket or sends a request, so a bad
//! value costs the user one clear message (and exit code 64 from `main`) instead of a
//! half-started run. Values that only matter in one mode (the proxy method, say) are still
//! validated, so a typo never waits for a mode switch to surface.
//!
//! Errors name settings from clap's metadata ([`clap::Arg::get_env`], [`clap::Arg::get_long`]),
//! so a variable or flag is renamed in one place, [`crate::cli::Args`], and the messages follow.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use http::{HeaderName, Method, Uri};

use crate::accuracy::{Algorithm, Policy};
use crate::cli::{Args, DEFAULT_CHECK_TARGETS, DEFAULT_PROXY_TARGETS};
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
        var: String,
        /// The flag (without dashes) that configures the setting.
        flag: String,
        /// The value as given.
        value: String,
        /// What a valid value looks like.
        expected: String,
    },
}

impl ConfigError {
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
    /// The targets used when `TARGETS` is not given: the compose demo's sidecars, on the port
    /// that serves this mode (admin for `check`, proxy for `proxy`).
    pub fn default_targets(&self) -> &'static str {
        match self {
            Mode::Check => DEFAULT_CHECK_TARGETS,
            Mode::Proxy { .. } => DEFAULT_PROXY_TARGETS,
        }
    }

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
    /// Above this share of failed requests the run counts as failed (exit 1).
    pub failure_budget: FailureBudget,
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
        // One command both parses and names the settings in errors.
        let mut command = Args::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let args = Args::from_arg_matches(&matches)?;
        Self::validate(args, &Names { command: &command })
    }

    /// Validates already-parsed raw settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first setting whose value is unusable.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        Self::validate(
            args,
            &Names {
                command: &Args::command(),
            },
        )
    }

    fn validate(args: Args, names: &Names<'_>) -> Result<Self, ConfigError> {
        let rate = positive_f64(names, "rps", &args.rps, MAX_RPS)?;
        let duration = seconds(names, "duration", &args.duration, true)?;
        let burst_enabled = boolean(names, "burst_enabled", &args.burst_enabled)?;
        let multiplier = positive_f64(names, "burst_multiplier", &args.burst_multiplier, 1e6)?;
        let burst_duration = seconds(names, "burst_duration", &args.burst_duration, false)?;
        let burst_interval = seconds(names, "burst_interval", &args.burst_interval, false)?;
        // Bursts start every interval, so one lasting as long as the interval would never end.
        if burst_enabled && burst_duration >= burst_interval {
            return Err(names.invalid(
                "burst_duration",
                &args.burst_duration,
                format!(
                    "must be shorter than {} ({} s)",
                    names.var("burst_interval"),
                    args.burst_interval
                ),
            ));
        }
        if rate * multiplier > MAX_RPS {
            return Err(names.invalid(
                "burst_multiplier",
                &args.burst_multiplier,
                format!(
                    "{} x {} must be at most {MAX_RPS}",
                    names.var("rps"),
                    names.var("burst_multiplier")
                ),
            ));
        }
        let burst = burst_enabled.then_some(BurstPlan {
            multiplier,
            duration: burst_duration,
            interval: burst_interval,
        });

        let mode = parse_mode(names, &args)?;
        // Check mode talks to the admin API and proxy mode to the proxy, which listen on
        // different ports: a default shared by both would be wrong for one of them.
        let targets = match &args.targets {
            Some(raw) => parse_targets(names, raw)?,
            None => parse_targets(names, mode.default_targets())?,
        };
        let keys = args
            .keys
            .parse::<KeyDist>()
            .map_err(|e| names.invalid("keys", &args.keys, e))?;
        // The prefix lands in a header value in proxy mode, so it must be a valid one.
        if http::HeaderValue::from_str(&args.key_prefix).is_err() {
            return Err(names.invalid(
                "key_prefix",
                &args.key_prefix,
                "visible ASCII characters only",
            ));
        }

        let limit = positive_u64(names, "limit", &args.limit, u64::from(u32::MAX))?;
        let window_ms = positive_u64(names, "window_ms", &args.window_ms, 1 << 40)?;
        let algorithm = args.algorithm.parse::<Algorithm>().map_err(|_| {
            names.invalid(
                "algorithm",
                &args.algorithm,
                "gcra, sliding-window or fixed-window",
            )
        })?;
        let policy_burst = match &args.burst {
            Some(b) => positive_u64(names, "burst", b, u64::from(u32::MAX))?,
            None => limit,
        };

        let stats_interval = seconds(names, "stats_interval", &args.stats_interval, false)?;
        let request_timeout = millis(names, "request_timeout_ms", &args.request_timeout_ms)?;
        let drain_timeout = millis(names, "drain_timeout_ms", &args.drain_timeout_ms)?;
        let max_in_flight = positive_u64(
            names,
            "max_in_flight",
            &args.max_in_flight,
            MAX_IN_FLIGHT_CAP,
        )?;
        let connections = positive_u64(names, "connections", &args.connections, MAX_CONNECTIONS)?;
        let progress = match args.progress.trim().to_ascii_lowercase().as_str() {
            "auto" => Progress::Auto,
            "always" => Progress::Always,
            "never" => Progress::Never,
            _ => return Err(names.invalid("progress", &args.progress, "auto, always or never")),
        };
        let max_failed_percent = match args.max_failed_percent.trim().parse::<f64>() {
            Ok(v) if (0.0..=100.0).contains(&v) => v,
            _ => {
                return Err(names.invalid(
                    "max_failed_percent",
                    &args.max_failed_percent,
                    "a percentage from 0 to 100",
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
            failure_budget: FailureBudget {
                max_percent: max_failed_percent,
                setting: names.setting("max_failed_percent"),
            },
        })
    }
}

/// How many failed requests a run may have and still exit 0.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureBudget {
    /// The most failed requests, as a percentage of all requests, that still pass (0 to 100).
    pub max_percent: f64,
    /// The setting that configures it, as `VAR (--flag)`, for the message when a run exceeds it.
    pub setting: String,
}

/// Names settings as the user configures them, from clap's own metadata: each variable and
/// flag is written once, in [`crate::cli::Args`], and validation refers to a setting by the
/// id clap gives its field (the field name).
struct Names<'a> {
    command: &'a clap::Command,
}

impl Names<'_> {
    /// The environment variable and the flag (without dashes) of the field `id`.
    fn of(&self, id: &str) -> (String, String) {
        let arg = self.command.get_arguments().find(|a| a.get_id() == id);
        // Every id passed here is a field of `Args`; the tests trigger each message, so a
        // misspelt id fails there. Release builds fall back to the id rather than panic.
        debug_assert!(arg.is_some(), "{id} is not a field of Args");
        let var = arg.and_then(|a| a.get_env()).map_or_else(
            || id.to_ascii_uppercase(),
            |v| v.to_string_lossy().into_owned(),
        );
        let flag = arg
            .and_then(|a| a.get_long())
            .map_or_else(|| id.replace('_', "-"), str::to_owned);
        (var, flag)
    }

    /// The environment variable of the field `id`.
    fn var(&self, id: &str) -> String {
        self.of(id).0
    }

    /// `VAR (--flag)` for the field `id`.
    fn setting(&self, id: &str) -> String {
        let (var, flag) = self.of(id);
        format!("{var} (--{flag})")
    }

    /// The error for an unusable `value` of the field `id`.
    fn invalid(&self, id: &str, value: &str, expected: impl fmt::Display) -> ConfigError {
        let (var, flag) = self.of(id);
        ConfigError::Invalid {
            var,
            flag,
            value: value.to_owned(),
            expected: expected.to_string(),
        }
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

fn parse_targets(names: &Names<'_>, raw: &str) -> Result<Vec<Target>, ConfigError> {
    let bad = |expected: String| names.invalid("targets", raw, expected);
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

fn parse_mode(names: &Names<'_>, args: &Args) -> Result<Mode, ConfigError> {
    let method = Method::from_bytes(args.method.trim().as_bytes())
        .map_err(|_| names.invalid("method", &args.method, "an HTTP method such as GET"))?;
    let path = args.path.trim();
    // Parse a full URL now so every request URI built later is known to be valid.
    if !path.starts_with('/') || format!("http://h{path}").parse::<Uri>().is_err() {
        return Err(names.invalid("path", &args.path, "a path starting with '/'"));
    }
    let key_header = HeaderName::from_bytes(args.key_header.trim().as_bytes())
        .map_err(|_| names.invalid("key_header", &args.key_header, "a valid header name"))?;
    match args.mode.trim().to_ascii_lowercase().as_str() {
        "check" => Ok(Mode::Check),
        "proxy" => Ok(Mode::Proxy {
            method,
            path: path.to_owned(),
            key_header,
        }),
        _ => Err(names.invalid("mode", &args.mode, "check or proxy")),
    }
}

fn positive_f64(names: &Names<'_>, id: &str, raw: &str, max: f64) -> Result<f64, ConfigError> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= max => Ok(v),
        _ => Err(names.invalid(
            id,
            raw,
            format!("a number greater than 0 and at most {max}"),
        )),
    }
}

/// Seconds as a decimal number; `allow_zero` for settings where 0 has a meaning.
fn seconds(names: &Names<'_>, id: &str, raw: &str, allow_zero: bool) -> Result<f64, ConfigError> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v <= MAX_SECONDS && (v > 0.0 || (allow_zero && v == 0.0)) => {
            Ok(v)
        }
        _ if allow_zero => Err(names.invalid(id, raw, "a number of seconds, 0 or more")),
        _ => Err(names.invalid(id, raw, "a number of seconds greater than 0")),
    }
}

fn millis(names: &Names<'_>, id: &str, raw: &str) -> Result<Duration, ConfigError> {
    // A day is far beyond any sensible timeout and keeps arithmetic on deadlines safe.
    positive_u64(names, id, raw, 86_400_000).map(Duration::from_millis)
}

fn positive_u64(names: &Names<'_>, id: &str, raw: &str, max: u64) -> Result<u64, ConfigError> {
    match raw.trim().parse::<u64>() {
        Ok(v) if v > 0 && v <= max => Ok(v),
        _ => Err(names.invalid(id, raw, format!("a whole number from 1 to {max}"))),
    }
}

fn boolean(names: &Names<'_>, id: &str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(names.invalid(id, raw, "true or false")),
    }
}
