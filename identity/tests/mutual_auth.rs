//! palisade-auth/1 end to end: a real `mutual_auth::Server` and a real
//! `mutual_auth::Client` over loopback TCP, with SVIDs issued by real
//! `CaSet`s.
//!
//! Covered: a successful handshake seen from both sides; a server holding
//! several identities, and one without the SVID asked for; either side
//! presenting another identity's valid SVID; SVIDs of another trust domain
//! and of a rogue CA of the same trust domain; expired SVIDs and SVIDs not
//! valid yet; a trust bundle replaced while server and client run; a
//! refusal by the admission; nothing listening and a peer that never
//! answers; a client that resets the connection once it has its `ok`;
//! hostile clients (garbage, TLS 1.2, no client certificate, bad or missing
//! server name, another or no ALPN, a stalled client) and hostile servers
//! (bad response lines). Every failure is asserted on the side that detects
//! it, by kind, and the other side must fail too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use palisade_identity::ca::{CaSet, RotationPolicy};
use palisade_identity::mutual_auth::{
    Admission, AuthError, Authenticated, CertificateProblem, Client, IdentitySvids, LocalSvid,
    Pair, Server, WireError, ALPN,
};
use palisade_identity::tls::{self, CertifiedKey, FixedSvid, SvidSource, TrustBundle};
use palisade_identity::x509::{ChainError, X509Svid};
use palisade_identity::{NumericIdentity, SpiffeId, TrustDomain};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const TD: &str = "example.org";
const HOUR: Duration = Duration::from_secs(3600);
/// Bounds every handshake (and every wait) of a test that should finish.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The server's identity in the tests.
const S: NumericIdentity = NumericIdentity(5);
/// The client's identity in the tests.
const C: NumericIdentity = NumericIdentity(7);

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

/// `t` as a certificate has it. (The `X509Svid` a `CaSet` returns keeps
/// the fraction of a second of `now + ttl`; its certificate does not.)
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn identity_id(td_name: &str, id: NumericIdentity) -> SpiffeId {
    format!("spiffe://{td_name}/identity/{id}").parse().unwrap()
}

// ------------------------------------------------------------- fixtures ----

/// A CA of a trust domain, as its owner sees it.
struct Ca {
    set: CaSet,
}

impl Ca {
    fn new(td_name: &str) -> Self {
        Self::started_at(td_name, SystemTime::now())
    }

    /// A CA whose first generation became active at `at` (to issue SVIDs
    /// that have already expired).
    fn started_at(td_name: &str, at: SystemTime) -> Self {
        let policy = RotationPolicy {
            ca_ttl: 24 * HOUR,
            max_svid_ttl: 4 * HOUR,
            propagation: Duration::from_secs(30),
        };
        Self {
            set: CaSet::bootstrap(td(td_name), at, &policy).unwrap(),
        }
    }

    fn trust(&self) -> TrustBundle {
        TrustBundle::new(self.set.x509_bundle())
    }

    /// An SVID of `identity/<id>`, valid from now for `ttl`.
    fn svid(&mut self, id: NumericIdentity, ttl: Duration) -> X509Svid {
        self.svid_at(id, SystemTime::now(), ttl)
    }

    fn svid_at(&mut self, id: NumericIdentity, at: SystemTime, ttl: Duration) -> X509Svid {
        let spiffe_id = identity_id(self.set.trust_domain().name(), id);
        self.set.issue_x509(&spiffe_id, at, ttl).unwrap().0
    }
}

fn local(svid: &X509Svid) -> LocalSvid {
    LocalSvid::new(tls::certified_key(svid).unwrap()).unwrap()
}

/// The SVIDs a side holds, by the identity they are asked for: a lying
/// side maps an identity to another identity's SVID. They can be replaced
/// while a server or client uses them.
#[derive(Default)]
struct Svids(Mutex<BTreeMap<NumericIdentity, LocalSvid>>);

impl Svids {
    fn with(self, id: NumericIdentity, svid: &X509Svid) -> Self {
        self.set(id, svid);
        self
    }

    fn set(&self, id: NumericIdentity, svid: &X509Svid) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, local(svid));
    }

    fn arc(self) -> Arc<dyn IdentitySvids> {
        Arc::new(self)
    }
}

impl IdentitySvids for Svids {
    fn svid(&self, id: NumericIdentity) -> Option<LocalSvid> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }
}

/// Admits (or refuses) every pair, and remembers what it was asked.
struct Admit {
    answer: Result<(), String>,
    asked: Mutex<Vec<(SocketAddr, NumericIdentity, NumericIdentity)>>,
}

impl Admit {
    fn answering(answer: Result<(), String>) -> Arc<Self> {
        Arc::new(Self {
            answer,
            asked: Mutex::new(Vec::new()),
        })
    }

