//! A node's side of the node CA: keys are generated here, only requests
//! for them travel, and everything that comes back is checked (SVID rules,
//! key match, chain to the bundle) before it is used.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use super::proto::node_ca_client::NodeCaClient as Grpc;
use super::proto::{
    Bundle, FetchBundleRequest, JoinRequest, RenewNodeRequest, SignJwtSvidRequest,
    SignX509SvidRequest,
};
use super::{csr, server_id};
use crate::ca::{EcKey, KeyUse};
use crate::jwt::JwtBundle;
use crate::tls::{self, SvidSource, TrustBundle};
use crate::x509::{VerifiedSvid, VerifyError, X509Bundle, X509Svid};
use crate::{SpiffeId, TrustDomain};

/// Why a request to the node CA failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA refused or could not be reached.
    #[error("node CA at {address}: {status}")]
    Status {
        /// Where the CA is.
        address: SocketAddr,
        /// What it (or the transport) said.
        status: Box<tonic::Status>,
    },
    /// What the CA sent back is not acceptable.
    #[error("node CA at {address} answered with {what}")]
    BadAnswer {
        /// Where the CA is.
        address: SocketAddr,
        /// What is wrong with it.
        what: String,
    },
    /// A local step (key generation, TLS configuration).
    #[error("{0}")]
    Local(String),
}

/// An X.509-SVID the CA signed, and the CA generation that signed it.
#[derive(Debug, Clone)]
pub struct SignedX509 {
    /// The SVID with its key.
    pub svid: X509Svid,
    /// The signing generation.
    pub generation: u64,
}

/// A decoded bundle message.
#[derive(Debug, Clone)]
pub struct DecodedBundle {
    /// The X.509 trust anchors.
    pub x509: X509Bundle,
    /// The JWT keys.
    pub jwt: JwtBundle,
    /// The CA generation that signs now.
    pub active_generation: u64,
}

/// A connection to the node CA (lazy: it connects at the first request and
/// again after a failure).
#[derive(Clone)]
pub struct NodeCaClient {
    grpc: Grpc<Channel>,
    address: SocketAddr,
    td: TrustDomain,
    trust: TrustBundle,
}

impl std::fmt::Debug for NodeCaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCaClient")
            .field("address", &self.address)
            .field("trust_domain", &self.td.to_string())
            .finish()
    }
}

