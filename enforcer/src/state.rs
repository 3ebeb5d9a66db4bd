//! The agent's persisted state, in the state directory:
//! - `state.json`: addresses and identity numbers, written atomically;
//! - `endpoints/<ep_id>.json`: one file per endpoint;
//! - `policies/<key>.yaml`: one file per policy document applied through
//!   the API;
//!
//! so that adding an endpoint or applying a document writes what changed,
//! not everything. Every file is written atomically (temporary file, fsync,
//! rename, directory fsync).
//!
//! Version 1 kept documents and endpoints in `state.json`, version 2 kept
//! endpoints there; both are still read, and the agent moves what they hold
//! to files on its first save.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use palisade_api::EndpointAddRequest;
use palisade_identity::{AllocatorSnapshot, Labels};
use serde::{Deserialize, Serialize};

use crate::ipam::Ipam;

/// Version of the state file format: 3 since endpoints have their own files.
pub const STATE_VERSION: u32 = 3;
const STATE_FILE: &str = "state.json";
/// Directory (in the state directory) of the documents applied through the
/// API.
const API_DIR: &str = "policies";
/// Directory (in the state directory) of the endpoint files.
const ENDPOINT_DIR: &str = "endpoints";
/// First line of a document file; the rest of the line is its
/// [`DocumentHeader`] as JSON, the rest of the file the document.
const HEADER_PREFIX: &str = "# palisade api document: ";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed (for example a full disk).
    #[error("agent state {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a state file of this version.
    #[error("agent state {path} is unreadable: {source}; move it away to start with an empty state (endpoints must then be added again)")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
}

/// One endpoint as persisted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointState {
    /// Endpoint id.
    pub ep_id: u16,
    /// How it was registered.
    pub spec: EndpointAddRequest,
    /// Host interface index when it was attached.
    pub host_ifindex: u32,
    /// Its full identity labels.
    pub labels: Labels,
    /// Its identity.
    pub identity: u32,
    /// Policy audit mode.
    pub audit: bool,
}

/// A policy document applied through the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiDocument {
    /// Where it came from (the `source` of the apply).
    pub source: String,
    /// The document, as YAML.
    pub yaml: String,
}

/// What a document file says about its document besides the YAML.
#[derive(Debug, Serialize, Deserialize)]
struct DocumentHeader {
    key: String,
    source: String,
}

/// The contents of `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedState {
    /// Format version.
    pub version: u32,
    /// Endpoints: only in a version 1 or 2 file (see [`load_endpoints`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointState>,
    /// Identity allocations.
    pub identities: AllocatorSnapshot,
    /// Addresses.
    pub ipam: Ipam,
    /// Documents applied through the API, by resource key: only in a
    /// version-1 file (see [`load_api_documents`] for version 2).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_documents: BTreeMap<String, ApiDocument>,
}

impl PersistedState {
    /// An empty state for a node with this IPAM.
    pub fn empty(ipam: Ipam) -> Self {
        Self {
            version: STATE_VERSION,
            endpoints: Vec::new(),
            identities: AllocatorSnapshot::default(),
            ipam,
            api_documents: BTreeMap::new(),
        }
    }

    /// Reads the state of `dir`; `None` if there is none yet.
    pub fn load(dir: &Path) -> Result<Option<Self>, StateError> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| StateError::Decode { path, source })
    }

    /// The bytes [`PersistedState::save_bytes`] writes.
    pub fn to_bytes(&self, dir: &Path) -> Result<Vec<u8>, StateError> {
        serde_json::to_vec_pretty(self).map_err(|source| StateError::Decode {
            path: dir.join(STATE_FILE),
            source,
        })
    }

    /// Writes the state of `dir` atomically (temporary file, fsync, rename):
    /// a crash or a full disk leaves the previous state intact.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        Self::save_bytes(dir, &self.to_bytes(dir)?)
    }

    /// Writes bytes of [`PersistedState::to_bytes`] as the state of `dir`,
    /// atomically.
    pub fn save_bytes(dir: &Path, bytes: &[u8]) -> Result<(), StateError> {
        write_atomic(&dir.join(STATE_FILE), bytes)
    }
}

/// Writes `path` atomically: temporary file, fsync, rename. The directory
/// is not synced (see [`sync_dir`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// Makes renames and removals in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// The file name of a document's key: letters, digits, `.` and `-` as
/// they are, `/` as `_`, any other byte as `%XX`, so that distinct keys get
/// distinct names and no name leaves the directory.
fn document_file_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len() + 5);
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' => name.push(char::from(b)),
            b'/' => name.push('_'),
            _ => name.push_str(&format!("%{b:02X}")),
        }
    }
    name.push_str(".yaml");
    name
}

