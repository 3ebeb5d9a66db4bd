//! Typed handles of the datapath maps: each takes the ABI key and value
//! types of its map, never bytes.

use std::net::Ipv4Addr;

use aya::maps::lpm_trie::{self, LpmTrie};
use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf};
use aya::Ebpf;
use palisade_bpf::abi::{
    AuthKey, AuthValue, CtKey, CtValue, EndpointInfo, EndpointKey, IpcacheKey, IpcacheValue,
    MetricsValue, PolicyKey, PolicyKeyData, PolicyValue, State, TunnelValue,
};
use palisade_bpf::names;

use super::DatapathError;

/// A failed map operation.
#[derive(Debug, thiserror::Error)]
#[error("{op} on map {map} failed: {source}")]
pub struct MapOpError {
    /// The map.
    pub map: &'static str,
    /// The operation.
    pub op: &'static str,
    /// The error.
    #[source]
    pub source: Box<MapError>,
}

fn op_err(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> MapOpError {
    move |e| MapOpError {
        map,
        op,
        source: Box::new(e),
    }
}

/// Whether a map error means "no such key".
fn is_not_found(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound)
        || matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

/// Takes map `name` out of the object as a typed map.
fn take_map<T: TryFrom<aya::maps::Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, DatapathError> {
    let map = ebpf
        .take_map(name)
        .ok_or(DatapathError::MissingMap { name })?;
    T::try_from(map).map_err(|e| DatapathError::Map {
        name,
        source: Box::new(e),
    })
}

/// Every map of the datapath.
pub struct Maps {
    /// Endpoint interfaces.
    pub endpoints: EndpointMap,
    /// Address -> identity.
    pub ipcache: IpcacheMap,
    /// Other nodes' prefixes -> their underlay address.
    pub tunnel: TunnelMap,
    /// Policy entries of every endpoint.
    pub policy: PolicyMap,
    /// Connection tracking.
    pub ct: CtMap,
    /// Authenticated identity pairs, until the auth manager takes them.
    pub auth: Option<AuthMap>,
    /// Datapath-wide state (the policy revision).
    pub state: StateMap,
    /// Per-reason counters.
    pub metrics: MetricsMap,
    /// Internal counters (lost events).
    pub counters: CountersMap,
    /// The event ring buffer, until the event reader takes it.
    pub events: Option<RingBuf<MapData>>,
}

impl Maps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DatapathError> {
        Ok(Self {
            endpoints: EndpointMap(take_map(ebpf, names::ENDPOINTS)?),
            ipcache: IpcacheMap(PrefixTrie::take(ebpf, names::IPCACHE)?),
            tunnel: TunnelMap(PrefixTrie::take(ebpf, names::TUNNEL)?),
            policy: PolicyMap(take_map(ebpf, names::POLICY)?),
            ct: CtMap(take_map(ebpf, names::CT)?),
            auth: Some(AuthMap(take_map(ebpf, names::AUTH)?)),
            state: StateMap(take_map(ebpf, names::STATE)?),
            metrics: MetricsMap(take_map(ebpf, names::METRICS)?),
            counters: CountersMap(take_map(ebpf, names::COUNTERS)?),
            events: Some(take_map(ebpf, names::EVENTS)?),
        })
    }
}

/// `pal_endpoints`: host interface index -> endpoint.
pub struct EndpointMap(HashMap<MapData, EndpointKey, EndpointInfo>);

impl EndpointMap {
    /// Sets the endpoint behind an interface.
    pub fn set(&mut self, ifindex: u32, info: EndpointInfo) -> Result<(), MapOpError> {
        self.0
            .insert(EndpointKey { ifindex }, info, 0)
            .map_err(op_err(names::ENDPOINTS, "insert"))
    }

    /// Removes an interface (a missing one is fine).
    pub fn remove(&mut self, ifindex: u32) -> Result<(), MapOpError> {
        match self.0.remove(&EndpointKey { ifindex }) {
            Err(e) if !is_not_found(&e) => Err(op_err(names::ENDPOINTS, "delete")(e)),
            _ => Ok(()),
        }
    }

    /// Every entry.
    pub fn entries(&self) -> Vec<(u32, EndpointInfo)> {
        self.0
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.ifindex, v))
            .collect()
    }
}

