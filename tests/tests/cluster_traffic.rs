//! Traffic between pods on different nodes, through the overlay, under
//! policy: real agents on an underlay bridge with a real etcd. The remote
//! identity a policy sees is the one the sending node put in the VXLAN
//! header; a VXLAN packet from something that is not the node hosting its
//! source address is dropped.
//!
//! Needs root; skipped with a message without etcd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use palisade_api::{FlowKind, Request, Response};
use palisade_tests::{PodSpec, PortProto, Topology, TopologyBuilder};

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

/// Waits until every node knows every pod of `topo`.
fn wait_converged(topo: &Topology) {
    topo.wait_converged(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// [`two_nodes`] with `x/b` admitting `x/a` on `ports` (TCP).
fn b_admits_a(ports: &[u16]) -> Topology {
    let topo = two_nodes().build().unwrap();
    wait_converged(&topo);
    let ports: Vec<(u16, &str)> = ports.iter().map(|p| (*p, "TCP")).collect();
    common::apply(
        &topo,
        "b-from-a",
        &common::b_ingress_from("b-from-a", "a", &ports),
    );
    topo
}

#[test]
fn pods_on_different_nodes_talk_under_policy() {
    if !common::privileged() || !common::etcd_installed() {
        return;
    }
    let topo = two_nodes().build().unwrap();
    wait_converged(&topo);
    let Response::Cluster(status) = common::call(topo.node("n1").unwrap(), &Request::ClusterStatus)
    else {
        panic!("cluster status");
    };
    let overlay = status.overlay.expect("an overlay in a cluster");
    assert_eq!(
        (
            overlay.device.as_str(),
            overlay.port,
            overlay.mtu,
            overlay.routed_nodes
        ),
        ("palisade_vxlan", 8472, 1450, 1),
        "{overlay:?}"
    );

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

    let a_id = common::identity_of(topo.node("n1").unwrap(), "a");
    let c_id = common::identity_of(topo.node("n1").unwrap(), "c");
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

/// Something on the underlay that is not the node hosting `x/a` sends VXLAN
/// packets to n2 claiming to come from `x/a` with `x/a`'s identity: n2
/// drops them (`tunnel_source_spoofed`) although the identity would be
/// allowed, while n1's real packets from `x/a` pass.
#[test]
fn a_tunnel_packet_from_the_wrong_node_is_dropped() {
    if !common::privileged() || !common::etcd_installed() {
        return;
    }
    let mut topo = b_admits_a(&[80]);
    common::assert_allowed(&topo, "x/a", "x/b", http(), "a on its real node");

    let a_ip = topo.pod("x/a").unwrap().ipv4();
    let b_ip = topo.pod("x/b").unwrap().ipv4();
    let a_id = common::identity_of(topo.node("n1").unwrap(), "a");
    let n2 = topo.node("n2").unwrap().underlay_address().unwrap();
    let rogue = topo.add_netns("rogue").unwrap();
    let rogue_ip = topo.attach_underlay(&rogue).unwrap();
    let vni = a_id.to_string();
    let (local, remote) = (rogue_ip.to_string(), n2.to_string());
    let a_host = format!("{a_ip}/32");
    let b_host = format!("{b_ip}/32");
    let b_str = b_ip.to_string();
    for args in [
        vec![
            "link", "add", "vx", "type", "vxlan", "id", &vni, "local", &local, "remote", &remote,
            "dstport", "8472",
        ],
        vec!["addr", "add", &a_host, "dev", "vx"],
        vec!["link", "set", "vx", "up"],
        vec!["route", "add", &b_host, "dev", "vx"],
        vec![
            "neigh",
            "add",
            &b_str,
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            "vx",
            "nud",
            "permanent",
        ],
    ] {
        rogue.ip(&args).unwrap();
    }
    let outcome = palisade_tests::probe::probe(&rogue, b_ip, http(), common::DENY_TIMEOUT).unwrap();
    assert!(
        !outcome.completed,
        "the rogue's connection must not complete: {outcome:?}"
    );
    let dropped = common::wait_for(Duration::from_secs(3), || {
        common::flows(&topo, &[FlowKind::Drop])
            .into_iter()
            .find(|d| d.reason == "tunnel_source_spoofed" && d.src.ip == a_ip && d.dst.ip == b_ip)
    });
    let drop = dropped.expect("n2 reports the spoofed tunnel packet");
    assert_eq!(drop.direction, "ingress");
    common::assert_allowed(&topo, "x/a", "x/b", http(), "a on its real node, still");
    topo.cleanup().unwrap();
}

/// etcd goes away while a cross-node connection is talking: the connection
/// and policy go on with the last known state, a pod added meanwhile on a
/// node whose labels have an identity already gets its address and
/// identity; when etcd returns every node learns it and enforces for it.
#[test]
fn etcd_outage_keeps_enforcing_and_resyncs() {
    if !common::privileged() || !common::etcd_installed() {
        return;
    }
    let mut topo = b_admits_a(&[80, 9080]);
    let b_ip = topo.pod("x/b").unwrap().ipv4();
    let _echo = common::LongEcho::start(topo.pod("x/b").unwrap().netns(), 9080);
    let chat = common::Conn::open(topo.pod("x/a").unwrap().netns(), b_ip, 9080)
        .unwrap()
        .chatter(Duration::from_millis(50));
    chat.wait_messages(5);

    topo.etcd().unwrap().stop().unwrap();
    chat.wait_messages(20);
    common::assert_allowed(&topo, "x/a", "x/b", http(), "etcd down: allowed");
    common::assert_denied(&topo, "x/c", "x/b", http(), "etcd down: denied");
    // A pod with a's labels on n1: its identity is known, so it is created.
    topo.add_pod(
        PodSpec::new("x", "a2")
            .on("n1")
            .label("pod", "a")
            .ports([http()]),
    )
    .unwrap();
    let a2 = topo.pod("x/a2").unwrap().ipv4();
    assert_eq!(
        common::identity_of(topo.node("n1").unwrap(), "a2"),
        common::identity_of(topo.node("n1").unwrap(), "a")
    );
    // The identity travels with the packet: n2 enforces for a2 before it
    // hears of it.
    common::assert_allowed(
        &topo,
        "x/a2",
        "x/b",
        http(),
        "etcd down: new pod, known identity",
    );

    topo.etcd().unwrap().start().unwrap();
    wait_converged(&topo);
    let n2_knows_a2 = common::wait_for(Duration::from_secs(5), || {
        let Response::Nodes { nodes } = common::call(topo.node("n2").unwrap(), &Request::NodeList)
        else {
            return None;
        };
        nodes
            .iter()
            .any(|n| n.name == "n1" && n.endpoints == 3)
            .then_some(())
    });
    assert!(n2_knows_a2.is_some(), "n2 learns {a2} after etcd returns");
    common::assert_allowed(&topo, "x/b", "x/a2", http(), "etcd back: the other way");
    let (_, stats) = chat.stop();
    assert!(
        stats.failures.is_empty() && stats.echoed == stats.sent,
        "the cross-node connection lost nothing during the outage: {stats:?}"
    );
    topo.cleanup().unwrap();
}

/// n1's agent is killed with -9 while a connection from n1 to n2 talks: the
/// connection goes on, denied stays denied; the restarted agent reconciles
/// and traffic still flows.
#[test]
fn agent_killed_during_cross_node_traffic() {
    if !common::privileged() || !common::etcd_installed() {
        return;
    }
    let topo = b_admits_a(&[80, 9080]);
    let b_ip = topo.pod("x/b").unwrap().ipv4();
    let _echo = common::LongEcho::start(topo.pod("x/b").unwrap().netns(), 9080);
    let chat = common::Conn::open(topo.pod("x/a").unwrap().netns(), b_ip, 9080)
        .unwrap()
        .chatter(Duration::from_millis(50));
    chat.wait_messages(5);
    for node in ["n1", "n2"] {
        let node = topo.node(node).unwrap();
        node.stop_agent(true).unwrap();
        chat.wait_messages(10);
        common::assert_allowed(&topo, "x/a", "x/b", http(), "agent down: allowed");
        common::assert_denied(&topo, "x/c", "x/b", http(), "agent down: denied");
        node.start_agent().unwrap();
        wait_converged(&topo);
        chat.wait_messages(10);
    }
    common::assert_allowed(&topo, "x/a", "x/b", http(), "agents back: allowed");
    common::assert_denied(&topo, "x/c", "x/b", http(), "agents back: denied");
    let (_, stats) = chat.stop();
    assert!(
        stats.failures.is_empty() && stats.echoed == stats.sent,
        "the connection lost nothing while the agents were down: {stats:?}"
    );
    topo.cleanup().unwrap();
}
