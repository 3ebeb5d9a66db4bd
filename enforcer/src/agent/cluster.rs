//! The cluster store behind one interface ([`ClusterStore`]): the local one
//! (a node alone: identities allocated here, the configured pod CIDR, no
//! peers) and etcd (shared identities, allocated pod CIDRs, other nodes'
//! pods). And how the agent applies what it learns of other nodes.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_api::{ClusterStatus, NodeInfo, OverlayStatus};
use palisade_cluster::{
    Change, ClusterConfig, ClusterView, EndpointRecord, NodeRecord, PodCidr, Session,
};
use palisade_identity::{
    AllocatorSnapshot, IdentityAllocator, Labels, NumericIdentity, ReservedIdentity,
};
use tracing::{info, warn};

use super::{Agent, AgentError};
use crate::state::{write_atomic, StateError};

/// The last known view of the cluster, in the state directory.
pub const VIEW_FILE: &str = "cluster.json";
/// How long a first start waits for etcd to hand out a pod CIDR.
const FIRST_CLAIM_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the agent keeps identities, learns its pod CIDR and shares its
/// endpoints.
pub trait ClusterStore: Send {
    /// `local` or `etcd`.
    fn kind(&self) -> &'static str;
    /// Takes a reference on the identity of `labels`; true when the policy
    /// engine may not know it yet.
    fn acquire_identity(&mut self, labels: &Labels) -> Result<(NumericIdentity, bool), AgentError>;
    /// Drops a reference; returns an identity the engine must forget.
    fn release_identity(&mut self, labels: &Labels) -> Option<NumericIdentity>;
    /// Sets every reference from the endpoints (labels and the number they
    /// were saved with), after a restart.
    fn recount(&mut self, holders: &[(Labels, NumericIdentity)]) -> Result<(), AgentError>;
    /// The identity of `labels`, if this node knows one.
    fn lookup_identity(&self, labels: &Labels) -> Option<NumericIdentity>;
    /// Every identity the policy engine must know, with this node's
    /// holders of each.
    fn identities(&self) -> Vec<(NumericIdentity, Labels, u32)>;
    /// What `state.json` keeps of the identities.
    fn snapshot(&self) -> AllocatorSnapshot;
    /// Shares one of this node's endpoints with the other nodes.
    fn publish_endpoint(&mut self, record: &EndpointRecord);
    /// Withdraws one of this node's endpoints.
    fn withdraw_endpoint(&mut self, ip: Ipv4Addr);
    /// The view of the cluster as last seen (etcd store only).
    fn view(&self) -> Option<ClusterView>;
    /// The etcd session, for readers that must not wait for the agent
    /// (the node CA asks it where endpoints are).
    fn session(&self) -> Option<Session>;
    /// Saves the last known view of the cluster.
    fn save_view(&self, state_dir: &Path) -> Result<(), StateError>;
    /// The store's health, for `palisade cluster status`.
    fn status(&self) -> ClusterStatus;
}

/// A node alone: today's single-node behaviour.
pub struct LocalStore {
    allocator: IdentityAllocator,
}

impl LocalStore {
    /// The store restored from `state.json`.
    pub fn new(snapshot: AllocatorSnapshot) -> Self {
        Self {
            allocator: IdentityAllocator::from_snapshot(snapshot),
        }
    }
}

impl ClusterStore for LocalStore {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn acquire_identity(&mut self, labels: &Labels) -> Result<(NumericIdentity, bool), AgentError> {
        self.allocator
            .acquire(labels)
            .map_err(|e| AgentError::Invalid(e.to_string()))
    }

    fn release_identity(&mut self, labels: &Labels) -> Option<NumericIdentity> {
        self.allocator.release(labels)
    }

    fn recount(&mut self, holders: &[(Labels, NumericIdentity)]) -> Result<(), AgentError> {
        self.allocator
            .recount(holders.iter().map(|(l, _)| l))
            .map_err(|e| AgentError::Invalid(e.to_string()))
    }

    fn lookup_identity(&self, labels: &Labels) -> Option<NumericIdentity> {
        self.allocator.lookup(labels)
    }

