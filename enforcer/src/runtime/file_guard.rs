//! Hooks enforced with fanotify permission events: `file_open` and
//! `bprm_check_security` (LSM hooks, or kprobes on their `security_*`
//! functions) on kernels without BPF-LSM or kprobes.
//!
//! The compiler marks such hooks [`Attach::Fanotify`]; their selectors are
//! not in the kernel's maps but evaluated here, by the reference evaluator
//! ([`CompiledSelectors`]), on every open (or exec) of a marked file. The
//! marks cover what any acting selector could match
//! ([`CompiledSelectors::path_coverage`]): an exact path costs only its own
//! opens, a prefix or an unbounded selector puts every open on that
//! filesystem through the agent.
//!
//! The calling process is read without opening anything the group could
//! mark: `/proc/<pid>/exe` (readlink), the namespaces (stat of
//! `/proc/<pid>/ns/*`), and, only for selectors on capabilities or
//! namespace pids, `/proc/<pid>/status` (procfs cannot carry permission
//! marks). Ancestors come from the process cache.
//!
//! Differences from the in-kernel mechanisms, by nature of fanotify: a deny
//! is always `EPERM` (`argError` is not returned; the compiler warns), and
//! the process is known by its thread-group id only (`rateLimitScope:
//! thread` counts per process).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use palisade_api::events::{
    ArgValue as EventArg, Event, KprobeAction, KprobeArgument, KprobeFile, KprobeLinuxBinprm,
    Process as EventProcess,
};
use palisade_tracing_policies::compile::{
    syscall_name, Action, ActionPlan, Attach, CompiledHook, CompiledPolicy, FanotifyAccess, Host,
};
use palisade_tracing_policies::eval::{hooks, Ancestor, ResolvedLists};
use palisade_tracing_policies::model::RateLimitScope;
use palisade_tracing_policies::validate::NAMESPACE_KINDS;
use palisade_tracing_policies::{
    ArgValue, CompiledSelectors, Context, Namespaces, PathCoverage, Process, Selector,
    TracingPolicy,
};
use tracing::{debug, warn};

use super::events::{hook_event, EventStore, HookMeta};
use super::host::{host_namespace, namespace_inode};
use super::procs::{boottime_ns, ProcStatus, ProcessCache, MAX_ANCESTORS};
use crate::fanotify::{
    Access, AccessKind, Decider, Decision, FanotifyError, FanotifyGuard, GuardConfig, GuardEvent,
    GuardStats, Kinds, MarkPlan, MarkReport, Verdict,
};

/// Rate-limit entries kept before the table is reset.
const RATE_ENTRIES: usize = 16_384;

/// One hook of a policy, ready to evaluate in user space.
#[derive(Debug)]
pub struct GuardHook {
    meta: HookMeta,
    access: AccessKind,
    selectors: CompiledSelectors,
    coverage: PathCoverage,
    needs: Needs,
}

/// What a hook's selectors look at beyond the binary, the ancestors and
/// the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Needs {
    /// `/proc/<pid>/status`: capabilities, the namespace pid.
    status: bool,
    /// Namespace inodes.
    namespaces: bool,
}

impl Needs {
    fn of(selectors: &[Selector]) -> Self {
        let mut n = Self::default();
        for s in selectors {
            n.status |= !s.match_capabilities.is_empty()
                || !s.match_capability_changes.is_empty()
                || s.match_pids.iter().any(|p| p.is_namespace_pid);
            n.namespaces |= !s.match_namespaces.is_empty() || !s.match_namespace_changes.is_empty();
        }
        n
    }

    fn union(self, o: Self) -> Self {
        Self {
            status: self.status || o.status,
            namespaces: self.namespaces || o.namespaces,
        }
    }
}

