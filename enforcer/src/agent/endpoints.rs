//! Endpoint requests: addresses, registration, removal, listing.

use std::collections::BTreeMap;

use palisade_api::{EndpointAddRequest, EndpointRecord, IpamAddress, Response};
use palisade_identity::Labels;
use palisade_policies::EndpointView;
use tracing::info;

use super::{Agent, AgentError};
use crate::ipam::GATEWAY;
use crate::state::EndpointState;

/// The IPAM owner key of a container interface.
pub(super) fn owner(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// What the policy engine knows of an endpoint.
pub(super) fn view(ep: &EndpointState) -> EndpointView {
    EndpointView {
        ep_id: ep.ep_id,
        identity: palisade_identity::NumericIdentity(ep.identity),
        labels: ep.labels.clone(),
    }
}

/// The identity labels of an endpoint.
pub(super) fn labels_of(
    spec: &EndpointAddRequest,
    namespaces: &BTreeMap<String, Labels>,
    cluster: &str,
) -> Result<Labels, String> {
    let pod = Labels::try_from_pairs(spec.labels.iter())
        .map_err(|e| format!("pod {}/{}: {e}", spec.pod_namespace, spec.pod_name))?;
    let empty = Labels::new();
    let ns_labels = namespaces.get(&spec.pod_namespace).unwrap_or(&empty);
    let sa = spec.service_account.as_deref().unwrap_or("default");
    Labels::for_pod(&pod, &spec.pod_namespace, ns_labels, sa, cluster)
        .map_err(|e| format!("pod {}/{}: {e}", spec.pod_namespace, spec.pod_name))
}

fn check_name(what: &str, value: &str) -> Result<(), AgentError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(AgentError::Invalid(format!(
            "{what} {value:?} is not a valid name (1-253 characters of [A-Za-z0-9._-])"
        )))
    }
}

