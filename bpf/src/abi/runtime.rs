//! Runtime enforcement ABI (`bpf/include/abi/runtime.h`): process entries,
//! hooks, compiled selectors, value-set keys and the events of `runtime.o`.

use core::mem::{offset_of, size_of};

use aya::maps::lpm_trie;

use super::AbiError;

/// `PAL_RT_MAX_ARGS`: arguments one hook reads.
pub const MAX_ARGS: usize = 6;
/// `PAL_RT_STR_MAX`: longest string argument (with its NUL).
pub const STR_MAX: usize = 256;
/// `PAL_RT_STR_KEY`: string bytes an LPM key holds (values are at most
/// this long, Equal values with their NUL).
pub const STR_KEY: usize = 252;
/// `PAL_RT_STR_AREA`: string bytes one hook event carries.
pub const STR_AREA: usize = 1024;
/// `PAL_RT_PATH_MAX`: binary path bytes of an exec event.
pub const PATH_MAX: usize = 256;
/// `PAL_RT_ARGS_MAX`: command-line bytes of an exec event.
pub const ARGS_MAX: usize = 768;
/// `PAL_RT_MAX_BINSETS`: binary sets (bits of [`Proc::bin_match`]).
pub const MAX_BINSETS: usize = 128;
/// `PAL_RT_MAX_HOOKS`.
pub const MAX_HOOKS: u32 = 1024;
/// `PAL_RT_MAX_FILTERS`.
pub const MAX_FILTERS: u32 = 16384;
/// `PAL_RT_MAX_SELS`.
pub const MAX_SELS: u32 = 8192;
/// `PAL_RT_MAX_FILTERS_PER_HOOK`.
pub const MAX_FILTERS_PER_HOOK: u32 = 512;
/// `PAL_RT_SYSCALL_SLOTS`: hooks per syscall.
pub const SYSCALL_SLOTS: usize = 14;
/// `PAL_RT_MAX_SYSCALLS`: syscall numbers the syscall table covers.
pub const MAX_SYSCALLS: u32 = 512;
/// `PAL_RT_MAX_PROCS`: entries of the kernel process table.
pub const MAX_PROCS: u32 = 32768;

/// `PAL_PROC_EXEC`.
pub const PROC_EXEC: u32 = 0x1;
/// `PAL_PROC_PROCFS`.
pub const PROC_PROCFS: u32 = 0x2;

/// `struct pal_proc`: one thread group in `pal_procs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Proc {
    /// Exec (or fork) time of the image, ns since boot.
    pub ktime: u64,
    /// The parent's `ktime`.
    pub parent_ktime: u64,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Binary sets this image's binary is in.
    pub bin_match: [u64; 2],
    /// Binary sets an ancestor's binary was in (followChildren sets only).
    pub bin_follow: [u64; 2],
    /// The parent's `bin_match`.
    pub parent_bin: [u64; 2],
    /// tgid.
    pub pid: u32,
    /// Parent tgid.
    pub ppid: u32,
    /// pid in its pid namespace.
    pub nspid: u32,
    /// Real uid.
    pub uid: u32,
    /// Login uid.
    pub auid: u32,
    /// `PROC_*`.
    pub flags: u32,
    /// Network namespace inode (pod attribution).
    pub net_ns: u32,
    /// Padding.
    pub pad: u32,
}
const _: () = assert!(size_of::<Proc>() == 104);

/// `PAL_ARGSRC_*`: where an argument comes from.
#[allow(missing_docs)]
pub mod argsrc {
    pub const NONE: u8 = 0;
    pub const SYSCALL: u8 = 1;
    pub const TP_FIELD: u8 = 2;
    pub const TP_DATALOC: u8 = 3;
    pub const REG: u8 = 4;
}

/// `PAL_ARGKIND_*`: how an argument is read.
#[allow(missing_docs)]
pub mod argkind {
    pub const INT: u8 = 0;
    pub const USTR: u8 = 1;
    pub const KSTR: u8 = 2;
    pub const FILE: u8 = 3;
    pub const PATH: u8 = 4;
    pub const BPRM: u8 = 6;
    pub const SOCKADDR: u8 = 7;
    pub const SOCK: u8 = 8;
    pub const SKB: u8 = 9;
}

