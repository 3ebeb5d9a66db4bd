//! The plugin's input: the network configuration on stdin and the `CNI_*`
//! environment variables (including `CNI_ARGS`).
//!
//! Example network configuration (`/etc/cni/net.d/10-palisade.conflist`):
//!
//! ```json
//! {
//!   "cniVersion": "1.0.0",
//!   "name": "palisade",
//!   "plugins": [{
//!     "type": "palisade-cni",
//!     "agentSocket": "/run/palisade/agent.sock",
//!     "mtu": 1500
//!   }]
//! }
//! ```
//!
//! Labels and the service account are passed by the runtime in `args`
//! (`args.cni.labels: [{"key": "app", "value": "web"}]`,
//! `args.palisade.serviceAccount: "web"`); the pod's namespace and name come
//! from `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::{CniError, ErrorCode};

/// CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The version used when the input does not say which one.
pub const DEFAULT_VERSION: &str = "1.0.0";

/// Namespace assumed when `CNI_ARGS` has no `K8S_POD_NAMESPACE`.
pub const DEFAULT_POD_NAMESPACE: &str = "default";

/// Why the input is not usable.
#[derive(Debug, thiserror::Error)]
pub enum NetConfError {
    /// A `CNI_*` variable is missing or invalid.
    #[error("environment variable {var} {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The network configuration is not JSON of the expected shape.
    #[error("cannot decode the network configuration on stdin at `{path}`: {source}")]
    Decode {
        /// Where in the document.
        path: String,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// A field of the network configuration is invalid.
    #[error("invalid network configuration field `{field}`: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong and what would fix it.
        message: String,
    },
    /// The requested CNI version is not supported.
    #[error("CNI version {version} is not supported (supported: {})", SUPPORTED_VERSIONS.join(", "))]
    IncompatibleVersion {
        /// The requested version.
        version: String,
    },
}

impl From<NetConfError> for CniError {
    fn from(e: NetConfError) -> Self {
        let (code, msg) = match &e {
            NetConfError::Env { .. } => (ErrorCode::InvalidEnvironment, "invalid CNI environment"),
            NetConfError::Decode { .. } => {
                (ErrorCode::Decode, "cannot decode network configuration")
            }
            NetConfError::Invalid { .. } => (
                ErrorCode::InvalidNetworkConfig,
                "invalid network configuration",
            ),
            NetConfError::IncompatibleVersion { .. } => {
                (ErrorCode::IncompatibleVersion, "incompatible CNI version")
            }
        };
        CniError::new(code, msg, e.to_string())
    }
}

/// The CNI command (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Set up the container's interface.
    Add,
    /// Tear it down.
    Del,
    /// Check it is as set up.
    Check,
    /// Report supported versions.
    Version,
}

impl std::str::FromStr for Command {
    type Err = NetConfError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ADD" => Ok(Self::Add),
            "DEL" => Ok(Self::Del),
            "CHECK" => Ok(Self::Check),
            "VERSION" => Ok(Self::Version),
            other => Err(NetConfError::Env {
                var: "CNI_COMMAND",
                message: format!("is {other:?}: expected ADD, DEL, CHECK or VERSION"),
            }),
        }
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: BTreeMap<String, String>,
}

impl std::str::FromStr for CniArgs {
    type Err = NetConfError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut pairs = BTreeMap::new();
        for part in s.split(';').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| NetConfError::Env {
                var: "CNI_ARGS",
                message: format!("has {part:?}, which is not KEY=VALUE"),
            })?;
            if k.is_empty() {
                return Err(NetConfError::Env {
                    var: "CNI_ARGS",
                    message: format!("has {part:?}, which has an empty key"),
                });
            }
            pairs.insert(k.to_owned(), v.to_owned());
        }
        Ok(Self { pairs })
    }
}

impl CniArgs {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.get(key).map(String::as_str)
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for VERSION).
    pub container_id: String,
    /// `CNI_NETNS` (optional for DEL and VERSION).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (empty for VERSION).
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: CniArgs,
}

fn valid_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("is {name:?}: an interface name has 1 to 15 bytes"));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "is {name:?}: an interface name cannot contain '/', ':' or spaces"
        ));
    }
    Ok(())
}

fn valid_container_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("is empty".to_owned());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "is {id:?}: a container id has only letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

