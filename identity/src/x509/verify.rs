//! X.509-SVID chain verification against a bundle.
//!
//! [`X509Bundle::verify`] checks, for a chain (leaf first) and a time:
//! 1. the structural rules of the specification, as parsing does;
//! 2. that the leaf's trust domain is the bundle's;
//! 3. where the chain meets the bundle: the first certificate after the
//!    leaf that is byte for byte an anchor ends the path (certificates after
//!    it are ignored); otherwise the anchor that issued the last certificate
//!    is looked up by the last certificate's authorityKeyIdentifier;
//!    - when the last certificate has no authorityKeyIdentifier, every anchor
//!      whose subject is the certificate's issuer is tried;
//!    - when it has one that no anchor has, the anchors *without* a
//!      subjectKeyIdentifier extension whose subject is the issuer are tried
//!      (their key id is derived, so another method of deriving it may have
//!      produced the authorityKeyIdentifier); anchors with the extension are
//!      only ever found by it;
//!    - when an anchor is found by key id, its signature must verify: a
//!      certificate signed by another key that claims the anchor's key id
//!      is rejected, not retried against other anchors;
//! 4. that each certificate's issuer name is, byte for byte, the next
//!    certificate's (or the anchor's) subject, that its signature verifies
//!    with that certificate's key, and that the inner and outer signature
//!    algorithms agree (RFC 5280 §4.1.1.2);
//! 5. that every certificate of the path and the anchor is valid at `now`
//!    (bounds inclusive, to the second);
//! 6. pathLenConstraint of every signing certificate and of the anchor,
//!    counting every CA certificate between it and the leaf (as Go does);
//! 7. that no certificate of the path and no anchor has a critical
//!    extension other than basicConstraints, keyUsage, extendedKeyUsage,
//!    subjectAltName, subjectKeyIdentifier and authorityKeyIdentifier. Name
//!    constraints in particular are not processed, so a critical one is
//!    rejected, as X509-SVID §4.2 expects of libraries without support.

use std::fmt;
use std::time::SystemTime;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::oid_registry::{
    Oid, OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS,
    OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME,
    OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};

use super::cert::{self, ChainError};
use super::{KeyId, X509Bundle, X509BundleSet};
use crate::{SpiffeId, TrustDomain};

/// The critical extensions verification understands.
const HANDLED_CRITICAL: [&Oid<'static>; 6] = [
    &OID_X509_EXT_BASIC_CONSTRAINTS,
    &OID_X509_EXT_KEY_USAGE,
    &OID_X509_EXT_EXTENDED_KEY_USAGE,
    &OID_X509_EXT_SUBJECT_ALT_NAME,
    &OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
    &OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
];

/// What a successful verification established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSvid {
    id: SpiffeId,
    not_before: SystemTime,
    not_after: SystemTime,
    anchor: KeyId,
}

impl VerifiedSvid {
    /// The leaf's SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.id
    }

    /// When the leaf became valid.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// When the leaf expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The key id of the trust anchor the chain ends at.
    pub fn anchor_key_id(&self) -> &KeyId {
        &self.anchor
    }
}

/// A certificate that verification talks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertLocation {
    /// A certificate of the chain given.
    Chain {
        /// Its position, from 1 (the leaf).
        position: usize,
    },
    /// A trust anchor of the bundle.
    Anchor {
        /// Its key id.
        key_id: KeyId,
    },
}

