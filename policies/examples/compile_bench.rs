//! Compile-time benchmark: `cargo run --release -p palisade-policies --example compile_bench [RULES IDENTITIES]`
//! (default 10000 rules over 5000 identities, 100 endpoints). Prints the
//! full-plan time, the one-rule-change time and their ratio.

#[path = "common/workload.rs"]
mod workload;

use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rules = args.first().copied().unwrap_or(10_000);
    let identities = args.get(1).copied().unwrap_or(5_000);

    let t0 = Instant::now();
    let mut e = workload::load(rules, identities);
    let loaded = t0.elapsed();
    let diff = e.compute();
    let full = t0.elapsed();
    let entries = diff.upserts.len();

    let mut one = std::time::Duration::MAX;
    for v in 1..=5 {
        let t = Instant::now();
        workload::change(&mut e, identities, v);
        let d = e.compute();
        one = one.min(t.elapsed());
        assert!(!d.is_empty());
    }
    let t = Instant::now();
    e.upsert_identity(
        palisade_identity::NumericIdentity(256 + identities as u32),
        workload::identity_labels(3, identities / 5),
    );
    e.compute();
    let ident = t.elapsed();

    println!(
        "rules={rules} identities={identities} endpoints={} entries={entries}",
        workload::ENDPOINTS
    );
    println!(
        "load (policies, identities, endpoints): {:>9.1} ms",
        loaded.as_secs_f64() * 1e3
    );
    println!(
        "full plan (load + compute):            {:>9.1} ms",
        full.as_secs_f64() * 1e3
    );
    println!(
        "one-rule change + compute (best of 5):  {:>9.3} ms",
        one.as_secs_f64() * 1e3
    );
    println!(
        "new identity + compute:                 {:>9.3} ms",
        ident.as_secs_f64() * 1e3
    );
    println!(
        "ratio full / one-rule:                  {:>9.0}",
        full.as_secs_f64() / one.as_secs_f64()
    );
}