/// `PAL_ARGF_SIGNED`.
pub const ARGF_SIGNED: u8 = 0x1;

/// `struct pal_rt_argdesc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct ArgDesc {
    /// `argsrc::*`.
    pub source: u8,
    /// `argkind::*`.
    pub kind: u8,
    /// Integer size in bytes.
    pub size: u8,
    /// Argument position.
    pub reg: u8,
    /// Tracepoint field offset.
    pub offset: u16,
    /// `ARGF_*`.
    pub flags: u8,
    /// Padding.
    pub pad: u8,
}
const _: () = assert!(size_of::<ArgDesc>() == 8);

/// `PAL_HOOK_ACTIVE`.
pub const HOOK_ACTIVE: u32 = 0x1;
/// `PAL_HOOK_MONITOR`.
pub const HOOK_MONITOR: u32 = 0x2;

/// `struct pal_rt_hook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Hook {
    /// `HOOK_*`.
    pub flags: u32,
    /// First filter in `pal_rt_filters`.
    pub first_filter: u32,
    /// Number of filters.
    pub nfilters: u32,
    /// First selector in `pal_rt_sels`.
    pub first_sel: u32,
    /// Number of selectors.
    pub nsels: u32,
    /// Number of arguments.
    pub nargs: u32,
    /// Argument descriptors.
    pub args: [ArgDesc; MAX_ARGS],
}
const _: () = assert!(size_of::<Hook>() == 72);

/// `PAL_FILT_*`: filter kinds.
#[allow(missing_docs)]
pub mod filt {
    pub const TRUE: u8 = 0;
    pub const ARG_NUM: u8 = 1;
    pub const ARG_STR: u8 = 2;
    pub const ARG_STR_REV: u8 = 3;
    pub const ARG_GT: u8 = 4;
    pub const ARG_LT: u8 = 5;
    pub const ARG_MASK: u8 = 6;
    pub const BINARY: u8 = 7;
    pub const PARENT_BINARY: u8 = 8;
    pub const PID: u8 = 9;
    pub const NAMESPACE: u8 = 10;
    pub const CAPS: u8 = 11;
    pub const SOCK_PORT: u8 = 12;
    pub const SOCK_PRIV: u8 = 13;
    pub const SOCK_ADDR: u8 = 14;
    pub const SOCK_FIELD: u8 = 15;
}

/// `PAL_FILTF_NEGATE`.
pub const FILTF_NEGATE: u8 = 0x1;
/// `PAL_FILTF_SIGNED`.
pub const FILTF_SIGNED: u8 = 0x2;
/// `PAL_FILTF_NSPID`.
pub const FILTF_NSPID: u8 = 0x4;
/// `PAL_FILTF_FOLLOW`.
pub const FILTF_FOLLOW: u8 = 0x8;
/// `PAL_FILTF_INVERT`: Not-form of a socket filter (applied by the filter,
/// so that a missing tuple fails both forms).
pub const FILTF_INVERT: u8 = 0x10;

/// `PAL_SOCK_*`: which part of a socket tuple a filter tests (`aux`).
#[allow(missing_docs)]
pub mod sockpart {
    pub const SRC: u8 = 0;
    pub const DST: u8 = 1;
    pub const FAMILY: u8 = 2;
    pub const PROTOCOL: u8 = 3;
    pub const STATE: u8 = 4;
}

/// `PAL_SOCKF_IP`: the tuple's addresses are valid.
pub const SOCKF_IP: u8 = 0x1;
/// `PAL_SOCKF_STATE`: the tuple's state is known.
pub const SOCKF_STATE: u8 = 0x2;

