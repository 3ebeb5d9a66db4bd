//! The serde model of Tetragon's `cilium.io/v1alpha1` `TracingPolicy` and
//! `TracingPolicyNamespaced`, field for field (camelCase names, unknown
//! fields refused).
//!
//! # Selector semantics
//!
//! A hook (kprobe, tracepoint, LSM hook) has a list of selectors.
//! - The filters *within* one selector (`matchArgs`, `matchBinaries`,
//!   `matchPIDs`, ...) are ANDed, and so are the entries of each filter list.
//! - The selectors are ORed and short-circuited: the *first* selector whose
//!   filters all match decides, and its `matchActions` are applied.
//! - A hook without selectors, or a matching selector without
//!   `matchActions`, posts an event (default action `Post`).
//! - If no selector matches, nothing happens (no event).
//! - Within one filter entry, `values` are ORed (`In`: any value matches;
//!   `NotIn`/`Not*`: no value matches).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `TracingPolicy` (cluster-wide) or `TracingPolicyNamespaced`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TracingPolicyKind {
    /// Cluster-scoped `TracingPolicy`.
    TracingPolicy,
    /// Namespaced `TracingPolicyNamespaced`: applies only to pods of its
    /// namespace.
    TracingPolicyNamespaced,
}

impl fmt::Display for TracingPolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TracingPolicy => "TracingPolicy",
            Self::TracingPolicyNamespaced => "TracingPolicyNamespaced",
        })
    }
}

/// One tracing policy document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingPolicy {
    /// Always `cilium.io/v1alpha1`.
    pub api_version: String,
    /// The kind.
    pub kind: TracingPolicyKind,
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// The specification.
    pub spec: TracingPolicySpec,
}

/// The subset of Kubernetes object metadata palisade reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Object name.
    pub name: String,
    /// Namespace (for `TracingPolicyNamespaced`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `spec` of a tracing policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingPolicySpec {
    /// Kernel function probes (kprobe, and kretprobe when `return: true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kprobes: Vec<KProbeSpec>,
    /// Tracepoints (`raw: true` for raw tracepoints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracepoints: Vec<TracepointSpec>,
    /// BPF LSM hooks.
    #[serde(default, rename = "lsmhooks", skip_serializing_if = "Vec::is_empty")]
    pub lsm_hooks: Vec<LsmHookSpec>,
    /// User-space probes. Parsed, but palisade refuses them.
    #[serde(default, rename = "uprobes", skip_serializing_if = "Vec::is_empty")]
    pub uprobes: Vec<UProbeSpec>,
    /// User statically-defined tracepoints. Parsed, but palisade refuses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usdts: Vec<UsdtSpec>,
    /// Enable loader (mmap of executable code) events.
    #[serde(default, skip_serializing_if = "is_false")]
    pub loader: bool,
    /// Named lists referenced as `list:NAME` from `call`, `enforcers` and
    /// `InMap`/`NotInMap` values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lists: Vec<ListSpec>,
    /// Policy options (`policy-mode`, `override-method`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<OptionSpec>,
    /// Pods the policy applies to (absent: all, including the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Containers the policy applies to (only the `name` key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_selector: Option<LabelSelector>,
    /// Syscall enforcers fed by the `NotifyEnforcer` action.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enforcers: Vec<EnforcerSpec>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A Kubernetes label selector (`matchLabels` AND `matchExpressions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Exact label matches.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based label requirement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: LabelSelectorOperator,
    /// Values (`In`/`NotIn` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Operator of a [`LabelSelectorRequirement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LabelSelectorOperator {
    /// Label value is one of `values`.
    In,
    /// Label absent or its value is none of `values`.
    NotIn,
    /// Label present.
    Exists,
    /// Label absent.
    DoesNotExist,
}

/// Conditions under which a kprobe is silently skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KprobeIgnore {
    /// Skip the kprobe (instead of failing the policy) when the function
    /// does not exist on this kernel.
    #[serde(default)]
    pub call_not_found: bool,
}

/// A kprobe on a kernel function (or a list of them, `call: list:NAME`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KProbeSpec {
    /// Function name, or `list:NAME` for every function of a list.
    pub call: String,
    /// Also hook the return (kretprobe) and report `returnArg`.
    #[serde(default)]
    pub r#return: bool,
    /// The function is a syscall (the name is resolved to the arch-specific
    /// symbol, e.g. `sys_dup` → `__x64_sys_dup`). Tetragon's CRD defaults it
    /// to true; a YAML file that omits it reads as false here, exactly as
    /// Tetragon's own YAML loader does.
    #[serde(default)]
    pub syscall: bool,
    /// Message (at most 256 characters) included in events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Arguments to read and report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<KProbeArg>,
    /// Return value to read and report (required with `return: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_arg: Option<KProbeArg>,
    /// Action on the return value: `TrackSock`, `UntrackSock` or `Post`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_arg_action: Option<ActionKind>,
    /// Selectors (ORed, first match wins; see the module documentation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<Selector>,
    /// Tags included in events (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// When to skip this kprobe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<KprobeIgnore>,
}

