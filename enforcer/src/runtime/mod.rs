//! Runtime enforcement: TracingPolicy hooks in the kernel, process
//! tracking, and the events they produce.
//!
//! [`Runtime::start`] loads `runtime.o` as a new generation pinned under
//! `<bpf_root>/runtime/g<N>` (see [`pins`]: maps, and every link, so that
//! enforcement outlives the agent) and attaches process tracking (exec,
//! fork, exit); the syscall dispatcher (`raw_syscalls:sys_enter`) is
//! attached while some syscall hook is in force. [`Runtime::apply`] places a compiled policy's hooks in the maps and
//! attaches what they need; a hook that fails to attach rolls the whole
//! policy back. Once the agent has applied its policies,
//! [`Runtime::retire_previous`] detaches the generations of earlier agents.

pub mod events;
pub mod file_guard;
mod host;
pub mod layout;
pub mod pins;
pub mod procs;
mod sockargs;
pub mod syscalls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, LpmTrie, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{KProbe, Lsm, ProgramError, RawTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfError, EbpfLoader};
use palisade_bpf::abi::runtime::{self as rt, BinSet, Config, SyscallHooks};
use palisade_bpf::{runtime as names, RUNTIME_OBJECT};
use palisade_tracing_policies::compile::{Attach, CompiledHook, CompiledPolicy};
use tracing::{debug, info, warn};

use crate::datapath::remove_pin;

pub use host::{ensure_tracefs, features, host_namespace, KernelHost};
use layout::{BinsetChange, Layout, LayoutError, Placed};

/// Why runtime enforcement could not start or change.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Loading the object failed.
    #[error("loading the runtime programs: {0}")]
    Load(#[source] Box<EbpfError>),
    /// A program was rejected or could not attach.
    #[error("{what}: {source}")]
    Program {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map operation failed.
    #[error("{what}: {source}")]
    Map {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: Box<MapError>,
    },
    /// The maps have no room.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A filesystem operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Something the runtime does not support.
    #[error("{0}")]
    Unsupported(String),
}

fn map_err(what: impl Into<String>) -> impl FnOnce(MapError) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Map {
        what,
        source: Box::new(source),
    }
}

fn prog_err(what: impl Into<String>) -> impl FnOnce(ProgramError) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Program {
        what,
        source: Box::new(source),
    }
}

/// A per-hook program instance and its pinned link.
struct Instance {
    /// Keeps the program loaded while the agent runs.
    _ebpf: Ebpf,
    link: PinnedLink,
}

/// One attached hook of a policy.
struct LoadedHook {
    placed: Placed,
    attach: Attach,
    /// The per-hook program instance (tracepoint, kprobe, LSM), if any.
    instance: Option<Instance>,
}

/// A policy in force.
struct LoadedPolicy {
    compiled: CompiledPolicy,
    hooks: Vec<LoadedHook>,
}

/// Counters of the runtime, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeCounters {
    /// Events lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Hook events for processes without entry.
    pub proc_missing: u64,
    /// Selector evaluations.
    pub hook_runs: u64,
    /// Signals that could not be sent.
    pub signal_failed: u64,
    /// Events suppressed by rateLimit.
    pub rate_limited: u64,
}

/// Runtime enforcement on this node.
pub struct Runtime {
    /// `<bpf_root>/runtime`.
    root: PathBuf,
    /// This agent's generation under `root`.
    pin_dir: PathBuf,
    base: Ebpf,
    layout: Layout,
    policies: BTreeMap<String, LoadedPolicy>,
    syscall_hooks: BTreeMap<u32, Vec<u32>>,
    /// The syscall dispatcher's link, while some syscall hook is in force:
    /// a program on `raw_syscalls:sys_enter` puts every syscall of the
    /// machine on the kernel's tracing path, so it is attached only when
    /// needed.
    dispatcher: Option<PinnedLink>,
}

