//! The TOML model. Every field is optional here; defaults and checks live in
//! `validate.rs`, so a missing field and a wrong one are reported the same way.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tollgate::key::Cidr;

/// The configuration file, field for field (see `docs/sidecar.md`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Proxy address (`0.0.0.0:8000`).
    pub listen: Option<String>,
    /// Admin address (`0.0.0.0:9000`).
    pub admin_listen: Option<String>,
    /// Node name for metrics.
    pub node_id: Option<String>,
    /// Threads serving requests (default: one per CPU core the process may use; 1 runs
    /// everything on one thread). Fixed at start.
    pub workers: Option<usize>,
    /// File holding the bearer token that `POST /check` and `GET /config` require
    /// (re-read on reload); absent: those endpoints are open.
    pub admin_token_file: Option<String>,
    /// Redis store; absent: in-memory store.
    pub redis: Option<RedisSection>,
    /// Limiter settings.
    #[serde(default)]
    pub limiter: LimiterSection,
    /// Proxy settings.
    #[serde(default)]
    pub proxy: ProxySection,
    /// Named upstreams.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSection>,
    /// Routes to upstreams, first match wins.
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// Rate-limit policies, first match wins.
    #[serde(default)]
    pub policies: Vec<PolicySection>,
    /// Envoy's rate limit service (off unless `listen` and `config` are given).
    #[serde(default, skip_serializing_if = "RlsSection::is_empty")]
    pub rls: RlsSection,
    /// How `consistency = "leased"` limits size and age their leases.
    #[serde(default)]
    pub lease: LeaseSection,
}

/// `[lease]`: slice sizing of leased limits (`docs/sidecar.md`). Applies to every
/// limit with `consistency = "leased"`; exact limits ignore it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseSection {
    /// How many milliseconds of this node's observed traffic one slice should cover
    /// (default 20).
    pub target_ms: Option<u64>,
    /// Largest slice as a fraction of the limit's burst, in (0, 1] (default 0.1).
    pub max_fraction: Option<f64>,
    /// Longest a lease is kept before its unused units go back (default 250).
    pub max_age_ms: Option<u64>,
}

/// `[rls]`: serve Envoy's rate limit API (`docs/envoy.md`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RlsSection {
    /// gRPC address of the rate limit service (`0.0.0.0:8081`).
    pub listen: Option<String>,
    /// envoyproxy/ratelimit YAML: a file, or a directory of `*.yaml`/`*.yml` files.
    pub config: Option<String>,
}

impl RlsSection {
    /// Neither field set: the service is off.
    pub fn is_empty(&self) -> bool {
        self.listen.is_none() && self.config.is_none()
    }
}

/// `[redis]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://[user[:password]@]host:port[/db]`, `rediss://…` for TLS: one Redis.
    /// Exactly one of `url`, `cluster` and `sentinels` is set; empty means unset.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Redis Cluster seed nodes (`redis://host:port` each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster: Vec<String>,
    /// Redis Sentinel addresses (`redis://host:26379` each); with `master`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sentinels: Vec<String>,
    /// The master name the sentinels monitor (with `sentinels`).
    pub master: Option<String>,
    /// Per-command timeout in ms (default 50).
    pub timeout_ms: Option<u64>,
    /// Key namespace (default `tollgate`).
    pub prefix: Option<String>,
    /// Most concurrent decisions sent as one script call (default 64; 1 sends each
    /// alone). One Redis and Sentinel only: a Redis Cluster is never batched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_max: Option<usize>,
    /// File holding the password (re-read on reload); refused with a password in `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// PEM file of the CA trusted instead of the system's roots (`rediss://` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM client certificate for mutual TLS (with `client_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
}

/// `[limiter]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterSection {
    /// `open` (default), `closed` or `local`.
    pub failure_mode: Option<String>,
    /// Decision timeout in ms (default 50).
    pub timeout_ms: Option<u64>,
    /// Local deny cache (default true).
    pub deny_cache: Option<bool>,
    /// Shadow mode for every policy (default false).
    pub shadow: Option<bool>,
    /// Proxies whose `X-Forwarded-For`/`Forwarded` entries are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// Send IETF `RateLimit`/`RateLimit-Policy` (default true).
    pub ietf_headers: Option<bool>,
    /// Send legacy `X-RateLimit-*` (default false).
    pub legacy_headers: Option<bool>,
    /// Memory store key bound (default 1,000,000).
    pub max_keys: Option<usize>,
    /// Algorithm of `POST /check` (default gcra).
    pub check_algorithm: Option<String>,
}

