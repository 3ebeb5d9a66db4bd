//! Which nodes the CA admits: one-time join tokens, and for every node the
//! moment it joined (a node SVID issued before that moment, from an
//! earlier install or a stolen one, is refused) or that it was revoked.
//!
//! [`NodeRegistry`] is pure and takes the time it is given; [`Registry`]
//! keeps it in a file (0600, written atomically after every change).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::ca::{self, BACKDATE};
use crate::timestamp::unix_seconds;

/// The prefix of every join token (the format's version).
pub const TOKEN_PREFIX: &str = "pjt1";
/// Bytes of secret in a token.
const SECRET_LEN: usize = 32;
/// How long used and expired tokens stay listed.
const KEEP_SPENT: Duration = Duration::from_secs(24 * 3600);

/// Why a token or a node is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Not `pjt1.<id>.<secret>`.
    #[error("the join token is malformed (expected {TOKEN_PREFIX}.<id>.<secret>)")]
    Malformed,
    /// No such token, or the secret is wrong (which one is not said).
    #[error("the join token is not known to the CA")]
    Unknown,
    /// Already redeemed.
    #[error("the join token {id} was already used (tokens are single-use; create another with `palisade identity ca token create`)")]
    Used {
        /// The token's id.
        id: String,
    },
    /// Past its expiry.
    #[error("the join token {id} expired")]
    Expired {
        /// The token's id.
        id: String,
    },
    /// The node never joined.
    #[error("node {node} has not joined this CA")]
    NotJoined {
        /// The node.
        node: String,
    },
    /// The node was revoked.
    #[error("node {node} was revoked; it can join again with a new join token")]
    Revoked {
        /// The node.
        node: String,
    },
    /// The node joined again since this SVID was issued.
    #[error("the SVID of node {node} predates its last join; only the SVID of the latest join is accepted")]
    Superseded {
        /// The node.
        node: String,
    },
    /// A name that cannot be a node's.
    #[error("{0:?} is not a valid node name (1-253 characters of [A-Za-z0-9._-])")]
    BadName(String),
    /// No randomness.
    #[error("the system random number generator failed")]
    Random,
    /// The registry file.
    #[error("node registry: {0}")]
    Store(String),
}

/// A join token as the CA keeps it: the secret only as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Public part of the token, to find it.
    pub id: String,
    /// The node the token admits.
    pub node: String,
    /// SHA-256 of the secret, hex.
    pub digest: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds.
    pub expires: u64,
    /// When it was redeemed (Unix seconds).
    #[serde(default)]
    pub used: Option<u64>,
}

/// A node the CA knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// When it last joined (Unix seconds): node SVIDs issued before are
    /// refused.
    pub joined: u64,
    /// When it was revoked (Unix seconds).
    #[serde(default)]
    pub revoked: Option<u64>,
}

/// Tokens and nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRegistry {
    /// Outstanding, used and expired tokens (the last two for a day).
    pub tokens: Vec<TokenRecord>,
    /// Nodes that joined, by name.
    pub nodes: BTreeMap<String, NodeRecord>,
}

fn hex_digest(secret: &[u8]) -> String {
    ca::hex(digest(&SHA256, secret).as_ref())
}

/// Whether `name` can be a node's name (the cluster's rule).
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

impl NodeRegistry {
    /// Creates a token admitting `node` until `now + ttl`; returns the
    /// token, which is shown once and never stored.
    pub fn create_token(
        &mut self,
        node: &str,
        ttl: Duration,
        now: SystemTime,
        rng: &dyn SecureRandom,
    ) -> Result<(String, TokenRecord), RegistryError> {
        if !valid_node_name(node) {
            return Err(RegistryError::BadName(node.to_owned()));
        }
        let mut id = [0u8; 6];
        let mut secret = zeroize::Zeroizing::new([0u8; SECRET_LEN]);
        rng.fill(&mut id).map_err(|_| RegistryError::Random)?;
        rng.fill(secret.as_mut())
            .map_err(|_| RegistryError::Random)?;
        let record = TokenRecord {
            id: ca::hex(&id),
            node: node.to_owned(),
            digest: hex_digest(secret.as_ref()),
            created: unix_seconds(now),
            expires: unix_seconds(now + ttl),
            used: None,
        };
        self.prune(now);
        self.tokens.push(record.clone());
        let token = format!(
            "{TOKEN_PREFIX}.{}.{}",
            record.id,
            URL_SAFE_NO_PAD.encode(secret.as_ref())
        );
        Ok((token, record))
    }

