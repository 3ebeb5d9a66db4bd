//! Rust mirror of the C/Rust ABI in `bpf/include/abi/*.h`.
//!
//! Every struct is `#[repr(C)]` with the C field names and sizes asserted at
//! compile time; `tests/layout.rs` compares sizes and field offsets with the
//! BTF of the compiled object. Fields in network byte order are kept as the
//! raw integer whose in-memory bytes are the network bytes; use the
//! constructors and accessors, which hide byte order.

use core::mem::size_of;
use std::net::Ipv4Addr;

use aya::maps::lpm_trie;

include!(concat!(env!("OUT_DIR"), "/reasons.rs"));

/// Errors building ABI values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AbiError {
    /// A ring-buffer record of a type this build does not know.
    #[error("unknown runtime event type {}", .r#type)]
    UnknownEvent {
        /// The type byte.
        r#type: u8,
    },
    /// A port prefix longer than the 16 bits of a port.
    #[error("port prefix of {prefix_bits} bits is longer than 16")]
    PortPrefixTooLong {
        /// The rejected prefix length.
        prefix_bits: u8,
    },
    /// An IPv4 prefix longer than 32 bits.
    #[error("IPv4 prefix length {prefix_len} is longer than 32")]
    Ipv4PrefixTooLong {
        /// The rejected prefix length.
        prefix_len: u8,
    },
    /// A string value longer than a value-set key holds.
    #[error(
        "string value of {len} bytes (Equal values count their NUL) does not fit the {max} bytes \
         of a value-set key: shorten it, or match a shorter Prefix/Postfix"
    )]
    StringTooLong {
        /// Bytes the key would need.
        len: usize,
        /// Bytes a key holds.
        max: usize,
    },
    /// A buffer of the wrong size for the struct.
    #[error("{what} needs {expected} bytes, got {actual}")]
    BadLength {
        /// The struct.
        what: &'static str,
        /// Its size.
        expected: usize,
        /// The buffer's size.
        actual: usize,
    },
}

/// Marks ABI structs as plain old data for aya maps.
macro_rules! pod {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: $t is #[repr(C)], Copy, made only of integer fields with all
        // padding explicit (its size is asserted to be the sum of the C
        // fields), so every bit pattern is valid and there are no
        // uninitialized bytes.
        #[allow(unsafe_code)]
        unsafe impl aya::Pod for $t {}
    )*};
}

pub mod runtime;

fn be32(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

fn addr(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

// ---------------------------------------------------------------- common ---

/// Security identity of everything outside the cluster (an ipcache miss).
pub const IDENTITY_WORLD: u32 = 2;

/// Direction of policy (`PAL_DIR_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Direction {
    /// Traffic entering the endpoint (`PAL_DIR_INGRESS`).
    Ingress = 0,
    /// Traffic leaving the endpoint (`PAL_DIR_EGRESS`).
    Egress = 1,
}

impl Direction {
    /// The ABI value.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The direction of an ABI value.
    pub const fn from_u8(v: u8) -> Option<Direction> {
        match v {
            0 => Some(Direction::Ingress),
            1 => Some(Direction::Egress),
            _ => None,
        }
    }
}

// -------------------------------------------------------------- endpoint ---

/// `PAL_EP_ENFORCE_INGRESS`: policy is enforced for traffic entering the endpoint.
pub const EP_ENFORCE_INGRESS: u16 = 1 << 0;
/// `PAL_EP_ENFORCE_EGRESS`: policy is enforced for traffic leaving the endpoint.
pub const EP_ENFORCE_EGRESS: u16 = 1 << 1;
/// `PAL_EP_AUDIT_INGRESS`: ingress denials are reported as audit and pass.
pub const EP_AUDIT_INGRESS: u16 = 1 << 2;
/// `PAL_EP_AUDIT_EGRESS`: egress denials are reported as audit and pass.
pub const EP_AUDIT_EGRESS: u16 = 1 << 3;

/// `struct pal_endpoint_key`: host-side veth ifindex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct EndpointKey {
    /// Host-side interface index.
    pub ifindex: u32,
}
const _: () = assert!(size_of::<EndpointKey>() == 4);

impl EndpointKey {
    /// Key of the endpoint behind host interface `ifindex`.
    pub const fn new(ifindex: u32) -> Self {
        Self { ifindex }
    }
}

