//! YAML multi-document streams to tracing policies, with precise errors.

use crate::model::TracingPolicy;
use crate::validate::validate;

pub use palisade_k8s_yaml::{Location, ParseError};

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
            return Err(
                doc.unknown_kind("cilium.io/v1alpha1 TracingPolicy and TracingPolicyNamespaced")
            );
        }
        let policy: TracingPolicy = doc.typed()?;
        validate(&policy).map_err(|e| doc.spec_error(e))?;
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
