//! The etcd cluster store against a real etcd (Debian's etcd-server) on an
//! underlay namespace: pod CIDRs without overlap, nodes and endpoints seen
//! by every node, one identity per label set under concurrent allocation,
//! garbage collection after the grace period, an etcd outage (the view is
//! kept, writes wait, everything converges when etcd returns), and a node
//! whose lease expires disappearing from the others.
//!
//! Each test runs its sessions on a thread inside a namespace attached to
//! the underlay. Needs root; skipped with a message without etcd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use palisade_cluster::{
    Change, ClusterConfig, ClusterView, EndpointRecord, NodeRecord, PodCidr, Session,
};
use palisade_identity::{Labels, NumericIdentity};
use palisade_tests::etcd::EtcdServer;
use palisade_tests::{NetNs, Topology};
use tokio::sync::mpsc::UnboundedReceiver;

mod common;

/// Runs `body` on a thread inside a namespace attached to a fresh
/// underlay with etcd, with a tokio runtime.
fn with_etcd<F>(body: F)
where
    F: for<'a> FnOnce(
            &'a EtcdServer,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>
        + Send,
{
    if !common::netns_privileged() || !common::etcd_installed() {
        return;
    }
    let mut topo = Topology::bare().unwrap();
    topo.add_underlay().unwrap();
    let client_ns: NetNs = topo.add_netns("client").unwrap();
    topo.attach_underlay(&client_ns).unwrap();
    let etcd = topo.etcd().unwrap();
    common::block_on_in(&client_ns, || body(etcd));
    topo.cleanup().unwrap();
}

fn config(etcd: &EtcdServer) -> ClusterConfig {
    let mut c = ClusterConfig::with_endpoints(vec![etcd.client_url()]);
    c.lease_ttl_secs = 3;
    c.identity_gc_grace_secs = 2;
    c.request_timeout_ms = 1000;
    c
}

fn session(etcd: &EtcdServer, node: &str) -> (Session, UnboundedReceiver<Vec<Change>>) {
    Session::start(config(etcd), "test", node, ClusterView::default()).unwrap()
}

fn labels(app: &str) -> Labels {
    Labels::try_from_pairs([("app", app)]).unwrap()
}

fn endpoint(ip: Ipv4Addr, node: &str, id: NumericIdentity) -> EndpointRecord {
    EndpointRecord {
        ip,
        node: node.into(),
        identity: id,
        namespace: "x".into(),
        pod: format!("p{}", ip.octets()[3]),
        service_account: None,
    }
}

