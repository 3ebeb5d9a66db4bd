//! TLS 1.3 authenticated by X.509-SVIDs, for rustls: the verifiers that
//! check a peer's chain against a trust domain's bundle (SPIFFE rules, not
//! DNS names), the certificate a side presents, and the configurations.
//!
//! Only TLS 1.3 is offered, with ring's algorithms. Both verifiers take the
//! bundle from a [`TrustBundle`] that the owner replaces when the CA
//! rotates, so a running server or client follows a rotation without being
//! rebuilt.

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig,
    SignatureScheme,
};

use crate::x509::{VerifiedSvid, VerifyError, X509Bundle, X509Svid};
use crate::SpiffeId;

pub use rustls::sign::CertifiedKey;

/// A trust domain's X.509 bundle, shared between the owner (who replaces it
/// at every CA rotation) and the verifiers that read it.
#[derive(Clone)]
pub struct TrustBundle(Arc<RwLock<X509Bundle>>);

impl TrustBundle {
    /// Starts with `bundle`.
    pub fn new(bundle: X509Bundle) -> Self {
        Self(Arc::new(RwLock::new(bundle)))
    }

    /// The current bundle.
    pub fn get(&self) -> X509Bundle {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the bundle.
    pub fn set(&self, bundle: X509Bundle) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = bundle;
    }

    /// Verifies a presented chain (leaf first) at `now`.
    pub fn verify(&self, chain: &[Vec<u8>], now: SystemTime) -> Result<VerifiedSvid, VerifyError> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .verify(chain, now)
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bundle = self.0.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("TrustBundle")
            .field("trust_domain", &bundle.trust_domain().to_string())
            .field("authorities", &bundle.len())
            .finish()
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// How both verifiers check the handshake's signature: TLS 1.3 only, with
/// ring's algorithms.
#[derive(Debug)]
struct Handshake(WebPkiSupportedAlgorithms);

impl Handshake {
    fn new() -> Self {
        Self(provider().signature_verification_algorithms)
    }

    fn tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn system_time(now: UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs())
}

fn chain_of(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Vec<Vec<u8>> {
    std::iter::once(end_entity)
        .chain(intermediates)
        .map(|c| c.as_ref().to_vec())
        .collect()
}

/// Verifies a presented chain; the error names the SVID rule it broke.
fn verify_chain(
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<VerifiedSvid, rustls::Error> {
    bundle
        .verify(&chain_of(end_entity, intermediates), system_time(now))
        .map_err(invalid_certificate)
}

/// A refused certificate as rustls reports it, carrying why: the verifiers'
/// errors ([`VerifyError`], [`UnexpectedPeer`]) are its source.
pub(crate) fn invalid_certificate(why: impl StdError + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(why))))
}

/// `verified` when it names `expected`; the refusal otherwise.
fn expect_id(verified: &VerifiedSvid, expected: &SpiffeId) -> Result<(), rustls::Error> {
    if verified.spiffe_id() == expected {
        Ok(())
    } else {
        Err(invalid_certificate(UnexpectedPeer {
            expected: expected.clone(),
            presented: verified.spiffe_id().clone(),
        }))
    }
}

/// Why a verified peer is still refused.
#[derive(Debug, thiserror::Error)]
#[error("the peer presented {presented}, not {expected}")]
pub struct UnexpectedPeer {
    /// Whom the verifier expected.
    pub expected: SpiffeId,
    /// Whom the peer's SVID names.
    pub presented: SpiffeId,
}

/// Checks a server's X.509-SVID (on the client side): its chain against the
/// bundle, and that it names the expected SPIFFE ID. The server name the
/// client connects to plays no part: the SPIFFE ID is the server's name.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    bundle: TrustBundle,
    expected: SpiffeId,
    handshake: Handshake,
}

impl SpiffeServerVerifier {
    /// Accepts only a server holding an SVID for `expected`.
    pub fn new(bundle: TrustBundle, expected: SpiffeId) -> Self {
        Self {
            bundle,
            expected,
            handshake: Handshake::new(),
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = verify_chain(&self.bundle, end_entity, intermediates, now)?;
        expect_id(&verified, &self.expected)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Handshake::tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.handshake.schemes()
    }
}

/// Checks a client's X.509-SVID (on the server side) against the bundle.
/// Built by [`new`](Self::new), it accepts any SPIFFE ID of the trust
/// domain: which ones may do what is the server's business, after the
/// handshake ([`peer_svid`]). Built by [`expecting`](Self::expecting), it
/// accepts exactly one, as [`SpiffeServerVerifier`] does for servers.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    bundle: TrustBundle,
    mandatory: bool,
    expected: Option<SpiffeId>,
    handshake: Handshake,
}