/// `[proxy]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// Upstream connect timeout in ms (default 5000: room for the SYN retransmissions at 1 s and 3 s).
    pub connect_timeout_ms: Option<u64>,
    /// Upstream response-head timeout in ms (default 30000).
    pub request_timeout_ms: Option<u64>,
    /// Idle pooled connection lifetime in ms (default 90000).
    pub idle_timeout_ms: Option<u64>,
    /// Client request-head timeout in ms (default 10000).
    pub header_read_timeout_ms: Option<u64>,
    /// Requests in flight at once (default 10000).
    pub max_concurrent_requests: Option<usize>,
    /// `preserve` (default) or `upstream`.
    pub host: Option<String>,
    /// Drain time after SIGTERM in ms (default 10000).
    pub shutdown_grace_ms: Option<u64>,
}

/// `[upstreams.NAME]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `http://host:port` endpoints, round-robin.
    pub endpoints: Vec<String>,
    /// `http1` (default) or `h2c`.
    pub protocol: Option<String>,
}

/// `[[routes]]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Path prefix (default `/`).
    pub path_prefix: Option<String>,
    /// Methods (default all).
    pub methods: Option<Vec<String>>,
    /// Upstream name.
    pub upstream: String,
}

/// `[[policies]]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Name (metrics, Redis keys).
    pub name: String,
    /// Path prefix matched.
    pub path_prefix: Option<String>,
    /// Glob matched instead of a prefix.
    pub path_pattern: Option<String>,
    /// Methods matched (default all).
    pub methods: Option<Vec<String>>,
    /// `reject` (default), `allow` or `fallback:KEY`.
    pub missing_key: Option<String>,
    /// Fixed cost (default 1).
    pub cost: Option<u64>,
    /// Header carrying the cost.
    pub cost_header: Option<String>,
    /// Highest cost a client may claim in `cost_header` (default 100).
    pub cost_max: Option<u64>,
    /// Shadow mode for this policy.
    pub shadow: Option<bool>,
    /// The limits, all of which must admit a request.
    #[serde(default)]
    pub limits: Vec<LimitSection>,
}

/// `[[policies.limits]]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSection {
    /// Name (shown in `RateLimit` headers).
    pub name: String,
    /// `N/period[,burst=B]`
    pub rate: String,
    /// `gcra` (default), `sliding-window`, `fixed-window`.
    pub algorithm: Option<String>,
    /// Key spec (`header:x-api-key`, `ip`, `xff`, `path`, `global`, `a+b`).
    pub key: String,
    /// `exact` (default: every decision asks the store) or `leased` (a slice of the
    /// budget is leased from Redis and spent locally; see `[lease]`).
    pub consistency: Option<String>,
}

impl FileConfig {
    /// Reads and parses the file at `path`, which names it in errors.
    ///
    /// # Errors
    ///
    /// A [`super::ConfigError`] when the file cannot be read or parsed.
    pub fn read(path: &Path) -> Result<Self, super::ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| super::ConfigError {
            origin: source.clone(),
            field: "(file)".into(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_toml(&source, &text)
    }

    /// Parses TOML text; `source` names the file in errors.
    ///
    /// # Errors
    ///
    /// A [`super::ConfigError`] with TOML's own location and reason.
    pub fn from_toml(source: &str, text: &str) -> Result<Self, super::ConfigError> {
        toml::from_str(text).map_err(|e| super::ConfigError {
            origin: source.to_owned(),
            field: e
                .span()
                .map(|s| {
                    // Line of the error's first byte: newlines before it, plus one.
                    let before = text.get(..s.start).unwrap_or(text);
                    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
                    match key_at(text, line) {
                        Some(key) => format!("line {line} ({key})"),
                        None => format!("line {line}"),
                    }
                })
                .unwrap_or_else(|| "(file)".into()),
            reason: e.message().to_owned(),
        })
    }

    /// A copy safe to show: the Redis password replaced by `***`. Secrets read from
    /// files (`admin_token_file`, `redis.password_file`, `redis.client_key`) are shown by
    /// path only: their contents never enter this model.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        if let Some(redis) = copy.redis.as_mut() {
            redis.url = redact_url(&redis.url);
            for url in redis.cluster.iter_mut().chain(redis.sentinels.iter_mut()) {
                *url = redact_url(url);
            }
        }
        copy
    }
}