/// The fanotify hooks of `policy` (compiled as `compiled`), with their
/// selectors compiled for user-space evaluation. Errors name the YAML path.
pub fn prepare(
    policy: &TracingPolicy,
    compiled: &CompiledPolicy,
    host: &dyn Host,
) -> Result<Vec<GuardHook>, String> {
    let fanotify: Vec<&CompiledHook> = compiled
        .hooks
        .iter()
        .filter(|h| matches!(h.attach, Attach::Fanotify { .. }))
        .collect();
    if fanotify.is_empty() {
        return Ok(Vec::new());
    }
    let lists = ResolvedLists::from_policy(policy, &|name| {
        host.syscall_number(syscall_name(name)).map(u64::from)
    })
    .map_err(|e| e.to_string())?;
    let declared = hooks(policy);
    fanotify
        .into_iter()
        .map(|h| {
            let Attach::Fanotify { access } = h.attach else {
                return Err(format!("{}: not a fanotify hook", h.path));
            };
            let decl = declared
                .iter()
                .find(|d| d.path == h.path)
                .ok_or_else(|| format!("{}: no such hook in the policy", h.path))?;
            let selectors =
                CompiledSelectors::new(&decl.hook(), &lists).map_err(|e| e.to_string())?;
            Ok(GuardHook {
                coverage: selectors.path_coverage(0),
                needs: Needs::of(decl.selectors),
                selectors,
                access: match access {
                    FanotifyAccess::Open => AccessKind::Open,
                    FanotifyAccess::Exec => AccessKind::Exec,
                },
                meta: HookMeta {
                    policy: compiled.name.clone(),
                    hook: h.clone(),
                },
            })
        })
        .collect()
}

/// What a policy had before [`FileGuard::install`] replaced it, for
/// [`FileGuard::restore`].
#[derive(Debug)]
pub struct Previous(Option<Vec<Arc<GuardHook>>>);

/// Counters of the user-space evaluation (beyond the guard's own).
#[derive(Debug, Default)]
struct DeciderCounters {
    rate_limited: AtomicU64,
    signal_failed: AtomicU64,
}

/// The guard's and the evaluation's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileGuardStats {
    /// The permission guard's counters.
    pub guard: GuardStats,
    /// Events suppressed by `rateLimit`.
    pub rate_limited: u64,
    /// Signals that could not be sent.
    pub signal_failed: u64,
}

struct Running {
    guard: FanotifyGuard<Vec<Event>>,
}

/// The fanotify-enforced hooks of every policy; the fanotify group runs
/// only while some policy has such a hook.
pub struct FileGuard {
    running: Option<Running>,
    table: Arc<RwLock<Vec<Arc<GuardHook>>>>,
    policies: BTreeMap<String, Vec<Arc<GuardHook>>>,
    counters: Arc<DeciderCounters>,
    procs: Arc<Mutex<ProcessCache>>,
    store: Arc<EventStore>,
    node: String,
}

impl FileGuard {
    /// No hooks yet; events go to `store`, processes are looked up in
    /// `procs`.
    pub fn new(procs: Arc<Mutex<ProcessCache>>, store: Arc<EventStore>, node: &str) -> Self {
        Self {
            running: None,
            table: Arc::new(RwLock::new(Vec::new())),
            policies: BTreeMap::new(),
            counters: Arc::new(DeciderCounters::default()),
            procs,
            store,
            node: node.to_owned(),
        }
    }

    /// Puts `hooks` in force as policy `name`'s (replacing its previous
    /// ones). On error the previous hooks are back in force.
    pub fn install(&mut self, name: &str, hooks: Vec<GuardHook>) -> Result<Previous, String> {
        let previous = if hooks.is_empty() {
            self.policies.remove(name)
        } else {
            self.policies
                .insert(name.to_owned(), hooks.into_iter().map(Arc::new).collect())
        };
        match self.sync() {
            Ok(()) => Ok(Previous(previous)),
            Err(e) => {
                self.restore(name, Previous(previous));
                Err(e)
            }
        }
    }

    /// Undoes an [`install`](Self::install) of policy `name`.
    pub fn restore(&mut self, name: &str, previous: Previous) {
        match previous.0 {
            Some(h) => self.policies.insert(name.to_owned(), h),
            None => self.policies.remove(name),
        };
        if let Err(e) = self.sync() {
            warn!(error = %e, policy = name, "restoring the fanotify marks");
        }
    }

