//! The etcd cluster store against a real etcd (Debian's etcd-server 3.4)
//! that serves TLS only, verifies client certificates
//! (`--client-cert-auth`) and has user/password authentication on: a
//! session with the test CA, a client certificate, the server's DNS name
//! and a password file works end to end; a wrong CA, a missing client
//! certificate, a wrong password and a plain `http://` endpoint each fail
//! with an error that says which.
//!
//! Each test has its own underlay with etcd (switched to TLS, then auth
//! enabled) and runs its sessions on a thread inside a namespace attached
//! to it. Needs root; skipped with a message without etcd or openssl.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use palisade_cluster::{
    ClusterConfig, ClusterView, EndpointRecord, EtcdTls, Keys, NodeRecord, Session, SessionError,
    SessionStatus,
};
use palisade_identity::Labels;
use palisade_tests::etcd::{make_certs, EtcdCerts, EtcdServer};
use palisade_tests::{NetNs, Topology};

mod common;

/// The cluster name: keys live under `/palisade/v1/tls/`.
const CLUSTER: &str = "tls";
/// The DNS name in etcd's server certificate (besides its IP address).
const SERVER_NAME: &str = "etcd.palisade.test";
/// The client certificate's common name: no etcd user has it, so a client
/// that presents the certificate without logging in may do nothing.
const CLIENT_CN: &str = "palisade-client";
/// etcd's root password (etcd 3.4 needs root before `auth enable`).
const ROOT_PASSWORD: &str = "root-pw-7f3a";
/// The user the sessions log in as: read and write under the cluster's
/// prefix only.
const USER: &str = "palisade";
/// Its password.
const PASSWORD: &str = "palisade-pw-91c2";
/// Time limit of one session operation in these tests.
const OP_LIMIT: Duration = Duration::from_secs(5);

/// What a test body gets: the TLS etcd, its files, and a password file
/// (mode 0600) per password.
struct Fixture<'a> {
    etcd: &'a EtcdServer,
    certs: EtcdCerts,
    secrets: &'a Path,
}

impl Fixture<'_> {
    /// A file holding `password` (and a newline, as an editor leaves it),
    /// readable by its owner only.
    fn password_file(&self, name: &str, password: &str) -> PathBuf {
        let path = self.secrets.join(name);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        writeln!(f, "{password}").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        path
    }

    /// A configuration that should work: https endpoint, the test CA, the
    /// client certificate, the server's DNS name, user and password file.
    fn config(&self) -> ClusterConfig {
        let mut c = ClusterConfig::with_endpoints(vec![self.etcd.client_url()]);
        c.etcd.tls = Some(EtcdTls {
            ca_file: self.certs.ca.clone(),
            cert_file: Some(self.certs.client_cert.clone()),
            key_file: Some(self.certs.client_key.clone()),
            server_name: Some(SERVER_NAME.to_owned()),
        });
        c.etcd.username = Some(USER.to_owned());
        c.etcd.password_file = Some(self.password_file("password", PASSWORD));
        c.lease_ttl_secs = 3;
        c.identity_gc_grace_secs = 60;
        c.request_timeout_ms = 1000;
        c
    }
}

/// Runs `body` on a thread inside a namespace attached to a fresh underlay
/// whose etcd serves TLS with client certificates and has authentication
/// enabled (root, and [`USER`] with read-write on the cluster's prefix),
/// with a tokio runtime.
fn with_tls_etcd<F>(body: F)
where
    F: for<'a> FnOnce(
            &'a Fixture<'a>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>
        + Send,
{
    if !common::netns_privileged() || !common::etcd_installed() || !common::openssl_installed() {
        return;
    }
    let secrets = common::TempDir::new("etcd-secrets");
    let mut topo = Topology::bare().unwrap();
    topo.add_underlay().unwrap();
    let client_ns: NetNs = topo.add_netns("client").unwrap();
    topo.attach_underlay(&client_ns).unwrap();
    let etcd = topo.etcd().unwrap();
    let certs = make_certs(
        &etcd.tls_dir(),
        *etcd.client_addr().ip(),
        SERVER_NAME,
        CLIENT_CN,
    )
    .unwrap();
    etcd.restart_with_tls(Some(certs.clone())).unwrap();
    assert!(etcd.client_url().starts_with("https://"));
    etcd.enable_auth(ROOT_PASSWORD).unwrap();
    etcd.add_user(USER, PASSWORD, &format!("/palisade/v1/{CLUSTER}/"))
        .unwrap();
    let fixture = Fixture {
        etcd,
        certs,
        secrets: secrets.path(),
    };
    common::block_on_in(&client_ns, || body(&fixture));
    topo.cleanup().unwrap();
}

