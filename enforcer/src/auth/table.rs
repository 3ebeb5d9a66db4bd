//! The auth manager's bookkeeping, pure (time is an argument): which pairs
//! are authenticated until when, which are due for a handshake, what failed
//! and when to retry, and what is garbage.
//!
//! A pair is *wanted* while this node's policy requires it (the view's
//! `needed`) or while the datapath dropped a packet for it and it has not
//! been authenticated since (a signal). A wanted pair is (re-)authenticated
//! when it has no valid entry, when less than a third of its authenticated
//! lifetime is left, or when this node's SVID of its local identity changed
//! since (a rotation). Failures back off exponentially from 200 ms to 30 s;
//! an authenticated entry stays in force until it expires, whatever later
//! attempts do.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use palisade_api::AuthRecord;
use palisade_bpf::abi::{AuthKey, AUTH_TYPE_ALWAYS_FAIL};

use super::view::AuthView;
use crate::util::unix_seconds as unix;

/// First retry after a failure; doubled per failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
/// Longest wait between attempts.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a signalled or freshly authenticated pair is kept while the
/// view does not (yet) show both of its ends or a policy requiring it (a
/// new pod or policy the cluster store or the agent has not spread yet).
const GRACE: Duration = Duration::from_secs(30);
/// Signalled pairs kept whose ends the view does not show: a hostile peer
/// (or a stream of packets from unknown addresses) cannot grow the table
/// beyond this.
const MAX_IMPLAUSIBLE: usize = 1024;
/// Failure kinds that contradict an earlier authentication (the peer no
/// longer holds a valid SVID of the identity, or refuses the pair), or
/// leave it out of the datapath (`map`: the write failed): the entry in
/// force is withdrawn at once instead of running out.
const AUTHORITATIVE: [&str; 5] = ["untrusted", "expired", "wrong-identity", "refused", "map"];

/// Who ran the handshake behind an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This node dialled.
    Client,
    /// The peer dialled.
    Server,
    /// Found in the pinned map when the agent started.
    Restored,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
            Self::Restored => "restored",
        }
    }
}

/// Tells one SVID from another of the same identity (a hash of its leaf
/// certificate): a renewal changes it even within the same second.
pub type SvidTag = u64;

/// A successful handshake, from this node's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Success {
    /// The earlier NotAfter of the two SVIDs.
    pub expires: SystemTime,
    /// Which SVID this node presented ([`SvidTag`]).
    pub local_svid: SvidTag,
    /// The SPIFFE ID the peer presented.
    pub peer_id: String,
}

/// What a signal from the datapath calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Work: the pair is neither authenticated nor being worked on.
    New,
    /// Nothing: the pair is already in flight, backing off or signalled.
    Known,
    /// The pair is authenticated: its map entry is written again.
    Rewrite(MapOp),
}

/// A change of the datapath's auth map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapOp {
    /// The pair is authenticated until then.
    Set(AuthKey, SystemTime),
    /// The pair is no longer authenticated.
    Delete(AuthKey),
}

#[derive(Debug, Clone)]
struct Authenticated {
    expires: SystemTime,
    at: SystemTime,
    origin: Origin,
    /// The SVID this node presented; `None` for a restored entry until
    /// the manager first looks at it.
    local_svid: Option<SvidTag>,
    peer_id: Option<String>,
}

impl Authenticated {
    /// When the pair is re-authenticated: two thirds into its lifetime.
    fn renew_at(&self) -> SystemTime {
        let life = self.expires.duration_since(self.at).unwrap_or_default();
        self.at + life * 2 / 3
    }
}

#[derive(Debug, Clone, Default)]
struct Entry {
    authenticated: Option<Authenticated>,
    /// The last drop the datapath reported for the pair, while it is not
    /// authenticated.
    signalled_at: Option<SystemTime>,
    in_flight: bool,
    /// The last look found no SVID of the local identity: the identity
    /// service's next change wakes the manager, not a timer.
    waiting_svid: bool,
    failures: u32,
    last_error: Option<String>,
    retry_at: Option<SystemTime>,
}

