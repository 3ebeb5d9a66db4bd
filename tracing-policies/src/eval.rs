//! The reference selector evaluator: Tetragon's selector semantics over
//! plain data.
//!
//! [`CompiledSelectors::new`] checks and compiles the selectors of one hook
//! once (integers, ranges, CIDRs, ports, capability masks are parsed here);
//! [`CompiledSelectors::evaluate`] decides which selector matches a
//! [`Context`] and which actions apply. The evaluator is pure: the caller
//! gathers the process, its ancestors and the argument values. It serves the
//! agent's userspace enforcement (fanotify) and is the oracle the in-kernel
//! evaluator is tested against.
//!
//! # Semantics (Tetragon's, `docs/.../tracing-policy/selectors.md`)
//!
//! - Selectors are ORed, in order: the first matching selector decides and
//!   its `matchActions` apply; a matching selector without `matchActions`
//!   means `Post`; a hook without selectors always matches with `Post`;
//!   when no selector matches there is no event and no action.
//! - Within a selector every filter kind, and every entry of each filter
//!   list, is ANDed. Within one entry the values are ORed: an `In`-style
//!   entry matches when any value matches, a `Not`-style entry when none
//!   does.
//! - An argument the probe could not read ([`ArgValue::Missing`], or a value
//!   of the wrong kind) fails every entry on it, `Not` operators included
//!   (`selector_arg_offset` in `bpf/process/types/basic.h` rejects when
//!   `!is_arg_ok`).
//! - Path-typed arguments (`fd`, `file`, `path`, `dentry`, `linux_binprm`)
//!   with an empty path (unnamed pipes, sockets) fail every string entry,
//!   `Not` operators included (`filter_file_buf`); other strings with
//!   `Not*` operators match. `Prefix`/`Postfix` never match an empty string.
//! - `matchBinaries` fails when the process's binary is unknown (empty);
//!   `matchParentBinaries` is skipped when the parent is unknown (no
//!   ancestors), as Tetragon skips it without a parents-map entry
//!   (`selector_process_filter` in `bpf/process/pfilter.h`).
//! - `followChildren` (`matchBinaries`, `matchParentBinaries`) also counts
//!   a match of any ancestor's binary; `followForks` (`matchPIDs`) any
//!   ancestor's pid. The caller supplies the ancestors Tetragon would know:
//!   those seen since the policy was loaded.
//! - `isNamespacePID` compares the pid in the process's own pid namespace
//!   ([`Process::ns_pid`]; 0 means unknown and fails the entry).
//! - `matchNamespaces` value `host_ns` is the host's namespace of that kind
//!   ([`Context::host_namespaces`]). `matchCapabilities` with
//!   `isNamespaceCapability` only matches processes outside the host user
//!   namespace.
//! - `matchNamespaceChanges`/`matchCapabilityChanges` compare with the
//!   namespaces/capabilities recorded at exec ([`Process::exec_namespaces`],
//!   [`Process::exec_capabilities`]); without a record the entry fails.
//!   Tetragon then updates its record; here that is the caller's job.
//! - `matchReturnArgs`/`matchReturnActions` are evaluated separately, at the
//!   return of the call ([`CompiledSelectors::evaluate_return`]).
//!
//! # Where palisade deliberately differs from Tetragon
//!
//! Tetragon's limits come from BPF; palisade compares whole values:
//! - Strings are compared whole: Tetragon's `Equal` never matches strings
//!   over 4094 bytes, `Prefix` looks at the first 255 bytes and `Postfix` at
//!   the last 127 (`filter_char_buf_*`); values within those limits give
//!   identical results. No limits on value counts (Tetragon: 4 values, 5
//!   `matchArgs`, one `matchBinaries`, one `matchPIDs` and one
//!   `matchCapabilities` entry evaluated per selector, 10 ancestors for
//!   `followForks`).
//! - Integers compare at the declared type's width and signedness: Tetragon
//!   compares `size_t` on its low 32 bits (`filter_32ty`), compares `int8`
//!   and `int16` unsigned in `GT`/`LT`/`InRange` (`is_signed_type` knows only
//!   32/64-bit types), and never matches negative `InMap` values on 32-bit
//!   signed types (the map key is zero-extended).
//! - A `matchArgs` `index` on a tracepoint names the declared arg with that
//!   `index`, else the arg at that position; Tetragon's in-place rewrite
//!   (`pkg/sensors/tracing/generictracepoint.go`, `InitKernelSelectors`) can
//!   chain two rewrites when declared indexes are permuted.
//! - `followChildren` is accepted with every binary operator (Tetragon:
//!   `In`/`NotIn` only); `Postfix` on `sockaddr_un` compares (Tetragon
//!   accepts it but never matches); `filename` args are compared (Tetragon
//!   ignores filters on them).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::compile::BinaryMatch;
use crate::model::{
    ActionKind, ActionSelector, ArgClass, ArgOperator, ArgSelector, ArgType, BinarySelector,
    CapabilitiesSelector, CapabilitySet, KProbeArg, ListType, NamespaceKind, Selector, SetOperator,
    TracingPolicy,
};
use crate::validate::{
    each_value, invalid, nonempty_capped, resolve_arg, unsupported, ValidationError,
};
use crate::values::{
    capability_bit, parse_file_type, parse_int, parse_map_value, parse_named,
    parse_namespace_value, parse_range, Cidr, IntRange, IntSyntax, IntType, NamedKind, PortRange,
};

// ---------------------------------------------------------------------------
// The context: plain data about one call.
// ---------------------------------------------------------------------------

/// The value of one declared argument at the hook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ArgValue {
    /// The probe could not read it: every filter on it fails.
    #[default]
    Missing,
    /// A signed integer (read at the declared type's width).
    Signed(i64),
    /// An unsigned integer (read at the declared type's width).
    Unsigned(u64),
    /// A string or buffer without a terminating NUL (`string`, `char_buf`,
    /// `filename`, `data_loc`, `net_device`), or a path when its file mode
    /// is unknown.
    Text(Vec<u8>),
    /// A resolved path (`file`, `fd`, `path`, `dentry`, `linux_binprm`) and
    /// the inode's `st_mode` (0 when unknown: no `FileType` matches).
    File {
        /// Absolute path as `d_path` gives it; empty for unnamed files.
        path: Vec<u8>,
        /// `st_mode` of the inode.
        mode: u32,
    },
    /// A socket, skb or `sockaddr`.
    Sock(Sock),
    /// A `sockaddr_un`.
    UnixAddr {
        /// `sun_family`.
        family: u16,
        /// `sun_path`.
        path: Vec<u8>,
    },
    /// A capability set (`kernel_cap_t`, `cap_*`).
    CapSet(u64),
}

/// The address tuple of a socket, skb or `sockaddr` argument.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sock {
    /// Address family (`AF_INET` is 2).
    pub family: u16,
    /// IP protocol (`IPPROTO_TCP` is 6).
    pub protocol: u16,
    /// Source (local) address; `None` for non-IP families (address
    /// filters then fail, `Not` forms included, as in Tetragon).
    pub saddr: Option<IpAddr>,
    /// Destination (peer) address.
    pub daddr: Option<IpAddr>,
    /// Source port (host order).
    pub sport: u16,
    /// Destination port (host order).
    pub dport: u16,
    /// TCP state (sockets only; `None` for skbs and `sockaddr`).
    pub state: Option<u8>,
}

/// Namespace inode numbers by kind (0: unknown or not supported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Namespaces([u32; 10]);

impl Namespaces {
    /// The inode number of the namespace of `kind`.
    pub fn get(&self, kind: NamespaceKind) -> u32 {
        self.0[ns_index(kind)]
    }

    /// Sets the inode number of the namespace of `kind`.
    pub fn set(&mut self, kind: NamespaceKind, inode: u32) {
        self.0[ns_index(kind)] = inode;
    }

    /// The same namespaces with `kind` set to `inode`.
    pub fn with(mut self, kind: NamespaceKind, inode: u32) -> Self {
        self.set(kind, inode);
        self
    }
}

fn ns_index(kind: NamespaceKind) -> usize {
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

/// The capability sets of a process (bit `n` is capability `n`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
}

impl Capabilities {
    fn get(&self, set: CapabilitySet) -> u64 {
        match set {
            CapabilitySet::Effective => self.effective,
            CapabilitySet::Permitted => self.permitted,
            CapabilitySet::Inheritable => self.inheritable,
        }
    }
}

/// The process that made the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// Process id (tgid) in the host pid namespace.
    pub pid: u32,
    /// Process id in its own pid namespace (0: unknown).
    pub ns_pid: u32,
    /// Executable path (empty: unknown, every `matchBinaries` entry fails).
    pub binary: Vec<u8>,
    /// Current namespaces.
    pub namespaces: Namespaces,
    /// Current capabilities.
    pub capabilities: Capabilities,
    /// Namespaces recorded at exec (for `matchNamespaceChanges`).
    pub exec_namespaces: Option<Namespaces>,
    /// Capabilities recorded at exec (for `matchCapabilityChanges`).
    pub exec_capabilities: Option<Capabilities>,
}

/// An ancestor of the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ancestor {
    /// Process id in the host pid namespace.
    pub pid: u32,
    /// Process id in its own pid namespace (0: unknown).
    pub ns_pid: u32,
    /// Executable path (empty: unknown, matches no value).
    pub binary: Vec<u8>,
}

/// Everything a selector can look at for one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// Argument values, aligned with the hook's declared `args` (missing
    /// trailing entries read as [`ArgValue::Missing`]).
    pub args: Vec<ArgValue>,
    /// The return value, for [`CompiledSelectors::evaluate_return`].
    pub return_value: ArgValue,
    /// The calling process.
    pub process: Process,
    /// Its ancestors, parent first (empty: the parent is unknown).
    pub ancestors: Vec<Ancestor>,
    /// The host's namespaces (`host_ns`, `isNamespaceCapability`).
    pub host_namespaces: Namespaces,
}

// ---------------------------------------------------------------------------
// Hooks and lists: what a compilation needs.
// ---------------------------------------------------------------------------

