//! What a provider hands the server: X.509 contexts, trust bundles and
//! JWT-SVIDs, each checked when it is built so that every message the
//! server sends has its mandatory fields (Workload API §4.5).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::x509::X509Svid;
use crate::{SpiffeId, TrustDomain};

/// Why material for the Workload API cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaterialError {
    /// An X.509 context without SVIDs.
    #[error(
        "an X.509 context needs at least one X.509-SVID; publish Entitlement::Denied for a \
         workload that has none"
    )]
    NoSvids,
    /// An X.509-SVID without certificates.
    #[error("the X.509-SVID for {spiffe_id} has an empty certificate chain")]
    EmptyChain {
        /// The SVID's SPIFFE ID.
        spiffe_id: SpiffeId,
    },
    /// An X.509-SVID without a private key.
    #[error("the X.509-SVID for {spiffe_id} has an empty private key")]
    EmptyKey {
        /// The SVID's SPIFFE ID.
        spiffe_id: SpiffeId,
    },
    /// An X.509-SVID whose trust domain has no bundle in the context.
    #[error(
        "the X.509-SVID for {spiffe_id} needs the X.509 bundle of trust domain {trust_domain}; \
         add that trust domain's CA certificates to the context's bundles"
    )]
    MissingBundle {
        /// The SVID's SPIFFE ID.
        spiffe_id: SpiffeId,
        /// Its trust domain.
        trust_domain: TrustDomain,
    },
    /// An X.509 bundle with no certificates, or with an empty one.
    #[error(
        "the X.509 bundle of trust domain {trust_domain} must hold at least one certificate and \
         no empty ones"
    )]
    EmptyX509Bundle {
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
    },
    /// An empty JWT bundle document.
    #[error("the JWT bundle of trust domain {trust_domain} is empty; it must be a JWK Set")]
    EmptyJwtBundle {
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
    },
    /// An empty JWT-SVID token.
    #[error("the JWT-SVID for {spiffe_id} has an empty token")]
    EmptyToken {
        /// The SVID's SPIFFE ID.
        spiffe_id: SpiffeId,
    },
    /// Validated claims whose `sub` is not the validated SPIFFE ID.
    #[error(
        "the validated claims must carry \"sub\": \"{spiffe_id}\" (the JWT-SVID specification \
         requires the subject claim)"
    )]
    SubjectMismatch {
        /// The SPIFFE ID the provider said it validated.
        spiffe_id: SpiffeId,
    },
}

/// What one workload may see of one kind of material at one moment; the
/// value a provider publishes in a watch channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entitlement<T> {
    /// The workload is entitled to the material but it is not ready yet (an
    /// SVID still being signed): streams wait and send nothing.
    Pending,
    /// The material to send.
    Granted(T),
    /// The workload is entitled to nothing, or no longer: streams end with
    /// `PermissionDenied` (Workload API §5.2.1, §6.2.2) and the client is
    /// expected to retry with a backoff.
    Denied,
}

/// One workload's X.509-SVIDs and the X.509 bundles it trusts: the content
/// of one `FetchX509SVID` response.
///
/// Each SVID goes out with the bundle of its own trust domain; the bundles
/// of the other trust domains go out as federated bundles.
#[derive(Clone, PartialEq, Eq)]
pub struct X509Context {
    svids: Vec<X509Svid>,
    bundles: BTreeMap<TrustDomain, Vec<Vec<u8>>>,
}

impl X509Context {
    /// A context from SVIDs, the first being the workload's default identity
    /// (Workload API §8), and X.509 bundles: per trust domain, its CA
    /// certificates in DER.
    ///
    /// Fails unless there is at least one SVID, every SVID has a chain and a
    /// key, every SVID's trust domain has a bundle, and every bundle holds at
    /// least one certificate.
    pub fn new(
        svids: Vec<X509Svid>,
        bundles: BTreeMap<TrustDomain, Vec<Vec<u8>>>,
    ) -> Result<Self, MaterialError> {
        if svids.is_empty() {
            return Err(MaterialError::NoSvids);
        }
        check_x509_bundles(&bundles)?;
        for svid in &svids {
            let spiffe_id = svid.spiffe_id();
            if svid.chain().is_empty() || svid.chain().iter().any(Vec::is_empty) {
                return Err(MaterialError::EmptyChain {
                    spiffe_id: spiffe_id.clone(),
                });
            }
            if svid.private_key().secret_der().is_empty() {
                return Err(MaterialError::EmptyKey {
                    spiffe_id: spiffe_id.clone(),
                });
            }
            if !bundles.contains_key(spiffe_id.trust_domain()) {
                return Err(MaterialError::MissingBundle {
                    spiffe_id: spiffe_id.clone(),
                    trust_domain: spiffe_id.trust_domain().clone(),
                });
            }
        }
        Ok(Self { svids, bundles })
    }

