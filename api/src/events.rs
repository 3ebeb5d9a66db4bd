//! Runtime events in the JSON form of Tetragon's export, so that parsers
//! written for Tetragon (`tetra getevents -o json`, the JSON export file) read
//! palisade's events unchanged.
//!
//! Tetragon writes each `tetragon.GetEventsResponse` with protojson and
//! `UseProtoNames: true` (`pkg/encoder/encoder.go`, `ProtojsonEncoder`), one
//! object per line. These types reproduce that form:
//!
//! - field names are the proto field names (`exec_id`, `pod_labels`, and the
//!   few CamelCase ones Tetragon declares such as `EnvVar.Key`);
//! - fields appear in declaration order, and an event carries exactly one of
//!   `process_exec`, `process_exit`, `process_kprobe`, `process_tracepoint`,
//!   `process_lsm`, followed by `node_name` and `time`;
//! - proto3 scalars are left out when zero, empty or false (`refcnt`,
//!   `status`, `cwd`, empty lists and maps); fields with presence are
//!   written whenever set, zero included: wrapper types (`pid`, `uid`,
//!   `auid`, `tid`, `in_init_tree`, written as bare numbers and booleans),
//!   sub-messages (`{}` when empty) and `oneof` members (`{"int_arg":0}`);
//! - 64-bit integers are JSON strings (`"size_arg":"4096"`), `bytes` are
//!   standard base64, enums are their value names (`KPROBE_ACTION_SIGKILL`),
//!   and times are RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits.
//!
//! Reading is as lenient as `tetra` (protojson with `DiscardUnknown`): unknown
//! fields are ignored, 64-bit integers may be numbers, bytes may be URL-safe
//! or unpadded, and unknown [`KprobeAction`] names read as
//! [`KprobeAction::Unknown`]. Byte-for-byte equality with Tetragon is not a
//! goal protojson allows: it inserts random spaces after commas on purpose,
//! so consumers must parse the JSON.
//!
//! `Display` on [`Event`] gives a one-line, plain-ASCII summary for humans.

mod args;
mod base64;
mod compact;
mod exec_id;
mod process;
mod protojson;
mod timestamp;

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

pub use args::{
    ArgValue, KernelModule, KprobeArgument, KprobeBpfAttr, KprobeBpfMap, KprobeBpfProg,
    KprobeCapability, KprobeCred, KprobeError, KprobeFile, KprobeLinuxBinprm, KprobeNetDev,
    KprobePath, KprobePerfEvent, KprobeSkb, KprobeSock, KprobeSockaddr, KprobeSockaddrUn,
    KprobeTruncatedBytes, KprobeUserNamespace, SyscallId,
};
pub use exec_id::{exec_id, parse_exec_id, ExecId};
pub use process::{
    BinaryProperties, Capabilities, Container, EnvVar, FileProperties, Image, InodeProperties,
    Namespace, Namespaces, Pod, Process, ProcessCredentials, SecurityContext, UserNamespace,
    UserRecord,
};
pub use timestamp::Timestamp;

use protojson::{is_zero_u32, is_zero_u64, u64_string};

