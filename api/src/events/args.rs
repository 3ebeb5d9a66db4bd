//! `KprobeArgument`: one argument (or return value) of a hook, as Tetragon's
//! `oneof arg` plus an optional `label`.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::process::{ProcessCredentials, UserNamespace};
use super::protojson::{bytes_base64, i64_string, is_zero_u32, is_zero_u64, u64_string};
use super::{EnumValue, EventError, Namespace};

/// One argument of a kprobe, tracepoint, LSM hook or uprobe event
/// (`tetragon.KprobeArgument`), e.g. `{"file_arg":{"path":"/etc/passwd"},"label":"file"}`.
///
/// Reading tolerates argument kinds this type does not know (a newer
/// Tetragon): they leave [`Self::arg`] at `None`, as protojson's
/// `DiscardUnknown` would. Two argument kinds in one object are an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KprobeArgument {
    /// The value; `None` when unset or of a kind unknown to palisade.
    #[serde(flatten)]
    pub arg: Option<ArgValue>,
    /// The `label` the policy gave the argument.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub label: String,
}

impl KprobeArgument {
    /// An unlabelled argument.
    pub fn new(arg: ArgValue) -> Self {
        Self {
            arg: Some(arg),
            label: String::new(),
        }
    }
}

/// The value of a [`KprobeArgument`], one variant per member of Tetragon's
/// `oneof arg`, serialized under the member's name. Oneof members are
/// written even when zero (`{"int_arg":0}`), as protojson does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgValue {
    /// `string`, `char_buf` and similar.
    StringArg(String),
    /// `int` (32-bit signed).
    IntArg(i32),
    /// `skb` (`struct sk_buff *`).
    SkbArg(KprobeSkb),
    /// `size_t` (64-bit, written as a JSON string).
    SizeArg(#[serde(with = "u64_string")] u64),
    /// `char_buf` and `char_iovec` (base64).
    BytesArg(#[serde(with = "bytes_base64")] Vec<u8>),
    /// `path` (`struct path *`).
    PathArg(KprobePath),
    /// `file` (`struct file *`).
    FileArg(KprobeFile),
    /// A buffer cut at the configured maximum.
    TruncatedBytesArg(KprobeTruncatedBytes),
    /// `sock` (`struct sock *`).
    SockArg(KprobeSock),
    /// `cred` (`struct cred *`) capability sets.
    CredArg(KprobeCred),
    /// `long` (64-bit signed, written as a JSON string).
    LongArg(#[serde(with = "i64_string")] i64),
    /// `bpf_attr`.
    BpfAttrArg(KprobeBpfAttr),
    /// `perf_event`.
    PerfEventArg(KprobePerfEvent),
    /// `bpf_map`.
    BpfMapArg(KprobeBpfMap),
    /// `uint32`.
    UintArg(u32),
    /// `user_namespace`, old form (deprecated by Tetragon in favour of `user_ns_arg`).
    UserNamespaceArg(KprobeUserNamespace),
    /// `capability`.
    CapabilityArg(KprobeCapability),
    /// `cred` with ids, capabilities and user namespace.
    ProcessCredentialsArg(ProcessCredentials),
    /// `user_namespace`.
    UserNsArg(UserNamespace),
    /// `module` (`struct module *`).
    ModuleArg(KernelModule),
    /// `kernel_cap_t`, hexadecimal.
    KernelCapTArg(String),
    /// `cap_inheritable`, hexadecimal.
    CapInheritableArg(String),
    /// `cap_permitted`, hexadecimal.
    CapPermittedArg(String),
    /// `cap_effective`, hexadecimal.
    CapEffectiveArg(String),
    /// `linux_binprm`.
    LinuxBinprmArg(KprobeLinuxBinprm),
    /// `net_device`.
    NetDevArg(KprobeNetDev),
    /// `bpf_cmd`, a `BpfCmd` name (`BPF_PROG_LOAD`).
    BpfCmdArg(EnumValue),
    /// `syscall64`: syscall number and ABI.
    SyscallId(SyscallId),
    /// `sockaddr` (`struct sockaddr *`, inet families).
    SockaddrArg(KprobeSockaddr),
    /// `bpf_prog`.
    BpfProgArg(KprobeBpfProg),
    /// An argument Tetragon failed to read.
    ErrorArg(KprobeError),
    /// `sockaddr` of the unix family.
    SockaddrunArg(KprobeSockaddrUn),
}

/// The JSON names of [`ArgValue`]'s variants, i.e. of Tetragon's `oneof arg`
/// members (checked against the enum by a test).
const ARG_KINDS: &[&str] = &[
    "string_arg",
    "int_arg",
    "skb_arg",
    "size_arg",
    "bytes_arg",
    "path_arg",
    "file_arg",
    "truncated_bytes_arg",
    "sock_arg",
    "cred_arg",
    "long_arg",
    "bpf_attr_arg",
    "perf_event_arg",
    "bpf_map_arg",
    "uint_arg",
    "user_namespace_arg",
    "capability_arg",
    "process_credentials_arg",
    "user_ns_arg",
    "module_arg",
    "kernel_cap_t_arg",
    "cap_inheritable_arg",
    "cap_permitted_arg",
    "cap_effective_arg",
    "linux_binprm_arg",
    "net_dev_arg",
    "bpf_cmd_arg",
    "syscall_id",
    "sockaddr_arg",
    "bpf_prog_arg",
    "error_arg",
    "sockaddrun_arg",
];

impl<'de> Deserialize<'de> for KprobeArgument {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut object = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let label = match object.remove("label") {
            Some(v) => String::deserialize(v).map_err(D::Error::custom)?,
            None => String::new(),
        };
        let mut arg: Option<(String, ArgValue)> = None;
        for (kind, value) in object {
            if !ARG_KINDS.contains(&kind.as_str()) {
                continue;
            }
            if let Some((first, _)) = arg {
                return Err(D::Error::custom(EventError::MultipleArgs {
                    first,
                    second: kind,
                }));
            }
            let single = serde_json::Value::Object([(kind.clone(), value)].into_iter().collect());
            let value = ArgValue::deserialize(single).map_err(|source| {
                D::Error::custom(EventError::Field {
                    field: kind.clone(),
                    source,
                })
            })?;
            arg = Some((kind, value));
        }
        Ok(Self {
            arg: arg.map(|(_, v)| v),
            label,
        })
    }
}

/// `struct sk_buff` (`tetragon.KprobeSkb`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeSkb {
    /// Packet hash.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub hash: u32,
    /// Length.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub len: u32,
    /// Priority.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub priority: u32,
    /// Mark.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub mark: u32,
    /// Source address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub saddr: String,
    /// Destination address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub daddr: String,
    /// Source port.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub sport: u32,
    /// Destination port.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub dport: u32,
    /// IP protocol number.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub proto: u32,
    /// Security path length.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub sec_path_len: u32,
    /// Security path outbound length.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub sec_path_olen: u32,
    /// Protocol name (`IPPROTO_TCP`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Address family (`AF_INET`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub family: String,
}