impl fmt::Display for CertLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Chain { position } => write!(f, "certificate {position} of the chain"),
            Self::Anchor { key_id } => write!(f, "the trust anchor with key id {key_id}"),
        }
    }
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    /// The chain breaks a structural rule of the X509-SVID specification.
    #[error(transparent)]
    Chain {
        /// Which rule.
        #[from]
        source: ChainError,
    },
    /// The bundle set has no bundle for the leaf's trust domain.
    #[error(
        "there is no X.509 bundle for trust domain {trust_domain} (the leaf's SPIFFE ID is {id})"
    )]
    NoBundle {
        /// The leaf's trust domain.
        trust_domain: TrustDomain,
        /// The leaf's SPIFFE ID.
        id: SpiffeId,
    },
    /// The leaf belongs to another trust domain than the bundle.
    #[error("the leaf's SPIFFE ID {id} is in trust domain {leaf}, but the bundle is for trust domain {bundle}")]
    TrustDomainMismatch {
        /// The leaf's SPIFFE ID.
        id: SpiffeId,
        /// The leaf's trust domain.
        leaf: TrustDomain,
        /// The bundle's trust domain.
        bundle: TrustDomain,
    },
    /// A certificate is not valid yet.
    #[error("{at} is not valid before {not_before}")]
    NotYetValid {
        /// Which certificate.
        at: CertLocation,
        /// Its notBefore.
        not_before: OffsetDateTime,
    },
    /// A certificate has expired.
    #[error("{at} expired at {not_after}")]
    Expired {
        /// Which certificate.
        at: CertLocation,
        /// Its notAfter.
        not_after: OffsetDateTime,
    },
    /// The signed and unsigned signature algorithm fields differ.
    #[error("{at} names different signature algorithms inside and outside its signed part")]
    SignatureAlgorithmMismatch {
        /// Which certificate.
        at: CertLocation,
    },
    /// A certificate's issuer name is not its issuer's subject name.
    #[error("certificate {position} of the chain names the issuer \"{issuer}\", but {issuer_at} has the subject \"{subject}\"")]
    IssuerMismatch {
        /// The issued certificate's position, from 1.
        position: usize,
        /// Its issuer name.
        issuer: String,
        /// The certificate that should have issued it.
        issuer_at: CertLocation,
        /// That certificate's subject name.
        subject: String,
    },
    /// A signature does not verify with the issuer's key.
    #[error("the signature of certificate {position} of the chain does not verify with the key of {issuer_at}")]
    BadSignature {
        /// The signed certificate's position, from 1.
        position: usize,
        /// The certificate whose key was used.
        issuer_at: CertLocation,
        /// What the verifier said.
        #[source]
        source: X509Error,
    },
    /// The last certificate names an issuer key that no anchor has.
    #[error("certificate {position} of the chain was issued by key id {key_id} (issuer \"{issuer}\"), which is not a trust anchor of trust domain {trust_domain}")]
    UnknownAuthorityKeyId {
        /// The certificate's position, from 1.
        position: usize,
        /// Its authorityKeyIdentifier.
        key_id: KeyId,
        /// Its issuer name.
        issuer: String,
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
    },
    /// The last certificate has no authorityKeyIdentifier and no anchor with
    /// its issuer's name signed it.
    #[error("certificate {position} of the chain has no authorityKeyIdentifier, and no trust anchor of trust domain {trust_domain} with the subject \"{issuer}\" signed it")]
    UnknownAuthority {
        /// The certificate's position, from 1.
        position: usize,
        /// Its issuer name.
        issuer: String,
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
    },
    /// Too many CA certificates below a certificate with pathLenConstraint.
    #[error(
        "{at} allows at most {max} intermediate certificates below it, but the chain has {below}"
    )]
    PathLenExceeded {
        /// The constraining certificate.
        at: CertLocation,
        /// Its pathLenConstraint.
        max: u32,
        /// How many CA certificates lie between it and the leaf.
        below: usize,
    },
    /// A critical extension this verifier does not process.
    #[error("{at} has the critical extension {oid}, which this verifier does not process")]
    UnhandledCriticalExtension {
        /// Which certificate.
        at: CertLocation,
        /// The extension's OID, dotted.
        oid: String,
    },
    /// An anchor that was checked when added no longer parses. This cannot
    /// happen unless memory is corrupted; it exists so that the code has no
    /// panic path.
    #[error("{at} of the bundle does not parse")]
    AnchorUnreadable {
        /// Which anchor.
        at: CertLocation,
        /// What the parser said.
        #[source]
        source: X509Error,
    },
}

impl X509Bundle {
    /// Verifies an X.509-SVID chain (DER, leaf first) against this bundle's
    /// anchors at time `now`. See the module documentation for the rules.
    pub fn verify(&self, chain: &[Vec<u8>], now: SystemTime) -> Result<VerifiedSvid, VerifyError> {
        let certs = cert::parse_chain(chain)?;
        let id = cert::check_chain(&certs)?;
        verify_parsed(self, chain, &certs, id, now)
    }
}