/// One hook's declarations, as the compiler needs them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hook<'a> {
    /// YAML path of the hook (`spec.kprobes[0]`), prefix of error paths.
    pub path: &'a str,
    /// Declared arguments.
    pub args: &'a [KProbeArg],
    /// The return value's declaration (kprobes with `return: true`).
    pub return_arg: Option<&'a KProbeArg>,
    /// The selectors.
    pub selectors: &'a [Selector],
    /// A tracepoint (`matchArgs` `index` may name a position).
    pub tracepoint: bool,
}

/// A hook of a policy with its YAML path.
#[derive(Debug, Clone)]
pub struct PolicyHook<'a> {
    /// YAML path of the hook (`spec.lsmhooks[1]`).
    pub path: String,
    /// Function, `SUBSYSTEM/EVENT` or LSM hook name.
    pub name: &'a str,
    /// Declared arguments.
    pub args: &'a [KProbeArg],
    /// The return value's declaration (kprobes with `return: true`).
    pub return_arg: Option<&'a KProbeArg>,
    /// The selectors.
    pub selectors: &'a [Selector],
    /// A tracepoint.
    pub tracepoint: bool,
}

impl PolicyHook<'_> {
    /// The hook as [`CompiledSelectors::new`] takes it.
    pub fn hook(&self) -> Hook<'_> {
        Hook {
            path: &self.path,
            args: self.args,
            return_arg: self.return_arg,
            selectors: self.selectors,
            tracepoint: self.tracepoint,
        }
    }
}

/// Every hook of a policy: kprobes, tracepoints, then LSM hooks.
pub fn hooks(policy: &TracingPolicy) -> Vec<PolicyHook<'_>> {
    let spec = &policy.spec;
    let mut out = Vec::new();
    for (i, k) in spec.kprobes.iter().enumerate() {
        out.push(PolicyHook {
            path: format!("spec.kprobes[{i}]"),
            name: &k.call,
            args: &k.args,
            return_arg: if k.r#return {
                k.return_arg.as_ref()
            } else {
                None
            },
            selectors: &k.selectors,
            tracepoint: false,
        });
    }
    for (i, t) in spec.tracepoints.iter().enumerate() {
        out.push(PolicyHook {
            path: format!("spec.tracepoints[{i}]"),
            name: &t.event,
            args: &t.args,
            return_arg: None,
            selectors: &t.selectors,
            tracepoint: true,
        });
    }
    for (i, l) in spec.lsm_hooks.iter().enumerate() {
        out.push(PolicyHook {
            path: format!("spec.lsmhooks[{i}]"),
            name: &l.hook,
            args: &l.args,
            return_arg: None,
            selectors: &l.selectors,
            tracepoint: false,
        });
    }
    out
}

/// Where `InMap`/`NotInMap` values `list:NAME` come from.
pub trait ListSource {
    /// The integer values of list `name`, or what is wrong (phrased to
    /// follow the value, e.g. "list \"x\" is not declared; ...").
    fn integers(&self, name: &str) -> Result<Vec<u64>, String>;
}

/// Lists resolved to integers by the caller (syscall names to numbers for
/// the running kernel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedLists(BTreeMap<String, Vec<u64>>);

impl ResolvedLists {
    /// No lists.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) list `name`.
    pub fn insert(&mut self, name: impl Into<String>, values: Vec<u64>) {
        self.0.insert(name.into(), values);
    }

    /// Resolves the lists of a policy: plain lists (no `type`) as integers
    /// (decimal or `0x` hex), `syscalls` lists through `syscall`, which maps
    /// a name (`sys_dup`, `__ia32_sys_dup`) to the number the probe reports.
    /// Generated lists are left out (they name functions, not values).
    pub fn from_policy(
        policy: &TracingPolicy,
        syscall: &dyn Fn(&str) -> Option<u64>,
    ) -> Result<Self, ValidationError> {
        let mut out = Self::new();
        for (i, l) in policy.spec.lists.iter().enumerate() {
            let mut values = Vec::with_capacity(l.values.len());
            for (j, v) in l.values.iter().enumerate() {
                let at = format!("spec.lists[{i}].values[{j}]");
                let n = match l.r#type {
                    None => crate::values::parse_literal(v, IntSyntax::Map)
                        .ok()
                        .and_then(|n| u64::try_from(n).ok())
                        .ok_or_else(|| {
                            invalid(&at, format!("{v:?} is not a non-negative integer"))
                        })?,
                    Some(ListType::Syscalls) => syscall(v).ok_or_else(|| {
                        invalid(&at, format!("unknown syscall {v:?} on this kernel"))
                    })?,
                    Some(ListType::GeneratedSyscalls | ListType::GeneratedFtrace) => break,
                };
                values.push(n);
            }
            if matches!(l.r#type, None | Some(ListType::Syscalls)) {
                out.insert(l.name.clone(), values);
            }
        }
        Ok(out)
    }
}

impl ListSource for ResolvedLists {
    fn integers(&self, name: &str) -> Result<Vec<u64>, String> {
        self.0.get(name).cloned().ok_or_else(|| {
            format!(
                "list {name:?} has no integer values; InMap needs a syscalls list or a list of integers"
            )
        })
    }
}

// ---------------------------------------------------------------------------
// Compiled filters.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub(crate) struct ArgFilter {
    /// Position in the declared args.
    pos: usize,
    test: ArgTest,
}

#[derive(Debug, Clone)]
enum ArgTest {
    Int {
        ty: IntType,
        op: IntOp,
    },
    Text(TextTest),
    FileType {
        modes: Vec<u32>,
        negate: bool,
    },
    Port {
        dst: bool,
        ranges: Vec<PortRange>,
        negate: bool,
    },
    PortPriv {
        dst: bool,
        negate: bool,
    },
    Addr {
        dst: bool,
        cidrs: Vec<Cidr>,
        negate: bool,
    },
    Named {
        kind: NamedKind,
        ranges: Vec<(u32, u32)>,
    },
    CapsGained {
        new_pos: usize,
    },
}

