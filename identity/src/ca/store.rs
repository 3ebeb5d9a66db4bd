//! The CA's files: one directory per trust domain, one per generation.
//!
//! ```text
//! <dir>/<trust domain>/generations.json   lifecycle of every generation
//! <dir>/<trust domain>/<n>/ca.pem         the CA certificate
//! <dir>/<trust domain>/<n>/ca.key         its PKCS#8 key (0600)
//! <dir>/<trust domain>/<n>/jwt.key        the JWT signing key (0600)
//! <dir>/<trust domain>/<n>/upstream.pem   certificates above the CA (operator-supplied CAs)
//! <dir>/<trust domain>/<n>/anchors.pem    the operator's roots (operator-supplied CAs)
//! ```
//!
//! Directories are 0700, keys 0600, and every file is replaced atomically
//! (written beside, synced, renamed). Key bytes never reach a log or an
//! error message.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroize as _;

use super::authority::{Authority, AuthorityError};
use super::key::{EcKey, KeyUse};
use super::rotation::{CaSet, Generation, Lifecycle};
use crate::pem;
use crate::x509::{pem_blocks, PrivateKeyDer};
use crate::TrustDomain;

const LIFECYCLE_FILE: &str = "generations.json";

/// Why the CA's files could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file's contents are unusable.
    #[error("{}: {what}", path.display())]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A key file is readable by others.
    #[error(
        "{}: the key file has mode {mode:o}; it must not be readable by group or others (chmod 600)",
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// A stored CA is unusable.
    #[error("{}: {source}", path.display())]
    Authority {
        /// Its directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: AuthorityError,
    },
}

/// Reads the PEM blocks with a given label from a file (other blocks are
/// skipped, and zeroized: a file may also hold a key).
pub fn read_pem_file(path: &Path, label: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    let bytes = fs::read(path).map_err(|source| StoreError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })?;
    let blocks = pem_blocks::decode(&bytes).map_err(|e| StoreError::Content {
        path: path.to_owned(),
        what: format!("not valid PEM: {e}"),
    })?;
    Ok(blocks
        .into_iter()
        .filter(|block| block.label == label)
        .map(|mut block| std::mem::take(&mut *block.der))
        .collect())
}

/// Reads a private key file: exactly one PKCS#8 `PRIVATE KEY` block, not
/// readable by group or others.
pub fn read_key_file(path: &Path) -> Result<PrivateKeyDer, StoreError> {
    let meta = fs::metadata(path).map_err(|source| StoreError::Io {
        op: "stat",
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut blocks = read_pem_file(path, pem::PRIVATE_KEY)?;
    if blocks.len() != 1 {
        for block in &mut blocks {
            block.zeroize();
        }
        return Err(StoreError::Content {
            path: path.to_owned(),
            what: format!(
                "expected exactly one \"-----BEGIN PRIVATE KEY-----\" (PKCS#8) block, found {}",
                blocks.len()
            ),
        });
    }
    Ok(PrivateKeyDer::new(blocks.remove(0)))
}

/// Writes a file atomically with the given mode.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let io = |op, source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io("create", e))?;
    // The mode of an existing temporary file is not changed by open.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io("chmod", e))?;
    file.write_all(bytes).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("sync", e))?;
    fs::rename(&tmp, path).map_err(|e| io("rename", e))
}

fn create_dir(path: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| StoreError::Io {
            op: "create directory",
            path: path.to_owned(),
            source,
        })
}

/// The CA directory of one trust domain.
#[derive(Debug, Clone)]
pub struct CaStore {
    dir: PathBuf,
}

