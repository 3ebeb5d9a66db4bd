//! An X.509-SVID: a SPIFFE ID, its certificate chain and its private key.
//!
//! [`X509Svid::parse_pem`] and [`X509Svid::parse_der`] apply the structural
//! rules of the X509-SVID specification (see the `cert` module: one SPIFFE
//! ID with a path, leaf not a CA, leaf key usage, signing certificates are
//! CAs with `keyCertSign`) and check that the key belongs to the leaf. Like
//! go-spiffe's `Parse`, they do not look at the clock and do not check the
//! chain of trust: that is [`X509Bundle::verify`](super::X509Bundle::verify).
//! The certificates are checked before the key.

use std::fmt;
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::cert::{self, ChainError};
use super::key::{self, PrivateKeyError};
use super::pem_blocks::{self, PemError};
use crate::pem::{CERTIFICATE, PRIVATE_KEY};
use crate::SpiffeId;

/// Why bytes are not an X.509-SVID.
#[derive(Debug, Clone, thiserror::Error)]
pub enum X509SvidError {
    /// The certificate input has no PEM block at all.
    #[error("no PEM block found in the certificate input")]
    CertificatesNotPem,
    /// The certificate input is broken PEM.
    #[error("the certificate input is not valid PEM")]
    CertificatePem {
        /// What is wrong.
        #[source]
        source: PemError,
    },
    /// The certificate input has PEM blocks, none of them a certificate.
    #[error("the certificate input holds no CERTIFICATE PEM block (found: {found:?})")]
    NoCertificate {
        /// The labels of the blocks it does hold.
        found: Vec<String>,
    },
    /// The key input has no PEM block at all.
    #[error("no PEM block found in the key input")]
    KeyNotPem,
    /// The key input is broken PEM.
    #[error("the key input is not valid PEM")]
    KeyPem {
        /// What is wrong.
        #[source]
        source: PemError,
    },
    /// The key input has PEM blocks, none of them a PKCS#8 private key.
    #[error("the key input holds no \"PRIVATE KEY\" (PKCS#8) PEM block (found: {found:?}); convert other formats with `openssl pkcs8 -topk8 -nocrypt`")]
    NoPrivateKey {
        /// The labels of the blocks it does hold.
        found: Vec<String>,
    },
    /// The key input has more than one private key.
    #[error("the key input holds {count} \"PRIVATE KEY\" PEM blocks; exactly one is needed")]
    MultiplePrivateKeys {
        /// How many.
        count: usize,
    },
    /// The certificates break a rule of the X509-SVID specification.
    #[error(transparent)]
    Chain {
        /// Which rule.
        #[from]
        source: ChainError,
    },
    /// The private key cannot be decoded.
    #[error(transparent)]
    PrivateKey {
        /// Why.
        #[from]
        source: PrivateKeyError,
    },
    /// The private key is not the leaf certificate's.
    #[error("the private key does not match the leaf certificate's public key")]
    KeyMismatch,
}

/// A PKCS#8 private key in DER. Zeroized on drop; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyDer(Zeroizing<Vec<u8>>);

impl PrivateKeyDer {
    /// Wraps PKCS#8 DER bytes.
    pub fn new(pkcs8: Vec<u8>) -> Self {
        Self(Zeroizing::new(pkcs8))
    }

    /// The PKCS#8 DER bytes.
    pub fn secret_der(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyDer(...)")
    }
}

