//! The agent's configuration file (YAML).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

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

/// An IPv4 prefix for the node's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PodCidr {
    /// Network address (host bits zero).
    pub network: Ipv4Addr,
    /// Prefix length, 8..=30.
    pub prefix_len: u8,
}

impl PodCidr {
    /// Number of addresses in the prefix.
    pub fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix_len))
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix_len));
        u32::from(ip) & mask == u32::from(self.network)
    }
}

impl TryFrom<String> for PodCidr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR: expected a.b.c.d/len"))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|_| format!("{len:?} is not a prefix length"))?;
        if !(8..=30).contains(&prefix_len) {
            return Err(format!(
                "prefix length {prefix_len} is out of range: a pod CIDR is /8 to /30"
            ));
        }
        let mask = u32::MAX << (32 - u32::from(prefix_len));
        if u32::from(network) & !mask != 0 {
            return Err(format!(
                "{s} has host bits set; did you mean {}/{prefix_len}?",
                Ipv4Addr::from(u32::from(network) & mask)
            ));
        }
        Ok(Self {
            network,
            prefix_len,
        })
    }
}

impl From<PodCidr> for String {
    fn from(c: PodCidr) -> Self {
        format!("{}/{}", c.network, c.prefix_len)
    }
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
    /// The node's pod CIDR, addresses for endpoints come from it.
    #[serde(default = "default_pod_cidr")]
    pub pod_cidr: PodCidr,
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
fn default_pod_cidr() -> PodCidr {
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
            pod_cidr: default_pod_cidr(),
            policy_audit_mode: false,
            flow_log: None,
            flow_buffer: default_flow_buffer(),
            runtime_enforcement: true,
            tracing_policy_dir: None,
            runtime_events_log: default_events_log(),
            process_cache_size: default_process_cache_size(),
            allow_monitoring_fallback: false,
            keep_runtime_enforcement: true,
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
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_default() {
        let c = AgentConfig::parse("", Path::new("x")).unwrap();
        assert_eq!(c.pod_cidr.to_owned(), default_pod_cidr());
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

    #[test]
    fn pod_cidr_contains() {
        let c = PodCidr::try_from("10.1.2.0/24".to_owned()).unwrap();
        assert!(c.contains(Ipv4Addr::new(10, 1, 2, 77)));
        assert!(!c.contains(Ipv4Addr::new(10, 1, 3, 1)));
        assert_eq!(c.size(), 256);
    }
}
