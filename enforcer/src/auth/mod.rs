//! Mutual authentication between node agents, enforced in the datapath.
//!
//! A policy rule with `authentication.mode: required` compiles to policy
//! entries with an auth type; the datapath admits such a connection only
//! when `pal_auth` holds an unexpired entry for (local identity, remote
//! identity, remote node, auth type) and otherwise drops it with
//! `AUTH_REQUIRED`, which is also the signal to authenticate ([`Auth::signal`]).
//!
//! The auth manager ([`run`]) authenticates every pair policy makes
//! possible ahead of time (pre-authentication: the agent's [`AuthView`]
//! lists them), every signalled pair, renews entries before they expire
//! and again when this node's SVID of the pair rotates. A handshake is
//! mutual TLS 1.3 with the SVIDs `spiffe://<td>/identity/<n>` of the two
//! identities, in which each side checks the exact SPIFFE ID of the other
//! ([`palisade_identity::mutual_auth`]); both nodes then install their entry,
//! expiring with the earlier of the two SVIDs. The listener ([`serve`])
//! answers other nodes' handshakes and admits only pairs whose client
//! identity the cluster store places on the dialling node.

pub mod table;
pub mod view;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use palisade_api::{AuthReport, AuthStats, AuthSummary};
use palisade_bpf::abi::{AuthKey, AUTH_TYPE_SPIFFE};
use palisade_identity::mutual_auth::{
    Admission, AuthError, Authenticated, Client, IdentitySvids, LocalSvid, Server,
};
use palisade_identity::tls::{certified_key, CertifiedKey};
use palisade_identity::NumericIdentity;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::AuthConfig;
use crate::datapath::maps::AuthMap;
use crate::identity::IdentityService;
use crate::util::{boottime_of, wall_time_of_boottime};
use table::{AuthTable, MapOp, Origin, Signal, Success, SvidTag};
pub use view::{AuthView, Requirement};

/// Client latencies kept for the percentiles.
const LATENCY_WINDOW: usize = 1024;
/// Handshakes other nodes may run with this node at once.
const MAX_SERVER_HANDSHAKES: usize = 64;
/// The longest the manager sleeps (garbage collection runs this often).
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// The auth manager's state, shared by the manager task, the listener, the
/// agent (views, listings) and the flow reader (signals).
pub struct Auth {
    state: Mutex<State>,
    wake: Notify,
    /// Bumped after every handshake outcome and view change.
    progress: watch::Sender<u64>,
    config: AuthConfig,
    listen: SocketAddr,
}

struct State {
    table: AuthTable,
    map: AuthMap,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    handshakes: u64,
    failures: BTreeMap<String, u64>,
    accepted: u64,
    refused: BTreeMap<String, u64>,
    signals: u64,
    latencies_ms: VecDeque<f64>,
}

