//! YAML multi-document streams to resources, with precise errors.

use palisade_identity::Labels;

use crate::model;
use crate::policy::{Policy, PolicyError};

pub use palisade_k8s_yaml::{Location, ParseError};

/// One resource of a policy stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// A Kubernetes NetworkPolicy.
    NetworkPolicy(model::NetworkPolicy),
    /// A CiliumNetworkPolicy.
    CiliumNetworkPolicy(model::CiliumNetworkPolicy),
    /// A CiliumClusterwideNetworkPolicy.
    CiliumClusterwideNetworkPolicy(model::CiliumNetworkPolicy),
    /// A namespace and its labels (standalone mode: namespace selectors
    /// match these labels).
    Namespace {
        /// Namespace name.
        name: String,
        /// Its labels (without the automatic `kubernetes.io/metadata.name`).
        labels: Labels,
    },
}

impl Resource {
    /// The normalised policy, or `None` for a namespace.
    pub fn to_policy(&self) -> Result<Option<Policy>, PolicyError> {
        match self {
            Self::NetworkPolicy(np) => Policy::from_network_policy(np).map(Some),
            Self::CiliumNetworkPolicy(c) => Policy::from_cilium(c, false).map(Some),
            Self::CiliumClusterwideNetworkPolicy(c) => Policy::from_cilium(c, true).map(Some),
            Self::Namespace { .. } => Ok(None),
        }
    }
}

/// Parses a multi-document YAML stream (`---` separated) into resources,
/// checking each completely (shape and semantics). `source` names the input
/// in errors. Empty documents are skipped.
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<Resource>, ParseError> {
    Ok(parse_with_policies(text, source)?
        .into_iter()
        .map(|(r, _)| r)
        .collect())
}

/// Like [`parse_documents`], returning the normalised policies only.
pub fn parse_policies(text: &str, source: &str) -> Result<Vec<Policy>, ParseError> {
    Ok(parse_with_policies(text, source)?
        .into_iter()
        .filter_map(|(_, p)| p)
        .collect())
}

/// Each resource with its normalised policy (`None` for namespaces).
pub fn parse_with_policies(
    text: &str,
    source: &str,
) -> Result<Vec<(Resource, Option<Policy>)>, ParseError> {
    let mut out = Vec::new();
    for doc in palisade_k8s_yaml::documents(text, source) {
        let doc = doc?;
        let resource = match (doc.api_version.as_str(), doc.kind.as_str()) {
            ("networking.k8s.io/v1", "NetworkPolicy") => Resource::NetworkPolicy(doc.typed()?),
            ("cilium.io/v2", "CiliumNetworkPolicy") => Resource::CiliumNetworkPolicy(doc.typed()?),
            ("cilium.io/v2", "CiliumClusterwideNetworkPolicy") => {
                Resource::CiliumClusterwideNetworkPolicy(doc.typed()?)
            }
            ("v1", "Namespace") => {
                let ns: model::Namespace = doc.typed()?;
                let mut labels = Labels::new();
                for (k, v) in ns.metadata.labels.iter().flatten() {
                    labels.insert(k, v).map_err(|e| ParseError::Schema {
                        at: doc.at(&format!("metadata.labels.{k}")),
                        reason: e.to_string(),
                    })?;
                }
                Resource::Namespace {
                    name: ns.metadata.name,
                    labels,
                }
            }
            _ => {
                return Err(doc.unknown_kind(
                    "networking.k8s.io/v1 NetworkPolicy, cilium.io/v2 CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy, and v1 Namespace",
                ))
            }
        };
        let policy = resource.to_policy().map_err(|e| doc.spec_error(e))?;
        out.push((resource, policy));
    }
    Ok(out)
}
