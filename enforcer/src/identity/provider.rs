//! The Workload API's view of the identity service: attestation through
//! `/proc`, and per-workload subscriptions that follow every change.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use palisade_identity::workload_api::{
    Entitlement, JwtSvidToken, PeerCredentials, ProviderError, TrustBundles, ValidatedJwtSvid,
    WorkloadProvider, X509Context,
};
use palisade_identity::SpiffeId;
use tokio::sync::watch;
use tracing::debug;

use super::attest::{self, Attested};
use super::{IdentityError, IdentityService};

/// Serves the Workload API from the node's identity service.
pub struct Provider {
    service: Arc<IdentityService>,
}

impl Provider {
    /// A provider over `service`.
    pub fn new(service: Arc<IdentityService>) -> Self {
        Self { service }
    }

    /// A watch that recomputes `compute` after every change of the service
    /// and sends it when it differs; it stops when every receiver is gone.
    fn follow<T>(
        &self,
        compute: impl Fn(&IdentityService) -> T + Send + 'static,
    ) -> watch::Receiver<T>
    where
        T: PartialEq + Send + Sync + 'static,
    {
        let service = self.service.clone();
        let mut changes = service.subscribe();
        let (tx, rx) = watch::channel(compute(&service));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => break,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let next = compute(&service);
                        tx.send_if_modified(|current| {
                            let differs = *current != next;
                            if differs {
                                *current = next;
                            }
                            differs
                        });
                    }
                }
            }
        });
        rx
    }
}

impl fmt::Display for Attested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint {} ({})", self.ep_id, self.pod)
    }
}

fn denied(e: impl fmt::Display) -> ProviderError {
    ProviderError::NotEntitled {
        reason: e.to_string(),
    }
}

fn x509_context(service: &IdentityService, who: &Attested) -> Entitlement<X509Context> {
    let Some((svids, anchors)) = service.x509_for(who) else {
        return Entitlement::Denied;
    };
    if svids.is_empty() && service.awaits_svid(who) {
        // The node CA has not signed it yet: the stream waits for it.
        return Entitlement::Pending;
    }
    let bundles = BTreeMap::from([(service.trust_domain().clone(), anchors)]);
    match X509Context::new(svids, bundles) {
        Ok(context) => Entitlement::Granted(context),
        Err(e) => {
            debug!(workload = %who, error = %e, "no X.509 context for the workload");
            Entitlement::Denied
        }
    }
}

fn bundles(service: &IdentityService, who: &Attested) -> Entitlement<TrustBundles> {
    if !service.hosts(who) {
        return Entitlement::Denied;
    }
    let td = service.trust_domain().clone();
    let x509 = BTreeMap::from([(td.clone(), service.x509_anchors())]);
    let jwt = BTreeMap::from([(td, service.jwt_bundle().to_jwks())]);
    TrustBundles::new(x509, jwt).map_or(Entitlement::Denied, Entitlement::Granted)
}

impl WorkloadProvider for Provider {
    type Workload = Attested;

    async fn attest(&self, caller: &PeerCredentials) -> Result<Attested, ProviderError> {
        let facts = attest::read_caller(caller.pid(), caller.pidfd()).map_err(denied)?;
        self.service.attest(&facts).map_err(denied)
    }

    fn watch_x509_context(&self, workload: &Attested) -> watch::Receiver<Entitlement<X509Context>> {
        let who = workload.clone();
        self.follow(move |service| x509_context(service, &who))
    }

    fn watch_bundles(&self, workload: &Attested) -> watch::Receiver<Entitlement<TrustBundles>> {
        let who = workload.clone();
        self.follow(move |service| bundles(service, &who))
    }

    async fn fetch_jwt_svids(
        &self,
        workload: &Attested,
        audience: &[String],
        spiffe_id: Option<&SpiffeId>,
    ) -> Result<Vec<JwtSvidToken>, ProviderError> {
        // Signing waits for a CA rotation in progress: not on an async worker.
        let service = self.service.clone();
        let (who, audience, requested) = (workload.clone(), audience.to_vec(), spiffe_id.cloned());
        let signed = tokio::task::spawn_blocking(move || {
            service.jwt_for(&who, &audience, requested.as_ref())
        })
        .await
        .map_err(|e| ProviderError::Unavailable {
            reason: format!("JWT-SVID signing failed: {e}"),
            source: None,
        })?;
        let svids = signed.map_err(|e| match e {
            IdentityError::Invalid(_) => denied(e),
            other => ProviderError::Unavailable {
                reason: other.to_string(),
                source: None,
            },
        })?;
        svids
            .into_iter()
            .map(|s| JwtSvidToken::new(s.spiffe_id, s.token).map_err(denied))
            .collect()
    }

    async fn validate_jwt_svid(
        &self,
        _workload: &Attested,
        audience: &str,
        token: &str,
    ) -> Result<ValidatedJwtSvid, ProviderError> {
        let valid = self.service.validate_jwt(token, audience).map_err(|e| {
            ProviderError::InvalidJwtSvid {
                reason: e.to_string(),
            }
        })?;
        ValidatedJwtSvid::new(valid.spiffe_id, valid.claims).map_err(|e| {
            ProviderError::InvalidJwtSvid {
                reason: e.to_string(),
            }
        })
    }
}