/// `struct pal_endpoint_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct EndpointInfo {
    /// Security identity of the endpoint.
    pub identity: u32,
    /// Address, network byte order (see [`EndpointInfo::ipv4_addr`]).
    pub ipv4: u32,
    /// Endpoint id, also the policy-map key prefix.
    pub ep_id: u16,
    /// `EP_*` flags.
    pub flags: u16,
    /// Padding, zero.
    pub pad: u32,
}
const _: () = assert!(size_of::<EndpointInfo>() == 16);

impl EndpointInfo {
    /// An endpoint with `EP_*` flags.
    pub fn new(identity: u32, ipv4: Ipv4Addr, ep_id: u16, flags: u16) -> Self {
        Self {
            identity,
            ipv4: be32(ipv4),
            ep_id,
            flags,
            pad: 0,
        }
    }

    /// The endpoint's address.
    pub fn ipv4_addr(&self) -> Ipv4Addr {
        addr(self.ipv4)
    }
}

// --------------------------------------------------------------- ipcache ---

/// `struct pal_ipcache_key`: an IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct IpcacheKey {
    /// LPM prefix length in bits over `addr`.
    pub prefixlen: u32,
    /// Network byte order (see [`IpcacheKey::addr`]).
    pub addr: u32,
}
const _: () = assert!(size_of::<IpcacheKey>() == 8);

impl IpcacheKey {
    /// The prefix `addr/prefix_len`; host bits beyond the prefix are cleared.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, AbiError> {
        if prefix_len > 32 {
            return Err(AbiError::Ipv4PrefixTooLong { prefix_len });
        }
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        let masked = Ipv4Addr::from(u32::from(addr) & mask);
        Ok(Self {
            prefixlen: u32::from(prefix_len),
            addr: be32(masked),
        })
    }

    /// The prefix's address.
    pub fn addr(&self) -> Ipv4Addr {
        addr(self.addr)
    }

    /// The key as aya's [`lpm_trie::Key`] (for `LpmTrie<_, u32, IpcacheValue>`).
    pub fn lpm_key(&self) -> lpm_trie::Key<u32> {
        lpm_trie::Key::new(self.prefixlen, self.addr)
    }

    /// The key of an aya [`lpm_trie::Key`].
    pub fn from_lpm_key(key: &lpm_trie::Key<u32>) -> Self {
        Self {
            prefixlen: key.prefix_len(),
            addr: key.data(),
        }
    }
}

/// `PAL_IPCACHE_LOCAL_ENDPOINT`: the address is an endpoint on this node.
pub const IPCACHE_LOCAL_ENDPOINT: u32 = 1 << 0;

/// `struct pal_ipcache_value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(C)]
pub struct IpcacheValue {
    /// Security identity of the prefix.
    pub identity: u32,
    /// `IPCACHE_*` flags.
    pub flags: u32,
}
const _: () = assert!(size_of::<IpcacheValue>() == 8);

impl IpcacheValue {
    /// A prefix with this identity.
    pub const fn new(identity: u32) -> Self {
        Self { identity, flags: 0 }
    }

    /// The address of an endpoint on this node.
    pub const fn local_endpoint(identity: u32) -> Self {
        Self {
            identity,
            flags: IPCACHE_LOCAL_ENDPOINT,
        }
    }
}

// ---------------------------------------------------------------- tunnel ---

/// `struct pal_tunnel_value`: the node hosting a prefix of `pal_tunnel`
/// (keyed by [`IpcacheKey`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct TunnelValue {
    /// The node's underlay address, network byte order.
    pub endpoint: u32,
    /// Padding, zero.
    pub pad: u32,
}
const _: () = assert!(size_of::<TunnelValue>() == 8);

impl TunnelValue {
    /// A prefix hosted by the node at `endpoint`.
    pub fn new(endpoint: Ipv4Addr) -> Self {
        Self {
            endpoint: be32(endpoint),
            pad: 0,
        }
    }

    /// The node's underlay address.
    pub fn endpoint(&self) -> Ipv4Addr {
        addr(self.endpoint)
    }
}

/// `PAL_TUNNEL_ID_MAX`: the VNI carries identities up to this one.
pub const TUNNEL_ID_MAX: u32 = 0x00ff_ffff;
/// `PAL_MARK_IDENTITY`: top byte of `skb->mark` when it carries an identity.
pub const MARK_IDENTITY: u32 = 0xa500_0000;

