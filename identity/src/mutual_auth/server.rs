//! The answering side of palisade-auth/1.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::server::Acceptor;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::{server::TlsStream, LazyConfigAcceptor, StartHandshake};
use tracing::{debug, debug_span, Instrument};

use super::wire::{self, Response};
use super::{certificate_cause, identity_id, peer_svid};
use super::{Admission, AuthError, Authenticated, IdentitySvids};
use super::{Pair, WireError, ALPN};
use crate::tls::{self, CertifiedKey, FixedSvid, SpiffeClientVerifier, SvidSource, TrustBundle};
use crate::TrustDomain;

/// Answers other nodes' handshakes: presents the SVID the client's server
/// name asks for, demands the client's, and lets an [`Admission`] decide.
pub struct Server {
    trust_domain: TrustDomain,
    bundle: TrustBundle,
    svids: Arc<dyn IdentitySvids>,
    admission: Arc<dyn Admission>,
    /// The configuration that fails a handshake: it presents nothing.
    /// Each connection that goes on gets its own ([`config`]).
    refusing: Arc<ServerConfig>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("trust_domain", &self.trust_domain)
            .field("bundle", &self.bundle)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server of `trust_domain`, verifying clients against `bundle` (read
    /// at every handshake), presenting the SVIDs of `svids`, and admitting
    /// pairs by `admission`.
    pub fn new(
        trust_domain: TrustDomain,
        bundle: TrustBundle,
        svids: Arc<dyn IdentitySvids>,
        admission: Arc<dyn Admission>,
    ) -> Result<Self, AuthError> {
        let verifier = SpiffeClientVerifier::new(bundle.clone(), true);
        let refusing = config(verifier, Arc::new(Nothing))?;
        Ok(Self {
            trust_domain,
            bundle,
            svids,
            admission,
            refusing: Arc::new(refusing),
        })
    }

    /// Answers one handshake on `stream`, a connection from `peer`. Every
    /// failure is returned (for the caller to log and count); dropping the
    /// future at any point is safe, and the caller bounds the time it takes
    /// (a client may stall forever).
    pub async fn accept<S>(&self, stream: S, peer: SocketAddr) -> Result<Authenticated, AuthError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let span = debug_span!("mutual_auth", side = "server", %peer);
        self.answer(stream, peer).instrument(span).await
    }

    async fn answer<S>(&self, stream: S, peer: SocketAddr) -> Result<Authenticated, AuthError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream)
            .await
            .map_err(AuthError::from_io)?;
        let hello = start.client_hello();
        let pair = hello
            .server_name()
            .ok_or(WireError::NoServerName)
            .and_then(Pair::parse_server_name);
        let speaks_auth = hello.alpn().is_some_and(|mut p| p.any(|p| p == ALPN));
        let pair = match pair {
            Ok(pair) if speaks_auth => pair,
            Ok(_) => return Err(self.abort(start, WireError::NoAlpn.into()).await),
            Err(e) => return Err(self.abort(start, e.into()).await),
        };
        let span = debug_span!("pair", server = %pair.server, client = %pair.client);
        self.handshake(start, peer, pair).instrument(span).await
    }

    async fn handshake<S>(
        &self,
        start: StartHandshake<S>,
        peer: SocketAddr,
        pair: Pair,
    ) -> Result<Authenticated, AuthError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let Some(svid) = self.svids.svid(pair.server) else {
            let error = AuthError::NoLocalSvid {
                identity: pair.server,
            };
            return Err(self.abort(start, error).await);
        };
        let expected = identity_id(&self.trust_domain, pair.client)?;
        // Refuses, in the handshake, any client certificate but an SVID of
        // the identity the client claims.
        let verifier = SpiffeClientVerifier::expecting(self.bundle.clone(), expected.clone());
        let presenting = Arc::new(FixedSvid::from_key(svid.key().clone()));
        let config = config(verifier, presenting)?;
        let mut tls = start
            .into_stream(Arc::new(config))
            .await
            .map_err(AuthError::from_io)?;

        let client = match peer_svid(&self.bundle, tls.get_ref().1.peer_certificates(), &expected) {
            Ok(client) => client,
            Err(e) => {
                let reason = match &e {
                    AuthError::PeerCertificate { source, .. } => {
                        format!(
                            "the client's certificate is refused: {}",
                            certificate_cause(source)
                        )
                    }
                    other => other.to_string(),
                };
                refuse(&mut tls, &Response::refused(&reason)).await;
                return Err(e);
            }
        };
        if let Err(reason) = self.admission.admit(peer, pair.server, pair.client) {
            let reason = wire::clean_reason(&reason);
            let refusal = Response::Refused {
                reason: reason.clone(),
            };
            refuse(&mut tls, &refusal).await;
            return Err(AuthError::Refused { reason });
        }
        write_line(&mut tls, &Response::Ok).await?;
        // The client has its answer, and succeeds on it: a close that fails
        // now (a client that resets the connection at once) changes nothing.
        if let Err(error) = tls.shutdown().await {
            debug!(%error, "the close after ok failed");
        }
        let done = Authenticated::new(pair.server, pair.client, &svid, &client);
        debug!(peer_id = %done.peer_id, "authenticated");
        Ok(done)
    }

    /// Fails the handshake with an alert (the connection presents no
    /// certificate), and returns `error`, the reason.
    async fn abort<S>(&self, start: StartHandshake<S>, error: AuthError) -> AuthError
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // What rustls says (no certificate to present) is not the reason.
        let _ = start.into_stream(self.refusing.clone()).await;
        error
    }
}

/// A configuration of palisade-auth/1 checking clients with `verifier`
/// and presenting `svid`: ALPN, no tickets (every handshake checks both
/// chains: nothing to resume).
fn config(
    verifier: SpiffeClientVerifier,
    svid: Arc<dyn SvidSource>,
) -> Result<ServerConfig, AuthError> {
    let mut config = tls::server_config_with(Arc::new(verifier), svid, ALPN)
        .map_err(|source| AuthError::Tls { source })?;
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// Presents no SVID, which fails the handshake.
struct Nothing;

impl SvidSource for Nothing {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// Writes the response line and sends it (flushed to the connection).
async fn write_line<S>(tls: &mut TlsStream<S>, response: &Response) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tls.write_all(&response.to_line())
        .await
        .map_err(AuthError::from_io)?;
    tls.flush().await.map_err(AuthError::from_io)
}

/// Writes a refusal and ends the TLS session (close_notify, then the
/// connection is shut down for writing); the refusal is the result, so
/// failures here are only the client's loss.
async fn refuse<S>(tls: &mut TlsStream<S>, response: &Response)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if write_line(tls, response).await.is_ok() {
        let _ = tls.shutdown().await;
    }
}