/// `struct sock` (`tetragon.KprobeSock`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeSock {
    /// Address family (`AF_INET`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub family: String,
    /// Socket type (`SOCK_STREAM`).
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub sock_type: String,
    /// Protocol (`IPPROTO_TCP`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Mark.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub mark: u32,
    /// Priority.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub priority: u32,
    /// Source address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub saddr: String,
    /// Destination address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub daddr: String,
    /// Source port.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub sport: u32,
    /// Destination port.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub dport: u32,
    /// Socket cookie (a JSON string).
    #[serde(with = "u64_string", skip_serializing_if = "is_zero_u64")]
    pub cookie: u64,
    /// TCP state (`TCP_ESTABLISHED`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub state: String,
}

/// `struct sockaddr` of an inet family (`tetragon.KprobeSockaddr`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeSockaddr {
    /// Address family.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub family: String,
    /// Address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// Port.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub port: u32,
}

/// `struct sockaddr_un` (`tetragon.KprobeSockaddrUn`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeSockaddrUn {
    /// Address family (`AF_UNIX`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub family: String,
    /// Socket path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
}

/// `struct net_device` (`tetragon.KprobeNetDev`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeNetDev {
    /// Interface name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// `struct path` (`tetragon.KprobePath`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobePath {
    /// Mount point.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mount: String,
    /// Path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Flags.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub flags: String,
    /// Permission string (`-rw-r--r--`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub permission: String,
}

/// `struct file` (`tetragon.KprobeFile`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeFile {
    /// Mount point.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mount: String,
    /// Path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Flags.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub flags: String,
    /// Permission string (`-rw-r--r--`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub permission: String,
}

/// A buffer cut short (`tetragon.KprobeTruncatedBytes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeTruncatedBytes {
    /// The bytes kept (base64; left out when empty).
    #[serde(with = "bytes_base64", skip_serializing_if = "Vec::is_empty")]
    pub bytes_arg: Vec<u8>,
    /// The original size (a JSON string).
    #[serde(with = "u64_string", skip_serializing_if = "is_zero_u64")]
    pub orig_size: u64,
}

/// Capability sets of a `struct cred` (`tetragon.KprobeCred`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeCred {
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

/// `struct linux_binprm` (`tetragon.KprobeLinuxBinprm`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeLinuxBinprm {
    /// Path of the binary.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Flags.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub flags: String,
    /// Permission string (`-rwxr-xr-x`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub permission: String,
}

