//! SPIFFE identity on this node: the CA, the SVIDs of the endpoints it
//! hosts, their renewal, and what the Workload API hands out.
//!
//! The CA lives in the agent (`<state_dir>/ca`, keys 0600), or, on a node
//! configured with `identity.node_ca`, in the cluster's CA agent, which
//! signs for this node only what it hosts ([`remote`]; the CA agent's side
//! is [`serve`]). Every endpoint
//! gets the X.509-SVID of its workload, `spiffe://<td>/ns/<ns>/sa/<sa>`;
//! the agent also holds `spiffe://<td>/identity/<n>` for every security
//! identity it hosts (mutual authentication between nodes). SVIDs are
//! renewed at 50-70% of their lifetime (jittered) and re-issued at once when
//! a new CA generation becomes active.

pub mod attest;
mod provider;
mod remote;
pub mod serve;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError,
};
use std::time::{Duration, SystemTime};

use palisade_api::{CaGenerationRecord, CaStatus, SvidRecord};
use palisade_identity::ca::{self, CaSet, CaStore, RotationEvent, RotationPolicy};
use palisade_identity::jwt::{self, JwtBundle, JwtSvid, ValidatedJwt};
use palisade_identity::node_ca::{self, proto, Registry, RegistryError};
use palisade_identity::tls::TrustBundle;
use palisade_identity::x509::X509Svid;
use palisade_identity::{pem, SpiffeId, TrustDomain};
use ring::rand::SecureRandom as _;
use tokio::sync::watch;
use tracing::{info, warn};

pub use attest::{Attested, HostedEndpoint};
pub use provider::Provider;

use crate::config::IdentityConfig;
use crate::util::unix_seconds as unix;