impl CniEnv {
    /// Reads the environment through `get` (`std::env::var` in the plugin).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, NetConfError> {
        let command: Command = get("CNI_COMMAND")
            .ok_or(NetConfError::Env {
                var: "CNI_COMMAND",
                message: "is not set".to_owned(),
            })?
            .parse()?;
        if command == Command::Version {
            return Ok(Self {
                command,
                container_id: String::new(),
                netns: None,
                ifname: String::new(),
                args: CniArgs::default(),
            });
        }
        let required = |var: &'static str| {
            get(var).filter(|v| !v.is_empty()).ok_or(NetConfError::Env {
                var,
                message: "is not set".to_owned(),
            })
        };
        let container_id = required("CNI_CONTAINERID")?;
        valid_container_id(&container_id).map_err(|message| NetConfError::Env {
            var: "CNI_CONTAINERID",
            message,
        })?;
        let ifname = required("CNI_IFNAME")?;
        valid_ifname(&ifname).map_err(|message| NetConfError::Env {
            var: "CNI_IFNAME",
            message,
        })?;
        let netns = match command {
            Command::Del => get("CNI_NETNS").filter(|v| !v.is_empty()),
            _ => Some(required("CNI_NETNS")?),
        }
        .map(PathBuf::from);
        let args = get("CNI_ARGS").unwrap_or_default().parse()?;
        Ok(Self {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }

    /// The pod's Kubernetes namespace (`K8S_POD_NAMESPACE`, else
    /// [`DEFAULT_POD_NAMESPACE`]).
    pub fn pod_namespace(&self) -> String {
        self.args
            .get("K8S_POD_NAMESPACE")
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_POD_NAMESPACE)
            .to_owned()
    }

    /// The pod's name (`K8S_POD_NAME`, else the container id).
    pub fn pod_name(&self) -> String {
        self.args
            .get("K8S_POD_NAME")
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.container_id)
            .to_owned()
    }
}

#[derive(Debug, Deserialize)]
struct RawConf {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    #[serde(rename = "agentSocket")]
    agent_socket: Option<PathBuf>,
    mtu: Option<u32>,
    #[serde(default)]
    args: RawArgs,
    #[serde(rename = "prevResult")]
    prev_result: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct RawArgs {
    #[serde(default)]
    cni: RawCniArgs,
    #[serde(default)]
    palisade: RawPalisadeArgs,
}

#[derive(Debug, Default, Deserialize)]
struct RawCniArgs {
    #[serde(default)]
    labels: Vec<RawLabel>,
}

#[derive(Debug, Deserialize)]
struct RawLabel {
    key: String,
    value: String,
}

#[derive(Debug, Default, Deserialize)]
struct RawPalisadeArgs {
    #[serde(rename = "serviceAccount")]
    service_account: Option<String>,
}

/// The network configuration, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`, one of [`SUPPORTED_VERSIONS`].
    pub cni_version: String,
    /// `name` of the network.
    pub name: String,
    /// `type` (the plugin binary's name).
    pub plugin_type: String,
    /// `agentSocket`: the agent's API socket.
    pub agent_socket: PathBuf,
    /// `mtu` of the veth pair.
    pub mtu: Option<u32>,
    /// `args.cni.labels`: the pod's labels.
    pub labels: BTreeMap<String, String>,
    /// `args.palisade.serviceAccount`.
    pub service_account: Option<String>,
    /// `prevResult` (CHECK and DEL).
    pub prev_result: Option<serde_json::Value>,
}

impl NetConf {
    /// Parses and checks the network configuration from stdin.
    pub fn parse(bytes: &[u8]) -> Result<Self, NetConfError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawConf =
            serde_path_to_error::deserialize(de).map_err(|e| NetConfError::Decode {
                path: e.path().to_string(),
                source: e.into_inner(),
            })?;
        let cni_version = raw.cni_version.ok_or(NetConfError::Invalid {
            field: "cniVersion",
            message: format!(
                "is missing: set it to one of {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        })?;
        check_version(&cni_version)?;
        let name = raw
            .name
            .filter(|n| !n.is_empty())
            .ok_or(NetConfError::Invalid {
                field: "name",
                message: "is missing: every network configuration has a name".to_owned(),
            })?;
        let plugin_type =
            raw.plugin_type
                .filter(|n| !n.is_empty())
                .ok_or(NetConfError::Invalid {
                    field: "type",
                    message: "is missing: set it to the plugin's name, palisade-cni".to_owned(),
                })?;
        if let Some(mtu) = raw.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(NetConfError::Invalid {
                    field: "mtu",
                    message: format!("is {mtu}: an IPv4 MTU is 68 to 65535"),
                });
            }
        }
        let mut labels = BTreeMap::new();
        for l in raw.args.cni.labels {
            if l.key.is_empty() {
                return Err(NetConfError::Invalid {
                    field: "args.cni.labels",
                    message: "has a label with an empty key".to_owned(),
                });
            }
            labels.insert(l.key, l.value);
        }
        Ok(Self {
            cni_version,
            name,
            plugin_type,
            agent_socket: raw
                .agent_socket
                .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_API_SOCKET)),
            mtu: raw.mtu,
            labels,
            service_account: raw.args.palisade.service_account.filter(|s| !s.is_empty()),
            prev_result: raw.prev_result.filter(|v| !v.is_null()),
        })
    }
}

