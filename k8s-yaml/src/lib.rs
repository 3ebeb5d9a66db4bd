//! Kubernetes-style YAML streams: `---`-separated documents, each a
//! mapping with `apiVersion` and `kind`, read into typed resources. Errors
//! carry a [`Location`]: the input's name, the document's index, the YAML
//! path of the field (`spec.ingress[0].ports[1].endPort`) and, where the
//! YAML parser knows them, line and column, plus a hint at what would fix
//! the most common mistakes.
//!
//! Each resource crate (network policies, tracing policies) dispatches on
//! [`Document::api_version`] / [`Document::kind`] and keeps its own error
//! type; this crate is the shared reading underneath. It does no I/O.
#![forbid(unsafe_code)]

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;

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

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentError {
    /// The text is not YAML.
    Syntax {
        /// Where.
        at: Box<Location>,
        /// The YAML parser's message.
        reason: String,
    },
    /// The document does not have the shape it must have (not a mapping,
    /// no `apiVersion`/`kind`, or, from [`Document::typed`], an unknown,
    /// missing or mistyped field).
    Schema {
        /// Where.
        at: Box<Location>,
        /// What is wrong and what would fix it.
        reason: String,
    },
}

/// Why a resource, well-formed as YAML, is not acceptable: a rule of its
/// language is broken, or it uses a feature palisade recognises but does not
/// implement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A value breaks a rule of the language.
    #[error("{reason}")]
    Invalid {
        /// YAML path of the offending field, e.g. `spec.ingress[0].ports[1].endPort`.
        path: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A feature palisade recognises but does not implement.
    #[error("{feature} not supported{hint}")]
    Unsupported {
        /// YAML path of the offending field.
        path: String,
        /// The feature, phrased to be followed by "not supported"
        /// (`named ports are`).
        feature: String,
        /// How to do without it (starts with `: ` when present).
        hint: String,
    },
}

impl SpecError {
    /// YAML path of the offending field.
    pub fn path(&self) -> &str {
        match self {
            Self::Invalid { path, .. } | Self::Unsupported { path, .. } => path,
        }
    }
}

/// Why a stream of resources was refused.
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
    /// `apiVersion`/`kind` name something the reader does not read.
    #[error("{at}: unsupported resource {api_version}/{kind}: palisade reads {expected}")]
    UnknownKind {
        /// Where.
        at: Box<Location>,
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
        /// What the reader reads, for the message.
        expected: &'static str,
    },
    /// The document does not have the shape of its kind (unknown field,
    /// wrong type, missing field).
    #[error("{at}: {reason}")]
    Schema {
        /// Where.
        at: Box<Location>,
        /// What is wrong and what would fix it.
        reason: String,
    },
    /// The document is well-formed but breaks a rule of its language or
    /// uses an unsupported feature.
    #[error("{at}: {source}")]
    Policy {
        /// Where.
        at: Box<Location>,
        /// What is wrong.
        #[source]
        source: SpecError,
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

impl From<DocumentError> for ParseError {
    fn from(e: DocumentError) -> Self {
        match e {
            DocumentError::Syntax { at, reason } => Self::Syntax { at, reason },
            DocumentError::Schema { at, reason } => Self::Schema { at, reason },
        }
    }
}

impl Document<'_> {
    /// The error for a document whose `apiVersion`/`kind` the reader does
    /// not read; `expected` names what it reads.
    pub fn unknown_kind(&self, expected: &'static str) -> ParseError {
        ParseError::UnknownKind {
            at: self.at("."),
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            expected,
        }
    }

    /// A [`SpecError`] of this document, located at its path.
    pub fn spec_error(&self, source: SpecError) -> ParseError {
        ParseError::Policy {
            at: self.at(source.path()),
            source,
        }
    }
}

/// One non-empty document of a stream.
#[derive(Debug, Clone)]
pub struct Document<'a> {
    /// Its `apiVersion`.
    pub api_version: String,
    /// Its `kind`.
    pub kind: String,
    index: usize,
    value: serde_yaml::Value,
    text: &'a str,
    source: &'a str,
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// The non-empty documents of `text` (named `source` in errors), in order.
/// A document that is not YAML, not a mapping, or has no `apiVersion` and
/// `kind` is an error; the caller usually stops at the first one.
pub fn documents<'a>(
    text: &'a str,
    source: &'a str,
) -> impl Iterator<Item = Result<Document<'a>, DocumentError>> + 'a {
    serde_yaml::Deserializer::from_str(text)
        .enumerate()
        .filter_map(move |(index, de)| read_document(index, de, text, source).transpose())
}

