//! SPIFFE conformance: the shared corpus `shared/conformance/spiffe` (see its
//! README) against the SPIFFE ID parser and the X.509-SVID parser, and
//! property tests of the SPIFFE ID parser.
//!
//! The corpus is `$PALISADE_CONFORMANCE_DIR/spiffe`, or
//! `shared/conformance/spiffe` checked out next to this repository. Without
//! it the corpus tests say `SKIPPED` on the terminal and pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_identity::x509::{
    ChainError, PrivateKeyError, VerifyError, X509Bundle, X509Svid, X509SvidError,
};
use palisade_identity::{SpiffeId, SpiffeIdError, TrustDomain};
use proptest::prelude::*;

/// `shared/conformance/spiffe`, or `None` (after saying so) when absent.
fn corpus(test: &str) -> Option<PathBuf> {
    let root = match std::env::var_os("PALISADE_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/conformance"
        )),
    };
    let dir = root.join("spiffe");
    if dir.join("spiffe-ids.tsv").is_file() {
        Some(dir)
    } else {
        // Not `eprintln!`: cargo captures that unless the test fails.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: the SPIFFE conformance corpus {} is not there (check out `shared` next to this repository or set PALISADE_CONFORMANCE_DIR)",
            dir.display()
        );
        None
    }
}