impl SpiffeClientVerifier {
    /// `mandatory`: whether a client without a certificate is refused in
    /// the handshake (otherwise it gets through with no SPIFFE ID).
    pub fn new(bundle: TrustBundle, mandatory: bool) -> Self {
        Self {
            bundle,
            mandatory,
            expected: None,
            handshake: Handshake::new(),
        }
    }

    /// Accepts only a client holding an SVID for `expected`; a client
    /// without a certificate is refused.
    pub fn expecting(bundle: TrustBundle, expected: SpiffeId) -> Self {
        Self {
            bundle,
            mandatory: true,
            expected: Some(expected),
            handshake: Handshake::new(),
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = verify_chain(&self.bundle, end_entity, intermediates, now)?;
        if let Some(expected) = &self.expected {
            expect_id(&verified, expected)?;
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Handshake::tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.handshake.schemes()
    }
}

/// The verified SVID of a peer whose chain rustls accepted (through one of
/// the verifiers above), checked again against `bundle` now: `Ok(None)`
/// when it presented no certificate, an error when the chain no longer
/// verifies (the bundle changed or the SVID expired since the handshake).
pub fn peer_svid(
    bundle: &TrustBundle,
    peer_chain: Option<&[CertificateDer<'_>]>,
) -> Result<Option<VerifiedSvid>, VerifyError> {
    let Some((leaf, rest)) = peer_chain.and_then(<[_]>::split_first) else {
        return Ok(None);
    };
    bundle
        .verify(&chain_of(leaf, rest), SystemTime::now())
        .map(Some)
}

/// An SVID as rustls presents it.
pub fn certified_key(svid: &X509Svid) -> Result<Arc<CertifiedKey>, rustls::Error> {
    // Borrowed: a copy would be a plain Vec that nothing zeroizes.
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.private_key().secret_der()));
    let signer = rustls::crypto::ring::sign::any_ecdsa_type(&key)?;
    let chain = svid
        .chain()
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// Where a side gets the SVID it presents, at every handshake (so a renewed
/// SVID is used from the next connection on).
pub trait SvidSource: Send + Sync {
    /// The current SVID, or `None` when there is none to present.
    fn current(&self) -> Option<Arc<CertifiedKey>>;
}

struct Presenter(Arc<dyn SvidSource>);

impl fmt::Debug for Presenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Presenter")
    }
}

impl ResolvesServerCert for Presenter {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current()
    }
}

impl ResolvesClientCert for Presenter {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

const H2: &[u8] = b"h2";

/// A TLS 1.3 server configuration presenting `svid` and verifying clients
/// against `bundle` (see [`SpiffeClientVerifier`]). ALPN is `h2` (gRPC).
pub fn server_config(
    svid: Arc<dyn SvidSource>,
    bundle: TrustBundle,
    client_auth_mandatory: bool,
) -> Result<ServerConfig, rustls::Error> {
    server_config_with(
        Arc::new(SpiffeClientVerifier::new(bundle, client_auth_mandatory)),
        svid,
        H2,
    )
}

/// A TLS 1.3 server configuration checking clients with `verifier`,
/// presenting `svid` and agreeing on the one ALPN protocol `alpn`.
pub(crate) fn server_config_with(
    verifier: Arc<SpiffeClientVerifier>,
    svid: Arc<dyn SvidSource>,
    alpn: &[u8],
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Presenter(svid)));
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// A TLS 1.3 client configuration that accepts only a server holding an
/// SVID for `server` and presents `svid` when there is one. ALPN is `h2`.
pub fn client_config(
    server: SpiffeId,
    bundle: TrustBundle,
    svid: Option<Arc<dyn SvidSource>>,
) -> Result<ClientConfig, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(bundle, server)));
    let mut config = match svid {
        Some(svid) => builder.with_client_cert_resolver(Arc::new(Presenter(svid))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![H2.to_vec()];
    Ok(config)
}

/// A fixed SVID, presented as is.
pub struct FixedSvid(Arc<CertifiedKey>);

impl FixedSvid {
    /// Presents `svid`.
    pub fn new(svid: &X509Svid) -> Result<Self, rustls::Error> {
        Ok(Self(certified_key(svid)?))
    }

    /// Presents `key`, an SVID already converted ([`certified_key`]).
    pub fn from_key(key: Arc<CertifiedKey>) -> Self {
        Self(key)
    }
}

impl SvidSource for FixedSvid {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