/// Why identity could not start or carry out a request.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The CA's files.
    #[error("CA store: {0}")]
    Store(#[from] ca::StoreError),
    /// Rotation or issuance.
    #[error("CA: {0}")]
    Rotation(#[from] ca::RotationError),
    /// JWT-SVIDs.
    #[error("JWT-SVID: {0}")]
    Jwt(#[from] jwt::JwtError),
    /// The request names something unknown or not allowed.
    #[error("{0}")]
    Invalid(String),
    /// The cluster's node CA refused or could not be reached.
    #[error("node CA: {0}")]
    NodeCa(String),
    /// Join tokens and admitted nodes.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// An SVID this node holds, and when it is renewed.
#[derive(Debug, Clone)]
struct Held {
    svid: X509Svid,
    renew_at: SystemTime,
    generation: u64,
}

/// What the Workload API streams are told when anything changed.
pub type Revision = u64;

/// The node's identity service.
///
/// Two locks: `ca` is held while signing (a rotation re-issues every SVID,
/// 0.6 s for 10,000) and serializes every change; `view` is what the
/// Workload API reads (endpoints, SVIDs, bundle snapshots) and is only ever
/// held for a lookup or to swap in what was signed. Attestation never waits
/// for a signature.
pub struct IdentityService {
    authority: Authority,
    view: RwLock<View>,
    config: IdentityConfig,
    /// The X.509 bundle the node CA's TLS verifiers read.
    trust: TrustBundle,
    /// Join tokens and nodes, on the node serving the node CA.
    registry: Option<Arc<Registry>>,
    /// Bumped after every change of SVIDs, bundles or endpoints.
    changes: watch::Sender<Revision>,
}

/// Who signs: this node's CA, or the cluster's node CA.
enum Authority {
    Local(Mutex<CaState>),
    Remote(Box<remote::RemoteCa>),
}

struct CaState {
    policy: RotationPolicy,
    store: CaStore,
    cas: CaSet,
}

/// What readers see.
struct View {
    endpoints: Vec<HostedEndpoint>,
    /// Every SVID held, by SPIFFE ID.
    held: BTreeMap<SpiffeId, Held>,
    /// The X.509 bundle's trust anchors (DER).
    anchors: Vec<Vec<u8>>,
    /// The JWT bundle.
    jwt_bundle: JwtBundle,
    /// The CA generation that signs now.
    active_generation: u64,
}

fn now() -> SystemTime {
    SystemTime::now()
}

impl IdentityService {
    /// Loads the CA from `<state_dir>/ca` (or creates it: a self-signed CA,
    /// or the operator's); on a node configured with `node_ca`, this node
    /// (`node_name`) obtains its SVIDs from the node CA instead.
    pub fn start(
        config: &IdentityConfig,
        node_name: &str,
        state_dir: &Path,
    ) -> Result<Arc<Self>, IdentityError> {
        if let Some(remote) = &config.node_ca {
            return Self::start_remote(config, remote, node_name, state_dir);
        }
        let policy = RotationPolicy {
            ca_ttl: Duration::from_secs(config.ca_ttl_secs),
            max_svid_ttl: Duration::from_secs(config.svid_ttl_secs.max(config.jwt_svid_ttl_secs)),
            propagation: Duration::from_secs(config.ca_propagation_secs),
        };
        let td = config.trust_domain.clone();
        let store = CaStore::new(&state_dir.join("ca"), &td);
        let t = now();
        let cas = match store.load(&td)? {
            Some(mut cas) => {
                cas.tick(t, &policy)?;
                cas
            }
            None => {
                let cas = match (&config.ca_cert_file, &config.ca_key_file) {
                    (Some(cert), Some(key)) => {
                        let authority =
                            ca::read_supplied(&td, cert, key, config.ca_bundle_file.as_deref())?;
                        let mut cas = CaSet::from_generations(td.clone(), Vec::new());
                        cas.prepare_supplied(authority, t, true, &policy)?;
                        cas
                    }
                    _ => CaSet::bootstrap(td.clone(), t, &policy)?,
                };
                info!(trust_domain = %td, dir = %store.dir().display(), "created the CA");
                cas
            }
        };
        store.save(&cas)?;
        let active = cas.active()?;
        info!(
            trust_domain = %td,
            generation = active.lifecycle.number,
            key_id = %ca::hex(active.authority.key_id()),
            "CA ready"
        );
        let registry = match config.node_ca_listen {
            Some(_) => Some(Arc::new(Registry::open(&store.dir().join("nodes.json"))?)),
            None => None,
        };
        let view = View {
            endpoints: Vec::new(),
            held: BTreeMap::new(),
            anchors: anchors_of(&cas),
            jwt_bundle: cas.jwt_bundle(),
            active_generation: active.lifecycle.number,
        };
        let trust = TrustBundle::new(cas.x509_bundle());
        let (changes, _) = watch::channel(0);
        Ok(Arc::new(Self {
            authority: Authority::Local(Mutex::new(CaState { policy, store, cas })),
            view: RwLock::new(view),
            config: config.clone(),
            trust,
            registry,
            changes,
        }))
    }

    /// A node without a CA: SVIDs come from the cluster's node CA.
    fn start_remote(
        config: &IdentityConfig,
        remote: &crate::config::NodeCaClientConfig,
        node_name: &str,
        state_dir: &Path,
    ) -> Result<Arc<Self>, IdentityError> {
        let td = config.trust_domain.clone();
        let (remote, bundle) = remote::RemoteCa::open(remote, &td, node_name, state_dir)?;
        info!(trust_domain = %td, node_ca = %remote.address(), "SVIDs come from the node CA");
        let view = View {
            endpoints: Vec::new(),
            held: BTreeMap::new(),
            anchors: bundle.authorities().map(|(_, der)| der.to_vec()).collect(),
            jwt_bundle: JwtBundle::new(td),
            active_generation: 0,
        };
        let trust = remote.trust().clone();
        let (changes, _) = watch::channel(0);
        Ok(Arc::new(Self {
            authority: Authority::Remote(Box::new(remote)),
            view: RwLock::new(view),
            config: config.clone(),
            trust,
            registry: None,
            changes,
        }))
    }

    /// This node's CA; an error on a node that uses the node CA.
    fn lock_ca(&self) -> Result<MutexGuard<'_, CaState>, IdentityError> {
        match &self.authority {
            Authority::Local(ca) => Ok(ca.lock().unwrap_or_else(PoisonError::into_inner)),
            Authority::Remote(remote) => Err(remote::no_ca(remote.address())),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self) {
        self.changes.send_modify(|revision| *revision += 1);
    }

    /// The SVID this node holds for `spiffe://<td>/identity/<id>`: what it
    /// presents in mutual authentication for endpoints of that identity.
    pub fn identity_svid(&self, id: u32) -> Option<X509Svid> {
        let spiffe_id = self
            .config
            .trust_domain
            .id_with_segments(["identity".to_owned(), id.to_string()])
            .ok()?;
        self.read().held.get(&spiffe_id).map(|h| h.svid.clone())
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.trust_domain
    }

    /// A receiver that changes whenever SVIDs, bundles or endpoints do.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.changes.subscribe()
    }

    /// Sets the endpoints this node hosts: issues the SVIDs they need and
    /// drops those nobody needs any more.
    ///
    /// The caller (the agent, holding its own lock) never waits for a
    /// signature: while the CA is busy (a rotation re-signing everything),
    /// and on a node that uses the node CA, the SVIDs are issued by the
    /// renewal task, which this change wakes. The Workload API holds a
    /// workload's stream open until its SVID is there.
    pub fn set_endpoints(&self, endpoints: Vec<HostedEndpoint>) {
        let wanted = wanted_ids(&endpoints);
        let ca = match &self.authority {
            Authority::Local(ca) => match ca.try_lock() {
                Ok(guard) => Some(guard),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            },
            Authority::Remote(_) => None,
        };
        let Some(mut ca) = ca else {
            let mut view = self.write();
            view.endpoints = endpoints;
            view.held.retain(|id, _| wanted.contains(id));
            drop(view);
            self.publish();
            return;
        };
        let missing: Vec<SpiffeId> = {
            let view = self.read();
            wanted
                .iter()
                .filter(|id| !view.held.contains_key(*id))
                .cloned()
                .collect()
        };
        let issued = self.issue_all(&mut ca, &missing, now());
        let mut view = self.write();
        view.endpoints = endpoints;
        view.held.retain(|id, _| wanted.contains(id));
        view.held.extend(issued);
        drop(view);
        self.publish();
    }

    /// Advances rotation and renewal; returns when to call again.
    pub fn tick(&self) -> SystemTime {
        let t = now();
        let mut ca = match &self.authority {
            Authority::Local(ca) => ca.lock().unwrap_or_else(PoisonError::into_inner),
            Authority::Remote(remote) => return self.tick_remote(remote, t),
        };
        let policy = ca.policy;
        let events = ca.cas.tick(t, &policy).unwrap_or_else(|e| {
            warn!(error = %e, "CA rotation failed");
            Vec::new()
        });
        let rotated = self
            .after_rotation(&mut ca, &events, t)
            .unwrap_or_else(|e| {
                warn!(error = %e, "cannot save the CA after a rotation");
                true
            });
        let (due, missing): (Vec<SpiffeId>, Vec<SpiffeId>) = {
            let view = self.read();
            let due = view
                .held
                .iter()
                .filter(|(_, h)| h.renew_at <= t)
                .map(|(id, _)| id.clone())
                .collect();
            let missing = wanted_ids(&view.endpoints)
                .into_iter()
                .filter(|id| !view.held.contains_key(id))
                .collect();
            (due, missing)
        };
        if !due.is_empty() {
            info!(count = due.len(), "renewing X.509-SVIDs");
            let issued = self.issue_all(&mut ca, &due, t);
            self.store_issued(issued);
        }
        if !missing.is_empty() {
            let issued = self.issue_all(&mut ca, &missing, t);
            self.store_new(issued);
        }
        if rotated || !due.is_empty() || !missing.is_empty() {
            self.publish();
        }
        let renew = self.read().held.values().map(|h| h.renew_at).min();
        let limit = t + Duration::from_secs(60);
        [renew, ca.cas.next_tick()]
            .into_iter()
            .flatten()
            .fold(limit, SystemTime::min)
            .max(t + Duration::from_millis(100))
    }

    /// Starts a CA rotation (`immediately`: the new CA signs at once).
    pub fn rotate(&self, immediately: bool) -> Result<CaStatus, IdentityError> {
        let mut ca = self.lock_ca()?;
        let t = now();
        let policy = ca.policy;
        let events = ca.cas.rotate(t, immediately, &policy)?;
        let saved = self.after_rotation(&mut ca, &events, t);
        self.publish();
        saved?;
        Ok(self.ca_status_of(&ca))
    }

    /// The CA's generations and bundle.
    pub fn ca_status(&self) -> CaStatus {
        match &self.authority {
            Authority::Local(ca) => {
                self.ca_status_of(&ca.lock().unwrap_or_else(PoisonError::into_inner))
            }
            Authority::Remote(remote) => self.remote_status(remote),
        }
    }

    /// Every SVID the node holds.
    pub fn svid_list(&self) -> Vec<SvidRecord> {
        let view = self.read();
        view.held.values().map(|h| view.record(h)).collect()
    }

    /// One SVID, with its certificate chain (PEM, no key).
    pub fn svid_inspect(&self, id: &str) -> Result<(SvidRecord, String), IdentityError> {
        let id: SpiffeId = id
            .parse()
            .map_err(|e| IdentityError::Invalid(format!("{id:?} is not a SPIFFE ID: {e}")))?;
        let view = self.read();
        let held = view.held.get(&id).ok_or_else(|| {
            IdentityError::Invalid(format!(
                "this node holds no SVID for {id} (`palisade svid list` shows those it holds)"
            ))
        })?;
        let chain = pem::encode_certificates(held.svid.chain().iter().map(Vec::as_slice));
        Ok((view.record(held), chain))
    }

    /// Finds the endpoint a caller belongs to.
    pub fn attest(&self, facts: &attest::CallerFacts) -> Result<Attested, attest::AttestError> {
        attest::match_endpoint(facts, &self.read().endpoints)
    }

    /// Whether the attested workload's endpoint is still hosted here.
    pub fn hosts(&self, who: &Attested) -> bool {
        self.read().endpoints.iter().any(|e| e.ep_id == who.ep_id)
    }

    /// The X.509-SVIDs of an attested workload (its default first) and the
    /// bundle's trust anchors; `None` if the endpoint is gone.
    pub fn x509_for(&self, who: &Attested) -> Option<(Vec<X509Svid>, Vec<Vec<u8>>)> {
        let view = self.read();
        let ep = view.endpoints.iter().find(|e| e.ep_id == who.ep_id)?;
        let svids: Vec<X509Svid> = ep
            .workload_id
            .iter()
            .filter_map(|id| view.held.get(id).map(|h| h.svid.clone()))
            .collect();
        Some((svids, view.anchors.clone()))
    }

    /// Whether the attested workload is entitled to an X.509-SVID that is
    /// still being signed.
    pub fn awaits_svid(&self, who: &Attested) -> bool {
        let view = self.read();
        view.endpoints
            .iter()
            .find(|e| e.ep_id == who.ep_id)
            .and_then(|e| e.workload_id.as_ref())
            .is_some_and(|id| !view.held.contains_key(id))
    }

    /// The trust anchors of the X.509 bundle.
    pub fn x509_anchors(&self) -> Vec<Vec<u8>> {
        self.read().anchors.clone()
    }

    /// The JWT bundle of the trust domain.
    pub fn jwt_bundle(&self) -> JwtBundle {
        self.read().jwt_bundle.clone()
    }

    /// Signs JWT-SVIDs for an attested workload (waits for a rotation in
    /// progress: call it off the async workers).
    pub fn jwt_for(
        &self,
        who: &Attested,
        audience: &[String],
        requested: Option<&SpiffeId>,
    ) -> Result<Vec<JwtSvid>, IdentityError> {
        let ids: Vec<SpiffeId> = {
            let view = self.read();
            let ep = view
                .endpoints
                .iter()
                .find(|e| e.ep_id == who.ep_id)
                .ok_or_else(|| IdentityError::Invalid("the endpoint is gone".to_owned()))?;
            ep.workload_id.iter().cloned().collect()
        };
        let ids: Vec<SpiffeId> = match requested {
            Some(r) if ids.contains(r) => vec![r.clone()],
            Some(r) => {
                return Err(IdentityError::Invalid(format!(
                    "the caller is not entitled to {r}"
                )))
            }
            None => ids,
        };
        if let Authority::Remote(remote) = &self.authority {
            return ids
                .iter()
                .map(|id| self.remote_jwt(remote, id, audience))
                .collect();
        }
        ids.iter()
            .map(|id| self.sign_jwt_local(id, audience))
            .collect()
    }

    /// Signs a JWT-SVID with this node's CA.
    pub(crate) fn sign_jwt_local(
        &self,
        id: &SpiffeId,
        audience: &[String],
    ) -> Result<JwtSvid, IdentityError> {
        let ttl = Duration::from_secs(self.config.jwt_svid_ttl_secs);
        let mut ca = self.lock_ca()?;
        let active = ca.cas.active()?;
        let svid = jwt::sign(
            id,
            audience,
            &active.jwt_key,
            &active.jwt_key_id(),
            now(),
            ttl,
        )?;
        if ca.cas.note_jwt_signed(svid.expiry, ttl)? {
            ca.save();
        }
        Ok(svid)
    }

    /// A JWT-SVID the node CA signed, checked against the JWT bundle.
    fn remote_jwt(
        &self,
        remote: &remote::RemoteCa,
        id: &SpiffeId,
        audience: &[String],
    ) -> Result<JwtSvid, IdentityError> {
        let token = remote.sign_jwt(id, audience)?;
        let first = audience.first().map(String::as_str).unwrap_or_default();
        let checked = self.validate_jwt(&token, first).map_err(|e| {
            IdentityError::NodeCa(format!(
                "the node CA signed a JWT-SVID that does not validate: {e}"
            ))
        })?;
        if &checked.spiffe_id != id {
            return Err(IdentityError::NodeCa(format!(
                "the node CA signed a JWT-SVID for {} (asked for {id})",
                checked.spiffe_id
            )));
        }
        let exp = checked
            .claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        Ok(JwtSvid {
            spiffe_id: checked.spiffe_id,
            token,
            audience: audience.to_vec(),
            expiry: SystemTime::UNIX_EPOCH + Duration::from_secs(exp),
        })
    }

    /// Signs an X.509-SVID with this node's CA for a key another node
    /// generated (the node CA); returns the chain and the signing
    /// generation.
    pub(crate) fn sign_for_key(
        &self,
        id: &SpiffeId,
        spki: &[u8],
    ) -> Result<(Vec<Vec<u8>>, u64), IdentityError> {
        let ttl = Duration::from_secs(self.config.svid_ttl_secs);
        let mut ca = self.lock_ca()?;
        let (chain, _, moved) = ca.cas.issue_x509_for_key(id, spki, now(), ttl)?;
        let generation = ca.cas.active()?.lifecycle.number;
        if moved {
            ca.save();
        }
        Ok((chain, generation))
    }

    /// Issues an X.509-SVID with this node's CA (the node CA's own).
    pub(crate) fn issue_local(&self, id: &SpiffeId) -> Result<X509Svid, IdentityError> {
        let ttl = Duration::from_secs(self.config.svid_ttl_secs);
        let mut ca = self.lock_ca()?;
        let (svid, moved) = ca.cas.issue_x509(id, now(), ttl)?;
        if moved {
            ca.save();
        }
        Ok(svid)
    }

    /// The bundle as the node CA hands it out.
    pub fn bundle_message(&self) -> proto::Bundle {
        let view = self.read();
        proto::Bundle {
            trust_domain: self.config.trust_domain.to_string(),
            x509_authorities: view.anchors.clone(),
            jwt_authorities: view.jwt_bundle.to_jwks(),
            active_generation: view.active_generation,
        }
    }

    /// The X.509 bundle the node CA's TLS verifiers read.
    pub fn trust(&self) -> &TrustBundle {
        &self.trust
    }

    /// Join tokens and admitted nodes, when this node serves the node CA.
    pub fn registry(&self) -> Option<Arc<Registry>> {
        self.registry.clone()
    }

    fn registry_or_err(&self) -> Result<&Registry, IdentityError> {
        self.registry.as_deref().ok_or_else(|| {
            IdentityError::Invalid(
                "this node does not serve the node CA (identity.node_ca_listen is not set)".into(),
            )
        })
    }

    /// Creates a join token for `node`, valid for `ttl`.
    pub fn create_join_token(
        &self,
        node: &str,
        ttl: Duration,
    ) -> Result<(String, node_ca::TokenRecord), IdentityError> {
        let (token, record) = self.registry_or_err()?.create_token(node, ttl, now())?;
        info!(node, token_id = %record.id, "created a join token");
        Ok((token, record))
    }

    /// Revokes a node: the node CA refuses it from now on.
    pub fn revoke_node(&self, node: &str) -> Result<(), IdentityError> {
        self.registry_or_err()?.revoke(node, now())?;
        warn!(
            node,
            "revoked a node: the node CA refuses it until it joins again"
        );
        Ok(())
    }

    /// The nodes and tokens the node CA knows.
    pub fn node_registry(&self) -> Result<node_ca::NodeRegistry, IdentityError> {
        Ok(self.registry_or_err()?.snapshot())
    }

    /// Validates a JWT-SVID against the trust domain's JWT bundle.
    pub fn validate_jwt(&self, token: &str, audience: &str) -> Result<ValidatedJwt, IdentityError> {
        let view = self.read();
        let bundle = &view.jwt_bundle;
        Ok(jwt::validate(
            token,
            audience,
            |td| (td == bundle.trust_domain()).then_some(bundle),
            now(),
        )?)
    }

    /// Issues X.509-SVIDs under the CA lock only; the caller puts them in
    /// the view.
    fn issue_all(
        &self,
        ca: &mut CaState,
        ids: &[SpiffeId],
        t: SystemTime,
    ) -> Vec<(SpiffeId, Held)> {
        let ttl = Duration::from_secs(self.config.svid_ttl_secs);
        let mut persist = false;
        let mut issued = Vec::with_capacity(ids.len());
        for id in ids {
            match ca.cas.issue_x509(id, t, ttl) {
                Ok((svid, moved)) => {
                    persist |= moved;
                    let generation = ca.cas.active().map_or(0, |g| g.lifecycle.number);
                    let renew_at = renewal_time(svid.not_before(), svid.not_after());
                    issued.push((
                        id.clone(),
                        Held {
                            svid,
                            renew_at,
                            generation,
                        },
                    ));
                }
                Err(e) => warn!(spiffe_id = %id, error = %e, "cannot issue an X.509-SVID"),
            }
        }
        if persist {
            ca.save();
        }
        issued
    }

    /// Replaces SVIDs that are still wanted (an endpoint may have gone
    /// while they were signed).
    fn store_issued(&self, issued: Vec<(SpiffeId, Held)>) {
        let mut view = self.write();
        for (id, held) in issued {
            if let Some(slot) = view.held.get_mut(&id) {
                *slot = held;
            }
        }
    }

    /// Adds SVIDs issued for endpoints that had none, if still wanted.
    fn store_new(&self, issued: Vec<(SpiffeId, Held)>) {
        let mut view = self.write();
        let wanted = wanted_ids(&view.endpoints);
        view.held
            .extend(issued.into_iter().filter(|(id, _)| wanted.contains(id)));
    }

    /// After rotation events: refreshes the bundle snapshots, re-issues
    /// every SVID when a new generation became active, then saves the CA.
    /// Returns whether anything changed.
    fn after_rotation(
        &self,
        ca: &mut CaState,
        events: &[RotationEvent],
        t: SystemTime,
    ) -> Result<bool, IdentityError> {
        if events.is_empty() {
            return Ok(false);
        }
        for event in events {
            info!(?event, trust_domain = %ca.cas.trust_domain(), "CA rotation");
        }
        {
            let mut view = self.write();
            view.anchors = anchors_of(&ca.cas);
            view.jwt_bundle = ca.cas.jwt_bundle();
            view.active_generation = ca.cas.active().map_or(0, |g| g.lifecycle.number);
            self.trust.set(ca.cas.x509_bundle());
        }
        if events
            .iter()
            .any(|e| matches!(e, RotationEvent::Activated { .. }))
        {
            let all: Vec<SpiffeId> = self.read().held.keys().cloned().collect();
            info!(
                count = all.len(),
                "re-issuing every X.509-SVID under the new CA"
            );
            let issued = self.issue_all(ca, &all, t);
            self.store_issued(issued);
        }
        // Last: what is served follows the CA in memory even when its
        // files cannot be written.
        ca.store.save(&ca.cas)?;
        Ok(true)
    }

    fn ca_status_of(&self, ca: &CaState) -> CaStatus {
        let generations = ca
            .cas
            .generations()
            .iter()
            .map(|g| CaGenerationRecord {
                number: g.lifecycle.number,
                stage: g.lifecycle.stage.as_str().to_owned(),
                key_id: ca::hex(g.authority.key_id()),
                jwt_key_id: g.jwt_key_id(),
                self_signed: g.authority.is_self_signed(),
                not_before: unix(g.authority.not_before()),
                not_after: unix(g.authority.not_after()),
                activate_after: (g.lifecycle.stage == ca::Stage::Prepared)
                    .then(|| unix(g.lifecycle.activate_after)),
                retired_at: g.lifecycle.retired_at.map(unix),
                dropped_after: (g.lifecycle.stage == ca::Stage::Retired)
                    .then(|| unix(g.lifecycle.signed_until.min(g.authority.not_after()))),
            })
            .collect();
        let view = self.read();
        CaStatus {
            trust_domain: ca.cas.trust_domain().to_string(),
            generations,
            bundle_pem: pem::encode_certificates(view.anchors.iter().map(Vec::as_slice)),
            svids_held: view.held.len(),
            workload_api_socket: self.config.workload_api_socket.display().to_string(),
            node_ca: self
                .config
                .node_ca_listen
                .map(|address| format!("serving the node CA on {address}")),
        }
    }

    fn remote_status(&self, remote: &remote::RemoteCa) -> CaStatus {
        let view = self.read();
        let node = match remote.node_svid() {
            Some((id, until)) => format!("node SVID {id} until {}", unix(until)),
            None => "not joined yet".to_owned(),
        };
        CaStatus {
            trust_domain: self.config.trust_domain.to_string(),
            generations: Vec::new(),
            bundle_pem: pem::encode_certificates(view.anchors.iter().map(Vec::as_slice)),
            svids_held: view.held.len(),
            workload_api_socket: self.config.workload_api_socket.display().to_string(),
            node_ca: Some(format!(
                "using the node CA at {} ({node})",
                remote.address()
            )),
        }
    }

    /// Renewal on a node that uses the node CA: the node SVID and bundle,
    /// then every SVID missing, due, or signed by a generation that is no
    /// longer active. Failures are retried within seconds.
    fn tick_remote(&self, remote: &remote::RemoteCa, t: SystemTime) -> SystemTime {
        let retry = t + Duration::from_secs(5);
        let bundle = match remote.refresh(t) {
            Ok(bundle) => bundle,
            Err(e) => {
                warn!(error = %e, "cannot reach the node CA; SVIDs held stay in use");
                return retry;
            }
        };
        let mut changed = false;
        let generation = bundle.active_generation;
        {
            let mut view = self.write();
            let anchors: Vec<Vec<u8>> = bundle
                .x509
                .authorities()
                .map(|(_, der)| der.to_vec())
                .collect();
            if view.anchors != anchors || view.jwt_bundle != bundle.jwt {
                view.anchors = anchors;
                view.jwt_bundle = bundle.jwt;
                changed = true;
            }
            view.active_generation = generation;
        }
        let due: Vec<SpiffeId> = {
            let view = self.read();
            let missing = wanted_ids(&view.endpoints)
                .into_iter()
                .filter(|id| !view.held.contains_key(id));
            let stale = view
                .held
                .iter()
                .filter(|(_, h)| h.renew_at <= t || h.generation != generation)
                .map(|(id, _)| id.clone());
            missing.chain(stale).collect()
        };
        let mut failed = false;
        let mut issued = Vec::with_capacity(due.len());
        for id in due {
            match remote.sign_x509(&id) {
                Ok(signed) => {
                    let renew_at = renewal_time(signed.svid.not_before(), signed.svid.not_after());
                    let held = Held {
                        svid: signed.svid,
                        renew_at,
                        generation: signed.generation,
                    };
                    issued.push((id, held));
                }
                Err(e) => {
                    warn!(spiffe_id = %id, error = %e, "the node CA did not sign an X.509-SVID");
                    failed = true;
                }
            }
        }
        if !issued.is_empty() {
            self.store_new(issued);
            changed = true;
        }
        if changed {
            self.publish();
        }
        if failed {
            // The node CA may not have seen a new endpoint in the cluster
            // store yet: ask again soon.
            return t + Duration::from_secs(1);
        }
        let renew = self.read().held.values().map(|h| h.renew_at).min();
        [renew, remote.node_renew_at()]
            .into_iter()
            .flatten()
            .fold(t + Duration::from_secs(30), SystemTime::min)
            .max(t + Duration::from_millis(100))
    }
}

/// The SPIFFE IDs of an endpoint: its workload's,
/// `ns/<namespace>/sa/<service account>` (`default` when it names none),
/// and its security identity's, `identity/<n>`. The node CA grants a node
/// exactly these for the endpoints the cluster store places on it.
pub fn endpoint_ids(
    td: &TrustDomain,
    namespace: &str,
    service_account: Option<&str>,
    identity: u32,
) -> (
    Result<SpiffeId, palisade_identity::SpiffeIdError>,
    Option<SpiffeId>,
) {
    let sa = service_account.unwrap_or("default");
    (
        td.id_with_segments(["ns", namespace, "sa", sa]),
        td.id_with_segments(["identity".to_owned(), identity.to_string()])
            .ok(),
    )
}

/// Every SPIFFE ID the endpoints need.
fn wanted_ids(endpoints: &[HostedEndpoint]) -> BTreeSet<SpiffeId> {
    endpoints
        .iter()
        .flat_map(|e| e.workload_id.iter().chain(e.identity_id.iter()))
        .cloned()
        .collect()
}

impl CaState {
    fn save(&self) {
        if let Err(e) = self.store.save(&self.cas) {
            warn!(error = %e, "cannot save the CA's lifecycle; it is kept in memory and saved at the next change");
        }
    }
}

impl View {
    fn record(&self, h: &Held) -> SvidRecord {
        let id = h.svid.spiffe_id();
        let endpoints = self
            .endpoints
            .iter()
            .filter(|e| e.workload_id.as_ref() == Some(id) || e.identity_id.as_ref() == Some(id))
            .map(|e| e.ep_id)
            .collect();
        SvidRecord {
            spiffe_id: id.to_string(),
            kind: if id.path().starts_with("/identity/") {
                "identity".to_owned()
            } else {
                "workload".to_owned()
            },
            endpoints,
            not_before: unix(h.svid.not_before()),
            not_after: unix(h.svid.not_after()),
            renew_at: unix(h.renew_at),
            ca_generation: h.generation,
        }
    }
}

fn anchors_of(cas: &CaSet) -> Vec<Vec<u8>> {
    cas.x509_anchors().into_iter().map(<[u8]>::to_vec).collect()
}

/// Renewal at a random point between 50% and 70% of the lifetime, so that
/// SVIDs issued together are not all renewed together.
pub(crate) fn renewal_time(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    let mut byte = [0u8; 2];
    // Without randomness the midpoint of the window is as good.
    let jitter = if ring::rand::SystemRandom::new().fill(&mut byte).is_ok() {
        f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX)
    } else {
        0.5
    };
    not_before + life.mul_f64(0.5 + 0.2 * jitter)
}

/// Runs rotation and renewal for as long as the agent runs. It wakes at
/// the next renewal or rotation step, and after every change (an operator's
/// rotation moves the next step closer).
pub async fn run_renewal(service: Arc<IdentityService>) {
    let mut changes = service.subscribe();
    loop {
        // Before the tick: a change published while it runs wakes the next
        // one (the tick's own publish costs one tick that finds nothing).
        changes.mark_unchanged();
        let next = {
            let service = service.clone();
            match tokio::task::spawn_blocking(move || service.tick()).await {
                Ok(next) => next,
                Err(e) => {
                    warn!(error = %e, "identity renewal panicked");
                    SystemTime::now() + Duration::from_secs(10)
                }
            }
        };
        let wait = next.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(ep_id: u16, td: &TrustDomain) -> HostedEndpoint {
        HostedEndpoint {
            ep_id,
            container_id: format!("c{ep_id}"),
            pod: format!("default/p{ep_id}"),
            netns: Some((1, u64::from(ep_id))),
            workload_id: td
                .id_with_segments(["ns", "default", "sa", &format!("sa{ep_id}")])
                .ok(),
            identity_id: td
                .id_with_segments(["identity".to_owned(), ep_id.to_string()])
                .ok(),
        }
    }

    #[test]
    fn readers_do_not_wait_for_the_ca() {
        let dir = std::env::temp_dir().join(format!("palisade-identity-{}", std::process::id()));
        let service = IdentityService::start(&IdentityConfig::default(), "n1", &dir).unwrap();
        let td = service.trust_domain().clone();
        service.set_endpoints(vec![endpoint(1, &td), endpoint(2, &td)]);
        assert_eq!(
            service.svid_list().len(),
            4,
            "a workload and an identity SVID each"
        );
        let caller = attest::CallerFacts {
            pid: 1,
            netns: (1, 2),
            cgroup: "/".to_owned(),
        };
        // While the CA is busy (a rotation re-signing everything holds it),
        // attestation and the Workload API's reads go on.
        let busy = service.lock_ca().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = service.clone();
        std::thread::spawn(move || {
            let who = reader.attest(&caller).unwrap();
            let svids = reader.x509_for(&who).map(|(svids, _)| svids.len());
            let _ = tx.send((who.ep_id, svids, reader.jwt_bundle().keys().len()));
        });
        let seen = rx.recv_timeout(Duration::from_secs(10));
        drop(busy);
        assert_eq!(seen.unwrap(), (2, Some(1), 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn endpoints_added_while_the_ca_is_busy_get_their_svids_from_the_tick() {
        let dir =
            std::env::temp_dir().join(format!("palisade-identity-busy-{}", std::process::id()));
        let service = IdentityService::start(&IdentityConfig::default(), "n1", &dir).unwrap();
        let td = service.trust_domain().clone();
        let busy = service.lock_ca().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let agent = service.clone();
        let endpoints = vec![endpoint(1, &td)];
        std::thread::spawn(move || {
            agent.set_endpoints(endpoints);
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("set_endpoints must not wait for a busy CA");
        drop(busy);
        assert!(service.svid_list().is_empty());
        let who = Attested {
            ep_id: 1,
            pod: "default/p1".into(),
        };
        assert!(service.awaits_svid(&who));
        service.tick();
        assert_eq!(service.svid_list().len(), 2);
        assert!(!service.awaits_svid(&who));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_rotation_reissues_every_svid_and_extends_the_bundle() {
        let dir =
            std::env::temp_dir().join(format!("palisade-identity-rot-{}", std::process::id()));
        let service = IdentityService::start(&IdentityConfig::default(), "n1", &dir).unwrap();
        let td = service.trust_domain().clone();
        service.set_endpoints(vec![endpoint(1, &td)]);
        let status = service.rotate(true).unwrap();
        assert_eq!(status.generations.len(), 2);
        assert!(service.svid_list().iter().all(|s| s.ca_generation == 2));
        assert_eq!(service.x509_anchors().len(), 2);
        assert_eq!(service.jwt_bundle().keys().len(), 2);
        service.set_endpoints(Vec::new());
        assert!(
            service.svid_list().is_empty(),
            "SVIDs go with their endpoints"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn renewal_falls_between_half_and_seventy_percent() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let end = start + Duration::from_secs(3600);
        for _ in 0..200 {
            let at = renewal_time(start, end);
            assert!(at >= start + Duration::from_secs(1800), "{at:?}");
            assert!(at <= start + Duration::from_secs(2520), "{at:?}");
        }
    }
}