impl Runtime {
    /// Loads the runtime object as a new generation (maps and links pinned
    /// under `bpf_root/runtime/g<N>`) and attaches process tracking.
    /// Earlier generations keep enforcing until
    /// [`retire_previous`](Self::retire_previous).
    pub fn start(bpf_root: &Path, self_tgid: u32) -> Result<Self, RuntimeError> {
        let root = bpf_root.join("runtime");
        let io_err = |what: String| move |source| RuntimeError::Io { what, source };
        let pin_dir =
            pins::next_generation(&root).map_err(io_err(format!("reading {}", root.display())))?;
        let links = pin_dir.join(pins::LINKS);
        std::fs::create_dir_all(&links).map_err(io_err(format!("creating {}", links.display())))?;
        match Self::load_base(&pin_dir, self_tgid) {
            Ok((base, layout)) => Ok(Self {
                root,
                pin_dir,
                base,
                layout,
                policies: BTreeMap::new(),
                syscall_hooks: BTreeMap::new(),
                dispatcher: None,
            }),
            Err(e) => {
                pins::remove_generation(&pin_dir);
                Err(e)
            }
        }
    }

    fn load_base(pin_dir: &Path, self_tgid: u32) -> Result<(Ebpf, Layout), RuntimeError> {
        let mut base = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(RUNTIME_OBJECT)
            .map_err(|e| RuntimeError::Load(Box::new(e)))?;
        let layout = Layout::new();
        write_config(&mut base, &layout, self_tgid)?;
        for (prog, tp) in [
            (names::EXEC, "sched_process_exec"),
            (names::FORK, "sched_process_fork"),
            (names::EXIT, "sched_process_exit"),
        ] {
            let p: &mut RawTracePoint = program(&mut base, prog)?;
            p.load().map_err(prog_err(format!("loading {prog}")))?;
            let id = p
                .attach(tp)
                .map_err(prog_err(format!("attaching {prog} to {tp}")))?;
            let link = p
                .take_link(id)
                .map_err(prog_err(format!("taking the link of {prog}")))?;
            pin_link(FdLink::from(link), &pin_dir.join(pins::LINKS).join(prog))?;
            debug!(prog, tracepoint = tp, "attached");
        }
        let p: &mut RawTracePoint = program(&mut base, names::SYS_ENTER)?;
        p.load()
            .map_err(prog_err(format!("loading {}", names::SYS_ENTER)))?;
        info!(pins = %pin_dir.display(), "runtime enforcement started");
        Ok((base, layout))
    }

    /// Detaches what earlier agents left pinned (their generations). Call
    /// once this agent's policies are in force.
    pub fn retire_previous(&self) -> usize {
        pins::retire_except(&self.root, &self.pin_dir)
    }

    /// Detaches this generation (the agent stops without keeping
    /// enforcement).
    pub fn unload(self) {
        let dir = self.pin_dir.clone();
        drop(self);
        pins::remove_generation(&dir);
        info!(pins = %dir.display(), "runtime enforcement unloaded");
    }