impl Agent {
    /// Reserves (or returns the already reserved) address of an interface.
    pub fn ipam_allocate(
        &mut self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Response, AgentError> {
        check_name("container id", container_id)?;
        check_name("interface name", ifname)?;
        let ip = self
            .ipam
            .allocate(&owner(container_id, ifname))
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        self.persist()?;
        Ok(Response::Address(IpamAddress {
            ipv4: ip,
            prefix_len: self.ipam.cidr().prefix_len,
            gateway: GATEWAY,
            mtu: self.overlay.map(|o| o.mtu),
        }))
    }

    /// Gives back an address (idempotent). An address still used by a
    /// registered endpoint is kept.
    pub fn ipam_release(
        &mut self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Response, AgentError> {
        if self.find(container_id, ifname).is_none() {
            self.ipam.release(&owner(container_id, ifname));
            self.persist()?;
        }
        Ok(Response::Done)
    }

    fn find(&self, container_id: &str, ifname: &str) -> Option<u16> {
        self.endpoints
            .values()
            .find(|e| e.spec.container_id == container_id && e.spec.ifname == ifname)
            .map(|e| e.ep_id)
    }

    /// Registers an endpoint and starts enforcing policy on its interface.
    pub fn endpoint_add(&mut self, spec: EndpointAddRequest) -> Result<Response, AgentError> {
        check_name("container id", &spec.container_id)?;
        check_name("pod namespace", &spec.pod_namespace)?;
        check_name("pod name", &spec.pod_name)?;
        let reserved = self.ipam.get(&owner(&spec.container_id, &spec.ifname));
        if reserved != Some(spec.ipv4) {
            return Err(AgentError::Invalid(format!(
                "address {} was not reserved for {}/{} by this agent (IpamAllocate first)",
                spec.ipv4, spec.container_id, spec.ifname
            )));
        }
        if let Some(ep_id) = self.find(&spec.container_id, &spec.ifname) {
            if self.endpoints.get(&ep_id).is_some_and(|e| e.spec == spec) {
                return Ok(Response::Endpoint(Box::new(self.record(ep_id)?)));
            }
            self.remove_endpoint(ep_id, false)?;
        }
        let ifindex = nix::net::if_::if_nametoindex(spec.host_ifname.as_str()).map_err(|e| {
            AgentError::Invalid(format!(
                "host interface {} of {}/{}: {e}",
                spec.host_ifname, spec.pod_namespace, spec.pod_name
            ))
        })?;
        let labels = labels_of(&spec, &self.namespaces, &self.config.cluster_name)
            .map_err(AgentError::Invalid)?;
        let ep_id = (1..=u16::MAX)
            .find(|id| !self.endpoints.contains_key(id))
            .ok_or_else(|| AgentError::Invalid("no free endpoint id (65535 endpoints)".into()))?;
        let identity = self.acquire_identity(&labels)?;
        let ep = EndpointState {
            ep_id,
            spec,
            host_ifindex: ifindex,
            labels,
            identity: identity.get(),
            audit: self.config.policy_audit_mode,
        };
        self.engine.upsert_endpoint(view(&ep));
        let ip = ep.spec.ipv4;
        let ifname = ep.spec.host_ifname.clone();
        self.endpoints.insert(ep_id, ep);
        // Entries and the endpoint's enforcement flags first, then the
        // address and the programs: its first packet already meets policy.
        let diff = self.engine.compute();
        self.apply_diff(&diff)?;
        self.write_endpoint(ep_id)?;
        self.maps.ipcache.set_local_endpoint(ip, identity.get())?;
        if let Err(e) = self.datapath.attach(&ifname, ifindex) {
            self.remove_endpoint(ep_id, false)?;
            return Err(e.into());
        }
        self.publish_revision()?;
        self.persist()?;
        self.sync_pod_attribution();
        self.sync_identity();
        if let Some(ep) = self.endpoints.get(&ep_id) {
            let record = self.endpoint_record(ep);
            self.cluster.publish_endpoint(&record);
        }
        info!(ep_id, identity = identity.get(), %ip, ifname, "endpoint added");
        Ok(Response::Endpoint(Box::new(self.record(ep_id)?)))
    }

    /// Removes an endpoint (idempotent) and releases its address.
    pub fn endpoint_del(
        &mut self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Response, AgentError> {
        if let Some(ep_id) = self.find(container_id, ifname) {
            self.remove_endpoint(ep_id, true)?;
        }
        self.ipam.release(&owner(container_id, ifname));
        self.persist()?;
        Ok(Response::Done)
    }

    fn remove_endpoint(&mut self, ep_id: u16, log: bool) -> Result<(), AgentError> {
        let Some(ep) = self.endpoints.remove(&ep_id) else {
            return Ok(());
        };
        self.datapath.detach(&ep.spec.host_ifname);
        self.cluster.withdraw_endpoint(ep.spec.ipv4);
        self.maps.endpoints.remove(ep.host_ifindex)?;
        self.maps.ipcache.remove(ep.spec.ipv4, 32)?;
        self.engine.remove_endpoint(ep_id);
        self.release_identity(&ep.labels);
        let diff = self.engine.compute();
        self.apply_diff(&diff)?;
        self.flush_conntrack(ep.spec.ipv4)?;
        self.publish_revision()?;
        self.sync_pod_attribution();
        self.sync_identity();
        if log {
            info!(ep_id, ip = %ep.spec.ipv4, "endpoint removed");
        }
        Ok(())
    }

    /// One endpoint.
    pub fn endpoint_get(&self, container_id: &str, ifname: &str) -> Result<Response, AgentError> {
        let ep_id = self.find(container_id, ifname).ok_or_else(|| {
            AgentError::Invalid(format!(
                "no endpoint for container {container_id} interface {ifname}"
            ))
        })?;
        Ok(Response::Endpoint(Box::new(self.record(ep_id)?)))
    }

    /// Every endpoint.
    pub fn endpoint_list(&self) -> Response {
        Response::Endpoints {
            endpoints: self
                .endpoints
                .keys()
                .filter_map(|id| self.record(*id).ok())
                .collect(),
        }
    }

    /// Switches policy audit mode of an endpoint.
    pub fn endpoint_set_audit(&mut self, ep_id: u16, audit: bool) -> Result<Response, AgentError> {
        let ep = self
            .endpoints
            .get_mut(&ep_id)
            .ok_or_else(|| AgentError::Invalid(format!("no endpoint {ep_id}")))?;
        ep.audit = audit;
        self.write_endpoint(ep_id)?;
        self.publish_revision()?;
        self.persist()?;
        info!(ep_id, audit, "endpoint audit mode changed");
        Ok(Response::Endpoint(Box::new(self.record(ep_id)?)))
    }

    pub(super) fn record(&self, ep_id: u16) -> Result<EndpointRecord, AgentError> {
        let ep = self
            .endpoints
            .get(&ep_id)
            .ok_or_else(|| AgentError::Invalid(format!("no endpoint {ep_id}")))?;
        let state = self.engine.endpoint_state(ep_id);
        Ok(EndpointRecord {
            ep_id,
            spec: ep.spec.clone(),
            host_ifindex: ep.host_ifindex,
            identity: ep.identity,
            ingress_enforced: state.is_some_and(|s| s.ingress.enforced),
            egress_enforced: state.is_some_and(|s| s.egress.enforced),
            audit: ep.audit,
            policies: self
                .engine
                .selecting_policies(ep_id)
                .iter()
                .map(ToString::to_string)
                .collect(),
            policy_entries: state.map_or(0, |s| s.ingress.entries.len() + s.egress.entries.len()),
        })
    }

    /// `namespace/pod` of the endpoint with this address, if local.
    pub(super) fn endpoint_name_by_ip(&self, ip: std::net::Ipv4Addr) -> Option<String> {
        self.endpoints
            .values()
            .find(|e| e.spec.ipv4 == ip)
            .map(|e| format!("{}/{}", e.spec.pod_namespace, e.spec.pod_name))
    }
}