fn read(dir: &std::path::Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join("x509svid").join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The variant the parser must return for an invalid row, from its reason.
/// An unknown reason fails the test, so a new row gets a rule here.
fn expected_error(input: &str, reason: &str) -> fn(&SpiffeIdError) -> bool {
    let r = reason;
    if r.starts_with("empty string") {
        |e| matches!(e, SpiffeIdError::Empty)
    } else if r.contains("scheme") {
        |e| matches!(e, SpiffeIdError::Scheme)
    } else if r.starts_with("trust domain missing") {
        |e| matches!(e, SpiffeIdError::MissingTrustDomain)
    } else if r.contains("trailing slash") || r.contains("empty segments") {
        |e| matches!(e, SpiffeIdError::EmptySegment)
    } else if r.contains("dot segment") {
        |e| matches!(e, SpiffeIdError::DotSegment { .. })
    } else if r.starts_with("trust domain")
        || r.starts_with("authority")
        || r.starts_with("IPv6")
        || r.contains("is not a trust domain character")
    {
        |e| matches!(e, SpiffeIdError::TrustDomainChar { .. })
    } else if r.starts_with("path") || r.contains("query") || r.contains("fragment") {
        |e| matches!(e, SpiffeIdError::PathChar { .. })
    } else {
        panic!("no expected error for {input:?} ({reason}); add a rule")
    }
}

#[test]
fn spiffe_id_table() {
    let Some(dir) = corpus("spiffe_id_table") else {
        return;
    };
    let text = std::fs::read_to_string(dir.join("spiffe-ids.tsv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("input\texpected\treason"));
    let (mut valid, mut invalid) = (0, 0);
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        let [input, expected, reason] = cols[..] else {
            panic!("malformed row {line:?}");
        };
        let parsed = SpiffeId::from_str(input);
        match expected {
            "valid" => {
                let id = parsed.unwrap_or_else(|e| panic!("{input:?} ({reason}): {e}"));
                assert_eq!(id.to_string(), input, "{reason}");
                valid += 1;
            }
            "invalid" => {
                let err = parsed.expect_err(input);
                assert!(
                    expected_error(input, reason)(&err),
                    "{input:?} ({reason}) gave {err:?}"
                );
                invalid += 1;
            }
            other => panic!("unknown expectation {other:?} in {line:?}"),
        }
    }
    assert_eq!((valid, invalid), (12, 39), "row count changed");
}

/// What a row of the README's tables expects.
enum Outcome {
    Valid { certs: usize },
    Invalid(fn(&X509SvidError) -> bool),
}

const ID: &str = "spiffe://example.org/workload-1";

#[test]
fn x509svid_rows_1_to_18() {
    use Outcome::{Invalid, Valid};
    let Some(dir) = corpus("x509svid_rows_1_to_18") else {
        return;
    };
    let rows: [(u8, &str, &str, Outcome); 18] = [
        (
            1,
            "good-leaf-only.pem",
            "key-pkcs8-rsa.pem",
            Valid { certs: 1 },
        ),
        (
            2,
            "good-leaf-and-intermediate.pem",
            "key-pkcs8-ecdsa.pem",
            Valid { certs: 2 },
        ),
        (
            3,
            "good-key-and-cert.pem",
            "good-key-and-cert.pem",
            Valid { certs: 1 },
        ),
        (
            4,
            "good-cert-and-key.pem",
            "good-cert-and-key.pem",
            Valid { certs: 1 },
        ),
        (
            5,
            "key-pkcs8-rsa.pem",
            "key-pkcs8-rsa.pem",
            Invalid(
                |e| matches!(e, X509SvidError::NoCertificate { found } if found == &["PRIVATE KEY"]),
            ),
        ),
        (
            6,
            "good-leaf-only.pem",
            "good-leaf-only.pem",
            Invalid(
                |e| matches!(e, X509SvidError::NoPrivateKey { found } if found == &["CERTIFICATE"]),
            ),
        ),
        (
            7,
            "good-leaf-only.pem",
            "not-pem",
            Invalid(|e| matches!(e, X509SvidError::KeyNotPem)),
        ),
        (
            8,
            "not-pem",
            "key-pkcs8-rsa.pem",
            Invalid(|e| matches!(e, X509SvidError::CertificatesNotPem)),
        ),
        (
            9,
            "good-leaf-only.pem",
            "corrupt-key.pem",
            Invalid(|e| {
                matches!(
                    e,
                    X509SvidError::PrivateKey {
                        source: PrivateKeyError::Malformed { .. }
                    }
                )
            }),
        ),
        (
            10,
            "corrupt-cert.pem",
            "key-pkcs8-rsa.pem",
            Invalid(|e| {
                matches!(
                    e,
                    X509SvidError::Chain {
                        source: ChainError::Malformed { position: 1, .. }
                    }
                )
            }),
        ),
        (
            11,
            "good-leaf-and-intermediate.pem",
            "key-pkcs8-rsa.pem",
            Invalid(|e| matches!(e, X509SvidError::KeyMismatch)),
        ),
        (
            12,
            "wrong-leaf-empty-id.pem",
            "key-pkcs8-rsa.pem",
            Invalid(|e| {
                matches!(
                    e,
                    X509SvidError::Chain {
                        source: ChainError::LeafNoUriSan
                    }
                )
            }),
        ),
        (
            13,
            "wrong-leaf-ca-true.pem",
            "key-pkcs8-rsa.pem",
            Invalid(|e| {
                matches!(
                    e,
                    X509SvidError::Chain {
                        source: ChainError::LeafIsCa
                    }
                )
            }),
        ),
        (
            14,
            "wrong-leaf-no-digital-signature.pem",
            "key-pkcs8-rsa.pem",
            Invalid(|e| {
                matches!(
                    e,
                    X509SvidError::Chain {
                        source: ChainError::LeafNoDigitalSignature
                    }
                )
            }),
        ),
        (
            15,
            "wrong-leaf-cert-sign.pem",
            "key-pkcs8-rsa.pem",
            Invalid(|e| {
                matches!(
                    e,
                    X509SvidError::Chain {
                        source: ChainError::LeafKeyCertSign
                    }
                )
            }),
        ),
        (
            16,
            "wrong-leaf-crl-sign.pem",
            "key-pkcs8-rsa.pem",
            Invalid(|e| {
                matches!(
                    e,
                    X509SvidError::Chain {
                        source: ChainError::LeafCrlSign
                    }
                )
            }),
        ),
        (
            17,
            "wrong-intermediate-no-ca.pem",
            "key-pkcs8-rsa.pem",
            Invalid(|e| {
                matches!(
                    e,
                    X509SvidError::Chain {
                        source: ChainError::SigningNotCa { position: 2 }
                    }
                )
            }),
        ),
        (
            18,
            "wrong-intermediate-no-key-cert-sign.pem",
            "key-pkcs8-rsa.pem",
            Invalid(|e| {
                matches!(
                    e,
                    X509SvidError::Chain {
                        source: ChainError::SigningNoKeyCertSign { position: 2 }
                    }
                )
            }),
        ),
    ];
    for (row, cert_file, key_file, outcome) in rows {
        let result = X509Svid::parse_pem(&read(&dir, cert_file), &read(&dir, key_file));
        match (outcome, result) {
            (Valid { certs }, Ok(svid)) => {
                assert_eq!(svid.spiffe_id().to_string(), ID, "row {row}");
                assert_eq!(svid.chain().len(), certs, "row {row}");
                assert!(svid.not_before() < svid.not_after(), "row {row}");
            }
            (Invalid(check), Err(e)) => assert!(check(&e), "row {row}: wrong error {e:?} ({e})"),
            (Valid { .. }, Err(e)) => panic!("row {row}: {cert_file} + {key_file}: {e}"),
            (Invalid(_), Ok(svid)) => {
                panic!("row {row}: {cert_file} + {key_file} parsed: {svid:?}")
            }
        }
    }
}

/// The error messages name what is wrong, in the README's words.
#[test]
fn x509svid_messages() {
    let Some(dir) = corpus("x509svid_messages") else {
        return;
    };
    let message = |certs: &str, key: &str| {
        X509Svid::parse_pem(&read(&dir, certs), &read(&dir, key))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        message("good-leaf-only.pem", "not-pem"),
        "no PEM block found in the key input"
    );
    assert_eq!(
        message("wrong-intermediate-no-ca.pem", "key-pkcs8-rsa.pem"),
        "certificate 2 of the chain (a signing certificate) does not have the CA flag set"
    );
    assert_eq!(
        message("good-leaf-and-intermediate.pem", "key-pkcs8-rsa.pem"),
        "the private key does not match the leaf certificate's public key"
    );
}

/// The Workload API form (concatenated DER, PKCS#8 DER) parses the same.
#[test]
fn x509svid_der_form() {
    let Some(dir) = corpus("x509svid_der_form") else {
        return;
    };
    for (certs, key) in [
        ("good-leaf-only.pem", "key-pkcs8-rsa.pem"),
        ("good-leaf-and-intermediate.pem", "key-pkcs8-ecdsa.pem"),
    ] {
        let svid = X509Svid::parse_pem(&read(&dir, certs), &read(&dir, key)).unwrap();
        let der = svid.chain().concat();
        let from_der = X509Svid::parse_der(&der, svid.private_key().secret_der()).unwrap();
        assert_eq!(from_der, svid, "{certs}");
    }
    let svid = X509Svid::parse_pem(
        &read(&dir, "good-leaf-and-intermediate.pem"),
        &read(&dir, "key-pkcs8-ecdsa.pem"),
    )
    .unwrap();
    let mut der = svid.chain().concat();
    der.push(0x30);
    assert!(matches!(
        X509Svid::parse_der(&der, svid.private_key().secret_der()),
        Err(X509SvidError::Chain {
            source: ChainError::Malformed { position: 3, .. }
        })
    ));
    assert!(matches!(
        X509Svid::parse_der(&svid.chain()[0], b"CORRUPT"),
        Err(X509SvidError::PrivateKey {
            source: PrivateKeyError::Malformed { .. }
        })
    ));
}

/// Row 19: a leaf whose SPIFFE ID has no path, otherwise valid (the same
/// certificate with a path parses, so the path is what is rejected).
#[test]
fn x509svid_row_19_leaf_without_path() {
    let make = |uri: &str| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(uri).unwrap(),
        )];
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (cert, key) = make("spiffe://example.org/workload-1");
    let svid = X509Svid::parse_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    assert_eq!(svid.spiffe_id().to_string(), ID);

    let (cert, key) = make("spiffe://example.org");
    let err = X509Svid::parse_pem(cert.as_bytes(), key.as_bytes()).unwrap_err();
    assert!(
        matches!(
            &err,
            X509SvidError::Chain { source: ChainError::LeafIdWithoutPath { id } }
                if id.to_string() == "spiffe://example.org"
        ),
        "{err:?}"
    );
}

