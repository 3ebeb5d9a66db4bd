//! Userspace enforcement of `Override` on file opens and execs with fanotify
//! permission events, for kernels without BPF-LSM.
//!
//! A [`FanotifyGuard`] owns a fanotify group (`FAN_CLASS_CONTENT`) and a
//! reader thread. The kernel holds every open (`FAN_OPEN_PERM`) or exec
//! (`FAN_OPEN_EXEC_PERM`) of a marked object until the thread answers; the
//! thread resolves the opened path (`/proc/self/fd/N`), asks the
//! [`Decider`] and answers `FAN_ALLOW` or `FAN_DENY` (the opener gets
//! `EPERM`). Every permission event is answered: when the path cannot be
//! resolved or the decider panics, the answer is the configured
//! [`FailMode`] and the failure is counted. Events of the agent's own
//! process are always allowed.
//!
//! What to mark comes from a [`MarkPlan`] (built from the selectors'
//! [`PathCoverage`]); [`FanotifyGuard::set_marks`] adds missing marks and
//! removes stale ones:
//! - an exact path that exists: an inode mark on the file (only opens of
//!   that inode reach the agent; others cost nothing);
//! - an exact path that does not exist: a mark on its parent directory with
//!   `FAN_EVENT_ON_CHILD`, so a file created later is covered (every open
//!   in that directory reaches the agent);
//! - a prefix, or a rule on anything (`Postfix`, `Not*`): a filesystem mark
//!   (`FAN_MARK_FILESYSTEM`) on the filesystem holding the prefix, or `/`.
//!   Every open on that filesystem then waits for the agent: much slower.
//!
//! Limits:
//! - An inode mark follows the inode: a file replaced by rename keeps the
//!   old inode's mark until `set_marks` runs again (call it periodically).
//! - Paths are resolved in the agent's mount namespace.
//! - The reader thread must not open files on marked objects itself (it
//!   would wait for its own answer); the decider runs on it.
//! - When the group's descriptor is closed (drop, or the agent dies), the
//!   kernel allows every event still pending and destroys all marks
//!   (`fanotify_release`), so a stopped agent never blocks the host.
//! - For an exec the kernel also sends `FAN_OPEN_PERM` for the same file,
//!   and `FAN_OPEN_EXEC_PERM` for an ELF interpreter too.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::fcntl::{open, readlink, OFlag, AT_FDCWD};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags, MaskFlags,
    Response,
};
use nix::sys::stat::{fstat, Mode};
use palisade_tracing_policies::PathCoverage;
use tracing::{debug, trace, warn};

/// Why the guard could not start, mark or stop.
#[derive(Debug, thiserror::Error)]
pub enum FanotifyError {
    /// A system call failed.
    #[error("{call}: {source}")]
    Syscall {
        /// The call.
        call: &'static str,
        /// The error.
        #[source]
        source: Errno,
    },
    /// A system call on a path failed.
    #[error("{call} {}: {source}", path.display())]
    Path {
        /// The call.
        call: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: Errno,
    },
    /// The reader thread could not be started.
    #[error("spawning the fanotify reader thread: {source}")]
    Spawn {
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The reader thread panicked.
    #[error("the fanotify reader thread panicked")]
    ReaderPanicked,
}

/// What the process is doing to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// `open()` (the LSM hook `file_open`, kprobe `security_file_open`).
    Open,
    /// `execve()` of the file (`bprm_check_security`,
    /// `security_bprm_check`).
    Exec,
}

/// One access waiting for a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Process (tgid) doing it.
    pub pid: u32,
    /// Path of the file, in the agent's mount namespace (`" (deleted)"`
    /// appended by the kernel for unlinked files).
    pub path: PathBuf,
    /// `st_mode` of the file (0 when `fstat` failed).
    pub mode: u32,
    /// Open or exec.
    pub kind: AccessKind,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `FAN_ALLOW`.
    Allow,
    /// `FAN_DENY`: the call fails with `EPERM`.
    Deny,
}

/// A decider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<E> {
    /// The verdict.
    pub verdict: Verdict,
    /// An event to report (sent to the guard's channel after answering).
    pub event: Option<E>,
}

impl<E> Decision<E> {
    /// Allow, nothing to report.
    pub fn allow() -> Self {
        Self {
            verdict: Verdict::Allow,
            event: None,
        }
    }
}

