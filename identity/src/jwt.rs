//! JWT-SVIDs per the SPIFFE JWT-SVID specification, and JWT bundles (JWKS).
//!
//! palisade signs JWT-SVIDs with ES256. Validation accepts what the
//! specification allows a bundle to hold: ES256, ES384, RS256/384/512 and
//! PS256/384/512. A token is valid when its header names a key (`kid`) of
//! the bundle of its subject's trust domain, the signature verifies, `sub` is
//! a SPIFFE ID, `exp` is in the future and `aud` contains the audience.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{json, Map, Value};

use crate::ca::{EcKey, KeyError, KeyUse};
use crate::timestamp::unix_seconds;
use crate::{SpiffeId, TrustDomain};

/// The longest token accepted, against hostile input.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a JWT-SVID could not be made or is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Signing failed or the key is not a JWT key.
    #[error("could not sign the JWT-SVID: {reason}")]
    Sign {
        /// Why.
        reason: String,
    },
    /// No audience was given.
    #[error("a JWT-SVID needs at least one audience")]
    NoAudience,
    /// The token is not three base64url parts of JSON.
    #[error("malformed token: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The header lacks a parameter every JWT-SVID has (`alg`, `kid`).
    #[error("the JWT-SVID's header has no {param}")]
    MissingHeader {
        /// The parameter.
        param: &'static str,
    },
    /// The header's algorithm is `none` or not one the specification
    /// allows.
    #[error("unsupported JWT algorithm {alg:?}")]
    Algorithm {
        /// The header's `alg`.
        alg: String,
    },
    /// A required claim is missing or has the wrong type.
    #[error("claim {claim:?} is missing or invalid")]
    Claim {
        /// The claim.
        claim: &'static str,
    },
    /// `sub` is not a SPIFFE ID.
    #[error("subject {subject:?} is not a SPIFFE ID: {reason}")]
    Subject {
        /// The `sub` claim.
        subject: String,
        /// Why.
        reason: String,
    },
    /// No bundle for the subject's trust domain.
    #[error("no JWT bundle for trust domain {trust_domain}")]
    NoBundle {
        /// The trust domain.
        trust_domain: TrustDomain,
    },
    /// The bundle has no key with the token's key id.
    #[error("the JWT bundle of {trust_domain} has no key {kid:?}")]
    UnknownKey {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// The header's `kid`.
        kid: String,
    },
    /// The signature does not verify.
    #[error("the signature does not verify with key {kid:?} of {trust_domain}")]
    Signature {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// The key.
        kid: String,
    },
    /// `exp` has passed.
    #[error("the token expired at {exp} (unix seconds)")]
    Expired {
        /// The `exp` claim.
        exp: u64,
    },
    /// `aud` does not contain the expected audience.
    #[error("the token's audience {found:?} does not include {expected:?}")]
    Audience {
        /// What the validator expects.
        expected: String,
        /// What the token holds.
        found: Vec<String>,
    },
    /// A JWKS document is unusable.
    #[error("JWT bundle: {reason}")]
    Bundle {
        /// What is wrong.
        reason: String,
    },
}

/// A signed JWT-SVID.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSvid {
    /// Its subject.
    pub spiffe_id: SpiffeId,
    /// The compact serialization (a bearer token: never log it).
    pub token: String,
    /// Its audience.
    pub audience: Vec<String>,
    /// Its expiry.
    pub expiry: SystemTime,
}

impl std::fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("audience", &self.audience)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

/// Signs a JWT-SVID with ES256.
pub fn sign(
    id: &SpiffeId,
    audience: &[String],
    key: &EcKey,
    kid: &str,
    now: SystemTime,
    ttl: Duration,
) -> Result<JwtSvid, JwtError> {
    if audience.is_empty() {
        return Err(JwtError::NoAudience);
    }
    if key.key_use() != KeyUse::Jwt {
        return Err(JwtError::Sign {
            reason: "the key signs X.509 certificates, not JWTs".to_owned(),
        });
    }
    let iat = unix_seconds(now);
    let exp_time = now + ttl;
    let exp = unix_seconds(exp_time);
    let header = json!({"alg": "ES256", "kid": kid, "typ": "JWT"});
    let aud = if audience.len() == 1 {
        json!(audience[0])
    } else {
        json!(audience)
    };
    let claims = json!({"sub": id.to_string(), "aud": aud, "exp": exp, "iat": iat});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key
        .sign_message(signing_input.as_bytes())
        .map_err(|e: KeyError| JwtError::Sign {
            reason: e.to_string(),
        })?;
    Ok(JwtSvid {
        spiffe_id: id.clone(),
        token: format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)),
        audience: audience.to_vec(),
        expiry: UNIX_EPOCH + Duration::from_secs(exp),
    })
}