    fn asked(&self) -> Vec<(SocketAddr, NumericIdentity, NumericIdentity)> {
        self.asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Admission for Admit {
    fn admit(
        &self,
        peer: SocketAddr,
        server: NumericIdentity,
        client: NumericIdentity,
    ) -> Result<(), String> {
        self.asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((peer, server, client));
        self.answer.clone()
    }
}

/// A server on a loopback port, answering handshakes one at a time.
struct Listening {
    server: Arc<Server>,
    listener: TcpListener,
    addr: SocketAddr,
}

impl Listening {
    async fn new(trust: TrustBundle, svids: Arc<dyn IdentitySvids>, admit: Arc<Admit>) -> Self {
        let server = Server::new(td(TD), trust, svids, admit).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Self {
            server: Arc::new(server),
            listener,
            addr,
        }
    }

    /// Answers the next connection (bounded by [`TIMEOUT`], as a caller
    /// would bound it).
    async fn answer_one(&self) -> Result<Authenticated, AuthError> {
        let (stream, peer) = self.listener.accept().await.unwrap();
        tokio::time::timeout(TIMEOUT, self.server.accept(stream, peer))
            .await
            .expect("the server answers within the timeout")
    }

    /// Runs `client` against the next handshake the server answers;
    /// returns (client result, server result).
    async fn exchange<T>(
        &self,
        client: impl Future<Output = T>,
    ) -> (T, Result<Authenticated, AuthError>) {
        tokio::join!(client, self.answer_one())
    }
}

fn client(trust: TrustBundle, svids: Arc<dyn IdentitySvids>) -> Client {
    Client::new(td(TD), trust, svids)
}

#[track_caller]
fn kind<T: std::fmt::Debug>(result: &Result<T, AuthError>) -> &'static str {
    match result {
        Ok(v) => panic!("expected a failure, got {v:?}"),
        Err(e) => e.kind(),
    }
}

/// Asserts the detecting side's kind, and that the other side failed.
#[track_caller]
fn assert_fails(
    detecting: &Result<Authenticated, AuthError>,
    expected: &str,
    other: &Result<Authenticated, AuthError>,
) {
    let k = kind(detecting);
    assert_eq!(
        k,
        expected,
        "detecting side: {}",
        detecting.as_ref().unwrap_err()
    );
    assert!(other.is_err(), "the other side succeeded: {other:?}");
}

/// The usual setup: one CA, the server holds `identity/5`, the client
/// `identity/7`.
struct Pairing {
    ca: Ca,
    server_svid: X509Svid,
    client_svid: X509Svid,
}

impl Pairing {
    fn new() -> Self {
        let mut ca = Ca::new(TD);
        let server_svid = ca.svid(S, HOUR);
        let client_svid = ca.svid(C, 2 * HOUR);
        Self {
            ca,
            server_svid,
            client_svid,
        }
    }

    async fn server(&self, admit: Arc<Admit>) -> Listening {
        Listening::new(
            self.ca.trust(),
            Svids::default().with(S, &self.server_svid).arc(),
            admit,
        )
        .await
    }

    fn client(&self) -> Client {
        client(
            self.ca.trust(),
            Svids::default().with(C, &self.client_svid).arc(),
        )
    }
}

// ---------------------------------------------------------------- cases ----

#[tokio::test]
async fn both_sides_authenticate_the_pair() {
    let p = Pairing::new();
    let admit = Admit::answering(Ok(()));
    let server = p.server(admit.clone()).await;
    // 127.0.0.2 is loopback too (Linux routes 127/8 to lo): the server
    // sees the bound source address.
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let (c, s) = server
        .exchange(p.client().dial(server.addr, Some(from), C, S, TIMEOUT))
        .await;
    let c = c.unwrap();
    let s = s.unwrap();

    // Both sides read both NotAfters from the certificates (the
    // `X509Svid`s the CA returned keep a fraction of a second).
    let (server_end, client_end) = (
        whole_seconds(p.server_svid.not_after()),
        whole_seconds(p.client_svid.not_after()),
    );
    assert!(server_end < client_end, "the two SVIDs differ in lifetime");
    assert_eq!(
        c,
        Authenticated {
            local: C,
            remote: S,
            peer_id: identity_id(TD, S),
            local_not_after: client_end,
            peer_not_after: server_end,
            expires: server_end,
        }
    );
    assert_eq!(
        s,
        Authenticated {
            local: S,
            remote: C,
            peer_id: identity_id(TD, C),
            local_not_after: server_end,
            peer_not_after: client_end,
            expires: server_end,
        }
    );
    let asked = admit.asked();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].0.ip(), from);
    assert_eq!((asked[0].1, asked[0].2), (S, C));
}

