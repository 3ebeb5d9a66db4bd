//! End-to-end harness of palisade: network namespaces, nodes running the
//! real agent, pods set up by the real CNI plugin, echo servers, probes, an
//! etcd server and an underlay network for multi-node clusters, and the
//! scenario runner behind `palisade scenario run`.
//!
//! Everything a [`Topology`] creates carries its run id (`<pid>r<seq>`) and
//! is removed when it is dropped (also on panic), on SIGINT/SIGTERM, or, if
//! the process died, by [`cleanup_stale`] at the start of the next run.

pub mod cleanup;
pub mod cni;
mod daemon;
pub mod echo;
pub mod etcd;
pub mod netns;
pub mod node;
pub mod probe;
pub mod scenario;
#[allow(unsafe_code)]
mod sys;
pub mod topology;
pub mod vm;

pub use cleanup::{cleanup_stale, StaleReport};
pub use echo::EchoServer;
pub use etcd::{EtcdError, EtcdServer};
pub use netns::NetNs;
pub use node::Node;
pub use probe::{PortProto, ProbeJob, ProbeOutcome, Protocol};
pub use topology::{locate_binary, Pod, PodSpec, Topology, TopologyBuilder, TopologyError};
