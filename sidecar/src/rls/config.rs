//! envoyproxy/ratelimit's YAML configuration: loading, validation and descriptor matching.
//!
//! One file per domain, in the reference server's own format, so existing files load
//! unchanged:
//!
//! ```yaml
//! domain: edge
//! atomic: true            # Tollgate: all-or-nothing per request (default); false = reference behaviour
//! descriptors:
//!   - key: remote_address
//!     rate_limit: {unit: minute, requests_per_unit: 60}
//!   - key: path
//!     value: /login
//!     shadow_mode: true
//!     rate_limit: {unit: second, requests_per_unit: 2, name: login, algorithm: gcra}
//! ```
//!
//! The reference's keys that Tollgate does not act on (`quota_mode`, `value_to_metric`,
//! `share_threshold`, `metadata`) are accepted and ignored, so a file written for the
//! reference always loads; a key that is in neither format (a misspelling) is refused,
//! as the reference refuses it. Tollgate's two extensions are `atomic` at the top of a
//! file and `algorithm` in a `rate_limit`.
//!
//! Matching is the reference server's (`GetLimit`): entry by entry, `key_value` first,
//! then a wildcard value (`value: foo*`), then the value-less `key`, descending into
//! nested `descriptors`; the limit applies only when the rule that carries it is reached
//! with the request's last entry. A value-less key matches every value, and each
//! distinct value gets its own counter (counters are keyed by the request's entries).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tollgate::key::Key;
use tollgate::policy::Limit;
use tollgate::{Algorithm, LimitSpec};

use crate::config::ConfigError;

/// A rate-limit time unit of the Envoy API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
    /// Seven days.
    Week,
}

impl Unit {
    /// The unit's length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
        }
    }

    /// Its lower-case name, as in the YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
        }
    }

    /// The unit from the protocol's enum value (`RateLimitResponse.RateLimit.Unit`).
    pub fn from_proto(value: i32) -> Option<Unit> {
        match value {
            1 => Some(Unit::Second),
            2 => Some(Unit::Minute),
            3 => Some(Unit::Hour),
            4 => Some(Unit::Day),
            7 => Some(Unit::Week),
            _ => None,
        }
    }

    /// The protocol's enum value.
    pub fn to_proto(self) -> i32 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 2,
            Unit::Hour => 3,
            Unit::Day => 4,
            Unit::Week => 7,
        }
    }

    fn parse(text: &str) -> Result<Unit, String> {
        match text.to_ascii_lowercase().as_str() {
            "second" => Ok(Unit::Second),
            "minute" => Ok(Unit::Minute),
            "hour" => Ok(Unit::Hour),
            "day" => Ok(Unit::Day),
            "week" => Ok(Unit::Week),
            "month" | "year" => Err(format!(
                "unit {text:?} is not supported: calendar units have no fixed length; \
                 use second, minute, hour, day or week"
            )),
            _ => Err(format!(
                "invalid rate limit unit {text:?}: expected second, minute, hour, day or week"
            )),
        }
    }
}

/// A limit as the configuration (or a request's override) states it.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `requests_per_unit` (0 refuses every request, as in the reference).
    pub requests_per_unit: u32,
    /// `unit`.
    pub unit: Unit,
    /// Tollgate's algorithm for it (default: fixed window aligned to the unit).
    pub algorithm: Algorithm,
    /// The limit to decide; `None` for `unlimited` or zero requests per unit.
    pub limit: Option<Limit>,
    /// For fixed windows in `atomic: false` domains: the same window with room far
    /// above `requests_per_unit`, so that every request is counted — the one that
    /// crosses the limit and those after it too — as the reference counts them. The
    /// answer is then computed from the count (`over` when it exceeds the limit).
    pub counting: Option<Limit>,
    /// `unlimited: true`: always OK, never counted.
    pub unlimited: bool,
    /// `shadow_mode: true`: decided and counted, always answered OK.
    pub shadow: bool,
    /// `detailed_metric: true`: the request's values become the metric's `descriptor`.
    pub detailed_metric: bool,
    /// `rate_limit.name` (empty when absent).
    pub name: String,
    /// The names of the rules this one replaces when both apply to one request.
    pub replaces: Vec<String>,
    /// The rule's place in the file, `key_value.key` (the metric's `descriptor` label).
    pub path: Arc<str>,
}

impl Rule {
    /// A limit from the request's per-descriptor override: never shadowed, named after
    /// its unit.
    ///
    /// # Errors
    ///
    /// When the unit is unknown or the limit cannot be decided exactly.
    pub fn from_override(requests_per_unit: u32, unit: i32) -> Result<Rule, String> {
        let unit = Unit::from_proto(unit)
            .ok_or_else(|| format!("limit override has unsupported unit {unit}"))?;
        Rule::new(
            requests_per_unit,
            unit,
            Algorithm::FixedWindow,
            false,
            String::new(),
            Arc::from("override"),
        )
    }