impl X509BundleSet {
    /// Verifies an X.509-SVID chain (DER, leaf first) against the bundle of
    /// the leaf's trust domain, as [`X509Bundle::verify`] does.
    pub fn verify(&self, chain: &[Vec<u8>], now: SystemTime) -> Result<VerifiedSvid, VerifyError> {
        let certs = cert::parse_chain(chain)?;
        let id = cert::check_chain(&certs)?;
        let Some(bundle) = self.get(id.trust_domain()) else {
            return Err(VerifyError::NoBundle {
                trust_domain: id.trust_domain().clone(),
                id,
            });
        };
        verify_parsed(bundle, chain, &certs, id, now)
    }
}

/// An anchor the chain ends at.
struct Anchor<'b> {
    key_id: KeyId,
    cert: X509Certificate<'b>,
}

impl Anchor<'_> {
    fn at(&self) -> CertLocation {
        CertLocation::Anchor {
            key_id: self.key_id.clone(),
        }
    }
}

fn verify_parsed(
    bundle: &X509Bundle,
    chain: &[Vec<u8>],
    certs: &[X509Certificate<'_>],
    id: SpiffeId,
    now: SystemTime,
) -> Result<VerifiedSvid, VerifyError> {
    if id.trust_domain() != bundle.trust_domain() {
        return Err(VerifyError::TrustDomainMismatch {
            leaf: id.trust_domain().clone(),
            bundle: bundle.trust_domain().clone(),
            id,
        });
    }
    // Compared with certificate times, which are signed; an instant before
    // the epoch counts as the epoch.
    let now = i64::try_from(crate::timestamp::unix_seconds(now)).unwrap_or(i64::MAX);
    // The path is the chain up to (not including) the first certificate
    // that is an anchor; the leaf is never one (anchors are CAs).
    let identical = chain
        .iter()
        .enumerate()
        .skip(1)
        .find_map(|(i, der)| bundle.find_identical(der).map(|found| (i, found)));
    let path = match identical {
        Some((end, _)) => certs.get(..end),
        None => Some(certs),
    };
    let (Some(path), Some(leaf)) = (path, certs.first()) else {
        return Err(ChainError::Empty.into());
    };

    for (i, cert) in path.iter().enumerate() {
        let at = CertLocation::Chain { position: i + 1 };
        check_validity(cert, now, &at)?;
        check_certificate(cert, &at)?;
    }
    for (i, pair) in path.windows(2).enumerate() {
        if let [cert, issuer] = pair {
            check_issued_by(cert, i + 1, issuer, CertLocation::Chain { position: i + 2 })?;
        }
    }

    let last_position = path.len();
    let anchor = match (identical, path.last()) {
        (Some((_, (key_id, der))), Some(last)) => {
            let anchor = parse_anchor(key_id, der)?;
            check_issued_by(last, last_position, &anchor.cert, anchor.at())?;
            anchor
        }
        (None, Some(last)) => find_anchor(bundle, last, last_position)?,
        (_, None) => return Err(ChainError::Empty.into()),
    };
    check_validity(&anchor.cert, now, &anchor.at())?;
    check_certificate(&anchor.cert, &anchor.at())?;

    for (i, cert) in path.iter().enumerate().skip(1) {
        check_path_len(cert, CertLocation::Chain { position: i + 1 }, i - 1)?;
    }
    check_path_len(&anchor.cert, anchor.at(), path.len().saturating_sub(1))?;

    let (not_before, not_after) = cert::validity(leaf)?;
    tracing::debug!(
        spiffe_id = %id,
        anchor = %anchor.key_id,
        path_len = path.len(),
        "X.509-SVID chain verified"
    );
    Ok(VerifiedSvid {
        id,
        not_before,
        not_after,
        anchor: anchor.key_id,
    })
}

/// Finds the anchor that issued `last` by key id (see the module
/// documentation for the fallback) and checks its signature.
fn find_anchor<'b>(
    bundle: &'b X509Bundle,
    last: &X509Certificate<'_>,
    position: usize,
) -> Result<Anchor<'b>, VerifyError> {
    let aki = KeyId::of_issuer(last);
    if let Some((key_id, der)) = aki
        .as_ref()
        .and_then(|k| bundle.authority(k).map(|der| (k, der)))
    {
        let anchor = parse_anchor(key_id, der)?;
        check_issued_by(last, position, &anchor.cert, anchor.at())?;
        return Ok(anchor);
    }
    for (key_id, der) in bundle.authorities() {
        let anchor = parse_anchor(key_id, der)?;
        let eligible = aki.is_none() || KeyId::from_extension(&anchor.cert).is_none();
        if eligible
            && anchor.cert.subject().as_raw() == last.issuer().as_raw()
            && last
                .verify_signature(Some(anchor.cert.public_key()))
                .is_ok()
        {
            return Ok(anchor);
        }
    }
    let issuer = last.issuer().to_string();
    let trust_domain = bundle.trust_domain().clone();
    Err(match aki {
        Some(key_id) => VerifyError::UnknownAuthorityKeyId {
            position,
            key_id,
            issuer,
            trust_domain,
        },
        None => VerifyError::UnknownAuthority {
            position,
            issuer,
            trust_domain,
        },
    })
}

