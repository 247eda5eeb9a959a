//! [`Cidr`]: an IP network such as `10.0.0.0/8`, the unit of trust for [`ClientIp`].
//!
//! Our own type rather than a networking crate's, so that crate stays an implementation
//! detail: upgrading or replacing it never breaks a caller. It parses the notation
//! operators write in configuration (`10.0.0.0/8`, `2001:db8::/32`, or a bare address
//! meaning that one host), prints it back in canonical form, and (de)serialises as that
//! string.
//!
//! [`ClientIp`]: super::ClientIp

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// An IP network in CIDR notation: the addresses sharing the first
/// [`prefix_len`](Self::prefix_len) bits of [`addr`](Self::addr).
///
/// ```
/// use tollgate::key::Cidr;
///
/// let net: Cidr = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse().unwrap()));
/// assert!(!net.contains("192.0.2.1".parse().unwrap()));
/// // A bare address is that one host.
/// let host: Cidr = "192.0.2.7".parse().unwrap();
/// assert_eq!(host.to_string(), "192.0.2.7/32");
/// assert!("10.0.0.0/33".parse::<Cidr>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(IpNet);

impl Cidr {
    /// The network of `addr` with a prefix of `prefix_len` bits.
    ///
    /// # Errors
    ///
    /// [`CidrError`] when `prefix_len` exceeds the address's width (32 or 128).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        IpNet::new(addr, prefix_len)
            .map(Cidr)
            .map_err(|_| CidrError {
                input: format!("{addr}/{prefix_len}"),
                reason: CidrProblem::PrefixTooLong,
            })
    }

    /// The one-address network of `addr` (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Self {
        Cidr(IpNet::from(addr))
    }

    /// The address as given (not truncated to the prefix).
    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Whether `ip` is in this network. An IPv4 address is never in an IPv6 network,
    /// nor the reverse; [`ClientIp`](super::ClientIp) maps IPv4-mapped IPv6 peers to
    /// IPv4 before asking.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl From<IpAddr> for Cidr {
    fn from(addr: IpAddr) -> Self {
        Cidr::host(addr)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `addr/len`, or a bare address for one host. Surrounding spaces are not accepted:
    /// trim before parsing.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| CidrError {
            input: s.to_owned(),
            reason,
        };
        match s.split_once('/') {
            Some((addr, len)) => {
                let addr: IpAddr = addr.parse().map_err(|_| err(CidrProblem::Address))?;
                let len: u8 = len.parse().map_err(|_| err(CidrProblem::PrefixLength))?;
                IpNet::new(addr, len)
                    .map(Cidr)
                    .map_err(|_| err(CidrProblem::PrefixTooLong))
            }
            None => s
                .parse::<IpAddr>()
                .map(Cidr::host)
                .map_err(|_| err(CidrProblem::Address)),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A network that could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a network like 10.0.0.0/8: {reason}")]
pub struct CidrError {
    input: String,
    reason: CidrProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum CidrProblem {
    #[error("the address is not an IPv4 or IPv6 address")]
    Address,
    #[error("the prefix length is not a number from 0 to 128")]
    PrefixLength,
    #[error("the prefix length is longer than the address (32 bits for IPv4, 128 for IPv6)")]
    PrefixTooLong,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_networks_and_hosts_and_prints_them_canonically() {
        let net: Cidr = "2001:db8::/32".parse().unwrap();
        assert_eq!(net.prefix_len(), 32);
        assert!(net.contains("2001:db8::1".parse().unwrap()));
        assert!(!net.contains("2001:db9::1".parse().unwrap()));
        assert!(!net.contains("10.0.0.1".parse().unwrap()));
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        let zero: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(zero.contains("203.0.113.9".parse().unwrap()));
        assert_eq!(
            Cidr::new("10.0.0.0".parse().unwrap(), 8).unwrap(),
            "10.0.0.0/8".parse().unwrap()
        );
    }

    #[test]
    fn refuses_what_is_not_a_network_and_says_why() {
        for (input, reason) in [
            ("10.0.0.0/33", "longer than the address"),
            ("::/129", "longer than the address"),
            ("10.0.0.0/x", "not a number"),
            ("10.0.0/8", "not an IPv4 or IPv6"),
            ("", "not an IPv4 or IPv6"),
            (" 10.0.0.0/8", "not an IPv4 or IPv6"),
        ] {
            let err = input.parse::<Cidr>().unwrap_err().to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{input:?}: {err}");
        }
        assert!(Cidr::new("10.0.0.0".parse().unwrap(), 33).is_err());
    }

    #[test]
    fn serde_round_trips_as_the_string() {
        let nets: Vec<Cidr> = serde_json::from_str(r#"["10.0.0.0/8","192.0.2.7"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&nets).unwrap(),
            r#"["10.0.0.0/8","192.0.2.7/32"]"#
        );
        let bad = serde_json::from_str::<Vec<Cidr>>(r#"["10.0.0.0/99"]"#).unwrap_err();
        assert!(bad.to_string().contains("longer than the address"), "{bad}");
    }
}