#[derive(Debug, Clone)]
enum IntOp {
    Eq(Vec<i128>),
    Neq(Vec<i128>),
    Gt(Vec<i128>),
    Lt(Vec<i128>),
    Mask(u64),
    InRange(Vec<IntRange>),
    NotInRange(Vec<IntRange>),
    InMap(Vec<IntRange>),
    NotInMap(Vec<IntRange>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextOp {
    Equal,
    Prefix,
    Postfix,
    SubString,
    SubStringIgnCase,
}

#[derive(Debug, Clone)]
struct TextTest {
    op: TextOp,
    values: Vec<Vec<u8>>,
    negate: bool,
    /// `fd`/`file`/`path`/`dentry`/`linux_binprm`: empty fails everything.
    path_like: bool,
}

fn is_path_type(ty: ArgType) -> bool {
    matches!(
        ty,
        ArgType::Fd | ArgType::File | ArgType::Path | ArgType::Dentry | ArgType::LinuxBinprm
    )
}

fn suggestion(class: ArgClass) -> &'static str {
    match class {
        ArgClass::Signed(_) | ArgClass::Unsigned(_) => {
            "integers take Equal, NotEqual, GT, LT, Mask, InRange, NotInRange, InMap, NotInMap"
        }
        ArgClass::Text => "strings and paths take Equal, NotEqual, Prefix, NotPrefix, Postfix, NotPostfix, SubString",
        ArgClass::Socket => "sockets take SPort, DPort, SAddr, DAddr, Protocol, Family, State and their Not/Priv forms",
        ArgClass::SockAddr => "sockaddr takes SAddr, SPort, SPortPriv, Family and their Not forms",
        ArgClass::SockAddrUn => "sockaddr_un takes Family, Equal, NotEqual, Prefix, NotPrefix",
        ArgClass::CapSet => "capability sets take CapabilitiesGained",
        ArgClass::Opaque => "this type is reported only and cannot be filtered",
    }
}

/// Checks and compiles one `matchArgs`/`matchReturnArgs` entry at YAML path
/// `mp` against the declared `args` (`what` names them in errors).
pub(crate) fn compile_arg(
    mp: &str,
    m: &ArgSelector,
    args: &[KProbeArg],
    what: &str,
    tracepoint: bool,
    lists: &dyn ListSource,
) -> Result<ArgFilter, ValidationError> {
    use ArgOperator as O;
    if m.operator == O::CelExpr {
        return Err(unsupported(
            format!("{mp}.operator"),
            "the CelExpr operator is",
            ": use the typed operators (Equal, Prefix, GT, ...)",
        ));
    }
    let pos = resolve_arg(mp, m, args, what, tracepoint)?;
    let ty = args[pos].r#type;
    let class = ty.class();
    let no_values = matches!(
        m.operator,
        O::SPortPriv | O::NotSPortPriv | O::DPortPriv | O::NotDPortPriv | O::CapabilitiesGained
    );
    let vp = format!("{mp}.values");
    if no_values {
        if !m.values.is_empty() {
            return Err(invalid(
                vp,
                format!("operator {:?} takes no values; remove them", m.operator),
            ));
        }
    } else {
        nonempty_capped(&vp, m.values.len())?;
    }
    let bad_op = || {
        invalid(
            format!("{mp}.operator"),
            format!(
                "operator {:?} is not valid for an argument of type {}; {}",
                m.operator,
                ty.name(),
                suggestion(class)
            ),
        )
    };
    let int = IntType::of(class);
    let sock = matches!(class, ArgClass::Socket | ArgClass::SockAddr);
    let text = matches!(class, ArgClass::Text | ArgClass::SockAddrUn);
    let test = match m.operator {
        O::Equal | O::NotEqual | O::GreaterThan | O::LessThan | O::Mask if int.is_some() => {
            let ty = int.unwrap_or(IntType {
                bits: 64,
                signed: false,
            });
            let vals = each_value(mp, m, |v| parse_int(v, ty, IntSyntax::Go))?;
            let op = match m.operator {
                O::Equal => IntOp::Eq(vals),
                O::NotEqual => IntOp::Neq(vals),
                O::GreaterThan => IntOp::Gt(vals),
                O::LessThan => IntOp::Lt(vals),
                _ => IntOp::Mask(vals.iter().fold(0, |acc, &v| acc | ty.bits_of(v))),
            };
            ArgTest::Int { ty, op }
        }
        O::InRange | O::NotInRange => {
            let ty = int.ok_or_else(bad_op)?;
            let r = each_value(mp, m, |v| parse_range(v, ty, IntSyntax::Go))?;
            let op = if m.operator == O::InRange {
                IntOp::InRange(r)
            } else {
                IntOp::NotInRange(r)
            };
            ArgTest::Int { ty, op }
        }
        O::InMap | O::NotInMap => {
            let ty = int.ok_or_else(bad_op)?;
            let mut ranges = Vec::new();
            for (k, v) in m.values.iter().enumerate() {
                let v = v.as_str();
                let at = format!("{vp}[{k}]");
                if let Some(name) = v.strip_prefix("list:") {
                    let list = lists.integers(name).map_err(|e| invalid(&at, e))?;
                    ranges.extend(list.into_iter().map(|n| IntRange::single(ty.canonical(n))));
                } else {
                    ranges.push(parse_map_value(v, ty).map_err(|e| invalid(&at, e))?);
                }
            }
            let op = if m.operator == O::InMap {
                IntOp::InMap(ranges)
            } else {
                IntOp::NotInMap(ranges)
            };
            ArgTest::Int { ty, op }
        }
        O::Equal | O::NotEqual | O::Prefix | O::NotPrefix | O::Postfix | O::NotPostfix if text => {
            let (op, negate) = match m.operator {
                O::Equal => (TextOp::Equal, false),
                O::NotEqual => (TextOp::Equal, true),
                O::Prefix => (TextOp::Prefix, false),
                O::NotPrefix => (TextOp::Prefix, true),
                O::Postfix => (TextOp::Postfix, false),
                _ => (TextOp::Postfix, true),
            };
            // Tetragon drops trailing NULs of `string` values for Equal and
            // of every non-`char_buf` value for Postfix (`"/etc/passwd\0"`).
            let trim = match op {
                TextOp::Equal => ty == ArgType::String,
                TextOp::Postfix => ty != ArgType::CharBuf,
                _ => false,
            };
            let values = m
                .values
                .iter()
                .map(|v| {
                    let b = v.as_str().as_bytes();
                    let end = if trim {
                        b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1)
                    } else {
                        b.len()
                    };
                    b[..end].to_vec()
                })
                .collect();
            ArgTest::Text(TextTest {
                op,
                values,
                negate,
                path_like: is_path_type(ty),
            })
        }
        O::SubString | O::SubStringIgnCase if class == ArgClass::Text => {
            let values = each_value(mp, m, |v| {
                if v.len() >= 100 {
                    Err("substrings must be shorter than 100 bytes".into())
                } else {
                    Ok(v.as_bytes().to_vec())
                }
            })?;
            let op = if m.operator == O::SubString {
                TextOp::SubString
            } else {
                TextOp::SubStringIgnCase
            };
            ArgTest::Text(TextTest {
                op,
                values,
                negate: false,
                path_like: is_path_type(ty),
            })
        }
        O::FileType | O::NotFileType if matches!(ty, ArgType::File | ArgType::Path) => {
            ArgTest::FileType {
                modes: each_value(mp, m, parse_file_type)?,
                negate: m.operator == O::NotFileType,
            }
        }
        O::SPort | O::NotSPort | O::DPort | O::NotDPort => {
            let dst = matches!(m.operator, O::DPort | O::NotDPort);
            if !(class == ArgClass::Socket || (class == ArgClass::SockAddr && !dst)) {
                return Err(bad_op());
            }
            ArgTest::Port {
                dst,
                ranges: each_value(mp, m, str::parse)?,
                negate: matches!(m.operator, O::NotSPort | O::NotDPort),
            }
        }
        O::SPortPriv | O::NotSPortPriv | O::DPortPriv | O::NotDPortPriv => {
            let dst = matches!(m.operator, O::DPortPriv | O::NotDPortPriv);
            if !(class == ArgClass::Socket || (class == ArgClass::SockAddr && !dst)) {
                return Err(bad_op());
            }
            ArgTest::PortPriv {
                dst,
                negate: matches!(m.operator, O::NotSPortPriv | O::NotDPortPriv),
            }
        }
        O::SAddr | O::NotSAddr | O::DAddr | O::NotDAddr => {
            let dst = matches!(m.operator, O::DAddr | O::NotDAddr);
            if !(class == ArgClass::Socket || (class == ArgClass::SockAddr && !dst)) {
                return Err(bad_op());
            }
            ArgTest::Addr {
                dst,
                cidrs: each_value(mp, m, str::parse)?,
                negate: matches!(m.operator, O::NotSAddr | O::NotDAddr),
            }
        }
        O::Protocol | O::State if class == ArgClass::Socket => {
            let kind = if m.operator == O::Protocol {
                NamedKind::Protocol
            } else {
                NamedKind::State
            };
            ArgTest::Named {
                kind,
                ranges: each_value(mp, m, |v| parse_named(v, kind))?,
            }
        }
        O::Family if sock || class == ArgClass::SockAddrUn => ArgTest::Named {
            kind: NamedKind::Family,
            ranges: each_value(mp, m, |v| parse_named(v, NamedKind::Family))?,
        },
        O::CapabilitiesGained if class == ArgClass::CapSet => {
            if m.args.len() != 2 {
                return Err(invalid(
                    format!("{mp}.args"),
                    "CapabilitiesGained needs args: [old, new], two positions of capability-set args",
                ));
            }
            let new_pos = m.args[1] as usize;
            if args[new_pos].r#type.class() != ArgClass::CapSet {
                return Err(invalid(
                    format!("{mp}.args[1]"),
                    "CapabilitiesGained compares two capability-set args",
                ));
            }
            ArgTest::CapsGained { new_pos }
        }
        _ => return Err(bad_op()),
    };
    Ok(ArgFilter { pos, test })
}

#[derive(Debug, Clone)]
enum StrMatch {
    Exact(BTreeSet<Vec<u8>>),
    Prefix(Vec<Vec<u8>>),
    Postfix(Vec<Vec<u8>>),
}

impl StrMatch {
    fn test(&self, s: &[u8]) -> bool {
        if s.is_empty() {
            return false;
        }
        match self {
            Self::Exact(set) => set.contains(s),
            Self::Prefix(v) => v.iter().any(|p| s.starts_with(p)),
            Self::Postfix(v) => v.iter().any(|p| s.ends_with(p)),
        }
    }
}

#[derive(Debug, Clone)]
struct BinaryFilter {
    test: StrMatch,
    negate: bool,
    follow_children: bool,
}