fn at(unix: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix)
}

/// The ECDSA vector's intermediate as a trust anchor: its leaf verifies at
/// the README's fixed time (2020-03-24T14:30:00Z), alone or with the
/// intermediate in the chain, and is expired at the RSA group's time.
#[test]
fn x509svid_ecdsa_leaf_verifies_against_its_intermediate() {
    let Some(dir) = corpus("x509svid_ecdsa_leaf_verifies_against_its_intermediate") else {
        return;
    };
    let svid = X509Svid::parse_pem(
        &read(&dir, "good-leaf-and-intermediate.pem"),
        &read(&dir, "key-pkcs8-ecdsa.pem"),
    )
    .unwrap();
    let td = TrustDomain::new("example.org").unwrap();
    let mut bundle = X509Bundle::new(td);
    let anchor = bundle.add_authority(&svid.chain()[1]).unwrap();
    assert_eq!(
        anchor.to_string(),
        "75:FE:FC:84:34:7D:49:E5:6D:06:D3:37:B1:A9:1E:10:D9:45:48:1A"
    );

    let fixed = at(1_585_060_200); // 2020-03-24T14:30:00Z
    let verified = bundle.verify(&svid.chain()[..1], fixed).unwrap();
    assert_eq!(verified.spiffe_id(), svid.spiffe_id());
    assert_eq!(verified.anchor_key_id(), &anchor);
    assert_eq!(verified.not_after(), svid.not_after());
    assert_eq!(bundle.verify(svid.chain(), fixed).unwrap(), verified);

    let later = at(1_704_067_200); // 2024-01-01T00:00:00Z
    assert!(matches!(
        bundle.verify(svid.chain(), later),
        Err(VerifyError::Expired { .. })
    ));
}

