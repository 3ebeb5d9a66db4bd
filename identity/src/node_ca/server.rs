//! The node CA's gRPC service over TLS 1.3, and who may call what.
//!
//! | RPC | caller | granted when |
//! |---|---|---|
//! | Join | anyone | the join token is valid and unused |
//! | RenewNode | a node SVID | the node is admitted (joined, not revoked, SVID of its latest join) |
//! | SignX509Svid, SignJwtSvid | a node SVID | admitted, and an endpoint with that identity is on the node |
//! | FetchBundle | a node SVID | admitted |
//!
//! Refusals are `Unauthenticated` (no or an unknown SVID) or
//! `PermissionDenied` (a known node asking for what it may not have), with
//! a message that names the node and the identity, never a key.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::proto::node_ca_server::{NodeCa, NodeCaServer};
use super::proto::{
    Bundle, FetchBundleRequest, JoinRequest, NodeSvidResponse, RenewNodeRequest,
    SignJwtSvidRequest, SignJwtSvidResponse, SignX509SvidRequest, SignX509SvidResponse,
};
use super::registry::Registry;
use super::{csr, is_reserved, node_id, node_name_of};
use crate::attached::Attached;
use crate::tls::{self, TrustBundle};
use crate::x509::VerifiedSvid;
use crate::{SpiffeId, TrustDomain};

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the service needs from the CA's owner.
pub trait Signer: Send + Sync + 'static {
    /// Signs an X.509-SVID for `id` and the public key `spki` (DER);
    /// returns the chain, leaf first, and the CA generation that signed.
    /// May block (the CA may be busy with a rotation).
    fn sign_x509(&self, id: &SpiffeId, spki: &[u8]) -> Result<(Vec<Vec<u8>>, u64), String>;
    /// Signs a JWT-SVID for `id`. May block.
    fn sign_jwt(&self, id: &SpiffeId, audience: &[String]) -> Result<String, String>;
    /// The trust domain's bundle.
    fn bundle(&self) -> Bundle;
    /// The SPIFFE IDs of the endpoints the cluster store places on `node`.
    fn hosted(&self, node: &str) -> BTreeSet<SpiffeId>;
}

/// What the TLS handshake established about a connection's client.
#[derive(Clone, Debug)]
pub struct PeerSvid(Option<VerifiedSvid>);

/// A TLS connection with the client's verified SVID.
type PeerStream = Attached<TlsStream<TcpStream>, PeerSvid>;

/// The service.
pub struct NodeCaService<S> {
    signer: Arc<S>,
    registry: Arc<Registry>,
    trust: TrustBundle,
    td: TrustDomain,
}

impl<S: Signer> NodeCaService<S> {
    /// A service signing with `signer`, admitting the nodes of `registry`,
    /// verifying node SVIDs against `trust`.
    pub fn new(
        td: TrustDomain,
        signer: Arc<S>,
        registry: Arc<Registry>,
        trust: TrustBundle,
    ) -> Self {
        Self {
            signer,
            registry,
            trust,
            td,
        }
    }

    /// The admitted node a request comes from.
    fn caller<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let peer = request
            .extensions()
            .get::<PeerSvid>()
            .and_then(|p| p.0.as_ref())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "no node SVID was presented; a node without one can only Join",
                )
            })?;
        // Verified at the handshake; a long-lived connection outlives it.
        if peer.not_after() <= SystemTime::now() {
            return Err(Status::unauthenticated(format!(
                "the SVID of {} expired; reconnect with a current one",
                peer.spiffe_id()
            )));
        }
        let node = node_name_of(&self.td, peer.spiffe_id()).ok_or_else(|| {
            Status::permission_denied(format!("{} is not a node's SPIFFE ID", peer.spiffe_id()))
        })?;
        self.registry
            .admitted(node, peer.not_before())
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        Ok(node.to_owned())
    }

    /// A node may hold `id` only while an endpoint with it is on the node.
    fn check_hosted(&self, node: &str, id: &str) -> Result<SpiffeId, Status> {
        let id: SpiffeId = id
            .parse()
            .map_err(|e| Status::invalid_argument(format!("{id:?} is not a SPIFFE ID: {e}")))?;
        if id.trust_domain() != &self.td {
            return Err(Status::permission_denied(format!(
                "{id} is not in trust domain {}",
                self.td
            )));
        }
        if is_reserved(&id) || !self.signer.hosted(node).contains(&id) {
            warn!(node, spiffe_id = %id, "refused an SVID for an identity the node does not host");
            return Err(Status::permission_denied(format!(
                "node {node} hosts no endpoint with identity {id}"
            )));
        }
        Ok(id)
    }

    /// Signs for `spki`, a key [`verified_key`] returned: each RPC checks
    /// its request once.
    async fn sign_x509(&self, id: SpiffeId, spki: Vec<u8>) -> Result<(Vec<Vec<u8>>, u64), Status> {
        let signer = self.signer.clone();
        tokio::task::spawn_blocking(move || signer.sign_x509(&id, &spki))
            .await
            .map_err(|e| Status::internal(format!("signing failed: {e}")))?
            .map_err(Status::internal)
    }

    async fn node_svid(&self, node: &str, spki: Vec<u8>) -> Result<NodeSvidResponse, Status> {
        let id = node_id(&self.td, node)
            .map_err(|e| Status::invalid_argument(format!("node {node:?}: {e}")))?;
        let (chain, _) = self.sign_x509(id.clone(), spki).await?;
        Ok(NodeSvidResponse {
            spiffe_id: id.to_string(),
            chain,
            bundle: Some(self.signer.bundle()),
        })
    }
}

