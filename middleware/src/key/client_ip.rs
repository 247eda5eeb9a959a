//! The client's IP behind reverse proxies, without trusting what the client says.
//!
//! `X-Forwarded-For: client, proxy1, proxy2` is appended to by each proxy, but its
//! left part is whatever the client sent. The only entries worth believing are those
//! written by proxies we trust, so the chain is read **from the right**: start at the
//! TCP peer; while the current hop is a trusted proxy, step one entry left; the first
//! untrusted address is the client. A peer that is not a trusted proxy is itself the
//! client, whatever headers it sent — so with no trusted proxies configured this key
//! is the peer IP and cannot be spoofed.
//!
//! At most [`MAX_HOPS`] entries are read, so a hostile header costs bounded time. An
//! entry a trusted proxy wrote that is not an IP (`unknown`, garbage) ends the walk
//! with no key: the request gets the policy's missing-key outcome.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderName, FORWARDED};
use http::request::Parts;

use super::peer::{canonical, peer_addr};
use super::{Cidr, KeyExtractor};

/// The most forwarding hops examined.
pub const MAX_HOPS: usize = 32;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Which header carries the forwarding chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: 203.0.113.7, 10.0.0.2`
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=203.0.113.7;proto=https, for="[2001:db8::1]:4711"`
    Forwarded,
}

/// The client IP behind trusted proxies (see [`super::Key::client_ip`]).
#[derive(Debug, Clone)]
pub struct ClientIp {
    header: ForwardedHeader,
    trusted: Vec<Cidr>,
}

impl ClientIp {
    /// Reads `header`, believing only hops within `trusted`.
    pub fn new(header: ForwardedHeader, trusted: impl IntoIterator<Item = Cidr>) -> Self {
        ClientIp {
            header,
            trusted: trusted.into_iter().collect(),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The chain's entries, right to left, at most [`MAX_HOPS`].
    fn hops<'a>(&self, request: &'a Parts) -> Vec<&'a str> {
        let name = match self.header {
            ForwardedHeader::XForwardedFor => &X_FORWARDED_FOR,
            ForwardedHeader::Forwarded => &FORWARDED,
        };
        let mut hops = Vec::new();
        for value in request.headers.get_all(name).iter().rev() {
            // A non-text header value cannot hold addresses: it counts as one bad hop.
            let text = value.to_str().unwrap_or("\u{0}");
            for entry in text.rsplit(',') {
                if hops.len() == MAX_HOPS {
                    return hops;
                }
                hops.push(entry.trim());
            }
        }
        hops
    }

    /// The client IP, or `None` when a trusted hop reported something unusable.
    pub fn client(&self, request: &Parts) -> Option<IpAddr> {
        let mut current = canonical(peer_addr(request)?.ip());
        for hop in self.hops(request) {
            if !self.is_trusted(current) {
                return Some(current);
            }
            let parsed = match self.header {
                ForwardedHeader::XForwardedFor => parse_address(hop),
                ForwardedHeader::Forwarded => forwarded_for(hop).and_then(parse_address),
            };
            current = canonical(parsed?);
        }
        Some(current)
    }
}

impl KeyExtractor for ClientIp {
    fn extract(&self, request: &Parts) -> Option<String> {
        self.client(request).map(|ip| ip.to_string())
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`, `"[2001:db8::1]"`.
fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse().ok())
}

/// The `for=` parameter of one `Forwarded` element (case-insensitive name).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })
}
