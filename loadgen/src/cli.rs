//! The command line and environment surface, exactly as a user types it.
//!
//! Every setting is a flag that also reads an environment variable (clap's `env` feature), so
//! the compose demo configures the loadgen by env while a person at a terminal uses flags; a
//! flag wins over the variable. Values are deliberately kept as **strings** here: clap's own
//! parse errors name the flag (`--rps <RPS>`) but not the variable, and the demo contract asks
//! for a message naming the variable. [`crate::config::Config::from_args`] does the parsing
//! and validation and reports [`crate::config::ConfigError`], which names both.
//!
//! Each variable and flag name is written once, in the attributes below:
//! [`crate::config`] reads them back from clap's metadata (`Arg::get_env`, `Arg::get_long`)
//! when it names a setting in an error.
//!
//! The request path and method use `REQUEST_PATH` / `REQUEST_METHOD` rather than `PATH` /
//! `METHOD`: `PATH` is the shell's search path and would silently become the request path.

use std::ffi::OsString;

use clap::Parser;

/// Default targets in check mode: the admin ports of the compose demo's three sidecars, where
/// `POST /check` is served.
pub const DEFAULT_CHECK_TARGETS: &str =
    "http://sidecar-1:9000,http://sidecar-2:9000,http://sidecar-3:9000";

/// Default targets in proxy mode: the proxy ports of the compose demo's three sidecars.
pub const DEFAULT_PROXY_TARGETS: &str =
    "http://sidecar-1:8000,http://sidecar-2:8000,http://sidecar-3:8000";

/// Raw settings as given on the command line or in the environment.
///
/// Each field documents its variable and default; see `docs/loadgen.md` for the full story.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tollgate-loadgen",
    version,
    about = "Open-loop HTTP load generator that demonstrates and measures Tollgate",
    long_about = None,
    allow_negative_numbers = true,
    args_override_self = true
)]
pub struct Args {
    /// Comma-separated base URLs, used round-robin [default: the compose demo's sidecars,
    /// http://sidecar-{1,2,3}:9000 (admin) in check mode, http://sidecar-{1,2,3}:8000 (proxy) in
    /// proxy mode].
    // No clap default: which one applies depends on MODE, so validation picks it.
    #[arg(long, env = "TARGETS")]
    pub targets: Option<String>,

    /// Steady arrival rate in requests per second.
    #[arg(long, env = "RPS", default_value = "10")]
    pub rps: String,

    /// Run length in seconds (decimals allowed); 0 runs until SIGINT/SIGTERM.
    #[arg(long, env = "DURATION", default_value = "0")]
    pub duration: String,

    /// Whether periodic bursts are enabled (true/false, 1/0, yes/no, on/off).
    #[arg(long, env = "BURST_ENABLED", default_value = "true")]
    pub burst_enabled: String,

    /// Rate multiplier during a burst.
    #[arg(long, env = "BURST_MULTIPLIER", default_value = "5")]
    pub burst_multiplier: String,

    /// Length of each burst in seconds.
    #[arg(long, env = "BURST_DURATION", default_value = "5")]
    pub burst_duration: String,

    /// Seconds between burst starts; the first burst starts after one interval.
    #[arg(long, env = "BURST_INTERVAL", default_value = "30")]
    pub burst_interval: String,

    /// `check` (POST {target}/check) or `proxy` (requests through the sidecar).
    #[arg(long, env = "MODE", default_value = "check")]
    pub mode: String,

    /// Key distribution: `unique`, `fixed:N` or `zipf:N:s`.
    #[arg(long, env = "KEYS", default_value = "fixed:10")]
    pub keys: String,

    /// Prefix of every generated key (`user-` gives `user-0`, `user-1`, ...).
    #[arg(long, env = "KEY_PREFIX", default_value = "user-")]
    pub key_prefix: String,

    /// Proxy mode: header that carries the key.
    #[arg(long, env = "KEY_HEADER", default_value = "x-api-key")]
    pub key_header: String,

    /// Proxy mode: request method.
    #[arg(long, env = "REQUEST_METHOD", default_value = "GET")]
    pub method: String,

    /// Proxy mode: request path (and query) appended to each target.
    #[arg(long, env = "REQUEST_PATH", default_value = "/")]
    pub path: String,

    /// Requests admitted per window (sent in check mode; the policy to assume in proxy mode).
    #[arg(long, env = "LIMIT", default_value = "100")]
    pub limit: String,

    /// Window length in milliseconds.
    #[arg(long, env = "WINDOW_MS", default_value = "60000")]
    pub window_ms: String,

    /// Algorithm assumed by the accuracy report: `gcra`, `sliding-window` or `fixed-window`.
    #[arg(long, env = "ALGORITHM", default_value = "gcra")]
    pub algorithm: String,

    /// GCRA burst capacity assumed by the accuracy report (default: LIMIT).
    #[arg(long, env = "BURST")]
    pub burst: Option<String>,

    /// Seconds between stats lines.
    #[arg(long, env = "STATS_INTERVAL", default_value = "10")]
    pub stats_interval: String,

    /// Per-request timeout in milliseconds (connect + response + body).
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value = "2000")]
    pub request_timeout_ms: String,

    /// Maximum requests in flight; beyond it a request is counted Failed (`overload`).
    #[arg(long, env = "MAX_IN_FLIGHT", default_value = "10000")]
    pub max_in_flight: String,

    /// Most keep-alive connections per target, opened on demand.
    #[arg(long, env = "CONNECTIONS", default_value = "256")]
    pub connections: String,

    /// On stop, how long to wait for in-flight requests before giving up on them.
    #[arg(long, env = "DRAIN_TIMEOUT_MS", default_value = "2000")]
    pub drain_timeout_ms: String,

    /// Progress display: `auto` (a bar when stdout is a terminal), `always` or `never`.
    #[arg(long, env = "PROGRESS", default_value = "auto")]
    pub progress: String,

    /// Exit 1 when more than this percentage of requests failed (0 to 100).
    #[arg(long, env = "MAX_FAILED_PERCENT", default_value = "1")]
    pub max_failed_percent: String,

    /// Write the final summary as JSON to this file.
    #[arg(long = "json", env = "SUMMARY_JSON", value_name = "PATH")]
    pub json: Option<OsString>,
}
