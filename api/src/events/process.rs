//! `Process` and what hangs off it: pod, container, capabilities,
//! namespaces, credentials, binary properties.
//!
//! Field order is Tetragon's declaration order, so output follows protojson's
//! field order too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::protojson::{is_false, is_zero_u32, is_zero_u64, u64_string};
use super::{EnumValue, Timestamp};

/// A process as Tetragon reports it (`tetragon.Process`).
///
/// `pid`, `uid`, `auid`, `tid` and `in_init_tree` are protobuf wrapper types
/// in Tetragon: they are written whenever they are set, `0` and `false`
/// included, and left out only when unknown (`None`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Process {
    /// Cluster-wide unique id of this execution; see [`super::exec_id`].
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exec_id: String,
    /// Process id in the host pid namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Effective user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Current working directory.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cwd: String,
    /// Absolute path of the executed binary.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub binary: String,
    /// Arguments, joined by spaces (Tetragon quotes arguments containing spaces).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub arguments: String,
    /// Space-separated debugging flags (`execve`, `procFS`, `clone`,
    /// `rootcwd`, `truncArgs`, ...); not a reliable source of information.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub flags: String,
    /// When the execution started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    /// Audit (login) user id; 4294967295 when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auid: Option<u32>,
    /// The Kubernetes pod the process runs in, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
    /// The first 31 characters of the container id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub docker: String,
    /// `exec_id` of the parent process.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub parent_exec_id: String,
    /// Reference count in the agent's process cache.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub refcnt: u32,
    /// Capabilities of the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap: Option<Capabilities>,
    /// Linux namespaces of the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns: Option<Namespaces>,
    /// Thread id; equal to `pid` for the thread-group leader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    /// User and group ids, capabilities and user namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_credentials: Option<ProcessCredentials>,
    /// Properties of the executed binary (exec events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary_properties: Option<BinaryProperties>,
    /// The user record of `uid`, for host processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserRecord>,
    /// Whether a containerized process descends from the container's pid 1
    /// (false for `kubectl exec`, `nsenter`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_init_tree: Option<bool>,
    /// Environment variables given to the binary.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environment_variables: Vec<EnvVar>,
}

/// One environment variable. Tetragon's proto names these fields `Key` and
/// `Value`, capitalized, and so does its JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnvVar {
    /// Name.
    #[serde(rename = "Key", skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Value.
    #[serde(rename = "Value", skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// The Kubernetes pod of a process (`tetragon.Pod`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pod {
    /// Namespace.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// UID.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The container the process runs in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// All labels of the pod.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    /// Name of the workload owning the pod.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub workload: String,
    /// Kind of that workload (`Deployment`, `DaemonSet`, ...).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub workload_kind: String,
    /// All annotations of the pod.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
}

/// A container of a pod (`tetragon.Container`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Container {
    /// Container id with its runtime prefix (`containerd://...`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Container name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// When the container started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    /// Process id in the container's pid namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Whether the process looks like a Kubernetes exec probe.
    #[serde(skip_serializing_if = "is_false")]
    pub maybe_exec_probe: bool,
    /// Security context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

/// A container image (`tetragon.Image`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Image {
    /// Registry path and digest.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Registry path and tag.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A container's security context (`tetragon.SecurityContext`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityContext {
    /// Whether the container is privileged.
    #[serde(skip_serializing_if = "is_false")]
    pub privileged: bool,
}

/// Capability sets (`tetragon.Capabilities`), as `CapabilitiesType` names
/// (`CAP_SYS_ADMIN`; note Tetragon spells capability 1 `DAC_OVERRIDE`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// Permitted set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub permitted: Vec<EnumValue>,
    /// Effective set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub effective: Vec<EnumValue>,
    /// Inheritable set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inheritable: Vec<EnumValue>,
}

/// One Linux namespace (`tetragon.Namespace`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Namespace {
    /// Inode number.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub inum: u32,
    /// Whether it is the host's namespace.
    #[serde(skip_serializing_if = "is_false")]
    pub is_host: bool,
}

/// The namespaces of a process (`tetragon.Namespaces`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Namespaces {
    /// UTS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uts: Option<Namespace>,
    /// IPC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipc: Option<Namespace>,
    /// Mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mnt: Option<Namespace>,
    /// PID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<Namespace>,
    /// PID namespace of children.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_for_children: Option<Namespace>,
    /// Network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<Namespace>,
    /// Time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Namespace>,
    /// Time namespace of children.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_for_children: Option<Namespace>,
    /// Cgroup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Namespace>,
    /// User.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Namespace>,
}

/// A user namespace (`tetragon.UserNamespace`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserNamespace {
    /// Nesting level; 0 is the initial user namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<i32>,
    /// Owner user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Owner group id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// The namespace itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns: Option<Namespace>,
}

/// Credentials of a process (`tetragon.ProcessCredentials`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessCredentials {
    /// Real user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Real group id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Effective user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub euid: Option<u32>,
    /// Effective group id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egid: Option<u32>,
    /// Saved user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suid: Option<u32>,
    /// Saved group id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sgid: Option<u32>,
    /// File-system user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsuid: Option<u32>,
    /// File-system group id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsgid: Option<u32>,
    /// `SecureBitsType` names (`SecBitNoRoot`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub securebits: Vec<EnumValue>,
    /// Capability sets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caps: Option<Capabilities>,
    /// The user namespace the ids are relative to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_ns: Option<UserNamespace>,
}

/// An inode (`tetragon.InodeProperties`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InodeProperties {
    /// Inode number (a JSON string: protojson writes 64-bit integers as strings).
    #[serde(with = "u64_string", skip_serializing_if = "is_zero_u64")]
    pub number: u64,
    /// Link count; 0 means the file exists only in memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<u32>,
}

/// A file (`tetragon.FileProperties`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileProperties {
    /// Inode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode: Option<InodeProperties>,
    /// Path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
}

/// Properties of an executed binary (`tetragon.BinaryProperties`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BinaryProperties {
    /// Set-user-id applied by the execution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setuid: Option<u32>,
    /// Set-group-id applied by the execution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setgid: Option<u32>,
    /// `ProcessPrivilegesChanged` names (`PRIVILEGES_RAISED_EXEC_FILE_SETUID`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub privileges_changed: Vec<EnumValue>,
    /// Set for memfd, shared-memory and deleted binaries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileProperties>,
}

/// A user database record (`tetragon.UserRecord`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserRecord {
    /// User name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}