    fn identities(&self) -> Vec<(NumericIdentity, Labels, u32)> {
        self.allocator
            .iter()
            .map(|(id, l, refs)| (id, l.clone(), refs))
            .collect()
    }

    fn snapshot(&self) -> AllocatorSnapshot {
        self.allocator.snapshot()
    }

    fn publish_endpoint(&mut self, _record: &EndpointRecord) {}

    fn withdraw_endpoint(&mut self, _ip: Ipv4Addr) {}

    fn view(&self) -> Option<ClusterView> {
        None
    }

    fn session(&self) -> Option<Session> {
        None
    }

    fn save_view(&self, _state_dir: &Path) -> Result<(), StateError> {
        Ok(())
    }

    fn status(&self) -> ClusterStatus {
        ClusterStatus {
            store: "local".into(),
            ..ClusterStatus::default()
        }
    }
}

/// A node of a cluster sharing its state through etcd.
pub struct EtcdStore {
    session: Session,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl EtcdStore {
    /// Starts the etcd session (its background work runs on the current
    /// tokio runtime) from the last known view in `state_dir`.
    pub fn start(
        config: &ClusterConfig,
        cluster: &str,
        node: &str,
        state_dir: &Path,
    ) -> Result<(Self, tokio::sync::mpsc::UnboundedReceiver<Vec<Change>>), AgentError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            AgentError::Invalid(format!("the cluster store needs the async runtime: {e}"))
        })?;
        let view = load_view(state_dir)?;
        let (session, rx) = Session::start(config.clone(), cluster, node, view)
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        let timeout = config.request_timeout() * 4;
        Ok((
            Self {
                session,
                runtime,
                timeout,
            },
            rx,
        ))
    }

    /// Claims the node's pod CIDR (see [`Session::claim_pod_cidr`]). With a
    /// CIDR saved from an earlier start, an unreachable etcd is no reason
    /// to wait: the node goes on with it and claims it later. A first
    /// start waits up to 30 s for etcd.
    pub fn pod_cidr(
        &self,
        wanted: Option<PodCidr>,
        saved: Option<PodCidr>,
    ) -> Result<PodCidr, AgentError> {
        let deadline = std::time::Instant::now() + FIRST_CLAIM_TIMEOUT;
        loop {
            let claim = self.session.claim_pod_cidr(wanted, saved);
            match self.runtime.block_on(claim) {
                Ok(c) => return Ok(c),
                Err(e) if e.store_failure() => {
                    if let Some(s) = saved.filter(|s| wanted.is_none_or(|w| w == *s)) {
                        warn!(error = %e, cidr = %s, "etcd unreachable: going on with the saved pod CIDR");
                        self.session.assume_pod_cidr(s);
                        return Ok(s);
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(AgentError::Invalid(format!(
                            "no pod CIDR: this node has none yet and etcd cannot hand one out ({e})"
                        )));
                    }
                    warn!(error = %e, "waiting for etcd to allocate this node's pod CIDR");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(AgentError::Invalid(e.to_string())),
            }
        }
    }

    /// Registers this node.
    pub fn set_node(&self, record: &NodeRecord) {
        self.session.set_node(record);
    }
}

