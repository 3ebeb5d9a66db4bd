//! The compiler from a validated [`TracingPolicy`] to an enforcement plan:
//! for each hook, the mechanism that runs it on this kernel, where its
//! arguments come from, and its selectors as filters over value sets (the
//! form the in-kernel evaluator reads from maps).
//!
//! Mechanisms, best first:
//! - syscall kprobes (`syscall: true`) run per syscall, from a program the
//!   runtime picks for the kernel (fentry on the syscall's wrapper, its
//!   `syscalls:sys_enter_<name>` tracepoint, or `raw_syscalls:sys_enter`
//!   filtered by syscall number): no kprobe needed;
//! - tracepoints and raw tracepoints run as themselves;
//! - other kprobes need kprobes; LSM hooks need BPF-LSM;
//! - `security_file_open`/`file_open` and `security_bprm_check`/
//!   `bprm_check_security` run on fanotify permission events when the
//!   kernel lacks the BPF mechanism, so that `Override` still denies.
//!
//! A kprobe's function and an LSM hook's `bpf_lsm_<hook>` must exist in the
//! kernel (when the host can tell); `ignore: {callNotFound: true}` skips a
//! kprobe whose function is missing, with a warning, as Tetragon does.
//!
//! A hook that cannot be enforced as written is an error naming the YAML
//! path and the missing kernel feature, unless the operator allows the
//! monitoring fallback (the hook is then loaded with its actions reported,
//! not carried out, and a warning says so).

use std::collections::{BTreeMap, BTreeSet};

use crate::eval::capability_mask;
use crate::model::{
    ActionKind, ActionSelector, ArgClass, ArgOperator, ArgSelector, ArgType, BinaryOperator,
    CapabilitySet, KProbeArg, ListSpec, ListType, NamespaceKind, RateLimitScope, Selector,
    SetOperator, TracingPolicy,
};
use crate::tpformat::TpField;
use crate::validate::{
    each_value, invalid, parse_rate_limit, policy_mode, resolve_arg, unsupported, PolicyMode,
};
use crate::values::{
    parse_int, parse_map_value, parse_named, parse_namespace_value, parse_range, Cidr, IntRange,
    IntSyntax, IntType, NamedKind, PortRange,
};
use crate::ValidationError;

/// Longest string value a filter can hold (the kernel's LPM keys).
pub const MAX_STRING_VALUE: usize = 251;
/// Most arguments a hook reads.
pub const MAX_ARGS: usize = 6;

/// What the running kernel offers (probed by the agent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelFeatures {
    /// Tracepoint programs.
    pub tracepoints: bool,
    /// Raw tracepoint programs.
    pub raw_tracepoints: bool,
    /// kprobe programs.
    pub kprobes: bool,
    /// fentry programs.
    pub fentry: bool,
    /// BPF-LSM programs with `bpf` in the active LSM list.
    pub lsm: bool,
    /// fanotify permission events.
    pub fanotify: bool,
}

/// The facts about the host the compiler needs; the agent implements it by
/// reading the kernel, tests with tables.
pub trait Host {
    /// Kernel features.
    fn features(&self) -> KernelFeatures;
    /// The number of syscall `name` (without `sys_` / `__x64_sys_`).
    fn syscall_number(&self, name: &str) -> Option<u32>;
    /// The record fields of tracepoint `subsystem/event`.
    fn tracepoint_format(&self, subsystem: &str, event: &str) -> Result<Vec<TpField>, String>;
    /// The host's namespace inode of `kind` (for `host_ns`).
    fn host_namespace(&self, kind: NamespaceKind) -> Option<u64>;
    /// Which of `names` are functions of this kernel that a kprobe can
    /// attach to (BPF-LSM hooks are asked as `bpf_lsm_<hook>`), or `None`
    /// when the kernel's symbols cannot be read (the attach then tells).
    fn kernel_functions(&self, names: &BTreeSet<String>) -> Option<BTreeSet<String>>;
}

/// Operator choices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileOptions {
    /// Load hooks whose actions cannot be carried out on this kernel with
    /// their actions reported only (instead of rejecting the policy).
    pub allow_monitoring_fallback: bool,
}

/// How a hook runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// Syscall `nr`'s entry (the runtime picks the program that runs it).
    Syscall {
        /// Syscall number.
        nr: u32,
    },
    /// A tracepoint.
    Tracepoint {
        /// Subsystem.
        subsystem: String,
        /// Event.
        event: String,
    },
    /// A raw tracepoint.
    RawTracepoint {
        /// Event.
        event: String,
    },
    /// A kprobe on `function`.
    Kprobe {
        /// Kernel function.
        function: String,
    },
    /// A BPF-LSM program on `hook` (without `security_`).
    Lsm {
        /// LSM hook.
        hook: String,
    },
    /// fanotify permission events, evaluated in user space.
    Fanotify {
        /// Which permission event.
        access: FanotifyAccess,
    },
}

/// The fanotify permission event a hook maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FanotifyAccess {
    /// `FAN_OPEN_PERM` (file open).
    Open,
    /// `FAN_OPEN_EXEC_PERM` (exec of a file).
    Exec,
}

/// Which kind of event a hook reports (Tetragon's event types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// `process_kprobe`.
    Kprobe,
    /// `process_tracepoint`.
    Tracepoint,
    /// `process_lsm`.
    Lsm,
}

/// Where an argument's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgSource {
    /// Syscall argument register `n`.
    Syscall(u8),
    /// Tracepoint record field.
    TpField {
        /// Byte offset.
        offset: u16,
    },
    /// Tracepoint `__data_loc` string.
    TpDataLoc {
        /// Byte offset of the location word.
        offset: u16,
    },
    /// Function (or raw tracepoint) argument `n`.
    Reg(u8),
    /// The file of a fanotify event.
    FanotifyFile,
}

/// How an argument is read and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgRead {
    /// An integer of `size` bytes.
    Int {
        /// Bytes (1, 2, 4, 8).
        size: u8,
        /// Signed.
        signed: bool,
    },
    /// A NUL-terminated string in user memory.
    UserString,
    /// A NUL-terminated string in kernel memory.
    KernelString,
    /// `struct file *`: its path.
    File,
    /// `struct path *`: the path.
    Path,
    /// `struct linux_binprm *`: the path of its file.
    Bprm,
    /// `struct sockaddr *` (user memory at syscall entry, kernel memory
    /// elsewhere): family, and address and port as the source.
    Sockaddr,
    /// `struct sock *`: the socket's tuple and state.
    Sock,
    /// `struct sk_buff *`: the tuple of its IP header.
    Skb,
}

/// One argument of a hook.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgPlan {
    /// Where from.
    pub source: ArgSource,
    /// How.
    pub read: ArgRead,
    /// The declaration (type and label, for events).
    pub decl: KProbeArg,
}

/// LPM entries of an integer set: (value, prefix bits of the 64).
pub type NumEntries = Vec<(u64, u32)>;

/// A set of binaries (one bit of the kernel's per-process binary match).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BinarySet {
    /// How `values` match a path.
    pub kind: BinaryMatch,
    /// The paths (sorted, deduplicated).
    pub values: Vec<String>,
}

/// How a [`BinarySet`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BinaryMatch {
    /// Whole path.
    Exact,
    /// Path starts with a value.
    Prefix,
    /// Path ends with a value.
    Postfix,
}

/// One filter, the unit the kernel evaluates. Filters of a selector are
/// ANDed; `negate` turns a test into its Not-form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterPlan {
    /// Always true (a selector without filters).
    True,
    /// Integer argument in a set.
    ArgNum {
        /// Argument slot.
        arg: u8,
        /// Compare as signed (values stored with the sign bit flipped).
        signed: bool,
        /// Not-form.
        negate: bool,
        /// LPM entries.
        entries: NumEntries,
    },
    /// String argument equal to / starting with a value.
    ArgStr {
        /// Argument slot.
        arg: u8,
        /// Not-form.
        negate: bool,
        /// (bytes, whole-string) entries.
        entries: Vec<(Vec<u8>, bool)>,
    },
    /// String argument ending with a value (entries reversed).
    ArgStrPostfix {
        /// Argument slot.
        arg: u8,
        /// Not-form.
        negate: bool,
        /// Reversed values.
        entries: Vec<Vec<u8>>,
    },
    /// `arg > value`.
    ArgGt {
        /// Argument slot.
        arg: u8,
        /// Signed comparison.
        signed: bool,
        /// Operand.
        value: u64,
    },
    /// `arg < value`.
    ArgLt {
        /// Argument slot.
        arg: u8,
        /// Signed comparison.
        signed: bool,
        /// Operand.
        value: u64,
    },
    /// `arg & value != 0`.
    ArgMask {
        /// Argument slot.
        arg: u8,
        /// Mask.
        value: u64,
    },
    /// The process's binary (or an ancestor's, with `follow`) in a set.
    Binary {
        /// The set.
        set: BinarySet,
        /// Not-form.
        negate: bool,
        /// followChildren.
        follow: bool,
    },
    /// The parent's binary in a set.
    ParentBinary {
        /// The set.
        set: BinarySet,
        /// Not-form.
        negate: bool,
    },
    /// The process id in a set.
    Pid {
        /// Exact pids.
        entries: NumEntries,
        /// Not-form.
        negate: bool,
        /// Compare the namespace pid.
        namespace_pid: bool,
        /// followForks.
        follow: bool,
    },
    /// A namespace inode in a set.
    Namespace {
        /// `PAL_NS_*` index (see [`namespace_index`]).
        ns: u8,
        /// Not-form.
        negate: bool,
        /// Inodes.
        entries: NumEntries,
    },
    /// A port of a socket argument in a set.
    SockPort {
        /// Argument slot.
        arg: u8,
        /// Destination port (else source).
        dst: bool,
        /// Not-form.
        negate: bool,
        /// LPM entries over the port.
        entries: NumEntries,
    },
    /// A port of a socket argument below 1024.
    SockPortPriv {
        /// Argument slot.
        arg: u8,
        /// Destination port (else source).
        dst: bool,
        /// Not-form.
        negate: bool,
    },
    /// An address of a socket argument in a set of prefixes (fails, Not
    /// form included, for non-IP families).
    SockAddr {
        /// Argument slot.
        arg: u8,
        /// Destination address (else source).
        dst: bool,
        /// Not-form.
        negate: bool,
        /// Prefixes (address, bits), IPv4 and IPv6.
        prefixes: Vec<(std::net::IpAddr, u8)>,
    },
    /// The family, protocol or state of a socket argument in a set (a
    /// state filter fails when the state is unknown).
    SockField {
        /// Argument slot.
        arg: u8,
        /// Which field.
        field: SockField,
        /// LPM entries.
        entries: NumEntries,
    },
    /// Any capability of `mask` in a capability set.
    Caps {
        /// Which set.
        set: CapabilitySet,
        /// Not-form.
        negate: bool,
        /// Capability bits.
        mask: u64,
    },
}