    /// The SVIDs, default first.
    pub fn svids(&self) -> &[X509Svid] {
        &self.svids
    }

    /// The X.509 bundles: per trust domain, its CA certificates in DER.
    pub fn bundles(&self) -> &BTreeMap<TrustDomain, Vec<Vec<u8>>> {
        &self.bundles
    }
}

impl fmt::Debug for X509Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Context")
            .field("svids", &self.svids)
            .field("bundles", &BundleSummary(&self.bundles))
            .finish()
    }
}

/// The trust bundles one workload may see: the content of the
/// `FetchX509Bundles` and `FetchJWTBundles` responses.
///
/// Each map holds at least the bundle of the agent's own trust domain
/// (Workload API §6.2.2) for a workload that may see any. Either map may be
/// empty: a workload entitled to no bundle of a kind gets `PermissionDenied`
/// from that kind's RPC (§6.2.2).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustBundles {
    x509: BTreeMap<TrustDomain, Vec<Vec<u8>>>,
    jwt: BTreeMap<TrustDomain, Vec<u8>>,
}

impl TrustBundles {
    /// Bundles from X.509 bundles (per trust domain, its CA certificates in
    /// DER) and JWT bundles (per trust domain, a JWK Set document, RFC 7517,
    /// holding only JWT-SVID signing keys).
    ///
    /// Fails if an X.509 bundle holds no certificate or an empty one, or a
    /// JWT bundle is empty.
    pub fn new(
        x509: BTreeMap<TrustDomain, Vec<Vec<u8>>>,
        jwt: BTreeMap<TrustDomain, Vec<u8>>,
    ) -> Result<Self, MaterialError> {
        check_x509_bundles(&x509)?;
        if let Some((trust_domain, _)) = jwt.iter().find(|(_, jwks)| jwks.is_empty()) {
            return Err(MaterialError::EmptyJwtBundle {
                trust_domain: trust_domain.clone(),
            });
        }
        Ok(Self { x509, jwt })
    }

    /// The X.509 bundles: per trust domain, its CA certificates in DER.
    pub fn x509(&self) -> &BTreeMap<TrustDomain, Vec<Vec<u8>>> {
        &self.x509
    }

    /// The JWT bundles: per trust domain, a JWK Set document.
    pub fn jwt(&self) -> &BTreeMap<TrustDomain, Vec<u8>> {
        &self.jwt
    }
}

impl fmt::Debug for TrustBundles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundles")
            .field("x509", &BundleSummary(&self.x509))
            .field("jwt", &self.jwt.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A JWT-SVID minted for a workload. The token is a bearer credential: it is
/// zeroized on drop and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSvidToken {
    spiffe_id: SpiffeId,
    token: Zeroizing<String>,
}

impl JwtSvidToken {
    /// A JWT-SVID for `spiffe_id`, in JWS Compact Serialization. Fails if the
    /// token is empty.
    pub fn new(spiffe_id: SpiffeId, token: String) -> Result<Self, MaterialError> {
        if token.is_empty() {
            return Err(MaterialError::EmptyToken { spiffe_id });
        }
        Ok(Self {
            spiffe_id,
            token: Zeroizing::new(token),
        })
    }

    /// The SPIFFE ID the token asserts (its `sub` claim).
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The token, in JWS Compact Serialization.
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl fmt::Debug for JwtSvidToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvidToken")
            .field("spiffe_id", &self.spiffe_id)
            .field("token", &"...")
            .finish()
    }
}

/// A JWT-SVID that validated: its SPIFFE ID and the claims of its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJwtSvid {
    spiffe_id: SpiffeId,
    claims: Map<String, Value>,
}

impl ValidatedJwtSvid {
    /// The outcome of a validation: the subject and every claim of the
    /// payload (at least `sub`, `aud` and `exp`, which clients check).
    /// Fails unless the claims hold `"sub": "<spiffe_id>"`.
    pub fn new(spiffe_id: SpiffeId, claims: Map<String, Value>) -> Result<Self, MaterialError> {
        let subject_matches = claims
            .get("sub")
            .and_then(Value::as_str)
            .is_some_and(|sub| sub == spiffe_id.to_string());
        if !subject_matches {
            return Err(MaterialError::SubjectMismatch { spiffe_id });
        }
        Ok(Self { spiffe_id, claims })
    }

