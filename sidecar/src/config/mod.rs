//! The sidecar's configuration: one model for the TOML file and the flags.
//!
//! Flags and environment variables are turned into the same [`FileConfig`] a TOML file
//! deserializes to, so both go through one validation, [`FileConfig::validate`], which
//! either yields a [`Config`] ready to build from or a [`ConfigError`] naming the
//! source, the field and the reason. Nothing is bound or connected before that passes.
//! A [`ConfigSource`] is how to do all of that again: the file and the overrides that
//! produced the configuration, re-applied on reload.
//!
//! The validated [`FileConfig`] is also what `GET /config` shows (Redis password
//! redacted), so operators see exactly what is in force.

mod file;
mod source;
mod validate;

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Uri};
use tollgate::policy::Policy;
use tollgate::response::HeaderStyle;
use tollgate::{Algorithm, FailureMode};

pub use self::file::{
    FileConfig, LimitSection, LimiterSection, PolicySection, ProxySection, RedisSection,
    RlsSection, RouteSection, UpstreamSection,
};
pub use self::source::ConfigSource;

/// A configuration that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {field}: {reason}")]
pub struct ConfigError {
    /// Where it came from: a file path, or `flags`.
    pub origin: String,
    /// The offending field, as a path (`policies[0].limits[1].rate`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Where the limiter keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In process memory (the default).
    Memory {
        /// Most keys held.
        max_keys: usize,
    },
    /// A Redis shared by every sidecar.
    Redis {
        /// `redis://…`
        url: String,
        /// Per-command timeout.
        timeout: Duration,
        /// Key namespace.
        prefix: String,
    },
}

/// The limiter's settings.
#[derive(Debug, Clone)]
pub struct LimiterConfig {
    /// What to do while the store fails.
    pub failure_mode: FailureMode,
    /// Longest wait for the store per decision.
    pub timeout: Duration,
    /// Answer already-refused keys locally.
    pub deny_cache: bool,
    /// Decide and record, never refuse.
    pub shadow: bool,
    /// Which rate-limit headers to send.
    pub headers: HeaderStyle,
    /// The algorithm of `POST /check` decisions.
    pub check_algorithm: Algorithm,
}

/// The proxy's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Longest TCP connect to an upstream (→ 502).
    pub connect_timeout: Duration,
    /// Longest wait for an upstream's response head (→ 504).
    pub request_timeout: Duration,
    /// How long idle pooled upstream connections are kept.
    pub idle_timeout: Duration,
    /// Longest a client may take to send its request head (slowloris bound).
    pub header_read_timeout: Duration,
    /// Requests in flight at once; more are answered 503 at once.
    pub max_concurrent_requests: usize,
    /// Send the upstream's authority as `Host` instead of the client's.
    pub rewrite_host: bool,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_grace: Duration,
}

/// A named upstream and its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its name in routes.
    pub name: String,
    /// `http://host:port` endpoints, used round-robin.
    pub endpoints: Vec<Uri>,
    /// Speak HTTP/2 cleartext (prior knowledge) to it, e.g. for gRPC.
    pub h2c: bool,
}

/// Which upstream serves which requests.
///
/// Plain validated data; the proxy builds its matcher once per configuration, not per
/// request (see [`crate::proxy::Proxy::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Methods matched (all when `None`).
    pub methods: Option<Vec<Method>>,
    /// Path prefix matched at a segment boundary.
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
}

/// Envoy's rate limit service, validated: its address and its loaded rules.
#[derive(Debug, Clone)]
pub struct RlsSettings {
    /// The gRPC address.
    pub listen: SocketAddr,
    /// The YAML file or directory, re-read on reload and watched for changes.
    pub path: std::path::PathBuf,
    /// The domains loaded from it.
    pub rules: std::sync::Arc<crate::rls::RlsConfig>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Whether the proxy serves: always, except when no upstream is configured and the
    /// rate limit service is (then only the RLS and admin ports are bound).
    pub proxy_enabled: bool,
    /// The proxy's address.
    pub listen: SocketAddr,
    /// The admin server's address.
    pub admin_listen: SocketAddr,
    /// This node's name (the `node` label of every metric).
    pub node_id: String,
    /// Where limits are counted.
    pub store: StoreConfig,
    /// The limiter's settings.
    pub limiter: LimiterConfig,
    /// The policies, in matching order.
    pub policies: Vec<Policy>,
    /// The proxy's settings.
    pub proxy: ProxyConfig,
    /// Upstreams.
    pub upstreams: Vec<Upstream>,
    /// Routes, in matching order.
    pub routes: Vec<Route>,
    /// Envoy's rate limit service, when configured.
    pub rls: Option<RlsSettings>,
    /// What produced it, for `GET /config` (secrets redacted).
    pub effective: FileConfig,
}