// ---------------------------------------------------------------- policy ---

/// `PAL_POLICY_FIXED_PREFIX`: ep_id, dir, pad, identity.
pub const POLICY_FIXED_PREFIX: u32 = 64;
/// `PAL_POLICY_PROTO_PREFIX`: fixed part + protocol + pad2.
pub const POLICY_PROTO_PREFIX: u32 = 80;
/// `PAL_POLICY_FULL_PREFIX`: one exact port.
pub const POLICY_FULL_PREFIX: u32 = 96;
/// `PAL_POLICY_DENY`: the entry denies.
pub const POLICY_DENY: u8 = 1 << 0;

/// What part of L4 a policy entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4Prefix {
    /// Any protocol and port (prefix 64).
    Any,
    /// Every port of one IP protocol (prefix 80).
    Proto(u8),
    /// An aligned block of destination ports: the top `prefix_bits` (0..=16)
    /// bits of `port` (prefix 80 + `prefix_bits`). Lower bits of `port` are
    /// cleared by [`PolicyKey::new`].
    Port {
        /// IP protocol.
        proto: u8,
        /// Destination port (host order).
        port: u16,
        /// Matched high bits of the port, 0..=16.
        prefix_bits: u8,
    },
}

/// `struct pal_policy_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct PolicyKey {
    /// LPM prefix length in bits after this field.
    pub prefixlen: u32,
    /// Endpoint id.
    pub ep_id: u16,
    /// [`Direction`] as u8.
    pub dir: u8,
    /// Padding, zero.
    pub pad: u8,
    /// Remote identity; 0 = any.
    pub identity: u32,
    /// IP protocol; ignored below [`POLICY_PROTO_PREFIX`].
    pub protocol: u8,
    /// Padding, zero.
    pub pad2: u8,
    /// Destination port, network byte order (see [`PolicyKey::dport`]).
    pub dport: u16,
}
const _: () = assert!(size_of::<PolicyKey>() == 16);

/// The data part of [`PolicyKey`] (everything after `prefixlen`), for aya's
/// `LpmTrie<_, PolicyKeyData, PolicyValue>` whose [`lpm_trie::Key`] carries the
/// prefix length itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct PolicyKeyData {
    /// See [`PolicyKey::ep_id`].
    pub ep_id: u16,
    /// See [`PolicyKey::dir`].
    pub dir: u8,
    /// Padding, zero.
    pub pad: u8,
    /// See [`PolicyKey::identity`].
    pub identity: u32,
    /// See [`PolicyKey::protocol`].
    pub protocol: u8,
    /// Padding, zero.
    pub pad2: u8,
    /// See [`PolicyKey::dport`].
    pub dport: u16,
}
const _: () = assert!(size_of::<PolicyKeyData>() == 12);

impl PolicyKey {
    /// The entry key of endpoint `ep_id`, direction `dir`, remote `identity`
    /// (0 = any) and `l4`. The prefix length is computed from `l4` and the
    /// port is masked to its prefix.
    pub fn new(ep_id: u16, dir: Direction, identity: u32, l4: L4Prefix) -> Result<Self, AbiError> {
        let (prefixlen, protocol, port) = match l4 {
            L4Prefix::Any => (POLICY_FIXED_PREFIX, 0, 0),
            L4Prefix::Proto(p) => (POLICY_PROTO_PREFIX, p, 0),
            L4Prefix::Port {
                proto,
                port,
                prefix_bits,
            } => {
                if prefix_bits > 16 {
                    return Err(AbiError::PortPrefixTooLong { prefix_bits });
                }
                let mask = u16::MAX
                    .checked_shl(16 - u32::from(prefix_bits))
                    .unwrap_or(0);
                (
                    POLICY_PROTO_PREFIX + u32::from(prefix_bits),
                    proto,
                    port & mask,
                )
            }
        };
        Ok(Self {
            prefixlen,
            ep_id,
            dir: dir.as_u8(),
            pad: 0,
            identity,
            protocol,
            pad2: 0,
            dport: port.to_be(),
        })
    }

    /// The destination port (host order).
    pub const fn dport(&self) -> u16 {
        u16::from_be(self.dport)
    }