impl ClusterStore for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn acquire_identity(&mut self, labels: &Labels) -> Result<(NumericIdentity, bool), AgentError> {
        let acquire = tokio::time::timeout(self.timeout, self.session.acquire_identity(labels));
        match self.runtime.block_on(acquire) {
            Ok(Ok(id)) => Ok((id, true)),
            Ok(Err(e)) => Err(AgentError::Invalid(format!(
                "no cluster identity for {labels}: {e}"
            ))),
            Err(_) => Err(AgentError::Invalid(format!(
                "no cluster identity for {labels}: etcd did not answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    fn release_identity(&mut self, labels: &Labels) -> Option<NumericIdentity> {
        // The identity stays in the cluster (and in the engine) until it is
        // garbage-collected.
        self.session.release_identity(labels);
        None
    }

    fn recount(&mut self, holders: &[(Labels, NumericIdentity)]) -> Result<(), AgentError> {
        let mut counts: BTreeMap<&Labels, (NumericIdentity, u32)> = BTreeMap::new();
        for (labels, id) in holders {
            counts.entry(labels).or_insert((*id, 0)).1 += 1;
        }
        self.session.recount(
            counts
                .into_iter()
                .map(|(l, (id, refs))| (l.clone(), id, refs)),
        );
        Ok(())
    }

    fn lookup_identity(&self, labels: &Labels) -> Option<NumericIdentity> {
        self.session.held_identity(labels)
    }

    fn identities(&self) -> Vec<(NumericIdentity, Labels, u32)> {
        let mut all: BTreeMap<NumericIdentity, (Labels, u32)> = self
            .session
            .view()
            .identities
            .into_iter()
            .map(|(id, labels)| (id, (labels, 0)))
            .collect();
        for (labels, id, refs) in self.session.held() {
            all.insert(id, (labels, refs));
        }
        all.into_iter()
            .map(|(id, (labels, refs))| (id, labels, refs))
            .collect()
    }

    fn snapshot(&self) -> AllocatorSnapshot {
        AllocatorSnapshot {
            identities: self
                .session
                .held()
                .into_iter()
                .map(|(labels, id, refs)| palisade_identity::AllocatedIdentity { id, labels, refs })
                .collect(),
            next: NumericIdentity::CLUSTER_MIN,
        }
    }

    fn publish_endpoint(&mut self, record: &EndpointRecord) {
        self.session.publish_endpoint(record);
    }

    fn withdraw_endpoint(&mut self, ip: Ipv4Addr) {
        self.session.withdraw_endpoint(ip);
    }

    fn view(&self) -> Option<ClusterView> {
        Some(self.session.view())
    }

    fn session(&self) -> Option<Session> {
        Some(self.session.clone())
    }

    fn save_view(&self, state_dir: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(&self.session.view()).unwrap_or_default();
        write_atomic(&view_path(state_dir), &bytes)
    }

    fn status(&self) -> ClusterStatus {
        let s = self.session.status();
        ClusterStatus {
            store: "etcd".into(),
            etcd_endpoints: s.endpoints,
            connected: s.connected,
            lease_id: s.lease_id,
            synced_revision: s.synced_revision,
            resyncs: s.resyncs,
            last_error: s.last_error.as_ref().map(|(m, _)| m.clone()),
            last_error_unix: s.last_error.map(|(_, t)| t),
            pending_writes: s.pending_writes,
            malformed_records: s.malformed,
            nodes: s.nodes,
            endpoints: s.endpoints_known,
            identities: s.identities,
            identities_collected: s.identities_collected,
            ..ClusterStatus::default()
        }
    }
}

fn view_path(state_dir: &Path) -> PathBuf {
    state_dir.join(VIEW_FILE)
}

/// The saved view; an unreadable one is not fatal (the first listing of
/// etcd replaces it), a missing one is empty.
fn load_view(state_dir: &Path) -> Result<ClusterView, AgentError> {
    let path = view_path(state_dir);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            warn!(path = %path.display(), error = %e, "ignoring an unreadable saved cluster view");
            ClusterView::default()
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClusterView::default()),
        Err(source) => Err(StateError::Io { path, source }.into()),
    }
}

/// This node's underlay address: the configured one, else the source
/// address the kernel picks toward the first etcd endpoint.
pub fn underlay_address(config: &ClusterConfig) -> Result<Ipv4Addr, AgentError> {
    if let Some(a) = config.node_address {
        return Ok(a);
    }
    let first = config
        .etcd
        .endpoints
        .first()
        .map(String::as_str)
        .unwrap_or_default();
    let hostport = first
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let cant = |why: String| {
        AgentError::Invalid(format!(
            "cannot tell this node's underlay address from the route to {first} ({why}); set cluster.node_address"
        ))
    };
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| cant(e.to_string()))?;
    sock.connect(hostport).map_err(|e| cant(e.to_string()))?;
    match sock.local_addr().map_err(|e| cant(e.to_string()))?.ip() {
        std::net::IpAddr::V4(a) if !a.is_loopback() && !a.is_unspecified() => Ok(a),
        other => Err(cant(format!("the route leaves from {other}"))),
    }
}

