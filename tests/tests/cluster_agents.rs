//! Real agents in a cluster over a real etcd: every node registers with a
//! pod CIDR of its own, learns the others (`palisade node list`), the same
//! label set gets the same identity on every node, an agent killed with -9
//! comes back into the same place, and a removed node leaves every other
//! node's view while a new node joins with a CIDR of its own.
//!
//! Needs root; skipped with a message without etcd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use palisade_api::{ClusterStatus, NodeInfo, Request, Response};
use palisade_cluster::PodCidr;
use palisade_tests::{Node, PodSpec, PortProto, Topology};

mod common;

fn nodes(node: &Node) -> Vec<NodeInfo> {
    match common::call(node, &Request::NodeList) {
        Response::Nodes { nodes } => nodes,
        other => panic!("unexpected {other:?}"),
    }
}

fn status(node: &Node) -> ClusterStatus {
    match common::call(node, &Request::ClusterStatus) {
        Response::Cluster(s) => *s,
        other => panic!("unexpected {other:?}"),
    }
}

/// Waits until `pred` holds for the node list of `node` (at most `limit`).
fn wait_nodes(node: &Node, limit: Duration, what: &str, pred: impl Fn(&[NodeInfo]) -> bool) {
    if common::wait_for(limit, || pred(&nodes(node)).then_some(())).is_none() {
        panic!(
            "node {}: {what} not seen within {limit:?}: {:?}; its log ends:\n{}",
            node.name(),
            nodes(node),
            node.log_tail(30)
        );
    }
}

/// The pod CIDRs node `node` routes into the overlay device.
fn overlay_routes(node: &Node) -> Vec<String> {
    node.netns()
        .ip(&["-4", "route", "show", "dev", "palisade_vxlan"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn names(list: &[NodeInfo]) -> Vec<&str> {
    list.iter().map(|n| n.name.as_str()).collect()
}

#[test]
fn nodes_register_share_identities_survive_kill_and_leave() {
    if !common::privileged() || !common::etcd_installed() {
        return;
    }
    let mut topo = Topology::builder()
        .node("n1")
        .node("n2")
        .node("n3")
        .pod(
            PodSpec::new("x", "a")
                .on("n1")
                .label("app", "web")
                .ports([PortProto::tcp(80)]),
        )
        .pod(
            PodSpec::new("x", "b")
                .on("n2")
                .label("app", "web")
                .ports([PortProto::tcp(80)]),
        )
        .pod(
            PodSpec::new("x", "c")
                .on("n3")
                .label("app", "db")
                .ports([PortProto::tcp(80)]),
        )
        .build()
        .unwrap();

    // Every node knows all three, each with its own CIDR.
    for node in topo.nodes() {
        wait_nodes(node, Duration::from_secs(5), "three nodes", |l| {
            names(l) == ["n1", "n2", "n3"] && l.iter().all(|n| n.endpoints == 1)
        });
    }
    let cidrs: Vec<PodCidr> = nodes(topo.node("n1").unwrap())
        .iter()
        .map(|n| n.pod_cidr.parse().unwrap())
        .collect();
    for (i, a) in cidrs.iter().enumerate() {
        for b in &cidrs[i + 1..] {
            assert!(!a.overlaps(b), "{a} and {b}");
        }
    }
    for pod in topo.pods() {
        let cidr = &cidrs[["n1", "n2", "n3"]
            .iter()
            .position(|n| *n == pod.spec().node)
            .unwrap()];
        assert!(
            cidr.contains(pod.ipv4()),
            "{} not in {cidr}",
            pod.full_name()
        );
    }
    // One label set, one identity, whichever node allocated it.
    let (a, b, c) = (
        common::identity_of(topo.node("n1").unwrap(), "a"),
        common::identity_of(topo.node("n2").unwrap(), "b"),
        common::identity_of(topo.node("n3").unwrap(), "c"),
    );
    assert_eq!(a, b, "x/a and x/b have the same labels");
    assert_ne!(a, c);
    let s = status(topo.node("n1").unwrap());
    assert_eq!(s.store, "etcd");
    assert!(s.connected, "{s:?}");
    assert_eq!((s.nodes, s.endpoints), (3, 3), "{s:?}");

    // kill -9 and restart: same CIDR, same identity, still registered.
    let n2 = topo.node("n2").unwrap();
    n2.restart_agent(true).unwrap();
    assert_eq!(common::identity_of(n2, "b"), b);
    wait_nodes(
        n2,
        Duration::from_secs(5),
        "the cluster after a restart",
        |l| names(l) == ["n1", "n2", "n3"],
    );
    assert_eq!(
        nodes(n2).iter().find(|n| n.local).unwrap().pod_cidr,
        cidrs[1].to_string()
    );

    // Every node routes the others' CIDRs into the overlay.
    let n3_cidr = cidrs[2].to_string();
    assert!(
        overlay_routes(topo.node("n1").unwrap()).contains(&n3_cidr),
        "n1 routes n3's {n3_cidr} into the overlay"
    );
    common::assert_allowed(&topo, "x/a", "x/c", PortProto::tcp(80), "n1 to n3");

    // n3 goes away: the others drop it once its lease (5 s) expires, with
    // its route.
    topo.remove_node("n3").unwrap();
    for name in ["n1", "n2"] {
        wait_nodes(
            topo.node(name).unwrap(),
            Duration::from_secs(15),
            "n3 gone",
            |l| names(l) == ["n1", "n2"],
        );
        let routes = overlay_routes(topo.node(name).unwrap());
        assert!(
            !routes.contains(&n3_cidr)
                && routes.contains(&cidrs[usize::from(name == "n1")].to_string()),
            "{name} routes what is left: {routes:?}"
        );
    }
    // A new node gets a CIDR that overlaps none, n3's included (it stays
    // claimed for n3's return).
    topo.add_node("n4").unwrap();
    let n4 = topo.node("n4").unwrap();
    wait_nodes(n4, Duration::from_secs(5), "n1, n2 and itself", |l| {
        names(l) == ["n1", "n2", "n4"]
    });
    let own: PodCidr = nodes(n4)
        .iter()
        .find(|n| n.local)
        .unwrap()
        .pod_cidr
        .parse()
        .unwrap();
    assert!(
        cidrs.iter().all(|c| !c.overlaps(&own)),
        "{own} overlaps {cidrs:?}"
    );
    // ... and its pods are reachable from the others.
    topo.add_pod(
        PodSpec::new("x", "d")
            .on("n4")
            .label("app", "web")
            .ports([PortProto::tcp(80)]),
    )
    .unwrap();
    topo.wait_converged(Duration::from_secs(5)).unwrap();
    common::assert_allowed(&topo, "x/a", "x/d", PortProto::tcp(80), "n1 to the new n4");
    topo.cleanup().unwrap();
}