impl NodeCaClient {
    /// A client of the CA at `address`, which must present the CA server's
    /// SVID under `trust`; `svid` is the node SVID it presents (none to
    /// join). Every request is limited to `timeout`.
    pub fn new(
        address: SocketAddr,
        td: &TrustDomain,
        trust: TrustBundle,
        svid: Option<Arc<dyn SvidSource>>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let server = server_id(td).map_err(|e| ClientError::Local(e.to_string()))?;
        let config = tls::client_config(server, trust.clone(), svid)
            .map_err(|e| ClientError::Local(format!("TLS configuration: {e}")))?;
        let connector = TlsConnector::from(Arc::new(config));
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| ClientError::Local(e.to_string()))?
            .connect_timeout(timeout)
            .timeout(timeout);
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(address).await?;
                tcp.set_nodelay(true)?;
                let tls = connector
                    .connect(ServerName::IpAddress(address.ip().into()), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }));
        Ok(Self {
            grpc: Grpc::new(channel),
            address,
            td: td.clone(),
            trust,
        })
    }

    fn status(&self, status: tonic::Status) -> ClientError {
        ClientError::Status {
            address: self.address,
            status: Box::new(status),
        }
    }

    fn bad(&self, what: impl Into<String>) -> ClientError {
        ClientError::BadAnswer {
            address: self.address,
            what: what.into(),
        }
    }

    /// Redeems a join token; returns the node SVID and the bundle.
    pub async fn join(&self, token: &str) -> Result<(X509Svid, DecodedBundle), ClientError> {
        let (key, csr) = new_key()?;
        let response = self
            .grpc
            .clone()
            .join(JoinRequest {
                token: token.trim().to_owned(),
                csr,
            })
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        self.node_svid(key, response.spiffe_id, response.chain, response.bundle)
    }

    /// Renews this node's SVID.
    pub async fn renew_node(&self) -> Result<(X509Svid, DecodedBundle), ClientError> {
        let (key, csr) = new_key()?;
        let response = self
            .grpc
            .clone()
            .renew_node(RenewNodeRequest { csr })
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        self.node_svid(key, response.spiffe_id, response.chain, response.bundle)
    }

    fn node_svid(
        &self,
        key: EcKey,
        id: String,
        chain: Vec<Vec<u8>>,
        bundle: Option<Bundle>,
    ) -> Result<(X509Svid, DecodedBundle), ClientError> {
        let bundle = self.decode_bundle(bundle.ok_or_else(|| self.bad("no bundle"))?)?;
        let svid = self.checked_svid(&key, chain, |c, now| bundle.x509.verify(c, now))?;
        if svid.spiffe_id().to_string() != id
            || super::node_name_of(&self.td, svid.spiffe_id()).is_none()
        {
            return Err(self.bad(format!("a node SVID for {}", svid.spiffe_id())));
        }
        Ok((svid, bundle))
    }

    /// Asks for the X.509-SVID of `id`, for a key generated here.
    pub async fn sign_x509(&self, id: &SpiffeId) -> Result<SignedX509, ClientError> {
        let (key, csr) = new_key()?;
        let response = self
            .grpc
            .clone()
            .sign_x509_svid(SignX509SvidRequest {
                spiffe_id: id.to_string(),
                csr,
            })
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        let svid = self.checked_svid(&key, response.chain, |c, now| self.trust.verify(c, now))?;
        if svid.spiffe_id() != id {
            return Err(self.bad(format!("an SVID for {} (asked for {id})", svid.spiffe_id())));
        }
        Ok(SignedX509 {
            svid,
            generation: response.generation,
        })
    }

    /// Asks for a JWT-SVID of `id` for `audience`.
    pub async fn sign_jwt(
        &self,
        id: &SpiffeId,
        audience: &[String],
    ) -> Result<String, ClientError> {
        let response = self
            .grpc
            .clone()
            .sign_jwt_svid(SignJwtSvidRequest {
                spiffe_id: id.to_string(),
                audience: audience.to_vec(),
            })
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        Ok(response.token)
    }

    /// The trust domain's current bundle.
    pub async fn fetch_bundle(&self) -> Result<DecodedBundle, ClientError> {
        let bundle = self
            .grpc
            .clone()
            .fetch_bundle(FetchBundleRequest {})
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        self.decode_bundle(bundle)
    }

    fn decode_bundle(&self, bundle: Bundle) -> Result<DecodedBundle, ClientError> {
        if bundle.trust_domain != self.td.to_string() {
            return Err(self.bad(format!(
                "the bundle of trust domain {:?}, not {}",
                bundle.trust_domain, self.td
            )));
        }
        let mut x509 = X509Bundle::new(self.td.clone());
        for der in &bundle.x509_authorities {
            x509.add_authority(der)
                .map_err(|e| self.bad(format!("a bundle with an unusable authority: {e}")))?;
        }
        if x509.is_empty() {
            return Err(self.bad("an empty bundle"));
        }
        let jwt = JwtBundle::from_jwks(self.td.clone(), &bundle.jwt_authorities)
            .map_err(|e| self.bad(format!("a JWT bundle that does not parse: {e}")))?;
        Ok(DecodedBundle {
            x509,
            jwt,
            active_generation: bundle.active_generation,
        })
    }

    /// Parses an SVID the CA signed for `key` and checks it with `verify`
    /// (a bundle's `verify`: the shared [`TrustBundle`] is read in place,
    /// not cloned per request).
    fn checked_svid(
        &self,
        key: &EcKey,
        chain: Vec<Vec<u8>>,
        verify: impl FnOnce(&[Vec<u8>], SystemTime) -> Result<VerifiedSvid, VerifyError>,
    ) -> Result<X509Svid, ClientError> {
        let concatenated: Vec<u8> = chain.concat();
        let svid = X509Svid::parse_der(&concatenated, key.pkcs8().secret_der())
            .map_err(|e| self.bad(format!("an SVID that is not valid: {e}")))?;
        verify(svid.chain(), SystemTime::now()).map_err(|e| {
            self.bad(format!(
                "an SVID that does not verify against the bundle: {e}"
            ))
        })?;
        Ok(svid)
    }
}

fn new_key() -> Result<(EcKey, Vec<u8>), ClientError> {
    let key = EcKey::generate(KeyUse::X509).map_err(|e| ClientError::Local(e.to_string()))?;
    let csr = csr::request_for(&key).map_err(|e| ClientError::Local(e.to_string()))?;
    Ok((key, csr))
}