    /// Removes policy `name`'s hooks.
    pub fn remove(&mut self, name: &str) {
        if self.policies.remove(name).is_some() {
            if let Err(e) = self.sync() {
                warn!(error = %e, policy = name, "updating the fanotify marks");
            }
        }
    }

    /// Re-resolves the marks: a protected file replaced by rename gets its
    /// new inode marked (housekeeping).
    pub fn refresh(&mut self) {
        if self.running.is_some() {
            if let Err(e) = self.sync() {
                warn!(error = %e, "refreshing the fanotify marks");
            }
        }
    }

    /// The counters (zero while no hook runs on fanotify).
    pub fn stats(&self) -> FileGuardStats {
        FileGuardStats {
            guard: self
                .running
                .as_ref()
                .map(|r| r.guard.stats())
                .unwrap_or_default(),
            rate_limited: self.counters.rate_limited.load(Ordering::Relaxed),
            signal_failed: self.counters.signal_failed.load(Ordering::Relaxed),
        }
    }

    /// Makes the rules and marks those of `self.policies`.
    fn sync(&mut self) -> Result<(), String> {
        let all: Vec<Arc<GuardHook>> = self.policies.values().flatten().cloned().collect();
        if all.is_empty() {
            *self.table.write().unwrap_or_else(PoisonError::into_inner) = all;
            if self.running.take().is_some() {
                debug!("no fanotify hooks left; the fanotify group is closed");
            }
            return Ok(());
        }
        let mut plan = MarkPlan::new();
        for h in &all {
            plan.add_coverage(&h.coverage, Kinds::of(h.access));
        }
        // New rules before new marks: an access is never held against rules
        // that do not cover it yet.
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = all;
        if self.running.is_none() {
            self.running = Some(self.start().map_err(|e| {
                format!(
                    "fanotify enforcement (file_open/bprm_check without BPF-LSM) cannot start: {e}"
                )
            })?);
        }
        let Some(running) = &self.running else {
            return Ok(());
        };
        let report: MarkReport = running
            .guard
            .set_marks(&plan)
            .map_err(|e| format!("fanotify marks: {e}"))?;
        debug!(?report, "fanotify marks in place");
        Ok(())
    }

    fn start(&self) -> Result<Running, FanotifyError> {
        let mut host_namespaces = Namespaces::default();
        for kind in NAMESPACE_KINDS {
            host_namespaces.set(*kind, host_namespace(*kind).unwrap_or(0) as u32);
        }
        let decider = Arc::new(RulesDecider {
            table: self.table.clone(),
            procs: self.procs.clone(),
            counters: self.counters.clone(),
            node: self.node.clone(),
            host_namespaces,
            rate: Mutex::new(HashMap::new()),
        });
        let (guard, rx) = FanotifyGuard::start(decider, GuardConfig::default())?;
        let store = self.store.clone();
        std::thread::Builder::new()
            .name("palisade-fanotify-events".into())
            .spawn(move || forward(rx, &store))
            .map_err(|source| FanotifyError::Spawn { source })?;
        Ok(Running { guard })
    }
}

/// Publishes the guard's events until the guard is dropped.
fn forward(rx: Receiver<GuardEvent<Vec<Event>>>, store: &EventStore) {
    while let Ok(ev) = rx.recv() {
        for e in ev.event {
            match e.to_json_line() {
                Ok(l) => store.publish(l.trim_end().to_owned()),
                Err(_) => store.count_undecodable(),
            }
        }
        store.flush();
    }
}

/// Key of a rate limit: hook (by address), selector, scope.
type RateKey = (usize, usize, u32);

struct RulesDecider {
    table: Arc<RwLock<Vec<Arc<GuardHook>>>>,
    procs: Arc<Mutex<ProcessCache>>,
    counters: Arc<DeciderCounters>,
    node: String,
    host_namespaces: Namespaces,
    rate: Mutex<HashMap<RateKey, u64>>,
}

