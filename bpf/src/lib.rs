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

/// Names of programs and maps in [`DATAPATH_OBJECT`]; map names are ABI (the
/// maps are pinned by name).
pub mod names {
    /// TC program for the host-veth ingress (packets leaving the pod: its egress policy).
    pub const FROM_ENDPOINT: &str = "from_endpoint";
    /// TC program for the host-veth egress (packets entering the pod: its ingress policy).
    pub const TO_ENDPOINT: &str = "to_endpoint";

    /// Hash: [`crate::abi::EndpointKey`] -> [`crate::abi::EndpointInfo`].
    pub const ENDPOINTS: &str = "pal_endpoints";
    /// LPM trie: [`crate::abi::IpcacheKey`] -> [`crate::abi::IpcacheValue`].
    pub const IPCACHE: &str = "pal_ipcache";
    /// LPM trie: [`crate::abi::PolicyKey`] -> [`crate::abi::PolicyValue`].
    pub const POLICY: &str = "pal_policy";
    /// LRU hash: [`crate::abi::CtKey`] -> [`crate::abi::CtValue`].
    pub const CT: &str = "pal_ct";
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
        ENDPOINTS, IPCACHE, POLICY, CT, FRAG, STATE, EVENTS, METRICS, COUNTERS,
    ];
    /// Every program of the datapath.
    pub const PROGRAMS: &[&str] = &[FROM_ENDPOINT, TO_ENDPOINT];
}
