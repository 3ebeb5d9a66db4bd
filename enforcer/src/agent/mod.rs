//! The agent: endpoints, identities and policy, kept in the datapath maps.
//!
//! Every change goes the same way: update the desired state (endpoints,
//! documents), let the policy engine compute the difference, write it to the
//! maps in an order that never opens a gap (new entries before the
//! enforcement flag turns on, the flag off before entries go), then publish
//! a new policy revision so that established connections are checked again.

mod auth;
pub mod cluster;
mod documents;
mod endpoints;
pub mod flows;
mod gc;
pub mod server;
mod spiffe;
mod status;
pub mod tracing_policies;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use palisade_api::{ApplySummary, Response};
use palisade_bpf::abi::{
    Direction as BpfDirection, EndpointInfo, IpcacheValue, L4Prefix, PolicyKey, PolicyValue,
    EP_AUDIT_EGRESS, EP_AUDIT_INGRESS, EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS, POLICY_DENY,
};
use palisade_cluster::{Change, NodeRecord, PodCidr};
use palisade_identity::{Labels, NumericIdentity, ReservedIdentity};
use palisade_policies::{
    Direction, EntryKey, EntryValue, L4Match, MapDiff, PolicyEngine, PolicyRef,
};
use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::datapath::maps::MapOpError;
use crate::datapath::{Datapath, DatapathError, Maps};
use crate::ipam::Ipam;
use crate::overlay::{OverlayDevice, OVERLAY_IFNAME};
use crate::state::{EndpointState, PersistedState, StateError};

pub use documents::Documents;