/// An LPM trie keyed by an IPv4 prefix ([`IpcacheKey`]): `pal_ipcache` and
/// `pal_tunnel`.
struct PrefixTrie<V> {
    map: LpmTrie<MapData, u32, V>,
    name: &'static str,
}

impl<V: aya::Pod> PrefixTrie<V> {
    fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, DatapathError> {
        Ok(Self {
            map: take_map(ebpf, name)?,
            name,
        })
    }

    fn key(&self, addr: Ipv4Addr, prefix_len: u8) -> Result<lpm_trie::Key<u32>, MapOpError> {
        IpcacheKey::new(addr, prefix_len)
            .map(|k| k.lpm_key())
            .map_err(|e| MapOpError {
                map: self.name,
                op: "key",
                source: Box::new(MapError::InvalidName {
                    name: e.to_string(),
                }),
            })
    }

    fn set(&mut self, addr: Ipv4Addr, prefix_len: u8, value: V) -> Result<(), MapOpError> {
        let key = self.key(addr, prefix_len)?;
        self.map
            .insert(&key, value, 0)
            .map_err(op_err(self.name, "insert"))
    }

    fn remove(&mut self, addr: Ipv4Addr, prefix_len: u8) -> Result<(), MapOpError> {
        let key = self.key(addr, prefix_len)?;
        match self.map.remove(&key) {
            Err(e) if !is_not_found(&e) => Err(op_err(self.name, "delete")(e)),
            _ => Ok(()),
        }
    }

    fn entries(&self) -> Vec<(Ipv4Addr, u8, V)> {
        self.map
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| {
                let k = IpcacheKey::from_lpm_key(&k);
                (k.addr(), u8::try_from(k.prefixlen).unwrap_or(32), v)
            })
            .collect()
    }
}

/// `pal_ipcache`: address prefix -> identity.
pub struct IpcacheMap(PrefixTrie<IpcacheValue>);

impl IpcacheMap {
    /// Maps a prefix to an identity.
    pub fn set(&mut self, addr: Ipv4Addr, prefix_len: u8, identity: u32) -> Result<(), MapOpError> {
        self.0.set(addr, prefix_len, IpcacheValue::new(identity))
    }

    /// Maps a prefix to a value (identity and flags).
    pub fn set_value(
        &mut self,
        addr: Ipv4Addr,
        prefix_len: u8,
        value: IpcacheValue,
    ) -> Result<(), MapOpError> {
        self.0.set(addr, prefix_len, value)
    }

    /// Maps the address of an endpoint of this node to its identity.
    pub fn set_local_endpoint(&mut self, addr: Ipv4Addr, identity: u32) -> Result<(), MapOpError> {
        self.0.set(addr, 32, IpcacheValue::local_endpoint(identity))
    }

    /// Removes a prefix (a missing one is fine).
    pub fn remove(&mut self, addr: Ipv4Addr, prefix_len: u8) -> Result<(), MapOpError> {
        self.0.remove(addr, prefix_len)
    }

    /// Every entry as (address, prefix length, identity).
    pub fn entries(&self) -> Vec<(Ipv4Addr, u8, u32)> {
        self.0
            .entries()
            .into_iter()
            .map(|(a, l, v)| (a, l, v.identity))
            .collect()
    }
}

/// `pal_tunnel`: another node's prefix -> that node's underlay address.
pub struct TunnelMap(PrefixTrie<TunnelValue>);

impl TunnelMap {
    /// Routes a prefix to the node at `endpoint`.
    pub fn set(
        &mut self,
        addr: Ipv4Addr,
        prefix_len: u8,
        endpoint: Ipv4Addr,
    ) -> Result<(), MapOpError> {
        self.0.set(addr, prefix_len, TunnelValue::new(endpoint))
    }

    /// Removes a prefix (a missing one is fine).
    pub fn remove(&mut self, addr: Ipv4Addr, prefix_len: u8) -> Result<(), MapOpError> {
        self.0.remove(addr, prefix_len)
    }

    /// Every entry as (address, prefix length, node address).
    pub fn entries(&self) -> Vec<(Ipv4Addr, u8, Ipv4Addr)> {
        self.0
            .entries()
            .into_iter()
            .map(|(a, l, v)| (a, l, v.endpoint()))
            .collect()
    }
}

/// `pal_policy`: the policy entries of every endpoint.
pub struct PolicyMap(LpmTrie<MapData, PolicyKeyData, PolicyValue>);