    /// The direction, if valid.
    pub const fn direction(&self) -> Option<Direction> {
        Direction::from_u8(self.dir)
    }

    /// The key as aya's [`lpm_trie::Key`].
    pub fn lpm_key(&self) -> lpm_trie::Key<PolicyKeyData> {
        lpm_trie::Key::new(
            self.prefixlen,
            PolicyKeyData {
                ep_id: self.ep_id,
                dir: self.dir,
                pad: self.pad,
                identity: self.identity,
                protocol: self.protocol,
                pad2: self.pad2,
                dport: self.dport,
            },
        )
    }

    /// The key of an aya [`lpm_trie::Key`].
    pub fn from_lpm_key(key: &lpm_trie::Key<PolicyKeyData>) -> Self {
        let d = key.data();
        Self {
            prefixlen: key.prefix_len(),
            ep_id: d.ep_id,
            dir: d.dir,
            pad: d.pad,
            identity: d.identity,
            protocol: d.protocol,
            pad2: d.pad2,
            dport: d.dport,
        }
    }
}

/// `struct pal_policy_value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct PolicyValue {
    /// `POLICY_*` flags.
    pub flags: u8,
    /// 0 = none, else `AUTH_TYPE_*`: the mutual authentication an allowed
    /// connection needs.
    pub auth_type: u8,
    /// Padding, zero.
    pub pad: u16,
    /// Agent-side index of the rule that produced the entry.
    pub rule_id: u32,
}
const _: () = assert!(size_of::<PolicyValue>() == 8);

impl PolicyValue {
    /// An allow entry.
    pub const fn allow(rule_id: u32) -> Self {
        Self {
            flags: 0,
            auth_type: 0,
            pad: 0,
            rule_id,
        }
    }

    /// A deny entry.
    pub const fn deny(rule_id: u32) -> Self {
        Self {
            flags: POLICY_DENY,
            auth_type: 0,
            pad: 0,
            rule_id,
        }
    }

    /// Whether the entry denies.
    pub const fn is_deny(&self) -> bool {
        self.flags & POLICY_DENY != 0
    }
}

// ------------------------------------------------------------- conntrack ---

/// `PAL_CT_SEEN_REPLY`: a packet in the reply direction was seen.
pub const CT_SEEN_REPLY: u8 = 1 << 0;
/// `PAL_CT_AUDITED`: admitted in audit mode by a policy that would deny it.
pub const CT_AUDITED: u8 = 1 << 1;
/// `PAL_CT_CLOSING`: a FIN or RST was seen.
pub const CT_CLOSING: u8 = 1 << 2;
/// `PAL_CT_REVOKED`: policy no longer allows the connection; its packets are
/// dropped until a later policy revision allows it again.
pub const CT_REVOKED: u8 = 1 << 3;
/// `PAL_CT_TUNNEL_IDENTITY`: the remote identity came from the overlay.
pub const CT_TUNNEL_IDENTITY: u8 = 1 << 4;
/// `PAL_CT_AUTH_PENDING`: with [`CT_REVOKED`], the connection waits for
/// mutual authentication (its packets are dropped with `AUTH_REQUIRED`).
pub const CT_AUTH_PENDING: u8 = 1 << 5;

// ------------------------------------------------------------------ auth ---

/// `PAL_AUTH_TYPE_SPIFFE`: mutual TLS with SPIFFE SVIDs between the nodes.
pub const AUTH_TYPE_SPIFFE: u8 = 1;
/// `PAL_AUTH_TYPE_ALWAYS_FAIL`: authentication that always fails (tests).
pub const AUTH_TYPE_ALWAYS_FAIL: u8 = 2;
/// `PAL_AUTH_NODE_UNKNOWN` (network byte order, all ones): the remote node
/// of a peer that is neither local nor behind a known node; never
/// authenticated.
pub const AUTH_NODE_UNKNOWN: u32 = u32::MAX;

/// `struct pal_auth_key`: an authenticated pair, from this node's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(C)]
pub struct AuthKey {
    /// Identity of the endpoint on this node.
    pub local_identity: u32,
    /// Identity of its peer.
    pub remote_identity: u32,
    /// Network byte order: the underlay address of the peer's node; 0 = this node.
    pub remote_node: u32,
    /// `AUTH_TYPE_*`.
    pub auth_type: u8,
    /// Padding, zero.
    pub pad: [u8; 3],
}
const _: () = assert!(size_of::<AuthKey>() == 16);