#[tonic::async_trait]
impl<S: Signer> NodeCa for NodeCaService<S> {
    async fn join(
        &self,
        request: Request<JoinRequest>,
    ) -> Result<Response<NodeSvidResponse>, Status> {
        let request = request.into_inner();
        // The key is checked before the token is spent.
        let spki = verified_key(&request.csr)?;
        let node = self
            .registry
            .redeem(&request.token, SystemTime::now())
            .map_err(|e| {
                warn!(error = %e, "refused a join");
                Status::unauthenticated(e.to_string())
            })?;
        let response = self.node_svid(&node, spki).await?;
        info!(node, "a node joined");
        Ok(Response::new(response))
    }

    async fn renew_node(
        &self,
        request: Request<RenewNodeRequest>,
    ) -> Result<Response<NodeSvidResponse>, Status> {
        let node = self.caller(&request)?;
        let spki = verified_key(&request.into_inner().csr)?;
        let response = self.node_svid(&node, spki).await?;
        debug!(node, "renewed a node SVID");
        Ok(Response::new(response))
    }

    async fn sign_x509_svid(
        &self,
        request: Request<SignX509SvidRequest>,
    ) -> Result<Response<SignX509SvidResponse>, Status> {
        let node = self.caller(&request)?;
        let request = request.into_inner();
        let id = self.check_hosted(&node, &request.spiffe_id)?;
        let spki = verified_key(&request.csr)?;
        let (chain, generation) = self.sign_x509(id, spki).await?;
        Ok(Response::new(SignX509SvidResponse { chain, generation }))
    }

    async fn sign_jwt_svid(
        &self,
        request: Request<SignJwtSvidRequest>,
    ) -> Result<Response<SignJwtSvidResponse>, Status> {
        let node = self.caller(&request)?;
        let request = request.into_inner();
        let id = self.check_hosted(&node, &request.spiffe_id)?;
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("a JWT-SVID needs an audience"));
        }
        let signer = self.signer.clone();
        let token = tokio::task::spawn_blocking(move || signer.sign_jwt(&id, &request.audience))
            .await
            .map_err(|e| Status::internal(format!("signing failed: {e}")))?
            .map_err(Status::internal)?;
        Ok(Response::new(SignJwtSvidResponse { token }))
    }

    async fn fetch_bundle(
        &self,
        request: Request<FetchBundleRequest>,
    ) -> Result<Response<Bundle>, Status> {
        self.caller(&request)?;
        Ok(Response::new(self.signer.bundle()))
    }
}

/// The key a certificate request proves possession of (DER SPKI).
fn verified_key(csr_der: &[u8]) -> Result<Vec<u8>, Status> {
    csr::verified_key(csr_der).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Accepts TLS connections on `listener` (handshakes concurrently, each
/// bounded) and serves `service` on them until `shutdown` completes.
pub async fn serve<S: Signer>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: NodeCaService<S>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let trust = service.trust.clone();
    let (tx, rx) = mpsc::channel::<io::Result<PeerStream>>(64);
    let acceptor = TlsAcceptor::from(tls);
    let accept = tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    warn!(error = %e, "node CA: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // gRPC answers in several small writes: without this, Nagle
            // holds each answer's tail for the client's delayed ACK (40 ms).
            if let Err(e) = tcp.set_nodelay(true) {
                debug!(peer = %addr, error = %e, "node CA: cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let trust = trust.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(stream) = handshake(acceptor, trust, tcp, addr).await {
                    let _ = tx.send(Ok(stream)).await;
                }
            });
        }
    });
    let incoming = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let result = tonic::transport::Server::builder()
        .add_service(NodeCaServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    accept.abort();
    result
}

async fn handshake(
    acceptor: TlsAcceptor,
    trust: TrustBundle,
    tcp: TcpStream,
    addr: SocketAddr,
) -> Option<PeerStream> {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            warn!(peer = %addr, error = %e, "node CA: TLS handshake failed");
            return None;
        }
        Err(_) => {
            warn!(peer = %addr, "node CA: TLS handshake timed out");
            return None;
        }
    };
    let peer = match tls::peer_svid(&trust, tls.get_ref().1.peer_certificates()) {
        Ok(peer) => peer,
        Err(e) => {
            // The handshake accepted the chain, so the bundle changed (or
            // the SVID expired) in between: the client may still Join.
            warn!(
                peer = %addr,
                error = %e,
                "node CA: the client's SVID no longer verifies after the handshake; serving it as anonymous"
            );
            None
        }
    };
    Some(PeerStream::new(tls, PeerSvid(peer)))
}
