//! The shared Tetragon corpus (`shared/conformance/tracingpolicy`, checked
//! out next to this repository, or `$PALISADE_CONFORMANCE_DIR/tracingpolicy`:
//! the variable names the conformance root, as for the SPIFFE corpus).
//!
//! A checkout without it cannot run the corpus tests: they return early,
//! and say so on the terminal even when cargo captures test output (as
//! `scripts/test` does for the missing network-policy scenarios).
#![allow(dead_code, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;

/// How many files the corpus has.
pub const CORPUS_FILES: usize = 70;

/// Where the corpus is.
pub fn corpus_dir() -> PathBuf {
    let root = match std::env::var_os("PALISADE_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance"),
    };
    root.join("tracingpolicy")
}

/// Every `*.yaml` file of the corpus as (file name, text), sorted by name;
/// `None` (after telling the terminal that `test` is skipped) when this
/// checkout has no corpus.
pub fn corpus(test: &str) -> Option<Vec<(String, String)>> {
    let dir = corpus_dir();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        skipped(
            test,
            &format!(
                "the conformance corpus {} is not there (check out `shared` next to this repository or set PALISADE_CONFORMANCE_DIR)",
                dir.display()
            ),
        );
        return None;
    };
    let mut files: Vec<(String, String)> = rd
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).expect("read");
            (name, text)
        })
        .collect();
    files.sort();
    Some(files)
}

/// Says on the terminal (not in captured output) that `test` checked
/// nothing, and why.
pub fn skipped(test: &str, why: &str) {
    // Not `eprintln!`: cargo test captures that and shows it only when the
    // test fails.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}