/// Decides accesses. Runs on the reader thread: it must be quick, and must
/// not open files on marked objects.
pub trait Decider: Send + Sync {
    /// The event payload reported with a decision.
    type Event: Send + 'static;

    /// The verdict on `access`.
    fn decide(&self, access: &Access) -> Decision<Self::Event>;
}

/// The answer when the guard cannot decide (path unresolvable, decider
/// panicked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailMode {
    /// Fail open.
    #[default]
    Allow,
    /// Fail closed.
    Deny,
}

impl FailMode {
    fn verdict(self) -> Verdict {
        match self {
            Self::Allow => Verdict::Allow,
            Self::Deny => Verdict::Deny,
        }
    }
}

/// Guard settings.
#[derive(Debug, Clone, Copy)]
pub struct GuardConfig {
    /// Answer when the guard cannot decide.
    pub fail_mode: FailMode,
    /// Capacity of the event channel; events beyond it are dropped and
    /// counted.
    pub channel_capacity: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            fail_mode: FailMode::Allow,
            channel_capacity: 1024,
        }
    }
}

/// An event a decider reported, with its access and verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardEvent<E> {
    /// The access.
    pub access: Access,
    /// The verdict given.
    pub verdict: Verdict,
    /// The decider's payload.
    pub event: E,
}

/// Counters of a guard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Permission events answered.
    pub answered: u64,
    /// Of which denied.
    pub denied: u64,
    /// Of which from the agent's own process (always allowed).
    pub own: u64,
    /// Of which answered by the fail mode (could not decide).
    pub failed: u64,
    /// Responses the kernel refused (the event stays pending until the
    /// group is closed).
    pub response_errors: u64,
    /// Reports dropped because the channel was full or closed.
    pub dropped: u64,
    /// Kernel queue overflows (events lost before reaching the agent).
    pub overflows: u64,
}

#[derive(Debug, Default)]
struct Counters {
    answered: AtomicU64,
    denied: AtomicU64,
    own: AtomicU64,
    failed: AtomicU64,
    response_errors: AtomicU64,
    dropped: AtomicU64,
    overflows: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> GuardStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GuardStats {
            answered: r(&self.answered),
            denied: r(&self.denied),
            own: r(&self.own),
            failed: r(&self.failed),
            response_errors: r(&self.response_errors),
            dropped: r(&self.dropped),
            overflows: r(&self.overflows),
        }
    }
}

/// Which accesses a mark reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Kinds {
    /// Opens (`FAN_OPEN_PERM`).
    pub open: bool,
    /// Execs (`FAN_OPEN_EXEC_PERM`).
    pub exec: bool,
}

impl Kinds {
    /// Opens only.
    pub const OPEN: Self = Self {
        open: true,
        exec: false,
    };
    /// Execs only.
    pub const EXEC: Self = Self {
        open: false,
        exec: true,
    };

    /// The kinds of an access kind.
    pub fn of(kind: AccessKind) -> Self {
        match kind {
            AccessKind::Open => Self::OPEN,
            AccessKind::Exec => Self::EXEC,
        }
    }

    fn union(self, o: Self) -> Self {
        Self {
            open: self.open || o.open,
            exec: self.exec || o.exec,
        }
    }

    fn mask(self) -> MaskFlags {
        let mut m = MaskFlags::empty();
        if self.open {
            m |= MaskFlags::FAN_OPEN_PERM;
        }
        if self.exec {
            m |= MaskFlags::FAN_OPEN_EXEC_PERM;
        }
        m
    }
}

/// What to watch: exact paths, path prefixes, or everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkPlan {
    exact: BTreeMap<PathBuf, Kinds>,
    prefixes: BTreeMap<PathBuf, Kinds>,
    everything: Kinds,
}

impl MarkPlan {
    /// Watch nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Watch one absolute path.
    pub fn exact(&mut self, path: impl Into<PathBuf>, kinds: Kinds) -> &mut Self {
        let e = self.exact.entry(path.into()).or_default();
        *e = e.union(kinds);
        self
    }

    /// Watch every path starting with `prefix` (bytes).
    pub fn prefix(&mut self, prefix: impl Into<PathBuf>, kinds: Kinds) -> &mut Self {
        let e = self.prefixes.entry(prefix.into()).or_default();
        *e = e.union(kinds);
        self
    }

