//! Where policies and namespaces come from: files of the policy directory
//! and documents applied through the API; and the desired set they make
//! together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use palisade_identity::Labels;
use palisade_policies::parse::parse_with_policies;
use palisade_policies::{Policy, PolicyRef, Resource};
use serde::Deserialize;

use crate::state::ApiDocument;

/// What one document defines.
#[derive(Debug, Clone)]
pub enum Definition {
    /// A policy (shared, so that the desired set is cheap to build and an
    /// unchanged policy is recognised by identity).
    Policy(Arc<Policy>),
    /// A namespace with its labels.
    Namespace(String, Labels),
}

/// A definition with the key it is known by and where it came from.
#[derive(Debug, Clone)]
pub struct Sourced {
    /// `Kind/namespace/name` or `Namespace/name`.
    pub key: String,
    /// Where it came from: a file path, or `api:<source>`.
    pub source: String,
    /// What it defines.
    pub definition: Definition,
}

/// What all sources together ask for.
#[derive(Debug, Default)]
pub struct Desired {
    /// Policies, with their source.
    pub policies: BTreeMap<PolicyRef, (String, Arc<Policy>)>,
    /// Namespace labels.
    pub namespaces: BTreeMap<String, Labels>,
    /// Conflicts between sources (the first definition wins).
    pub conflicts: Vec<String>,
}

#[derive(Debug, Clone)]
struct FileState {
    stamp: (SystemTime, u64),
    resources: Vec<Sourced>,
    error: Option<String>,
}

/// Every source of documents.
#[derive(Debug, Default)]
pub struct Documents {
    dir: Option<PathBuf>,
    files: BTreeMap<PathBuf, FileState>,
    api: BTreeMap<String, (ApiDocument, Sourced)>,
    /// Keys of API documents changed (or removed) since they were last
    /// persisted.
    api_unsaved: BTreeSet<String>,
}

/// Parses a stream into definitions; any invalid document fails it all.
fn parse(text: &str, source: &str, origin: &str) -> Result<Vec<Sourced>, String> {
    let parsed = parse_with_policies(text, source).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(parsed.len());
    for (resource, policy) in parsed {
        let (key, definition) = match (resource, policy) {
            (_, Some(p)) => (p.key.to_string(), Definition::Policy(Arc::new(p))),
            (Resource::Namespace { name, labels }, None) => (
                format!("Namespace/{name}"),
                Definition::Namespace(name, labels),
            ),
            (other, None) => {
                return Err(format!("{source}: {other:?} defines no policy"));
            }
        };
        out.push(Sourced {
            key,
            source: origin.to_owned(),
            definition,
        });
    }
    Ok(out)
}

/// Splits a YAML stream into its non-empty documents, each as YAML text.
fn split_documents(yaml: &str) -> Vec<String> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .filter_map(|v| serde_yaml::to_string(&v).ok())
        .collect()
}