fn read_document<'a>(
    index: usize,
    de: serde_yaml::Deserializer<'_>,
    text: &'a str,
    source: &'a str,
) -> Result<Option<Document<'a>>, DocumentError> {
    let at = |err: Option<&serde_yaml::Error>| {
        Box::new(Location {
            source: source.to_owned(),
            document: index,
            path: ".".to_owned(),
            line: err.and_then(|e| e.location()).map(|l| l.line()),
            column: err.and_then(|e| e.location()).map(|l| l.column()),
        })
    };
    let value = serde_yaml::Value::deserialize(de).map_err(|e| DocumentError::Syntax {
        at: at(Some(&e)),
        reason: strip_location(&e),
    })?;
    if value.is_null() {
        return Ok(None);
    }
    if !value.is_mapping() {
        return Err(DocumentError::Schema {
            at: at(None),
            reason: "a document must be a mapping with apiVersion, kind, metadata and spec".into(),
        });
    }
    let tm: TypeMeta =
        serde_yaml::from_value(value.clone()).map_err(|e| DocumentError::Schema {
            at: at(None),
            reason: format!("cannot read apiVersion/kind: {e}"),
        })?;
    let (Some(api_version), Some(kind)) = (tm.api_version, tm.kind) else {
        return Err(DocumentError::Schema {
            at: at(None),
            reason: "apiVersion and kind are required".into(),
        });
    };
    Ok(Some(Document {
        api_version,
        kind,
        index,
        value,
        text,
        source,
    }))
}

impl Document<'_> {
    /// Index of the document in the stream, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// A location in this document: `path` is a YAML path (`.` for the
    /// document itself).
    pub fn at(&self, path: &str) -> Box<Location> {
        Box::new(Location {
            source: self.source.to_owned(),
            document: self.index,
            path: path.to_owned(),
            line: None,
            column: None,
        })
    }

    /// Reads the document as `T`. On error, reads the same document again
    /// from the text to learn the line and column of the failure.
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, DocumentError> {
        let err = match serde_path_to_error::deserialize::<_, T>(self.value.clone()) {
            Ok(t) => return Ok(t),
            Err(err) => err,
        };
        let mut at = self.at(&path_string(err.path()));
        let mut reason = strip_location(err.inner());
        if let Some(de) = serde_yaml::Deserializer::from_str(self.text).nth(self.index) {
            if let Err(e2) = serde_path_to_error::deserialize::<_, T>(de) {
                if let Some(loc) = e2.inner().location() {
                    at.line = Some(loc.line());
                    at.column = Some(loc.column());
                }
                reason = strip_location(e2.inner());
            }
        }
        Err(DocumentError::Schema {
            at,
            reason: explain(&reason),
        })
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

/// serde_yaml puts the parent's path before messages of nested fields
/// (`spec.ingress[0]: unknown field ...`) and appends " at line L column C";
/// both are reported separately, in the [`Location`].
fn strip_location(e: &serde_yaml::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" at line ") {
        Some(i) => &s[..i],
        None => s.as_str(),
    };
    match s.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
            rest.to_owned()
        }
        _ => s.to_owned(),
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

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Thing {
        api_version: String,
        kind: String,
        spec: Spec,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Spec {
        ports: Vec<u16>,
    }

    #[test]
    fn documents_skip_empty_ones_and_keep_their_index() {
        let text = "apiVersion: v1\nkind: A\n---\n---\napiVersion: v1\nkind: B\n";
        let docs: Vec<_> = documents(text, "f.yaml").map(Result::unwrap).collect();
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[1].kind.as_str(), docs[1].index()), ("B", 2));
    }

    #[test]
    fn errors_name_source_document_path_and_line() {
        let text = "apiVersion: v1\nkind: T\nspec:\n  ports: [80]\n---\napiVersion: v1\nkind: T\nspec:\n  portz: [80]\n";
        let docs: Vec<_> = documents(text, "f.yaml").map(Result::unwrap).collect();
        assert_eq!(docs[0].typed::<Thing>().unwrap().spec.ports, vec![80]);
        let DocumentError::Schema { at, reason } = docs[1].typed::<Thing>().unwrap_err() else {
            panic!("schema error expected");
        };
        assert_eq!((at.document, at.path.as_str()), (1, "spec.portz"));
        assert_eq!(at.line, Some(9), "line in the file");
        assert!(reason.contains("fix its spelling"), "{reason}");
        assert!(at.to_string().starts_with("f.yaml:9:"), "{at}");
    }

    #[test]
    fn shapes_that_are_not_documents() {
        let first = |t: &'static str| documents(t, "f.yaml").next().unwrap();
        assert!(matches!(first("a: ["), Err(DocumentError::Syntax { .. })));
        assert!(matches!(first("- 1\n"), Err(DocumentError::Schema { .. })));
        assert!(matches!(
            first("kind: A\n"),
            Err(DocumentError::Schema { .. })
        ));
    }
}