/// What the agent knows of other nodes and their pods.
#[derive(Debug, Default)]
pub struct Remote {
    /// Other nodes.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Other nodes' pods.
    pub endpoints: BTreeMap<Ipv4Addr, EndpointRecord>,
}

impl Remote {
    /// The other nodes and their pods in `view`, as seen by `local_node`.
    pub fn from_view(view: &ClusterView, local_node: &str) -> Self {
        Self {
            nodes: view.remote_nodes(local_node),
            endpoints: view.remote_endpoints(local_node),
        }
    }

    /// The ipcache entries (/32) of other nodes and their pods.
    pub fn ipcache(&self) -> impl Iterator<Item = (Ipv4Addr, u32)> + '_ {
        let nodes = self
            .nodes
            .values()
            .map(|n| (n.address, ReservedIdentity::RemoteNode.id().get()));
        let pods = self.endpoints.values().map(|e| (e.ip, e.identity.get()));
        nodes.chain(pods)
    }
}

/// What the overlay needs to reach the other nodes: `pal_tunnel` entries
/// and the routes into the overlay device.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TunnelPlan {
    /// (prefix, prefix length) -> the underlay address of the node hosting it.
    pub entries: BTreeMap<(Ipv4Addr, u8), Ipv4Addr>,
    /// Other nodes' pod CIDRs, routed into the overlay.
    pub routes: Vec<PodCidr>,
    /// Nodes left out, with why.
    pub skipped: Vec<(String, String)>,
}

impl Remote {
    /// The overlay plan for the other nodes, as seen by a node with pod CIDR
    /// `local_cidr` at `local_address` whose overlay uses UDP port
    /// `local_port`. A node whose CIDR overlaps this node's or an earlier
    /// (by name) node's, or whose address is this node's, is left out:
    /// routing it would hijack traffic of another node, which a correct
    /// cluster store never asks for. So is a node on another tunnel port
    /// (the overlay sends to one port).
    pub fn tunnel_plan(
        &self,
        local_cidr: PodCidr,
        local_address: Option<Ipv4Addr>,
        local_port: u16,
    ) -> TunnelPlan {
        let mut plan = TunnelPlan::default();
        let mut taken = vec![local_cidr];
        for node in self.nodes.values() {
            if node.tunnel_port != local_port {
                plan.skipped.push((
                    node.name.clone(),
                    format!(
                        "its tunnel port {} is not this node's {local_port} (every node needs the same cluster.tunnel_port)",
                        node.tunnel_port
                    ),
                ));
                continue;
            }
            if Some(node.address) == local_address {
                plan.skipped.push((
                    node.name.clone(),
                    format!("its address {} is this node's", node.address),
                ));
                continue;
            }
            if let Some(other) = taken.iter().find(|c| c.overlaps(&node.pod_cidr)) {
                plan.skipped.push((
                    node.name.clone(),
                    format!("its pod CIDR {} overlaps {other}", node.pod_cidr),
                ));
                continue;
            }
            taken.push(node.pod_cidr);
            plan.entries.insert(
                (node.pod_cidr.network, node.pod_cidr.prefix_len),
                node.address,
            );
            plan.entries.insert((node.address, 32), node.address);
            plan.routes.push(node.pod_cidr);
        }
        plan
    }
}

impl Agent {
    /// Makes `pal_tunnel` and the overlay routes match the nodes known now
    /// (a no-op outside a cluster).
    pub(super) fn sync_overlay(&mut self) -> Result<(), AgentError> {
        let (Some(device), Some(address)) = (self.overlay, self.node_address) else {
            return Ok(());
        };
        let plan = self.tunnel_plan();
        for (node, why) in &plan.skipped {
            warn!(node = %node, reason = %why, "node not routed through the overlay");
        }
        for ((prefix, len), endpoint) in &plan.entries {
            self.maps.tunnel.set(*prefix, *len, *endpoint)?;
        }
        for (prefix, len, _) in self.maps.tunnel.entries() {
            if !plan.entries.contains_key(&(prefix, len)) {
                self.maps.tunnel.remove(prefix, len)?;
            }
        }
        crate::overlay::sync_routes(device.ifindex, address, &plan.routes)?;
        Ok(())
    }