impl Auth {
    /// Takes the auth map, restoring the entries a previous agent left in
    /// it (they stay in force: established and new flows of authenticated
    /// pairs go on through a restart).
    pub fn new(config: &AuthConfig, clustered: bool, map: AuthMap) -> Arc<Self> {
        let now = SystemTime::now();
        let mut table = AuthTable::new(config.pre_authenticate);
        let restored: Vec<(AuthKey, SystemTime)> = map
            .entries()
            .into_iter()
            .map(|(k, boot_ns)| (k, nearest_second(wall_time_of_boottime(boot_ns))))
            .collect();
        if !restored.is_empty() {
            info!(
                entries = restored.len(),
                "authenticated pairs restored from the pinned map"
            );
        }
        table.restore(restored, now);
        let ip = config.listen.unwrap_or(if clustered {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        });
        Arc::new(Self {
            state: Mutex::new(State {
                table,
                map,
                stats: Stats::default(),
            }),
            wake: Notify::new(),
            progress: watch::channel(0).0,
            config: config.clone(),
            listen: SocketAddr::new(ip, config.port),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where the listener accepts handshakes.
    pub fn listen_address(&self) -> SocketAddr {
        self.listen
    }

    /// Replaces the agent's view (endpoints, nodes, what policy requires).
    pub fn set_view(&self, view: AuthView) {
        let mut state = self.lock();
        if state.table.view() != &view {
            state.table.set_view(view);
            drop(state);
            self.wake.notify_one();
            self.progress.send_modify(|n| *n += 1);
        }
    }

    /// The datapath dropped a packet of `key` for missing authentication.
    pub fn signal(&self, key: AuthKey) {
        let mut state = self.lock();
        state.stats.signals += 1;
        match state.table.signal(key, SystemTime::now()) {
            Signal::New => {
                drop(state);
                self.wake.notify_one();
            }
            Signal::Known => {}
            Signal::Rewrite(op) => {
                let _ = apply(&mut state.map, op);
            }
        }
    }

    /// `palisade status`: counts and counters.
    pub fn summary(&self) -> AuthSummary {
        let (authenticated, unauthenticated) = self.lock().table.counts(SystemTime::now());
        AuthSummary {
            authenticated,
            unauthenticated,
            stats: self.report_stats(),
        }
    }

    /// `palisade auth list`.
    pub fn report(&self) -> AuthReport {
        // Its own statement: the guard must be gone before the counters
        // take the lock again.
        let pairs = self.lock().table.records(SystemTime::now());
        AuthReport {
            enabled: true,
            disabled_reason: None,
            listen: Some(self.listen.to_string()),
            pairs,
            stats: self.report_stats(),
        }
    }

    /// The counters.
    fn report_stats(&self) -> AuthStats {
        let state = self.lock();
        let s = &state.stats;
        let mut sorted: Vec<f64> = s.latencies_ms.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        AuthStats {
            handshakes: s.handshakes,
            failures: s.failures.clone(),
            accepted: s.accepted,
            refused: s.refused.clone(),
            signals: s.signals,
            latency_p50_ms: percentile(&sorted, 0.50),
            latency_p99_ms: percentile(&sorted, 0.99),
            map_entries: state.map.entries().len(),
        }
    }

    /// Records a handshake's outcome (an error as its kind and message)
    /// and writes the map.
    fn record(&self, key: AuthKey, outcome: Result<Success, (&str, String)>, origin: Origin) {
        let now = SystemTime::now();
        let mut guard = self.lock();
        let state = &mut *guard;
        match outcome {
            Ok(success) => {
                let op = state.table.succeeded(key, success, origin, now);
                if let Err(e) = apply(&mut state.map, op) {
                    // The datapath goes on dropping: say so where operators
                    // look, and try again later.
                    state.table.failed(key, "map", e, now);
                }
            }
            Err((kind, message)) => {
                if let Some(op) = state.table.failed(key, kind, message, now) {
                    warn!(
                        ?key,
                        kind, "authentication withdrawn: the peer's answer contradicts it"
                    );
                    let _ = apply(&mut state.map, op);
                }
            }
        }
        drop(guard);
        self.progress.send_modify(|n| *n += 1);
    }

    /// Waits (at most `limit`) until every pair this node needs (`None`),
    /// or needs for an endpoint of `identity`, was tried once:
    /// authenticated, or failed. The API waits so before it answers the CNI
    /// plugin for a new pod, or a policy apply, so that first connections
    /// do not race pre-authentication. Returns whether they were.
    pub async fn settled(&self, identity: Option<u32>, limit: Duration) -> bool {
        let mut progress = self.progress.subscribe();
        let wait = async {
            loop {
                if self.lock().table.settled(identity, SystemTime::now()) {
                    return;
                }
                if progress.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

fn count(counters: &mut BTreeMap<String, u64>, kind: &str) {
    *counters.entry(kind.to_owned()).or_default() += 1;
}

/// The report of an agent that does not authenticate, saying why.
pub fn disabled_report(reason: &str) -> AuthReport {
    AuthReport {
        enabled: false,
        disabled_reason: Some(reason.to_owned()),
        listen: None,
        pairs: Vec::new(),
        stats: AuthStats::default(),
    }
}

/// Expiries are whole seconds (certificate times); a trip through the
/// boot clock blurs them by the clocks' drift.
fn nearest_second(t: SystemTime) -> SystemTime {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs() + u64::from(d.subsec_millis() >= 500))
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Writes one change to the auth map; an error is logged and returned.
fn apply(map: &mut AuthMap, op: MapOp) -> Result<(), String> {
    let result = match op {
        MapOp::Set(key, expires) => map.set(&key, boottime_of(expires)),
        MapOp::Delete(key) => map.remove(&key),
    };
    result.map_err(|e| {
        warn!(error = %e, ?op, "auth map update failed");
        format!("map: {e}")
    })
}

fn success(a: &Authenticated, local_svid: SvidTag) -> Success {
    Success {
        expires: a.expires,
        local_svid,
        peer_id: a.peer_id.to_string(),
    }
}

/// The SVIDs of `identity/<n>` this node holds, as rustls presents them
/// (each converted once per SVID, not per handshake).
pub struct NodeSvids {
    identity: Arc<IdentityService>,
    cache: Mutex<HashMap<u32, (Vec<u8>, LocalSvid)>>,
}

impl NodeSvids {
    /// Reads the SVIDs from `identity`.
    pub fn new(identity: Arc<IdentityService>) -> Arc<Self> {
        Arc::new(Self {
            identity,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The tag of the SVID held for `id`.
    fn tag(&self, id: u32) -> Option<SvidTag> {
        let svid = self.identity.identity_svid(id)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(svid.leaf(), &mut h);
        Some(std::hash::Hasher::finish(&h))
    }

    /// Forgets the keys of identities no longer on this node.
    fn retain(&self, local: &std::collections::BTreeSet<u32>) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, _| local.contains(id));
    }
}

impl IdentitySvids for NodeSvids {
    fn svid(&self, id: NumericIdentity) -> Option<LocalSvid> {
        let svid = self.identity.identity_svid(id.get())?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((leaf, local)) = cache.get(&id.get()) {
            if leaf.as_slice() == svid.leaf() {
                return Some(local.clone());
            }
        }
        let key: Arc<CertifiedKey> = match certified_key(&svid) {
            Ok(k) => k,
            Err(e) => {
                warn!(error = %e, identity = id.get(), "cannot present the SVID");
                return None;
            }
        };
        let local = match LocalSvid::new(key) {
            Ok(local) => local,
            Err(e) => {
                warn!(error = %e, identity = id.get(), "cannot present the SVID");
                return None;
            }
        };
        cache.insert(id.get(), (svid.leaf().to_vec(), local.clone()));
        Some(local)
    }
}

/// Runs the auth manager until the agent stops: pre-authentication,
/// signalled pairs, renewal, rotation and garbage collection.
pub async fn run(
    auth: Arc<Auth>,
    identity: Arc<IdentityService>,
    svids: Arc<NodeSvids>,
    node_address: Option<Ipv4Addr>,
) {
    let client = Arc::new(Client::new(
        identity.trust_domain().clone(),
        identity.trust().clone(),
        svids.clone(),
    ));
    let mut changes = identity.subscribe();
    let mut tasks: JoinSet<Handshake> = JoinSet::new();
    let timeout = Duration::from_millis(auth.config.handshake_timeout_ms);
    let max = auth.config.max_concurrent_handshakes;
    loop {
        let now = SystemTime::now();
        let (due, wake_at) = {
            let mut state = auth.lock();
            for op in state.table.gc(now) {
                let _ = apply(&mut state.map, op);
            }
            svids.retain(&state.table.view().local);
            let free = max.saturating_sub(state.table.in_flight());
            let due = state.table.due(now, |id| svids.tag(id), free);
            // With every slot taken, a finished handshake wakes the loop.
            let busy = state.table.in_flight() >= max;
            (
                due,
                if busy {
                    None
                } else {
                    state.table.next_wakeup(now)
                },
            )
        };
        for key in due {
            let target = target(&auth, key);
            let bind = key.remote_node().and(node_address).map(IpAddr::V4);
            let client = client.clone();
            // Taken before the dial: a renewal during it is noticed next time.
            let svid = svids.tag(key.local_identity);
            debug!(?key, %target, "authenticating");
            tasks.spawn(async move {
                let started = Instant::now();
                let result = client
                    .dial(
                        target,
                        bind,
                        NumericIdentity(key.local_identity),
                        NumericIdentity(key.remote_identity),
                        timeout,
                    )
                    .await;
                Handshake {
                    key,
                    svid,
                    result,
                    took: started.elapsed(),
                }
            });
        }
        let sleep = wake_at
            .map_or(MAX_SLEEP, |w| w.duration_since(now).unwrap_or_default())
            .min(MAX_SLEEP);
        tokio::select! {
            () = auth.wake.notified() => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            Some(joined) = tasks.join_next() => {
                match joined {
                    Ok(handshake) => finish(&auth, handshake),
                    Err(e) => warn!(error = %e, "a handshake task failed"),
                }
            }
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Where the pair's peer node accepts handshakes.
fn target(auth: &Auth, key: AuthKey) -> SocketAddr {
    let port = auth.config.port;
    match key.remote_node() {
        Some(node) => SocketAddr::new(IpAddr::V4(node), port),
        None => match auth.listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), port)
            }
            ip => SocketAddr::new(ip, port),
        },
    }
}

/// A client handshake's result, with the tag of the SVID presented.
struct Handshake {
    key: AuthKey,
    svid: Option<SvidTag>,
    result: Result<Authenticated, AuthError>,
    took: Duration,
}

fn finish(auth: &Auth, h: Handshake) {
    let Handshake {
        key,
        svid,
        result,
        took,
    } = h;
    let outcome = match &result {
        Ok(a) => {
            info!(
                local = key.local_identity,
                remote = key.remote_identity,
                node = ?key.remote_node(),
                peer = %a.peer_id,
                ms = took.as_secs_f64() * 1000.0,
                "authenticated"
            );
            Ok(success(a, svid.unwrap_or_default()))
        }
        Err(e) => {
            warn!(
                local = key.local_identity,
                remote = key.remote_identity,
                node = ?key.remote_node(),
                kind = e.kind(),
                error = %e,
                "authentication failed"
            );
            Err((e.kind(), format!("{}: {e}", e.kind())))
        }
    };
    {
        let mut state = auth.lock();
        let s = &mut state.stats;
        match &result {
            Ok(_) => {
                s.handshakes += 1;
                if s.latencies_ms.len() == LATENCY_WINDOW {
                    s.latencies_ms.pop_front();
                }
                s.latencies_ms.push_back(took.as_secs_f64() * 1000.0);
            }
            Err(e) => count(&mut s.failures, e.kind()),
        }
    }
    auth.record(key, outcome, Origin::Client);
}

/// Admits a handshake when the dialling node hosts the client identity
/// and this node the server identity, as far as this node knows.
struct ViewAdmission(Arc<Auth>);

impl Admission for ViewAdmission {
    fn admit(
        &self,
        peer: SocketAddr,
        server: NumericIdentity,
        client: NumericIdentity,
    ) -> Result<(), String> {
        let state = self.0.lock();
        let view = state.table.view();
        let node = view.node_of(peer.ip())?;
        if !view.local.contains(&server.get()) {
            return Err(format!(
                "no endpoint of identity {} is on this node",
                server.get()
            ));
        }
        if !view.hosts(node, client.get()) {
            return Err(format!(
                "node {} hosts no endpoint of identity {} (as far as this node knows)",
                view.node_name(node),
                client.get()
            ));
        }
        Ok(())
    }
}

/// Answers other nodes' handshakes on the auth port until `shutdown`.
pub async fn serve(
    auth: Arc<Auth>,
    identity: Arc<IdentityService>,
    svids: Arc<NodeSvids>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(auth.listen).await?;
    info!(address = %auth.listen, "mutual authentication listening");
    let server = Arc::new(
        Server::new(
            identity.trust_domain().clone(),
            identity.trust().clone(),
            svids.clone(),
            Arc::new(ViewAdmission(auth.clone())),
        )
        .map_err(std::io::Error::other)?,
    );
    let slots = Arc::new(Semaphore::new(MAX_SERVER_HANDSHAKES));
    let timeout = Duration::from_millis(auth.config.handshake_timeout_ms);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accepting a handshake failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Only nodes of the cluster (and this one) get a TLS handshake.
        let not_a_node = auth.lock().table.view().node_of(peer.ip()).is_err();
        if not_a_node {
            debug!(%peer, "a handshake from an address that is no node; refused");
            count(&mut auth.lock().stats.refused, "not-a-node");
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "too many handshakes at once; refusing one");
            count(&mut auth.lock().stats.refused, "busy");
            continue;
        };
        let (auth, server, svids) = (auth.clone(), server.clone(), svids.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let result = match tokio::time::timeout(timeout, server.accept(stream, peer)).await {
                Ok(r) => r,
                Err(_) => Err(AuthError::Timeout),
            };
            accepted(&auth, &svids, peer, result);
        });
    }
}

fn accepted(
    auth: &Auth,
    svids: &NodeSvids,
    peer: SocketAddr,
    result: Result<Authenticated, AuthError>,
) {
    match result {
        Ok(a) => {
            let node = match auth.lock().table.view().node_of(peer.ip()) {
                Ok(node) => node,
                Err(e) => {
                    warn!(%peer, error = %e, "authenticated a peer that is no longer a node");
                    return;
                }
            };
            let key = AuthKey::new(a.local.get(), a.remote.get(), node, AUTH_TYPE_SPIFFE);
            debug!(?key, %peer, "authenticated by the peer");
            auth.lock().stats.accepted += 1;
            let svid = svids.tag(a.local.get()).unwrap_or_default();
            auth.record(key, Ok(success(&a, svid)), Origin::Server);
        }
        Err(e) => {
            debug!(%peer, kind = e.kind(), error = %e, "refused a handshake");
            count(&mut auth.lock().stats.refused, e.kind());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_come_back_to_their_second() {
        let at = |s: u64, ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        assert_eq!(nearest_second(at(100, 999)), at(101, 0));
        assert_eq!(nearest_second(at(101, 2)), at(101, 0));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