    fn new(
        requests_per_unit: u32,
        unit: Unit,
        algorithm: Algorithm,
        unlimited: bool,
        name: String,
        path: Arc<str>,
    ) -> Result<Rule, String> {
        let limit = if unlimited || requests_per_unit == 0 {
            None
        } else {
            let spec = LimitSpec::new(
                algorithm,
                u64::from(requests_per_unit),
                Duration::from_secs(unit.seconds()),
                None,
            )
            .map_err(|e| e.to_string())?;
            // The limit's name shows in the `RateLimit` headers and ends the storage
            // key: the rule's name when it is a valid one, else its unit.
            let display = if valid_name(&name) {
                name.clone()
            } else {
                unit.as_str().to_owned()
            };
            // The key is given per request, never extracted.
            Some(Limit::new(display, spec, Key::global()))
        };
        let counting = match (&limit, algorithm) {
            (Some(limit), Algorithm::FixedWindow) => {
                counting_spec(u64::from(requests_per_unit), unit)
                    .map(|spec| Limit::new(limit.name(), spec, Key::global()))
            }
            _ => None,
        };
        Ok(Rule {
            requests_per_unit,
            unit,
            algorithm,
            limit,
            counting,
            unlimited,
            shadow: false,
            detailed_metric: false,
            name,
            replaces: Vec::new(),
            path,
        })
    }
}

/// A fixed window of one `unit` with the largest quota Tollgate decides exactly for it
/// (at most 2³³), when that is above `limit`.
fn counting_spec(limit: u64, unit: Unit) -> Option<LimitSpec> {
    let period = Duration::from_secs(unit.seconds());
    let mut quota = (1u64 << 50) / (unit.seconds() * 1000);
    quota = quota.min(1 << 33);
    while quota > limit {
        if let Ok(spec) = LimitSpec::new(Algorithm::FixedWindow, quota, period, None) {
            return Some(spec);
        }
        quota /= 2;
    }
    None
}

/// Tollgate's name alphabet (limit names end storage keys and fill headers).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[derive(Debug, Default)]
struct Node {
    /// Children by `key_value` or `key`.
    children: HashMap<String, Node>,
    /// Children whose value has a `*`: the full `key_value*` and its parts split on `*`.
    wildcards: Vec<(String, Vec<String>)>,
    rule: Option<Arc<Rule>>,
}

/// One domain's rules.
#[derive(Debug)]
pub struct Domain {
    /// The domain.
    pub name: Arc<str>,
    /// All-or-nothing per request (`atomic: true`, the default), or every descriptor
    /// charged on its own as the reference server does (`atomic: false`).
    pub atomic: bool,
    /// The file it came from.
    pub file: PathBuf,
    root: Node,
}

impl Domain {
    /// The rule for a request descriptor's entries, as the reference server finds it.
    pub fn rule<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Option<&Arc<Rule>> {
        let entries: Vec<(&str, &str)> = entries.into_iter().collect();
        let mut node = &self.root;
        let mut found = None;
        for (i, (key, value)) in entries.iter().enumerate() {
            let full = format!("{key}_{value}");
            let next = node.children.get(&full).or_else(|| {
                node.wildcards
                    .iter()
                    .find(|(_, parts)| wildcard_match(parts, &full))
                    .and_then(|(pattern, _)| node.children.get(pattern))
            });
            let next = next.or_else(|| node.children.get(*key));
            let Some(next) = next else { break };
            if i == entries.len() - 1 {
                found = next.rule.as_ref();
            }
            if next.children.is_empty() {
                break;
            }
            node = next;
        }
        found
    }
}