#[derive(Debug, Clone)]
struct PidFilter {
    values: Vec<u32>,
    negate: bool,
    namespace_pid: bool,
    follow_forks: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NsValue {
    Inode(u32),
    Host,
}

#[derive(Debug, Clone)]
struct NamespaceFilter {
    kind: NamespaceKind,
    values: Vec<NsValue>,
    negate: bool,
}

#[derive(Debug, Clone)]
struct NamespaceChangeFilter {
    /// Bit `ns_index(kind)` per kind to check.
    kinds: u16,
}

#[derive(Debug, Clone)]
struct CapsFilter {
    set: CapabilitySet,
    mask: u64,
    negate: bool,
    outside_host_userns: bool,
}

/// A checked, compiled selector.
#[derive(Debug, Clone)]
pub(crate) struct CompiledSelector {
    args: Vec<ArgFilter>,
    return_args: Vec<ArgFilter>,
    pids: Vec<PidFilter>,
    binaries: Vec<BinaryFilter>,
    parent_binaries: Vec<BinaryFilter>,
    namespaces: Vec<NamespaceFilter>,
    namespace_changes: Vec<NamespaceChangeFilter>,
    capabilities: Vec<CapsFilter>,
    capability_changes: Vec<CapsFilter>,
    actions: Vec<ActionSelector>,
    return_actions: Vec<ActionSelector>,
}

fn compile_binaries(
    vp: &str,
    list: &[BinarySelector],
) -> Result<Vec<BinaryFilter>, ValidationError> {
    let mut out = Vec::with_capacity(list.len());
    for (j, m) in list.iter().enumerate() {
        let p = format!("{vp}[{j}].values");
        nonempty_capped(&p, m.values.len())?;
        if let Some(k) = m.values.iter().position(String::is_empty) {
            return Err(invalid(format!("{p}[{k}]"), "empty binary path"));
        }
        let bytes = m.values.iter().map(|v| v.as_bytes().to_vec());
        let (kind, negate) = BinaryMatch::of(m.operator);
        let test = match kind {
            BinaryMatch::Exact => StrMatch::Exact(bytes.collect()),
            BinaryMatch::Prefix => StrMatch::Prefix(bytes.collect()),
            BinaryMatch::Postfix => StrMatch::Postfix(bytes.collect()),
        };
        out.push(BinaryFilter {
            test,
            negate,
            follow_children: m.follow_children,
        });
    }
    Ok(out)
}

/// The capability bits of the `CAP_*` names at YAML path `vp`
/// (`...matchCapabilities[0].values`).
pub(crate) fn capability_mask(vp: &str, values: &[String]) -> Result<u64, ValidationError> {
    let mut mask = 0;
    for (k, v) in values.iter().enumerate() {
        mask |= capability_bit(v).map_err(|e| invalid(format!("{vp}[{k}]"), e))?;
    }
    Ok(mask)
}

fn compile_caps(
    p: &str,
    list: &[CapabilitiesSelector],
) -> Result<Vec<CapsFilter>, ValidationError> {
    let mut out = Vec::with_capacity(list.len());
    for (j, m) in list.iter().enumerate() {
        let vp = format!("{p}[{j}].values");
        nonempty_capped(&vp, m.values.len())?;
        out.push(CapsFilter {
            set: m.r#type,
            mask: capability_mask(&vp, &m.values)?,
            negate: m.operator == SetOperator::NotIn,
            outside_host_userns: m.is_namespace_capability,
        });
    }
    Ok(out)
}

/// Checks and compiles selector `s` at YAML path `sp` of `hook`.
pub(crate) fn compile_selector(
    sp: &str,
    s: &Selector,
    hook: &Hook<'_>,
    lists: &dyn ListSource,
) -> Result<CompiledSelector, ValidationError> {
    let mut args = Vec::with_capacity(s.match_args.len());
    for (j, m) in s.match_args.iter().enumerate() {
        args.push(compile_arg(
            &format!("{sp}.matchArgs[{j}]"),
            m,
            hook.args,
            "args",
            hook.tracepoint,
            lists,
        )?);
    }
    let mut return_args = Vec::with_capacity(s.match_return_args.len());
    if !s.match_return_args.is_empty() || !s.match_return_actions.is_empty() {
        let Some(ret) = hook.return_arg else {
            return Err(invalid(
                format!("{sp}.matchReturnArgs"),
                "matchReturnArgs/matchReturnActions need a kprobe with return: true and returnArg",
            ));
        };
        for (j, m) in s.match_return_args.iter().enumerate() {
            return_args.push(compile_arg(
                &format!("{sp}.matchReturnArgs[{j}]"),
                m,
                std::slice::from_ref(ret),
                "returnArg",
                false,
                lists,
            )?);
        }
    }
    let mut pids = Vec::with_capacity(s.match_pids.len());
    for (j, m) in s.match_pids.iter().enumerate() {
        nonempty_capped(&format!("{sp}.matchPIDs[{j}].values"), m.values.len())?;
        pids.push(PidFilter {
            values: m.values.clone(),
            negate: m.operator == SetOperator::NotIn,
            namespace_pid: m.is_namespace_pid,
            follow_forks: m.follow_forks,
        });
    }
    let mut namespaces = Vec::with_capacity(s.match_namespaces.len());
    for (j, m) in s.match_namespaces.iter().enumerate() {
        let vp = format!("{sp}.matchNamespaces[{j}].values");
        nonempty_capped(&vp, m.values.len())?;
        let mut values = Vec::with_capacity(m.values.len());
        for (k, v) in m.values.iter().enumerate() {
            let value =
                parse_namespace_value(v.as_str()).map_err(|e| invalid(format!("{vp}[{k}]"), e))?;
            values.push(value.map_or(NsValue::Host, NsValue::Inode));
        }
        namespaces.push(NamespaceFilter {
            kind: m.namespace,
            values,
            negate: m.operator == SetOperator::NotIn,
        });
    }
    let mut namespace_changes = Vec::with_capacity(s.match_namespace_changes.len());
    for (j, m) in s.match_namespace_changes.iter().enumerate() {
        nonempty_capped(
            &format!("{sp}.matchNamespaceChanges[{j}].values"),
            m.values.len(),
        )?;
        let mask = m.values.iter().fold(0u16, |acc, &k| acc | 1 << ns_index(k));
        namespace_changes.push(NamespaceChangeFilter {
            kinds: match m.operator {
                SetOperator::In => mask,
                SetOperator::NotIn => !mask & 0x3ff,
            },
        });
    }
    Ok(CompiledSelector {
        args,
        return_args,
        pids,
        binaries: compile_binaries(&format!("{sp}.matchBinaries"), &s.match_binaries)?,
        parent_binaries: compile_binaries(
            &format!("{sp}.matchParentBinaries"),
            &s.match_parent_binaries,
        )?,
        namespaces,
        namespace_changes,
        capabilities: compile_caps(&format!("{sp}.matchCapabilities"), &s.match_capabilities)?,
        capability_changes: compile_caps(
            &format!("{sp}.matchCapabilityChanges"),
            &s.match_capability_changes,
        )?,
        actions: s.match_actions.clone(),
        return_actions: s.match_return_actions.clone(),
    })
}

// ---------------------------------------------------------------------------
// Evaluation.
// ---------------------------------------------------------------------------

const POST: &[ActionSelector] = &[ActionSelector {
    action: ActionKind::Post,
    arg_url: None,
    arg_fqdn: None,
    arg_error: None,
    arg_sig: None,
    arg_sock: None,
    arg_index: None,
    arg_value: None,
    arg_fd: None,
    arg_name: None,
    rate_limit: None,
    rate_limit_scope: None,
    kernel_stack_trace: false,
    user_stack_trace: false,
    ima_hash: false,
}];

/// The selector that matched and the actions to apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match<'a> {
    /// Index of the matching selector; `None` for a hook without selectors.
    pub selector: Option<usize>,
    /// Its actions (`[Post]` when it lists none).
    pub actions: &'a [ActionSelector],
}

impl Match<'_> {
    /// Whether the actions include `kind`.
    pub fn has(&self, kind: ActionKind) -> bool {
        self.actions.iter().any(|a| a.action == kind)
    }

    /// The first `Override` action's `argError`.
    pub fn override_error(&self) -> Option<i32> {
        self.actions
            .iter()
            .find(|a| a.action == ActionKind::Override)
            .and_then(|a| a.arg_error)
    }
}

/// The checked, compiled selectors of one hook.
#[derive(Debug, Clone)]
pub struct CompiledSelectors {
    selectors: Vec<CompiledSelector>,
}

impl CompiledSelectors {
    /// Checks and compiles `hook`'s selectors; `list:NAME` values are taken
    /// from `lists`. Errors name the YAML path under `hook.path`.
    pub fn new(hook: &Hook<'_>, lists: &dyn ListSource) -> Result<Self, ValidationError> {
        let selectors = hook
            .selectors
            .iter()
            .enumerate()
            .map(|(i, s)| {
                compile_selector(&format!("{}.selectors[{i}]", hook.path), s, hook, lists)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { selectors })
    }

    /// Number of selectors.
    pub fn len(&self) -> usize {
        self.selectors.len()
    }

    /// Whether the hook has no selectors (it always matches with `Post`).
    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }

    /// The first selector matching the call, with its `matchActions`;
    /// `None`: no event, no action.
    pub fn evaluate(&self, cx: &Context) -> Option<Match<'_>> {
        if self.selectors.is_empty() {
            return Some(Match {
                selector: None,
                actions: POST,
            });
        }
        self.selectors
            .iter()
            .position(|s| s.matches_call(cx))
            .map(|i| Match {
                selector: Some(i),
                actions: non_empty_or_post(&self.selectors[i].actions),
            })
    }

    /// At the return of a call whose entry matched: the first selector
    /// whose `matchReturnArgs` match [`Context::return_value`], with its
    /// `matchReturnActions`.
    pub fn evaluate_return(&self, cx: &Context) -> Option<Match<'_>> {
        if self.selectors.is_empty() {
            return Some(Match {
                selector: None,
                actions: POST,
            });
        }
        let ret = std::slice::from_ref(&cx.return_value);
        self.selectors
            .iter()
            .position(|s| s.return_args.iter().all(|f| f.matches(ret)))
            .map(|i| Match {
                selector: Some(i),
                actions: non_empty_or_post(&self.selectors[i].return_actions),
            })
    }

    /// Which values of the path argument at position `arg` a selector that
    /// does something (posts an event, signals, denies: anything but a
    /// lone `NoPost`) could match: what the fanotify path must watch.
    /// Over-approximates (a selector's other filters are ignored).
    pub fn path_coverage(&self, arg: usize) -> PathCoverage {
        let mut exact = BTreeSet::new();
        let mut prefixes = BTreeSet::new();
        for s in &self.selectors {
            let effect =
                s.actions.is_empty() || s.actions.iter().any(|a| a.action != ActionKind::NoPost);
            if !effect {
                continue;
            }
            let on_arg = || {
                s.args.iter().filter_map(|f| match &f.test {
                    ArgTest::Text(t) if f.pos == arg && !t.negate => Some(t),
                    _ => None,
                })
            };
            // The entries are ANDed: any one bounds the selector; the
            // tightest is an Equal entry, else a Prefix entry.
            let bound = on_arg()
                .filter(|t| t.op == TextOp::Equal)
                .min_by_key(|t| t.values.len())
                .or_else(|| on_arg().find(|t| t.op == TextOp::Prefix));
            let Some(t) = bound else {
                return PathCoverage::Everything;
            };
            for v in &t.values {
                // Paths are absolute: other values can never match.
                if t.op == TextOp::Equal && v.starts_with(b"/") {
                    exact.insert(v.clone());
                } else if t.op == TextOp::Prefix {
                    if !v.starts_with(b"/") && !v.is_empty() {
                        continue;
                    }
                    if v.is_empty() || v == b"/" {
                        return PathCoverage::Everything;
                    }
                    prefixes.insert(v.clone());
                }
            }
        }
        if exact.is_empty() && prefixes.is_empty() {
            PathCoverage::Nothing
        } else {
            PathCoverage::Paths { exact, prefixes }
        }
    }
}

fn non_empty_or_post(actions: &[ActionSelector]) -> &[ActionSelector] {
    if actions.is_empty() {
        POST
    } else {
        actions
    }
}

/// What paths a hook could act on ([`CompiledSelectors::path_coverage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathCoverage {
    /// No selector acts.
    Nothing,
    /// Only these absolute paths, and paths starting with these prefixes
    /// (byte prefixes: `/etc/ss` covers `/etc/ssh/...` and `/etc/ssl`).
    Paths {
        /// Exact paths.
        exact: BTreeSet<Vec<u8>>,
        /// Byte prefixes.
        prefixes: BTreeSet<Vec<u8>>,
    },
    /// Any path (`Postfix`, `Not*`, `SubString` or no filter on the path).
    Everything,
}

