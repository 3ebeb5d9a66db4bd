//! Mutual authentication across nodes (two agents, a real etcd, one node
//! CA), and what happens when the peer's side of the handshake is wrong.
//!
//! - Both nodes install their entry for the pair, each naming the other
//!   node, and a connection whose egress and ingress both require
//!   authentication passes; the flow events say it was authenticated.
//! - n1 dials n2's auth port, where a rogue server answers instead of n2's
//!   agent: nothing listening, an SVID of another trust domain, an SVID of
//!   another identity (from the real CA), an expired SVID of the right
//!   identity (from the real CA). Each time the traffic stays dropped with
//!   `auth_required`, and `palisade auth list` on n1 names the failure.
//!   Once n1 reaches n2's agent, the same traffic passes.
//!
//! Needs root and etcd; skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use common::*;
use palisade_api::{AuthRecord, AuthReport, FlowKind, Request, Response};
use palisade_identity::ca::{CaSet, CaStore, RotationPolicy};
use palisade_identity::mutual_auth::{Admission, IdentitySvids, LocalSvid, Server};
use palisade_identity::tls::{certified_key, TrustBundle};
use palisade_identity::x509::X509Svid;
use palisade_identity::{NumericIdentity, SpiffeId, TrustDomain};
use palisade_tests::netns::NetNs;
use palisade_tests::{Node, PodSpec, PortProto, Topology};

/// The auth port n1 dials (the default); n2's agent listens on another
/// one until the end, so that rogues can stand in for it.
const AUTH_PORT: u16 = 4250;
const N2_AGENT_PORT: u16 = 4251;

/// a (on n1) may reach b (on n2) on 80 with authentication required on
/// both sides: a's egress and b's ingress.
const POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-egress, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  egress:
    - toEndpoints: [{matchLabels: {pod: b}}]
      toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]
      authentication: {mode: required}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-ingress, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: b}}
  ingress:
    - fromEndpoints: [{matchLabels: {pod: a}}]
      toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]
      authentication: {mode: required}
";

fn auth_port_setting(port: u16) -> serde_yaml::Mapping {
    let mut m = serde_yaml::Mapping::new();
    m.insert("port".into(), u64::from(port).into());
    m
}

fn topology(n2_port: u16) -> Topology {
    let topo = Topology::builder()
        .shared_identity(true)
        .namespace("x", ns_labels("x"))
        .node("n1")
        .node("n2")
        .node_setting("n2", "auth", auth_port_setting(n2_port))
        .pod(PodSpec::new("x", "a").label("pod", "a").on("n1"))
        .pod(
            PodSpec::new("x", "b")
                .label("pod", "b")
                .on("n2")
                .ports([PortProto::tcp(80)]),
        )
        .build()
        .expect("topology");
    topo.wait_converged(Duration::from_secs(20))
        .expect("both nodes know both pods");
    apply(&topo, "auth.yaml", POLICY);
    topo
}

fn auth_report(node: &Node) -> AuthReport {
    match call(node, &Request::AuthList) {
        Response::Auth(r) => *r,
        other => panic!("auth list: unexpected answer {other:?}"),
    }
}

fn pair(node: &Node, local: u32, remote: u32) -> Option<AuthRecord> {
    auth_report(node)
        .pairs
        .into_iter()
        .find(|p| p.local_identity == local && p.remote_identity == remote)
}

fn wait_pair(
    node: &Node,
    local: u32,
    remote: u32,
    what: &str,
    ok: impl Fn(&AuthRecord) -> bool,
) -> AuthRecord {
    wait_for(Duration::from_secs(15), || {
        pair(node, local, remote).filter(|p| ok(p))
    })
    .unwrap_or_else(|| {
        panic!(
            "{}: pair {local} -> {remote}: {what} not seen within 15 s: {:#?}\nlog:\n{}",
            node.name(),
            auth_report(node),
            node.log_tail(20)
        )
    })
}

/// Reads a node's CA from its state directory, as its agent keeps it.
fn node_ca(node: &Node, td: &TrustDomain) -> CaSet {
    CaStore::new(&node.dir().join("state").join("ca"), td)
        .load(td)
        .expect("the CA node's CA files")
        .expect("the CA node has a CA")
}