/// `struct pal_rt_sock`: the tuple of a socket argument in a hook event's
/// string area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct SockTuple {
    /// Address family.
    pub family: u16,
    /// IP protocol.
    pub protocol: u16,
    /// Source port (host order).
    pub sport: u16,
    /// Destination port (host order).
    pub dport: u16,
    /// TCP state (if `SOCKF_STATE`).
    pub state: u8,
    /// `SOCKF_*`.
    pub flags: u8,
    /// Padding.
    pub pad: u16,
    /// Padding.
    pub pad2: u32,
    /// Source address (IPv4: first 4 bytes).
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
}
const _: () = assert!(size_of::<SockTuple>() == 48);

impl SockTuple {
    /// Parses a tuple from the bytes the kernel wrote (exactly 48).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != size_of::<Self>() {
            return None;
        }
        let mut saddr = [0; 16];
        let mut daddr = [0; 16];
        saddr.copy_from_slice(&b[16..32]);
        daddr.copy_from_slice(&b[32..48]);
        Some(Self {
            family: u16_at(b, 0),
            protocol: u16_at(b, 2),
            sport: u16_at(b, 4),
            dport: u16_at(b, 6),
            state: b[8],
            flags: b[9],
            pad: 0,
            pad2: 0,
            saddr,
            daddr,
        })
    }
}

/// `PAL_CAPS_EFFECTIVE`.
pub const CAPS_EFFECTIVE: u8 = 0;
/// `PAL_CAPS_INHERITABLE`.
pub const CAPS_INHERITABLE: u8 = 1;
/// `PAL_CAPS_PERMITTED`.
pub const CAPS_PERMITTED: u8 = 2;

/// `struct pal_rt_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Filter {
    /// Selector number within the hook.
    pub sel: u16,
    /// `filt::*`.
    pub kind: u8,
    /// `FILTF_*`.
    pub flags: u8,
    /// Argument slot.
    pub arg: u8,
    /// Binary set, namespace or capability set.
    pub aux: u8,
    /// Padding.
    pub pad: u16,
    /// Value set id.
    pub set_id: u32,
    /// Padding.
    pub pad2: u32,
    /// GT/LT/Mask operand or capability mask.
    pub value: u64,
}
const _: () = assert!(size_of::<Filter>() == 24);

/// `PAL_ACT_*`: actions.
#[allow(missing_docs)]
pub mod act {
    pub const POST: u32 = 0;
    pub const NOPOST: u32 = 1;
    pub const SIGKILL: u32 = 2;
    pub const SIGNAL: u32 = 3;
    pub const OVERRIDE: u32 = 4;
}

/// `PAL_RATE_*`: rate-limit scopes.
#[allow(missing_docs)]
pub mod rate {
    pub const THREAD: u32 = 0;
    pub const PROCESS: u32 = 1;
    pub const GLOBAL: u32 = 2;
}

/// `struct pal_rt_sel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Sel {
    /// `act::*` reported.
    pub action: u32,
    /// 1: post an event.
    pub post: u32,
    /// Signal to send (0: none).
    pub signal: i32,
    /// Return override (negative errno, 0: none).
    pub r#override: i32,
    /// Rate limit interval in ns (0: none).
    pub rate_ns: u64,
    /// `rate::*`.
    pub rate_scope: u32,
    /// Padding.
    pub pad: u32,
}
const _: () = assert!(size_of::<Sel>() == 32);

/// `struct pal_rt_num_key`: LPM key of integer/address value sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct NumKey {
    /// Set id (the first 32 bits of the LPM data).
    pub set_id: u32,
    /// Big-endian value.
    pub data: [u8; 16],
}
const _: () = assert!(size_of::<NumKey>() == 20);

/// `struct pal_rt_str_key`: LPM key of string value sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct StrKey {
    /// Set id (the first 32 bits of the LPM data).
    pub set_id: u32,
    /// The string (Equal values with their NUL, Postfix values reversed).
    pub data: [u8; STR_KEY],
}
const _: () = assert!(size_of::<StrKey>() == 256);

impl Default for StrKey {
    fn default() -> Self {
        Self {
            set_id: 0,
            data: [0; STR_KEY],
        }
    }
}

