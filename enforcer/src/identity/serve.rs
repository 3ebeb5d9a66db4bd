//! The CA node's side of the node CA: signing for other nodes with the
//! local CA, but only identities the cluster store places on the caller,
//! and the server's own SVID, `spiffe://<td>/palisade/ca`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

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
    /// The server's SVID, its renewal time and the CA generation that
    /// signed it.
    server: Mutex<Option<(Arc<CertifiedKey>, SystemTime, u64)>>,
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

impl SvidSource for CaSigner {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let now = SystemTime::now();
        let generation = self.service.active_generation();
        let mut server = self.server.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((key, renew_at, signed_by)) = server.as_ref() {
            if *renew_at > now && *signed_by == generation {
                return Some(key.clone());
            }
        }
        let id = node_ca::server_id(self.service.trust_domain()).ok()?;
        let svid = self
            .service
            .issue_local(&id)
            .map_err(|e| warn!(error = %e, "cannot issue the node CA's server SVID"))
            .ok()?;
        let key = tls::certified_key(&svid)
            .map_err(|e| warn!(error = %e, "the node CA's server SVID is not usable"))
            .ok()?;
        let renew_at = renewal_time(svid.not_before(), svid.not_after());
        *server = Some((key.clone(), renew_at, generation));
        Some(key)
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
    let tls = tls::server_config(signer.clone(), trust.clone(), false)
        .map_err(|e| format!("node CA TLS configuration: {e}"))?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} for the node CA: {e}"))?;
    info!(%address, trust_domain = %service.trust_domain(), "node CA ready");
    let node_ca = NodeCaService::new(service.trust_domain().clone(), signer, registry, trust);
    node_ca::serve(listener, Arc::new(tls), node_ca, shutdown)
        .await
        .map_err(|e| format!("the node CA server failed: {e}"))
}
