//! Policy changes against live traffic: an established connection whose
//! allowance is removed is cut at its next packet (drop reason
//! `policy_revoked`) while an unrelated allowed connection goes on; a new
//! policy applies to new connections as soon as the apply returns; and
//! allowing again works.
//!
//! Needs root; skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use palisade_api::{FlowKind, Request};
use palisade_tests::PortProto;

#[test]
fn revoked_connection_is_cut_and_unrelated_one_continues() {
    if !privileged() {
        return;
    }
    let t0 = Instant::now();
    let topo = abc_builder([&[], &[PortProto::tcp(80)], &[]])
        .build()
        .expect("topology");
    eprintln!("topology built in {:?}", t0.elapsed());
    let b = topo.pod("x/b").unwrap();
    let _echo7000 = LongEcho::start(b.netns(), 7000);
    let _echo7001 = LongEcho::start(b.netns(), 7001);
    apply(
        &topo,
        "b-from-a.yaml",
        &b_ingress_from("b-from-a", "a", &[(7000, "TCP"), (7001, "TCP")]),
    );

    let a_ns = topo.pod("x/a").unwrap().netns().clone();
    let b_ip = b.ipv4();
    let mut revoked = Conn::open(&a_ns, b_ip, 7000).expect("a -> b:7000 is allowed");
    let mut kept = Conn::open(&a_ns, b_ip, 7001).expect("a -> b:7001 is allowed");
    for _ in 0..3 {
        revoked.exchange(Duration::from_secs(1)).unwrap();
        kept.exchange(Duration::from_secs(1)).unwrap();
    }

    // Revoke 7000 only.
    let applied = Instant::now();
    apply(
        &topo,
        "b-from-a.yaml",
        &b_ingress_from("b-from-a", "a", &[(7001, "TCP")]),
    );
    // The next message must get no echo, not even after retransmissions
    // (judged at the end, so that everything else is checked too).
    let cut = revoked.exchange(Duration::from_secs(1));
    for _ in 0..3 {
        kept.exchange(Duration::from_secs(1))
            .expect("a -> b:7001 is still allowed and must go on");
    }
    let of_revoked = |f: &palisade_api::FlowRecord| {
        f.protocol == "tcp"
            && ((f.dst.port == 7000 && f.src.port == revoked.local_port)
                || (f.src.port == 7000 && f.dst.port == revoked.local_port))
    };
    let drop = wait_for(Duration::from_secs(1), || {
        flows(&topo, &[FlowKind::Drop]).into_iter().find(of_revoked)
    })
    .expect("a drop event of the revoked connection within 1 s");
    assert_eq!(drop.reason, "policy_revoked", "{drop:?}");
    eprintln!(
        "revoked connection reported {:?} after the apply: {drop:?}",
        applied.elapsed()
    );
    // No drop of the unrelated connection.
    let unrelated: Vec<_> = flows(&topo, &[FlowKind::Drop])
        .into_iter()
        .filter(|f| f.src.port == kept.local_port || f.dst.port == kept.local_port)
        .collect();
    assert!(unrelated.is_empty(), "{unrelated:?}");

    // New connections to 7000 are denied now, to 7001 allowed.
    assert_denied(&topo, "x/a", "x/b", PortProto::tcp(7000), "after revoking");
    assert_allowed(&topo, "x/a", "x/b", PortProto::tcp(7001), "after revoking");

    // Allowed again: new connections to 7000 work, the kept one goes on.
    apply(
        &topo,
        "b-from-a.yaml",
        &b_ingress_from("b-from-a", "a", &[(7000, "TCP"), (7001, "TCP")]),
    );
    let mut again = Conn::open(&a_ns, b_ip, 7000).expect("a -> b:7000 allowed again");
    again.exchange(Duration::from_secs(1)).unwrap();
    kept.exchange(Duration::from_secs(1)).unwrap();

    // What became of the revoked connection after its first drop.
    let after_drop: Vec<_> = flows(&topo, &[])
        .into_iter()
        .filter(|f| f.seq > drop.seq && of_revoked(f))
        .collect();
    let retrans = tcp_retransmissions(&a_ns, &format!("sport = :{}", revoked.local_port));
    assert!(
        cut.is_err(),
        "the revoked connection a -> b:7000 was not cut: the first message after the apply \
         got its echo ({cut:?}; client retransmissions: {retrans:?}); its events after the \
         policy_revoked drop: {after_drop:#?}"
    );
}

#[test]
fn new_policy_applies_to_new_connections_at_once() {
    if !privileged() {
        return;
    }
    let topo = abc_builder([&[], &[PortProto::tcp(80)], &[]])
        .build()
        .expect("topology");
    let node = topo.node("n1").unwrap();
    apply(
        &topo,
        "b-from-a.yaml",
        &b_ingress_from("b-from-a", "a", &[(80, "TCP")]),
    );
    assert_allowed(&topo, "x/a", "x/b", PortProto::tcp(80), "a is allowed");
    assert_denied(&topo, "x/c", "x/b", PortProto::tcp(80), "c is not");

    // Allow c: the probe right after the apply completes.
    apply(
        &topo,
        "b-from-c.yaml",
        &b_ingress_from("b-from-c", "c", &[(80, "TCP")]),
    );
    assert_allowed(
        &topo,
        "x/c",
        "x/b",
        PortProto::tcp(80),
        "right after allowing c",
    );

    // Delete that policy: the probe right after is denied.
    call(
        node,
        &Request::PolicyDelete {
            kind: "CiliumNetworkPolicy".into(),
            namespace: Some("x".into()),
            name: "b-from-c".into(),
        },
    );
    assert_denied(
        &topo,
        "x/c",
        "x/b",
        PortProto::tcp(80),
        "right after deleting",
    );
    assert_allowed(&topo, "x/a", "x/b", PortProto::tcp(80), "a unaffected");

    // And allowing c again works.
    apply(
        &topo,
        "b-from-c.yaml",
        &b_ingress_from("b-from-c", "c", &[(80, "TCP")]),
    );
    assert_allowed(&topo, "x/c", "x/b", PortProto::tcp(80), "allowed again");

    // Removing b's last policy lifts default deny for b altogether.
    call(
        node,
        &Request::PolicyDelete {
            kind: "CiliumNetworkPolicy".into(),
            namespace: Some("x".into()),
            name: "b-from-c".into(),
        },
    );
    call(
        node,
        &Request::PolicyDelete {
            kind: "CiliumNetworkPolicy".into(),
            namespace: Some("x".into()),
            name: "b-from-a".into(),
        },
    );
    assert!(policies(node).is_empty(), "{:?}", policies(node));
    assert_allowed(&topo, "x/c", "x/b", PortProto::tcp(80), "no policy left");
}