impl Decider for RulesDecider {
    type Event = Vec<Event>;

    fn decide(&self, access: &Access) -> Decision<Vec<Event>> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let hooks: Vec<&Arc<GuardHook>> =
            table.iter().filter(|h| h.access == access.kind).collect();
        if hooks.is_empty() {
            return Decision::allow();
        }
        let needs = hooks.iter().fold(Needs::default(), |n, h| n.union(h.needs));
        let mut caller = Caller::read(access.pid, needs, &self.procs, self.host_namespaces);
        let path = access.path.as_os_str().as_bytes();
        caller.context.args = vec![ArgValue::File {
            path: path.strip_suffix(b" (deleted)").unwrap_or(path).to_vec(),
            mode: access.mode,
        }];
        let mut verdict = Verdict::Allow;
        let mut events = Vec::new();
        let now = boottime_ns();
        for h in hooks {
            let Some(m) = h.selectors.evaluate(&caller.context) else {
                continue;
            };
            let index = m.selector.unwrap_or(0);
            let Some(plan) = h.meta.hook.selectors.get(index).map(|s| &s.actions) else {
                continue;
            };
            if !h.meta.hook.monitor {
                if plan.override_errno != 0 {
                    verdict = Verdict::Deny;
                }
                if plan.signal != 0 {
                    self.signal(access.pid, plan.signal);
                }
            }
            if plan.post && self.admit(h, index, plan, access.pid, now) {
                events.extend(self.event(h, plan, access, &caller, now));
            }
        }
        Decision {
            verdict,
            event: (!events.is_empty()).then_some(events),
        }
    }
}

impl RulesDecider {
    fn signal(&self, pid: u32, sig: i32) {
        let sent = Signal::try_from(sig)
            .map_err(|e| e.to_string())
            .and_then(|s| kill(Pid::from_raw(pid as i32), s).map_err(|e| e.to_string()));
        if let Err(e) = sent {
            self.counters.signal_failed.fetch_add(1, Ordering::Relaxed);
            warn!(pid, sig, error = %e, "sending a TracingPolicy signal");
        }
    }

