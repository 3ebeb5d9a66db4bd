//! The dialling side of palisade-auth/1.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tracing::{debug, debug_span, Instrument};

use super::wire::{self, Response};
use super::{identity_id, peer_svid, AuthError, Authenticated, IdentitySvids, LocalSvid, Pair};
use super::{WireError, ALPN};
use crate::tls::{self, FixedSvid, TrustBundle};
use crate::{NumericIdentity, SpiffeId, TrustDomain};

/// Authenticates pairs with other nodes: presents this node's SVID of the
/// local identity and accepts only a server holding the SVID of the remote
/// one.
pub struct Client {
    trust_domain: TrustDomain,
    bundle: TrustBundle,
    svids: Arc<dyn IdentitySvids>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("trust_domain", &self.trust_domain)
            .field("bundle", &self.bundle)
            .finish_non_exhaustive()
    }
}

/// One handshake, ready to run on a connection.
struct Handshake {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    bundle: TrustBundle,
    local: NumericIdentity,
    remote: NumericIdentity,
    expected: SpiffeId,
    svid: LocalSvid,
}

impl Client {
    /// A client of `trust_domain`, verifying servers against `bundle` (read
    /// at every handshake) and presenting the SVIDs of `svids`.
    pub fn new(
        trust_domain: TrustDomain,
        bundle: TrustBundle,
        svids: Arc<dyn IdentitySvids>,
    ) -> Self {
        Self {
            trust_domain,
            bundle,
            svids,
        }
    }

    /// Authenticates the pair (`local` here, `remote` on the server) over
    /// `stream`, a connection to the server's node. Dropping the future at
    /// any point is safe; the caller bounds the time it takes.
    pub async fn authenticate<S>(
        &self,
        stream: S,
        local: NumericIdentity,
        remote: NumericIdentity,
    ) -> Result<Authenticated, AuthError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let span = debug_span!("mutual_auth", side = "client", %local, %remote);
        async {
            let handshake = self.prepare(local, remote)?;
            handshake.run(stream).await
        }
        .instrument(span)
        .await
    }

    /// Connects to `addr` (from `bind` when given, with `TCP_NODELAY`) and
    /// authenticates the pair, all within `timeout`. Nothing is sent when
    /// this node holds no SVID of `local`.
    pub async fn dial(
        &self,
        addr: SocketAddr,
        bind: Option<IpAddr>,
        local: NumericIdentity,
        remote: NumericIdentity,
        timeout: Duration,
    ) -> Result<Authenticated, AuthError> {
        let span = debug_span!("mutual_auth", side = "client", %addr, %local, %remote);
        async {
            let handshake = self.prepare(local, remote)?;
            let exchange = async {
                let stream = connect(addr, bind).await?;
                handshake.run(stream).await
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| AuthError::Timeout)?
        }
        .instrument(span)
        .await
    }

    /// What a handshake needs, before any I/O.
    fn prepare(
        &self,
        local: NumericIdentity,
        remote: NumericIdentity,
    ) -> Result<Handshake, AuthError> {
        let svid = self
            .svids
            .svid(local)
            .ok_or(AuthError::NoLocalSvid { identity: local })?;
        let expected = identity_id(&self.trust_domain, remote)?;
        let mut config = tls::client_config(
            expected.clone(),
            self.bundle.clone(),
            Some(Arc::new(FixedSvid::from_key(svid.key().clone()))),
        )
        .map_err(|source| AuthError::Tls { source })?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.resumption = Resumption::disabled();
        let pair = Pair {
            server: remote,
            client: local,
        };
        let name = ServerName::try_from(pair.server_name()).map_err(|e| AuthError::Naming {
            name: format!("the server name of {pair:?}"),
            source: Box::new(e),
        })?;
        Ok(Handshake {
            config: Arc::new(config),
            name,
            bundle: self.bundle.clone(),
            local,
            remote,
            expected,
            svid,
        })
    }
}

impl Handshake {
    async fn run<S>(self, stream: S) -> Result<Authenticated, AuthError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut tls = TlsConnector::from(self.config)
            .connect(self.name, stream)
            .await
            .map_err(AuthError::from_io)?;
        let (_, conn) = tls.get_ref();
        if conn.alpn_protocol() != Some(ALPN) {
            return Err(WireError::NoAlpn.into());
        }
        let peer = peer_svid(&self.bundle, conn.peer_certificates(), &self.expected)?;
        let response = read_response(&mut tls).await?;
        // Only politeness: the server has said all it had to say.
        let _ = tls.shutdown().await;
        match response {
            Response::Ok => {
                let done = Authenticated::new(self.local, self.remote, &self.svid, &peer);
                debug!(peer = %done.peer_id, "authenticated");
                Ok(done)
            }
            Response::Refused { reason } => Err(AuthError::Refused { reason }),
        }
    }
}

/// Reads the server's one line (at most [`wire::MAX_RESPONSE`] bytes).
async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Response, AuthError> {
    let mut received = [0u8; wire::MAX_RESPONSE];
    let mut len = 0;
    loop {
        let n = stream
            .read(&mut received[len..])
            .await
            .map_err(AuthError::from_io)?;
        len += n;
        if let Some(response) = Response::from_received(&received[..len], n == 0) {
            return Ok(response?);
        }
    }
}

/// A TCP connection to `addr`, from `bind` when given.
async fn connect(addr: SocketAddr, bind: Option<IpAddr>) -> Result<TcpStream, AuthError> {
    let failed = |call| move |source| AuthError::Connect { addr, call, source };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(failed("socket"))?;
    if let Some(ip) = bind {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(failed("bind"))?;
    }
    socket
        .set_nodelay(true)
        .map_err(failed("setsockopt(TCP_NODELAY)"))?;
    socket.connect(addr).await.map_err(failed("connect"))
}
