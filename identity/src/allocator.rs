//! Allocation of numeric identities to label sets, on one node.
//!
//! Pure state: the caller persists it (it serialises) and restores it on
//! start, so that identities survive an agent restart and the pinned maps
//! stay valid. The cluster-wide allocator over etcd comes with multi-node
//! support and keeps this interface.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Labels, NumericIdentity};

/// Why an identity could not be allocated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocatorError {
    /// Every number of the cluster range is in use.
    #[error("the identity range {min}..={max} is exhausted")]
    Exhausted {
        /// First number of the range.
        min: u32,
        /// Last number of the range.
        max: u32,
    },
}

/// Label set -> identity, with a reference count per identity so that an
/// identity is released when its last endpoint goes.
#[derive(Debug, Clone, Default)]
pub struct IdentityAllocator {
    by_labels: BTreeMap<Labels, Entry>,
    by_id: BTreeMap<NumericIdentity, Labels>,
    next: u32,
}

#[derive(Debug, Clone)]
struct Entry {
    id: NumericIdentity,
    refs: u32,
}

/// The persisted form of an [`IdentityAllocator`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AllocatorSnapshot {
    /// Every allocated identity.
    pub identities: Vec<AllocatedIdentity>,
    /// The next number to try.
    pub next: u32,
}

/// One allocated identity in an [`AllocatorSnapshot`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AllocatedIdentity {
    /// The number.
    pub id: NumericIdentity,
    /// The labels it stands for.
    pub labels: Labels,
    /// How many endpoints hold it.
    pub refs: u32,
}

impl IdentityAllocator {
    /// An empty allocator.
    pub fn new() -> Self {
        Self {
            next: NumericIdentity::CLUSTER_MIN,
            ..Self::default()
        }
    }

    /// Restores an allocator from its snapshot.
    pub fn from_snapshot(snapshot: AllocatorSnapshot) -> Self {
        let mut a = Self::new();
        for e in snapshot.identities {
            a.by_id.insert(e.id, e.labels.clone());
            a.by_labels.insert(
                e.labels,
                Entry {
                    id: e.id,
                    refs: e.refs,
                },
            );
        }
        a.next = snapshot.next.max(NumericIdentity::CLUSTER_MIN);
        a
    }

