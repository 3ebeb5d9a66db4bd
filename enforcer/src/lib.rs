//! The palisade node agent: loads and attaches the eBPF datapath, owns its
//! maps, manages endpoints and identities, compiles policy into the maps,
//! serves the local API; plus the CNI plugin and the CLI built on it.

pub mod agent;
pub mod auth;
pub mod cli;
pub mod cni;
pub mod config;
pub mod datapath;
pub mod fanotify;
pub mod identity;
pub mod ipam;
pub mod overlay;
pub mod probe;
pub mod runtime;
pub mod state;
pub mod util;
