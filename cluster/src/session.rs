//! A node's session with etcd: its lease, the keys it owns under that
//! lease (written again whenever the lease was lost), its identity
//! references, the watch that keeps its [`ClusterView`] current (with a full
//! resync after every disconnect), and identity garbage collection.
//!
//! Nothing here ever removes what the agent enforces because etcd is
//! unreachable: while it is, the view stays as last seen, writes wait, and
//! the status says what failed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, EventType, WatchOptions};
use palisade_identity::{Labels, NumericIdentity};
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::cidr::PodCidr;
use crate::config::ClusterConfig;
use crate::etcd::{self, StoreError};
use crate::identities::{labels_json, AllocError, Ctx};
use crate::keys::{valid_name, Keys};
use crate::view::{Change, ClusterView, EndpointRecord, NodeRecord};

/// Largest number of operations in one write transaction (etcd's default
/// `--max-txn-ops` is 128).
const WRITE_BATCH: usize = 64;
/// Longest pause between retries while etcd is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// etcd failed or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An identity could not be allocated.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The configuration cannot work.
    #[error("{0}")]
    Invalid(String),
    /// The pod CIDR asked for belongs to another node.
    #[error("pod CIDR {cidr} is claimed by node {node} in etcd; choose another pod_cidr, or leave it out to have one allocated")]
    CidrTaken {
        /// The CIDR.
        cidr: PodCidr,
        /// The node holding it.
        node: String,
    },
    /// The pool has no free CIDR left.
    #[error("no free pod CIDR of /{prefix_len} left in the pool {pool} ({claimed} claimed); free the CIDRs of departed nodes (delete their `cidrs/` keys in etcd) or enlarge cluster.pod_cidr_pool")]
    PoolExhausted {
        /// The pool.
        pool: PodCidr,
        /// Node prefix length.
        prefix_len: u8,
        /// How many CIDRs are claimed.
        claimed: usize,
    },
}

impl SessionError {
    /// Whether etcd failed (unreachable, timed out, refused the request),
    /// as opposed to a conflict or a configuration error.
    pub fn store_failure(&self) -> bool {
        matches!(self, Self::Store(_) | Self::Alloc(AllocError::Store(_)))
    }
}

/// What a session reports about itself (`palisade cluster status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Whether the last request to etcd succeeded.
    pub connected: bool,
    /// The node's lease, when it holds one.
    pub lease_id: Option<i64>,
    /// Store revision the view reflects.
    pub synced_revision: i64,
    /// Full listings made (the first one and one after every disconnect).
    pub resyncs: u64,
    /// The last error, and when (seconds since the Unix epoch).
    pub last_error: Option<(String, u64)>,
    /// Writes waiting for etcd.
    pub pending_writes: usize,
    /// Records skipped because they did not parse.
    pub malformed: u64,
    /// Nodes known (this one included).
    pub nodes: usize,
    /// Endpoints known (this node's included).
    pub endpoints_known: usize,
    /// Identities known.
    pub identities: usize,
    /// Identities garbage-collected by this node.
    pub identities_collected: u64,
}

/// An identity this node holds, with its number of local holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    id: NumericIdentity,
    refs: u32,
}

#[derive(Default)]
struct State {
    client: Option<Client>,
    lease: Option<i64>,
    /// Keys this node holds under its lease, with their values.
    owned: BTreeMap<String, Vec<u8>>,
    /// Owned keys not yet written under the current lease.
    dirty: BTreeSet<String>,
    /// Keys to delete.
    deletes: BTreeSet<String>,
    held: BTreeMap<Labels, Held>,
    /// Held identities whose reference is not (yet) in etcd.
    refs_pending: BTreeSet<Labels>,
    /// The CIDR this node uses, and whether its claim is in etcd.
    cidr: Option<(PodCidr, bool)>,
    view: ClusterView,
    connected: bool,
    resyncs: u64,
    last_error: Option<(String, u64)>,
    malformed: u64,
    collected: u64,
}

