//! The offline twin of `palisade scenario run`: every conformance scenario's
//! policies parse, and the compiled entries, looked up the way the datapath
//! does, give every expected verdict.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{connection, load_scenario, scenario_files};
use palisade_policies::parse_documents;

#[test]
fn every_scenario_policy_stream_parses() {
    let files = scenario_files();
    if files.is_empty() {
        eprintln!("SKIPPED: ../../shared/conformance/scenarios not found next to this checkout");
        return;
    }
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let policies = v["policies"].as_str().expect("policies is a string");
        let name = f.file_name().unwrap().to_string_lossy();
        let res = parse_documents(policies, &name);
        assert!(res.is_ok(), "{name}: {}", res.unwrap_err());
        assert!(!res.unwrap().is_empty(), "{name}: no resources");
    }
}

#[test]
fn every_scenario_expectation_holds() {
    let files = scenario_files();
    if files.is_empty() {
        eprintln!("SKIPPED: ../../shared/conformance/scenarios not found next to this checkout");
        return;
    }
    let mut failures = Vec::new();
    let mut probes = 0;
    for f in &files {
        let sc = load_scenario(f);
        let engine = sc.engine();
        for (from, to, port) in sc.probes() {
            probes += 1;
            let want = sc.expected(&from.name, &to.name, port);
            let got = connection(&engine, from, to, port);
            if want != got {
                failures.push(format!(
                    "{}: {} -> {} {}/{}: expected {want}, got {got}",
                    sc.name, from.name, to.name, port.0, port.1
                ));
            }
        }
    }
    assert!(probes > 0);
    assert!(
        failures.is_empty(),
        "{} of {probes} probes differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