/// A public key of a JWT bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtPublicKey {
    /// ECDSA: the curve (`P-256` or `P-384`) and the uncompressed point.
    Ec {
        /// `P-256` or `P-384`.
        curve: Curve,
        /// `04 || x || y`.
        point: Vec<u8>,
    },
    /// RSA: modulus and exponent, big-endian.
    Rsa {
        /// `n`.
        n: Vec<u8>,
        /// `e`.
        e: Vec<u8>,
    },
}

/// An elliptic curve of a JWT key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (ES256).
    P256,
    /// NIST P-384 (ES384).
    P384,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }
}

/// The JWT authorities of one trust domain: key id -> public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtBundle {
    trust_domain: TrustDomain,
    keys: BTreeMap<String, JwtPublicKey>,
}

impl JwtBundle {
    /// An empty bundle.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            keys: BTreeMap::new(),
        }
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Adds (or replaces) a key.
    pub fn insert(&mut self, kid: String, key: JwtPublicKey) {
        self.keys.insert(kid, key);
    }

    /// Adds a P-256 key from its uncompressed point.
    pub fn insert_p256(&mut self, kid: String, point: &[u8]) {
        self.insert(
            kid,
            JwtPublicKey::Ec {
                curve: Curve::P256,
                point: point.to_vec(),
            },
        );
    }

    /// The keys by id.
    pub fn keys(&self) -> &BTreeMap<String, JwtPublicKey> {
        &self.keys
    }

    /// The bundle as a JWKS document (SPIFFE Trust Domain and Bundle spec:
    /// `use` is `jwt-svid`, `kid` is set).
    pub fn to_jwks(&self) -> Vec<u8> {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|(kid, key)| match key {
                JwtPublicKey::Ec { curve, point } => {
                    let len = curve.coordinate_len();
                    let (x, y) = point
                        .get(1..)
                        .map_or((&[][..], &[][..]), |xy| xy.split_at(len.min(xy.len())));
                    json!({"kty": "EC", "use": "jwt-svid", "kid": kid, "crv": curve.name(),
                           "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)})
                }
                JwtPublicKey::Rsa { n, e } => json!({"kty": "RSA", "use": "jwt-svid", "kid": kid,
                    "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e)}),
            })
            .collect();
        json!({ "keys": keys }).to_string().into_bytes()
    }

    /// Reads a JWKS document; keys whose `use` is not `jwt-svid` are
    /// skipped, as the specification says.
    pub fn from_jwks(trust_domain: TrustDomain, bytes: &[u8]) -> Result<Self, JwtError> {
        let bad = |reason: String| JwtError::Bundle { reason };
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no \"keys\" array".to_owned()))?;
        let mut bundle = Self::new(trust_domain);
        for (i, key) in keys.iter().enumerate() {
            if key.get("use").and_then(Value::as_str) != Some("jwt-svid") {
                continue;
            }
            let field = |name: &str| -> Result<Vec<u8>, JwtError> {
                let text = key
                    .get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("keys[{i}] has no {name:?}")))?;
                URL_SAFE_NO_PAD
                    .decode(text)
                    .map_err(|e| bad(format!("keys[{i}].{name}: {e}")))
            };
            let kid = key
                .get("kid")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("keys[{i}] has no \"kid\"")))?;
            let public = match key.get("kty").and_then(Value::as_str) {
                Some("EC") => {
                    let curve = match key.get("crv").and_then(Value::as_str) {
                        Some("P-256") => Curve::P256,
                        Some("P-384") => Curve::P384,
                        other => {
                            return Err(bad(format!("keys[{i}] has unsupported curve {other:?}")))
                        }
                    };
                    let (x, y) = (field("x")?, field("y")?);
                    if x.len() != curve.coordinate_len() || y.len() != curve.coordinate_len() {
                        return Err(bad(format!("keys[{i}]: coordinates of the wrong length")));
                    }
                    let mut point = Vec::with_capacity(1 + x.len() + y.len());
                    point.push(4);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    JwtPublicKey::Ec { curve, point }
                }
                Some("RSA") => JwtPublicKey::Rsa {
                    n: field("n")?,
                    e: field("e")?,
                },
                other => return Err(bad(format!("keys[{i}] has unsupported kty {other:?}"))),
            };
            bundle.insert(kid.to_owned(), public);
        }
        Ok(bundle)
    }
}

