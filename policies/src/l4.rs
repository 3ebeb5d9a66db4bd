//! Layer-4 types: protocols, port ranges, and the protocol/port prefixes the
//! policy map is keyed by.

use std::fmt;

use serde::{Deserialize, Serialize};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of SCTP.
pub const PROTO_SCTP: u8 = 132;

/// Why a port range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    /// Port 0 or above 65535.
    #[error("port {port} is out of range: use 1..=65535")]
    OutOfRange {
        /// The refused port.
        port: i64,
    },
    /// The end of the range is below its start.
    #[error("endPort {end} is below port {start}: endPort must be >= port")]
    Reversed {
        /// The first port.
        start: u16,
        /// The last port.
        end: u16,
    },
}

/// The protocol of a port rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
    /// Any protocol (CiliumNetworkPolicy `ANY`): TCP, UDP and SCTP when a
    /// port is given, every protocol otherwise.
    Any,
}

impl Protocol {
    /// The IP protocol number, `None` for [`Protocol::Any`].
    pub fn number(self) -> Option<u8> {
        match self {
            Self::Tcp => Some(PROTO_TCP),
            Self::Udp => Some(PROTO_UDP),
            Self::Sctp => Some(PROTO_SCTP),
            Self::Any => None,
        }
    }

    /// The protocols a port rule with this protocol expands to when it names
    /// ports.
    pub fn port_protocols(self) -> &'static [u8] {
        match self {
            Self::Tcp => &[PROTO_TCP],
            Self::Udp => &[PROTO_UDP],
            Self::Sctp => &[PROTO_SCTP],
            Self::Any => &[PROTO_TCP, PROTO_UDP, PROTO_SCTP],
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
            Self::Any => "ANY",
        })
    }
}

/// An inclusive, non-empty range of ports inside 1..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// A range `start..=end`; both ends must be 1..=65535 and `end >= start`.
    pub fn new(start: i64, end: i64) -> Result<Self, PortRangeError> {
        let check = |p: i64| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or(PortRangeError::OutOfRange { port: p })
        };
        let (s, e) = (check(start)?, check(end)?);
        if e < s {
            return Err(PortRangeError::Reversed { start: s, end: e });
        }
        Ok(Self { start: s, end: e })
    }

    /// One port.
    pub fn single(port: i64) -> Result<Self, PortRangeError> {
        Self::new(port, port)
    }

    /// First port.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// Last port (inclusive).
    pub fn end(&self) -> u16 {
        self.end
    }

    /// Whether `port` is inside.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// The aligned port blocks `(base, prefix_bits)` whose union is exactly
    /// this range, smallest count first-to-last.
    pub fn blocks(&self) -> Vec<(u16, u8)> {
        let mut out = Vec::new();
        let mut lo = u32::from(self.start);
        let hi = u32::from(self.end);
        while lo <= hi {
            // Largest aligned block starting at lo that stays within hi.
            let mut size: u32 = if lo == 0 {
                1 << 16
            } else {
                1 << lo.trailing_zeros()
            };
            while lo + size - 1 > hi {
                size >>= 1;
            }
            let bits = 16 - size.trailing_zeros();
            // lo < 65536 and bits <= 16 by construction.
            out.push((lo as u16, bits as u8));
            lo += size;
        }
        out
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// The protocol/port part of a policy-map key, as a prefix: every protocol,
/// every port of one protocol, or an aligned block of ports of one protocol.
///
/// Ordered so that, for one identity, a less specific match sorts before the
/// more specific ones it covers only within one protocol; use
/// [`L4Match::covers`] for containment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum L4Match {
    /// Every protocol and port.
    Any,
    /// Every port of one protocol.
    Proto(u8),
    /// A block of `2^(16 - prefix_bits)` ports of one protocol starting at
    /// `port` (which has its low bits cleared).
    Port {
        /// IP protocol number.
        proto: u8,
        /// First port of the block.
        port: u16,
        /// Number of leading port bits matched, 1..=16.
        prefix_bits: u8,
    },
}

impl L4Match {
    /// A port block, with `port` masked to `prefix_bits` (clamped to 1..=16).
    pub fn port(proto: u8, port: u16, prefix_bits: u8) -> Self {
        let bits = prefix_bits.clamp(1, 16);
        Self::Port {
            proto,
            port: port & port_mask(bits),
            prefix_bits: bits,
        }
    }

