//! The agent's configuration file (YAML).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub use palisade_cluster::{ClusterConfig, PodCidr};
use serde::{Deserialize, Serialize};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/palisade/agent.yaml";
/// Default API socket.
pub const DEFAULT_API_SOCKET: &str = "/run/palisade/agent.sock";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the agent configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("invalid agent configuration {path} at `{field}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The offending field (YAML path).
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct AgentConfig {
    /// This node's name.
    #[serde(default = "default_node_name")]
    pub node_name: String,
    /// The cluster's name (the `io.cilium.k8s.policy.cluster` label).
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// Where the agent keeps its state (endpoints, identities, addresses).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Where programs and maps are pinned (on a bpf filesystem).
    #[serde(default = "default_bpf_root")]
    pub bpf_root: PathBuf,
    /// The local API socket.
    #[serde(default = "default_api_socket")]
    pub api_socket: PathBuf,
    /// Directory of policy YAML files, watched for changes (optional).
    #[serde(default)]
    pub policy_dir: Option<PathBuf>,
    /// How often the policy directory is checked, in milliseconds.
    #[serde(default = "default_policy_dir_poll_ms")]
    pub policy_dir_poll_ms: u64,
    /// The node's pod CIDR, addresses for endpoints come from it. Alone,
    /// the default is 10.200.0.0/24; in a cluster, one is allocated from
    /// the pool unless this names one (which is then claimed).
    #[serde(default)]
    pub pod_cidr: Option<PodCidr>,
    /// Join a cluster through etcd (see `docs/cluster.md`); without it the
    /// node is alone.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Put every new endpoint in policy audit mode.
    #[serde(default)]
    pub policy_audit_mode: bool,
    /// Append every flow event as a JSON line to this file (optional).
    #[serde(default)]
    pub flow_log: Option<PathBuf>,
    /// How many recent flow events the agent keeps for `palisade flows`.
    #[serde(default = "default_flow_buffer")]
    pub flow_buffer: usize,
    /// Run runtime enforcement (TracingPolicy).
    #[serde(default = "default_true")]
    pub runtime_enforcement: bool,
    /// Directory of TracingPolicy YAML files, watched for changes (optional).
    #[serde(default)]
    pub tracing_policy_dir: Option<PathBuf>,
    /// Append every runtime event (Tetragon JSON) to this file, rotated at
    /// 64 MiB (default: `<state_dir>/events.jsonl`; `null` turns it off).
    #[serde(default = "default_events_log")]
    pub runtime_events_log: Option<PathBuf>,
    /// Processes the agent's process cache holds (bounded; evictions are
    /// counted in `palisade status`).
    #[serde(default = "default_process_cache_size")]
    pub process_cache_size: usize,
    /// Load tracing-policy hooks whose actions this kernel cannot carry out
    /// with their actions reported only, instead of rejecting the policy.
    #[serde(default)]
    pub allow_monitoring_fallback: bool,
    /// Keep the tracing-policy hooks attached (pinned) when the agent
    /// stops, so the kernel goes on enforcing until the next agent takes
    /// over (Tetragon's `--keep-sensors-on-exit`). A crash always keeps
    /// them; `false` detaches them on a clean stop.
    #[serde(default = "default_true")]
    pub keep_runtime_enforcement: bool,
    /// SPIFFE workload identity: the CA, SVIDs and the Workload API.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Mutual authentication between node agents (`authentication.mode:
    /// required` in policies).
    #[serde(default)]
    pub auth: AuthConfig,
}

/// Mutual authentication between node agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", default)]
pub struct AuthConfig {
    /// Authenticate pairs that policy requires authentication for (needs
    /// `identity.enabled`). Without it such traffic stays dropped.
    pub enabled: bool,
    /// The TCP port every node's agent listens on and dials.
    pub port: u16,
    /// The address to listen on; default: every address in a cluster,
    /// loopback on a standalone node (which only authenticates with itself).
    pub listen: Option<std::net::IpAddr>,
    /// How long one handshake (connect included) may take, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Handshakes this node runs at once as a client.
    pub max_concurrent_handshakes: usize,
    /// Authenticate every pair that policy and endpoints make possible
    /// ahead of time, so that the first connection does not wait. Off: only
    /// pairs the datapath dropped a packet for (Cilium's way; the first
    /// connection then waits for a TCP retransmission).
    pub pre_authenticate: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            port: palisade_identity::mutual_auth::DEFAULT_PORT,
            listen: None,
            handshake_timeout_ms: 2000,
            max_concurrent_handshakes: 16,
            pre_authenticate: true,
        }
    }
}