impl AuthKey {
    /// The key of a pair; `remote_node` `None` is this node.
    pub fn new(local: u32, remote: u32, remote_node: Option<Ipv4Addr>, auth_type: u8) -> Self {
        Self {
            local_identity: local,
            remote_identity: remote,
            remote_node: remote_node.map_or(0, be32),
            auth_type,
            pad: [0; 3],
        }
    }

    /// The peer's node, `None` for this node.
    pub fn remote_node(&self) -> Option<Ipv4Addr> {
        (self.remote_node != 0).then(|| addr(self.remote_node))
    }

    /// Whether the datapath knew the peer's node (see [`AUTH_NODE_UNKNOWN`]).
    pub fn node_known(&self) -> bool {
        self.remote_node != AUTH_NODE_UNKNOWN
    }
}

/// `struct pal_auth_value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct AuthValue {
    /// `bpf_ktime_get_boot_ns()` (CLOCK_BOOTTIME) after which the entry no
    /// longer counts.
    pub expires_ns: u64,
}
const _: () = assert!(size_of::<AuthValue>() == 8);

/// `struct pal_ct_key`: the tuple of the packet that created the entry and
/// the direction whose policy admitted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct CtKey {
    /// Network byte order.
    pub saddr: u32,
    /// Network byte order.
    pub daddr: u32,
    /// Network byte order (ICMP echo request: identifier).
    pub sport: u16,
    /// Network byte order (ICMP echo reply: identifier).
    pub dport: u16,
    /// IP protocol.
    pub protocol: u8,
    /// [`Direction`] as u8.
    pub dir: u8,
    /// Padding, zero.
    pub pad: u16,
}
const _: () = assert!(size_of::<CtKey>() == 16);

impl CtKey {
    /// A tuple with host-order ports.
    pub fn new(
        saddr: Ipv4Addr,
        daddr: Ipv4Addr,
        sport: u16,
        dport: u16,
        protocol: u8,
        dir: Direction,
    ) -> Self {
        Self {
            saddr: be32(saddr),
            daddr: be32(daddr),
            sport: sport.to_be(),
            dport: dport.to_be(),
            protocol,
            dir: dir.as_u8(),
            pad: 0,
        }
    }

    /// Source address.
    pub fn saddr(&self) -> Ipv4Addr {
        addr(self.saddr)
    }

    /// Destination address.
    pub fn daddr(&self) -> Ipv4Addr {
        addr(self.daddr)
    }

    /// Source port (host order).
    pub const fn sport(&self) -> u16 {
        u16::from_be(self.sport)
    }

    /// Destination port (host order).
    pub const fn dport(&self) -> u16 {
        u16::from_be(self.dport)
    }

    /// The direction, if valid.
    pub const fn direction(&self) -> Option<Direction> {
        Direction::from_u8(self.dir)
    }
}

/// `struct pal_ct_value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct CtValue {
    /// `bpf_ktime_get_ns()` at creation.
    pub created_ns: u64,
    /// `bpf_ktime_get_ns()` of the last packet.
    pub last_seen_ns: u64,
    /// Packets, both directions.
    pub packets: u64,
    /// Bytes, both directions.
    pub bytes: u64,
    /// Policy revision the verdict was taken at.
    pub policy_rev: u32,
    /// Remote identity.
    pub remote_identity: u32,
    /// Endpoint that owns the entry.
    pub ep_id: u16,
    /// `CT_*` flags.
    pub flags: u8,
    /// Padding.
    pub pad: u8,
    /// Rule that allowed it.
    pub rule_id: u32,
}
const _: () = assert!(size_of::<CtValue>() == 48);

/// `struct pal_frag_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct FragKey {
    /// Network byte order.
    pub saddr: u32,
    /// Network byte order.
    pub daddr: u32,
    /// IPv4 identification, network byte order.
    pub id: u16,
    /// IP protocol.
    pub protocol: u8,
    /// Padding, zero.
    pub pad: u8,
}
const _: () = assert!(size_of::<FragKey>() == 12);