fn identity_id(td: &TrustDomain, n: u32) -> SpiffeId {
    td.id_with_segments(["identity".to_owned(), n.to_string()])
        .unwrap()
}

/// Presents one SVID, whatever it is asked for.
struct Always(LocalSvid);

impl IdentitySvids for Always {
    fn svid(&self, _: NumericIdentity) -> Option<LocalSvid> {
        Some(self.0.clone())
    }
}

/// Admits everyone.
struct Open;

impl Admission for Open {
    fn admit(&self, _: SocketAddr, _: NumericIdentity, _: NumericIdentity) -> Result<(), String> {
        Ok(())
    }
}

/// An auth server on the auth port of a node's namespace that presents a
/// chosen SVID; stopped on drop.
struct Rogue {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), palisade_tests::netns::NetnsError>>>,
}

impl Rogue {
    fn start(netns: &NetNs, svid: &X509Svid, trust: &TrustBundle) -> Self {
        let local = LocalSvid::new(certified_key(svid).unwrap()).unwrap();
        let server = Server::new(
            svid.spiffe_id().trust_domain().clone(),
            trust.clone(),
            Arc::new(Always(local)),
            Arc::new(Open),
        )
        .unwrap();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread = netns
            .spawn_thread(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind(("0.0.0.0", AUTH_PORT))
                        .await
                        .unwrap();
                    ready_tx.send(()).unwrap();
                    loop {
                        tokio::select! {
                            _ = &mut stopped => return,
                            accepted = listener.accept() => {
                                if let Ok((stream, peer)) = accepted {
                                    let _ = tokio::time::timeout(
                                        Duration::from_secs(2),
                                        server.accept(stream, peer),
                                    )
                                    .await;
                                }
                            }
                        }
                    }
                });
            })
            .unwrap();
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the rogue listens");
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// a -> b:80 is dropped for missing authentication and n1 lists the pair
/// failing with `kind` (after a fresh start of n1's agent, so that the
/// attempt is not waiting out an earlier backoff).
fn assert_fails_with(topo: &Topology, a: u32, b: u32, kind: &str) {
    let n1 = topo.node("n1").unwrap();
    n1.restart_agent(false).expect("restart n1's agent");
    let failing = wait_pair(n1, a, b, kind, |p| {
        p.failures > 0 && p.last_error.as_deref().is_some_and(|e| e.starts_with(kind))
    });
    assert_ne!(failing.state, "authenticated", "{failing:?}");
    assert_eq!(failing.remote_node, "n2", "{failing:?}");
    let before = flows(topo, &[FlowKind::Drop]).len();
    assert_denied(topo, "x/a", "x/b", PortProto::tcp(80), kind);
    let drop = wait_for(Duration::from_secs(2), || {
        flows(topo, &[FlowKind::Drop])
            .into_iter()
            .skip(before)
            .find(|f| f.dst.port == 80 && f.reason == "auth_required")
    })
    .unwrap_or_else(|| panic!("{kind}: no auth_required drop for a -> b:80"));
    assert_eq!(drop.auth.as_deref(), Some("spiffe"), "{drop:?}");
    assert_eq!(
        drop.auth_node.as_deref(),
        topo.node("n2")
            .unwrap()
            .underlay_address()
            .map(|a| a.to_string())
            .as_deref(),
        "the drop names b's node: {drop:?}"
    );
}

