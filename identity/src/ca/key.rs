//! ECDSA P-256 keys: the CA's signing keys, JWT signing keys and SVID keys.
//!
//! The PKCS#8 encoding is kept zeroizing and never printed. ring holds the
//! parsed key for signing; its memory is ring's to manage.

use std::fmt;

use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey, PKCS_ECDSA_P256_SHA256};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};

use crate::x509::PrivateKeyDer;

/// What a key signs, which decides the signature encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// X.509 certificates: ASN.1 DER encoded ECDSA signatures.
    X509,
    /// JWTs (ES256): fixed-length `r || s` signatures.
    Jwt,
}

impl KeyUse {
    fn algorithm(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Self::X509 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            Self::Jwt => &ECDSA_P256_SHA256_FIXED_SIGNING,
        }
    }
}

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The system random generator failed.
    #[error("could not generate an ECDSA P-256 key: the system random generator failed")]
    Generate,
    /// The bytes are not a PKCS#8 ECDSA P-256 private key.
    #[error("not a PKCS#8 ECDSA P-256 private key: {reason}")]
    Parse {
        /// What ring said.
        reason: String,
    },
    /// Signing failed.
    #[error("ECDSA signing failed")]
    Sign,
}

/// An ECDSA P-256 private key.
pub struct EcKey {
    pkcs8: PrivateKeyDer,
    pair: EcdsaKeyPair,
    key_use: KeyUse,
}

impl EcKey {
    /// A fresh random key.
    pub fn generate(key_use: KeyUse) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(key_use.algorithm(), &rng)
            .map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(doc.as_ref(), key_use)
    }

    /// A key from its PKCS#8 DER encoding.
    pub fn from_pkcs8(der: &[u8], key_use: KeyUse) -> Result<Self, KeyError> {
        let pair = EcdsaKeyPair::from_pkcs8(key_use.algorithm(), der, &SystemRandom::new())
            .map_err(|e| KeyError::Parse {
                reason: e.to_string(),
            })?;
        Ok(Self {
            pkcs8: PrivateKeyDer::new(der.to_vec()),
            pair,
            key_use,
        })
    }

    /// The PKCS#8 DER encoding (secret).
    pub fn pkcs8(&self) -> &PrivateKeyDer {
        &self.pkcs8
    }

    /// The uncompressed public point (`04 || x || y`).
    pub fn public_point(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// What the key signs.
    pub fn key_use(&self) -> KeyUse {
        self.key_use
    }

    /// Signs a message with SHA-256.
    pub fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| KeyError::Sign)
    }
}

impl fmt::Debug for EcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcKey")
            .field("use", &self.key_use)
            .finish_non_exhaustive()
    }
}

impl PublicKeyData for EcKey {
    fn der_bytes(&self) -> &[u8] {
        self.public_point()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for EcKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.sign_message(msg)
            .map_err(|_| rcgen::Error::RingUnspecified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    #[test]
    fn round_trips_through_pkcs8_and_verifies() {
        let key = EcKey::generate(KeyUse::Jwt).unwrap();
        let again = EcKey::from_pkcs8(key.pkcs8().secret_der(), KeyUse::Jwt).unwrap();
        assert_eq!(key.public_point(), again.public_point());
        let sig = again.sign_message(b"hello").unwrap();
        assert_eq!(sig.len(), 64);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_point())
            .verify(b"hello", &sig)
            .unwrap();
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let key = EcKey::generate(KeyUse::X509).unwrap();
        let text = format!("{key:?} {:?}", key.pkcs8());
        assert!(!text.contains(&format!("{:?}", key.pkcs8().secret_der())));
        assert!(text.contains("..."));
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert!(matches!(
            EcKey::from_pkcs8(b"not a key", KeyUse::X509),
            Err(KeyError::Parse { .. })
        ));
    }
}