/// The tuple field a [`FilterPlan::SockField`] tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockField {
    /// Address family (`AF_*`).
    Family,
    /// IP protocol (`IPPROTO_*`).
    Protocol,
    /// TCP state (`TCP_*`).
    State,
}

/// The reported action (Tetragon's `KPROBE_ACTION_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Post an event.
    Post,
    /// Nothing reported.
    NoPost,
    /// SIGKILL the process.
    Sigkill,
    /// Send a signal.
    Signal,
    /// Override the return value (deny).
    Override,
}

/// What a matching selector does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionPlan {
    /// Reported action.
    pub action: Action,
    /// Send an event.
    pub post: bool,
    /// Signal to send (0: none).
    pub signal: i32,
    /// Return override, a negative errno (0: none).
    pub override_errno: i32,
    /// At most one event per this many ns (0: no limit).
    pub rate_ns: u64,
    /// Rate-limit scope.
    pub rate_scope: RateLimitScope,
}

/// One selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorPlan {
    /// ANDed filters (at least one).
    pub filters: Vec<FilterPlan>,
    /// What a match does.
    pub actions: ActionPlan,
}

/// One hook of a policy, ready to load.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledHook {
    /// YAML path of the hook (`spec.kprobes[0]`).
    pub path: String,
    /// The mechanism.
    pub attach: Attach,
    /// Event type.
    pub kind: HookKind,
    /// Function, tracepoint or LSM hook name for events.
    pub function_name: String,
    /// Arguments read (in declaration order).
    pub args: Vec<ArgPlan>,
    /// Selectors (a hook without selectors gets one that always posts).
    pub selectors: Vec<SelectorPlan>,
    /// Actions reported only (policy-mode monitor or monitoring fallback).
    pub monitor: bool,
    /// `message`.
    pub message: String,
    /// `tags`.
    pub tags: Vec<String>,
}

/// A compiled policy.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledPolicy {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` of a `TracingPolicyNamespaced`.
    pub namespace: Option<String>,
    /// Policy mode.
    pub mode: PolicyMode,
    /// Hooks.
    pub hooks: Vec<CompiledHook>,
    /// What was accepted with a caveat (monitoring fallback, ...).
    pub warnings: Vec<String>,
}

/// `PAL_NS_*` index of a namespace kind.
pub fn namespace_index(kind: NamespaceKind) -> u8 {
    match kind {
        NamespaceKind::Uts => 0,
        NamespaceKind::Ipc => 1,
        NamespaceKind::Mnt => 2,
        NamespaceKind::Pid => 3,
        NamespaceKind::PidForChildren => 4,
        NamespaceKind::Net => 5,
        NamespaceKind::Time => 6,
        NamespaceKind::TimeForChildren => 7,
        NamespaceKind::Cgroup => 8,
        NamespaceKind::User => 9,
    }
}

/// Compiles a policy that passed [`crate::validate`].
pub fn compile(
    policy: &TracingPolicy,
    host: &dyn Host,
    options: CompileOptions,
) -> Result<CompiledPolicy, ValidationError> {
    crate::validate(policy)?;
    let mode = policy_mode(policy)?;
    let feats = host.features();
    let env = Env {
        mode,
        host,
        options,
        lists: ListValues {
            specs: &policy.spec.lists,
            host,
        },
    };
    let mut out = CompiledPolicy {
        name: policy.metadata.name.clone(),
        namespace: policy.metadata.namespace.clone(),
        mode,
        hooks: Vec::new(),
        warnings: Vec::new(),
    };
    let spec = &policy.spec;
    if spec.pod_selector.is_some() || spec.container_selector.is_some() {
        let path = if spec.pod_selector.is_some() {
            "spec.podSelector"
        } else {
            "spec.containerSelector"
        };
        return Err(unsupported(
            path,
            "pod and container selectors are",
            ": palisade's tracing policies apply node-wide; narrow them with matchNamespaces or matchBinaries",
        ));
    }
    // uprobes and USDTs were refused by `validate`.
    if !spec.enforcers.is_empty() {
        return Err(unsupported(
            "spec.enforcers",
            "syscall enforcers are",
            ": use Sigkill, or Override on an LSM hook",
        ));
    }
    if spec.loader {
        return Err(unsupported(
            "spec.loader",
            "loader events are",
            ": remove spec.loader",
        ));
    }
    let functions = KernelFunctions::of(policy, host);
    for (i, k) in spec.kprobes.iter().enumerate() {
        let path = format!("spec.kprobes[{i}]");
        let (mut attach, kind, name) = kprobe_attach(&path, &k.call, k.syscall, host, feats)?;
        // Override on a security_* function: its LSM hook's return value
        // denies (the same arguments, in the same order), where a kprobe
        // could only report.
        if let (true, true, Attach::Kprobe { function }) =
            (overrides(&k.selectors), feats.lsm, &attach)
        {
            if let Some(hook) = lsm_hook_of(function).filter(|h| functions.known(&lsm_function(h)))
            {
                attach = Attach::Lsm { hook };
            }
        }
        if let Attach::Kprobe { function } = &attach {
            if !functions.has(function) {
                if k.ignore.as_ref().is_some_and(|i| i.call_not_found) {
                    out.warnings.push(format!(
                        "{path}: kernel function {function:?} does not exist on this kernel; kprobe skipped (ignore.callNotFound)"
                    ));
                    continue;
                }
                return Err(invalid(
                    format!("{path}.call"),
                    format!(
                        "kernel function {function:?} does not exist on this kernel; check its name for this kernel version, or set ignore.callNotFound: true to skip the kprobe where it is missing"
                    ),
                ));
            }
        }
        // Without `return: true` Tetragon ignores returnArg; so does validation.
        if k.r#return {
            return Err(unsupported(
                format!("{path}.return"),
                "kretprobes are",
                ": palisade does not hook function returns yet; remove return/returnArg",
            ));
        }
        let args = plan_args(&path, &attach, &k.args, None)?;
        let hook = finish_hook(
            Draft {
                path,
                attach,
                kind,
                function_name: name,
                args,
                decls: &k.args,
                selectors: &k.selectors,
                message: &k.message,
                tags: &k.tags,
            },
            &env,
            &mut out.warnings,
        )?;
        out.hooks.push(hook);
    }
    for (i, t) in spec.tracepoints.iter().enumerate() {
        let path = format!("spec.tracepoints[{i}]");
        let (attach, fields) = if t.raw {
            if !feats.raw_tracepoints {
                return Err(unsupported(path, "raw tracepoints are", " by this kernel"));
            }
            (
                Attach::RawTracepoint {
                    event: t.event.clone(),
                },
                None,
            )
        } else {
            if !feats.tracepoints {
                return Err(unsupported(path, "tracepoints are", " by this kernel"));
            }
            let fields = host
                .tracepoint_format(&t.subsystem, &t.event)
                .map_err(|e| {
                    invalid(
                        format!("{path}.event"),
                        format!("tracepoint {}/{}: {e}", t.subsystem, t.event),
                    )
                })?;
            (
                Attach::Tracepoint {
                    subsystem: t.subsystem.clone(),
                    event: t.event.clone(),
                },
                Some(fields),
            )
        };
        let args = plan_args(&path, &attach, &t.args, fields.as_deref())?;
        let hook = finish_hook(
            Draft {
                path,
                attach,
                kind: HookKind::Tracepoint,
                function_name: format!("{}/{}", t.subsystem, t.event),
                args,
                decls: &t.args,
                selectors: &t.selectors,
                message: &t.message,
                tags: &t.tags,
            },
            &env,
            &mut out.warnings,
        )?;
        out.hooks.push(hook);
    }
    for (i, l) in spec.lsm_hooks.iter().enumerate() {
        let path = format!("spec.lsmhooks[{i}]");
        let attach = if feats.lsm {
            if !functions.has(&lsm_function(&l.hook)) {
                return Err(invalid(
                    format!("{path}.hook"),
                    format!(
                        "LSM hook {:?} does not exist on this kernel (no {}); check its name for this kernel version",
                        l.hook,
                        lsm_function(&l.hook)
                    ),
                ));
            }
            Attach::Lsm {
                hook: l.hook.clone(),
            }
        } else if let Some(access) = fanotify_access(&l.hook) {
            if !feats.fanotify {
                return Err(unsupported(
                    path,
                    "BPF-LSM and fanotify permission events are",
                    " by this kernel; one of them is needed to enforce this hook",
                ));
            }
            Attach::Fanotify { access }
        } else {
            return Err(unsupported(
                format!("{path}.hook"),
                format!("LSM hook {:?} needs BPF-LSM, which is", l.hook),
                " by this kernel or not active (boot with lsm=...,bpf); without it palisade enforces only file_open and bprm_check_security (through fanotify)",
            ));
        };
        let args = plan_args(&path, &attach, &l.args, None)?;
        let hook = finish_hook(
            Draft {
                path,
                attach,
                kind: HookKind::Lsm,
                function_name: l.hook.clone(),
                args,
                decls: &l.args,
                selectors: &l.selectors,
                message: &l.message,
                tags: &l.tags,
            },
            &env,
            &mut out.warnings,
        )?;
        out.hooks.push(hook);
    }
    Ok(out)
}