/// Every pair this node authenticated or wants authenticated.
#[derive(Debug, Default)]
pub struct AuthTable {
    entries: BTreeMap<AuthKey, Entry>,
    view: AuthView,
    /// Whether pairs policy makes possible are authenticated before any
    /// packet (otherwise only signalled ones, and renewals).
    ahead: bool,
}

fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    (RETRY_FIRST * (1u32 << shift)).min(RETRY_MAX)
}

impl AuthTable {
    /// An empty table; `pre_authenticate`: see [`AuthTable::due`].
    pub fn new(pre_authenticate: bool) -> Self {
        Self {
            ahead: pre_authenticate,
            ..Self::default()
        }
    }

    /// Takes the entries of the pinned map, left by the previous agent.
    pub fn restore(
        &mut self,
        entries: impl IntoIterator<Item = (AuthKey, SystemTime)>,
        now: SystemTime,
    ) {
        for (key, expires) in entries {
            self.entries.entry(key).or_default().authenticated = Some(Authenticated {
                expires,
                at: now,
                origin: Origin::Restored,
                local_svid: None,
                peer_id: None,
            });
        }
    }

    /// Replaces the view of the cluster.
    pub fn set_view(&mut self, view: AuthView) {
        self.view = view;
    }

    /// The view of the cluster.
    pub fn view(&self) -> &AuthView {
        &self.view
    }

    /// Whether a handshake is wanted: the pair is signalled, or needed and
    /// either pre-authentication is on or it was authenticated before
    /// (renewal).
    fn wanted(&self, key: &AuthKey, e: &Entry) -> bool {
        e.signalled_at.is_some()
            || (self.view.needed.contains(key) && (self.ahead || e.authenticated.is_some()))
    }

    /// The datapath dropped a packet for want of this pair.
    pub fn signal(&mut self, key: AuthKey, now: SystemTime) -> Signal {
        if !self.entries.contains_key(&key) && !self.view.plausible(&key) {
            let implausible = self
                .entries
                .iter()
                .filter(|(k, e)| e.signalled_at.is_some() && !self.view.plausible(k))
                .count();
            if implausible >= MAX_IMPLAUSIBLE {
                return Signal::Known;
            }
        }
        let e = self.entries.entry(key).or_default();
        if let Some(a) = e.authenticated.as_ref().filter(|a| a.expires > now) {
            // The datapath disagrees (the drop raced the map write, or the
            // entry was deleted behind the agent's back): write it again.
            return Signal::Rewrite(MapOp::Set(key, a.expires));
        }
        let news = e.signalled_at.is_none() && !e.in_flight;
        e.signalled_at = Some(now);
        if news {
            Signal::New
        } else {
            Signal::Known
        }
    }

    /// The pairs due for a handshake now (at most `limit`), marked in
    /// flight: needed pairs (with pre-authentication) and signalled ones
    /// without a valid entry, and entries due for renewal or made with a
    /// rotated SVID. `local_svid(id)` is the tag of the SVID this node
    /// holds for identity `id`, if any. Test-always-fail pairs fail here.
    pub fn due(
        &mut self,
        now: SystemTime,
        local_svid: impl Fn(u32) -> Option<SvidTag>,
        limit: usize,
    ) -> Vec<AuthKey> {
        for key in &self.view.needed {
            self.entries.entry(*key).or_default();
        }
        let mut due = Vec::new();
        let keys: Vec<AuthKey> = self.entries.keys().copied().collect();
        for key in keys {
            if due.len() >= limit {
                break;
            }
            // A pair is dialled only once the view shows both of its ends
            // (a signal may name a pod the cluster store has not spread yet,
            // or an address no node hosts).
            let wanted = self.entries.get(&key).is_some_and(|e| self.wanted(&key, e))
                && self.view.plausible(&key);
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            if !wanted || e.in_flight || e.retry_at.is_some_and(|r| r > now) {
                continue;
            }
            if key.auth_type == AUTH_TYPE_ALWAYS_FAIL {
                fail(
                    e,
                    "test-always-fail: this mode never authenticates".into(),
                    now,
                );
                continue;
            }
            // A pair within this node needs both SVIDs here: this node's
            // listener presents the peer's.
            let missing = [key.local_identity, key.remote_identity]
                .into_iter()
                .take(if key.remote_node().is_none() { 2 } else { 1 })
                .find(|id| local_svid(*id).is_none());
            let (Some(svid), None) = (local_svid(key.local_identity), missing) else {
                e.last_error = Some(format!(
                    "this node holds no SVID for identity/{} yet",
                    missing.unwrap_or(key.local_identity)
                ));
                e.waiting_svid = true;
                continue;
            };
            e.waiting_svid = false;
            if let Some(a) = e.authenticated.as_mut() {
                // A restored entry does not say which SVID it was made
                // with: the one held now is the baseline for a rotation.
                a.local_svid.get_or_insert(svid);
            }
            let stale = match &e.authenticated {
                None => true,
                Some(a) => {
                    a.expires <= now
                        || now >= a.renew_at()
                        || a.local_svid.is_some_and(|held| held != svid)
                }
            };
            if stale {
                e.in_flight = true;
                due.push(key);
            }
        }
        due
    }

