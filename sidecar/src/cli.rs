//! Command-line flags, each with an environment twin.
//!
//! The common case needs no file: `--upstream`, `--limit`, `--key` make a single
//! upstream and a single catch-all policy. With `--config FILE`, the file is the base
//! and the flags given override its top-level fields (addresses, node, Redis, failure
//! mode); `--limit` then adds a catch-all policy after the file's own.
//!
//! Only this module and `main` know the command line: [`Cli::config_source`] turns it
//! into the [`ConfigSource`] everything else, reload included, works from.

use std::path::PathBuf;

use clap::Parser;

use crate::config::{
    ConfigError, ConfigSource, FileConfig, LimitSection, PolicySection, RedisSection,
    UpstreamSection,
};
use crate::demo::DemoUpstream;

/// A reverse proxy that enforces Tollgate rate limits in front of upstream services.
#[derive(Debug, Clone, Parser)]
#[command(name = "tollgate-sidecar", version, about)]
pub struct Cli {
    /// Proxy listen address [default: 0.0.0.0:8000]
    #[arg(long, env = "TOLLGATE_LISTEN")]
    pub listen: Option<String>,
    /// Admin listen address (/health, /ready, /metrics, /config, POST /check) [default: 0.0.0.0:9000]
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Upstream base URL (http://host:port); repeat for round-robin endpoints
    #[arg(long, env = "TOLLGATE_UPSTREAM", value_delimiter = ',')]
    pub upstream: Vec<String>,
    /// Redis URL, redis://host:port/db, rediss://… for TLS, an ACL user as redis://USER@host:port (the password from --redis-password-file); also read from REDIS_URL when neither this flag nor TOLLGATE_REDIS_URL is set. Without it limits live in this process's memory
    #[arg(long, env = "TOLLGATE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated redis://host:port URLs (instead of --redis-url)
    #[arg(long, env = "TOLLGATE_REDIS_CLUSTER", value_delimiter = ',')]
    pub redis_cluster: Vec<String>,
    /// Redis Sentinel addresses, comma-separated redis://host:26379 URLs, with --redis-sentinel-master (instead of --redis-url)
    #[arg(long, env = "TOLLGATE_REDIS_SENTINEL", value_delimiter = ',')]
    pub redis_sentinel: Vec<String>,
    /// The master name the sentinels monitor (with --redis-sentinel)
    #[arg(long, env = "TOLLGATE_REDIS_SENTINEL_MASTER")]
    pub redis_sentinel_master: Option<String>,
    /// File holding the Redis password (one trailing newline removed; re-read on reload), which keeps it off the command line; refused together with a password in the URL
    #[arg(long, env = "TOLLGATE_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// PEM file of the CA that signed Redis' certificate, trusted instead of the system's roots (rediss:// only)
    #[arg(long, env = "TOLLGATE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS with Redis (with --redis-client-key)
    #[arg(long, env = "TOLLGATE_REDIS_CLIENT_CERT")]
    pub redis_client_cert: Option<PathBuf>,
    /// PEM private key of --redis-client-cert
    #[arg(long, env = "TOLLGATE_REDIS_CLIENT_KEY")]
    pub redis_client_key: Option<PathBuf>,
    /// The limit of the catch-all policy: N/period[,burst=B], e.g. 100/1m, 10/s,burst=20
    #[arg(long, env = "TOLLGATE_LIMIT")]
    pub limit: Option<String>,
    /// What the catch-all limit counts per: header:NAME, ip (TCP peer), xff (client IP from X-Forwarded-For behind --trusted-proxy), forwarded (same from RFC 7239 Forwarded), method, path, route (the path: the proxy has no router), global, const:VALUE, or a tuple a+b such as header:x-api-key+path [default: ip]
    #[arg(long, env = "TOLLGATE_KEY")]
    pub key: Option<String>,
    /// Algorithm of the catch-all limit: gcra, sliding-window, fixed-window [default: gcra]
    #[arg(long, env = "TOLLGATE_ALGORITHM")]
    pub algorithm: Option<String>,
    /// Consistency of the catch-all limit: exact (every decision asks Redis) or leased (a slice of the budget is leased from Redis and spent in memory; never admits more than the limit, may strand up to a slice per node) [default: exact]
    #[arg(long, env = "TOLLGATE_CONSISTENCY")]
    pub consistency: Option<String>,
    /// Leased limits: how many milliseconds of this node's observed traffic one slice covers (lease.target_ms) [default: 20]
    #[arg(long, env = "TOLLGATE_LEASE_TARGET_MS")]
    pub lease_target_ms: Option<u64>,
    /// Leased limits: the largest slice as a fraction of the limit's burst, in (0, 1] (lease.max_fraction) [default: 0.1]
    #[arg(long, env = "TOLLGATE_LEASE_MAX_FRACTION")]
    pub lease_max_fraction: Option<f64>,
    /// Leased limits: the longest a lease is kept before its unused units go back, in milliseconds (lease.max_age_ms) [default: 250]
    #[arg(long, env = "TOLLGATE_LEASE_MAX_AGE_MS")]
    pub lease_max_age_ms: Option<u64>,
    /// What to do while Redis fails: open, closed, local [default: open]
    #[arg(long, env = "TOLLGATE_FAILURE_MODE")]
    pub failure_mode: Option<String>,
    /// Proxies whose X-Forwarded-For / Forwarded entries the xff and forwarded keys believe (CIDR), comma-separated
    #[arg(long, env = "TOLLGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxy: Vec<String>,
    /// Decide and record, never refuse
    #[arg(long, env = "TOLLGATE_SHADOW")]
    pub shadow: bool,
    /// This node's name (label `node` on every metric); also read from NODE_ID when neither this flag nor TOLLGATE_NODE_ID is set [default: sidecar]
    #[arg(long, env = "TOLLGATE_NODE_ID")]
    pub node_id: Option<String>,
    /// Threads serving requests, 1 to 1024; 1 runs everything on one thread, which spends the least CPU per request when one core is enough (fixed at start) [default: TOKIO_WORKER_THREADS if set, else one per CPU core the process may use]
    #[arg(long, env = "TOLLGATE_WORKERS")]
    pub workers: Option<usize>,
    /// File holding the bearer token that POST /check and GET /config require (re-read on reload); /health, /ready and /metrics stay open
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve Envoy's rate limit service (gRPC, envoy.service.ratelimit.v3) on this address, e.g. 0.0.0.0:8081; needs --rls-config. Without --upstream only this and the admin port are served
    #[arg(long, env = "TOLLGATE_RLS_LISTEN")]
    pub rls_listen: Option<String>,
    /// envoyproxy/ratelimit YAML for the rate limit service: a file or a directory of *.yaml files (reloaded on SIGHUP and when they change)
    #[arg(long, env = "TOLLGATE_RLS_CONFIG")]
    pub rls_config: Option<PathBuf>,
    /// TOML configuration file (reloaded on SIGHUP and when it changes)
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate the configuration and exit (0 valid, 64 invalid)
    #[arg(long)]
    pub check_config: bool,
    /// Start a built-in demo upstream and proxy to it (for trying the sidecar alone)
    #[arg(long)]
    pub demo: bool,
}

/// `--redis-*` file flags: the flag, the `[redis]` field it sets, and how it is read.
type FileFlag<'a> = (
    &'static str,
    &'a Option<PathBuf>,
    fn(&mut RedisSection) -> &mut Option<String>,
    fn(&str) -> Result<(), String>,
);