proptest! {
    #[test]
    fn spiffe_id_parse_never_panics_and_round_trips(s in ".*") {
        if let Ok(id) = SpiffeId::from_str(&s) {
            prop_assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn the_parser_agrees_with_an_independent_oracle(s in spiffe_id_candidate()) {
        let parsed = SpiffeId::from_str(&s);
        prop_assert_eq!(
            parsed.is_ok(),
            oracle_accepts(&s),
            "{:?}: the parser says {:?}",
            s,
            parsed
        );
        if let Ok(id) = parsed {
            prop_assert_eq!(id.to_string(), s.clone());
            prop_assert_eq!(SpiffeId::from_str(&id.to_string()), Ok(id));
        }
    }
}

/// The SPIFFE-ID rules, written apart from the parser: `spiffe://`, a
/// non-empty trust domain of `[a-z0-9._-]` of at most 255 bytes, then an
/// optional path of `/segment`s, each non-empty, not `.` or `..`, of
/// `[A-Za-z0-9._-]` (so no trailing `/`); at most 2048 bytes in all.
fn oracle_accepts(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("spiffe://") else {
        return false;
    };
    if s.len() > 2048 {
        return false;
    }
    let (domain, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let domain_ok = !domain.is_empty()
        && domain.len() <= 255
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    let path_ok = path.is_empty()
        || path[1..].split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    domain_ok && path_ok
}

/// Strings near the SPIFFE-ID grammar, valid about half of the time: a
/// scheme (mostly right), a trust domain (mostly of allowed characters,
/// sometimes with uppercase, `%`, `:` or `@`, sometimes at the length
/// limit), path segments (mostly allowed, sometimes empty, `.`, `..` or
/// with `%`, `~`, `?`, `#` or a non-ASCII letter) and maybe a trailing `/`.
fn spiffe_id_candidate() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        12 => Just("spiffe://"),
        1 => Just("SPIFFE://"),
        1 => Just("spiffe:/"),
        1 => Just("https://"),
        1 => Just(""),
    ];
    let domain = prop_oneof![
        10 => "[a-z0-9._-]{0,10}",
        2 => "[a-zA-Z0-9._%:@-]{1,10}",
        1 => "[a-z]{254,256}",
    ];
    let segment = prop_oneof![
        12 => "[A-Za-z0-9._-]{1,6}",
        1 => Just(String::new()),
        1 => Just(".".to_owned()),
        1 => Just("..".to_owned()),
        1 => "[A-Za-z0-9%~?#é]{1,4}",
    ];
    let trailing_slash = prop::bool::weighted(0.1);
    (
        scheme,
        domain,
        prop::collection::vec(segment, 0..5),
        trailing_slash,
    )
        .prop_map(|(scheme, domain, segments, trailing_slash)| {
            let mut s = format!("{scheme}{domain}");
            for segment in segments {
                s.push('/');
                s.push_str(&segment);
            }
            if trailing_slash {
                s.push('/');
            }
            s
        })
}

#[test]
fn the_candidates_are_both_valid_and_invalid() {
    use proptest::strategy::ValueTree as _;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = spiffe_id_candidate();
    let samples = 1000;
    let valid = (0..samples)
        .filter(|_| oracle_accepts(&strategy.new_tree(&mut runner).unwrap().current()))
        .count();
    assert!(
        (samples / 5..=samples * 4 / 5).contains(&valid),
        "{valid} of {samples} candidates are valid"
    );
}

#[test]
fn the_oracle_knows_the_rules() {
    for ok in [
        "spiffe://td",
        "spiffe://a.b-c_d/Path/x.y/-_",
        "spiffe://td/..a",
    ] {
        assert!(oracle_accepts(ok), "{ok}");
    }
    for bad in [
        "spiffe://",
        "spiffe://TD",
        "spiffe://td/",
        "spiffe://td//x",
        "spiffe://td/.",
        "spiffe://td/x/..",
        "spiffe://td/a%20b",
        "spiffe://td:80/x",
        "spiffe://user@td",
        "SPIFFE://td",
        &format!("spiffe://{}", "a".repeat(256)),
        &format!("spiffe://td/{}", "p".repeat(2037)),
    ] {
        assert!(!oracle_accepts(bad), "{bad}");
    }
    assert!(oracle_accepts(&format!("spiffe://td/{}", "p".repeat(2036))));
}