    /// A handshake for `key` succeeded (`origin`: who dialled). Returns the
    /// map write.
    pub fn succeeded(
        &mut self,
        key: AuthKey,
        s: Success,
        origin: Origin,
        now: SystemTime,
    ) -> MapOp {
        let e = self.entries.entry(key).or_default();
        if origin == Origin::Client {
            e.in_flight = false;
        }
        e.failures = 0;
        e.last_error = None;
        e.retry_at = None;
        e.signalled_at = None;
        e.authenticated = Some(Authenticated {
            expires: s.expires,
            at: now,
            origin,
            local_svid: Some(s.local_svid),
            peer_id: Some(s.peer_id),
        });
        MapOp::Set(key, s.expires)
    }

    /// A handshake this node ran for `key` failed (`kind`: the failure's
    /// label). A failure that contradicts the authentication in force
    /// withdraws it: returns the map delete.
    pub fn failed(
        &mut self,
        key: AuthKey,
        kind: &str,
        error: String,
        now: SystemTime,
    ) -> Option<MapOp> {
        let e = self.entries.entry(key).or_default();
        e.in_flight = false;
        fail(e, error, now);
        let withdrawn = AUTHORITATIVE.contains(&kind) && e.authenticated.take().is_some();
        withdrawn.then_some(MapOp::Delete(key))
    }

    /// Removes what is garbage and returns the map deletes: expired
    /// entries (the row stays while the pair is wanted); pairs whose local
    /// identity left this node, whose peer is no longer on its node or whose
    /// node is gone; pairs this node authenticated for a policy that no
    /// longer requires them. Entries the peer authenticated (or that were
    /// restored) stay until they expire; anything authenticated or
    /// signalled in the last 30 s stays too.
    /// Nothing is collected before the view is complete.
    pub fn gc(&mut self, now: SystemTime) -> Vec<MapOp> {
        if !self.view.complete {
            return Vec::new();
        }
        let mut ops = Vec::new();
        let view = &self.view;
        let recent = |t: SystemTime| now.duration_since(t).unwrap_or_default() < GRACE;
        self.entries.retain(|key, e| {
            if e.in_flight {
                return true;
            }
            if e.authenticated.as_ref().is_some_and(|a| a.expires <= now) {
                // Expired: out of the map (its boot-time expiry may outlast
                // the wall clock's after a clock step); the row stays while
                // the pair is wanted.
                e.authenticated = None;
                ops.push(MapOp::Delete(*key));
            }
            let wanted = view.needed.contains(key) || e.signalled_at.is_some();
            let keep = match &e.authenticated {
                None => view.needed.contains(key) || e.signalled_at.is_some_and(recent),
                Some(a) if recent(a.at) => true,
                Some(a) => view.plausible(key) && (wanted || a.origin != Origin::Client),
            };
            if !keep && e.authenticated.is_some() {
                ops.push(MapOp::Delete(*key));
            }
            keep
        });
        ops
    }

