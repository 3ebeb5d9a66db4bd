//! Cluster-wide identity allocation and garbage collection with etcd
//! transactions (see `docs/cluster.md`, "Identities").

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use etcd_client::Client;
use palisade_identity::{Labels, NumericIdentity};
use tracing::{debug, info};

use crate::etcd::{self, StoreError};
use crate::keys::{Key, Keys};

/// How many numbers one allocation tries before giving up (each try lost a
/// race to another node or found the number taken).
const MAX_ATTEMPTS: usize = 64;

/// Why an identity could not be allocated.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// etcd failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store holds something that is not an identity number.
    #[error("etcd key {key} holds {value:?}, not an identity number")]
    Corrupt {
        /// The key.
        key: String,
        /// Its value.
        value: String,
    },
    /// Every try was taken.
    #[error("no identity for {labels} after {MAX_ATTEMPTS} attempts (identities allocated concurrently by other nodes, or the range {min}..={max} is exhausted)")]
    Exhausted {
        /// The label set.
        labels: String,
        /// First number of the range.
        min: u32,
        /// Last number of the range.
        max: u32,
    },
}

/// The canonical form of a label set, stored as the master key's value.
pub fn labels_json(labels: &Labels) -> String {
    // A map of strings always serialises.
    serde_json::to_string(labels).unwrap_or_default()
}

/// What an allocation needs to talk to etcd.
pub(crate) struct Ctx<'a> {
    pub(crate) client: &'a mut Client,
    pub(crate) keys: &'a Keys,
    pub(crate) node: &'a str,
    pub(crate) lease: i64,
    pub(crate) timeout: Duration,
}

impl Ctx<'_> {
    /// Takes this node's reference on `id` if it still stands for `labels`:
    /// the master key is rewritten in the same transaction, so that its
    /// modification revision moves and a concurrent garbage collection of
    /// the identity fails. Returns false when `id` stands for nothing or
    /// for other labels.
    pub(crate) async fn take_ref(
        &mut self,
        id: NumericIdentity,
        labels_json: &str,
    ) -> Result<bool, StoreError> {
        let master = self.keys.identity_id(id);
        let (ok, _) = etcd::txn(
            self.client,
            &format!("reference identity {id}"),
            vec![etcd::equals(&master, labels_json.as_bytes())],
            vec![
                etcd::op_put(&master, labels_json.as_bytes(), None),
                etcd::op_put(
                    &self.keys.identity_ref(id, self.node),
                    b"",
                    Some(self.lease),
                ),
            ],
            vec![],
            self.timeout,
        )
        .await?;
        Ok(ok)
    }

    /// The identity of `labels`, allocated if the cluster has none: the
    /// existing number when some node allocated it, else `preferred` (a
    /// number this node used before) or the lowest number not in `taken`
    /// (after a lost race, the next free one a node-specific stride
    /// further), claimed atomically together with the label key.
    pub(crate) async fn allocate(
        &mut self,
        labels: &Labels,
        taken: &BTreeSet<NumericIdentity>,
        preferred: Option<NumericIdentity>,
    ) -> Result<NumericIdentity, AllocError> {
        let json = labels_json(labels);
        let labels_key = self.keys.identity_labels(&json);
        let mut tried: BTreeSet<NumericIdentity> = BTreeSet::new();
        let mut preferred = preferred.filter(|p| p.is_cluster());
        let mut from = NumericIdentity::CLUSTER_MIN;
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(value) = etcd::get(self.client, &labels_key, self.timeout).await? {
                let id = parse_number(&labels_key, &value)?;
                if self.take_ref(id, &json).await? {
                    return Ok(id);
                }
                // Collected between the two requests: allocate again.
                continue;
            }
            let candidate = match preferred.take() {
                Some(p) if !taken.contains(&p) && !tried.contains(&p) => p,
                _ => free_from(taken, &tried, from).ok_or_else(|| exhausted(labels))?,
            };
            tried.insert(candidate);
            let master = self.keys.identity_id(candidate);
            let number = candidate.to_string();
            let (won, _) = etcd::txn(
                self.client,
                &format!("allocate identity {candidate}"),
                vec![etcd::absent(&labels_key), etcd::absent(&master)],
                vec![
                    etcd::op_put(&labels_key, number.as_bytes(), None),
                    etcd::op_put(&master, json.as_bytes(), None),
                    etcd::op_put(
                        &self.keys.identity_ref(candidate, self.node),
                        b"",
                        Some(self.lease),
                    ),
                ],
                vec![],
                self.timeout,
            )
            .await?;
            if won {
                info!(identity = %candidate, %labels, "identity allocated");
                return Ok(candidate);
            }
            debug!(identity = %candidate, "identity number taken, or the labels were allocated meanwhile");
            // Another node took the number: skip ahead by a stride of this
            // node's own, so that nodes allocating at the same time do not
            // keep choosing the same next number in lock step.
            from = candidate
                .get()
                .saturating_add(1 + stride(self.node, attempt))
                .min(NumericIdentity::CLUSTER_MAX);
        }
        Err(exhausted(labels))
    }

    /// One garbage-collection pass: deletes every identity that has had no
    /// reference for `grace` (by the clock `now`), as seen across passes in
    /// `unreferenced` (number -> master key revision and when it was first
    /// seen unreferenced at that revision). Returns the numbers deleted.
    pub(crate) async fn collect(
        &mut self,
        unreferenced: &mut BTreeMap<NumericIdentity, (i64, Instant)>,
        grace: Duration,
        now: Instant,
    ) -> Result<Vec<NumericIdentity>, StoreError> {
        let (kvs, _) = etcd::list(self.client, &self.keys.identities(), self.timeout).await?;
        let mut masters: BTreeMap<NumericIdentity, (Vec<u8>, i64)> = BTreeMap::new();
        let mut referenced: BTreeSet<NumericIdentity> = BTreeSet::new();
        for kv in kvs {
            match self.keys.parse(&kv.key) {
                Some(Key::IdentityId(id)) => {
                    masters.insert(id, (kv.value, kv.mod_revision));
                }
                Some(Key::IdentityRef(id, _)) => {
                    referenced.insert(id);
                }
                _ => {}
            }
        }
        unreferenced.retain(|id, (rev, _)| {
            masters.get(id).is_some_and(|(_, r)| r == rev) && !referenced.contains(id)
        });
        let mut deleted = Vec::new();
        for (id, (value, rev)) in masters {
            if referenced.contains(&id) {
                continue;
            }
            let since = unreferenced.entry(id).or_insert((rev, now)).1;
            if now.saturating_duration_since(since) < grace {
                continue;
            }
            let master = self.keys.identity_id(id);
            let labels_key = self.keys.identity_labels(&String::from_utf8_lossy(&value));
            let (ok, _) = etcd::txn(
                self.client,
                &format!("garbage-collect identity {id}"),
                vec![
                    etcd::unchanged_since(&master, rev),
                    etcd::equals(&labels_key, id.to_string().as_bytes()),
                ],
                vec![etcd::op_delete(&master), etcd::op_delete(&labels_key)],
                vec![],
                self.timeout,
            )
            .await?;
            unreferenced.remove(&id);
            if ok {
                info!(identity = %id, "unused identity garbage-collected");
                deleted.push(id);
            }
        }
        Ok(deleted)
    }
}

