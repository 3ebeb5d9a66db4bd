//! The structural rules of the X509-SVID specification for a certificate
//! chain (leaf first), shared by SVID parsing and chain verification.
//!
//! Positions in errors count from 1: certificate 1 is the leaf.
//!
//! The rules (SPIFFE X509-SVID §2, §3, §4, §5.2):
//! - the leaf has exactly one URI SAN, a SPIFFE ID with a non-root path;
//! - the leaf is not a CA (basicConstraints absent or `cA` false);
//! - the leaf has a keyUsage extension, marked critical, with
//!   `digitalSignature` and with neither `keyCertSign` nor `cRLSign`;
//! - when the leaf has an extendedKeyUsage extension, it includes both
//!   `id-kp-serverAuth` and `id-kp-clientAuth` (§4.4: "When included,
//!   fields id-kp-serverAuth and id-kp-clientAuth MUST be set"); other
//!   purposes may accompany them;
//! - every other certificate is a signing certificate: `cA` true and a
//!   keyUsage extension with `keyCertSign`; a SPIFFE ID in its URI SANs has
//!   no path (§3.2).
//!
//! Criticality: §4.3 says keyUsage "MUST be marked critical" on all SVIDs.
//! Every leaf of the go-spiffe vectors (good and bad) marks it critical, so
//! criticality is required on the leaf. It is not required on signing
//! certificates, which "SHOULD" (not must) be SVIDs themselves and often
//! come from an existing PKI; their keyUsage must only be present and allow
//! `keyCertSign`. The RFC 5280 rule that a SAN must be critical when the
//! subject is empty is an issuing rule and is not checked here.
//!
//! The checks run in go-spiffe's order (SPIFFE ID, CA flag, key usage), so
//! a certificate with several defects reports the one go-spiffe reports.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry;
use x509_parser::time::ASN1Time;

use crate::{SpiffeId, SpiffeIdError};

/// The longest chain (leaf and signing certificates) accepted.
pub const MAX_CHAIN_LEN: usize = 8;

/// Why a certificate chain is not a valid X509-SVID chain.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChainError {
    /// No certificate at all.
    #[error("the certificate chain is empty")]
    Empty,
    /// More than [`MAX_CHAIN_LEN`] certificates.
    #[error("the certificate chain has {len} certificates; at most {max} are accepted")]
    TooLong {
        /// How many there are.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a DER X.509 certificate.
    #[error("certificate {position} of the chain is not a valid DER X.509 certificate")]
    Malformed {
        /// Its position, from 1.
        position: usize,
        /// What the parser found.
        #[source]
        source: X509Error,
    },
    /// Bytes follow the certificate inside one PEM block or DER element.
    #[error("certificate {position} of the chain is followed by {trailing} stray bytes")]
    TrailingData {
        /// Its position, from 1.
        position: usize,
        /// How many bytes follow.
        trailing: usize,
    },
    /// An extension is duplicated or cannot be parsed.
    #[error("certificate {position} of the chain has an invalid or duplicated extension {oid}")]
    BadExtension {
        /// Its position, from 1.
        position: usize,
        /// The extension's OID (dotted), or `unknown` when the parser does not say.
        oid: String,
    },
    /// The leaf has no URI SAN.
    #[error("the leaf certificate has no URI SAN, so it carries no SPIFFE ID")]
    LeafNoUriSan,
    /// The leaf has more than one URI SAN.
    #[error("the leaf certificate has {count} URI SANs; an X509-SVID has exactly one")]
    LeafMultipleUriSans {
        /// How many.
        count: usize,
    },
    /// The leaf's URI SAN is not a SPIFFE ID.
    #[error("the leaf certificate's URI SAN {uri:?} is not a valid SPIFFE ID")]
    LeafInvalidSpiffeId {
        /// The URI.
        uri: String,
        /// Why.
        #[source]
        source: SpiffeIdError,
    },
    /// The leaf's SPIFFE ID is a trust domain's own ID.
    #[error("the leaf certificate's SPIFFE ID {id} has no path; an X509-SVID leaf's SPIFFE ID must have a non-root path")]
    LeafIdWithoutPath {
        /// The ID.
        id: SpiffeId,
    },
    /// The leaf has basicConstraints `cA` true.
    #[error("the leaf certificate has the CA flag set (basicConstraints cA is true)")]
    LeafIsCa,
    /// The leaf has no keyUsage extension.
    #[error("the leaf certificate has no keyUsage extension")]
    LeafKeyUsageMissing,
    /// The leaf's keyUsage lacks `digitalSignature`.
    #[error("the leaf certificate's keyUsage lacks digitalSignature")]
    LeafNoDigitalSignature,
    /// The leaf's keyUsage has `keyCertSign`.
    #[error("the leaf certificate's keyUsage includes keyCertSign")]
    LeafKeyCertSign,
    /// The leaf's keyUsage has `cRLSign`.
    #[error("the leaf certificate's keyUsage includes cRLSign")]
    LeafCrlSign,
    /// The leaf's keyUsage is not marked critical.
    #[error("the leaf certificate's keyUsage extension is not marked critical")]
    LeafKeyUsageNotCritical,
    /// The leaf has an extendedKeyUsage without a purpose the specification requires.
    #[error("the leaf certificate's extendedKeyUsage lacks {purpose} (when present it must include serverAuth and clientAuth)")]
    LeafExtendedKeyUsage {
        /// `serverAuth` or `clientAuth`.
        purpose: &'static str,
    },
    /// A signing certificate without basicConstraints `cA` true.
    #[error(
        "certificate {position} of the chain (a signing certificate) does not have the CA flag set"
    )]
    SigningNotCa {
        /// Its position, from 2.
        position: usize,
    },
    /// A signing certificate without a keyUsage extension.
    #[error(
        "certificate {position} of the chain (a signing certificate) has no keyUsage extension"
    )]
    SigningKeyUsageMissing {
        /// Its position, from 2.
        position: usize,
    },
    /// A signing certificate whose keyUsage lacks `keyCertSign`.
    #[error("certificate {position} of the chain (a signing certificate) does not have keyCertSign in its keyUsage")]
    SigningNoKeyCertSign {
        /// Its position, from 2.
        position: usize,
    },
    /// A signing certificate whose SPIFFE ID has a path.
    #[error("certificate {position} of the chain (a signing certificate) has the SPIFFE ID {id}, which has a path; a signing certificate's SPIFFE ID must not")]
    SigningIdWithPath {
        /// Its position, from 2.
        position: usize,
        /// The ID.
        id: SpiffeId,
    },
    /// A validity date that `SystemTime` cannot hold on this platform.
    #[error(
        "certificate {position} of the chain has a validity date this platform cannot represent"
    )]
    TimeOutOfRange {
        /// Its position, from 1.
        position: usize,
    },
}