    /// Sets every reference count from the label sets of the identities'
    /// holders (the endpoints): identities nobody holds are released, and a
    /// holder whose labels have no identity gets one. This makes a restored
    /// allocator agree with the endpoints whatever the persisted counts say.
    pub fn recount<'a>(
        &mut self,
        holders: impl IntoIterator<Item = &'a Labels>,
    ) -> Result<(), AllocatorError> {
        for e in self.by_labels.values_mut() {
            e.refs = 0;
        }
        for labels in holders {
            self.acquire(labels)?;
        }
        let unused: Vec<Labels> = self
            .by_labels
            .iter()
            .filter(|(_, e)| e.refs == 0)
            .map(|(l, _)| l.clone())
            .collect();
        for labels in unused {
            if let Some(e) = self.by_labels.remove(&labels) {
                self.by_id.remove(&e.id);
            }
        }
        Ok(())
    }

    /// The persisted form.
    pub fn snapshot(&self) -> AllocatorSnapshot {
        AllocatorSnapshot {
            identities: self
                .by_labels
                .iter()
                .map(|(l, e)| AllocatedIdentity {
                    id: e.id,
                    labels: l.clone(),
                    refs: e.refs,
                })
                .collect(),
            next: self.next,
        }
    }

    /// Takes a reference on the identity of `labels`, allocating it if new.
    /// Returns the identity and whether it was newly allocated.
    pub fn acquire(&mut self, labels: &Labels) -> Result<(NumericIdentity, bool), AllocatorError> {
        if let Some(e) = self.by_labels.get_mut(labels) {
            e.refs += 1;
            return Ok((e.id, false));
        }
        let id = self.free_number()?;
        self.by_labels.insert(labels.clone(), Entry { id, refs: 1 });
        self.by_id.insert(id, labels.clone());
        Ok((id, true))
    }

    /// Drops a reference; returns the identity if this released it.
    pub fn release(&mut self, labels: &Labels) -> Option<NumericIdentity> {
        let e = self.by_labels.get_mut(labels)?;
        e.refs = e.refs.saturating_sub(1);
        if e.refs > 0 {
            return None;
        }
        let id = e.id;
        self.by_labels.remove(labels);
        self.by_id.remove(&id);
        Some(id)
    }

    /// The labels of an identity.
    pub fn labels(&self, id: NumericIdentity) -> Option<&Labels> {
        self.by_id.get(&id)
    }

    /// The identity of a label set, if allocated.
    pub fn lookup(&self, labels: &Labels) -> Option<NumericIdentity> {
        self.by_labels.get(labels).map(|e| e.id)
    }

    /// Every allocated identity with its labels and reference count.
    pub fn iter(&self) -> impl Iterator<Item = (NumericIdentity, &Labels, u32)> {
        self.by_labels.iter().map(|(l, e)| (e.id, l, e.refs))
    }

    fn free_number(&mut self) -> Result<NumericIdentity, AllocatorError> {
        let (min, max) = (NumericIdentity::CLUSTER_MIN, NumericIdentity::CLUSTER_MAX);
        let span = max - min + 1;
        let start = self.next.clamp(min, max);
        for i in 0..span {
            let candidate = min + (start - min + i) % span;
            if !self.by_id.contains_key(&NumericIdentity(candidate)) {
                self.next = if candidate == max { min } else { candidate + 1 };
                return Ok(NumericIdentity(candidate));
            }
        }
        Err(AllocatorError::Exhausted { min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &str) -> Labels {
        Labels::try_from_pairs([("app", v)]).unwrap()
    }

    #[test]
    fn same_labels_same_identity_and_refcounted() {
        let mut a = IdentityAllocator::new();
        let (x, new) = a.acquire(&labels("x")).unwrap();
        assert!(new);
        assert_eq!(x, NumericIdentity(256));
        let (x2, new2) = a.acquire(&labels("x")).unwrap();
        assert_eq!((x2, new2), (x, false));
        let (y, _) = a.acquire(&labels("y")).unwrap();
        assert_ne!(x, y);
        assert_eq!(a.release(&labels("x")), None);
        assert_eq!(a.release(&labels("x")), Some(x));
        assert_eq!(a.labels(x), None);
        assert_eq!(a.labels(y), Some(&labels("y")));
    }

    #[test]
    fn released_numbers_are_not_reused_at_once() {
        let mut a = IdentityAllocator::new();
        let (x, _) = a.acquire(&labels("x")).unwrap();
        a.release(&labels("x"));
        let (y, _) = a.acquire(&labels("y")).unwrap();
        assert_ne!(x, y, "a fresh number avoids confusing stale datapath state");
    }

    #[test]
    fn recount_follows_the_holders() {
        let mut a = IdentityAllocator::new();
        let (x, _) = a.acquire(&labels("x")).unwrap();
        a.acquire(&labels("x")).unwrap();
        let (gone, _) = a.acquire(&labels("gone")).unwrap();
        let holders = [labels("x"), labels("new")];
        a.recount(holders.iter()).unwrap();
        assert_eq!(a.lookup(&labels("x")), Some(x), "kept its number");
        assert_eq!(a.release(&labels("x")), Some(x), "one holder left");
        assert_eq!(a.labels(gone), None, "nobody holds it");
        assert!(
            a.lookup(&labels("new")).is_some(),
            "allocated for its holder"
        );
    }

    #[test]
    fn survives_serialisation() {
        let mut a = IdentityAllocator::new();
        let (x, _) = a.acquire(&labels("x")).unwrap();
        let json = serde_json::to_string(&a.snapshot()).unwrap();
        let b = IdentityAllocator::from_snapshot(serde_json::from_str(&json).unwrap());
        assert_eq!(b.lookup(&labels("x")), Some(x));
        assert_eq!(b.labels(x), Some(&labels("x")));
    }
}
