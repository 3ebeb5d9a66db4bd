//! Label selectors over identity labels.
//!
//! A [`Selector`] is a conjunction of [`Requirement`]s evaluated against the
//! labels of an identity (pod labels plus the namespace, namespace-label and
//! service-account labels added by `Labels::for_pod`).

use std::collections::BTreeSet;
use std::fmt;

use palisade_identity::Labels;
use serde::{Deserialize, Serialize};

/// Why a selector was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A key or value is not a valid label.
    #[error("{source}")]
    Label {
        /// What the label check said.
        #[from]
        source: palisade_identity::LabelsError,
    },
    /// An unknown operator.
    #[error("unknown operator {operator:?}: use In, NotIn, Exists or DoesNotExist")]
    Operator {
        /// The refused operator.
        operator: String,
    },
    /// `In`/`NotIn` without values.
    #[error("operator {operator} needs a non-empty `values` list")]
    MissingValues {
        /// The operator.
        operator: &'static str,
    },
    /// `Exists`/`DoesNotExist` with values.
    #[error("operator {operator} takes no `values`: remove them")]
    UnexpectedValues {
        /// The operator.
        operator: &'static str,
    },
}

/// One condition on a label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Requirement {
    /// The key is present with one of the values.
    In(String, BTreeSet<String>),
    /// The key is absent, or present with none of the values.
    NotIn(String, BTreeSet<String>),
    /// The key is present.
    Exists(String),
    /// The key is absent.
    DoesNotExist(String),
}

impl Requirement {
    /// The label key the requirement is about.
    pub fn key(&self) -> &str {
        match self {
            Self::In(k, _) | Self::NotIn(k, _) | Self::Exists(k) | Self::DoesNotExist(k) => k,
        }
    }

    /// Whether the labels satisfy it.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Self::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Self::Exists(k) => labels.contains_key(k),
            Self::DoesNotExist(k) => !labels.contains_key(k),
        }
    }

    /// Builds `key operator values`, checking key, values and arity.
    /// The key loses its source prefix (`k8s:`), as in [`Labels`].
    pub fn parse(key: &str, operator: &str, values: &[String]) -> Result<Self, SelectorError> {
        let key = canonical_key(key, values.first().map(String::as_str).unwrap_or(""))?;
        let set = |op: &'static str, key: &str| -> Result<BTreeSet<String>, SelectorError> {
            if values.is_empty() {
                return Err(SelectorError::MissingValues { operator: op });
            }
            for v in values {
                Labels::new().insert(key, v)?;
            }
            Ok(values.iter().cloned().collect())
        };
        let none = |op: &'static str| {
            if values.is_empty() {
                Ok(())
            } else {
                Err(SelectorError::UnexpectedValues { operator: op })
            }
        };
        match operator {
            "In" => {
                let vs = set("In", &key)?;
                Ok(Self::In(key, vs))
            }
            "NotIn" => {
                let vs = set("NotIn", &key)?;
                Ok(Self::NotIn(key, vs))
            }
            "Exists" => none("Exists").map(|()| Self::Exists(key)),
            "DoesNotExist" => none("DoesNotExist").map(|()| Self::DoesNotExist(key)),
            other => Err(SelectorError::Operator {
                operator: other.to_owned(),
            }),
        }
    }

    /// `key = value`, checked.
    pub fn equals(key: &str, value: &str) -> Result<Self, SelectorError> {
        let key = canonical_key(key, value)?;
        Ok(Self::In(key, BTreeSet::from([value.to_owned()])))
    }
}

/// Checks a key (with one value) through the identity crate's label rules and
/// returns it without its source prefix.
fn canonical_key(key: &str, value: &str) -> Result<String, SelectorError> {
    let mut l = Labels::new();
    l.insert(key, value)?;
    let k = l
        .iter()
        .next()
        .map(|(k, _)| k.to_owned())
        .unwrap_or_default();
    Ok(k)
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(",");
        match self {
            Self::In(k, vs) if vs.len() == 1 => write!(f, "{k}={}", join(vs)),
            Self::In(k, vs) => write!(f, "{k} in ({})", join(vs)),
            Self::NotIn(k, vs) => write!(f, "{k} notin ({})", join(vs)),
            Self::Exists(k) => write!(f, "{k}"),
            Self::DoesNotExist(k) => write!(f, "!{k}"),
        }
    }
}

/// A conjunction of requirements; the empty selector matches every label
/// set. Requirements are kept sorted and deduplicated so that equal
/// selectors compare (and hash) equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Selector {
    reqs: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// A selector from requirements (sorted and deduplicated).
    pub fn new(reqs: impl IntoIterator<Item = Requirement>) -> Self {
        let mut reqs: Vec<Requirement> = reqs.into_iter().collect();
        reqs.sort();
        reqs.dedup();
        Self { reqs }
    }

    /// This selector with one more requirement.
    pub fn with(mut self, req: Requirement) -> Self {
        self.reqs.push(req);
        Self::new(self.reqs)
    }

    /// The requirements.
    pub fn requirements(&self) -> &[Requirement] {
        &self.reqs
    }

    /// Whether it has no requirement.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether some requirement is about `key`.
    pub fn mentions(&self, key: &str) -> bool {
        self.reqs.iter().any(|r| r.key() == key)
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reqs.is_empty() {
            return f.write_str("{}");
        }
        let parts: Vec<String> = self.reqs.iter().map(ToString::to_string).collect();
        write!(f, "{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::try_from_pairs(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn operators() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let vs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(Requirement::parse("app", "In", &vs(&["web", "db"]))
            .unwrap()
            .matches(&l));
        assert!(!Requirement::parse("app", "NotIn", &vs(&["web"]))
            .unwrap()
            .matches(&l));
        assert!(Requirement::parse("x", "NotIn", &vs(&["web"]))
            .unwrap()
            .matches(&l));
        assert!(Requirement::parse("k8s:tier", "Exists", &[])
            .unwrap()
            .matches(&l));
        assert!(Requirement::parse("x", "DoesNotExist", &[])
            .unwrap()
            .matches(&l));
        assert!(matches!(
            Requirement::parse("app", "In", &[]),
            Err(SelectorError::MissingValues { .. })
        ));
        assert!(matches!(
            Requirement::parse("app", "Exists", &vs(&["a"])),
            Err(SelectorError::UnexpectedValues { .. })
        ));
        assert!(matches!(
            Requirement::parse("app", "Equals", &vs(&["a"])),
            Err(SelectorError::Operator { .. })
        ));
        assert!(matches!(
            Requirement::equals("bad key", "a"),
            Err(SelectorError::Label { .. })
        ));
        assert!(matches!(
            Requirement::equals("app", "bad value"),
            Err(SelectorError::Label { .. })
        ));
    }

    #[test]
    fn selectors_are_canonical() {
        let a = Selector::new([
            Requirement::equals("b", "1").unwrap(),
            Requirement::equals("k8s:a", "1").unwrap(),
        ]);
        let b = Selector::new([
            Requirement::equals("a", "1").unwrap(),
            Requirement::equals("b", "1").unwrap(),
            Requirement::equals("b", "1").unwrap(),
        ]);
        assert_eq!(a, b);
        assert!(a.mentions("a"));
        assert!(Selector::all().matches(&Labels::new()));
        assert!(a.matches(&labels(&[("a", "1"), ("b", "1"), ("c", "2")])));
        assert!(!a.matches(&labels(&[("a", "1")])));
        assert_eq!(a.to_string(), "{a=1,b=1}");
    }
}