/// Converts a nom parse failure to the parser's error.
pub(crate) fn nom_error(e: x509_parser::nom::Err<X509Error>) -> X509Error {
    match e {
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
        x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
    }
}

/// Parses one DER certificate that must fill `der` exactly.
pub(crate) fn parse_one(der: &[u8]) -> Result<X509Certificate<'_>, ParseOneError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| ParseOneError::Malformed(nom_error(e)))?;
    if rest.is_empty() {
        Ok(cert)
    } else {
        Err(ParseOneError::Trailing(rest.len()))
    }
}

/// Why [`parse_one`] failed, for callers to put in their own error type.
pub(crate) enum ParseOneError {
    /// Not DER X.509.
    Malformed(X509Error),
    /// This many bytes follow the certificate.
    Trailing(usize),
}

/// Splits concatenated DER certificates (as the Workload API sends chains
/// and bundles) into one slice per certificate; the error carries the
/// 1-based position of the certificate that does not parse.
pub(crate) fn split_concatenated(mut input: &[u8]) -> Result<Vec<&[u8]>, (usize, X509Error)> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(input)
            .map_err(|e| (out.len() + 1, nom_error(e)))?;
        let (cert, _) = input.split_at(input.len() - rest.len());
        out.push(cert);
        input = rest;
    }
    Ok(out)
}

/// Parses a chain (leaf first), bounding its length.
pub(crate) fn parse_chain(chain: &[Vec<u8>]) -> Result<Vec<X509Certificate<'_>>, ChainError> {
    if chain.is_empty() {
        return Err(ChainError::Empty);
    }
    if chain.len() > MAX_CHAIN_LEN {
        return Err(ChainError::TooLong {
            len: chain.len(),
            max: MAX_CHAIN_LEN,
        });
    }
    chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            parse_one(der).map_err(|e| match e {
                ParseOneError::Malformed(source) => ChainError::Malformed {
                    position: i + 1,
                    source,
                },
                ParseOneError::Trailing(trailing) => ChainError::TrailingData {
                    position: i + 1,
                    trailing,
                },
            })
        })
        .collect()
}