    /// Total prefix length beyond the identity: 0 for Any, 16 for a
    /// protocol (protocol byte and its padding), 16 + bits for ports.
    pub fn prefix_len(&self) -> u8 {
        match self {
            Self::Any => 0,
            Self::Proto(_) => 16,
            Self::Port { prefix_bits, .. } => 16 + prefix_bits,
        }
    }

    /// Whether a packet of `proto` to `port` matches.
    pub fn matches(&self, proto: u8, port: u16) -> bool {
        match *self {
            Self::Any => true,
            Self::Proto(p) => p == proto,
            Self::Port {
                proto: p,
                port: base,
                prefix_bits,
            } => p == proto && port & port_mask(prefix_bits) == base,
        }
    }

    /// Whether every packet `other` matches is matched by `self` (true for
    /// equal values).
    pub fn covers(&self, other: &L4Match) -> bool {
        match (*self, *other) {
            (Self::Any, _) => true,
            (Self::Proto(a), Self::Proto(b)) => a == b,
            (Self::Proto(a), Self::Port { proto, .. }) => a == proto,
            (
                Self::Port {
                    proto: pa,
                    port: a,
                    prefix_bits: ba,
                },
                Self::Port {
                    proto: pb,
                    port: b,
                    prefix_bits: bb,
                },
            ) => pa == pb && ba <= bb && b & port_mask(ba) == a,
            _ => false,
        }
    }

    /// Every match that strictly covers this one, most specific first.
    pub fn ancestors(&self) -> Vec<L4Match> {
        match *self {
            Self::Any => Vec::new(),
            Self::Proto(_) => vec![Self::Any],
            Self::Port {
                proto,
                port,
                prefix_bits,
            } => {
                let mut v: Vec<L4Match> = (1..prefix_bits)
                    .rev()
                    .map(|b| Self::port(proto, port, b))
                    .collect();
                v.push(Self::Proto(proto));
                v.push(Self::Any);
                v
            }
        }
    }
}

fn port_mask(bits: u8) -> u16 {
    if bits == 0 {
        0
    } else {
        u16::MAX << (16 - u32::from(bits.min(16)))
    }
}

impl fmt::Display for L4Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::Proto(p) => write!(f, "{}/*", proto_name(*p)),
            Self::Port {
                proto,
                port,
                prefix_bits,
            } => write!(f, "{}/{port}/{prefix_bits}", proto_name(*proto)),
        }
    }
}

fn proto_name(p: u8) -> String {
    match p {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        PROTO_SCTP => "sctp".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn covered(r: PortRange) -> Vec<u16> {
        let mut v = Vec::new();
        for (base, bits) in r.blocks() {
            let m = L4Match::port(6, base, bits);
            for p in 0..=u16::MAX {
                if m.matches(6, p) {
                    v.push(p);
                }
            }
        }
        v.sort_unstable();
        v
    }

    #[test]
    fn blocks_cover_exactly() {
        for (s, e) in [
            (1, 1),
            (111, 115),
            (1, 65535),
            (80, 81),
            (1024, 2047),
            (65535, 65535),
        ] {
            let r = PortRange::new(s, e).unwrap();
            let want: Vec<u16> = (r.start()..=r.end()).collect();
            assert_eq!(covered(r), want, "{s}-{e}");
        }
        assert_eq!(
            PortRange::new(1024, 2047).unwrap().blocks(),
            vec![(1024, 6)]
        );
        assert_eq!(PortRange::single(80).unwrap().blocks(), vec![(80, 16)]);
    }

    #[test]
    fn range_errors() {
        assert!(matches!(
            PortRange::new(0, 1),
            Err(PortRangeError::OutOfRange { port: 0 })
        ));
        assert!(matches!(
            PortRange::new(1, 65536),
            Err(PortRangeError::OutOfRange { .. })
        ));
        assert!(matches!(
            PortRange::new(9, 8),
            Err(PortRangeError::Reversed { .. })
        ));
    }

    #[test]
    fn covers_and_ancestors() {
        let p80 = L4Match::port(6, 80, 16);
        let blk = L4Match::port(6, 80, 12);
        assert!(blk.covers(&p80));
        assert!(!p80.covers(&blk));
        assert!(L4Match::Proto(6).covers(&p80));
        assert!(!L4Match::Proto(17).covers(&p80));
        assert!(L4Match::Any.covers(&L4Match::Proto(17)));
        let anc = p80.ancestors();
        assert_eq!(anc.len(), 17);
        assert!(anc.iter().all(|a| a.covers(&p80) && *a != p80));
        assert_eq!(L4Match::port(6, 81, 15), L4Match::port(6, 80, 15));
    }
}
