//! Mutual authentication between node agents (palisade-auth/1): two nodes
//! prove to each other, over mutual TLS 1.3, that they hold the
//! X.509-SVIDs `spiffe://<td>/identity/<n>` of two numeric identities.
//!
//! As in Cilium's mutual authentication, the node of the connection's
//! source (the client, identity `c`) dials the node of its destination (the
//! server, identity `s`) on [`DEFAULT_PORT`]. Unlike Cilium, *both* sides
//! check the exact SPIFFE ID of the other:
//!
//! 1. TLS 1.3 only, ALPN [`ALPN`] (both sides require it). The client sends
//!    the server name `"<s>.<c>.auth.palisade"` ([`Pair::server_name`]): it
//!    tells the server which SVID to present and which identity the client
//!    claims. No session resumption: every handshake checks both chains.
//! 2. The server presents its SVID of `s` (or fails the handshake when it
//!    holds none) and demands a client certificate; both chains are
//!    verified against the trust domain's bundle ([`tls`]). Each side
//!    accepts only a peer whose SVID names exactly the identity the server
//!    name says: the client `spiffe://<td>/identity/<s>`, the server
//!    `spiffe://<td>/identity/<c>`. Every certificate problem thus fails the
//!    handshake with an alert.
//! 3. After the handshake the server checks the client's SVID again (a
//!    second line of defence), asks its [`Admission`] whether the peer's
//!    address may authenticate this pair, and writes one line: `ok` or
//!    `refused: <reason>` (at most 400 bytes of text without control
//!    characters), then closes the TLS session (close_notify). Once `ok` is
//!    written the server has succeeded, whatever happens to the close.
//! 4. The client succeeds only on `ok`.
//!
//! The SVID is chosen from the server name before the client has proved
//! anything, so an unauthenticated scanner can learn which identities a
//! node hosts (and their certificates); that is inherent to TLS, and
//! accepted.
//!
//! Both sides describe a success alike ([`Authenticated`]): the pair from
//! their own point of view, the peer's SPIFFE ID, and when the
//! authentication expires (the earlier of the two SVIDs' NotAfter, both as
//! the certificates say, so that both sides compute the same instant). Every
//! failure is an [`AuthError`] whose [`kind`](AuthError::kind) is a short
//! stable label for metrics. [`Server::accept`] and [`Client::authenticate`]
//! keep no state outside their future, so dropping them (a timeout) at any
//! point is safe.

mod client;
mod server;
mod wire;

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::CertificateError;
use x509_parser::error::X509Error;

use crate::timestamp;
use crate::tls::{self, invalid_certificate, CertifiedKey, UnexpectedPeer};
use crate::x509::{ChainError, VerifiedSvid, VerifyError};
use crate::{NumericIdentity, SpiffeId, TrustDomain};

pub use client::Client;
pub use server::Server;
pub use wire::{Pair, WireError};

/// The TCP port node agents accept handshakes on, unless configured.
pub const DEFAULT_PORT: u16 = 4250;
/// The ALPN protocol name of this protocol; both sides require it.
pub const ALPN: &[u8] = b"palisade-auth/1";

/// An SVID this node can present, as rustls presents it, with its leaf's
/// NotAfter read from the leaf certificate itself (so that both sides of a
/// handshake agree on it).
#[derive(Clone)]
pub struct LocalSvid {
    key: Arc<CertifiedKey>,
    not_after: SystemTime,
}

impl LocalSvid {
    /// Presents `key` (see [`tls::certified_key`]); fails when its first
    /// certificate, the leaf, is missing or does not parse.
    pub fn new(key: Arc<CertifiedKey>) -> Result<Self, ChainError> {
        let leaf = key.cert.first().ok_or(ChainError::Empty)?;
        let not_after = leaf_not_after(leaf)?;
        Ok(Self { key, not_after })
    }

    /// The chain and the signing key.
    pub fn key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }

    /// When the leaf expires, as its certificate says (whole seconds).
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// The NotAfter of `leaf`, a DER certificate that must fill it exactly.
fn leaf_not_after(leaf: &[u8]) -> Result<SystemTime, ChainError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| {
        let source = match e {
            x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
            x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
        };
        ChainError::Malformed {
            position: 1,
            source,
        }
    })?;
    if !rest.is_empty() {
        return Err(ChainError::TrailingData {
            position: 1,
            trailing: rest.len(),
        });
    }
    timestamp::from_unix_seconds(cert.validity().not_after.timestamp())
        .ok_or(ChainError::TimeOutOfRange { position: 1 })
}