    /// Applies a batch of changes learned from the cluster: identities to
    /// the policy engine, other nodes' pods and addresses to the ipcache;
    /// then the policy difference and a new revision, so that established
    /// connections are checked against the remote identities as they are
    /// now.
    pub fn apply_cluster_changes(&mut self, changes: Vec<Change>) -> Result<(), AgentError> {
        let nodes_changed = changes
            .iter()
            .any(|c| matches!(c, Change::NodeUpsert(_) | Change::NodeRemove(_)));
        for change in changes {
            self.apply_cluster_change(change)?;
        }
        if nodes_changed {
            self.sync_overlay()?;
        }
        let diff = self.engine.compute();
        self.apply_diff(&diff)?;
        self.publish_revision()?;
        if let Err(e) = self.cluster.save_view(&self.config.state_dir) {
            warn!(error = %e, "the cluster view was not saved; a restart while etcd is down would start without it");
        }
        Ok(())
    }

    fn apply_cluster_change(&mut self, change: Change) -> Result<(), AgentError> {
        match change {
            Change::IdentityUpsert(id, labels) => self.engine.upsert_identity(id, labels),
            Change::IdentityRemove(id) => {
                if !self.endpoints.values().any(|e| e.identity == id.get()) {
                    self.engine.remove_identity(id);
                }
            }
            Change::EndpointUpsert(rec) => {
                if self.local_ip(rec.ip) {
                    warn!(ip = %rec.ip, node = %rec.node, "another node publishes an address of this node; ignored");
                    return Ok(());
                }
                self.maps.ipcache.set(rec.ip, 32, rec.identity.get())?;
                info!(ip = %rec.ip, node = %rec.node, identity = %rec.identity, pod = %format!("{}/{}", rec.namespace, rec.pod), "remote endpoint");
                self.remote.endpoints.insert(rec.ip, rec);
            }
            Change::EndpointRemove(ip) => {
                if self.remote.endpoints.remove(&ip).is_some() && !self.local_ip(ip) {
                    self.maps.ipcache.remove(ip, 32)?;
                    self.flush_conntrack(ip)?;
                    info!(%ip, "remote endpoint removed");
                }
            }
            Change::NodeUpsert(rec) => {
                if let Some(old) = self.remote.nodes.get(&rec.name) {
                    if old.address != rec.address && !self.local_ip(old.address) {
                        self.maps.ipcache.remove(old.address, 32)?;
                    }
                }
                if !self.local_ip(rec.address) {
                    self.maps.ipcache.set(
                        rec.address,
                        32,
                        ReservedIdentity::RemoteNode.id().get(),
                    )?;
                }
                info!(node = %rec.name, address = %rec.address, pod_cidr = %rec.pod_cidr, "node joined or changed");
                self.remote.nodes.insert(rec.name.clone(), rec);
            }
            Change::NodeRemove(name) => {
                if let Some(old) = self.remote.nodes.remove(&name) {
                    if !self.local_ip(old.address) {
                        self.maps.ipcache.remove(old.address, 32)?;
                    }
                    info!(node = %name, "node left");
                }
            }
        }
        Ok(())
    }

    /// Whether `ip` is one of this node's own (an endpoint or a node
    /// address): the ipcache entry is this node's, not the cluster's.
    fn local_ip(&self, ip: Ipv4Addr) -> bool {
        self.host_addrs.contains(&ip) || self.endpoints.values().any(|e| e.spec.ipv4 == ip)
    }

    fn tunnel_port(&self) -> u16 {
        self.config
            .cluster
            .as_ref()
            .map_or(palisade_cluster::DEFAULT_TUNNEL_PORT, |c| c.tunnel_port)
    }

    fn tunnel_plan(&self) -> TunnelPlan {
        self.remote
            .tunnel_plan(self.pod_cidr, self.node_address, self.tunnel_port())
    }