    /// When something next falls due (a retry, a renewal, an expiry).
    pub fn next_wakeup(&self, now: SystemTime) -> Option<SystemTime> {
        self.entries
            .iter()
            .filter(|(k, e)| {
                !e.in_flight && !e.waiting_svid && self.wanted(k, e) && self.view.plausible(k)
            })
            .map(|(_, e)| match (&e.authenticated, e.retry_at) {
                (_, Some(r)) => r,
                (Some(a), None) => a.renew_at().min(a.expires),
                (None, None) => now,
            })
            .min()
    }

    /// Whether every needed pair (that involves `identity` on this node,
    /// when given) was tried: authenticated, or failed at least once.
    /// Without pre-authentication there is nothing to wait for.
    pub fn settled(&self, identity: Option<u32>, now: SystemTime) -> bool {
        if !self.ahead {
            return true;
        }
        self.view
            .needed
            .iter()
            .filter(|k| {
                identity.is_none_or(|id| {
                    k.local_identity == id || (k.remote_node().is_none() && k.remote_identity == id)
                })
            })
            .all(|k| {
                self.entries.get(k).is_some_and(|e| {
                    e.failures > 0 || e.authenticated.as_ref().is_some_and(|a| a.expires > now)
                })
            })
    }

    /// Handshakes running as a client.
    pub fn in_flight(&self) -> usize {
        self.entries.values().filter(|e| e.in_flight).count()
    }

    /// Pairs authenticated now, and the others (pending, failing, expired).
    pub fn counts(&self, now: SystemTime) -> (usize, usize) {
        let valid = self
            .entries
            .values()
            .filter(|e| e.authenticated.as_ref().is_some_and(|a| a.expires > now))
            .count();
        (valid, self.entries.len() - valid)
    }

    /// Every pair, for `palisade auth list`.
    pub fn records(&self, now: SystemTime) -> Vec<AuthRecord> {
        self.entries
            .iter()
            .map(|(key, e)| {
                let valid = e.authenticated.as_ref().is_some_and(|a| a.expires > now);
                let state = if valid {
                    "authenticated"
                } else if e.failures > 0 {
                    "failing"
                } else if e.authenticated.is_some() {
                    "expired"
                } else {
                    "pending"
                };
                let a = e.authenticated.as_ref();
                AuthRecord {
                    local_identity: key.local_identity,
                    remote_identity: key.remote_identity,
                    local_labels: None,
                    remote_labels: None,
                    remote_node: self.view.node_name(key.remote_node()),
                    remote_node_address: key.remote_node().map(|a| a.to_string()),
                    auth_type: auth_type_name(key.auth_type).to_owned(),
                    state: state.to_owned(),
                    needed: self.view.needed.contains(key),
                    origin: a.map_or("none", |a| a.origin.as_str()).to_owned(),
                    expires: a.map(|a| unix(a.expires)),
                    last_handshake: a
                        .filter(|a| a.origin != Origin::Restored)
                        .map(|a| unix(a.at)),
                    peer_spiffe_id: a.and_then(|a| a.peer_id.clone()),
                    failures: e.failures,
                    last_error: e.last_error.clone(),
                    next_attempt: e.retry_at.filter(|_| e.failures > 0).map(unix),
                }
            })
            .collect()
    }
}

fn fail(e: &mut Entry, error: String, now: SystemTime) {
    e.failures = e.failures.saturating_add(1);
    e.last_error = Some(error);
    e.retry_at = Some(now + backoff(e.failures));
}

