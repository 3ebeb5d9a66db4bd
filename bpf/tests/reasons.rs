//! The generated `Reason` enum agrees with include/abi/reasons.def.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::BTreeSet;

use palisade_bpf::abi::{Reason, REASON_MAX};

const DEF: &str = include_str!("../include/abi/reasons.def");

/// (NAME, code, text) of every REASON line, parsed independently of build.rs.
fn def_lines() -> Vec<(String, i32, String)> {
    DEF.lines()
        .filter_map(|l| l.trim().strip_prefix("REASON("))
        .map(|l| {
            let l = l.strip_suffix(')').expect("closing paren");
            let (name, rest) = l.split_once(',').expect("name");
            let (code, text) = rest.split_once(',').expect("code");
            (
                name.trim().to_owned(),
                code.trim().parse().expect("integer code"),
                text.trim().trim_matches('"').to_owned(),
            )
        })
        .collect()
}

#[test]
fn reason_enum_matches_def() {
    let def = def_lines();
    assert!(def.len() >= 11, "reasons.def lost lines");
    assert_eq!(Reason::ALL.len(), def.len());
    for ((name, code, text), r) in def.iter().zip(Reason::ALL) {
        assert_eq!(r.code(), *code, "{name}");
        assert_eq!(r.as_str(), name.to_ascii_lowercase());
        assert_eq!(r.description(), text);
        assert_eq!(Reason::from_code(*code), Some(*r));
    }
    assert_eq!(Reason::PolicyDenied.as_str(), "policy_denied");
    assert_eq!(Reason::from_code(1), None);
    assert_eq!(Reason::from_code(i32::MIN), None);
}

#[test]
fn reason_codes_are_unique_and_never_positive() {
    let codes: BTreeSet<i32> = Reason::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), Reason::ALL.len(), "duplicate code");
    let names: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), Reason::ALL.len(), "duplicate name");
    for r in Reason::ALL {
        if *r == Reason::Forwarded {
            assert_eq!(r.code(), 0);
        } else {
            assert!(r.code() < 0, "{r:?} must be negative");
        }
        // The metrics array is indexed by -code * 2 + observation.
        assert!(
            ((-r.code()) as u32) < REASON_MAX,
            "{r:?} beyond PAL_REASON_MAX"
        );
    }
}