/// A capability (`tetragon.KprobeCapability`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeCapability {
    /// Capability number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<i32>,
    /// Capability name (`CAP_SYS_ADMIN`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A user namespace, old form (`tetragon.KprobeUserNamespace`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeUserNamespace {
    /// Nesting level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<i32>,
    /// Owner user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<u32>,
    /// Owner group id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
    /// The namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns: Option<Namespace>,
}

/// `union bpf_attr` of a program load (`tetragon.KprobeBpfAttr`; Tetragon
/// spells these field names in CamelCase).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeBpfAttr {
    /// Program type.
    #[serde(rename = "ProgType", skip_serializing_if = "String::is_empty")]
    pub prog_type: String,
    /// Instruction count.
    #[serde(rename = "InsnCnt", skip_serializing_if = "is_zero_u32")]
    pub insn_cnt: u32,
    /// Program name.
    #[serde(rename = "ProgName", skip_serializing_if = "String::is_empty")]
    pub prog_name: String,
}

/// `struct bpf_prog` (`tetragon.KprobeBpfProg`, CamelCase field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeBpfProg {
    /// Program type.
    #[serde(rename = "ProgType", skip_serializing_if = "String::is_empty")]
    pub prog_type: String,
    /// Instruction count.
    #[serde(rename = "InsnCnt", skip_serializing_if = "is_zero_u32")]
    pub insn_cnt: u32,
    /// Program name.
    #[serde(rename = "ProgName", skip_serializing_if = "String::is_empty")]
    pub prog_name: String,
}

/// `struct perf_event` (`tetragon.KprobePerfEvent`, CamelCase field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobePerfEvent {
    /// Kprobe function.
    #[serde(rename = "KprobeFunc", skip_serializing_if = "String::is_empty")]
    pub kprobe_func: String,
    /// Event type.
    #[serde(rename = "Type", skip_serializing_if = "String::is_empty")]
    pub event_type: String,
    /// Config (a JSON string).
    #[serde(
        rename = "Config",
        with = "u64_string",
        skip_serializing_if = "is_zero_u64"
    )]
    pub config: u64,
    /// Probe offset (a JSON string).
    #[serde(
        rename = "ProbeOffset",
        with = "u64_string",
        skip_serializing_if = "is_zero_u64"
    )]
    pub probe_offset: u64,
}

/// `struct bpf_map` (`tetragon.KprobeBpfMap`, CamelCase field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeBpfMap {
    /// Map type.
    #[serde(rename = "MapType", skip_serializing_if = "String::is_empty")]
    pub map_type: String,
    /// Key size.
    #[serde(rename = "KeySize", skip_serializing_if = "is_zero_u32")]
    pub key_size: u32,
    /// Value size.
    #[serde(rename = "ValueSize", skip_serializing_if = "is_zero_u32")]
    pub value_size: u32,
    /// Maximum number of entries.
    #[serde(rename = "MaxEntries", skip_serializing_if = "is_zero_u32")]
    pub max_entries: u32,
    /// Map name.
    #[serde(rename = "MapName", skip_serializing_if = "String::is_empty")]
    pub map_name: String,
}

/// An argument that could not be read (`tetragon.KprobeError`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KprobeError {
    /// What went wrong.
    #[serde(rename = "Message", skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A syscall number and ABI (`tetragon.SyscallId`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyscallId {
    /// Syscall number.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub id: u32,
    /// ABI (`x64`, `i386`, ...).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub abi: String,
}

