//! The compiler from a validated [`TracingPolicy`] to an enforcement plan:
//! for each hook, the mechanism that runs it on this kernel, where its
//! arguments come from, and its selectors as filters over value sets (the
//! form the in-kernel evaluator reads from maps).
//!
//! Mechanisms, best first:
//! - syscall kprobes (`syscall: true`) run on `raw_syscalls:sys_enter`,
//!   filtered by syscall number in the kernel: no kprobe needed;
//! - tracepoints and raw tracepoints run as themselves;
//! - other kprobes need kprobes; LSM hooks need BPF-LSM;
//! - `security_file_open`/`file_open` and `security_bprm_check`/
//!   `bprm_check_security` run on fanotify permission events when the
//!   kernel lacks the BPF mechanism, so that `Override` still denies.
//!
//! A hook that cannot be enforced as written is an error naming the YAML
//! path and the missing kernel feature, unless the operator allows the
//! monitoring fallback (the hook is then loaded with its actions reported,
//! not carried out, and a warning says so).

use std::collections::BTreeMap;

use crate::model::{
    ActionKind, ActionSelector, ArgClass, ArgOperator, ArgSelector, ArgType, BinaryOperator,
    CapabilitySet, KProbeArg, NamespaceKind, RateLimitScope, Selector, SetOperator, TracingPolicy,
};
use crate::tpformat::TpField;
use crate::validate::{parse_rate_limit, policy_mode, PolicyMode};
use crate::values::{
    capability_bit, parse_int, parse_named, Cidr, IntSyntax, IntType, NamedKind, PortRange,
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
    /// `raw_syscalls:sys_enter`, syscall `nr`.
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

fn unsupported(
    path: String,
    feature: impl Into<String>,
    hint: impl Into<String>,
) -> ValidationError {
    ValidationError::Unsupported {
        path,
        feature: feature.into(),
        hint: hint.into(),
    }
}

fn invalid(path: String, reason: impl Into<String>) -> ValidationError {
    ValidationError::Invalid {
        path,
        reason: reason.into(),
    }
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
            path.into(),
            "pod and container selectors are",
            ": palisade's tracing policies apply node-wide; narrow them with matchNamespaces or matchBinaries",
        ));
    }
    for (i, k) in spec.kprobes.iter().enumerate() {
        let path = format!("spec.kprobes[{i}]");
        let (attach, kind, name) = kprobe_attach(&path, &k.call, k.syscall, host, feats)?;
        if k.r#return || k.return_arg.is_some() {
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
                return Err(unsupported(
                    path,
                    "raw tracepoints are",
                    " not available on this kernel",
                ));
            }
            (
                Attach::RawTracepoint {
                    event: t.event.clone(),
                },
                None,
            )
        } else {
            if !feats.tracepoints {
                return Err(unsupported(
                    path,
                    "tracepoints are",
                    " not available on this kernel",
                ));
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
            Attach::Lsm {
                hook: l.hook.clone(),
            }
        } else if let Some(access) = fanotify_access(&l.hook) {
            if !feats.fanotify {
                return Err(unsupported(
                    path,
                    "BPF-LSM and fanotify are",
                    " both unavailable on this kernel",
                ));
            }
            Attach::Fanotify { access }
        } else {
            return Err(unsupported(
                format!("{path}.hook"),
                format!("LSM hook {:?} needs BPF-LSM, which is", l.hook),
                " not active on this kernel (boot with lsm=...,bpf); without it palisade enforces only file_open and bprm_check_security (through fanotify)",
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
                selectors: &l.selectors,
                message: &l.message,
                tags: &l.tags,
            },
            &env,
            &mut out.warnings,
        )?;
        out.hooks.push(hook);
    }
    if let Some(u) = spec.uprobes.first() {
        return Err(unsupported(
            "spec.uprobes[0]".into(),
            "uprobes are",
            format!(" ({})", u.path),
        ));
    }
    if !spec.usdts.is_empty() {
        return Err(unsupported("spec.usdts[0]".into(), "USDTs are", ""));
    }
    if !spec.enforcers.is_empty() {
        return Err(unsupported(
            "spec.enforcers".into(),
            "syscall enforcers are",
            ": use Sigkill, or Override on an LSM hook",
        ));
    }
    if spec.loader {
        return Err(unsupported("spec.loader".into(), "loader events are", ""));
    }
    Ok(out)
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
        return Ok((Attach::Syscall { nr }, HookKind::Kprobe, call.to_owned()));
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
        " not available on this kernel (CONFIG_KPROBES is off); syscalls (syscall: true), tracepoints, and security_file_open/security_bprm_check work without them",
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
    if decls.len() > MAX_ARGS {
        return Err(invalid(
            format!("{path}.args"),
            format!(
                "{} args declared; palisade reads at most {MAX_ARGS} per hook",
                decls.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(decls.len());
    for (i, a) in decls.iter().enumerate() {
        let ap = format!("{path}.args[{i}]");
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
    selectors: &'a [Selector],
    message: &'a str,
    tags: &'a [String],
}

/// What every hook of a policy is compiled with.
struct Env<'a> {
    mode: PolicyMode,
    host: &'a dyn Host,
    options: CompileOptions,
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
        selectors,
        message,
        tags,
    } = d;
    let (host, options) = (env.host, env.options);
    let mut monitor = env.mode == PolicyMode::Monitor;
    let fanotify = matches!(attach, Attach::Fanotify { .. });
    let mut plans = Vec::with_capacity(selectors.len().max(1));
    for (si, sel) in selectors.iter().enumerate() {
        let sp = format!("{path}.selectors[{si}]");
        let filters = if fanotify {
            vec![FilterPlan::True]
        } else {
            plan_filters(
                &sp,
                sel,
                &args,
                matches!(attach, Attach::Tracepoint { .. }),
                host,
            )?
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

/// The position in `args` a matchArgs entry refers to (validated before).
fn arg_position(m: &ArgSelector, args: &[ArgPlan], tracepoint: bool) -> Option<usize> {
    if let Some(&pos) = m.args.first() {
        return Some(pos as usize);
    }
    args.iter()
        .position(|a| a.decl.index == m.index)
        .or_else(|| {
            tracepoint
                .then_some(m.index as usize)
                .filter(|&p| p < args.len())
        })
}

fn plan_filters(
    sp: &str,
    sel: &Selector,
    args: &[ArgPlan],
    tracepoint: bool,
    host: &dyn Host,
) -> Result<Vec<FilterPlan>, ValidationError> {
    let mut out = Vec::new();
    for (i, m) in sel.match_args.iter().enumerate() {
        let mp = format!("{sp}.matchArgs[{i}]");
        let pos = arg_position(m, args, tracepoint).ok_or_else(|| {
            invalid(
                format!("{mp}.index"),
                "does not refer to a declared argument",
            )
        })?;
        out.push(arg_filter(&mp, m, pos, &args[pos])?);
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
                "",
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
            let inum = if v.as_str() == "host_ns" {
                host.host_namespace(n.namespace).ok_or_else(|| {
                    invalid(
                        format!("{np}.values[{k}]"),
                        format!(
                            "the host's {:?} namespace is unknown on this kernel",
                            n.namespace
                        ),
                    )
                })?
            } else {
                v.as_str().parse::<u64>().map_err(|_| {
                    invalid(
                        format!("{np}.values[{k}]"),
                        format!(
                            "{:?} is not a namespace inode number or host_ns",
                            v.as_str()
                        ),
                    )
                })?
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
                "",
            ));
        }
        let mut mask = 0u64;
        for (k, v) in c.values.iter().enumerate() {
            mask |= capability_bit(v).map_err(|e| invalid(format!("{cp}.values[{k}]"), e))?;
        }
        out.push(FilterPlan::Caps {
            set: c.r#type,
            negate: c.operator == SetOperator::NotIn,
            mask,
        });
    }
    let unsupported_list = [
        (
            "matchReturnArgs",
            !sel.match_return_args.is_empty(),
            "needs kretprobes",
        ),
        (
            "matchReturnActions",
            !sel.match_return_actions.is_empty(),
            "needs kretprobes",
        ),
        (
            "matchNamespaceChanges",
            !sel.match_namespace_changes.is_empty(),
            "is not implemented",
        ),
        (
            "matchCapabilityChanges",
            !sel.match_capability_changes.is_empty(),
            "is not implemented",
        ),
    ];
    for (field, present, why) in unsupported_list {
        if present {
            return Err(unsupported(
                format!("{sp}.{field}"),
                format!("{field} is"),
                format!(" ({why} in palisade)"),
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

fn binary_set(op: BinaryOperator, values: &[String]) -> (BinarySet, bool) {
    let (kind, negate) = match op {
        BinaryOperator::In => (BinaryMatch::Exact, false),
        BinaryOperator::NotIn => (BinaryMatch::Exact, true),
        BinaryOperator::Prefix => (BinaryMatch::Prefix, false),
        BinaryOperator::NotPrefix => (BinaryMatch::Prefix, true),
        BinaryOperator::Postfix => (BinaryMatch::Postfix, false),
        BinaryOperator::NotPostfix => (BinaryMatch::Postfix, true),
    };
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
    let int_of = |k: usize, v: &str| -> Result<i128, ValidationError> {
        let ty = IntType::of(class).unwrap_or(IntType {
            bits: 64,
            signed: false,
        });
        parse_int(v, ty, syntax).map_err(|e| invalid(format!("{mp}.values[{k}]"), e))
    };
    let ints = |allow_ranges: bool| -> Result<NumEntries, ValidationError> {
        let mut entries = Vec::new();
        for (k, v) in values.iter().enumerate() {
            match v.split_once(':') {
                Some((lo, hi)) if allow_ranges => {
                    let (lo, hi) = (int_of(k, lo)?, int_of(k, hi)?);
                    entries.extend(range_prefixes(key_of(lo, signed), key_of(hi, signed)));
                }
                _ => entries.push((key_of(int_of(k, v)?, signed), 64)),
            }
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
            entries: ints(false)?,
        },
        O::InMap | O::NotInMap | O::InRange | O::NotInRange if !text => FilterPlan::ArgNum {
            arg: a,
            signed,
            negate: matches!(m.operator, O::NotInMap | O::NotInRange),
            entries: ints(true)?,
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
                " not evaluated by palisade's in-kernel selectors (string: Equal, Prefix, Postfix and Not-forms; integer: Equal, InMap, InRange, GT, LT, Mask and Not-forms)",
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
    // Parses every value with `f`, naming the failing one.
    fn each<T>(
        mp: &str,
        m: &ArgSelector,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ValidationError> {
        m.values
            .iter()
            .enumerate()
            .map(|(k, v)| f(v.as_str()).map_err(|e| invalid(format!("{mp}.values[{k}]"), e)))
            .collect()
    }
    let named = |kind: NamedKind| -> Result<NumEntries, ValidationError> {
        Ok(each(mp, m, |v| parse_named(v, kind))?
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
            entries: each(mp, m, str::parse::<PortRange>)?
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
            prefixes: each(mp, m, str::parse::<Cidr>)?
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

    fn policy(call: &str, syscall: bool, args: &str, match_args: &str) -> String {
        format!(
            "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n  kprobes:\n  - call: {call}\n    syscall: {syscall}\n    args:\n{args}    selectors:\n    - matchArgs:\n{match_args}"
        )
    }

    #[test]
    fn sockaddr_filters_at_syscall_entry() {
        let y = policy(
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
        let y = policy(
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
        let y = policy(
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
        let y = policy(
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