/// Reads the documents applied through the API from `dir/policies/`.
/// A file that cannot be read as a document is left alone and reported in
/// the returned warnings.
pub fn load_api_documents(
    dir: &Path,
) -> Result<(BTreeMap<String, ApiDocument>, Vec<String>), StateError> {
    let mut docs = BTreeMap::new();
    let mut warnings = Vec::new();
    for path in state_files(&dir.join(API_DIR), "yaml")? {
        let text = std::fs::read_to_string(&path).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
        let (first, yaml) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let header = first
            .strip_prefix(HEADER_PREFIX)
            .and_then(|h| serde_json::from_str::<DocumentHeader>(h).ok());
        match header {
            Some(h) if document_file_name(&h.key) == path.file_name().unwrap_or_default().to_string_lossy() => {
                docs.insert(
                    h.key,
                    ApiDocument {
                        source: h.source,
                        yaml: yaml.to_owned(),
                    },
                );
            }
            _ => warnings.push(format!(
                "{} is not a document file of this agent (its first line must be {HEADER_PREFIX:?} and a header naming the file's key); it is ignored",
                path.display()
            )),
        }
    }
    Ok((docs, warnings))
}

/// Writes (`Some`) or removes (`None`) the files of documents applied
/// through the API, each atomically, then syncs the directory once.
pub fn save_api_documents<'a>(
    dir: &Path,
    changes: impl IntoIterator<Item = (&'a str, Option<&'a ApiDocument>)>,
) -> Result<(), StateError> {
    let files = changes
        .into_iter()
        .map(|(key, doc)| (document_file_name(key), doc.map(|d| (key, d))));
    save_files(&dir.join(API_DIR), files, |path, (key, doc)| {
        let header = serde_json::to_string(&DocumentHeader {
            key: key.to_owned(),
            source: doc.source.clone(),
        })
        .map_err(|source| StateError::Decode {
            path: path.to_owned(),
            source,
        })?;
        let mut text =
            String::with_capacity(HEADER_PREFIX.len() + header.len() + 1 + doc.yaml.len());
        text.push_str(HEADER_PREFIX);
        text.push_str(&header);
        text.push('\n');
        text.push_str(&doc.yaml);
        Ok(text.into_bytes())
    })
}

/// Reads the endpoint files of `dir/endpoints/`. A file that is not an
/// endpoint (or whose name is not its endpoint id) is left alone and
/// reported in the returned warnings.
pub fn load_endpoints(dir: &Path) -> Result<(Vec<EndpointState>, Vec<String>), StateError> {
    let mut endpoints = Vec::new();
    let mut warnings = Vec::new();
    for path in state_files(&dir.join(ENDPOINT_DIR), "json")? {
        let bytes = std::fs::read(&path).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
        match serde_json::from_slice::<EndpointState>(&bytes) {
            Ok(ep) if path.file_name() == Some(endpoint_file_name(ep.ep_id).as_ref()) => {
                endpoints.push(ep);
            }
            Ok(ep) => warnings.push(format!(
                "{} holds endpoint {} and is ignored (its name must be {})",
                path.display(),
                ep.ep_id,
                endpoint_file_name(ep.ep_id)
            )),
            Err(e) => warnings.push(format!(
                "{} is not an endpoint file of this agent ({e}); it is ignored",
                path.display()
            )),
        }
    }
    Ok((endpoints, warnings))
}

fn endpoint_file_name(ep_id: u16) -> String {
    format!("{ep_id}.json")
}

/// Writes (`Some`) or removes (`None`, by id) endpoint files, each
/// atomically, then syncs the directory once.
pub fn save_endpoints<'a>(
    dir: &Path,
    changes: impl IntoIterator<Item = (u16, Option<&'a EndpointState>)>,
) -> Result<(), StateError> {
    let files = changes
        .into_iter()
        .map(|(ep_id, ep)| (endpoint_file_name(ep_id), ep));
    save_files(&dir.join(ENDPOINT_DIR), files, |path, ep| {
        serde_json::to_vec_pretty(ep).map_err(|source| StateError::Decode {
            path: path.to_owned(),
            source,
        })
    })
}

/// The files of `dir` named `*.<ext>`, sorted; a missing directory has
/// none. Leftovers of writes that did not finish (`*.tmp`; the previous
/// version, if any, is the file without `.tmp`) are removed.
fn state_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, StateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StateError::Io {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut paths = Vec::new();
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e == ext => paths.push(path),
            Some("tmp") => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
    paths.sort();
    Ok(paths)
}