/// Why an event, or a part of one, could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The input is not JSON, not an object, or a field has the wrong type.
    #[error("invalid event JSON: {source}")]
    Json {
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// One field (an event body or an argument) has the wrong shape.
    #[error("invalid {field}: {source}")]
    Field {
        /// The field's JSON name.
        field: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// None of Tetragon's event fields is present.
    #[error("not an event: expected one of the fields {}", EVENT_KINDS.join(", "))]
    NoEvent,
    /// More than one event field is present.
    #[error("an event holds exactly one event field, found {first} and {second}")]
    MultipleEvents {
        /// The first event field found.
        first: String,
        /// Another event field found.
        second: String,
    },
    /// A Tetragon event type palisade neither produces nor reads.
    #[error("{kind} events are not supported; palisade reads {}", EVENT_KINDS.join(", "))]
    UnsupportedEvent {
        /// Its field name (`process_uprobe`, ...).
        kind: String,
    },
    /// A `KprobeArgument` holds more than one argument field.
    #[error("an argument holds exactly one value field, found {first} and {second}")]
    MultipleArgs {
        /// The first argument field found.
        first: String,
        /// Another argument field found.
        second: String,
    },
    /// Malformed base64.
    #[error("invalid base64 at character {offset}: {reason}")]
    Base64 {
        /// Offset of the offending character.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Malformed `exec_id`.
    #[error("invalid exec_id {exec_id:?}: {reason}")]
    ExecId {
        /// The id as given.
        exec_id: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Malformed time.
    #[error("invalid time {input:?}: {reason} (expected RFC 3339 such as 2024-05-01T12:00:00.123456789Z)")]
    Timestamp {
        /// The text as given.
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A time before year 1 or after year 9999.
    #[error("time {seconds} s from the Unix epoch is outside years 0001 to 9999")]
    TimestampRange {
        /// Seconds since the Unix epoch.
        seconds: i64,
    },
    /// Nanoseconds not below one second.
    #[error("{nanos} ns is not below one second")]
    TimestampNanos {
        /// The nanoseconds given.
        nanos: u32,
    },
}

/// The value of a protobuf enum field Tetragon declares but palisade does not
/// interpret (capabilities, secure bits, BPF commands, taint bits, ...):
/// the value name as protojson writes it, or its number when protojson had no
/// name for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnumValue {
    /// A value name such as `CAP_SYS_ADMIN`.
    Name(String),
    /// A number with no name in the writer's schema.
    Number(i32),
}

impl From<&str> for EnumValue {
    fn from(name: &str) -> Self {
        Self::Name(name.to_owned())
    }
}

impl fmt::Display for EnumValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

/// What a hook did when it matched (`tetragon.KprobeAction`), written as
/// Tetragon's value names (`KPROBE_ACTION_SIGKILL`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum KprobeAction {
    /// No action recorded (value 0, left out of the JSON).
    #[default]
    Unknown,
    /// Emit the event (the default action).
    Post,
    /// Deprecated by Tetragon: track a file descriptor.
    FollowFd,
    /// Kill the process with SIGKILL.
    Sigkill,
    /// Deprecated by Tetragon: stop tracking a file descriptor.
    UnfollowFd,
    /// Override the hooked function's return value.
    Override,
    /// Deprecated by Tetragon: copy a file descriptor mapping.
    CopyFd,
    /// Fetch a URL from user space.
    GetUrl,
    /// Resolve a DNS name from user space.
    DnsLookup,
    /// Perform the actions but send no event.
    NoPost,
    /// Send a signal to the process.
    Signal,
    /// Start tracking a socket.
    TrackSock,
    /// Stop tracking a socket.
    UntrackSock,
    /// Notify the enforcer program.
    NotifyEnforcer,
    /// Clean up the enforcer notification state.
    CleanupEnforcerNotification,
    /// Set the first USDT argument.
    Set,
}

impl KprobeAction {
    /// Every action, in value order (index = protobuf number).
    pub const ALL: [KprobeAction; 16] = [
        Self::Unknown,
        Self::Post,
        Self::FollowFd,
        Self::Sigkill,
        Self::UnfollowFd,
        Self::Override,
        Self::CopyFd,
        Self::GetUrl,
        Self::DnsLookup,
        Self::NoPost,
        Self::Signal,
        Self::TrackSock,
        Self::UntrackSock,
        Self::NotifyEnforcer,
        Self::CleanupEnforcerNotification,
        Self::Set,
    ];

    /// Tetragon's value name, e.g. `KPROBE_ACTION_SIGKILL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "KPROBE_ACTION_UNKNOWN",
            Self::Post => "KPROBE_ACTION_POST",
            Self::FollowFd => "KPROBE_ACTION_FOLLOWFD",
            Self::Sigkill => "KPROBE_ACTION_SIGKILL",
            Self::UnfollowFd => "KPROBE_ACTION_UNFOLLOWFD",
            Self::Override => "KPROBE_ACTION_OVERRIDE",
            Self::CopyFd => "KPROBE_ACTION_COPYFD",
            Self::GetUrl => "KPROBE_ACTION_GETURL",
            Self::DnsLookup => "KPROBE_ACTION_DNSLOOKUP",
            Self::NoPost => "KPROBE_ACTION_NOPOST",
            Self::Signal => "KPROBE_ACTION_SIGNAL",
            Self::TrackSock => "KPROBE_ACTION_TRACKSOCK",
            Self::UntrackSock => "KPROBE_ACTION_UNTRACKSOCK",
            Self::NotifyEnforcer => "KPROBE_ACTION_NOTIFYENFORCER",
            Self::CleanupEnforcerNotification => "KPROBE_ACTION_CLEANUPENFORCERNOTIFICATION",
            Self::Set => "KPROBE_ACTION_SET",
        }
    }

    /// The protobuf number.
    pub fn number(self) -> i32 {
        // The variants are declared in protobuf order from 0, so the
        // discriminant is the number (a test checks it against `ALL`).
        self as i32
    }

    /// The action named `name` (`KPROBE_ACTION_POST`), if Tetragon has one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The action numbered `number`, if Tetragon has one.
    pub fn from_number(number: i64) -> Option<Self> {
        usize::try_from(number)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// Whether this is [`Self::Unknown`], which protojson leaves out.
    pub fn is_unknown(&self) -> bool {
        *self == Self::Unknown
    }
}

impl fmt::Display for KprobeAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for KprobeAction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for KprobeAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ActionVisitor;
        impl serde::de::Visitor<'_> for ActionVisitor {
            type Value = KprobeAction;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a KprobeAction name or number")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KprobeAction, E> {
                Ok(KprobeAction::from_name(v).unwrap_or_default())
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<KprobeAction, E> {
                Ok(KprobeAction::from_number(v).unwrap_or_default())
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<KprobeAction, E> {
                Ok(i64::try_from(v)
                    .ok()
                    .and_then(KprobeAction::from_number)
                    .unwrap_or_default())
            }
        }
        d.deserialize_any(ActionVisitor)
    }
}