impl CompiledSelector {
    fn matches_call(&self, cx: &Context) -> bool {
        let p = &cx.process;
        self.binaries.iter().all(|b| b.matches_process(cx))
            && self.parent_binaries.iter().all(|b| b.matches_parent(cx))
            && self.pids.iter().all(|f| f.matches(cx))
            && self.namespaces.iter().all(|f| {
                let inum = p.namespaces.get(f.kind);
                let host = cx.host_namespaces.get(f.kind);
                let hit = f.values.iter().any(|v| match v {
                    NsValue::Inode(n) => *n == inum,
                    NsValue::Host => host == inum,
                });
                hit != f.negate
            })
            && self.capabilities.iter().all(|f| {
                if f.outside_host_userns && in_host_userns(cx) {
                    return false;
                }
                let hit = p.capabilities.get(f.set) & f.mask != 0;
                hit != f.negate
            })
            && self.namespace_changes.iter().all(|f| {
                let Some(exec) = &p.exec_namespaces else {
                    return false;
                };
                (0..10).any(|i| {
                    f.kinds & (1 << i) != 0 && exec.0[i] != 0 && exec.0[i] != p.namespaces.0[i]
                })
            })
            && self.capability_changes.iter().all(|f| {
                let Some(exec) = &p.exec_capabilities else {
                    return false;
                };
                if f.outside_host_userns && in_host_userns(cx) {
                    return false;
                }
                let (old, new) = (exec.get(f.set), p.capabilities.get(f.set));
                if old & f.mask != new & f.mask {
                    !f.negate
                } else {
                    old != new && f.negate
                }
            })
            && self.args.iter().all(|f| f.matches(&cx.args))
    }
}

fn in_host_userns(cx: &Context) -> bool {
    cx.process.namespaces.get(NamespaceKind::User) == cx.host_namespaces.get(NamespaceKind::User)
}

impl BinaryFilter {
    fn found(&self, own: &[u8], ancestors: &[Ancestor]) -> bool {
        self.test.test(own)
            || (self.follow_children && ancestors.iter().any(|a| self.test.test(&a.binary)))
    }

    fn matches_process(&self, cx: &Context) -> bool {
        if cx.process.binary.is_empty() {
            return false;
        }
        self.found(&cx.process.binary, &cx.ancestors) != self.negate
    }

    fn matches_parent(&self, cx: &Context) -> bool {
        match cx.ancestors.split_first() {
            None => true,
            Some((parent, rest)) => self.found(&parent.binary, rest) != self.negate,
        }
    }
}

impl PidFilter {
    fn matches(&self, cx: &Context) -> bool {
        let p = &cx.process;
        let pid_of = |pid: u32, ns_pid: u32| if self.namespace_pid { ns_pid } else { pid };
        if self.namespace_pid && p.ns_pid == 0 {
            return false;
        }
        let found = self.values.contains(&pid_of(p.pid, p.ns_pid))
            || (self.follow_forks
                && cx
                    .ancestors
                    .iter()
                    .any(|a| self.values.contains(&pid_of(a.pid, a.ns_pid))));
        found != self.negate
    }
}

impl ArgFilter {
    fn matches(&self, args: &[ArgValue]) -> bool {
        let v = args.get(self.pos).unwrap_or(&ArgValue::Missing);
        match &self.test {
            ArgTest::Int { ty, op } => {
                let raw = match v {
                    // The bit pattern, read at the declared width.
                    ArgValue::Signed(i) => *i as u64,
                    ArgValue::Unsigned(u) => *u,
                    _ => return false,
                };
                op.matches(*ty, raw)
            }
            ArgTest::Text(t) => match v {
                ArgValue::Text(s) | ArgValue::File { path: s, .. } => t.matches(s),
                ArgValue::UnixAddr { path, .. } => t.matches(path),
                _ => false,
            },
            ArgTest::FileType { modes, negate } => {
                let mode = match v {
                    ArgValue::File { mode, .. } => *mode,
                    ArgValue::Text(_) => 0,
                    _ => return false,
                };
                modes.contains(&(mode & 0o170000)) != *negate
            }
            ArgTest::Port {
                dst,
                ranges,
                negate,
            } => match v {
                ArgValue::Sock(s) => {
                    let port = if *dst { s.dport } else { s.sport };
                    ranges.iter().any(|r| r.contains(port)) != *negate
                }
                _ => false,
            },
            ArgTest::PortPriv { dst, negate } => match v {
                ArgValue::Sock(s) => {
                    let port = if *dst { s.dport } else { s.sport };
                    (port < 1024) != *negate
                }
                _ => false,
            },
            ArgTest::Addr { dst, cidrs, negate } => match v {
                ArgValue::Sock(s) => match if *dst { s.daddr } else { s.saddr } {
                    Some(ip) => cidrs.iter().any(|c| c.contains(ip)) != *negate,
                    None => false,
                },
                _ => false,
            },
            ArgTest::Named { kind, ranges } => {
                let value = match (kind, v) {
                    (NamedKind::Protocol, ArgValue::Sock(s)) => u32::from(s.protocol),
                    (NamedKind::Family, ArgValue::Sock(s)) => u32::from(s.family),
                    (NamedKind::Family, ArgValue::UnixAddr { family, .. }) => u32::from(*family),
                    (
                        NamedKind::State,
                        ArgValue::Sock(Sock {
                            state: Some(st), ..
                        }),
                    ) => u32::from(*st),
                    _ => return false,
                };
                ranges.iter().any(|&(lo, hi)| lo <= value && value <= hi)
            }
            ArgTest::CapsGained { new_pos } => {
                match (v, args.get(*new_pos).unwrap_or(&ArgValue::Missing)) {
                    (ArgValue::CapSet(old), ArgValue::CapSet(new)) => (old ^ new) & new != 0,
                    _ => false,
                }
            }
        }
    }
}

impl IntOp {
    fn matches(&self, ty: IntType, raw: u64) -> bool {
        let v = ty.canonical(raw);
        match self {
            Self::Eq(vals) => vals.contains(&v),
            Self::Neq(vals) => !vals.contains(&v),
            Self::Gt(vals) => vals.iter().any(|&w| v > w),
            Self::Lt(vals) => vals.iter().any(|&w| v < w),
            Self::Mask(m) => ty.bits_of(v) & m != 0,
            Self::InRange(r) | Self::InMap(r) => r.iter().any(|r| r.contains(v)),
            Self::NotInRange(r) | Self::NotInMap(r) => !r.iter().any(|r| r.contains(v)),
        }
    }
}

impl TextTest {
    fn matches(&self, s: &[u8]) -> bool {
        if s.is_empty() && self.path_like {
            return false;
        }
        let hit = match self.op {
            TextOp::Equal => self.values.iter().any(|v| v == s),
            TextOp::Prefix => !s.is_empty() && self.values.iter().any(|v| s.starts_with(v)),
            TextOp::Postfix => !s.is_empty() && self.values.iter().any(|v| s.ends_with(v)),
            TextOp::SubString => self.values.iter().any(|v| contains(s, v, false)),
            TextOp::SubStringIgnCase => self.values.iter().any(|v| contains(s, v, true)),
        };
        hit != self.negate
    }
}

