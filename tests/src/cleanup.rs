//! Run ids, the record of everything a run created, and its removal: on
//! drop, on panic (drop runs while unwinding), on SIGINT/SIGTERM/SIGHUP (a
//! watcher thread cleans every live run, then exits), and for runs whose
//! process died without cleaning ([`cleanup_stale`]).
//!
//! Every name a run creates carries its run id `<pid>r<seq>`: network
//! namespaces `pal-<runid>-...`, bpf roots `/sys/fs/bpf/palisade-<runid>-...`
//! and the temp dir `$TMPDIR/palisade-<runid>` (agent configs and etcd data
//! dirs live there, so a leftover agent or etcd is found by its command
//! line).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use crate::cni::CniDel;
use crate::daemon::{terminate, ProcessSlot};
use crate::echo::EchoServer;
use crate::netns;

/// Prefix of every network namespace this crate creates.
pub const NETNS_PREFIX: &str = "pal-";
/// Where bpf roots are made: `<BPF_FS>/palisade-<runid>-<node>`.
pub const BPF_FS: &str = "/sys/fs/bpf";
/// Prefix of bpf roots and temp dirs.
pub const DIR_PREFIX: &str = "palisade-";

static NEXT_SEQ: AtomicU32 = AtomicU32::new(0);

/// A new run id, unique on this machine while this process lives:
/// `<pid>r<seq>`.
pub fn new_run_id() -> String {
    format!(
        "{}r{}",
        std::process::id(),
        NEXT_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The pid in a run id made by [`new_run_id`].
pub fn run_id_pid(run_id: &str) -> Option<u32> {
    let (pid, seq) = run_id.split_once('r')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// The temp dir of a run.
pub fn run_temp_dir(run_id: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{DIR_PREFIX}{run_id}"))
}

/// Everything a run created that must go away, in the order of removal.
#[derive(Debug, Default)]
pub(crate) struct Resources {
    /// Echo servers: stopped first (their sockets hold the namespaces).
    pub(crate) servers: Vec<EchoServer>,
    /// Pods to `CNI DEL`, newest first (needs the agents still running).
    pub(crate) cni: Vec<CniDel>,
    /// Agent processes: SIGTERM, then SIGKILL.
    pub(crate) agents: Vec<ProcessSlot>,
    /// etcd servers: SIGTERM, then SIGKILL; after the agents (which may
    /// talk to etcd while stopping), before the namespaces.
    pub(crate) etcd: Vec<ProcessSlot>,
    /// Network namespaces, deleted newest first.
    pub(crate) netns: Vec<String>,
    /// Directories removed recursively (bpf roots, temp dir), newest first.
    pub(crate) dirs: Vec<PathBuf>,
    /// Set by `keep`: leave everything in place.
    pub(crate) kept: bool,
}

impl Resources {
    /// Removes everything recorded (idempotent); returns the problems met.
    pub(crate) fn clean(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.kept {
            return problems;
        }
        for mut s in self.servers.drain(..).rev() {
            s.stop();
        }
        for del in self.cni.drain(..).rev() {
            if let Err(e) = del.run() {
                problems.push(e.to_string());
            }
        }
        // Agents first (they may talk to etcd while they stop), then etcd.
        let agents = self.agents.drain(..).map(|s| ("agent", s));
        let etcd = self.etcd.drain(..).map(|s| ("etcd", s));
        for (what, slot) in agents.chain(etcd).collect::<Vec<_>>() {
            let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mut child) = guard.take() {
                if let Err(e) = terminate(&mut child, Duration::from_secs(5)) {
                    problems.push(format!("stopping {what} pid {}: {e}", child.id()));
                }
            }
        }
        for name in self.netns.drain(..).rev() {
            if let Err(e) = netns::delete(&name) {
                problems.push(e.to_string());
            }
        }
        for dir in self.dirs.drain(..).rev() {
            if let Err(e) = remove_dir(&dir) {
                problems.push(format!("removing {}: {e}", dir.display()));
            }
        }
        problems
    }
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

static LIVE: Mutex<Vec<Weak<Mutex<Resources>>>> = Mutex::new(Vec::new());

/// Held (shared) while something is being created; the signal watcher takes
/// it exclusively before cleaning, so nothing half-made escapes it, and sets
/// it to `true` (exiting) so that nothing new is made afterwards.
static CREATION: RwLock<bool> = RwLock::new(false);

/// The process is exiting on a signal; nothing more is created.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("interrupted by a signal: the run is being cleaned up")]
pub struct Interrupted;

/// Runs a creation step (`ip netns add`, an agent spawn, a CNI ADD) so that
/// a signal's cleanup either waits for it to finish or runs before it and
/// then prevents it.
pub(crate) fn creating<T>(f: impl FnOnce() -> T) -> Result<T, Interrupted> {
    let exiting = CREATION.read().unwrap_or_else(|e| e.into_inner());
    if *exiting {
        return Err(Interrupted);
    }
    Ok(f())
}
static WATCHER: OnceLock<()> = OnceLock::new();

/// Records a run's resources so that a signal cleans them, and makes sure
/// the signal watcher runs.
pub(crate) fn register(res: &Arc<Mutex<Resources>>) {
    WATCHER.get_or_init(start_watcher);
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(res));
}

fn start_watcher() {
    let read = match crate::sys::install_signal_pipe() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "cannot catch SIGINT/SIGTERM; an interrupted run leaves namespaces behind until the next run");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("palisade-cleanup".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            loop {
                match nix::unistd::read(&read, &mut byte) {
                    Ok(1) => break,
                    Ok(_) => return,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return,
                }
            }
            // A second signal now ends the process at once.
            crate::sys::restore_default_signals();
            let sig = i32::from(byte[0]);
            *CREATION.write().unwrap_or_else(|e| e.into_inner()) = true;
            eprintln!("palisade: caught signal {sig}, removing namespaces, agents and pins of this run (again to abort)");
            let problems = clean_all_live();
            for p in problems {
                eprintln!("palisade: cleanup: {p}");
            }
            std::process::exit(128 + sig);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the cleanup thread");
    }
}

/// Cleans every registered run that still exists.
fn clean_all_live() -> Vec<String> {
    let live: Vec<Arc<Mutex<Resources>>> = {
        let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.iter().filter_map(Weak::upgrade).collect()
    };
    let mut problems = Vec::new();
    for res in live {
        let mut res = res.lock().unwrap_or_else(|e| e.into_inner());
        problems.extend(res.clean());
    }
    problems
}

/// What [`cleanup_stale`] did.
#[derive(Debug, Default, Clone)]
pub struct StaleReport {
    /// Run ids whose leftovers were removed.
    pub runs: Vec<String>,
    /// What was removed (namespaces, processes, directories).
    pub removed: Vec<String>,
    /// What could not be removed, and why.
    pub problems: Vec<String>,
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// The run id in `<prefix><runid>-...` or `<prefix><runid>`, when that run's
/// process is gone.
fn dead_run_id(name: &str, prefix: &str) -> Option<String> {
    let rest = name.strip_prefix(prefix)?;
    let run_id = rest.split('-').next()?;
    let pid = run_id_pid(run_id)?;
    (!pid_alive(pid)).then(|| run_id.to_owned())
}

/// Removes the leftovers of runs whose process is dead (killed with
/// SIGKILL, crashed, or kept with `keep_on_failure`): their agents and etcd
/// servers, network namespaces, bpf roots and temp dirs. Runs of live processes are never
/// touched. (A dead run whose pid was reused by an unrelated process is
/// left alone until that process is gone.)
pub fn cleanup_stale() -> StaleReport {
    let mut report = StaleReport::default();
    let mut netns_names = Vec::new();
    match netns::list() {
        Ok(names) => {
            for n in names {
                if let Some(id) = dead_run_id(&n, NETNS_PREFIX) {
                    netns_names.push(n);
                    report.runs.push(id);
                }
            }
        }
        Err(e) => report.problems.push(e.to_string()),
    }
    let mut dirs = Vec::new();
    for parent in [PathBuf::from(BPF_FS), std::env::temp_dir()] {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = dead_run_id(&name, DIR_PREFIX) {
                dirs.push(entry.path());
                report.runs.push(id);
            }
        }
    }
    report.runs.sort();
    report.runs.dedup();
    // Agents, etcd servers (`--data-dir=<temp dir>/...`) and anything else
    // started with a path under a dead run's temp dir.
    let markers: Vec<String> = report
        .runs
        .iter()
        .map(|id| format!("/{DIR_PREFIX}{id}/"))
        .collect();
    if !markers.is_empty() {
        kill_processes_matching(&markers, &mut report);
    }
    for n in netns_names.iter().rev() {
        match netns::delete(n) {
            Ok(()) => report.removed.push(format!("netns {n}")),
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    for d in dirs {
        match remove_dir(&d) {
            Ok(()) => report.removed.push(d.display().to_string()),
            Err(e) => report
                .problems
                .push(format!("removing {}: {e}", d.display())),
        }
    }
    report
}

fn kill_processes_matching(markers: &[String], report: &mut StaleReport) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if markers.iter().any(|m| cmdline.contains(m.as_str())) {
            let target = nix::unistd::Pid::from_raw(pid);
            match nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL) {
                Ok(()) => report
                    .removed
                    .push(format!("process {pid} ({})", cmdline.trim())),
                Err(e) => report.problems.push(format!("kill {pid}: {e}")),
            }
        }
    }
    // Give the kernel a moment to tear the killed processes down, so their
    // namespaces and pins are free when they are removed next.
    std::thread::sleep(Duration::from_millis(200));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_carry_the_pid() {
        let id = new_run_id();
        assert_eq!(run_id_pid(&id), Some(std::process::id()));
        assert_ne!(id, new_run_id());
        assert_eq!(run_id_pid("12r"), None);
        assert_eq!(run_id_pid("abc"), None);
    }

    #[test]
    fn live_runs_are_not_stale() {
        let id = new_run_id();
        assert_eq!(dead_run_id(&format!("pal-{id}-n1"), NETNS_PREFIX), None);
        // pid 0 never names a live process in /proc.
        assert_eq!(
            dead_run_id("pal-0r3-x-a", NETNS_PREFIX),
            Some("0r3".to_owned())
        );
        assert_eq!(dead_run_id("pal-other", NETNS_PREFIX), None);
    }
}
