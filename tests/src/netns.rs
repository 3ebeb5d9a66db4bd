//! Named network namespaces (`/var/run/netns/<name>`, as `ip netns` makes
//! them), code run inside them on a dedicated thread, and processes spawned
//! inside them without leaving the host's mount namespace.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use nix::sched::CloneFlags;

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Longest namespace name this crate creates.
pub const MAX_NETNS_NAME: usize = 64;

/// Why a network-namespace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A helper command could not be started.
    #[error("cannot run `{command}`: {source} (is iproute2 installed?)")]
    Spawn {
        /// The command line.
        command: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A helper command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The namespace file could not be opened.
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        /// The namespace file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `setns` failed.
    #[error("cannot enter network namespace {name}: setns: {source}")]
    Setns {
        /// The namespace.
        name: String,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// A process could not be spawned inside the namespace.
    #[error("cannot start {program} in network namespace {name}: {source}")]
    SpawnIn {
        /// The program.
        program: String,
        /// The namespace.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start a thread for network namespace {name}: {source}")]
    Thread {
        /// The namespace.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Code run inside the namespace panicked.
    #[error("the thread running in network namespace {name} panicked")]
    Panicked {
        /// The namespace.
        name: String,
    },
    /// The name cannot be a namespace name.
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
}

/// A named network namespace. This is only a handle: dropping it does not
/// delete the namespace (a [`crate::Topology`] owns and deletes what it
/// creates).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace (`ip netns add`) and brings `lo` up.
    pub fn create(name: &str) -> Result<Self, NetnsError> {
        let ns = Self::existing(name)?;
        run_ip(&["netns", "add", name])?;
        if let Err(e) = ns.ip(&["link", "set", "lo", "up"]) {
            let _ = delete(name);
            return Err(e);
        }
        Ok(ns)
    }

    /// A handle to an existing namespace (not checked).
    pub fn existing(name: &str) -> Result<Self, NetnsError> {
        let bad = |reason| NetnsError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() || name == "." || name == ".." {
            return Err(bad("empty, `.` or `..`"));
        }
        if name.len() > MAX_NETNS_NAME {
            return Err(bad("longer than 64 bytes"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad(
                "only ASCII letters, digits, `-`, `_` and `.` are allowed",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
        })
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file (`/var/run/netns/<name>`), as `CNI_NETNS` wants it.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// Opens the namespace file.
    pub fn open(&self) -> Result<File, NetnsError> {
        let path = self.path();
        File::open(&path).map_err(|source| NetnsError::Open { path, source })
    }

    /// Moves the calling thread into the namespace. Only for threads this
    /// crate owns (probe workers, servers): the thread stays there.
    pub fn enter_current_thread(&self) -> Result<(), NetnsError> {
        let file = self.open()?;
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Setns {
            name: self.name.clone(),
            source,
        })
    }

    /// Runs `f` on a new thread inside the namespace and waits for it.
    /// Sockets `f` creates belong to the namespace.
    pub fn run<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let handle = self.spawn_thread(f)?;
        match handle.join() {
            Ok(r) => r,
            Err(_) => Err(NetnsError::Panicked {
                name: self.name.clone(),
            }),
        }
    }

    /// Starts `f` on a new thread inside the namespace; the join handle
    /// gives `f`'s result, or why the thread could not enter the namespace.
    pub fn spawn_thread<T, F>(&self, f: F) -> Result<JoinHandle<Result<T, NetnsError>>, NetnsError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let ns = self.clone();
        std::thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || {
                ns.enter_current_thread()?;
                Ok(f())
            })
            .map_err(|source| NetnsError::Thread {
                name: self.name.clone(),
                source,
            })
    }

    /// Spawns `cmd` inside the namespace (setns between fork and exec), in
    /// the caller's mount namespace: unlike `ip netns exec`, `/sys` is not
    /// remounted, so `/sys/fs/bpf` pins are the host's. Pass a fresh
    /// `Command`: this adds a `pre_exec` hook to it.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child, NetnsError> {
        let file = self.open()?;
        crate::sys::pre_exec_setns(cmd, file.as_raw_fd());
        let child = cmd.spawn().map_err(|source| NetnsError::SpawnIn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            name: self.name.clone(),
            source,
        });
        // The descriptor had to stay open until the fork; now it can go.
        drop(file);
        child
    }

    /// Runs `ip -n <name> ARGS...` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_ip(&all)
    }

    /// Deletes the namespace (`ip netns del`); see [`delete`].
    pub fn delete(&self) -> Result<(), NetnsError> {
        delete(&self.name)
    }
}

/// Runs `ip ARGS...` and returns its stdout.
pub fn run_ip(args: &[&str]) -> Result<String, NetnsError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names of every named network namespace.
pub fn list() -> Result<Vec<String>, NetnsError> {
    let mut names = Vec::new();
    match std::fs::read_dir(NETNS_DIR) {
        Ok(dir) => {
            for entry in dir.flatten() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(NetnsError::Open {
                path: PathBuf::from(NETNS_DIR),
                source,
            })
        }
    }
    names.sort();
    Ok(names)
}

/// Deletes a named namespace; one that does not exist is not an error. The
/// kernel frees it (and its interfaces) once no process, thread or socket
/// uses it any more.
pub fn delete(name: &str) -> Result<(), NetnsError> {
    if !PathBuf::from(NETNS_DIR).join(name).exists() {
        return Ok(());
    }
    run_ip(&["netns", "del", name]).map(drop)
}
