//! The palisade eBPF datapath: the compiled C programs and the C/Rust ABI.
//!
//! The C sources live in `bpf/*.c` (one per attach point) and `bpf/lib/*.h`;
//! `build.rs` compiles them with clang and this crate embeds the objects.
//! [`abi`] mirrors every struct of `bpf/include/abi/*.h` (checked against the
//! object's BTF by `tests/layout.rs`).

pub mod abi;

/// Wrapper that gives an embedded object the 8-byte alignment ELF parsing wants.
#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

const LXC_OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/lxc.o")));

/// The endpoint (pod veth) datapath object `lxc.o`: programs
/// [`names::FROM_ENDPOINT`] and [`names::TO_ENDPOINT`] and every map of
/// [`names::MAPS`]. Load it with `aya::EbpfLoader`.
pub const DATAPATH_OBJECT: &[u8] = &LXC_OBJECT.0;

const OVERLAY_OBJECT_BYTES: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/overlay.o")));

/// The overlay datapath object `overlay.o`: programs [`names::TO_OVERLAY`]
/// and [`names::FROM_OVERLAY`] for the node's VXLAN device. It declares the
/// same pinned maps as [`DATAPATH_OBJECT`]: load it after that one, with
/// the same pin directory, and both share them.
pub const OVERLAY_OBJECT: &[u8] = &OVERLAY_OBJECT_BYTES.0;

const RUNTIME_OBJECT_BYTES: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/runtime.o")));

/// The runtime-enforcement object `runtime.o`: process tracking programs and
/// the generic hook programs of [`runtime::PROGRAMS`], with the maps of
/// [`runtime::MAPS`]. Hook programs read their hook id from the load-time
/// constant [`runtime::HOOK_ID_GLOBAL`].
pub const RUNTIME_OBJECT: &[u8] = &RUNTIME_OBJECT_BYTES.0;

const BENCH_FLOOR_OBJECT_BYTES: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/bench_floor.o")));

/// `bench_floor.o`: empty programs (tracepoint `pal_floor_tp`, raw
/// tracepoint `pal_floor_raw`, fentry `pal_floor_fentry`) with which the
/// benchmarks measure what the kernel charges for any program at a hook.
pub const BENCH_FLOOR_OBJECT: &[u8] = &BENCH_FLOOR_OBJECT_BYTES.0;

/// Names of programs, maps and globals in [`RUNTIME_OBJECT`]; map names are
/// ABI (the maps are pinned by name).
pub mod runtime {
    /// Raw tracepoint `sched_process_exec`.
    pub const EXEC: &str = "pal_exec";
    /// Raw tracepoint `sched_process_fork`.
    pub const FORK: &str = "pal_fork";
    /// Raw tracepoint `sched_process_exit`.
    pub const EXIT: &str = "pal_exit";
    /// Raw tracepoint `sys_enter`: the hooks of syscalls without a
    /// tracepoint of their own.
    pub const SYS_ENTER: &str = "pal_sys_enter";
    /// Tracepoint `syscalls:sys_enter_<name>`: the hooks of that syscall
    /// (one load per argument count, with [`SYSCALL_NARGS_GLOBAL`],
    /// attached to every hooked syscall with as many arguments that has a
    /// tracepoint).
    pub const SYS_TP: &str = "pal_sys_tp";
    /// fentry on `__x64_sys_<name>`: the hooks of that syscall, on kernels
    /// with BPF trampolines (one load per hooked syscall).
    pub const SYS_FENTRY: &str = "pal_sys_fentry";
    /// Tracepoint hook (one load per hook).
    pub const TRACEPOINT: &str = "pal_tracepoint";
    /// Tracepoint hook on `raw_syscalls:sys_enter`/`sys_exit` behind a
    /// syscall-id prefilter (one load per hook, with
    /// [`SYSCALL_IDS_GLOBAL`]).
    pub const TP_SYSCALL_IDS: &str = "pal_tp_syscall_ids";
    /// Raw tracepoint hook (one load per hook).
    pub const RAW_TRACEPOINT: &str = "pal_raw_tracepoint";
    /// kprobe hook (one load per hook).
    pub const KPROBE: &str = "pal_kprobe";
    /// BPF-LSM hook (one load per hook).
    pub const LSM: &str = "pal_lsm";
    /// fentry hook (one load per hook).
    pub const FENTRY: &str = "pal_fentry";
    /// Every program.
    pub const PROGRAMS: &[&str] = &[
        EXEC,
        FORK,
        EXIT,
        SYS_ENTER,
        SYS_TP,
        SYS_FENTRY,
        TRACEPOINT,
        TP_SYSCALL_IDS,
        RAW_TRACEPOINT,
        KPROBE,
        LSM,
        FENTRY,
    ];

    /// The load-time constant holding a hook program's hook id.
    pub const HOOK_ID_GLOBAL: &str = "PAL_HOOK_ID";
    /// The load-time constant of [`TP_SYSCALL_IDS`]: the syscall ids its
    /// hook can match, a `[u64; MAX_SYSCALLS / 64]` bitmap (bit `id % 64`
    /// of word `id / 64`).
    pub const SYSCALL_IDS_GLOBAL: &str = "PAL_SYSCALL_IDS";
    /// The load-time constant of [`SYS_TP`]: how many arguments the
    /// syscalls it is attached to have (a `u32`, at most 6); it reads
    /// those from the tracepoint's record and no more.
    pub const SYSCALL_NARGS_GLOBAL: &str = "PAL_SYSCALL_NARGS";

