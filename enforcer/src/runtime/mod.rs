//! Runtime enforcement: TracingPolicy hooks in the kernel, process
//! tracking, and the events they produce.
//!
//! [`Runtime::start`] loads `runtime.o` as a new generation pinned under
//! `<bpf_root>/runtime/g<N>` (see [`pins`]: maps, and every link, so that
//! enforcement outlives the agent) and attaches process tracking (exec,
//! fork, exit). A hooked syscall runs its hooks from an fentry program on
//! its wrapper `__x64_sys_<name>` where the kernel has BPF trampolines,
//! else from its own tracepoint `syscalls:sys_enter_<name>`, else from the
//! dispatcher on `raw_syscalls:sys_enter` (attached only while such a
//! syscall is hooked). [`Runtime::apply`] places a compiled policy's hooks
//! in the maps and attaches what they need; a hook that fails to attach
//! rolls the whole policy back. Once the agent has applied its policies,
//! [`Runtime::retire_previous`] detaches the generations of earlier agents.

pub mod events;
pub mod file_guard;
mod host;
pub mod layout;
pub mod pins;
mod placement;
pub mod procs;
mod sockargs;
pub mod syscalls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, LpmTrie, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{FEntry, KProbe, Lsm, ProgramError, RawTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfError, EbpfLoader};
use aya_obj::btf::BtfKind;
use palisade_bpf::abi::runtime::{self as rt, BinSet, Config, SyscallHooks};
use palisade_bpf::{runtime as names, RUNTIME_OBJECT};
use palisade_tracing_policies::compile::{Attach, CompiledHook, CompiledPolicy};
use palisade_tracing_policies::head_filter::{hook_heads, syscall_heads, HookHeads, SyscallHeads};
use palisade_tracing_policies::syscall_route::{SyscallRoute, PREFILTER_WORDS};
use tracing::{debug, info, warn};

use crate::datapath::remove_pin;

pub use host::{ensure_tracefs, features, has_syscall_tracepoint, KernelHost};
use layout::{BinsetChange, Layout, LayoutError, Placed};
use placement::Placement;
pub use placement::SyscallIds;

// The pure crate's head prefilter fits the kernel's table entry.
const _: () = assert!(palisade_tracing_policies::head_filter::MAX_HEADS == rt::MAX_HEADS);

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

/// A per-hook program instance and its pinned links (one, or one per
/// syscall for a routed `raw_syscalls` hook).
struct Instance {
    /// Keeps the program loaded while the agent runs.
    _ebpf: Ebpf,
    links: Vec<PinnedLink>,
}

/// What runs a hooked syscall's hooks, other than the raw dispatcher.
struct SyscallLink {
    /// [`rt::SYSCALL_VIA_FENTRY`] or [`rt::SYSCALL_VIA_TP`].
    via: u32,
    link: PinnedLink,
    /// The fentry program's own load (one per syscall); the tracepoint
    /// program's is in [`Runtime::sys_tp`], shared by the syscalls with as
    /// many arguments.
    _instance: Option<Ebpf>,
}

/// Whether syscall hooks can run from fentry programs.
enum Fentry {
    /// Not tried yet.
    Unknown,
    /// Yes; the kernel's BTF, which names the wrappers.
    Usable(Box<Btf>),
    /// The kernel has no fentry programs or BTF, or an attach failed.
    Unusable,
}

/// One attached hook of a policy.
struct LoadedHook {
    placed: Placed,
    attach: Attach,
    /// The per-hook program instance (tracepoint, kprobe, LSM), if any.
    instance: Option<Instance>,
    /// For a `raw_syscalls` hook that does not run for every syscall:
    /// how.
    syscall_ids: Option<SyscallIds>,
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
    /// Hook runs the head prefilter spared (the call could not match).
    pub head_skips: u64,
    /// Runs of `raw_syscalls` hooks the syscall-id prefilter spared.
    pub id_skips: u64,
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
    /// The head prefilters of syscall hooks that have one, by hook id.
    hook_heads: BTreeMap<u32, HookHeads>,
    /// Per hooked syscall, the program that runs its hooks for that
    /// syscall only: `pal_sys_fentry` on `__x64_sys_<name>` or `pal_sys_tp`
    /// on `syscalls:sys_enter_<name>`.
    syscall_links: BTreeMap<u32, SyscallLink>,
    /// The loads of `pal_sys_tp`, by the number of arguments of the
    /// syscalls they are attached to (`PAL_SYSCALL_NARGS`).
    sys_tp: BTreeMap<usize, Ebpf>,
    fentry: Fentry,
    /// The raw syscall dispatcher's link, while a hooked syscall has no
    /// tracepoint of its own: a program on `raw_syscalls:sys_enter` runs
    /// for every syscall of the machine, so it is attached only then.
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
                hook_heads: BTreeMap::new(),
                syscall_links: BTreeMap::new(),
                sys_tp: BTreeMap::new(),
                fentry: Fentry::Unknown,
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