/// The kernel functions a policy's hooks attach to, as far as the host
/// knows them.
struct KernelFunctions(Option<BTreeSet<String>>);

impl KernelFunctions {
    /// Asks `host` once about the functions of the policy's kprobes (when
    /// the kernel has kprobes) and LSM hooks (when it has BPF-LSM).
    fn of(policy: &TracingPolicy, host: &dyn Host) -> Self {
        let feats = host.features();
        let spec = &policy.spec;
        let mut names = BTreeSet::new();
        if feats.kprobes {
            names.extend(
                spec.kprobes
                    .iter()
                    .filter(|k| !k.syscall && !k.call.starts_with("list:"))
                    .map(|k| k.call.clone()),
            );
        }
        if feats.lsm {
            names.extend(spec.lsm_hooks.iter().map(|l| lsm_function(&l.hook)));
            names.extend(
                spec.kprobes
                    .iter()
                    .filter(|k| overrides(&k.selectors))
                    .filter_map(|k| lsm_hook_of(&k.call))
                    .map(|h| lsm_function(&h)),
            );
        }
        if names.is_empty() {
            return Self(None);
        }
        Self(host.kernel_functions(&names))
    }

    /// Whether `name` exists (true when unknown).
    fn has(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|f| f.contains(name))
    }

    /// Whether `name` is known to exist.
    fn known(&self, name: &str) -> bool {
        self.0.as_ref().is_some_and(|f| f.contains(name))
    }
}

/// Whether some selector has an `Override` action.
fn overrides(selectors: &[Selector]) -> bool {
    selectors.iter().any(|s| {
        s.match_actions
            .iter()
            .any(|a| a.action == ActionKind::Override)
    })
}

/// The LSM hook a `security_*` function calls (`security_inode_mkdir` ->
/// `inode_mkdir`; `security_bprm_check` -> `bprm_check_security`).
fn lsm_hook_of(call: &str) -> Option<String> {
    let hook = call.strip_prefix("security_")?;
    Some(match hook {
        "bprm_check" => "bprm_check_security".to_owned(),
        other => other.to_owned(),
    })
}

/// The function a BPF-LSM program on `hook` attaches to.
fn lsm_function(hook: &str) -> String {
    format!("bpf_lsm_{hook}")
}

/// `file_open`/`bprm_check_security` (and their `security_` functions).
fn fanotify_access(name: &str) -> Option<FanotifyAccess> {
    match name.strip_prefix("security_").unwrap_or(name) {
        "file_open" => Some(FanotifyAccess::Open),
        "bprm_check" | "bprm_check_security" => Some(FanotifyAccess::Exec),
        _ => None,
    }
}

fn kprobe_attach(
    path: &str,
    call: &str,
    syscall: bool,
    host: &dyn Host,
    feats: KernelFeatures,
) -> Result<(Attach, HookKind, String), ValidationError> {
    if call.starts_with("list:") {
        return Err(unsupported(
            format!("{path}.call"),
            "kprobes on lists are",
            ": list each function in its own kprobe",
        ));
    }
    if syscall {
        let name = syscall_name(call);
        let nr = host.syscall_number(name).ok_or_else(|| {
            invalid(
                format!("{path}.call"),
                format!("{call:?} is not a syscall of this architecture"),
            )
        })?;
        // Tetragon attaches to the arch's wrapper and reports its name
        // (`sys_setuid` -> `__x64_sys_setuid`): SIEM rules match on it.
        return Ok((
            Attach::Syscall { nr },
            HookKind::Kprobe,
            format!("__x64_sys_{name}"),
        ));
    }
    if feats.kprobes {
        return Ok((
            Attach::Kprobe {
                function: call.to_owned(),
            },
            HookKind::Kprobe,
            call.to_owned(),
        ));
    }
    if let Some(access) = fanotify_access(call) {
        if feats.fanotify {
            return Ok((
                Attach::Fanotify { access },
                HookKind::Kprobe,
                call.to_owned(),
            ));
        }
    }
    Err(unsupported(
        format!("{path}.call"),
        format!("kprobe on {call:?} needs kprobes, which are"),
        " by this kernel (no kprobe PMU: CONFIG_KPROBES is off); syscalls (syscall: true), tracepoints, and security_file_open/security_bprm_check work without them",
    ))
}

/// The syscall a kprobe or list entry names: `sys_setuid`,
/// `__x64_sys_setuid`, `__arm64_sys_setuid` -> `setuid`.
pub fn syscall_name(call: &str) -> &str {
    let c = call
        .strip_prefix("__x64_")
        .or_else(|| call.strip_prefix("__arm64_"))
        .unwrap_or(call);
    c.strip_prefix("sys_").unwrap_or(c)
}

fn plan_args(
    path: &str,
    attach: &Attach,
    decls: &[KProbeArg],
    fields: Option<&[TpField]>,
) -> Result<Vec<ArgPlan>, ValidationError> {
    let read = decls.iter().filter(|a| a.r#type != ArgType::Nop).count();
    if read > MAX_ARGS {
        return Err(invalid(
            format!("{path}.args"),
            format!("{read} args declared; palisade reads at most {MAX_ARGS} per hook"),
        ));
    }
    let mut out = Vec::with_capacity(read);
    for (i, a) in decls.iter().enumerate() {
        // A `nop` argument is declared but neither read nor reported (as
        // in Tetragon); the slots of the others follow.
        if a.r#type == ArgType::Nop {
            continue;
        }
        let ap = format!("{path}.args[{i}]");
        if !a.resolve.is_empty() {
            return Err(unsupported(
                format!("{ap}.resolve"),
                "resolve (following fields of the argument through BTF) is",
                ": palisade reads the argument itself; remove resolve",
            ));
        }
        let class = a.r#type.class();
        let int = |class: ArgClass| -> Option<ArgRead> {
            match class {
                ArgClass::Signed(b) => Some(ArgRead::Int {
                    size: (b / 8) as u8,
                    signed: true,
                }),
                ArgClass::Unsigned(b) => Some(ArgRead::Int {
                    size: (b / 8) as u8,
                    signed: false,
                }),
                _ => None,
            }
        };
        let int_type =
            matches!(class, ArgClass::Signed(_) | ArgClass::Unsigned(_)) || a.r#type == ArgType::Fd;
        let plan = match attach {
            Attach::Syscall { .. } => {
                if a.index as usize >= MAX_ARGS {
                    return Err(invalid(
                        format!("{ap}.index"),
                        "syscalls have at most 6 arguments (index 0..5)",
                    ));
                }
                let read = if a.r#type == ArgType::Fd {
                    ArgRead::Int {
                        size: 4,
                        signed: true,
                    }
                } else if let Some(r) = int(class) {
                    r
                } else if matches!(
                    a.r#type,
                    ArgType::String | ArgType::CharBuf | ArgType::Filename
                ) {
                    ArgRead::UserString
                } else if a.r#type == ArgType::Sockaddr {
                    ArgRead::Sockaddr
                } else {
                    return Err(unsupported(
                        format!("{ap}.type"),
                        format!("type {} at syscall entry is", a.r#type.name()),
                        ": syscall arguments are integers (int, uint64, fd, ...), user strings (string, char_buf) or sockaddr",
                    ));
                };
                ArgPlan {
                    source: ArgSource::Syscall(a.index as u8),
                    read,
                    decl: a.clone(),
                }
            }
            Attach::Tracepoint { .. } => {
                let fields = fields.unwrap_or(&[]);
                let f = fields.get(a.index as usize).ok_or_else(|| {
                    invalid(
                        format!("{ap}.index"),
                        format!(
                            "the tracepoint has {} fields (index 0..{})",
                            fields.len(),
                            fields.len().saturating_sub(1)
                        ),
                    )
                })?;
                if f.is_data_loc() {
                    ArgPlan {
                        source: ArgSource::TpDataLoc { offset: f.offset },
                        read: ArgRead::KernelString,
                        decl: a.clone(),
                    }
                } else if f.is_char_pointer() && class == ArgClass::Text {
                    ArgPlan {
                        source: ArgSource::TpField { offset: f.offset },
                        read: ArgRead::UserString,
                        decl: a.clone(),
                    }
                } else if int_type || a.r#type == ArgType::Auto {
                    if !matches!(f.size, 1 | 2 | 4 | 8) {
                        return Err(invalid(
                            format!("{ap}.index"),
                            format!(
                                "field {} ({}, {} bytes) is not an integer; choose a scalar field",
                                f.name, f.c_type, f.size
                            ),
                        ));
                    }
                    let signed = match class {
                        ArgClass::Signed(_) => true,
                        ArgClass::Unsigned(_) => false,
                        _ => f.signed,
                    };
                    let size = match class {
                        ArgClass::Signed(b) | ArgClass::Unsigned(b)
                            if a.r#type != ArgType::Auto =>
                        {
                            ((b / 8) as u16).min(f.size) as u8
                        }
                        _ => f.size as u8,
                    };
                    ArgPlan {
                        source: ArgSource::TpField { offset: f.offset },
                        read: ArgRead::Int { size, signed },
                        decl: a.clone(),
                    }
                } else {
                    return Err(unsupported(
                        format!("{ap}.type"),
                        format!(
                            "type {} on tracepoint field {} ({}) is",
                            a.r#type.name(),
                            f.name,
                            f.c_type
                        ),
                        ": tracepoint fields are read as integers or strings",
                    ));
                }
            }
            Attach::RawTracepoint { .. } | Attach::Kprobe { .. } | Attach::Lsm { .. } => {
                if a.index as usize >= MAX_ARGS {
                    return Err(invalid(
                        format!("{ap}.index"),
                        "palisade reads function arguments 0..5",
                    ));
                }
                let read = if let Some(r) = int(class) {
                    r
                } else {
                    match a.r#type {
                            ArgType::Fd => ArgRead::Int {
                                size: 4,
                                signed: true,
                            },
                            ArgType::String => ArgRead::KernelString,
                            ArgType::File => ArgRead::File,
                            ArgType::Path => ArgRead::Path,
                            ArgType::LinuxBinprm => ArgRead::Bprm,
                            ArgType::Sockaddr => ArgRead::Sockaddr,
                            ArgType::Sock => ArgRead::Sock,
                            ArgType::Skb => ArgRead::Skb,
                            other => return Err(unsupported(
                                format!("{ap}.type"),
                                format!("reading type {} is", other.name()),
                                ": palisade reads integers, string, file, path, linux_binprm, sockaddr, sock and skb",
                            )),
                        }
                };
                ArgPlan {
                    source: ArgSource::Reg(a.index as u8),
                    read,
                    decl: a.clone(),
                }
            }
            Attach::Fanotify { access } => {
                let ok = match access {
                    FanotifyAccess::Open => a.r#type == ArgType::File && a.index == 0,
                    FanotifyAccess::Exec => a.r#type == ArgType::LinuxBinprm && a.index == 0,
                };
                if !ok {
                    return Err(unsupported(
                        ap.clone(),
                        format!("argument {} of type {} is", a.index, a.r#type.name()),
                        ": without kprobes/BPF-LSM palisade sees only the file (index 0, type file or linux_binprm)",
                    ));
                }
                ArgPlan {
                    source: ArgSource::FanotifyFile,
                    read: ArgRead::File,
                    decl: a.clone(),
                }
            }
        };
        if a.size_arg_index != 0 {
            return Err(unsupported(
                format!("{ap}.sizeArgIndex"),
                "sized buffers (sizeArgIndex) are",
                ": palisade reads char_buf as a NUL-terminated string, which would run past the buffer's size; remove sizeArgIndex to report the buffer up to its first NUL",
            ));
        }
        out.push(plan);
    }
    Ok(out)
}