fn exhausted(labels: &Labels) -> AllocError {
    AllocError::Exhausted {
        labels: labels.to_string(),
        min: NumericIdentity::CLUSTER_MIN,
        max: NumericIdentity::CLUSTER_MAX,
    }
}

fn parse_number(key: &str, value: &[u8]) -> Result<NumericIdentity, AllocError> {
    let text = String::from_utf8_lossy(value);
    text.parse::<u32>()
        .ok()
        .map(NumericIdentity)
        .filter(|id| id.is_cluster())
        .ok_or_else(|| AllocError::Corrupt {
            key: key.to_owned(),
            value: text.into_owned(),
        })
}

/// The lowest cluster number at or above `from` in neither set, else the
/// lowest below it.
pub(crate) fn free_from(
    taken: &BTreeSet<NumericIdentity>,
    tried: &BTreeSet<NumericIdentity>,
    from: u32,
) -> Option<NumericIdentity> {
    let from = from.clamp(NumericIdentity::CLUSTER_MIN, NumericIdentity::CLUSTER_MAX);
    (from..=NumericIdentity::CLUSTER_MAX)
        .chain(NumericIdentity::CLUSTER_MIN..from)
        .map(NumericIdentity)
        .find(|id| !taken.contains(id) && !tried.contains(id))
}

/// A skip of 0..32 numbers after a lost race, different per node and attempt.
fn stride(node: &str, attempt: usize) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in node.bytes().chain(attempt.to_le_bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h % 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_from_skips_taken_and_tried_and_wraps() {
        let taken: BTreeSet<_> = [256, 257, 259].map(NumericIdentity).into();
        let tried: BTreeSet<_> = [258].map(NumericIdentity).into();
        let lowest = NumericIdentity::CLUSTER_MIN;
        assert_eq!(
            free_from(&taken, &tried, lowest),
            Some(NumericIdentity(260))
        );
        assert_eq!(
            free_from(&BTreeSet::new(), &BTreeSet::new(), lowest),
            Some(NumericIdentity(256))
        );
        assert_eq!(free_from(&taken, &tried, 300), Some(NumericIdentity(300)));
        let top: BTreeSet<_> = [NumericIdentity(NumericIdentity::CLUSTER_MAX)].into();
        assert_eq!(
            free_from(&top, &tried, NumericIdentity::CLUSTER_MAX),
            Some(NumericIdentity(256))
        );
    }

    #[test]
    fn nodes_skip_by_different_strides() {
        let a: Vec<u32> = (0..8).map(|i| stride("n1", i)).collect();
        let b: Vec<u32> = (0..8).map(|i| stride("n2", i)).collect();
        assert_ne!(a, b);
        assert!(a.iter().chain(&b).all(|s| *s < 32));
    }

    #[test]
    fn numbers_outside_the_cluster_range_are_corrupt() {
        assert!(parse_number("k", b"300").is_ok());
        assert!(matches!(
            parse_number("k", b"7"),
            Err(AllocError::Corrupt { .. })
        ));
        assert!(matches!(
            parse_number("k", b"x"),
            Err(AllocError::Corrupt { .. })
        ));
    }
}
