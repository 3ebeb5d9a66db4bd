//! One generation of a trust domain's certificate authority: a signing key
//! and its certificate, which issues X.509-SVIDs.
//!
//! A generation is either self-signed (the certificate is its own trust
//! anchor) or an intermediate under an operator's root (the operator supplies
//! the certificate, any intermediates above it, the root, and the key).

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::{SecureRandom, SystemRandom};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use super::key::{EcKey, KeyError, KeyUse};
use crate::x509::{PrivateKeyDer, X509Svid};
use crate::{SpiffeId, TrustDomain};

/// How far certificates are backdated, for clocks that run a little behind.
pub const BACKDATE: Duration = Duration::from_secs(60);

/// Why a CA could not be made or could not issue.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// A key could not be generated, read or used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// rcgen refused to build a certificate.
    #[error("could not build the certificate for {subject}: {source}")]
    Build {
        /// What was being built.
        subject: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// An operator-supplied CA certificate is unusable.
    #[error("the CA certificate {what}")]
    UpstreamCertificate {
        /// What is wrong with it.
        what: String,
    },
    /// An SVID's SPIFFE ID belongs to another trust domain.
    #[error("{id} is not in trust domain {trust_domain}")]
    ForeignId {
        /// The requested ID.
        id: SpiffeId,
        /// This CA's trust domain.
        trust_domain: TrustDomain,
    },
    /// An SVID's SPIFFE ID has no path.
    #[error("{id} has no path; an X509-SVID's SPIFFE ID names a workload, not a trust domain")]
    RootId {
        /// The requested ID.
        id: SpiffeId,
    },
    /// The CA has expired (or expires within the backdating margin).
    #[error("the CA certificate expired at {}", crate::timestamp::rfc3339(*not_after))]
    Expired {
        /// Its expiry.
        not_after: SystemTime,
    },
    /// A CA certificate given without trust anchors is not self-signed, so
    /// it cannot be its own anchor.
    #[error(
        "the CA certificate (subject \"{subject}\", issuer \"{issuer}\") is not self-signed, \
         and no trust anchors (the roots above it) were given"
    )]
    NotSelfSigned {
        /// Its subject.
        subject: String,
        /// Its issuer.
        issuer: String,
    },
}