/// Bits of an LPM prefix covering the set id and `bits` bits of data.
pub const fn set_prefix(bits: u32) -> u32 {
    32 + bits
}

impl NumKey {
    /// The LPM key for `value` in set `set_id` matching its first
    /// `prefix_bits` bits (64 for an exact integer).
    pub fn integer(set_id: u32, value: u64, prefix_bits: u32) -> lpm_trie::Key<Self> {
        let mut data = [0; 16];
        data[..8].copy_from_slice(&value.to_be_bytes());
        lpm_trie::Key::new(set_prefix(prefix_bits.min(64)), Self { set_id, data })
    }

    /// The LPM key for address prefix `addr/prefix_bits` in set `set_id`
    /// (IPv4 and IPv6 prefixes live in separate sets).
    pub fn address(set_id: u32, addr: core::net::IpAddr, prefix_bits: u32) -> lpm_trie::Key<Self> {
        let mut data = [0; 16];
        let max = match addr {
            core::net::IpAddr::V4(a) => {
                data[..4].copy_from_slice(&a.octets());
                32
            }
            core::net::IpAddr::V6(a) => {
                data.copy_from_slice(&a.octets());
                128
            }
        };
        lpm_trie::Key::new(set_prefix(prefix_bits.min(max)), Self { set_id, data })
    }
}

impl StrKey {
    /// The LPM key for string `bytes` in set `set_id`; `with_nul` makes it
    /// match only the whole string (Equal), otherwise any string starting
    /// with it (Prefix, and reversed, Postfix).
    pub fn string(
        set_id: u32,
        bytes: &[u8],
        with_nul: bool,
    ) -> Result<lpm_trie::Key<Self>, AbiError> {
        let n = bytes.len() + usize::from(with_nul);
        if n > STR_KEY {
            return Err(AbiError::StringTooLong {
                len: n,
                max: STR_KEY,
            });
        }
        let mut data = [0; STR_KEY];
        data[..bytes.len()].copy_from_slice(bytes);
        Ok(lpm_trie::Key::new(
            set_prefix(8 * n as u32),
            Self { set_id, data },
        ))
    }
}

/// `PAL_BINSET_EXACT`.
pub const BINSET_EXACT: u32 = 0;
/// `PAL_BINSET_PREFIX`.
pub const BINSET_PREFIX: u32 = 1;
/// `PAL_BINSET_POSTFIX`.
pub const BINSET_POSTFIX: u32 = 2;

/// `struct pal_rt_binset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct BinSet {
    /// Set id in `pal_rt_str`.
    pub set_id: u32,
    /// `BINSET_*`.
    pub kind: u32,
}
const _: () = assert!(size_of::<BinSet>() == 8);

/// `struct pal_rt_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Config {
    /// Active binary sets.
    pub nbinsets: u32,
    /// The agent's tgid (never signalled).
    pub self_tgid: u32,
    /// Binary sets with followChildren.
    pub follow_mask: [u64; 2],
}
const _: () = assert!(size_of::<Config>() == 24);

/// `PAL_SYSCALL_VIA_RAW`: the syscall's hooks run from the dispatcher on
/// `raw_syscalls:sys_enter`.
pub const SYSCALL_VIA_RAW: u32 = 0;
/// `PAL_SYSCALL_VIA_TP`: the syscall's hooks run from its own tracepoint,
/// `syscalls:sys_enter_<name>`.
pub const SYSCALL_VIA_TP: u32 = 1;
/// `PAL_SYSCALL_VIA_FENTRY`: the syscall's hooks run from an fentry program
/// on its wrapper, `__x64_sys_<name>`.
pub const SYSCALL_VIA_FENTRY: u32 = 2;

/// `PAL_RT_MAX_HEADS`: heads of a syscall's prefilter.
pub const MAX_HEADS: usize = 16;

