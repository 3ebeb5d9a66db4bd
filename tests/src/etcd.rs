//! A real etcd server (Debian's `etcd-server`, `/usr/bin/etcd`) running
//! inside a network namespace, for multi-node clusters: started, stopped
//! and started again on the same data (outage tests), killed, and queried
//! with `etcdctl`.
//!
//! A [`crate::Topology`] makes it ([`crate::Topology::add_etcd`]) and
//! records its process for cleanup; its data dir and log live in the run's
//! temp dir, so a leftover etcd of a dead run is found by its command line
//! like a leftover agent ([`crate::cleanup_stale`]).

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, ProcessSlot, SpawnError};
use crate::netns::{NetNs, NetnsError};

/// The etcd server binary (Debian's `etcd-server`).
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// The etcd client binary (Debian's `etcd-client`).
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";
/// The member name of every test etcd.
pub const ETCD_NAME: &str = "palisade-test";
/// How long etcd may take to answer `GET /health` after it was started.
pub const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopping etcd gets between SIGTERM and SIGKILL.
pub const ETCD_STOP_GRACE: Duration = Duration::from_secs(10);
/// How long one `etcdctl` call may take before it is killed.
pub const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an etcd operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// A binary is missing.
    #[error("etcd at {url}: no {} (install Debian's etcd-server and etcd-client)", .bin.display())]
    NoBinary {
        /// The client URL.
        url: String,
        /// The missing binary.
        bin: PathBuf,
    },
    /// A file or directory of the server could not be made.
    #[error("etcd at {url}: cannot create {}: {source}", .path.display())]
    Io {
        /// The client URL.
        url: String,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server is already running.
    #[error("etcd at {url}: already running (pid {pid})")]
    AlreadyRunning {
        /// The client URL.
        url: String,
        /// Its pid.
        pid: u32,
    },
    /// The process could not be started in its namespace.
    #[error("etcd at {url}: {source}")]
    Spawn {
        /// The client URL.
        url: String,
        /// The error.
        #[source]
        source: NetnsError,
    },
    /// A signal arrived; the run is being removed.
    #[error("etcd at {url}: interrupted by a signal, not starting it")]
    Interrupted {
        /// The client URL.
        url: String,
    },
    /// The server exited before it answered.
    #[error("etcd at {url} exited with {status} before it was healthy; last lines of {}:\n{tail}", .log.display())]
    Exited {
        /// The client URL.
        url: String,
        /// Its exit status.
        status: String,
        /// Its log.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The server did not become healthy in time.
    #[error("etcd at {url} did not answer GET /health with health true within {secs} s (last: {last}); last lines of {}:\n{tail}", .log.display())]
    NotReady {
        /// The client URL.
        url: String,
        /// The limit.
        secs: u64,
        /// What the last check saw.
        last: String,
        /// Its log.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// Stopping the server failed.
    #[error("etcd at {url}: cannot stop pid {pid}: {source}")]
    Stop {
        /// The client URL.
        url: String,
        /// Its pid.
        pid: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An `etcdctl` call could not be run or waited for.
    #[error("`{command}` in network namespace {netns}: {call}: {source}")]
    Etcdctl {
        /// The command line.
        command: String,
        /// The namespace it ran in.
        netns: String,
        /// What was being done.
        call: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An `etcdctl` call could not be started in its namespace.
    #[error("`{command}`: {source}")]
    EtcdctlSpawn {
        /// The command line.
        command: String,
        /// The error.
        #[source]
        source: NetnsError,
    },
    /// An `etcdctl` call did not finish in time (it was killed).
    #[error("`{command}` in network namespace {netns} did not finish within {secs} s (killed)")]
    EtcdctlTimeout {
        /// The command line.
        command: String,
        /// The namespace it ran in.
        netns: String,
        /// The limit.
        secs: u64,
    },
    /// An `etcdctl` call failed.
    #[error("`{command}` in network namespace {netns} failed ({status}): {stderr}")]
    EtcdctlFailed {
        /// The command line.
        command: String,
        /// The namespace it ran in.
        netns: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// One single-member etcd server inside a network namespace: clients on
/// `http://<addr>`, peers on the same IP and the next port. Its data dir
/// survives [`EtcdServer::stop`] and [`EtcdServer::kill`], so
/// [`EtcdServer::start`] resumes the same data.
#[derive(Debug)]
pub struct EtcdServer {
    netns: NetNs,
    client: SocketAddrV4,
    dir: PathBuf,
    daemon: Daemon,
}

impl EtcdServer {
    /// A server (not started) in `netns` with clients on `client`, its data
    /// and log under `dir`; the caller records `slot` for cleanup. The
    /// peer port is `client.port() + 1`, so `client.port()` must be below
    /// 65535.
    pub(crate) fn new(netns: NetNs, client: SocketAddrV4, dir: PathBuf, slot: ProcessSlot) -> Self {
        Self {
            netns,
            client,
            daemon: Daemon::new(slot, dir.join("etcd.log")),
            dir,
        }
    }

    /// The client URL, `http://<ip>:<port>`.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// The peer URL, `http://<ip>:<port + 1>`.
    pub fn peer_url(&self) -> String {
        format!(
            "http://{}:{}",
            self.client.ip(),
            self.client.port().saturating_add(1)
        )
    }

    /// The client address.
    pub fn client_addr(&self) -> SocketAddrV4 {
        self.client
    }

    /// The network namespace it runs in.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// Its data dir (kept across stops).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Its log (stdout and stderr, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.daemon.log().to_owned()
    }

    /// Its pid, when it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Whether the process is alive.
    pub fn running(&self) -> bool {
        self.pid().is_some()
    }

    /// Starts etcd inside its namespace and waits until `GET /health` on
    /// the client port says healthy (at most [`ETCD_READY_TIMEOUT`]).
    pub fn start(&self) -> Result<(), EtcdError> {
        let url = self.client_url();
        if !Path::new(ETCD_BIN).is_file() {
            return Err(EtcdError::NoBinary {
                url,
                bin: PathBuf::from(ETCD_BIN),
            });
        }
        let peer = self.peer_url();
        let mut cmd = Command::new(ETCD_BIN);
        // Every path is absolute and under the run's temp dir: that is how
        // `cleanup_stale` recognizes a leftover of a dead run.
        cmd.arg(format!("--name={ETCD_NAME}"))
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={ETCD_NAME}={peer}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr");
        self.daemon
            .spawn(&self.netns, &mut cmd)
            .map_err(|e| match e {
                SpawnError::AlreadyRunning(pid) => EtcdError::AlreadyRunning {
                    url: url.clone(),
                    pid,
                },
                SpawnError::Log(source) => EtcdError::Io {
                    url: url.clone(),
                    path: self.log_path(),
                    source,
                },
                SpawnError::Spawn(source) => EtcdError::Spawn {
                    url: url.clone(),
                    source,
                },
                SpawnError::Interrupted => EtcdError::Interrupted { url: url.clone() },
            })?;
        self.wait_ready(ETCD_READY_TIMEOUT)
    }

    /// Waits until the running server answers `GET /health` with
    /// `"health":"true"` (it has a leader and serves requests).
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), EtcdError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.daemon.gone() {
                return Err(EtcdError::Exited {
                    url: self.client_url(),
                    status,
                    log: self.log_path(),
                    tail: self.log_tail(20),
                });
            }
            let last = match health(&self.netns, self.client) {
                Ok(()) => return Ok(()),
                Err(last) => last,
            };
            if Instant::now() >= deadline {
                return Err(EtcdError::NotReady {
                    url: self.client_url(),
                    secs: timeout.as_secs(),
                    last,
                    log: self.log_path(),
                    tail: self.log_tail(20),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops etcd: SIGTERM, then SIGKILL after [`ETCD_STOP_GRACE`]. The
    /// data dir stays. Not running is not an error.
    pub fn stop(&self) -> Result<(), EtcdError> {
        self.end(ETCD_STOP_GRACE)
    }

    /// Kills etcd with SIGKILL (a crash). The data dir stays. Not running
    /// is not an error.
    pub fn kill(&self) -> Result<(), EtcdError> {
        self.end(Duration::ZERO)
    }

    fn end(&self, grace: Duration) -> Result<(), EtcdError> {
        self.daemon
            .end(grace)
            .map_err(|(pid, source)| EtcdError::Stop {
                url: self.client_url(),
                pid,
                source,
            })
    }

    /// Runs `etcdctl --endpoints=<client url> ARGS...` inside the server's
    /// namespace and returns its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, EtcdError> {
        self.etcdctl_in(&self.netns, args)
    }

    /// Runs `etcdctl --endpoints=<client url> ARGS...` inside `netns` (a
    /// node reaching etcd over the underlay) and returns its stdout; at
    /// most [`ETCDCTL_TIMEOUT`].
    pub fn etcdctl_in(&self, netns: &NetNs, args: &[&str]) -> Result<String, EtcdError> {
        let mut all = vec![
            format!("--endpoints={}", self.client_url()),
            "--dial-timeout=2s".to_owned(),
            "--command-timeout=5s".to_owned(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        if !Path::new(ETCDCTL_BIN).is_file() {
            return Err(EtcdError::NoBinary {
                url: self.client_url(),
                bin: PathBuf::from(ETCDCTL_BIN),
            });
        }
        let command = format!("{ETCDCTL_BIN} {}", all.join(" "));
        let mut cmd = Command::new(ETCDCTL_BIN);
        cmd.args(&all)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = netns
            .spawn(&mut cmd)
            .map_err(|source| EtcdError::EtcdctlSpawn {
                command: command.clone(),
                source,
            })?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(ETCDCTL_TIMEOUT) {
            Ok(r) => r.map_err(|source| EtcdError::Etcdctl {
                command: command.clone(),
                netns: netns.name().to_owned(),
                call: "wait",
                source,
            })?,
            Err(_) => {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(EtcdError::EtcdctlTimeout {
                    command,
                    netns: netns.name().to_owned(),
                    secs: ETCDCTL_TIMEOUT.as_secs(),
                });
            }
        };
        if !output.status.success() {
            return Err(EtcdError::EtcdctlFailed {
                command,
                netns: netns.name().to_owned(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.daemon.log_tail(lines)
    }
}

/// `GET /health` on `addr` from inside `netns`: `Ok` when etcd says
/// `"health":"true"`, otherwise what was seen.
fn health(netns: &NetNs, addr: SocketAddrV4) -> Result<(), String> {
    netns
        .run(move || -> Result<(), String> {
            let timeout = Duration::from_secs(1);
            let mut s = TcpStream::connect_timeout(&addr.into(), timeout)
                .map_err(|e| format!("connect {addr}: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .and_then(|()| s.set_write_timeout(Some(timeout)))
                .map_err(|e| format!("setsockopt: {e}"))?;
            s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
                .map_err(|e| format!("send GET /health: {e}"))?;
            let mut answer = Vec::new();
            s.take(64 * 1024)
                .read_to_end(&mut answer)
                .map_err(|e| format!("read the answer to GET /health: {e}"))?;
            let answer = String::from_utf8_lossy(&answer);
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
            let healthy = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| {
                    v.get("health")
                        .and_then(|h| h.as_str())
                        .map(|h| h == "true")
                })
                .unwrap_or(false);
            if healthy {
                Ok(())
            } else {
                let status = answer.lines().next().unwrap_or("").trim();
                Err(format!("GET /health: {status} {}", body.trim()))
            }
        })
        .map_err(|e| e.to_string())?
}
