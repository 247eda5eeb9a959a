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
mod redis_security;
mod source;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Uri};
use tollgate::policy::Policy;
use tollgate::response::HeaderStyle;
use tollgate::{Algorithm, FailureMode};

pub use self::file::{
    FileConfig, LeaseSection, LimitSection, LimiterSection, PolicySection, ProxySection,
    RedisSection, RlsSection, RouteSection, UpstreamSection,
};
pub(crate) use self::redis_security::{password_in_urls, plain_data_urls};
pub use self::redis_security::{read_certificates, read_private_key};
pub use self::source::ConfigSource;
pub(crate) use self::validate::workers_in_range;

/// A secret read from a file (a token, a password): compared and used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(std::sync::Arc<str>);

impl Secret {
    /// Reads a secret from `path`, as Docker and Kubernetes mount them: the whole file,
    /// one trailing newline (`\n` or `\r\n`) removed.
    ///
    /// # Errors
    ///
    /// A reason naming the file when it cannot be read, is not UTF-8, or is empty.
    pub fn read(path: &str) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        if text.is_empty() {
            return Err(format!("{path:?} is empty"));
        }
        Ok(Secret(text.into()))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this secret, in time independent of where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A PEM file's contents (a CA, a client certificate or its key), read when the
/// configuration is validated so that a reload sees a renewed certificate. Never
/// printed: a key is a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem(std::sync::Arc<[u8]>);

impl Pem {
    /// The PEM text.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pem({} bytes)", self.0.len())
    }
}

/// How the sidecar proves itself to Redis and checks Redis' certificate: what
/// `redis.password_file`, `redis.ca_file`, `redis.client_cert` and `redis.client_key`
/// held when the configuration was validated. A reload that reads different contents
/// builds a new store; the same contents keep the store (and its connection).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisSecurity {
    /// The password, from `password_file`.
    pub password: Option<Secret>,
    /// CA certificates trusted instead of the system's roots.
    pub ca: Option<Pem>,
    /// Client certificate chain and key, for mutual TLS.
    pub client_identity: Option<(Pem, Pem)>,
}

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
        /// `redis://…` of the one Redis (empty unless `topology` is `Single`).
        url: String,
        /// One Redis, a Redis Cluster or Redis Sentinel.
        topology: RedisTopology,
        /// Per-command timeout.
        timeout: Duration,
        /// Key namespace.
        prefix: String,
        /// Most concurrent decisions in one script call (1: none batched).
        batch_max: usize,
        /// Password and TLS material read from files.
        security: RedisSecurity,
    },
}

/// How the sidecars reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One Redis at `url`.
    Single,
    /// A Redis Cluster through these seed nodes.
    Cluster(Vec<String>),
    /// The primary of `master` as these sentinels report it.
    Sentinel {
        /// Sentinel addresses.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
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

/// How leased limits size and age their slices (`[lease]`), validated. Every limit
/// with `consistency = "leased"` uses them; exact limits ignore them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseSettings {
    /// One slice should cover about this much of the node's observed traffic.
    pub target: Duration,
    /// Largest slice as a fraction of the limit's burst, in (0, 1].
    pub max_fraction: f64,
    /// Longest a lease is kept before its unused units are given back.
    pub max_age: Duration,
}

impl Default for LeaseSettings {
    /// The library's defaults (20 ms, 0.1, 250 ms), written out so `GET /config` can
    /// show them without building a limiter.
    fn default() -> Self {
        LeaseSettings {
            target: Duration::from_millis(20),
            max_fraction: 0.1,
            max_age: Duration::from_millis(250),
        }
    }
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
    /// Threads serving requests: 1 is a single-threaded runtime (see `main.rs`).
    pub workers: usize,
    /// Where limits are counted.
    pub store: StoreConfig,
    /// The limiter's settings.
    pub limiter: LimiterConfig,
    /// Slice sizing of leased limits.
    pub lease: LeaseSettings,
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
    /// The bearer token `POST /check` and `GET /config` require, read from
    /// `admin_token_file`; `None`: open.
    pub admin_token: Option<Secret>,
}