    /// How `raw_syscalls` hook `hook_id` avoids running for every
    /// syscall, if it does: routed to the syscalls' own tracepoints, or
    /// behind an id prefilter.
    pub fn syscall_ids(&self, hook_id: u32) -> Option<&SyscallIds> {
        self.policies
            .values()
            .flat_map(|p| &p.hooks)
            .find(|h| h.placed.hook_id == hook_id)?
            .syscall_ids
            .as_ref()
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
        let placement = Placement::of(hook, |phase, nr| {
            syscalls::name(nr).is_some_and(|name| host::has_syscall_tracepoint_for(phase, name))
        });
        let hook = placement.hook(hook);
        let mut change = BinsetChange::default();
        let placed = self.layout.place(hook, &mut change)?;
        let mut loaded = LoadedHook {
            placed,
            attach: hook.attach.clone(),
            instance: None,
            syscall_ids: placement.syscall_ids(),
        };
        if let Err(e) = self.write_hook(&loaded.placed, &change) {
            self.detach_hook(loaded);
            return Err(e);
        }
        match self.attach_program(hook, &placement, loaded.placed.hook_id) {
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
            if let Some(heads) = hook_heads(hook) {
                self.hook_heads.insert(id, heads);
            }
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
        let ids = self.syscall_hooks.get(&nr).cloned().unwrap_or_default();
        if ids.len() >= rt::SYSCALL_SLOTS {
            return Err(RuntimeError::Unsupported(format!(
                "syscall {} already has {} hooks, the most palisade evaluates",
                syscalls::name(nr).unwrap_or("?"),
                rt::SYSCALL_SLOTS
            )));
        }
        let mut with = ids.clone();
        with.push(hook_id);
        if ids.is_empty() {
            self.attach_syscall(nr, &with)?;
        } else {
            self.write_syscall(nr, &with, self.via(nr))?;
        }
        self.syscall_hooks.insert(nr, with);
        Ok(())
    }

    /// Starts running syscall nr's hooks `ids`: from fentry on its wrapper
    /// where the kernel can, else from its own tracepoint when it has one,
    /// else from the raw dispatcher.
    fn attach_syscall(&mut self, nr: u32, ids: &[u32]) -> Result<(), RuntimeError> {
        let name = syscalls::name(nr).unwrap_or("?");
        if let Some(link) = self.attach_syscall_fentry(nr, name, ids)? {
            self.syscall_links.insert(nr, link);
            debug!(syscall = name, "syscall fentry attached");
            return Ok(());
        }
        if !host::has_syscall_tracepoint(name) {
            debug!(
                syscall = name,
                "no syscall tracepoint; hooks run from raw_syscalls:sys_enter"
            );
            self.write_syscall(nr, ids, rt::SYSCALL_VIA_RAW)?;
            return self.attach_dispatcher();
        }
        let event = format!("sys_enter_{}", syscalls::kernel_name(name));
        let nargs = host::syscall_tracepoint_args(name).map_err(|e| {
            RuntimeError::Unsupported(format!("reading tracepoint syscalls/{event}: {e}"))
        })?;
        // Loaded before the table names the tracepoint as its runner.
        self.sys_tp(nargs)?;
        self.write_syscall(nr, ids, rt::SYSCALL_VIA_TP)?;
        let pin = self.pin_dir.join(pins::LINKS).join(format!("sys-{name}"));
        let attached = self
            .sys_tp(nargs)
            .and_then(|tp| program::<TracePoint>(tp, names::SYS_TP))
            .and_then(|p| tracepoint_link(p, "syscalls", &event, names::SYS_TP));
        let link = match attached.and_then(|link| {
            remove_pin(&pin);
            pin_link(link, &pin)
        }) {
            Ok(link) => link,
            Err(e) => {
                if let Err(w) = self.write_syscall(nr, &[], rt::SYSCALL_VIA_TP) {
                    warn!(error = %w, "cannot clear the syscall table");
                }
                return Err(e);
            }
        };
        self.syscall_links.insert(
            nr,
            SyscallLink {
                via: rt::SYSCALL_VIA_TP,
                link,
                _instance: None,
            },
        );
        debug!(syscall = name, "syscall tracepoint attached");
        Ok(())
    }

    /// The load of `pal_sys_tp` for syscalls of `nargs` arguments (loaded
    /// at the first): it reads exactly those from the tracepoint's record.
    fn sys_tp(&mut self, nargs: usize) -> Result<&mut Ebpf, RuntimeError> {
        let nargs = nargs.min(rt::MAX_ARGS);
        if !self.sys_tp.contains_key(&nargs) {
            let mut ebpf = load_instance(
                &self.pin_dir,
                Constants {
                    syscall_nargs: Some(nargs as u32),
                    ..Constants::default()
                },
            )?;
            program::<TracePoint>(&mut ebpf, names::SYS_TP)?
                .load()
                .map_err(prog_err(format!(
                    "loading {} for syscalls of {nargs} arguments",
                    names::SYS_TP
                )))?;
            self.sys_tp.insert(nargs, ebpf);
        }
        self.sys_tp
            .get_mut(&nargs)
            .ok_or_else(|| RuntimeError::Unsupported(format!("no {} load", names::SYS_TP)))
    }

    /// Attaches a load of `pal_sys_fentry` to `__x64_sys_<name>` and runs
    /// syscall nr's hooks `ids` from it; `None` (logged) when the kernel
    /// cannot, so that the syscall's tracepoint serves instead. An fentry
    /// failure other than a wrapper missing from BTF turns fentry off for
    /// later syscalls too.
    fn attach_syscall_fentry(
        &mut self,
        nr: u32,
        name: &str,
        ids: &[u32],
    ) -> Result<Option<SyscallLink>, RuntimeError> {
        if matches!(self.fentry, Fentry::Unknown) {
            self.fentry = probe_fentry();
        }
        let Fentry::Usable(btf) = &self.fentry else {
            return Ok(None);
        };
        let function = format!("__x64_sys_{}", syscalls::kernel_name(name));
        if btf.id_by_type_name_kind(&function, BtfKind::Func).is_err() {
            debug!(
                syscall = name,
                function, "the wrapper is not in the kernel's BTF; no fentry"
            );
            return Ok(None);
        }
        let attached = load_instance(&self.pin_dir, Constants::default()).and_then(|mut ebpf| {
            let p: &mut FEntry = program(&mut ebpf, names::SYS_FENTRY)?;
            p.load(&function, btf)
                .map_err(prog_err(format!("loading fentry on {function}")))?;
            let id = p
                .attach()
                .map_err(prog_err(format!("attaching fentry to {function}")))?;
            let link = p
                .take_link(id)
                .map_err(prog_err(format!("taking the link of fentry on {function}")))?;
            Ok((ebpf, FdLink::from(link)))
        });
        let (ebpf, link) = match attached {
            Ok(attached) => attached,
            Err(e) => {
                warn!(error = %e, "syscall hooks cannot use fentry on this kernel; they use syscall tracepoints");
                self.fentry = Fentry::Unusable;
                return Ok(None);
            }
        };
        let pin = self.pin_dir.join(pins::LINKS).join(format!("sys-{name}"));
        remove_pin(&pin);
        let link = pin_link(link, &pin)?;
        if let Err(e) = self.write_syscall(nr, ids, rt::SYSCALL_VIA_FENTRY) {
            if let Err(w) = link.unpin() {
                warn!(error = %w, "cannot remove a syscall fentry's link pin");
            }
            return Err(e);
        }
        Ok(Some(SyscallLink {
            via: rt::SYSCALL_VIA_FENTRY,
            link,
            _instance: Some(ebpf),
        }))
    }

    /// Stops running syscall nr's hooks when it has none left.
    fn detach_idle_syscall(&mut self, nr: u32) {
        if self
            .syscall_hooks
            .get(&nr)
            .is_some_and(|ids| !ids.is_empty())
        {
            return;
        }
        self.syscall_hooks.remove(&nr);
        if let Some(l) = self.syscall_links.remove(&nr) {
            if let Err(e) = l.link.unpin() {
                warn!(error = %e, "cannot remove a syscall hook's link pin");
            }
        }
        self.detach_idle_dispatcher();
    }

    /// Attaches the raw syscall dispatcher (once).
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
        debug!("raw syscall dispatcher attached");
        Ok(())
    }