fn parse_anchor<'b>(key_id: &KeyId, der: &'b [u8]) -> Result<Anchor<'b>, VerifyError> {
    let at = || CertLocation::Anchor {
        key_id: key_id.clone(),
    };
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| VerifyError::AnchorUnreadable {
            at: at(),
            source: cert::nom_error(e),
        })?;
    Ok(Anchor {
        key_id: key_id.clone(),
        cert,
    })
}

/// Checks that `issuer` issued `cert` (at `position`): names and signature.
fn check_issued_by(
    cert: &X509Certificate<'_>,
    position: usize,
    issuer: &X509Certificate<'_>,
    issuer_at: CertLocation,
) -> Result<(), VerifyError> {
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(VerifyError::IssuerMismatch {
            position,
            issuer: cert.issuer().to_string(),
            issuer_at,
            subject: issuer.subject().to_string(),
        });
    }
    cert.verify_signature(Some(issuer.public_key()))
        .map_err(|source| VerifyError::BadSignature {
            position,
            issuer_at,
            source,
        })
}

fn check_validity(
    cert: &X509Certificate<'_>,
    now: i64,
    at: &CertLocation,
) -> Result<(), VerifyError> {
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(VerifyError::NotYetValid {
            at: at.clone(),
            not_before: validity.not_before.to_datetime(),
        });
    }
    if now > validity.not_after.timestamp() {
        return Err(VerifyError::Expired {
            at: at.clone(),
            not_after: validity.not_after.to_datetime(),
        });
    }
    Ok(())
}

/// Signature algorithm consistency and critical extensions.
fn check_certificate(cert: &X509Certificate<'_>, at: &CertLocation) -> Result<(), VerifyError> {
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err(VerifyError::SignatureAlgorithmMismatch { at: at.clone() });
    }
    if let Some(ext) = cert
        .extensions()
        .iter()
        .find(|e| e.critical && !HANDLED_CRITICAL.iter().any(|h| **h == e.oid))
    {
        return Err(VerifyError::UnhandledCriticalExtension {
            at: at.clone(),
            oid: ext.oid.to_id_string(),
        });
    }
    Ok(())
}

/// Checks `cert`'s pathLenConstraint against the `below` CA certificates
/// between it and the leaf.
fn check_path_len(
    cert: &X509Certificate<'_>,
    at: CertLocation,
    below: usize,
) -> Result<(), VerifyError> {
    let max = cert
        .basic_constraints()
        .ok()
        .flatten()
        .and_then(|bc| bc.value.path_len_constraint);
    match max {
        Some(max) if usize::try_from(max).is_ok_and(|m| below > m) => {
            Err(VerifyError::PathLenExceeded { at, max, below })
        }
        _ => Ok(()),
    }
}
