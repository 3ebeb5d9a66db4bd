//! The datapath keeps enforcing while the agent is down (SIGTERM or
//! SIGKILL) and the restarted agent takes it over from the pins: an
//! established allowed connection loses no message, new allowed
//! connections work, denied ones stay denied, and the restarted agent
//! lists the same endpoints, identities and policies. Policy-directory
//! changes made while the agent is down are picked up when it starts.
//!
//! Needs root; skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use palisade_tests::{PortProto, Topology};

const LONG_PORT: u16 = 7000;

const A_NO_INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-isolated, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
";

/// a may reach b (80/tcp, 80/udp), c may not.
fn assert_enforced(topo: &Topology, when: &str) {
    assert_allowed(topo, "x/a", "x/b", PortProto::tcp(80), when);
    assert_allowed(topo, "x/a", "x/b", PortProto::udp(80), when);
    assert_denied(topo, "x/c", "x/b", PortProto::tcp(80), when);
}

fn restart_keeps_enforcing(hard: bool) {
    let how = if hard { "SIGKILL" } else { "SIGTERM" };
    let topo = abc_builder([
        &[PortProto::tcp(80)],
        &[PortProto::tcp(80), PortProto::udp(80)],
        &[PortProto::tcp(80)],
    ])
    .build()
    .expect("topology");
    let node = topo.node("n1").unwrap();
    let b = topo.pod("x/b").unwrap();
    let _echo = LongEcho::start(b.netns(), LONG_PORT);
    apply(&topo, "b-from-a.yaml", &b_from_a());
    assert_enforced(&topo, "before the restart");

    let before = status(node);
    assert!(
        !before.restored_from_pins,
        "a fresh agent cannot have restored anything: {before:?}"
    );
    let (eps, ids, pols) = (endpoints(node), identities(node), policies(node));
    assert_eq!(eps.len(), 3);
    assert_eq!(pols.len(), 1);

    let a_ns = topo.pod("x/a").unwrap().netns().clone();
    let conn = Conn::open(&a_ns, b.ipv4(), LONG_PORT).expect("a -> b:7000 is allowed");
    let port = conn.local_port;
    let chatter = conn.chatter(Duration::from_millis(50));
    chatter.wait_messages(5);

    let stopped = Instant::now();
    node.stop_agent(hard).expect("stop agent");
    assert!(!node.agent_running());
    eprintln!("{how}: agent stopped in {:?}", stopped.elapsed());

    // Down: the pinned datapath enforces on its own.
    chatter.wait_messages(10);
    assert_enforced(&topo, &format!("agent down after {how}"));
    let mut fresh = Conn::open(&a_ns, b.ipv4(), LONG_PORT)
        .unwrap_or_else(|e| panic!("new allowed connection while down after {how}: {e}"));
    fresh.exchange(Duration::from_secs(1)).unwrap();
    assert!(
        Conn::open(
            &topo.pod("x/c").unwrap().netns().clone(),
            b.ipv4(),
            LONG_PORT
        )
        .is_err(),
        "c -> b:7000 must stay denied while down"
    );

    let started = Instant::now();
    node.start_agent().expect("start agent");
    eprintln!("{how}: agent ready again in {:?}", started.elapsed());
    let after = status(node);
    assert!(
        after.restored_from_pins,
        "after {how} the agent must take over the pinned datapath: {after:?}"
    );
    assert_eq!(after.endpoints, before.endpoints);
    assert_eq!(after.policies, before.policies);
    assert_eq!(after.identities, before.identities);
    assert_eq!(endpoints(node), eps, "endpoints after {how}");
    assert_eq!(identities(node), ids, "identities after {how}");
    assert_eq!(policies(node), pols, "policies after {how}");
    assert!(
        after.policy_dir_error.is_none(),
        "{:?}",
        after.policy_dir_error
    );

    chatter.wait_messages(10);
    assert_enforced(&topo, &format!("agent restarted after {how}"));
    fresh.exchange(Duration::from_secs(1)).unwrap();

    let (conn, stats) = chatter.stop();
    eprintln!("{how}: {stats:?}");
    assert!(stats.sent >= 25, "{stats:?}");
    assert!(
        stats.failures.is_empty() && stats.echoed == stats.sent,
        "the established connection lost messages across {how}: {stats:?}"
    );
    // No segment of it was lost either (a retransmission would show).
    let client = tcp_retransmissions(&a_ns, &format!("sport = :{port}"));
    let server = tcp_retransmissions(b.netns(), &format!("dport = :{port}"));
    assert_eq!(
        (client, server),
        (Some(0), Some(0)),
        "TCP retransmissions (client, server) of the established connection across {how}"
    );
    drop(conn);
}

/// Ingress of x/b from x/a on 80/tcp, 80/udp and 7000/tcp.
fn b_from_a() -> String {
    b_ingress_from("b-from-a", "a", &[(80, "TCP"), (80, "UDP"), (7000, "TCP")])
}

#[test]
fn sigterm_keeps_enforcing_and_restores() {
    if !privileged() {
        return;
    }
    restart_keeps_enforcing(false);
}

#[test]
fn sigkill_keeps_enforcing_and_restores() {
    if !privileged() {
        return;
    }
    restart_keeps_enforcing(true);
}

#[test]
fn policy_dir_changes_while_down_apply_at_start() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("policies");
    let topo = abc_builder([
        &[PortProto::tcp(80)],
        &[PortProto::tcp(80), PortProto::udp(80)],
        &[PortProto::tcp(80)],
    ])
    .agent_setting("policy_dir", dir.path().to_string_lossy().into_owned())
    .agent_setting("policy_dir_poll_ms", 100u64)
    .build()
    .expect("topology");
    let node = topo.node("n1").unwrap();
    let b_file = dir.path().join("b.yaml");
    let a_file = dir.path().join("a.yaml");
    std::fs::write(&b_file, b_from_a()).unwrap();
    std::fs::write(&a_file, A_NO_INGRESS).unwrap();
    let listed = wait_for(Duration::from_secs(2), || {
        let p = policies(node);
        (p.len() == 2).then_some(p)
    })
    .expect("both policy files in force within 2 s");
    let b_src = b_file.display().to_string();
    assert!(
        listed
            .iter()
            .any(|p| p.name == "b-from-a" && p.source == b_src),
        "{listed:?}"
    );
    assert_enforced(&topo, "policy files loaded");
    assert_denied(&topo, "x/c", "x/a", PortProto::tcp(80), "a is isolated");

    node.stop_agent(true).expect("stop agent");
    // While down: b.yaml now admits c instead of a; a.yaml is gone.
    std::fs::write(&b_file, b_ingress_from("b-from-c", "c", &[(80, "TCP")])).unwrap();
    std::fs::remove_file(&a_file).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_enforced(&topo, "changed files while down are not applied");

    node.start_agent().expect("start agent");
    let listed = policies(node);
    assert_eq!(
        listed
            .iter()
            .map(|p| (p.name.as_str(), p.source.as_str()))
            .collect::<Vec<_>>(),
        vec![("b-from-c", b_src.as_str())],
        "on start the agent reads the current files"
    );
    assert!(status(node).restored_from_pins);
    assert_allowed(&topo, "x/c", "x/b", PortProto::tcp(80), "b.yaml changed");
    assert_denied(&topo, "x/a", "x/b", PortProto::tcp(80), "b.yaml changed");
    assert_allowed(&topo, "x/c", "x/a", PortProto::tcp(80), "a.yaml removed");
}