/// `struct pal_rt_head` (lib/runtime_maps.h): the first bytes of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Head {
    /// The bytes, little-endian.
    pub value: u64,
    /// `0xff` per byte that counts.
    pub mask: u64,
}
const _: () = assert!(size_of::<Head>() == 16);

/// `struct pal_rt_syscall_hooks` (lib/runtime_maps.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct SyscallHooks {
    /// Hooks in use.
    pub n: u32,
    /// Which program runs them: [`SYSCALL_VIA_RAW`], [`SYSCALL_VIA_TP`] or
    /// [`SYSCALL_VIA_FENTRY`].
    pub via: u32,
    /// Hook ids, evaluated in order.
    pub hooks: [u32; SYSCALL_SLOTS],
    /// The head prefilter's syscall argument (a user string).
    pub head_reg: u32,
    /// Bit i: `hooks[i]` runs only when a head admits the string.
    pub head_skip: u32,
    /// Heads in use.
    pub head_n: u32,
    /// Padding.
    pub pad: u32,
    /// The heads.
    pub heads: [Head; MAX_HEADS],
}
const _: () = assert!(size_of::<SyscallHooks>() == 64 + 16 + 16 * MAX_HEADS);

/// `PAL_RT_EV_*`: runtime event types.
#[allow(missing_docs)]
pub mod ev {
    pub const EXEC: u8 = 1;
    pub const FORK: u8 = 2;
    pub const EXIT: u8 = 3;
    pub const HOOK: u8 = 4;
}

/// `PAL_HOOKEV_ENFORCED`.
pub const HOOKEV_ENFORCED: u8 = 0x1;
/// `PAL_HOOKEV_TRUNCATED`.
pub const HOOKEV_TRUNCATED: u8 = 0x2;
/// `PAL_HOOKEV_ACTION_FAILED`.
pub const HOOKEV_ACTION_FAILED: u8 = 0x4;

/// `PAL_RT_CNT_*`: indexes of `pal_rt_counters`.
#[allow(missing_docs)]
pub mod cnt {
    pub const RINGBUF_FULL: u32 = 0;
    pub const PROC_MISSING: u32 = 1;
    pub const HOOK_RUNS: u32 = 2;
    pub const SIGNAL_FAILED: u32 = 3;
    pub const RATE_LIMITED: u32 = 4;
    pub const HEAD_SKIPS: u32 = 5;
    pub const ID_SKIPS: u32 = 6;
    pub const MAX: u32 = 8;
}

/// `struct pal_rt_hdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Hdr {
    /// `ev::*`.
    pub r#type: u8,
    /// Padding.
    pub pad: [u8; 3],
    /// Bytes of the whole event.
    pub size: u32,
    /// ns since boot.
    pub ktime: u64,
    /// tgid.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
}
const _: () = assert!(size_of::<Hdr>() == 24);

/// A runtime event decoded from the ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtEvent {
    /// A process ran a new image.
    Exec {
        /// Header.
        hdr: Hdr,
        /// The new process entry.
        proc: Proc,
        /// Absolute path of the binary.
        filename: Vec<u8>,
        /// Command line, NUL-separated.
        args: Vec<u8>,
    },
    /// A new thread group.
    Fork {
        /// Header.
        hdr: Hdr,
        /// The child's entry.
        proc: Proc,
    },
    /// A thread group ended.
    Exit {
        /// Header.
        hdr: Hdr,
        /// `ktime` of the process entry (0 if untracked).
        proc_ktime: u64,
        /// Wait status.
        exit_code: u32,
    },
    /// A hook's selector matched.
    Hook(HookEvent),
}

/// `struct pal_rt_hook_event`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEvent {
    /// Header.
    pub hdr: Hdr,
    /// `ktime` of the process entry (0 if untracked).
    pub proc_ktime: u64,
    /// Hook id.
    pub hook_id: u32,
    /// Matching selector.
    pub sel: u16,
    /// `act::*`.
    pub action: u8,
    /// `HOOKEV_*`.
    pub flags: u8,
    /// Return value.
    pub ret: i64,
    /// Integer args; strings: `offset << 16 | length` into `str`.
    pub vals: [u64; MAX_ARGS],
    /// String area.
    pub str: Vec<u8>,
}

