//! SPIFFE identity on this node: the CA, the SVIDs of the endpoints it
//! hosts, their renewal, and what the Workload API hands out.
//!
//! The CA lives in the agent (`<state_dir>/ca`, keys 0600). Every endpoint
//! gets the X.509-SVID of its workload, `spiffe://<td>/ns/<ns>/sa/<sa>`;
//! the agent also holds `spiffe://<td>/identity/<n>` for every security
//! identity it hosts (mutual authentication between nodes). SVIDs are
//! renewed at 50-70% of their lifetime (jittered) and re-issued at once when
//! a new CA generation becomes active.

pub mod attest;
mod provider;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use palisade_api::{CaGenerationRecord, CaStatus, SvidRecord};
use palisade_identity::ca::{self, CaSet, CaStore, RotationEvent, RotationPolicy};
use palisade_identity::jwt::{self, JwtBundle, JwtSvid, ValidatedJwt};
use palisade_identity::x509::X509Svid;
use palisade_identity::{pem, SpiffeId, TrustDomain};
use ring::rand::SecureRandom as _;
use tokio::sync::watch;
use tracing::{info, warn};

pub use attest::{Attested, HostedEndpoint};
pub use provider::Provider;

use crate::config::IdentityConfig;

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
pub struct IdentityService {
    inner: Mutex<Inner>,
    /// Bumped after every change of SVIDs, bundles or endpoints.
    changes: watch::Sender<Revision>,
    trust_domain: TrustDomain,
}

struct Inner {
    config: IdentityConfig,
    policy: RotationPolicy,
    store: CaStore,
    cas: CaSet,
    endpoints: Vec<HostedEndpoint>,
    /// Every SVID held, by SPIFFE ID.
    held: BTreeMap<SpiffeId, Held>,
    revision: Revision,
}

fn now() -> SystemTime {
    SystemTime::now()
}