/// Applies every structural rule to a parsed chain (leaf first) and returns
/// the leaf's SPIFFE ID.
pub(crate) fn check_chain(certs: &[X509Certificate<'_>]) -> Result<SpiffeId, ChainError> {
    let Some((leaf, signing)) = certs.split_first() else {
        return Err(ChainError::Empty);
    };
    for (i, cert) in certs.iter().enumerate() {
        check_extensions_parse(cert, i + 1)?;
    }
    let id = check_leaf(leaf)?;
    for (i, cert) in signing.iter().enumerate() {
        check_signing(cert, i + 2)?;
    }
    Ok(id)
}

/// The leaf's validity window as `SystemTime`s.
pub(crate) fn validity(cert: &X509Certificate<'_>) -> Result<(SystemTime, SystemTime), ChainError> {
    let v = cert.validity();
    match (system_time(v.not_before), system_time(v.not_after)) {
        (Some(nb), Some(na)) => Ok((nb, na)),
        _ => Err(ChainError::TimeOutOfRange { position: 1 }),
    }
}

fn system_time(t: ASN1Time) -> Option<SystemTime> {
    let secs = t.timestamp();
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

/// Rejects duplicated extensions and extensions the parser could not
/// decode (x509-parser keeps those as `ParseError`, and its
/// `basic_constraints()` would then answer "absent").
fn check_extensions_parse(cert: &X509Certificate<'_>, position: usize) -> Result<(), ChainError> {
    let bad = |oid: String| ChainError::BadExtension { position, oid };
    if let Some(ext) = cert
        .extensions()
        .iter()
        .find(|e| matches!(e.parsed_extension(), ParsedExtension::ParseError { .. }))
    {
        return Err(bad(ext.oid.to_id_string()));
    }
    cert.extensions_map()
        .map(|_| ())
        .map_err(|_| bad("unknown".to_owned()))
}

fn uri_sans<'a>(
    cert: &'a X509Certificate<'_>,
    position: usize,
) -> Result<Vec<&'a str>, ChainError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|_| ChainError::BadExtension {
            position,
            oid: oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME.to_id_string(),
        })?;
    Ok(san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

fn check_leaf(leaf: &X509Certificate<'_>) -> Result<SpiffeId, ChainError> {
    let uris = uri_sans(leaf, 1)?;
    let uri = match uris.as_slice() {
        [] => return Err(ChainError::LeafNoUriSan),
        [uri] => *uri,
        _ => return Err(ChainError::LeafMultipleUriSans { count: uris.len() }),
    };
    let id: SpiffeId = uri
        .parse()
        .map_err(|source| ChainError::LeafInvalidSpiffeId {
            uri: uri.to_owned(),
            source,
        })?;
    if id.is_trust_domain_id() {
        return Err(ChainError::LeafIdWithoutPath { id });
    }
    if is_ca(leaf, 1)? {
        return Err(ChainError::LeafIsCa);
    }
    let ku = key_usage(leaf, 1)?.ok_or(ChainError::LeafKeyUsageMissing)?;
    if !ku.value.digital_signature() {
        return Err(ChainError::LeafNoDigitalSignature);
    }
    if ku.value.key_cert_sign() {
        return Err(ChainError::LeafKeyCertSign);
    }
    if ku.value.crl_sign() {
        return Err(ChainError::LeafCrlSign);
    }
    if !ku.critical {
        return Err(ChainError::LeafKeyUsageNotCritical);
    }
    let eku = leaf
        .extended_key_usage()
        .map_err(|_| ChainError::BadExtension {
            position: 1,
            oid: oid_registry::OID_X509_EXT_EXTENDED_KEY_USAGE.to_id_string(),
        })?;
    if let Some(eku) = eku {
        if !eku.value.server_auth {
            return Err(ChainError::LeafExtendedKeyUsage {
                purpose: "serverAuth",
            });
        }
        if !eku.value.client_auth {
            return Err(ChainError::LeafExtendedKeyUsage {
                purpose: "clientAuth",
            });
        }
    }
    Ok(id)
}

fn check_signing(cert: &X509Certificate<'_>, position: usize) -> Result<(), ChainError> {
    if !is_ca(cert, position)? {
        return Err(ChainError::SigningNotCa { position });
    }
    let ku = key_usage(cert, position)?.ok_or(ChainError::SigningKeyUsageMissing { position })?;
    if !ku.value.key_cert_sign() {
        return Err(ChainError::SigningNoKeyCertSign { position });
    }
    for uri in uri_sans(cert, position)? {
        if let Ok(id) = uri.parse::<SpiffeId>() {
            if !id.is_trust_domain_id() {
                return Err(ChainError::SigningIdWithPath { position, id });
            }
        }
    }
    Ok(())
}

/// Whether basicConstraints is present with `cA` true.
fn is_ca(cert: &X509Certificate<'_>, position: usize) -> Result<bool, ChainError> {
    cert.basic_constraints()
        .map(|bc| bc.is_some_and(|bc| bc.value.ca))
        .map_err(|_| ChainError::BadExtension {
            position,
            oid: oid_registry::OID_X509_EXT_BASIC_CONSTRAINTS.to_id_string(),
        })
}

fn key_usage<'a>(
    cert: &'a X509Certificate<'_>,
    position: usize,
) -> Result<
    Option<x509_parser::certificate::BasicExtension<&'a x509_parser::extensions::KeyUsage>>,
    ChainError,
> {
    cert.key_usage().map_err(|_| ChainError::BadExtension {
        position,
        oid: oid_registry::OID_X509_EXT_KEY_USAGE.to_id_string(),
    })
}
