//! IPv4 pod CIDRs and their allocation from a cluster pool without overlap.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 prefix for pods: a node's pod CIDR, or the cluster pool they are
/// cut from. Host bits are zero and the length is 8..=30, by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PodCidr {
    /// Network address (host bits zero).
    pub network: Ipv4Addr,
    /// Prefix length, 8..=30.
    pub prefix_len: u8,
}

impl PodCidr {
    /// The prefix `network/prefix_len`, if it is a valid pod CIDR.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self, String> {
        if !(8..=30).contains(&prefix_len) {
            return Err(format!(
                "prefix length {prefix_len} is out of range: a pod CIDR is /8 to /30"
            ));
        }
        let masked = u32::from(network) & mask(prefix_len);
        if masked != u32::from(network) {
            return Err(format!(
                "{network}/{prefix_len} has host bits set; did you mean {}/{prefix_len}?",
                Ipv4Addr::from(masked)
            ));
        }
        Ok(Self {
            network,
            prefix_len,
        })
    }

    /// Number of addresses in the prefix.
    pub fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix_len))
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.network)
    }

    /// Whether the two prefixes share an address.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The last address.
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix_len))
    }
}

fn mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

impl FromStr for PodCidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR: expected a.b.c.d/len"))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|_| format!("{len:?} is not a prefix length"))?;
        Self::new(network, prefix_len)
    }
}

impl TryFrom<String> for PodCidr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PodCidr> for String {
    fn from(c: PodCidr) -> Self {
        c.to_string()
    }
}

impl fmt::Display for PodCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// The cluster's pod address space and the size of each node's share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrPool {
    /// The whole space.
    pub pool: PodCidr,
    /// Prefix length of a node's CIDR (longer than or equal to the pool's).
    pub node_prefix_len: u8,
}

impl CidrPool {
    /// A pool; `node_prefix_len` must be within the pool and at most /30.
    pub fn new(pool: PodCidr, node_prefix_len: u8) -> Result<Self, String> {
        if node_prefix_len < pool.prefix_len || node_prefix_len > 30 {
            return Err(format!(
                "a node's pod CIDR of /{node_prefix_len} does not fit the pool {pool}: use /{} to /30",
                pool.prefix_len
            ));
        }
        Ok(Self {
            pool,
            node_prefix_len,
        })
    }

    /// How many node CIDRs the pool holds.
    pub fn capacity(&self) -> u64 {
        1u64 << (self.node_prefix_len - self.pool.prefix_len)
    }

    /// The `index`th node CIDR of the pool.
    fn nth(&self, index: u64) -> Option<PodCidr> {
        if index >= self.capacity() {
            return None;
        }
        let step = 1u64 << (32 - u32::from(self.node_prefix_len));
        let network = u64::from(u32::from(self.pool.network)) + index * step;
        let network = Ipv4Addr::from(u32::try_from(network).ok()?);
        PodCidr::new(network, self.node_prefix_len).ok()
    }

    /// The first node CIDR of the pool that overlaps none of `claimed`, in
    /// address order after `preferred` (which is returned itself when it is
    /// a free CIDR of this pool).
    pub fn first_free<'a>(
        &self,
        claimed: impl IntoIterator<Item = &'a PodCidr> + Clone,
        preferred: Option<PodCidr>,
    ) -> Option<PodCidr> {
        let free = |c: &PodCidr| !claimed.clone().into_iter().any(|o| o.overlaps(c));
        if let Some(p) = preferred {
            if p.prefix_len == self.node_prefix_len && self.pool.contains(p.network) && free(&p) {
                return Some(p);
            }
        }
        (0..self.capacity()).filter_map(|i| self.nth(i)).find(free)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidr(s: &str) -> PodCidr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_errors() {
        assert_eq!(cidr("10.1.2.0/24").to_string(), "10.1.2.0/24");
        let e = "10.0.0.1/24".parse::<PodCidr>().unwrap_err();
        assert!(e.contains("10.0.0.0/24"), "{e}");
        assert!("10.0.0.0/31".parse::<PodCidr>().is_err());
        assert!("10.0.0.0".parse::<PodCidr>().is_err());
        assert!("x/24".parse::<PodCidr>().is_err());
    }

    #[test]
    fn contains_overlaps_last() {
        let c = cidr("10.1.2.0/24");
        assert!(c.contains(Ipv4Addr::new(10, 1, 2, 77)));
        assert!(!c.contains(Ipv4Addr::new(10, 1, 3, 1)));
        assert_eq!(c.size(), 256);
        assert_eq!(c.last(), Ipv4Addr::new(10, 1, 2, 255));
        assert!(cidr("10.1.0.0/16").overlaps(&c));
        assert!(c.overlaps(&cidr("10.1.0.0/16")));
        assert!(!c.overlaps(&cidr("10.1.3.0/24")));
    }

    #[test]
    fn allocation_skips_claimed_and_prefers() {
        let pool = CidrPool::new(cidr("10.200.0.0/16"), 24).unwrap();
        assert_eq!(pool.capacity(), 256);
        let claimed = [cidr("10.200.0.0/24"), cidr("10.200.2.0/23")];
        assert_eq!(pool.first_free(&claimed, None), Some(cidr("10.200.1.0/24")));
        assert_eq!(
            pool.first_free(&claimed, Some(cidr("10.200.9.0/24"))),
            Some(cidr("10.200.9.0/24"))
        );
        assert_eq!(
            pool.first_free(&claimed, Some(cidr("10.200.3.0/24"))),
            Some(cidr("10.200.1.0/24")),
            "a claimed preference is not taken"
        );
        assert_eq!(
            pool.first_free(&claimed, Some(cidr("10.9.0.0/24"))),
            Some(cidr("10.200.1.0/24")),
            "a preference outside the pool is not taken"
        );
        let full = [cidr("10.200.0.0/16")];
        assert_eq!(pool.first_free(&full, None), None);
        assert!(CidrPool::new(cidr("10.200.0.0/16"), 8).is_err());
    }

    proptest! {
        #[test]
        fn allocations_never_overlap(node_len in 20u8..=26, n in 1usize..40) {
            let pool = CidrPool::new(cidr("10.0.0.0/16"), node_len).unwrap();
            let mut claimed: Vec<PodCidr> = Vec::new();
            for _ in 0..n {
                match pool.first_free(&claimed, None) {
                    Some(c) => {
                        prop_assert!(claimed.iter().all(|o| !o.overlaps(&c)));
                        prop_assert!(pool.pool.contains(c.network) && pool.pool.contains(c.last()));
                        claimed.push(c);
                    }
                    None => prop_assert_eq!(claimed.len() as u64, pool.capacity()),
                }
            }
        }
    }
}
