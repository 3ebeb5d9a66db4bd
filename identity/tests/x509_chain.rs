//! X.509 bundles and chain verification with certificates generated here
//! (rcgen, ECDSA P-256): good chains, every way a chain is rejected, key-id
//! indexing of anchors, and anchor rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_identity::x509::{
    CertLocation, ChainError, KeyId, VerifyError, X509Bundle, X509BundleError, X509BundleSet,
    X509Svid, MAX_CHAIN_LEN,
};
use palisade_identity::TrustDomain;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// The verification time: 2030-03-17T17:46:40Z.
const NOW_UNIX: u64 = 1_900_000_000;
const DAY: Duration = Duration::from_secs(86_400);

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_UNIX)
}

fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

fn uri(s: &str) -> SanType {
    SanType::URI(rcgen::string::Ia5String::try_from(s).unwrap())
}

/// A validity window `[now + from, now + to]`, in days.
fn window(params: &mut CertificateParams, from: i64, to: i64) {
    let shift = |days: i64| {
        let d = DAY * u32::try_from(days.unsigned_abs()).unwrap();
        OffsetDateTime::from(if days >= 0 { now() + d } else { now() - d })
    };
    params.not_before = shift(from);
    params.not_after = shift(to);
}

/// A CA certificate and its key.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

impl Ca {
    fn params(name: &str, trust_domain: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![uri(&format!("spiffe://{trust_domain}"))];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        window(&mut params, -30, 30);
        params
    }

    fn root(name: &str, trust_domain: &str) -> Self {
        Self::self_signed(Self::params(name, trust_domain))
    }

