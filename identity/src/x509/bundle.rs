//! An X.509 bundle: the trust anchors (CA certificates) of one trust domain,
//! indexed by key identifier.
//!
//! An anchor's [`KeyId`] is its subjectKeyIdentifier extension when it has
//! one. Without it, the id is the first 160 bits of the SHA-256 of the DER
//! `SubjectPublicKeyInfo` (the method rcgen uses by default, so the id is
//! what our own CA writes into the authorityKeyIdentifier of what it
//! signs). Anchors are not indexed by subject: two CAs may share a subject
//! during a key rotation, and a subject proves nothing.

use std::collections::BTreeMap;
use std::fmt;

use ring::digest;
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::ParsedExtension;

use super::cert::{self, ParseOneError};
use super::pem_blocks::{self, PemError};
use crate::pem::{self, CERTIFICATE};
use crate::TrustDomain;

/// Length of a derived key id, as RFC 5280's SHA-1 method and rcgen produce.
const DERIVED_KEY_ID_LEN: usize = 20;

/// Why a certificate cannot be a trust anchor, or a bundle cannot be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum X509BundleError {
    /// Not a DER X.509 certificate.
    #[error("the trust anchor is not a valid DER X.509 certificate")]
    Malformed {
        /// What the parser found.
        #[source]
        source: X509Error,
    },
    /// Bytes follow the certificate.
    #[error("the trust anchor certificate is followed by {trailing} stray bytes")]
    TrailingData {
        /// How many.
        trailing: usize,
    },
    /// An extension of the certificate cannot be parsed.
    #[error("the trust anchor {subject} has an invalid or duplicated extension")]
    BadExtension {
        /// The certificate's subject.
        subject: String,
    },
    /// basicConstraints is absent or has `cA` false.
    #[error("the certificate {subject} is not a CA certificate (basicConstraints cA is not true), so it cannot be a trust anchor")]
    NotCa {
        /// The certificate's subject.
        subject: String,
    },
    /// keyUsage is present without `keyCertSign`.
    #[error("the CA certificate {subject} has a keyUsage without keyCertSign, so it cannot be a trust anchor")]
    NoKeyCertSign {
        /// The certificate's subject.
        subject: String,
    },
    /// Another certificate already holds the key id.
    #[error(
        "the bundle already has a different trust anchor with key id {key_id}; remove it first"
    )]
    DuplicateKeyId {
        /// The key id.
        key_id: KeyId,
    },
    /// A certificate of a multi-certificate input is not a valid anchor.
    #[error("certificate {position} of the bundle input cannot be a trust anchor")]
    Certificate {
        /// Its position, from 1.
        position: usize,
        /// Why.
        #[source]
        source: Box<X509BundleError>,
    },
    /// The PEM input is broken.
    #[error("the bundle input is not valid PEM")]
    Pem {
        /// What is wrong.
        #[source]
        source: PemError,
    },
    /// The PEM input has text but no PEM block.
    #[error("no PEM block found in the bundle input")]
    NotPem,
    /// The PEM input has a block that is not a certificate.
    #[error("the bundle input holds a \"{label}\" PEM block; only CERTIFICATE blocks are allowed")]
    UnexpectedPemBlock {
        /// The block's label.
        label: String,
    },
}

/// A key identifier, shown as colon-separated hex like OpenSSL does.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(Vec<u8>);