/// A tracepoint (`raw: true`: a raw tracepoint, whose args are the
/// tracepoint function's arguments instead of the format fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracepointSpec {
    /// Subsystem (`syscalls`, `sched`, `raw_syscalls`...).
    pub subsystem: String,
    /// Event (`sys_enter_openat`...).
    pub event: String,
    /// Message (at most 256 characters) included in events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Fields to read and report (index into the format fields).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<KProbeArg>,
    /// Selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<Selector>,
    /// Tags included in events (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Raw tracepoint.
    #[serde(default, skip_serializing_if = "is_false")]
    pub raw: bool,
}

/// A BPF LSM hook (`hook: file_open` hooks `security_file_open`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LsmHookSpec {
    /// Hook name without the `security_` prefix.
    pub hook: String,
    /// Message (at most 256 characters) included in events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Arguments to read and report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<KProbeArg>,
    /// Selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<Selector>,
    /// Tags included in events (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A uprobe. Parsed so that the refusal can name it; palisade does not
/// attach uprobes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UProbeSpec {
    /// Traced binary.
    pub path: String,
    /// BTF file for the binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub btf_path: Option<String>,
    /// Traced symbols.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<String>,
    /// Traced offsets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<u64>,
    /// Traced addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<u64>,
    /// Reference counter offsets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ref_ctr_offsets: Vec<u64>,
    /// Message included in events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<Selector>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<KProbeArg>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Hook the return too.
    #[serde(default)]
    pub r#return: bool,
    /// Return value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_arg: Option<KProbeArg>,
    /// Accepted digests of the binary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binary_digests: Vec<String>,
}

/// A USDT probe. Parsed so that the refusal can name it; palisade does not
/// attach USDTs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsdtSpec {
    /// Traced binary.
    pub path: String,
    /// BTF file for the binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub btf_path: Option<String>,
    /// Provider.
    pub provider: String,
    /// Probe name.
    pub name: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Message included in events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<KProbeArg>,
    /// Selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<Selector>,
}

/// An argument to read at the hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KProbeArg {
    /// Position of the argument in the function prototype (or of the field
    /// in the tracepoint format).
    #[serde(default)]
    pub index: u32,
    /// How to read and report it.
    #[serde(default)]
    pub r#type: ArgType,
    /// Attribute path to follow from the argument (`mm.owner.pid`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resolve: String,
    /// 1-based position of the argument holding this buffer's size
    /// (`char_buf`, `char_iovec`; 0 means none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size_arg_index: u32,
    /// Read the buffer at return (`char_buf`, `char_iovec`): needs a kretprobe.
    #[serde(default, skip_serializing_if = "is_false")]
    pub return_copy: bool,
    /// Read up to 327360 bytes instead of 4096 (`char_buf`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub max_data: bool,
    /// Label of the argument in events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// The type of a hook argument (Tetragon's names; aliases accepted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // Variants are Tetragon's type names.
pub enum ArgType {
    #[default]
    Auto,
    Int,
    #[serde(alias = "sint8")]
    Int8,
    Uint8,
    #[serde(alias = "sint16")]
    Int16,
    Uint16,
    #[serde(alias = "sint32")]
    Int32,
    Uint32,
    #[serde(alias = "sint64")]
    Int64,
    Uint64,
    Long,
    Ulong,
    SizeT,
    CharBuf,
    CharIovec,
    ConstBuf,
    String,
    DataLoc,
    Fd,
    File,
    Filename,
    Path,
    Dentry,
    LinuxBinprm,
    Skb,
    Sock,
    Socket,
    Sockaddr,
    SockaddrUn,
    NetDevice,
    Cred,
    Capability,
    KernelCapT,
    CapInheritable,
    CapPermitted,
    CapEffective,
    UserNamespace,
    BpfAttr,
    BpfCmd,
    BpfMap,
    BpfProg,
    PerfEvent,
    Kiocb,
    IovIter,
    LoadInfo,
    Module,
    Syscall64,
    Nop,
}

