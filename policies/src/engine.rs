//! The stateful, incremental policy engine: policies, identities and local
//! endpoints in; per-endpoint policy-map entries and ipcache changes out.
//!
//! Label selectors are interned in a cache that holds the set of identities
//! each one matches, maintained incrementally through an inverted label
//! index. Every change marks the endpoints whose policy may change; only
//! those are recompiled by [`PolicyEngine::compute`], and diffed against
//! their previous state.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use palisade_identity::{Labels, NumericIdentity, ReservedIdentity};
use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::compile::{resolve, EndpointPolicy, EntryKey, EntryValue, RawEntry};
use crate::l4::L4Match;
use crate::policy::{Direction, Entity, Peer, Policy, PolicyRef};
use crate::selector::{Requirement, Selector};

/// Rule id of the allow-all entry added to a direction that has deny rules
/// but whose selecting policies all disabled default deny
/// (`enableDefaultDeny: false`): everything not denied passes.
pub const IMPLICIT_ALLOW_RULE_ID: u32 = u32::MAX;

/// Where a rule id comes from, for flow attribution.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleRef {
    /// The policy.
    pub policy: PolicyRef,
    /// Its direction.
    pub direction: Direction,
    /// From `ingressDeny`/`egressDeny`.
    pub deny: bool,
    /// Index in its list (across `specs` in order).
    pub index: usize,
}

/// A local endpoint as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    /// Endpoint id (the policy-map key's `ep_id`).
    pub ep_id: u16,
    /// Its security identity.
    pub identity: NumericIdentity,
    /// Its labels (those of its identity).
    pub labels: Labels,
}

/// Everything that changed since the previous [`PolicyEngine::compute`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapDiff {
    /// Policy-map entries to write.
    pub upserts: Vec<(u16, Direction, EntryKey, EntryValue)>,
    /// Policy-map entries to delete.
    pub deletes: Vec<(u16, Direction, EntryKey)>,
    /// `(ep_id, ingress enforced, egress enforced)` of new endpoints and of
    /// endpoints whose enforcement changed.
    pub enforcement: Vec<(u16, bool, bool)>,
    /// ipcache entries (CIDR -> identity) to write.
    pub ipcache_upserts: Vec<(Cidr, NumericIdentity)>,
    /// ipcache entries to delete.
    pub ipcache_deletes: Vec<Cidr>,
    /// Things the datapath cannot do as written (IPv6 prefixes, ...).
    pub warnings: Vec<String>,
}

impl MapDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.deletes.is_empty()
            && self.enforcement.is_empty()
            && self.ipcache_upserts.is_empty()
            && self.ipcache_deletes.is_empty()
            && self.warnings.is_empty()
    }
}

/// A rule ready for compilation.
#[derive(Debug, Clone)]
struct CompiledRule {
    direction: Direction,
    deny: bool,
    rule_id: u32,
    auth_type: u8,
    peers: Vec<Peer>,
    l4: Vec<L4Match>,
}

#[derive(Debug, Clone)]
struct CompiledPart {
    subject: Selector,
    default_deny: [bool; 2],
    has_rules: [bool; 2],
    rules: Vec<CompiledRule>,
}

/// The raw entries of one part's rules, which do not depend on the
/// endpoint: an endpoint's compile merges those of the parts that select it.
#[derive(Debug, Clone, Default)]
struct PartEntries {
    raw: [Vec<RawEntry>; 2],
    has_deny: [bool; 2],
}

#[derive(Debug, Clone)]
struct PolicyState {
    policy: Policy,
    parts: Vec<CompiledPart>,
    /// The parts' raw entries as of the current selections and CIDR and
    /// cluster identities; `None` when they must be recomputed. Every
    /// change of those marks the policy's users ([`PolicyEngine::mark_users`]),
    /// which drops this.
    entries: Option<Arc<Vec<PartEntries>>>,
    selectors: Vec<Selector>,
    prefixes: Vec<Cidr>,
    uses_cidrs: bool,
    uses_cluster: bool,
}

#[derive(Debug, Clone)]
struct SelEntry {
    matches: BTreeSet<NumericIdentity>,
    users: BTreeMap<PolicyRef, usize>,
}