/// A JWT-SVID that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJwt {
    /// Its subject.
    pub spiffe_id: SpiffeId,
    /// All its claims.
    pub claims: Map<String, Value>,
}

/// Validates a JWT-SVID for `audience` against the bundles `bundle_for`
/// returns, at `now`.
pub fn validate<'b>(
    token: &str,
    audience: &str,
    bundle_for: impl Fn(&TrustDomain) -> Option<&'b JwtBundle>,
    now: SystemTime,
) -> Result<ValidatedJwt, JwtError> {
    let malformed = |reason: &str| JwtError::Malformed {
        reason: reason.to_owned(),
    };
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("longer than 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not three dot-separated parts"));
    };
    let decode_json = |part: &str, what: &str| -> Result<Map<String, Value>, JwtError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| malformed(&format!("the {what} is not base64url")))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(malformed(&format!("the {what} is not a JSON object"))),
        }
    };
    let header = decode_json(h, "header")?;
    let claims = decode_json(c, "claims")?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| malformed("the signature is not base64url"))?;
    if header.contains_key("crit") {
        return Err(malformed("critical header parameters are not supported"));
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::MissingHeader { param: "alg" })?
        .to_owned();
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(JwtError::Claim { claim: "sub" })?;
    let spiffe_id: SpiffeId =
        subject
            .parse()
            .map_err(|e: crate::SpiffeIdError| JwtError::Subject {
                subject: subject.to_owned(),
                reason: e.to_string(),
            })?;
    let trust_domain = spiffe_id.trust_domain().clone();
    let bundle = bundle_for(&trust_domain).ok_or_else(|| JwtError::NoBundle {
        trust_domain: trust_domain.clone(),
    })?;
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(JwtError::MissingHeader { param: "kid" })?
        .to_owned();
    let key = bundle.keys.get(&kid).ok_or_else(|| JwtError::UnknownKey {
        trust_domain: trust_domain.clone(),
        kid: kid.clone(),
    })?;
    let signing_input = &token[..h.len() + 1 + c.len()];
    verify_signature(&alg, key, signing_input.as_bytes(), &signature).map_err(|e| match e {
        SigCheck::Algorithm => JwtError::Algorithm { alg: alg.clone() },
        SigCheck::Bad => JwtError::Signature {
            trust_domain: trust_domain.clone(),
            kid: kid.clone(),
        },
    })?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(JwtError::Claim { claim: "exp" })?;
    if unix_seconds(now) >= exp {
        return Err(JwtError::Expired { exp });
    }
    let found: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(JwtError::Claim { claim: "aud" })
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(JwtError::Claim { claim: "aud" }),
    };
    if !found.iter().any(|a| a == audience) {
        return Err(JwtError::Audience {
            expected: audience.to_owned(),
            found,
        });
    }
    Ok(ValidatedJwt { spiffe_id, claims })
}

enum SigCheck {
    Algorithm,
    Bad,
}