/// What kind of value an [`ArgType`] holds, for operator checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgClass {
    /// A signed integer of the given width in bits.
    Signed(u32),
    /// An unsigned integer of the given width in bits.
    Unsigned(u32),
    /// Compared as a string (names, paths, buffers).
    Text,
    /// A socket (`sock`, `socket`, `skb`): ports, addresses, protocol, state.
    Socket,
    /// A `sockaddr`: source address/port and family only.
    SockAddr,
    /// A `sockaddr_un`: family and string operators.
    SockAddrUn,
    /// A capability set (`kernel_cap_t`, `cap_*`).
    CapSet,
    /// Reported only; no filter operators apply.
    Opaque,
}

impl ArgType {
    /// The class of values of this type.
    pub fn class(self) -> ArgClass {
        use ArgType as T;
        match self {
            T::Int | T::Int32 => ArgClass::Signed(32),
            T::Int8 => ArgClass::Signed(8),
            T::Int16 => ArgClass::Signed(16),
            T::Int64 | T::Long => ArgClass::Signed(64),
            T::Uint8 => ArgClass::Unsigned(8),
            T::Uint16 => ArgClass::Unsigned(16),
            T::Uint32 | T::Capability | T::BpfCmd => ArgClass::Unsigned(32),
            T::Uint64 | T::Ulong | T::SizeT | T::Syscall64 | T::Auto => ArgClass::Unsigned(64),
            T::CharBuf
            | T::String
            | T::DataLoc
            | T::Fd
            | T::File
            | T::Filename
            | T::Path
            | T::Dentry
            | T::LinuxBinprm
            | T::NetDevice => ArgClass::Text,
            T::Skb | T::Sock | T::Socket => ArgClass::Socket,
            T::Sockaddr => ArgClass::SockAddr,
            T::SockaddrUn => ArgClass::SockAddrUn,
            T::KernelCapT | T::CapInheritable | T::CapPermitted | T::CapEffective => {
                ArgClass::CapSet
            }
            T::CharIovec
            | T::ConstBuf
            | T::Cred
            | T::UserNamespace
            | T::BpfAttr
            | T::BpfMap
            | T::BpfProg
            | T::PerfEvent
            | T::Kiocb
            | T::IovIter
            | T::LoadInfo
            | T::Module
            | T::Nop => ArgClass::Opaque,
        }
    }

    /// The YAML spelling.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One selector: its filters are ANDed; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    /// Process ID filters.
    #[serde(default, rename = "matchPIDs", skip_serializing_if = "Vec::is_empty")]
    pub match_pids: Vec<PidSelector>,
    /// Argument filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_args: Vec<ArgSelector>,
    /// Actions when the selector matches (default: `Post`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_actions: Vec<ActionSelector>,
    /// Return value filters (kretprobe).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_return_args: Vec<ArgSelector>,
    /// Actions at return when `matchReturnArgs` match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_return_actions: Vec<ActionSelector>,
    /// Executable path filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_binaries: Vec<BinarySelector>,
    /// Parent executable path filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_parent_binaries: Vec<BinarySelector>,
    /// Namespace filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_namespaces: Vec<NamespaceSelector>,
    /// Namespace change filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_namespace_changes: Vec<NamespaceChangesSelector>,
    /// Capability filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_capabilities: Vec<CapabilitiesSelector>,
    /// Capability change filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_capability_changes: Vec<CapabilitiesSelector>,
}

/// `In` or `NotIn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SetOperator {
    /// Matches when the value is one of `values`.
    In,
    /// Matches when the value is none of `values`.
    NotIn,
}

/// Process ID filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PidSelector {
    /// Operator.
    pub operator: SetOperator,
    /// PIDs.
    pub values: Vec<u32>,
    /// PIDs are in the process's PID namespace.
    #[serde(default, rename = "isNamespacePID")]
    pub is_namespace_pid: bool,
    /// Also match descendants.
    #[serde(default)]
    pub follow_forks: bool,
}

/// Argument filter. `index` names the argument by its function-prototype
/// position (it must equal the `index` of a declared arg); `args`, when
/// present, names args by their position in the spec's `args` list instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgSelector {
    /// Prototype position of the argument.
    #[serde(default)]
    pub index: u32,
    /// Positions in the spec's `args` list (two for `CapabilitiesGained`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<u32>,
    /// Operator.
    pub operator: ArgOperator,
    /// Values (ORed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<ScalarString>,
}

/// A YAML scalar read as a string (`53` and `"53"` are the same value).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScalarString(pub String);

