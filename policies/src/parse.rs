//! YAML multi-document streams to resources, with precise errors.

use std::fmt;

use palisade_identity::Labels;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::model;
use crate::policy::{Policy, PolicyError};

/// Where in the input an error is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The input's name (usually a file name).
    pub source: String,
    /// Index of the YAML document in the stream, from 0.
    pub document: usize,
    /// YAML path of the field (`.` for the document itself).
    pub path: String,
    /// Line (from 1), where known.
    pub line: Option<usize>,
    /// Column (from 1), where known.
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": document {}: {}", self.document, self.path)
    }
}

/// Why a policy stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text is not YAML.
    #[error("{at}: invalid YAML: {reason}")]
    Syntax {
        /// Where.
        at: Box<Location>,
        /// The YAML parser's message.
        reason: String,
    },
    /// `apiVersion`/`kind` name something palisade does not read.
    #[error("{at}: unsupported resource {api_version}/{kind}: palisade reads networking.k8s.io/v1 NetworkPolicy, cilium.io/v2 CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy, and v1 Namespace")]
    UnknownKind {
        /// Where.
        at: Box<Location>,
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
    },
    /// The document does not have the shape of its kind (unknown field,
    /// wrong type, missing field).
    #[error("{at}: {reason}")]
    Schema {
        /// Where.
        at: Box<Location>,
        /// What is wrong.
        reason: String,
    },
    /// The document is well-formed but breaks a rule of the policy language
    /// or uses an unsupported feature.
    #[error("{at}: {source}")]
    Policy {
        /// Where.
        at: Box<Location>,
        /// What is wrong.
        #[source]
        source: PolicyError,
    },
}

impl ParseError {
    /// Where the error is.
    pub fn location(&self) -> &Location {
        match self {
            Self::Syntax { at, .. }
            | Self::UnknownKind { at, .. }
            | Self::Schema { at, .. }
            | Self::Policy { at, .. } => at,
        }
    }
}

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

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
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
    for (document, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let at = |path: &str, err: Option<&serde_yaml::Error>| {
            Box::new(Location {
                source: source.to_owned(),
                document,
                path: path.to_owned(),
                line: err.and_then(|e| e.location()).map(|l| l.line()),
                column: err.and_then(|e| e.location()).map(|l| l.column()),
            })
        };
        let value = serde_yaml::Value::deserialize(de).map_err(|e| ParseError::Syntax {
            at: at(".", Some(&e)),
            reason: strip_location(&e),
        })?;
        if value.is_null() {
            continue;
        }
        if !value.is_mapping() {
            return Err(ParseError::Schema {
                at: at(".", None),
                reason: "a document must be a mapping with apiVersion, kind and metadata".into(),
            });
        }
        let tm: TypeMeta =
            serde_yaml::from_value(value.clone()).map_err(|e| ParseError::Schema {
                at: at(".", None),
                reason: format!("cannot read apiVersion/kind: {e}"),
            })?;
        let (Some(api_version), Some(kind)) = (tm.api_version, tm.kind) else {
            return Err(ParseError::Schema {
                at: at(".", None),
                reason: "apiVersion and kind are required".into(),
            });
        };
        let resource = match (api_version.as_str(), kind.as_str()) {
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                Resource::NetworkPolicy(typed(value, text, document, source)?)
            }
            ("cilium.io/v2", "CiliumNetworkPolicy") => {
                Resource::CiliumNetworkPolicy(typed(value, text, document, source)?)
            }
            ("cilium.io/v2", "CiliumClusterwideNetworkPolicy") => {
                Resource::CiliumClusterwideNetworkPolicy(typed(value, text, document, source)?)
            }
            ("v1", "Namespace") => {
                let ns: model::Namespace = typed(value, text, document, source)?;
                let mut labels = Labels::new();
                for (k, v) in ns.metadata.labels.iter().flatten() {
                    labels.insert(k, v).map_err(|e| ParseError::Schema {
                        at: at(&format!("metadata.labels.{k}"), None),
                        reason: e.to_string(),
                    })?;
                }
                Resource::Namespace {
                    name: ns.metadata.name,
                    labels,
                }
            }
            _ => {
                return Err(ParseError::UnknownKind {
                    at: at(".", None),
                    api_version,
                    kind,
                })
            }
        };
        let policy = resource.to_policy().map_err(|e| ParseError::Policy {
            at: at(e.path(), None),
            source: e,
        })?;
        out.push((resource, policy));
    }
    Ok(out)
}

/// Deserialises a document into its typed form. On error, re-reads the same
/// document from the text to get the line and column of the failure.
fn typed<T: DeserializeOwned>(
    value: serde_yaml::Value,
    text: &str,
    document: usize,
    source: &str,
) -> Result<T, ParseError> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Ok(t),
        Err(err) => {
            let path = path_string(err.path());
            let mut line = None;
            let mut column = None;
            let mut reason = strip_location(err.inner());
            if let Some(de) = serde_yaml::Deserializer::from_str(text).nth(document) {
                if let Err(e2) = serde_path_to_error::deserialize::<_, T>(de) {
                    if let Some(loc) = e2.inner().location() {
                        line = Some(loc.line());
                        column = Some(loc.column());
                    }
                    reason = strip_location(e2.inner());
                }
            }
            Err(ParseError::Schema {
                at: Box::new(Location {
                    source: source.to_owned(),
                    document,
                    path,
                    line,
                    column,
                }),
                reason: explain(&reason),
            })
        }
    }
}

fn path_string(p: &serde_path_to_error::Path) -> String {
    let s = p.to_string();
    if s.is_empty() || s == "?" {
        ".".to_owned()
    } else {
        s
    }
}

/// serde_yaml appends " at line L column C" to messages; the location is
/// reported separately.
fn strip_location(e: &serde_yaml::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Adds what would fix the most common schema errors.
fn explain(reason: &str) -> String {
    if reason.starts_with("unknown field") {
        format!("{reason}; remove the field or fix its spelling")
    } else if reason.starts_with("missing field") {
        format!("{reason}; add it")
    } else if reason.starts_with("invalid type") {
        format!("{reason}; change the value's type")
    } else {
        reason.to_owned()
    }
}