/// How a selector is found from a label: by one `key=value`, by a key, or
/// only by scanning (selectors with no positive requirement).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Anchor {
    Values(String, Vec<String>),
    Key(String),
    Scan,
}

fn anchor(sel: &Selector) -> Anchor {
    let mut key_anchor = None;
    for r in sel.requirements() {
        match r {
            Requirement::In(k, vs) => {
                return Anchor::Values(k.clone(), vs.iter().cloned().collect())
            }
            Requirement::Exists(k) if key_anchor.is_none() => key_anchor = Some(k.clone()),
            _ => {}
        }
    }
    key_anchor.map_or(Anchor::Scan, Anchor::Key)
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// The policy engine. Pure: no I/O; feed it changes, call
/// [`compute`](Self::compute), apply the returned [`MapDiff`].
#[derive(Debug, Default)]
pub struct PolicyEngine {
    policies: BTreeMap<PolicyRef, PolicyState>,
    // Identities and their inverted index: key -> value -> identities.
    identities: HashMap<NumericIdentity, Labels>,
    index: HashMap<String, HashMap<String, BTreeSet<NumericIdentity>>>,
    // Selector cache and its anchor index.
    selectors: HashMap<Selector, SelEntry>,
    sel_by_value: HashMap<(String, String), HashSet<Selector>>,
    sel_by_key: HashMap<String, HashSet<Selector>>,
    sel_scan: HashSet<Selector>,
    // Endpoints and which policies select them.
    endpoints: BTreeMap<u16, EndpointView>,
    ep_policies: BTreeMap<u16, BTreeSet<PolicyRef>>,
    policy_eps: HashMap<PolicyRef, BTreeSet<u16>>,
    state: BTreeMap<u16, Arc<EndpointPolicy>>,
    dirty: BTreeSet<u16>,
    removed: BTreeSet<u16>,
    // Rule ids.
    rule_ids: HashMap<RuleRef, u32>,
    rules_by_id: HashMap<u32, RuleRef>,
    next_rule_id: u32,
    // CIDR identities.
    prefix_refs: BTreeMap<Cidr, usize>,
    cidr_ids: BTreeMap<Cidr, NumericIdentity>,
    next_local: u32,
    installed_ipcache: BTreeMap<Cidr, NumericIdentity>,
    cidr_users: BTreeSet<PolicyRef>,
    cluster_users: BTreeSet<PolicyRef>,
    warnings: Vec<String>,
}

impl PolicyEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self {
            next_rule_id: 1,
            next_local: NumericIdentity::LOCAL_MIN,
            ..Self::default()
        }
    }

    // ------------------------------------------------------------ policies

    /// Adds or replaces a policy (keyed by `p.key`).
    pub fn upsert_policy(&mut self, p: Policy) {
        let key = p.key.clone();
        let old_rule_refs: Vec<RuleRef> = match self.policies.get(&key) {
            Some(old) if old.policy == p => return,
            Some(old) => rule_refs(&old.policy),
            None => Vec::new(),
        };
        let before: Option<BTreeSet<Cidr>> = self
            .policies
            .get(&key)
            .map(|_| self.prefix_refs.keys().copied().collect());
        let removed = self.detach_policy(&key);
        let new_refs = rule_refs(&p);
        let state = self.compile_policy(p);
        for r in old_rule_refs {
            if !new_refs.contains(&r) {
                if let Some(id) = self.rule_ids.remove(&r) {
                    self.rules_by_id.remove(&id);
                }
            }
        }
        let added = self.attach_policy(key, state);
        // Only a net change of the prefixes in use changes CIDR selections.
        let changed = match before {
            Some(before) if removed || added => before.iter().ne(self.prefix_refs.keys()),
            _ => removed || added,
        };
        if changed {
            self.mark_users(&self.cidr_users.clone());
        }
    }

    /// Removes a policy; `false` if it was not there.
    pub fn remove_policy(&mut self, r: &PolicyRef) -> bool {
        let Some(old) = self.policies.get(r) else {
            return false;
        };
        let refs = rule_refs(&old.policy);
        if self.detach_policy(r) {
            self.mark_users(&self.cidr_users.clone());
        }
        for rr in refs {
            if let Some(id) = self.rule_ids.remove(&rr) {
                self.rules_by_id.remove(&id);
            }
        }
        true
    }

    /// The policies in force.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values().map(|s| &s.policy)
    }

    /// Where a rule id comes from.
    pub fn rule(&self, rule_id: u32) -> Option<&RuleRef> {
        self.rules_by_id.get(&rule_id)
    }

    fn rule_id(&mut self, r: RuleRef) -> u32 {
        if let Some(id) = self.rule_ids.get(&r) {
            return *id;
        }
        let mut id = self.next_rule_id;
        while id == 0 || id == IMPLICIT_ALLOW_RULE_ID || self.rules_by_id.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_rule_id = id.wrapping_add(1);
        self.rule_ids.insert(r.clone(), id);
        self.rules_by_id.insert(id, r);
        id
    }

    fn compile_policy(&mut self, p: Policy) -> PolicyState {
        let mut parts = Vec::new();
        let mut selectors = Vec::new();
        let mut prefixes = Vec::new();
        let (mut uses_cidrs, mut uses_cluster) = (false, false);
        for part in &p.parts {
            let mut rules = Vec::new();
            for d in Direction::BOTH {
                for r in &part.direction(d).rules {
                    let rule_id = self.rule_id(RuleRef {
                        policy: p.key.clone(),
                        direction: d,
                        deny: r.deny,
                        index: r.index,
                    });
                    for peer in &r.peers {
                        match peer {
                            Peer::Endpoints(s) => selectors.push(s.clone()),
                            Peer::Cidr(c) => {
                                uses_cidrs = true;
                                prefixes.extend(c.prefixes().copied());
                            }
                            Peer::Entity(Entity::World) => uses_cidrs = true,
                            Peer::Entity(Entity::Cluster) => uses_cluster = true,
                            _ => {}
                        }
                    }
                    rules.push(CompiledRule {
                        direction: d,
                        deny: r.deny,
                        rule_id,
                        auth_type: r.auth.auth_type(),
                        peers: r.peers.clone(),
                        l4: r.l4_matches(),
                    });
                }
            }
            parts.push(CompiledPart {
                subject: part.subject.clone(),
                default_deny: [part.ingress.default_deny, part.egress.default_deny],
                has_rules: [
                    !part.ingress.rules.is_empty(),
                    !part.egress.rules.is_empty(),
                ],
                rules,
            });
        }
        selectors.sort();
        selectors.dedup();
        prefixes.sort();
        prefixes.dedup();
        PolicyState {
            policy: p,
            parts,
            entries: None,
            selectors,
            prefixes,
            uses_cidrs,
            uses_cluster,
        }
    }

    /// Returns whether a prefix came into use.
    fn attach_policy(&mut self, key: PolicyRef, state: PolicyState) -> bool {
        for s in &state.selectors {
            self.acquire_selector(s, &key);
        }
        let mut prefixes_changed = false;
        for c in &state.prefixes {
            let n = self.prefix_refs.entry(*c).or_insert(0);
            *n += 1;
            if *n == 1 {
                prefixes_changed = true;
                if c.is_ipv4() {
                    if c.prefix_len() > 0 {
                        self.allocate_cidr(*c);
                    }
                } else {
                    self.warnings.push(format!(
                        "{key}: IPv6 prefix {c} is not enforced: the datapath is IPv4-only, so the rule never matches IPv6 traffic"
                    ));
                }
            }
        }
        if state.uses_cidrs {
            self.cidr_users.insert(key.clone());
        }
        if state.uses_cluster {
            self.cluster_users.insert(key.clone());
        }
        let mut selected = BTreeSet::new();
        for ep in self.endpoints.values() {
            if state.parts.iter().any(|p| p.subject.matches(&ep.labels)) {
                selected.insert(ep.ep_id);
            }
        }
        for ep in &selected {
            self.ep_policies.entry(*ep).or_default().insert(key.clone());
            self.dirty.insert(*ep);
        }
        self.policy_eps.insert(key.clone(), selected);
        self.policies.insert(key, state);
        prefixes_changed
    }

    /// Returns whether a prefix went out of use.
    fn detach_policy(&mut self, key: &PolicyRef) -> bool {
        let Some(state) = self.policies.remove(key) else {
            return false;
        };
        for s in &state.selectors {
            self.release_selector(s, key);
        }
        let mut prefixes_changed = false;
        for c in &state.prefixes {
            if let Some(n) = self.prefix_refs.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    self.prefix_refs.remove(c);
                    prefixes_changed = true;
                }
            }
        }
        if let Some(eps) = self.policy_eps.remove(key) {
            for ep in eps {
                if let Some(set) = self.ep_policies.get_mut(&ep) {
                    set.remove(key);
                }
                self.dirty.insert(ep);
            }
        }
        self.cidr_users.remove(key);
        self.cluster_users.remove(key);
        prefixes_changed
    }

    /// Marks the endpoints selected by `users` for recompilation, and drops
    /// the cached entries of those policies: every change of what a
    /// policy's rules resolve to (selections, CIDR or cluster identities)
    /// goes through here.
    fn mark_users(&mut self, users: &BTreeSet<PolicyRef>) {
        for u in users {
            if let Some(st) = self.policies.get_mut(u) {
                st.entries = None;
            }
            if let Some(eps) = self.policy_eps.get(u) {
                self.dirty.extend(eps.iter().copied());
            }
        }
    }

    // ------------------------------------------------------------ CIDRs

    /// Allocates (or keeps) the node-local identity of an IPv4 prefix. A
    /// prefix keeps its number for the engine's lifetime, so numbers are
    /// stable across recompiles and a prefix that comes back gets its old
    /// number; when the local range is exhausted, numbers of prefixes no
    /// longer in use are reclaimed.
    fn allocate_cidr(&mut self, c: Cidr) {
        if self.cidr_ids.contains_key(&c) {
            return;
        }
        if self.next_local > NumericIdentity::LOCAL_MAX {
            let unused: Vec<Cidr> = self
                .cidr_ids
                .keys()
                .filter(|p| !self.prefix_refs.contains_key(p))
                .copied()
                .collect();
            let mut freed: Vec<NumericIdentity> = unused
                .iter()
                .filter_map(|p| self.cidr_ids.remove(p))
                .collect();
            freed.sort();
            match freed.first() {
                Some(id) => {
                    self.cidr_ids.insert(c, *id);
                }
                None => self.warnings.push(format!(
                    "no node-local identity left for {c}: the rule does not match it"
                )),
            }
            return;
        }
        self.cidr_ids.insert(c, NumericIdentity(self.next_local));
        self.next_local += 1;
    }

    /// CIDR identities in use (IPv4 prefixes of current policies; `/0` is
    /// the world identity and has no entry).
    pub fn cidr_identities(&self) -> impl Iterator<Item = (&Cidr, NumericIdentity)> {
        self.prefix_refs
            .keys()
            .filter_map(|c| self.cidr_ids.get_key_value(c))
            .map(|(c, id)| (c, *id))
    }

    // ------------------------------------------------------------ selectors

    fn acquire_selector(&mut self, s: &Selector, user: &PolicyRef) {
        if let Some(e) = self.selectors.get_mut(s) {
            *e.users.entry(user.clone()).or_insert(0) += 1;
            return;
        }
        let matches = self.evaluate(s);
        match anchor(s) {
            Anchor::Values(k, vs) => {
                for v in vs {
                    self.sel_by_value
                        .entry((k.clone(), v))
                        .or_default()
                        .insert(s.clone());
                }
            }
            Anchor::Key(k) => {
                self.sel_by_key.entry(k).or_default().insert(s.clone());
            }
            Anchor::Scan => {
                self.sel_scan.insert(s.clone());
            }
        }
        self.selectors.insert(
            s.clone(),
            SelEntry {
                matches,
                users: BTreeMap::from([(user.clone(), 1)]),
            },
        );
    }

    fn release_selector(&mut self, s: &Selector, user: &PolicyRef) {
        let Some(e) = self.selectors.get_mut(s) else {
            return;
        };
        if let Some(n) = e.users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                e.users.remove(user);
            }
        }
        if !e.users.is_empty() {
            return;
        }
        self.selectors.remove(s);
        match anchor(s) {
            Anchor::Values(k, vs) => {
                for v in vs {
                    let kv = (k.clone(), v);
                    if let Some(set) = self.sel_by_value.get_mut(&kv) {
                        set.remove(s);
                        if set.is_empty() {
                            self.sel_by_value.remove(&kv);
                        }
                    }
                }
            }
            Anchor::Key(k) => {
                if let Some(set) = self.sel_by_key.get_mut(&k) {
                    set.remove(s);
                    if set.is_empty() {
                        self.sel_by_key.remove(&k);
                    }
                }
            }
            Anchor::Scan => {
                self.sel_scan.remove(s);
            }
        }
    }

    /// Identities a selector matches, using the inverted index.
    fn evaluate(&self, s: &Selector) -> BTreeSet<NumericIdentity> {
        let check = |id: &NumericIdentity| self.identities.get(id).is_some_and(|l| s.matches(l));
        match anchor(s) {
            Anchor::Values(k, vs) => {
                let Some(by_value) = self.index.get(&k) else {
                    return BTreeSet::new();
                };
                vs.iter()
                    .filter_map(|v| by_value.get(v))
                    .flatten()
                    .filter(|id| check(id))
                    .copied()
                    .collect()
            }
            Anchor::Key(k) => self
                .index
                .get(&k)
                .into_iter()
                .flat_map(|m| m.values().flatten())
                .filter(|id| check(id))
                .copied()
                .collect(),
            Anchor::Scan => self
                .identities
                .iter()
                .filter(|(_, l)| s.matches(l))
                .map(|(id, _)| *id)
                .collect(),
        }
    }

    // ------------------------------------------------------------ identities

    /// Adds or relabels a cluster (label-derived) identity. Reserved
    /// identities are implicit; the wildcard 0 is ignored.
    pub fn upsert_identity(&mut self, id: NumericIdentity, labels: Labels) {
        if id == NumericIdentity::ANY {
            return;
        }
        let old = self.identities.get(&id).cloned();
        if old.as_ref() == Some(&labels) {
            return;
        }
        if let Some(old) = &old {
            self.unindex(id, old);
        }
        for (k, v) in labels.iter() {
            self.index
                .entry(k.to_owned())
                .or_default()
                .entry(v.to_owned())
                .or_default()
                .insert(id);
        }
        self.identities.insert(id, labels.clone());
        self.reselect(id, old.as_ref(), Some(&labels));
        if old.is_none() {
            self.mark_users(&self.cluster_users.clone());
        }
    }

    /// Removes a cluster identity.
    pub fn remove_identity(&mut self, id: NumericIdentity) {
        let Some(old) = self.identities.remove(&id) else {
            return;
        };
        self.unindex(id, &old);
        self.reselect(id, Some(&old), None);
        self.mark_users(&self.cluster_users.clone());
    }

    fn unindex(&mut self, id: NumericIdentity, labels: &Labels) {
        for (k, v) in labels.iter() {
            if let Some(by_value) = self.index.get_mut(k) {
                if let Some(set) = by_value.get_mut(v) {
                    set.remove(&id);
                    if set.is_empty() {
                        by_value.remove(v);
                    }
                }
                if by_value.is_empty() {
                    self.index.remove(k);
                }
            }
        }
    }

    /// Re-evaluates the selectors an identity change can affect.
    fn reselect(&mut self, id: NumericIdentity, old: Option<&Labels>, new: Option<&Labels>) {
        let mut candidates: HashSet<Selector> = self.sel_scan.clone();
        for labels in [old, new].into_iter().flatten() {
            for (k, v) in labels.iter() {
                if let Some(s) = self.sel_by_value.get(&(k.to_owned(), v.to_owned())) {
                    candidates.extend(s.iter().cloned());
                }
                if let Some(s) = self.sel_by_key.get(k) {
                    candidates.extend(s.iter().cloned());
                }
            }
        }
        let mut touched: BTreeSet<PolicyRef> = BTreeSet::new();
        for s in candidates {
            let now = new.is_some_and(|l| s.matches(l));
            if let Some(e) = self.selectors.get_mut(&s) {
                let changed = if now {
                    e.matches.insert(id)
                } else {
                    e.matches.remove(&id)
                };
                if changed {
                    touched.extend(e.users.keys().cloned());
                }
            }
        }
        self.mark_users(&touched);
    }

    // ------------------------------------------------------------ endpoints

    /// Adds or updates a local endpoint.
    pub fn upsert_endpoint(&mut self, ep: EndpointView) {
        if self.endpoints.get(&ep.ep_id) == Some(&ep) {
            return;
        }
        let id = ep.ep_id;
        self.removed.remove(&id);
        if let Some(old) = self.ep_policies.remove(&id) {
            for p in old {
                if let Some(set) = self.policy_eps.get_mut(&p) {
                    set.remove(&id);
                }
            }
        }
        let mut selecting = BTreeSet::new();
        for (key, st) in &self.policies {
            if st.parts.iter().any(|p| p.subject.matches(&ep.labels)) {
                selecting.insert(key.clone());
            }
        }
        for p in &selecting {
            self.policy_eps.entry(p.clone()).or_default().insert(id);
        }
        self.ep_policies.insert(id, selecting);
        self.endpoints.insert(id, ep);
        self.dirty.insert(id);
    }

    /// Removes a local endpoint; the next diff deletes its entries.
    pub fn remove_endpoint(&mut self, ep_id: u16) {
        if self.endpoints.remove(&ep_id).is_none() {
            return;
        }
        if let Some(old) = self.ep_policies.remove(&ep_id) {
            for p in old {
                if let Some(set) = self.policy_eps.get_mut(&p) {
                    set.remove(&ep_id);
                }
            }
        }
        self.dirty.remove(&ep_id);
        self.removed.insert(ep_id);
    }

    /// The policies selecting an endpoint.
    pub fn selecting_policies(&self, ep_id: u16) -> Vec<PolicyRef> {
        self.ep_policies
            .get(&ep_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The current compiled state of an endpoint (as of the last compute).
    pub fn endpoint_state(&self, ep_id: u16) -> Option<&EndpointPolicy> {
        self.state.get(&ep_id).map(|s| &**s)
    }

    // ------------------------------------------------------------ compute

    /// Compiles what changed and returns the map operations that bring the
    /// datapath from the previous result to the current one.
    pub fn compute(&mut self) -> MapDiff {
        let mut diff = MapDiff {
            warnings: std::mem::take(&mut self.warnings),
            ..MapDiff::default()
        };
        // ipcache
        let desired: BTreeMap<Cidr, NumericIdentity> =
            self.cidr_identities().map(|(c, id)| (*c, id)).collect();
        for (c, id) in &desired {
            if self.installed_ipcache.get(c) != Some(id) {
                diff.ipcache_upserts.push((*c, *id));
            }
        }
        for c in self.installed_ipcache.keys() {
            if !desired.contains_key(c) {
                diff.ipcache_deletes.push(*c);
            }
        }
        self.installed_ipcache = desired;

        for ep in std::mem::take(&mut self.removed) {
            if let Some(old) = self.state.remove(&ep) {
                for d in Direction::BOTH {
                    for k in old.direction(d).entries.keys() {
                        diff.deletes.push((ep, d, *k));
                    }
                }
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        self.refresh_entries(&dirty);
        // Endpoints selected by the same parts get the same policy: compile
        // it once per set of parts.
        let mut compiled: HashMap<Vec<(&PolicyRef, usize)>, Arc<EndpointPolicy>> = HashMap::new();
        let mut results = Vec::with_capacity(dirty.len());
        for ep in dirty {
            let Some(view) = self.endpoints.get(&ep) else {
                continue;
            };
            let parts = self.selecting_parts(view);
            let new = match compiled.get(&parts) {
                Some(p) => Arc::clone(p),
                None => {
                    let p = Arc::new(self.compile_parts(&parts));
                    compiled.insert(parts, Arc::clone(&p));
                    p
                }
            };
            results.push((ep, new));
        }
        drop(compiled);
        for (ep, new) in results {
            let old = self.state.get(&ep);
            for d in Direction::BOTH {
                let empty = Default::default();
                let o = old.map_or(&empty, |o| o.direction(d));
                diff_entries(ep, d, &o.entries, &new.direction(d).entries, &mut diff);
            }
            let changed = old.is_none_or(|o| {
                o.ingress.enforced != new.ingress.enforced
                    || o.egress.enforced != new.egress.enforced
            });
            if changed {
                diff.enforcement
                    .push((ep, new.ingress.enforced, new.egress.enforced));
            }
            self.state.insert(ep, new);
        }
        diff
    }

    /// Recomputes the dropped entry caches of the policies selecting the
    /// endpoints in `dirty`.
    fn refresh_entries(&mut self, dirty: &BTreeSet<u16>) {
        let stale: BTreeSet<&PolicyRef> = dirty
            .iter()
            .filter_map(|ep| self.ep_policies.get(ep))
            .flatten()
            .filter(|r| self.policies.get(*r).is_some_and(|st| st.entries.is_none()))
            .collect();
        if stale.is_empty() {
            return;
        }
        let world = self.world_identities();
        let cluster = self.cluster_identities();
        let ctx = Ctx {
            world: &world,
            cluster: &cluster,
        };
        let fresh: Vec<(PolicyRef, Vec<PartEntries>)> = stale
            .into_iter()
            .filter_map(|r| {
                let st = self.policies.get(r)?;
                Some((r.clone(), self.part_entries(st, &ctx)))
            })
            .collect();
        for (r, entries) in fresh {
            if let Some(st) = self.policies.get_mut(&r) {
                st.entries = Some(Arc::new(entries));
            }
        }
    }

    /// The raw entries of every part of a policy.
    fn part_entries(&self, st: &PolicyState, ctx: &Ctx<'_>) -> Vec<PartEntries> {
        let mut ids = Vec::new();
        st.parts
            .iter()
            .map(|part| {
                let mut out = PartEntries::default();
                for r in &part.rules {
                    let d = dir_index(r.direction);
                    ids.clear();
                    for peer in &r.peers {
                        self.peer_identities(peer, ctx, &mut ids);
                    }
                    if ids.is_empty() {
                        continue;
                    }
                    ids.sort_unstable();
                    ids.dedup();
                    if ids[0] == NumericIdentity::ANY {
                        ids.truncate(1);
                    }
                    out.has_deny[d] |= r.deny;
                    let value = EntryValue {
                        deny: r.deny,
                        auth_type: if r.deny { 0 } else { r.auth_type },
                        rule_id: r.rule_id,
                    };
                    for id in &ids {
                        for l4 in &r.l4 {
                            out.raw[d].push(RawEntry {
                                key: EntryKey {
                                    identity: *id,
                                    l4: *l4,
                                },
                                value,
                            });
                        }
                    }
                }
                out
            })
            .collect()
    }

    /// The parts (policy, index) whose subject selects an endpoint.
    fn selecting_parts(&self, ep: &EndpointView) -> Vec<(&PolicyRef, usize)> {
        let mut out = Vec::new();
        let Some(selecting) = self.ep_policies.get(&ep.ep_id) else {
            return out;
        };
        for key in selecting {
            let Some((key, st)) = self.policies.get_key_value(key) else {
                continue;
            };
            for (i, part) in st.parts.iter().enumerate() {
                if part.subject.matches(&ep.labels) {
                    out.push((key, i));
                }
            }
        }
        out
    }

    fn world_identities(&self) -> Vec<NumericIdentity> {
        let mut v = vec![ReservedIdentity::World.id()];
        v.extend(self.cidr_identities().map(|(_, id)| id));
        v
    }

    fn cluster_identities(&self) -> Vec<NumericIdentity> {
        let mut v: Vec<NumericIdentity> = self.identities.keys().copied().collect();
        v.extend(
            [
                ReservedIdentity::Host,
                ReservedIdentity::RemoteNode,
                ReservedIdentity::Health,
                ReservedIdentity::Init,
                ReservedIdentity::Unmanaged,
                ReservedIdentity::KubeApiServer,
                ReservedIdentity::Ingress,
            ]
            .map(ReservedIdentity::id),
        );
        v
    }

    fn peer_identities(&self, peer: &Peer, ctx: &Ctx<'_>, out: &mut Vec<NumericIdentity>) {
        match peer {
            Peer::Any | Peer::Entity(Entity::All) => out.push(NumericIdentity::ANY),
            Peer::Endpoints(s) => {
                if let Some(e) = self.selectors.get(s) {
                    out.extend(e.matches.iter().copied());
                }
            }
            Peer::Entity(e) => match e {
                Entity::World => out.extend_from_slice(ctx.world),
                Entity::Cluster => out.extend_from_slice(ctx.cluster),
                Entity::Host => out.push(ReservedIdentity::Host.id()),
                Entity::RemoteNode => out.push(ReservedIdentity::RemoteNode.id()),
                Entity::Health => out.push(ReservedIdentity::Health.id()),
                Entity::Init => out.push(ReservedIdentity::Init.id()),
                Entity::Unmanaged => out.push(ReservedIdentity::Unmanaged.id()),
                Entity::KubeApiServer => out.push(ReservedIdentity::KubeApiServer.id()),
                Entity::Ingress => out.push(ReservedIdentity::Ingress.id()),
                Entity::All => out.push(NumericIdentity::ANY),
            },
            Peer::Cidr(cs) => {
                if !cs.cidr.is_ipv4() {
                    return;
                }
                if cs.cidr.prefix_len() == 0 {
                    out.push(ReservedIdentity::World.id());
                }
                for (c, id) in self.cidr_identities() {
                    if cs.selects(c) {
                        out.push(id);
                    }
                }
            }
        }
    }

    /// Compiles the policy of an endpoint selected by `parts` (from the
    /// parts' cached entries, see [`Self::refresh_entries`]).
    fn compile_parts(&self, parts: &[(&PolicyRef, usize)]) -> EndpointPolicy {
        let mut result = EndpointPolicy::default();
        let mut raw: [Vec<RawEntry>; 2] = [Vec::new(), Vec::new()];
        let mut enforced = [false; 2];
        let mut relaxed = [false; 2];
        let mut has_deny = [false; 2];
        for (key, i) in parts {
            let Some(st) = self.policies.get(*key) else {
                continue;
            };
            let (Some(part), Some(cached)) = (
                st.parts.get(*i),
                st.entries.as_ref().and_then(|e| e.get(*i)),
            ) else {
                continue;
            };
            for d in 0..2 {
                if part.default_deny[d] {
                    enforced[d] = true;
                } else if part.has_rules[d] {
                    relaxed[d] = true;
                }
                has_deny[d] |= cached.has_deny[d];
                raw[d].extend_from_slice(&cached.raw[d]);
            }
        }
        for d in Direction::BOTH {
            let i = dir_index(d);
            let mut entries = std::mem::take(&mut raw[i]);
            let on = if enforced[i] {
                true
            } else if relaxed[i] && has_deny[i] {
                entries.push(RawEntry {
                    key: EntryKey {
                        identity: NumericIdentity::ANY,
                        l4: L4Match::Any,
                    },
                    value: EntryValue {
                        deny: false,
                        auth_type: 0,
                        rule_id: IMPLICIT_ALLOW_RULE_ID,
                    },
                });
                true
            } else {
                false
            };
            let out = match d {
                Direction::Ingress => &mut result.ingress,
                Direction::Egress => &mut result.egress,
            };
            out.enforced = on;
            if on {
                out.entries = resolve(entries);
            }
        }
        result
    }
}

/// Appends to `diff` what turns `old` into `new` (both sorted by key).
fn diff_entries(
    ep: u16,
    d: Direction,
    old: &BTreeMap<EntryKey, EntryValue>,
    new: &BTreeMap<EntryKey, EntryValue>,
    diff: &mut MapDiff,
) {
    let mut o = old.iter().peekable();
    let mut n = new.iter().peekable();
    loop {
        match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some((ok, _)), None) => {
                diff.deletes.push((ep, d, **ok));
                o.next();
            }
            (None, Some((nk, nv))) => {
                diff.upserts.push((ep, d, **nk, **nv));
                n.next();
            }
            (Some((ok, ov)), Some((nk, nv))) => match ok.cmp(nk) {
                Ordering::Less => {
                    diff.deletes.push((ep, d, **ok));
                    o.next();
                }
                Ordering::Greater => {
                    diff.upserts.push((ep, d, **nk, **nv));
                    n.next();
                }
                Ordering::Equal => {
                    if ov != nv {
                        diff.upserts.push((ep, d, **nk, **nv));
                    }
                    o.next();
                    n.next();
                }
            },
        }
    }
}

struct Ctx<'a> {
    world: &'a [NumericIdentity],
    cluster: &'a [NumericIdentity],
}

fn rule_refs(p: &Policy) -> Vec<RuleRef> {
    let mut v = Vec::new();
    for part in &p.parts {
        for d in Direction::BOTH {
            for r in &part.direction(d).rules {
                v.push(RuleRef {
                    policy: p.key.clone(),
                    direction: d,
                    deny: r.deny,
                    index: r.index,
                });
            }
        }
    }
    v
}
