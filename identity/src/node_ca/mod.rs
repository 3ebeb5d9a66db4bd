//! The node CA: how node agents of a cluster obtain SVIDs from the one
//! place that holds the CA key, and only SVIDs for what they host.
//!
//! - A node joins once with a single-use join token ([`registry`]) and
//!   receives its node SVID, `spiffe://<td>/palisade/node/<name>`, for a
//!   key it generated ([`csr`]: the key never leaves the node).
//! - With that SVID (TLS 1.3 client authentication, [`crate::tls`]) it
//!   renews itself and asks for workload and identity SVIDs. The CA signs
//!   one only when the cluster store places an endpoint with that identity
//!   on the calling node ([`Signer::hosted`]); a compromised node gets
//!   nothing for identities the store does not place on it, and never
//!   another node's SVID or the CA's key. (Nodes publish their own
//!   endpoints, so such a node can claim an identity, visibly: see
//!   `docs/identity.md`, "What the CA trusts".)
//! - The server presents `spiffe://<td>/palisade/ca`; nodes accept no
//!   other.
//!
//! [`server`] is the gRPC service (`proto/node_ca.proto`), [`client`] the
//! node's side.

pub mod client;
pub mod csr;
pub mod registry;
pub mod server;

pub use client::{ClientError, DecodedBundle, NodeCaClient, SignedX509};
pub use registry::{NodeRegistry, Registry, RegistryError, TokenRecord};
pub use server::{serve, NodeCaService, Signer};

use crate::{SpiffeId, SpiffeIdError, TrustDomain};

/// The messages and gRPC service of `proto/node_ca.proto`.
#[allow(missing_docs)]
pub mod proto {
    tonic::include_proto!("palisade.ca.v1");
}

/// The SPIFFE ID of node `name`: `spiffe://<td>/palisade/node/<name>`.
pub fn node_id(td: &TrustDomain, name: &str) -> Result<SpiffeId, SpiffeIdError> {
    td.id_with_segments(["palisade", "node", name])
}

/// The SPIFFE ID the CA server presents: `spiffe://<td>/palisade/ca`.
pub fn server_id(td: &TrustDomain) -> Result<SpiffeId, SpiffeIdError> {
    td.id_with_segments(["palisade", "ca"])
}

/// The node a node SVID's ID names, if it is one of `td`'s.
pub fn node_name_of<'a>(td: &TrustDomain, id: &'a SpiffeId) -> Option<&'a str> {
    if id.trust_domain() != td {
        return None;
    }
    let name = id.path().strip_prefix("/palisade/node/")?;
    // A valid node name has no '/', so it is the path's last segment.
    registry::valid_node_name(name).then_some(name)
}

/// Whether an ID is reserved for palisade itself (nodes and the CA
/// server): never signed for a workload.
pub fn is_reserved(id: &SpiffeId) -> bool {
    id.path() == "/palisade" || id.path().starts_with("/palisade/")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_round_trip_and_nothing_else_is_a_node() {
        let td: TrustDomain = "example.org".parse().unwrap();
        let id = node_id(&td, "n-1.a").unwrap();
        assert_eq!(id.to_string(), "spiffe://example.org/palisade/node/n-1.a");
        assert_eq!(node_name_of(&td, &id), Some("n-1.a"));
        let other: TrustDomain = "other.org".parse().unwrap();
        assert_eq!(node_name_of(&other, &id), None);
        for s in [
            "spiffe://example.org/palisade/node/a/b",
            "spiffe://example.org/palisade/ca",
            "spiffe://example.org/ns/default/sa/x",
        ] {
            assert_eq!(node_name_of(&td, &s.parse().unwrap()), None, "{s}");
        }
        assert!(is_reserved(&server_id(&td).unwrap()));
        assert!(!is_reserved(
            &"spiffe://example.org/palisades".parse().unwrap()
        ));
    }
}
