//! SVIDs issued by palisade's CA pass palisade's X509-SVID validator: with a
//! self-signed CA, across a rotation (overlapping bundle), and under an
//! operator's root; a leaf of another trust domain is rejected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use palisade_identity::ca::{self, Authority, CaSet, RotationPolicy};
use palisade_identity::x509::{VerifyError, X509Bundle, X509Svid};
use palisade_identity::{SpiffeId, TrustDomain};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};

const HOUR: Duration = Duration::from_secs(3600);

fn policy() -> RotationPolicy {
    RotationPolicy {
        ca_ttl: 24 * HOUR,
        max_svid_ttl: HOUR,
        propagation: Duration::from_secs(30),
    }
}

fn reparse(svid: &X509Svid) -> X509Svid {
    let der: Vec<u8> = svid.chain().concat();
    X509Svid::parse_der(&der, svid.private_key().secret_der()).unwrap()
}

#[test]
fn issued_svids_verify_and_survive_rotation() {
    let td = TrustDomain::new("example.org").unwrap();
    let now = SystemTime::now();
    let mut set = CaSet::bootstrap(td.clone(), now, &policy()).unwrap();
    let id: SpiffeId = "spiffe://example.org/ns/default/sa/web".parse().unwrap();
    let (old, _) = set.issue_x509(&id, now, HOUR).unwrap();
    assert_eq!(
        reparse(&old).spiffe_id(),
        &id,
        "the SVID passes the structural rules"
    );
    let verified = set.x509_bundle().verify(old.chain(), now).unwrap();
    assert_eq!(verified.spiffe_id(), &id);

    set.rotate(now, true, &policy()).unwrap();
    let (new, _) = set.issue_x509(&id, now, HOUR).unwrap();
    let bundle = set.x509_bundle();
    assert_eq!(bundle.len(), 2);
    bundle.verify(new.chain(), now).unwrap();
    bundle
        .verify(old.chain(), now)
        .expect("the retired CA's SVIDs stay valid");
    assert!(
        bundle.verify(new.chain(), now + 2 * HOUR).is_err(),
        "an expired SVID is refused"
    );
}

#[test]
fn a_foreign_trust_domain_is_rejected() {
    let now = SystemTime::now();
    let ours = CaSet::bootstrap(TrustDomain::new("example.org").unwrap(), now, &policy()).unwrap();
    let mut theirs =
        CaSet::bootstrap(TrustDomain::new("other.org").unwrap(), now, &policy()).unwrap();
    let id: SpiffeId = "spiffe://other.org/ns/default/sa/web".parse().unwrap();
    let (foreign, _) = theirs.issue_x509(&id, now, HOUR).unwrap();
    let err = ours.x509_bundle().verify(foreign.chain(), now).unwrap_err();
    assert!(
        matches!(err, VerifyError::TrustDomainMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("other.org"), "{err}");
}

#[test]
fn an_intermediate_under_an_operator_root_issues_verifiable_chains() {
    let td = TrustDomain::new("example.org").unwrap();
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::new(Vec::new()).unwrap();
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root_params, &root_key);

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.use_authority_key_identifier_extension = true;
    let ca = ca_params.signed_by(&ca_key, &root_issuer).unwrap();

    let authority = Authority::from_parts(
        &td,
        ca.der().to_vec(),
        Vec::new(),
        vec![root.der().to_vec()],
        &ca_key.serialize_der(),
    )
    .unwrap();
    assert!(!authority.is_self_signed());
    let now = SystemTime::now();
    let id: SpiffeId = "spiffe://example.org/identity/1234".parse().unwrap();
    let svid = authority.issue(&id, now, HOUR).unwrap();
    assert_eq!(svid.chain().len(), 2, "leaf and the intermediate");
    let mut bundle = X509Bundle::new(td.clone());
    bundle.add_authority(root.der()).unwrap();
    bundle.verify(svid.chain(), now).unwrap();

    let stranger = KeyPair::generate().unwrap();
    let wrong = Authority::from_parts(
        &td,
        ca.der().to_vec(),
        Vec::new(),
        vec![root.der().to_vec()],
        &stranger.serialize_der(),
    );
    assert!(wrong
        .unwrap_err()
        .to_string()
        .contains("does not belong to the CA key"));
    let unrelated_root = CertificateParams::new(Vec::new())
        .unwrap()
        .self_signed(&stranger)
        .unwrap();
    let unchained = Authority::from_parts(
        &td,
        ca.der().to_vec(),
        Vec::new(),
        vec![unrelated_root.der().to_vec()],
        &ca_key.serialize_der(),
    );
    assert!(unchained
        .unwrap_err()
        .to_string()
        .contains("not signed by any certificate"));
    let misordered = Authority::from_parts(
        &td,
        ca.der().to_vec(),
        vec![unrelated_root.der().to_vec()],
        vec![root.der().to_vec()],
        &ca_key.serialize_der(),
    );
    let message = misordered.unwrap_err().to_string();
    assert!(
        message.contains(
            "the CA certificate is not signed by upstream certificate 1 (certificate 2 of the file)"
        ),
        "{message}"
    );
}

/// A directory under the system's temporary one, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "palisade-ca-issuance-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    /// Writes `text` to `name` with `mode`; returns the path.
    fn write(&self, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_supplied_intermediate_without_its_roots_is_refused() {
    let td = TrustDomain::new("example.org").unwrap();
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::new(Vec::new()).unwrap();
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "operator root");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root_params.clone(), &root_key);
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "palisade intermediate");
    let ca = ca_params.signed_by(&ca_key, &root_issuer).unwrap();

    let dir = TempDir::new("supplied");
    let cert_file = dir.write("ca.pem", &ca.pem(), 0o644);
    let key_file = dir.write("ca.key", &ca_key.serialize_pem(), 0o600);
    let bundle_file = dir.write("root.pem", &root.pem(), 0o644);

    let err = ca::read_supplied(&td, &cert_file, &key_file, None).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("{}: ", cert_file.display())),
        "names the file: {message}"
    );
    assert!(message.contains("not self-signed"), "{message}");
    assert!(
        message.contains("ca_bundle_file"),
        "says what fixes it: {message}"
    );
    assert!(
        message.contains("operator root"),
        "names the issuer: {message}"
    );

    // The same CA with its root is accepted and keeps its chain.
    let authority = ca::read_supplied(&td, &cert_file, &key_file, Some(&bundle_file)).unwrap();
    assert!(!authority.is_self_signed());
    assert_eq!(authority.anchors(), [root.der().to_vec()]);

    // A root that names itself as issuer but is signed by another key is
    // not self-signed either.
    let impostor_key = KeyPair::generate().unwrap();
    let impostor = root_params.signed_by(&impostor_key, &root_issuer).unwrap();
    let impostor_file = dir.write("impostor.pem", &impostor.pem(), 0o644);
    let impostor_key_file = dir.write("impostor.key", &impostor_key.serialize_pem(), 0o600);
    let err = ca::read_supplied(&td, &impostor_file, &impostor_key_file, None).unwrap_err();
    assert!(err.to_string().contains("not self-signed"), "{err}");

    // A self-signed CA needs no bundle: it is its own anchor.
    let root_file = dir.write("root-ca.pem", &root.pem(), 0o644);
    let root_key_file = dir.write("root-ca.key", &root_key.serialize_pem(), 0o600);
    let authority = ca::read_supplied(&td, &root_file, &root_key_file, None).unwrap();
    assert!(authority.is_self_signed());
    assert_eq!(authority.anchors(), [root.der().to_vec()]);
}