impl AuthConfig {
    fn check(&self) -> Result<(), (String, String)> {
        if self.port == 0 {
            return Err(("auth.port".into(), "must not be 0".into()));
        }
        if !(100..=60_000).contains(&self.handshake_timeout_ms) {
            return Err((
                "auth.handshake_timeout_ms".into(),
                "must be between 100 and 60000".into(),
            ));
        }
        if !(1..=1024).contains(&self.max_concurrent_handshakes) {
            return Err((
                "auth.max_concurrent_handshakes".into(),
                "must be between 1 and 1024".into(),
            ));
        }
        Ok(())
    }
}

/// Default Workload API socket (`SPIFFE_ENDPOINT_SOCKET=unix:///run/palisade/spiffe/workload.sock`).
pub const DEFAULT_WORKLOAD_SOCKET: &str = "/run/palisade/spiffe/workload.sock";

/// SPIFFE workload identity settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", default)]
pub struct IdentityConfig {
    /// Run the CA and serve the Workload API.
    pub enabled: bool,
    /// The trust domain, as in `spiffe://<trust_domain>/...`.
    pub trust_domain: palisade_identity::TrustDomain,
    /// Lifetime of X.509-SVIDs, in seconds; they are renewed at 50-70% of it.
    pub svid_ttl_secs: u64,
    /// Lifetime of JWT-SVIDs, in seconds.
    pub jwt_svid_ttl_secs: u64,
    /// Lifetime of a self-signed CA, in seconds; the next one is prepared
    /// half-way and takes over at two thirds.
    pub ca_ttl_secs: u64,
    /// How long a new CA is in the bundle before it signs, in seconds.
    pub ca_propagation_secs: u64,
    /// The Workload API socket. Its directory can be mounted into pods.
    pub workload_api_socket: PathBuf,
    /// An operator-supplied CA certificate (PEM: the CA first, then any
    /// intermediates above it) instead of a self-signed one.
    pub ca_cert_file: Option<PathBuf>,
    /// The operator-supplied CA's PKCS#8 key (PEM, mode 0600).
    pub ca_key_file: Option<PathBuf>,
    /// The roots above an operator-supplied CA (PEM); absent if the CA is
    /// itself a root.
    pub ca_bundle_file: Option<PathBuf>,
    /// In a cluster: this agent is the cluster's CA and serves the node CA
    /// on this address; other nodes join it with join tokens and obtain
    /// SVIDs only for the endpoints they host.
    pub node_ca_listen: Option<SocketAddr>,
    /// In a cluster: this node holds no CA key and obtains its SVIDs from
    /// the cluster's node CA.
    pub node_ca: Option<NodeCaClientConfig>,
}

/// How a node reaches the cluster's node CA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct NodeCaClientConfig {
    /// Where the CA agent's `node_ca_listen` is.
    pub address: SocketAddr,
    /// The trust domain's bundle (PEM, `palisade identity ca show
    /// --bundle` on the CA node): how this node recognizes the CA the
    /// first time. The bundle is kept current from then on.
    pub bundle_file: PathBuf,
    /// A file holding this node's join token (`palisade identity ca token
    /// create --node <name>` on the CA node). Read only while the node has
    /// no valid node SVID.
    pub join_token_file: PathBuf,
    /// Time limit of one request, in milliseconds.
    #[serde(default = "default_node_ca_timeout")]
    pub request_timeout_ms: u64,
}

fn default_node_ca_timeout() -> u64 {
    5000
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            trust_domain: palisade_identity::TrustDomain::new("palisade.local")
                .unwrap_or_else(|_| unreachable!("a valid literal")),
            svid_ttl_secs: 3600,
            jwt_svid_ttl_secs: 300,
            ca_ttl_secs: 30 * 24 * 3600,
            ca_propagation_secs: 30,
            workload_api_socket: PathBuf::from(DEFAULT_WORKLOAD_SOCKET),
            ca_cert_file: None,
            ca_key_file: None,
            ca_bundle_file: None,
            node_ca_listen: None,
            node_ca: None,
        }
    }
}

