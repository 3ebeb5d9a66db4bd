//! Status, identity and policy listings.

use palisade_api::{AgentStatus, IdentityRecord, PolicyRecord, Response, VerdictCounter};
use palisade_bpf::abi::{observation_name, Reason, OBS_MAX};
use palisade_identity::{NumericIdentity, ReservedIdentity};

use super::Agent;

impl Agent {
    /// Agent status.
    pub fn status(&mut self) -> Response {
        let verdicts = self
            .maps
            .metrics
            .totals()
            .into_iter()
            .map(|(index, packets, bytes)| {
                let obs = u32::from(OBS_MAX);
                let code = -i32::try_from(index / obs).unwrap_or(0);
                VerdictCounter {
                    reason: Reason::from_code(code)
                        .map_or_else(|| format!("reason_{code}"), |r| r.as_str().to_owned()),
                    code,
                    observation: observation_name(u8::try_from(index % obs).unwrap_or(u8::MAX))
                        .to_owned(),
                    packets,
                    bytes,
                }
            })
            .collect();
        let mut errors = self.documents.errors();
        errors.extend(self.warnings.iter().cloned());
        Response::Status(Box::new(AgentStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            node_name: self.config.node_name.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            pod_cidr: self.pod_cidr.to_string(),
            bpf_root: self.datapath.root().display().to_string(),
            restored_from_pins: self.datapath.restored,
            endpoints: self.endpoints.len(),
            identities: self.cluster.identities().len(),
            policies: self.policies.len(),
            policy_revision: self.policy_rev,
            policy_entries: self.maps.policy.entries().len(),
            conntrack_entries: self.maps.ct.entries().len(),
            verdicts,
            events_lost: self.maps.counters.events_lost(),
            policy_dir_error: if errors.is_empty() {
                None
            } else {
                Some(errors.join("; "))
            },
            mechanisms: self.mechanisms.clone(),
            runtime: self.runtime_status(),
            auth: self.auth.as_ref().map(|a| a.summary()),
        }))
    }

    /// Every identity in use: reserved, cluster (label) and CIDR ones.
    pub fn identity_list(&self) -> Response {
        let mut identities: Vec<IdentityRecord> = ReservedIdentity::ALL
            .iter()
            .map(|r| IdentityRecord {
                id: r.id().get(),
                labels: vec![format!("reserved:{}", r.name())],
                scope: "reserved".to_owned(),
                endpoints: 0,
            })
            .collect();
        for (id, labels, refs) in self.cluster.identities() {
            identities.push(IdentityRecord {
                id: id.get(),
                labels: labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                scope: "cluster".to_owned(),
                endpoints: refs,
            });
        }
        for (cidr, id) in self.engine.cidr_identities() {
            identities.push(IdentityRecord {
                id: id.get(),
                labels: vec![format!("cidr:{cidr}")],
                scope: "cidr".to_owned(),
                endpoints: 0,
            });
        }
        identities.sort_by_key(|i| i.id);
        Response::Identities { identities }
    }

    /// Every policy in force.
    pub fn policy_list(&self) -> Response {
        let policies = self
            .policies
            .iter()
            .map(|(r, (source, _))| PolicyRecord {
                kind: r.kind.to_string(),
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                source: source.clone(),
                selected_endpoints: self
                    .endpoints
                    .keys()
                    .filter(|ep| self.engine.selecting_policies(**ep).contains(r))
                    .count(),
            })
            .collect();
        Response::Policies { policies }
    }

    /// A human name for an identity: reserved name or `namespace/...`.
    pub(super) fn identity_name(&self, id: u32) -> Option<String> {
        let n = NumericIdentity(id);
        if let Some(r) = n.reserved() {
            return Some(r.name().to_owned());
        }
        if n.is_local() {
            return self
                .engine
                .cidr_identities()
                .find(|(_, i)| *i == n)
                .map(|(c, _)| format!("cidr:{c}"));
        }
        None
    }
}