impl fmt::Debug for LocalSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalSvid")
            .field("chain_len", &self.key.cert.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Where a side finds the SVIDs it presents; asked at every handshake, so a
/// renewed SVID is used from the next one on.
pub trait IdentitySvids: Send + Sync {
    /// The SVID of `spiffe://<td>/identity/<id>` this node holds, or `None`
    /// when it holds none.
    fn svid(&self, id: NumericIdentity) -> Option<LocalSvid>;
}

/// The server's decision, once the client has proved its identity.
pub trait Admission: Send + Sync {
    /// Whether `peer` (the client's address) may authenticate the pair of
    /// this node's `server` identity and its `client` identity: `Err` holds
    /// the reason sent to the client (cut to 400 bytes, control characters
    /// replaced by spaces).
    fn admit(
        &self,
        peer: SocketAddr,
        server: NumericIdentity,
        client: NumericIdentity,
    ) -> Result<(), String>;
}

/// A successful authentication, seen from one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// This side's identity (the server's identity on the server).
    pub local: NumericIdentity,
    /// The peer's identity.
    pub remote: NumericIdentity,
    /// The SPIFFE ID in the peer's SVID, `spiffe://<td>/identity/<remote>`.
    pub peer_id: SpiffeId,
    /// When this side's SVID expires, as its certificate says
    /// ([`LocalSvid::not_after`]).
    pub local_not_after: SystemTime,
    /// When the peer's SVID expires, as its certificate says.
    pub peer_not_after: SystemTime,
    /// When the authentication expires: the earlier of the two. Both sides
    /// read both from the same two certificates, so they compute the same
    /// instant.
    pub expires: SystemTime,
}

impl Authenticated {
    fn new(
        local: NumericIdentity,
        remote: NumericIdentity,
        local_svid: &LocalSvid,
        peer: &VerifiedSvid,
    ) -> Self {
        Self {
            local,
            remote,
            peer_id: peer.spiffe_id().clone(),
            local_not_after: local_svid.not_after(),
            peer_not_after: peer.not_after(),
            expires: local_svid.not_after().min(peer.not_after()),
        }
    }
}

/// What is wrong with a peer's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateProblem {
    /// It (or a CA certificate of its chain) has expired.
    Expired,
    /// It (or a CA certificate of its chain) is not valid yet: its
    /// NotBefore is in the future (by this side's clock).
    NotYetValid,
    /// Its chain does not lead to the trust bundle: another CA, another
    /// trust domain, or no valid X.509-SVID at all.
    Untrusted,
    /// It is a valid SVID of another identity than the one expected.
    WrongIdentity,
    /// The peer presented no certificate.
    Missing,
}

impl CertificateProblem {
    /// The metrics label ([`AuthError::kind`]): a certificate not valid yet
    /// counts as `expired` (outside its validity window either way), a
    /// missing certificate as `untrusted`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Expired | Self::NotYetValid => "expired",
            Self::Untrusted | Self::Missing => "untrusted",
            Self::WrongIdentity => "wrong-identity",
        }
    }

    /// What rustls reports, classified; `None` when it is not about the
    /// peer's certificate.
    fn of(error: &rustls::Error) -> Option<Self> {
        let rustls::Error::InvalidCertificate(e) = error else {
            return matches!(error, rustls::Error::NoCertificatesPresented)
                .then_some(Self::Missing);
        };
        Some(match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Self::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Self::NotYetValid
            }
            CertificateError::Other(other) => {
                let cause: &(dyn StdError + 'static) = &*other.0;
                match cause.downcast_ref::<VerifyError>() {
                    _ if cause.is::<UnexpectedPeer>() => Self::WrongIdentity,
                    Some(VerifyError::Expired { .. }) => Self::Expired,
                    Some(VerifyError::NotYetValid { .. }) => Self::NotYetValid,
                    _ => Self::Untrusted,
                }
            }
            _ => Self::Untrusted,
        })
    }
}

