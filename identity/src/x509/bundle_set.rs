//! X.509 bundles of several trust domains: the local one and the federated
//! ones, as the Workload API delivers them.

use std::collections::BTreeMap;

use super::X509Bundle;
use crate::TrustDomain;

/// One [`X509Bundle`] per trust domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct X509BundleSet {
    bundles: BTreeMap<TrustDomain, X509Bundle>,
}

impl X509BundleSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bundle`, replacing and returning the one for the same trust
    /// domain.
    pub fn insert(&mut self, bundle: X509Bundle) -> Option<X509Bundle> {
        self.bundles.insert(bundle.trust_domain().clone(), bundle)
    }

    /// The bundle for `trust_domain`.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&X509Bundle> {
        self.bundles.get(trust_domain)
    }

    /// Removes and returns the bundle for `trust_domain`.
    pub fn remove(&mut self, trust_domain: &TrustDomain) -> Option<X509Bundle> {
        self.bundles.remove(trust_domain)
    }

    /// Every bundle, ordered by trust domain.
    pub fn iter(&self) -> impl Iterator<Item = &X509Bundle> {
        self.bundles.values()
    }

    /// How many trust domains have a bundle.
    pub fn len(&self) -> usize {
        self.bundles.len()
    }

    /// Whether the set has no bundle.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }
}

impl FromIterator<X509Bundle> for X509BundleSet {
    fn from_iter<I: IntoIterator<Item = X509Bundle>>(iter: I) -> Self {
        let mut set = Self::new();
        for bundle in iter {
            set.insert(bundle);
        }
        set
    }
}