/// Whether a Redis URL carries a password (`redis://[user]:password@host`).
pub(crate) fn url_has_password(url: &str) -> bool {
    url.split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .is_some_and(|(_, password)| !password.is_empty())
}

fn redact_url(url: &str) -> String {
    // redis://user:password@host → redis://user:***@host
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            // A user name alone is no secret.
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The name of the key set on `line` (1-based) of TOML `text`, in the form the
/// validation errors use (`limiter.trusted_proxies`, `policies[1].limits[0].rate`):
/// TOML's errors give a position, and a reader wants the field. `None` when the line
/// sets no plain key (a table header, a continued array, a quoted key).
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let (key, _) = lines.get(line.checked_sub(1)?)?.split_once('=')?;
    let key = key.trim();
    let plain = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !plain(key) {
        return None;
    }
    // Replay the table headers above the line: `[[a.b]]` is the next element of the
    // array `b` in the current element of `a`, so it is numbered per parent.
    let mut path: Vec<String> = Vec::new();
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for header in lines[..line - 1].iter().map(|l| l.trim()) {
        let (name, array) = match header.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            Some(name) => (name, true),
            None => match header.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                Some(name) => (name, false),
                None => continue,
            },
        };
        let segments: Vec<&str> = name.split('.').map(str::trim).collect();
        let mut next: Vec<String> = Vec::with_capacity(segments.len());
        for (i, segment) in segments.iter().enumerate() {
            // A parent segment naming the element already open keeps its index.
            let open = path
                .get(i)
                .filter(|p| i + 1 < segments.len() && p.split('[').next() == Some(*segment));
            next.push(open.cloned().unwrap_or_else(|| (*segment).to_owned()));
        }
        if array {
            let whole = next.join(".");
            let n = counts.entry(whole).or_insert(0);
            if let Some(last) = next.last_mut() {
                last.push_str(&format!("[{n}]"));
            }
            *n += 1;
        }
        path = next;
    }
    path.push(key.to_owned());
    Some(path.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_errors_name_the_field_as_validation_does() {
        let text = "listen = \"x\"\n[limiter]\ntrusted_proxies = [1]\n[[policies]]\nname = \"a\"\n\
                    [[policies.limits]]\nrate = 1\n[[policies]]\nname = \"b\"\n[[policies.limits]]\n\
                    rate = 1\n[[policies.limits]]\nrate = 2\n[upstreams.app]\nendpoints = 3\n";
        assert_eq!(key_at(text, 1).as_deref(), Some("listen"));
        assert_eq!(key_at(text, 3).as_deref(), Some("limiter.trusted_proxies"));
        assert_eq!(key_at(text, 5).as_deref(), Some("policies[0].name"));
        assert_eq!(
            key_at(text, 7).as_deref(),
            Some("policies[0].limits[0].rate")
        );
        assert_eq!(key_at(text, 9).as_deref(), Some("policies[1].name"));
        assert_eq!(
            key_at(text, 11).as_deref(),
            Some("policies[1].limits[0].rate")
        );
        assert_eq!(
            key_at(text, 13).as_deref(),
            Some("policies[1].limits[1].rate")
        );
        assert_eq!(key_at(text, 15).as_deref(), Some("upstreams.app.endpoints"));
        assert_eq!(key_at(text, 4), None, "a header sets no key");
        assert_eq!(key_at(text, 99), None);
        let err = FileConfig::from_toml("f.toml", text).unwrap_err();
        assert_eq!(err.field, "line 3 (limiter.trusted_proxies)", "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@r:6379/0"),
            "redis://:***@r:6379/0"
        );
        assert_eq!(redact_url("redis://u:p@r"), "redis://u:***@r");
        assert_eq!(redact_url("redis://r:6379"), "redis://r:6379");
        assert_eq!(redact_url("rediss://tollgate@r"), "rediss://tollgate@r");
    }

    #[test]
    fn a_password_in_the_url_is_recognised() {
        assert!(url_has_password("redis://:s3cret@r:6379"));
        assert!(url_has_password("rediss://u:p@r"));
        assert!(!url_has_password("rediss://tollgate@r:6380"));
        assert!(!url_has_password("redis://r:6379/0"));
    }
}
