//! Security identities and SPIFFE workload identity.
//!
//! A security identity is a number that stands for a set of labels: every
//! endpoint with the same labels (pod labels, namespace labels, service
//! account) shares it. The datapath only sees numbers; policy selects label
//! sets; [`allocator`], [`labels`] and [`numeric`] are the mapping between
//! the two.
//!
//! The SPIFFE side speaks the SPIFFE specifications exactly: [`spiffe_id`]
//! parses IDs, [`x509`] validates X.509-SVIDs and chains against bundles,
//! [`ca`] is a certificate authority that issues X.509-SVIDs and rotates its
//! keys, [`jwt`] issues and validates JWT-SVIDs, and [`workload_api`] serves
//! the SPIFFE Workload API over gRPC. In a cluster, [`node_ca`] lets node
//! agents obtain SVIDs from the one CA over TLS 1.3 authenticated by
//! SVIDs ([`tls`]), only for what they host, and [`mutual_auth`] lets two
//! node agents prove to each other that they hold the SVIDs of two numeric
//! identities. Everything but the network endpoints (the Workload API
//! server, the node CA, mutual authentication) and the CA's key files is
//! pure and takes time from a clock it is given.
#![forbid(unsafe_code)]

pub mod allocator;
mod attached;
pub mod ca;
pub mod jwt;
pub mod labels;
pub mod mutual_auth;
pub mod node_ca;
pub mod numeric;
pub mod pem;
pub mod spiffe_id;
mod timestamp;
pub mod tls;
pub mod workload_api;
pub mod x509;

pub use allocator::{AllocatedIdentity, AllocatorError, AllocatorSnapshot, IdentityAllocator};
pub use labels::{Labels, LabelsError};
pub use numeric::{NumericIdentity, ReservedIdentity};
pub use spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};
