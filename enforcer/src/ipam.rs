//! Address management for the node's pod CIDR (pure).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::config::PodCidr;

/// The gateway every endpoint routes through: a link-local address that the
/// host side of each veth answers by proxy ARP, so no address of the pod
/// CIDR is spent on it and no bridge is needed.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// Why no address could be given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    /// Every address of the pod CIDR is in use.
    #[error("the pod CIDR {cidr} has no free address ({used} in use)")]
    Exhausted {
        /// The pod CIDR.
        cidr: String,
        /// Addresses in use.
        used: usize,
    },
}

/// Addresses given to endpoints, by `container_id/ifname` owner.
///
/// The network and broadcast addresses and the first host address (kept for
/// the node) are never given. Freed addresses are reused only after the
/// rest of the range was used, so that stale state about an old endpoint
/// (conntrack, a peer's cache) rarely meets a new one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ipam {
    cidr: PodCidr,
    owners: BTreeMap<String, Ipv4Addr>,
    next: u32,
}

impl Ipam {
    /// An empty allocator for `cidr`.
    pub fn new(cidr: PodCidr) -> Self {
        Self {
            cidr,
            owners: BTreeMap::new(),
            next: 2,
        }
    }

    /// The pod CIDR.
    pub fn cidr(&self) -> PodCidr {
        self.cidr
    }

    /// The address of `owner`, allocating one if it has none.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.owners.get(owner) {
            return Ok(*ip);
        }
        let size = self.cidr.size();
        let base = u32::from(self.cidr.network);
        let used: std::collections::BTreeSet<Ipv4Addr> = self.owners.values().copied().collect();
        // Offsets 2..size-1: skip network (0), the node's (1) and broadcast.
        let span = size.saturating_sub(3);
        for i in 0..span {
            let offset = 2 + (self.next.saturating_sub(2) + i) % span;
            let ip = Ipv4Addr::from(base + offset);
            if !used.contains(&ip) {
                self.next = offset + 1;
                self.owners.insert(owner.to_owned(), ip);
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted {
            cidr: String::from(self.cidr),
            used: self.owners.len(),
        })
    }

    /// Frees the address of `owner`; returns it if it had one.
    pub fn release(&mut self, owner: &str) -> Option<Ipv4Addr> {
        self.owners.remove(owner)
    }

    /// The address of `owner`, if any.
    pub fn get(&self, owner: &str) -> Option<Ipv4Addr> {
        self.owners.get(owner).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> PodCidr {
        PodCidr::try_from(s.to_owned()).unwrap()
    }

    #[test]
    fn allocates_idempotently_and_skips_reserved() {
        let mut ipam = Ipam::new(cidr("10.9.0.0/24"));
        let a = ipam.allocate("c1/eth0").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(ipam.allocate("c1/eth0").unwrap(), a);
        let b = ipam.allocate("c2/eth0").unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(ipam.release("c1/eth0"), Some(a));
        assert_eq!(ipam.release("c1/eth0"), None);
        let c = ipam.allocate("c3/eth0").unwrap();
        assert_ne!(c, a, "freed addresses are not reused at once");
    }

    #[test]
    fn exhaustion_is_an_error() {
        let mut ipam = Ipam::new(cidr("10.9.0.0/30"));
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 9, 0, 2));
        assert!(matches!(
            ipam.allocate("b"),
            Err(IpamError::Exhausted { used: 1, .. })
        ));
        ipam.release("a");
        assert_eq!(ipam.allocate("b").unwrap(), Ipv4Addr::new(10, 9, 0, 2));
    }
}
