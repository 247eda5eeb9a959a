//! Building each request for the configured mode.
//!
//! Everything that does not change between requests — the path, each target's `Host` header,
//! `check` bodies and key header values for the fixed key set — is built once in
//! [`RequestFactory::new`]; the hot path only clones reference-counted buffers. `unique` keys
//! are the exception: a fresh key needs a fresh body or header.
//!
//! Requests are in origin form (`/check`, not `http://host/check`) with an explicit `Host`
//! header, as HTTP/1.1 sends them on a connection that is already open to the target.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;

use crate::config::{Config, Mode};
use crate::keys::{KeyId, KeySpace};

/// The `/check` request body (the decision API's contract).
#[derive(serde::Serialize)]
struct CheckBody<'a> {
    key: &'a str,
    limit: u64,
    window_ms: u64,
}

/// What varies per mode, prepared once.
#[derive(Debug)]
enum Prepared {
    Check {
        limit: u64,
        window_ms: u64,
        /// Serialized body per indexed key.
        bodies: Vec<Bytes>,
    },
    Proxy {
        method: Method,
        key_header: HeaderName,
        /// Header value per indexed key.
        values: Vec<HeaderValue>,
    },
}

/// Builds requests; owned by the scheduler.
#[derive(Debug)]
pub struct RequestFactory {
    /// Origin-form path and query, the same for every target.
    path: Uri,
    /// `Host` header per target, in round-robin order.
    hosts: Vec<HeaderValue>,
    prepared: Prepared,
    keys: KeySpace,
}

impl RequestFactory {
    /// Prepares requests for `config` over the key names in `keys`.
    pub fn new(config: &Config, keys: KeySpace) -> Self {
        let path = match &config.mode {
            Mode::Check => Uri::from_static("/check"),
            Mode::Proxy { path, .. } => path
                .parse()
                .expect("REQUEST_PATH is validated as a URI path by Config"),
        };
        let hosts = config
            .targets
            .iter()
            .map(|t| {
                HeaderValue::from_str(t.authority.as_str())
                    .expect("a URI authority is a valid header value")
            })
            .collect();
        let prepared = match &config.mode {
            Mode::Check => Prepared::Check {
                limit: config.policy.limit,
                window_ms: config.policy.window_ms,
                bodies: (0..keys.len())
                    .map(|i| check_body(keys.name(i), config.policy.limit, config.policy.window_ms))
                    .collect(),
            },
            Mode::Proxy {
                method, key_header, ..
            } => Prepared::Proxy {
                method: method.clone(),
                key_header: key_header.clone(),
                values: (0..keys.len())
                    .map(|i| header_value(keys.name(i)))
                    .collect(),
            },
        };
        RequestFactory {
            path,
            hosts,
            prepared,
            keys,
        }
    }

    /// The key names requests are built from.
    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }

    /// Builds the request for `target` (an index into the targets) carrying `key`.
    pub fn build(&self, target: usize, key: KeyId) -> Request<Full<Bytes>> {
        // Assembled through the setters rather than `Request::builder()`, which re-validates
        // every part: everything here is already valid, and this runs once per request.
        let (method, body, header) = match &self.prepared {
            Prepared::Check {
                limit,
                window_ms,
                bodies,
            } => {
                let body = match key {
                    KeyId::Indexed(i) => bodies[i].clone(),
                    KeyId::Unique(_) => check_body(&self.keys.name_of(key), *limit, *window_ms),
                };
                (
                    Method::POST,
                    body,
                    (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                )
            }
            Prepared::Proxy {
                method,
                key_header,
                values,
            } => {
                let value = match key {
                    KeyId::Indexed(i) => values[i].clone(),
                    KeyId::Unique(_) => header_value(&self.keys.name_of(key)),
                };
                (method.clone(), Bytes::new(), (key_header.clone(), value))
            }
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = self.path.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.hosts[target].clone());
        headers.insert(header.0, header.1);
        request
    }
}

fn check_body(key: &str, limit: u64, window_ms: u64) -> Bytes {
    let body = CheckBody {
        key,
        limit,
        window_ms,
    };
    Bytes::from(
        serde_json::to_vec(&body).expect("a struct of a string and integers always serializes"),
    )
}

fn header_value(key: &str) -> HeaderValue {
    // Key names are the validated prefix plus digits, letters and '-', so always valid.
    HeaderValue::from_str(key).expect("key names are built from a validated header-safe prefix")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_body_matches_the_contract() {
        let body = check_body("user-7", 100, 60_000);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(
            v,
            serde_json::json!({"key": "user-7", "limit": 100, "window_ms": 60000})
        );
    }

    #[test]
    fn requests_are_built_per_mode() {
        let check = Config::parse_from([
            "lg",
            "--targets",
            "http://127.0.0.1:9,http://localhost:7",
            "--keys",
            "fixed:2",
        ])
        .expect("valid");
        let f = RequestFactory::new(&check, KeySpace::new(check.keys, &check.key_prefix));
        let req = f.build(1, KeyId::Indexed(1));
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/check");
        assert_eq!(req.headers()[HOST], "localhost:7");

        let proxy = Config::parse_from([
            "lg",
            "--targets",
            "http://127.0.0.1:9",
            "--mode",
            "proxy",
            "--path",
            "/items?q=1",
            "--key-header",
            "x-user",
            "--keys",
            "unique",
        ])
        .expect("valid");
        let f = RequestFactory::new(&proxy, KeySpace::new(proxy.keys, &proxy.key_prefix));
        let req = f.build(0, KeyId::Unique(3));
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/items?q=1");
        assert_eq!(req.headers()[HOST], "127.0.0.1:9");
        let key = req.headers()["x-user"].to_str().expect("ascii");
        assert!(key.starts_with("user-") && key.ends_with("-3"), "{key}");
    }
}