/// One frame of a stack trace (`tetragon.StackTraceEntry`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StackTraceEntry {
    /// Address of the function (a JSON string).
    #[serde(with = "u64_string", skip_serializing_if = "is_zero_u64")]
    pub address: u64,
    /// Offset into the function (a JSON string).
    #[serde(with = "u64_string", skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Symbol name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub symbol: String,
    /// Module path, for user-space addresses.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub module: String,
}

/// A process started (`tetragon.ProcessExec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessExec {
    /// The new process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// Its parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Process>,
    /// Ancestors beyond the parent, nearest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<Process>,
}

/// A process ended (`tetragon.ProcessExit`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessExit {
    /// The process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// Its parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Process>,
    /// The signal that ended it (`SIGKILL`), if one did.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub signal: String,
    /// Exit status (left out when 0).
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub status: u32,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    /// Ancestors beyond the parent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<Process>,
}

/// A kprobe hook of a tracing policy matched (`tetragon.ProcessKprobe`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessKprobe {
    /// The process that called the function.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// Its parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Process>,
    /// The hooked kernel function (`security_file_open`, `__x64_sys_write`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub function_name: String,
    /// The arguments the policy asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<KprobeArgument>,
    /// The return value, for return probes.
    #[serde(rename = "return", skip_serializing_if = "Option::is_none")]
    pub return_value: Option<KprobeArgument>,
    /// What the hook did.
    #[serde(skip_serializing_if = "KprobeAction::is_unknown")]
    pub action: KprobeAction,
    /// Kernel stack trace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_stack_trace: Vec<StackTraceEntry>,
    /// The tracing policy.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub policy_name: String,
    /// What the return probe did.
    #[serde(skip_serializing_if = "KprobeAction::is_unknown")]
    pub return_action: KprobeAction,
    /// The policy's message.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The policy's tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// User-space stack trace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_stack_trace: Vec<StackTraceEntry>,
    /// Ancestors beyond the parent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<Process>,
    /// Extra data the policy asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<KprobeArgument>,
}

/// A tracepoint hook of a tracing policy matched (`tetragon.ProcessTracepoint`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessTracepoint {
    /// The process that hit the tracepoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// Its parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Process>,
    /// Tracepoint subsystem (`syscalls`, `raw_syscalls`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subsys: String,
    /// Tracepoint name (`sys_enter_openat`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub event: String,
    /// The arguments the policy asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<KprobeArgument>,
    /// The tracing policy.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub policy_name: String,
    /// What the hook did.
    #[serde(skip_serializing_if = "KprobeAction::is_unknown")]
    pub action: KprobeAction,
    /// The policy's message.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The policy's tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Ancestors beyond the parent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<Process>,
}

/// An LSM hook of a tracing policy matched (`tetragon.ProcessLsm`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessLsm {
    /// The process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// Its parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Process>,
    /// LSM hook name (`bprm_check_security`, `file_open`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub function_name: String,
    /// The tracing policy.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub policy_name: String,
    /// The policy's message.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The arguments the policy asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<KprobeArgument>,
    /// What the hook did.
    #[serde(skip_serializing_if = "KprobeAction::is_unknown")]
    pub action: KprobeAction,
    /// The policy's tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Ancestors beyond the parent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<Process>,
    /// IMA hash of the file, `algorithm:hex`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ima_hash: String,
}

/// The body of an [`Event`]: Tetragon's `oneof event`, written as the single
/// key `process_exec`, `process_exit`, ... (Boxed: the bodies are large and
/// of different sizes.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// `process_exec`.
    ProcessExec(Box<ProcessExec>),
    /// `process_exit`.
    ProcessExit(Box<ProcessExit>),
    /// `process_kprobe`.
    ProcessKprobe(Box<ProcessKprobe>),
    /// `process_tracepoint`.
    ProcessTracepoint(Box<ProcessTracepoint>),
    /// `process_lsm`.
    ProcessLsm(Box<ProcessLsm>),
}

