//! Mutual authentication enforced in the datapath, end to end on one node:
//! real agents, real pods, real handshakes between the agent and itself.
//!
//! - Under `authentication.mode: required` a connection passes once the
//!   pair is authenticated (ahead of time: the first connection does not
//!   stall) and its flow event says so; `palisade auth list` shows both
//!   sides' entries. Under `test-always-fail` it is dropped with reason
//!   `auth_required` and the listing says why; in audit mode it passes with
//!   an audit event of that reason. Rules without authentication behave as
//!   before.
//! - An established authenticated connection is not interrupted by an
//!   agent restart (the entries are restored from the pinned map) nor by
//!   an SVID rotation (the pair is re-authenticated, new SVIDs).
//!
//! Needs root; skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use palisade_api::{AuthRecord, AuthReport, FlowKind, FlowRecord, Request, Response};
use palisade_tests::{Node, PortProto, Topology};

/// b listens here for long-lived connections.
const LONG_PORT: u16 = 7000;

/// b's ingress: from a on 80 and 7000 with authentication required, from
/// c on 80 in test-always-fail mode, from a on 81 without authentication.
const POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-auth, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: b}}
  ingress:
    - fromEndpoints: [{matchLabels: {pod: a}}]
      toPorts: [{ports: [{port: \"80\", protocol: TCP}, {port: \"7000\", protocol: TCP}]}]
      authentication: {mode: required}
    - fromEndpoints: [{matchLabels: {pod: c}}]
      toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]
      authentication: {mode: test-always-fail}
    - fromEndpoints: [{matchLabels: {pod: a}}]
      toPorts: [{ports: [{port: \"81\", protocol: TCP}]}]
";

fn auth_report(node: &Node) -> AuthReport {
    match call(node, &Request::AuthList) {
        Response::Auth(r) => *r,
        other => panic!("auth list: unexpected answer {other:?}"),
    }
}

/// The pair (local, remote) on this node, as the listing shows it.
fn pair(report: &AuthReport, local: u32, remote: u32, auth_type: &str) -> Option<AuthRecord> {
    report
        .pairs
        .iter()
        .find(|p| {
            p.local_identity == local && p.remote_identity == remote && p.auth_type == auth_type
        })
        .cloned()
}

/// Waits (≤ 10 s) until the pair is authenticated on `node`.
fn wait_authenticated(node: &Node, local: u32, remote: u32) -> AuthRecord {
    wait_for(Duration::from_secs(10), || {
        pair(&auth_report(node), local, remote, "spiffe").filter(|p| p.state == "authenticated")
    })
    .unwrap_or_else(|| {
        panic!(
            "pair {local} -> {remote} not authenticated within 10 s: {:#?}\nlog:\n{}",
            auth_report(node),
            node.log_tail(30)
        )
    })
}

/// The events of `kind` from `from`'s address to `to`'s `port`.
fn events(topo: &Topology, kind: FlowKind, from: &str, to: &str, port: u16) -> Vec<FlowRecord> {
    let (src, dst) = (topo.pod(from).unwrap().ipv4(), topo.pod(to).unwrap().ipv4());
    flows(topo, &[kind])
        .into_iter()
        .filter(|f| f.src.ip == src && f.dst.ip == dst && f.dst.port == port)
        .collect()
}

fn setup() -> Topology {
    let topo = abc_builder([
        &[],
        &[PortProto::tcp(80), PortProto::tcp(81), PortProto::tcp(82)],
        &[],
    ])
    .build()
    .expect("topology");
    apply(&topo, "b-auth.yaml", POLICY);
    topo
}

#[test]
fn required_authenticates_ahead_and_test_always_fail_drops() {
    if !privileged() {
        return;
    }
    let topo = setup();
    let node = topo.node("n1").unwrap();
    let (a, b, c) = (
        identity_of(node, "a"),
        identity_of(node, "b"),
        identity_of(node, "c"),
    );
    // Pre-authentication: the policy and the endpoints make (b, a) possible,
    // so the agent authenticates it before any packet.
    let ingress = wait_authenticated(node, b, a);
    assert!(ingress.needed, "{ingress:?}");
    assert_eq!(ingress.remote_node, "local");
    assert_eq!(
        ingress.peer_spiffe_id.as_deref(),
        Some(format!("spiffe://palisade.local/identity/{a}").as_str()),
        "the peer presented a's identity SVID: {ingress:?}"
    );
    // The other side of the handshake installed its entry too.
    let other = wait_authenticated(node, a, b);
    assert_eq!(
        other.peer_spiffe_id.as_deref(),
        Some(format!("spiffe://palisade.local/identity/{b}").as_str())
    );
    assert_eq!(ingress.expires, other.expires, "both sides expire together");

    assert_allowed(&topo, "x/a", "x/b", PortProto::tcp(80), "authenticated");
    let flow = wait_for(Duration::from_secs(2), || {
        events(&topo, FlowKind::Flow, "x/a", "x/b", 80).pop()
    })
    .expect("a flow event a -> b:80");
    assert_eq!(
        flow.auth.as_deref(),
        Some("spiffe"),
        "the flow says it was authenticated: {flow:?}"
    );
    assert!(
        events(&topo, FlowKind::Drop, "x/a", "x/b", 80).is_empty(),
        "pre-authenticated: the first connection was not dropped"
    );

    // No authentication on 81: nothing changes.
    assert_allowed(&topo, "x/a", "x/b", PortProto::tcp(81), "no auth rule");
    let plain = wait_for(Duration::from_secs(2), || {
        events(&topo, FlowKind::Flow, "x/a", "x/b", 81).pop()
    })
    .expect("a flow event a -> b:81");
    assert_eq!(plain.auth, None, "{plain:?}");
    // Not allowed at all on 82: a policy drop, not an authentication one.
    assert_denied(&topo, "x/a", "x/b", PortProto::tcp(82), "no rule");

    // test-always-fail: dropped with the reason, and the listing says why.
    assert_denied(&topo, "x/c", "x/b", PortProto::tcp(80), "test-always-fail");
    let drop = wait_for(Duration::from_secs(2), || {
        events(&topo, FlowKind::Drop, "x/c", "x/b", 80).pop()
    })
    .expect("a drop event c -> b:80");
    assert_eq!(drop.reason, "auth_required", "{drop:?}");
    assert_eq!(drop.auth.as_deref(), Some("test-always-fail"), "{drop:?}");
    let failing = wait_for(Duration::from_secs(5), || {
        pair(&auth_report(node), b, c, "test-always-fail").filter(|p| p.failures > 0)
    })
    .expect("the test-always-fail pair is listed");
    assert_eq!(failing.state, "failing", "{failing:?}");
    assert!(
        failing
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("test-always-fail")),
        "{failing:?}"
    );

    // Audit mode lets it through but says, as its own reason, that
    // authentication is missing.
    let ep = endpoint_of(&topo, "x/b");
    match call(
        node,
        &Request::EndpointSetAudit {
            ep_id: ep.ep_id,
            audit: true,
        },
    ) {
        Response::Done | Response::Endpoint(_) => {}
        other => panic!("set audit: unexpected answer {other:?}"),
    }
    assert_allowed(&topo, "x/c", "x/b", PortProto::tcp(80), "audit mode");
    let audit = wait_for(Duration::from_secs(2), || {
        events(&topo, FlowKind::Audit, "x/c", "x/b", 80).pop()
    })
    .expect("an audit event c -> b:80");
    assert_eq!(
        (audit.reason.as_str(), audit.auth.as_deref()),
        ("auth_required", Some("test-always-fail")),
        "{audit:?}"
    );

    let report = auth_report(node);
    assert!(report.stats.handshakes >= 1, "{:?}", report.stats);
    assert!(report.stats.accepted >= 1, "{:?}", report.stats);
    assert!(report.stats.map_entries >= 2, "{:?}", report.stats);
}

#[test]
fn established_flows_survive_agent_restart_and_svid_rotation() {
    if !privileged() {
        return;
    }
    let topo = setup();
    let node = topo.node("n1").unwrap();
    let (a, b) = (identity_of(node, "a"), identity_of(node, "b"));
    let b_pod = topo.pod("x/b").unwrap();
    let _echo = LongEcho::start(b_pod.netns(), LONG_PORT);
    let first = wait_authenticated(node, b, a);

    let a_ns = topo.pod("x/a").unwrap().netns().clone();
    let conn = Conn::open(&a_ns, b_pod.ipv4(), LONG_PORT).expect("a -> b:7000 authenticated");
    let chatter = conn.chatter(Duration::from_millis(50));
    chatter.wait_messages(5);

    // A restart: the pinned entries keep the pair authenticated.
    node.restart_agent(true).expect("restart the agent");
    let restored = pair(&auth_report(node), b, a, "spiffe").expect("the pair after the restart");
    assert_eq!(restored.state, "authenticated", "{restored:?}");
    assert_eq!(restored.expires, first.expires, "{restored:?}");
    chatter.wait_messages(10);
    let mut fresh = Conn::open(&a_ns, b_pod.ipv4(), LONG_PORT)
        .unwrap_or_else(|e| panic!("a new connection right after the restart: {e}"));
    fresh.exchange(Duration::from_secs(1)).unwrap();

    // An immediate CA rotation re-issues every SVID: the pair is
    // authenticated again with the new ones, while traffic flows.
    match call(node, &Request::IdentityCaRotate { immediately: true }) {
        Response::IdentityCa(_) => {}
        other => panic!("ca rotate: unexpected answer {other:?}"),
    }
    let renewed = wait_for(Duration::from_secs(10), || {
        pair(&auth_report(node), b, a, "spiffe").filter(|p| {
            p.state == "authenticated" && p.origin != "restored" && p.expires != first.expires
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "the pair was not re-authenticated after the rotation: {:#?}\nlog:\n{}",
            auth_report(node),
            node.log_tail(40)
        )
    });
    assert!(renewed.last_handshake.is_some(), "{renewed:?}");
    chatter.wait_messages(10);
    let (mut conn, stats) = chatter.stop();
    assert!(
        stats.failures.is_empty() && stats.echoed == stats.sent,
        "the authenticated connection was interrupted: {stats:?}"
    );
    conn.exchange(Duration::from_secs(1)).unwrap();
    fresh.exchange(Duration::from_secs(1)).unwrap();
}