impl Documents {
    /// Sources for a node whose policy directory is `dir` (if any).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            ..Self::default()
        }
    }

    /// Restores the documents applied through the API (persisted).
    pub fn restore_api(&mut self, docs: &BTreeMap<String, ApiDocument>) -> Vec<String> {
        let mut errors = Vec::new();
        for (key, doc) in docs {
            match parse(&doc.yaml, &doc.source, &format!("api:{}", doc.source)) {
                Ok(defs) => {
                    for sourced in defs {
                        self.api.insert(sourced.key.clone(), (doc.clone(), sourced));
                    }
                }
                Err(e) => errors.push(format!("persisted document {key}: {e}")),
            }
        }
        errors
    }

    /// Marks every document applied through the API as not persisted
    /// (after reading them from an older state format).
    pub fn mark_all_api_unsaved(&mut self) {
        self.api_unsaved.extend(self.api.keys().cloned());
    }

    /// The documents applied through the API that changed since the last
    /// [`Documents::api_saved`]: each key with its document, or `None` if
    /// it was deleted.
    pub fn api_unsaved(&self) -> Vec<(&str, Option<&ApiDocument>)> {
        self.api_unsaved
            .iter()
            .map(|k| (k.as_str(), self.api.get(k).map(|(d, _)| d)))
            .collect()
    }

    /// Records that the documents of [`Documents::api_unsaved`] are persisted.
    pub fn api_saved(&mut self) {
        self.api_unsaved.clear();
    }

    /// Validates a YAML stream and stages it as applied through the API.
    /// Nothing changes unless every document is valid and no document
    /// redefines one of a file of the policy directory. Returns the keys.
    pub fn apply_api(&mut self, source: &str, yaml: &str) -> Result<Vec<String>, String> {
        let defs = parse(yaml, source, &format!("api:{source}"))?;
        let texts = split_documents(yaml);
        if texts.len() != defs.len() {
            return Err(format!(
                "{source}: {} documents but {} resources; every document must be one resource",
                texts.len(),
                defs.len()
            ));
        }
        let file_keys = self.file_keys();
        let mut staged = Vec::new();
        for (sourced, text) in defs.into_iter().zip(texts) {
            let key = sourced.key.clone();
            if let Some(file) = file_keys.get(&key) {
                return Err(format!(
                    "{source}: {key} is defined by the policy directory file {file}; change it there"
                ));
            }
            let doc = ApiDocument {
                source: source.to_owned(),
                yaml: text,
            };
            staged.push((key, doc, sourced));
        }
        let keys = staged.iter().map(|(k, _, _)| k.clone()).collect();
        for (key, doc, sourced) in staged {
            self.api_unsaved.insert(key.clone());
            self.api.insert(key, (doc, sourced));
        }
        Ok(keys)
    }

    /// Removes a document applied through the API; false if there was none.
    pub fn delete_api(&mut self, key: &str) -> bool {
        let removed = self.api.remove(key).is_some();
        if removed {
            self.api_unsaved.insert(key.to_owned());
        }
        removed
    }

    fn file_keys(&self) -> BTreeMap<String, String> {
        self.files
            .iter()
            .flat_map(|(path, f)| {
                f.resources
                    .iter()
                    .map(move |r| (r.key.clone(), path.display().to_string()))
            })
            .collect()
    }

    /// Rereads changed files of the policy directory. Returns whether
    /// anything changed. A file that fails to parse keeps its previous
    /// resources in force; its error is kept for [`Documents::errors`].
    pub fn rescan_dir(&mut self) -> bool {
        let Some(dir) = self.dir.clone() else {
            return false;
        };
        let mut seen = Vec::new();
        let mut changed = false;
        for path in policy_files(&dir) {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let stamp = (
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            );
            seen.push(path.clone());
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let source = path.display().to_string();
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| format!("{source}: {e}"))
                .and_then(|text| parse(&text, &source, &source));
            let previous = self.files.get(&path).map(|f| f.resources.clone());
            let state = match parsed {
                Ok(resources) => {
                    tracing::info!(file = %source, resources = resources.len(), "policy file loaded");
                    FileState {
                        stamp,
                        resources,
                        error: None,
                    }
                }
                Err(error) => {
                    tracing::error!(file = %source, %error, "policy file rejected; its previous version stays in force");
                    FileState {
                        stamp,
                        resources: previous.unwrap_or_default(),
                        error: Some(error),
                    }
                }
            };
            self.files.insert(path, state);
            changed = true;
        }
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains(p));
        changed || before != self.files.len()
    }

    /// Errors of files of the policy directory that are not in force.
    pub fn errors(&self) -> Vec<String> {
        self.files
            .values()
            .filter_map(|f| f.error.clone())
            .collect()
    }

    /// What all sources ask for together.
    pub fn desired(&self) -> Desired {
        let mut d = Desired::default();
        let mut sources: BTreeMap<String, String> = BTreeMap::new();
        let all = self
            .files
            .values()
            .flat_map(|f| f.resources.iter())
            .chain(self.api.values().map(|(_, s)| s));
        for s in all {
            if let Some(first) = sources.get(&s.key) {
                d.conflicts.push(format!(
                    "{} is defined by both {first} and {}; the first one is in force",
                    s.key, s.source
                ));
                continue;
            }
            sources.insert(s.key.clone(), s.source.clone());
            match &s.definition {
                Definition::Namespace(name, labels) => {
                    d.namespaces.insert(name.clone(), labels.clone());
                }
                Definition::Policy(p) => {
                    d.policies
                        .insert(p.key.clone(), (s.source.clone(), Arc::clone(p)));
                }
            }
        }
        d
    }
}

/// The YAML and JSON files directly in `dir`, sorted.
fn policy_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    files
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {x: y}}\n";

    fn unsaved(d: &Documents) -> Vec<(String, bool)> {
        d.api_unsaved()
            .into_iter()
            .map(|(k, doc)| (k.to_owned(), doc.is_some()))
            .collect()
    }

    #[test]
    fn only_changed_api_documents_are_unsaved() {
        let mut d = Documents::new(None);
        assert!(d.api_unsaved().is_empty());
        let keys = d.apply_api("s", NS).unwrap();
        assert_eq!(keys, ["Namespace/a"]);
        assert_eq!(unsaved(&d), [("Namespace/a".to_owned(), true)]);
        d.api_saved();
        assert!(d.api_unsaved().is_empty());
        assert!(d.delete_api("Namespace/a"));
        assert_eq!(unsaved(&d), [("Namespace/a".to_owned(), false)]);
        assert!(!d.delete_api("Namespace/b"));
        d.api_saved();

        // Restored documents are saved already, unless they come from the
        // old state format.
        let persisted = BTreeMap::from([(
            "Namespace/a".to_owned(),
            ApiDocument {
                source: "s".to_owned(),
                yaml: NS.to_owned(),
            },
        )]);
        let mut d = Documents::new(None);
        assert!(d.restore_api(&persisted).is_empty());
        assert!(d.api_unsaved().is_empty());
        assert_eq!(d.desired().namespaces.len(), 1);
        d.mark_all_api_unsaved();
        assert_eq!(unsaved(&d), [("Namespace/a".to_owned(), true)]);
    }
}