    /// `rateLimit`: whether an event may be posted now.
    fn admit(&self, h: &Arc<GuardHook>, sel: usize, plan: &ActionPlan, pid: u32, now: u64) -> bool {
        if plan.rate_ns == 0 {
            return true;
        }
        let scope = match plan.rate_scope {
            RateLimitScope::Thread | RateLimitScope::Process => pid,
            RateLimitScope::Global => 0,
        };
        let key = (Arc::as_ptr(h) as usize, sel, scope);
        let mut rate = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&last) = rate.get(&key) {
            if now.saturating_sub(last) < plan.rate_ns {
                self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        if rate.len() >= RATE_ENTRIES {
            rate.clear();
        }
        rate.insert(key, now);
        true
    }

    fn event(
        &self,
        h: &GuardHook,
        plan: &ActionPlan,
        access: &Access,
        caller: &Caller,
        now: u64,
    ) -> Option<Event> {
        let path = access.path.to_string_lossy().into_owned();
        let arg = match h.access {
            AccessKind::Open => EventArg::FileArg(KprobeFile {
                path,
                ..KprobeFile::default()
            }),
            AccessKind::Exec => EventArg::LinuxBinprmArg(KprobeLinuxBinprm {
                path,
                ..KprobeLinuxBinprm::default()
            }),
        };
        let args = vec![KprobeArgument {
            arg: Some(arg),
            label: h
                .meta
                .hook
                .args
                .first()
                .map(|a| a.decl.label.clone())
                .unwrap_or_default(),
        }];
        let procs = self.procs.lock().unwrap_or_else(PoisonError::into_inner);
        let time = procs.timestamp(now)?;
        Some(hook_event(
            &h.meta,
            caller.event.clone(),
            caller.parent.clone(),
            args,
            reported(plan.action),
            time,
            &self.node,
        ))
    }
}

fn reported(a: Action) -> KprobeAction {
    match a {
        Action::Post => KprobeAction::Post,
        Action::NoPost => KprobeAction::NoPost,
        Action::Sigkill => KprobeAction::Sigkill,
        Action::Signal => KprobeAction::Signal,
        Action::Override => KprobeAction::Override,
    }
}

/// The process behind an access: what selectors see and what events say.
struct Caller {
    context: Context,
    event: EventProcess,
    parent: Option<EventProcess>,
}

impl Caller {
    fn read(
        pid: u32,
        needs: Needs,
        procs: &Mutex<ProcessCache>,
        host_namespaces: Namespaces,
    ) -> Self {
        let proc_dir = format!("/proc/{pid}");
        let binary = std::fs::read_link(format!("{proc_dir}/exe"))
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .unwrap_or_default();
        let binary_str = String::from_utf8_lossy(&binary).into_owned();
        // A process the event reader has not reached yet (no fork or exec
        // seen) gets its parent from /proc, so that matchParentBinaries
        // still sees it.
        let cached = procs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(pid)
            .is_some();
        let status = if needs.status || !cached {
            std::fs::read_to_string(format!("{proc_dir}/status"))
                .map(|s| ProcStatus::parse(&s))
                .unwrap_or_default()
        } else {
            ProcStatus::default()
        };
        let mut namespaces = Namespaces::default();
        if needs.namespaces {
            for kind in NAMESPACE_KINDS {
                if let Some(inode) = namespace_inode(pid, *kind) {
                    namespaces.set(*kind, inode as u32);
                }
            }
        }
        // Ancestors from the cache (their execs are older than this access;
        // the caller's own exec may not be processed yet, so its binary is
        // read from /proc above).
        let (event, parent, lineage) = {
            let cache = procs.lock().unwrap_or_else(PoisonError::into_inner);
            let me = cache.get(pid);
            let event = match me {
                Some(p) if p.binary == binary_str => cache.process(p, Some(pid)),
                _ => EventProcess {
                    pid: Some(pid),
                    tid: Some(pid),
                    binary: binary_str,
                    flags: "procFS".into(),
                    ..EventProcess::default()
                },
            };
            let parent = me.and_then(|p| cache.lineage(p).0);
            let mut lineage = Vec::new();
            let mut cur = me.map_or(status.ppid, |p| p.ppid);
            while cur != 0 && lineage.len() < MAX_ANCESTORS && cur != pid {
                let info = cache.get(cur);
                lineage.push((cur, info.map(|i| i.binary.clone().into_bytes())));
                match info {
                    Some(i) if i.ppid != cur => cur = i.ppid,
                    _ => break,
                }
            }
            (event, parent, lineage)
        };
        let ancestors = lineage
            .into_iter()
            .map(|(pid, binary)| Ancestor {
                pid,
                ns_pid: 0,
                binary: binary.unwrap_or_else(|| {
                    std::fs::read_link(format!("/proc/{pid}/exe"))
                        .map(|p| p.as_os_str().as_bytes().to_vec())
                        .unwrap_or_default()
                }),
            })
            .collect();
        Self {
            context: Context {
                args: Vec::new(),
                return_value: ArgValue::Missing,
                process: Process {
                    pid,
                    ns_pid: status.ns_pid,
                    binary,
                    namespaces,
                    capabilities: status.capabilities,
                    exec_namespaces: None,
                    exec_capabilities: None,
                },
                ancestors,
                host_namespaces,
            },
            event,
            parent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_follow_the_selectors() {
        let sels: Vec<Selector> = serde_yaml::from_str(
            "[{matchCapabilities: [{type: Effective, operator: In, values: [CAP_SYS_ADMIN]}]},
              {matchNamespaces: [{namespace: Mnt, operator: In, values: [host_ns]}]}]",
        )
        .expect("selectors");
        assert_eq!(
            Needs::of(&sels),
            Needs {
                status: true,
                namespaces: true
            }
        );
        assert!(!Needs::of(&sels[1..]).status);
        assert_eq!(Needs::of(&[]), Needs::default());
    }
}