impl HookEvent {
    /// String argument `i` (its bytes), if `vals[i]` points into the area.
    pub fn string(&self, i: usize) -> Option<&[u8]> {
        let v = *self.vals.get(i)?;
        let off = ((v >> 16) & 0xffff) as usize;
        let len = (v & 0xffff) as usize;
        self.str.get(off..off.checked_add(len)?)
    }
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_ne_bytes(a)
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_ne_bytes([b[o], b[o + 1]])
}

const HDR_SIZE: usize = size_of::<Hdr>();
const PROC_SIZE: usize = size_of::<Proc>();
/// `sizeof(struct pal_rt_exec_event)`.
pub const EXEC_EVENT_SIZE: usize = HDR_SIZE + PROC_SIZE + 8 + PATH_MAX + ARGS_MAX;
/// `sizeof(struct pal_rt_fork_event)`.
pub const FORK_EVENT_SIZE: usize = HDR_SIZE + PROC_SIZE;
/// `sizeof(struct pal_rt_exit_event)`.
pub const EXIT_EVENT_SIZE: usize = HDR_SIZE + 16;
/// `offsetof(struct pal_rt_hook_event, str)`.
pub const HOOK_EVENT_FIXED: usize = HDR_SIZE + 24 + 8 * MAX_ARGS;

fn hdr(b: &[u8]) -> Hdr {
    Hdr {
        r#type: b[offset_of!(Hdr, r#type)],
        pad: [0; 3],
        size: u32_at(b, offset_of!(Hdr, size)),
        ktime: u64_at(b, offset_of!(Hdr, ktime)),
        pid: u32_at(b, offset_of!(Hdr, pid)),
        tid: u32_at(b, offset_of!(Hdr, tid)),
    }
}

fn proc_at(b: &[u8]) -> Proc {
    let pair = |at: usize| [u64_at(b, at), u64_at(b, at + 8)];
    Proc {
        ktime: u64_at(b, offset_of!(Proc, ktime)),
        parent_ktime: u64_at(b, offset_of!(Proc, parent_ktime)),
        cgroup_id: u64_at(b, offset_of!(Proc, cgroup_id)),
        bin_match: pair(offset_of!(Proc, bin_match)),
        bin_follow: pair(offset_of!(Proc, bin_follow)),
        parent_bin: pair(offset_of!(Proc, parent_bin)),
        pid: u32_at(b, offset_of!(Proc, pid)),
        ppid: u32_at(b, offset_of!(Proc, ppid)),
        nspid: u32_at(b, offset_of!(Proc, nspid)),
        uid: u32_at(b, offset_of!(Proc, uid)),
        auid: u32_at(b, offset_of!(Proc, auid)),
        flags: u32_at(b, offset_of!(Proc, flags)),
        net_ns: u32_at(b, offset_of!(Proc, net_ns)),
        pad: 0,
    }
}

fn too_short(what: &'static str, expected: usize, actual: usize) -> AbiError {
    AbiError::BadLength {
        what,
        expected,
        actual,
    }
}

