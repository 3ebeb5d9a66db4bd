//! Policy-map entries for one endpoint and direction, and the deny
//! precedence resolution that makes the datapath's two-step LPM lookup exact.
//!
//! The datapath looks up `(identity, proto, port)` in an LPM trie (longest
//! protocol/port prefix wins within that identity), then, on a miss, the same
//! with identity 0. A deny hit drops, an allow hit passes, a miss in both
//! drops when the direction is enforced. [`resolve`] turns the raw entries of
//! every matching rule into entries for which that lookup equals the policy
//! semantics: deny beats every allow, and the strictest authentication of the
//! allows that match a packet applies.

use std::collections::{BTreeMap, HashMap};

use palisade_identity::NumericIdentity;
use serde::{Deserialize, Serialize};

use crate::l4::L4Match;

/// A policy-map key, minus the endpoint and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryKey {
    /// Remote identity; 0 = any.
    pub identity: NumericIdentity,
    /// Protocol/port prefix.
    pub l4: L4Match,
}

/// A policy-map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryValue {
    /// The entry drops.
    pub deny: bool,
    /// Mutual authentication type (0 none, 1 required, 2 test-always-fail).
    pub auth_type: u8,
    /// The rule that produced the entry ([`crate::PolicyEngine::rule`]).
    pub rule_id: u32,
}

/// What the datapath decides for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Pass (after mutual authentication when `auth_type` is not 0).
    Allow {
        /// Authentication the flow needs.
        auth_type: u8,
        /// Rule that allowed it; `None` when the direction is not enforced.
        rule_id: Option<u32>,
    },
    /// Drop.
    Deny {
        /// Deny rule that matched; `None` for the default deny.
        rule_id: Option<u32>,
    },
}

impl Verdict {
    /// Whether the packet passes.
    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }
}

/// The compiled policy of one direction of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionPolicy {
    /// Whether a miss drops (the endpoint is default-deny in this direction).
    pub enforced: bool,
    /// Policy-map entries (empty when not enforced).
    pub entries: BTreeMap<EntryKey, EntryValue>,
}

impl DirectionPolicy {
    /// The datapath's lookup, modelled: longest protocol/port prefix under
    /// the exact identity, else under identity 0, else the default.
    pub fn lookup(&self, identity: NumericIdentity, proto: u8, port: u16) -> Verdict {
        let hit = self.longest(identity, proto, port).or_else(|| {
            (identity != NumericIdentity::ANY)
                .then(|| self.longest(NumericIdentity::ANY, proto, port))
                .flatten()
        });
        match hit {
            Some(v) if v.deny => Verdict::Deny {
                rule_id: Some(v.rule_id),
            },
            Some(v) => Verdict::Allow {
                auth_type: v.auth_type,
                rule_id: Some(v.rule_id),
            },
            None if self.enforced => Verdict::Deny { rule_id: None },
            None => Verdict::Allow {
                auth_type: 0,
                rule_id: None,
            },
        }
    }

    fn longest(&self, identity: NumericIdentity, proto: u8, port: u16) -> Option<&EntryValue> {
        let exact = L4Match::port(proto, port, 16);
        std::iter::once(exact)
            .chain(exact.ancestors())
            .find_map(|l4| self.entries.get(&EntryKey { identity, l4 }))
    }
}

/// The compiled policy of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPolicy {
    /// Traffic to the endpoint.
    pub ingress: DirectionPolicy,
    /// Traffic from the endpoint.
    pub egress: DirectionPolicy,
}

impl EndpointPolicy {
    /// One direction.
    pub fn direction(&self, d: crate::Direction) -> &DirectionPolicy {
        match d {
            crate::Direction::Ingress => &self.ingress,
            crate::Direction::Egress => &self.egress,
        }
    }
}

/// One entry as a rule produces it, before precedence resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEntry {
    /// Key.
    pub key: EntryKey,
    /// Value.
    pub value: EntryValue,
}

/// Merges two values for the same key: deny wins; among allows the
/// strictest authentication wins; among equals the lowest rule id is kept.
pub fn merge(a: EntryValue, b: EntryValue) -> EntryValue {
    match (a.deny, b.deny) {
        (true, false) => a,
        (false, true) => b,
        (true, true) => EntryValue {
            deny: true,
            auth_type: 0,
            rule_id: a.rule_id.min(b.rule_id),
        },
        (false, false) => match a.auth_type.cmp(&b.auth_type) {
            std::cmp::Ordering::Greater => a,
            std::cmp::Ordering::Less => b,
            std::cmp::Ordering::Equal => EntryValue {
                rule_id: a.rule_id.min(b.rule_id),
                ..a
            },
        },
    }
}