    /// Watch every path (a filesystem mark on `/`).
    pub fn everything(&mut self, kinds: Kinds) -> &mut Self {
        self.everything = self.everything.union(kinds);
        self
    }

    /// Watch what a hook's selectors could act on.
    pub fn add_coverage(&mut self, coverage: &PathCoverage, kinds: Kinds) -> &mut Self {
        match coverage {
            PathCoverage::Nothing => {}
            PathCoverage::Everything => {
                self.everything(kinds);
            }
            PathCoverage::Paths { exact, prefixes } => {
                for p in exact {
                    self.exact(PathBuf::from(OsStr::from_bytes(p)), kinds);
                }
                for p in prefixes {
                    self.prefix(PathBuf::from(OsStr::from_bytes(p)), kinds);
                }
            }
        }
        self
    }
}

/// What a mark is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum MarkKey {
    Inode { dev: u64, ino: u64 },
    Filesystem { dev: u64 },
}

/// A mark to have: its object (held open with `O_PATH` so it can be
/// removed even after the path changed) and its mask.
#[derive(Debug)]
struct Mark {
    path: PathBuf,
    fd: OwnedFd,
    mask: MaskFlags,
}

/// What [`FanotifyGuard::set_marks`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MarkReport {
    /// Inode marks on files now in place.
    pub files: usize,
    /// Directory marks (for files that do not exist yet) now in place.
    pub directories: usize,
    /// Filesystem marks now in place.
    pub filesystems: usize,
    /// Marks added or extended.
    pub added: usize,
    /// Marks removed or narrowed.
    pub removed: usize,
}

/// A change to the group's marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkOp {
    Add(MarkKey, MaskFlags),
    Remove(MarkKey, MaskFlags),
}

/// The mark operations that turn `current` into `desired` (pure).
fn diff(
    current: &BTreeMap<MarkKey, MaskFlags>,
    desired: &BTreeMap<MarkKey, MaskFlags>,
) -> Vec<MarkOp> {
    let mut ops = Vec::new();
    for (k, &want) in desired {
        let have = current.get(k).copied().unwrap_or(MaskFlags::empty());
        if !(want - have).is_empty() {
            ops.push(MarkOp::Add(*k, want - have));
        }
        if !(have - want).is_empty() {
            ops.push(MarkOp::Remove(*k, have - want));
        }
    }
    for (k, &have) in current {
        if !desired.contains_key(k) {
            ops.push(MarkOp::Remove(*k, have));
        }
    }
    ops
}

/// Opens `path` with `O_PATH` and identifies its inode and filesystem.
fn open_object(path: &Path) -> Result<(OwnedFd, u64, u64), FanotifyError> {
    let fd = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(|source| {
        FanotifyError::Path {
            call: "open(O_PATH)",
            path: path.to_owned(),
            source,
        }
    })?;
    let st = fstat(&fd).map_err(|source| FanotifyError::Path {
        call: "fstat",
        path: path.to_owned(),
        source,
    })?;
    Ok((fd, st.st_dev, st.st_ino))
}

/// The nearest existing ancestor directory of `path` (`/` at worst).
fn existing_dir(path: &Path) -> PathBuf {
    let mut p = path;
    loop {
        if p.is_dir() {
            return p.to_owned();
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return PathBuf::from("/"),
        }
    }
}

fn add_mark(
    out: &mut BTreeMap<MarkKey, Mark>,
    key: MarkKey,
    path: PathBuf,
    fd: OwnedFd,
    mask: MaskFlags,
) {
    out.entry(key)
        .and_modify(|m| m.mask |= mask)
        .or_insert(Mark { path, fd, mask });
}

fn add_filesystem(
    out: &mut BTreeMap<MarkKey, Mark>,
    dir: PathBuf,
    kinds: Kinds,
) -> Result<(), FanotifyError> {
    let (fd, dev, _) = open_object(&dir)?;
    add_mark(out, MarkKey::Filesystem { dev }, dir, fd, kinds.mask());
    Ok(())
}

