//! A real etcd server (Debian's `etcd-server`, `/usr/bin/etcd`) running
//! inside a network namespace, for multi-node clusters: started, stopped
//! and started again on the same data (outage tests), killed, and queried
//! with `etcdctl`.
//!
//! It serves plain `http://` unless given TLS files ([`make_certs`] makes a
//! test CA, a server and a client certificate with `openssl`, and an
//! unrelated CA): then clients need a certificate of that CA
//! (`--client-cert-auth`) and it answers `GET /health` on a plain metrics
//! port instead. [`EtcdServer::enable_auth`] turns on user/password
//! authentication; `etcdctl` calls then log in as root.
//!
//! A [`crate::Topology`] makes it ([`crate::Topology::add_etcd`]) and
//! records its process for cleanup; its data dir and log live in the run's
//! temp dir, so a leftover etcd of a dead run is found by its command line
//! like a leftover agent ([`crate::cleanup_stale`]).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard, PoisonError};
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
/// The `openssl` binary that [`make_certs`] runs.
pub const OPENSSL_BIN: &str = "openssl";
/// How long one `openssl` call of [`make_certs`] may take.
pub const OPENSSL_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// Making the test certificates failed.
    #[error("making test certificates in {}: `{command}`: {detail}", .dir.display())]
    Certs {
        /// Where they were being made.
        dir: PathBuf,
        /// The step (an `openssl` command line, or a file written).
        command: String,
        /// What went wrong (`openssl`'s stderr, or the I/O error).
        detail: String,
    },
}

/// The TLS files of a test etcd and its clients, made by [`make_certs`].
/// Every key is unencrypted PEM (PKCS#8), every certificate PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdCerts {
    /// The directory holding them.
    pub dir: PathBuf,
    /// The test CA's certificate: it signs the server and client
    /// certificates, and etcd trusts client certificates it signed.
    pub ca: PathBuf,
    /// The server certificate (SAN: [`EtcdCerts::server_ip`] and
    /// [`EtcdCerts::server_name`]; usages serverAuth and clientAuth, as
    /// etcd's gRPC gateway presents it to etcd itself).
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// A client certificate signed by the test CA (usage clientAuth).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// The client certificate's common name: without a user/password
    /// login, etcd takes it as the user name.
    pub client_cn: String,
    /// The certificate of a second, unrelated CA (it signed nothing), for
    /// tests of a client trusting the wrong CA.
    pub other_ca: PathBuf,
    /// The server certificate's IP address SAN.
    pub server_ip: Ipv4Addr,
    /// The server certificate's DNS name SAN.
    pub server_name: String,
}

/// How an [`EtcdServer`] talks to clients; changed between runs of it.
#[derive(Default)]
struct Security {
    /// TLS with client certificates (`https://`), or plain `http://`.
    tls: Option<EtcdCerts>,
    /// root's password once authentication is enabled.
    root_password: Option<String>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls)
            .field("root_password", &self.root_password.as_ref().map(|_| "..."))
            .finish()
    }
}

/// One single-member etcd server inside a network namespace: clients on
/// `http://<addr>` (or `https://<addr>` with TLS, see
/// [`EtcdServer::set_tls`]), peers on the same IP and the next port (plain
/// http), with TLS a plain metrics port (`GET /health`) on the port after.
/// Its data dir survives [`EtcdServer::stop`] and [`EtcdServer::kill`], so
/// [`EtcdServer::start`] resumes the same data.
#[derive(Debug)]
pub struct EtcdServer {
    netns: NetNs,
    client: SocketAddrV4,
    dir: PathBuf,
    daemon: Daemon,
    security: Mutex<Security>,
}

impl EtcdServer {
    /// A server (not started) in `netns` with clients on `client`, its data
    /// and log under `dir`; the caller records `slot` for cleanup. The
    /// peer port is `client.port() + 1` (and with TLS the metrics port
    /// `client.port() + 2`), so `client.port()` must be below 65534.
    pub(crate) fn new(netns: NetNs, client: SocketAddrV4, dir: PathBuf, slot: ProcessSlot) -> Self {
        Self {
            netns,
            client,
            daemon: Daemon::new(slot, dir.join("etcd.log")),
            dir,
            security: Mutex::new(Security::default()),
        }
    }

