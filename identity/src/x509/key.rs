//! PKCS#8 private keys: which algorithm they are for, and the public key
//! they imply, to check that a key belongs to a certificate.
//!
//! Supported: ECDSA P-256 and P-384, RSA (2048 to 8192 bits, as `ring`
//! accepts) and Ed25519. The public key comes out in the encoding of an
//! X.509 `subjectPublicKey` bit string (uncompressed EC point, DER
//! `RSAPublicKey`, raw Ed25519 key), so it compares byte for byte with a
//! certificate's.

use ring::error::KeyRejected;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use x509_parser::der_parser::ber::BerObject;
use x509_parser::der_parser::der::parse_der_sequence;
use x509_parser::der_parser::error::BerError;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};

/// Why a private key cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PrivateKeyError {
    /// The bytes are not a DER PKCS#8 `PrivateKeyInfo`.
    #[error("the private key does not decode as a PKCS#8 DER structure")]
    Malformed {
        /// What the DER parser found.
        #[source]
        source: BerError,
    },
    /// A well-formed PKCS#8 key for an algorithm this crate does not handle.
    #[error("the private key's algorithm {algorithm} is not supported (ECDSA P-256/P-384, RSA and Ed25519 are)")]
    UnsupportedAlgorithm {
        /// The algorithm OID, and the curve OID for EC keys.
        algorithm: String,
    },
    /// The key is structurally PKCS#8 but `ring` rejects its contents.
    #[error("the {algorithm} private key is invalid ({reason})")]
    Rejected {
        /// The algorithm it claims to be.
        algorithm: &'static str,
        /// `ring`'s reason (`ring` built without `std` has no error trait
        /// to chain to).
        reason: String,
    },
}

/// The public key of a PKCS#8 private key, encoded as an X.509
/// `subjectPublicKey` bit string's contents.
pub(crate) fn public_key_of_pkcs8(pkcs8: &[u8]) -> Result<Vec<u8>, PrivateKeyError> {
    let (algorithm, curve) = algorithm(pkcs8)?;
    let rejected = |algorithm| {
        move |e: KeyRejected| PrivateKeyError::Rejected {
            algorithm,
            reason: e.to_string(),
        }
    };
    let public = if algorithm == OID_PKCS1_RSAENCRYPTION {
        RsaKeyPair::from_pkcs8(pkcs8)
            .map_err(rejected("RSA"))?
            .public_key()
            .as_ref()
            .to_vec()
    } else if algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY && curve.as_ref() == Some(&OID_EC_P256) {
        ecdsa(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8).map_err(rejected("ECDSA P-256"))?
    } else if algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY && curve.as_ref() == Some(&OID_NIST_EC_P384) {
        ecdsa(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8).map_err(rejected("ECDSA P-384"))?
    } else if algorithm == OID_SIG_ED25519 {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(rejected("Ed25519"))?
            .public_key()
            .as_ref()
            .to_vec()
    } else {
        let mut name = algorithm.to_id_string();
        if let Some(curve) = curve {
            name.push_str(" with curve ");
            name.push_str(&curve.to_id_string());
        }
        return Err(PrivateKeyError::UnsupportedAlgorithm { algorithm: name });
    };
    Ok(public)
}

fn ecdsa(
    alg: &'static signature::EcdsaSigningAlgorithm,
    pkcs8: &[u8],
) -> Result<Vec<u8>, KeyRejected> {
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8, &SystemRandom::new())?;
    Ok(pair.public_key().as_ref().to_vec())
}

type Oid = x509_parser::der_parser::oid::Oid<'static>;

/// The `privateKeyAlgorithm` of a PKCS#8 `PrivateKeyInfo` (RFC 5208 §5):
/// `SEQUENCE { version INTEGER, SEQUENCE { algorithm OID, parameters ANY }, privateKey OCTET STRING, ... }`,
/// with the parameters' OID (the named curve for EC keys) when it is one.
fn algorithm(pkcs8: &[u8]) -> Result<(Oid, Option<Oid>), PrivateKeyError> {
    let malformed = |source| PrivateKeyError::Malformed { source };
    let (rest, info) = parse_der_sequence(pkcs8).map_err(|e| match e {
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => malformed(e),
        x509_parser::nom::Err::Incomplete(_) => malformed(BerError::InvalidLength),
    })?;
    if !rest.is_empty() {
        return Err(malformed(BerError::InvalidLength));
    }
    let fields = info.as_sequence().map_err(malformed)?;
    let (Some(version), Some(alg_id), Some(key)) = (fields.first(), fields.get(1), fields.get(2))
    else {
        return Err(malformed(BerError::InvalidLength));
    };
    version.as_u32().map_err(malformed)?;
    key.as_slice().map_err(malformed)?;
    let alg_fields = alg_id.as_sequence().map_err(malformed)?;
    let algorithm = alg_fields
        .first()
        .ok_or(malformed(BerError::InvalidLength))
        .and_then(|o| o.as_oid().map_err(malformed))?
        .to_owned();
    let params = alg_fields
        .get(1)
        .and_then(|p: &BerObject<'_>| p.as_oid().ok())
        .map(|o| o.to_owned());
    Ok((algorithm, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_give_their_public_key() {
        let rng = SystemRandom::new();
        let doc =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            doc.as_ref(),
            &rng,
        )
        .unwrap();
        assert_eq!(
            public_key_of_pkcs8(doc.as_ref()).unwrap(),
            pair.public_key().as_ref()
        );
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        assert_eq!(
            public_key_of_pkcs8(doc.as_ref()).unwrap(),
            pair.public_key().as_ref()
        );
    }

    #[test]
    fn garbage_is_malformed_and_truncation_too() {
        assert!(matches!(
            public_key_of_pkcs8(b"CORRUPT"),
            Err(PrivateKeyError::Malformed { .. })
        ));
        let rng = SystemRandom::new();
        let doc =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let bytes = doc.as_ref();
        assert!(matches!(
            public_key_of_pkcs8(&bytes[..bytes.len() - 1]),
            Err(PrivateKeyError::Malformed { .. })
        ));
    }
}