#[tokio::test]
async fn expires_is_the_earlier_not_after_on_either_side() {
    // This time the client's SVID expires first, and both sides use the
    // same identity (two endpoints of one identity on two nodes).
    let mut ca = Ca::new(TD);
    let server_svid = ca.svid(S, 3 * HOUR);
    let client_svid = ca.svid(S, HOUR);
    let server = Listening::new(
        ca.trust(),
        Svids::default().with(S, &server_svid).arc(),
        Admit::answering(Ok(())),
    )
    .await;
    let c = client(ca.trust(), Svids::default().with(S, &client_svid).arc());
    let (c, s) = server
        .exchange(c.dial(server.addr, None, S, S, TIMEOUT))
        .await;
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!(c.expires, whole_seconds(client_svid.not_after()));
    assert_eq!(s.expires, c.expires);
    assert_eq!(c.local_not_after, c.expires);
    assert_eq!(s.local_not_after, whole_seconds(server_svid.not_after()));
    assert_eq!(c.peer_not_after, whole_seconds(server_svid.not_after()));
    assert_eq!(s.peer_not_after, whole_seconds(client_svid.not_after()));
}

#[tokio::test]
async fn any_stream_will_do_and_both_futures_can_be_spawned() {
    let p = Pairing::new();
    let admit = Admit::answering(Ok(()));
    let server = Server::new(
        td(TD),
        p.ca.trust(),
        Svids::default().with(S, &p.server_svid).arc(),
        admit.clone(),
    )
    .unwrap();
    let client = p.client();
    let (client_end, server_end) = tokio::io::duplex(4096);
    let peer: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let s = tokio::spawn(async move { server.accept(server_end, peer).await });
    let c = tokio::spawn(async move { client.authenticate(client_end, C, S).await });
    let (c, s) = tokio::time::timeout(TIMEOUT, async { (c.await, s.await) })
        .await
        .unwrap();
    let (c, s) = (c.unwrap().unwrap(), s.unwrap().unwrap());
    assert_eq!((c.local, c.remote, s.local, s.remote), (C, S, S, C));
    assert_eq!(c.expires, s.expires);
    assert_eq!(admit.asked(), vec![(peer, S, C)]);
}

