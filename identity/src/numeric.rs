//! Numeric identities and the reserved ones, numbered as in Cilium.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A numeric security identity as the datapath sees it.
///
/// `0` is never an identity of a peer: in policy-map keys it means "any".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NumericIdentity(pub u32);

impl NumericIdentity {
    /// The wildcard used in policy keys; not an identity of any peer.
    pub const ANY: Self = Self(0);
    /// First identity of the cluster-scoped range (label-derived identities).
    pub const CLUSTER_MIN: u32 = 256;
    /// Last identity of the cluster-scoped range.
    pub const CLUSTER_MAX: u32 = 0x00ff_ffff;
    /// First identity of the node-local range (CIDR identities), as in Cilium.
    pub const LOCAL_MIN: u32 = 0x0100_0000;
    /// Last identity of the node-local range.
    pub const LOCAL_MAX: u32 = 0x01ff_ffff;

    /// The raw number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The reserved identity this number stands for, if it is one.
    pub fn reserved(self) -> Option<ReservedIdentity> {
        ReservedIdentity::ALL.into_iter().find(|r| r.id() == self)
    }

    /// Whether this is a label-derived identity of the cluster range.
    pub fn is_cluster(self) -> bool {
        (Self::CLUSTER_MIN..=Self::CLUSTER_MAX).contains(&self.0)
    }

    /// Whether this is a node-local (CIDR) identity.
    pub fn is_local(self) -> bool {
        (Self::LOCAL_MIN..=Self::LOCAL_MAX).contains(&self.0)
    }
}

impl fmt::Display for NumericIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<ReservedIdentity> for NumericIdentity {
    fn from(r: ReservedIdentity) -> Self {
        r.id()
    }
}

/// Identities with a fixed meaning, numbered as in Cilium
/// (`pkg/identity/numericidentity.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReservedIdentity {
    /// The local node itself (its own addresses).
    Host,
    /// Everything outside the cluster that has no more specific identity.
    World,
    /// Endpoints not managed by palisade.
    Unmanaged,
    /// Health-check endpoints.
    Health,
    /// Endpoints whose labels are not yet known.
    Init,
    /// Other nodes of the cluster.
    RemoteNode,
    /// The Kubernetes API server.
    KubeApiServer,
    /// The ingress proxy.
    Ingress,
}

impl ReservedIdentity {
    /// Every reserved identity, in numeric order.
    pub const ALL: [Self; 8] = [
        Self::Host,
        Self::World,
        Self::Unmanaged,
        Self::Health,
        Self::Init,
        Self::RemoteNode,
        Self::KubeApiServer,
        Self::Ingress,
    ];

    /// Its number.
    pub fn id(self) -> NumericIdentity {
        NumericIdentity(match self {
            Self::Host => 1,
            Self::World => 2,
            Self::Unmanaged => 3,
            Self::Health => 4,
            Self::Init => 5,
            Self::RemoteNode => 6,
            Self::KubeApiServer => 7,
            Self::Ingress => 8,
        })
    }

    /// Its name, as in the `reserved:` label and in Cilium's entity names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::World => "world",
            Self::Unmanaged => "unmanaged",
            Self::Health => "health",
            Self::Init => "init",
            Self::RemoteNode => "remote-node",
            Self::KubeApiServer => "kube-apiserver",
            Self::Ingress => "ingress",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_numbers_match_cilium() {
        assert_eq!(ReservedIdentity::Host.id(), NumericIdentity(1));
        assert_eq!(ReservedIdentity::World.id(), NumericIdentity(2));
        assert_eq!(ReservedIdentity::RemoteNode.id(), NumericIdentity(6));
        for r in ReservedIdentity::ALL {
            assert_eq!(r.id().reserved(), Some(r));
            assert!(!r.id().is_cluster());
        }
        assert_eq!(NumericIdentity(256).reserved(), None);
        assert!(NumericIdentity(256).is_cluster());
        assert!(NumericIdentity(0x0100_0000).is_local());
    }
}