/// Resolves a plan to concrete marks (I/O: opens and stats the paths).
fn resolve(plan: &MarkPlan) -> Result<BTreeMap<MarkKey, Mark>, FanotifyError> {
    let mut out = BTreeMap::new();
    if plan.everything != Kinds::default() {
        add_filesystem(&mut out, PathBuf::from("/"), plan.everything)?;
    }
    for (prefix, &kinds) in &plan.prefixes {
        // `/etc/ss` covers `/etc/ssh/...`: the filesystem of `/etc`.
        let dir = if prefix.as_os_str().as_bytes().ends_with(b"/") {
            prefix.clone()
        } else {
            prefix
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_owned)
        };
        add_filesystem(&mut out, existing_dir(&dir), kinds)?;
    }
    for (path, &kinds) in &plan.exact {
        match open_object(path) {
            Ok((fd, dev, ino)) => {
                let mut mask = kinds.mask();
                if path.is_dir() {
                    // Opening the directory itself is reported, not its
                    // children.
                    mask |= MaskFlags::FAN_ONDIR;
                }
                add_mark(
                    &mut out,
                    MarkKey::Inode { dev, ino },
                    path.clone(),
                    fd,
                    mask,
                );
            }
            Err(FanotifyError::Path {
                source: Errno::ENOENT,
                ..
            }) => {
                let parent = path
                    .parent()
                    .map_or_else(|| PathBuf::from("/"), Path::to_owned);
                if parent.is_dir() {
                    let (fd, dev, ino) = open_object(&parent)?;
                    let mask = kinds.mask() | MaskFlags::FAN_EVENT_ON_CHILD;
                    add_mark(&mut out, MarkKey::Inode { dev, ino }, parent, fd, mask);
                } else {
                    // Missing directories too: only a filesystem mark sees
                    // the file once they are created.
                    add_filesystem(&mut out, existing_dir(&parent), kinds)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

struct Shared<E> {
    group: Fanotify,
    stop: EventFd,
    decider: Arc<dyn Decider<Event = E>>,
    events: SyncSender<GuardEvent<E>>,
    counters: Counters,
    fail_mode: FailMode,
    own_pid: u32,
}

/// A running fanotify permission guard; see the module documentation.
/// Dropping it stops the reader thread and removes every mark.
pub struct FanotifyGuard<E: Send + 'static> {
    shared: Arc<Shared<E>>,
    thread: Option<JoinHandle<()>>,
    marks: Mutex<BTreeMap<MarkKey, Mark>>,
}

impl<E: Send + 'static> std::fmt::Debug for FanotifyGuard<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanotifyGuard")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<E: Send + 'static> FanotifyGuard<E> {
    /// Creates the fanotify group (no marks yet) and starts the reader
    /// thread. Returns the guard and the channel of reported events.
    /// Needs `CAP_SYS_ADMIN`.
    pub fn start(
        decider: Arc<dyn Decider<Event = E>>,
        config: GuardConfig,
    ) -> Result<(Self, Receiver<GuardEvent<E>>), FanotifyError> {
        let group = Fanotify::init(
            InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .map_err(|source| FanotifyError::Syscall {
            call: "fanotify_init",
            source,
        })?;
        let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map_err(
            |source| FanotifyError::Syscall {
                call: "eventfd",
                source,
            },
        )?;
        let (tx, rx) = sync_channel(config.channel_capacity);
        let shared = Arc::new(Shared {
            group,
            stop,
            decider,
            events: tx,
            counters: Counters::default(),
            fail_mode: config.fail_mode,
            own_pid: std::process::id(),
        });
        let reader = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("palisade-fanotify".into())
            .spawn(move || reader.run())
            .map_err(|source| FanotifyError::Spawn { source })?;
        Ok((
            Self {
                shared,
                thread: Some(thread),
                marks: Mutex::new(BTreeMap::new()),
            },
            rx,
        ))
    }

    /// Makes the group's marks those of `plan`: adds missing marks, removes
    /// stale ones, re-resolves paths (a replaced file gets its new inode
    /// marked). Stops at the first failure; marks applied so far stay.
    pub fn set_marks(&self, plan: &MarkPlan) -> Result<MarkReport, FanotifyError> {
        let desired = resolve(plan)?;
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let current: BTreeMap<MarkKey, MaskFlags> =
            marks.iter().map(|(k, m)| (*k, m.mask)).collect();
        let wanted: BTreeMap<MarkKey, MaskFlags> =
            desired.iter().map(|(k, m)| (*k, m.mask)).collect();
        let mut report = MarkReport::default();
        for op in diff(&current, &wanted) {
            match op {
                MarkOp::Add(key, mask) => {
                    let Some(m) = desired.get(&key) else { continue };
                    self.mark(MarkFlags::FAN_MARK_ADD, key, mask, m)?;
                    debug!(path = %m.path.display(), ?key, ?mask, "fanotify mark added");
                    report.added += 1;
                }
                MarkOp::Remove(key, mask) => {
                    let Some(m) = marks.get(&key) else { continue };
                    self.mark(MarkFlags::FAN_MARK_REMOVE, key, mask, m)?;
                    debug!(path = %m.path.display(), ?key, ?mask, "fanotify mark removed");
                    report.removed += 1;
                }
            }
        }
        *marks = desired;
        for (k, m) in marks.iter() {
            match k {
                MarkKey::Filesystem { .. } => report.filesystems += 1,
                MarkKey::Inode { .. } if m.mask.contains(MaskFlags::FAN_EVENT_ON_CHILD) => {
                    report.directories += 1;
                }
                MarkKey::Inode { .. } => report.files += 1,
            }
        }
        Ok(report)
    }

    fn mark(
        &self,
        op: MarkFlags,
        key: MarkKey,
        mask: MaskFlags,
        m: &Mark,
    ) -> Result<(), FanotifyError> {
        let kind = match key {
            MarkKey::Inode { .. } => MarkFlags::FAN_MARK_INODE,
            MarkKey::Filesystem { .. } => MarkFlags::FAN_MARK_FILESYSTEM,
        };
        // fanotify_mark() with a NULL path refuses O_PATH descriptors
        // (EBADF); the /proc magic link resolves to the same object.
        let by_fd = format!("/proc/self/fd/{}", m.fd.as_raw_fd());
        self.shared
            .group
            .mark(op | kind, mask, AT_FDCWD, Some(by_fd.as_str()))
            .map_err(|source| FanotifyError::Path {
                call: "fanotify_mark",
                path: m.path.clone(),
                source,
            })
    }

    /// The guard's counters.
    pub fn stats(&self) -> GuardStats {
        self.shared.counters.snapshot()
    }

    /// Stops the reader thread (answering what is queued) and removes every
    /// mark; the group is closed when the guard is dropped.
    pub fn stop(mut self) -> Result<(), FanotifyError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), FanotifyError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let mut first_err = None;
        let marks = std::mem::take(&mut *self.marks.lock().unwrap_or_else(PoisonError::into_inner));
        for (key, m) in &marks {
            if let Err(e) = self.mark(MarkFlags::FAN_MARK_REMOVE, *key, m.mask, m) {
                warn!(error = %e, "removing a fanotify mark");
                first_err.get_or_insert(e);
            }
        }
        if let Err(source) = self.shared.stop.write(1) {
            // The thread cannot be woken: the group's close (below, when the
            // last Arc goes) still allows every pending event.
            first_err.get_or_insert(FanotifyError::Syscall {
                call: "eventfd write",
                source,
            });
            return first_err.map_or(Ok(()), Err);
        }
        if thread.join().is_err() {
            first_err.get_or_insert(FanotifyError::ReaderPanicked);
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl<E: Send + 'static> Drop for FanotifyGuard<E> {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            warn!(error = %e, "stopping the fanotify guard");
        }
    }
}

impl<E: Send + 'static> Shared<E> {
    fn run(&self) {
        loop {
            let (group_ready, stop) = {
                let mut fds = [
                    PollFd::new(self.group.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.stop.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        warn!(error = %e, "poll on the fanotify group failed; reader stops");
                        return;
                    }
                }
                let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if group_ready || stop {
                self.drain();
            }
            if stop {
                debug!("fanotify reader stopping");
                return;
            }
        }
    }

    /// Answers every queued event.
    fn drain(&self) {
        loop {
            match self.group.read_events() {
                Ok(events) if events.is_empty() => return,
                Ok(events) => events.into_iter().for_each(|ev| self.handle(ev)),
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    warn!(error = %e, "reading fanotify events");
                    return;
                }
            }
        }
    }

    fn handle(&self, ev: FanotifyEvent) {
        let c = &self.counters;
        let Some(fd) = ev.fd() else {
            Counters::bump(&c.overflows);
            warn!("fanotify queue overflow: events were lost");
            return;
        };
        let mask = ev.mask();
        if !mask.intersects(MaskFlags::FAN_OPEN_PERM | MaskFlags::FAN_OPEN_EXEC_PERM) {
            return;
        }
        let kind = if mask.contains(MaskFlags::FAN_OPEN_EXEC_PERM) {
            AccessKind::Exec
        } else {
            AccessKind::Open
        };
        let pid = u32::try_from(ev.pid()).unwrap_or(0);
        let mut report = None;
        let verdict = if pid == self.own_pid {
            Counters::bump(&c.own);
            Verdict::Allow
        } else {
            match readlink(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str()) {
                Ok(path) => {
                    let access = Access {
                        pid,
                        path: PathBuf::from(path),
                        mode: fstat(fd).map_or(0, |st| st.st_mode),
                        kind,
                    };
                    match catch_unwind(AssertUnwindSafe(|| self.decider.decide(&access))) {
                        Ok(d) => {
                            report = d.event.map(|e| (access, e));
                            d.verdict
                        }
                        Err(_) => {
                            Counters::bump(&c.failed);
                            warn!(pid, "fanotify decider panicked; answering the fail mode");
                            self.fail_mode.verdict()
                        }
                    }
                }
                Err(e) => {
                    Counters::bump(&c.failed);
                    warn!(pid, error = %e, "resolving a fanotify event's path; answering the fail mode");
                    self.fail_mode.verdict()
                }
            }
        };
        let response = match verdict {
            Verdict::Allow => Response::FAN_ALLOW,
            Verdict::Deny => Response::FAN_DENY,
        };
        if let Err(e) = self
            .group
            .write_response(FanotifyResponse::new(fd, response))
        {
            Counters::bump(&c.response_errors);
            warn!(pid, error = %e, "answering a fanotify permission event");
        }
        Counters::bump(&c.answered);
        if verdict == Verdict::Deny {
            Counters::bump(&c.denied);
        }
        trace!(pid, ?kind, ?verdict, "fanotify permission event answered");
        // The event's descriptor is closed when `ev` drops, after the answer.
        if let Some((access, event)) = report {
            let sent = self.events.try_send(GuardEvent {
                access,
                verdict,
                event,
            });
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sent {
                Counters::bump(&c.dropped);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(bits: &[MaskFlags]) -> MaskFlags {
        bits.iter().fold(MaskFlags::empty(), |a, &b| a | b)
    }

    #[test]
    fn diff_adds_narrows_and_removes() {
        let a = MarkKey::Inode { dev: 1, ino: 2 };
        let b = MarkKey::Filesystem { dev: 1 };
        let c = MarkKey::Inode { dev: 1, ino: 3 };
        let open = MaskFlags::FAN_OPEN_PERM;
        let exec = MaskFlags::FAN_OPEN_EXEC_PERM;
        let current = BTreeMap::from([(a, m(&[open, exec])), (b, open)]);
        let desired = BTreeMap::from([(a, open), (c, exec)]);
        let ops = diff(&current, &desired);
        assert_eq!(
            ops,
            [
                MarkOp::Remove(a, exec),
                MarkOp::Add(c, exec),
                MarkOp::Remove(b, open)
            ]
        );
        assert!(diff(&desired, &desired).is_empty());
        assert_eq!(diff(&desired, &BTreeMap::new()).len(), 2);
    }

    #[test]
    fn plans_merge_kinds_and_coverage() {
        let mut plan = MarkPlan::new();
        plan.exact("/etc/shadow", Kinds::OPEN)
            .exact("/etc/shadow", Kinds::EXEC);
        assert_eq!(
            plan.exact.get(Path::new("/etc/shadow")),
            Some(&Kinds {
                open: true,
                exec: true
            })
        );
        let cov = PathCoverage::Paths {
            exact: [b"/bin/true".to_vec()].into(),
            prefixes: [b"/root/".to_vec()].into(),
        };
        plan.add_coverage(&cov, Kinds::EXEC);
        assert!(plan.prefixes.contains_key(Path::new("/root/")));
        plan.add_coverage(&PathCoverage::Everything, Kinds::OPEN);
        assert_eq!(plan.everything, Kinds::OPEN);
    }
}