    fn self_signed(params: CertificateParams) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self { params, key, der }
    }

    fn issue_ca(&self, mut params: CertificateParams) -> Self {
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = params
            .signed_by(&key, &self.issuer())
            .unwrap()
            .der()
            .to_vec();
        Self { params, key, der }
    }

    fn intermediate(&self, name: &str, trust_domain: &str) -> Self {
        self.issue_ca(Self::params(name, trust_domain))
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// Issues a leaf; `edit` changes its parameters first.
    fn leaf_with(&self, id: &str, edit: impl FnOnce(&mut CertificateParams)) -> (Vec<u8>, KeyPair) {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![uri(id)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        window(&mut params, -1, 1);
        edit(&mut params);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = params
            .signed_by(&key, &self.issuer())
            .unwrap()
            .der()
            .to_vec();
        (der, key)
    }

    fn leaf(&self, id: &str) -> Vec<u8> {
        self.leaf_with(id, |_| {}).0
    }
}

const WEB: &str = "spiffe://example.org/web";

fn bundle_of(anchors: &[&Ca]) -> X509Bundle {
    bundle_of_td("example.org", anchors)
}

fn chain(certs: &[&[u8]]) -> Vec<Vec<u8>> {
    certs.iter().map(|c| c.to_vec()).collect()
}

#[test]
fn root_intermediate_leaf_verifies() {
    let root = Ca::root("root", "example.org");
    let inter = root.intermediate("intermediate", "example.org");
    let (leaf, leaf_key) = inter.leaf_with(WEB, |_| {});
    let mut bundle = X509Bundle::new(td("example.org"));
    let root_id = bundle.add_authority(&root.der).unwrap();

    let verified = bundle.verify(&chain(&[&leaf, &inter.der]), now()).unwrap();
    assert_eq!(verified.spiffe_id().to_string(), WEB);
    assert_eq!(verified.anchor_key_id(), &root_id);
    let expected_not_after = now() + DAY;
    assert_eq!(verified.not_after(), expected_not_after);

    // The root may come along in the chain.
    let with_root = chain(&[&leaf, &inter.der, &root.der]);
    assert_eq!(bundle.verify(&with_root, now()).unwrap(), verified);

    // The parsed SVID's chain verifies the same.
    let cert_pem = palisade_identity::pem::encode_certificates([leaf.as_slice(), &inter.der]);
    let svid =
        X509Svid::parse_pem(cert_pem.as_bytes(), leaf_key.serialize_pem().as_bytes()).unwrap();
    assert_eq!(bundle.verify(svid.chain(), now()).unwrap(), verified);

    // Through a bundle set.
    let set: X509BundleSet = [bundle.clone(), bundle_of_td("other.org", &[])]
        .into_iter()
        .collect();
    assert_eq!(set.verify(svid.chain(), now()).unwrap(), verified);
}

fn bundle_of_td(trust_domain: &str, anchors: &[&Ca]) -> X509Bundle {
    let mut bundle = X509Bundle::new(td(trust_domain));
    for ca in anchors {
        bundle.add_authority(&ca.der).unwrap();
    }
    bundle
}

#[test]
fn leaf_signed_by_the_root_directly_verifies() {
    let root = Ca::root("root", "example.org");
    let leaf = root.leaf(WEB);
    let verified = bundle_of(&[&root]).verify(&chain(&[&leaf]), now()).unwrap();
    assert_eq!(verified.spiffe_id().to_string(), WEB);
}

#[test]
fn expired_and_not_yet_valid_certificates_are_rejected() {
    let root = Ca::root("root", "example.org");
    let bundle = bundle_of(&[&root]);
    let leaf_1 = CertLocation::Chain { position: 1 };

    let expired = root.leaf_with(WEB, |p| window(p, -3, -1)).0;
    let err = bundle.verify(&chain(&[&expired]), now()).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Expired { at, .. } if *at == leaf_1),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("certificate 1 of the chain expired at "),
        "{err}"
    );

    let future = root.leaf_with(WEB, |p| window(p, 1, 3)).0;
    let err = bundle.verify(&chain(&[&future]), now()).unwrap_err();
    assert!(
        matches!(&err, VerifyError::NotYetValid { at, .. } if *at == leaf_1),
        "{err:?}"
    );

    // The same certificates verify inside their windows.
    assert!(bundle.verify(&chain(&[&expired]), now() - 2 * DAY).is_ok());
    assert!(bundle.verify(&chain(&[&future]), now() + 2 * DAY).is_ok());

    // An expired intermediate, and an expired anchor.
    let mut params = Ca::params("intermediate", "example.org");
    window(&mut params, -10, -5);
    let inter = root.issue_ca(params);
    let leaf = inter.leaf(WEB);
    assert!(matches!(
        bundle.verify(&chain(&[&leaf, &inter.der]), now()),
        Err(VerifyError::Expired {
            at: CertLocation::Chain { position: 2 },
            ..
        })
    ));
    let mut params = Ca::params("old root", "example.org");
    window(&mut params, -10, -5);
    let old_root = Ca::self_signed(params);
    let leaf = old_root.leaf(WEB);
    let bundle = bundle_of(&[&old_root]);
    assert!(matches!(
        bundle.verify(&chain(&[&leaf]), now()),
        Err(VerifyError::Expired {
            at: CertLocation::Anchor { .. },
            ..
        })
    ));
}

/// A CA with the root's subject and subjectKeyIdentifier but another key
/// signs a leaf whose authorityKeyIdentifier therefore names the root: the
/// root is found by key id, and the signature check rejects the leaf. The
/// impostor cannot join the bundle under the root's key id either.
#[test]
fn impostor_with_the_anchors_name_and_key_id_is_rejected() {
    let root = Ca::root("root", "example.org");
    let mut bundle = X509Bundle::new(td("example.org"));
    let root_id = bundle.add_authority(&root.der).unwrap();

    let mut params = Ca::params("root", "example.org");
    params.key_identifier_method = KeyIdMethod::PreSpecified(root_id.as_bytes().to_vec());
    let impostor = Ca::self_signed(params);
    let leaf = impostor.leaf(WEB);
    assert_eq!(authority_key_id(&leaf), root_id);

    let err = bundle.verify(&chain(&[&leaf]), now()).unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::BadSignature { position: 1, issuer_at: CertLocation::Anchor { key_id }, .. }
                if *key_id == root_id
        ),
        "{err:?}"
    );
    assert_eq!(
        bundle.add_authority(&impostor.der),
        Err(X509BundleError::DuplicateKeyId {
            key_id: root_id.clone()
        })
    );
    // Adding the same root again is harmless.
    assert_eq!(bundle.add_authority(&root.der), Ok(root_id));
    assert_eq!(bundle.len(), 1);
}

