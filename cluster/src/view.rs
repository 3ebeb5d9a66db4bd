//! What a node knows of the cluster: the records under the cluster prefix,
//! typed, and the changes the agent must apply when they change.
//!
//! Pure: the etcd session feeds it puts, deletes and full listings
//! (resyncs); it answers with [`Change`]s. Values that do not parse are
//! skipped and reported (a corrupt or hostile record must not stop a node
//! from learning the rest).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use palisade_identity::{Labels, NumericIdentity};
use serde::{Deserialize, Serialize};

use crate::cidr::PodCidr;
use crate::keys::{Key, Keys};

/// Default UDP port of the VXLAN tunnel between nodes.
pub const DEFAULT_TUNNEL_PORT: u16 = 8472;

/// A node as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeRecord {
    /// Its name.
    pub name: String,
    /// Its underlay address (tunnel endpoint).
    pub address: Ipv4Addr,
    /// Its pod CIDR.
    pub pod_cidr: PodCidr,
    /// UDP port of its tunnel.
    pub tunnel_port: u16,
}

/// An endpoint (pod address) as its node publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointRecord {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The node hosting it.
    pub node: String,
    /// Its security identity.
    pub identity: NumericIdentity,
    /// Kubernetes namespace of the pod.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's service account (the workload's SPIFFE ID is
    /// `ns/<namespace>/sa/<service account>`); absent means `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// One thing the agent must change after the cluster changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Another node appeared or changed.
    NodeUpsert(NodeRecord),
    /// Another node is gone.
    NodeRemove(String),
    /// A pod of another node appeared or changed.
    EndpointUpsert(EndpointRecord),
    /// A pod of another node is gone.
    EndpointRemove(Ipv4Addr),
    /// An identity was allocated (by any node).
    IdentityUpsert(NumericIdentity, Labels),
    /// An identity was garbage-collected.
    IdentityRemove(NumericIdentity),
}

/// A record that did not parse: skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The key.
    pub key: String,
    /// What is wrong.
    pub error: String,
}

/// The typed content of the cluster prefix, as last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Every registered node (this one included).
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Every published endpoint (this node's included).
    pub endpoints: BTreeMap<Ipv4Addr, EndpointRecord>,
    /// Every allocated identity.
    pub identities: BTreeMap<NumericIdentity, Labels>,
    /// Which nodes reference which identity.
    pub identity_refs: BTreeMap<NumericIdentity, BTreeSet<String>>,
    /// Claimed pod CIDRs and their nodes.
    pub cidrs: BTreeMap<PodCidr, String>,
    /// The store revision this view reflects.
    pub revision: i64,
}

impl ClusterView {
    /// Applies a put; returns the change for the agent, if any.
    pub fn put(
        &mut self,
        keys: &Keys,
        local_node: &str,
        key: &str,
        value: &[u8],
    ) -> Result<Option<Change>, Malformed> {
        let malformed = |error: String| Malformed {
            key: key.to_owned(),
            error,
        };
        let Some(parsed) = keys.parse(key) else {
            return Ok(None);
        };
        match parsed {
            Key::Node(name) => {
                let rec: NodeRecord =
                    serde_json::from_slice(value).map_err(|e| malformed(e.to_string()))?;
                if rec.name != name {
                    return Err(malformed(format!("names node {:?}", rec.name)));
                }
                if self.nodes.get(&name) == Some(&rec) {
                    return Ok(None);
                }
                self.nodes.insert(name.clone(), rec.clone());
                Ok((name != local_node).then_some(Change::NodeUpsert(rec)))
            }
            Key::Endpoint(ip) => {
                let rec: EndpointRecord =
                    serde_json::from_slice(value).map_err(|e| malformed(e.to_string()))?;
                if rec.ip != ip {
                    return Err(malformed(format!("names address {}", rec.ip)));
                }
                if self.endpoints.get(&ip) == Some(&rec) {
                    return Ok(None);
                }
                let was_remote = self
                    .endpoints
                    .get(&ip)
                    .is_some_and(|e| e.node != local_node);
                self.endpoints.insert(ip, rec.clone());
                Ok(if rec.node != local_node {
                    Some(Change::EndpointUpsert(rec))
                } else if was_remote {
                    Some(Change::EndpointRemove(ip))
                } else {
                    None
                })
            }
            Key::IdentityId(id) => {
                let labels: Labels =
                    serde_json::from_slice(value).map_err(|e| malformed(e.to_string()))?;
                if self.identities.get(&id) == Some(&labels) {
                    return Ok(None);
                }
                self.identities.insert(id, labels.clone());
                Ok(Some(Change::IdentityUpsert(id, labels)))
            }
            Key::IdentityRef(id, node) => {
                self.identity_refs.entry(id).or_default().insert(node);
                Ok(None)
            }
            Key::Cidr(cidr) => {
                let node: String =
                    serde_json::from_slice(value).map_err(|e| malformed(e.to_string()))?;
                self.cidrs.insert(cidr, node);
                Ok(None)
            }
            Key::IdentityLabels(_) => Ok(None),
        }
    }

