//! From a [`FileConfig`] to a [`Config`]: defaults applied, every field checked.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use http::{Method, Uri};
use tollgate::key::Key;
use tollgate::policy::{Consistency, Cost, Limit, MissingKey, Policy};
use tollgate::response::HeaderStyle;
use tollgate::{Algorithm, FailureMode, LimitSpec};

use super::{
    Config, ConfigError, FileConfig, LeaseSettings, LimiterConfig, ProxyConfig, RedisSection,
    RedisTopology, Route, StoreConfig, Upstream,
};

/// `redis.batch_max` when absent: the library's own default.
const DEFAULT_BATCH_MAX: usize = 64;
/// The largest `redis.batch_max`: a script call holds Redis while it runs (other
/// clients wait), and the library never puts more than 1024 keys in one call anyway.
const MAX_BATCH_MAX: usize = 1024;

/// The longest lease age the library keeps (it counts more as this).
pub(crate) const MAX_LEASE_AGE: Duration = Duration::from_secs(3600);

pub(super) struct Checker<'a> {
    source: &'a str,
}

impl Checker<'_> {
    pub(super) fn err(&self, field: impl Into<String>, reason: impl ToString) -> ConfigError {
        ConfigError {
            origin: self.source.to_owned(),
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    fn addr(
        &self,
        field: &str,
        value: Option<&str>,
        default: &str,
    ) -> Result<SocketAddr, ConfigError> {
        let text = value.unwrap_or(default);
        text.parse().map_err(|_| {
            self.err(
                field,
                format!("{text:?} is not an address like 0.0.0.0:8000"),
            )
        })
    }

    /// `value` parsed, or `T`'s default when absent; a value that does not parse is an
    /// error naming `field` with the parser's reason.
    fn parsed_or_default<T>(
        &self,
        field: impl Into<String>,
        value: Option<&str>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + Default,
        T::Err: ToString,
    {
        value
            .map(str::parse)
            .transpose()
            .map_err(|e| self.err(field, e))
            .map(Option::unwrap_or_default)
    }

    fn millis(
        &self,
        field: &str,
        value: Option<u64>,
        default: u64,
    ) -> Result<Duration, ConfigError> {
        match value.unwrap_or(default) {
            0 => Err(self.err(field, "must be greater than 0")),
            ms if ms > 86_400_000 => Err(self.err(field, "must be at most one day")),
            ms => Ok(Duration::from_millis(ms)),
        }
    }

    fn methods(
        &self,
        field: &str,
        value: &Option<Vec<String>>,
    ) -> Result<Option<Vec<Method>>, ConfigError> {
        value
            .as_ref()
            .map(|list| {
                if list.is_empty() {
                    return Err(
                        self.err(field, "must not be empty (omit it to match every method)")
                    );
                }
                list.iter()
                    .map(|m| {
                        Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                            .map_err(|_| self.err(field, format!("{m:?} is not an HTTP method")))
                    })
                    .collect()
            })
            .transpose()
    }
}

/// The most worker threads `workers` accepts: far above any core count a sidecar gets,
/// low enough that a typo (an extra digit or two) is refused instead of spawning them.
const MAX_WORKERS: usize = 1024;

/// `n` as a worker count, or why it is not one (the file's `workers` and `--workers`).
pub(crate) fn workers_in_range(n: usize) -> Result<usize, String> {
    if (1..=MAX_WORKERS).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is not between 1 and {MAX_WORKERS}"))
    }
}

/// tokio's own default, made explicit so that `/config` shows it: `TOKIO_WORKER_THREADS`
/// when it holds a count in range (deployments that tuned the runtime that way keep
/// their setting), else one worker per core the process may use (cgroup CPU quotas
/// included, as `available_parallelism` reads them).
pub(crate) fn default_workers() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .and_then(|n| workers_in_range(n).ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl FileConfig {
    /// Checks every field and applies defaults.
    ///
    /// # Errors
    ///
    /// The first problem found, naming `source`, the field and the reason.
    pub fn validate(&self, source: &str) -> Result<Config, ConfigError> {
        let c = Checker { source };
        let listen = c.addr("listen", self.listen.as_deref(), "0.0.0.0:8000")?;
        let admin_listen = c.addr("admin_listen", self.admin_listen.as_deref(), "0.0.0.0:9000")?;
        if listen == admin_listen && listen.port() != 0 {
            return Err(c.err("admin_listen", "must differ from listen"));
        }
        let admin_token = self
            .admin_token_file
            .as_deref()
            .map(super::Secret::read)
            .transpose()
            .map_err(|reason| c.err("admin_token_file", reason))?;
        let node_id = self.node_id.clone().unwrap_or_else(|| "sidecar".into());
        if node_id.is_empty() || node_id.len() > 128 {
            return Err(c.err("node_id", "must be 1 to 128 characters"));
        }
        let workers = match self.workers {
            Some(n) => workers_in_range(n).map_err(|reason| c.err("workers", reason))?,
            None => default_workers(),
        };

        let l = &self.limiter;
        let store = match &self.redis {
            Some(redis) => {
                let topology = redis_topology(&c, redis)?;
                let prefix = redis.prefix.clone().unwrap_or_else(|| "tollgate".into());
                if prefix.is_empty() {
                    return Err(c.err("redis.prefix", "must not be empty"));
                }
                if matches!(topology, RedisTopology::Cluster(_)) && prefix.contains(['{', '}']) {
                    return Err(c.err(
                        "redis.prefix",
                        "must not contain { or } with a Redis Cluster (it would become every key's hash tag)",
                    ));
                }
                StoreConfig::Redis {
                    url: redis.url.clone(),
                    topology,
                    timeout: c.millis("redis.timeout_ms", redis.timeout_ms, 50)?,
                    prefix,
                    batch_max: match redis.batch_max.unwrap_or(DEFAULT_BATCH_MAX) {
                        n @ 1..=MAX_BATCH_MAX => n,
                        _ => {
                            return Err(c.err(
                                "redis.batch_max",
                                format!("must be 1 to {MAX_BATCH_MAX} (1 sends every decision in a call of its own)"),
                            ))
                        }
                    },
                    security: super::redis_security::validate(&c, redis)?,
                }
            }
            None => StoreConfig::Memory {
                max_keys: match l.max_keys.unwrap_or(1_000_000) {
                    0 => return Err(c.err("limiter.max_keys", "must be greater than 0")),
                    n => n,
                },
            },
        };
        let limiter = LimiterConfig {
            failure_mode: c.parsed_or_default::<FailureMode>(
                "limiter.failure_mode",
                l.failure_mode.as_deref(),
            )?,
            timeout: c.millis("limiter.timeout_ms", l.timeout_ms, 50)?,
            deny_cache: l.deny_cache.unwrap_or(true),
            shadow: l.shadow.unwrap_or(false),
            headers: HeaderStyle::default()
                .ietf(l.ietf_headers.unwrap_or(true))
                .legacy(l.legacy_headers.unwrap_or(false)),
            check_algorithm: l
                .check_algorithm
                .as_deref()
                .map(Algorithm::from_str)
                .transpose()
                .map_err(|e| c.err("limiter.check_algorithm", e))?
                .unwrap_or_default(),
        };

        let lease = self.validate_lease(&c)?;

        let p = &self.proxy;
        let proxy = ProxyConfig {
            connect_timeout: c.millis("proxy.connect_timeout_ms", p.connect_timeout_ms, 5_000)?,
            request_timeout: c.millis("proxy.request_timeout_ms", p.request_timeout_ms, 30_000)?,
            idle_timeout: c.millis("proxy.idle_timeout_ms", p.idle_timeout_ms, 90_000)?,
            header_read_timeout: c.millis(
                "proxy.header_read_timeout_ms",
                p.header_read_timeout_ms,
                10_000,
            )?,
            max_concurrent_requests: match p.max_concurrent_requests.unwrap_or(10_000) {
                0 => return Err(c.err("proxy.max_concurrent_requests", "must be greater than 0")),
                n => n,
            },
            rewrite_host: match p.host.as_deref().unwrap_or("preserve") {
                "preserve" => false,
                "upstream" => true,
                other => {
                    return Err(c.err(
                        "proxy.host",
                        format!("{other:?}: expected preserve or upstream"),
                    ));
                }
            },
            shutdown_grace: c.millis("proxy.shutdown_grace_ms", p.shutdown_grace_ms, 10_000)?,
        };

        let rls = self.validate_rls(&c, listen, admin_listen)?;
        // Without upstreams the proxy is off, when the rate limit service is what is wanted.
        let proxy_enabled = !(self.upstreams.is_empty() && rls.is_some());
        let upstreams = if proxy_enabled {
            self.validate_upstreams(&c)?
        } else {
            Vec::new()
        };
        let routes = self.validate_routes(&c, &upstreams)?;
        let policies = self
            .policies
            .iter()
            .enumerate()
            .map(|(i, section)| self.validate_policy(&c, i, section))
            .collect::<Result<Vec<_>, _>>()?;
        // Names and duplicates, as the limiter will check them when it is built.
        tollgate::RateLimiter::validate_policies(&policies).map_err(|e| c.err("policies", e))?;

        let mut config = Config {
            // Filled in below, from the validated values.
            effective: FileConfig::default(),
            proxy_enabled,
            listen,
            admin_listen,
            node_id,
            workers,
            store,
            limiter,
            lease,
            policies,
            proxy,
            upstreams,
            routes,
            admin_token,
            rls,
        };
        config.effective = self.effective(&config);
        Ok(config)
    }

    /// `[lease]`: each field within what a lease can mean; absent fields take the
    /// library's defaults.
    fn validate_lease(&self, c: &Checker<'_>) -> Result<LeaseSettings, ConfigError> {
        let l = &self.lease;
        let defaults = LeaseSettings::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let max_fraction = l.max_fraction.unwrap_or(defaults.max_fraction);
        // Written so that NaN fails too: a slice is some of the burst, at most all of it.
        if !(max_fraction > 0.0 && max_fraction <= 1.0) {
            return Err(c.err(
                "lease.max_fraction",
                format!("{max_fraction} is not in (0, 1]: a slice is a fraction of the burst"),
            ));
        }
        let max_age = c.millis("lease.max_age_ms", l.max_age_ms, ms(defaults.max_age))?;
        // The library counts more than an hour as an hour: refused here, so that /config
        // never shows an age that is not in force.
        if max_age > MAX_LEASE_AGE {
            return Err(c.err(
                "lease.max_age_ms",
                "must be at most 3600000 (one hour): a lease strands its units for as long",
            ));
        }
        Ok(LeaseSettings {
            target: c.millis("lease.target_ms", l.target_ms, ms(defaults.target))?,
            max_fraction,
            max_age,
        })
    }

    fn validate_rls(
        &self,
        c: &Checker<'_>,
        listen: SocketAddr,
        admin_listen: SocketAddr,
    ) -> Result<Option<super::RlsSettings>, ConfigError> {
        let section = &self.rls;
        let (addr, path) = match (&section.listen, &section.config) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(c.err(
                    "rls.config",
                    "the rate limit service needs its YAML: give --rls-config PATH or rls.config",
                ));
            }
            (None, Some(_)) => {
                return Err(c.err(
                    "rls.listen",
                    "give the rate limit service an address with --rls-listen or rls.listen",
                ));
            }
            (Some(addr), Some(path)) => (addr, path),
        };
        let addr = c.addr("rls.listen", Some(addr), "")?;
        if addr.port() != 0 && (addr == listen || addr == admin_listen) {
            return Err(c.err("rls.listen", "must differ from listen and admin_listen"));
        }
        let path = std::path::PathBuf::from(path);
        // Errors name the YAML file, the line and the field.
        let rules = crate::rls::RlsConfig::load(&path)?;
        Ok(Some(super::RlsSettings {
            listen: addr,
            path,
            rules: std::sync::Arc::new(rules),
        }))
    }

    /// What `GET /config` shows: this file with every default written out, so an
    /// operator sees the value in force rather than `null`, and secrets redacted.
    fn effective(&self, config: &Config) -> FileConfig {
        let Config {
            listen,
            admin_listen,
            node_id,
            workers,
            store,
            limiter,
            lease,
            proxy,
            upstreams,
            routes,
            ..
        } = config;
        let ms = |d: Duration| Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut out = self.redacted();
        out.listen = Some(listen.to_string());
        out.admin_listen = Some(admin_listen.to_string());
        out.node_id = Some(node_id.to_owned());
        out.workers = Some(*workers);
        match (store, out.redis.as_mut()) {
            (
                StoreConfig::Redis {
                    timeout,
                    prefix,
                    batch_max,
                    ..
                },
                Some(redis),
            ) => {
                redis.timeout_ms = ms(*timeout);
                redis.prefix = Some(prefix.clone());
                redis.batch_max = Some(*batch_max);
            }
            (StoreConfig::Memory { max_keys }, _) => out.limiter.max_keys = Some(*max_keys),
            _ => {}
        }
        let l = &mut out.limiter;
        l.failure_mode = Some(limiter.failure_mode.to_string());
        l.timeout_ms = ms(limiter.timeout);
        l.deny_cache = Some(limiter.deny_cache);
        l.shadow = Some(limiter.shadow);
        l.ietf_headers = Some(limiter.headers.ietf);
        l.legacy_headers = Some(limiter.headers.legacy);
        l.check_algorithm = Some(limiter.check_algorithm.to_string());
        out.lease = super::LeaseSection {
            target_ms: ms(lease.target),
            max_fraction: Some(lease.max_fraction),
            max_age_ms: ms(lease.max_age),
        };
        out.proxy = super::ProxySection {
            connect_timeout_ms: ms(proxy.connect_timeout),
            request_timeout_ms: ms(proxy.request_timeout),
            idle_timeout_ms: ms(proxy.idle_timeout),
            header_read_timeout_ms: ms(proxy.header_read_timeout),
            max_concurrent_requests: Some(proxy.max_concurrent_requests),
            host: Some(
                if proxy.rewrite_host {
                    "upstream"
                } else {
                    "preserve"
                }
                .into(),
            ),
            shutdown_grace_ms: ms(proxy.shutdown_grace),
        };
        for upstream in upstreams {
            if let Some(section) = out.upstreams.get_mut(&upstream.name) {
                section.protocol = Some(if upstream.h2c { "h2c" } else { "http1" }.into());
            }
        }
        if out.routes.is_empty() {
            // The implicit route of a single upstream, made explicit.
            out.routes = routes
                .iter()
                .map(|r| super::RouteSection {
                    path_prefix: Some(r.path_prefix.clone()),
                    methods: None,
                    upstream: upstreams[r.upstream].name.clone(),
                })
                .collect();
        } else {
            for (section, route) in out.routes.iter_mut().zip(routes) {
                section.path_prefix = Some(route.path_prefix.clone());
            }
        }
        for policy in &mut out.policies {
            policy
                .missing_key
                .get_or_insert_with(|| "reject".to_owned());
            policy.shadow.get_or_insert(false);
            if policy.cost.is_none() && policy.cost_header.is_none() {
                policy.cost = Some(1);
            }
            if policy.cost_header.is_some() {
                policy.cost_max.get_or_insert(100);
            }
            for limit in &mut policy.limits {
                if limit.algorithm.is_none() {
                    // The spec parsed without an algorithm is GCRA.
                    limit.algorithm = Some(Algorithm::default().to_string());
                }
                // Validated already: shown as the library spells the value in force.
                let consistency: Consistency = limit
                    .consistency
                    .as_deref()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or_default();
                limit.consistency = Some(consistency.to_string());
            }
        }
        out
    }

    fn validate_upstreams(&self, c: &Checker<'_>) -> Result<Vec<Upstream>, ConfigError> {
        if self.upstreams.is_empty() {
            return Err(c.err(
                "upstreams",
                "no upstream: give --upstream http://host:port or an [upstreams.NAME] table",
            ));
        }
        self.upstreams
            .iter()
            .map(|(name, section)| {
                let field = format!("upstreams.{name}");
                if section.endpoints.is_empty() {
                    return Err(c.err(
                        format!("{field}.endpoints"),
                        "must list at least one endpoint",
                    ));
                }
                let endpoints = section
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        endpoint(e).map_err(|r| c.err(format!("{field}.endpoints[{i}]"), r))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let h2c = match section.protocol.as_deref().unwrap_or("http1") {
                    "http1" => false,
                    "h2c" => true,
                    other => {
                        return Err(c.err(
                            format!("{field}.protocol"),
                            format!("{other:?}: expected http1 or h2c"),
                        ));
                    }
                };
                Ok(Upstream {
                    name: name.clone(),
                    endpoints,
                    h2c,
                })
            })
            .collect()
    }

    fn validate_routes(
        &self,
        c: &Checker<'_>,
        upstreams: &[Upstream],
    ) -> Result<Vec<Route>, ConfigError> {
        if self.routes.is_empty() {
            // No upstream (the proxy is off) or one: nothing to route, or everything there.
            if upstreams.is_empty() {
                return Ok(Vec::new());
            }
            if let [_] = upstreams {
                return Ok(vec![Route {
                    methods: None,
                    path_prefix: "/".into(),
                    upstream: 0,
                }]);
            }
            return Err(c.err(
                "routes",
                "several upstreams need [[routes]] saying which serves what",
            ));
        }
        self.routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let field = format!("routes[{i}]");
                let upstream = upstreams
                    .iter()
                    .position(|u| u.name == r.upstream)
                    .ok_or_else(|| {
                        c.err(
                            format!("{field}.upstream"),
                            format!("no upstream named {:?}", r.upstream),
                        )
                    })?;
                let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".into());
                if !path_prefix.starts_with('/') {
                    return Err(c.err(format!("{field}.path_prefix"), "must start with /"));
                }
                Ok(Route {
                    methods: c.methods(&format!("{field}.methods"), &r.methods)?,
                    path_prefix,
                    upstream,
                })
            })
            .collect()
    }

    fn validate_policy(
        &self,
        c: &Checker<'_>,
        i: usize,
        section: &super::PolicySection,
    ) -> Result<Policy, ConfigError> {
        let field = format!("policies[{i}]");
        let trusted = &self.limiter.trusted_proxies;
        let mut policy = Policy::new(section.name.clone());
        if let Some(methods) = c.methods(&format!("{field}.methods"), &section.methods)? {
            policy = policy.methods(methods);
        }
        match (&section.path_prefix, &section.path_pattern) {
            (Some(_), Some(_)) => {
                return Err(c.err(
                    format!("{field}.path_pattern"),
                    "give path_prefix or path_pattern, not both",
                ));
            }
            (Some(prefix), None) => policy = policy.path_prefix(prefix.clone()),
            (None, Some(pattern)) => {
                policy = policy
                    .path_pattern(pattern)
                    .map_err(|e| c.err(format!("{field}.path_pattern"), e))?;
            }
            (None, None) => {}
        }
        if let Some(text) = &section.missing_key {
            let choice: MissingKey = text
                .parse()
                .map_err(|e| c.err(format!("{field}.missing_key"), e))?;
            policy = policy.missing_key(choice);
        }
        policy = match (&section.cost_header, section.cost) {
            (Some(_), Some(_)) => {
                return Err(c.err(
                    format!("{field}.cost_header"),
                    "give cost or cost_header, not both",
                ));
            }
            (Some(header), None) => policy.cost(
                Cost::try_header(header, 1, section.cost_max.unwrap_or(100))
                    .map_err(|e| c.err(format!("{field}.cost_header"), e))?,
            ),
            (None, Some(cost)) => policy.cost(Cost::Fixed(cost)),
            (None, None) => policy,
        };
        policy = policy.shadow(section.shadow.unwrap_or(false));
        if section.limits.is_empty() {
            return Err(c.err(
                format!("{field}.limits"),
                "a policy needs at least one limit",
            ));
        }
        for (j, limit) in section.limits.iter().enumerate() {
            let lf = format!("{field}.limits[{j}]");
            let algorithm: Algorithm =
                c.parsed_or_default(format!("{lf}.algorithm"), limit.algorithm.as_deref())?;
            // A burst with a window algorithm is refused here, by the crate.
            let spec = LimitSpec::parse_with(&limit.rate, algorithm)
                .map_err(|e| c.err(format!("{lf}.rate"), e))?;
            let key =
                Key::parse_with(&limit.key, trusted).map_err(|e| c.err(format!("{lf}.key"), e))?;
            let consistency: Consistency =
                c.parsed_or_default(format!("{lf}.consistency"), limit.consistency.as_deref())?;
            policy = policy
                .limit(Limit::new(limit.name.clone(), spec, key).with_consistency(consistency));
        }
        Ok(policy)
    }
}