impl FragKey {
    /// The key of a datagram (host-order IP id).
    pub fn new(saddr: Ipv4Addr, daddr: Ipv4Addr, id: u16, protocol: u8) -> Self {
        Self {
            saddr: be32(saddr),
            daddr: be32(daddr),
            id: id.to_be(),
            protocol,
            pad: 0,
        }
    }
}

/// `struct pal_frag_value`: ports learnt from a first fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct FragValue {
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
}
const _: () = assert!(size_of::<FragValue>() == 4);

impl FragValue {
    /// Source port (host order).
    pub const fn sport(&self) -> u16 {
        u16::from_be(self.sport)
    }

    /// Destination port (host order).
    pub const fn dport(&self) -> u16 {
        u16::from_be(self.dport)
    }
}

// ----------------------------------------------------------------- state ---

/// `struct pal_state`: the single entry of `pal_state` (index 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct State {
    /// Bumped after every change of policy, ipcache or endpoints; conntrack
    /// entries of an older revision are re-evaluated at their next packet.
    pub policy_rev: u32,
    /// Padding, zero.
    pub pad: u32,
}
const _: () = assert!(size_of::<State>() == 8);

impl State {
    /// State at a revision.
    pub const fn new(policy_rev: u32) -> Self {
        Self { policy_rev, pad: 0 }
    }
}

// ---------------------------------------------------------------- events ---

/// `PAL_EVENT_FLOW_NEW`: a new connection was admitted.
pub const EVENT_FLOW_NEW: u8 = 1;
/// `PAL_EVENT_DROP`: a packet was dropped.
pub const EVENT_DROP: u8 = 2;
/// `PAL_EVENT_AUDIT`: policy would have dropped it; audit mode let it pass.
pub const EVENT_AUDIT: u8 = 3;
/// `PAL_OBS_FROM_ENDPOINT`: leaving an endpoint.
pub const OBS_FROM_ENDPOINT: u8 = 0;
/// `PAL_OBS_TO_ENDPOINT`: entering an endpoint.
pub const OBS_TO_ENDPOINT: u8 = 1;
/// `PAL_OBS_TO_OVERLAY`: leaving the node for another node.
pub const OBS_TO_OVERLAY: u8 = 2;
/// `PAL_OBS_FROM_OVERLAY`: arriving from another node.
pub const OBS_FROM_OVERLAY: u8 = 3;
/// `PAL_OBS_MAX`: the number of observation points.
pub const OBS_MAX: u8 = 4;

/// The name of an observation point (`OBS_*`) in status and events.
pub const fn observation_name(observation: u8) -> &'static str {
    match observation {
        OBS_FROM_ENDPOINT => "from-endpoint",
        OBS_TO_ENDPOINT => "to-endpoint",
        OBS_TO_OVERLAY => "to-overlay",
        OBS_FROM_OVERLAY => "from-overlay",
        _ => "unknown",
    }
}

/// `struct pal_event`, as read from the `pal_events` ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct Event {
    /// `bpf_ktime_get_ns()`.
    pub timestamp_ns: u64,
    /// `EVENT_*`.
    pub r#type: u8,
    /// `OBS_*`.
    pub observation: u8,
    /// IP protocol, 0 when not IPv4.
    pub protocol: u8,
    /// Authentication the verdict needed (`AUTH_TYPE_*`), 0 if none.
    pub auth_type: u8,
    /// [`Reason`] code.
    pub reason: i32,
    /// Interface.
    pub ifindex: u32,
    /// Endpoint id (0 if unknown).
    pub ep_id: u16,
    /// Network byte order.
    pub ethertype: u16,
    /// Identity of the source.
    pub src_identity: u32,
    /// Identity of the destination.
    pub dst_identity: u32,
    /// Network byte order.
    pub saddr: u32,
    /// Network byte order.
    pub daddr: u32,
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    /// Rule that allowed (or, for deny rules, denied) it; 0 if none.
    pub rule_id: u32,
    /// Policy revision the verdict was taken at.
    pub policy_rev: u32,
    /// Network byte order; with `auth_type`: the peer's node as the auth
    /// map names it (0 = this node).
    pub remote_node: u32,
}
const _: () = assert!(size_of::<Event>() == 56);

