//! Keys read straight from the request head: a header, the method, the path, a constant.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

use super::{InvalidHeaderName, KeyExtractor};

/// The value of one header (see [`super::Key::header`]).
#[derive(Debug, Clone)]
pub struct Header(HeaderName);

impl Header {
    /// Extracts header `name`.
    ///
    /// # Errors
    ///
    /// When `name` is not a valid header name.
    pub fn new(name: &str) -> Result<Self, InvalidHeaderName> {
        HeaderName::from_bytes(name.as_bytes())
            .map(Header)
            .map_err(|_| InvalidHeaderName(name.to_owned()))
    }
}

impl KeyExtractor for Header {
    fn extract(&self, request: &Parts) -> Option<String> {
        let mut out = String::new();
        self.extract_into(request, &mut out).then_some(out)
    }

    fn extract_into(&self, request: &Parts, out: &mut String) -> bool {
        let Some(value) = first_value(&request.headers, &self.0) else {
            return false;
        };
        if value.is_empty() {
            return false;
        }
        // Header values may carry bytes that are not UTF-8. Decoding lossily would map
        // distinct values to one key, so opaque values are hex-encoded instead.
        match value.to_str() {
            Ok(text) => out.push_str(text),
            Err(_) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.reserve(2 + value.len() * 2);
                out.push_str("0x");
                for &b in value.as_bytes() {
                    out.push(char::from(HEX[usize::from(b >> 4)]));
                    out.push(char::from(HEX[usize::from(b & 0xf)]));
                }
            }
        }
        true
    }
}

/// The first value of header `name`, as `headers.get(name)` finds it.
///
/// A few headers are scanned instead: `get` hashes the name byte by byte on every call
/// (`perf`: 8 % of a memory-store decision for a custom header), where a scan compares
/// each name's kind and length first and usually stops there. Past
/// [`SCAN_UP_TO`] names the hash wins.
fn first_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if headers.keys_len() > SCAN_UP_TO {
        return headers.get(name);
    }
    // `iter` yields every value of a name in order, the first one first.
    headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// The most header names [`first_value`] scans.
const SCAN_UP_TO: usize = 16;

/// The request method (see [`super::Key::method`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct MethodKey;

impl KeyExtractor for MethodKey {
    fn extract(&self, request: &Parts) -> Option<String> {
        Some(request.method.as_str().to_owned())
    }
}

/// The request path (see [`super::Key::path`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct PathKey;

impl KeyExtractor for PathKey {
    fn extract(&self, request: &Parts) -> Option<String> {
        Some(request.uri.path().to_owned())
    }
}

/// The matched route template (see [`super::Key::route`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteKey;

impl KeyExtractor for RouteKey {
    fn extract(&self, request: &Parts) -> Option<String> {
        #[cfg(feature = "axum")]
        if let Some(matched) = request.extensions.get::<axum::extract::MatchedPath>() {
            return Some(matched.as_str().to_owned());
        }
        Some(request.uri.path().to_owned())
    }
}

/// A fixed key (see [`super::Key::global`]).
#[derive(Debug, Clone)]
pub struct Constant(pub String);

impl KeyExtractor for Constant {
    fn extract(&self, _: &Parts) -> Option<String> {
        Some(self.0.clone())
    }
}