    /// Detaches the raw dispatcher when every hooked syscall left runs
    /// from its own tracepoint.
    fn detach_idle_dispatcher(&mut self) {
        if self
            .syscall_hooks
            .iter()
            .any(|(nr, ids)| !ids.is_empty() && !self.syscall_links.contains_key(nr))
        {
            return;
        }
        if let Some(link) = self.dispatcher.take() {
            if let Err(e) = link.unpin() {
                warn!(error = %e, "cannot remove the syscall dispatcher's link pin");
            }
            debug!("raw syscall dispatcher detached");
        }
    }

    /// From where syscall nr's hooks run (`None` while it has none):
    /// `fentry __x64_sys_<name>`, `tracepoint syscalls/sys_enter_<name>` or
    /// `raw_syscalls:sys_enter`.
    pub fn syscall_mechanism(&self, nr: u32) -> Option<String> {
        if self.syscall_hooks.get(&nr).is_none_or(Vec::is_empty) {
            return None;
        }
        let name = syscalls::kernel_name(syscalls::name(nr)?);
        Some(match self.via(nr) {
            rt::SYSCALL_VIA_FENTRY => format!("fentry __x64_sys_{name}"),
            rt::SYSCALL_VIA_TP => format!("tracepoint syscalls/sys_enter_{name}"),
            _ => "raw_syscalls:sys_enter".to_owned(),
        })
    }