#[test]
fn a_local_svid_takes_its_not_after_from_the_leaf() {
    let mut ca = Ca::new(TD);
    let svid = ca.svid(S, HOUR);
    let key = tls::certified_key(&svid).unwrap();
    let local = LocalSvid::new(key.clone()).unwrap();
    assert_eq!(local.not_after(), whole_seconds(svid.not_after()));
    assert_ne!(
        local.not_after(),
        svid.not_after(),
        "the CA's X509Svid keeps the fraction of a second its certificate lost"
    );
    assert!(Arc::ptr_eq(local.key(), &key));

    let with_chain = |chain: Vec<Vec<u8>>| {
        let chain = chain.into_iter().map(CertificateDer::from).collect();
        LocalSvid::new(Arc::new(CertifiedKey::new(chain, key.key.clone())))
    };
    let e = with_chain(Vec::new()).unwrap_err();
    assert!(matches!(e, ChainError::Empty), "{e:?}");
    let e = with_chain(vec![b"not a certificate".to_vec()]).unwrap_err();
    assert!(
        matches!(e, ChainError::Malformed { position: 1, .. }),
        "{e:?}"
    );
    let mut trailing = svid.leaf().to_vec();
    trailing.push(0);
    let e = with_chain(vec![trailing]).unwrap_err();
    assert!(
        matches!(
            e,
            ChainError::TrailingData {
                position: 1,
                trailing: 1
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_server_of_two_identities_presents_the_one_asked_for() {
    let mut p = Pairing::new();
    let six = NumericIdentity(6);
    let svid_6 = p.ca.svid(six, 3 * HOUR);
    let admit = Admit::answering(Ok(()));
    let server = Listening::new(
        p.ca.trust(),
        Svids::default()
            .with(S, &p.server_svid)
            .with(six, &svid_6)
            .arc(),
        admit.clone(),
    )
    .await;
    for (remote, svid) in [(S, &p.server_svid), (six, &svid_6), (S, &p.server_svid)] {
        let (c, s) = server
            .exchange(p.client().dial(server.addr, None, C, remote, TIMEOUT))
            .await;
        let (c, s) = (c.unwrap(), s.unwrap());
        assert_eq!(c.peer_id, identity_id(TD, remote));
        assert_eq!(c.peer_not_after, whole_seconds(svid.not_after()));
        assert_eq!((c.local, c.remote), (C, remote));
        assert_eq!((s.local, s.remote), (remote, C));
        assert_eq!(s.peer_id, identity_id(TD, C));
        assert_eq!(s.local_not_after, c.peer_not_after);
    }
    let asked: Vec<_> = admit.asked().iter().map(|a| (a.1, a.2)).collect();
    assert_eq!(asked, vec![(S, C), (six, C), (S, C)]);
}

#[tokio::test]
async fn a_server_without_the_identity_fails_the_handshake() {
    let p = Pairing::new();
    // The server holds identity/5 only; the client asks for identity/6.
    let server = p.server(Admit::answering(Ok(()))).await;
    let other = NumericIdentity(6);
    let (c, s) = server
        .exchange(p.client().dial(server.addr, None, C, other, TIMEOUT))
        .await;
    assert_fails(&s, "no-local-svid", &c);
    assert!(
        matches!(s, Err(AuthError::NoLocalSvid { identity }) if identity == other),
        "{s:?}"
    );
    // The client learns it through an alert.
    assert_eq!(kind(&c), "tls", "{c:?}");
}

#[tokio::test]
async fn a_client_without_its_svid_sends_nothing() {
    let p = Pairing::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = p
        .client()
        .dial(addr, None, NumericIdentity(8), S, TIMEOUT)
        .await;
    assert_eq!(kind(&c), "no-local-svid");
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "the client connected anyway");
}

#[tokio::test]
async fn a_server_presenting_another_identity_is_refused_by_the_client() {
    let mut p = Pairing::new();
    let svid_7 = p.ca.svid(NumericIdentity(7), HOUR);
    // Asked for identity/5, the server presents its (valid) SVID of 7.
    let server = Listening::new(
        p.ca.trust(),
        Svids::default().with(S, &svid_7).arc(),
        Admit::answering(Ok(())),
    )
    .await;
    let (c, s) = server
        .exchange(p.client().dial(server.addr, None, C, S, TIMEOUT))
        .await;
    assert_fails(&c, "wrong-identity", &s);
    assert!(
        c.as_ref()
            .unwrap_err()
            .to_string()
            .contains("spiffe://example.org/identity/7"),
        "{c:?}"
    );
}

#[tokio::test]
async fn a_client_presenting_another_identity_is_refused_by_the_server() {
    let mut p = Pairing::new();
    let svid_9 = p.ca.svid(NumericIdentity(9), HOUR);
    let admit = Admit::answering(Ok(()));
    let server = p.server(admit.clone()).await;
    // Claiming identity/7 (in the server name), the client presents its
    // (valid) SVID of 9.
    let liar = client(p.ca.trust(), Svids::default().with(C, &svid_9).arc());
    let (c, s) = server
        .exchange(liar.dial(server.addr, None, C, S, TIMEOUT))
        .await;
    // The server refuses it in the handshake, as any other certificate
    // problem: the client learns it through an alert.
    assert_fails(&s, "wrong-identity", &c);
    assert!(
        s.as_ref()
            .unwrap_err()
            .to_string()
            .contains("presented spiffe://example.org/identity/9"),
        "{s:?}"
    );
    assert!(
        matches!(
            &c,
            Err(AuthError::Tls {
                source: rustls::Error::AlertReceived(_)
            })
        ),
        "{c:?}"
    );
    assert!(admit.asked().is_empty(), "admission was asked");
}

#[tokio::test]
async fn another_trust_domain_is_untrusted_on_either_side() {
    let p = Pairing::new();
    let mut other = Ca::new("other.example");
    let foreign_server = other.svid(S, HOUR);
    let foreign_client = other.svid(C, HOUR);

    // The server presents spiffe://other.example/identity/5.
    let server = Listening::new(
        p.ca.trust(),
        Svids::default().with(S, &foreign_server).arc(),
        Admit::answering(Ok(())),
    )
    .await;
    let (c, s) = server
        .exchange(p.client().dial(server.addr, None, C, S, TIMEOUT))
        .await;
    assert_fails(&c, "untrusted", &s);

    // The client presents spiffe://other.example/identity/7.
    let server = p.server(Admit::answering(Ok(()))).await;
    let foreign = client(
        p.ca.trust(),
        Svids::default().with(C, &foreign_client).arc(),
    );
    let (c, s) = server
        .exchange(foreign.dial(server.addr, None, C, S, TIMEOUT))
        .await;
    assert_fails(&s, "untrusted", &c);
}

#[tokio::test]
async fn a_rogue_ca_of_the_same_trust_domain_is_untrusted_on_either_side() {
    let p = Pairing::new();
    let mut rogue = Ca::new(TD);
    let rogue_server = rogue.svid(S, HOUR);
    let rogue_client = rogue.svid(C, HOUR);

    let server = Listening::new(
        p.ca.trust(),
        Svids::default().with(S, &rogue_server).arc(),
        Admit::answering(Ok(())),
    )
    .await;
    let (c, s) = server
        .exchange(p.client().dial(server.addr, None, C, S, TIMEOUT))
        .await;
    assert_fails(&c, "untrusted", &s);

    let server = p.server(Admit::answering(Ok(()))).await;
    let rogue = client(p.ca.trust(), Svids::default().with(C, &rogue_client).arc());
    let (c, s) = server
        .exchange(rogue.dial(server.addr, None, C, S, TIMEOUT))
        .await;
    assert_fails(&s, "untrusted", &c);
}

#[tokio::test]
async fn an_expired_svid_is_refused_on_either_side() {
    // A CA started three hours ago issues SVIDs two hours ago for one hour.
    let now = SystemTime::now();
    let mut ca = Ca::started_at(TD, now - 3 * HOUR);
    let expired_server = ca.svid_at(S, now - 2 * HOUR, HOUR);
    let expired_client = ca.svid_at(C, now - 2 * HOUR, HOUR);
    assert!(expired_server.not_after() < now);
    let server_svid = ca.svid(S, HOUR);
    let client_svid = ca.svid(C, HOUR);

    let server = Listening::new(
        ca.trust(),
        Svids::default().with(S, &expired_server).arc(),
        Admit::answering(Ok(())),
    )
    .await;
    let fresh = client(ca.trust(), Svids::default().with(C, &client_svid).arc());
    let (c, s) = server
        .exchange(fresh.dial(server.addr, None, C, S, TIMEOUT))
        .await;
    assert_fails(&c, "expired", &s);

    let server = Listening::new(
        ca.trust(),
        Svids::default().with(S, &server_svid).arc(),
        Admit::answering(Ok(())),
    )
    .await;
    let stale = client(ca.trust(), Svids::default().with(C, &expired_client).arc());
    let (c, s) = server
        .exchange(stale.dial(server.addr, None, C, S, TIMEOUT))
        .await;
    assert_fails(&s, "expired", &c);
}

#[tokio::test]
async fn an_svid_not_yet_valid_is_refused_on_either_side() {
    let now = SystemTime::now();
    let mut ca = Ca::new(TD);
    let early_server = ca.svid_at(S, now + HOUR, HOUR);
    let early_client = ca.svid_at(C, now + HOUR, HOUR);
    assert!(early_server.not_before() > now);
    let server_svid = ca.svid(S, HOUR);
    let client_svid = ca.svid(C, HOUR);
    let not_yet_valid = |r: &Result<Authenticated, AuthError>| {
        let e = r.as_ref().unwrap_err();
        assert!(
            matches!(
                e,
                AuthError::PeerCertificate {
                    problem: CertificateProblem::NotYetValid,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("certificate 1 of the chain is not valid before"),
            "{e}"
        );
    };

    let server = Listening::new(
        ca.trust(),
        Svids::default().with(S, &early_server).arc(),
        Admit::answering(Ok(())),
    )
    .await;
    let on_time = client(ca.trust(), Svids::default().with(C, &client_svid).arc());
    let (c, s) = server
        .exchange(on_time.dial(server.addr, None, C, S, TIMEOUT))
        .await;
    assert_fails(&c, "expired", &s);
    not_yet_valid(&c);

    let server = Listening::new(
        ca.trust(),
        Svids::default().with(S, &server_svid).arc(),
        Admit::answering(Ok(())),
    )
    .await;
    let early = client(ca.trust(), Svids::default().with(C, &early_client).arc());
    let (c, s) = server
        .exchange(early.dial(server.addr, None, C, S, TIMEOUT))
        .await;
    assert_fails(&s, "expired", &c);
    not_yet_valid(&s);
}

#[tokio::test]
async fn a_new_trust_bundle_applies_without_rebuilding_anything() {
    let mut old = Ca::new(TD);
    // Another CA of the same trust domain: a rotation to an unrelated root.
    let mut new = Ca::new(TD);
    let trust = old.trust();
    let server_svids = Arc::new(Svids::default().with(S, &old.svid(S, HOUR)));
    let client_svids = Arc::new(Svids::default().with(C, &old.svid(C, HOUR)));
    let server = Listening::new(
        trust.clone(),
        server_svids.clone(),
        Admit::answering(Ok(())),
    )
    .await;
    let client = client(trust.clone(), client_svids.clone());
    let (c, s) = server
        .exchange(client.dial(server.addr, None, C, S, TIMEOUT))
        .await;
    c.unwrap();
    s.unwrap();

    trust.set(new.set.x509_bundle());

    // The old CA's server SVID is refused by the client...
    let (c, s) = server
        .exchange(client.dial(server.addr, None, C, S, TIMEOUT))
        .await;
    assert_fails(&c, "untrusted", &s);
    // ... and, once the server has its new SVID, the old CA's client SVID
    // by the server.
    server_svids.set(S, &new.svid(S, HOUR));
    let (c, s) = server
        .exchange(client.dial(server.addr, None, C, S, TIMEOUT))
        .await;
    assert_fails(&s, "untrusted", &c);
    // The new CA's SVIDs pass.
    client_svids.set(C, &new.svid(C, HOUR));
    let (c, s) = server
        .exchange(client.dial(server.addr, None, C, S, TIMEOUT))
        .await;
    assert_eq!(c.unwrap().peer_id, identity_id(TD, S));
    assert_eq!(s.unwrap().peer_id, identity_id(TD, C));
}

/// A stream whose shutdown fails as on a connection the peer has reset.
struct ResetOnShutdown<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for ResetOnShutdown<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ResetOnShutdown<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
    }
}

#[tokio::test]
async fn a_failed_close_after_ok_is_still_a_success() {
    let p = Pairing::new();
    let server = Server::new(
        td(TD),
        p.ca.trust(),
        Svids::default().with(S, &p.server_svid).arc(),
        Admit::answering(Ok(())),
    )
    .unwrap();
    let client = p.client();
    let (client_end, server_end) = tokio::io::duplex(4096);
    let peer: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let (c, s) = tokio::time::timeout(TIMEOUT, async {
        tokio::join!(
            client.authenticate(client_end, C, S),
            server.accept(ResetOnShutdown(server_end), peer)
        )
    })
    .await
    .unwrap();
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!(c.expires, s.expires);
    assert_eq!(s.peer_id, identity_id(TD, C));
}

#[tokio::test]
async fn the_admission_refusal_reaches_the_client() {
    let p = Pairing::new();
    let admit = Admit::answering(Err(
        "node b hosts no endpoint of identity 7\n(as far as this node knows)".to_owned(),
    ));
    let server = p.server(admit.clone()).await;
    let (c, s) = server
        .exchange(p.client().dial(server.addr, None, C, S, TIMEOUT))
        .await;
    let sent = "node b hosts no endpoint of identity 7 (as far as this node knows)";
    assert_fails(&s, "refused", &c);
    assert_fails(&c, "refused", &s);
    assert!(
        matches!(&c, Err(AuthError::Refused { reason }) if reason == sent),
        "{c:?}"
    );
    assert!(
        matches!(&s, Err(AuthError::Refused { reason }) if reason == sent),
        "{s:?}"
    );
    assert_eq!(admit.asked().len(), 1);
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let p = Pairing::new();
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let c = p.client().dial(addr, None, C, S, TIMEOUT).await;
    assert_eq!(kind(&c), "connect", "{c:?}");
    assert!(
        matches!(&c, Err(AuthError::Connect { call: "connect", addr: a, .. }) if *a == addr),
        "{c:?}"
    );

    // A source address of the wrong family cannot be bound.
    let v6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    let c = p.client().dial(addr, Some(v6), C, S, TIMEOUT).await;
    assert!(
        matches!(&c, Err(AuthError::Connect { call: "bind", .. })),
        "{c:?}"
    );
}

#[tokio::test]
async fn a_peer_that_never_answers_times_out_in_time() {
    let p = Pairing::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts, then holds the connection without a word.
    let silent = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(TIMEOUT).await;
        drop(stream);
    });
    let limit = Duration::from_millis(300);
    let started = Instant::now();
    let c = p.client().dial(addr, None, C, S, limit).await;
    let took = started.elapsed();
    assert_eq!(kind(&c), "timeout", "{c:?}");
    assert!(took >= limit, "gave up after {took:?}");
    assert!(took < limit + Duration::from_secs(2), "took {took:?}");
    silent.abort();
}

// ------------------------------------------------------ hostile clients ----

/// Deterministic noise (xorshift), so a failure can be replayed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Sends `bytes`, then closes for writing; returns what the server sent
/// back (bounded).
async fn send_raw(addr: SocketAddr, bytes: Vec<u8>) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may close (and reset) early; that is its right.
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
    let mut back = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut back)).await;
    back
}