    fn security(&self) -> MutexGuard<'_, Security> {
        self.security.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client URL, `http://<ip>:<port>`, or `https://<ip>:<port>` with
    /// TLS.
    pub fn client_url(&self) -> String {
        let scheme = if self.security().tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.client)
    }

    /// Where etcd answers `GET /health` over plain HTTP: the client port,
    /// or with TLS the metrics port (`client.port() + 2`).
    fn health_addr(&self) -> SocketAddrV4 {
        if self.security().tls.is_some() {
            SocketAddrV4::new(*self.client.ip(), self.client.port().saturating_add(2))
        } else {
            self.client
        }
    }

    /// A directory for this server's TLS files (under the run's temp dir,
    /// removed with it): give it to [`make_certs`].
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    /// Serves clients over TLS with these files from the next start on
    /// (`None`: plain http again); stop it first, or use
    /// [`EtcdServer::restart_with_tls`]. Clients must present a certificate
    /// of `certs.ca` (`--client-cert-auth`); `etcdctl` calls do.
    pub fn set_tls(&self, certs: Option<EtcdCerts>) {
        self.security().tls = certs;
    }

    /// The TLS files it serves with (from its next start on), if any.
    pub fn tls(&self) -> Option<EtcdCerts> {
        self.security().tls.clone()
    }

    /// Stops it, switches TLS on (or off with `None`), and starts it again
    /// on the same data.
    pub fn restart_with_tls(&self, certs: Option<EtcdCerts>) -> Result<(), EtcdError> {
        self.stop()?;
        self.set_tls(certs);
        self.start()
    }

    /// Turns on etcd's authentication: creates user `root` with
    /// `root_password` (etcd requires it) and runs `etcdctl auth enable`.
    /// From then on every `etcdctl` call of this server logs in as root.
    pub fn enable_auth(&self, root_password: &str) -> Result<(), EtcdError> {
        let password = format!("--new-user-password={root_password}");
        self.etcdctl(&["user", "add", "root", &password])?;
        self.etcdctl(&["auth", "enable"])?;
        self.security().root_password = Some(root_password.to_owned());
        Ok(())
    }

    /// root's password, when authentication is enabled.
    pub fn root_password(&self) -> Option<String> {
        self.security().root_password.clone()
    }

    /// Creates user `user` with `password` and a role of the same name
    /// that may read and write every key under `prefix` (nothing else).
    pub fn add_user(&self, user: &str, password: &str, prefix: &str) -> Result<(), EtcdError> {
        let password = format!("--new-user-password={password}");
        self.etcdctl(&["user", "add", user, &password])?;
        self.etcdctl(&["role", "add", user])?;
        self.etcdctl(&[
            "role",
            "grant-permission",
            user,
            "readwrite",
            prefix,
            "--prefix=true",
        ])?;
        self.etcdctl(&["user", "grant-role", user, user])?;
        Ok(())
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
    /// the client port (with TLS the metrics port) says healthy (at most
    /// [`ETCD_READY_TIMEOUT`]).
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
        if let Some(certs) = self.tls() {
            // `GET /health` over TLS would need a client certificate: the
            // metrics listener answers it in plain HTTP.
            cmd.arg(format!("--cert-file={}", certs.server_cert.display()))
                .arg(format!("--key-file={}", certs.server_key.display()))
                .arg(format!("--trusted-ca-file={}", certs.ca.display()))
                .arg("--client-cert-auth")
                .arg(format!(
                    "--listen-metrics-urls=http://{}",
                    self.health_addr()
                ));
        }
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
            let last = match health(&self.netns, self.health_addr()) {
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
    /// namespace and returns its stdout (with TLS and as root, see
    /// [`EtcdServer::etcdctl_in`]).
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, EtcdError> {
        self.etcdctl_in(&self.netns, args)
    }

    /// Runs `etcdctl --endpoints=<client url> ARGS...` inside `netns` (a
    /// node reaching etcd over the underlay) and returns its stdout; at
    /// most [`ETCDCTL_TIMEOUT`]. With TLS it trusts the test CA and
    /// presents the client certificate; with authentication it logs in as
    /// root.
    pub fn etcdctl_in(&self, netns: &NetNs, args: &[&str]) -> Result<String, EtcdError> {
        let root = self.root_password().map(|p| ("root".to_owned(), p));
        let root = root.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        self.etcdctl_as(netns, root, args)
    }

    /// Like [`EtcdServer::etcdctl_in`], logged in as `user` (name,
    /// password), or with `None` not logged in at all (with TLS, etcd then
    /// takes the client certificate's common name as the user).
    pub fn etcdctl_as(
        &self,
        netns: &NetNs,
        user: Option<(&str, &str)>,
        args: &[&str],
    ) -> Result<String, EtcdError> {
        let mut all = vec![
            format!("--endpoints={}", self.client_url()),
            "--dial-timeout=2s".to_owned(),
            "--command-timeout=5s".to_owned(),
        ];
        if let Some(certs) = self.tls() {
            all.push(format!("--cacert={}", certs.ca.display()));
            all.push(format!("--cert={}", certs.client_cert.display()));
            all.push(format!("--key={}", certs.client_key.display()));
        }
        if let Some((name, password)) = user {
            all.push(format!("--user={name}"));
            all.push(format!("--password={password}"));
        }
        all.extend(args.iter().map(|a| (*a).to_owned()));
        // Errors show the command without passwords.
        let shown: Vec<String> = all
            .iter()
            .map(|a| match a.split_once('=') {
                Some((flag @ ("--password" | "--new-user-password"), _)) => format!("{flag}=..."),
                _ => a.clone(),
            })
            .collect();
        if !Path::new(ETCDCTL_BIN).is_file() {
            return Err(EtcdError::NoBinary {
                url: self.client_url(),
                bin: PathBuf::from(ETCDCTL_BIN),
            });
        }
        let command = format!("{ETCDCTL_BIN} {}", shown.join(" "));
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

/// The OpenSSL configuration of [`make_certs`]: requests take their subject
/// from `-subj`; the sections give each certificate its extensions.
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Makes test TLS files in `dir` (created) with `openssl`: a CA, a server
/// certificate for `server_ip` and `server_name` (both SANs), a client
/// certificate with common name `client_cn`, and a second CA that signed
/// nothing. ECDSA P-256 keys, valid for two days.
pub fn make_certs(
    dir: &Path,
    server_ip: Ipv4Addr,
    server_name: &str,
    client_cn: &str,
) -> Result<EtcdCerts, EtcdError> {
    let fail = |command: String, detail: String| EtcdError::Certs {
        dir: dir.to_owned(),
        command,
        detail,
    };
    let write = |name: &str, text: &str| -> Result<PathBuf, EtcdError> {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| fail(format!("write {}", path.display()), e.to_string()))?;
        Ok(path)
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(format!("create {}", dir.display()), e.to_string()))?;
    let cnf = write("openssl.cnf", OPENSSL_CNF)?;
    let server_ext = write(
        "server.ext",
        &format!(
            "basicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature\n\
             extendedKeyUsage = serverAuth,clientAuth\n\
             subjectAltName = IP:{server_ip},DNS:{server_name}\n\
             subjectKeyIdentifier = hash\n\
             authorityKeyIdentifier = keyid\n"
        ),
    )?;
    let path = |name: &str| dir.join(name);
    let s = |p: &Path| p.display().to_string();
    let openssl = |args: &[String]| -> Result<(), EtcdError> {
        run_openssl(args)
            .map(drop)
            .map_err(|detail| fail(format!("{OPENSSL_BIN} {}", args.join(" ")), detail))
    };
    let key = |name: &str| -> Result<PathBuf, EtcdError> {
        let p = path(name);
        openssl(&[
            "genpkey".into(),
            "-algorithm".into(),
            "EC".into(),
            "-pkeyopt".into(),
            "ec_paramgen_curve:P-256".into(),
            "-out".into(),
            s(&p),
        ])?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail(format!("chmod 0600 {}", p.display()), e.to_string()))?;
        Ok(p)
    };
    let self_signed = |name: &str, cn: &str| -> Result<PathBuf, EtcdError> {
        let k = key(&format!("{name}-key.pem"))?;
        let p = path(&format!("{name}.pem"));
        openssl(&[
            "req".into(),
            "-new".into(),
            "-x509".into(),
            "-config".into(),
            s(&cnf),
            "-extensions".into(),
            "ca".into(),
            "-key".into(),
            s(&k),
            "-subj".into(),
            format!("/CN={cn}"),
            "-days".into(),
            "2".into(),
            "-out".into(),
            s(&p),
        ])?;
        Ok(p)
    };
    let signed = |name: &str, cn: &str, ext: &[String], serial: u32| {
        let k = key(&format!("{name}-key.pem"))?;
        let csr = path(&format!("{name}.csr"));
        let p = path(&format!("{name}.pem"));
        openssl(&[
            "req".into(),
            "-new".into(),
            "-config".into(),
            s(&cnf),
            "-key".into(),
            s(&k),
            "-subj".into(),
            format!("/CN={cn}"),
            "-out".into(),
            s(&csr),
        ])?;
        let mut args: Vec<String> = vec![
            "x509".into(),
            "-req".into(),
            "-in".into(),
            s(&csr),
            "-CA".into(),
            s(&path("ca.pem")),
            "-CAkey".into(),
            s(&path("ca-key.pem")),
            "-set_serial".into(),
            serial.to_string(),
            "-days".into(),
            "2".into(),
            "-out".into(),
            s(&p),
        ];
        args.extend_from_slice(ext);
        openssl(&args)?;
        Ok::<_, EtcdError>((p, k))
    };
    let ca = self_signed("ca", "palisade test CA")?;
    let (server_cert, server_key) = signed(
        "server",
        server_name,
        &["-extfile".into(), s(&server_ext)],
        2,
    )?;
    let (client_cert, client_key) = signed(
        "client",
        client_cn,
        &[
            "-extfile".into(),
            s(&cnf),
            "-extensions".into(),
            "client".into(),
        ],
        3,
    )?;
    let other_ca = self_signed("other-ca", "unrelated test CA")?;
    Ok(EtcdCerts {
        dir: dir.to_owned(),
        ca,
        server_cert,
        server_key,
        client_cert,
        client_key,
        client_cn: client_cn.to_owned(),
        other_ca,
        server_ip,
        server_name: server_name.to_owned(),
    })
}

/// Runs `openssl ARGS...` (at most [`OPENSSL_TIMEOUT`]) and returns its
/// stdout; the error says what went wrong, with openssl's output.
pub fn run_openssl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result<String, String> {
    let child = Command::new(OPENSSL_BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it (is openssl installed?): {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(OPENSSL_TIMEOUT) {
        Ok(r) => r.map_err(|e| format!("wait: {e}"))?,
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(format!(
                "did not finish within {} s (killed)",
                OPENSSL_TIMEOUT.as_secs()
            ));
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{}: {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