/// A hook as written, with its mechanism and arguments decided.
struct Draft<'a> {
    path: String,
    attach: Attach,
    kind: HookKind,
    function_name: String,
    args: Vec<ArgPlan>,
    decls: &'a [KProbeArg],
    selectors: &'a [Selector],
    message: &'a str,
    tags: &'a [String],
}

/// What every hook of a policy is compiled with.
struct Env<'a> {
    mode: PolicyMode,
    host: &'a dyn Host,
    options: CompileOptions,
    lists: ListValues<'a>,
}

/// The `list:NAME` values of `InMap`/`NotInMap` on this host.
struct ListValues<'a> {
    specs: &'a [ListSpec],
    host: &'a dyn Host,
}

impl ListValues<'_> {
    /// The integers of list `name`, read as `ty`: a list without `type`
    /// holds integers, a `syscalls` list names syscalls (`sys_dup`), which
    /// become this host's numbers. `at` is the YAML path of the
    /// `list:NAME` value; errors about a list's values name those.
    fn integers(&self, at: &str, name: &str, ty: IntType) -> Result<Vec<i128>, ValidationError> {
        let Some((i, list)) = self.specs.iter().enumerate().find(|(_, l)| l.name == name) else {
            return Err(invalid(
                at.to_owned(),
                format!("list {name:?} is not declared; add it to spec.lists"),
            ));
        };
        let value_path = |j: usize| format!("spec.lists[{i}].values[{j}]");
        match list.r#type {
            None => list
                .values
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    parse_int(v, ty, IntSyntax::Map).map_err(|e| invalid(value_path(j), e))
                })
                .collect(),
            Some(ListType::Syscalls) => list
                .values
                .iter()
                .enumerate()
                .map(|(j, v)| self.syscall(value_path(j), v))
                .collect(),
            Some(ListType::GeneratedSyscalls) => Err(unsupported(
                at.to_owned(),
                format!("matching the generated_syscalls list {name:?} is"),
                ": name the syscalls in a list of type syscalls",
            )),
            Some(ListType::GeneratedFtrace) => Err(invalid(
                at.to_owned(),
                format!(
                    "list {name:?} names kernel functions (generated_ftrace); InMap needs a syscalls list or a list of integers"
                ),
            )),
        }
    }

    /// The number of syscall `name` of a `syscalls` list.
    fn syscall(&self, at: String, name: &str) -> Result<i128, ValidationError> {
        if name.starts_with("__ia32_") {
            return Err(unsupported(
                at,
                "32-bit (ia32) syscalls are",
                ": palisade matches the native syscall numbers that raw_syscalls reports; remove the __ia32_ entry",
            ));
        }
        self.host
            .syscall_number(syscall_name(name))
            .map(i128::from)
            .ok_or_else(|| {
                invalid(
                    at,
                    format!("{name:?} is not a syscall of this architecture"),
                )
            })
    }
}

fn finish_hook(
    d: Draft<'_>,
    env: &Env<'_>,
    warnings: &mut Vec<String>,
) -> Result<CompiledHook, ValidationError> {
    let Draft {
        path,
        attach,
        kind,
        function_name,
        args,
        decls,
        selectors,
        message,
        tags,
    } = d;
    let options = env.options;
    let mut monitor = env.mode == PolicyMode::Monitor;
    let fanotify = matches!(attach, Attach::Fanotify { .. });
    let mut plans = Vec::with_capacity(selectors.len().max(1));
    for (si, sel) in selectors.iter().enumerate() {
        let sp = format!("{path}.selectors[{si}]");
        let filters = if fanotify {
            vec![FilterPlan::True]
        } else {
            let shape = ArgShape {
                read: &args,
                decls,
                tracepoint: matches!(attach, Attach::Tracepoint { .. }),
            };
            plan_filters(&sp, sel, &shape, env)?
        };
        let (actions, fallback) = plan_actions(&sp, &sel.match_actions, &attach, options)?;
        if fanotify && actions.override_errno != 0 && actions.override_errno != -1 {
            warnings.push(format!(
                "{sp}.matchActions: fanotify denies with EPERM; argError {} is not returned",
                actions.override_errno
            ));
        }
        if fallback {
            monitor = true;
            warnings.push(format!(
                "{sp}.matchActions: Override cannot be enforced on this kernel at {function_name}; loaded in monitoring mode (actions reported, not carried out)"
            ));
        }
        warnings.extend(unreported_extras(&sp, &sel.match_actions));
        plans.push(SelectorPlan { filters, actions });
    }
    if plans.is_empty() {
        plans.push(SelectorPlan {
            filters: vec![FilterPlan::True],
            actions: post_plan(),
        });
    }
    Ok(CompiledHook {
        path,
        attach,
        kind,
        function_name,
        args,
        selectors: plans,
        monitor,
        message: message.to_owned(),
        tags: tags.to_vec(),
    })
}

fn post_plan() -> ActionPlan {
    ActionPlan {
        action: Action::Post,
        post: true,
        signal: 0,
        override_errno: 0,
        rate_ns: 0,
        rate_scope: RateLimitScope::Thread,
    }
}

/// What the `Post` actions of a selector ask events to carry that palisade's
/// events do not (the events are posted without it): one warning each.
fn unreported_extras(sp: &str, actions: &[ActionSelector]) -> Vec<String> {
    let mut out = Vec::new();
    for (ai, a) in actions.iter().enumerate() {
        for (field, set, what) in [
            (
                "kernelStackTrace",
                a.kernel_stack_trace,
                "kernel stack traces",
            ),
            ("userStackTrace", a.user_stack_trace, "user stack traces"),
            ("imaHash", a.ima_hash, "IMA hashes"),
        ] {
            if set {
                out.push(format!(
                    "{sp}.matchActions[{ai}].{field}: palisade's events do not carry {what}; events are posted without them"
                ));
            }
        }
    }
    out
}

