//! Keys read straight from the request head: a header, the method, the path, a constant.

use http::header::HeaderName;
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
        let Some(value) = request.headers.get(&self.0) else {
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
