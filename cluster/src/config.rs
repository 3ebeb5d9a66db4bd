//! The `cluster:` section of the agent's configuration.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cidr::{CidrPool, PodCidr};
use crate::view::DEFAULT_TUNNEL_PORT;

/// How this node joins a cluster through etcd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ClusterConfig {
    /// The etcd cluster.
    pub etcd: EtcdConfig,
    /// This node's underlay address, where other nodes send its pods'
    /// traffic (default: the address this node uses to reach etcd).
    #[serde(default)]
    pub node_address: Option<Ipv4Addr>,
    /// The address space pod CIDRs are allocated from.
    #[serde(default = "default_pool")]
    pub pod_cidr_pool: PodCidr,
    /// Prefix length of each node's pod CIDR.
    #[serde(default = "default_node_prefix_len")]
    pub node_cidr_prefix_len: u8,
    /// Lifetime of the node's lease, in seconds: a node whose agent is gone
    /// this long disappears from the other nodes.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
    /// How long an identity nobody references is kept, in seconds.
    #[serde(default = "default_gc_grace")]
    pub identity_gc_grace_secs: u64,
    /// Time limit of one request to etcd, in milliseconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// UDP port of the VXLAN tunnel between nodes.
    #[serde(default = "default_tunnel_port")]
    pub tunnel_port: u16,
}

/// Where etcd is and how to authenticate to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct EtcdConfig {
    /// Client URLs (`http://host:2379` or `https://host:2379`).
    pub endpoints: Vec<String>,
    /// TLS to etcd (required for `https://` endpoints).
    #[serde(default)]
    pub tls: Option<EtcdTls>,
    /// User name for etcd authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password of `username` (a trailing newline is
    /// ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// TLS files for etcd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct EtcdTls {
    /// CA certificate(s) that sign etcd's server certificate (PEM).
    pub ca_file: PathBuf,
    /// Client certificate (PEM), for etcd's `--client-cert-auth`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Key of the client certificate (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name to verify etcd's certificate against (default: the endpoint's
    /// host).
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_pool() -> PodCidr {
    PodCidr {
        network: Ipv4Addr::new(10, 200, 0, 0),
        prefix_len: 16,
    }
}
fn default_node_prefix_len() -> u8 {
    24
}
fn default_lease_ttl() -> u64 {
    15
}
fn default_gc_grace() -> u64 {
    300
}
fn default_request_timeout() -> u64 {
    2000
}
fn default_tunnel_port() -> u16 {
    DEFAULT_TUNNEL_PORT
}

impl ClusterConfig {
    /// A configuration with every default, for these etcd endpoints.
    pub fn with_endpoints(endpoints: Vec<String>) -> Self {
        Self {
            etcd: EtcdConfig {
                endpoints,
                tls: None,
                username: None,
                password_file: None,
            },
            node_address: None,
            pod_cidr_pool: default_pool(),
            node_cidr_prefix_len: default_node_prefix_len(),
            lease_ttl_secs: default_lease_ttl(),
            identity_gc_grace_secs: default_gc_grace(),
            request_timeout_ms: default_request_timeout(),
            tunnel_port: default_tunnel_port(),
        }
    }

    /// Checks what serde cannot; the error names the field.
    pub fn check(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((format!("cluster.{f}"), m));
        if self.etcd.endpoints.is_empty() {
            return err("etcd.endpoints", "name at least one etcd client URL".into());
        }
        for (i, e) in self.etcd.endpoints.iter().enumerate() {
            let tls = e.starts_with("https://");
            if !tls && !e.starts_with("http://") {
                return err(
                    &format!("etcd.endpoints[{i}]"),
                    format!("{e:?} is not an http:// or https:// URL"),
                );
            }
            if !tls && self.etcd.tls.is_some() {
                return err(
                    &format!("etcd.endpoints[{i}]"),
                    format!(
                        "{e} is plain http but etcd.tls is set: use an https:// URL, or remove tls"
                    ),
                );
            }
            if tls && self.etcd.tls.is_none() {
                return err(
                    "etcd.tls",
                    format!("{e} is https: give tls.ca_file (and cert_file/key_file for client certificates)"),
                );
            }
        }
        if let Some(t) = &self.etcd.tls {
            if t.cert_file.is_some() != t.key_file.is_some() {
                return err(
                    "etcd.tls",
                    "give both cert_file and key_file, or neither".into(),
                );
            }
        }
        if self.etcd.username.is_some() != self.etcd.password_file.is_some() {
            return err(
                "etcd",
                "give both username and password_file, or neither".into(),
            );
        }
        if let Err(m) = self.pool() {
            return err("node_cidr_prefix_len", m);
        }
        if !(2..=3600).contains(&self.lease_ttl_secs) {
            return err("lease_ttl_secs", "must be 2 to 3600".into());
        }
        if !(100..=60_000).contains(&self.request_timeout_ms) {
            return err("request_timeout_ms", "must be 100 to 60000".into());
        }
        if self.tunnel_port == 0 {
            return err("tunnel_port", "must not be 0".into());
        }
        Ok(())
    }

    /// The pod CIDR pool.
    pub fn pool(&self) -> Result<CidrPool, String> {
        CidrPool::new(self.pod_cidr_pool, self.node_cidr_prefix_len)
    }

    /// Lifetime of the node's lease.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }

    /// Time limit of one request.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Grace period of unreferenced identities.
    pub fn identity_gc_grace(&self) -> Duration {
        Duration::from_secs(self.identity_gc_grace_secs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let c: ClusterConfig =
            serde_yaml_like(r#"{"etcd": {"endpoints": ["http://127.0.0.1:2379"]}}"#);
        assert_eq!(
            c,
            ClusterConfig::with_endpoints(vec!["http://127.0.0.1:2379".into()])
        );
        assert!(c.check().is_ok());
        let mut bad = c.clone();
        bad.etcd.endpoints = vec!["https://e:2379".into()];
        assert_eq!(bad.check().unwrap_err().0, "cluster.etcd.tls");
        let mut bad = c.clone();
        bad.etcd.tls = Some(EtcdTls {
            ca_file: "ca.pem".into(),
            cert_file: None,
            key_file: None,
            server_name: None,
        });
        assert_eq!(bad.check().unwrap_err().0, "cluster.etcd.endpoints[0]");
        let mut bad = c.clone();
        bad.etcd.endpoints = vec!["e:2379".into()];
        assert_eq!(bad.check().unwrap_err().0, "cluster.etcd.endpoints[0]");
        let mut bad = c.clone();
        bad.node_cidr_prefix_len = 8;
        assert_eq!(bad.check().unwrap_err().0, "cluster.node_cidr_prefix_len");
        let mut bad = c;
        bad.lease_ttl_secs = 1;
        assert_eq!(bad.check().unwrap_err().0, "cluster.lease_ttl_secs");
    }

    fn serde_yaml_like(json: &str) -> ClusterConfig {
        serde_json::from_str(json).unwrap()
    }
}
