//! CIDR prefixes (`10.0.0.0/8`, `fd00::/64`) as a checked newtype.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The text is not `ADDRESS/LENGTH`.
    #[error("{text:?} is not a CIDR: write ADDRESS/LENGTH, for example 10.0.0.0/8")]
    Syntax {
        /// The refused text.
        text: String,
    },
    /// The address part does not parse.
    #[error("{text:?} is not a CIDR: {address:?} is not an IPv4 or IPv6 address")]
    Address {
        /// The refused text.
        text: String,
        /// The address part.
        address: String,
    },
    /// The prefix length is not a number or too long for the address family.
    #[error("{text:?} is not a CIDR: the prefix length must be 0..={max}")]
    PrefixLength {
        /// The refused text.
        text: String,
        /// The longest prefix of the address family.
        max: u8,
    },
    /// Bits below the prefix length are set.
    #[error("{text:?} has host bits set: did you mean {canonical}?")]
    HostBits {
        /// The refused text.
        text: String,
        /// The network address with the host bits cleared.
        canonical: String,
    },
}

/// A network prefix: an address whose bits below `len` are all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// Builds a prefix, refusing host bits and over-long prefixes.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, CidrError> {
        let max = max_len(addr);
        let text = format!("{addr}/{len}");
        if len > max {
            return Err(CidrError::PrefixLength { text, max });
        }
        let canonical = mask(addr, len);
        if canonical != addr {
            return Err(CidrError::HostBits {
                text,
                canonical: format!("{canonical}/{len}"),
            });
        }
        Ok(Self { addr, len })
    }

    /// A single IPv4 host (`/32`).
    pub fn host_v4(addr: Ipv4Addr) -> Self {
        Self {
            addr: IpAddr::V4(addr),
            len: 32,
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this is an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `other` lies inside this prefix (a prefix contains itself).
    /// Prefixes of different families never contain each other.
    pub fn contains(&self, other: &Cidr) -> bool {
        if self.addr.is_ipv4() != other.addr.is_ipv4() || other.len < self.len {
            return false;
        }
        mask(other.addr, self.len) == self.addr
    }

    /// Whether the address lies inside this prefix.
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4() && mask(addr, self.len) == self.addr
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax { text: s.to_owned() };
        let (addr, len) = s.split_once('/').ok_or_else(syntax)?;
        let ip: IpAddr = addr.parse().map_err(|_| CidrError::Address {
            text: s.to_owned(),
            address: addr.to_owned(),
        })?;
        let max = max_len(ip);
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max && !len.starts_with('+'))
            .ok_or_else(|| CidrError::PrefixLength {
                text: s.to_owned(),
                max,
            })?;
        let canonical = mask(ip, len);
        if canonical != ip {
            return Err(CidrError::HostBits {
                text: s.to_owned(),
                canonical: format!("{canonical}/{len}"),
            });
        }
        Ok(Self { addr: ip, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.is_ipv4());
        assert_eq!(c.prefix_len(), 8);
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let c6: Cidr = "fd00::/64".parse().unwrap();
        assert!(!c6.is_ipv4());
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix_len(), 0);
    }

    #[test]
    fn refuses_bad_input() {
        assert!(matches!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBits { canonical, .. }) if canonical == "10.0.0.0/8"
        ));
        assert!(matches!(
            "10.0.0.0".parse::<Cidr>(),
            Err(CidrError::Syntax { .. })
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixLength { .. })
        ));
        assert!(matches!(
            "10.0.0.0/+8".parse::<Cidr>(),
            Err(CidrError::PrefixLength { .. })
        ));
        assert!(matches!(
            "nope/8".parse::<Cidr>(),
            Err(CidrError::Address { .. })
        ));
        assert!(Cidr::new("10.0.0.1".parse().unwrap(), 8).is_err());
    }

    #[test]
    fn containment() {
        let a: Cidr = "10.0.0.0/8".parse().unwrap();
        let b: Cidr = "10.1.0.0/16".parse().unwrap();
        let c: Cidr = "11.0.0.0/8".parse().unwrap();
        let v6: Cidr = "::/0".parse().unwrap();
        assert!(a.contains(&b));
        assert!(a.contains(&a));
        assert!(!b.contains(&a));
        assert!(!a.contains(&c));
        assert!(!v6.contains(&a));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(&c));
        assert!(a.contains_addr("10.9.9.9".parse().unwrap()));
    }
}