struct Inner {
    config: ClusterConfig,
    keys: Keys,
    node: String,
    state: Mutex<State>,
    wake_writer: Notify,
    changes: mpsc::UnboundedSender<Vec<Change>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// A node's session with etcd. Cheap to clone; [`Session::shutdown`] stops
/// its background work.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("node", &self.inner.node)
            .field("cluster", &self.inner.keys.root())
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Session {
    /// Starts a session for `node` of `cluster`: the writer (lease, owned
    /// keys, references), the watch and the garbage collector run in the
    /// background from now on, also while etcd is unreachable. `view` is
    /// the last known view (saved by the agent). Changes of the view arrive
    /// on the returned channel, a batch at a time.
    pub fn start(
        config: ClusterConfig,
        cluster: &str,
        node: &str,
        view: ClusterView,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Vec<Change>>), SessionError> {
        config
            .check()
            .map_err(|(field, msg)| SessionError::Invalid(format!("{field}: {msg}")))?;
        let keys = Keys::new(cluster).map_err(SessionError::Invalid)?;
        if !valid_name(node) {
            return Err(SessionError::Invalid(format!(
                "node name {node:?} is not a valid name (1-253 characters of [A-Za-z0-9._-])"
            )));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let state = State {
            view,
            ..State::default()
        };
        let session = Self {
            inner: Arc::new(Inner {
                config,
                keys,
                node: node.to_owned(),
                state: Mutex::new(state),
                wake_writer: Notify::new(),
                changes: tx,
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let tasks = vec![
            tokio::spawn(session.clone().run_writer()).abort_handle(),
            tokio::spawn(session.clone().run_watch()).abort_handle(),
            tokio::spawn(session.clone().run_gc()).abort_handle(),
        ];
        *session
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = tasks;
        Ok((session, rx))
    }

    /// Stops the background work. The lease is NOT revoked: the node's keys
    /// stay until it expires, so that an agent restart does not withdraw
    /// its pods from the other nodes.
    pub fn shutdown(&self) {
        for t in self.lock_tasks().drain(..) {
            t.abort();
        }
    }

    fn lock_tasks(&self) -> MutexGuard<'_, Vec<AbortHandle>> {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    fn timeout(&self) -> Duration {
        self.inner.config.request_timeout()
    }

    fn record_error(&self, what: &str, e: &dyn std::fmt::Display) {
        let mut st = self.state();
        let message = format!("{what}: {e}");
        if st.connected || st.last_error.as_ref().map(|(m, _)| m) != Some(&message) {
            warn!(error = %e, "{what}");
        }
        st.connected = false;
        st.last_error = Some((message, unix_now()));
    }

    fn record_ok(&self) {
        let mut st = self.state();
        if !st.connected {
            info!(node = %self.inner.node, "connected to etcd");
        }
        st.connected = true;
    }

    /// The etcd client, connecting if needed.
    async fn client(&self) -> Result<Client, StoreError> {
        if let Some(c) = self.state().client.clone() {
            return Ok(c);
        }
        let c = etcd::connect(&self.inner.config.etcd, self.timeout()).await?;
        self.state().client = Some(c.clone());
        Ok(c)
    }

    /// The node's lease, granted if it has none.
    async fn lease(&self, client: &mut Client) -> Result<i64, StoreError> {
        if let Some(l) = self.state().lease {
            return Ok(l);
        }
        let ttl = i64::try_from(self.inner.config.lease_ttl_secs).unwrap_or(i64::MAX);
        let resp = etcd::timed(
            self.timeout(),
            || "grant a lease".to_owned(),
            client.lease_grant(ttl, None),
        )
        .await?;
        let id = resp.id();
        let mut st = self.state();
        st.lease = Some(id);
        // Everything owned must be written under the new lease.
        let owned: Vec<String> = st.owned.keys().cloned().collect();
        st.dirty.extend(owned);
        let held: Vec<Labels> = st.held.keys().cloned().collect();
        st.refs_pending.extend(held);
        info!(lease = id, ttl, "lease granted");
        Ok(id)
    }

    // ---- pod CIDR and node record ----

    /// Claims this node's pod CIDR: exactly `wanted` when the configuration
    /// names one, else the CIDR this node already holds in etcd, else
    /// `preferred` (the one it used before) when free, else the first free
    /// one of the pool.
    pub async fn claim_pod_cidr(
        &self,
        wanted: Option<PodCidr>,
        preferred: Option<PodCidr>,
    ) -> Result<PodCidr, SessionError> {
        let pool = self.inner.config.pool().map_err(SessionError::Invalid)?;
        let mut client = self.client().await?;
        let node_json = serde_json::to_vec(&self.inner.node).unwrap_or_default();
        for _ in 0..16 {
            let (kvs, _) =
                etcd::list(&mut client, &self.inner.keys.cidrs(), self.timeout()).await?;
            let mut others = Vec::new();
            let mut mine = Vec::new();
            for kv in &kvs {
                let Some(crate::keys::Key::Cidr(c)) = self.inner.keys.parse(&kv.key) else {
                    continue;
                };
                if kv.value == node_json {
                    mine.push(c);
                } else {
                    let holder: String = serde_json::from_slice(&kv.value).unwrap_or_default();
                    others.push((c, holder));
                }
            }
            let candidate = match wanted {
                Some(w) => {
                    if let Some((_, node)) = others.iter().find(|(c, _)| c.overlaps(&w)) {
                        return Err(SessionError::CidrTaken {
                            cidr: w,
                            node: node.clone(),
                        });
                    }
                    w
                }
                None => match mine
                    .iter()
                    .find(|c| Some(**c) == preferred)
                    .or(mine.first())
                {
                    Some(c) => *c,
                    None => pool
                        .first_free(others.iter().map(|(c, _)| c), preferred)
                        .ok_or(SessionError::PoolExhausted {
                            pool: pool.pool,
                            prefix_len: pool.node_prefix_len,
                            claimed: others.len(),
                        })?,
                },
            };
            if self.claim(&mut client, candidate).await? {
                self.state().cidr = Some((candidate, true));
                info!(cidr = %candidate, "pod CIDR claimed");
                return Ok(candidate);
            }
        }
        Err(SessionError::Invalid(
            "pod CIDR claims kept conflicting with other nodes' (16 tries)".into(),
        ))
    }

    /// Claims `cidr` for this node unless another node holds it (or, for a
    /// CIDR claimed under another prefix length, part of it). True when the
    /// claim is this node's.
    async fn claim(&self, client: &mut Client, cidr: PodCidr) -> Result<bool, StoreError> {
        let key = self.inner.keys.cidr(cidr);
        let node_json = serde_json::to_vec(&self.inner.node).unwrap_or_default();
        let (won, got) = etcd::txn(
            client,
            &format!("claim pod CIDR {cidr}"),
            vec![etcd::absent(&key)],
            vec![etcd::op_put(&key, &node_json, None)],
            vec![etcd::op_get(&key)],
            self.timeout(),
        )
        .await?;
        Ok(won || got.first().and_then(Option::as_deref) == Some(node_json.as_slice()))
    }

    /// Uses `cidr` (saved from an earlier start) while etcd cannot be
    /// reached; the writer claims it when etcd answers.
    pub fn assume_pod_cidr(&self, cidr: PodCidr) {
        self.state().cidr = Some((cidr, false));
        self.inner.wake_writer.notify_one();
    }

    /// Sets this node's record (kept under its lease).
    pub fn set_node(&self, record: &NodeRecord) {
        let key = self.inner.keys.node(&self.inner.node);
        self.own(key, serde_json::to_vec(record).unwrap_or_default());
    }

    /// Publishes one of this node's endpoints (kept under its lease).
    pub fn publish_endpoint(&self, record: &EndpointRecord) {
        let key = self.inner.keys.endpoint(record.ip);
        self.own(key, serde_json::to_vec(record).unwrap_or_default());
    }

    /// Withdraws one of this node's endpoints.
    pub fn withdraw_endpoint(&self, ip: Ipv4Addr) {
        self.disown(self.inner.keys.endpoint(ip));
    }

    fn own(&self, key: String, value: Vec<u8>) {
        let mut st = self.state();
        st.deletes.remove(&key);
        if st.owned.get(&key) != Some(&value) {
            st.owned.insert(key.clone(), value);
            st.dirty.insert(key);
            drop(st);
            self.inner.wake_writer.notify_one();
        }
    }

    fn disown(&self, key: String) {
        let mut st = self.state();
        st.owned.remove(&key);
        st.dirty.remove(&key);
        st.deletes.insert(key);
        drop(st);
        self.inner.wake_writer.notify_one();
    }

    // ---- identities ----

    /// Takes a reference on the identity of `labels`, allocating it in the
    /// cluster if it has none. While etcd is unreachable, a label set that
    /// the view already knows still gets its number (the reference is
    /// written when etcd answers); a new one fails.
    pub async fn acquire_identity(&self, labels: &Labels) -> Result<NumericIdentity, SessionError> {
        {
            let mut st = self.state();
            if let Some(h) = st.held.get_mut(labels) {
                h.refs += 1;
                return Ok(h.id);
            }
        }
        match self.allocate(labels, None).await {
            Ok(id) => {
                let mut st = self.state();
                st.held.insert(labels.clone(), Held { id, refs: 1 });
                st.view.identities.insert(id, labels.clone());
                Ok(id)
            }
            Err(e) if e.store_failure() => {
                let known = self.state().view.identity_of(labels);
                self.record_error("allocate an identity", &e);
                let Some(id) = known else {
                    return Err(e);
                };
                warn!(identity = %id, %labels, "etcd unreachable: using the identity last seen for these labels");
                let mut st = self.state();
                st.held.insert(labels.clone(), Held { id, refs: 1 });
                st.refs_pending.insert(labels.clone());
                Ok(id)
            }
            Err(e) => Err(e),
        }
    }

    async fn allocate(
        &self,
        labels: &Labels,
        preferred: Option<NumericIdentity>,
    ) -> Result<NumericIdentity, SessionError> {
        let mut client = self.client().await?;
        let lease = self.lease(&mut client).await?;
        let taken: BTreeSet<NumericIdentity> =
            self.state().view.identities.keys().copied().collect();
        let mut ctx = Ctx {
            client: &mut client,
            keys: &self.inner.keys,
            node: &self.inner.node,
            lease,
            timeout: self.timeout(),
        };
        let id = ctx.allocate(labels, &taken, preferred).await?;
        self.record_ok();
        Ok(id)
    }

    /// Drops a reference; the node's reference in etcd goes with the last
    /// one (the identity itself stays until garbage collection).
    pub fn release_identity(&self, labels: &Labels) {
        let mut st = self.state();
        let Some(h) = st.held.get_mut(labels) else {
            return;
        };
        h.refs = h.refs.saturating_sub(1);
        if h.refs > 0 {
            return;
        }
        let id = h.id;
        st.held.remove(labels);
        st.refs_pending.remove(labels);
        st.deletes
            .insert(self.inner.keys.identity_ref(id, &self.inner.node));
        drop(st);
        self.inner.wake_writer.notify_one();
    }

    /// Sets the identities this node holds from its endpoints (label set,
    /// number, holders), as restored after a restart: references of
    /// identities no longer held are deleted, the others written again.
    pub fn recount(&self, holders: impl IntoIterator<Item = (Labels, NumericIdentity, u32)>) {
        let mut st = self.state();
        let old: Vec<NumericIdentity> = st.held.values().map(|h| h.id).collect();
        st.held = holders
            .into_iter()
            .map(|(labels, id, refs)| (labels, Held { id, refs }))
            .collect();
        st.refs_pending = st.held.keys().cloned().collect();
        for id in old {
            if !st.held.values().any(|h| h.id == id) {
                let key = self.inner.keys.identity_ref(id, &self.inner.node);
                st.deletes.insert(key);
            }
        }
        drop(st);
        self.inner.wake_writer.notify_one();
    }

    /// The identity this node holds for `labels`, if any.
    pub fn held_identity(&self, labels: &Labels) -> Option<NumericIdentity> {
        self.state().held.get(labels).map(|h| h.id)
    }

    /// The identities this node holds: labels, number, local holders.
    pub fn held(&self) -> Vec<(Labels, NumericIdentity, u32)> {
        self.state()
            .held
            .iter()
            .map(|(l, h)| (l.clone(), h.id, h.refs))
            .collect()
    }

    /// The view as last seen.
    pub fn view(&self) -> ClusterView {
        self.state().view.clone()
    }

    /// The endpoints the view places on `node`.
    pub fn endpoints_on(&self, node: &str) -> Vec<EndpointRecord> {
        self.state()
            .view
            .endpoints
            .values()
            .filter(|e| e.node == node)
            .cloned()
            .collect()
    }

    /// The session's status.
    pub fn status(&self) -> SessionStatus {
        let st = self.state();
        SessionStatus {
            endpoints: self.inner.config.etcd.endpoints.clone(),
            connected: st.connected,
            lease_id: st.lease,
            synced_revision: st.view.revision,
            resyncs: st.resyncs,
            last_error: st.last_error.clone(),
            pending_writes: st.dirty.len()
                + st.deletes.len()
                + st.refs_pending.len()
                + usize::from(st.cidr.is_some_and(|(_, claimed)| !claimed)),
            malformed: st.malformed,
            nodes: st.view.nodes.len(),
            endpoints_known: st.view.endpoints.len(),
            identities: st.view.identities.len(),
            identities_collected: st.collected,
        }
    }

    // ---- background: writer ----

    async fn run_writer(self) {
        let mut backoff = Duration::from_millis(100);
        let mut keeper: Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)> =
            None;
        let every = self.inner.config.lease_ttl() / 3;
        let mut next_keepalive = tokio::time::Instant::now() + every;
        loop {
            if tokio::time::Instant::now() >= next_keepalive {
                next_keepalive = tokio::time::Instant::now() + every;
                match self.keep_alive(&mut keeper).await {
                    Ok(true) => self.record_ok(),
                    Ok(false) => {}
                    Err(e) => {
                        self.record_error("keep the lease alive", &e);
                        keeper = None;
                    }
                }
            }
            match self.write_pending(&mut keeper).await {
                Ok(wrote) => {
                    backoff = Duration::from_millis(100);
                    if wrote {
                        self.record_ok();
                    }
                }
                Err(e) => {
                    self.record_error("write to etcd", &e);
                    keeper = None;
                    tokio::time::sleep(backoff.min(every)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            tokio::select! {
                () = self.inner.wake_writer.notified() => {}
                () = tokio::time::sleep_until(next_keepalive) => {}
            }
        }
    }

    /// Renews the lease (true when there was one to renew); a lease etcd
    /// no longer knows (it expired while the node could not reach etcd) is
    /// replaced at the next write.
    async fn keep_alive(
        &self,
        keeper: &mut Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
    ) -> Result<bool, StoreError> {
        let Some(lease) = self.state().lease else {
            return Ok(false);
        };
        if keeper.is_none() {
            let mut client = self.client().await?;
            let what = || format!("keep lease {lease} alive");
            match tokio::time::timeout(self.timeout(), client.lease_keep_alive(lease)).await {
                Ok(Ok(k)) => *keeper = Some(k),
                // etcd's answer when the lease expired meanwhile.
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => {
                    self.lease_lost(lease);
                    return Ok(false);
                }
                Ok(Err(source)) => {
                    return Err(StoreError::Etcd {
                        what: what(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(StoreError::Timeout {
                        what: what(),
                        timeout: self.timeout(),
                    })
                }
            }
        }
        let Some((k, stream)) = keeper.as_mut() else {
            return Ok(false);
        };
        let what = || format!("keep lease {lease} alive");
        etcd::timed(self.timeout(), what, k.keep_alive()).await?;
        let resp = etcd::timed(self.timeout(), what, stream.message()).await?;
        if resp.is_none_or(|r| r.ttl() <= 0) {
            *keeper = None;
            self.lease_lost(lease);
            return Ok(false);
        }
        Ok(true)
    }

    /// Forgets an expired lease: the next write grants a new one and writes
    /// every owned key and reference again.
    fn lease_lost(&self, lease: i64) {
        warn!(
            lease,
            "the lease expired; writing this node's keys again under a new one"
        );
        let mut st = self.state();
        if st.lease == Some(lease) {
            st.lease = None;
        }
        drop(st);
        self.inner.wake_writer.notify_one();
    }

    /// Writes what is pending: the CIDR claim, the lease, owned keys,
    /// deletions and identity references. False when nothing was.
    async fn write_pending(
        &self,
        keeper: &mut Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
    ) -> Result<bool, SessionError> {
        let idle = {
            let st = self.state();
            st.dirty.is_empty()
                && st.deletes.is_empty()
                && st.refs_pending.is_empty()
                && st.lease.is_some()
                && st.cidr.is_none_or(|(_, claimed)| claimed)
        };
        if idle {
            return Ok(false);
        }
        let mut client = self.client().await?;
        let unclaimed = self.state().cidr.filter(|(_, claimed)| !claimed);
        if let Some((cidr, _)) = unclaimed {
            if self.claim(&mut client, cidr).await? {
                self.state().cidr = Some((cidr, true));
                info!(cidr = %cidr, "pod CIDR claimed");
            } else {
                let e = SessionError::Invalid(format!(
                    "pod CIDR {cidr}, used by this node, is claimed by another node in etcd: its pods' addresses may collide; remove one of the two nodes"
                ));
                self.record_error("claim the pod CIDR", &e);
            }
        }
        if keeper.is_none() && self.state().lease.is_some() {
            // A lease from before a disconnect may have expired meanwhile.
            self.keep_alive(keeper).await?;
        }
        let lease = self.lease(&mut client).await?;
        // Puts (`Some`) and deletions (`None`); a key is never both, so one
        // transaction may carry any of them.
        let writes: Vec<(String, Option<Vec<u8>>)> = {
            let st = self.state();
            let puts = st
                .dirty
                .iter()
                .filter_map(|k| st.owned.get(k).map(|v| (k.clone(), Some(v.clone()))));
            puts.chain(st.deletes.iter().map(|k| (k.clone(), None)))
                .collect()
        };
        for chunk in writes.chunks(WRITE_BATCH) {
            let ops = chunk
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => etcd::op_put(k, v, Some(lease)),
                    None => etcd::op_delete(k),
                })
                .collect();
            let what = "write this node's keys";
            etcd::txn(&mut client, what, vec![], ops, vec![], self.timeout()).await?;
            let mut st = self.state();
            for (k, v) in chunk {
                match v {
                    // Done unless the value changed meanwhile.
                    Some(v) if st.owned.get(k) == Some(v) => {
                        st.dirty.remove(k);
                    }
                    Some(_) => {}
                    None => {
                        st.deletes.remove(k);
                    }
                }
            }
        }
        let pending: Vec<(Labels, NumericIdentity)> = {
            let st = self.state();
            st.refs_pending
                .iter()
                .filter_map(|l| st.held.get(l).map(|h| (l.clone(), h.id)))
                .collect()
        };
        for (labels, id) in pending {
            self.retake(&mut client, lease, &labels, id).await?;
        }
        Ok(true)
    }

    /// Writes this node's reference on a held identity again; if the
    /// identity was collected meanwhile, allocates it again, under the same
    /// number when it is still free.
    async fn retake(
        &self,
        client: &mut Client,
        lease: i64,
        labels: &Labels,
        id: NumericIdentity,
    ) -> Result<(), SessionError> {
        let json = labels_json(labels);
        let mut ctx = Ctx {
            client,
            keys: &self.inner.keys,
            node: &self.inner.node,
            lease,
            timeout: self.timeout(),
        };
        let got = if ctx.take_ref(id, &json).await? {
            id
        } else {
            let taken = self
                .state()
                .view
                .identities
                .keys()
                .copied()
                .filter(|t| *t != id)
                .collect();
            ctx.allocate(labels, &taken, Some(id)).await?
        };
        let mut st = self.state();
        st.refs_pending.remove(labels);
        if got != id {
            let message = format!(
                "identity {id} of {labels} was collected while this node was away and another node took the number; the labels now have identity {got}: restart the agent so that its endpoints move to it"
            );
            warn!("{message}");
            st.last_error = Some((message, unix_now()));
        }
        Ok(())
    }

    // ---- background: watch ----

    async fn run_watch(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.list_and_watch().await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    self.record_error("watch the cluster", &e);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }

    /// Lists the cluster prefix (a resync), sends what changed, then
    /// follows the watch from the listing's revision until it breaks.
    async fn list_and_watch(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let root = self.inner.keys.root().to_owned();
        let (kvs, revision) = etcd::list(&mut client, &root, self.timeout()).await?;
        let changes = {
            let mut st = self.state();
            let (changes, malformed) = st.view.resync(
                &self.inner.keys,
                &self.inner.node,
                kvs.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())),
                revision,
            );
            for m in &malformed {
                warn!(key = %m.key, error = %m.error, "skipping a malformed cluster record");
            }
            st.malformed += malformed.len() as u64;
            st.resyncs += 1;
            self.keep_held(&st, changes)
        };
        self.record_ok();
        debug!(revision, changes = changes.len(), "cluster listed");
        self.send(changes);
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut stream = etcd::timed(
            self.timeout(),
            || format!("watch {root}"),
            client.watch(root.as_str(), Some(opts)),
        )
        .await?;
        loop {
            let msg = stream.message().await.map_err(|source| StoreError::Etcd {
                what: format!("watch {root}"),
                source,
            })?;
            let Some(resp) = msg else {
                return Ok(());
            };
            if resp.canceled() || resp.compact_revision() > 0 {
                info!(
                    reason = resp.cancel_reason(),
                    compacted = resp.compact_revision(),
                    "watch ended; listing the cluster again"
                );
                return Ok(());
            }
            let changes = {
                let mut st = self.state();
                let mut changes = Vec::new();
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key());
                    match ev.event_type() {
                        EventType::Put => {
                            match st
                                .view
                                .put(&self.inner.keys, &self.inner.node, &key, kv.value())
                            {
                                Ok(c) => changes.extend(c),
                                Err(m) => {
                                    warn!(key = %m.key, error = %m.error, "skipping a malformed cluster record");
                                    st.malformed += 1;
                                }
                            }
                        }
                        EventType::Delete => {
                            changes.extend(st.view.delete(
                                &self.inner.keys,
                                &self.inner.node,
                                &key,
                            ));
                        }
                    }
                }
                if let Some(h) = resp.header() {
                    st.view.revision = h.revision();
                }
                self.keep_held(&st, changes)
            };
            self.send(changes);
        }
    }

    /// Drops the removal of identities this node holds: its endpoints keep
    /// their number, and the writer allocates it again.
    fn keep_held(&self, st: &State, changes: Vec<Change>) -> Vec<Change> {
        changes
            .into_iter()
            .filter(|c| match c {
                Change::IdentityRemove(id) => !st.held.values().any(|h| h.id == *id),
                _ => true,
            })
            .collect()
    }

    fn send(&self, changes: Vec<Change>) {
        if !changes.is_empty() && self.inner.changes.send(changes).is_err() {
            debug!("nobody listens to cluster changes");
        }
    }

    // ---- background: garbage collection ----

    async fn run_gc(self) {
        let grace = self.inner.config.identity_gc_grace();
        let every = (grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut unreferenced = BTreeMap::new();
        loop {
            tokio::time::sleep(every).await;
            let mut client = match self.client().await {
                Ok(c) => c,
                Err(e) => {
                    self.record_error("garbage-collect identities", &e);
                    continue;
                }
            };
            let mut ctx = Ctx {
                client: &mut client,
                keys: &self.inner.keys,
                node: &self.inner.node,
                lease: 0,
                timeout: self.timeout(),
            };
            match ctx.collect(&mut unreferenced, grace, Instant::now()).await {
                Ok(deleted) => self.state().collected += deleted.len() as u64,
                Err(e) => self.record_error("garbage-collect identities", &e),
            }
        }
    }
}