impl IdentityConfig {
    fn check(&self) -> Result<(), (String, String)> {
        let field = |f: &str| format!("identity.{f}");
        if self.svid_ttl_secs < 60 {
            return Err((field("svid_ttl_secs"), "must be at least 60".into()));
        }
        if self.jwt_svid_ttl_secs < 10 {
            return Err((field("jwt_svid_ttl_secs"), "must be at least 10".into()));
        }
        if self.ca_ttl_secs < 4 * self.svid_ttl_secs.max(self.jwt_svid_ttl_secs) {
            return Err((
                field("ca_ttl_secs"),
                "must be at least four times the longest SVID lifetime".into(),
            ));
        }
        if self.ca_ttl_secs < 6 * self.ca_propagation_secs {
            return Err((
                field("ca_propagation_secs"),
                "must be at most a sixth of ca_ttl_secs (a new CA is prepared at half the active one's life and must sign before it expires)".into(),
            ));
        }
        match (&self.ca_cert_file, &self.ca_key_file) {
            (Some(_), None) => {
                return Err((
                    field("ca_key_file"),
                    "is missing: ca_cert_file needs the CA's key".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    field("ca_cert_file"),
                    "is missing: ca_key_file needs the CA's certificate".into(),
                ))
            }
            _ => {}
        }
        if self.ca_bundle_file.is_some() && self.ca_cert_file.is_none() {
            return Err((
                field("ca_bundle_file"),
                "needs ca_cert_file and ca_key_file".into(),
            ));
        }
        if let Some(remote) = &self.node_ca {
            if self.node_ca_listen.is_some() {
                return Err((
                    field("node_ca"),
                    "a node either is the node CA (node_ca_listen) or uses one (node_ca), not both"
                        .into(),
                ));
            }
            if self.ca_cert_file.is_some() {
                return Err((
                    field("node_ca"),
                    "a node that uses the node CA holds no CA: drop ca_cert_file and ca_key_file"
                        .into(),
                ));
            }
            if remote.request_timeout_ms < 100 {
                return Err((
                    field("node_ca.request_timeout_ms"),
                    "must be at least 100".into(),
                ));
            }
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}
fn default_events_log() -> Option<PathBuf> {
    Some(default_state_dir().join("events.jsonl"))
}
fn default_process_cache_size() -> usize {
    65536
}

fn default_node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "node".to_owned())
}
fn default_cluster_name() -> String {
    "default".to_owned()
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/palisade")
}
fn default_bpf_root() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/palisade")
}
fn default_api_socket() -> PathBuf {
    PathBuf::from(DEFAULT_API_SOCKET)
}
fn default_policy_dir_poll_ms() -> u64 {
    500
}
/// The pod CIDR of a node that is alone and names none.
pub fn default_pod_cidr() -> PodCidr {
    PodCidr {
        network: Ipv4Addr::new(10, 200, 0, 0),
        prefix_len: 24,
    }
}
fn default_flow_buffer() -> usize {
    65536
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            node_name: default_node_name(),
            cluster_name: default_cluster_name(),
            state_dir: default_state_dir(),
            bpf_root: default_bpf_root(),
            api_socket: default_api_socket(),
            policy_dir: None,
            policy_dir_poll_ms: default_policy_dir_poll_ms(),
            pod_cidr: None,
            cluster: None,
            policy_audit_mode: false,
            flow_log: None,
            flow_buffer: default_flow_buffer(),
            runtime_enforcement: true,
            tracing_policy_dir: None,
            runtime_events_log: default_events_log(),
            process_cache_size: default_process_cache_size(),
            allow_monitoring_fallback: false,
            keep_runtime_enforcement: true,
            identity: IdentityConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Loads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses a configuration; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            message,
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let config: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            invalid(field, e.into_inner().to_string())
        })?;
        if config.node_name.is_empty() {
            return Err(invalid("node_name".into(), "must not be empty".into()));
        }
        if config.flow_buffer == 0 {
            return Err(invalid("flow_buffer".into(), "must be at least 1".into()));
        }
        config
            .identity
            .check()
            .map_err(|(field, message)| invalid(field, message))?;
        config
            .auth
            .check()
            .map_err(|(field, message)| invalid(field, message))?;
        if config.cluster.is_none() && config.identity.enabled {
            for (set, field) in [
                (
                    config.identity.node_ca_listen.is_some(),
                    "identity.node_ca_listen",
                ),
                (config.identity.node_ca.is_some(), "identity.node_ca"),
            ] {
                if set {
                    return Err(invalid(
                        field.into(),
                        "needs a cluster (the node CA learns from the cluster store which node hosts which endpoint)".into(),
                    ));
                }
            }
        }
        if let Some(cluster) = &config.cluster {
            cluster
                .check()
                .map_err(|(field, message)| invalid(field, message))?;
            if !palisade_cluster::keys::valid_name(&config.node_name) {
                return Err(invalid(
                    "node_name".into(),
                    "in a cluster a node name is 1-253 characters of [A-Za-z0-9._-]".into(),
                ));
            }
            if !palisade_cluster::keys::valid_name(&config.cluster_name) {
                return Err(invalid(
                    "cluster_name".into(),
                    "in a cluster the name is 1-253 characters of [A-Za-z0-9._-]".into(),
                ));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_default() {
        let c = AgentConfig::parse("", Path::new("x")).unwrap();
        assert_eq!(c, AgentConfig::default());
        assert_eq!(c.pod_cidr, None);
    }

    #[test]
    fn cluster_section_is_checked() {
        let c = AgentConfig::parse(
            "cluster:\n  etcd: {endpoints: [\"http://10.0.0.1:2379\"]}\n  lease_ttl_secs: 5\n",
            Path::new("a.yaml"),
        )
        .unwrap();
        assert_eq!(c.cluster.as_ref().map(|c| c.lease_ttl_secs), Some(5));
        let e = AgentConfig::parse("cluster:\n  etcd: {endpoints: []}\n", Path::new("a.yaml"))
            .unwrap_err();
        assert!(e.to_string().contains("cluster.etcd.endpoints"), "{e}");
        let e = AgentConfig::parse(
            "cluster:\n  etcd: {endpoints: [\"http://e:1\"]}\n  leaseTtl: 5\n",
            Path::new("a.yaml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("leaseTtl"), "{e}");
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../deploy/agent.yaml");
        let c = AgentConfig::parse(text, Path::new("deploy/agent.yaml")).unwrap();
        assert_eq!(c.identity, IdentityConfig::default());
    }

    #[test]
    fn identity_section_is_checked() {
        let c = AgentConfig::parse(
            "identity:\n  trust_domain: example.org\n",
            Path::new("a.yaml"),
        )
        .unwrap();
        assert_eq!(c.identity.trust_domain.name(), "example.org");
        assert_eq!(c.identity.svid_ttl_secs, 3600);
        let e = AgentConfig::parse(
            "identity:\n  trust_domain: Example.org\n",
            Path::new("a.yaml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("identity.trust_domain"), "{e}");
        let e =
            AgentConfig::parse("identity:\n  svid_ttl_secs: 5\n", Path::new("a.yaml")).unwrap_err();
        assert!(e.to_string().contains("identity.svid_ttl_secs"), "{e}");
    }

    #[test]
    fn the_node_ca_needs_a_cluster_and_one_role() {
        let cluster = "cluster:\n  etcd: {endpoints: [\"http://127.0.0.1:2379\"]}\n";
        let client =
            "  node_ca: {address: \"10.0.0.1:8444\", bundle_file: /b.pem, join_token_file: /t}\n";
        let c = AgentConfig::parse(
            &format!("{cluster}identity:\n{client}"),
            Path::new("a.yaml"),
        )
        .unwrap();
        let remote = c.identity.node_ca.unwrap();
        assert_eq!(remote.request_timeout_ms, 5000);
        let e =
            AgentConfig::parse(&format!("identity:\n{client}"), Path::new("a.yaml")).unwrap_err();
        assert!(e.to_string().contains("identity.node_ca"), "{e}");
        assert!(e.to_string().contains("needs a cluster"), "{e}");
        let both = format!("{cluster}identity:\n{client}  node_ca_listen: \"0.0.0.0:8444\"\n");
        let e = AgentConfig::parse(&both, Path::new("a.yaml")).unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let e = AgentConfig::parse(
            "identity:\n  node_ca_listen: \"0.0.0.0:8444\"\n",
            Path::new("a.yaml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("identity.node_ca_listen"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let e = AgentConfig::parse("pod_cidr: 10.0.0.1/24\n", Path::new("a.yaml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("pod_cidr"), "{msg}");
        assert!(msg.contains("10.0.0.0/24"), "{msg}");
        let e = AgentConfig::parse("podcidr: x\n", Path::new("a.yaml")).unwrap_err();
        assert!(e.to_string().contains("podcidr"), "{e}");
    }
}
