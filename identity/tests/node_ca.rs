//! The node CA end to end: a real `node_ca::serve` over TLS 1.3 on
//! loopback TCP, real `NodeCaClient`s, a `Signer` backed by a real `CaSet`
//! whose `hosted` map the tests control, and a `Registry` in a temporary
//! directory.
//!
//! Covered: joining and what a node SVID is good for (X.509- and JWT-SVIDs
//! of hosted identities, the bundle, renewal); what a node may not have
//! (other nodes' identities, reserved and foreign IDs); join tokens
//! (single use, forged, expired, not spent by a refused request);
//! revocation and re-joining (the old node SVID stays refused); and the
//! TLS layer (a node SVID of another CA, a client that trusts another
//! bundle, a server presenting the wrong SPIFFE ID).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use palisade_identity::ca::{CaSet, EcKey, KeyUse, RotationPolicy};
use palisade_identity::jwt;
use palisade_identity::node_ca::proto::node_ca_client::NodeCaClient as RawClient;
use palisade_identity::node_ca::proto::{
    Bundle, JoinRequest, SignJwtSvidRequest, SignX509SvidRequest,
};
use palisade_identity::node_ca::{
    self, csr, ClientError, DecodedBundle, NodeCaClient, NodeCaService, Registry, Signer,
};
use palisade_identity::tls::{self, FixedSvid, SvidSource, TrustBundle};
use palisade_identity::x509::{X509Bundle, X509Svid};
use palisade_identity::{SpiffeId, TrustDomain};
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

const TD: &str = "example.org";
const WEB: &str = "spiffe://example.org/ns/default/sa/web";
const DB: &str = "spiffe://example.org/ns/default/sa/db";
const AUDIENCE: &str = "spiffe://example.org/ns/default/sa/api";
const HOUR: Duration = Duration::from_secs(3600);
/// Every request, and the server's shutdown, is bounded by this.
const TIMEOUT: Duration = Duration::from_secs(10);