fn labels(app: &str) -> Labels {
    Labels::try_from_pairs([("app", app)]).unwrap()
}

/// Polls `cond` every 100 ms until it holds or `limit` passes (the caller
/// asserts).
async fn until(limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Claims a pod CIDR with `config`, which must fail within [`OP_LIMIT`];
/// returns the error's text and the session's status after its background
/// tasks had a moment to fail too.
async fn failing_claim(config: ClusterConfig) -> (String, SessionStatus) {
    let (s, _rx) = Session::start(config, CLUSTER, "n1", ClusterView::default()).unwrap();
    let r = tokio::time::timeout(OP_LIMIT, s.claim_pod_cidr(None, None))
        .await
        .expect("claiming a pod CIDR neither succeeded nor failed in time");
    let e = match r {
        Ok(cidr) => panic!("claimed {cidr} with a configuration that must not work"),
        Err(e) => e,
    };
    assert!(e.store_failure(), "not an etcd failure: {e:?}");
    until(OP_LIMIT, || s.status().last_error.is_some()).await;
    let status = s.status();
    s.shutdown();
    (e.to_string(), status)
}

#[test]
fn a_session_over_tls_with_a_client_certificate_and_a_password_registers_and_allocates() {
    with_tls_etcd(|f| {
        Box::pin(async move {
            let root = format!("/palisade/v1/{CLUSTER}/");
            // etcd enforces both: the certificate alone (its CN is no user)
            // may not read the cluster's keys.
            let denied = f
                .etcd
                .etcdctl_as(f.etcd.netns(), None, &["get", "--prefix", &root])
                .unwrap_err()
                .to_string();
            assert!(denied.contains("permission denied"), "{denied}");

            let (s, _rx) = Session::start(f.config(), CLUSTER, "n1", ClusterView::default())
                .expect("session start");
            let cidr = tokio::time::timeout(OP_LIMIT, s.claim_pod_cidr(None, None))
                .await
                .expect("claim in time")
                .expect("claim a pod CIDR");
            let address = Ipv4Addr::new(10, 199, 0, 1);
            s.set_node(&NodeRecord {
                name: "n1".into(),
                address,
                pod_cidr: cidr,
                tunnel_port: 8472,
            });
            let id = tokio::time::timeout(OP_LIMIT, s.acquire_identity(&labels("web")))
                .await
                .expect("identity in time")
                .expect("allocate an identity");
            assert!(id.is_cluster(), "{id}");
            until(OP_LIMIT, || {
                let st = s.status();
                st.connected && st.pending_writes == 0 && st.nodes == 1 && st.identities >= 1
            })
            .await;
            let st = s.status();
            assert!(st.connected, "{st:?}");
            assert_eq!(st.pending_writes, 0, "{st:?}");
            assert!(st.lease_id.is_some(), "{st:?}");
            assert!(st.endpoints[0].starts_with("https://"), "{st:?}");
            let view = s.view();
            assert_eq!(view.nodes.get("n1").map(|n| n.pod_cidr), Some(cidr));
            assert!(view.identities.contains_key(&id), "{view:?}");

            // What the session wrote is in etcd, read back by etcdctl over
            // TLS as root.
            let keys = f
                .etcd
                .etcdctl(&["get", "--prefix", "--keys-only", &root])
                .unwrap();
            let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
            let layout = Keys::new(CLUSTER).unwrap();
            assert_eq!(layout.root(), root);
            let expect = [
                layout.node("n1"),
                layout.cidr(cidr),
                layout.identity_id(id),
                layout.identity_ref(id, "n1"),
            ];
            for k in &expect {
                assert!(keys.contains(&k.as_str()), "no {k} in etcd: {keys:?}");
            }
            assert!(
                keys.iter()
                    .any(|k| k.starts_with(&format!("{root}identities/labels/"))),
                "{keys:?}"
            );
            let node = f
                .etcd
                .etcdctl(&["get", "--print-value-only", &layout.node("n1")])
                .unwrap();
            let node: NodeRecord = serde_json::from_str(node.trim()).unwrap();
            assert_eq!((node.address, node.pod_cidr), (address, cidr));
            let master = f
                .etcd
                .etcdctl(&["get", "--print-value-only", &layout.identity_id(id)])
                .unwrap();
            assert!(master.contains("web"), "{master}");

            // The user may read under the prefix, nothing outside it.
            let own = f
                .etcd
                .etcdctl_as(
                    f.etcd.netns(),
                    Some((USER, PASSWORD)),
                    &["get", "--prefix", "--keys-only", &root],
                )
                .unwrap();
            assert!(own.contains(&layout.node("n1")), "{own}");
            let outside = f
                .etcd
                .etcdctl_as(
                    f.etcd.netns(),
                    Some((USER, PASSWORD)),
                    &["put", "/elsewhere", "x"],
                )
                .unwrap_err()
                .to_string();
            assert!(outside.contains("permission denied"), "{outside}");

            // Without server_name the certificate is checked against the
            // endpoint's host, an IP address in its SAN.
            let mut by_ip = f.config();
            by_ip.etcd.tls.as_mut().unwrap().server_name = None;
            let (s2, _rx2) = Session::start(by_ip, CLUSTER, "n2", ClusterView::default()).unwrap();
            let same = tokio::time::timeout(OP_LIMIT, s2.acquire_identity(&labels("web")))
                .await
                .expect("identity in time")
                .expect("identity over TLS checked against the IP address");
            assert_eq!(same, id, "one identity per label set");
            s2.shutdown();

            // etcd forgets its auth tokens when it restarts: the session
            // logs in again by itself and its writes go on over TLS.
            f.etcd.stop().unwrap();
            f.etcd.start().unwrap();
            let ip = Ipv4Addr::from(u32::from(cidr.network) + 7);
            s.publish_endpoint(&EndpointRecord {
                ip,
                node: "n1".into(),
                identity: id,
                namespace: "x".into(),
                pod: "p7".into(),
                service_account: None,
            });
            until(Duration::from_secs(15), || {
                let st = s.status();
                st.connected && st.pending_writes == 0 && s.view().endpoints.contains_key(&ip)
            })
            .await;
            let st = s.status();
            assert!(
                st.connected && st.pending_writes == 0,
                "no recovery after an etcd restart: {st:?}"
            );
            assert!(s.view().endpoints.contains_key(&ip), "{st:?}");
            let value = f
                .etcd
                .etcdctl(&["get", "--print-value-only", &layout.endpoint(ip)])
                .unwrap();
            assert!(value.contains("p7"), "{value}");
            s.shutdown();
        })
    });
}

#[test]
fn a_server_certificate_of_another_ca_is_refused_naming_the_certificate() {
    with_tls_etcd(|f| {
        Box::pin(async move {
            let mut c = f.config();
            c.etcd.tls.as_mut().unwrap().ca_file = f.certs.other_ca.clone();
            let (e, status) = failing_claim(c).await;
            eprintln!("unrelated CA: claim error: {e}");
            eprintln!("unrelated CA: status: {status:?}");
            let lower = e.to_lowercase();
            assert!(lower.contains("certificate"), "{e}");
            assert!(
                lower.contains("unknownissuer") || lower.contains("unknown issuer"),
                "{e}"
            );
            assert!(e.contains(&f.etcd.client_url()), "names the endpoint: {e}");
            let (last, _) = status.last_error.unwrap();
            assert!(last.to_lowercase().contains("certificate"), "{last}");
            assert!(!status.connected);
        })
    });
}

#[test]
fn a_server_name_not_in_the_certificate_is_refused_naming_it() {
    with_tls_etcd(|f| {
        Box::pin(async move {
            let mut c = f.config();
            c.etcd.tls.as_mut().unwrap().server_name = Some("other.palisade.test".into());
            let (e, _) = failing_claim(c).await;
            eprintln!("wrong server name: claim error: {e}");
            let lower = e.to_lowercase();
            assert!(lower.contains("certificate"), "{e}");
            assert!(
                lower.contains("notvalidforname") || lower.contains("not valid for"),
                "{e}"
            );
        })
    });
}

#[test]
fn a_missing_client_certificate_is_refused() {
    with_tls_etcd(|f| {
        Box::pin(async move {
            let mut c = f.config();
            let tls = c.etcd.tls.as_mut().unwrap();
            tls.cert_file = None;
            tls.key_file = None;
            let (e, _) = failing_claim(c).await;
            eprintln!("no client certificate: claim error: {e}");
            assert!(e.contains(&f.etcd.client_url()), "names the endpoint: {e}");
            // etcd ends the handshake with a `bad certificate` alert; the
            // client sees the alert ("received fatal alert: BadCertificate")
            // or only the closed connection, which the error then explains
            // (naming cluster.etcd.tls cert_file).
            let lower = e.to_lowercase();
            assert!(
                lower.contains("badcertificate") || lower.contains("cluster.etcd.tls"),
                "{e}"
            );
        })
    });
}

#[test]
fn a_wrong_password_is_refused_naming_authentication() {
    with_tls_etcd(|f| {
        Box::pin(async move {
            let mut c = f.config();
            c.etcd.password_file = Some(f.password_file("wrong", "not-the-password"));
            let (e, status) = failing_claim(c).await;
            eprintln!("wrong password: claim error: {e}");
            eprintln!("wrong password: status: {status:?}");
            assert!(e.contains("authentication failed"), "{e}");
            assert!(e.contains("invalid user ID or password"), "{e}");
            let (last, _) = status.last_error.unwrap();
            assert!(last.contains("authentication failed"), "{last}");

            let mut c = f.config();
            c.etcd.username = Some("nobody".into());
            let (e, _) = failing_claim(c).await;
            eprintln!("unknown user: claim error: {e}");
            assert!(e.contains("authentication failed"), "{e}");
        })
    });
}

#[test]
fn an_http_endpoint_is_refused_by_the_check_or_by_the_tls_server() {
    with_tls_etcd(|f| {
        Box::pin(async move {
            let http = f.etcd.client_url().replace("https://", "http://");
            // TLS settings with an http:// endpoint: a configuration error
            // naming the field, before any connection.
            let mut c = f.config();
            c.etcd.endpoints = vec![http.clone()];
            let (field, message) = c.check().unwrap_err();
            assert_eq!(field, "cluster.etcd.endpoints[0]");
            assert!(
                message.contains("plain http but etcd.tls is set"),
                "{message}"
            );
            match Session::start(c, CLUSTER, "n1", ClusterView::default()) {
                Err(SessionError::Invalid(m)) => {
                    eprintln!("tls with an http endpoint: {m}");
                    assert!(m.starts_with("cluster.etcd.endpoints[0]: "), "{m}");
                    assert!(m.contains(&http), "{m}");
                }
                other => panic!("not a configuration error: {other:?}"),
            }

            // No TLS at all: the TLS-only server does not speak plain
            // gRPC, and the session says it failed to reach etcd.
            let mut c = f.config();
            c.etcd.endpoints = vec![http.clone()];
            c.etcd.tls = None;
            let (e, status) = failing_claim(c).await;
            eprintln!("plain http to the TLS server: claim error: {e}");
            eprintln!("plain http to the TLS server: status: {status:?}");
            assert!(e.contains(&http), "names the endpoint: {e}");
            assert!(
                e.contains("TLS only") && e.contains("cluster.etcd.tls"),
                "{e}"
            );
            assert!(!status.connected);
        })
    });
}