/// The entries of one identity. Keys are small and not attacker-chosen
/// beyond what policies say, and the result never depends on the iteration
/// order, so a fast (non-SipHash) hasher is fine.
type Space = HashMap<L4Match, EntryValue, foldhash::fast::RandomState>;

/// Resolves deny precedence and authentication inheritance (see the module
/// documentation) and returns the entries to install.
pub fn resolve(raw: impl IntoIterator<Item = RawEntry>) -> BTreeMap<EntryKey, EntryValue> {
    let mut raw: Vec<RawEntry> = raw.into_iter().collect();
    if raw.iter().all(|e| !e.value.deny && e.value.auth_type == 0) {
        // Only plain allows: no deny to propagate and no authentication to
        // inherit, so the result is the entries with duplicates merged.
        raw.sort_unstable_by_key(|e| e.key);
        let mut out: Vec<(EntryKey, EntryValue)> = Vec::with_capacity(raw.len());
        for e in raw {
            match out.last_mut() {
                Some((k, v)) if *k == e.key => *v = merge(*v, e.value),
                _ => out.push((e.key, e.value)),
            }
        }
        return out.into_iter().collect();
    }
    let mut spaces: BTreeMap<NumericIdentity, Space> = BTreeMap::new();
    for e in raw {
        let space = spaces.entry(e.key.identity).or_default();
        space
            .entry(e.key.l4)
            .and_modify(|v| *v = merge(*v, e.value))
            .or_insert(e.value);
    }
    let wild: Space = spaces
        .get(&NumericIdentity::ANY)
        .cloned()
        .unwrap_or_default();
    let wild_denies: Vec<(L4Match, EntryValue)> = wild
        .iter()
        .filter(|(_, v)| v.deny)
        .map(|(k, v)| (*k, *v))
        .collect();
    let wild_auth_allows: Vec<(L4Match, EntryValue)> = wild
        .iter()
        .filter(|(_, v)| !v.deny && v.auth_type > 0)
        .map(|(k, v)| (*k, *v))
        .collect();
    // Least specific first, so that the result does not depend on hash order.
    let mut wild_auth_allows = wild_auth_allows;
    wild_auth_allows.sort_by_key(|(k, _)| (k.prefix_len(), *k));

    for (id, space) in spaces.iter_mut() {
        if *id == NumericIdentity::ANY || !space.values().any(|v| !v.deny) {
            continue;
        }
        // (1) A wildcard allow with stricter authentication, narrower than an
        // allow of this identity, must be visible under this identity.
        for (w, wv) in &wild_auth_allows {
            if space.contains_key(w) {
                continue;
            }
            let shadowed = w
                .ancestors()
                .iter()
                .find_map(|a| space.get(a))
                .is_some_and(|v| !v.deny && v.auth_type < wv.auth_type);
            if shadowed {
                space.insert(*w, *wv);
            }
        }
        // (2) Wildcard denies: an allow they cover becomes deny; a deny
        // narrower than an allow is copied under this identity.
        let allows: Vec<L4Match> = space
            .iter()
            .filter(|(_, v)| !v.deny)
            .map(|(k, _)| *k)
            .collect();
        for a in allows {
            let covering = std::iter::once(a)
                .chain(a.ancestors())
                .find_map(|k| wild.get(&k).filter(|v| v.deny));
            if let Some(d) = covering {
                space.insert(a, *d);
            }
        }
        for (d, dv) in &wild_denies {
            if space.contains_key(d) {
                continue;
            }
            let under_allow = d
                .ancestors()
                .iter()
                .any(|a| space.get(a).is_some_and(|v| !v.deny));
            if under_allow {
                space.insert(*d, *dv);
            }
        }
    }

    let mut out = BTreeMap::new();
    for (id, space) in &spaces {
        for (l4, v) in space {
            let mut v = *v;
            if !v.deny {
                let ancestors = l4.ancestors();
                // (3) Covered by a deny of the same identity: deny.
                if let Some(d) = ancestors
                    .iter()
                    .find_map(|a| space.get(a).filter(|x| x.deny))
                {
                    v = *d;
                } else {
                    // (4) Strictest authentication of every covering allow.
                    let same = ancestors.iter().filter_map(|a| space.get(a));
                    let from_wild = if *id == NumericIdentity::ANY {
                        None
                    } else {
                        Some(
                            std::iter::once(l4)
                                .chain(ancestors.iter())
                                .filter_map(|a| wild.get(a)),
                        )
                    };
                    let max_auth = same
                        .chain(from_wild.into_iter().flatten())
                        .filter(|x| !x.deny)
                        .map(|x| x.auth_type)
                        .max()
                        .unwrap_or(0);
                    v.auth_type = v.auth_type.max(max_auth);
                }
            }
            out.insert(
                EntryKey {
                    identity: *id,
                    l4: *l4,
                },
                v,
            );
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::l4::{PROTO_TCP, PROTO_UDP};

    fn raw(id: u32, l4: L4Match, deny: bool, rule: u32) -> RawEntry {
        RawEntry {
            key: EntryKey {
                identity: NumericIdentity(id),
                l4,
            },
            value: EntryValue {
                deny,
                auth_type: 0,
                rule_id: rule,
            },
        }
    }

    fn dp(entries: BTreeMap<EntryKey, EntryValue>) -> DirectionPolicy {
        DirectionPolicy {
            enforced: true,
            entries,
        }
    }

    #[test]
    fn allow_covered_by_deny_becomes_deny() {
        let p = dp(resolve([
            raw(300, L4Match::port(PROTO_TCP, 80, 16), false, 1),
            raw(300, L4Match::Proto(PROTO_TCP), true, 2),
        ]));
        assert_eq!(
            p.lookup(NumericIdentity(300), PROTO_TCP, 80),
            Verdict::Deny { rule_id: Some(2) }
        );
        assert!(!p.lookup(NumericIdentity(300), PROTO_UDP, 80).is_allow());
    }

    #[test]
    fn narrower_deny_stays() {
        let p = dp(resolve([
            raw(300, L4Match::Any, false, 1),
            raw(300, L4Match::port(PROTO_TCP, 80, 16), true, 2),
        ]));
        assert!(!p.lookup(NumericIdentity(300), PROTO_TCP, 80).is_allow());
        assert!(p.lookup(NumericIdentity(300), PROTO_TCP, 81).is_allow());
    }

    #[test]
    fn wildcard_deny_is_copied() {
        // Covering wildcard deny.
        let p = dp(resolve([
            raw(300, L4Match::port(PROTO_TCP, 80, 16), false, 1),
            raw(0, L4Match::Proto(PROTO_TCP), true, 2),
        ]));
        assert!(!p.lookup(NumericIdentity(300), PROTO_TCP, 80).is_allow());
        // Covered wildcard deny.
        let p = dp(resolve([
            raw(300, L4Match::Any, false, 1),
            raw(0, L4Match::port(PROTO_TCP, 80, 16), true, 2),
        ]));
        assert!(!p.lookup(NumericIdentity(300), PROTO_TCP, 80).is_allow());
        assert!(p.lookup(NumericIdentity(300), PROTO_TCP, 81).is_allow());
        assert!(!p.lookup(NumericIdentity(301), PROTO_TCP, 81).is_allow());
    }

    #[test]
    fn auth_is_inherited() {
        let mut e = raw(0, L4Match::Any, false, 1);
        e.value.auth_type = 1;
        let p = dp(resolve([
            e,
            raw(300, L4Match::port(PROTO_TCP, 80, 16), false, 2),
        ]));
        assert_eq!(
            p.lookup(NumericIdentity(300), PROTO_TCP, 80),
            Verdict::Allow {
                auth_type: 1,
                rule_id: Some(2)
            }
        );
    }

    #[test]
    fn merge_rules() {
        let a = EntryValue {
            deny: false,
            auth_type: 1,
            rule_id: 5,
        };
        let d = EntryValue {
            deny: true,
            auth_type: 0,
            rule_id: 9,
        };
        assert_eq!(merge(a, d), d);
        assert_eq!(merge(d, a), d);
        let b = EntryValue {
            auth_type: 0,
            rule_id: 3,
            ..a
        };
        assert_eq!(merge(a, b), a);
    }
}