impl KeyId {
    /// A key id from its bytes, as found in a subjectKeyIdentifier or
    /// authorityKeyIdentifier extension.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The identifier's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The subjectKeyIdentifier of `cert`, if it has one.
    pub(crate) fn from_extension(cert: &X509Certificate<'_>) -> Option<Self> {
        cert.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(Self(id.0.to_vec())),
                _ => None,
            })
    }

    /// The authorityKeyIdentifier's keyIdentifier of `cert`, if it has one.
    pub(crate) fn of_issuer(cert: &X509Certificate<'_>) -> Option<Self> {
        cert.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|id| Self(id.0.to_vec()))
                }
                _ => None,
            })
    }

    /// The id of `cert`'s key: its subjectKeyIdentifier, or derived from
    /// its `SubjectPublicKeyInfo`.
    pub(crate) fn of(cert: &X509Certificate<'_>) -> Self {
        Self::from_extension(cert).unwrap_or_else(|| {
            let hash = digest::digest(&digest::SHA256, cert.public_key().raw);
            Self(
                hash.as_ref()
                    .iter()
                    .take(DERIVED_KEY_ID_LEN)
                    .copied()
                    .collect(),
            )
        })
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The X.509 trust anchors of one trust domain.
#[derive(Clone, PartialEq, Eq)]
pub struct X509Bundle {
    trust_domain: TrustDomain,
    /// DER certificates by key id.
    anchors: BTreeMap<KeyId, Vec<u8>>,
}

impl X509Bundle {
    /// An empty bundle for `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            anchors: BTreeMap::new(),
        }
    }

    /// The trust domain whose anchors these are.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Adds a trust anchor: one DER certificate with basicConstraints `cA`
    /// true and, if it has a keyUsage, `keyCertSign`. Adding a certificate
    /// that is already there changes nothing; adding a different one with
    /// the key id of one that is there is an error (remove the old one
    /// first). Returns the anchor's key id.
    pub fn add_authority(&mut self, der: &[u8]) -> Result<KeyId, X509BundleError> {
        let cert = cert::parse_one(der).map_err(|e| match e {
            ParseOneError::Malformed(source) => X509BundleError::Malformed { source },
            ParseOneError::Trailing(trailing) => X509BundleError::TrailingData { trailing },
        })?;
        let subject = || cert.subject().to_string();
        let bc = cert
            .basic_constraints()
            .map_err(|_| X509BundleError::BadExtension { subject: subject() })?;
        if !bc.is_some_and(|bc| bc.value.ca) {
            return Err(X509BundleError::NotCa { subject: subject() });
        }
        let ku = cert
            .key_usage()
            .map_err(|_| X509BundleError::BadExtension { subject: subject() })?;
        if ku.is_some_and(|ku| !ku.value.key_cert_sign()) {
            return Err(X509BundleError::NoKeyCertSign { subject: subject() });
        }
        let key_id = KeyId::of(&cert);
        match self.anchors.get(&key_id) {
            Some(existing) if existing.as_slice() != der => {
                Err(X509BundleError::DuplicateKeyId { key_id })
            }
            Some(_) => Ok(key_id),
            None => {
                self.anchors.insert(key_id.clone(), der.to_vec());
                Ok(key_id)
            }
        }
    }

    /// Removes the anchor with `key_id`, returning its DER certificate.
    pub fn remove_authority(&mut self, key_id: &KeyId) -> Option<Vec<u8>> {
        self.anchors.remove(key_id)
    }

    /// The DER certificate of the anchor with `key_id`.
    pub fn authority(&self, key_id: &KeyId) -> Option<&[u8]> {
        self.anchors.get(key_id).map(Vec::as_slice)
    }

    /// Every anchor, as (key id, DER certificate), ordered by key id.
    pub fn authorities(&self) -> impl Iterator<Item = (&KeyId, &[u8])> {
        self.anchors.iter().map(|(id, der)| (id, der.as_slice()))
    }

    /// How many anchors there are.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether there are no anchors.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// A bundle from PEM `CERTIFICATE` blocks. Empty (or whitespace-only)
    /// input gives an empty bundle; any other block label is an error.
    pub fn from_pem(trust_domain: TrustDomain, input: &[u8]) -> Result<Self, X509BundleError> {
        let blocks = pem_blocks::decode(input).map_err(|source| X509BundleError::Pem { source })?;
        if blocks.is_empty() && !input.trim_ascii().is_empty() {
            return Err(X509BundleError::NotPem);
        }
        if let Some(other) = blocks.iter().find(|b| b.label != CERTIFICATE) {
            return Err(X509BundleError::UnexpectedPemBlock {
                label: other.label.clone(),
            });
        }
        Self::from_certificates(trust_domain, blocks.iter().map(|b| b.der.as_slice()))
    }

    /// The anchors as PEM `CERTIFICATE` blocks, ordered by key id.
    pub fn to_pem(&self) -> String {
        pem::encode_certificates(self.anchors.values().map(Vec::as_slice))
    }

    /// A bundle from concatenated DER certificates, as the Workload API
    /// sends bundles. Empty input gives an empty bundle.
    pub fn from_der_concatenated(
        trust_domain: TrustDomain,
        der: &[u8],
    ) -> Result<Self, X509BundleError> {
        let certs = cert::split_concatenated(der).map_err(|(position, source)| {
            X509BundleError::Certificate {
                position,
                source: Box::new(X509BundleError::Malformed { source }),
            }
        })?;
        Self::from_certificates(trust_domain, certs)
    }

    /// The anchors as concatenated DER, ordered by key id.
    pub fn to_der_concatenated(&self) -> Vec<u8> {
        self.anchors.values().flatten().copied().collect()
    }

    /// The DER certificate of the anchor that is byte for byte `der`, with
    /// its key id.
    pub(crate) fn find_identical(&self, der: &[u8]) -> Option<(&KeyId, &[u8])> {
        self.authorities().find(|(_, anchor)| *anchor == der)
    }

    fn from_certificates<'a>(
        trust_domain: TrustDomain,
        certs: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, X509BundleError> {
        let mut bundle = Self::new(trust_domain);
        for (i, der) in certs.into_iter().enumerate() {
            bundle
                .add_authority(der)
                .map_err(|source| X509BundleError::Certificate {
                    position: i + 1,
                    source: Box::new(source),
                })?;
        }
        Ok(bundle)
    }
}

impl fmt::Debug for X509Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Bundle")
            .field("trust_domain", &self.trust_domain)
            .field("anchors", &self.anchors.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_prints_like_openssl() {
        assert_eq!(KeyId(vec![0x75, 0xfe, 0x0c]).to_string(), "75:FE:0C");
        assert_eq!(format!("{:?}", KeyId(vec![1])), "KeyId(01)");
    }

    #[test]
    fn empty_inputs_are_empty_bundles_but_text_is_not() {
        let td = TrustDomain::new("example.org").unwrap();
        assert!(X509Bundle::from_pem(td.clone(), b" \n").unwrap().is_empty());
        assert!(X509Bundle::from_der_concatenated(td.clone(), b"")
            .unwrap()
            .is_empty());
        assert_eq!(
            X509Bundle::from_pem(td.clone(), b"not-pem\n"),
            Err(X509BundleError::NotPem)
        );
        assert!(matches!(
            X509Bundle::from_der_concatenated(td, b"\x30\x03abc"),
            Err(X509BundleError::Certificate { position: 1, .. })
        ));
    }
}