#[test]
fn tampered_signature_is_rejected() {
    let root = Ca::root("root", "example.org");
    let inter = root.intermediate("intermediate", "example.org");
    let mut leaf = inter.leaf(WEB);
    let last = leaf.len() - 1;
    leaf[last] ^= 0x01;
    assert!(matches!(
        bundle_of(&[&root]).verify(&chain(&[&leaf, &inter.der]), now()),
        Err(VerifyError::BadSignature {
            position: 1,
            issuer_at: CertLocation::Chain { position: 2 },
            ..
        })
    ));
}

#[test]
fn leaf_from_a_foreign_trust_domain_is_rejected() {
    let root = Ca::root("root", "example.org");
    let leaf = root.leaf("spiffe://other.org/web");
    let err = bundle_of(&[&root])
        .verify(&chain(&[&leaf]), now())
        .unwrap_err();
    assert!(
        matches!(&err, VerifyError::TrustDomainMismatch { leaf, bundle, .. }
            if leaf.name() == "other.org" && bundle.name() == "example.org"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the leaf's SPIFFE ID spiffe://other.org/web is in trust domain other.org, but the bundle is for trust domain example.org"
    );

    let set: X509BundleSet = [bundle_of(&[&root])].into_iter().collect();
    assert!(matches!(
        set.verify(&chain(&[&leaf]), now()),
        Err(VerifyError::NoBundle { trust_domain, .. }) if trust_domain.name() == "other.org"
    ));
}

#[test]
fn structural_rules_apply_to_verification() {
    let root = Ca::root("root", "example.org");
    let bundle = bundle_of(&[&root]);

    let ca_leaf = root
        .leaf_with(WEB, |p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained))
        .0;
    assert_eq!(
        bundle.verify(&chain(&[&ca_leaf]), now()),
        Err(VerifyError::Chain {
            source: ChainError::LeafIsCa
        })
    );

    let mut params = Ca::params("not a ca", "example.org");
    params.is_ca = IsCa::ExplicitNoCa;
    let not_ca = root.issue_ca(params);
    let leaf = not_ca.leaf(WEB);
    assert_eq!(
        bundle.verify(&chain(&[&leaf, &not_ca.der]), now()),
        Err(VerifyError::Chain {
            source: ChainError::SigningNotCa { position: 2 }
        })
    );

    let server_only = root
        .leaf_with(WEB, |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
        })
        .0;
    assert_eq!(
        bundle.verify(&chain(&[&server_only]), now()),
        Err(VerifyError::Chain {
            source: ChainError::LeafExtendedKeyUsage {
                purpose: "clientAuth"
            }
        })
    );
    let no_eku = root.leaf_with(WEB, |p| p.extended_key_usages.clear()).0;
    assert!(bundle.verify(&chain(&[&no_eku]), now()).is_ok());

    let too_long = vec![root.leaf(WEB); MAX_CHAIN_LEN + 1];
    assert_eq!(
        bundle.verify(&too_long, now()),
        Err(VerifyError::Chain {
            source: ChainError::TooLong {
                len: MAX_CHAIN_LEN + 1,
                max: MAX_CHAIN_LEN
            }
        })
    );
    assert_eq!(
        bundle.verify(&[], now()),
        Err(VerifyError::Chain {
            source: ChainError::Empty
        })
    );
}

#[test]
fn missing_anchor_is_rejected() {
    let root = Ca::root("root", "example.org");
    let inter = root.intermediate("intermediate", "example.org");
    let leaf = inter.leaf(WEB);
    let unrelated = Ca::root("root", "example.org");
    let bundle = bundle_of(&[&unrelated]);
    let err = bundle
        .verify(&chain(&[&leaf, &inter.der]), now())
        .unwrap_err();
    assert!(
        matches!(&err, VerifyError::UnknownAuthorityKeyId { position: 2, key_id, .. }
            if *key_id == authority_key_id(&inter.der)),
        "{err:?}"
    );
    // Without the intermediate, the leaf's issuer is not an anchor either.
    assert!(matches!(
        bundle.verify(&chain(&[&leaf]), now()),
        Err(VerifyError::UnknownAuthorityKeyId { position: 1, .. })
    ));
    assert!(matches!(
        X509Bundle::new(td("example.org")).verify(&chain(&[&leaf, &inter.der]), now()),
        Err(VerifyError::UnknownAuthorityKeyId { .. })
    ));
}

