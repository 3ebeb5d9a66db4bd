//! Network policy model and compiler.
//!
//! - [`parse_documents`] reads a multi-document YAML stream of
//!   NetworkPolicy, CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and
//!   Namespace resources, checking each completely; errors name the file,
//!   the document, the YAML path and what would fix it.
//! - [`Policy`] is the normalised form the engine compiles.
//! - [`PolicyEngine`] keeps policies, identities and local endpoints and
//!   computes, incrementally, the policy-map entries of each endpoint (with
//!   deny precedence resolved for the datapath's two-step LPM lookup) and the
//!   CIDR identities to install in the ipcache.
//!
//! The crate is pure: no I/O, no syscalls.
#![forbid(unsafe_code)]

pub mod cidr;
pub mod compile;
pub mod engine;
pub mod l4;
pub mod model;
pub mod parse;
pub mod policy;
pub mod selector;

pub use cidr::{Cidr, CidrError};
pub use compile::{DirectionPolicy, EndpointPolicy, EntryKey, EntryValue, Verdict};
pub use engine::{EndpointView, MapDiff, PolicyEngine, RuleRef, IMPLICIT_ALLOW_RULE_ID};
pub use l4::{L4Match, PortRange, Protocol, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
pub use parse::{parse_documents, parse_policies, Location, ParseError, Resource};
pub use policy::{
    AuthMode, CidrSelector, Direction, DirectionSpec, Entity, Peer, Policy, PolicyError,
    PolicyKind, PolicyPart, PolicyRef, PortSpec, Rule,
};
pub use selector::{Requirement, Selector, SelectorError};