impl RtEvent {
    /// Decodes one ring-buffer record (the length is checked against the
    /// type; a short or unknown record is an error, never a panic).
    pub fn from_bytes(b: &[u8]) -> Result<Self, AbiError> {
        if b.len() < HDR_SIZE {
            return Err(too_short("runtime event header", HDR_SIZE, b.len()));
        }
        let h = hdr(b);
        match h.r#type {
            ev::EXEC => {
                if b.len() < EXEC_EVENT_SIZE {
                    return Err(too_short("exec event", EXEC_EVENT_SIZE, b.len()));
                }
                let base = HDR_SIZE + PROC_SIZE;
                let flen = (u16_at(b, base) as usize).min(PATH_MAX);
                let alen = (u16_at(b, base + 2) as usize).min(ARGS_MAX);
                let fname = &b[base + 8..base + 8 + PATH_MAX];
                let args = &b[base + 8 + PATH_MAX..base + 8 + PATH_MAX + ARGS_MAX];
                Ok(Self::Exec {
                    hdr: h,
                    proc: proc_at(&b[HDR_SIZE..]),
                    filename: fname[..flen].to_vec(),
                    args: args[..alen].to_vec(),
                })
            }
            ev::FORK => {
                if b.len() < FORK_EVENT_SIZE {
                    return Err(too_short("fork event", FORK_EVENT_SIZE, b.len()));
                }
                Ok(Self::Fork {
                    hdr: h,
                    proc: proc_at(&b[HDR_SIZE..]),
                })
            }
            ev::EXIT => {
                if b.len() < EXIT_EVENT_SIZE {
                    return Err(too_short("exit event", EXIT_EVENT_SIZE, b.len()));
                }
                Ok(Self::Exit {
                    hdr: h,
                    proc_ktime: u64_at(b, HDR_SIZE),
                    exit_code: u32_at(b, HDR_SIZE + 8),
                })
            }
            ev::HOOK => {
                if b.len() < HOOK_EVENT_FIXED {
                    return Err(too_short("hook event", HOOK_EVENT_FIXED, b.len()));
                }
                let mut vals = [0; MAX_ARGS];
                for (i, v) in vals.iter_mut().enumerate() {
                    *v = u64_at(b, HDR_SIZE + 24 + 8 * i);
                }
                let end = (h.size as usize).clamp(HOOK_EVENT_FIXED, b.len());
                Ok(Self::Hook(HookEvent {
                    hdr: h,
                    proc_ktime: u64_at(b, HDR_SIZE),
                    hook_id: u32_at(b, HDR_SIZE + 8),
                    sel: u16_at(b, HDR_SIZE + 12),
                    action: b[HDR_SIZE + 14],
                    flags: b[HDR_SIZE + 15],
                    ret: u64_at(b, HDR_SIZE + 16) as i64,
                    vals,
                    str: b[HOOK_EVENT_FIXED..end].to_vec(),
                }))
            }
            t => Err(AbiError::UnknownEvent { r#type: t }),
        }
    }
}

pod!(
    Proc,
    Hook,
    Filter,
    Sel,
    NumKey,
    StrKey,
    BinSet,
    Config,
    Head,
    SyscallHooks
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(RtEvent::from_bytes(&[]).is_err());
        let mut b = vec![0u8; 64];
        b[0] = 99;
        assert_eq!(
            RtEvent::from_bytes(&b),
            Err(AbiError::UnknownEvent { r#type: 99 })
        );
        b[0] = ev::EXEC;
        assert!(RtEvent::from_bytes(&b).is_err());
    }

    #[test]
    fn string_values_fit_a_key() {
        assert!(StrKey::string(1, &[b'a'; STR_KEY], false).is_ok());
        assert_eq!(
            StrKey::string(1, &[b'a'; STR_KEY], true).err(),
            Some(AbiError::StringTooLong {
                len: STR_KEY + 1,
                max: STR_KEY
            })
        );
    }

    #[test]
    fn hook_event_strings() {
        let mut b = vec![0u8; HOOK_EVENT_FIXED + 8];
        b[0] = ev::HOOK;
        b[4..8].copy_from_slice(&((HOOK_EVENT_FIXED + 8) as u32).to_ne_bytes());
        b[HDR_SIZE + 24..HDR_SIZE + 32].copy_from_slice(&((2u64 << 16) | 3).to_ne_bytes());
        b[HOOK_EVENT_FIXED..].copy_from_slice(b"xxabcyyy");
        let RtEvent::Hook(h) = RtEvent::from_bytes(&b).expect("hook") else {
            panic!("not a hook event")
        };
        assert_eq!(h.string(0), Some(&b"abc"[..]));
        let mut bad = h.clone();
        bad.vals[1] = (1000 << 16) | 9;
        assert_eq!(bad.string(1), None);
    }
}
