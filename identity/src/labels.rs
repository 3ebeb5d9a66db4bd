//! Label sets, with the well-known keys that carry namespace and service
//! account, as Cilium names them (so that CiliumNetworkPolicy selectors that
//! name them work unchanged).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Label holding the pod's namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Prefix of the labels that copy the namespace's own labels onto its pods.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// Label holding the pod's service account.
pub const SERVICE_ACCOUNT: &str = "io.cilium.k8s.policy.serviceaccount";
/// Label holding the cluster name.
pub const CLUSTER: &str = "io.cilium.k8s.policy.cluster";
/// The label every Kubernetes namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Why a label key or value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelsError {
    /// The key is empty or has characters a Kubernetes label key cannot have.
    #[error("invalid label key {key:?}: {reason}")]
    InvalidKey {
        /// The refused key.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The value has characters a Kubernetes label value cannot have.
    #[error("invalid value {value:?} for label {key:?}: {reason}")]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The refused value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A set of `key=value` labels, ordered, one value per key.
///
/// Keys may carry a source prefix as in Cilium (`k8s:app`); it is stripped on
/// insertion, because every label palisade knows comes from one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set, checking every key and value.
    pub fn try_from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, LabelsError> {
        let mut labels = Self::new();
        for (k, v) in pairs {
            labels.insert(k.as_ref(), v.as_ref())?;
        }
        Ok(labels)
    }

    /// Adds (or replaces) one label after checking it.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), LabelsError> {
        let key = strip_source(key);
        validate_key(key)?;
        validate_value(key, value)?;
        self.0.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    /// The value of `key` (a source prefix such as `k8s:` is ignored).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(strip_source(key)).map(String::as_str)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(strip_source(key))
    }

    /// All labels in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The labels of a pod as palisade identifies it: its own labels, its
    /// namespace, the namespace's labels (prefixed), its service account and
    /// the cluster name.
    pub fn for_pod(
        pod_labels: &Labels,
        namespace: &str,
        namespace_labels: &Labels,
        service_account: &str,
        cluster: &str,
    ) -> Result<Self, LabelsError> {
        let mut all = pod_labels.clone();
        all.insert(POD_NAMESPACE, namespace)?;
        let mut ns_labels = namespace_labels.clone();
        ns_labels.insert(NAMESPACE_NAME_LABEL, namespace)?;
        for (k, v) in ns_labels.iter() {
            all.insert(&format!("{NAMESPACE_LABELS_PREFIX}{k}"), v)?;
        }
        all.insert(SERVICE_ACCOUNT, service_account)?;
        all.insert(CLUSTER, cluster)?;
        Ok(all)
    }

    /// The pod's namespace, if the set carries one.
    pub fn namespace(&self) -> Option<&str> {
        self.get(POD_NAMESPACE)
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in self.iter() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

fn strip_source(key: &str) -> &str {
    for source in ["k8s:", "any:", "container:"] {
        if let Some(rest) = key.strip_prefix(source) {
            return rest;
        }
    }
    key
}

/// A Kubernetes label key: optional DNS-subdomain prefix and `/`, then a name
/// of at most 63 characters of `[A-Za-z0-9._-]`, starting and ending
/// alphanumeric.
fn validate_key(key: &str) -> Result<(), LabelsError> {
    let invalid = |reason| LabelsError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > 253 {
            return Err(invalid("the prefix before '/' must be 1 to 253 characters"));
        }
        if !prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        {
            return Err(invalid("the prefix before '/' must be a DNS subdomain"));
        }
    }
    if name.is_empty() || name.len() > 63 {
        return Err(invalid("the name must be 1 to 63 characters"));
    }
    if !is_label_name(name) {
        return Err(invalid(
            "the name must be [A-Za-z0-9._-], starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

fn validate_value(key: &str, value: &str) -> Result<(), LabelsError> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 || !is_label_name(value) {
        return Err(LabelsError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: "a value must be at most 63 characters of [A-Za-z0-9._-], starting and ending with a letter or digit",
        });
    }
    Ok(())
}

fn is_label_name(s: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-';
    s.chars().all(ok_char)
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_labels_carry_namespace_and_service_account() {
        let pod = Labels::try_from_pairs([("pod", "a")]).unwrap();
        let ns = Labels::try_from_pairs([("ns", "x")]).unwrap();
        let all = Labels::for_pod(&pod, "x", &ns, "default", "default").unwrap();
        assert_eq!(all.get("pod"), Some("a"));
        assert_eq!(all.get("k8s:io.kubernetes.pod.namespace"), Some("x"));
        assert_eq!(all.get("io.cilium.k8s.namespace.labels.ns"), Some("x"));
        assert_eq!(
            all.get("io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"),
            Some("x")
        );
        assert_eq!(all.get(SERVICE_ACCOUNT), Some("default"));
        assert_eq!(all.namespace(), Some("x"));
    }

    #[test]
    fn keys_and_values_are_checked() {
        assert!(Labels::try_from_pairs([("app", "web")]).is_ok());
        assert!(Labels::try_from_pairs([("example.com/app", "web-1")]).is_ok());
        assert!(Labels::try_from_pairs([("", "x")]).is_err());
        assert!(Labels::try_from_pairs([("-bad", "x")]).is_err());
        assert!(Labels::try_from_pairs([("Ex.com/app", "x")]).is_err());
        assert!(Labels::try_from_pairs([("app", "has space")]).is_err());
        assert!(Labels::try_from_pairs([("app", "")]).is_ok());
    }

    #[test]
    fn display_is_stable() {
        let l = Labels::try_from_pairs([("b", "2"), ("a", "1")]).unwrap();
        assert_eq!(l.to_string(), "a=1,b=2");
    }
}