    /// `palisade cluster status`.
    pub fn cluster_status(&self) -> ClusterStatus {
        let mut s = self.cluster.status();
        s.node_name = self.config.node_name.clone();
        s.pod_cidr = self.pod_cidr.to_string();
        s.overlay = self.overlay.map(|device| {
            let plan = self.tunnel_plan();
            OverlayStatus {
                device: crate::overlay::OVERLAY_IFNAME.to_owned(),
                port: self.tunnel_port(),
                mtu: device.mtu,
                routed_nodes: plan.routes.len(),
                skipped_nodes: plan
                    .skipped
                    .iter()
                    .map(|(n, why)| format!("{n}: {why}"))
                    .collect(),
            }
        });
        s
    }

    /// `palisade node list`: this node and every node it knows.
    pub fn node_list(&self) -> Vec<NodeInfo> {
        let mut nodes: Vec<NodeInfo> = self
            .remote
            .nodes
            .values()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                address: n.address.to_string(),
                pod_cidr: n.pod_cidr.to_string(),
                endpoints: self
                    .remote
                    .endpoints
                    .values()
                    .filter(|e| e.node == n.name)
                    .count(),
                local: false,
            })
            .collect();
        nodes.push(NodeInfo {
            name: self.config.node_name.clone(),
            address: self.node_address.map(|a| a.to_string()).unwrap_or_default(),
            pod_cidr: self.pod_cidr.to_string(),
            endpoints: self.endpoints.len(),
            local: true,
        });
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn node(name: &str, address: [u8; 4], cidr: &str) -> NodeRecord {
        NodeRecord {
            name: name.to_owned(),
            address: Ipv4Addr::from(address),
            pod_cidr: cidr.parse().unwrap(),
            tunnel_port: palisade_cluster::DEFAULT_TUNNEL_PORT,
        }
    }

    fn remote(nodes: &[NodeRecord]) -> Remote {
        Remote {
            nodes: nodes.iter().map(|n| (n.name.clone(), n.clone())).collect(),
            endpoints: BTreeMap::new(),
        }
    }

    #[test]
    fn every_other_node_gets_its_cidr_and_address_routed() {
        let r = remote(&[
            node("n2", [10, 199, 0, 2], "10.200.1.0/24"),
            node("n3", [10, 199, 0, 3], "10.200.2.0/24"),
        ]);
        let plan = r.tunnel_plan(
            "10.200.0.0/24".parse().unwrap(),
            Some([10, 199, 0, 1].into()),
            palisade_cluster::DEFAULT_TUNNEL_PORT,
        );
        let n2 = Ipv4Addr::new(10, 199, 0, 2);
        assert_eq!(
            plan.entries.get(&(Ipv4Addr::new(10, 200, 1, 0), 24)),
            Some(&n2)
        );
        assert_eq!(plan.entries.get(&(n2, 32)), Some(&n2));
        assert_eq!(plan.entries.len(), 4);
        assert_eq!(plan.routes.len(), 2);
        assert!(plan.skipped.is_empty());
    }

    #[test]
    fn a_node_claiming_another_nodes_space_is_not_routed() {
        let r = remote(&[
            node("n2", [10, 199, 0, 2], "10.200.1.0/24"),
            node("n3", [10, 199, 0, 3], "10.200.0.0/16"),
            node("n4", [10, 199, 0, 1], "10.200.4.0/24"),
            node("n5", [10, 199, 0, 5], "10.200.1.128/25"),
            NodeRecord {
                tunnel_port: 4789,
                ..node("n6", [10, 199, 0, 6], "10.200.6.0/24")
            },
        ]);
        let plan = r.tunnel_plan(
            "10.200.0.0/24".parse().unwrap(),
            Some([10, 199, 0, 1].into()),
            palisade_cluster::DEFAULT_TUNNEL_PORT,
        );
        assert_eq!(plan.routes, vec!["10.200.1.0/24".parse().unwrap()]);
        let skipped: Vec<&str> = plan.skipped.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(skipped, ["n3", "n4", "n5", "n6"]);
        assert!(
            plan.skipped[3].1.contains("tunnel port 4789"),
            "{:?}",
            plan.skipped
        );
        assert!(
            plan.skipped[0].1.contains("overlaps 10.200.0.0/24"),
            "{:?}",
            plan.skipped
        );
        assert!(
            plan.skipped[1].1.contains("this node's"),
            "{:?}",
            plan.skipped
        );
    }
}