impl From<ProcessExec> for EventKind {
    fn from(body: ProcessExec) -> Self {
        Self::ProcessExec(Box::new(body))
    }
}

impl From<ProcessExit> for EventKind {
    fn from(body: ProcessExit) -> Self {
        Self::ProcessExit(Box::new(body))
    }
}

impl From<ProcessKprobe> for EventKind {
    fn from(body: ProcessKprobe) -> Self {
        Self::ProcessKprobe(Box::new(body))
    }
}

impl From<ProcessTracepoint> for EventKind {
    fn from(body: ProcessTracepoint) -> Self {
        Self::ProcessTracepoint(Box::new(body))
    }
}

impl From<ProcessLsm> for EventKind {
    fn from(body: ProcessLsm) -> Self {
        Self::ProcessLsm(Box::new(body))
    }
}

impl EventKind {
    /// The process the event is about.
    pub fn process(&self) -> Option<&Process> {
        match self {
            Self::ProcessExec(e) => e.process.as_ref(),
            Self::ProcessExit(e) => e.process.as_ref(),
            Self::ProcessKprobe(e) => e.process.as_ref(),
            Self::ProcessTracepoint(e) => e.process.as_ref(),
            Self::ProcessLsm(e) => e.process.as_ref(),
        }
    }
}

/// The JSON names of [`EventKind`]'s variants (checked by a test).
const EVENT_KINDS: &[&str] = &[
    "process_exec",
    "process_exit",
    "process_kprobe",
    "process_tracepoint",
    "process_lsm",
];

/// Tetragon's other `oneof event` members, which palisade does not model.
const UNSUPPORTED_KINDS: &[&str] = &[
    "process_loader",
    "process_uprobe",
    "process_throttle",
    "process_usdt",
    "test",
    "rate_limit_info",
];

/// One runtime event, the equivalent of Tetragon's `GetEventsResponse`:
///
/// ```json
/// {"process_exec":{"process":{...},"parent":{...}},"node_name":"node-1","time":"2024-05-01T12:00:00.123456789Z"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The event itself.
    #[serde(flatten)]
    pub kind: EventKind,
    /// The node the event comes from.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// When the event happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    /// The cluster of the node.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_name: String,
    /// Labels of the node.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
}

/// The envelope fields next to the event body.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Envelope {
    node_name: String,
    time: Option<Timestamp>,
    cluster_name: String,
    node_labels: BTreeMap<String, String>,
}

impl Event {
    /// An event of `kind` from `node_name` at `time`.
    pub fn new(kind: impl Into<EventKind>, node_name: impl Into<String>, time: Timestamp) -> Self {
        Self {
            kind: kind.into(),
            node_name: node_name.into(),
            time: Some(time),
            cluster_name: String::new(),
            node_labels: BTreeMap::new(),
        }
    }

    /// Reads one line of Tetragon's (or palisade's) JSON export.
    pub fn from_json_line(line: &str) -> Result<Self, EventError> {
        let object = serde_json::from_str(line).map_err(|source| EventError::Json { source })?;
        Self::from_object(object)
    }

    /// The event as one line of JSON, newline included.
    pub fn to_json_line(&self) -> Result<String, EventError> {
        let mut line = serde_json::to_string(self).map_err(|source| EventError::Json { source })?;
        line.push('\n');
        Ok(line)
    }

    fn from_object(mut object: Map<String, Value>) -> Result<Self, EventError> {
        let mut present = EVENT_KINDS
            .iter()
            .chain(UNSUPPORTED_KINDS)
            .filter(|k| object.contains_key(**k));
        let kind = match (present.next(), present.next()) {
            (None, _) => return Err(EventError::NoEvent),
            (Some(first), Some(second)) => {
                return Err(EventError::MultipleEvents {
                    first: (*first).to_owned(),
                    second: (*second).to_owned(),
                })
            }
            (Some(kind), None) if UNSUPPORTED_KINDS.contains(kind) => {
                return Err(EventError::UnsupportedEvent {
                    kind: (*kind).to_owned(),
                })
            }
            (Some(kind), None) => *kind,
        };
        let body = object.remove_entry(kind).into_iter().collect();
        let kind =
            EventKind::deserialize(Value::Object(body)).map_err(|source| EventError::Field {
                field: kind.to_owned(),
                source,
            })?;
        let envelope = Envelope::deserialize(Value::Object(object))
            .map_err(|source| EventError::Json { source })?;
        Ok(Self {
            kind,
            node_name: envelope.node_name,
            time: envelope.time,
            cluster_name: envelope.cluster_name,
            node_labels: envelope.node_labels,
        })
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_object(Map::deserialize(d)?).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests;
