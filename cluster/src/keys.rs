//! Where each piece of cluster state lives in etcd (see `docs/cluster.md`).

use std::net::Ipv4Addr;

use palisade_identity::NumericIdentity;
use sha2::{Digest, Sha256};

use crate::cidr::PodCidr;

/// Version of the key layout, part of every key.
pub const LAYOUT_VERSION: &str = "v1";

/// A key of the layout, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `nodes/<node>`.
    Node(String),
    /// `cidrs/<a.b.c.d>-<len>`.
    Cidr(PodCidr),
    /// `identities/id/<number>`: the master key of an identity.
    IdentityId(NumericIdentity),
    /// `identities/labels/<sha256>`: label set -> number.
    IdentityLabels(String),
    /// `identities/refs/<number>/<node>`: a node uses the identity.
    IdentityRef(NumericIdentity, String),
    /// `endpoints/<ip>`.
    Endpoint(Ipv4Addr),
}

/// The keys of one cluster: everything under `/palisade/v1/<cluster>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

/// Whether `name` can be one part of a key (a cluster or node name).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

impl Keys {
    /// The layout of cluster `cluster`, a valid name (see [`valid_name`]).
    pub fn new(cluster: &str) -> Result<Self, String> {
        if !valid_name(cluster) {
            return Err(format!(
                "cluster name {cluster:?} is not a valid name (1-253 characters of [A-Za-z0-9._-])"
            ));
        }
        Ok(Self {
            root: format!("/palisade/{LAYOUT_VERSION}/{cluster}/"),
        })
    }

    /// The prefix of every key of the cluster.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// A node's record.
    pub fn node(&self, name: &str) -> String {
        format!("{}nodes/{name}", self.root)
    }

    /// The prefix of every CIDR claim.
    pub fn cidrs(&self) -> String {
        format!("{}cidrs/", self.root)
    }

    /// The claim of a CIDR.
    pub fn cidr(&self, cidr: PodCidr) -> String {
        format!("{}{}-{}", self.cidrs(), cidr.network, cidr.prefix_len)
    }

    /// The prefix of every identity key.
    pub fn identities(&self) -> String {
        format!("{}identities/", self.root)
    }

    /// The master key of an identity.
    pub fn identity_id(&self, id: NumericIdentity) -> String {
        format!("{}identities/id/{id}", self.root)
    }

    /// The key that maps a label set (its canonical JSON) to its number.
    pub fn identity_labels(&self, labels_json: &str) -> String {
        format!(
            "{}identities/labels/{}",
            self.root,
            hex(&Sha256::digest(labels_json.as_bytes()))
        )
    }

    /// A node's reference on an identity.
    pub fn identity_ref(&self, id: NumericIdentity, node: &str) -> String {
        format!("{}identities/refs/{id}/{node}", self.root)
    }

    /// An endpoint's record.
    pub fn endpoint(&self, ip: Ipv4Addr) -> String {
        format!("{}endpoints/{ip}", self.root)
    }

    /// Parses a key of this cluster; `None` for keys outside the layout.
    pub fn parse(&self, key: &str) -> Option<Key> {
        let rest = key.strip_prefix(&self.root)?;
        let (kind, rest) = rest.split_once('/')?;
        match kind {
            "nodes" => valid_name(rest).then(|| Key::Node(rest.to_owned())),
            "cidrs" => {
                let (addr, len) = rest.split_once('-')?;
                let cidr = PodCidr::new(addr.parse().ok()?, len.parse().ok()?).ok()?;
                Some(Key::Cidr(cidr))
            }
            "endpoints" => rest.parse().ok().map(Key::Endpoint),
            "identities" => {
                let (sub, rest) = rest.split_once('/')?;
                match sub {
                    "id" => parse_id(rest).map(Key::IdentityId),
                    "labels" => (rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
                        .then(|| Key::IdentityLabels(rest.to_owned())),
                    "refs" => {
                        let (id, node) = rest.split_once('/')?;
                        let id = parse_id(id)?;
                        valid_name(node).then(|| Key::IdentityRef(id, node.to_owned()))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

fn parse_id(s: &str) -> Option<NumericIdentity> {
    let n: u32 = s.parse().ok()?;
    let id = NumericIdentity(n);
    id.is_cluster().then_some(id)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = Keys::new("prod").unwrap();
        assert_eq!(k.node("n1"), "/palisade/v1/prod/nodes/n1");
        let cidr: PodCidr = "10.200.3.0/24".parse().unwrap();
        assert_eq!(k.cidr(cidr), "/palisade/v1/prod/cidrs/10.200.3.0-24");
        let id = NumericIdentity(300);
        let ip = Ipv4Addr::new(10, 200, 3, 7);
        let labels = k.identity_labels("{\"app\":\"x\"}");
        for (key, parsed) in [
            (k.node("n1"), Key::Node("n1".into())),
            (k.cidr(cidr), Key::Cidr(cidr)),
            (k.identity_id(id), Key::IdentityId(id)),
            (k.identity_ref(id, "n2"), Key::IdentityRef(id, "n2".into())),
            (k.endpoint(ip), Key::Endpoint(ip)),
        ] {
            assert_eq!(k.parse(&key), Some(parsed), "{key}");
        }
        assert!(matches!(k.parse(&labels), Some(Key::IdentityLabels(h)) if h.len() == 64));
    }

    #[test]
    fn foreign_and_malformed_keys_are_not_parsed() {
        let k = Keys::new("prod").unwrap();
        for key in [
            "/palisade/v1/other/nodes/n1",
            "/palisade/v1/prod/nodes/a/b",
            "/palisade/v1/prod/cidrs/10.0.0.1-24",
            "/palisade/v1/prod/identities/id/5",
            "/palisade/v1/prod/identities/id/x",
            "/palisade/v1/prod/identities/labels/zz",
            "/palisade/v1/prod/endpoints/999.1.1.1",
            "/palisade/v1/prod/unknown/x",
        ] {
            assert_eq!(k.parse(key), None, "{key}");
        }
        assert!(Keys::new("a/b").is_err());
        assert!(Keys::new("").is_err());
    }
}
