//! YAML multi-document streams to tracing policies, with precise errors.

use crate::model::TracingPolicy;
use crate::validate::{validate, ValidationError};

pub use palisade_k8s_yaml::Location;

/// Why a tracing policy stream was refused.
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
    /// `apiVersion`/`kind` name something this crate does not read.
    #[error("{at}: unsupported resource {api_version}/{kind}: palisade reads cilium.io/v1alpha1 TracingPolicy and TracingPolicyNamespaced")]
    UnknownKind {
        /// Where.
        at: Box<Location>,
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
    },
    /// The document does not have the shape of its kind.
    #[error("{at}: {reason}")]
    Schema {
        /// Where.
        at: Box<Location>,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Well-formed, but breaks a rule or uses an unsupported feature.
    #[error("{at}: {source}")]
    Policy {
        /// Where.
        at: Box<Location>,
        /// What is wrong.
        #[source]
        source: ValidationError,
    },
}

impl From<palisade_k8s_yaml::DocumentError> for ParseError {
    fn from(e: palisade_k8s_yaml::DocumentError) -> Self {
        match e {
            palisade_k8s_yaml::DocumentError::Syntax { at, reason } => Self::Syntax { at, reason },
            palisade_k8s_yaml::DocumentError::Schema { at, reason } => Self::Schema { at, reason },
        }
    }
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

/// Parses a multi-document YAML stream into tracing policies, checking each
/// completely ([`validate`]). `source` names the input in errors. Empty
/// documents are skipped.
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<TracingPolicy>, ParseError> {
    let mut out = Vec::new();
    for doc in palisade_k8s_yaml::documents(text, source) {
        let doc = doc?;
        if doc.api_version != "cilium.io/v1alpha1"
            || !matches!(
                doc.kind.as_str(),
                "TracingPolicy" | "TracingPolicyNamespaced"
            )
        {
            return Err(ParseError::UnknownKind {
                at: doc.at("."),
                api_version: doc.api_version.clone(),
                kind: doc.kind.clone(),
            });
        }
        let policy: TracingPolicy = doc.typed()?;
        validate(&policy).map_err(|e| ParseError::Policy {
            at: doc.at(e.path()),
            source: e,
        })?;
        out.push(policy);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_stream_and_errors() {
        let one = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicyNamespaced\nmetadata:\n  name: a\n  namespace: ns\nspec:\n  kprobes:\n  - call: tcp_connect\n";
        let text = format!("{one}---\n---\n{}", one.replace("name: a", "name: b"));
        let p = parse_documents(&text, "f.yaml").expect("parses");
        assert_eq!(p.len(), 2);
        let err = parse_documents("apiVersion: v1\nkind: Pod\n", "f.yaml").expect_err("kind");
        assert!(matches!(err, ParseError::UnknownKind { .. }));
        let err = parse_documents("a: [", "f.yaml").expect_err("syntax");
        assert!(matches!(err, ParseError::Syntax { .. }));
        let err = parse_documents(
            &format!("{one}---\n{}", one.replace("call", "cal")),
            "f.yaml",
        )
        .expect_err("second document");
        assert_eq!(err.location().document, 1);
        assert_eq!(err.location().path, "spec.kprobes[0].cal");
    }
}
