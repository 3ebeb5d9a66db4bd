//! Performance relations that hold in any build mode: an incremental
//! one-rule change costs a small fraction of the full plan (a ratio, not a
//! wall-clock bound). Absolute figures: `cargo run --release -p
//! palisade-policies --example compile_bench`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/common/workload.rs"]
#[allow(dead_code)]
mod workload;

use std::time::{Duration, Instant};

#[test]
fn one_rule_change_is_a_small_fraction_of_the_full_plan() {
    let (rules, identities) = (2_000, 1_000);
    let t0 = Instant::now();
    let mut e = workload::load(rules, identities);
    let d = e.compute();
    let full = t0.elapsed();
    assert!(!d.upserts.is_empty());
    let mut one = Duration::MAX;
    for v in 1..=5 {
        let t = Instant::now();
        workload::change(&mut e, identities, v);
        let d = e.compute();
        one = one.min(t.elapsed());
        assert!(!d.upserts.is_empty(), "{v}: {d:?}");
    }
    eprintln!("full plan {full:?}, one-rule change {one:?}");
    assert!(
        one * 20 < full,
        "one-rule change {one:?} is not < 1/20 of the full plan {full:?}"
    );
}

/// The target figures (10,000 rules over 5,000 identities: full plan < 1 s,
/// one-rule change < 10 ms). Wall-clock, so release mode only:
/// `cargo test --release -p palisade-policies --test perf -- --ignored`.
#[test]
#[ignore = "wall-clock target; run in release mode with --ignored"]
fn release_targets() {
    let t0 = Instant::now();
    let mut e = workload::load(10_000, 5_000);
    e.compute();
    let full = t0.elapsed();
    let t = Instant::now();
    workload::change(&mut e, 5_000, 1);
    e.compute();
    let one = t.elapsed();
    eprintln!("full plan {full:?}, one-rule change {one:?}");
    assert!(full < Duration::from_secs(1), "{full:?}");
    assert!(one < Duration::from_millis(10), "{one:?}");
}