#[test]
fn both_nodes_install_their_entry_and_the_flow_passes() {
    if !privileged() || !etcd_installed() {
        return;
    }
    let topo = topology(AUTH_PORT);
    let (n1, n2) = (topo.node("n1").unwrap(), topo.node("n2").unwrap());
    let (a, b) = (identity_of(n1, "a"), identity_of(n2, "b"));
    let td = TrustDomain::new(&topo.node_ca().unwrap().trust_domain).unwrap();
    let on_n1 = wait_pair(n1, a, b, "authenticated", |p| p.state == "authenticated");
    let on_n2 = wait_pair(n2, b, a, "authenticated", |p| p.state == "authenticated");
    assert_eq!(on_n1.remote_node, "n2", "{on_n1:?}");
    assert_eq!(on_n2.remote_node, "n1", "{on_n2:?}");
    assert!(on_n1.needed && on_n2.needed);
    assert_eq!(on_n1.expires, on_n2.expires, "both sides expire together");
    assert_eq!(
        on_n1.peer_spiffe_id.as_deref(),
        Some(identity_id(&td, b).to_string().as_str())
    );
    assert_eq!(
        on_n2.peer_spiffe_id.as_deref(),
        Some(identity_id(&td, a).to_string().as_str())
    );

    assert_allowed(&topo, "x/a", "x/b", PortProto::tcp(80), "authenticated");
    let flows = wait_for(Duration::from_secs(2), || {
        let f: Vec<_> = flows(&topo, &[FlowKind::Flow])
            .into_iter()
            .filter(|f| f.dst.port == 80 && f.auth.is_some())
            .collect();
        (f.len() >= 2).then_some(f)
    })
    .expect("flow events on both nodes");
    assert!(
        flows.iter().all(|f| f.auth.as_deref() == Some("spiffe")),
        "{flows:?}"
    );
    assert!(
        flows.iter().any(|f| f.direction == "egress")
            && flows.iter().any(|f| f.direction == "ingress"),
        "egress on n1 and ingress on n2 were both authenticated: {flows:?}"
    );
}

#[test]
fn handshake_failures_keep_traffic_dropped_and_say_why() {
    if !privileged() || !etcd_installed() {
        return;
    }
    let topo = topology(N2_AGENT_PORT);
    let (n1, n2) = (topo.node("n1").unwrap(), topo.node("n2").unwrap());
    let (a, b) = (identity_of(n1, "a"), identity_of(n2, "b"));
    let td = TrustDomain::new(&topo.node_ca().unwrap().trust_domain).unwrap();
    let mut ca = node_ca(n1, &td);
    let trust = TrustBundle::new(ca.x509_bundle());
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);

    // Nothing listens where n1 dials.
    assert_fails_with(&topo, a, b, "connect");

    // Another trust domain's CA.
    let other_td = TrustDomain::new("other.example").unwrap();
    let policy = RotationPolicy {
        ca_ttl: 24 * hour,
        max_svid_ttl: hour,
        propagation: Duration::from_secs(30),
    };
    let mut other = CaSet::bootstrap(other_td.clone(), now, &policy).unwrap();
    let (foreign, _) = other
        .issue_x509(&identity_id(&other_td, b), now, hour)
        .unwrap();
    {
        let _rogue = Rogue::start(n2.netns(), &foreign, &trust);
        assert_fails_with(&topo, a, b, "untrusted");
    }

    // The real CA, but another identity's SVID.
    let (impostor, _) = ca.issue_x509(&identity_id(&td, a), now, hour).unwrap();
    {
        let _rogue = Rogue::start(n2.netns(), &impostor, &trust);
        assert_fails_with(&topo, a, b, "wrong-identity");
    }

    // The real CA and the right identity, but expired.
    let (expired, _) = ca
        .issue_x509(
            &identity_id(&td, b),
            now - Duration::from_secs(3),
            Duration::from_secs(1),
        )
        .unwrap();
    assert!(expired.not_after() < SystemTime::now());
    {
        let _rogue = Rogue::start(n2.netns(), &expired, &trust);
        assert_fails_with(&topo, a, b, "expired");
    }

    // n1 reaches n2's agent: authenticated, and the traffic passes.
    let config = n1.config_path();
    set_auth_port(config, N2_AGENT_PORT);
    n1.restart_agent(false).expect("restart n1 on n2's port");
    wait_pair(n1, a, b, "authenticated", |p| p.state == "authenticated");
    assert_allowed(
        &topo,
        "x/a",
        "x/b",
        PortProto::tcp(80),
        "authenticated at last",
    );
}

/// Rewrites `auth.port` in an agent's configuration file.
fn set_auth_port(config: &Path, port: u16) {
    let text = std::fs::read_to_string(config).unwrap();
    let mut yaml: serde_yaml::Mapping = serde_yaml::from_str(&text).unwrap();
    yaml.insert("auth".into(), auth_port_setting(port).into());
    std::fs::write(config, serde_yaml::to_string(&yaml).unwrap()).unwrap();
}