    /// The head prefilter in front of hook `hook_id` of syscall nr, if it
    /// has one in force: the syscall argument it reads and how many heads
    /// the syscall's table entry holds.
    pub fn head_prefilter(&self, nr: u32, hook_id: u32) -> Option<(u8, usize)> {
        let ids = self.syscall_hooks.get(&nr)?;
        let slot = ids.iter().position(|&id| id == hook_id)?;
        let pre = self.syscall_prefilter(ids)?;
        (pre.skip >> slot & 1 == 1).then_some((pre.reg, pre.heads.len()))
    }

    /// The head prefilter of a syscall whose table entry holds hooks `ids`.
    fn syscall_prefilter(&self, ids: &[u32]) -> Option<SyscallHeads> {
        let slots: Vec<Option<&HookHeads>> = ids.iter().map(|id| self.hook_heads.get(id)).collect();
        syscall_heads(&slots)
    }

    /// Which program runs syscall nr's hooks now.
    fn via(&self, nr: u32) -> u32 {
        self.syscall_links
            .get(&nr)
            .map_or(rt::SYSCALL_VIA_RAW, |l| l.via)
    }

    fn write_syscall(&mut self, nr: u32, ids: &[u32], via: u32) -> Result<(), RuntimeError> {
        let mut entry = SyscallHooks {
            n: ids.len().min(rt::SYSCALL_SLOTS) as u32,
            via,
            ..SyscallHooks::default()
        };
        for (slot, id) in entry.hooks.iter_mut().zip(ids) {
            *slot = *id;
        }
        let pre = self.syscall_prefilter(ids);
        if let Some(pre) = &pre {
            entry.head_reg = u32::from(pre.reg);
            entry.head_n = pre.heads.len().min(rt::MAX_HEADS) as u32;
            for (slot, h) in entry.heads.iter_mut().zip(&pre.heads) {
                *slot = rt::Head {
                    value: h.value,
                    mask: h.mask,
                };
            }
        }
        // Programs read the entry while it is written, so a change must
        // never show a skip mask with other heads or hooks than its own:
        // the prefilter is off (every hook runs) from before the hooks and
        // heads change until after.
        let mut table = self.array::<SyscallHooks>(names::SYSCALLS)?;
        let write = |table: &mut Array<&mut MapData, SyscallHooks>, e: SyscallHooks| {
            table
                .set(nr, e, 0)
                .map_err(map_err("writing the syscall table"))
        };
        if let Ok(old) = table.get(&nr, 0) {
            if old.head_skip != 0 {
                write(
                    &mut table,
                    SyscallHooks {
                        head_skip: 0,
                        ..old
                    },
                )?;
            }
        }
        write(&mut table, entry)?;
        if let Some(pre) = pre {
            write(
                &mut table,
                SyscallHooks {
                    head_skip: pre.skip,
                    ..entry
                },
            )?;
        }
        Ok(())
    }