impl PolicyMap {
    /// Writes one entry.
    pub fn set(&mut self, key: &PolicyKey, value: PolicyValue) -> Result<(), MapOpError> {
        self.0
            .insert(&key.lpm_key(), value, 0)
            .map_err(op_err(names::POLICY, "insert"))
    }

    /// Removes one entry (a missing one is fine).
    pub fn remove(&mut self, key: &PolicyKey) -> Result<(), MapOpError> {
        match self.0.remove(&key.lpm_key()) {
            Err(e) if !is_not_found(&e) => Err(op_err(names::POLICY, "delete")(e)),
            _ => Ok(()),
        }
    }

    /// Every entry.
    pub fn entries(&self) -> Vec<(PolicyKey, PolicyValue)> {
        self.0
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (PolicyKey::from_lpm_key(&k), v))
            .collect()
    }
}

/// `pal_ct`: connection tracking.
pub struct CtMap(HashMap<MapData, CtKey, CtValue>);

impl CtMap {
    /// Every entry.
    pub fn entries(&self) -> Vec<(CtKey, CtValue)> {
        self.0.iter().filter_map(Result::ok).collect()
    }

    /// Removes an entry (a missing one is fine).
    pub fn remove(&mut self, key: &CtKey) -> Result<(), MapOpError> {
        match self.0.remove(key) {
            Err(e) if !is_not_found(&e) => Err(op_err(names::CT, "delete")(e)),
            _ => Ok(()),
        }
    }
}

/// `pal_auth`: authenticated identity pairs and their expiry (boot-time ns).
pub struct AuthMap(HashMap<MapData, AuthKey, AuthValue>);

impl AuthMap {
    /// Sets a pair's expiry (`CLOCK_BOOTTIME` nanoseconds).
    pub fn set(&mut self, key: &AuthKey, expires_ns: u64) -> Result<(), MapOpError> {
        self.0
            .insert(key, AuthValue { expires_ns }, 0)
            .map_err(op_err(names::AUTH, "insert"))
    }

    /// Removes a pair (a missing one is fine).
    pub fn remove(&mut self, key: &AuthKey) -> Result<(), MapOpError> {
        match self.0.remove(key) {
            Err(e) if !is_not_found(&e) => Err(op_err(names::AUTH, "delete")(e)),
            _ => Ok(()),
        }
    }

    /// Every entry.
    pub fn entries(&self) -> Vec<(AuthKey, u64)> {
        self.0
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.expires_ns))
            .collect()
    }
}

/// `pal_state`: the datapath-wide state.
pub struct StateMap(Array<MapData, State>);

impl StateMap {
    /// The current policy revision.
    pub fn policy_rev(&self) -> Result<u32, MapOpError> {
        self.0
            .get(&0, 0)
            .map(|s| s.policy_rev)
            .map_err(op_err(names::STATE, "lookup"))
    }

    /// Publishes a new policy revision: established connections are checked
    /// against policy again at their next packet.
    pub fn set_policy_rev(&mut self, rev: u32) -> Result<(), MapOpError> {
        self.0
            .set(
                0,
                State {
                    policy_rev: rev,
                    pad: 0,
                },
                0,
            )
            .map_err(op_err(names::STATE, "update"))
    }
}

/// `pal_metrics`: packets and bytes per reason and observation point.
pub struct MetricsMap(PerCpuArray<MapData, MetricsValue>);

impl MetricsMap {
    /// Sums over CPUs: (index, packets, bytes) for every non-zero slot;
    /// index = -reason * 2 + observation.
    pub fn totals(&self) -> Vec<(u32, u64, u64)> {
        let mut out = Vec::new();
        for index in 0..self.0.len() {
            let Ok(values) = self.0.get(&index, 0) else {
                continue;
            };
            let (p, b) = values
                .iter()
                .fold((0u64, 0u64), |(p, b), v| (p + v.packets, b + v.bytes));
            if p > 0 {
                out.push((index, p, b));
            }
        }
        out
    }
}

/// `pal_counters`: internal counters.
pub struct CountersMap(PerCpuArray<MapData, u64>);

impl CountersMap {
    /// Index of the lost-events counter (see `bpf/lib/maps.h`).
    const EVENTS_LOST: u32 = 0;

    /// Events the kernel could not put in the ring buffer.
    pub fn events_lost(&self) -> u64 {
        self.0
            .get(&Self::EVENTS_LOST, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}
