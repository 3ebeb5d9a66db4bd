//! The CA node's side of the node CA: signing for other nodes with the
//! local CA, but only identities the cluster store places on the caller,
//! and the server's own SVID, `spiffe://<td>/palisade/ca`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use palisade_cluster::Session;
use palisade_identity::node_ca::{self, proto, NodeCaService, Registry};
use palisade_identity::tls::{self, CertifiedKey, SvidSource};
use palisade_identity::SpiffeId;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::{endpoint_ids, renewal_time, IdentityService};

/// Signs for other nodes with this node's CA.
pub struct CaSigner {
    service: Arc<IdentityService>,
    session: Session,
    /// The server's SVID and when it is renewed. Renewed by
    /// [`CaSigner::refresh`] off the async workers; handshakes only read
    /// it. It is not replaced at a CA rotation: nodes that have not yet
    /// fetched the new bundle must still recognize the server.
    server: Mutex<Option<(Arc<CertifiedKey>, SystemTime)>>,
}

impl CaSigner {
    /// Signs with `service`'s CA for the nodes `session` knows.
    pub fn new(service: Arc<IdentityService>, session: Session) -> Self {
        Self {
            service,
            session,
            server: Mutex::new(None),
        }
    }
}

impl node_ca::Signer for CaSigner {
    fn sign_x509(&self, id: &SpiffeId, spki: &[u8]) -> Result<(Vec<Vec<u8>>, u64), String> {
        self.service
            .sign_for_key(id, spki)
            .map_err(|e| e.to_string())
    }

    fn sign_jwt(&self, id: &SpiffeId, audience: &[String]) -> Result<String, String> {
        self.service
            .sign_jwt_local(id, audience)
            .map(|svid| svid.token)
            .map_err(|e| e.to_string())
    }

    fn bundle(&self) -> proto::Bundle {
        self.service.bundle_message()
    }

    fn hosted(&self, node: &str) -> BTreeSet<SpiffeId> {
        let td = self.service.trust_domain();
        self.session
            .endpoints_on(node)
            .iter()
            .flat_map(|e| {
                let (workload, identity) = endpoint_ids(
                    td,
                    &e.namespace,
                    e.service_account.as_deref(),
                    e.identity.get(),
                );
                [workload.ok(), identity]
            })
            .flatten()
            .collect()
    }
}

impl CaSigner {
    /// Issues the server's SVID when it has none or it is due (may wait
    /// for the CA: call off the async workers); returns when to call again.
    fn refresh(&self) -> SystemTime {
        let now = SystemTime::now();
        let due = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, renew_at)| *renew_at);
        if let Some(renew_at) = due.filter(|at| *at > now) {
            return renew_at;
        }
        let retry = now + Duration::from_secs(5);
        let Ok(id) = node_ca::server_id(self.service.trust_domain()) else {
            return retry;
        };
        let svid = match self.service.issue_local(&id) {
            Ok(svid) => svid,
            Err(e) => {
                warn!(error = %e, "cannot issue the node CA's server SVID");
                return retry;
            }
        };
        match tls::certified_key(&svid) {
            Ok(key) => {
                let renew_at = renewal_time(svid.not_before(), svid.not_after());
                *self.server.lock().unwrap_or_else(PoisonError::into_inner) = Some((key, renew_at));
                renew_at
            }
            Err(e) => {
                warn!(error = %e, "the node CA's server SVID is not usable");
                retry
            }
        }
    }
}

impl SvidSource for CaSigner {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(key, _)| key.clone())
    }
}

/// Keeps the server's SVID current for as long as the node CA serves.
async fn run_server_svid(signer: Arc<CaSigner>) {
    loop {
        let s = signer.clone();
        let next = tokio::task::spawn_blocking(move || s.refresh())
            .await
            .unwrap_or_else(|_| SystemTime::now() + Duration::from_secs(5));
        let wait = next.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
    }
}

/// Serves the node CA on `address` until `shutdown` completes.
pub async fn serve_node_ca(
    service: Arc<IdentityService>,
    session: Session,
    registry: Arc<Registry>,
    address: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    let trust = service.trust().clone();
    let signer = Arc::new(CaSigner::new(service.clone(), session));
    let first = signer.clone();
    tokio::task::spawn_blocking(move || first.refresh())
        .await
        .map_err(|e| format!("the node CA's server SVID: {e}"))?;
    let tls = tls::server_config(signer.clone(), trust.clone(), false)
        .map_err(|e| format!("node CA TLS configuration: {e}"))?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} for the node CA: {e}"))?;
    info!(%address, trust_domain = %service.trust_domain(), "node CA ready");
    let renewal = tokio::spawn(run_server_svid(signer.clone()));
    let node_ca = NodeCaService::new(service.trust_domain().clone(), signer, registry, trust);
    let served = node_ca::serve(listener, Arc::new(tls), node_ca, shutdown)
        .await
        .map_err(|e| format!("the node CA server failed: {e}"));
    renewal.abort();
    served
}