/// Why a handshake did not authenticate the pair.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No TCP connection to the peer (`kind`: `connect`).
    #[error("cannot connect to {addr}: {call}: {source}")]
    Connect {
        /// The peer's address.
        addr: SocketAddr,
        /// The call that failed (`socket`, `bind`, `setsockopt(TCP_NODELAY)`,
        /// `connect`).
        call: &'static str,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The handshake did not finish in time (`timeout`).
    #[error("the handshake did not finish in time")]
    Timeout,
    /// The connection failed during the exchange: reset, or closed without
    /// a TLS alert (`tls`).
    #[error("the connection failed during the handshake: {source}")]
    Io {
        /// What the system (or tokio-rustls) said.
        #[source]
        source: io::Error,
    },
    /// TLS failed for another reason than the peer's certificate: an alert
    /// from the peer (which refused this side's certificate, or holds no
    /// SVID for the identity asked), an incompatible or broken peer (TLS
    /// 1.2, garbage) (`tls`).
    #[error("TLS failed: {source}")]
    Tls {
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// This side refused the peer's certificate, in the handshake or in the
    /// check after it (`expired`, `untrusted` or `wrong-identity`, by
    /// `problem`). The other side sees an alert (`tls`).
    #[error("the peer's certificate is refused: {}", certificate_cause(.source))]
    PeerCertificate {
        /// What is wrong with it.
        problem: CertificateProblem,
        /// The refusal as rustls reports it; its source is a
        /// [`VerifyError`] or an [`UnexpectedPeer`] when the SVID checks
        /// refused it.
        #[source]
        source: rustls::Error,
    },
    /// This node holds no SVID for the identity it should present
    /// (`no-local-svid`).
    #[error("this node holds no SVID for identity {identity}")]
    NoLocalSvid {
        /// The identity.
        identity: NumericIdentity,
    },
    /// The pair is refused: on the client, the server's answer; on the
    /// server, what it answered (`refused`).
    #[error("the pair is refused: {reason}")]
    Refused {
        /// Why, as sent on the wire.
        reason: String,
    },
    /// The peer broke palisade-auth/1 (`protocol`).
    #[error("the peer broke palisade-auth/1: {source}")]
    Protocol {
        /// How.
        #[source]
        #[from]
        source: WireError,
    },
    /// A name this side builds is invalid: an identity's SPIFFE ID or a
    /// pair's server name (`protocol`). This cannot happen (a trust domain
    /// is at most 255 bytes of `[a-z0-9._-]`, an identity is a decimal
    /// number); it exists so that the code has no panic path.
    #[error("cannot name {name}: {source}")]
    Naming {
        /// What was to be named.
        name: String,
        /// Why it cannot be.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl AuthError {
    /// A short stable label for metrics: `connect`, `timeout`, `tls`,
    /// `expired`, `untrusted`, `wrong-identity`, `no-local-svid`,
    /// `refused` or `protocol`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Timeout => "timeout",
            Self::Io { .. } | Self::Tls { .. } => "tls",
            Self::PeerCertificate { problem, .. } => problem.kind(),
            Self::NoLocalSvid { .. } => "no-local-svid",
            Self::Refused { .. } => "refused",
            Self::Protocol { .. } | Self::Naming { .. } => "protocol",
        }
    }

    /// What rustls reports, classified.
    fn from_rustls(source: rustls::Error) -> Self {
        match CertificateProblem::of(&source) {
            Some(problem) => Self::PeerCertificate { problem, source },
            None => Self::Tls { source },
        }
    }

    /// What tokio-rustls reports (a rustls error inside an I/O error, or
    /// an I/O error of the connection), classified.
    fn from_io(source: io::Error) -> Self {
        match source
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(e) => Self::from_rustls(e.clone()),
            None => Self::Io { source },
        }
    }

    /// A peer chain that no longer verifies after the handshake (the bundle
    /// changed or the SVID expired since), reported as the verifiers do.
    fn from_verify(error: VerifyError) -> Self {
        Self::from_rustls(invalid_certificate(error))
    }

    /// A peer whose valid SVID names another identity than `expected`.
    fn wrong_identity(expected: SpiffeId, presented: SpiffeId) -> Self {
        Self::from_rustls(invalid_certificate(UnexpectedPeer {
            expected,
            presented,
        }))
    }
}

/// Why rustls refused a certificate, in words: the SVID checks' own message
/// when they refused it (rustls would print it with `Debug`).
fn certificate_cause(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other.0.to_string(),
        other => other.to_string(),
    }
}