    /// Redeems a token: the node it names joins (again) at `now`, which
    /// supersedes its earlier SVIDs and lifts a revocation.
    pub fn redeem(&mut self, token: &str, now: SystemTime) -> Result<String, RegistryError> {
        let mut parts = token.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(RegistryError::Malformed);
        };
        let secret = zeroize::Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(secret)
                .map_err(|_| RegistryError::Malformed)?,
        );
        let digest = hex_digest(&secret);
        let record = self
            .tokens
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or(RegistryError::Unknown)?;
        // Both digests are public-length hex of SHA-256: comparing them
        // leaks nothing about the secret.
        if record.digest != digest {
            return Err(RegistryError::Unknown);
        }
        if record.used.is_some() {
            return Err(RegistryError::Used {
                id: record.id.clone(),
            });
        }
        let t = unix_seconds(now);
        if t >= record.expires {
            return Err(RegistryError::Expired {
                id: record.id.clone(),
            });
        }
        record.used = Some(t);
        let node = record.node.clone();
        self.nodes.insert(
            node.clone(),
            NodeRecord {
                joined: t,
                revoked: None,
            },
        );
        Ok(node)
    }

    /// Whether a node SVID of `node` valid from `not_before` is admitted.
    pub fn admitted(&self, node: &str, not_before: SystemTime) -> Result<(), RegistryError> {
        let record = self
            .nodes
            .get(node)
            .ok_or_else(|| RegistryError::NotJoined {
                node: node.to_owned(),
            })?;
        if record.revoked.is_some() {
            return Err(RegistryError::Revoked {
                node: node.to_owned(),
            });
        }
        // SVIDs are backdated by BACKDATE: one issued at the join starts
        // BACKDATE before it.
        if unix_seconds(not_before) + BACKDATE.as_secs() < record.joined {
            return Err(RegistryError::Superseded {
                node: node.to_owned(),
            });
        }
        Ok(())
    }

    /// Revokes a node: every RPC of its SVIDs is refused from now on, and
    /// its outstanding tokens are withdrawn.
    pub fn revoke(&mut self, node: &str, now: SystemTime) -> Result<(), RegistryError> {
        let record = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| RegistryError::NotJoined {
                node: node.to_owned(),
            })?;
        record.revoked = Some(unix_seconds(now));
        self.tokens
            .retain(|t| t.node != node || t.used.is_some() || unix_seconds(now) >= t.expires);
        Ok(())
    }

    /// Drops tokens used or expired more than a day ago.
    fn prune(&mut self, now: SystemTime) {
        let horizon = unix_seconds(now).saturating_sub(KEEP_SPENT.as_secs());
        self.tokens
            .retain(|t| t.used.map_or(t.expires, |u| u.min(t.expires)) > horizon);
    }
}

/// The registry in its file.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    inner: Mutex<NodeRegistry>,
    rng: SystemRandom,
}