    /// Loads and attaches the per-hook program instance, if the mechanism
    /// needs one; its link is pinned under this generation's `links/`.
    fn attach_program(
        &mut self,
        hook: &CompiledHook,
        placement: &Placement,
        hook_id: u32,
    ) -> Result<Option<Instance>, RuntimeError> {
        let ids = match placement {
            Placement::IdPrefilter { bitmap, .. } => Some(bitmap),
            Placement::Routed(_) | Placement::Own => None,
        };
        let load = || {
            load_instance(
                &self.pin_dir,
                Constants {
                    hook_id,
                    syscall_ids: ids,
                    syscall_nargs: None,
                },
            )
        };
        let what = |verb: &str| format!("{}: {verb}", hook.path);
        let not_pinnable = |_| not_pinnable(&hook.path);
        if let Placement::Routed(route) = placement {
            return self.attach_routed(hook, route, load()?, hook_id).map(Some);
        }
        let (ebpf, link): (Ebpf, FdLink) = match &hook.attach {
            Attach::Syscall { .. } | Attach::Fanotify { .. } => return Ok(None),
            Attach::Tracepoint { subsystem, event } => {
                let mut ebpf = load()?;
                let name = if ids.is_some() {
                    names::TP_SYSCALL_IDS
                } else {
                    names::TRACEPOINT
                };
                let p: &mut TracePoint = program(&mut ebpf, name)?;
                p.load()
                    .map_err(prog_err(what("loading the tracepoint program")))?;
                let link = tracepoint_link(p, subsystem, event, &hook.path)?;
                (ebpf, link)
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
        Ok(Some(Instance {
            _ebpf: ebpf,
            links: vec![link],
        }))
    }

    /// Attaches a routed `raw_syscalls` hook's program to the tracepoint
    /// of each syscall it can match (`hook-<id>-<syscall>` pins); on an
    /// error, what was attached is detached again.
    fn attach_routed(
        &self,
        hook: &CompiledHook,
        route: &SyscallRoute,
        mut ebpf: Ebpf,
        hook_id: u32,
    ) -> Result<Instance, RuntimeError> {
        let p: &mut TracePoint = program(&mut ebpf, names::TRACEPOINT)?;
        p.load().map_err(prog_err(format!(
            "{}: loading the tracepoint program",
            hook.path
        )))?;
        let mut links = Vec::new();
        for &nr in &route.ids {
            let name = syscalls::name(nr).unwrap_or("?");
            let event = route.phase.tracepoint(syscalls::kernel_name(name));
            let attached = tracepoint_link(p, "syscalls", &event, &hook.path).and_then(|link| {
                let pin = self
                    .pin_dir
                    .join(pins::LINKS)
                    .join(format!("hook-{hook_id}-{name}"));
                remove_pin(&pin);
                pin_link(link, &pin)
            });
            match attached {
                Ok(link) => links.push(link),
                Err(e) => {
                    for link in links {
                        if let Err(w) = link.unpin() {
                            warn!(error = %w, hook_id, "cannot remove a hook's link pin");
                        }
                    }
                    return Err(e);
                }
            }
        }
        debug!(hook = %hook.path, syscalls = route.ids.len(), "raw_syscalls hook runs from per-syscall tracepoints");
        Ok(Instance { _ebpf: ebpf, links })
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
                if let Err(e) = self.write_syscall(nr, &ids, self.via(nr)) {
                    warn!(error = %e, "cannot update the syscall table");
                }
            }
            self.hook_heads.remove(&id);
            self.detach_idle_syscall(nr);
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
            for link in instance.links {
                if let Err(e) = link.unpin() {
                    warn!(error = %e, hook_id = id, "cannot remove a hook's link pin");
                }
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
            head_skips: get(rt::cnt::HEAD_SKIPS),
            id_skips: get(rt::cnt::ID_SKIPS),
        }
    }
}

/// Whether the hook runs in the kernel (not through fanotify).
fn in_kernel(h: &CompiledHook) -> bool {
    !matches!(h.attach, Attach::Fanotify { .. })
}

/// Writes the runtime configuration (binary sets, own pid). `host_ns`
/// selector values are resolved when a policy is compiled.
fn write_config(base: &mut Ebpf, layout: &Layout, self_tgid: u32) -> Result<(), RuntimeError> {
    let (follow_mask, nbinsets) = layout.binset_config();
    let cfg = Config {
        nbinsets,
        self_tgid,
        follow_mask,
    };
    let m = base
        .map_mut(names::CONFIG)
        .ok_or_else(|| RuntimeError::Unsupported(format!("no map {}", names::CONFIG)))?;
    Array::<_, Config>::try_from(m)
        .map_err(map_err(format!("map {}", names::CONFIG)))?
        .set(0, cfg, 0)
        .map_err(map_err("writing the runtime config"))
}

/// The load-time constants of a load of the runtime object.
#[derive(Debug, Clone, Copy, Default)]
struct Constants<'a> {
    /// [`names::HOOK_ID_GLOBAL`]: the hook of a per-hook program (the
    /// syscall programs read none: 0).
    hook_id: u32,
    /// [`names::SYSCALL_IDS_GLOBAL`]: the bitmap of a
    /// [`names::TP_SYSCALL_IDS`] hook's syscall-id prefilter.
    syscall_ids: Option<&'a [u64; PREFILTER_WORDS]>,
    /// [`names::SYSCALL_NARGS_GLOBAL`]: the argument count of the syscalls
    /// a [`names::SYS_TP`] load is attached to.
    syscall_nargs: Option<u32>,
}

