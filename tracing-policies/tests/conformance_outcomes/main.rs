//! The outcome of every file of the shared Tetragon corpus on each kernel
//! palisade is tested on: it loads (and with which mechanism per hook),
//! loads only in monitoring fallback, or is rejected with an error naming
//! the YAML path and the unsupported field or missing kernel feature.
//!
//! The expectations are `outcomes.txt`; README.md lists them by outcome
//! (`readme.rs`), and this test keeps the two in step. The kernels are
//! deterministic hosts built from data captured on them (`kernels.rs`).
//! `PALISADE_BLESS=1` rewrites `outcomes.txt` (keeping each expectation
//! that still holds) and the README list.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod kernels;
mod outcomes;
mod readme;

use std::path::PathBuf;

use kernels::{data_dir, KERNELS};
use outcomes::{header, outcome, parse_expected, render_expected, Expected};

const BLESS: &str =
    "PALISADE_BLESS=1 cargo test -p palisade-tracing-policies --test conformance_outcomes";

fn bless() -> bool {
    std::env::var_os("PALISADE_BLESS").is_some_and(|v| v == "1")
}

fn readme_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

/// Compares (or with `PALISADE_BLESS=1` rewrites) `outcomes.txt` with what
/// the corpus gives; the differences.
fn check_outcomes(files: &[(String, String)]) -> Vec<String> {
    let path = data_dir().join("outcomes.txt");
    let text = std::fs::read_to_string(&path).expect("outcomes.txt");
    let expected = parse_expected(&text).unwrap_or_else(|e| panic!("{e}"));
    let mut actual = Expected::new();
    for (name, text) in files {
        for k in &KERNELS {
            actual.insert((name.clone(), k.name.to_owned()), outcome(name, text, k));
        }
    }
    if bless() {
        let new: Expected = actual
            .iter()
            .map(|(key, got)| {
                let kept = expected.get(key).filter(|e| got.satisfies(e));
                (
                    key.clone(),
                    kept.cloned().unwrap_or_else(|| got.shortened()),
                )
            })
            .collect();
        std::fs::write(&path, render_expected(&header(&text), &new)).expect("write outcomes.txt");
        return Vec::new();
    }
    let mut diffs = Vec::new();
    for (file, kernel) in expected.keys() {
        if !actual.contains_key(&(file.clone(), kernel.clone())) {
            diffs.push(format!("{file}: in outcomes.txt, not in the corpus"));
        }
    }
    for ((file, kernel), got) in &actual {
        if let outcomes::Outcome::Rejected(e) | outcomes::Outcome::Monitor(_, e) = got {
            assert!(
                e.starts_with("spec"),
                "{file} on {kernel}: the error does not name a YAML path: {e}"
            );
        }
        match expected.get(&(file.clone(), kernel.clone())) {
            None => diffs.push(format!(
                "{file} on {kernel}: not in outcomes.txt; got {got}"
            )),
            Some(e) if !got.satisfies(e) => diffs.push(format!(
                "{file} on {kernel}:\n    expected {e}\n    got      {got}"
            )),
            Some(_) => {}
        }
    }
    diffs
}

/// Compares (or with `PALISADE_BLESS=1` rewrites) README.md's list with
/// `outcomes.txt`; the difference.
fn check_readme() -> Option<String> {
    let text = std::fs::read_to_string(data_dir().join("outcomes.txt")).expect("outcomes.txt");
    let expected = parse_expected(&text).unwrap_or_else(|e| panic!("{e}"));
    let path = readme_path();
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let (before, current, after) = readme::split(&readme).unwrap_or_else(|e| panic!("{e}"));
    let list = readme::render(&expected);
    if bless() {
        std::fs::write(&path, format!("{before}{list}{after}")).expect("write README.md");
        return None;
    }
    (current != list).then(|| {
        let only = |a: &str, b: &str, sign: char| -> Vec<String> {
            a.lines()
                .filter(|l| !b.lines().any(|x| x == *l))
                .map(|l| format!("{sign} {l}"))
                .collect()
        };
        let mut diff = only(current, &list, '-');
        diff.extend(only(&list, current, '+'));
        format!(
            "README.md's list of conformance outcomes is not the one outcomes.txt gives (- README.md, + outcomes.txt):\n{}",
            diff.join("\n")
        )
    })
}

#[test]
fn every_corpus_file_has_its_outcome_on_every_kernel_and_the_readme_lists_them() {
    let mut problems = Vec::new();
    // The corpus first: blessing rewrites outcomes.txt, then the README.
    if let Some(files) = common::corpus(
        "the outcomes of the corpus (README.md is still checked against outcomes.txt)",
    ) {
        assert_eq!(files.len(), common::CORPUS_FILES, "files in the corpus");
        let diffs = check_outcomes(&files);
        if !diffs.is_empty() {
            problems.push(format!(
                "{} outcomes differ from outcomes.txt:\n  {}",
                diffs.len(),
                diffs.join("\n  ")
            ));
        }
    }
    problems.extend(check_readme());
    assert!(
        problems.is_empty(),
        "{}\n\nIf the change is right, regenerate outcomes.txt and README.md with\n  {BLESS}\nand review the diff.",
        problems.join("\n\n")
    );
}