/// Whether `hay` contains `needle` (ASCII case-insensitively with
/// `ignore_case`, as `bpf_strncasestr`).
fn contains(hay: &[u8], needle: &[u8], ignore_case: bool) -> bool {
    if needle.is_empty() {
        return true;
    }
    hay.windows(needle.len()).any(|w| {
        if ignore_case {
            w.eq_ignore_ascii_case(needle)
        } else {
            w == needle
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    fn args(yaml: &str) -> Vec<KProbeArg> {
        serde_yaml::from_str(yaml).expect("args")
    }

    fn sels(yaml: &str) -> Vec<Selector> {
        serde_yaml::from_str(yaml).expect("selectors")
    }

    fn compile(a: &[KProbeArg], s: &[Selector]) -> CompiledSelectors {
        try_compile(a, s, false).unwrap_or_else(|e| panic!("{}: {e}", e.path()))
    }

    fn try_compile(
        a: &[KProbeArg],
        s: &[Selector],
        tracepoint: bool,
    ) -> Result<CompiledSelectors, ValidationError> {
        let mut lists = ResolvedLists::new();
        lists.insert("dups", vec![32, 33]);
        let hook = Hook {
            path: "spec.kprobes[0]",
            args: a,
            return_arg: None,
            selectors: s,
            tracepoint,
        };
        CompiledSelectors::new(&hook, &lists)
    }

    /// One selector with one matchArgs entry on arg 0 of type `ty`.
    fn one(ty: &str, op: &str, values: &[&str]) -> CompiledSelectors {
        let a = args(&format!("[{{index: 0, type: {ty}}}]"));
        let vals: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        let s = sels(&format!(
            "[{{matchArgs: [{{index: 0, operator: {op}, values: [{}]}}]}}]",
            vals.join(", ")
        ));
        compile(&a, &s)
    }

    fn with_arg(v: ArgValue) -> Context {
        Context {
            args: vec![v],
            process: Process {
                pid: 100,
                ns_pid: 1,
                binary: b"/usr/bin/cat".to_vec(),
                ..Process::default()
            },
            ..Context::default()
        }
    }

    fn hit(c: &CompiledSelectors, v: ArgValue) -> bool {
        c.evaluate(&with_arg(v)).is_some()
    }

    fn text(s: &str) -> ArgValue {
        ArgValue::Text(s.as_bytes().to_vec())
    }

    fn file(s: &str) -> ArgValue {
        ArgValue::File {
            path: s.as_bytes().to_vec(),
            mode: 0o100644,
        }
    }

    #[test]
    fn first_match_wins_post_by_default_and_no_selectors_always_match() {
        let a = args("[{index: 0, type: int}]");
        let s = sels(
            "[{matchArgs: [{index: 0, operator: Equal, values: ['1']}], matchActions: [{action: NoPost}]},
              {matchArgs: [{index: 0, operator: GT, values: ['0']}]},
              {matchActions: [{action: Sigkill}]}]",
        );
        let c = compile(&a, &s);
        let m = c.evaluate(&with_arg(ArgValue::Signed(1))).expect("match");
        assert_eq!(m.selector, Some(0));
        assert!(m.has(ActionKind::NoPost));
        let m = c.evaluate(&with_arg(ArgValue::Signed(5))).expect("match");
        assert_eq!(m.selector, Some(1));
        assert_eq!(m.actions.len(), 1);
        assert!(m.has(ActionKind::Post));
        let m = c.evaluate(&with_arg(ArgValue::Signed(-5))).expect("match");
        assert_eq!(m.selector, Some(2));
        assert!(m.has(ActionKind::Sigkill));
        let none = compile(&a, &[]);
        let m = none.evaluate(&Context::default()).expect("always");
        assert_eq!(m.selector, None);
        assert!(m.has(ActionKind::Post));
        let s = sels("[{matchArgs: [{index: 0, operator: Equal, values: ['1']}]}]");
        assert!(compile(&a, &s)
            .evaluate(&with_arg(ArgValue::Signed(2)))
            .is_none());
    }

    #[test]
    fn entries_and_filters_are_anded() {
        let a = args("[{index: 0, type: int}, {index: 1, type: string}]");
        let s = sels(
            "[{matchArgs: [{index: 0, operator: GT, values: ['0']}, {index: 0, operator: LT, values: ['10']},
                           {index: 1, operator: Prefix, values: ['/etc']}],
               matchBinaries: [{operator: In, values: ['/usr/bin/cat']}]}]",
        );
        let c = compile(&a, &s);
        let mut cx = with_arg(ArgValue::Signed(5));
        cx.args.push(text("/etc/passwd"));
        assert!(c.evaluate(&cx).is_some());
        cx.args[0] = ArgValue::Signed(10);
        assert!(c.evaluate(&cx).is_none());
        cx.args[0] = ArgValue::Signed(5);
        cx.process.binary = b"/usr/bin/tail".to_vec();
        assert!(c.evaluate(&cx).is_none());
    }

    #[test]
    fn integer_operators() {
        let c = one("int", "Equal", &["1", "-2", "0x10"]);
        assert!(hit(&c, ArgValue::Signed(-2)));
        assert!(hit(&c, ArgValue::Signed(16)));
        // A 32-bit int: the bit pattern of -2 read at 32 bits.
        assert!(hit(&c, ArgValue::Unsigned(0xffff_fffe)));
        assert!(!hit(&c, ArgValue::Signed(3)));
        let c = one("int", "NotEqual", &["1", "2"]);
        assert!(hit(&c, ArgValue::Signed(3)));
        assert!(!hit(&c, ArgValue::Signed(2)));
        // Go base 0: a leading 0 is octal (mode bits).
        let c = one("uint32", "Equal", &["0644"]);
        assert!(hit(&c, ArgValue::Unsigned(0o644)));
        assert!(!hit(&c, ArgValue::Unsigned(644)));
        // GT/LT: any value.
        let c = one("int", "GT", &["10", "100"]);
        assert!(hit(&c, ArgValue::Signed(11)));
        assert!(!hit(&c, ArgValue::Signed(10)));
        let c = one("int", "LT", &["-1"]);
        assert!(hit(&c, ArgValue::Signed(-2)));
        assert!(!hit(&c, ArgValue::Signed(0)));
        // Signedness follows the type, at every width.
        let c = one("int8", "GT", &["-1"]);
        assert!(hit(&c, ArgValue::Signed(0)));
        assert!(!hit(&c, ArgValue::Unsigned(0xff)));
        let c = one("uint8", "GT", &["1"]);
        assert!(hit(&c, ArgValue::Unsigned(0xff)));
        let c = one("uint64", "GT", &["9223372036854775807"]);
        assert!(hit(&c, ArgValue::Unsigned(u64::MAX)));
        // size_t compares all 64 bits (Tetragon: the low 32).
        let c = one("size_t", "Equal", &["5"]);
        assert!(!hit(&c, ArgValue::Unsigned((1 << 32) + 5)));
        // Mask: any bit of any value.
        let c = one("uint32", "Mask", &["1", "0x200"]);
        assert!(hit(&c, ArgValue::Unsigned(0x201)));
        assert!(hit(&c, ArgValue::Unsigned(0x200)));
        assert!(!hit(&c, ArgValue::Unsigned(0x100)));
        // Ranges, inclusive.
        let c = one("int", "InRange", &["1:5", "-10:-8"]);
        assert!(hit(&c, ArgValue::Signed(5)));
        assert!(hit(&c, ArgValue::Signed(-9)));
        assert!(!hit(&c, ArgValue::Signed(6)));
        let c = one("int", "NotInRange", &["1:5"]);
        assert!(hit(&c, ArgValue::Signed(0)));
        assert!(!hit(&c, ArgValue::Signed(1)));
        // InMap: values, ranges and lists; decimal (0644 is 644).
        let c = one("uint64", "InMap", &["0644", "1000:1002", "list:dups"]);
        assert!(hit(&c, ArgValue::Unsigned(644)));
        assert!(hit(&c, ArgValue::Unsigned(1001)));
        assert!(hit(&c, ArgValue::Unsigned(33)));
        assert!(!hit(&c, ArgValue::Unsigned(34)));
        let c = one("int", "NotInMap", &["-1"]);
        assert!(!hit(&c, ArgValue::Signed(-1)));
        assert!(hit(&c, ArgValue::Signed(1)));
    }

    #[test]
    fn missing_or_mistyped_values_fail_every_operator() {
        for (ty, op, v) in [
            ("int", "NotEqual", "1"),
            ("int", "NotInMap", "1"),
            ("string", "NotEqual", "x"),
            ("string", "NotPrefix", "x"),
            ("sock", "NotDPort", "80"),
        ] {
            let c = one(ty, op, &[v]);
            assert!(!hit(&c, ArgValue::Missing), "{ty} {op}");
            assert!(!hit(&c, ArgValue::CapSet(1)), "{ty} {op}");
        }
        // No arg value at all.
        let c = one("int", "NotEqual", &["1"]);
        assert!(c.evaluate(&Context::default()).is_none());
    }

    #[test]
    fn string_operators() {
        let c = one("string", "Equal", &["/etc/passwd\0"]);
        assert!(
            hit(&c, text("/etc/passwd")),
            "trailing NUL trimmed for string"
        );
        let c = one("char_buf", "Equal", &["ab"]);
        assert!(hit(&c, text("ab")));
        assert!(!hit(&c, text("abc")));
        let c = one("string", "Prefix", &["/etc/", "/usr"]);
        assert!(hit(&c, text("/usr/bin")));
        assert!(!hit(&c, text("/var")));
        let c = one("string", "NotPrefix", &["/etc/"]);
        assert!(hit(&c, text("/var")));
        assert!(!hit(&c, text("/etc/x")));
        // Prefix never matches an empty string; so NotPrefix does.
        assert!(hit(&c, text("")));
        let c = one("string", "Postfix", &["sh\0", ".so"]);
        assert!(hit(&c, text("/bin/bash")));
        assert!(hit(&c, text("libc.so")));
        assert!(!hit(&c, text("sh.")));
        let c = one("string", "NotPostfix", &["sh"]);
        assert!(!hit(&c, text("bash")));
        assert!(hit(&c, text("cat")));
        // Whole strings: a long path compares on all its bytes.
        let long = format!("/{}/x", "a".repeat(300));
        let c = one("string", "Postfix", &[&format!("{}/x", "a".repeat(200))]);
        assert!(hit(&c, text(&long)));
        let c = one("string", "SubString", &["pass"]);
        assert!(hit(&c, text("/etc/passwd")));
        assert!(!hit(&c, text("/etc/PASSWD")));
        let c = one("string", "SubStringIgnCase", &["pass"]);
        assert!(hit(&c, text("/etc/PASSWD")));
        assert!(!hit(&c, text("/etc/shadow")));
    }

    #[test]
    fn path_types_with_an_empty_path_match_nothing() {
        for op in [
            "Equal",
            "NotEqual",
            "Prefix",
            "NotPrefix",
            "Postfix",
            "NotPostfix",
        ] {
            let c = one("file", op, &["/x"]);
            assert!(!hit(&c, file("")), "{op}");
        }
        let c = one("file", "NotEqual", &["/x"]);
        assert!(hit(&c, file("/y")));
        let c = one("file", "Equal", &["/etc/passwd"]);
        assert!(hit(&c, file("/etc/passwd")));
        assert!(hit(&c, text("/etc/passwd")), "text for a path type");
        let c = one("file", "FileType", &["reg"]);
        assert!(hit(&c, file("/etc/passwd")));
        assert!(hit(&c, file("")), "file types apply to unnamed files");
        assert!(!hit(
            &c,
            ArgValue::File {
                path: b"/dev/null".to_vec(),
                mode: 0o020666
            }
        ));
        let c = one("file", "NotFileType", &["dir", "fifo"]);
        assert!(hit(&c, file("/etc/passwd")));
    }

    fn sock(saddr: &str, sport: u16, daddr: &str, dport: u16) -> ArgValue {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        let family = match ip(daddr) {
            Some(IpAddr::V4(_)) => 2,
            Some(IpAddr::V6(_)) => 10,
            None => 1,
        };
        ArgValue::Sock(Sock {
            family,
            protocol: 6,
            saddr: ip(saddr),
            daddr: ip(daddr),
            sport,
            dport,
            state: Some(1),
        })
    }

    #[test]
    fn socket_operators() {
        let s = sock("10.0.0.1", 40000, "192.168.1.1", 443);
        let c = one("sock", "DPort", &["80", "440:450"]);
        assert!(hit(&c, s.clone()));
        let c = one("sock", "NotDPort", &["443"]);
        assert!(!hit(&c, s.clone()));
        let c = one("sock", "SPort", &["40000"]);
        assert!(hit(&c, s.clone()));
        let c = one("sock", "DPortPriv", &[]);
        assert!(hit(&c, s.clone()));
        let c = one("sock", "NotSPortPriv", &[]);
        assert!(hit(&c, s.clone()));
        let c = one("sock", "SPortPriv", &[]);
        assert!(!hit(&c, s.clone()));
        let c = one("sock", "DAddr", &["192.168.0.0/16", "fd00::/8"]);
        assert!(hit(&c, s.clone()));
        assert!(hit(&c, sock("::1", 1, "fd00::5", 2)));
        assert!(!hit(&c, sock("::1", 1, "fe80::5", 2)));
        let c = one("sock", "NotDAddr", &["127.0.0.0/8"]);
        assert!(hit(&c, s.clone()));
        // Only IPv6 prefixes: an IPv4 address is "not in" them.
        let c = one("sock", "NotSAddr", &["fd00::/8"]);
        assert!(hit(&c, s.clone()));
        // Non-IP sockets have no address: both forms fail.
        let unix = sock("", 0, "", 0);
        assert!(!hit(&c, unix.clone()));
        let c = one("sock", "SAddr", &["0.0.0.0/0"]);
        assert!(!hit(&c, unix));
        let c = one("sock", "Protocol", &["IPPROTO_UDP", "IPPROTO_TCP"]);
        assert!(hit(&c, s.clone()));
        let c = one("sock", "Family", &["AF_INET6"]);
        assert!(!hit(&c, s.clone()));
        let c = one("sock", "State", &["TCP_ESTABLISHED"]);
        assert!(hit(&c, s.clone()));
        let c = one("skb", "State", &["TCP_ESTABLISHED"]);
        let ArgValue::Sock(mut skb) = s else {
            unreachable!()
        };
        skb.state = None;
        assert!(!hit(&c, ArgValue::Sock(skb)));
        let c = one("sockaddr_un", "Prefix", &["/run/"]);
        assert!(hit(
            &c,
            ArgValue::UnixAddr {
                family: 1,
                path: b"/run/docker.sock".to_vec()
            }
        ));
        let c = one("sockaddr_un", "Family", &["AF_UNIX"]);
        assert!(hit(
            &c,
            ArgValue::UnixAddr {
                family: 1,
                path: Vec::new()
            }
        ));
    }

    #[test]
    fn capabilities_gained_compares_old_and_new() {
        let a = args("[{index: 1, type: cap_effective}, {index: 2, type: cap_effective}]");
        let s = sels("[{matchArgs: [{args: [0, 1], operator: CapabilitiesGained}]}]");
        let c = compile(&a, &s);
        let cx = |old, new| Context {
            args: vec![ArgValue::CapSet(old), ArgValue::CapSet(new)],
            ..Context::default()
        };
        assert!(c.evaluate(&cx(0b01, 0b11)).is_some());
        assert!(c.evaluate(&cx(0b11, 0b01)).is_none());
        assert!(c.evaluate(&cx(0b11, 0b11)).is_none());
    }

    fn process_hook(selector: &str) -> CompiledSelectors {
        compile(&[], &sels(&format!("[{selector}]")))
    }

    fn proc_cx(binary: &str, ancestors: &[(u32, &str)]) -> Context {
        Context {
            process: Process {
                pid: 1000,
                ns_pid: 7,
                binary: binary.as_bytes().to_vec(),
                ..Process::default()
            },
            ancestors: ancestors
                .iter()
                .map(|&(pid, b)| Ancestor {
                    pid,
                    ns_pid: pid % 100 + 10,
                    binary: b.as_bytes().to_vec(),
                })
                .collect(),
            ..Context::default()
        }
    }

    #[test]
    fn binaries() {
        let cx = proc_cx("/usr/bin/cat", &[(900, "/bin/bash"), (1, "/sbin/init")]);
        let m = |sel: &str| process_hook(sel).evaluate(&cx).is_some();
        assert!(m(
            "{matchBinaries: [{operator: In, values: [/usr/bin/cat, /bin/cat]}]}"
        ));
        assert!(!m(
            "{matchBinaries: [{operator: NotIn, values: [/usr/bin/cat]}]}"
        ));
        assert!(m("{matchBinaries: [{operator: Prefix, values: [/usr/]}]}"));
        assert!(m(
            "{matchBinaries: [{operator: NotPrefix, values: [/bin/]}]}"
        ));
        assert!(m("{matchBinaries: [{operator: Postfix, values: [/cat]}]}"));
        assert!(!m(
            "{matchBinaries: [{operator: NotPostfix, values: [cat]}]}"
        ));
        assert!(!m("{matchBinaries: [{operator: In, values: [/bin/bash]}]}"));
        assert!(m(
            "{matchBinaries: [{operator: In, values: [/bin/bash], followChildren: true}]}"
        ));
        assert!(!m(
            "{matchBinaries: [{operator: NotIn, values: [/sbin/init], followChildren: true}]}"
        ));
        assert!(m(
            "{matchParentBinaries: [{operator: In, values: [/bin/bash]}]}"
        ));
        assert!(!m(
            "{matchParentBinaries: [{operator: In, values: [/sbin/init]}]}"
        ));
        assert!(m(
            "{matchParentBinaries: [{operator: In, values: [/sbin/init], followChildren: true}]}"
        ));
        // Unknown binary: matchBinaries fails, NotIn too.
        let unknown = proc_cx("", &[]);
        let c = process_hook("{matchBinaries: [{operator: NotIn, values: [/x]}]}");
        assert!(c.evaluate(&unknown).is_none());
        // Unknown parent: matchParentBinaries is skipped (Tetragon).
        let c = process_hook("{matchParentBinaries: [{operator: In, values: [/x]}]}");
        assert!(c.evaluate(&unknown).is_some());
    }

    #[test]
    fn pids() {
        let cx = proc_cx("/usr/bin/cat", &[(900, "/bin/bash"), (1, "/sbin/init")]);
        let m = |sel: &str| process_hook(sel).evaluate(&cx).is_some();
        assert!(m("{matchPIDs: [{operator: In, values: [5, 1000]}]}"));
        assert!(!m("{matchPIDs: [{operator: NotIn, values: [1000]}]}"));
        assert!(!m("{matchPIDs: [{operator: In, values: [900]}]}"));
        assert!(m(
            "{matchPIDs: [{operator: In, values: [900], followForks: true}]}"
        ));
        assert!(!m(
            "{matchPIDs: [{operator: NotIn, values: [1], followForks: true}]}"
        ));
        assert!(m(
            "{matchPIDs: [{operator: In, values: [7], isNamespacePID: true}]}"
        ));
        assert!(!m(
            "{matchPIDs: [{operator: In, values: [1000], isNamespacePID: true}]}"
        ));
        assert!(m(
            "{matchPIDs: [{operator: NotIn, values: [0, 1], isNamespacePID: true, followForks: true}]}"
        ));
        assert!(!m(
            "{matchPIDs: [{operator: NotIn, values: [0, 1], isNamespacePID: false, followForks: true}]}"
        ));
    }

    #[test]
    fn namespaces_and_capabilities() {
        let host = Namespaces::default()
            .with(NamespaceKind::Mnt, 4026531841)
            .with(NamespaceKind::User, 4026531837);
        let mut cx = proc_cx("/bin/x", &[]);
        cx.host_namespaces = host;
        cx.process.namespaces = host.with(NamespaceKind::Mnt, 4026532000);
        cx.process.capabilities.effective = 1 << 21;
        let m = |cx: &Context, sel: &str| process_hook(sel).evaluate(cx).is_some();
        assert!(!m(
            &cx,
            "{matchNamespaces: [{namespace: Mnt, operator: In, values: [host_ns]}]}"
        ));
        assert!(m(
            &cx,
            "{matchNamespaces: [{namespace: Mnt, operator: NotIn, values: [host_ns]}]}"
        ));
        assert!(m(
            &cx,
            "{matchNamespaces: [{namespace: Mnt, operator: In, values: ['4026532000']}]}"
        ));
        assert!(m(
            &cx,
            "{matchNamespaces: [{namespace: User, operator: In, values: [host_ns, '5']}]}"
        ));
        assert!(m(&cx, "{matchCapabilities: [{type: Effective, operator: In, values: [CAP_SYS_ADMIN, CAP_BPF]}]}"));
        assert!(!m(
            &cx,
            "{matchCapabilities: [{type: Permitted, operator: In, values: [CAP_SYS_ADMIN]}]}"
        ));
        assert!(!m(
            &cx,
            "{matchCapabilities: [{operator: NotIn, values: [CAP_SYS_ADMIN]}]}"
        ));
        let userns = "{matchCapabilities: [{operator: In, isNamespaceCapability: true, values: [CAP_SYS_ADMIN]}]}";
        assert!(!m(&cx, userns), "host user namespace");
        cx.process.namespaces.set(NamespaceKind::User, 4026532999);
        assert!(m(&cx, userns));
        // Changes since exec.
        let ns_change = "{matchNamespaceChanges: [{operator: In, values: [Mnt]}]}";
        assert!(!m(&cx, ns_change), "no exec record");
        cx.process.exec_namespaces = Some(cx.process.namespaces);
        assert!(!m(&cx, ns_change));
        cx.process.namespaces.set(NamespaceKind::Mnt, 4026532001);
        assert!(m(&cx, ns_change));
        assert!(!m(
            &cx,
            "{matchNamespaceChanges: [{operator: NotIn, values: [Mnt]}]}"
        ));
        let cap_change =
            "{matchCapabilityChanges: [{type: Effective, operator: In, values: [CAP_SETUID]}]}";
        cx.process.exec_capabilities = Some(cx.process.capabilities);
        assert!(!m(&cx, cap_change));
        cx.process.capabilities.effective |= 1 << 7;
        assert!(m(&cx, cap_change));
        assert!(!m(
            &cx,
            "{matchCapabilityChanges: [{operator: NotIn, values: [CAP_SETUID]}]}"
        ));
        assert!(m(
            &cx,
            "{matchCapabilityChanges: [{operator: NotIn, values: [CAP_CHOWN]}]}"
        ));
    }

    #[test]
    fn return_args_are_evaluated_at_return() {
        let a = args("[{index: 0, type: int}]");
        let ret: KProbeArg = serde_yaml::from_str("{index: 0, type: int}").expect("ret");
        let s = sels(
            "[{matchReturnArgs: [{index: 0, operator: LT, values: ['0']}], matchReturnActions: [{action: Sigkill}]},
              {matchArgs: [{index: 0, operator: Equal, values: ['1']}]}]",
        );
        let hook = Hook {
            path: "spec.kprobes[0]",
            args: &a,
            return_arg: Some(&ret),
            selectors: &s,
            tracepoint: false,
        };
        let c = CompiledSelectors::new(&hook, &ResolvedLists::new()).expect("compile");
        let mut cx = with_arg(ArgValue::Signed(1));
        assert_eq!(c.evaluate(&cx).and_then(|m| m.selector), Some(0));
        cx.return_value = ArgValue::Signed(-13);
        let m = c.evaluate_return(&cx).expect("return match");
        assert_eq!(m.selector, Some(0));
        assert!(m.has(ActionKind::Sigkill));
        cx.return_value = ArgValue::Signed(0);
        let m = c
            .evaluate_return(&cx)
            .expect("second selector has no return filter");
        assert_eq!(m.selector, Some(1));
        assert!(m.has(ActionKind::Post));
        let no_ret = Hook {
            return_arg: None,
            ..hook
        };
        let err = CompiledSelectors::new(&no_ret, &ResolvedLists::new()).expect_err("no return");
        assert_eq!(err.path(), "spec.kprobes[0].selectors[0].matchReturnArgs");
    }

    #[test]
    fn arg_resolution_by_index_args_and_tracepoint_position() {
        let a = args("[{index: 4, type: uint64}, {index: 1, type: int}]");
        let by_index = sels("[{matchArgs: [{index: 1, operator: Equal, values: ['7']}]}]");
        let cx = Context {
            args: vec![ArgValue::Unsigned(9), ArgValue::Signed(7)],
            ..Context::default()
        };
        assert!(compile(&a, &by_index).evaluate(&cx).is_some());
        let by_args = sels("[{matchArgs: [{args: [0], operator: Equal, values: ['9']}]}]");
        assert!(compile(&a, &by_args).evaluate(&cx).is_some());
        let by_pos = sels("[{matchArgs: [{index: 0, operator: Equal, values: ['9']}]}]");
        let err = try_compile(&a, &by_pos, false).expect_err("kprobe: no arg with index 0");
        assert_eq!(
            err.path(),
            "spec.kprobes[0].selectors[0].matchArgs[0].index"
        );
        let c = try_compile(&a, &by_pos, true).expect("tracepoint: position 0");
        assert!(c.evaluate(&cx).is_some());
        // Declared indexes win over positions, even when permuted.
        let perm = args("[{index: 1, type: int}, {index: 0, type: int}]");
        let s = sels("[{matchArgs: [{index: 1, operator: Equal, values: ['5']}]}]");
        let c = try_compile(&perm, &s, true).expect("compile");
        let cx = Context {
            args: vec![ArgValue::Signed(5), ArgValue::Signed(6)],
            ..Context::default()
        };
        assert!(c.evaluate(&cx).is_some());
    }

    #[test]
    fn compile_errors_name_the_value() {
        let a = args("[{index: 0, type: uint8}]");
        let s = sels("[{matchArgs: [{index: 0, operator: Equal, values: ['1', '300']}]}]");
        let err = try_compile(&a, &s, false).expect_err("range");
        assert_eq!(
            err.path(),
            "spec.kprobes[0].selectors[0].matchArgs[0].values[1]"
        );
        let s = sels("[{matchArgs: [{index: 0, operator: InMap, values: ['list:nope']}]}]");
        let err = try_compile(&a, &s, false).expect_err("list");
        assert!(err.to_string().contains("nope"), "{err}");
        let s = sels("[{matchArgs: [{index: 0, operator: Prefix, values: ['x']}]}]");
        let err = try_compile(&a, &s, false).expect_err("op");
        assert_eq!(
            err.path(),
            "spec.kprobes[0].selectors[0].matchArgs[0].operator"
        );
    }

    #[test]
    fn path_coverage_lists_what_selectors_can_act_on() {
        let a = args("[{index: 0, type: file}]");
        let cov = |yaml: &str| compile(&a, &sels(yaml)).path_coverage(0);
        assert_eq!(
            cov("[{matchActions: [{action: NoPost}]}]"),
            PathCoverage::Nothing
        );
        assert_eq!(
            cov("[{matchActions: [{action: Post}]}]"),
            PathCoverage::Everything
        );
        assert_eq!(
            cov("[{matchActions: [{action: Override, argError: -1}]}]"),
            PathCoverage::Everything
        );
        let c = cov(
            "[{matchArgs: [{index: 0, operator: Prefix, values: [/etc/]}, {index: 0, operator: Equal, values: [/etc/shadow, relative]}],
               matchActions: [{action: Override, argError: -1}]},
              {matchArgs: [{index: 0, operator: Prefix, values: [/root/]}], matchActions: [{action: Override, argError: -1}]},
              {matchArgs: [{index: 0, operator: Postfix, values: [.key]}], matchActions: [{action: NoPost}]}]",
        );
        let PathCoverage::Paths { exact, prefixes } = c else {
            panic!("{c:?}")
        };
        assert_eq!(
            exact.into_iter().collect::<Vec<_>>(),
            [b"/etc/shadow".to_vec()]
        );
        assert_eq!(
            prefixes.into_iter().collect::<Vec<_>>(),
            [b"/root/".to_vec()]
        );
        assert_eq!(
            cov("[{matchArgs: [{index: 0, operator: NotPrefix, values: [/etc/]}], matchActions: [{action: Override, argError: -1}]}]"),
            PathCoverage::Everything
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn pair(
            ty: &str,
            pos: &str,
            neg: &str,
            values: &[String],
        ) -> (CompiledSelectors, CompiledSelectors) {
            let v: Vec<&str> = values.iter().map(String::as_str).collect();
            (one(ty, pos, &v), one(ty, neg, &v))
        }

        proptest! {
            #[test]
            fn not_string_ops_negate(
                values in prop::collection::vec("[a-c/]{0,4}", 1..4),
                arg in "[a-c/]{1,6}",
                which in 0usize..3,
            ) {
                let (pos, neg) = [("Equal", "NotEqual"), ("Prefix", "NotPrefix"), ("Postfix", "NotPostfix")][which];
                let (p, n) = pair("string", pos, neg, &values);
                let v = ArgValue::Text(arg.into_bytes());
                prop_assert_eq!(hit(&p, v.clone()), !hit(&n, v));
            }

            #[test]
            fn not_int_ops_negate(
                values in prop::collection::vec(-20i64..20, 1..4),
                arg in -25i64..25,
                ranged in any::<bool>(),
                which in 0usize..3,
            ) {
                let (pos, neg) = [("Equal", "NotEqual"), ("InMap", "NotInMap"), ("InRange", "NotInRange")][which];
                let vals: Vec<String> = if which == 2 || (which == 1 && ranged) {
                    values.iter().map(|v| format!("{}:{}", v, v + 3)).collect()
                } else {
                    values.iter().map(i64::to_string).collect()
                };
                let (p, n) = pair("int64", pos, neg, &vals);
                let v = ArgValue::Signed(arg);
                prop_assert_eq!(hit(&p, v.clone()), !hit(&n, v));
            }

            #[test]
            fn not_socket_ops_negate(
                port in any::<u16>(),
                lo in any::<u16>(),
                len in 0u16..2000,
                addr in any::<u32>(),
                net in any::<u32>(),
                plen in 0u8..=32,
            ) {
                let hi = lo.saturating_add(len);
                let s = ArgValue::Sock(Sock {
                    family: 2,
                    protocol: 6,
                    saddr: Some(IpAddr::from(addr.to_be_bytes())),
                    daddr: Some(IpAddr::from(addr.to_be_bytes())),
                    sport: port,
                    dport: port,
                    state: Some(1),
                });
                let (p, n) = pair("sock", "DPort", "NotDPort", &[format!("{lo}:{hi}")]);
                prop_assert_eq!(hit(&p, s.clone()), !hit(&n, s.clone()));
                let (p, n) = pair("sock", "SPortPriv", "NotSPortPriv", &[]);
                prop_assert_eq!(hit(&p, s.clone()), !hit(&n, s.clone()));
                let cidr = format!("{}/{plen}", IpAddr::from(net.to_be_bytes()));
                let (p, n) = pair("sock", "SAddr", "NotSAddr", &[cidr]);
                prop_assert_eq!(hit(&p, s.clone()), !hit(&n, s));
            }

            #[test]
            fn not_in_process_filters_negate(
                pid in 1u32..6,
                values in prop::collection::vec(1u32..6, 1..3),
                follow in any::<bool>(),
                bin in "/[ab]{1,2}",
                bins in prop::collection::vec("/[ab]{1,2}", 1..3),
                caps in any::<u64>(),
                cap in 0usize..41,
            ) {
                let mut cx = proc_cx(&bin, &[(pid + 1, "/a"), (1, "/b")]);
                cx.process.pid = pid;
                cx.process.capabilities.effective = caps;
                let list = |v: &[String]| v.join(", ");
                let vs: Vec<String> = values.iter().map(u32::to_string).collect();
                let pids = |op: &str| format!("{{matchPIDs: [{{operator: {op}, followForks: {follow}, values: [{}]}}]}}", list(&vs));
                let binaries = |op: &str| format!("{{matchBinaries: [{{operator: {op}, followChildren: {follow}, values: [{}]}}]}}", list(&bins));
                let capsel = |op: &str| format!("{{matchCapabilities: [{{operator: {op}, values: [{}]}}]}}", crate::values::CAPABILITIES[cap]);
                for f in [&pids as &dyn Fn(&str) -> String, &binaries, &capsel] {
                    let p = process_hook(&f("In")).evaluate(&cx).is_some();
                    let n = process_hook(&f("NotIn")).evaluate(&cx).is_some();
                    prop_assert_eq!(p, !n);
                }
            }

            #[test]
            fn the_first_matching_selector_decides(
                wanted in prop::collection::vec(0i64..5, 1..6),
                arg in 0i64..5,
            ) {
                let a = args("[{index: 0, type: int}]");
                let yaml: Vec<String> = wanted
                    .iter()
                    .map(|w| format!("{{matchArgs: [{{index: 0, operator: Equal, values: ['{w}']}}]}}"))
                    .collect();
                let c = compile(&a, &sels(&format!("[{}]", yaml.join(", "))));
                let m = c.evaluate(&with_arg(ArgValue::Signed(arg)));
                let expect = wanted.iter().position(|&w| w == arg);
                prop_assert_eq!(m.and_then(|m| m.selector), expect);
                if let Some(m) = m {
                    prop_assert!(m.actions.len() == 1 && m.has(ActionKind::Post));
                }
            }
        }
    }
}
