//! A node: a network namespace with one palisade agent running inside it
//! (in the host's mount namespace, so its bpf pins are the host's).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_api::{Client, Request, Response};

use crate::daemon::{Daemon, ProcessSlot, SpawnError};
use crate::netns::{NetNs, NetnsError};

/// How long an agent may take to answer its first status request.
pub const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping agent gets between SIGTERM and SIGKILL.
pub const AGENT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Namespace trouble.
    #[error("node {node}: {source}")]
    Netns {
        /// The node.
        node: String,
        /// The error.
        #[source]
        source: NetnsError,
    },
    /// A file of the node could not be written.
    #[error("node {node}: cannot write {path}: {source}")]
    Write {
        /// The node.
        node: String,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The agent is already running.
    #[error("node {node}: the agent is already running (pid {pid})")]
    AlreadyRunning {
        /// The node.
        node: String,
        /// Its pid.
        pid: u32,
    },
    /// The agent exited before it answered.
    #[error("node {node}: the agent ({}) exited with {status} before answering on {}; last lines of {}:\n{}", .diag.bin.display(), .diag.socket.display(), .diag.log.display(), .diag.tail)]
    Exited {
        /// The node.
        node: String,
        /// Its exit status.
        status: String,
        /// Where to look.
        diag: Box<AgentDiag>,
    },
    /// The agent did not answer in time.
    #[error("node {node}: the agent ({}) did not answer `status` on {} within {secs} s (last error: {last}); last lines of {}:\n{}", .diag.bin.display(), .diag.socket.display(), .diag.log.display(), .diag.tail)]
    NotReady {
        /// The node.
        node: String,
        /// The limit.
        secs: u64,
        /// The last client error.
        last: String,
        /// Where to look.
        diag: Box<AgentDiag>,
    },
    /// A signal arrived; the run is being removed.
    #[error("node {node}: interrupted by a signal, not starting the agent")]
    Interrupted {
        /// The node.
        node: String,
    },
    /// Stopping the agent failed.
    #[error("node {node}: cannot stop the agent (pid {pid}): {source}")]
    Stop {
        /// The node.
        node: String,
        /// Its pid.
        pid: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Where to look when an agent does not come up.
#[derive(Debug, Clone)]
pub struct AgentDiag {
    /// The binary.
    pub bin: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// The end of its log.
    pub tail: String,
}

/// Files and settings of one node.
#[derive(Debug, Clone)]
pub(crate) struct NodePaths {
    pub(crate) dir: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) workload_socket: PathBuf,
    pub(crate) bpf_root: PathBuf,
    pub(crate) log: PathBuf,
}

/// One node of a topology.
#[derive(Debug)]
pub struct Node {
    name: String,
    netns: NetNs,
    agent_bin: PathBuf,
    paths: NodePaths,
    agent: Daemon,
    underlay: Option<Ipv4Addr>,
}

impl Node {
    /// Writes the agent's configuration; the caller has created the
    /// namespace and the node directory and records `agent` for cleanup.
    pub(crate) fn new(
        name: &str,
        netns: NetNs,
        agent_bin: &Path,
        paths: NodePaths,
        config: &serde_yaml::Mapping,
        agent: ProcessSlot,
    ) -> Result<Self, NodeError> {
        let node = Self {
            name: name.to_owned(),
            netns,
            agent_bin: agent_bin.to_owned(),
            agent: Daemon::new(agent, paths.log.clone()),
            paths,
            underlay: None,
        };
        let text = serde_yaml::to_string(config).unwrap_or_default();
        std::fs::write(&node.paths.config, text).map_err(|source| NodeError::Write {
            node: node.name.clone(),
            path: node.paths.config.clone(),
            source,
        })?;
        Ok(node)
    }

    /// Sets the node's address on the cluster underlay.
    pub(crate) fn with_underlay_address(mut self, address: Option<Ipv4Addr>) -> Self {
        self.underlay = address;
        self
    }

    /// The node's address on the cluster underlay (interface `ul0` in its
    /// namespace), when the topology has one.
    pub fn underlay_address(&self) -> Option<Ipv4Addr> {
        self.underlay
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's network namespace.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// The agent's API socket.
    pub fn api_socket(&self) -> &Path {
        &self.paths.socket
    }

    /// The agent's SPIFFE Workload API socket.
    pub fn workload_socket(&self) -> &Path {
        &self.paths.workload_socket
    }

    /// The agent's bpf root (`/sys/fs/bpf/palisade-<runid>-<node>`).
    pub fn bpf_root(&self) -> &Path {
        &self.paths.bpf_root
    }

    /// The agent's configuration file.
    pub fn config_path(&self) -> &Path {
        &self.paths.config
    }

    /// The node's directory (config, state, log).
    pub fn dir(&self) -> &Path {
        &self.paths.dir
    }

    /// The agent's log (stdout and stderr, appended across restarts).
    pub fn agent_log(&self) -> &Path {
        &self.paths.log
    }

    /// A client of the agent's API.
    pub fn client(&self) -> Client {
        Client::new(&self.paths.socket)
    }

    /// The agent's pid, when it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.pid()
    }

    /// Whether the agent process is alive.
    pub fn agent_running(&self) -> bool {
        self.agent_pid().is_some()
    }

    /// Starts the agent inside the node's namespace and waits until it
    /// answers `status` (at most [`AGENT_READY_TIMEOUT`]).
    pub fn start_agent(&self) -> Result<(), NodeError> {
        let mut cmd = Command::new(&self.agent_bin);
        cmd.arg("--config").arg(&self.paths.config);
        let node = self.name.clone();
        self.agent
            .spawn(&self.netns, &mut cmd)
            .map_err(|e| match e {
                SpawnError::AlreadyRunning(pid) => NodeError::AlreadyRunning { node, pid },
                SpawnError::Log(source) => NodeError::Write {
                    node,
                    path: self.paths.log.clone(),
                    source,
                },
                SpawnError::Spawn(source) => NodeError::Netns { node, source },
                SpawnError::Interrupted => NodeError::Interrupted { node },
            })?;
        self.wait_ready(AGENT_READY_TIMEOUT)
    }

    /// Waits until the running agent answers `status`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), NodeError> {
        let deadline = Instant::now() + timeout;
        let client = Client::new(&self.paths.socket).with_timeout(Some(Duration::from_secs(2)));
        loop {
            if let Some(status) = self.agent.gone() {
                return Err(NodeError::Exited {
                    node: self.name.clone(),
                    status,
                    diag: self.diag(),
                });
            }
            let last = match client.call(&Request::Status) {
                Ok(Response::Status(_)) => return Ok(()),
                Ok(other) => format!("unexpected answer {other:?}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(NodeError::NotReady {
                    node: self.name.clone(),
                    secs: timeout.as_secs(),
                    last,
                    diag: self.diag(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the agent: `hard` = SIGKILL at once (a crash: pins and state
    /// stay behind for the next start); otherwise SIGTERM, then SIGKILL
    /// after [`AGENT_STOP_GRACE`]. Not running is not an error.
    pub fn stop_agent(&self, hard: bool) -> Result<(), NodeError> {
        let grace = if hard {
            Duration::ZERO
        } else {
            AGENT_STOP_GRACE
        };
        self.agent
            .end(grace)
            .map_err(|(pid, source)| NodeError::Stop {
                node: self.name.clone(),
                pid,
                source,
            })
    }

    /// Stops (see [`Node::stop_agent`]) and starts the agent again.
    pub fn restart_agent(&self, hard: bool) -> Result<(), NodeError> {
        self.stop_agent(hard)?;
        self.start_agent()
    }

    fn diag(&self) -> Box<AgentDiag> {
        Box::new(AgentDiag {
            bin: self.agent_bin.clone(),
            socket: self.paths.socket.clone(),
            log: self.paths.log.clone(),
            tail: self.log_tail(20),
        })
    }

    /// The last `lines` lines of the agent's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.agent.log_tail(lines)
    }
}