/// Checks that `version` is one of [`SUPPORTED_VERSIONS`].
pub fn check_version(version: &str) -> Result<(), NetConfError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(NetConfError::IncompatibleVersion {
            version: version.to_owned(),
        })
    }
}

/// The `cniVersion` of a VERSION request (stdin may be empty); the default
/// version when it says nothing.
pub fn version_request(bytes: &[u8]) -> Result<String, NetConfError> {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(DEFAULT_VERSION.to_owned());
    }
    let v: V = serde_json::from_slice(bytes).map_err(|source| NetConfError::Decode {
        path: ".".to_owned(),
        source,
    })?;
    Ok(v.cni_version.unwrap_or_else(|| DEFAULT_VERSION.to_owned()))
}

/// Whether `version` knows the CHECK command (0.4.0 and later).
pub fn supports_check(version: &str) -> bool {
    !matches!(version, "0.3.0" | "0.3.1")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<CniEnv, NetConfError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        CniEnv::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn add_env() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123",
            ),
        ])
        .unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(
            e.netns.as_deref(),
            Some(std::path::Path::new("/var/run/netns/x"))
        );
        assert_eq!(e.pod_namespace(), "prod");
        assert_eq!(e.pod_name(), "web-0");
        assert_eq!(e.args.get("IgnoreUnknown"), Some("1"));
    }

    #[test]
    fn defaults_without_k8s_args() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/n"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(e.pod_namespace(), "default");
        assert_eq!(e.pod_name(), "abc");
    }

    #[test]
    fn env_errors_name_the_variable() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "a"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("CNI_NETNS"), "{e}");
        assert_eq!(CniError::from(e).code, ErrorCode::InvalidEnvironment);

        let e = env(&[("CNI_COMMAND", "FROB")]).unwrap_err();
        assert!(e.to_string().contains("CNI_COMMAND"), "{e}");

        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a"),
            ("CNI_IFNAME", "averyveryverylongname"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("CNI_IFNAME"), "{e}");

        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("CNI_CONTAINERID"), "{e}");

        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "A=1;broken"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("broken"), "{e}");
    }

    #[test]
    fn del_without_netns_and_version_without_anything() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(e.netns, None);
        let e = env(&[("CNI_COMMAND", "VERSION")]).unwrap();
        assert_eq!(e.command, Command::Version);
    }

    #[test]
    fn full_netconf() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"palisade","type":"palisade-cni",
                "agentSocket":"/tmp/a.sock","mtu":1400,"ipam":{},"dns":{},
                "args":{"cni":{"labels":[{"key":"app","value":"web"},{"key":"tier","value":"fe"}]},
                        "palisade":{"serviceAccount":"web-sa"}},
                "prevResult":{"cniVersion":"1.0.0","ips":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.agent_socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(c.labels.len(), 2);
        assert_eq!(c.service_account.as_deref(), Some("web-sa"));
        assert!(c.prev_result.is_some());
    }

    #[test]
    fn minimal_netconf_defaults() {
        let c =
            NetConf::parse(br#"{"cniVersion":"0.3.1","name":"n","type":"palisade-cni"}"#).unwrap();
        assert_eq!(
            c.agent_socket,
            PathBuf::from(crate::config::DEFAULT_API_SOCKET)
        );
        assert!(c.labels.is_empty());
        assert_eq!(c.service_account, None);
        assert!(!supports_check(&c.cni_version));
    }

    #[test]
    fn netconf_errors() {
        let e = NetConf::parse(b"garbage").unwrap_err();
        assert_eq!(CniError::from(e).code, ErrorCode::Decode);
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":"big"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("mtu"), "{e}");
        assert_eq!(CniError::from(e).code, ErrorCode::Decode);
        let e = NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"t"}"#).unwrap_err();
        assert_eq!(CniError::from(e).code, ErrorCode::IncompatibleVersion);
        let e = NetConf::parse(br#"{"name":"n","type":"t"}"#).unwrap_err();
        assert_eq!(CniError::from(e).code, ErrorCode::InvalidNetworkConfig);
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":10}"#)
            .unwrap_err();
        assert!(e.to_string().contains("mtu"), "{e}");
        let e = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"t","args":{"cni":{"labels":[{"key":"a"}]}}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("args.cni.labels"), "{e}");
    }

    #[test]
    fn version_requests() {
        assert_eq!(version_request(b"").unwrap(), "1.0.0");
        assert_eq!(
            version_request(br#"{"cniVersion":"0.4.0"}"#).unwrap(),
            "0.4.0"
        );
        assert!(version_request(b"{").is_err());
    }
}