/// Waits (at most `limit`) until `pred` holds for a change on `rx`;
/// returns how long it took.
async fn wait_change(
    rx: &mut UnboundedReceiver<Vec<Change>>,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Change) -> bool,
) -> Duration {
    let start = Instant::now();
    let found = tokio::time::timeout(limit, async {
        while let Some(batch) = rx.recv().await {
            if batch.iter().any(&pred) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no change {what} within {limit:?}");
    start.elapsed()
}

/// Polls `cond` until it holds or `limit` passes (the caller asserts).
async fn until(limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn register(s: &Session, address: Ipv4Addr) -> PodCidr {
    let cidr = s.claim_pod_cidr(None, None).await.unwrap();
    s.set_node(&NodeRecord {
        name: s.node().to_owned(),
        address,
        pod_cidr: cidr,
        tunnel_port: 8472,
    });
    cidr
}

#[test]
fn nodes_get_disjoint_cidrs_and_learn_each_others_pods_within_a_second() {
    with_etcd(|etcd| {
        Box::pin(async move {
            let (s1, mut rx1) = session(etcd, "n1");
            let (s2, _rx2) = session(etcd, "n2");
            let (s3, _rx3) = session(etcd, "n3");
            let c1 = register(&s1, Ipv4Addr::new(10, 199, 0, 1)).await;
            let c2 = register(&s2, Ipv4Addr::new(10, 199, 0, 2)).await;
            let c3 = register(&s3, Ipv4Addr::new(10, 199, 0, 3)).await;
            assert!(
                !c1.overlaps(&c2) && !c1.overlaps(&c3) && !c2.overlaps(&c3),
                "{c1} {c2} {c3}"
            );
            assert_eq!(
                s2.claim_pod_cidr(None, None).await.unwrap(),
                c2,
                "a node keeps its CIDR"
            );
            let taken = s3.claim_pod_cidr(Some(c1), None).await.unwrap_err();
            assert!(taken.to_string().contains("n1"), "{taken}");
            wait_change(
                &mut rx1,
                Duration::from_secs(5),
                "node n3",
                |c| matches!(c, Change::NodeUpsert(n) if n.name == "n3" && n.pod_cidr == c3),
            )
            .await;
            let id = s2.acquire_identity(&labels("web")).await.unwrap();
            let ip = Ipv4Addr::from(u32::from(c2.network) + 5);
            s2.publish_endpoint(&endpoint(ip, "n2", id));
            let took = wait_change(
                &mut rx1,
                Duration::from_secs(1),
                "endpoint of n2",
                |c| matches!(c, Change::EndpointUpsert(e) if e.ip == ip && e.identity == id),
            )
            .await;
            eprintln!("n1 learned n2's pod in {took:?}");
            s2.withdraw_endpoint(ip);
            wait_change(&mut rx1, Duration::from_secs(1), "endpoint removal", |c| {
                *c == Change::EndpointRemove(ip)
            })
            .await;
            assert_eq!(s1.view().nodes.len(), 3);
            for s in [s1, s2, s3] {
                s.shutdown();
            }
        })
    });
}

#[test]
fn concurrent_allocation_of_one_label_set_gives_one_identity() {
    with_etcd(|etcd| {
        Box::pin(async move {
            let sessions: Vec<_> = (1..=3).map(|i| session(etcd, &format!("n{i}")).0).collect();
            let mut all = BTreeSet::new();
            for round in 0..15 {
                let shared = labels(&format!("shared-{round}"));
                let own: Vec<Labels> = (0..3)
                    .map(|i| labels(&format!("own-{round}-{i}")))
                    .collect();
                let (a, b, c) = tokio::join!(
                    sessions[0].acquire_identity(&shared),
                    sessions[1].acquire_identity(&shared),
                    sessions[2].acquire_identity(&shared),
                );
                let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
                assert!(
                    a == b && b == c,
                    "round {round}: {a} {b} {c} for one label set"
                );
                let (x, y, z) = tokio::join!(
                    sessions[0].acquire_identity(&own[0]),
                    sessions[1].acquire_identity(&own[1]),
                    sessions[2].acquire_identity(&own[2]),
                );
                for id in [a, x.unwrap(), y.unwrap(), z.unwrap()] {
                    assert!(id.is_cluster());
                    assert!(
                        all.insert(id),
                        "round {round}: {id} given to two label sets"
                    );
                }
            }
            let out = etcd
                .etcdctl(&[
                    "get",
                    "--prefix",
                    "--keys-only",
                    "/palisade/v1/test/identities/id/",
                ])
                .unwrap();
            assert_eq!(out.lines().filter(|l| !l.is_empty()).count(), all.len());
            for s in sessions {
                s.shutdown();
            }
        })
    });
}

#[test]
fn unreferenced_identities_are_collected_after_the_grace_period_only() {
    with_etcd(|etcd| {
        Box::pin(async move {
            let (s1, _rx1) = session(etcd, "n1");
            let (s2, mut rx2) = session(etcd, "n2");
            let gone = s1.acquire_identity(&labels("gone")).await.unwrap();
            let kept = s1.acquire_identity(&labels("kept")).await.unwrap();
            s1.release_identity(&labels("gone"));
            s1.release_identity(&labels("kept"));
            assert_eq!(s2.acquire_identity(&labels("kept")).await.unwrap(), kept);
            wait_change(&mut rx2, Duration::from_secs(15), "collection", |c| {
                *c == Change::IdentityRemove(gone)
            })
            .await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let view = s2.view();
            assert!(
                view.identities.contains_key(&kept),
                "a referenced identity stays"
            );
            assert!(!view.identities.contains_key(&gone));
            let again = s1.acquire_identity(&labels("gone")).await.unwrap();
            assert!(again.is_cluster());
            s1.shutdown();
            s2.shutdown();
        })
    });
}

#[test]
fn an_etcd_outage_keeps_the_view_and_everything_converges_after_it() {
    with_etcd(|etcd| {
        Box::pin(async move {
            let (s1, mut rx1) = session(etcd, "n1");
            let (s2, _rx2) = session(etcd, "n2");
            register(&s1, Ipv4Addr::new(10, 199, 0, 1)).await;
            let c2 = register(&s2, Ipv4Addr::new(10, 199, 0, 2)).await;
            let id = s2.acquire_identity(&labels("web")).await.unwrap();
            let a = Ipv4Addr::from(u32::from(c2.network) + 2);
            let b = Ipv4Addr::from(u32::from(c2.network) + 3);
            s2.publish_endpoint(&endpoint(a, "n2", id));
            wait_change(
                &mut rx1,
                Duration::from_secs(2),
                "endpoint a",
                |c| matches!(c, Change::EndpointUpsert(e) if e.ip == a),
            )
            .await;

            etcd.stop().unwrap();
            until(Duration::from_secs(10), || !s1.status().connected).await;
            assert!(!s1.status().connected, "the outage is noticed");
            assert!(s1.status().last_error.is_some());
            assert!(s1.view().endpoints.contains_key(&a), "the view is kept");
            s2.publish_endpoint(&endpoint(b, "n2", id));
            s2.withdraw_endpoint(a);
            assert!(s2.status().pending_writes >= 2, "{:?}", s2.status());
            let known = s1.acquire_identity(&labels("web")).await;
            assert_eq!(
                known.unwrap(),
                id,
                "a known label set still gets its number"
            );
            let new = s1.acquire_identity(&labels("brand-new")).await;
            assert!(new.is_err(), "a new label set needs etcd");

            etcd.start().unwrap();
            wait_change(
                &mut rx1,
                Duration::from_secs(15),
                "endpoint b after the outage",
                |c| matches!(c, Change::EndpointUpsert(e) if e.ip == b),
            )
            .await;
            until(Duration::from_secs(10), || {
                !s1.view().endpoints.contains_key(&a) && s2.status().pending_writes == 0
            })
            .await;
            assert!(
                !s1.view().endpoints.contains_key(&a),
                "the withdrawal arrived"
            );
            assert_eq!(s2.status().pending_writes, 0);
            assert!(s1.status().connected && s1.status().resyncs >= 2);
            s1.shutdown();
            s2.shutdown();
        })
    });
}

#[test]
fn a_node_whose_lease_expires_disappears_with_its_pods() {
    with_etcd(|etcd| {
        Box::pin(async move {
            let (s1, mut rx1) = session(etcd, "n1");
            let (s2, _rx2) = session(etcd, "n2");
            let c2 = register(&s2, Ipv4Addr::new(10, 199, 0, 2)).await;
            let id = s2.acquire_identity(&labels("db")).await.unwrap();
            let ip = Ipv4Addr::from(u32::from(c2.network) + 9);
            s2.publish_endpoint(&endpoint(ip, "n2", id));
            wait_change(
                &mut rx1,
                Duration::from_secs(2),
                "endpoint of n2",
                |c| matches!(c, Change::EndpointUpsert(e) if e.ip == ip),
            )
            .await;
            // Alive, a node stays: its lease is renewed (TTL 3 s).
            tokio::time::sleep(Duration::from_secs(8)).await;
            assert!(
                s1.view().nodes.contains_key("n2"),
                "n2 is alive and must stay"
            );
            assert!(s2.status().lease_id.is_some());
            // The agent of n2 dies: nobody keeps its lease alive.
            s2.shutdown();
            let took = wait_change(&mut rx1, Duration::from_secs(10), "removal of n2", |c| {
                *c == Change::NodeRemove("n2".into())
            })
            .await;
            eprintln!("n2 removed {took:?} after its agent stopped (lease ttl 3 s)");
            assert!(!s1.view().endpoints.contains_key(&ip));
            assert!(
                s1.view().cidrs.values().any(|n| n == "n2"),
                "its CIDR stays claimed for its return"
            );
            s1.shutdown();
        })
    });
}