impl Event {
    /// Decodes an event from a ring-buffer record (native byte order, as the
    /// kernel wrote it).
    pub fn from_bytes(b: &[u8]) -> Result<Self, AbiError> {
        if b.len() != size_of::<Event>() {
            return Err(AbiError::BadLength {
                what: "pal_event",
                expected: size_of::<Event>(),
                actual: b.len(),
            });
        }
        let u64_at = |o: usize| {
            u64::from_ne_bytes([
                b[o],
                b[o + 1],
                b[o + 2],
                b[o + 3],
                b[o + 4],
                b[o + 5],
                b[o + 6],
                b[o + 7],
            ])
        };
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        use core::mem::offset_of;
        Ok(Self {
            timestamp_ns: u64_at(offset_of!(Event, timestamp_ns)),
            r#type: b[offset_of!(Event, r#type)],
            observation: b[offset_of!(Event, observation)],
            protocol: b[offset_of!(Event, protocol)],
            auth_type: b[offset_of!(Event, auth_type)],
            reason: u32_at(offset_of!(Event, reason)) as i32,
            ifindex: u32_at(offset_of!(Event, ifindex)),
            ep_id: u16_at(offset_of!(Event, ep_id)),
            ethertype: u16_at(offset_of!(Event, ethertype)),
            src_identity: u32_at(offset_of!(Event, src_identity)),
            dst_identity: u32_at(offset_of!(Event, dst_identity)),
            saddr: u32_at(offset_of!(Event, saddr)),
            daddr: u32_at(offset_of!(Event, daddr)),
            sport: u16_at(offset_of!(Event, sport)),
            dport: u16_at(offset_of!(Event, dport)),
            rule_id: u32_at(offset_of!(Event, rule_id)),
            policy_rev: u32_at(offset_of!(Event, policy_rev)),
            remote_node: u32_at(offset_of!(Event, remote_node)),
        })
    }

    /// The reason, if the code is known.
    pub const fn reason(&self) -> Option<Reason> {
        Reason::from_code(self.reason)
    }

    /// Source address.
    pub fn saddr(&self) -> Ipv4Addr {
        addr(self.saddr)
    }

    /// Destination address.
    pub fn daddr(&self) -> Ipv4Addr {
        addr(self.daddr)
    }

    /// Source port (host order).
    pub const fn sport(&self) -> u16 {
        u16::from_be(self.sport)
    }

    /// Destination port (host order).
    pub const fn dport(&self) -> u16 {
        u16::from_be(self.dport)
    }

    /// Ethertype (host order).
    pub const fn ethertype(&self) -> u16 {
        u16::from_be(self.ethertype)
    }

    /// The authenticated pair this event's verdict needed (from the side of
    /// the endpoint it was taken at), if it needed one.
    pub fn auth_key(&self) -> Option<AuthKey> {
        if self.auth_type == 0 {
            return None;
        }
        let (local, remote) = if self.observation == OBS_FROM_ENDPOINT {
            (self.src_identity, self.dst_identity)
        } else {
            (self.dst_identity, self.src_identity)
        };
        Some(AuthKey {
            local_identity: local,
            remote_identity: remote,
            remote_node: self.remote_node,
            auth_type: self.auth_type,
            pad: [0; 3],
        })
    }
}

/// `struct pal_metrics_value`: per-CPU counters of one reason and observation point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct MetricsValue {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}
const _: () = assert!(size_of::<MetricsValue>() == 16);

/// `PAL_REASON_MAX`: the metrics array has `REASON_MAX * OBS_MAX` entries.
pub const REASON_MAX: u32 = 64;
/// `PAL_COUNTER_EVENTS_LOST`: index in `pal_counters` of events lost to a full ring buffer.
pub const COUNTER_EVENTS_LOST: u32 = 0;
/// `PAL_COUNTER_MAX`: size of `pal_counters`.
pub const COUNTER_MAX: u32 = 8;

/// Index in `pal_metrics` of a reason at an observation point (`OBS_*`).
pub const fn metrics_index(reason: Reason, observation: u8) -> u32 {
    (-reason.code()) as u32 * OBS_MAX as u32 + observation as u32
}

pod!(
    EndpointKey,
    EndpointInfo,
    IpcacheKey,
    IpcacheValue,
    TunnelValue,
    PolicyKey,
    PolicyKeyData,
    PolicyValue,
    CtKey,
    CtValue,
    AuthKey,
    AuthValue,
    FragKey,
    FragValue,
    State,
    Event,
    MetricsValue,
);