impl ScalarString {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ScalarString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ScalarString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ScalarString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Argument filter operators (Tetragon's names; lower-case and short
/// aliases accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // Variants are Tetragon's operator names.
pub enum ArgOperator {
    #[serde(alias = "eq")]
    Equal,
    #[serde(alias = "neq")]
    NotEqual,
    #[serde(alias = "prefix")]
    Prefix,
    #[serde(alias = "notprefix")]
    NotPrefix,
    #[serde(alias = "postfix")]
    Postfix,
    #[serde(alias = "notpostfix")]
    NotPostfix,
    #[serde(alias = "GT", alias = "gt")]
    GreaterThan,
    #[serde(alias = "LT", alias = "lt")]
    LessThan,
    #[serde(alias = "mask")]
    Mask,
    InMap,
    NotInMap,
    InRange,
    NotInRange,
    SubString,
    SubStringIgnCase,
    #[serde(rename = "SPort", alias = "sport", alias = "Sport")]
    SPort,
    #[serde(rename = "NotSPort", alias = "notsport", alias = "NotSport")]
    NotSPort,
    #[serde(rename = "SPortPriv", alias = "sportpriv", alias = "SportPriv")]
    SPortPriv,
    #[serde(
        rename = "NotSPortPriv",
        alias = "notsportpriv",
        alias = "NotSportPriv"
    )]
    NotSPortPriv,
    #[serde(rename = "DPort", alias = "dport", alias = "Dport")]
    DPort,
    #[serde(rename = "NotDPort", alias = "notdport", alias = "NotDport")]
    NotDPort,
    #[serde(rename = "DPortPriv", alias = "dportpriv", alias = "DportPriv")]
    DPortPriv,
    #[serde(
        rename = "NotDPortPriv",
        alias = "notdportpriv",
        alias = "NotDportPriv"
    )]
    NotDPortPriv,
    #[serde(rename = "SAddr", alias = "saddr", alias = "Saddr")]
    SAddr,
    #[serde(rename = "NotSAddr", alias = "notsaddr", alias = "NotSaddr")]
    NotSAddr,
    #[serde(rename = "DAddr", alias = "daddr", alias = "Daddr")]
    DAddr,
    #[serde(rename = "NotDAddr", alias = "notdaddr", alias = "NotDaddr")]
    NotDAddr,
    #[serde(alias = "protocol")]
    Protocol,
    #[serde(alias = "family")]
    Family,
    #[serde(alias = "state")]
    State,
    CapabilitiesGained,
    FileType,
    NotFileType,
    /// CEL expressions: parsed, refused (not supported).
    CelExpr,
}

/// Executable path filter operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum BinaryOperator {
    In,
    NotIn,
    Prefix,
    NotPrefix,
    Postfix,
    NotPostfix,
}

/// Executable path filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BinarySelector {
    /// Operator.
    pub operator: BinaryOperator,
    /// Paths (or prefixes/suffixes).
    pub values: Vec<String>,
    /// Also match children of matching binaries.
    #[serde(default, skip_serializing_if = "is_false")]
    pub follow_children: bool,
}

/// Linux namespace kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum NamespaceKind {
    Uts,
    Ipc,
    Mnt,
    Pid,
    PidForChildren,
    Net,
    Time,
    TimeForChildren,
    Cgroup,
    User,
}

/// Namespace filter: the process's namespace of kind `namespace` is (not)
/// one of `values` (inode numbers, or `host_ns` for the host's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSelector {
    /// Namespace kind.
    pub namespace: NamespaceKind,
    /// Operator.
    pub operator: SetOperator,
    /// Namespace inode numbers or `host_ns`.
    pub values: Vec<ScalarString>,
}

/// Namespace change filter: the call changes a namespace of these kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceChangesSelector {
    /// Operator.
    pub operator: SetOperator,
    /// Namespace kinds.
    pub values: Vec<NamespaceKind>,
}

/// Which capability set to test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum CapabilitySet {
    #[default]
    Effective,
    Inheritable,
    Permitted,
}

/// Capability filter (`In`: the set has any of `values`; `NotIn`: none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapabilitiesSelector {
    /// Capability set.
    #[serde(default)]
    pub r#type: CapabilitySet,
    /// Operator.
    pub operator: SetOperator,
    /// Test the capabilities relative to the process's user namespace.
    #[serde(default)]
    pub is_namespace_capability: bool,
    /// `CAP_*` names.
    pub values: Vec<String>,
}