#[test]
fn chain_out_of_order_is_an_issuer_mismatch() {
    let root = Ca::root("root", "example.org");
    let inter_a = root.intermediate("intermediate a", "example.org");
    let inter_b = root.intermediate("intermediate b", "example.org");
    let leaf = inter_a.leaf(WEB);
    assert!(matches!(
        bundle_of(&[&root]).verify(&chain(&[&leaf, &inter_b.der]), now()),
        Err(VerifyError::IssuerMismatch { position: 1, .. })
    ));
}

#[test]
fn anchor_rotation_two_anchors_both_verify() {
    let old = Ca::root("root", "example.org");
    let new = Ca::root("root", "example.org");
    let mut bundle = X509Bundle::new(td("example.org"));
    let old_id = bundle.add_authority(&old.der).unwrap();
    let new_id = bundle.add_authority(&new.der).unwrap();
    assert_ne!(
        old_id, new_id,
        "same subject, different keys, different ids"
    );
    assert_eq!(bundle.len(), 2);

    let from_old = old.leaf(WEB);
    let from_new = new.intermediate("intermediate", "example.org");
    let from_new_leaf = from_new.leaf(WEB);
    assert_eq!(
        bundle
            .verify(&chain(&[&from_old]), now())
            .unwrap()
            .anchor_key_id(),
        &old_id
    );
    assert_eq!(
        bundle
            .verify(&chain(&[&from_new_leaf, &from_new.der]), now())
            .unwrap()
            .anchor_key_id(),
        &new_id
    );

    // Retiring the old anchor rejects its leaves only.
    assert_eq!(bundle.remove_authority(&old_id), Some(old.der.clone()));
    assert!(matches!(
        bundle.verify(&chain(&[&from_old]), now()),
        Err(VerifyError::UnknownAuthorityKeyId { .. })
    ));
    assert!(bundle
        .verify(&chain(&[&from_new_leaf, &from_new.der]), now())
        .is_ok());
}

#[test]
fn path_length_constraint_is_enforced() {
    let mut params = Ca::params("root", "example.org");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let root = Ca::self_signed(params);
    let bundle = bundle_of(&[&root]);
    assert!(bundle.verify(&chain(&[&root.leaf(WEB)]), now()).is_ok());
    let inter = root.intermediate("intermediate", "example.org");
    let leaf = inter.leaf(WEB);
    assert!(matches!(
        bundle.verify(&chain(&[&leaf, &inter.der]), now()),
        Err(VerifyError::PathLenExceeded {
            at: CertLocation::Anchor { .. },
            max: 0,
            below: 1
        })
    ));
}

#[test]
fn unhandled_critical_extension_is_rejected() {
    let root = Ca::root("root", "example.org");
    let leaf = root
        .leaf_with(WEB, |p| {
            let mut ext =
                CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
            ext.set_criticality(true);
            p.custom_extensions.push(ext);
        })
        .0;
    let err = bundle_of(&[&root])
        .verify(&chain(&[&leaf]), now())
        .unwrap_err();
    assert_eq!(
        err,
        VerifyError::UnhandledCriticalExtension {
            at: CertLocation::Chain { position: 1 },
            oid: "1.3.6.1.4.1.99999.1".to_owned()
        }
    );
}

/// basicConstraints `cA` true (critical), written by hand so that rcgen adds
/// no subjectKeyIdentifier.
fn ca_without_ski(name: &str) -> Ca {
    let mut params = Ca::params(name, "example.org");
    params.is_ca = IsCa::NoCa;
    let mut bc =
        CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x03, 0x01, 0x01, 0xff]);
    bc.set_criticality(true);
    params.custom_extensions.push(bc);
    Ca::self_signed(params)
}