    /// Applies a delete; returns the change for the agent, if any.
    pub fn delete(&mut self, keys: &Keys, local_node: &str, key: &str) -> Option<Change> {
        match keys.parse(key)? {
            Key::Node(name) => {
                self.nodes.remove(&name)?;
                (name != local_node).then_some(Change::NodeRemove(name))
            }
            Key::Endpoint(ip) => {
                let rec = self.endpoints.remove(&ip)?;
                (rec.node != local_node).then_some(Change::EndpointRemove(ip))
            }
            Key::IdentityId(id) => {
                self.identities.remove(&id)?;
                Some(Change::IdentityRemove(id))
            }
            Key::IdentityRef(id, node) => {
                if let Some(refs) = self.identity_refs.get_mut(&id) {
                    refs.remove(&node);
                    if refs.is_empty() {
                        self.identity_refs.remove(&id);
                    }
                }
                None
            }
            Key::Cidr(cidr) => {
                self.cidrs.remove(&cidr);
                None
            }
            Key::IdentityLabels(_) => None,
        }
    }

    /// Replaces the whole view with a full listing taken at `revision` (a
    /// resync) and returns the changes from the old view to the new one:
    /// whatever was missed while disconnected. Records that do not parse
    /// are skipped and returned.
    pub fn resync<'a>(
        &mut self,
        keys: &Keys,
        local_node: &str,
        listing: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        revision: i64,
    ) -> (Vec<Change>, Vec<Malformed>) {
        let mut fresh = ClusterView::default();
        let mut malformed = Vec::new();
        for (key, value) in listing {
            if let Err(m) = fresh.put(keys, local_node, key, value) {
                malformed.push(m);
            }
        }
        fresh.revision = revision;
        let changes = self.diff(&fresh, local_node);
        *self = fresh;
        (changes, malformed)
    }

    /// The changes that turn `self` into `new`, as seen by `local_node`.
    /// Additions come before removals of the same kind, identities first.
    pub fn diff(&self, new: &ClusterView, local_node: &str) -> Vec<Change> {
        let mut out = Vec::new();
        for (id, labels) in &new.identities {
            if self.identities.get(id) != Some(labels) {
                out.push(Change::IdentityUpsert(*id, labels.clone()));
            }
        }
        for (name, rec) in new.nodes.iter().filter(|(n, _)| *n != local_node) {
            if self.nodes.get(name) != Some(rec) {
                out.push(Change::NodeUpsert(rec.clone()));
            }
        }
        let (old_eps, new_eps) = (
            self.remote_endpoints(local_node),
            new.remote_endpoints(local_node),
        );
        for (ip, rec) in &new_eps {
            if old_eps.get(ip) != Some(rec) {
                out.push(Change::EndpointUpsert(rec.clone()));
            }
        }
        for ip in old_eps.keys().filter(|ip| !new_eps.contains_key(ip)) {
            out.push(Change::EndpointRemove(*ip));
        }
        for name in self
            .nodes
            .keys()
            .filter(|n| *n != local_node && !new.nodes.contains_key(*n))
        {
            out.push(Change::NodeRemove(name.clone()));
        }
        for id in self
            .identities
            .keys()
            .filter(|id| !new.identities.contains_key(id))
        {
            out.push(Change::IdentityRemove(*id));
        }
        out
    }

    /// The nodes other than `local_node`.
    pub fn remote_nodes(&self, local_node: &str) -> BTreeMap<String, NodeRecord> {
        self.nodes
            .iter()
            .filter(|(name, _)| *name != local_node)
            .map(|(name, n)| (name.clone(), n.clone()))
            .collect()
    }

    /// The endpoints of nodes other than `local_node`.
    pub fn remote_endpoints(&self, local_node: &str) -> BTreeMap<Ipv4Addr, EndpointRecord> {
        self.endpoints
            .iter()
            .filter(|(_, e)| e.node != local_node)
            .map(|(ip, e)| (*ip, e.clone()))
            .collect()
    }

    /// The identity of a label set, if allocated.
    pub fn identity_of(&self, labels: &Labels) -> Option<NumericIdentity> {
        self.identities
            .iter()
            .find(|(_, l)| *l == labels)
            .map(|(id, _)| *id)
    }

    /// The node whose pod CIDR holds `ip`.
    pub fn node_of_pod_ip(&self, ip: Ipv4Addr) -> Option<&NodeRecord> {
        self.nodes.values().find(|n| n.pod_cidr.contains(ip))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new("c").unwrap()
    }

    fn node(name: &str, third: u8) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            address: Ipv4Addr::new(10, 199, 0, third),
            pod_cidr: format!("10.200.{third}.0/24").parse().unwrap(),
            tunnel_port: DEFAULT_TUNNEL_PORT,
        }
    }

    fn ep(ip: [u8; 4], node: &str, id: u32) -> EndpointRecord {
        EndpointRecord {
            ip: Ipv4Addr::from(ip),
            node: node.into(),
            identity: NumericIdentity(id),
            namespace: "x".into(),
            pod: "a".into(),
            service_account: None,
        }
    }

    fn json<T: Serialize>(v: &T) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn puts_and_deletes_of_other_nodes_become_changes() {
        let k = keys();
        let mut v = ClusterView::default();
        let n2 = node("n2", 2);
        assert_eq!(
            v.put(&k, "n1", &k.node("n2"), &json(&n2)).unwrap(),
            Some(Change::NodeUpsert(n2.clone()))
        );
        assert_eq!(
            v.put(&k, "n1", &k.node("n2"), &json(&n2)).unwrap(),
            None,
            "no change"
        );
        assert_eq!(
            v.put(&k, "n1", &k.node("n1"), &json(&node("n1", 1)))
                .unwrap(),
            None
        );
        let e = ep([10, 200, 2, 5], "n2", 300);
        assert_eq!(
            v.put(&k, "n1", &k.endpoint(e.ip), &json(&e)).unwrap(),
            Some(Change::EndpointUpsert(e.clone()))
        );
        let mine = ep([10, 200, 1, 5], "n1", 300);
        assert_eq!(
            v.put(&k, "n1", &k.endpoint(mine.ip), &json(&mine)).unwrap(),
            None
        );
        let labels = Labels::try_from_pairs([("app", "x")]).unwrap();
        assert_eq!(
            v.put(
                &k,
                "n1",
                &k.identity_id(NumericIdentity(300)),
                &json(&labels)
            )
            .unwrap(),
            Some(Change::IdentityUpsert(NumericIdentity(300), labels.clone()))
        );
        assert_eq!(v.identity_of(&labels), Some(NumericIdentity(300)));
        assert_eq!(v.node_of_pod_ip(e.ip).map(|n| n.name.as_str()), Some("n2"));
        assert_eq!(
            v.delete(&k, "n1", &k.endpoint(e.ip)),
            Some(Change::EndpointRemove(e.ip))
        );
        assert_eq!(v.delete(&k, "n1", &k.endpoint(mine.ip)), None);
        assert_eq!(
            v.delete(&k, "n1", &k.node("n2")),
            Some(Change::NodeRemove("n2".into()))
        );
        assert_eq!(v.delete(&k, "n1", &k.node("n2")), None, "already gone");
    }

    #[test]
    fn malformed_records_are_reported_not_applied() {
        let k = keys();
        let mut v = ClusterView::default();
        let m = v.put(&k, "n1", &k.node("n2"), b"{not json").unwrap_err();
        assert_eq!(m.key, k.node("n2"));
        let wrong = node("n3", 3);
        let m = v.put(&k, "n1", &k.node("n2"), &json(&wrong)).unwrap_err();
        assert!(m.error.contains("n3"), "{m:?}");
        let e = ep([10, 200, 2, 5], "n2", 300);
        assert!(v
            .put(
                &k,
                "n1",
                &k.endpoint(Ipv4Addr::new(10, 200, 2, 6)),
                &json(&e)
            )
            .is_err());
        assert!(v.nodes.is_empty() && v.endpoints.is_empty());
    }

    #[test]
    fn resync_reports_what_was_missed() {
        let k = keys();
        let mut v = ClusterView::default();
        let (n2, n3) = (node("n2", 2), node("n3", 3));
        let (e2, e3) = (
            ep([10, 200, 2, 5], "n2", 300),
            ep([10, 200, 3, 5], "n3", 301),
        );
        v.put(&k, "n1", &k.node("n2"), &json(&n2)).unwrap();
        v.put(&k, "n1", &k.node("n3"), &json(&n3)).unwrap();
        v.put(&k, "n1", &k.endpoint(e2.ip), &json(&e2)).unwrap();
        v.put(&k, "n1", &k.endpoint(e3.ip), &json(&e3)).unwrap();
        // While disconnected n3 went away and n2's pod moved to identity 302.
        let moved = ep([10, 200, 2, 5], "n2", 302);
        let listing = [
            (k.node("n2"), json(&n2)),
            (k.endpoint(moved.ip), json(&moved)),
            (k.node("bad"), b"x".to_vec()),
        ];
        let (changes, malformed) = v.resync(
            &k,
            "n1",
            listing.iter().map(|(a, b)| (a.as_str(), b.as_slice())),
            42,
        );
        assert_eq!(
            changes,
            vec![
                Change::EndpointUpsert(moved),
                Change::EndpointRemove(e3.ip),
                Change::NodeRemove("n3".into()),
            ]
        );
        assert_eq!(malformed.len(), 1);
        assert_eq!(v.revision, 42);
        assert_eq!(ClusterView::default().diff(&v, "n1").len(), 2);
        assert_eq!(v.remote_nodes("n1").len(), 1);
        assert_eq!(v.remote_endpoints("n2").len(), 0, "n2's own pod");
    }
}
