//! YAML multi-document streams to tracing policies, with precise errors.

use std::fmt;

use serde::Deserialize;

use crate::model::TracingPolicy;
use crate::validate::{validate, ValidationError};

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

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// Parses a multi-document YAML stream into tracing policies, checking each
/// completely ([`validate`]). `source` names the input in errors. Empty
/// documents are skipped.
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<TracingPolicy>, ParseError> {
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
                reason: "a document must be a mapping with apiVersion, kind, metadata and spec"
                    .into(),
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
        if api_version != "cilium.io/v1alpha1"
            || !matches!(kind.as_str(), "TracingPolicy" | "TracingPolicyNamespaced")
        {
            return Err(ParseError::UnknownKind {
                at: at(".", None),
                api_version,
                kind,
            });
        }
        let policy = typed(value, text, document, source)?;
        validate(&policy).map_err(|e| ParseError::Policy {
            at: at(e.path(), None),
            source: e,
        })?;
        out.push(policy);
    }
    Ok(out)
}

/// Deserialises a document; on error, re-reads the same document from the
/// text to get the line and column of the failure.
fn typed(
    value: serde_yaml::Value,
    text: &str,
    document: usize,
    source: &str,
) -> Result<TracingPolicy, ParseError> {
    match serde_path_to_error::deserialize::<_, TracingPolicy>(value) {
        Ok(t) => Ok(t),
        Err(err) => {
            let path = path_string(err.path());
            let mut line = None;
            let mut column = None;
            let mut reason = strip_location(err.inner());
            if let Some(de) = serde_yaml::Deserializer::from_str(text).nth(document) {
                if let Err(e2) = serde_path_to_error::deserialize::<_, TracingPolicy>(de) {
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

/// serde_yaml appends " at line L column C"; the location is reported
/// separately.
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
    } else if reason.starts_with("unknown variant") {
        format!("{reason}; use one of the listed values")
    } else if reason.starts_with("missing field") {
        format!("{reason}; add it")
    } else if reason.starts_with("invalid type") || reason.starts_with("invalid value") {
        format!("{reason}; change the value's type")
    } else {
        reason.to_owned()
    }
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