/// An anchor without subjectKeyIdentifier gets the SHA-256-derived id, which
/// is what rcgen writes as authorityKeyIdentifier by default; a leaf
/// without authorityKeyIdentifier, or with one derived another way, is
/// matched by issuer name and signature.
#[test]
fn anchor_without_subject_key_identifier() {
    let root = ca_without_ski("root without ski");
    let mut bundle = X509Bundle::new(td("example.org"));
    let id = bundle.add_authority(&root.der).unwrap();
    assert_eq!(id.as_bytes().len(), 20);

    let with_aki = root.leaf(WEB);
    assert_eq!(authority_key_id(&with_aki), id);
    assert_eq!(
        bundle
            .verify(&chain(&[&with_aki]), now())
            .unwrap()
            .anchor_key_id(),
        &id
    );

    let without_aki = root
        .leaf_with(WEB, |p| p.use_authority_key_identifier_extension = false)
        .0;
    assert_eq!(
        bundle
            .verify(&chain(&[&without_aki]), now())
            .unwrap()
            .anchor_key_id(),
        &id
    );

    let mut other_method = Ca::params("root without ski", "example.org");
    other_method.key_identifier_method = KeyIdMethod::PreSpecified(vec![7; 20]);
    let renamed = Ca {
        params: other_method,
        key: KeyPair::from_pem(&root.key.serialize_pem()).unwrap(),
        der: root.der.clone(),
    };
    let odd_aki = renamed.leaf(WEB);
    assert_eq!(authority_key_id(&odd_aki).as_bytes(), &[7; 20]);
    assert_eq!(
        bundle
            .verify(&chain(&[&odd_aki]), now())
            .unwrap()
            .anchor_key_id(),
        &id
    );

    // An anchor with a subjectKeyIdentifier is only found by it.
    let root_with_ski = Ca::root("root with ski", "example.org");
    let bundle = bundle_of(&[&root_with_ski]);
    let unrelated_aki = root_with_ski
        .leaf_with(WEB, |p| p.use_authority_key_identifier_extension = false)
        .0;
    assert!(bundle.verify(&chain(&[&unrelated_aki]), now()).is_ok());
    let mut params = root_with_ski.params.clone();
    params.key_identifier_method = KeyIdMethod::PreSpecified(vec![9; 20]);
    let misnamed = Ca {
        params,
        key: KeyPair::from_pem(&root_with_ski.key.serialize_pem()).unwrap(),
        der: root_with_ski.der.clone(),
    };
    assert!(matches!(
        bundle.verify(&chain(&[&misnamed.leaf(WEB)]), now()),
        Err(VerifyError::UnknownAuthorityKeyId { .. })
    ));
}

#[test]
fn bundle_encodings_round_trip() {
    let a = Ca::root("a", "example.org");
    let b = Ca::root("b", "example.org");
    let bundle = bundle_of(&[&a, &b]);
    let pem = bundle.to_pem();
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    assert_eq!(
        X509Bundle::from_pem(td("example.org"), pem.as_bytes()).unwrap(),
        bundle
    );
    let der = bundle.to_der_concatenated();
    assert_eq!(der.len(), a.der.len() + b.der.len());
    assert_eq!(
        X509Bundle::from_der_concatenated(td("example.org"), &der).unwrap(),
        bundle
    );
    let ids: Vec<&KeyId> = bundle.authorities().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2);
    assert!(bundle.authority(ids[0]).is_some());

    // A leaf is no anchor, and says which input certificate is wrong.
    let leaf = a.leaf(WEB);
    let mut der_with_leaf = der.clone();
    der_with_leaf.extend_from_slice(&leaf);
    let err = X509Bundle::from_der_concatenated(td("example.org"), &der_with_leaf).unwrap_err();
    assert!(
        matches!(&err, X509BundleError::Certificate { position: 3, source }
            if matches!(**source, X509BundleError::NotCa { .. })),
        "{err:?}"
    );
    let key_pem = a.key.serialize_pem();
    assert!(matches!(
        X509Bundle::from_pem(td("example.org"), key_pem.as_bytes()),
        Err(X509BundleError::UnexpectedPemBlock { label }) if label == "PRIVATE KEY"
    ));
}

/// The authorityKeyIdentifier's key id of a DER certificate.
fn authority_key_id(der: &[u8]) -> KeyId {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("authorityKeyIdentifier");
    KeyId::new(aki)
}
