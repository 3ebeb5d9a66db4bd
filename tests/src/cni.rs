//! Calls of the palisade CNI plugin (CNI 1.0), run inside a node's network
//! namespace.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::netns::{NetNs, NetnsError};

/// How long an ADD may take.
pub const ADD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a DEL may take.
pub const DEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a CNI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The plugin could not be started.
    #[error("CNI {command} of pod {pod}: {source}")]
    Start {
        /// ADD or DEL.
        command: &'static str,
        /// The pod (`ns/name`).
        pod: String,
        /// The error.
        #[source]
        source: NetnsError,
    },
    /// Talking to the plugin process failed.
    #[error("CNI {command} of pod {pod}: {call}: {source}")]
    Io {
        /// ADD or DEL.
        command: &'static str,
        /// The pod.
        pod: String,
        /// What was being done.
        call: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The plugin did not finish in time (it was killed).
    #[error("CNI {command} of pod {pod}: {bin} did not finish within {secs} s (killed)")]
    Timeout {
        /// ADD or DEL.
        command: &'static str,
        /// The pod.
        pod: String,
        /// The plugin.
        bin: PathBuf,
        /// The limit.
        secs: u64,
    },
    /// The plugin reported an error.
    #[error("CNI {command} of pod {pod} failed ({status}): {message}{stderr}")]
    Failed {
        /// ADD or DEL.
        command: &'static str,
        /// The pod.
        pod: String,
        /// Exit status.
        status: String,
        /// The CNI error's `msg` and `details`, or the raw output.
        message: String,
        /// The plugin's stderr, if any (prefixed for display).
        stderr: String,
    },
    /// The plugin's result could not be understood.
    #[error("CNI ADD of pod {pod}: unexpected result ({reason}): {stdout}")]
    BadResult {
        /// The pod.
        pod: String,
        /// What is wrong.
        reason: String,
        /// The result as printed.
        stdout: String,
    },
}

/// One pod's CNI parameters.
#[derive(Debug, Clone)]
pub struct CniPod {
    /// The plugin binary.
    pub plugin: PathBuf,
    /// The node's namespace (the plugin runs there: the host side).
    pub node_netns: NetNs,
    /// The agent's API socket.
    pub agent_socket: PathBuf,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// The pod's namespace (`CNI_NETNS`).
    pub pod_netns: NetNs,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Kubernetes pod name.
    pub name: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Service account.
    pub service_account: String,
}

/// What an ADD returned.
#[derive(Debug, Clone)]
pub struct CniResult {
    /// `ips[0].address`, without the prefix length.
    pub ipv4: Ipv4Addr,
    /// The whole result.
    pub raw: serde_json::Value,
}

/// A recorded `CNI DEL`, run at cleanup.
#[derive(Debug, Clone)]
pub struct CniDel(pub CniPod);

impl CniDel {
    /// Runs the DEL.
    pub fn run(&self) -> Result<(), CniError> {
        del(&self.0)
    }
}

impl CniPod {
    fn label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn config(&self) -> serde_json::Value {
        let labels: Vec<serde_json::Value> = self
            .labels
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
            .collect();
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "palisade",
            "type": "palisade-cni",
            "agentSocket": self.agent_socket,
            "args": {
                "cni": {"labels": labels},
                "palisade": {"serviceAccount": self.service_account},
            },
        })
    }
}

/// `CNI_COMMAND=ADD`: creates the pod's interface and registers it with
/// the agent.
pub fn add(pod: &CniPod) -> Result<CniResult, CniError> {
    let stdout = invoke(pod, "ADD", ADD_TIMEOUT)?;
    let bad = |reason: &str| CniError::BadResult {
        pod: pod.label(),
        reason: reason.to_owned(),
        stdout: stdout.clone(),
    };
    let raw: serde_json::Value =
        serde_json::from_str(&stdout).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let address = raw
        .get("ips")
        .and_then(|ips| ips.get(0))
        .and_then(|ip| ip.get("address"))
        .and_then(|a| a.as_str())
        .ok_or_else(|| bad("no ips[0].address"))?;
    let ip = address.split('/').next().unwrap_or(address);
    let ipv4: Ipv4Addr = ip.parse().map_err(|_| {
        bad(&format!(
            "ips[0].address {address:?} is not an IPv4 address"
        ))
    })?;
    Ok(CniResult { ipv4, raw })
}

/// `CNI_COMMAND=DEL` (idempotent by the CNI contract).
pub fn del(pod: &CniPod) -> Result<(), CniError> {
    invoke(pod, "DEL", DEL_TIMEOUT).map(drop)
}

fn invoke(pod: &CniPod, command: &'static str, timeout: Duration) -> Result<String, CniError> {
    let io = |call, source| CniError::Io {
        command,
        pod: pod.label(),
        call,
        source,
    };
    let cni_path = pod
        .plugin
        .parent()
        .unwrap_or(Path::new("/"))
        .to_string_lossy()
        .into_owned();
    let mut cmd = Command::new(&pod.plugin);
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &pod.container_id)
        .env("CNI_NETNS", pod.pod_netns.path())
        .env("CNI_IFNAME", &pod.ifname)
        .env("CNI_PATH", cni_path)
        .env(
            "CNI_ARGS",
            format!(
                "K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                pod.namespace, pod.name
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = pod
        .node_netns
        .spawn(&mut cmd)
        .map_err(|source| CniError::Start {
            command,
            pod: pod.label(),
            source,
        })?;
    let config = pod.config().to_string();
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(config.as_bytes())
            .map_err(|e| io("write stdin", e))?;
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(r) => r.map_err(|e| io("wait", e))?,
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(CniError::Timeout {
                command,
                pod: pod.label(),
                bin: pod.plugin.clone(),
                secs: timeout.as_secs(),
            });
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let message = match serde_json::from_str::<serde_json::Value>(&stdout) {
        Ok(err) => {
            let msg = err.get("msg").and_then(|m| m.as_str()).unwrap_or("");
            let details = err.get("details").and_then(|m| m.as_str()).unwrap_or("");
            let code = err.get("code").map(|c| c.to_string()).unwrap_or_default();
            match (msg.is_empty(), details.is_empty()) {
                (true, _) => stdout.clone(),
                (false, true) => format!("{msg} (code {code})"),
                (false, false) => format!("{msg}: {details} (code {code})"),
            }
        }
        Err(_) if stdout.is_empty() => "no output".to_owned(),
        Err(_) => stdout.clone(),
    };
    Err(CniError::Failed {
        command,
        pod: pod.label(),
        status: output.status.to_string(),
        message,
        stderr: if stderr.is_empty() {
            String::new()
        } else {
            format!("; stderr: {stderr}")
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn config_carries_labels_and_service_account() {
        let pod = CniPod {
            plugin: "/x/palisade-cni".into(),
            node_netns: NetNs::existing("n").unwrap(),
            agent_socket: "/run/a.sock".into(),
            container_id: "c".into(),
            pod_netns: NetNs::existing("p").unwrap(),
            ifname: "eth0".into(),
            namespace: "x".into(),
            name: "a".into(),
            labels: [("pod".to_owned(), "a".to_owned())].into(),
            service_account: "default".into(),
        };
        let c = pod.config();
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["agentSocket"], "/run/a.sock");
        assert_eq!(c["args"]["cni"]["labels"][0]["key"], "pod");
        assert_eq!(c["args"]["cni"]["labels"][0]["value"], "a");
        assert_eq!(c["args"]["palisade"]["serviceAccount"], "default");
    }
}