fn td() -> TrustDomain {
    TD.parse().unwrap()
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

fn node_id(name: &str) -> SpiffeId {
    node_ca::node_id(&td(), name).unwrap()
}

fn policy() -> RotationPolicy {
    RotationPolicy {
        ca_ttl: 24 * HOUR,
        max_svid_ttl: HOUR,
        propagation: Duration::from_secs(30),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ------------------------------------------------------------- fixtures ----

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "palisade-node-ca-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The CA's owner as the service sees it: a real `CaSet`, and which
/// identities each node hosts as the test says.
struct TestSigner {
    ca: Mutex<CaSet>,
    hosted: Mutex<BTreeMap<String, BTreeSet<SpiffeId>>>,
    /// Every ID an X.509- or JWT-SVID was signed for, in order.
    signed: Mutex<Vec<SpiffeId>>,
}

impl TestSigner {
    fn new() -> Self {
        Self {
            ca: Mutex::new(CaSet::bootstrap(td(), SystemTime::now(), &policy()).unwrap()),
            hosted: Mutex::new(BTreeMap::new()),
            signed: Mutex::new(Vec::new()),
        }
    }

    /// Places an endpoint with identity `id` on `node`.
    fn host(&self, node: &str, id: &SpiffeId) {
        lock(&self.hosted)
            .entry(node.to_owned())
            .or_default()
            .insert(id.clone());
    }

    fn x509_bundle(&self) -> X509Bundle {
        lock(&self.ca).x509_bundle()
    }

    fn active_generation(&self) -> u64 {
        lock(&self.ca).active().unwrap().lifecycle.number
    }

    fn signed(&self) -> Vec<SpiffeId> {
        lock(&self.signed).clone()
    }
}

impl Signer for TestSigner {
    fn sign_x509(&self, id: &SpiffeId, spki: &[u8]) -> Result<(Vec<Vec<u8>>, u64), String> {
        let mut ca = lock(&self.ca);
        let generation = ca.active().map_err(|e| e.to_string())?.lifecycle.number;
        let (chain, _, _) = ca
            .issue_x509_for_key(id, spki, SystemTime::now(), HOUR)
            .map_err(|e| e.to_string())?;
        lock(&self.signed).push(id.clone());
        Ok((chain, generation))
    }

    fn sign_jwt(&self, id: &SpiffeId, audience: &[String]) -> Result<String, String> {
        let ca = lock(&self.ca);
        let active = ca.active().map_err(|e| e.to_string())?;
        let svid = jwt::sign(
            id,
            audience,
            &active.jwt_key,
            &active.jwt_key_id(),
            SystemTime::now(),
            Duration::from_secs(300),
        )
        .map_err(|e| e.to_string())?;
        lock(&self.signed).push(id.clone());
        Ok(svid.token)
    }

    fn bundle(&self) -> Bundle {
        let ca = lock(&self.ca);
        Bundle {
            trust_domain: ca.trust_domain().to_string(),
            x509_authorities: ca.x509_anchors().iter().map(|a| a.to_vec()).collect(),
            jwt_authorities: ca.jwt_bundle().to_jwks(),
            active_generation: ca.active().map_or(0, |g| g.lifecycle.number),
        }
    }

    fn hosted(&self, node: &str) -> BTreeSet<SpiffeId> {
        lock(&self.hosted).get(node).cloned().unwrap_or_default()
    }
}

/// What the server presents: an SVID as rustls wants it.
struct ServerSvid(Arc<CertifiedKey>);

impl SvidSource for ServerSvid {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A running node CA.
struct Ca {
    addr: SocketAddr,
    signer: Arc<TestSigner>,
    registry: Arc<Registry>,
    trust: TrustBundle,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// Holds the registry file; removed when the CA is dropped.
    _dir: TempDir,
}

impl Ca {
    /// A CA server presenting `spiffe://example.org/palisade/ca`.
    async fn start() -> Self {
        Self::start_presenting(&node_ca::server_id(&td()).unwrap()).await
    }

    /// A CA server presenting an SVID (of its own CA) for `presented`.
    async fn start_presenting(presented: &SpiffeId) -> Self {
        let dir = TempDir::new();
        let signer = Arc::new(TestSigner::new());
        let registry = Arc::new(Registry::open(&dir.path().join("nodes.json")).unwrap());
        let trust = TrustBundle::new(signer.x509_bundle());
        let (server_svid, _) = lock(&signer.ca)
            .issue_x509(presented, SystemTime::now(), HOUR)
            .unwrap();
        let source = Arc::new(ServerSvid(tls::certified_key(&server_svid).unwrap()));
        let config = tls::server_config(source, trust.clone(), false).unwrap();
        let service = NodeCaService::new(td(), signer.clone(), registry.clone(), trust.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(node_ca::serve(
            listener,
            Arc::new(config),
            service,
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            signer,
            registry,
            trust,
            shutdown: Some(tx),
            server: Some(server),
            _dir: dir,
        }
    }

    fn token(&self, node: &str) -> String {
        self.registry
            .create_token(node, Duration::from_secs(600), SystemTime::now())
            .unwrap()
            .0
    }

    /// A client that trusts this CA's bundle and presents `svid`.
    fn client(&self, svid: Option<&X509Svid>) -> NodeCaClient {
        client_trusting(self.addr, self.trust.clone(), svid)
    }

    /// Joins `node` with a fresh token; returns its SVID, the bundle, and a
    /// client presenting the SVID.
    async fn join(&self, node: &str) -> (X509Svid, DecodedBundle, NodeCaClient) {
        let (svid, bundle) = self
            .client(None)
            .join(&self.token(node))
            .await
            .unwrap_or_else(|e| panic!("{node} cannot join: {e}"));
        let client = self.client(Some(&svid));
        (svid, bundle, client)
    }

    /// A raw gRPC client (to send what `NodeCaClient` never would).
    fn raw(&self, svid: Option<&X509Svid>) -> RawClient<Channel> {
        let source = svid.map(|s| Arc::new(FixedSvid::new(s).unwrap()) as Arc<dyn SvidSource>);
        let server = node_ca::server_id(&td()).unwrap();
        let config = tls::client_config(server, self.trust.clone(), source).unwrap();
        let connector = TlsConnector::from(Arc::new(config));
        let addr = self.addr;
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let connector = connector.clone();
                async move {
                    let tcp = TcpStream::connect(addr).await?;
                    let tls = connector
                        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                        .await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }));
        RawClient::new(channel)
    }

    /// Whether the token named `token` is still unspent.
    fn unspent(&self, token: &str) -> bool {
        let id = token.split('.').nth(1).unwrap();
        self.registry
            .snapshot()
            .tokens
            .iter()
            .any(|t| t.id == id && t.used.is_none())
    }

    /// Shuts the server down and waits (bounded) for it to finish.
    async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        let server = self.server.take().unwrap();
        tokio::time::timeout(TIMEOUT, server)
            .await
            .expect("the server shuts down in time")
            .expect("the server task does not panic")
            .expect("the server ends cleanly");
    }
}

fn client_trusting(addr: SocketAddr, trust: TrustBundle, svid: Option<&X509Svid>) -> NodeCaClient {
    let source = svid.map(|s| Arc::new(FixedSvid::new(s).unwrap()) as Arc<dyn SvidSource>);
    NodeCaClient::new(addr, &td(), trust, source, TIMEOUT).unwrap()
}

/// A refusal in the TLS layer: the request never reached the service
/// (which would have answered `Unauthenticated` or `PermissionDenied`).
#[track_caller]
fn assert_transport_refused<T: std::fmt::Debug>(result: Result<T, ClientError>, what: &str) {
    let status = refusal(result);
    assert!(
        matches!(status.code(), Code::Unknown | Code::Unavailable),
        "{what}: {status:?}"
    );
}

/// The status the CA (or the transport) refused with.
#[track_caller]
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> tonic::Status {
    match result {
        Err(ClientError::Status { status, .. }) => *status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, ClientError>, code: Code, what: &str) {
    let status = refusal(result);
    assert_eq!(status.code(), code, "{what}: {status:?}");
}

fn new_csr() -> Vec<u8> {
    csr::request_for(&EcKey::generate(KeyUse::X509).unwrap()).unwrap()
}

// ---------------------------------------------------------------- tests ----

#[tokio::test]
async fn a_node_joins_and_gets_svids_for_what_it_hosts() {
    let ca = Ca::start().await;
    let web = id(WEB);
    ca.signer.host("node-a", &web);

    // Join.
    let (node_svid, bundle, node) = ca.join("node-a").await;
    assert_eq!(node_svid.spiffe_id(), &node_id("node-a"));
    let now = SystemTime::now();
    let verified = bundle.x509.verify(node_svid.chain(), now).unwrap();
    assert_eq!(verified.spiffe_id(), &node_id("node-a"));
    ca.signer
        .x509_bundle()
        .verify(node_svid.chain(), now)
        .unwrap();
    assert_eq!(bundle.active_generation, ca.signer.active_generation());
    assert_eq!(bundle.jwt.trust_domain(), &td());
    assert_eq!(bundle.jwt.keys().len(), 1);
    let registered = ca.registry.snapshot();
    assert!(registered.nodes["node-a"].revoked.is_none());
    assert!(registered.tokens.iter().all(|t| t.used.is_some()));

    // An X.509-SVID for a hosted identity, for a key the node holds.
    let signed = node.sign_x509(&web).await.unwrap();
    assert_eq!(signed.svid.spiffe_id(), &web);
    assert_eq!(signed.generation, ca.signer.active_generation());
    let verified = bundle.x509.verify(signed.svid.chain(), now).unwrap();
    assert_eq!(verified.spiffe_id(), &web);
    assert!(signed.svid.not_after() <= SystemTime::now() + HOUR);
    assert_ne!(
        signed.svid.private_key().secret_der(),
        node_svid.private_key().secret_der(),
        "every SVID has its own key"
    );

    // A JWT-SVID for it, checked against the bundle the CA serves.
    let token = node.sign_jwt(&web, &[AUDIENCE.to_owned()]).await.unwrap();
    let fetched = node.fetch_bundle().await.unwrap();
    assert_eq!(fetched.x509.len(), 1);
    assert_eq!(fetched.active_generation, ca.signer.active_generation());
    let jwt_bundle = &fetched.jwt;
    let bundle_for = |t: &TrustDomain| (t == jwt_bundle.trust_domain()).then_some(jwt_bundle);
    let validated = jwt::validate(&token, AUDIENCE, bundle_for, SystemTime::now()).unwrap();
    assert_eq!(validated.spiffe_id, web);
    assert!(
        jwt::validate(
            &token,
            "spiffe://example.org/other",
            bundle_for,
            SystemTime::now()
        )
        .is_err(),
        "the audience is the one asked for"
    );
    fetched.x509.verify(signed.svid.chain(), now).unwrap();
    assert_refused(
        node.sign_jwt(&web, &[]).await,
        Code::InvalidArgument,
        "a JWT-SVID without an audience",
    );

    // Renewal: a new node SVID for the same node, with a new key, that
    // works in turn.
    let (renewed, renewed_bundle) = node.renew_node().await.unwrap();
    assert_eq!(renewed.spiffe_id(), &node_id("node-a"));
    assert_ne!(renewed.leaf(), node_svid.leaf());
    assert_ne!(
        renewed.private_key().secret_der(),
        node_svid.private_key().secret_der()
    );
    renewed_bundle
        .x509
        .verify(renewed.chain(), SystemTime::now())
        .unwrap();
    let renewed_client = ca.client(Some(&renewed));
    let again = renewed_client.sign_x509(&web).await.unwrap();
    assert_eq!(again.svid.spiffe_id(), &web);

    assert_eq!(
        ca.signer.signed(),
        vec![
            node_id("node-a"),
            web.clone(),
            web.clone(),
            node_id("node-a"),
            web
        ]
    );
    drop((node, renewed_client));
    ca.stop().await;
}

#[tokio::test]
async fn a_node_gets_nothing_it_does_not_host() {
    let ca = Ca::start().await;
    let (web, db) = (id(WEB), id(DB));
    ca.signer.host("node-a", &web);
    ca.signer.host("node-b", &db);
    let (node_a_svid, _, a) = ca.join("node-a").await;
    let (_, _, b) = ca.join("node-b").await;

    // An identity hosted only on node-b.
    let status = refusal(a.sign_x509(&db).await);
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("node-a"), "{status:?}");
    assert!(status.message().contains(DB), "{status:?}");
    assert_refused(
        a.sign_jwt(&db, &[AUDIENCE.to_owned()]).await,
        Code::PermissionDenied,
        "a JWT-SVID of node-b's identity",
    );
    // ...which node-b does get: the refusal is about the node.
    b.sign_x509(&db).await.unwrap();

    // Reserved IDs: other nodes, itself through SignX509Svid, the CA
    // server. Refused whether or not the cluster store (wrongly) places
    // them on the node.
    let reserved = [
        node_id("node-b"),
        node_id("node-a"),
        node_ca::server_id(&td()).unwrap(),
    ];
    for poisoned in [false, true] {
        for r in &reserved {
            if poisoned {
                ca.signer.host("node-a", r);
            }
            assert_refused(
                a.sign_x509(r).await,
                Code::PermissionDenied,
                &format!("X.509 {r} (in the hosted set: {poisoned})"),
            );
            assert_refused(
                a.sign_jwt(r, &[AUDIENCE.to_owned()]).await,
                Code::PermissionDenied,
                &format!("JWT {r} (in the hosted set: {poisoned})"),
            );
        }
    }

    // Another trust domain, even when the store says it is hosted.
    let foreign = id("spiffe://other.org/ns/default/sa/web");
    ca.signer.host("node-a", &foreign);
    assert_refused(
        a.sign_x509(&foreign).await,
        Code::PermissionDenied,
        "a foreign trust domain",
    );
    assert_refused(
        a.sign_jwt(&foreign, &[AUDIENCE.to_owned()]).await,
        Code::PermissionDenied,
        "a foreign trust domain (JWT)",
    );

    // Not a SPIFFE ID at all.
    let mut raw = ca.raw(Some(&node_a_svid));
    for garbage in [
        "not a spiffe id",
        "spiffe://",
        "spiffe://example.org/a//b",
        "",
    ] {
        let status = raw
            .sign_x509_svid(SignX509SvidRequest {
                spiffe_id: garbage.to_owned(),
                csr: new_csr(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{garbage:?}: {status:?}"
        );
        let status = raw
            .sign_jwt_svid(SignJwtSvidRequest {
                spiffe_id: garbage.to_owned(),
                audience: vec![AUDIENCE.to_owned()],
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{garbage:?}: {status:?}"
        );
    }
    // A hosted ID with a request that proves no key.
    let status = raw
        .sign_x509_svid(SignX509SvidRequest {
            spiffe_id: WEB.to_owned(),
            csr: b"not a CSR".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // The same raw connection gets what the node hosts: the refusals above
    // were about the requests.
    let granted = raw
        .sign_x509_svid(SignX509SvidRequest {
            spiffe_id: WEB.to_owned(),
            csr: new_csr(),
        })
        .await
        .unwrap()
        .into_inner();
    let verified = ca
        .signer
        .x509_bundle()
        .verify(&granted.chain, SystemTime::now())
        .unwrap();
    assert_eq!(verified.spiffe_id(), &web);

    assert_eq!(
        ca.signer.signed(),
        vec![node_id("node-a"), node_id("node-b"), db, web],
        "nothing was signed for a refused request"
    );
    drop((a, b, raw));
    ca.stop().await;
}

#[tokio::test]
async fn join_tokens_are_single_use_and_unforgeable() {
    let ca = Ca::start().await;
    let web = id(WEB);
    ca.signer.host("node-a", &web);
    let anonymous = ca.client(None);

    // Reuse.
    let token = ca.token("node-a");
    let (node_a_svid, _) = anonymous.join(&token).await.unwrap();
    assert_eq!(node_a_svid.spiffe_id(), &node_id("node-a"));
    let status = refusal(anonymous.join(&token).await);
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("already used"), "{status:?}");

    // Forged: a known token id with another secret; garbage; expired.
    let (real, record) = ca
        .registry
        .create_token("node-c", Duration::from_secs(600), SystemTime::now())
        .unwrap();
    let forged = format!("pjt1.{}.{}", record.id, URL_SAFE_NO_PAD.encode([7u8; 32]));
    let (expired, _) = ca
        .registry
        .create_token("node-c", Duration::ZERO, SystemTime::now())
        .unwrap();
    for bad in [
        forged.as_str(),
        "pjt1.000000000000.AAAA",
        "hello",
        "",
        expired.as_str(),
    ] {
        assert_refused(anonymous.join(bad).await, Code::Unauthenticated, bad);
    }
    assert!(
        ca.unspent(&real),
        "a forged secret does not spend the token"
    );

    // A join whose request proves no key is refused before the token is
    // spent; the token then works.
    let token_b = ca.token("node-b");
    let status = ca
        .raw(None)
        .join(JoinRequest {
            token: token_b.clone(),
            csr: b"junk".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(ca.unspent(&token_b));
    let (node_b_svid, _) = anonymous.join(&token_b).await.unwrap();
    assert_eq!(node_b_svid.spiffe_id(), &node_id("node-b"));

    // Without a node SVID, only Join.
    assert_refused(
        anonymous.sign_x509(&web).await,
        Code::Unauthenticated,
        "SignX509Svid without a node SVID",
    );
    assert_refused(
        anonymous.sign_jwt(&web, &[AUDIENCE.to_owned()]).await,
        Code::Unauthenticated,
        "SignJwtSvid without a node SVID",
    );
    assert_refused(
        anonymous.fetch_bundle().await,
        Code::Unauthenticated,
        "FetchBundle without a node SVID",
    );
    assert_refused(
        anonymous.renew_node().await,
        Code::Unauthenticated,
        "RenewNode without a node SVID",
    );

    let nodes: Vec<String> = ca.registry.snapshot().nodes.into_keys().collect();
    assert_eq!(nodes, ["node-a", "node-b"]);
    assert_eq!(
        ca.signer.signed(),
        vec![node_id("node-a"), node_id("node-b")]
    );
    drop(anonymous);
    ca.stop().await;
}

#[tokio::test]
async fn a_revoked_node_is_refused_until_it_joins_again() {
    let ca = Ca::start().await;
    let web = id(WEB);
    ca.signer.host("node-a", &web);
    let (old_svid, _, old) = ca.join("node-a").await;
    old.fetch_bundle().await.unwrap();
    let pending = ca.token("node-a");

    ca.registry.revoke("node-a", SystemTime::now()).unwrap();
    for (what, result) in [
        ("FetchBundle", old.fetch_bundle().await.map(drop)),
        ("SignX509Svid", old.sign_x509(&web).await.map(drop)),
        (
            "SignJwtSvid",
            old.sign_jwt(&web, &[AUDIENCE.to_owned()]).await.map(drop),
        ),
        ("RenewNode", old.renew_node().await.map(drop)),
    ] {
        let status = refusal(result);
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
        assert!(status.message().contains("revoked"), "{what}: {status:?}");
    }
    assert_refused(
        ca.client(None).join(&pending).await,
        Code::Unauthenticated,
        "a token created before the revocation",
    );

    // Registry times are whole seconds and SVIDs are backdated by exactly
    // BACKDATE: a re-join in a later second than the old SVID's issuance
    // is what makes the old SVID predate it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (new_svid, _, new) = ca.join("node-a").await;
    assert_eq!(new_svid.spiffe_id(), &node_id("node-a"));
    new.fetch_bundle().await.unwrap();
    assert_eq!(new.sign_x509(&web).await.unwrap().svid.spiffe_id(), &web);

    // The old SVID stays refused, on its old connection and on a new one.
    for client in [&old, &ca.client(Some(&old_svid))] {
        let status = refusal(client.sign_x509(&web).await);
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("predates"), "{status:?}");
    }
    assert!(ca.registry.snapshot().nodes["node-a"].revoked.is_none());
    drop((old, new));
    ca.stop().await;
}

#[tokio::test]
async fn tls_refuses_other_cas_and_the_wrong_server() {
    let ca = Ca::start().await;
    let web = id(WEB);
    ca.signer.host("node-a", &web);
    // node-a is admitted: a node SVID of the right CA would be accepted.
    let (_, _, real) = ca.join("node-a").await;

    // A node SVID for node-a from another CA of the same trust domain.
    let mut rogue_ca = CaSet::bootstrap(td(), SystemTime::now(), &policy()).unwrap();
    let (rogue_svid, _) = rogue_ca
        .issue_x509(&node_id("node-a"), SystemTime::now(), HOUR)
        .unwrap();
    let rogue = ca.client(Some(&rogue_svid));
    assert_transport_refused(rogue.sign_x509(&web).await, "a rogue node SVID");
    assert_transport_refused(rogue.fetch_bundle().await, "a rogue node SVID");
    // Even Join, which needs no SVID, fails in the handshake, and the
    // token is not spent.
    let token = ca.token("node-b");
    assert_transport_refused(rogue.join(&token).await, "a rogue node SVID");
    assert!(ca.unspent(&token));

    // A client that trusts another bundle refuses the real server: nothing
    // reaches it, the token stays unspent.
    let elsewhere = TrustBundle::new(rogue_ca.x509_bundle());
    let misled = client_trusting(ca.addr, elsewhere, None);
    let status = refusal(misled.join(&token).await);
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("invalid peer certificate"),
        "{status:?}"
    );
    assert!(ca.unspent(&token));
    let (node_b, _) = ca.client(None).join(&token).await.unwrap();
    assert_eq!(node_b.spiffe_id(), &node_id("node-b"));

    // A server with a valid SVID of its trust domain, but not the CA's ID.
    let impostor = Ca::start_presenting(&node_id("node-z")).await;
    let impostor_token = impostor.token("node-b");
    let status = refusal(impostor.client(None).join(&impostor_token).await);
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("palisade/node/node-z"),
        "the error names whom the server presented: {status:?}"
    );
    assert!(impostor.unspent(&impostor_token));

    assert_eq!(
        ca.signer.signed(),
        vec![node_id("node-a"), node_id("node-b")],
        "nothing was signed for a refused client"
    );
    assert!(impostor.signer.signed().is_empty());
    real.fetch_bundle().await.unwrap();
    drop((real, rogue, misled));
    impostor.stop().await;
    ca.stop().await;
}
