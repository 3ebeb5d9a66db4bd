//! The agent's side of mutual authentication: what the auth manager must
//! know after every change, and `palisade auth list`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use palisade_api::Response;
use palisade_identity::labels::{CLUSTER, NAMESPACE_LABELS_PREFIX, POD_NAMESPACE, SERVICE_ACCOUNT};
use palisade_identity::Labels;
use palisade_policies::Direction;

use super::Agent;
use crate::auth::{self, Auth, AuthView, Requirement};

impl Agent {
    /// The auth manager, when this agent authenticates.
    pub fn auth(&self) -> Option<Arc<Auth>> {
        self.auth.clone()
    }

    /// This node's underlay address, in a cluster (handshakes with other
    /// nodes are dialled from it).
    pub fn node_address(&self) -> Option<Ipv4Addr> {
        self.node_address
    }

    /// Hands the auth manager the current endpoints, nodes and
    /// requirements (nothing to do when it does not run).
    pub(super) fn sync_auth(&self) {
        if let Some(auth) = &self.auth {
            auth.set_view(self.auth_view());
        }
    }

    fn auth_view(&self) -> AuthView {
        let addr_of: BTreeMap<&str, Ipv4Addr> = self
            .remote
            .nodes
            .values()
            .map(|n| (n.name.as_str(), n.address))
            .collect();
        let mut remote: BTreeMap<u32, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for e in self.remote.endpoints.values() {
            if let Some(addr) = addr_of.get(e.node.as_str()) {
                remote.entry(e.identity.get()).or_default().insert(*addr);
            }
        }
        let mut view = AuthView {
            local: self.endpoints.values().map(|e| e.identity).collect(),
            addresses: self
                .host_addrs
                .iter()
                .copied()
                .chain(self.node_address)
                .collect(),
            nodes: addr_of.iter().map(|(n, a)| (*a, (*n).to_owned())).collect(),
            remote,
            needed: BTreeSet::new(),
            // Until the cluster store synced once, other nodes' pods may be
            // missing: nothing is collected as garbage for want of them.
            complete: self.config.cluster.is_none() || self.cluster.status().synced_revision > 0,
        };
        if self.engine.policies().any(|p| p.requires_authentication()) {
            let mut requirements = Vec::new();
            for (ep_id, ep) in &self.endpoints {
                let Some(policy) = self.engine.endpoint_state(*ep_id) else {
                    continue;
                };
                for dir in Direction::BOTH {
                    let d = policy.direction(dir);
                    if !d.enforced {
                        continue;
                    }
                    requirements.extend(
                        d.entries
                            .iter()
                            .filter(|(_, v)| !v.deny && v.auth_type != 0)
                            .map(|(k, v)| Requirement {
                                local: ep.identity,
                                remote: k.identity.get(),
                                auth_type: v.auth_type,
                            }),
                    );
                }
            }
            requirements.sort_unstable();
            requirements.dedup();
            view.set_needed(requirements);
        }
        view
    }

    /// `palisade auth list`, the identities named by their labels.
    pub fn auth_list(&self) -> Response {
        let mut report = match (&self.auth, &self.auth_off) {
            (Some(auth), _) => auth.report(),
            (None, reason) => auth::disabled_report(reason.as_deref().unwrap_or("disabled")),
        };
        let names: BTreeMap<u32, String> = self
            .cluster
            .identities()
            .into_iter()
            .map(|(id, labels, _)| (id.get(), short_labels(&labels)))
            .collect();
        for p in &mut report.pairs {
            p.local_labels = names.get(&p.local_identity).cloned();
            p.remote_labels = names.get(&p.remote_identity).cloned();
        }
        Response::Auth(Box::new(report))
    }
}

/// An identity's labels in short: its namespace, then the pod's own
/// labels (`shop app=db`); namespace labels, the service account and the
/// cluster are left out.
fn short_labels(labels: &Labels) -> String {
    let own: Vec<String> = labels
        .iter()
        .filter(|(k, _)| {
            ![POD_NAMESPACE, SERVICE_ACCOUNT, CLUSTER].contains(k)
                && !k.starts_with(NAMESPACE_LABELS_PREFIX)
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    match labels.get(POD_NAMESPACE) {
        Some(ns) if own.is_empty() => ns.to_owned(),
        Some(ns) => format!("{ns} {}", own.join(",")),
        None => own.join(","),
    }
}