/// The peer's SVID after the handshake, checked again (for its NotAfter)
/// and compared with `expected` again (the verifiers did in the handshake).
fn peer_svid(
    bundle: &tls::TrustBundle,
    chain: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    expected: &SpiffeId,
) -> Result<VerifiedSvid, AuthError> {
    let verified = tls::peer_svid(bundle, chain)
        .map_err(AuthError::from_verify)?
        .ok_or_else(|| AuthError::from_rustls(rustls::Error::NoCertificatesPresented))?;
    if verified.spiffe_id() != expected {
        return Err(AuthError::wrong_identity(
            expected.clone(),
            verified.spiffe_id().clone(),
        ));
    }
    Ok(verified)
}

/// `spiffe://<td>/identity/<id>`.
fn identity_id(trust_domain: &TrustDomain, id: NumericIdentity) -> Result<SpiffeId, AuthError> {
    trust_domain
        .id_with_segments(["identity".to_owned(), id.to_string()])
        .map_err(|e| AuthError::Naming {
            name: format!("identity {id} in trust domain {trust_domain}"),
            source: Box::new(e),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::x509::CertLocation;

    fn in_io(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn rustls_errors_are_classified() {
        use CertificateProblem::{Expired, Missing, NotYetValid, Untrusted, WrongIdentity};

        let id = |s: &str| s.parse::<SpiffeId>().unwrap();
        let at = CertLocation::Chain { position: 1 };
        let date = time::OffsetDateTime::UNIX_EPOCH;
        let problems = [
            (rustls::Error::NoCertificatesPresented, Missing),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                Expired,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidYet),
                NotYetValid,
            ),
            (
                invalid_certificate(VerifyError::Expired {
                    at: at.clone(),
                    not_after: date,
                }),
                Expired,
            ),
            (
                invalid_certificate(VerifyError::NotYetValid {
                    at,
                    not_before: date,
                }),
                NotYetValid,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                Untrusted,
            ),
            (
                invalid_certificate(UnexpectedPeer {
                    expected: id("spiffe://example.org/identity/5"),
                    presented: id("spiffe://example.org/identity/7"),
                }),
                WrongIdentity,
            ),
        ];
        for (e, problem) in problems {
            assert_eq!(CertificateProblem::of(&e), Some(problem), "{e:?}");
        }
        assert_eq!(NotYetValid.kind(), "expired");
        assert_eq!(Missing.kind(), "untrusted");

        let cases = [
            (rustls::Error::NoCertificatesPresented, "untrusted"),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "expired",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidYet),
                "expired",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "untrusted",
            ),
            (
                invalid_certificate(VerifyError::TrustDomainMismatch {
                    id: id("spiffe://other.example/identity/5"),
                    leaf: "other.example".parse().unwrap(),
                    bundle: "example.org".parse().unwrap(),
                }),
                "untrusted",
            ),
            (
                invalid_certificate(UnexpectedPeer {
                    expected: id("spiffe://example.org/identity/5"),
                    presented: id("spiffe://example.org/identity/7"),
                }),
                "wrong-identity",
            ),
            (
                invalid_certificate(io::Error::other("something else")),
                "untrusted",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::CertificateUnknown),
                "tls",
            ),
            (
                rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered),
                "tls",
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(AuthError::from_rustls(e.clone()).kind(), kind, "{e:?}");
            assert_eq!(AuthError::from_io(in_io(e.clone())).kind(), kind, "{e:?}");
        }
        let eof = AuthError::from_io(io::ErrorKind::UnexpectedEof.into());
        assert!(matches!(eof, AuthError::Io { .. }), "{eof:?}");
        assert_eq!(eof.kind(), "tls");
    }

    #[test]
    fn refused_certificates_read_well() {
        let e = AuthError::wrong_identity(
            "spiffe://example.org/identity/5".parse().unwrap(),
            "spiffe://example.org/identity/7".parse().unwrap(),
        );
        assert_eq!(
            e.to_string(),
            "the peer's certificate is refused: the peer presented \
             spiffe://example.org/identity/7, not spiffe://example.org/identity/5"
        );
        let e = AuthError::from_rustls(rustls::Error::NoCertificatesPresented);
        assert_eq!(
            e.to_string(),
            "the peer's certificate is refused: peer sent no certificates"
        );
    }
}