    /// LRU hash: tgid -> [`crate::abi::runtime::Proc`].
    pub const PROCS: &str = "pal_procs";
    /// Array: hook id -> [`crate::abi::runtime::Hook`].
    pub const HOOKS: &str = "pal_rt_hooks";
    /// Array of [`crate::abi::runtime::Filter`].
    pub const FILTERS: &str = "pal_rt_filters";
    /// Array of [`crate::abi::runtime::Sel`].
    pub const SELS: &str = "pal_rt_sels";
    /// LPM trie: [`crate::abi::runtime::NumKey`] -> u8.
    pub const NUM: &str = "pal_rt_num";
    /// LPM trie: [`crate::abi::runtime::StrKey`] -> u8.
    pub const STR: &str = "pal_rt_str";
    /// Array of [`crate::abi::runtime::BinSet`].
    pub const BINSETS: &str = "pal_rt_binsets";
    /// Array of one [`crate::abi::runtime::Config`].
    pub const CONFIG: &str = "pal_rt_config";
    /// Array: syscall number -> [`crate::abi::runtime::SyscallHooks`].
    pub const SYSCALLS: &str = "pal_rt_syscalls";
    /// LRU hash of rate-limit state.
    pub const RATE: &str = "pal_rt_rate";
    /// Ring buffer of runtime events.
    pub const EVENTS: &str = "pal_rt_events";
    /// Per-CPU array of `u64` counters ([`crate::abi::runtime::CNT_RINGBUF_FULL`], ...).
    pub const COUNTERS: &str = "pal_rt_counters";

    /// Every pinned map of the runtime object.
    pub const MAPS: &[&str] = &[
        PROCS, HOOKS, FILTERS, SELS, NUM, STR, BINSETS, CONFIG, SYSCALLS, RATE, EVENTS, COUNTERS,
    ];
}

/// Names of programs and maps in [`DATAPATH_OBJECT`]; map names are ABI (the
/// maps are pinned by name).
pub mod names {
    /// TC program for the host-veth ingress (packets leaving the pod: its egress policy).
    pub const FROM_ENDPOINT: &str = "from_endpoint";
    /// TC program for the host-veth egress (packets entering the pod: its ingress policy).
    pub const TO_ENDPOINT: &str = "to_endpoint";
    /// TC egress of the VXLAN device (in [`super::OVERLAY_OBJECT`]).
    pub const TO_OVERLAY: &str = "to_overlay";
    /// TC ingress of the VXLAN device (in [`super::OVERLAY_OBJECT`]).
    pub const FROM_OVERLAY: &str = "from_overlay";

    /// Hash: [`crate::abi::EndpointKey`] -> [`crate::abi::EndpointInfo`].
    pub const ENDPOINTS: &str = "pal_endpoints";
    /// LPM trie: [`crate::abi::IpcacheKey`] -> [`crate::abi::IpcacheValue`].
    pub const IPCACHE: &str = "pal_ipcache";
    /// LPM trie: [`crate::abi::IpcacheKey`] -> [`crate::abi::TunnelValue`]
    /// (other nodes' prefixes -> their underlay address).
    pub const TUNNEL: &str = "pal_tunnel";
    /// LPM trie: [`crate::abi::PolicyKey`] -> [`crate::abi::PolicyValue`].
    pub const POLICY: &str = "pal_policy";
    /// LRU hash: [`crate::abi::CtKey`] -> [`crate::abi::CtValue`].
    pub const CT: &str = "pal_ct";
    /// Hash: [`crate::abi::AuthKey`] -> [`crate::abi::AuthValue`]
    /// (authenticated identity pairs).
    pub const AUTH: &str = "pal_auth";
    /// LRU hash: [`crate::abi::FragKey`] -> [`crate::abi::FragValue`].
    pub const FRAG: &str = "pal_frag";
    /// Array of one [`crate::abi::State`].
    pub const STATE: &str = "pal_state";
    /// Ring buffer of [`crate::abi::Event`].
    pub const EVENTS: &str = "pal_events";
    /// Per-CPU array of [`crate::abi::MetricsValue`], see [`crate::abi::metrics_index`].
    pub const METRICS: &str = "pal_metrics";
    /// Per-CPU array of `u64` counters, see [`crate::abi::COUNTER_EVENTS_LOST`].
    pub const COUNTERS: &str = "pal_counters";

    /// Every map of the datapath.
    pub const MAPS: &[&str] = &[
        ENDPOINTS, IPCACHE, TUNNEL, POLICY, CT, AUTH, FRAG, STATE, EVENTS, METRICS, COUNTERS,
    ];
    /// Every program of the datapath.
    pub const PROGRAMS: &[&str] = &[FROM_ENDPOINT, TO_ENDPOINT];
    /// Every program of [`super::OVERLAY_OBJECT`].
    pub const OVERLAY_PROGRAMS: &[&str] = &[TO_OVERLAY, FROM_OVERLAY];
}
