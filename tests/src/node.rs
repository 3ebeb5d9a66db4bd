//! A node: a network namespace with one palisade agent running inside it
//! (in the host's mount namespace, so its bpf pins are the host's).

use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use palisade_api::{Client, Request, Response};

use crate::netns::{NetNs, NetnsError};

/// How long an agent may take to answer its first status request.
pub const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping agent gets between SIGTERM and SIGKILL.
pub const AGENT_STOP_GRACE: Duration = Duration::from_secs(10);

/// A running agent process, shared with the cleanup record.
pub(crate) type AgentSlot = Arc<Mutex<Option<Child>>>;

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
    agent: AgentSlot,
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
        agent: AgentSlot,
    ) -> Result<Self, NodeError> {
        let node = Self {
            name: name.to_owned(),
            netns,
            agent_bin: agent_bin.to_owned(),
            paths,
            agent,
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
        let mut slot = self.agent.lock().unwrap_or_else(|e| e.into_inner());
        reap_if_exited(&mut slot);
        slot.as_ref().map(Child::id)
    }

    /// Whether the agent process is alive.
    pub fn agent_running(&self) -> bool {
        self.agent_pid().is_some()
    }

    /// Starts the agent inside the node's namespace and waits until it
    /// answers `status` (at most [`AGENT_READY_TIMEOUT`]).
    pub fn start_agent(&self) -> Result<(), NodeError> {
        let mut slot = self.agent.lock().unwrap_or_else(|e| e.into_inner());
        reap_if_exited(&mut slot);
        if let Some(child) = slot.as_ref() {
            return Err(NodeError::AlreadyRunning {
                node: self.name.clone(),
                pid: child.id(),
            });
        }
        let write_err = |source| NodeError::Write {
            node: self.name.clone(),
            path: self.paths.log.clone(),
            source,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.log)
            .map_err(write_err)?;
        let log2 = log.try_clone().map_err(write_err)?;
        let mut cmd = Command::new(&self.agent_bin);
        cmd.arg("--config")
            .arg(&self.paths.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a Ctrl-C in the terminal reaches the
            // runner only, which then stops the agents in order.
            .process_group(0);
        crate::cleanup::creating(|| -> Result<(), NodeError> {
            let child = self
                .netns
                .spawn(&mut cmd)
                .map_err(|source| NodeError::Netns {
                    node: self.name.clone(),
                    source,
                })?;
            *slot = Some(child);
            Ok(())
        })
        .map_err(|_| NodeError::Interrupted {
            node: self.name.clone(),
        })??;
        drop(slot);
        self.wait_ready(AGENT_READY_TIMEOUT)
    }

    /// Waits until the running agent answers `status`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), NodeError> {
        let deadline = Instant::now() + timeout;
        let client = Client::new(&self.paths.socket).with_timeout(Some(Duration::from_secs(2)));
        loop {
            {
                let mut slot = self.agent.lock().unwrap_or_else(|e| e.into_inner());
                match slot.as_mut().map(Child::try_wait) {
                    Some(Ok(Some(status))) => {
                        *slot = None;
                        return Err(NodeError::Exited {
                            node: self.name.clone(),
                            status: status.to_string(),
                            diag: self.diag(),
                        });
                    }
                    None => {
                        return Err(NodeError::Exited {
                            node: self.name.clone(),
                            status: "no process (not started)".into(),
                            diag: self.diag(),
                        })
                    }
                    _ => {}
                }
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
        let mut slot = self.agent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut child) = slot.take() else {
            return Ok(());
        };
        let grace = if hard {
            Duration::ZERO
        } else {
            AGENT_STOP_GRACE
        };
        terminate(&mut child, grace)
            .map(drop)
            .map_err(|source| NodeError::Stop {
                node: self.name.clone(),
                pid: child.id(),
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
        let text = std::fs::read_to_string(&self.paths.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        let tail = all[from..].join("\n");
        if tail.is_empty() {
            "(empty)".to_owned()
        } else {
            tail
        }
    }
}

/// Forgets a child that has exited (and reaps it).
pub(crate) fn reap_if_exited(slot: &mut Option<Child>) {
    if let Some(Ok(Some(_))) = slot.as_mut().map(Child::try_wait) {
        *slot = None;
    }
}

/// Ends `child`: SIGTERM and up to `grace` to exit, then SIGKILL; reaps it.
pub(crate) fn terminate(child: &mut Child, grace: Duration) -> std::io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    if !grace.is_zero() {
        let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
        kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(std::io::Error::from)?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    match child.kill() {
        Ok(()) => {}
        // Exited in between.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {}
        Err(e) => return Err(e),
    }
    child.wait()
}