/// The name of an auth type in listings and policies.
pub fn auth_type_name(auth_type: u8) -> &'static str {
    match auth_type {
        palisade_bpf::abi::AUTH_TYPE_SPIFFE => "spiffe",
        AUTH_TYPE_ALWAYS_FAIL => "test-always-fail",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;

    use palisade_bpf::abi::AUTH_TYPE_SPIFFE;

    use std::time::UNIX_EPOCH;

    use super::*;

    const N2: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn key() -> AuthKey {
        AuthKey::new(100, 200, Some(N2), AUTH_TYPE_SPIFFE)
    }

    fn view(needed: &[AuthKey]) -> AuthView {
        AuthView {
            local: [100].into(),
            addresses: BTreeSet::new(),
            nodes: [(N2, "n2".to_owned())].into(),
            remote: [(200, [N2].into())].into(),
            needed: needed.iter().copied().collect::<BTreeSet<_>>(),
            complete: true,
        }
    }

    fn svid(_: u32) -> Option<SvidTag> {
        Some(1)
    }

    fn success(expires: u64) -> Success {
        Success {
            expires: t(expires),
            local_svid: 1,
            peer_id: "spiffe://td/identity/200".into(),
        }
    }

    #[test]
    fn a_needed_pair_is_authenticated_once_and_renewed_at_two_thirds() {
        let mut table = AuthTable::new(true);
        table.set_view(view(&[key()]));
        assert_eq!(table.due(t(0), svid, 16), vec![key()]);
        assert!(table.due(t(0), svid, 16).is_empty(), "in flight: not twice");
        let op = table.succeeded(key(), success(300), Origin::Client, t(0));
        assert_eq!(op, MapOp::Set(key(), t(300)));
        assert!(table.due(t(199), svid, 16).is_empty());
        assert_eq!(table.next_wakeup(t(1)), Some(t(200)));
        assert_eq!(table.due(t(200), svid, 16), vec![key()]);
    }

    #[test]
    fn a_rotated_local_svid_means_a_new_handshake() {
        let mut table = AuthTable::new(true);
        table.set_view(view(&[key()]));
        table.due(t(0), svid, 16);
        table.succeeded(key(), success(3000), Origin::Client, t(0));
        assert!(table.due(t(10), svid, 16).is_empty());
        assert_eq!(table.due(t(10), |_| Some(2), 16), vec![key()]);
    }

    #[test]
    fn a_restored_pair_is_re_authenticated_when_the_svid_rotates() {
        let mut table = AuthTable::new(true);
        table.set_view(view(&[key()]));
        table.restore([(key(), t(3000))], t(0));
        assert!(table.due(t(1), svid, 16).is_empty(), "restored and valid");
        assert_eq!(table.due(t(2), |_| Some(2), 16), vec![key()]);
    }

    #[test]
    fn failures_back_off_and_keep_the_entry_until_it_expires() {
        let mut table = AuthTable::new(true);
        table.set_view(view(&[key()]));
        table.due(t(0), svid, 16);
        table.succeeded(key(), success(30), Origin::Client, t(0));
        assert_eq!(table.due(t(20), svid, 16), vec![key()]);
        table.failed(key(), "connect", "connect: refused".into(), t(20));
        let r = &table.records(t(20))[0];
        assert_eq!((r.state.as_str(), r.failures), ("authenticated", 1));
        assert_eq!(table.counts(t(20)), (1, 0));
        assert_eq!(table.counts(t(31)), (0, 1), "expired");
        assert!(table.due(t(20), svid, 16).is_empty(), "backing off");
        let retry = t(20) + Duration::from_millis(200);
        assert_eq!(table.next_wakeup(t(20)), Some(retry));
        assert_eq!(table.due(retry, svid, 16), vec![key()]);
        table.failed(key(), "connect", "connect: refused".into(), retry);
        assert!(table
            .due(retry + Duration::from_millis(399), svid, 16)
            .is_empty());
        let r = &table.records(t(31))[0];
        assert_eq!(r.state, "failing");
        assert_eq!(r.last_error.as_deref(), Some("connect: refused"));
        assert_eq!(backoff(40), RETRY_MAX);
    }

    #[test]
    fn without_pre_authentication_only_signals_start_handshakes() {
        let mut table = AuthTable::new(false);
        table.set_view(view(&[key()]));
        assert!(
            table.due(t(0), svid, 16).is_empty(),
            "needed, not signalled"
        );
        table.signal(key(), t(1));
        assert_eq!(table.due(t(1), svid, 16), vec![key()]);
        table.succeeded(key(), success(300), Origin::Client, t(1));
        assert_eq!(table.due(t(201), svid, 16), vec![key()], "renewed");
    }

    #[test]
    fn a_new_identity_is_settled_once_its_pairs_were_tried() {
        let mut table = AuthTable::new(true);
        table.set_view(view(&[key()]));
        assert!(table.settled(Some(300), t(0)), "nothing needed for 300");
        assert!(!table.settled(Some(100), t(0)));
        assert!(!table.settled(None, t(0)));
        table.due(t(0), svid, 16);
        table.failed(key(), "connect", "connect: refused".into(), t(0));
        assert!(
            table.settled(Some(100), t(0)),
            "tried: the caller need not wait"
        );
        table.due(t(1), svid, 16);
        table.succeeded(key(), success(300), Origin::Client, t(1));
        assert!(table.settled(Some(100), t(1)));
        assert!(table.settled(None, t(1)));
        assert!(AuthTable::new(false).settled(Some(100), t(0)));
    }

    #[test]
    fn nothing_to_wait_for_while_the_svid_is_missing() {
        let mut table = AuthTable::new(true);
        table.set_view(view(&[key()]));
        assert!(table.due(t(0), |_| None, 16).is_empty());
        assert_eq!(
            table.next_wakeup(t(0)),
            None,
            "no timer: the identity service's change wakes the manager"
        );
        assert_eq!(table.due(t(1), svid, 16), vec![key()]);
    }

    #[test]
    fn a_pair_within_this_node_waits_for_both_svids() {
        let mut table = AuthTable::new(true);
        let local = AuthKey::new(100, 101, None, AUTH_TYPE_SPIFFE);
        table.set_view(AuthView {
            local: [100, 101].into(),
            ..view(&[local])
        });
        let only_100 = |id: u32| (id == 100).then_some(1);
        assert!(table.due(t(0), only_100, 16).is_empty());
        assert!(!table.settled(Some(101), t(0)), "not tried yet: wait");
        let r = &table.records(t(0))[0];
        assert!(r
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("identity/101")));
        assert_eq!(table.due(t(1), svid, 16), vec![local]);
    }

    #[test]
    fn a_contradicting_failure_withdraws_the_entry() {
        let mut table = AuthTable::new(true);
        table.set_view(view(&[key()]));
        table.due(t(0), svid, 16);
        table.succeeded(key(), success(3000), Origin::Client, t(0));
        table.due(t(10), |_| Some(2), 16);
        assert_eq!(
            table.failed(key(), "timeout", "timeout: ...".into(), t(10)),
            None
        );
        table.due(t(11), |_| Some(2), 16);
        assert_eq!(
            table.failed(key(), "untrusted", "untrusted: ...".into(), t(11)),
            Some(MapOp::Delete(key()))
        );
        assert_eq!(table.records(t(11))[0].state, "failing");
    }

    #[test]
    fn signals_for_pairs_the_view_does_not_show_are_not_dialled_and_bounded() {
        let mut table = AuthTable::new(true);
        table.set_view(view(&[]));
        let unknown_node = AuthKey {
            remote_node: palisade_bpf::abi::AUTH_NODE_UNKNOWN,
            ..key()
        };
        assert_eq!(table.signal(unknown_node, t(0)), Signal::New);
        assert!(table.due(t(0), svid, 16).is_empty(), "never dialled");
        assert_eq!(table.next_wakeup(t(0)), None);
        for id in 0..2000u32 {
            table.signal(
                AuthKey::new(100, 10_000 + id, Some(N2), AUTH_TYPE_SPIFFE),
                t(0),
            );
        }
        assert_eq!(table.records(t(0)).len(), MAX_IMPLAUSIBLE);
        // Once the view shows the pod, the signalled pair is dialled.
        table.set_view(AuthView {
            remote: [(200, [N2].into()), (10_000, [N2].into())].into(),
            ..view(&[])
        });
        assert_eq!(
            table.due(t(1), svid, 16),
            vec![AuthKey::new(100, 10_000, Some(N2), AUTH_TYPE_SPIFFE)]
        );
    }

    #[test]
    fn an_expired_entry_leaves_the_map_but_a_wanted_row_stays() {
        let mut table = AuthTable::new(true);
        table.set_view(view(&[key()]));
        table.due(t(0), svid, 16);
        table.succeeded(key(), success(60), Origin::Client, t(0));
        table.due(t(40), svid, 16);
        table.failed(key(), "connect", "connect: ...".into(), t(40));
        assert_eq!(table.gc(t(61)), vec![MapOp::Delete(key())]);
        let r = &table.records(t(61))[0];
        assert_eq!((r.state.as_str(), r.expires), ("failing", None));
        assert!(table.gc(t(62)).is_empty());
    }

    #[test]
    fn test_always_fail_never_dials() {
        let mut table = AuthTable::new(true);
        let k = AuthKey::new(100, 200, Some(N2), AUTH_TYPE_ALWAYS_FAIL);
        table.set_view(view(&[k]));
        assert!(table.due(t(0), svid, 16).is_empty());
        let r = &table.records(t(0))[0];
        assert_eq!(
            (r.state.as_str(), r.auth_type.as_str()),
            ("failing", "test-always-fail")
        );
    }

    #[test]
    fn without_a_local_svid_nothing_is_dialled() {
        let mut table = AuthTable::new(true);
        table.set_view(view(&[key()]));
        assert!(table.due(t(0), |_| None, 16).is_empty());
        let r = &table.records(t(0))[0];
        assert_eq!(r.state, "pending");
        assert!(r
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("identity/100")));
    }

    #[test]
    fn signals_are_deduplicated_and_wanted_until_authenticated() {
        let mut table = AuthTable::new(true);
        table.set_view(view(&[]));
        assert_eq!(table.signal(key(), t(0)), Signal::New);
        assert_eq!(table.signal(key(), t(0)), Signal::Known);
        assert_eq!(table.due(t(0), svid, 16), vec![key()]);
        assert_eq!(table.signal(key(), t(0)), Signal::Known, "in flight");
        table.succeeded(key(), success(300), Origin::Client, t(1));
        assert_eq!(
            table.signal(key(), t(2)),
            Signal::Rewrite(MapOp::Set(key(), t(300))),
            "authenticated: the datapath lost the entry"
        );
        // Not needed by policy: a client entry is garbage, after a grace
        // period for a view that lags.
        assert!(table.gc(t(2)).is_empty());
        assert_eq!(table.gc(t(40)), vec![MapOp::Delete(key())]);
    }

    #[test]
    fn garbage_collection() {
        let mut table = AuthTable::new(true);
        table.set_view(AuthView {
            complete: false,
            ..view(&[key()])
        });
        table.due(t(0), svid, 16);
        table.succeeded(key(), success(300), Origin::Client, t(0));
        let peer = AuthKey::new(100, 200, None, AUTH_TYPE_SPIFFE);
        table.succeeded(peer, success(300), Origin::Server, t(0));
        table.restore([(AuthKey::new(100, 200, Some(N2), 9), t(50))], t(0));
        table.set_view(AuthView {
            complete: false,
            ..view(&[])
        });
        assert!(table.gc(t(1)).is_empty(), "not before the view is complete");

        table.set_view(view(&[]));
        assert!(table.gc(t(1)).is_empty(), "all recent");
        let mut ops = table.gc(t(31));
        ops.sort_by_key(|op| format!("{op:?}"));
        // The client pair lost its policy; the server pair's peer (200 on
        // this node) does not exist here; the restored pair stays.
        assert_eq!(ops, vec![MapOp::Delete(peer), MapOp::Delete(key())]);
        assert_eq!(table.records(t(31)).len(), 1);
        assert_eq!(
            table.gc(t(51)),
            vec![MapOp::Delete(AuthKey::new(100, 200, Some(N2), 9))]
        );

        // A signal for a pod the view does not show yet is kept for a while.
        let new_pod = AuthKey::new(100, 300, Some(N2), AUTH_TYPE_SPIFFE);
        table.signal(new_pod, t(60));
        assert!(table.gc(t(61)).is_empty());
        assert_eq!(table.records(t(61)).len(), 1);
        table.gc(t(91));
        assert!(table.records(t(91)).is_empty());
    }
}