/// Why the agent could not start or carry out a request.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The datapath could not be loaded or changed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// A map operation failed.
    #[error(transparent)]
    Map(#[from] MapOpError),
    /// The state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// SPIFFE identity could not start.
    #[error("identity: {0}")]
    Identity(#[from] crate::identity::IdentityError),
    /// The overlay device or its routes could not be set up.
    #[error("overlay: {0}")]
    Overlay(#[from] crate::cni::netlink::NetlinkError),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
}

/// The running agent's state.
pub struct Agent {
    config: AgentConfig,
    started: Instant,
    datapath: Datapath,
    maps: Maps,
    engine: PolicyEngine,
    /// Identities, endpoints shared with other nodes: local or etcd.
    cluster: Box<dyn cluster::ClusterStore>,
    /// Changes of the cluster, until the agent's task takes them.
    cluster_changes: Option<tokio::sync::mpsc::UnboundedReceiver<Vec<Change>>>,
    /// Other nodes and their pods.
    remote: cluster::Remote,
    /// This node's pod CIDR (configured, or allocated by the cluster).
    pod_cidr: PodCidr,
    /// This node's underlay address, in a cluster.
    node_address: Option<Ipv4Addr>,
    /// The device other nodes' pods are reached through, in a cluster.
    overlay: Option<OverlayDevice>,
    ipam: Ipam,
    endpoints: BTreeMap<u16, EndpointState>,
    namespaces: BTreeMap<String, Labels>,
    documents: Documents,
    /// The policies in force with their source.
    policies: BTreeMap<PolicyRef, (String, Arc<palisade_policies::Policy>)>,
    policy_rev: u32,
    /// The bytes of `state.json` as last written, so that a change that
    /// leaves it unchanged (a policy apply) does not write it again.
    saved_state: Option<Vec<u8>>,
    /// The endpoints as their files last were written.
    saved_endpoints: BTreeMap<u16, EndpointState>,
    warnings: Vec<String>,
    /// What the kernel offers, probed once at start.
    mechanisms: Vec<palisade_api::Mechanism>,
    /// This node's own addresses, in the ipcache as the host identity.
    host_addrs: BTreeSet<Ipv4Addr>,
    /// Runtime enforcement (TracingPolicy), when running.
    tracing: Option<tracing_policies::TracingState>,
    /// SPIFFE identity: the CA and the SVIDs of hosted endpoints.
    identity: Option<Arc<crate::identity::IdentityService>>,
    /// Mutual authentication, when it runs.
    auth: Option<Arc<crate::auth::Auth>>,
    /// Why mutual authentication does not run, when it does not.
    auth_off: Option<String>,
}

impl Agent {
    /// Starts the agent: loads (or reuses) the pinned datapath, restores the
    /// persisted state and reconciles the maps and attachments with it.
    pub fn start(config: AgentConfig) -> Result<Self, AgentError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| StateError::Io {
            path: config.state_dir.clone(),
            source,
        })?;
        let persisted = PersistedState::load(&config.state_dir)?;
        let saved_cidr = persisted.as_ref().map(|p| p.ipam.cidr());
        let (store, cluster_changes, pod_cidr, node_address): (
            Box<dyn cluster::ClusterStore>,
            _,
            PodCidr,
            _,
        ) = match &config.cluster {
            None => {
                let cidr = config
                    .pod_cidr
                    .unwrap_or_else(crate::config::default_pod_cidr);
                let snapshot = persisted
                    .as_ref()
                    .map(|p| p.identities.clone())
                    .unwrap_or_default();
                (
                    Box::new(cluster::LocalStore::new(snapshot)),
                    None,
                    cidr,
                    None,
                )
            }
            Some(cc) => {
                let address = cluster::underlay_address(cc)?;
                let (store, rx) = cluster::EtcdStore::start(
                    cc,
                    &config.cluster_name,
                    &config.node_name,
                    &config.state_dir,
                )?;
                let cidr = store.pod_cidr(config.pod_cidr, saved_cidr)?;
                store.set_node(&NodeRecord {
                    name: config.node_name.clone(),
                    address,
                    pod_cidr: cidr,
                    tunnel_port: cc.tunnel_port,
                });
                (Box::new(store), Some(rx), cidr, Some(address))
            }
        };
        let persisted = persisted.unwrap_or_else(|| PersistedState::empty(Ipam::new(pod_cidr)));
        if persisted.ipam.cidr() != pod_cidr {
            return Err(AgentError::Invalid(format!(
                "the pod CIDR is {pod_cidr} (configured or allocated) but {} in the state of {}: endpoints hold addresses of the old CIDR; remove them first or restore the old pod_cidr",
                persisted.ipam.cidr(),
                config.state_dir.display()
            )));
        }
        let (mut datapath, mut maps) = Datapath::load(&config.bpf_root)?;
        let overlay = match (&config.cluster, node_address) {
            (Some(cc), Some(address)) => {
                let device = crate::overlay::ensure_device(cc.tunnel_port, address)?;
                datapath.attach_overlay(OVERLAY_IFNAME)?;
                Some(device)
            }
            _ => None,
        };
        if let Err(e) = crate::util::write_sysctl("net.ipv4.ip_forward", "1") {
            warn!(error = %e, "cannot enable IPv4 forwarding; pods will not reach each other");
        }
        // Version 1 kept the API documents in the state file; version 2 has
        // a file per document (which wins if both exist: a crash during the
        // move).
        let (files, mut warnings) = crate::state::load_api_documents(&config.state_dir)?;
        let legacy = !persisted.api_documents.is_empty();
        let mut api_documents = persisted.api_documents;
        api_documents.extend(files);
        let mut documents = Documents::new(config.policy_dir.clone());
        warnings.append(&mut documents.restore_api(&api_documents));
        if legacy {
            documents.mark_all_api_unsaved();
        }
        documents.rescan_dir();
        let own_ca_in_cluster = config.cluster.is_some()
            && config.identity.node_ca_listen.is_none()
            && config.identity.node_ca.is_none()
            && config.identity.ca_cert_file.is_none();
        if config.identity.enabled && own_ca_in_cluster {
            warn!(
                trust_domain = %config.identity.trust_domain,
                "this node of a cluster runs a CA of its own: its SVIDs do not verify on other nodes; \
                 set identity.node_ca_listen on one node and identity.node_ca on the others (docs/identity.md)"
            );
        }
        let identity = if config.identity.enabled {
            Some(crate::identity::IdentityService::start(
                &config.identity,
                &config.node_name,
                &config.state_dir,
            )?)
        } else {
            None
        };
        let (auth, auth_off) = match (config.auth.enabled, &identity, maps.auth.take()) {
            (false, _, _) => (None, Some("auth.enabled is false".to_owned())),
            (true, None, _) => (
                None,
                Some(
                    "identity.enabled is false: there are no SVIDs to authenticate with".to_owned(),
                ),
            ),
            (true, Some(_), None) => (None, Some("the auth map is taken".to_owned())),
            (true, Some(_), Some(map)) => (
                Some(crate::auth::Auth::new(
                    &config.auth,
                    config.cluster.is_some(),
                    map,
                )),
                None,
            ),
        };
        if let Some(why) = &auth_off {
            warn!(reason = %why, "mutual authentication is off: traffic that policy requires authentication for stays dropped");
        }
        let mut agent = Self {
            started: Instant::now(),
            datapath,
            maps,
            engine: PolicyEngine::new(),
            cluster: store,
            cluster_changes,
            remote: cluster::Remote::default(),
            pod_cidr,
            node_address,
            overlay,
            ipam: persisted.ipam,
            endpoints: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            documents,
            policies: BTreeMap::new(),
            policy_rev: 0,
            saved_state: None,
            saved_endpoints: BTreeMap::new(),
            warnings: Vec::new(),
            mechanisms: crate::probe::probe().features,
            host_addrs: BTreeSet::new(),
            tracing: None,
            identity,
            auth,
            auth_off,
            config,
        };
        agent.policy_rev = agent.maps.state.policy_rev()?;
        // Versions 1 and 2 kept the endpoints in the state file; version 3
        // has a file per endpoint (which wins if both exist).
        let (files, mut ep_warnings) = crate::state::load_endpoints(&agent.config.state_dir)?;
        warnings.append(&mut ep_warnings);
        agent.saved_endpoints = files.into_iter().map(|e| (e.ep_id, e)).collect();
        let mut endpoints: BTreeMap<u16, EndpointState> = persisted
            .endpoints
            .into_iter()
            .map(|e| (e.ep_id, e))
            .collect();
        endpoints.extend(agent.saved_endpoints.clone());
        agent.restore(endpoints.into_values().collect())?;
        agent.start_tracing();
        agent.sync_pod_attribution();
        agent.sync_identity();
        warnings.append(&mut agent.warnings);
        agent.warnings = warnings;
        Ok(agent)
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Takes the event ring buffer (once) for the flow reader.
    pub fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        self.maps.events.take()
    }

    /// Restores endpoints from the persisted state and reconciles every map
    /// with the desired state (entries of a crashed or older agent that are
    /// no longer wanted are removed; nothing wanted is ever missing).
    fn restore(&mut self, persisted: Vec<EndpointState>) -> Result<(), AgentError> {
        for mut ep in persisted {
            match nix::net::if_::if_nametoindex(ep.spec.host_ifname.as_str()) {
                Ok(ifindex) => {
                    if ifindex != ep.host_ifindex {
                        info!(ep_id = ep.ep_id, ifname = %ep.spec.host_ifname, "interface index changed while the agent was down");
                        self.datapath.detach(&ep.spec.host_ifname);
                        ep.host_ifindex = ifindex;
                    }
                    self.endpoints.insert(ep.ep_id, ep);
                }
                Err(_) => {
                    info!(ep_id = ep.ep_id, ifname = %ep.spec.host_ifname, "endpoint interface is gone; removing the endpoint");
                    self.datapath.detach(&ep.spec.host_ifname);
                    self.ipam
                        .release(&endpoints::owner(&ep.spec.container_id, &ep.spec.ifname));
                }
            }
        }
        // Identity reference counts follow from the endpoints, whatever the
        // state file says (its write and the endpoints' are separate).
        let holders: Vec<(Labels, NumericIdentity)> = self
            .endpoints
            .values()
            .map(|e| (e.labels.clone(), NumericIdentity(e.identity)))
            .collect();
        self.cluster.recount(&holders)?;
        for (id, labels, _) in self.cluster.identities() {
            self.engine.upsert_identity(id, labels);
        }
        for ep in self.endpoints.values_mut() {
            if let Some(id) = self.cluster.lookup_identity(&ep.labels) {
                ep.identity = id.get();
            }
            self.engine.upsert_endpoint(endpoints::view(ep));
        }
        // Other nodes as last seen, until etcd tells more.
        if let Some(view) = self.cluster.view() {
            self.remote = cluster::Remote::from_view(&view, &self.config.node_name);
        }
        let records: Vec<_> = self
            .endpoints
            .values()
            .map(|e| self.endpoint_record(e))
            .collect();
        for r in &records {
            self.cluster.publish_endpoint(r);
        }
        self.sync_documents();
        let diff = self.engine.compute();
        self.warnings.extend(diff.warnings.iter().cloned());
        self.reconcile_maps(&diff)?;
        self.sync_overlay()?;
        for ep in self.endpoints.values() {
            self.datapath
                .attach(&ep.spec.host_ifname, ep.host_ifindex)?;
        }
        self.publish_revision()?;
        self.persist()?;
        info!(
            endpoints = self.endpoints.len(),
            policies = self.policies.len(),
            restored = self.datapath.restored,
            "agent state restored"
        );
        Ok(())
    }

    /// Makes every map equal the desired state after a full compute:
    /// writes every wanted entry, then removes every other one.
    fn reconcile_maps(&mut self, full: &MapDiff) -> Result<(), AgentError> {
        // ipcache: world, this node's addresses, endpoints, CIDR identities.
        let mut ipcache: BTreeMap<(Ipv4Addr, u8), IpcacheValue> = BTreeMap::new();
        ipcache.insert(
            (Ipv4Addr::UNSPECIFIED, 0),
            IpcacheValue::new(ReservedIdentity::World.id().get()),
        );
        self.host_addrs = local_addresses();
        for addr in &self.host_addrs {
            ipcache.insert(
                (*addr, 32),
                IpcacheValue::new(ReservedIdentity::Host.id().get()),
            );
        }
        for (addr, id) in self.remote.ipcache() {
            ipcache.insert((addr, 32), IpcacheValue::new(id));
        }
        for ep in self.endpoints.values() {
            ipcache.insert(
                (ep.spec.ipv4, 32),
                IpcacheValue::local_endpoint(ep.identity),
            );
        }
        for (cidr, id) in &full.ipcache_upserts {
            if let std::net::IpAddr::V4(a) = cidr.addr() {
                ipcache.insert((a, cidr.prefix_len()), IpcacheValue::new(id.get()));
            }
        }
        for ((addr, len), value) in &ipcache {
            self.maps.ipcache.set_value(*addr, *len, *value)?;
        }
        for (addr, len, _) in self.maps.ipcache.entries() {
            if !ipcache.contains_key(&(addr, len)) {
                self.maps.ipcache.remove(addr, len)?;
            }
        }
        // policy entries
        let mut wanted = BTreeSet::new();
        for (ep_id, dir, key, value) in &full.upserts {
            let k = policy_key(*ep_id, *dir, key)?;
            self.maps.policy.set(&k, policy_value(value))?;
            wanted.insert(policy_key_id(&k));
        }
        for (k, _) in self.maps.policy.entries() {
            if !wanted.contains(&policy_key_id(&k)) {
                self.maps.policy.remove(&k)?;
            }
        }
        // endpoints
        let ifindexes: BTreeSet<u32> = self.endpoints.values().map(|e| e.host_ifindex).collect();
        let ep_ids: Vec<u16> = self.endpoints.keys().copied().collect();
        for ep_id in ep_ids {
            self.write_endpoint(ep_id)?;
        }
        for (ifindex, _) in self.maps.endpoints.entries() {
            if !ifindexes.contains(&ifindex) {
                self.maps.endpoints.remove(ifindex)?;
            }
        }
        Ok(())
    }

    /// Applies an incremental difference to the maps, in gap-free order.
    fn apply_diff(&mut self, diff: &MapDiff) -> Result<(), AgentError> {
        for (cidr, id) in &diff.ipcache_upserts {
            if let std::net::IpAddr::V4(a) = cidr.addr() {
                self.maps.ipcache.set(a, cidr.prefix_len(), id.get())?;
            }
        }
        for (ep_id, dir, key, value) in &diff.upserts {
            self.maps
                .policy
                .set(&policy_key(*ep_id, *dir, key)?, policy_value(value))?;
        }
        for (ep_id, _, _) in &diff.enforcement {
            if self.endpoints.contains_key(ep_id) {
                self.write_endpoint(*ep_id)?;
            }
        }
        for (ep_id, dir, key) in &diff.deletes {
            self.maps.policy.remove(&policy_key(*ep_id, *dir, key)?)?;
        }
        for cidr in &diff.ipcache_deletes {
            if let std::net::IpAddr::V4(a) = cidr.addr() {
                self.maps.ipcache.remove(a, cidr.prefix_len())?;
            }
        }
        self.warnings.extend(diff.warnings.iter().cloned());
        Ok(())
    }

    /// Writes an endpoint's entry of the endpoint map from the engine's
    /// current enforcement and the endpoint's audit setting.
    fn write_endpoint(&mut self, ep_id: u16) -> Result<(), AgentError> {
        let Some(ep) = self.endpoints.get(&ep_id) else {
            return Ok(());
        };
        let (ingress, egress) = self
            .engine
            .endpoint_state(ep_id)
            .map(|s| (s.ingress.enforced, s.egress.enforced))
            .unwrap_or((false, false));
        let mut flags = 0u16;
        if ingress {
            flags |= EP_ENFORCE_INGRESS;
        }
        if egress {
            flags |= EP_ENFORCE_EGRESS;
        }
        if ep.audit {
            flags |= EP_AUDIT_INGRESS | EP_AUDIT_EGRESS;
        }
        let info = EndpointInfo::new(ep.identity, ep.spec.ipv4, ep_id, flags);
        self.maps.endpoints.set(ep.host_ifindex, info)?;
        Ok(())
    }

    /// Publishes a new policy revision, and tells the auth manager what
    /// policy and endpoints now require.
    fn publish_revision(&mut self) -> Result<(), AgentError> {
        self.policy_rev = self.policy_rev.wrapping_add(1).max(1);
        self.maps.state.set_policy_rev(self.policy_rev)?;
        self.sync_auth();
        Ok(())
    }

    /// Recomputes, writes the maps and publishes: the common tail of every
    /// change. Returns the number of entries written and removed.
    fn commit(&mut self) -> Result<(usize, usize, Vec<String>), AgentError> {
        let diff = self.engine.compute();
        self.apply_diff(&diff)?;
        if !diff.is_empty() {
            self.publish_revision()?;
        }
        if let Err(e) = self.persist() {
            warn!(error = %e, "agent state not saved; enforcement is unaffected, but a restart would lose the latest change");
            return Err(e);
        }
        Ok((
            diff.upserts.len(),
            diff.deletes.len(),
            diff.warnings.clone(),
        ))
    }

    /// Saves what changed: the files of the API documents changed since
    /// the last save, then `state.json` if it differs from what was last
    /// written. Documents go first, so that a crash in between never leaves
    /// a version-2 state file whose documents are still only in a
    /// version-1 one.
    fn persist(&mut self) -> Result<(), AgentError> {
        let dir = &self.config.state_dir;
        let unsaved = self.documents.api_unsaved();
        if !unsaved.is_empty() {
            crate::state::save_api_documents(dir, unsaved)?;
            self.documents.api_saved();
        }
        let changed: Vec<u16> = self
            .endpoints
            .iter()
            .filter(|(id, ep)| self.saved_endpoints.get(id) != Some(ep))
            .map(|(id, _)| *id)
            .chain(
                self.saved_endpoints
                    .keys()
                    .filter(|id| !self.endpoints.contains_key(id))
                    .copied(),
            )
            .collect();
        if !changed.is_empty() {
            crate::state::save_endpoints(
                dir,
                changed.iter().map(|id| (*id, self.endpoints.get(id))),
            )?;
            for id in changed {
                match self.endpoints.get(&id) {
                    Some(ep) => self.saved_endpoints.insert(id, ep.clone()),
                    None => self.saved_endpoints.remove(&id),
                };
            }
        }
        let state = PersistedState {
            version: crate::state::STATE_VERSION,
            endpoints: Vec::new(),
            identities: self.cluster.snapshot(),
            ipam: self.ipam.clone(),
            api_documents: BTreeMap::new(),
        };
        let bytes = state.to_bytes(dir)?;
        if self.saved_state.as_ref() != Some(&bytes) {
            PersistedState::save_bytes(dir, &bytes)?;
            self.saved_state = Some(bytes);
        }
        Ok(())
    }

    /// Brings namespaces and policies of the engine in line with the
    /// documents; endpoints whose namespace labels changed get their new
    /// identity.
    fn sync_documents(&mut self) {
        let desired = self.documents.desired();
        for c in &desired.conflicts {
            warn!(conflict = %c, "conflicting policy definitions");
        }
        if desired.namespaces != self.namespaces {
            self.namespaces = desired.namespaces;
            let ep_ids: Vec<u16> = self.endpoints.keys().copied().collect();
            for ep_id in ep_ids {
                if let Err(e) = self.relabel(ep_id) {
                    warn!(ep_id, error = %e, "cannot relabel endpoint");
                }
            }
            // A new identity number is a new `identity/<n>` SVID.
            self.sync_identity();
        }
        let gone: Vec<PolicyRef> = self
            .policies
            .keys()
            .filter(|r| !desired.policies.contains_key(*r))
            .cloned()
            .collect();
        for r in gone {
            self.engine.remove_policy(&r);
            self.policies.remove(&r);
        }
        for (r, (source, policy)) in desired.policies {
            let unchanged = self
                .policies
                .get(&r)
                .is_some_and(|(_, p)| Arc::ptr_eq(p, &policy) || **p == *policy);
            if !unchanged {
                self.engine.upsert_policy((*policy).clone());
            }
            self.policies.insert(r, (source, policy));
        }
    }

    /// Applies a YAML stream through the API.
    pub fn apply(&mut self, source: &str, yaml: &str) -> Result<ApplySummary, AgentError> {
        let keys = self
            .documents
            .apply_api(source, yaml)
            .map_err(AgentError::Invalid)?;
        self.sync_documents();
        let (up, del, warnings) = self.commit()?;
        let (namespaces, policies): (Vec<String>, Vec<String>) =
            keys.into_iter().partition(|k| k.starts_with("Namespace/"));
        info!(
            source,
            policies = policies.len(),
            namespaces = namespaces.len(),
            up,
            del,
            "policy applied"
        );
        Ok(ApplySummary {
            policies,
            namespaces,
            entries_upserted: up,
            entries_deleted: del,
            warnings,
        })
    }

    /// Deletes a policy applied through the API. `kind` may be the full
    /// kind or its short name (`np`, `cnp`, `ccnp`), in any case.
    pub fn delete_policy(
        &mut self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), AgentError> {
        let (kind, namespaced) = match kind.to_ascii_lowercase().as_str() {
            "networkpolicy" | "networkpolicies" | "np" | "netpol" => ("NetworkPolicy", true),
            "ciliumnetworkpolicy" | "ciliumnetworkpolicies" | "cnp" => ("CiliumNetworkPolicy", true),
            "ciliumclusterwidenetworkpolicy" | "ciliumclusterwidenetworkpolicies" | "ccnp" => {
                ("CiliumClusterwideNetworkPolicy", false)
            }
            "namespace" | "ns" => ("Namespace", false),
            _ => {
                return Err(AgentError::Invalid(format!(
                    "unknown kind {kind:?}: use NetworkPolicy (np), CiliumNetworkPolicy (cnp), CiliumClusterwideNetworkPolicy (ccnp) or Namespace"
                )))
            }
        };
        let key = match (namespaced, namespace) {
            (true, Some(ns)) => format!("{kind}/{ns}/{name}"),
            (true, None) => {
                return Err(AgentError::Invalid(format!(
                    "{kind} is namespaced: name its namespace (-n NAMESPACE)"
                )))
            }
            (false, None) => format!("{kind}/{name}"),
            (false, Some(_)) => {
                return Err(AgentError::Invalid(format!(
                    "{kind} is not namespaced: leave out the namespace"
                )))
            }
        };
        self.delete(&key)
    }

    /// Deletes a document applied through the API, by its key.
    fn delete(&mut self, key: &str) -> Result<(), AgentError> {
        if !self.documents.delete_api(key) {
            return Err(AgentError::Invalid(format!(
                "no policy {key} was applied through the API (policies from the policy directory are removed by deleting their file)"
            )));
        }
        self.sync_documents();
        self.commit()?;
        Ok(())
    }

    /// Follows this node's addresses (read with [`local_addresses`], which
    /// callers do without holding the agent): an address added to (or
    /// removed from) one of its interfaces gets (or loses) the host
    /// identity in the ipcache. Returns whether anything changed.
    pub fn set_host_addresses(&mut self, current: BTreeSet<Ipv4Addr>) -> Result<bool, AgentError> {
        if current == self.host_addrs {
            return Ok(false);
        }
        let endpoint_ips: BTreeSet<Ipv4Addr> =
            self.endpoints.values().map(|e| e.spec.ipv4).collect();
        for addr in current.difference(&self.host_addrs) {
            if !endpoint_ips.contains(addr) {
                self.maps
                    .ipcache
                    .set(*addr, 32, ReservedIdentity::Host.id().get())?;
            }
        }
        for addr in self.host_addrs.difference(&current) {
            if !endpoint_ips.contains(addr) {
                self.maps.ipcache.remove(*addr, 32)?;
            }
        }
        info!(addresses = ?current, "node addresses changed");
        self.host_addrs = current;
        self.publish_revision()?;
        Ok(true)
    }

    /// Rereads the policy directory; applies what changed.
    pub fn rescan_policy_dir(&mut self) -> Result<(), AgentError> {
        if self.documents.rescan_dir() {
            self.sync_documents();
            self.commit()?;
        }
        Ok(())
    }

    fn release_identity(&mut self, labels: &Labels) {
        if let Some(id) = self.cluster.release_identity(labels) {
            self.engine.remove_identity(id);
        }
    }

    fn acquire_identity(&mut self, labels: &Labels) -> Result<NumericIdentity, AgentError> {
        let (id, new) = self.cluster.acquire_identity(labels)?;
        if new {
            self.engine.upsert_identity(id, labels.clone());
        }
        Ok(id)
    }

    /// Takes the cluster's change stream (once), for the agent's task that
    /// applies it ([`Agent::apply_cluster_changes`]).
    pub fn take_cluster_changes(
        &mut self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Vec<Change>>> {
        self.cluster_changes.take()
    }

    /// Recomputes an endpoint's labels (after its namespace's labels
    /// changed) and moves it to the identity of the new labels.
    fn relabel(&mut self, ep_id: u16) -> Result<(), AgentError> {
        let Some(ep) = self.endpoints.get(&ep_id).cloned() else {
            return Ok(());
        };
        let labels = endpoints::labels_of(&ep.spec, &self.namespaces, &self.config.cluster_name)
            .map_err(AgentError::Invalid)?;
        if labels == ep.labels {
            return Ok(());
        }
        let id = self.acquire_identity(&labels)?;
        self.release_identity(&ep.labels);
        let mut ep = ep;
        ep.labels = labels;
        ep.identity = id.get();
        self.engine.upsert_endpoint(endpoints::view(&ep));
        self.maps
            .ipcache
            .set_local_endpoint(ep.spec.ipv4, ep.identity)?;
        let record = self.endpoint_record(&ep);
        self.endpoints.insert(ep_id, ep);
        self.write_endpoint(ep_id)?;
        self.cluster.publish_endpoint(&record);
        Ok(())
    }

    /// How an endpoint is shared with the other nodes.
    fn endpoint_record(&self, ep: &EndpointState) -> palisade_cluster::EndpointRecord {
        palisade_cluster::EndpointRecord {
            ip: ep.spec.ipv4,
            node: self.config.node_name.clone(),
            identity: NumericIdentity(ep.identity),
            namespace: ep.spec.pod_namespace.clone(),
            pod: ep.spec.pod_name.clone(),
            service_account: ep.spec.service_account.clone(),
        }
    }

    /// Turns a failure into an API error response.
    pub fn respond(result: Result<Response, AgentError>) -> Response {
        result.unwrap_or_else(|e| Response::Error {
            message: e.to_string(),
        })
    }
}

fn to_bpf_direction(d: Direction) -> BpfDirection {
    match d {
        Direction::Ingress => BpfDirection::Ingress,
        Direction::Egress => BpfDirection::Egress,
    }
}

fn policy_key(ep_id: u16, dir: Direction, key: &EntryKey) -> Result<PolicyKey, AgentError> {
    let l4 = match key.l4 {
        L4Match::Any => L4Prefix::Any,
        L4Match::Proto(p) => L4Prefix::Proto(p),
        L4Match::Port {
            proto,
            port,
            prefix_bits,
        } => L4Prefix::Port {
            proto,
            port,
            prefix_bits,
        },
    };
    PolicyKey::new(ep_id, to_bpf_direction(dir), key.identity.get(), l4)
        .map_err(|e| AgentError::Invalid(format!("policy entry for endpoint {ep_id}: {e}")))
}

fn policy_value(v: &EntryValue) -> PolicyValue {
    PolicyValue {
        flags: if v.deny { POLICY_DENY } else { 0 },
        auth_type: v.auth_type,
        pad: 0,
        rule_id: v.rule_id,
    }
}

/// The IPv4 addresses of this network namespace's interfaces, which the
/// datapath sees as the host identity.
pub fn local_addresses() -> BTreeSet<Ipv4Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return BTreeSet::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| a.as_sockaddr_in().map(|s| s.ip()))
        .collect()
}

/// A policy key in a form that can be compared and collected.
type PolicyKeyId = (u32, u16, u8, u32, u8, u16);

fn policy_key_id(k: &PolicyKey) -> PolicyKeyId {
    (k.prefixlen, k.ep_id, k.dir, k.identity, k.protocol, k.dport)
}