    /// The SPIFFE ID of the token's subject.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The claims of the token's payload.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
}

fn check_x509_bundles(bundles: &BTreeMap<TrustDomain, Vec<Vec<u8>>>) -> Result<(), MaterialError> {
    match bundles
        .iter()
        .find(|(_, certs)| certs.is_empty() || certs.iter().any(Vec::is_empty))
    {
        Some((trust_domain, _)) => Err(MaterialError::EmptyX509Bundle {
            trust_domain: trust_domain.clone(),
        }),
        None => Ok(()),
    }
}

/// Prints X.509 bundles as trust domain → certificate count.
struct BundleSummary<'a>(&'a BTreeMap<TrustDomain, Vec<Vec<u8>>>);

impl fmt::Debug for BundleSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(td, certs)| (td, certs.len())))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::x509::PrivateKeyDer;

    fn td(name: &str) -> TrustDomain {
        TrustDomain::new(name).unwrap()
    }

    fn svid(id: &str, chain: Vec<Vec<u8>>, key: Vec<u8>) -> X509Svid {
        X509Svid::from_parts(
            id.parse().unwrap(),
            chain,
            PrivateKeyDer::new(key),
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn x509_context_requires_svids_and_their_bundles() {
        let bundles = BTreeMap::from([(td("example.org"), vec![vec![1]])]);
        assert_eq!(
            X509Context::new(vec![], bundles.clone()),
            Err(MaterialError::NoSvids)
        );
        let other = svid("spiffe://other.org/w", vec![vec![1]], vec![2]);
        assert!(matches!(
            X509Context::new(vec![other], bundles.clone()),
            Err(MaterialError::MissingBundle { trust_domain, .. }) if trust_domain == td("other.org")
        ));
        let no_key = svid("spiffe://example.org/w", vec![vec![1]], vec![]);
        assert!(matches!(
            X509Context::new(vec![no_key], bundles.clone()),
            Err(MaterialError::EmptyKey { .. })
        ));
        let no_chain = svid("spiffe://example.org/w", vec![], vec![2]);
        assert!(matches!(
            X509Context::new(vec![no_chain], bundles.clone()),
            Err(MaterialError::EmptyChain { .. })
        ));
        let good = svid("spiffe://example.org/w", vec![vec![1]], vec![2]);
        let empty_bundle = BTreeMap::from([(td("example.org"), vec![])]);
        assert!(matches!(
            X509Context::new(vec![good.clone()], empty_bundle),
            Err(MaterialError::EmptyX509Bundle { .. })
        ));
        let ctx = X509Context::new(vec![good], bundles).unwrap();
        assert_eq!(ctx.svids().len(), 1);
        let printed = format!("{ctx:?}");
        assert!(printed.contains("example.org"), "{printed}");
    }

    #[test]
    fn trust_bundles_reject_empty_entries() {
        assert!(matches!(
            TrustBundles::new(BTreeMap::new(), BTreeMap::from([(td("a.org"), vec![])])),
            Err(MaterialError::EmptyJwtBundle { .. })
        ));
        assert!(matches!(
            TrustBundles::new(
                BTreeMap::from([(td("a.org"), vec![vec![]])]),
                BTreeMap::new()
            ),
            Err(MaterialError::EmptyX509Bundle { .. })
        ));
        assert!(TrustBundles::new(BTreeMap::new(), BTreeMap::new()).is_ok());
    }

    #[test]
    fn jwt_svid_token_hides_the_token() {
        let id: SpiffeId = "spiffe://example.org/w".parse().unwrap();
        assert!(JwtSvidToken::new(id.clone(), String::new()).is_err());
        let token = JwtSvidToken::new(id, "secret.token.value".to_owned()).unwrap();
        assert_eq!(token.token(), "secret.token.value");
        assert!(!format!("{token:?}").contains("secret"));
    }

    #[test]
    fn validated_claims_must_name_the_subject() {
        let id: SpiffeId = "spiffe://example.org/w".parse().unwrap();
        let mut claims = Map::new();
        assert!(ValidatedJwtSvid::new(id.clone(), claims.clone()).is_err());
        claims.insert("sub".into(), Value::from("spiffe://example.org/other"));
        assert!(ValidatedJwtSvid::new(id.clone(), claims.clone()).is_err());
        claims.insert("sub".into(), Value::from("spiffe://example.org/w"));
        assert_eq!(
            ValidatedJwtSvid::new(id.clone(), claims)
                .unwrap()
                .spiffe_id(),
            &id
        );
    }
}