/// An X.509-SVID: the leaf certificate carrying the SPIFFE ID, the
/// intermediates up to (not including) a trust anchor, and the leaf's key.
#[derive(Clone, PartialEq, Eq)]
pub struct X509Svid {
    id: SpiffeId,
    /// DER certificates, leaf first.
    chain: Vec<Vec<u8>>,
    key: PrivateKeyDer,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl X509Svid {
    /// Assembles an SVID from parts the caller has already checked (the CA,
    /// which built the certificate itself). Untrusted input goes through
    /// the parsers, which check every rule of the specification.
    pub fn from_parts(
        id: SpiffeId,
        chain: Vec<Vec<u8>>,
        key: PrivateKeyDer,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Self {
        Self {
            id,
            chain,
            key,
            not_before,
            not_after,
        }
    }

    /// Parses an X.509-SVID from PEM: `certs` holds the leaf and then any
    /// intermediates as `CERTIFICATE` blocks, `key` one PKCS#8 `PRIVATE KEY`
    /// block. Blocks with other labels are ignored, so one file holding both
    /// the certificates and the key can be passed as both inputs.
    pub fn parse_pem(certs: &[u8], key: &[u8]) -> Result<Self, X509SvidError> {
        let blocks =
            pem_blocks::decode(certs).map_err(|source| X509SvidError::CertificatePem { source })?;
        if blocks.is_empty() {
            return Err(X509SvidError::CertificatesNotPem);
        }
        let chain: Vec<Vec<u8>> = blocks
            .iter()
            .filter(|b| b.label == CERTIFICATE)
            .map(|b| b.der.to_vec())
            .collect();
        if chain.is_empty() {
            return Err(X509SvidError::NoCertificate {
                found: blocks.into_iter().map(|b| b.label).collect(),
            });
        }
        let leaf = check_certificates(&chain)?;

        let blocks = pem_blocks::decode(key).map_err(|source| X509SvidError::KeyPem { source })?;
        if blocks.is_empty() {
            return Err(X509SvidError::KeyNotPem);
        }
        let count = blocks.iter().filter(|b| b.label == PRIVATE_KEY).count();
        if count > 1 {
            return Err(X509SvidError::MultiplePrivateKeys { count });
        }
        let found: Vec<String> = blocks.iter().map(|b| b.label.clone()).collect();
        let mut block = blocks
            .into_iter()
            .find(|b| b.label == PRIVATE_KEY)
            .ok_or(X509SvidError::NoPrivateKey { found })?;
        // Moves the bytes out; the emptied `Zeroizing` has nothing to wipe.
        let key = PrivateKeyDer::new(std::mem::take(&mut *block.der));
        leaf.with_key(chain, key)
    }

    /// Parses an X.509-SVID from DER, as the Workload API sends it: `chain`
    /// is the leaf and then any intermediates, concatenated; `key_pkcs8` is
    /// the PKCS#8 private key.
    pub fn parse_der(chain: &[u8], key_pkcs8: &[u8]) -> Result<Self, X509SvidError> {
        let chain: Vec<Vec<u8>> = cert::split_concatenated(chain)
            .map_err(|(position, source)| ChainError::Malformed { position, source })?
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        let leaf = check_certificates(&chain)?;
        leaf.with_key(chain, PrivateKeyDer::new(key_pkcs8.to_vec()))
    }

    /// The SPIFFE ID in the leaf's URI SAN.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.id
    }

    /// The DER certificates, leaf first.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The leaf certificate in DER.
    pub fn leaf(&self) -> &[u8] {
        self.chain.first().map_or(&[], Vec::as_slice)
    }

    /// The leaf's private key.
    pub fn private_key(&self) -> &PrivateKeyDer {
        &self.key
    }

    /// When the leaf becomes valid.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// When the leaf expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// What the structural checks learn about the leaf.
struct CheckedLeaf {
    id: SpiffeId,
    not_before: SystemTime,
    not_after: SystemTime,
    /// The contents of the leaf's `subjectPublicKey` bit string.
    public_key: Vec<u8>,
}

/// Parses the chain and applies the structural rules.
fn check_certificates(chain: &[Vec<u8>]) -> Result<CheckedLeaf, ChainError> {
    let certs = cert::parse_chain(chain)?;
    let id = cert::check_chain(&certs)?;
    let leaf = certs.first().ok_or(ChainError::Empty)?;
    let (not_before, not_after) = cert::validity(leaf)?;
    Ok(CheckedLeaf {
        id,
        not_before,
        not_after,
        public_key: leaf.public_key().subject_public_key.data.to_vec(),
    })
}

impl CheckedLeaf {
    /// Checks that `key` is the leaf's private key, and assembles the SVID.
    fn with_key(self, chain: Vec<Vec<u8>>, key: PrivateKeyDer) -> Result<X509Svid, X509SvidError> {
        if key::public_key_of_pkcs8(key.secret_der())? != self.public_key {
            return Err(X509SvidError::KeyMismatch);
        }
        Ok(X509Svid::from_parts(
            self.id,
            chain,
            key,
            self.not_before,
            self.not_after,
        ))
    }
}

impl fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Svid")
            .field("id", &self.id)
            .field("chain_len", &self.chain.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}