/// Loads another instance of the runtime object on the maps pinned in
/// `pin_dir`, with its load-time constants (its programs are loaded one by
/// one).
fn load_instance(pin_dir: &Path, constants: Constants) -> Result<Ebpf, RuntimeError> {
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pin_dir).override_global(
        names::HOOK_ID_GLOBAL,
        &constants.hook_id,
        true,
    );
    if let Some(bitmap) = constants.syscall_ids {
        loader.override_global(names::SYSCALL_IDS_GLOBAL, bitmap, true);
    }
    if let Some(nargs) = &constants.syscall_nargs {
        loader.override_global(names::SYSCALL_NARGS_GLOBAL, nargs, true);
    }
    loader
        .load(RUNTIME_OBJECT)
        .map_err(|e| RuntimeError::Load(Box::new(e)))
}

/// Whether syscall hooks can use fentry: the kernel loads fentry programs
/// and has BTF (whether it has trampolines shows at the first attach).
fn probe_fentry() -> Fentry {
    if !host::features().fentry {
        debug!("no fentry programs; syscall hooks use syscall tracepoints");
        return Fentry::Unusable;
    }
    match Btf::from_sys_fs() {
        Ok(btf) => Fentry::Usable(Box::new(btf)),
        Err(e) => {
            debug!(error = %e, "no kernel BTF; syscall hooks use syscall tracepoints");
            Fentry::Unusable
        }
    }
}

/// The error of a link the kernel gave as a perf-event attachment.
fn not_pinnable(what: &str) -> RuntimeError {
    RuntimeError::Unsupported(format!(
        "{what}: the kernel gave a perf-event attachment, not a BPF link, so it cannot be pinned (Linux 5.15 or later has BPF perf links)"
    ))
}

/// Attaches the loaded tracepoint program `p` to `subsystem/event` and
/// takes its link, to be pinned (`what` names it in errors).
fn tracepoint_link(
    p: &mut TracePoint,
    subsystem: &str,
    event: &str,
    what: &str,
) -> Result<FdLink, RuntimeError> {
    let id = p.attach(subsystem, event).map_err(prog_err(format!(
        "{what}: attaching to tracepoint {subsystem}/{event}"
    )))?;
    let link = p
        .take_link(id)
        .map_err(prog_err(format!("{what}: taking the link")))?;
    FdLink::try_from(link).map_err(|_| not_pinnable(what))
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