impl Cli {
    /// `--redis-password-file`, `--redis-ca-file`, `--redis-client-cert`,
    /// `--redis-client-key`: each file is read (and parsed) now, so an error names the
    /// flag; `validate` reads them again with the rest of `[redis]`.
    fn apply_redis_files(&self, file: &mut FileConfig) -> Result<(), ConfigError> {
        let flag_err = |field: &str, reason: String| ConfigError {
            origin: "flags".into(),
            field: field.into(),
            reason,
        };
        let flags: [FileFlag<'_>; 4] = [
            (
                "--redis-password-file",
                &self.redis_password_file,
                |r| &mut r.password_file,
                |p| crate::config::Secret::read(p).map(drop),
            ),
            (
                "--redis-ca-file",
                &self.redis_ca_file,
                |r| &mut r.ca_file,
                |p| crate::config::read_certificates(p).map(drop),
            ),
            (
                "--redis-client-cert",
                &self.redis_client_cert,
                |r| &mut r.client_cert,
                |p| crate::config::read_certificates(p).map(drop),
            ),
            (
                "--redis-client-key",
                &self.redis_client_key,
                |r| &mut r.client_key,
                |p| crate::config::read_private_key(p).map(drop),
            ),
        ];
        for (flag, value, field, read) in flags {
            let Some(path) = value else { continue };
            let Some(section) = file.redis.as_mut() else {
                return Err(flag_err(
                    flag,
                    "needs a Redis: give --redis-url (or [redis] url in the file)".into(),
                ));
            };
            let path = path.display().to_string();
            read(&path).map_err(|reason| flag_err(flag, reason))?;
            *field(section) = Some(path);
        }
        let Some(section) = &file.redis else {
            return Ok(());
        };
        if self.redis_password_file.is_some() && crate::config::password_in_urls(section).is_some()
        {
            return Err(flag_err(
                "--redis-password-file",
                "a password is also in the Redis URL (--redis-url, or one of --redis-cluster): \
                 keep the file, which keeps it off the command line"
                    .into(),
            ));
        }
        match (&self.redis_client_cert, &self.redis_client_key) {
            (Some(_), None) if section.client_key.is_none() => Err(flag_err(
                "--redis-client-cert",
                "needs --redis-client-key (mutual TLS takes both)".into(),
            )),
            (None, Some(_)) if section.client_cert.is_none() => Err(flag_err(
                "--redis-client-key",
                "needs --redis-client-cert (mutual TLS takes both)".into(),
            )),
            _ => {
                let tls_flag = [
                    ("--redis-ca-file", &self.redis_ca_file),
                    ("--redis-client-cert", &self.redis_client_cert),
                    ("--redis-client-key", &self.redis_client_key),
                ]
                .into_iter()
                .find_map(|(flag, v)| v.as_ref().map(|_| flag));
                let plain = crate::config::plain_data_urls(section).is_some();
                match tls_flag {
                    Some(flag) if plain => Err(flag_err(
                        flag,
                        "needs rediss:// Redis URLs (--redis-url, or every --redis-cluster node; \
                         redis:// is not encrypted)"
                            .into(),
                    )),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Also accept the conventional `REDIS_URL` and `NODE_ID` when the
    /// `TOLLGATE_`-prefixed variables and flags are absent.
    pub fn with_conventional_env(mut self) -> Self {
        if self.redis_url.is_none()
            && self.redis_cluster.is_empty()
            && self.redis_sentinel.is_empty()
        {
            self.redis_url = std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty());
        }
        if self.node_id.is_none() {
            self.node_id = std::env::var("NODE_ID").ok().filter(|v| !v.is_empty());
        }
        self
    }

    /// Where configuration errors are said to come from: the file, or `flags`.
    pub fn source(&self) -> String {
        self.config_source().origin()
    }

    /// The one configuration value the rest of the sidecar sees: the file (if any) with
    /// these flags applied over it, after every read — at start and on each reload.
    pub fn config_source(&self) -> ConfigSource {
        let flags = self.clone();
        ConfigSource::new(self.config.clone()).with_overrides(move |file| flags.apply(file))
    }

    /// Reads the file (if any) and applies the flags on top.
    ///
    /// # Errors
    ///
    /// An unreadable or unparsable file, or a flag that does not parse.
    pub fn file_config(&self) -> Result<FileConfig, ConfigError> {
        self.config_source().file_config()
    }

    /// `--demo`: binds the demo upstream and points these flags at it (10 per minute
    /// per client IP, this machine only) unless the user gave their own. Bound before
    /// the configuration is validated, so the flags can name its address.
    ///
    /// # Errors
    ///
    /// When `--upstream` is also given (the demo is its own upstream: say which you
    /// mean), or no loopback port can be bound.
    pub fn prepare_demo(&mut self) -> anyhow::Result<DemoUpstream> {
        if !self.upstream.is_empty() {
            anyhow::bail!(
                "--demo starts its own upstream and cannot be combined with --upstream \
                 (or TOLLGATE_UPSTREAM): drop one of them"
            );
        }
        let demo = DemoUpstream::bind()?;
        self.upstream = vec![format!("http://{}", demo.local_addr()?)];
        self.limit.get_or_insert_with(|| "10/m".into());
        // A demo is for this machine only, unless asked otherwise.
        self.listen.get_or_insert_with(|| "127.0.0.1:8000".into());
        self.admin_listen
            .get_or_insert_with(|| "127.0.0.1:9000".into());
        Ok(demo)
    }

    fn apply(&self, file: &mut FileConfig) -> Result<(), ConfigError> {
        let flag_err = |field: &str, reason: String| ConfigError {
            origin: "flags".into(),
            field: field.into(),
            reason,
        };
        // Each flag's value is checked here, so an error names the flag the user typed
        // rather than the file field it overrides.
        for (flag, value) in [
            ("--listen", &self.listen),
            ("--admin-listen", &self.admin_listen),
        ] {
            if let Some(v) = value {
                v.parse::<std::net::SocketAddr>().map_err(|_| {
                    flag_err(flag, format!("{v:?} is not an address like 0.0.0.0:8000"))
                })?;
            }
        }
        if let Some(v) = &self.rls_listen {
            v.parse::<std::net::SocketAddr>().map_err(|_| {
                flag_err(
                    "--rls-listen",
                    format!("{v:?} is not an address like 0.0.0.0:8081"),
                )
            })?;
            file.rls.listen = Some(v.clone());
        }
        if let Some(path) = &self.rls_config {
            file.rls.config = Some(path.display().to_string());
        }
        if let Some(v) = &self.listen {
            file.listen = Some(v.clone());
        }
        if let Some(v) = &self.admin_listen {
            file.admin_listen = Some(v.clone());
        }
        if let Some(path) = &self.admin_token_file {
            let path = path.display().to_string();
            crate::config::Secret::read(&path)
                .map_err(|reason| flag_err("--admin-token-file", reason))?;
            file.admin_token_file = Some(path);
        }
        if let Some(v) = &self.node_id {
            if v.is_empty() || v.len() > 128 {
                return Err(flag_err("--node-id", "must be 1 to 128 characters".into()));
            }
            file.node_id = Some(v.clone());
        }
        if let Some(n) = self.workers {
            let n = crate::config::workers_in_range(n).map_err(|r| flag_err("--workers", r))?;
            file.workers = Some(n);
        }
        let topologies = [
            self.redis_url.is_some(),
            !self.redis_cluster.is_empty(),
            !self.redis_sentinel.is_empty(),
        ];
        match topologies.iter().filter(|&&given| given).count() {
            0 => {}
            1 => {
                // One Redis topology given as a flag replaces the file's.
                if let Some(section) = file.redis.as_mut() {
                    section.url.clear();
                    section.cluster.clear();
                    section.sentinels.clear();
                    if self.redis_sentinel.is_empty() {
                        section.master = None;
                    }
                }
            }
            _ => {
                return Err(flag_err(
                    "--redis-url, --redis-cluster, --redis-sentinel",
                    "give only one of them".into(),
                ))
            }
        }
        if let Some(url) = &self.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(flag_err(
                    "--redis-url",
                    "must start with redis:// or rediss://".into(),
                ));
            }
            let section = file.redis.get_or_insert_with(RedisSection::default);
            section.url = url.clone();
        }
        if !self.redis_cluster.is_empty() {
            let section = file.redis.get_or_insert_with(RedisSection::default);
            section.cluster = self.redis_cluster.clone();
        }
        if !self.redis_sentinel.is_empty() {
            let section = file.redis.get_or_insert_with(RedisSection::default);
            section.sentinels = self.redis_sentinel.clone();
        }
        if let Some(master) = &self.redis_sentinel_master {
            let section = file.redis.get_or_insert_with(RedisSection::default);
            section.master = Some(master.clone());
        }
        self.apply_redis_files(file)?;
        // The [lease] fields, checked here so that an error names the flag.
        if let Some(v) = self.lease_max_fraction {
            if !(v > 0.0 && v <= 1.0) {
                return Err(flag_err(
                    "--lease-max-fraction",
                    format!("{v} is not in (0, 1]: a slice is a fraction of the burst"),
                ));
            }
            file.lease.max_fraction = Some(v);
        }
        for (flag, value, field, max) in [
            (
                "--lease-target-ms",
                self.lease_target_ms,
                &mut file.lease.target_ms,
                86_400_000,
            ),
            (
                "--lease-max-age-ms",
                self.lease_max_age_ms,
                &mut file.lease.max_age_ms,
                3_600_000,
            ),
        ] {
            if let Some(ms) = value {
                if ms == 0 || ms > max {
                    return Err(flag_err(flag, format!("must be 1 to {max}")));
                }
                *field = Some(ms);
            }
        }
        if let Some(v) = &self.failure_mode {
            v.parse::<tollgate::FailureMode>()
                .map_err(|e| flag_err("--failure-mode", e.to_string()))?;
            file.limiter.failure_mode = Some(v.clone());
        }
        if self.shadow {
            file.limiter.shadow = Some(true);
        }
        for cidr in &self.trusted_proxy {
            let net = cidr
                .trim()
                .parse::<tollgate::key::Cidr>()
                .map_err(|e| flag_err("--trusted-proxy", e.to_string()))?;
            file.limiter.trusted_proxies.push(net);
        }
        if !self.upstream.is_empty() {
            file.upstreams.insert(
                "default".into(),
                UpstreamSection {
                    endpoints: self.upstream.iter().map(|u| u.trim().to_owned()).collect(),
                    protocol: None,
                },
            );
        }
        if let Some(rate) = &self.limit {
            // Checked here too, so that errors name the flag rather than the policy
            // the flags turn into.
            let algorithm: tollgate::Algorithm = self
                .algorithm
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: tollgate::SpecError| flag_err("--algorithm", e.to_string()))?
                .unwrap_or_default();
            tollgate::LimitSpec::parse_with(rate, algorithm)
                .map_err(|e| flag_err("--limit", e.to_string()))?;
            if let Some(key) = &self.key {
                tollgate::key::Key::parse_with(key, &file.limiter.trusted_proxies)
                    .map_err(|e| flag_err("--key", e.to_string()))?;
            }
            if let Some(c) = &self.consistency {
                c.parse::<tollgate::policy::Consistency>()
                    .map_err(|e| flag_err("--consistency", e.to_string()))?;
            }
        } else if self.consistency.is_some() {
            return Err(flag_err(
                "--consistency",
                "needs --limit: it sets the consistency of the catch-all limit (use \
                 consistency = \"leased\" on [[policies.limits]] in the file)"
                    .into(),
            ));
        }
        match (&self.limit, &self.key) {
            (Some(rate), key) => file.policies.push(PolicySection {
                name: "default".into(),
                limits: vec![LimitSection {
                    name: "default".into(),
                    rate: rate.clone(),
                    algorithm: self.algorithm.clone(),
                    key: key.clone().unwrap_or_else(|| "ip".into()),
                    consistency: self.consistency.clone(),
                }],
                ..PolicySection::default()
            }),
            (None, Some(_)) => {
                return Err(flag_err(
                    "--key",
                    "needs --limit to say what is counted per key".into(),
                ));
            }
            (None, None) => {}
        }
        Ok(())
    }
}