/// `http://host:port` (path `/` or empty) → its URI.
fn endpoint(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("{text:?} is not a URL like http://app:3000"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{text:?}: only http:// upstreams are supported"));
    }
    if uri.host().is_none() {
        return Err(format!("{text:?} has no host"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!("{text:?}: an upstream endpoint has no path"));
    }
    Ok(uri)
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;

/// Exactly one of `url`, `cluster` and `sentinels` (with `master`), every address a
/// `redis://` or `rediss://` URL.
fn redis_topology(c: &Checker<'_>, redis: &RedisSection) -> Result<RedisTopology, ConfigError> {
    let set: Vec<&str> = [
        ("redis.url", !redis.url.is_empty()),
        ("redis.cluster", !redis.cluster.is_empty()),
        ("redis.sentinels", !redis.sentinels.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if set.len() != 1 {
        let got = match set.as_slice() {
            [] => "none".to_string(),
            many => many.join(" and "),
        };
        return Err(c.err(
            "redis",
            format!("set exactly one of redis.url, redis.cluster, redis.sentinels (got {got})"),
        ));
    }
    let check = |field: &str, url: &str| {
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            Ok(())
        } else {
            Err(c.err(field, "must start with redis:// or rediss://"))
        }
    };
    if redis.master.is_some() && redis.sentinels.is_empty() {
        return Err(c.err("redis.master", "is only used with redis.sentinels"));
    }
    if !redis.url.is_empty() {
        check("redis.url", &redis.url)?;
        return Ok(RedisTopology::Single);
    }
    if !redis.cluster.is_empty() {
        for url in &redis.cluster {
            check("redis.cluster", url)?;
        }
        return Ok(RedisTopology::Cluster(redis.cluster.clone()));
    }
    for url in &redis.sentinels {
        check("redis.sentinels", url)?;
    }
    match redis.master.as_deref() {
        Some(master) if !master.is_empty() => Ok(RedisTopology::Sentinel {
            sentinels: redis.sentinels.clone(),
            master: master.to_string(),
        }),
        _ => Err(c.err("redis.master", "must name the master the sentinels monitor")),
    }
}