/// Actions of one selector; the bool says the monitoring fallback was used.
fn plan_actions(
    sp: &str,
    actions: &[ActionSelector],
    attach: &Attach,
    options: CompileOptions,
) -> Result<(ActionPlan, bool), ValidationError> {
    let mut plan = post_plan();
    let mut fallback = false;
    let mut first = true;
    for (ai, a) in actions.iter().enumerate() {
        let ap = format!("{sp}.matchActions[{ai}]");
        let reported = match a.action {
            ActionKind::Post => {
                if let Some(r) = &a.rate_limit {
                    let ms =
                        parse_rate_limit(r).map_err(|e| invalid(format!("{ap}.rateLimit"), e))?;
                    plan.rate_ns = ms.saturating_mul(1_000_000);
                    plan.rate_scope = a.rate_limit_scope.unwrap_or(RateLimitScope::Thread);
                }
                Action::Post
            }
            ActionKind::NoPost => {
                plan.post = false;
                Action::NoPost
            }
            ActionKind::Sigkill => {
                plan.signal = 9;
                Action::Sigkill
            }
            ActionKind::Signal => {
                plan.signal = a.arg_sig.unwrap_or(9) as i32;
                Action::Signal
            }
            ActionKind::Override => {
                let errno = a.arg_error.unwrap_or(-1);
                let can = matches!(attach, Attach::Lsm { .. } | Attach::Fanotify { .. });
                if can {
                    plan.override_errno = if errno > 0 { -errno } else { errno };
                } else if options.allow_monitoring_fallback {
                    fallback = true;
                } else {
                    let hint = match attach {
                        Attach::Syscall { .. } => ": overriding a syscall needs bpf_override_return (kprobes with CONFIG_BPF_KPROBE_OVERRIDE), not available here; use Sigkill, or an lsmhook / security_* kprobe, or allow the monitoring fallback",
                        _ => ": only LSM hooks (or security_file_open / security_bprm_check through fanotify) can deny here; use Sigkill or allow the monitoring fallback",
                    };
                    return Err(unsupported(
                        format!("{ap}.action"),
                        "Override at this hook is",
                        hint,
                    ));
                }
                Action::Override
            }
            other => {
                return Err(unsupported(
                    format!("{ap}.action"),
                    format!("the {other:?} action is"),
                    ": palisade carries out Post, NoPost, Sigkill, Signal and Override",
                ))
            }
        };
        if first || (plan.action == Action::Post && reported != Action::Post) {
            plan.action = reported;
        }
        first = false;
    }
    Ok((plan, fallback))
}

/// A hook's arguments as declared and as read.
struct ArgShape<'a> {
    /// The arguments read (without `nop` ones).
    read: &'a [ArgPlan],
    /// The declarations.
    decls: &'a [KProbeArg],
    /// A tracepoint (`index` may be a position).
    tracepoint: bool,
}

impl ArgShape<'_> {
    /// The slot in `read` of the argument matchArgs entry `m` at `mp`
    /// filters: the declared argument it refers to ([`resolve_arg`]),
    /// counted without the `nop` arguments before it.
    fn slot(&self, mp: &str, m: &ArgSelector) -> Result<(usize, &ArgPlan), ValidationError> {
        let pos = resolve_arg(mp, m, self.decls, "args", self.tracepoint)?;
        let not_read = || {
            invalid(
                format!("{mp}.index"),
                "refers to a nop argument, which is not read; declare the argument with its type",
            )
        };
        if self.decls.get(pos).is_none_or(|a| a.r#type == ArgType::Nop) {
            return Err(not_read());
        }
        let slot = self.decls[..pos]
            .iter()
            .filter(|a| a.r#type != ArgType::Nop)
            .count();
        self.read.get(slot).map(|a| (slot, a)).ok_or_else(not_read)
    }
}

fn plan_filters(
    sp: &str,
    sel: &Selector,
    shape: &ArgShape<'_>,
    env: &Env<'_>,
) -> Result<Vec<FilterPlan>, ValidationError> {
    let host = env.host;
    let mut out = Vec::new();
    for (i, m) in sel.match_args.iter().enumerate() {
        let mp = format!("{sp}.matchArgs[{i}]");
        let (slot, arg) = shape.slot(&mp, m)?;
        out.push(arg_filter(&mp, m, slot, arg, &env.lists)?);
    }
    for (i, b) in sel.match_binaries.iter().enumerate() {
        let (set, negate) = binary_set(b.operator, &b.values);
        check_strings(&format!("{sp}.matchBinaries[{i}].values"), &b.values)?;
        out.push(FilterPlan::Binary {
            set,
            negate,
            follow: b.follow_children,
        });
    }
    for (i, b) in sel.match_parent_binaries.iter().enumerate() {
        let bp = format!("{sp}.matchParentBinaries[{i}]");
        if b.follow_children {
            return Err(unsupported(
                format!("{bp}.followChildren"),
                "followChildren on parent binaries is",
                ": remove followChildren from this matchParentBinaries entry",
            ));
        }
        check_strings(&format!("{bp}.values"), &b.values)?;
        let (set, negate) = binary_set(b.operator, &b.values);
        out.push(FilterPlan::ParentBinary { set, negate });
    }
    for p in &sel.match_pids {
        out.push(FilterPlan::Pid {
            entries: p.values.iter().map(|&v| (u64::from(v), 64)).collect(),
            negate: p.operator == SetOperator::NotIn,
            namespace_pid: p.is_namespace_pid,
            follow: p.follow_forks,
        });
    }
    for (i, n) in sel.match_namespaces.iter().enumerate() {
        let np = format!("{sp}.matchNamespaces[{i}]");
        let mut entries = Vec::new();
        for (k, v) in n.values.iter().enumerate() {
            let vp = format!("{np}.values[{k}]");
            let inum = match parse_namespace_value(v.as_str()).map_err(|e| invalid(&vp, e))? {
                Some(inum) => u64::from(inum),
                None => host.host_namespace(n.namespace).ok_or_else(|| {
                    invalid(
                        vp,
                        format!(
                            "the host's {:?} namespace is unknown on this kernel",
                            n.namespace
                        ),
                    )
                })?,
            };
            entries.push((inum, 64));
        }
        out.push(FilterPlan::Namespace {
            ns: namespace_index(n.namespace),
            negate: n.operator == SetOperator::NotIn,
            entries,
        });
    }
    for (i, c) in sel.match_capabilities.iter().enumerate() {
        let cp = format!("{sp}.matchCapabilities[{i}]");
        if c.is_namespace_capability {
            return Err(unsupported(
                format!("{cp}.isNamespaceCapability"),
                "isNamespaceCapability is",
                ": palisade's in-kernel selectors cannot tell user namespaces apart yet; remove isNamespaceCapability to match the capabilities in any user namespace",
            ));
        }
        out.push(FilterPlan::Caps {
            set: c.r#type,
            negate: c.operator == SetOperator::NotIn,
            mask: capability_mask(&format!("{cp}.values"), &c.values)?,
        });
    }
    let unsupported_list = [
        (
            "matchReturnArgs",
            !sel.match_return_args.is_empty(),
            ": it needs kretprobes, which palisade does not hook yet",
        ),
        (
            "matchReturnActions",
            !sel.match_return_actions.is_empty(),
            ": it needs kretprobes, which palisade does not hook yet",
        ),
        (
            "matchNamespaceChanges",
            !sel.match_namespace_changes.is_empty(),
            " by palisade yet",
        ),
        (
            "matchCapabilityChanges",
            !sel.match_capability_changes.is_empty(),
            " by palisade yet",
        ),
    ];
    for (field, present, hint) in unsupported_list {
        if present {
            return Err(unsupported(
                format!("{sp}.{field}"),
                format!("{field} is"),
                hint,
            ));
        }
    }
    if out.is_empty() {
        out.push(FilterPlan::True);
    }
    Ok(out)
}

fn check_strings(path: &str, values: &[String]) -> Result<(), ValidationError> {
    for (k, v) in values.iter().enumerate() {
        if v.len() > MAX_STRING_VALUE {
            return Err(invalid(
                format!("{path}[{k}]"),
                format!(
                    "{} bytes; palisade compares strings of at most {MAX_STRING_VALUE} bytes",
                    v.len()
                ),
            ));
        }
    }
    Ok(())
}

impl BinaryMatch {
    /// How a `matchBinaries` operator matches, and whether it is a Not-form.
    pub fn of(op: BinaryOperator) -> (Self, bool) {
        match op {
            BinaryOperator::In => (Self::Exact, false),
            BinaryOperator::NotIn => (Self::Exact, true),
            BinaryOperator::Prefix => (Self::Prefix, false),
            BinaryOperator::NotPrefix => (Self::Prefix, true),
            BinaryOperator::Postfix => (Self::Postfix, false),
            BinaryOperator::NotPostfix => (Self::Postfix, true),
        }
    }
}

fn binary_set(op: BinaryOperator, values: &[String]) -> (BinarySet, bool) {
    let (kind, negate) = BinaryMatch::of(op);
    let mut values = values.to_vec();
    values.sort();
    values.dedup();
    (BinarySet { kind, values }, negate)
}

/// LPM prefixes covering `lo..=hi` (64-bit keys).
pub fn range_prefixes(lo: u64, hi: u64) -> NumEntries {
    let mut out = Vec::new();
    let mut cur = lo;
    loop {
        // The largest aligned block starting at cur that stays <= hi.
        let mut size_bits = if cur == 0 { 64 } else { cur.trailing_zeros() };
        while size_bits > 0 {
            let span = if size_bits == 64 {
                u64::MAX
            } else {
                (1u64 << size_bits) - 1
            };
            if cur.checked_add(span).is_some_and(|end| end <= hi) {
                break;
            }
            size_bits -= 1;
        }
        out.push((cur, 64 - size_bits));
        let span = if size_bits == 64 {
            u64::MAX
        } else {
            (1u64 << size_bits) - 1
        };
        match cur.checked_add(span) {
            Some(end) if end < hi => cur = end + 1,
            _ => break,
        }
    }
    out
}

/// The 64-bit key of an integer: signed values are sign-extended and get
/// their sign bit flipped so that the unsigned order is the signed order.
fn key_of(n: i128, signed: bool) -> u64 {
    if signed {
        (n as i64 as u64) ^ (1 << 63)
    } else {
        n as u64
    }
}

