//! Traffic between pods on different nodes, through the overlay, under
//! policy: real agents on an underlay bridge with a real etcd. The remote
//! identity a policy sees is the one the sending node put in the VXLAN
//! header; a VXLAN packet from something that is not the node hosting its
//! source address is dropped.
//!
//! Needs root; skipped with a message without etcd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use palisade_api::{FlowKind, NodeInfo, Request, Response};
use palisade_tests::{Node, PodSpec, PortProto, Topology, TopologyBuilder};

mod common;

fn http() -> PortProto {
    PortProto::tcp(80)
}
fn alt() -> PortProto {
    PortProto::tcp(8080)
}

/// `x/a` and `x/c` on n1, `x/b` on n2; every pod listens on 80 and 8080.
fn two_nodes() -> TopologyBuilder {
    let mut b = Topology::builder()
        .node("n1")
        .node("n2")
        .namespace("x", common::ns_labels("x"));
    for (name, node) in [("a", "n1"), ("b", "n2"), ("c", "n1")] {
        b = b.pod(
            PodSpec::new("x", name)
                .on(node)
                .label("pod", name)
                .ports([http(), alt()]),
        );
    }
    b
}

/// Waits until every node knows every other node's pods.
fn wait_converged(topo: &Topology, pods: usize) {
    for node in topo.nodes() {
        let ok = common::wait_for(Duration::from_secs(5), || {
            let Response::Nodes { nodes } = common::call(node, &Request::NodeList) else {
                return None;
            };
            (nodes.iter().map(|n: &NodeInfo| n.endpoints).sum::<usize>() == pods).then_some(())
        });
        assert!(
            ok.is_some(),
            "node {} did not learn all {pods} pods; its log ends:\n{}",
            node.name(),
            node.log_tail(30)
        );
    }
}

fn identity_of(node: &Node, pod: &str) -> u32 {
    common::endpoints(node)
        .iter()
        .find(|e| e.spec.pod_name == pod)
        .map(|e| e.identity)
        .unwrap()
}

#[test]
fn pods_on_different_nodes_talk_under_policy() {
    if !common::privileged() || !common::etcd_installed() {
        return;
    }
    let topo = two_nodes().build().unwrap();
    wait_converged(&topo, 3);

    // No policy: everything passes, both ways, through the overlay.
    common::assert_allowed(&topo, "x/a", "x/b", http(), "no policy");
    common::assert_allowed(&topo, "x/b", "x/a", http(), "no policy, the other way");
    common::assert_allowed(&topo, "x/c", "x/b", alt(), "no policy");

    // b (on n2) admits a (on n1) on port 80 only: n2 must know a's identity.
    common::apply(
        &topo,
        "b-from-a",
        &common::b_ingress_from("b-from-a", "a", &[(80, "TCP")]),
    );
    common::assert_allowed(&topo, "x/a", "x/b", http(), "allowed from a remote pod");
    common::assert_denied(&topo, "x/a", "x/b", alt(), "another port");
    common::assert_denied(&topo, "x/c", "x/b", http(), "another remote pod");
    // Replies of b's own connections to n1's pods still pass.
    common::assert_allowed(&topo, "x/b", "x/c", http(), "b's egress is not enforced");

    let a_id = identity_of(topo.node("n1").unwrap(), "a");
    let c_id = identity_of(topo.node("n1").unwrap(), "c");
    let b_ip = topo.pod("x/b").unwrap().ipv4();
    let drops = common::flows(&topo, &[FlowKind::Drop]);
    assert!(
        drops
            .iter()
            .any(|d| d.dst.ip == b_ip && d.src.identity == c_id && d.reason == "policy_denied"),
        "n2 drops c's connection as c's identity {c_id}: {drops:#?}"
    );
    assert!(
        drops
            .iter()
            .any(|d| d.dst.ip == b_ip && d.src.identity == a_id && d.dst.port == 8080),
        "n2 drops a's connection to 8080 as a's identity {a_id}: {drops:#?}"
    );
    topo.cleanup().unwrap();
}
