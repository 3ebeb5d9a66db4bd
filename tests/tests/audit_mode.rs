//! Policy audit mode: would-be drops pass and are reported as audit events
//! (reason `policy_denied`), per endpoint through the API and for every
//! endpoint through `policy_audit_mode: true`.
//!
//! Needs root; skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use palisade_api::{FlowKind, FlowRecord, Request, Response};
use palisade_tests::{PortProto, Topology};

fn set_audit(topo: &Topology, pod: &str, audit: bool) {
    let ep = endpoint_of(topo, pod);
    let node = topo.node("n1").unwrap();
    match call(
        node,
        &Request::EndpointSetAudit {
            ep_id: ep.ep_id,
            audit,
        },
    ) {
        Response::Done | Response::Endpoint(_) => {}
        other => panic!("set audit: unexpected answer {other:?}"),
    }
    assert_eq!(endpoint_of(topo, pod).audit, audit);
}

/// Events of `kind` from c's address to b's port 80.
fn c_to_b(topo: &Topology, kind: FlowKind) -> Vec<FlowRecord> {
    let c = topo.pod("x/c").unwrap().ipv4();
    let b = topo.pod("x/b").unwrap().ipv4();
    flows(topo, &[kind])
        .into_iter()
        .filter(|f| f.src.ip == c && f.dst.ip == b && f.dst.port == 80 && f.protocol == "tcp")
        .collect()
}

/// Waits (≤ 1 s) for more than `seen` events of `kind` c -> b:80; returns
/// the newest.
fn next_event(topo: &Topology, kind: FlowKind, seen: usize) -> FlowRecord {
    wait_for(Duration::from_secs(1), || {
        let events = c_to_b(topo, kind);
        (events.len() > seen)
            .then(|| events.last().cloned())
            .flatten()
    })
    .unwrap_or_else(|| panic!("no new {kind:?} event c -> b:80 within 1 s"))
}

#[test]
fn endpoint_audit_switch() {
    if !privileged() {
        return;
    }
    let topo = abc_builder([&[], &[PortProto::tcp(80)], &[]])
        .build()
        .expect("topology");
    apply(
        &topo,
        "b-from-a.yaml",
        &b_ingress_from("b-from-a", "a", &[(80, "TCP")]),
    );
    assert_denied(&topo, "x/c", "x/b", PortProto::tcp(80), "enforcing");
    let drop = next_event(&topo, FlowKind::Drop, 0);
    assert_eq!(drop.reason, "policy_denied", "{drop:?}");

    set_audit(&topo, "x/b", true);
    let audits = c_to_b(&topo, FlowKind::Audit).len();
    let drops = c_to_b(&topo, FlowKind::Drop).len();
    assert_allowed(&topo, "x/c", "x/b", PortProto::tcp(80), "audit on");
    let audit = next_event(&topo, FlowKind::Audit, audits);
    assert_eq!(audit.reason, "policy_denied", "{audit:?}");
    assert_eq!(audit.ep_id, endpoint_of(&topo, "x/b").ep_id, "{audit:?}");
    assert_allowed(&topo, "x/a", "x/b", PortProto::tcp(80), "audit on");
    assert_eq!(
        c_to_b(&topo, FlowKind::Drop).len(),
        drops,
        "audited traffic must not be dropped"
    );

    set_audit(&topo, "x/b", false);
    assert_denied(&topo, "x/c", "x/b", PortProto::tcp(80), "audit off again");
    let drop = next_event(&topo, FlowKind::Drop, drops);
    assert_eq!(drop.reason, "policy_denied", "{drop:?}");
    assert_allowed(&topo, "x/a", "x/b", PortProto::tcp(80), "audit off again");
}

#[test]
fn config_audit_mode_applies_to_new_endpoints() {
    if !privileged() {
        return;
    }
    let topo = abc_builder([&[], &[PortProto::tcp(80)], &[]])
        .agent_setting("policy_audit_mode", true)
        .build()
        .expect("topology");
    for pod in ["x/a", "x/b", "x/c"] {
        assert!(
            endpoint_of(&topo, pod).audit,
            "{pod} must start in audit mode"
        );
    }
    apply(
        &topo,
        "b-from-a.yaml",
        &b_ingress_from("b-from-a", "a", &[(80, "TCP")]),
    );
    assert!(endpoint_of(&topo, "x/b").ingress_enforced);
    assert_allowed(&topo, "x/c", "x/b", PortProto::tcp(80), "audit mode");
    let audit = next_event(&topo, FlowKind::Audit, 0);
    assert_eq!(audit.reason, "policy_denied", "{audit:?}");
    assert!(c_to_b(&topo, FlowKind::Drop).is_empty());

    // The policy is really there: switching b's audit off enforces it.
    set_audit(&topo, "x/b", false);
    assert_denied(&topo, "x/c", "x/b", PortProto::tcp(80), "audit off");
}