fn arg_filter(
    mp: &str,
    m: &ArgSelector,
    pos: usize,
    arg: &ArgPlan,
    lists: &ListValues<'_>,
) -> Result<FilterPlan, ValidationError> {
    use ArgOperator as O;
    let a = pos as u8;
    if matches!(arg.read, ArgRead::Sockaddr | ArgRead::Sock | ArgRead::Skb) {
        return sock_filter(mp, m, a, arg.read == ArgRead::Sockaddr);
    }
    let class = match arg.read {
        ArgRead::Int { size, signed: true } => ArgClass::Signed(u32::from(size) * 8),
        ArgRead::Int {
            size,
            signed: false,
        } => ArgClass::Unsigned(u32::from(size) * 8),
        _ => ArgClass::Text,
    };
    let signed = matches!(class, ArgClass::Signed(_));
    let text = class == ArgClass::Text;
    let values: Vec<&str> = m.values.iter().map(|v| v.as_str()).collect();
    // Tetragon reads InMap values in decimal (or 0x hex), the others with
    // Go's base-0 syntax (0644 is octal).
    let syntax = if matches!(m.operator, O::InMap | O::NotInMap) {
        IntSyntax::Map
    } else {
        IntSyntax::Go
    };
    let ty = IntType::of(class).unwrap_or(IntType {
        bits: 64,
        signed: false,
    });
    let int_of = |k: usize, v: &str| -> Result<i128, ValidationError> {
        parse_int(v, ty, syntax).map_err(|e| invalid(format!("{mp}.values[{k}]"), e))
    };
    // Each value is one integer, a `LOW:HIGH` range (InRange, InMap) or a
    // `list:NAME` (InMap), parsed as `validate` checked it.
    let ints = || -> Result<NumEntries, ValidationError> {
        let mut entries = Vec::new();
        for (k, v) in values.iter().enumerate() {
            let at = format!("{mp}.values[{k}]");
            if let Some(name) = v.strip_prefix("list:").filter(|_| syntax == IntSyntax::Map) {
                for n in lists.integers(&at, name, ty)? {
                    entries.push((key_of(n, signed), 64));
                }
                continue;
            }
            let range = match m.operator {
                O::InMap | O::NotInMap => parse_map_value(v, ty),
                O::InRange | O::NotInRange => parse_range(v, ty, syntax),
                _ => parse_int(v, ty, syntax).map(IntRange::single),
            }
            .map_err(|e| invalid(at, e))?;
            entries.extend(range_prefixes(
                key_of(range.lo(), signed),
                key_of(range.hi(), signed),
            ));
        }
        Ok(entries)
    };
    let strings = |with_nul: bool| -> Result<Vec<(Vec<u8>, bool)>, ValidationError> {
        let owned: Vec<String> = values.iter().map(|s| (*s).to_owned()).collect();
        check_strings(&format!("{mp}.values"), &owned)?;
        Ok(values
            .iter()
            .map(|v| (v.as_bytes().to_vec(), with_nul))
            .collect())
    };
    let single = |what: &str| -> Result<i128, ValidationError> {
        if values.len() != 1 {
            return Err(invalid(
                format!("{mp}.values"),
                format!("{what} takes exactly one value"),
            ));
        }
        int_of(0, values[0])
    };
    Ok(match m.operator {
        O::Equal | O::NotEqual if text => FilterPlan::ArgStr {
            arg: a,
            negate: m.operator == O::NotEqual,
            entries: strings(true)?,
        },
        O::Equal | O::NotEqual => FilterPlan::ArgNum {
            arg: a,
            signed,
            negate: m.operator == O::NotEqual,
            entries: ints()?,
        },
        O::InMap | O::NotInMap | O::InRange | O::NotInRange if !text => FilterPlan::ArgNum {
            arg: a,
            signed,
            negate: matches!(m.operator, O::NotInMap | O::NotInRange),
            entries: ints()?,
        },
        O::Prefix | O::NotPrefix if text => FilterPlan::ArgStr {
            arg: a,
            negate: m.operator == O::NotPrefix,
            entries: strings(false)?,
        },
        O::Postfix | O::NotPostfix if text => {
            strings(false)?;
            FilterPlan::ArgStrPostfix {
                arg: a,
                negate: m.operator == O::NotPostfix,
                entries: values.iter().map(|v| v.bytes().rev().collect()).collect(),
            }
        }
        O::GreaterThan if !text => FilterPlan::ArgGt {
            arg: a,
            signed,
            value: single("GreaterThan")? as u64,
        },
        O::LessThan if !text => FilterPlan::ArgLt {
            arg: a,
            signed,
            value: single("LessThan")? as u64,
        },
        O::Mask if !text => {
            let mut mask = 0u64;
            for (k, v) in values.iter().enumerate() {
                mask |= int_of(k, v)? as u64;
            }
            FilterPlan::ArgMask { arg: a, value: mask }
        }
        other => {
            return Err(unsupported(
                format!("{mp}.operator"),
                format!("operator {other:?} on a {} argument is", if text { "string" } else { "integer" }),
                ": palisade's in-kernel selectors evaluate string: Equal, Prefix, Postfix and their Not-forms; integer: Equal, InMap, InRange, GT, LT, Mask and their Not-forms",
            ))
        }
    })
}

/// A socket operator on argument slot `a` (`sockaddr`: only the source
/// side and the family exist).
fn sock_filter(
    mp: &str,
    m: &ArgSelector,
    a: u8,
    sockaddr: bool,
) -> Result<FilterPlan, ValidationError> {
    use ArgOperator as O;
    let named = |kind: NamedKind| -> Result<NumEntries, ValidationError> {
        Ok(each_value(mp, m, |v| parse_named(v, kind))?
            .into_iter()
            .flat_map(|(lo, hi)| range_prefixes(u64::from(lo), u64::from(hi)))
            .collect())
    };
    let dst = matches!(
        m.operator,
        O::DPort | O::NotDPort | O::DPortPriv | O::NotDPortPriv | O::DAddr | O::NotDAddr
    );
    let bad = || {
        unsupported(
            format!("{mp}.operator"),
            format!("operator {:?} on a socket argument is", m.operator),
            if sockaddr {
                " not valid (sockaddr: SAddr, SPort, SPortPriv, Family and Not-forms)"
            } else {
                " not valid (sock, skb: SAddr, DAddr, SPort, DPort, Priv, Protocol, Family, State and Not-forms)"
            },
        )
    };
    if sockaddr && (dst || matches!(m.operator, O::Protocol | O::State)) {
        return Err(bad());
    }
    Ok(match m.operator {
        O::SPort | O::NotSPort | O::DPort | O::NotDPort => FilterPlan::SockPort {
            arg: a,
            dst,
            negate: matches!(m.operator, O::NotSPort | O::NotDPort),
            entries: each_value(mp, m, str::parse::<PortRange>)?
                .into_iter()
                .flat_map(|r| range_prefixes(u64::from(r.lo()), u64::from(r.hi())))
                .collect(),
        },
        O::SPortPriv | O::NotSPortPriv | O::DPortPriv | O::NotDPortPriv => {
            FilterPlan::SockPortPriv {
                arg: a,
                dst,
                negate: matches!(m.operator, O::NotSPortPriv | O::NotDPortPriv),
            }
        }
        O::SAddr | O::NotSAddr | O::DAddr | O::NotDAddr => FilterPlan::SockAddr {
            arg: a,
            dst,
            negate: matches!(m.operator, O::NotSAddr | O::NotDAddr),
            prefixes: each_value(mp, m, str::parse::<Cidr>)?
                .into_iter()
                .map(|c| (c.addr(), c.prefix_len()))
                .collect(),
        },
        O::Family => FilterPlan::SockField {
            arg: a,
            field: SockField::Family,
            entries: named(NamedKind::Family)?,
        },
        O::Protocol => FilterPlan::SockField {
            arg: a,
            field: SockField::Protocol,
            entries: named(NamedKind::Protocol)?,
        },
        O::State => FilterPlan::SockField {
            arg: a,
            field: SockField::State,
            entries: named(NamedKind::State)?,
        },
        _ => return Err(bad()),
    })
}