    /// Takes the event ring buffer (once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.base
            .take_map(names::EVENTS)
            .and_then(|m| RingBuf::try_from(m).ok())
    }

    /// The kernel process table (for the /proc scan and binary-set updates).
    pub fn procs_map(
        &mut self,
    ) -> Result<aya::maps::HashMap<&mut MapData, u32, rt::Proc>, RuntimeError> {
        let m = self
            .base
            .map_mut(names::PROCS)
            .ok_or_else(|| RuntimeError::Unsupported("no process map".into()))?;
        aya::maps::HashMap::try_from(m).map_err(map_err("process map"))
    }

    fn array<T: aya::Pod>(&mut self, name: &str) -> Result<Array<&mut MapData, T>, RuntimeError> {
        let m = self
            .base
            .map_mut(name)
            .ok_or_else(|| RuntimeError::Unsupported(format!("no map {name}")))?;
        Array::try_from(m).map_err(map_err(format!("map {name}")))
    }

    fn write_config(&mut self, self_tgid: u32) -> Result<(), RuntimeError> {
        write_config(&mut self.base, &self.layout, self_tgid)
    }

    fn config(&mut self) -> Result<Config, RuntimeError> {
        self.array::<Config>(names::CONFIG)?
            .get(&0, 0)
            .map_err(map_err("reading the runtime config"))
    }

    /// Names of the policies in force.
    pub fn policy_names(&self) -> Vec<String> {
        self.policies.keys().cloned().collect()
    }

    /// A policy in force.
    pub fn policy(&self, name: &str) -> Option<&CompiledPolicy> {
        self.policies.get(name).map(|p| &p.compiled)
    }

    /// The hooks of a policy in force, by hook id.
    pub fn hooks_of(&self, name: &str) -> Vec<(u32, CompiledHook)> {
        self.policies
            .get(name)
            .map(|p| {
                p.hooks
                    .iter()
                    .zip(p.compiled.hooks.iter().filter(|h| in_kernel(h)))
                    .map(|(l, h)| (l.placed.hook_id, h.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The binary sets in use, by bit.
    pub fn binsets(&self) -> Vec<(u8, palisade_tracing_policies::compile::BinarySet)> {
        self.layout.binsets()
    }

    /// The binary sets whose matches extend to descendants
    /// (`followChildren`), as a bitmap.
    pub fn follow_mask(&self) -> [u64; 2] {
        self.layout.binset_config().0
    }

    /// Applies a compiled policy (replacing one of the same name). On error
    /// nothing of the new policy stays and the old one stays in force.
    /// Hooks enforced through fanotify are not the kernel's: the caller
    /// runs them (see [`file_guard`]).
    pub fn apply(&mut self, compiled: CompiledPolicy) -> Result<(), RuntimeError> {
        let name = compiled.name.clone();
        let mut loaded = LoadedPolicy {
            compiled,
            hooks: Vec::new(),
        };
        let hooks: Vec<CompiledHook> = loaded
            .compiled
            .hooks
            .iter()
            .filter(|h| in_kernel(h))
            .cloned()
            .collect();
        for hook in &hooks {
            match self.attach_hook(hook) {
                Ok(h) => loaded.hooks.push(h),
                Err(e) => {
                    for h in loaded.hooks.drain(..).rev() {
                        self.detach_hook(h);
                    }
                    return Err(e);
                }
            }
        }
        if let Some(old) = self.policies.insert(name.clone(), loaded) {
            for h in old.hooks.into_iter().rev() {
                self.detach_hook(h);
            }
        }
        info!(policy = %name, "tracing policy in force");
        Ok(())
    }

    /// Removes a policy; false if it was not in force.
    pub fn delete(&mut self, name: &str) -> bool {
        let Some(old) = self.policies.remove(name) else {
            return false;
        };
        for h in old.hooks.into_iter().rev() {
            self.detach_hook(h);
        }
        info!(policy = %name, "tracing policy removed");
        true
    }

    fn write_binset_change(&mut self, change: &BinsetChange) -> Result<(), RuntimeError> {
        for (bit, kind, set_id, entries) in &change.added {
            self.insert_keys(names::STR, entries)?;
            self.array::<BinSet>(names::BINSETS)?
                .set(
                    u32::from(*bit),
                    BinSet {
                        set_id: *set_id,
                        kind: *kind,
                    },
                    0,
                )
                .map_err(map_err("writing a binary set"))?;
        }
        for (_, entries) in &change.removed {
            self.remove_keys(names::STR, entries);
        }
        let self_tgid = self.config()?.self_tgid;
        self.write_config(self_tgid)
    }

    fn trie<K: aya::Pod>(
        &mut self,
        name: &str,
    ) -> Result<LpmTrie<&mut MapData, K, u8>, RuntimeError> {
        let m = self
            .base
            .map_mut(name)
            .ok_or_else(|| RuntimeError::Unsupported(format!("no map {name}")))?;
        LpmTrie::try_from(m).map_err(map_err(format!("map {name}")))
    }

    /// Inserts value-set entries.
    fn insert_keys<K: aya::Pod>(
        &mut self,
        name: &str,
        keys: &[Key<K>],
    ) -> Result<(), RuntimeError> {
        let mut trie = self.trie::<K>(name)?;
        for k in keys {
            trie.insert(k, 1, 0)
                .map_err(map_err(format!("writing a value to {name}")))?;
        }
        Ok(())
    }

    /// Removes value-set entries (those already gone are fine).
    fn remove_keys<K: aya::Pod>(&mut self, name: &str, keys: &[Key<K>]) {
        if let Ok(mut trie) = self.trie::<K>(name) {
            for k in keys {
                let _ = trie.remove(k);
            }
        }
    }

    /// Writes a hook's entries, attaches it, and activates it last.
    fn attach_hook(&mut self, hook: &CompiledHook) -> Result<LoadedHook, RuntimeError> {
        let mut change = BinsetChange::default();
        let placed = self.layout.place(hook, &mut change)?;
        let mut loaded = LoadedHook {
            placed,
            attach: hook.attach.clone(),
            instance: None,
        };
        if let Err(e) = self.write_hook(&loaded.placed, &change) {
            self.detach_hook(loaded);
            return Err(e);
        }
        match self.attach_program(hook, loaded.placed.hook_id) {
            Ok(instance) => loaded.instance = instance,
            Err(e) => {
                self.detach_hook(loaded);
                return Err(e);
            }
        }
        let id = loaded.placed.hook_id;
        if let Err(e) = self.array::<rt::Hook>(names::HOOKS).and_then(|mut a| {
            a.set(id, loaded.placed.hook, 0)
                .map_err(map_err("activating a hook"))
        }) {
            self.detach_hook(loaded);
            return Err(e);
        }
        if let Attach::Syscall { nr } = hook.attach {
            if let Err(e) = self.add_syscall_hook(nr, id) {
                self.detach_hook(loaded);
                return Err(e);
            }
        }
        debug!(hook = %hook.path, hook_id = id, "hook attached");
        Ok(loaded)
    }

    fn write_hook(&mut self, p: &Placed, change: &BinsetChange) -> Result<(), RuntimeError> {
        self.write_binset_change(change)?;
        self.insert_keys(names::NUM, &p.num)?;
        self.insert_keys(names::STR, &p.strs)?;
        let mut filters: Array<_, rt::Filter> = self.array(names::FILTERS)?;
        for (i, f) in p.filters.iter().enumerate() {
            filters
                .set(p.hook.first_filter + i as u32, *f, 0)
                .map_err(map_err("writing a filter"))?;
        }
        let mut sels: Array<_, rt::Sel> = self.array(names::SELS)?;
        for (i, s) in p.sels.iter().enumerate() {
            sels.set(p.hook.first_sel + i as u32, *s, 0)
                .map_err(map_err("writing a selector"))?;
        }
        Ok(())
    }

    fn add_syscall_hook(&mut self, nr: u32, hook_id: u32) -> Result<(), RuntimeError> {
        let ids = self.syscall_hooks.entry(nr).or_default();
        if ids.len() >= rt::SYSCALL_SLOTS {
            return Err(RuntimeError::Unsupported(format!(
                "syscall {} already has {} hooks, the most palisade evaluates",
                syscalls::name(nr).unwrap_or("?"),
                rt::SYSCALL_SLOTS
            )));
        }
        ids.push(hook_id);
        let ids = ids.clone();
        self.write_syscall(nr, &ids)?;
        self.attach_dispatcher()
    }

    /// Attaches the syscall dispatcher (once).
    fn attach_dispatcher(&mut self) -> Result<(), RuntimeError> {
        if self.dispatcher.is_some() {
            return Ok(());
        }
        let pin = self.pin_dir.join(pins::LINKS).join(names::SYS_ENTER);
        let p: &mut RawTracePoint = program(&mut self.base, names::SYS_ENTER)?;
        let id = p
            .attach("sys_enter")
            .map_err(prog_err("attaching the syscall dispatcher to sys_enter"))?;
        let link = p
            .take_link(id)
            .map_err(prog_err("taking the syscall dispatcher's link"))?;
        remove_pin(&pin);
        self.dispatcher = Some(pin_link(FdLink::from(link), &pin)?);
        debug!("syscall dispatcher attached");
        Ok(())
    }

    /// Detaches the syscall dispatcher when no syscall hook is left.
    fn detach_idle_dispatcher(&mut self) {
        if self.syscall_hooks.values().any(|ids| !ids.is_empty()) {
            return;
        }
        if let Some(link) = self.dispatcher.take() {
            if let Err(e) = link.unpin() {
                warn!(error = %e, "cannot remove the syscall dispatcher's link pin");
            }
            debug!("syscall dispatcher detached");
        }
    }

    fn write_syscall(&mut self, nr: u32, ids: &[u32]) -> Result<(), RuntimeError> {
        let mut entry = SyscallHooks {
            n: ids.len().min(rt::SYSCALL_SLOTS) as u32,
            ..SyscallHooks::default()
        };
        for (slot, id) in entry.hooks.iter_mut().zip(ids) {
            *slot = *id;
        }
        self.array::<SyscallHooks>(names::SYSCALLS)?
            .set(nr, entry, 0)
            .map_err(map_err("writing the syscall table"))
    }

    /// Loads and attaches the per-hook program instance, if the mechanism
    /// needs one; its link is pinned under this generation's `links/`.
    fn attach_program(
        &mut self,
        hook: &CompiledHook,
        hook_id: u32,
    ) -> Result<Option<Instance>, RuntimeError> {
        let load = || {
            EbpfLoader::new()
                .default_map_pin_directory(&self.pin_dir)
                .override_global(names::HOOK_ID_GLOBAL, &hook_id, true)
                .load(RUNTIME_OBJECT)
                .map_err(|e| RuntimeError::Load(Box::new(e)))
        };
        let what = |verb: &str| format!("{}: {verb}", hook.path);
        let not_pinnable = |_| {
            RuntimeError::Unsupported(format!(
                "{}: the kernel gave a perf-event attachment, not a BPF link, so it cannot be pinned (Linux 5.15 or later has BPF perf links)",
                hook.path
            ))
        };
        let (ebpf, link): (Ebpf, FdLink) = match &hook.attach {
            Attach::Syscall { .. } | Attach::Fanotify { .. } => return Ok(None),
            Attach::Tracepoint { subsystem, event } => {
                let mut ebpf = load()?;
                let p: &mut TracePoint = program(&mut ebpf, names::TRACEPOINT)?;
                p.load()
                    .map_err(prog_err(what("loading the tracepoint program")))?;
                let id = p.attach(subsystem, event).map_err(prog_err(what(&format!(
                    "attaching to tracepoint {subsystem}/{event}"
                ))))?;
                let link = p.take_link(id).map_err(prog_err(what("taking the link")))?;
                (ebpf, FdLink::try_from(link).map_err(not_pinnable)?)
            }
            Attach::RawTracepoint { event } => {
                let mut ebpf = load()?;
                let p: &mut RawTracePoint = program(&mut ebpf, names::RAW_TRACEPOINT)?;
                p.load()
                    .map_err(prog_err(what("loading the raw tracepoint program")))?;
                let id = p.attach(event).map_err(prog_err(what(&format!(
                    "attaching to raw tracepoint {event}"
                ))))?;
                let link = p.take_link(id).map_err(prog_err(what("taking the link")))?;
                (ebpf, FdLink::from(link))
            }
            Attach::Kprobe { function } => {
                let mut ebpf = load()?;
                let p: &mut KProbe = program(&mut ebpf, names::KPROBE)?;
                p.load()
                    .map_err(prog_err(what("loading the kprobe program")))?;
                let id = p
                    .attach(function, 0)
                    .map_err(prog_err(what(&format!("attaching a kprobe to {function}"))))?;
                let link = p.take_link(id).map_err(prog_err(what("taking the link")))?;
                (ebpf, FdLink::try_from(link).map_err(not_pinnable)?)
            }
            Attach::Lsm { hook: name } => {
                let btf = Btf::from_sys_fs().map_err(|e| {
                    RuntimeError::Unsupported(format!(
                        "{}: LSM hooks need kernel BTF: {e}",
                        hook.path
                    ))
                })?;
                let mut ebpf = load()?;
                let p: &mut Lsm = program(&mut ebpf, names::LSM)?;
                p.load(name, &btf).map_err(prog_err(what(&format!(
                    "loading the LSM program for {name}"
                ))))?;
                let id = p
                    .attach()
                    .map_err(prog_err(what(&format!("attaching to LSM hook {name}"))))?;
                let link = p.take_link(id).map_err(prog_err(what("taking the link")))?;
                (ebpf, FdLink::from(link))
            }
        };
        let pin = self.hook_link_pin(hook_id);
        // A pin left by a hook of this id that failed to go away.
        remove_pin(&pin);
        let link = pin_link(link, &pin)?;
        Ok(Some(Instance { _ebpf: ebpf, link }))
    }

    fn hook_link_pin(&self, hook_id: u32) -> PathBuf {
        self.pin_dir
            .join(pins::LINKS)
            .join(format!("hook-{hook_id}"))
    }

    /// Deactivates a hook first, then detaches and frees it.
    fn detach_hook(&mut self, h: LoadedHook) {
        let id = h.placed.hook_id;
        if let Attach::Syscall { nr } = h.attach {
            if let Some(ids) = self.syscall_hooks.get_mut(&nr) {
                ids.retain(|&x| x != id);
                let ids = ids.clone();
                if let Err(e) = self.write_syscall(nr, &ids) {
                    warn!(error = %e, "cannot update the syscall table");
                }
            }
            self.detach_idle_dispatcher();
        }
        if let Err(e) = self.array::<rt::Hook>(names::HOOKS).and_then(|mut a| {
            a.set(id, rt::Hook::default(), 0)
                .map_err(map_err("deactivating a hook"))
        }) {
            warn!(error = %e, hook_id = id, "cannot deactivate a hook");
        }
        if let Some(instance) = h.instance {
            // The pin is the link's last reference: unpinning and dropping
            // it detaches the program.
            if let Err(e) = instance.link.unpin() {
                warn!(error = %e, hook_id = id, "cannot remove a hook's link pin");
            }
        }
        self.remove_keys(names::NUM, &h.placed.num);
        self.remove_keys(names::STR, &h.placed.strs);
        let mut change = BinsetChange::default();
        self.layout.release(&h.placed, &mut change);
        if let Err(e) = self.write_binset_change(&change) {
            warn!(error = %e, "cannot update the binary sets");
        }
    }

    /// The runtime counters, summed over CPUs.
    pub fn counters(&mut self) -> RuntimeCounters {
        let Some(m) = self.base.map_mut(names::COUNTERS) else {
            return RuntimeCounters::default();
        };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(m) else {
            return RuntimeCounters::default();
        };
        let get = |i: u32| arr.get(&i, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0);
        RuntimeCounters {
            ringbuf_full: get(rt::cnt::RINGBUF_FULL),
            proc_missing: get(rt::cnt::PROC_MISSING),
            hook_runs: get(rt::cnt::HOOK_RUNS),
            signal_failed: get(rt::cnt::SIGNAL_FAILED),
            rate_limited: get(rt::cnt::RATE_LIMITED),
        }
    }
}

/// Whether the hook runs in the kernel (not through fanotify).
fn in_kernel(h: &CompiledHook) -> bool {
    !matches!(h.attach, Attach::Fanotify { .. })
}

/// Writes the runtime configuration (binary sets, own pid, host
/// namespaces).
fn write_config(base: &mut Ebpf, layout: &Layout, self_tgid: u32) -> Result<(), RuntimeError> {
    let (follow_mask, nbinsets) = layout.binset_config();
    let mut host_ns = [0u64; 10];
    for kind in palisade_tracing_policies::validate::NAMESPACE_KINDS {
        let i = palisade_tracing_policies::compile::namespace_index(*kind) as usize;
        host_ns[i] = host_namespace(*kind).unwrap_or(0);
    }
    let cfg = Config {
        nbinsets,
        self_tgid,
        follow_mask,
        host_ns,
    };
    let m = base
        .map_mut(names::CONFIG)
        .ok_or_else(|| RuntimeError::Unsupported(format!("no map {}", names::CONFIG)))?;
    Array::<_, Config>::try_from(m)
        .map_err(map_err(format!("map {}", names::CONFIG)))?
        .set(0, cfg, 0)
        .map_err(map_err("writing the runtime config"))
}

/// Pins a link; the kernel keeps it attached until the pin is removed.
fn pin_link(link: FdLink, path: &Path) -> Result<PinnedLink, RuntimeError> {
    link.pin(path).map_err(|e| RuntimeError::Io {
        what: format!("pinning a link at {}", path.display()),
        source: std::io::Error::other(e.to_string()),
    })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, RuntimeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| RuntimeError::Unsupported(format!("no program {name}")))?
        .try_into()
        .map_err(prog_err(format!("program {name}")))
}