impl Registry {
    /// Loads the registry from `path` (an empty one if the file does not
    /// exist yet).
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        let registry = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                RegistryError::Store(format!("{} does not parse: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NodeRegistry::default(),
            Err(e) => {
                return Err(RegistryError::Store(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        Ok(Self {
            path: path.to_owned(),
            inner: Mutex::new(registry),
            rng: SystemRandom::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, NodeRegistry> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a change and saves it; nothing changes if it cannot be
    /// saved (a token that is not on disk must not be handed out, a
    /// redemption that is not on disk could be replayed after a restart).
    fn change<T>(
        &self,
        f: impl FnOnce(&mut NodeRegistry) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut guard = self.lock();
        let mut next = guard.clone();
        let out = f(&mut next)?;
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| RegistryError::Store(format!("cannot encode: {e}")))?;
        ca::write_file(&self.path, &bytes, 0o600)
            .map_err(|e| RegistryError::Store(e.to_string()))?;
        *guard = next;
        Ok(out)
    }

    /// See [`NodeRegistry::create_token`].
    pub fn create_token(
        &self,
        node: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(String, TokenRecord), RegistryError> {
        self.change(|r| r.create_token(node, ttl, now, &self.rng))
    }

    /// See [`NodeRegistry::redeem`].
    pub fn redeem(&self, token: &str, now: SystemTime) -> Result<String, RegistryError> {
        self.change(|r| r.redeem(token, now))
    }

    /// See [`NodeRegistry::revoke`].
    pub fn revoke(&self, node: &str, now: SystemTime) -> Result<(), RegistryError> {
        self.change(|r| r.revoke(node, now))
    }

    /// See [`NodeRegistry::admitted`].
    pub fn admitted(&self, node: &str, not_before: SystemTime) -> Result<(), RegistryError> {
        self.lock().admitted(node, not_before)
    }

    /// A copy of the registry.
    pub fn snapshot(&self) -> NodeRegistry {
        self.lock().clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_token_admits_its_node_once() {
        let rng = SystemRandom::new();
        let mut r = NodeRegistry::default();
        let (token, record) = r
            .create_token("n2", Duration::from_secs(600), at(1_000), &rng)
            .unwrap();
        assert!(token.starts_with("pjt1."));
        assert!(!serde_json::to_string(&r)
            .unwrap()
            .contains(token.rsplit('.').next().unwrap()));
        assert_eq!(r.redeem(&token, at(1_100)).unwrap(), "n2");
        assert_eq!(
            r.redeem(&token, at(1_101)),
            Err(RegistryError::Used { id: record.id })
        );
        assert!(r.admitted("n2", at(1_100 - 60)).is_ok());
        assert_eq!(
            r.admitted("n2", at(1_000)),
            Err(RegistryError::Superseded { node: "n2".into() })
        );
        assert_eq!(
            r.admitted("n3", at(1_100)),
            Err(RegistryError::NotJoined { node: "n3".into() })
        );
    }

    #[test]
    fn wrong_expired_and_malformed_tokens_are_refused() {
        let rng = SystemRandom::new();
        let mut r = NodeRegistry::default();
        let (token, record) = r
            .create_token("n2", Duration::from_secs(600), at(1_000), &rng)
            .unwrap();
        let forged = format!("pjt1.{}.{}", record.id, URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert_eq!(r.redeem(&forged, at(1_001)), Err(RegistryError::Unknown));
        for bad in ["", "pjt1", "pjt1.a", "pjt2.a.b", "pjt1.a.b.c", "pjt1.a.!!"] {
            assert_eq!(
                r.redeem(bad, at(1_001)),
                Err(RegistryError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            r.redeem(&token, at(1_600)),
            Err(RegistryError::Expired { id: record.id })
        );
        assert!(r.nodes.is_empty());
        assert!(r
            .create_token("../etc", Duration::from_secs(1), at(0), &rng)
            .is_err());
    }

    #[test]
    fn revocation_holds_until_the_node_joins_again() {
        let rng = SystemRandom::new();
        let mut r = NodeRegistry::default();
        let (token, _) = r
            .create_token("n2", Duration::from_secs(600), at(1_000), &rng)
            .unwrap();
        r.redeem(&token, at(1_000)).unwrap();
        let (pending, _) = r
            .create_token("n2", Duration::from_secs(600), at(1_990), &rng)
            .unwrap();
        r.revoke("n2", at(2_000)).unwrap();
        assert_eq!(
            r.admitted("n2", at(1_990)),
            Err(RegistryError::Revoked { node: "n2".into() })
        );
        assert_eq!(
            r.redeem(&pending, at(2_001)),
            Err(RegistryError::Unknown),
            "revocation withdraws outstanding tokens"
        );
        let (again, _) = r
            .create_token("n2", Duration::from_secs(600), at(3_000), &rng)
            .unwrap();
        r.redeem(&again, at(3_000)).unwrap();
        assert!(r.admitted("n2", at(2_940)).is_ok());
        assert!(
            r.admitted("n2", at(1_990)).is_err(),
            "the old SVID stays refused"
        );
    }

    #[test]
    fn spent_tokens_are_pruned_after_a_day() {
        let rng = SystemRandom::new();
        let mut r = NodeRegistry::default();
        r.create_token("a", Duration::from_secs(60), at(1_000), &rng)
            .unwrap();
        r.create_token("b", Duration::from_secs(60), at(1_000 + 86_400 + 61), &rng)
            .unwrap();
        assert_eq!(r.tokens.len(), 1);
        assert_eq!(r.tokens[0].node, "b");
    }

    #[test]
    fn the_file_keeps_redemptions() {
        let dir = std::env::temp_dir().join(format!("palisade-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nodes.json");
        let reg = Registry::open(&path).unwrap();
        let (token, _) = reg
            .create_token("n2", Duration::from_secs(600), SystemTime::now())
            .unwrap();
        reg.redeem(&token, SystemTime::now()).unwrap();
        let again = Registry::open(&path).unwrap();
        assert!(matches!(
            again.redeem(&token, SystemTime::now()),
            Err(RegistryError::Used { .. })
        ));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