/// A kernel module (`tetragon.KernelModule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KernelModule {
    /// Module name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Whether its signature was verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_ok: Option<bool>,
    /// `TaintedBitsType` names the module sets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tainted: Vec<EnumValue>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn arg(value: serde_json::Value) -> KprobeArgument {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn arg_kinds_lists_every_variant() {
        let samples = [
            ArgValue::StringArg(String::new()),
            ArgValue::IntArg(0),
            ArgValue::SkbArg(KprobeSkb::default()),
            ArgValue::SizeArg(0),
            ArgValue::BytesArg(Vec::new()),
            ArgValue::PathArg(KprobePath::default()),
            ArgValue::FileArg(KprobeFile::default()),
            ArgValue::TruncatedBytesArg(KprobeTruncatedBytes::default()),
            ArgValue::SockArg(KprobeSock::default()),
            ArgValue::CredArg(KprobeCred::default()),
            ArgValue::LongArg(0),
            ArgValue::BpfAttrArg(KprobeBpfAttr::default()),
            ArgValue::PerfEventArg(KprobePerfEvent::default()),
            ArgValue::BpfMapArg(KprobeBpfMap::default()),
            ArgValue::UintArg(0),
            ArgValue::UserNamespaceArg(KprobeUserNamespace::default()),
            ArgValue::CapabilityArg(KprobeCapability::default()),
            ArgValue::ProcessCredentialsArg(ProcessCredentials::default()),
            ArgValue::UserNsArg(UserNamespace::default()),
            ArgValue::ModuleArg(KernelModule::default()),
            ArgValue::KernelCapTArg(String::new()),
            ArgValue::CapInheritableArg(String::new()),
            ArgValue::CapPermittedArg(String::new()),
            ArgValue::CapEffectiveArg(String::new()),
            ArgValue::LinuxBinprmArg(KprobeLinuxBinprm::default()),
            ArgValue::NetDevArg(KprobeNetDev::default()),
            ArgValue::BpfCmdArg(EnumValue::from("BPF_MAP_CREATE")),
            ArgValue::SyscallId(SyscallId::default()),
            ArgValue::SockaddrArg(KprobeSockaddr::default()),
            ArgValue::BpfProgArg(KprobeBpfProg::default()),
            ArgValue::ErrorArg(KprobeError::default()),
            ArgValue::SockaddrunArg(KprobeSockaddrUn::default()),
        ];
        assert_eq!(samples.len(), ARG_KINDS.len());
        for (sample, kind) in samples.into_iter().zip(ARG_KINDS) {
            let argument = KprobeArgument::new(sample);
            let value = serde_json::to_value(&argument).unwrap();
            let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
            assert_eq!(keys, [kind], "{argument:?}");
            assert_eq!(arg(value), argument);
        }
    }

    #[test]
    fn oneof_members_are_written_even_when_zero() {
        let zero = KprobeArgument::new(ArgValue::IntArg(0));
        assert_eq!(serde_json::to_value(&zero).unwrap(), json!({"int_arg": 0}));
        let empty = KprobeArgument::new(ArgValue::FileArg(KprobeFile::default()));
        assert_eq!(
            serde_json::to_value(&empty).unwrap(),
            json!({"file_arg": {}})
        );
        let bytes = KprobeArgument::new(ArgValue::BytesArg(Vec::new()));
        assert_eq!(
            serde_json::to_value(&bytes).unwrap(),
            json!({"bytes_arg": ""})
        );
    }

    #[test]
    fn sixty_four_bit_integers_are_strings() {
        let size = KprobeArgument::new(ArgValue::SizeArg(u64::MAX));
        assert_eq!(
            serde_json::to_value(&size).unwrap(),
            json!({"size_arg": "18446744073709551615"})
        );
        let long = KprobeArgument::new(ArgValue::LongArg(-2));
        assert_eq!(
            serde_json::to_value(&long).unwrap(),
            json!({"long_arg": "-2"})
        );
        // protojson also reads them as numbers.
        assert_eq!(
            arg(json!({"size_arg": 627})).arg,
            Some(ArgValue::SizeArg(627))
        );
        assert_eq!(
            arg(json!({"long_arg": -2})).arg,
            Some(ArgValue::LongArg(-2))
        );
        assert!(serde_json::from_value::<KprobeArgument>(json!({"size_arg": "-1"})).is_err());
        assert!(serde_json::from_value::<KprobeArgument>(json!({"size_arg": "1x"})).is_err());
    }

    #[test]
    fn label_and_unknown_kinds() {
        let labelled = arg(json!({"string_arg": "/etc/shadow", "label": "pathname"}));
        assert_eq!(
            labelled.arg,
            Some(ArgValue::StringArg("/etc/shadow".into()))
        );
        assert_eq!(labelled.label, "pathname");
        let unknown = arg(json!({"quantum_arg": {"x": 1}, "label": "q"}));
        assert_eq!(
            unknown,
            KprobeArgument {
                arg: None,
                label: "q".into()
            }
        );
        assert_eq!(
            serde_json::to_value(&unknown).unwrap(),
            json!({"label": "q"})
        );
        let err = serde_json::from_value::<KprobeArgument>(json!({"int_arg": 1, "uint_arg": 2}));
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("found int_arg and uint_arg"));
        let err = serde_json::from_value::<KprobeArgument>(json!({"int_arg": "x"}));
        assert!(err.unwrap_err().to_string().contains("int_arg"));
    }

    #[test]
    fn bytes_are_base64() {
        let a = arg(json!({"bytes_arg": "aGVsbG8K"}));
        assert_eq!(a.arg, Some(ArgValue::BytesArg(b"hello\n".to_vec())));
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"bytes_arg": "aGVsbG8K"})
        );
        let t = arg(json!({"truncated_bytes_arg": {"orig_size": "65536"}}));
        let expected = KprobeTruncatedBytes {
            bytes_arg: Vec::new(),
            orig_size: 65_536,
        };
        assert_eq!(t.arg, Some(ArgValue::TruncatedBytesArg(expected)));
    }
}
