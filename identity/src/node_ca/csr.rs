//! PKCS#10 certificate requests: a node proves it holds the key it asks
//! the CA to certify, and the key never leaves the node.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;

use crate::ca::EcKey;

/// Why a certificate request is refused.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// Not a DER PKCS#10 request.
    #[error("the certificate request does not parse: {0}")]
    Malformed(String),
    /// Bytes after the request.
    #[error("the certificate request has {0} bytes after its end")]
    Trailing(usize),
    /// Its signature does not match its key: the requester does not hold it.
    #[error("the certificate request's signature does not verify with its own key (proof of possession failed)")]
    Signature,
    /// Not an ECDSA P-256 key.
    #[error("the certificate request's key is not ECDSA P-256")]
    KeyType,
    /// rcgen could not build a request.
    #[error("cannot build a certificate request: {0}")]
    Build(String),
}

/// A certificate request (DER) for `key`. Its subject is empty: the CA
/// decides what the certificate names.
pub fn request_for(key: &EcKey) -> Result<Vec<u8>, CsrError> {
    let params = rcgen::CertificateParams::default();
    let csr = params
        .serialize_request(key)
        .map_err(|e| CsrError::Build(e.to_string()))?;
    Ok(csr.der().to_vec())
}

/// Checks a certificate request and returns the key it proves possession
/// of (a DER SubjectPublicKeyInfo). Everything else in it is ignored.
pub fn verified_key(der: &[u8]) -> Result<Vec<u8>, CsrError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Trailing(rest.len()));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let p256 = spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|curve| curve == OID_EC_P256);
    if !p256 {
        return Err(CsrError::KeyType);
    }
    csr.verify_signature().map_err(|_| CsrError::Signature)?;
    Ok(spki.raw.to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ca::KeyUse;

    #[test]
    fn a_request_proves_its_key() {
        let key = EcKey::generate(KeyUse::X509).unwrap();
        let csr = request_for(&key).unwrap();
        let spki = verified_key(&csr).unwrap();
        let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
        assert_eq!(&*parsed.subject_public_key.data, key.public_point());
    }

    #[test]
    fn a_tampered_request_is_refused() {
        let key = EcKey::generate(KeyUse::X509).unwrap();
        let mut csr = request_for(&key).unwrap();
        let other = EcKey::generate(KeyUse::X509).unwrap();
        // Swap the key inside the signed part for another one.
        let at = csr
            .windows(key.public_point().len())
            .position(|w| w == key.public_point())
            .unwrap();
        csr[at..at + other.public_point().len()].copy_from_slice(other.public_point());
        assert!(matches!(verified_key(&csr), Err(CsrError::Signature)));
        assert!(matches!(
            verified_key(b"\x30\x03\x02\x01\x00"),
            Err(CsrError::Malformed(_))
        ));
        let mut trailing = request_for(&key).unwrap();
        trailing.push(0);
        assert!(matches!(
            verified_key(&trailing),
            Err(CsrError::Trailing(1))
        ));
    }
}
