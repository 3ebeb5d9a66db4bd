//! The agent's persisted state: endpoints, identities, addresses and the
//! policies applied through the API, in one JSON file written atomically.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use palisade_api::EndpointAddRequest;
use palisade_identity::{AllocatorSnapshot, Labels};
use serde::{Deserialize, Serialize};

use crate::ipam::Ipam;

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;
const STATE_FILE: &str = "state.json";

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

/// Everything the agent persists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedState {
    /// Format version.
    pub version: u32,
    /// Endpoints.
    pub endpoints: Vec<EndpointState>,
    /// Identity allocations.
    pub identities: AllocatorSnapshot,
    /// Addresses.
    pub ipam: Ipam,
    /// Documents applied through the API, by resource key.
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

    /// Writes the state of `dir` atomically (temporary file, fsync, rename):
    /// a crash or a full disk leaves the previous state intact.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| StateError::Decode {
            path: path.clone(),
            source,
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        let written = f.write_all(&bytes).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        std::fs::rename(&tmp, &path).map_err(io)
    }
}