/// Writes (`Some`, as `encode` makes it) or removes (`None`) files of
/// `dir` by name, each atomically, then syncs the directory once.
fn save_files<T>(
    dir: &Path,
    changes: impl IntoIterator<Item = (String, Option<T>)>,
    encode: impl Fn(&Path, T) -> Result<Vec<u8>, StateError>,
) -> Result<(), StateError> {
    std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut any = false;
    for (name, value) in changes {
        any = true;
        let path = dir.join(name);
        match value {
            Some(value) => write_atomic(&path, &encode(&path, value)?)?,
            None => match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StateError::Io { path, source }),
            },
        }
    }
    if any {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn doc(source: &str, yaml: &str) -> ApiDocument {
        ApiDocument {
            source: source.to_owned(),
            yaml: yaml.to_owned(),
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("palisade-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn file_names_are_distinct_and_stay_in_the_directory() {
        assert_eq!(
            document_file_name("CiliumNetworkPolicy/ns/web-1.x"),
            "CiliumNetworkPolicy_ns_web-1.x.yaml"
        );
        assert_ne!(document_file_name("a/b_c"), document_file_name("a_b/c"));
        assert_eq!(document_file_name("a/../b"), "a_.._b.yaml");
        assert!(!document_file_name("x/\u{e9}\\").contains(['/', '\\']));
    }

    #[test]
    fn documents_round_trip_and_are_removed() {
        let dir = tempdir("docs");
        let a = doc(
            "src \"one\"\nline",
            "kind: Namespace\nmetadata:\n  name: a\n",
        );
        let b = doc("two", "kind: X\n");
        save_api_documents(
            &dir,
            [
                ("Namespace/a", Some(&a)),
                ("CiliumNetworkPolicy/n/b", Some(&b)),
            ],
        )
        .unwrap();
        std::fs::write(dir.join(API_DIR).join("junk.yaml.tmp"), "x").unwrap();
        let (docs, warnings) = load_api_documents(&dir).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs["Namespace/a"], a);
        assert_eq!(docs["CiliumNetworkPolicy/n/b"], b);
        assert!(!dir.join(API_DIR).join("junk.yaml.tmp").exists());
        save_api_documents(&dir, [("Namespace/a", None)]).unwrap();
        let (docs, _) = load_api_documents(&dir).unwrap();
        assert_eq!(docs.keys().collect::<Vec<_>>(), ["CiliumNetworkPolicy/n/b"]);
        std::fs::write(dir.join(API_DIR).join("other.yaml"), "kind: X\n").unwrap();
        let (docs, warnings) = load_api_documents(&dir).unwrap();
        assert_eq!((docs.len(), warnings.len()), (1, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn older_states_are_read_and_the_current_one_omits_documents_and_endpoints() {
        let dir = tempdir("v1");
        let mut st = PersistedState::empty(Ipam::new(
            crate::config::PodCidr::try_from("10.9.0.0/24".to_owned()).unwrap(),
        ));
        st.version = 1;
        st.api_documents
            .insert("Namespace/a".to_owned(), doc("s", "y\n"));
        st.save(&dir).unwrap();
        let back = PersistedState::load(&dir).unwrap().unwrap();
        assert_eq!((back.version, back.api_documents.len()), (1, 1));
        let v2 = PersistedState::empty(Ipam::new(
            crate::config::PodCidr::try_from("10.9.0.0/24".to_owned()).unwrap(),
        ));
        let text = String::from_utf8(v2.to_bytes(&dir).unwrap()).unwrap();
        assert!(!text.contains("api_documents"), "{text}");
        assert!(!text.contains("endpoints"), "{text}");
        v2.save(&dir).unwrap();
        let back = PersistedState::load(&dir).unwrap().unwrap();
        assert_eq!((back.version, back.api_documents.len()), (STATE_VERSION, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn endpoints_round_trip_and_are_removed() {
        let dir = tempdir("endpoints");
        let ep = |id: u16| EndpointState {
            ep_id: id,
            spec: EndpointAddRequest {
                container_id: format!("c{id}"),
                ifname: "eth0".into(),
                netns: "/var/run/netns/x".into(),
                host_ifname: format!("lxc{id}"),
                ipv4: std::net::Ipv4Addr::new(10, 0, 0, 2),
                pod_namespace: "x".into(),
                pod_name: format!("p{id}"),
                labels: Default::default(),
                service_account: None,
            },
            host_ifindex: u32::from(id),
            labels: Labels::new(),
            identity: 256,
            audit: false,
        };
        let (a, b) = (ep(1), ep(2));
        save_endpoints(&dir, [(1, Some(&a)), (2, Some(&b))]).unwrap();
        std::fs::write(dir.join(ENDPOINT_DIR).join("3.json.tmp"), "x").unwrap();
        std::fs::write(
            dir.join(ENDPOINT_DIR).join("9.json"),
            serde_json::to_vec(&a).unwrap(),
        )
        .unwrap();
        let (eps, warnings) = load_endpoints(&dir).unwrap();
        assert_eq!(eps, vec![a.clone(), b]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(!dir.join(ENDPOINT_DIR).join("3.json.tmp").exists());
        save_endpoints(&dir, [(2, None), (2, None)]).unwrap();
        let (eps, _) = load_endpoints(&dir).unwrap();
        assert_eq!(eps, vec![a.clone()]);

        // A version-2 state file still carries its endpoints.
        let mut v2 = PersistedState::empty(Ipam::new(
            crate::config::PodCidr::try_from("10.9.0.0/24".to_owned()).unwrap(),
        ));
        v2.version = 2;
        v2.endpoints.push(a.clone());
        v2.save(&dir).unwrap();
        let back = PersistedState::load(&dir).unwrap().unwrap();
        assert_eq!((back.version, back.endpoints), (2, vec![a]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
