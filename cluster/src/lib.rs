//! Cluster state shared between nodes through etcd, as Cilium's kvstore
//! mode does: cluster-wide identities (allocated with transactions and
//! garbage-collected), the node registry with pod CIDRs allocated without
//! overlap, and every node's endpoints. See `docs/cluster.md`.
//!
//! The pure parts ([`cidr`], [`keys`], [`view`]) take data and return data;
//! [`session`] is the I/O edge: one node's lease, writes and watch.
#![forbid(unsafe_code)]

pub mod cidr;
pub mod config;
mod etcd;
pub mod identities;
pub mod keys;
pub mod session;
pub mod view;

pub use cidr::{CidrPool, PodCidr};
pub use config::{ClusterConfig, EtcdConfig, EtcdTls};
pub use etcd::StoreError;
pub use identities::AllocError;
pub use keys::Keys;
pub use session::{Session, SessionError, SessionStatus};
pub use view::{Change, ClusterView, EndpointRecord, Malformed, NodeRecord, DEFAULT_TUNNEL_PORT};
