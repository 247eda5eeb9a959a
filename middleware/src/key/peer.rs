//! The TCP peer's address, wherever the server put it.

use std::net::{IpAddr, SocketAddr};

use http::request::Parts;

use super::KeyExtractor;

/// The TCP peer of a request, as a request extension.
///
/// Servers that are neither axum nor tonic (a bare hyper server, the sidecar) insert
/// this so that [`Key::peer_ip`](super::Key::peer_ip) and
/// [`Key::client_ip`](super::Key::client_ip) can see the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The peer address from [`PeerAddr`], axum's `ConnectInfo<SocketAddr>` (feature
/// `axum`) or tonic's `TcpConnectInfo` (feature `tonic`), in that order.
pub fn peer_addr(request: &Parts) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = request.extensions.get::<PeerAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) = request
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*addr);
    }
    #[cfg(feature = "tonic")]
    if let Some(info) = request
        .extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
    {
        return info.remote_addr();
    }
    None
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) is the IPv4 client.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The TCP peer's IP address (see [`super::Key::peer_ip`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerIp;

impl KeyExtractor for PeerIp {
    fn extract(&self, request: &Parts) -> Option<String> {
        peer_addr(request).map(|a| canonical(a.ip()).to_string())
    }
}