/// One CA generation.
pub struct Authority {
    trust_domain: TrustDomain,
    /// The CA's name, key identifier method and key.
    issuer: Issuer<'static, EcKey>,
    cert: Vec<u8>,
    /// Certificates between this CA and the trust anchor, for SVID chains.
    upstream: Vec<Vec<u8>>,
    /// The trust anchors that verify SVIDs of this generation.
    anchors: Vec<Vec<u8>>,
    key_id: Vec<u8>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Authority {
    /// A new self-signed CA valid from `now` (backdated) for `ttl`.
    pub fn self_signed(
        trust_domain: &TrustDomain,
        generation: u64,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<Self, AuthorityError> {
        let key = EcKey::generate(KeyUse::X509)?;
        let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
        let not_after = now + ttl;
        let mut params = CertificateParams::default();
        params.distinguished_name = ca_name(trust_domain, generation);
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![uri_san(&trust_domain.id())?];
        let key_id = params.key_identifier(&key);
        params.key_identifier_method = KeyIdMethod::PreSpecified(key_id.clone());
        let cert = params
            .self_signed(&key)
            .map_err(|source| AuthorityError::Build {
                subject: format!("the CA of {trust_domain}"),
                source,
            })?
            .der()
            .to_vec();
        Ok(Self {
            trust_domain: trust_domain.clone(),
            issuer: Issuer::new(params, key),
            anchors: vec![cert.clone()],
            cert,
            upstream: Vec::new(),
            key_id,
            not_before,
            not_after,
        })
    }

    /// A CA from stored or operator-supplied parts: its certificate, the
    /// certificates above it up to (not including) the trust anchors, the
    /// anchors (empty when the certificate is self-signed), and its key.
    pub fn from_parts(
        trust_domain: &TrustDomain,
        cert: Vec<u8>,
        upstream: Vec<Vec<u8>>,
        anchors: Vec<Vec<u8>>,
        key_pkcs8: &[u8],
    ) -> Result<Self, AuthorityError> {
        let key = EcKey::from_pkcs8(key_pkcs8, KeyUse::X509)?;
        let facts = CaFacts::read(&cert)?;
        if facts.spki_point != key.public_point() {
            return Err(upstream_err("does not belong to the CA key"));
        }
        if let Some(uri) = &facts.uri {
            if uri != &trust_domain.id().to_string() {
                return Err(upstream_err(&format!(
                    "names {uri}, not the trust domain spiffe://{trust_domain}"
                )));
            }
        }
        if anchors.is_empty() {
            // Without anchors the certificate is its own: it must be a root.
            if !facts.self_signed {
                return Err(AuthorityError::NotSelfSigned {
                    subject: facts.subject,
                    issuer: facts.issuer,
                });
            }
        } else {
            check_chain(&cert, &upstream, &anchors)?;
        }
        let issuer = Issuer::from_ca_cert_der(&cert.as_slice().into(), key).map_err(|source| {
            AuthorityError::Build {
                subject: "the issuer of SVIDs".to_owned(),
                source,
            }
        })?;
        let anchors = if anchors.is_empty() {
            vec![cert.clone()]
        } else {
            anchors
        };
        Ok(Self {
            trust_domain: trust_domain.clone(),
            cert,
            upstream,
            anchors,
            issuer,
            key_id: facts.key_id,
            not_before: facts.not_before,
            not_after: facts.not_after,
        })
    }

    /// Issues an X.509-SVID with a fresh key, valid from `now` for `ttl` but
    /// never past the CA's own expiry.
    pub fn issue(
        &self,
        id: &SpiffeId,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<X509Svid, AuthorityError> {
        let key = EcKey::generate(KeyUse::X509)?;
        let (chain, not_before, not_after) = self.sign(id, &key, now, ttl)?;
        Ok(X509Svid::from_parts(
            id.clone(),
            chain,
            PrivateKeyDer::new(key.pkcs8().secret_der().to_vec()),
            not_before,
            not_after,
        ))
    }

    /// Signs an X.509-SVID for a public key the holder generated (a
    /// DER SubjectPublicKeyInfo); returns the chain, leaf first.
    pub fn issue_for_key(
        &self,
        id: &SpiffeId,
        spki_der: &[u8],
        now: SystemTime,
        ttl: Duration,
    ) -> Result<(Vec<Vec<u8>>, SystemTime), AuthorityError> {
        let public =
            SubjectPublicKeyInfo::from_der(spki_der).map_err(|source| AuthorityError::Build {
                subject: format!("the SVID of {id} (its public key)"),
                source,
            })?;
        let (chain, _, not_after) = self.sign(id, &public, now, ttl)?;
        Ok((chain, not_after))
    }

    fn sign(
        &self,
        id: &SpiffeId,
        public: &impl rcgen::PublicKeyData,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<(Vec<Vec<u8>>, SystemTime, SystemTime), AuthorityError> {
        if id.trust_domain() != &self.trust_domain {
            return Err(AuthorityError::ForeignId {
                id: id.clone(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        if id.is_trust_domain_id() {
            return Err(AuthorityError::RootId { id: id.clone() });
        }
        if now + BACKDATE >= self.not_after {
            return Err(AuthorityError::Expired {
                not_after: self.not_after,
            });
        }
        let not_before = now
            .checked_sub(BACKDATE)
            .unwrap_or(now)
            .max(self.not_before);
        let not_after = (now + ttl).min(self.not_after);
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "palisade");
        params.distinguished_name = name;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.subject_alt_names = vec![uri_san(id)?];
        params.use_authority_key_identifier_extension = true;
        let leaf =
            params
                .signed_by(public, &self.issuer)
                .map_err(|source| AuthorityError::Build {
                    subject: format!("the SVID of {id}"),
                    source,
                })?;
        let mut chain = Vec::with_capacity(2 + self.upstream.len());
        chain.push(leaf.der().to_vec());
        if !self.is_self_signed() {
            chain.push(self.cert.clone());
            chain.extend(self.upstream.iter().cloned());
        }
        Ok((chain, not_before, not_after))
    }

    /// Whether the certificate is its own trust anchor.
    pub fn is_self_signed(&self) -> bool {
        self.anchors.len() == 1 && self.anchors[0] == self.cert
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CA certificate in DER.
    pub fn certificate(&self) -> &[u8] {
        &self.cert
    }

    /// Certificates above the CA, up to (not including) the anchors.
    pub fn upstream(&self) -> &[Vec<u8>] {
        &self.upstream
    }

    /// The trust anchors of SVIDs this CA issues.
    pub fn anchors(&self) -> &[Vec<u8>] {
        &self.anchors
    }

    /// The CA's key (PKCS#8, secret).
    pub fn key(&self) -> &PrivateKeyDer {
        self.issuer.key().pkcs8()
    }

    /// The subject key identifier.
    pub fn key_id(&self) -> &[u8] {
        &self.key_id
    }

    /// When the CA certificate becomes valid.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("key_id", &hex(&self.key_id))
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Lower-case hex of bytes, as key identifiers are shown.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ca_name(trust_domain: &TrustDomain, generation: u64) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "palisade");
    // A common name is at most 64 characters; trust domains may be longer.
    let cn: String = format!("palisade CA {generation} {trust_domain}")
        .chars()
        .take(64)
        .collect();
    name.push(DnType::CommonName, cn);
    name
}

fn uri_san(id: &SpiffeId) -> Result<SanType, AuthorityError> {
    // A SPIFFE ID is ASCII by construction, so this cannot fail in practice;
    // the error path names the ID anyway.
    rcgen::string::Ia5String::try_from(id.to_string())
        .map(SanType::URI)
        .map_err(|source| AuthorityError::Build {
            subject: format!("the URI SAN {id}"),
            source,
        })
}

fn random_serial() -> Result<SerialNumber, AuthorityError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthorityError::Random)?;
    // Positive and without a leading zero byte: a 127-bit random serial.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Checks that `cert` is signed by the first of `upstream`, each of those by
/// the next, and the last by one of `anchors`.
fn check_chain(
    cert: &[u8],
    upstream: &[Vec<u8>],
    anchors: &[Vec<u8>],
) -> Result<(), AuthorityError> {
    fn parse<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, AuthorityError> {
        X509Certificate::from_der(der).map(|(_, c)| c).map_err(|e| {
            upstream_err(&format!(
                "chain: {what} is not a DER X.509 certificate: {e}"
            ))
        })
    }
    // Upstream certificate N is the certificate file's certificate N + 1
    // (the CA certificate comes first).
    let name = |i: usize| match i {
        0 => "the CA certificate".to_owned(),
        i => format!(
            "upstream certificate {i} (certificate {} of the file)",
            i + 1
        ),
    };
    let mut child = parse(cert, &name(0))?;
    for (i, der) in upstream.iter().enumerate() {
        let parent = parse(der, &name(i + 1))?;
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|_| {
                upstream_err(&format!(
                    "chain: {} is not signed by {}, the certificate after it",
                    name(i),
                    name(i + 1)
                ))
            })?;
        child = parent;
    }
    for der in anchors {
        let anchor = parse(der, "a certificate of the bundle file")?;
        if child.verify_signature(Some(anchor.public_key())).is_ok() {
            return Ok(());
        }
    }
    Err(upstream_err(
        "chain: the top of the chain is not signed by any certificate of the bundle file",
    ))
}

fn upstream_err(what: &str) -> AuthorityError {
    AuthorityError::UpstreamCertificate {
        what: what.to_owned(),
    }
}

/// What the CA needs to know of its own certificate.
struct CaFacts {
    spki_point: Vec<u8>,
    key_id: Vec<u8>,
    uri: Option<String>,
    not_before: SystemTime,
    not_after: SystemTime,
    /// Issuer and subject are the same name and the signature verifies
    /// with the certificate's own key.
    self_signed: bool,
    subject: String,
    issuer: String,
}

impl CaFacts {
    fn read(der: &[u8]) -> Result<Self, AuthorityError> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| upstream_err(&format!("is not a DER X.509 certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(upstream_err("has trailing bytes after the certificate"));
        }
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(upstream_err(
                "does not have the CA flag set (basicConstraints cA)",
            ));
        }
        let can_sign = cert
            .key_usage()
            .ok()
            .flatten()
            .is_some_and(|ku| ku.value.key_cert_sign());
        if !can_sign {
            return Err(upstream_err("does not allow keyCertSign in its key usage"));
        }
        let mut key_id = None;
        let mut uri = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(ski) => key_id = Some(ski.0.to_vec()),
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        if let x509_parser::extensions::GeneralName::URI(u) = name {
                            uri = Some((*u).to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        let spki_point = cert.public_key().subject_public_key.data.to_vec();
        let key_id = match key_id {
            Some(id) => id,
            None => {
                let mut params = CertificateParams::default();
                params.key_identifier_method = KeyIdMethod::Sha256;
                let public =
                    SubjectPublicKeyInfo::from_der(cert.public_key().raw).map_err(|e| {
                        upstream_err(&format!("has a public key rcgen cannot read: {e}"))
                    })?;
                params.key_identifier(&public)
            }
        };
        let to_time = |t: &x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            if secs >= 0 {
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
            } else {
                SystemTime::UNIX_EPOCH
            }
        };
        let self_signed = cert.issuer().as_raw() == cert.subject().as_raw()
            && cert.verify_signature(None).is_ok();
        Ok(Self {
            spki_point,
            key_id,
            uri,
            not_before: to_time(&cert.validity().not_before),
            not_after: to_time(&cert.validity().not_after),
            self_signed,
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
        })
    }
}
