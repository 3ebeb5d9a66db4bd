//! What the auth manager knows of the cluster: which identities this node
//! hosts, which other node hosts which identity, and which pairs policy
//! requires authentication for. The agent computes it after every change
//! and hands it over whole.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use palisade_bpf::abi::AuthKey;

/// A snapshot of the agent's state, as authentication needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthView {
    /// Identities of the endpoints on this node.
    pub local: BTreeSet<u32>,
    /// This node's own addresses (a handshake from one of them is this
    /// node's own).
    pub addresses: BTreeSet<Ipv4Addr>,
    /// Other nodes by underlay address: their names.
    pub nodes: BTreeMap<Ipv4Addr, String>,
    /// Identities of other nodes' endpoints: the nodes hosting each.
    pub remote: BTreeMap<u32, BTreeSet<Ipv4Addr>>,
    /// Every pair this node's policy requires authentication for now.
    pub needed: BTreeSet<AuthKey>,
    /// Whether the agent has restored its whole state: only then may
    /// entries be collected as garbage.
    pub complete: bool,
}

/// One policy entry that requires authentication: this node's endpoint
/// identity, the peer identity (0 = every peer), the auth type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Requirement {
    /// Identity of the endpoint on this node.
    pub local: u32,
    /// Identity of the peer; 0 for every identity.
    pub remote: u32,
    /// `AUTH_TYPE_*`.
    pub auth_type: u8,
}

impl AuthView {
    /// Whether `node` (`None` = this node) hosts `identity`, as far as this
    /// node knows.
    pub fn hosts(&self, node: Option<Ipv4Addr>, identity: u32) -> bool {
        match node {
            None => self.local.contains(&identity),
            Some(addr) => self
                .remote
                .get(&identity)
                .is_some_and(|nodes| nodes.contains(&addr)),
        }
    }

    /// Whether both ends of a pair exist: its local identity here, its
    /// remote identity on its node.
    pub fn plausible(&self, key: &AuthKey) -> bool {
        self.local.contains(&key.local_identity)
            && self.hosts(key.remote_node(), key.remote_identity)
    }

    /// The name of a node (`local` for this one), or its address when
    /// it is not (or no longer) known; `unknown` for the datapath's
    /// `AUTH_NODE_UNKNOWN`.
    pub fn node_name(&self, node: Option<Ipv4Addr>) -> String {
        match node {
            None => "local".to_owned(),
            Some(Ipv4Addr::BROADCAST) => "unknown".to_owned(),
            Some(addr) => self
                .nodes
                .get(&addr)
                .cloned()
                .unwrap_or_else(|| addr.to_string()),
        }
    }

    /// The node a handshake from `ip` comes from: `Ok(None)` for this node,
    /// `Ok(Some(address))` for another node, an error for anything else.
    pub fn node_of(&self, ip: std::net::IpAddr) -> Result<Option<Ipv4Addr>, String> {
        let v4 = match ip {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(a) => a
                .to_ipv4_mapped()
                .ok_or_else(|| format!("{ip} is not a node of the cluster"))?,
        };
        if v4.is_loopback() || self.addresses.contains(&v4) {
            return Ok(None);
        }
        if self.nodes.contains_key(&v4) {
            return Ok(Some(v4));
        }
        Err(format!("{v4} is not the address of a node of the cluster"))
    }

    /// Every node hosting `identity`: `None` for this node.
    fn nodes_hosting(&self, identity: u32) -> impl Iterator<Item = Option<Ipv4Addr>> + '_ {
        let here = self.local.contains(&identity).then_some(None);
        let there = self
            .remote
            .get(&identity)
            .into_iter()
            .flatten()
            .map(|a| Some(*a));
        here.into_iter().chain(there)
    }

    /// Sets `needed` from policy: every pair of a requirement with a node
    /// hosting its peer. A requirement toward every peer (identity 0)
    /// stands for every identity hosted anywhere.
    pub fn set_needed(&mut self, requirements: impl IntoIterator<Item = Requirement>) {
        let mut needed = BTreeSet::new();
        let everyone: BTreeSet<u32> = self
            .local
            .iter()
            .chain(self.remote.keys())
            .copied()
            .collect();
        for r in requirements {
            let peers: Vec<u32> = if r.remote == 0 {
                everyone.iter().copied().collect()
            } else {
                vec![r.remote]
            };
            for peer in peers {
                for node in self.nodes_hosting(peer) {
                    needed.insert(AuthKey::new(r.local, peer, node, r.auth_type));
                }
            }
        }
        self.needed = needed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N2: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
    const N3: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 3);

    fn view() -> AuthView {
        AuthView {
            local: [100, 101].into(),
            addresses: [Ipv4Addr::new(192, 168, 0, 1)].into(),
            nodes: [(N2, "n2".to_owned()), (N3, "n3".to_owned())].into(),
            remote: [(200, [N2, N3].into()), (101, [N2].into())].into(),
            needed: BTreeSet::new(),
            complete: true,
        }
    }

    #[test]
    fn a_requirement_needs_every_node_hosting_the_peer() {
        let mut v = view();
        v.set_needed([
            Requirement {
                local: 100,
                remote: 200,
                auth_type: 1,
            },
            Requirement {
                local: 100,
                remote: 101,
                auth_type: 1,
            },
            Requirement {
                local: 101,
                remote: 999,
                auth_type: 1,
            },
        ]);
        let want: BTreeSet<AuthKey> = [
            AuthKey::new(100, 200, Some(N2), 1),
            AuthKey::new(100, 200, Some(N3), 1),
            AuthKey::new(100, 101, None, 1),
            AuthKey::new(100, 101, Some(N2), 1),
        ]
        .into();
        assert_eq!(
            v.needed, want,
            "999 is hosted nowhere: nothing to authenticate"
        );
    }

    #[test]
    fn a_wildcard_requirement_covers_every_hosted_identity() {
        let mut v = view();
        v.set_needed([Requirement {
            local: 100,
            remote: 0,
            auth_type: 2,
        }]);
        assert_eq!(v.needed.len(), 5);
        assert!(v.needed.contains(&AuthKey::new(100, 100, None, 2)));
        assert!(v.needed.contains(&AuthKey::new(100, 200, Some(N3), 2)));
    }

    #[test]
    fn plausibility_and_names() {
        let v = view();
        assert!(v.plausible(&AuthKey::new(100, 200, Some(N3), 1)));
        assert!(!v.plausible(&AuthKey::new(100, 101, Some(N3), 1)));
        assert!(!v.plausible(&AuthKey::new(300, 200, Some(N2), 1)));
        assert!(v.plausible(&AuthKey::new(101, 100, None, 1)));
        assert_eq!(v.node_name(Some(N2)), "n2");
        assert_eq!(v.node_name(None), "local");
        assert_eq!(v.node_name(Some(Ipv4Addr::BROADCAST)), "unknown");
        assert_eq!(v.node_name(Some(Ipv4Addr::new(1, 2, 3, 4))), "1.2.3.4");
        assert_eq!(v.node_of("127.0.0.1".parse().unwrap()), Ok(None));
        assert_eq!(v.node_of("192.168.0.1".parse().unwrap()), Ok(None));
        assert_eq!(
            v.node_of("::ffff:192.168.0.2".parse().unwrap()),
            Ok(Some(N2))
        );
        assert!(v.node_of("10.9.9.9".parse().unwrap()).is_err());
    }
}
