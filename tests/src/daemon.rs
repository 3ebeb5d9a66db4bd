//! A long-running process of a run (an agent, etcd): spawned inside a
//! network namespace with its output appended to a log, held in a slot the
//! cleanup record shares, ended with SIGTERM and then SIGKILL.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::netns::{NetNs, NetnsError};

/// A running process, shared with the cleanup record.
pub(crate) type ProcessSlot = Arc<Mutex<Option<Child>>>;

/// Why a daemon could not be started.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// It runs already, with this pid.
    AlreadyRunning(u32),
    /// Its log could not be opened.
    Log(std::io::Error),
    /// The process could not be started.
    Spawn(NetnsError),
    /// A signal arrived; the run is being removed.
    Interrupted,
}

/// One daemon: its slot and its log.
#[derive(Debug)]
pub(crate) struct Daemon {
    slot: ProcessSlot,
    log: PathBuf,
}

impl Daemon {
    /// A daemon (not started) logging to `log`; the caller records `slot`
    /// for cleanup.
    pub(crate) fn new(slot: ProcessSlot, log: PathBuf) -> Self {
        Self { slot, log }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        reap_if_exited(&mut slot);
        slot
    }

    /// Its log (stdout and stderr, appended across restarts).
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// Its pid, when it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(Child::id)
    }

    /// Starts `cmd` inside `netns`: no stdin, stdout and stderr appended to
    /// the log (its directory is created), its own process group (a Ctrl-C
    /// in the terminal reaches the runner only, which then stops everything
    /// in order).
    pub(crate) fn spawn(&self, netns: &NetNs, cmd: &mut Command) -> Result<(), SpawnError> {
        let mut slot = self.lock();
        if let Some(child) = slot.as_ref() {
            return Err(SpawnError::AlreadyRunning(child.id()));
        }
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir).map_err(SpawnError::Log)?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(SpawnError::Log)?;
        let log2 = log.try_clone().map_err(SpawnError::Log)?;
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        crate::cleanup::creating(|| -> Result<(), SpawnError> {
            *slot = Some(netns.spawn(cmd).map_err(SpawnError::Spawn)?);
            Ok(())
        })
        .map_err(|_| SpawnError::Interrupted)?
    }

    /// Why it does not run, when it does not: its exit status (it is
    /// reaped), or that it was never started.
    pub(crate) fn gone(&self) -> Option<String> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let why = match slot.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => status.to_string(),
            None => "no process (not started)".to_owned(),
            _ => return None,
        };
        *slot = None;
        Some(why)
    }

    /// Ends it: SIGTERM and up to `grace`, then SIGKILL (at once when
    /// `grace` is zero). Not running is not an error; a failure gives the
    /// pid.
    pub(crate) fn end(&self, grace: Duration) -> Result<(), (u32, std::io::Error)> {
        let Some(mut child) = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        terminate(&mut child, grace)
            .map(drop)
            .map_err(|e| (child.id(), e))
    }

    /// The last `lines` lines of its log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
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
fn reap_if_exited(slot: &mut Option<Child>) {
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