/// The reference's wildcard: each `*` matches zero or more characters.
fn wildcard_match(parts: &[String], value: &str) -> bool {
    let [first, middle @ .., last] = parts else {
        return parts.first().is_some_and(|p| p == value);
    };
    if middle.is_empty() && parts.len() == 1 {
        return first == value;
    }
    let fixed: usize = parts.iter().map(String::len).sum();
    if value.len() < fixed || !value.starts_with(first.as_str()) || !value.ends_with(last.as_str())
    {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for part in middle {
        match rest.find(part.as_str()) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Every domain loaded from `--rls-config`.
#[derive(Debug, Default)]
pub struct RlsConfig {
    domains: HashMap<String, Domain>,
    /// The files read, in order (watched for changes).
    pub files: Vec<PathBuf>,
}

impl RlsConfig {
    /// A domain's rules.
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.get(name)
    }

    /// The domains' names, sorted.
    pub fn domain_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.domains.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Loads a YAML file, or every `*.yaml`/`*.yml` file of a directory (sorted by
    /// name; hidden files skipped).
    ///
    /// # Errors
    ///
    /// The first problem, naming the file, the line and field, and the reason.
    pub fn load(path: &Path) -> Result<RlsConfig, ConfigError> {
        let files = yaml_files(path)?;
        let mut config = RlsConfig::default();
        for file in files {
            let origin = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|e| ConfigError {
                origin: origin.clone(),
                field: "(file)".into(),
                reason: format!("cannot read: {e}"),
            })?;
            let domain = parse(&file, &text)?;
            if config.domains.contains_key(domain.name.as_ref()) {
                return Err(ConfigError {
                    origin,
                    field: "domain".into(),
                    reason: format!(
                        "duplicate domain {:?} (already in another file)",
                        domain.name
                    ),
                });
            }
            config.domains.insert(domain.name.to_string(), domain);
            config.files.push(file);
        }
        Ok(config)
    }
}

fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let err = |reason: String| ConfigError {
        origin: path.display().to_string(),
        field: "(file)".into(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| err(format!("cannot list: {e}")))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            !name.starts_with('.')
                && (name.ends_with(".yaml") || name.ends_with(".yml"))
                && p.is_file()
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(err("the directory holds no .yaml or .yml file".into()));
    }
    Ok(files)
}

/// Parses one file's text; `file` names it in errors.
///
/// # Errors
///
/// A [`ConfigError`] naming `file`, the line, the field and the reason.
pub fn parse(file: &Path, text: &str) -> Result<Domain, ConfigError> {
    let origin = file.display().to_string();
    // Every check runs while deserializing, so each error carries the YAML position
    // of the mapping or scalar at fault, and serde's path to the field.
    let raw: FileDef = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e
            .location()
            // Errors of the file as a whole (no domain, duplicate top-level keys)
            // have no position of their own: they belong to the top of the file.
            .map_or_else(|| "line 1".to_owned(), |l| format!("line {}", l.line()));
        let message = e.to_string();
        // serde_yaml_ng appends " at line L column C"; the line is in the field already.
        let reason = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(head, _)| head)
            .to_owned();
        ConfigError {
            origin: origin.clone(),
            field: line,
            reason,
        }
    })?;
    let mut root = Node::default();
    load_level(&mut root, raw.descriptors, "");
    Ok(Domain {
        name: Arc::from(raw.domain.as_str()),
        atomic: raw.atomic,
        file: file.to_owned(),
        root,
    })
}

fn load_level(node: &mut Node, descriptors: Vec<DescriptorDef>, parent: &str) {
    for d in descriptors {
        let path = if parent.is_empty() {
            d.full.clone()
        } else {
            format!("{parent}.{}", d.full)
        };
        let mut child = Node::default();
        if let Some(r) = d.rate_limit {
            // Validated while parsing: building it again cannot fail.
            if let Ok(mut rule) = Rule::new(
                r.requests_per_unit,
                r.unit,
                r.algorithm,
                r.unlimited,
                r.name,
                Arc::from(path.as_str()),
            ) {
                rule.shadow = d.shadow_mode;
                rule.detailed_metric = d.detailed_metric;
                rule.replaces = r.replaces;
                child.rule = Some(Arc::new(rule));
            }
        }
        load_level(&mut child, d.descriptors, &path);
        if d.full.contains('*') {
            let parts = d.full.split('*').map(str::to_owned).collect();
            node.wildcards.push((d.full.clone(), parts));
        }
        node.children.insert(d.full, child);
    }
}