impl CaStore {
    /// The store of `trust_domain` under `root`.
    pub fn new(root: &Path, trust_domain: &TrustDomain) -> Self {
        Self {
            dir: root.join(trust_domain.name()),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads every stored generation, or `None` if nothing is stored yet.
    pub fn load(&self, trust_domain: &TrustDomain) -> Result<Option<CaSet>, StoreError> {
        let lifecycle_path = self.dir.join(LIFECYCLE_FILE);
        let bytes = match fs::read(&lifecycle_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    op: "read",
                    path: lifecycle_path,
                    source,
                })
            }
        };
        let lifecycles: Vec<Lifecycle> =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Content {
                path: lifecycle_path.clone(),
                what: e.to_string(),
            })?;
        let mut generations = Vec::with_capacity(lifecycles.len());
        for lifecycle in lifecycles {
            generations.push(self.load_generation(trust_domain, lifecycle)?);
        }
        Ok(Some(CaSet::from_generations(
            trust_domain.clone(),
            generations,
        )))
    }

    fn load_generation(
        &self,
        trust_domain: &TrustDomain,
        lifecycle: Lifecycle,
    ) -> Result<Generation, StoreError> {
        let dir = self.dir.join(lifecycle.number.to_string());
        let cert = read_pem_file(&dir.join("ca.pem"), pem::CERTIFICATE)?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Content {
                path: dir.join("ca.pem"),
                what: "no CERTIFICATE block".to_owned(),
            })?;
        let optional = |name: &str| -> Result<Vec<Vec<u8>>, StoreError> {
            let path = dir.join(name);
            if path.exists() {
                read_pem_file(&path, pem::CERTIFICATE)
            } else {
                Ok(Vec::new())
            }
        };
        let upstream = optional("upstream.pem")?;
        let anchors = optional("anchors.pem")?;
        let key = read_key_file(&dir.join("ca.key"))?;
        let authority =
            Authority::from_parts(trust_domain, cert, upstream, anchors, key.secret_der())
                .map_err(|source| StoreError::Authority {
                    path: dir.clone(),
                    source,
                })?;
        let jwt_key = read_key_file(&dir.join("jwt.key"))?;
        let jwt_key = EcKey::from_pkcs8(jwt_key.secret_der(), KeyUse::Jwt).map_err(|source| {
            StoreError::Authority {
                path: dir.join("jwt.key"),
                source: AuthorityError::Key(source),
            }
        })?;
        Ok(Generation {
            authority,
            jwt_key,
            lifecycle,
        })
    }

    /// Writes the files of generations not stored yet, then the lifecycle
    /// of all; removes the directories of dropped generations.
    pub fn save(&self, set: &CaSet) -> Result<(), StoreError> {
        create_dir(&self.dir)?;
        for g in set.generations() {
            let dir = self.dir.join(g.lifecycle.number.to_string());
            if dir.join("jwt.key").exists() {
                continue;
            }
            create_dir(&dir)?;
            let auth = &g.authority;
            write_file(
                &dir.join("ca.pem"),
                pem::encode(pem::CERTIFICATE, auth.certificate()).as_bytes(),
                0o644,
            )?;
            if !auth.is_self_signed() {
                let upstream = pem::encode_certificates(auth.upstream().iter().map(Vec::as_slice));
                write_file(&dir.join("upstream.pem"), upstream.as_bytes(), 0o644)?;
                let anchors = pem::encode_certificates(auth.anchors().iter().map(Vec::as_slice));
                write_file(&dir.join("anchors.pem"), anchors.as_bytes(), 0o644)?;
            }
            let key = pem::encode_secret(pem::PRIVATE_KEY, auth.key().secret_der());
            write_file(&dir.join("ca.key"), key.as_bytes(), 0o600)?;
            let jwt = pem::encode_secret(pem::PRIVATE_KEY, g.jwt_key.pkcs8().secret_der());
            write_file(&dir.join("jwt.key"), jwt.as_bytes(), 0o600)?;
        }
        let lifecycles: Vec<&Lifecycle> = set.generations().iter().map(|g| &g.lifecycle).collect();
        let json = serde_json::to_vec_pretty(&lifecycles).map_err(|e| StoreError::Content {
            path: self.dir.join(LIFECYCLE_FILE),
            what: e.to_string(),
        })?;
        write_file(&self.dir.join(LIFECYCLE_FILE), &json, 0o600)?;
        self.remove_dropped(set)
    }

    fn remove_dropped(&self, set: &CaSet) -> Result<(), StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| StoreError::Io {
            op: "list",
            path: self.dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(number) = name.to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if set
                .generations()
                .iter()
                .all(|g| g.lifecycle.number != number)
            {
                fs::remove_dir_all(entry.path()).map_err(|source| StoreError::Io {
                    op: "remove",
                    path: entry.path(),
                    source,
                })?;
            }
        }
        Ok(())
    }
}

/// Reads an operator-supplied CA: the certificate file (the CA first, then
/// any intermediates above it), the key file, and the roots file (absent
/// when the CA is itself the root).
pub fn read_supplied(
    trust_domain: &TrustDomain,
    cert_file: &Path,
    key_file: &Path,
    bundle_file: Option<&Path>,
) -> Result<Authority, StoreError> {
    let mut certs = read_pem_file(cert_file, pem::CERTIFICATE)?;
    if certs.is_empty() {
        return Err(StoreError::Content {
            path: cert_file.to_owned(),
            what: "no CERTIFICATE block".to_owned(),
        });
    }
    let cert = certs.remove(0);
    let anchors = match bundle_file {
        Some(path) => {
            let anchors = read_pem_file(path, pem::CERTIFICATE)?;
            if anchors.is_empty() {
                return Err(StoreError::Content {
                    path: path.to_owned(),
                    what: "no CERTIFICATE block".to_owned(),
                });
            }
            anchors
        }
        None => Vec::new(),
    };
    let key = read_key_file(key_file)?;
    Authority::from_parts(trust_domain, cert, certs, anchors, key.secret_der()).map_err(|source| {
        match source {
            // Without a bundle the CA is taken to be its own root.
            AuthorityError::NotSelfSigned { subject, issuer } if bundle_file.is_none() => {
                StoreError::Content {
                    path: cert_file.to_owned(),
                    what: format!(
                        "the CA certificate (subject \"{subject}\") is issued by \"{issuer}\", \
                         not self-signed: pass the roots above it in ca_bundle_file \
                         (--bundle FILE for palisade identity ca rotate)"
                    ),
                }
            }
            source => StoreError::Authority {
                path: cert_file.to_owned(),
                source,
            },
        }
    })
}
