//! Which bucket a request counts against.
//!
//! A [`KeyExtractor`] reads a request's head and returns its rate-limit key, or `None`
//! when the request does not carry one (what happens then is the policy's
//! [`MissingKey`](crate::policy::MissingKey) choice). [`Key`] is a cheap, clonable
//! handle to any extractor, with constructors for the built-ins:
//!
//! | constructor | key | spec string |
//! |---|---|---|
//! | [`Key::header`] | a header's value | `header:x-api-key` |
//! | [`Key::peer_ip`] | the TCP peer's IP | `ip` |
//! | [`Key::client_ip`] | the client IP from `X-Forwarded-For`, trusting only listed proxies | `xff` |
//! | [`Key::forwarded`] | the same from RFC 7239 `Forwarded` | `forwarded` |
//! | [`Key::method`] | the method | `method` |
//! | [`Key::path`] | the path | `path` |
//! | [`Key::route`] | the route template (`/users/{id}`) when the router says, else the path | `route` |
//! | [`Key::global`] | one constant: a limit shared by all requests | `global` |
//! | [`Key::all`] | a tuple of the above | `header:x-api-key+path` |
//! | [`Key::from_fn`] | any closure | — |
//!
//! Tuples join their parts with `|` after percent-escaping `%` and `|` in each part, so
//! no client can craft one part to collide with another client's tuple.

mod cidr;
mod client_ip;
mod peer;
mod request;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use http::request::Parts;

pub use self::cidr::{Cidr, CidrError};
pub use self::client_ip::{ClientIp, ForwardedHeader, MAX_HOPS};
pub use self::peer::{peer_addr, PeerAddr, PeerIp};
pub use self::request::{Constant, Header, MethodKey, PathKey, RouteKey};

/// Reads the rate-limit key of a request.
///
/// Implemented for closures, so a custom key is one line:
///
/// ```
/// use tollgate::key::{Key, KeyExtractor};
///
/// let tenant = Key::from_fn(|req: &http::request::Parts| {
///     req.uri.host().map(|host| host.split('.').next().unwrap_or(host).to_owned())
/// });
/// let req = http::Request::get("http://acme.example.com/").body(()).unwrap();
/// assert_eq!(tenant.extract(&req.into_parts().0).as_deref(), Some("acme"));
/// ```
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key, or `None` when the request has none.
    fn extract(&self, request: &Parts) -> Option<String>;

    /// Appends the key to `out` and returns `true`, or returns `false` with `out` as it
    /// was when the request has none. The limiter builds each storage key this way,
    /// straight into its buffer; the default calls [`extract`](Self::extract), and an
    /// extractor that can write without a `String` of its own (as [`Header`] does)
    /// overrides it to save that allocation. Both must agree.
    fn extract_into(&self, request: &Parts, out: &mut String) -> bool {
        match self.extract(request) {
            Some(key) => {
                out.push_str(&key);
                true
            }
            None => false,
        }
    }
}

impl<F> KeyExtractor for F
where
    F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
{
    fn extract(&self, request: &Parts) -> Option<String> {
        self(request)
    }
}

/// A clonable handle to a [`KeyExtractor`], with the built-ins as constructors.
#[derive(Clone)]
pub struct Key {
    extractor: Arc<dyn KeyExtractor>,
    description: Arc<str>,
    source: Source,
}

/// Where a key comes from, to say why a request has none.
#[derive(Clone)]
enum Source {
    Header(Arc<str>),
    Peer,
    Tuple(Arc<[Key]>),
    Other,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.description)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl KeyExtractor for Key {
    fn extract(&self, request: &Parts) -> Option<String> {
        self.extractor.extract(request)
    }

    fn extract_into(&self, request: &Parts, out: &mut String) -> bool {
        self.extractor.extract_into(request, out)
    }
}

impl Key {
    fn new(extractor: impl KeyExtractor, description: impl Into<Arc<str>>) -> Self {
        Key {
            extractor: Arc::new(extractor),
            description: description.into(),
            source: Source::Other,
        }
    }

    fn with_source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// Why `request` has no key, in words a client or an operator can act on (only
    /// meaningful when [`extract`](KeyExtractor::extract) returned `None`).
    pub fn why_missing(&self, request: &Parts) -> String {
        match &self.source {
            Source::Header(name) => format!("no {name:?} header"),
            Source::Peer if peer_addr(request).is_none() => {
                "no peer address: serve with connect info \
                 (axum: `into_make_service_with_connect_info::<SocketAddr>()`; \
                 hyper: insert `tollgate::key::PeerAddr`)"
                    .to_owned()
            }
            Source::Tuple(parts) => parts
                .iter()
                .find(|part| part.extract(request).is_none())
                .map_or_else(|| self.fallback_reason(), |part| part.why_missing(request)),
            Source::Peer | Source::Other => self.fallback_reason(),
        }
    }

    fn fallback_reason(&self) -> String {
        format!("no {} key", self.description)
    }

    /// The value of header `name` (e.g. an API key). Missing or empty: no key.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name: a constant in code. For a name from
    /// configuration or any other input, use [`Key::try_header`] (or [`Key::from_str`]).
    pub fn header(name: &str) -> Self {
        Key::try_header(name).expect("a valid header name, as documented")
    }

    /// The value of header `name`, for names from configuration.
    ///
    /// # Errors
    ///
    /// [`InvalidHeaderName`] when `name` is not a valid header name.
    pub fn try_header(name: &str) -> Result<Self, InvalidHeaderName> {
        let header = Header::new(name)?;
        Ok(Key::new(header, format!("header:{name}")).with_source(Source::Header(name.into())))
    }