/// No two siblings with one composite key (`key` or `key_value`).
fn no_duplicates(descriptors: &[DescriptorDef]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (i, d) in descriptors.iter().enumerate() {
        if !seen.insert(d.full.as_str()) {
            return Err(format!(
                "descriptors[{i}]: duplicate descriptor composite key {:?}",
                d.full
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(try_from = "RawFile")]
struct FileDef {
    domain: String,
    descriptors: Vec<DescriptorDef>,
    atomic: bool,
}

impl TryFrom<RawFile> for FileDef {
    type Error = String;
    fn try_from(raw: RawFile) -> Result<Self, String> {
        if raw.domain.is_empty() {
            return Err("domain: config file cannot have an empty domain".into());
        }
        no_duplicates(&raw.descriptors)?;
        Ok(FileDef {
            domain: raw.domain,
            descriptors: raw.descriptors,
            atomic: raw.atomic.unwrap_or(true),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default, deserialize_with = "string")]
    domain: String,
    #[serde(default)]
    descriptors: Vec<DescriptorDef>,
    /// Tollgate's extension.
    atomic: Option<bool>,
}

#[derive(Deserialize)]
#[serde(try_from = "RawDescriptor")]
struct DescriptorDef {
    /// `key` or `key_value`.
    full: String,
    rate_limit: Option<RateLimitDef>,
    descriptors: Vec<DescriptorDef>,
    shadow_mode: bool,
    detailed_metric: bool,
}

impl TryFrom<RawDescriptor> for DescriptorDef {
    type Error = String;
    fn try_from(raw: RawDescriptor) -> Result<Self, String> {
        if raw.key.is_empty() {
            return Err("key: descriptor has an empty key".into());
        }
        no_duplicates(&raw.descriptors)?;
        let full = match raw.value.as_deref() {
            None | Some("") => raw.key,
            Some(value) => format!("{}_{value}", raw.key),
        };
        Ok(DescriptorDef {
            full,
            rate_limit: raw.rate_limit,
            descriptors: raw.descriptors,
            shadow_mode: raw.shadow_mode,
            detailed_metric: raw.detailed_metric,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptor {
    #[serde(default, deserialize_with = "string")]
    key: String,
    #[serde(default, deserialize_with = "opt_string")]
    value: Option<String>,
    rate_limit: Option<RateLimitDef>,
    #[serde(default)]
    descriptors: Vec<DescriptorDef>,
    #[serde(default)]
    shadow_mode: bool,
    #[serde(default)]
    detailed_metric: bool,
    // The reference's keys Tollgate accepts and ignores.
    #[serde(default, rename = "quota_mode")]
    _quota_mode: bool,
    #[serde(default, rename = "value_to_metric")]
    _value_to_metric: bool,
    #[serde(default, rename = "share_threshold")]
    _share_threshold: bool,
    #[serde(default, rename = "metadata")]
    _metadata: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize)]
#[serde(try_from = "RawRateLimit")]
struct RateLimitDef {
    requests_per_unit: u32,
    unit: Unit,
    algorithm: Algorithm,
    unlimited: bool,
    name: String,
    replaces: Vec<String>,
}

impl TryFrom<RawRateLimit> for RateLimitDef {
    type Error = String;
    fn try_from(raw: RawRateLimit) -> Result<Self, String> {
        let unit = match (raw.unit, raw.unlimited) {
            (Some(Ok(_)), true) => {
                return Err(
                    "rate_limit.unit: should not specify rate limit unit when unlimited".into(),
                );
            }
            (_, true) => Unit::Second,
            (Some(Ok(unit)), false) => unit,
            (Some(Err(e)), false) => return Err(format!("rate_limit.unit: {e}")),
            (None, false) => return Err("rate_limit.unit: a rate_limit needs a unit".into()),
        };
        let algorithm = match raw.algorithm {
            Some(a) => a
                .parse()
                .map_err(|e: tollgate::SpecError| format!("rate_limit.algorithm: {e}"))?,
            None => Algorithm::FixedWindow,
        };
        let name = raw.name.unwrap_or_default();
        let mut replaces = Vec::new();
        for replaced in raw.replaces {
            if replaced.name.is_empty() {
                return Err("rate_limit.replaces: should not have an empty replaces entry".into());
            }
            if replaced.name == name {
                return Err(
                    "rate_limit.replaces: should not contain the name of the same descriptor"
                        .into(),
                );
            }
            replaces.push(replaced.name);
        }
        // The limit must be decidable exactly (e.g. GCRA needs ≥ 1 µs per request).
        Rule::new(
            raw.requests_per_unit,
            unit,
            algorithm,
            raw.unlimited,
            name.clone(),
            Arc::from(""),
        )
        .map_err(|e| format!("rate_limit.requests_per_unit: {e}"))?;
        Ok(RateLimitDef {
            requests_per_unit: raw.requests_per_unit,
            unit,
            algorithm,
            unlimited: raw.unlimited,
            name,
            replaces,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default)]
    requests_per_unit: u32,
    /// Kept unparsed: whether a bad unit is an error depends on `unlimited`.
    #[serde(default, deserialize_with = "opt_unit")]
    unit: Option<Result<Unit, String>>,
    #[serde(default)]
    unlimited: bool,
    #[serde(default, deserialize_with = "opt_string")]
    name: Option<String>,
    #[serde(default)]
    replaces: Vec<RawReplaces>,
    /// Tollgate's extension: `fixed-window` (default), `sliding-window`, `gcra`.
    #[serde(default, deserialize_with = "opt_string")]
    algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplaces {
    #[serde(default, deserialize_with = "string")]
    name: String,
}

fn opt_unit<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Result<Unit, String>>, D::Error> {
    opt_string(d).map(|s| s.map(|s| Unit::parse(&s)))
}

/// A YAML scalar as text: the reference (Go's yaml.v2 into a string) reads `value: 5`
/// and `value: true` as the strings "5" and "true".
fn string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Scalar;
    impl serde::de::Visitor<'_> for Scalar {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }
    }
    d.deserialize_any(Scalar)
}

fn opt_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string(d).map(|s| if s.is_empty() { None } else { Some(s) })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