fn verify_signature(
    alg: &str,
    key: &JwtPublicKey,
    message: &[u8],
    sig: &[u8],
) -> Result<(), SigCheck> {
    match key {
        JwtPublicKey::Ec { curve, point } => {
            let algorithm: &dyn signature::VerificationAlgorithm = match (alg, curve) {
                ("ES256", Curve::P256) => &signature::ECDSA_P256_SHA256_FIXED,
                ("ES384", Curve::P384) => &signature::ECDSA_P384_SHA384_FIXED,
                _ => return Err(SigCheck::Algorithm),
            };
            UnparsedPublicKey::new(algorithm, point)
                .verify(message, sig)
                .map_err(|_| SigCheck::Bad)
        }
        JwtPublicKey::Rsa { n, e } => {
            let params = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
                _ => return Err(SigCheck::Algorithm),
            };
            RsaPublicKeyComponents { n, e }
                .verify(params, message, sig)
                .map_err(|_| SigCheck::Bad)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (EcKey, JwtBundle, SpiffeId) {
        let key = EcKey::generate(KeyUse::Jwt).unwrap();
        let td = TrustDomain::new("example.org").unwrap();
        let mut bundle = JwtBundle::new(td);
        bundle.insert_p256("k1".to_owned(), key.public_point());
        (
            key,
            bundle,
            "spiffe://example.org/ns/default/sa/web".parse().unwrap(),
        )
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn signs_and_validates() {
        let (key, bundle, id) = setup();
        let aud = vec!["db".to_owned(), "cache".to_owned()];
        let svid = sign(&id, &aud, &key, "k1", now(), Duration::from_secs(300)).unwrap();
        let ok = validate(&svid.token, "cache", |_| Some(&bundle), now()).unwrap();
        assert_eq!(ok.spiffe_id, id);
        assert_eq!(ok.claims["exp"], json!(1_800_000_300u64));
        assert_eq!(
            validate(&svid.token, "other", |_| Some(&bundle), now()),
            Err(JwtError::Audience {
                expected: "other".into(),
                found: aud
            })
        );
        assert_eq!(
            validate(
                &svid.token,
                "db",
                |_| Some(&bundle),
                now() + Duration::from_secs(300)
            ),
            Err(JwtError::Expired { exp: 1_800_000_300 })
        );
        assert!(matches!(
            validate(&svid.token, "db", |_| None, now()),
            Err(JwtError::NoBundle { .. })
        ));
    }

    /// A JWT-SVID of `id` for audience `db`, valid 300 s from [`now`].
    fn signed_for_db(id: &SpiffeId, key: &EcKey, kid: &str) -> JwtSvid {
        sign(
            id,
            &["db".to_owned()],
            key,
            kid,
            now(),
            Duration::from_secs(300),
        )
        .unwrap()
    }

    /// `token` with its header replaced by `header` (JSON).
    fn with_header(token: &str, header: &str) -> String {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[0] = URL_SAFE_NO_PAD.encode(header);
        parts.join(".")
    }

    #[test]
    fn rejects_tampering_and_foreign_keys() {
        let (key, bundle, id) = setup();
        let svid = signed_for_db(&id, &key, "k1");
        let other = EcKey::generate(KeyUse::Jwt).unwrap();
        let forged = signed_for_db(&id, &other, "k1");
        assert!(matches!(
            validate(&forged.token, "db", |_| Some(&bundle), now()),
            Err(JwtError::Signature { .. })
        ));
        let unknown = signed_for_db(&id, &key, "k2");
        assert!(matches!(
            validate(&unknown.token, "db", |_| Some(&bundle), now()),
            Err(JwtError::UnknownKey { .. })
        ));
        let mut parts: Vec<&str> = svid.token.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#);
        parts[0] = &none_header;
        assert!(matches!(
            validate(&parts.join("."), "db", |_| Some(&bundle), now()),
            Err(JwtError::Algorithm { .. })
        ));
        let no_kid = with_header(&svid.token, r#"{"alg":"ES256","typ":"JWT"}"#);
        let err = validate(&no_kid, "db", |_| Some(&bundle), now()).unwrap_err();
        assert_eq!(err, JwtError::MissingHeader { param: "kid" });
        assert_eq!(err.to_string(), "the JWT-SVID's header has no kid");
        let no_alg = with_header(&svid.token, r#"{"kid":"k1","typ":"JWT"}"#);
        let err = validate(&no_alg, "db", |_| Some(&bundle), now()).unwrap_err();
        assert_eq!(err, JwtError::MissingHeader { param: "alg" });
        assert_eq!(err.to_string(), "the JWT-SVID's header has no alg");
        for garbage in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(matches!(
                validate(garbage, "db", |_| Some(&bundle), now()),
                Err(JwtError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn jwks_round_trips() {
        let (key, bundle, id) = setup();
        let json = bundle.to_jwks();
        let again = JwtBundle::from_jwks(bundle.trust_domain().clone(), &json).unwrap();
        assert_eq!(again, bundle);
        let svid = sign(
            &id,
            &["db".to_owned()],
            &key,
            "k1",
            now(),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(validate(&svid.token, "db", |_| Some(&again), now()).is_ok());
        assert!(JwtBundle::from_jwks(bundle.trust_domain().clone(), b"{}").is_err());
    }

    #[test]
    fn needs_an_audience_and_a_jwt_key() {
        let (key, _, id) = setup();
        assert_eq!(
            sign(&id, &[], &key, "k1", now(), Duration::from_secs(60)),
            Err(JwtError::NoAudience)
        );
        let x509 = EcKey::generate(KeyUse::X509).unwrap();
        assert!(matches!(
            sign(
                &id,
                &["a".to_owned()],
                &x509,
                "k1",
                now(),
                Duration::from_secs(60)
            ),
            Err(JwtError::Sign { .. })
        ));
    }
}