/// Action names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionKind {
    /// Emit an event (the default).
    Post,
    /// Do not emit an event.
    NoPost,
    /// Kill the current process with SIGKILL.
    Sigkill,
    /// Send signal `argSig` to the current process.
    Signal,
    /// Make the hooked function return `argError` without running it
    /// (kprobes on error-injectable functions, LSM hooks).
    Override,
    /// Fetch `argUrl` (an external signal of the match).
    GetUrl,
    /// Resolve `argFqdn` (an external signal of the match).
    DnsLookup,
    /// Start tracking the socket in arg `argSock`.
    TrackSock,
    /// Stop tracking the socket in arg `argSock`.
    UntrackSock,
    /// Tell the syscall enforcer (spec.enforcers) to fail the syscall with
    /// `argError` and/or send `argSig`.
    NotifyEnforcer,
    /// Clear a pending enforcer notification.
    CleanupEnforcerNotification,
    /// Write `argValue` into arg `argIndex` (USDT only).
    Set,
    /// Removed from Tetragon; refused.
    #[serde(rename = "FollowFD")]
    FollowFd,
    /// Removed from Tetragon; refused.
    #[serde(rename = "UnfollowFD")]
    UnfollowFd,
    /// Removed from Tetragon; refused.
    #[serde(rename = "CopyFD")]
    CopyFd,
}

/// Scope of a `Post` rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitScope {
    /// Per thread (default).
    Thread,
    /// Per process (all its threads).
    Process,
    /// For everyone.
    Global,
}

/// One action and its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionSelector {
    /// The action.
    pub action: ActionKind,
    /// URL (`GetUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg_url: Option<String>,
    /// FQDN (`DnsLookup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg_fqdn: Option<String>,
    /// Error to return (`Override`, `NotifyEnforcer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg_error: Option<i32>,
    /// Signal number (`Signal`, `NotifyEnforcer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg_sig: Option<u32>,
    /// Socket arg index (`TrackSock`, `UntrackSock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg_sock: Option<u32>,
    /// Arg index (`Set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg_index: Option<u32>,
    /// Value (`Set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg_value: Option<u32>,
    /// FD arg (`FollowFD`, removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg_fd: Option<u32>,
    /// Name arg (`FollowFD`, removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg_name: Option<u32>,
    /// Minimum interval between identical events (`Post`): `N`, `Ns`,
    /// `Nm` or `Nh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Scope of `rateLimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_scope: Option<RateLimitScope>,
    /// Include the kernel stack (`Post`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub kernel_stack_trace: bool,
    /// Include the user stack (`Post`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub user_stack_trace: bool,
    /// Include the IMA hash of the file (`Post`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ima_hash: bool,
}

/// List value types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListType {
    /// Syscall names given in `values`.
    Syscalls,
    /// Every syscall of the kernel (generated by the agent).
    GeneratedSyscalls,
    /// Kernel functions matching `pattern` (from ftrace's available
    /// functions, generated by the agent).
    GeneratedFtrace,
}

/// A named list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListSpec {
    /// Name, referenced as `list:NAME`.
    pub name: String,
    /// Values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Type (absent: plain values, usable in `InMap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<ListType>,
    /// Regular expression for `generated_ftrace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Already validated.
    #[serde(default, skip_serializing_if = "is_false")]
    pub validated: bool,
}

/// A policy option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OptionSpec {
    /// Option name.
    pub name: String,
    /// Option value.
    #[serde(default)]
    pub value: String,
}

/// A syscall enforcer: the syscalls (or `list:NAME`) at whose entry
/// `NotifyEnforcer` decisions are applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnforcerSpec {
    /// Syscalls or `list:NAME`.
    pub calls: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_read_as_canonical_names() {
        let op: ArgOperator = serde_yaml::from_str("GT").expect("GT");
        assert_eq!(op, ArgOperator::GreaterThan);
        let op: ArgOperator = serde_yaml::from_str("NotSportPriv").expect("alias");
        assert_eq!(op, ArgOperator::NotSPortPriv);
        let ty: ArgType = serde_yaml::from_str("sint32").expect("sint32");
        assert_eq!(ty, ArgType::Int32);
        assert_eq!(ArgType::SizeT.name(), "size_t");
        assert_eq!(ArgType::Skb.class(), ArgClass::Socket);
    }

    #[test]
    fn scalar_values_accept_numbers() {
        let v: Vec<ScalarString> = serde_yaml::from_str("[53, \"x\", -1]").expect("values");
        assert_eq!(
            v.iter().map(ScalarString::as_str).collect::<Vec<_>>(),
            ["53", "x", "-1"]
        );
    }
}