/// Distinct binary sets of a group of hooks, in first-seen order (the agent
/// gives each a bit of the kernel's per-process binary match).
pub fn binary_sets<'a>(
    hooks: impl IntoIterator<Item = &'a CompiledHook>,
) -> Vec<(BinarySet, bool)> {
    let mut seen: BTreeMap<BinarySet, usize> = BTreeMap::new();
    let mut out: Vec<(BinarySet, bool)> = Vec::new();
    for h in hooks {
        for s in &h.selectors {
            for f in &s.filters {
                let (set, follow) = match f {
                    FilterPlan::Binary { set, follow, .. } => (set, *follow),
                    FilterPlan::ParentBinary { set, .. } => (set, false),
                    _ => continue,
                };
                match seen.get(set) {
                    Some(&i) => out[i].1 |= follow,
                    None => {
                        seen.insert(set.clone(), out.len());
                        out.push((set.clone(), follow));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_host::{full, no_kprobes, policy, TableHost};

    /// `path: message` of the error compiling `spec` on `host`.
    fn error(spec: &str, host: &TableHost) -> String {
        let e = compile(&policy(spec), host, CompileOptions::default()).expect_err("rejected");
        format!("{}: {e}", e.path())
    }

    #[test]
    fn missing_kernel_features_are_named() {
        let host = TableHost {
            features: KernelFeatures::default(),
            functions: None,
        };
        assert_eq!(
            error("  kprobes:\n  - call: tcp_connect\n", &host),
            "spec.kprobes[0].call: kprobe on \"tcp_connect\" needs kprobes, which are not supported by this kernel (no kprobe PMU: CONFIG_KPROBES is off); syscalls (syscall: true), tracepoints, and security_file_open/security_bprm_check work without them"
        );
        assert_eq!(
            error(
                "  tracepoints:\n  - {subsystem: sched, event: sched_process_exec, raw: true}\n",
                &host
            ),
            "spec.tracepoints[0]: raw tracepoints are not supported by this kernel"
        );
        assert_eq!(
            error(
                "  tracepoints:\n  - {subsystem: raw_syscalls, event: sys_enter}\n",
                &host
            ),
            "spec.tracepoints[0]: tracepoints are not supported by this kernel"
        );
        assert!(error("  lsmhooks:\n  - hook: file_open\n", &host).starts_with(
            "spec.lsmhooks[0]: BPF-LSM and fanotify permission events are not supported by this kernel"
        ));
        assert!(error("  lsmhooks:\n  - hook: path_mkdir\n", &no_kprobes()).starts_with(
            "spec.lsmhooks[0].hook: LSM hook \"path_mkdir\" needs BPF-LSM, which is not supported by this kernel or not active (boot with lsm=...,bpf)"
        ));
    }

    #[test]
    fn return_arg_without_return_is_ignored() {
        let spec = "  kprobes:\n  - call: security_bprm_check\n    args: [{index: 0, type: linux_binprm}]\n    returnArg: {index: 0, type: int}\n";
        let c = compile(&policy(spec), &full(), CompileOptions::default()).expect("loads");
        assert_eq!(
            c.hooks[0].attach,
            Attach::Kprobe {
                function: "security_bprm_check".into()
            }
        );
        assert_eq!(c.hooks[0].args.len(), 1);
    }

    #[test]
    fn nop_arguments_are_declared_but_not_read() {
        let spec = "  kprobes:\n  - call: security_bprm_creds_from_file\n    args:\n    - {index: 0, type: nop}\n    - {index: 1, type: file}\n    - {index: 2, type: int}\n    selectors:\n    - matchArgs:\n      - {index: 1, operator: Prefix, values: [/tmp/]}\n      - {args: [2], index: 0, operator: Equal, values: ['7']}\n";
        let c = compile(&policy(spec), &full(), CompileOptions::default()).expect("loads");
        let h = &c.hooks[0];
        let read: Vec<(ArgSource, ArgRead)> = h.args.iter().map(|a| (a.source, a.read)).collect();
        assert_eq!(
            read,
            [
                (ArgSource::Reg(1), ArgRead::File),
                (
                    ArgSource::Reg(2),
                    ArgRead::Int {
                        size: 4,
                        signed: true
                    }
                ),
            ]
        );
        let filters = &h.selectors[0].filters;
        assert!(matches!(filters[0], FilterPlan::ArgStr { arg: 0, .. }));
        assert!(matches!(filters[1], FilterPlan::ArgNum { arg: 1, .. }));

        let spec = "  kprobes:\n  - call: f\n    args: [{index: 0, type: nop}]\n    selectors:\n    - matchArgs: [{index: 0, operator: Equal, values: ['1']}]\n";
        let yaml = format!("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n{spec}");
        let e = crate::parse_documents(&yaml, "t.yaml").expect_err("nop is not filtered");
        assert!(e.to_string().contains("type nop"), "{e}");

        // The nop argument does not count against the cap of MAX_ARGS.
        let mut args = String::from("    - {index: 0, type: nop}\n");
        for i in 1..=MAX_ARGS {
            args.push_str(&format!("    - {{index: {}, type: int}}\n", i - 1));
        }
        let spec = format!("  kprobes:\n  - call: f\n    args:\n{args}");
        assert_eq!(
            compile(&policy(&spec), &full(), CompileOptions::default())
                .expect("six read")
                .hooks[0]
                .args
                .len(),
            MAX_ARGS
        );
    }

    #[test]
    fn syscall_hooks_report_the_wrapper_as_tetragon_does() {
        for call in ["sys_setuid", "__x64_sys_setuid"] {
            let spec = format!("  kprobes:\n  - call: {call}\n    syscall: true\n");
            let c =
                compile(&policy(&spec), &no_kprobes(), CompileOptions::default()).expect("loads");
            assert_eq!(c.hooks[0].attach, Attach::Syscall { nr: 105 });
            assert_eq!(c.hooks[0].function_name, "__x64_sys_setuid", "{call}");
        }
    }

    #[test]
    fn in_map_lists_resolve_on_the_host() {
        let spec = |values: &str, ty: &str| {
            format!(
                "  lists:\n  - {{name: calls, {ty}values: [{values}]}}\n  tracepoints:\n  - subsystem: raw_syscalls\n    event: sys_enter\n    args: [{{index: 4, type: syscall64}}]\n    selectors:\n    - matchArgs: [{{index: 0, operator: NotInMap, values: ['list:calls', '7']}}]\n"
            )
        };
        let c = compile(
            &policy(&spec("sys_dup, __x64_sys_dup2", "type: syscalls, ")),
            &no_kprobes(),
            CompileOptions::default(),
        )
        .expect("loads");
        assert_eq!(
            c.hooks[0].selectors[0].filters,
            [FilterPlan::ArgNum {
                arg: 0,
                signed: false,
                negate: true,
                entries: vec![(32, 64), (33, 64), (7, 64)],
            }]
        );
        let c = compile(
            &policy(&spec("'1', '0x10'", "")),
            &no_kprobes(),
            CompileOptions::default(),
        )
        .expect("loads");
        assert!(matches!(
            &c.hooks[0].selectors[0].filters[0],
            FilterPlan::ArgNum { entries, .. } if entries == &[(1, 64), (16, 64), (7, 64)]
        ));
        assert_eq!(
            error(&spec("sys_dup, __ia32_sys_dup", "type: syscalls, "), &no_kprobes()),
            "spec.lists[0].values[1]: 32-bit (ia32) syscalls are not supported: palisade matches the native syscall numbers that raw_syscalls reports; remove the __ia32_ entry"
        );
        assert_eq!(
            error(&spec("sys_nonesuch", "type: syscalls, "), &no_kprobes()),
            "spec.lists[0].values[0]: \"sys_nonesuch\" is not a syscall of this architecture"
        );
        let ftrace = "  lists:\n  - {name: calls, type: generated_ftrace, pattern: '^vfs_'}\n  tracepoints:\n  - subsystem: raw_syscalls\n    event: sys_enter\n    args: [{index: 4, type: syscall64}]\n    selectors:\n    - matchArgs: [{index: 0, operator: InMap, values: ['list:calls']}]\n";
        assert!(error(ftrace, &no_kprobes()).starts_with(
            "spec.tracepoints[0].selectors[0].matchArgs[0].values[0]: list \"calls\" names kernel functions"
        ));
    }

    #[test]
    fn override_on_a_security_function_runs_on_its_lsm_hook() {
        let host = TableHost {
            functions: Some(&[
                "security_inode_mkdir",
                "bpf_lsm_inode_mkdir",
                "security_bprm_check",
                "bpf_lsm_bprm_check_security",
                "security_path_mkdir",
            ]),
            ..full()
        };
        let spec = |call: &str, action: &str| {
            format!("  kprobes:\n  - call: {call}\n    selectors:\n    - matchActions: [{{action: {action}, argError: -1}}]\n")
        };
        let attach = |yaml: &str| {
            compile(&policy(yaml), &host, CompileOptions::default())
                .map(|c| (c.hooks[0].attach.clone(), c.hooks[0].kind))
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            attach(&spec("security_inode_mkdir", "Override")),
            Ok((
                Attach::Lsm {
                    hook: "inode_mkdir".into()
                },
                HookKind::Kprobe
            ))
        );
        assert_eq!(
            attach(&spec("security_bprm_check", "Override")),
            Ok((
                Attach::Lsm {
                    hook: "bprm_check_security".into()
                },
                HookKind::Kprobe
            ))
        );
        // Without Override the kprobe stays; without the LSM hook, Override
        // cannot be enforced.
        assert_eq!(
            attach(&spec("security_inode_mkdir", "Post")),
            Ok((
                Attach::Kprobe {
                    function: "security_inode_mkdir".into()
                },
                HookKind::Kprobe
            ))
        );
        assert!(attach(&spec("security_path_mkdir", "Override"))
            .is_err_and(|e| e.contains("Override at this hook")));
    }

    #[test]
    fn hooks_need_their_kernel_functions() {
        let host = TableHost {
            functions: Some(&["tcp_connect", "bpf_lsm_file_open"]),
            ..full()
        };
        let spec = "  kprobes:\n  - call: tcp_connect\n  - call: security_bpf_map_alloc\n";
        assert_eq!(
            error(spec, &host),
            "spec.kprobes[1].call: kernel function \"security_bpf_map_alloc\" does not exist on this kernel; check its name for this kernel version, or set ignore.callNotFound: true to skip the kprobe where it is missing"
        );
        let c = compile(
            &policy(&format!("{spec}    ignore: {{callNotFound: true}}\n")),
            &host,
            CompileOptions::default(),
        )
        .expect("the missing one is skipped");
        assert_eq!(c.hooks.len(), 1);
        assert_eq!(c.hooks[0].path, "spec.kprobes[0]");
        assert_eq!(
            c.warnings,
            ["spec.kprobes[1]: kernel function \"security_bpf_map_alloc\" does not exist on this kernel; kprobe skipped (ignore.callNotFound)"]
        );
        // Unknown symbols: the attach tells.
        assert!(compile(&policy(spec), &full(), CompileOptions::default()).is_ok());
        // Syscalls are numbers, not functions.
        let spec = "  kprobes:\n  - {call: sys_setuid, syscall: true}\n";
        assert!(compile(&policy(spec), &host, CompileOptions::default()).is_ok());

        let lsm = |hook: &str| format!("  lsmhooks:\n  - hook: {hook}\n");
        assert!(compile(&policy(&lsm("file_open")), &host, CompileOptions::default()).is_ok());
        assert_eq!(
            error(&lsm("bprm_check_security"), &host),
            "spec.lsmhooks[0].hook: LSM hook \"bprm_check_security\" does not exist on this kernel (no bpf_lsm_bprm_check_security); check its name for this kernel version"
        );
    }

    #[test]
    fn what_would_be_read_wrong_is_refused_what_events_lack_is_a_warning() {
        let spec = "  kprobes:\n  - call: sys_write\n    syscall: true\n    args:\n    - {index: 1, type: char_buf, sizeArgIndex: 3}\n    - {index: 2, type: size_t}\n";
        assert!(error(spec, &full()).starts_with(
            "spec.kprobes[0].args[0].sizeArgIndex: sized buffers (sizeArgIndex) are not supported: palisade reads char_buf as a NUL-terminated string"
        ));
        let spec = "  kprobes:\n  - call: tcp_connect\n    args: [{index: 0, type: int, resolve: sk_common.skc_family}]\n";
        assert!(error(spec, &full()).starts_with(
            "spec.kprobes[0].args[0].resolve: resolve (following fields of the argument through BTF) is not supported"
        ));
        let spec = "  lsmhooks:\n  - hook: bprm_check_security\n    selectors:\n    - matchActions:\n      - {action: Post, imaHash: true, kernelStackTrace: true}\n";
        let c = compile(&policy(spec), &full(), CompileOptions::default()).expect("loads");
        assert_eq!(
            c.warnings,
            [
                "spec.lsmhooks[0].selectors[0].matchActions[0].kernelStackTrace: palisade's events do not carry kernel stack traces; events are posted without them",
                "spec.lsmhooks[0].selectors[0].matchActions[0].imaHash: palisade's events do not carry IMA hashes; events are posted without them",
            ]
        );
    }

    #[test]
    fn unsupported_fields_are_named() {
        let spec = "  kprobes:\n  - call: tcp_connect\n    args: [{index: 0, type: string}]\n    selectors:\n    - matchArgs: [{index: 0, operator: SubString, values: [x]}]\n";
        assert!(error(spec, &full()).starts_with(
            "spec.kprobes[0].selectors[0].matchArgs[0].operator: operator SubString on a string argument is not supported: palisade's in-kernel selectors evaluate"
        ));
        let spec = "  kprobes:\n  - call: tcp_connect\n    selectors:\n    - matchCapabilityChanges: [{type: Effective, operator: In, values: [CAP_SYS_ADMIN]}]\n";
        assert_eq!(
            error(spec, &full()),
            "spec.kprobes[0].selectors[0].matchCapabilityChanges: matchCapabilityChanges is not supported by palisade yet"
        );
        let spec = "  kprobes:\n  - call: tcp_connect\n    return: true\n    returnArg: {index: 0, type: int}\n";
        assert_eq!(
            error(spec, &full()),
            "spec.kprobes[0].return: kretprobes are not supported: palisade does not hook function returns yet; remove return/returnArg"
        );
        let spec = "  loader: true\n  kprobes:\n  - call: tcp_connect\n";
        assert_eq!(
            error(spec, &full()),
            "spec.loader: loader events are not supported: remove spec.loader"
        );
    }

    #[test]
    fn ranges_cover_exactly() {
        for (lo, hi) in [
            (0u64, 0u64),
            (1, 1),
            (0, 65535),
            (3, 17),
            (1024, 65535),
            (5, 4096),
            (u64::MAX - 3, u64::MAX),
        ] {
            let p = range_prefixes(lo, hi);
            let covers = |v: u64| {
                p.iter().any(|&(base, bits)| {
                    let mask = if bits == 0 {
                        0
                    } else {
                        u64::MAX << (64 - bits)
                    };
                    v & mask == base & mask
                })
            };
            for v in [
                lo,
                hi,
                lo.saturating_sub(1),
                hi.saturating_add(1),
                (lo / 2 + hi / 2),
            ] {
                assert_eq!(covers(v), v >= lo && v <= hi, "{lo}..={hi} at {v}: {p:?}");
            }
        }
        assert_eq!(range_prefixes(0, u64::MAX), vec![(0, 0)]);
    }

    #[test]
    fn signed_keys_keep_order() {
        assert!(key_of(-1, true) < key_of(0, true));
        assert!(key_of(-100, true) < key_of(-1, true));
        assert!(key_of(1, true) > key_of(0, true));
        assert_eq!(key_of(5, false), 5);
    }

    struct TestHost;

    impl Host for TestHost {
        fn features(&self) -> KernelFeatures {
            KernelFeatures {
                tracepoints: true,
                raw_tracepoints: true,
                kprobes: true,
                fentry: true,
                lsm: true,
                fanotify: true,
            }
        }
        fn syscall_number(&self, name: &str) -> Option<u32> {
            (name == "connect").then_some(42)
        }
        fn tracepoint_format(&self, _: &str, _: &str) -> Result<Vec<TpField>, String> {
            Err("none".into())
        }
        fn host_namespace(&self, _: NamespaceKind) -> Option<u64> {
            None
        }
        fn kernel_functions(&self, names: &BTreeSet<String>) -> Option<BTreeSet<String>> {
            Some(names.clone())
        }
    }

    /// The args and first selector's filters of the policy's first hook;
    /// a parse, validation or compile error as text.
    fn filters_of(yaml: &str) -> Result<(Vec<ArgPlan>, Vec<FilterPlan>), String> {
        let doc = crate::parse_documents(yaml, "test")
            .map_err(|e| e.to_string())?
            .remove(0);
        let mut c =
            compile(&doc, &TestHost, CompileOptions::default()).map_err(|e| e.to_string())?;
        let hook = c.hooks.remove(0);
        Ok((hook.args, hook.selectors[0].filters.clone()))
    }

    fn sock_policy(call: &str, syscall: bool, args: &str, match_args: &str) -> String {
        format!(
            "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n  kprobes:\n  - call: {call}\n    syscall: {syscall}\n    args:\n{args}    selectors:\n    - matchArgs:\n{match_args}"
        )
    }

    #[test]
    fn sockaddr_filters_at_syscall_entry() {
        let y = sock_policy(
            "sys_connect",
            true,
            "    - {index: 0, type: int}\n    - {index: 1, type: sockaddr}\n",
            "      - {index: 1, operator: SAddr, values: [\"127.0.0.0/8\", \"::1\"]}\n      - {index: 1, operator: NotSPort, values: [\"80\", \"8000:8001\"]}\n      - {index: 1, operator: SPortPriv}\n      - {index: 1, operator: Family, values: [AF_INET, \"10\"]}\n",
        );
        let (args, filters) = filters_of(&y).expect("compiles");
        assert_eq!(args[1].read, ArgRead::Sockaddr);
        assert_eq!(args[1].source, ArgSource::Syscall(1));
        let v4: std::net::IpAddr = "127.0.0.0".parse().expect("ip");
        let v6: std::net::IpAddr = "::1".parse().expect("ip");
        assert_eq!(
            filters,
            vec![
                FilterPlan::SockAddr {
                    arg: 1,
                    dst: false,
                    negate: false,
                    prefixes: vec![(v4, 8), (v6, 128)],
                },
                FilterPlan::SockPort {
                    arg: 1,
                    dst: false,
                    negate: true,
                    entries: vec![(80, 64), (8000, 63)],
                },
                FilterPlan::SockPortPriv {
                    arg: 1,
                    dst: false,
                    negate: false,
                },
                FilterPlan::SockField {
                    arg: 1,
                    field: SockField::Family,
                    entries: vec![(2, 64), (10, 64)],
                },
            ]
        );
    }

    #[test]
    fn sockaddr_has_no_destination() {
        let y = sock_policy(
            "sys_connect",
            true,
            "    - {index: 1, type: sockaddr}\n",
            "      - {index: 1, operator: DPort, values: [\"80\"]}\n",
        );
        let e = filters_of(&y).expect_err("DPort on sockaddr");
        assert!(e.contains("matchArgs[0]"), "{e}");
    }

    #[test]
    fn sock_and_skb_filters_on_kprobes() {
        let y = sock_policy(
            "tcp_connect",
            false,
            "    - {index: 0, type: sock}\n",
            "      - {index: 0, operator: NotDAddr, values: [\"10.0.0.0/8\"]}\n      - {index: 0, operator: DPort, values: [\"443\"]}\n      - {index: 0, operator: Protocol, values: [IPPROTO_TCP]}\n      - {index: 0, operator: State, values: [TCP_SYN_SENT]}\n      - {index: 0, operator: NotDPortPriv}\n",
        );
        let (args, filters) = filters_of(&y).expect("compiles");
        assert_eq!(args[0].read, ArgRead::Sock);
        assert_eq!(args[0].source, ArgSource::Reg(0));
        assert!(matches!(
            &filters[0],
            FilterPlan::SockAddr { dst: true, negate: true, prefixes, .. } if prefixes.len() == 1
        ));
        assert!(matches!(
            &filters[1],
            FilterPlan::SockPort { dst: true, negate: false, entries, .. } if entries == &[(443, 64)]
        ));
        assert_eq!(
            filters[2],
            FilterPlan::SockField {
                arg: 0,
                field: SockField::Protocol,
                entries: vec![(6, 64)],
            }
        );
        assert_eq!(
            filters[3],
            FilterPlan::SockField {
                arg: 0,
                field: SockField::State,
                entries: vec![(2, 64)],
            }
        );
        assert_eq!(
            filters[4],
            FilterPlan::SockPortPriv {
                arg: 0,
                dst: true,
                negate: true,
            }
        );
        let y = sock_policy(
            "ip_output",
            false,
            "    - {index: 2, type: skb}\n",
            "      - {index: 2, operator: SAddr, values: [\"fd00::/8\"]}\n",
        );
        let (args, _) = filters_of(&y).expect("compiles");
        assert_eq!(args[0].read, ArgRead::Skb);
    }

    #[test]
    fn syscall_names() {
        assert_eq!(syscall_name("sys_setuid"), "setuid");
        assert_eq!(syscall_name("__x64_sys_mount"), "mount");
        assert_eq!(syscall_name("setuid"), "setuid");
    }
}