    /// The IP address of the TCP peer. Needs the peer address in the request's
    /// extensions: [`PeerAddr`], axum's `ConnectInfo<SocketAddr>` (feature `axum`) or
    /// tonic's `TcpConnectInfo` (feature `tonic`).
    pub fn peer_ip() -> Self {
        Key::new(PeerIp, "ip").with_source(Source::Peer)
    }

    /// The client IP as reported by `X-Forwarded-For`, believed only when the peer and
    /// each hop to the right of the client are in `trusted` proxies. With no trusted
    /// proxies this is exactly [`Key::peer_ip`]: a client can never choose its own key.
    pub fn client_ip(trusted: impl IntoIterator<Item = Cidr>) -> Self {
        Key::new(
            ClientIp::new(ForwardedHeader::XForwardedFor, trusted),
            "xff",
        )
        .with_source(Source::Peer)
    }

    /// As [`Key::client_ip`], reading the RFC 7239 `Forwarded` header's `for=`.
    pub fn forwarded(trusted: impl IntoIterator<Item = Cidr>) -> Self {
        Key::new(
            ClientIp::new(ForwardedHeader::Forwarded, trusted),
            "forwarded",
        )
        .with_source(Source::Peer)
    }

    /// The request method.
    pub fn method() -> Self {
        Key::new(MethodKey, "method")
    }

    /// The request path (without the query).
    pub fn path() -> Self {
        Key::new(PathKey, "path")
    }

    /// The route template the request matched (axum's `MatchedPath`, feature `axum`),
    /// so `/users/1` and `/users/2` share one bucket; the path where no router says.
    pub fn route() -> Self {
        Key::new(RouteKey, "route")
    }

    /// One key for every request: the limit is shared by all clients.
    pub fn global() -> Self {
        Key::new(Constant("global".into()), "global")
    }

    /// A fixed key.
    pub fn constant(value: impl Into<String>) -> Self {
        let value = value.into();
        let description = format!("const:{value}");
        Key::new(Constant(value), description)
    }

    /// Any extractor, typically a closure `Fn(&Parts) -> Option<String>`.
    pub fn from_fn(extractor: impl KeyExtractor) -> Self {
        Key::new(extractor, "custom")
    }

    /// A tuple: present only when every part is present.
    pub fn all(parts: impl IntoIterator<Item = Key>) -> Self {
        let parts: Vec<Key> = parts.into_iter().collect();
        let description = parts
            .iter()
            .map(|k| k.description.as_ref())
            .collect::<Vec<_>>()
            .join("+");
        let source = Source::Tuple(parts.iter().cloned().collect());
        Key::new(Tuple(parts), description).with_source(source)
    }

    /// Parses a spec string (see the module table), with `trusted` proxies for `xff`
    /// and `forwarded`. Parts join with `+`.
    ///
    /// # Errors
    ///
    /// [`KeySpecError`] naming the part that is not understood.
    pub fn parse_with(spec: &str, trusted: &[Cidr]) -> Result<Self, KeySpecError> {
        let parts = spec
            .split('+')
            .map(|part| Self::parse_one(part.trim(), trusted))
            .collect::<Result<Vec<_>, _>>()?;
        match <[Key; 1]>::try_from(parts) {
            Ok([one]) => Ok(one),
            Err(parts) => Ok(Key::all(parts)),
        }
    }

    fn parse_one(part: &str, trusted: &[Cidr]) -> Result<Self, KeySpecError> {
        let err = |reason: KeySpecProblem| KeySpecError {
            spec: part.to_owned(),
            reason,
        };
        let (kind, arg) = match part.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (part, None),
        };
        match (kind, arg) {
            ("header", Some(name)) => {
                Key::try_header(name).map_err(|e| err(KeySpecProblem::HeaderName(e)))
            }
            ("header", None) => Err(err(KeySpecProblem::NoHeaderName)),
            ("ip", None) => Ok(Key::peer_ip()),
            ("xff", None) => Ok(Key::client_ip(trusted.iter().copied())),
            ("forwarded", None) => Ok(Key::forwarded(trusted.iter().copied())),
            ("method", None) => Ok(Key::method()),
            ("path", None) => Ok(Key::path()),
            ("route", None) => Ok(Key::route()),
            ("global", None) => Ok(Key::global()),
            ("const", Some(value)) if !value.is_empty() => Ok(Key::constant(value)),
            _ => Err(err(KeySpecProblem::Unknown)),
        }
    }
}

impl FromStr for Key {
    type Err = KeySpecError;

    /// Parses a spec string with no trusted proxies (see [`Key::parse_with`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Key::parse_with(s, &[])
    }
}

/// A key spec string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key {spec:?}: {reason}")]
pub struct KeySpecError {
    /// The part that failed.
    pub spec: String,
    /// Why.
    pub reason: KeySpecProblem,
}

/// What is wrong with a key spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySpecProblem {
    /// Not one of the known kinds.
    #[error(
        "expected header:NAME, ip, xff, forwarded, method, path, route, global or const:VALUE"
    )]
    Unknown,
    /// `header` without a name.
    #[error("header needs a name: header:x-api-key")]
    NoHeaderName,
    /// `header:NAME` with a name that is not a valid header name.
    #[error(transparent)]
    HeaderName(#[from] InvalidHeaderName),
}

/// A header name that HTTP does not allow (empty, spaces, non-token characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid header name")]
pub struct InvalidHeaderName(pub String);

struct Tuple(Vec<Key>);

impl KeyExtractor for Tuple {
    fn extract(&self, request: &Parts) -> Option<String> {
        let mut out = String::new();
        for (i, part) in self.0.iter().enumerate() {
            let value = part.extract(request)?;
            if i > 0 {
                out.push('|');
            }
            escape_into(&mut out, &value);
        }
        Some(out)
    }
}

fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests;