impl IdentityService {
    /// Loads the CA from `<state_dir>/ca` (or creates it: a self-signed CA,
    /// or the operator's).
    pub fn start(config: &IdentityConfig, state_dir: &Path) -> Result<Arc<Self>, IdentityError> {
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
        let (changes, _) = watch::channel(0);
        Ok(Arc::new(Self {
            inner: Mutex::new(Inner {
                config: config.clone(),
                policy,
                store,
                cas,
                endpoints: Vec::new(),
                held: BTreeMap::new(),
                revision: 0,
            }),
            changes,
            trust_domain: td,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, inner: &mut Inner) {
        inner.revision += 1;
        self.changes.send_replace(inner.revision);
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// A receiver that changes whenever SVIDs, bundles or endpoints do.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.changes.subscribe()
    }

    /// Sets the endpoints this node hosts: issues the SVIDs they need and
    /// drops those nobody needs any more.
    pub fn set_endpoints(&self, endpoints: Vec<HostedEndpoint>) {
        let mut inner = self.lock();
        inner.endpoints = endpoints;
        let t = now();
        inner.sync_held(t);
        self.publish(&mut inner);
    }

    /// Advances rotation and renewal; returns when to call again.
    pub fn tick(&self) -> SystemTime {
        let mut inner = self.lock();
        let t = now();
        let changed = inner.tick(t);
        if changed {
            self.publish(&mut inner);
        }
        inner.next_tick(t)
    }

    /// Starts a CA rotation (`immediately`: the new CA signs at once).
    pub fn rotate(&self, immediately: bool) -> Result<CaStatus, IdentityError> {
        let mut inner = self.lock();
        let t = now();
        let policy = inner.policy;
        let events = inner.cas.rotate(t, immediately, &policy)?;
        inner.after_rotation(&events, t)?;
        self.publish(&mut inner);
        Ok(inner.ca_status())
    }

    /// The CA's generations and bundle.
    pub fn ca_status(&self) -> CaStatus {
        self.lock().ca_status()
    }

    /// Every SVID the node holds.
    pub fn svid_list(&self) -> Vec<SvidRecord> {
        let inner = self.lock();
        inner.held.values().map(|h| inner.record(h)).collect()
    }

    /// One SVID, with its certificate chain (PEM, no key).
    pub fn svid_inspect(&self, id: &str) -> Result<(SvidRecord, String), IdentityError> {
        let id: SpiffeId = id
            .parse()
            .map_err(|e| IdentityError::Invalid(format!("{id:?} is not a SPIFFE ID: {e}")))?;
        let inner = self.lock();
        let held = inner
            .held
            .get(&id)
            .ok_or_else(|| IdentityError::Invalid(format!("this node holds no SVID for {id}")))?;
        let chain = pem::encode_certificates(held.svid.chain().iter().map(Vec::as_slice));
        Ok((inner.record(held), chain))
    }

    /// Finds the endpoint a caller belongs to.
    pub fn attest(&self, facts: &attest::CallerFacts) -> Result<Attested, attest::AttestError> {
        let inner = self.lock();
        attest::match_endpoint(facts, &inner.endpoints)
    }

    /// The X.509-SVIDs of an attested workload (its default first) and the
    /// bundle's trust anchors; `None` if the endpoint is gone.
    pub fn x509_for(&self, who: &Attested) -> Option<(Vec<X509Svid>, Vec<Vec<u8>>)> {
        let inner = self.lock();
        let ep = inner.endpoints.iter().find(|e| e.ep_id == who.ep_id)?;
        let svids: Vec<X509Svid> = ep
            .workload_id
            .iter()
            .filter_map(|id| inner.held.get(id).map(|h| h.svid.clone()))
            .collect();
        Some((svids, inner.anchors()))
    }

    /// The trust anchors of the X.509 bundle.
    pub fn x509_anchors(&self) -> Vec<Vec<u8>> {
        self.lock().anchors()
    }

    /// The JWT bundle of the trust domain.
    pub fn jwt_bundle(&self) -> JwtBundle {
        self.lock().jwt_bundle()
    }

    /// Signs JWT-SVIDs for an attested workload.
    pub fn jwt_for(
        &self,
        who: &Attested,
        audience: &[String],
        requested: Option<&SpiffeId>,
    ) -> Result<Vec<JwtSvid>, IdentityError> {
        let mut inner = self.lock();
        let ep = inner
            .endpoints
            .iter()
            .find(|e| e.ep_id == who.ep_id)
            .ok_or_else(|| IdentityError::Invalid("the endpoint is gone".to_owned()))?;
        let ids: Vec<SpiffeId> = ep.workload_id.iter().cloned().collect();
        let ids: Vec<SpiffeId> = match requested {
            Some(r) if ids.contains(r) => vec![r.clone()],
            Some(r) => {
                return Err(IdentityError::Invalid(format!(
                    "the caller is not entitled to {r}"
                )))
            }
            None => ids,
        };
        let t = now();
        let ttl = Duration::from_secs(inner.config.jwt_svid_ttl_secs);
        let mut out = Vec::with_capacity(ids.len());
        let mut persist = false;
        for id in &ids {
            let active = inner.cas.active()?;
            let svid = jwt::sign(id, audience, &active.jwt_key, &active.jwt_key_id(), t, ttl)?;
            persist |= inner.cas.note_jwt_signed(svid.expiry, ttl)?;
            out.push(svid);
        }
        if persist {
            inner.save();
        }
        Ok(out)
    }

    /// Validates a JWT-SVID against the trust domain's JWT bundle.
    pub fn validate_jwt(&self, token: &str, audience: &str) -> Result<ValidatedJwt, IdentityError> {
        let bundle = self.jwt_bundle();
        Ok(jwt::validate(
            token,
            audience,
            |td| (td == bundle.trust_domain()).then_some(&bundle),
            now(),
        )?)
    }
}

impl Inner {
    fn anchors(&self) -> Vec<Vec<u8>> {
        self.cas
            .x509_anchors()
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn jwt_bundle(&self) -> JwtBundle {
        let mut bundle = JwtBundle::new(self.cas.trust_domain().clone());
        for g in self.cas.generations() {
            bundle.insert_p256(g.jwt_key_id(), g.jwt_key.public_point());
        }
        bundle
    }

    fn save(&self) {
        if let Err(e) = self.store.save(&self.cas) {
            warn!(error = %e, "cannot save the CA's lifecycle; it is kept in memory and saved at the next change");
        }
    }

    /// The SPIFFE IDs the hosted endpoints need.
    fn wanted(&self) -> BTreeSet<SpiffeId> {
        self.endpoints
            .iter()
            .flat_map(|e| e.workload_id.iter().chain(e.identity_id.iter()))
            .cloned()
            .collect()
    }

    fn sync_held(&mut self, t: SystemTime) {
        let wanted = self.wanted();
        self.held.retain(|id, _| wanted.contains(id));
        let missing: Vec<SpiffeId> = wanted
            .into_iter()
            .filter(|id| !self.held.contains_key(id))
            .collect();
        self.issue_all(&missing, t);
    }

    fn issue_all(&mut self, ids: &[SpiffeId], t: SystemTime) {
        let ttl = Duration::from_secs(self.config.svid_ttl_secs);
        let mut persist = false;
        for id in ids {
            match self.cas.issue_x509(id, t, ttl) {
                Ok((svid, moved)) => {
                    persist |= moved;
                    let generation = self.cas.active().map_or(0, |g| g.lifecycle.number);
                    let renew_at = renewal_time(svid.not_before(), svid.not_after());
                    self.held.insert(
                        id.clone(),
                        Held {
                            svid,
                            renew_at,
                            generation,
                        },
                    );
                }
                Err(e) => warn!(spiffe_id = %id, error = %e, "cannot issue an X.509-SVID"),
            }
        }
        if persist {
            self.save();
        }
    }

    fn tick(&mut self, t: SystemTime) -> bool {
        let policy = self.policy;
        let events = match self.cas.tick(t, &policy) {
            Ok(events) => events,
            Err(e) => {
                warn!(error = %e, "CA rotation failed");
                Vec::new()
            }
        };
        let mut changed = !events.is_empty();
        if let Err(e) = self.after_rotation(&events, t) {
            warn!(error = %e, "cannot save the CA after a rotation");
        }
        let due: Vec<SpiffeId> = self
            .held
            .iter()
            .filter(|(_, h)| h.renew_at <= t)
            .map(|(id, _)| id.clone())
            .collect();
        if !due.is_empty() {
            info!(count = due.len(), "renewing X.509-SVIDs");
            self.issue_all(&due, t);
            changed = true;
        }
        changed
    }

    fn after_rotation(
        &mut self,
        events: &[RotationEvent],
        t: SystemTime,
    ) -> Result<(), IdentityError> {
        if events.is_empty() {
            return Ok(());
        }
        for event in events {
            info!(?event, trust_domain = %self.cas.trust_domain(), "CA rotation");
        }
        self.store.save(&self.cas)?;
        if events
            .iter()
            .any(|e| matches!(e, RotationEvent::Activated { .. }))
        {
            let all: Vec<SpiffeId> = self.held.keys().cloned().collect();
            info!(
                count = all.len(),
                "re-issuing every X.509-SVID under the new CA"
            );
            self.issue_all(&all, t);
        }
        Ok(())
    }

    fn next_tick(&self, t: SystemTime) -> SystemTime {
        let renew = self.held.values().map(|h| h.renew_at).min();
        let ca = self.cas.next_tick();
        [renew, ca]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(t + Duration::from_secs(60))
            .min(t + Duration::from_secs(60))
            .max(t + Duration::from_millis(100))
    }

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

    fn ca_status(&self) -> CaStatus {
        let generations = self
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
        let anchors = self.anchors();
        CaStatus {
            trust_domain: self.cas.trust_domain().to_string(),
            generations,
            bundle_pem: pem::encode_certificates(anchors.iter().map(Vec::as_slice)),
            svids_held: self.held.len(),
            workload_api_socket: self.config.workload_api_socket.display().to_string(),
        }
    }
}

/// Renewal at a random point between 50% and 70% of the lifetime, so that
/// SVIDs issued together are not all renewed together.
fn renewal_time(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
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

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs rotation and renewal for as long as the agent runs. It wakes at
/// the next renewal or rotation step, and after every change (an operator's
/// rotation moves the next step closer).
pub async fn run_renewal(service: Arc<IdentityService>) {
    let mut changes = service.subscribe();
    loop {
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
        changes.mark_unchanged();
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