/// A TLS 1.2 ClientHello (no supported_versions extension) naming a pair
/// the server holds and offering palisade-auth/1.
fn tls12_client_hello(server_name: &str) -> Vec<u8> {
    fn extension(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
        out.extend(kind.to_be_bytes());
        out.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend(body);
    }
    fn vec16(body: &[u8]) -> Vec<u8> {
        let mut v = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        v.extend(body);
        v
    }
    let mut name = vec![0];
    name.extend(vec16(server_name.as_bytes()));
    let mut alpn = vec![u8::try_from(ALPN.len()).unwrap()];
    alpn.extend(ALPN);

    let mut extensions = Vec::new();
    extension(&mut extensions, 0x0000, &vec16(&name)); // server_name
    extension(&mut extensions, 0x000a, &[0, 4, 0x00, 0x17, 0x00, 0x1d]); // groups
    extension(&mut extensions, 0x000b, &[1, 0]); // ec_point_formats
    extension(&mut extensions, 0x000d, &[0, 4, 0x04, 0x03, 0x04, 0x01]); // sig algs
    extension(&mut extensions, 0x0010, &vec16(&alpn)); // ALPN

    let mut hello = vec![0x03, 0x03]; // TLS 1.2
    hello.extend([7; 32]); // random
    hello.push(0); // no session id
    hello.extend([0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]); // ECDHE-*-AES128-GCM-SHA256
    hello.extend([0x01, 0x00]); // null compression
    hello.extend(vec16(&extensions));

    let mut handshake = vec![0x01]; // client_hello
    handshake.extend(&u32::try_from(hello.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(vec16(&handshake));
    record
}

#[tokio::test]
async fn garbage_and_tls_1_2_fail_without_panic() {
    let p = Pairing::new();
    let server = p.server(Admit::answering(Ok(()))).await;

    let mut inputs: Vec<(String, Vec<u8>)> = (1..=8)
        .map(|seed| (format!("noise {seed}"), noise(seed, 64 * seed as usize)))
        .collect();
    inputs.push(("nothing".into(), Vec::new()));
    inputs.push(("HTTP".into(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()));
    // A handshake record announcing more than it carries.
    inputs.push(("short record".into(), vec![0x16, 0x03, 0x01, 0x40, 0x00, 1]));
    // A ClientHello cut in the middle.
    let hello = tls12_client_hello(
        &Pair {
            server: S,
            client: C,
        }
        .server_name(),
    );
    inputs.push(("cut hello".into(), hello[..hello.len() / 2].to_vec()));

    for (what, bytes) in inputs {
        let (_, s) = server.exchange(send_raw(server.addr, bytes)).await;
        assert_eq!(kind(&s), "tls", "{what}: {s:?}");
    }

    let (back, s) = server.exchange(send_raw(server.addr, hello)).await;
    assert_eq!(kind(&s), "tls", "TLS 1.2: {s:?}");
    assert!(
        matches!(
            &s,
            Err(AuthError::Tls {
                source: rustls::Error::PeerIncompatible(_)
            })
        ),
        "TLS 1.2: {s:?}"
    );
    assert_eq!(back.first(), Some(&0x15), "an alert record answers TLS 1.2");
}

/// A TLS client that is not a `mutual_auth::Client`: trusts the bundle and
/// expects identity/5, presents `svid` (if any), sends `name` (no SNI for
/// an IP address) and offers the protocols `alpn` (no ALPN extension when
/// empty).
async fn raw_tls_client(
    addr: SocketAddr,
    trust: TrustBundle,
    svid: Option<&X509Svid>,
    name: ServerName<'static>,
    alpn: &[&[u8]],
) -> std::io::Result<()> {
    let source = svid.map(|s| Arc::new(FixedSvid::new(s).unwrap()) as Arc<dyn SvidSource>);
    let mut config = tls::client_config(identity_id(TD, S), trust, source).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await?;
    Ok(())
}

#[tokio::test]
async fn tls_clients_that_break_the_protocol_are_refused() {
    let p = Pairing::new();
    let server = p.server(Admit::answering(Ok(()))).await;
    let good_name = Pair {
        server: S,
        client: C,
    }
    .server_name();
    let dns = |n: &str| ServerName::try_from(n.to_owned()).unwrap();

    // No client certificate.
    let (c, s) = server
        .exchange(raw_tls_client(
            server.addr,
            p.ca.trust(),
            None,
            dns(&good_name),
            &[ALPN],
        ))
        .await;
    assert_eq!(kind(&s), "untrusted", "no certificate: {s:?}");
    assert!(c.is_err(), "the client got through without a certificate");

    // Server names that are not a pair.
    for name in [
        "5.0.auth.palisade",
        "05.7.auth.palisade",
        "5.7.8.auth.palisade",
        "example.org",
    ] {
        let (c, s) = server
            .exchange(raw_tls_client(
                server.addr,
                p.ca.trust(),
                Some(&p.client_svid),
                dns(name),
                &[ALPN],
            ))
            .await;
        assert_eq!(kind(&s), "protocol", "{name}: {s:?}");
        assert!(c.is_err(), "{name}: the client got through");
    }

    // No server name at all (an IP address is never sent as SNI).
    let (c, s) = server
        .exchange(raw_tls_client(
            server.addr,
            p.ca.trust(),
            Some(&p.client_svid),
            ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()),
            &[ALPN],
        ))
        .await;
    assert!(
        matches!(
            &s,
            Err(AuthError::Protocol {
                source: WireError::NoServerName
            })
        ),
        "{s:?}"
    );
    assert!(c.is_err());

    // Another application protocol, and none at all (without the
    // server's check, rustls would complete a handshake without ALPN).
    let other: &[&[u8]] = &[b"h2"];
    for alpn in [other, &[]] {
        let (c, s) = server
            .exchange(raw_tls_client(
                server.addr,
                p.ca.trust(),
                Some(&p.client_svid),
                dns(&good_name),
                alpn,
            ))
            .await;
        assert!(
            matches!(
                &s,
                Err(AuthError::Protocol {
                    source: WireError::NoAlpn
                })
            ),
            "{alpn:?}: {s:?}"
        );
        assert!(c.is_err(), "{alpn:?}: the client got through");
    }

    // The reference: the same client offering palisade-auth/1 gets
    // through (and reads the server's "ok").
    let (c, s) = server
        .exchange(raw_tls_client(
            server.addr,
            p.ca.trust(),
            Some(&p.client_svid),
            dns(&good_name),
            &[b"h2", ALPN],
        ))
        .await;
    c.unwrap();
    assert_eq!(s.unwrap().peer_id, identity_id(TD, C));
}

#[tokio::test]
async fn a_stalled_client_is_dropped_by_the_caller_and_the_server_goes_on() {
    let p = Pairing::new();
    let server = p.server(Admit::answering(Ok(()))).await;
    let stalled = TcpStream::connect(server.addr).await.unwrap();
    let (stream, peer) = server.listener.accept().await.unwrap();
    let answer = tokio::time::timeout(
        Duration::from_millis(200),
        server.server.accept(stream, peer),
    )
    .await;
    assert!(answer.is_err(), "the server answered a silent client");
    drop(stalled);

    let (c, s) = server
        .exchange(p.client().dial(server.addr, None, C, S, TIMEOUT))
        .await;
    c.unwrap();
    s.unwrap();
}

// ------------------------------------------------------ hostile servers ----

/// A server that completes the TLS handshake properly (identity/5,
/// client certificate required, palisade-auth/1 when `alpn`) and then
/// sends `reply`.
async fn lying_server(
    listener: TcpListener,
    trust: TrustBundle,
    svid: X509Svid,
    alpn: bool,
    reply: Vec<u8>,
) {
    let source = Arc::new(FixedSvid::new(&svid).unwrap());
    let mut config = tls::server_config(source, trust, true).unwrap();
    config.alpn_protocols = if alpn {
        vec![ALPN.to_vec()]
    } else {
        Vec::new()
    };
    let (tcp, _) = listener.accept().await.unwrap();
    let Ok(mut stream) = TlsAcceptor::from(Arc::new(config)).accept(tcp).await else {
        return;
    };
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}

#[tokio::test]
async fn the_client_only_accepts_ok() {
    let p = Pairing::new();
    let replies: [(&[u8], &str); 6] = [
        (b"", "protocol"),
        (b"ok", "protocol"),
        (b"OK\n", "protocol"),
        (b"yes\n", "protocol"),
        (&[b'o'; 600], "protocol"),
        (b"refused: not today\n", "refused"),
    ];
    for (reply, expected) in replies {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(lying_server(
            listener,
            p.ca.trust(),
            p.server_svid.clone(),
            true,
            reply.to_vec(),
        ));
        let c = p.client().dial(addr, None, C, S, TIMEOUT).await;
        assert_eq!(
            kind(&c),
            expected,
            "{:?}: {c:?}",
            String::from_utf8_lossy(reply)
        );
        server.await.unwrap();
    }

    // A server that agrees on no application protocol.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(lying_server(
        listener,
        p.ca.trust(),
        p.server_svid.clone(),
        false,
        b"ok\n".to_vec(),
    ));
    let c = p.client().dial(addr, None, C, S, TIMEOUT).await;
    assert!(
        matches!(
            &c,
            Err(AuthError::Protocol {
                source: WireError::NoAlpn
            })
        ),
        "{c:?}"
    );
    server.await.unwrap();

    // The reference: the same server answering "ok\n" is accepted.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(lying_server(
        listener,
        p.ca.trust(),
        p.server_svid.clone(),
        true,
        b"ok\n".to_vec(),
    ));
    let c = p.client().dial(addr, None, C, S, TIMEOUT).await.unwrap();
    assert_eq!(c.peer_id, identity_id(TD, S));
    server.await.unwrap();
}
