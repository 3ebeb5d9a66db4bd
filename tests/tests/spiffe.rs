//! SPIFFE workload identity end to end: a real agent, real pods, and an
//! independent Workload API client (the `spiffe` crate).
//!
//! - A workload in a pod gets its X.509-SVID
//!   (`spiffe://example.org/ns/<ns>/sa/<service account>`) and the bundle;
//!   the chain verifies with palisade's validator and with `openssl verify`;
//!   a JWT-SVID for an audience validates through the Workload API.
//! - A CA rotation reaches an open `X509Source` without a reconnect: a new
//!   SVID signed by the new CA, both CAs in the bundle, and the old SVID
//!   still verifies against it.
//! - Callers that are not workloads get `PermissionDenied`: this process in
//!   the host's namespace, a process in the node's namespace, a thread of
//!   this process inside the pod's namespace, and the pod itself once its
//!   endpoint is deleted (its open stream ends too). A leaf of another trust
//!   domain, or signed by another CA, does not verify against the bundle.
//! - So is a process in the namespace of one pod in a cgroup named after
//!   the container of another, or in the host namespace in that cgroup.
//! - The CLI shows the bundle, the SVIDs and a chain, never a key; key files
//!   are 0600 and no key reaches the agent's log.
//! - In a cluster over a real etcd, n1 serves the node CA and n2 holds no
//!   CA: n2 joins with a token, its pod's workload gets an SVID signed by
//!   n1's CA through n2's Workload API; n2's node SVID obtains the
//!   identities of n2's pod and nothing else (not n1's pod's, not n1's node
//!   SVID, not the CA's, not another trust domain's), and nothing at all
//!   once n2 is revoked.
//!
//! The workload is a separate process in the pod's namespace (this binary
//! run again, see [`workload_process`]): the agent attests the process on
//! the other end of the socket (`SO_PEERCRED` names the thread group, and
//! `/proc/<pid>/ns/net` is its main thread's), so a thread of this process
//! in the pod's namespace is not the pod.
//!
//! Needs root; skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use futures::stream::BoxStream;
use futures::StreamExt as _;
use palisade_api::{CaGenerationRecord, CaStatus, Request, Response, SvidRecord};
use palisade_identity::ca::hex;
use palisade_identity::pem;
use palisade_identity::x509::{VerifyError, X509Bundle, X509Svid as PalisadeSvid};
use palisade_identity::TrustDomain;
use palisade_tests::etcd::run_openssl;
use palisade_tests::{locate_binary, NetNs, Node, PodSpec, Topology};
use serde::{Deserialize, Serialize};
use spiffe::x509_source::{MetricsErrorKind, MetricsRecorder};
use spiffe::{WorkloadApiClient, WorkloadApiError, X509Source};

/// The trust domain of every test.
const TRUST_DOMAIN: &str = "example.org";
/// The audience of the JWT-SVIDs.
const AUDIENCE: &str = "palisade-e2e";
/// Set (to the Workload API socket) when this binary runs as the workload.
const WORKLOAD_ENV: &str = "PALISADE_SPIFFE_WORKLOAD_SOCKET";
/// Marks answers on the stdout of the workload, which libtest shares.
const REPLY_MARK: &str = "@@reply ";
/// How long one command of the workload process may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a rotation may take to reach an open source.
const ROTATION_LIMIT: Duration = Duration::from_secs(10);

// Topology and small helpers.

/// `identity: {trust_domain: example.org}` (the harness adds the socket).
fn identity_settings() -> serde_yaml::Value {
    let mut m = serde_yaml::Mapping::new();
    m.insert("trust_domain".into(), TRUST_DOMAIN.into());
    m.into()
}

/// One node with `pods` in namespaces `x` and `y`, trust domain
/// example.org; returns once the Workload API socket exists.
fn topology(pods: Vec<PodSpec>) -> Topology {
    let mut b = Topology::builder()
        .namespace("x", ns_labels("x"))
        .namespace("y", ns_labels("y"))
        .agent_setting("identity", identity_settings());
    for p in pods {
        b = b.pod(p);
    }
    let topo = b.build().expect("topology");
    let node = topo.node("n1").unwrap();
    let socket = node.workload_socket().to_owned();
    assert!(
        wait_for(Duration::from_secs(5), || socket.exists().then_some(())).is_some(),
        "the agent did not create its Workload API socket {} within 5 s; log:\n{}",
        socket.display(),
        node.log_tail(30)
    );
    topo
}

fn pod(ns: &str, name: &str) -> PodSpec {
    PodSpec::new(ns, name).label("pod", name)
}

fn trust_domain() -> TrustDomain {
    TrustDomain::new(TRUST_DOMAIN).unwrap()
}

/// The workload SPIFFE ID of a pod.
fn workload_id(ns: &str, service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{service_account}")
}

/// palisade's bundle of the anchors (DER).
fn bundle_of(anchors: &[Vec<u8>]) -> X509Bundle {
    X509Bundle::from_der_concatenated(trust_domain(), &anchors.concat())
        .unwrap_or_else(|e| panic!("the Workload API's bundle is not a valid X.509 bundle: {e}"))
}

fn ca_status(node: &Node) -> CaStatus {
    match call(node, &Request::IdentityCaShow) {
        Response::IdentityCa(status) => *status,
        other => panic!("identity ca show: unexpected answer {other:?}"),
    }
}

fn svids(node: &Node) -> Vec<SvidRecord> {
    match call(node, &Request::SvidList) {
        Response::Svids { svids } => svids,
        other => panic!("svid list: unexpected answer {other:?}"),
    }
}

/// The generation of `status` in `stage`.
fn generation<'a>(status: &'a CaStatus, stage: &str) -> &'a CaGenerationRecord {
    status
        .generations
        .iter()
        .find(|g| g.stage == stage)
        .unwrap_or_else(|| panic!("no {stage} CA generation in {status:#?}"))
}

/// `openssl verify -CAfile <anchors> [-untrusted <intermediates>] <leaf>`,
/// with the PEM files written to `dir` under `name`; whether it succeeded
/// and what it printed.
fn openssl_verify(
    dir: &Path,
    name: &str,
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
) -> (bool, String) {
    let write = |file: &str, text: String| -> String {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let bundle = write(
        "bundle.pem",
        pem::encode_certificates(anchors.iter().map(Vec::as_slice)),
    );
    let leaf = write("leaf.pem", pem::encode(pem::CERTIFICATE, &chain[0]));
    let mut args = vec!["verify".to_owned(), "-CAfile".to_owned(), bundle];
    if chain.len() > 1 {
        args.push("-untrusted".to_owned());
        args.push(write(
            "intermediates.pem",
            pem::encode_certificates(chain[1..].iter().map(Vec::as_slice)),
        ));
    }
    args.push(leaf);
    match run_openssl(&args) {
        Ok(out) => (true, out),
        Err(out) => (false, out),
    }
}

/// Runs `openssl ARGS` and returns stdout; panics on failure.
fn openssl(args: &[&str]) -> String {
    run_openssl(args).unwrap_or_else(|e| panic!("openssl {args:?}: {e}"))
}

// The workload process: protocol, its side, and this side.

/// A command to the workload process (one JSON line on its stdin).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Cmd {
    /// A new connection and one FetchX509SVID.
    FetchX509,
    /// A new connection; FetchJWTSVID for `audience`, then ValidateJWTSVID
    /// of the token for that audience, for another one, and tampered.
    FetchJwt { audience: String },
    /// Every RPC once on a new connection; `token` for ValidateJWTSVID.
    EveryRpc { token: String },
    /// Builds an `X509Source` (kept open).
    SourceStart,
    /// Waits (at most `timeout_ms`) until the open source holds a default
    /// SVID whose leaf is not `old_leaf` and at least `min_anchors` anchors.
    SourceWait {
        old_leaf: Vec<u8>,
        min_anchors: usize,
        timeout_ms: u64,
    },
    /// Opens a FetchX509SVID stream (kept open) and reads its first answer.
    StreamOpen,
    /// Reads the next answer of the open stream (at most `timeout_ms`).
    StreamNext { timeout_ms: u64 },
}

/// What a workload got over the Workload API (DER).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Material {
    /// Every SVID's ID, the default first.
    spiffe_ids: Vec<String>,
    /// The default SVID's chain, leaf first.
    chain: Vec<Vec<u8>>,
    /// Its PKCS#8 key.
    key: Vec<u8>,
    /// The anchors of example.org.
    bundle: Vec<Vec<u8>>,
}

/// What the JWT commands saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JwtOutcome {
    /// The SPIFFE ID of the fetched JWT-SVID.
    fetched_id: String,
    token: String,
    /// `sub` and `aud` of the token the Workload API validated.
    validated_sub: String,
    validated_aud: Vec<String>,
    /// ValidateJWTSVID for another audience (`Ok(sub)` if accepted).
    wrong_audience: Result<String, ApiError>,
    /// ValidateJWTSVID of the token with its signature altered.
    tampered: Result<String, ApiError>,
}

/// An `X509Source`'s metrics so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SourceCounts {
    updates: u64,
    reconnects: u64,
    errors: u64,
}

/// A failed call: the gRPC code (`PermissionDenied`, ...) or another kind
/// of failure, and the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ApiError {
    code: String,
    message: String,
}

/// The workload process's answer to one command.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    X509(Material),
    Jwt(Box<JwtOutcome>),
    Every(Vec<(String, Result<String, ApiError>)>),
    Source {
        material: Material,
        counts: SourceCounts,
    },
    Failed(ApiError),
}

fn classify(e: WorkloadApiError) -> ApiError {
    use spiffe::transport::TransportError;
    let code = match &e {
        // The spiffe crate turns SPIRE's "no identity issued" wording of
        // PermissionDenied (which palisade uses) into its own variant.
        WorkloadApiError::PermissionDenied(_) | WorkloadApiError::NoIdentityIssued => {
            "PermissionDenied".to_owned()
        }
        WorkloadApiError::Transport(TransportError::Status(s)) => format!("{:?}", s.code()),
        WorkloadApiError::Transport(_) => "Transport".to_owned(),
        _ => "Other".to_owned(),
    };
    ApiError {
        code,
        message: e.to_string(),
    }
}

fn failure(code: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError {
        code: code.to_owned(),
        message: message.to_string(),
    }
}

fn material(
    svids: &[Arc<spiffe::X509Svid>],
    bundles: &spiffe::X509BundleSet,
) -> Result<Material, ApiError> {
    let default = svids
        .first()
        .ok_or_else(|| failure("Empty", "no X.509-SVID"))?;
    let td = spiffe::TrustDomain::new(TRUST_DOMAIN).unwrap();
    let bundle = bundles
        .get(&td)
        .map(|b| {
            b.authorities()
                .iter()
                .map(|c| c.as_bytes().to_vec())
                .collect()
        })
        .unwrap_or_default();
    Ok(Material {
        spiffe_ids: svids.iter().map(|s| s.spiffe_id().to_string()).collect(),
        chain: default
            .cert_chain()
            .iter()
            .map(|c| c.as_bytes().to_vec())
            .collect(),
        key: default.private_key().as_bytes().to_vec(),
        bundle,
    })
}

/// The token with one character of its signature changed.
fn tamper(token: &str) -> String {
    let sig_start = token.rfind('.').map_or(0, |i| i + 1);
    let at = sig_start + (token.len() - sig_start) / 2;
    let mut bytes = token.as_bytes().to_vec();
    if let Some(b) = bytes.get_mut(at) {
        *b = if *b == b'A' { b'B' } else { b'A' };
    }
    String::from_utf8(bytes).unwrap()
}

/// [`rpcs`] within [`ASK_TIMEOUT`].
async fn every_rpc(endpoint: &str, token: &str) -> Vec<(String, Result<String, ApiError>)> {
    let late = vec![("all".to_owned(), Err(failure("Timeout", "")))];
    tokio::time::timeout(ASK_TIMEOUT, rpcs(endpoint, token))
        .await
        .unwrap_or(late)
}

/// Each RPC of the Workload API once, on one connection.
async fn rpcs(endpoint: &str, token: &str) -> Vec<(String, Result<String, ApiError>)> {
    let client = match WorkloadApiClient::connect_to(endpoint).await {
        Ok(c) => c,
        Err(e) => return vec![("connect".to_owned(), Err(classify(e)))],
    };
    let ids = |ctx: spiffe::X509Context| {
        ctx.svids()
            .iter()
            .map(|s| s.spiffe_id().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    vec![
        (
            "FetchX509SVID".to_owned(),
            client.fetch_x509_context().await.map(ids).map_err(classify),
        ),
        (
            "FetchX509Bundles".to_owned(),
            client
                .fetch_x509_bundles()
                .await
                .map(|b| format!("{} bundle(s)", b.len()))
                .map_err(classify),
        ),
        (
            "FetchJWTSVID".to_owned(),
            client
                .fetch_jwt_svid([AUDIENCE], None)
                .await
                .map(|s| s.spiffe_id().to_string())
                .map_err(classify),
        ),
        (
            "FetchJWTBundles".to_owned(),
            client
                .fetch_jwt_bundles()
                .await
                .map(|b| format!("{} bundle(s)", b.len()))
                .map_err(classify),
        ),
        (
            "ValidateJWTSVID".to_owned(),
            client
                .validate_jwt_token(AUDIENCE, token)
                .await
                .map(|s| s.spiffe_id().to_string())
                .map_err(classify),
        ),
    ]
}

/// Counts what an `X509Source` reports.
#[derive(Default)]
struct Counts {
    updates: AtomicU64,
    reconnects: AtomicU64,
    errors: AtomicU64,
}

impl MetricsRecorder for Counts {
    fn record_update(&self) {
        self.updates.fetch_add(1, Ordering::Relaxed);
    }
    fn record_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    fn record_error(&self, _kind: MetricsErrorKind) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl Counts {
    fn snapshot(&self) -> SourceCounts {
        SourceCounts {
            updates: self.updates.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

type ContextStream = BoxStream<'static, Result<spiffe::X509Context, WorkloadApiError>>;

/// The workload process's state.
struct WorkloadSide {
    endpoint: String,
    counts: Arc<Counts>,
    source: Option<X509Source>,
    /// An open stream, with the client it came from.
    stream: Option<(WorkloadApiClient, ContextStream)>,
}

impl WorkloadSide {
    async fn handle(&mut self, cmd: Cmd) -> Reply {
        self.try_handle(cmd).await.unwrap_or_else(Reply::Failed)
    }

    async fn connect(&self) -> Result<WorkloadApiClient, ApiError> {
        WorkloadApiClient::connect_to(&self.endpoint)
            .await
            .map_err(classify)
    }

    async fn try_handle(&mut self, cmd: Cmd) -> Result<Reply, ApiError> {
        match cmd {
            Cmd::FetchX509 => {
                let ctx = self
                    .connect()
                    .await?
                    .fetch_x509_context()
                    .await
                    .map_err(classify)?;
                Ok(Reply::X509(material(ctx.svids(), ctx.bundle_set())?))
            }
            Cmd::FetchJwt { audience } => {
                let client = self.connect().await?;
                let svid = client
                    .fetch_jwt_svid([audience.as_str()], None)
                    .await
                    .map_err(classify)?;
                let token = svid.token().to_owned();
                let validated = client
                    .validate_jwt_token(&audience, &token)
                    .await
                    .map_err(classify)?;
                let sub = |r: Result<spiffe::JwtSvid, WorkloadApiError>| {
                    r.map(|s| s.claims().sub().to_owned()).map_err(classify)
                };
                let wrong_audience = sub(client.validate_jwt_token("someone-else", &token).await);
                let tampered = sub(client.validate_jwt_token(&audience, &tamper(&token)).await);
                Ok(Reply::Jwt(Box::new(JwtOutcome {
                    fetched_id: svid.spiffe_id().to_string(),
                    validated_sub: validated.claims().sub().to_owned(),
                    validated_aud: validated.claims().aud().to_vec(),
                    token,
                    wrong_audience,
                    tampered,
                })))
            }
            Cmd::EveryRpc { token } => Ok(Reply::Every(every_rpc(&self.endpoint, &token).await)),
            Cmd::SourceStart => {
                let metrics: Arc<dyn MetricsRecorder> = self.counts.clone();
                let source = X509Source::builder()
                    .endpoint(&self.endpoint)
                    .metrics(metrics)
                    .initial_sync_timeout(Duration::from_secs(10))
                    .shutdown_timeout(Some(Duration::from_secs(2)))
                    .build()
                    .await
                    .map_err(|e| failure("Source", e))?;
                let ctx = source.x509_context().map_err(|e| failure("Source", e))?;
                let material = material(ctx.svids(), ctx.bundle_set())?;
                self.source = Some(source);
                Ok(Reply::Source {
                    material,
                    counts: self.counts.snapshot(),
                })
            }
            Cmd::SourceWait {
                old_leaf,
                min_anchors,
                timeout_ms,
            } => {
                let source = self
                    .source
                    .as_ref()
                    .ok_or_else(|| failure("Usage", "no open source"))?;
                let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                loop {
                    let ctx = source.x509_context().map_err(|e| failure("Source", e))?;
                    let material = material(ctx.svids(), ctx.bundle_set())?;
                    if material.chain.first() != Some(&old_leaf)
                        && material.bundle.len() >= min_anchors
                    {
                        return Ok(Reply::Source {
                            material,
                            counts: self.counts.snapshot(),
                        });
                    }
                    if Instant::now() >= deadline {
                        return Err(failure(
                            "Timeout",
                            format!(
                                "after {timeout_ms} ms the source still has {} (leaf changed: {}, {} anchor(s)); metrics {:?}",
                                material.spiffe_ids.join(","),
                                material.chain.first() != Some(&old_leaf),
                                material.bundle.len(),
                                self.counts.snapshot()
                            ),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Cmd::StreamOpen => {
                let client = self.connect().await?;
                let mut stream = client
                    .stream_x509_contexts()
                    .await
                    .map_err(classify)?
                    .boxed();
                let first = next_context(&mut stream, Duration::from_secs(5)).await?;
                self.stream = Some((client, stream));
                Ok(Reply::X509(first))
            }
            Cmd::StreamNext { timeout_ms } => {
                let (_, stream) = self
                    .stream
                    .as_mut()
                    .ok_or_else(|| failure("Usage", "no open stream"))?;
                let next = next_context(stream, Duration::from_millis(timeout_ms)).await?;
                Ok(Reply::X509(next))
            }
        }
    }
}

async fn next_context(stream: &mut ContextStream, timeout: Duration) -> Result<Material, ApiError> {
    match tokio::time::timeout(timeout, stream.next()).await {
        Err(_) => Err(failure("Timeout", format!("no answer within {timeout:?}"))),
        Ok(None) => Err(failure("StreamEnded", "the stream ended without a status")),
        Ok(Some(Err(e))) => Err(classify(e)),
        Ok(Some(Ok(ctx))) => material(ctx.svids(), ctx.bundle_set()),
    }
}

/// Not a test by itself: the workload process of the other tests (run with
/// [`WORKLOAD_ENV`] set), one JSON command per line of stdin.
#[test]
#[ignore = "the workload process of the other tests, which run it"]
fn workload_process() {
    let Some(socket) = std::env::var_os(WORKLOAD_ENV) else {
        eprintln!(
            "not a test by itself: the workload process of the other tests (they run it with {WORKLOAD_ENV} set)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut side = WorkloadSide {
        endpoint: format!("unix:{}", Path::new(&socket).display()),
        counts: Arc::new(Counts::default()),
        source: None,
        stream: None,
    };
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let reply = match serde_json::from_str::<Cmd>(&line) {
            Ok(cmd) => rt.block_on(side.handle(cmd)),
            Err(e) => Reply::Failed(failure("Usage", format!("bad command {line:?}: {e}"))),
        };
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{REPLY_MARK}{}",
            serde_json::to_string(&reply).unwrap()
        )
        .unwrap();
        out.flush().unwrap();
    }
    rt.block_on(async move {
        if let Some(source) = side.source.take() {
            let _ = source.shutdown_with_timeout(Duration::from_secs(2)).await;
        }
        drop(side);
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// A workload process, seen from the test: started in a network namespace,
/// asked commands; stopped (end of stdin, then SIGKILL after 5 s) on drop.
struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
    place: String,
}

impl Workload {
    /// Starts it inside `netns` (`None`: this process's namespace) with the
    /// Workload API at `socket`; `place` names it in messages.
    fn start(netns: Option<&NetNs>, socket: &Path, place: &str) -> Self {
        let exe = std::env::current_exe().expect("the test binary");
        let mut cmd = Command::new(exe);
        cmd.args([
            "workload_process",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env(WORKLOAD_ENV, socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = match netns {
            Some(ns) => ns
                .spawn(&mut cmd)
                .unwrap_or_else(|e| panic!("start the workload {place}: {e}")),
            None => cmd
                .spawn()
                .unwrap_or_else(|e| panic!("start the workload {place}: {e}")),
        };
        let stdout = child.stdout.take().unwrap();
        let (tx, replies) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(REPLY_MARK) {
                    if tx.send(line[at + REPLY_MARK.len()..].to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            replies,
            reader: Some(reader),
            place: place.to_owned(),
        }
    }

    fn ask(&mut self, cmd: &Cmd) -> Reply {
        let place = &self.place;
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", serde_json::to_string(cmd).unwrap())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("the workload {place} does not take commands: {e}"));
        let line = self.replies.recv_timeout(ASK_TIMEOUT).unwrap_or_else(|e| {
            panic!("the workload {place} gave no answer to {cmd:?} within {ASK_TIMEOUT:?} ({e})")
        });
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the workload {place} answered {line:?}: {e}"))
    }

    fn x509_reply(&mut self, cmd: &Cmd) -> Result<Material, ApiError> {
        match self.ask(cmd) {
            Reply::X509(m) => Ok(m),
            Reply::Failed(e) => Err(e),
            other => panic!("the workload {}: {cmd:?} answered {other:?}", self.place),
        }
    }

    fn fetch_x509(&mut self) -> Result<Material, ApiError> {
        self.x509_reply(&Cmd::FetchX509)
    }

    fn fetch_jwt(&mut self, audience: &str) -> Result<JwtOutcome, ApiError> {
        let cmd = Cmd::FetchJwt {
            audience: audience.to_owned(),
        };
        match self.ask(&cmd) {
            Reply::Jwt(j) => Ok(*j),
            Reply::Failed(e) => Err(e),
            other => panic!("the workload {}: {cmd:?} answered {other:?}", self.place),
        }
    }

    fn every_rpc(&mut self, token: &str) -> Vec<(String, Result<String, ApiError>)> {
        let cmd = Cmd::EveryRpc {
            token: token.to_owned(),
        };
        match self.ask(&cmd) {
            Reply::Every(results) => results,
            other => panic!("the workload {}: {cmd:?} answered {other:?}", self.place),
        }
    }

    fn source_reply(&mut self, cmd: &Cmd) -> Result<(Material, SourceCounts), ApiError> {
        match self.ask(cmd) {
            Reply::Source { material, counts } => Ok((material, counts)),
            Reply::Failed(e) => Err(e),
            other => panic!("the workload {}: {cmd:?} answered {other:?}", self.place),
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // End of stdin: the workload closes its source and exits.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Asserts that every call in `results` was refused with PermissionDenied.
fn assert_all_denied(results: &[(String, Result<String, ApiError>)], who: &str) {
    assert_eq!(
        results.len(),
        5,
        "{who}: not every RPC was tried: {results:#?}"
    );
    for (rpc, result) in results {
        match result {
            Err(e) if e.code == "PermissionDenied" => {}
            other => panic!("{who}: {rpc} should be refused with PermissionDenied, got {other:?}"),
        }
    }
}

// The tests.

#[test]
fn a_workload_gets_its_svid_bundle_and_jwt() {
    if !privileged() || !openssl_installed() {
        return;
    }
    let mut web = pod("y", "w");
    web.service_account = Some("web".to_owned());
    let topo = topology(vec![pod("x", "a"), web]);
    let node = topo.node("n1").unwrap();
    let ca = ca_status(node);
    assert_eq!(ca.trust_domain, TRUST_DOMAIN);
    let active = generation(&ca, "active");
    let ca_bundle = X509Bundle::from_pem(trust_domain(), ca.bundle_pem.as_bytes())
        .expect("the CA's bundle PEM");
    let dir = TempDir::new("spiffe-svid");

    for (name, ns, sa) in [("x/a", "x", "default"), ("y/w", "y", "web")] {
        let want = workload_id(ns, sa);
        let mut workload = Workload::start(
            Some(topo.pod(name).unwrap().netns()),
            node.workload_socket(),
            &format!("in pod {name}"),
        );
        let m = workload
            .fetch_x509()
            .unwrap_or_else(|e| panic!("pod {name}: FetchX509SVID failed: {e:?}"));
        assert_eq!(
            m.spiffe_ids,
            vec![want.clone()],
            "pod {name} gets exactly its workload SVID"
        );

        // The key belongs to the leaf, and palisade's validator accepts the
        // chain against the bundle the workload was given.
        let svid = PalisadeSvid::parse_der(&m.chain.concat(), &m.key)
            .unwrap_or_else(|e| panic!("pod {name}: the SVID does not parse: {e}"));
        assert_eq!(svid.spiffe_id().to_string(), want);
        let bundle = bundle_of(&m.bundle);
        assert_eq!(
            bundle, ca_bundle,
            "pod {name}: the Workload API's bundle is the CA's"
        );
        let verified = bundle
            .verify(&m.chain, SystemTime::now())
            .unwrap_or_else(|e| panic!("pod {name}: the chain does not verify: {e}"));
        assert_eq!(verified.spiffe_id().to_string(), want);
        assert_eq!(
            hex(verified.anchor_key_id().as_bytes()),
            active.key_id,
            "pod {name}: signed by the active CA"
        );

        // And so does OpenSSL.
        let (ok, out) = openssl_verify(dir.path(), ns, &m.chain, &m.bundle);
        assert!(
            ok && out.contains(": OK"),
            "pod {name}: openssl verify: {out}"
        );

        // A JWT-SVID for an audience, validated by the Workload API; the
        // same token for another audience, or altered, is not.
        let jwt = workload
            .fetch_jwt(AUDIENCE)
            .unwrap_or_else(|e| panic!("pod {name}: JWT-SVID: {e:?}"));
        assert_eq!(jwt.fetched_id, want, "pod {name}: JWT-SVID ID");
        assert_eq!(jwt.validated_sub, want, "pod {name}: validated sub");
        assert_eq!(jwt.validated_aud, vec![AUDIENCE.to_owned()]);
        assert!(
            matches!(&jwt.wrong_audience, Err(e) if e.code == "InvalidArgument"),
            "pod {name}: a token for {AUDIENCE} validated for another audience: {:?}",
            jwt.wrong_audience
        );
        assert!(
            matches!(&jwt.tampered, Err(e) if e.code == "InvalidArgument"),
            "pod {name}: a token with an altered signature validated: {:?}",
            jwt.tampered
        );
    }
}

#[test]
fn ca_rotation_reaches_an_open_source_without_reconnecting() {
    if !privileged() {
        return;
    }
    let topo = topology(vec![pod("x", "a")]);
    let node = topo.node("n1").unwrap();
    let want = workload_id("x", "default");
    let mut workload = Workload::start(
        Some(topo.pod("x/a").unwrap().netns()),
        node.workload_socket(),
        "in pod x/a",
    );
    let (before, counts) = workload
        .source_reply(&Cmd::SourceStart)
        .unwrap_or_else(|e| panic!("X509Source in pod x/a: {e:?}"));
    assert_eq!(before.spiffe_ids, vec![want.clone()]);
    assert_eq!(before.bundle.len(), 1, "one CA before the rotation");
    let old_ca = ca_status(node);
    let old_key_id = generation(&old_ca, "active").key_id.clone();

    let rotated_at = Instant::now();
    let status = match call(node, &Request::IdentityCaRotate { immediately: true }) {
        Response::IdentityCa(s) => *s,
        other => panic!("identity ca rotate: unexpected answer {other:?}"),
    };
    let new_gen = generation(&status, "active");
    let old_gen = generation(&status, "retired");
    assert_eq!(old_gen.key_id, old_key_id, "the old CA is retired");
    assert_ne!(new_gen.key_id, old_key_id, "a new CA is active");
    assert!(new_gen.number > old_gen.number);

    let (after, counts_after) = workload
        .source_reply(&Cmd::SourceWait {
            old_leaf: before.chain[0].clone(),
            min_anchors: 2,
            timeout_ms: u64::try_from(ROTATION_LIMIT.as_millis()).unwrap(),
        })
        .unwrap_or_else(|e| {
            panic!("the open X509Source did not see the rotation within {ROTATION_LIMIT:?}: {e:?}")
        });
    let took = rotated_at.elapsed();
    eprintln!("the rotation reached the open source in {took:?}; metrics before {counts:?}, after {counts_after:?}");
    assert_eq!(
        after.spiffe_ids,
        vec![want.clone()],
        "same identity after the rotation"
    );
    assert_eq!(
        counts_after.reconnects, 0,
        "the source reconnected: {counts_after:?}"
    );
    assert_eq!(
        counts_after.errors, 0,
        "the source saw errors: {counts_after:?}"
    );
    assert!(
        counts_after.updates > counts.updates,
        "{counts:?} -> {counts_after:?}"
    );

    // Both CAs in the bundle, the old one included.
    assert_eq!(after.bundle.len(), 2, "both CAs in the bundle");
    assert!(
        after.bundle.contains(&before.bundle[0]),
        "the old CA left the bundle at once"
    );
    let old_bundle = bundle_of(&before.bundle);
    let new_bundle = bundle_of(&after.bundle);
    let now = SystemTime::now();

    // The new SVID is the new CA's: it verifies against the new bundle at
    // the new anchor, and not against the old bundle.
    let v = new_bundle
        .verify(&after.chain, now)
        .unwrap_or_else(|e| panic!("the new SVID does not verify against the new bundle: {e}"));
    assert_eq!(hex(v.anchor_key_id().as_bytes()), new_gen.key_id);
    assert_eq!(v.spiffe_id().to_string(), want);
    let err = old_bundle
        .verify(&after.chain, now)
        .expect_err("the new SVID verifies against the old CA alone");
    assert!(
        matches!(err, VerifyError::UnknownAuthorityKeyId { .. }),
        "unexpected error for the new SVID against the old bundle: {err}"
    );
    // Overlap: the old SVID still verifies against the new bundle.
    let v_old = new_bundle
        .verify(&before.chain, now)
        .unwrap_or_else(|e| panic!("the old SVID does not verify against the new bundle: {e}"));
    assert_eq!(hex(v_old.anchor_key_id().as_bytes()), old_key_id);

    // OpenSSL agrees.
    if openssl_installed() {
        let dir = TempDir::new("spiffe-rotation");
        let (ok, out) = openssl_verify(dir.path(), "new", &after.chain, &after.bundle);
        assert!(ok, "openssl: new SVID against the new bundle: {out}");
        let (ok, out) = openssl_verify(dir.path(), "old", &before.chain, &after.bundle);
        assert!(ok, "openssl: old SVID against the new bundle: {out}");
        let (ok, out) = openssl_verify(dir.path(), "cross", &after.chain, &before.bundle);
        assert!(
            !ok,
            "openssl: the new SVID verified against the old CA alone: {out}"
        );
    }

    // The agent's record agrees.
    let record = svids(node)
        .into_iter()
        .find(|s| s.spiffe_id == want)
        .expect("the workload SVID in svid list");
    assert_eq!(record.ca_generation, new_gen.number);
}

#[test]
fn callers_that_are_not_workloads_are_refused() {
    if !privileged() {
        return;
    }
    let topo = topology(vec![pod("x", "a")]);
    let node = topo.node("n1").unwrap();
    let socket = node.workload_socket().to_owned();
    let endpoint = format!("unix:{}", socket.display());
    let a = topo.pod("x/a").unwrap();
    let want = workload_id("x", "default");

    // The pod's workload: a stream open, and a valid token to show around.
    let mut workload = Workload::start(Some(a.netns()), &socket, "in pod x/a");
    let first = workload
        .x509_reply(&Cmd::StreamOpen)
        .unwrap_or_else(|e| panic!("stream in pod x/a: {e:?}"));
    assert_eq!(first.spiffe_ids, vec![want.clone()]);
    let token = workload
        .fetch_jwt(AUDIENCE)
        .unwrap_or_else(|e| panic!("JWT-SVID in pod x/a: {e:?}"))
        .token;

    // This process, in the host's namespace.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host = rt.block_on(every_rpc(&endpoint, &token));
    assert_all_denied(&host, "the test process in the host's namespace");

    // A process in the node's namespace that is no pod.
    let mut on_node = Workload::start(Some(node.netns()), &socket, "in the node's namespace");
    assert_all_denied(
        &on_node.every_rpc(&token),
        "a process in the node's namespace",
    );
    drop(on_node);

    // A thread of this process inside the pod's namespace: the process is
    // attested, and its main thread is in the host's namespace.
    let from_thread = Mutex::new(Vec::new());
    let (out, ep, tok) = (&from_thread, endpoint.as_str(), token.as_str());
    block_on_in(a.netns(), move || async move {
        *out.lock().unwrap() = every_rpc(ep, tok).await;
    });
    assert_all_denied(
        &from_thread.into_inner().unwrap(),
        "a thread of the test process inside the pod's namespace",
    );

    // The pod still is the workload.
    let again = workload
        .fetch_x509()
        .unwrap_or_else(|e| panic!("pod x/a after the refusals: {e:?}"));
    assert_eq!(again.spiffe_ids, vec![want.clone()]);

    // CNI DEL: the endpoint is gone, so is the pod's identity.
    let del = palisade_tests::cni::CniPod {
        plugin: locate_binary("palisade-cni").unwrap(),
        node_netns: node.netns().clone(),
        agent_socket: node.api_socket().to_owned(),
        container_id: a.container_id().to_owned(),
        pod_netns: a.netns().clone(),
        ifname: "eth0".to_owned(),
        namespace: "x".to_owned(),
        name: "a".to_owned(),
        labels: a.spec().labels.clone(),
        service_account: "default".to_owned(),
    };
    palisade_tests::cni::del(&del).unwrap_or_else(|e| panic!("CNI DEL of x/a: {e}"));
    assert!(
        !endpoints(node)
            .iter()
            .any(|e| e.spec.container_id == a.container_id()),
        "the endpoint of x/a is still there after CNI DEL"
    );
    // The open stream ends with PermissionDenied.
    match workload.x509_reply(&Cmd::StreamNext { timeout_ms: 5000 }) {
        Err(e) if e.code == "PermissionDenied" => {}
        other => panic!("the open stream of x/a after CNI DEL: {other:?}"),
    }
    // New calls are refused.
    assert_all_denied(&workload.every_rpc(&token), "pod x/a after CNI DEL");
    assert!(
        !svids(node).iter().any(|s| s.spiffe_id == want),
        "the agent still holds {want} after CNI DEL: {:#?}",
        svids(node)
    );

    // A leaf of another trust domain does not verify against example.org's
    // bundle, though it does against its own CA.
    let bundle = bundle_of(&first.bundle);
    let now = SystemTime::now();
    let (foreign, foreign_ca) = rcgen_chain("other.org", "spiffe://other.org/x", false);
    let err = bundle
        .verify(&foreign, now)
        .expect_err("a leaf of other.org verified against example.org's bundle");
    assert!(
        matches!(err, VerifyError::TrustDomainMismatch { .. }),
        "unexpected error for the other.org leaf: {err}"
    );
    X509Bundle::from_der_concatenated(TrustDomain::new("other.org").unwrap(), &foreign_ca)
        .unwrap()
        .verify(&foreign, now)
        .unwrap_or_else(|e| panic!("the other.org leaf does not verify against its own CA: {e}"));

    // Nor does a leaf claiming the pod's ID signed by another CA, with or
    // without an authorityKeyIdentifier.
    for aki in [false, true] {
        let (impostor, impostor_ca) = rcgen_chain(TRUST_DOMAIN, &want, aki);
        let err = bundle
            .verify(&impostor, now)
            .expect_err("a leaf signed by a foreign CA verified against example.org's bundle");
        assert!(
            matches!(
                err,
                VerifyError::UnknownAuthority { .. } | VerifyError::UnknownAuthorityKeyId { .. }
            ),
            "unexpected error for a leaf signed by another CA (aki {aki}): {err}"
        );
        X509Bundle::from_der_concatenated(trust_domain(), &impostor_ca)
            .unwrap()
            .verify(&impostor, now)
            .unwrap_or_else(|e| panic!("the impostor leaf does not verify against its CA: {e}"));
    }
}

/// A CA (named like palisade's CAs) and a leaf for `id` it signed, with
/// rcgen: (chain, the CA's DER).
fn rcgen_chain(trust_domain: &str, id: &str, with_aki: bool) -> (Vec<Vec<u8>>, Vec<u8>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "palisade");
    dn.push(DnType::CommonName, format!("palisade CA 1 {trust_domain}"));
    ca.distinguished_name = dn;
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::URI(id.to_owned().try_into().unwrap())];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.use_authority_key_identifier_extension = with_aki;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    (vec![leaf_cert.der().to_vec()], ca_cert.der().to_vec())
}

/// Runs `palisade --socket <node's socket> ARGS`: exit code, stdout, stderr.
fn palisade(node: &Node, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(locate_binary("palisade").unwrap())
        .arg("--socket")
        .arg(node.api_socket())
        .args(args)
        .env_remove("PALISADE_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("run palisade");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn palisade_ok(node: &Node, args: &[&str]) -> String {
    let (code, stdout, stderr) = palisade(node, args);
    assert_eq!(code, Some(0), "palisade {args:?}: {stdout}{stderr}");
    stdout
}

/// The base64 lines of every PEM block in `text`.
fn pem_body_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn cli_shows_bundle_and_svids_but_never_keys() {
    if !privileged() || !openssl_installed() {
        return;
    }
    let topo = topology(vec![pod("x", "a")]);
    let node = topo.node("n1").unwrap();
    let dir = TempDir::new("spiffe-cli");
    let want = workload_id("x", "default");
    let ep = endpoint_of(&topo, "x/a");
    let identity_svid = format!("spiffe://{TRUST_DOMAIN}/identity/{}", ep.identity);
    let mut workload = Workload::start(
        Some(topo.pod("x/a").unwrap().netns()),
        node.workload_socket(),
        "in pod x/a",
    );
    let m = workload
        .fetch_x509()
        .unwrap_or_else(|e| panic!("FetchX509SVID in pod x/a: {e:?}"));
    drop(workload);
    let ca = ca_status(node);
    let active = generation(&ca, "active");

    // The bundle: the API's, PEM that OpenSSL reads, with the active CA's
    // key id.
    let bundle_pem = palisade_ok(node, &["identity", "ca", "show", "--bundle"]);
    assert_eq!(bundle_pem.trim(), ca.bundle_pem.trim());
    assert!(
        bundle_pem.contains("-----BEGIN CERTIFICATE-----"),
        "{bundle_pem}"
    );
    let bundle_file = dir.path().join("bundle.pem");
    std::fs::write(&bundle_file, &bundle_pem).unwrap();
    let bundle_path = bundle_file.to_str().unwrap();
    let text = openssl(&[
        "x509",
        "-in",
        bundle_path,
        "-noout",
        "-subject",
        "-ext",
        "subjectKeyIdentifier,basicConstraints",
    ]);
    // `X509v3 Subject Key Identifier:`, and the id on the next line.
    let ski: String = text
        .lines()
        .skip_while(|l| !l.contains("Subject Key Identifier"))
        .nth(1)
        .unwrap_or_else(|| panic!("openssl shows no subjectKeyIdentifier: {text}"))
        .trim()
        .replace(":", "")
        .to_ascii_lowercase();
    assert_eq!(ski, active.key_id, "openssl sees another key id: {text}");
    assert!(text.contains("CA:TRUE"), "{text}");
    assert_eq!(
        X509Bundle::from_pem(trust_domain(), bundle_pem.as_bytes())
            .unwrap()
            .len(),
        1
    );
    let human = palisade_ok(node, &["identity", "ca", "show"]);
    assert!(human.contains(TRUST_DOMAIN), "{human}");
    assert!(
        human.contains(&node.workload_socket().display().to_string()),
        "{human}"
    );
    let json: CaStatus = serde_json::from_str(&palisade_ok(
        node,
        &["-o", "json", "identity", "ca", "show"],
    ))
    .expect("identity ca show -o json");
    assert_eq!(json, ca);

    // svid list: the pod's workload SVID and the identity SVID.
    let list = palisade_ok(node, &["svid", "list"]);
    assert!(
        list.contains(&want) && list.contains(&identity_svid),
        "{list}"
    );
    let records: Vec<SvidRecord> =
        serde_json::from_str(&palisade_ok(node, &["-o", "json", "svid", "list"]))
            .expect("svid list -o json");
    let find = |id: &str| {
        records
            .iter()
            .find(|r| r.spiffe_id == id)
            .unwrap_or_else(|| panic!("no {id} in {records:#?}"))
    };
    assert_eq!(find(&want).kind, "workload");
    assert_eq!(find(&want).endpoints, vec![ep.ep_id]);
    assert_eq!(find(&identity_svid).kind, "identity");
    assert_eq!(find(&identity_svid).endpoints, vec![ep.ep_id]);

    // svid inspect: the chain (the very leaf the workload got), no key.
    let inspect = palisade_ok(node, &["svid", "inspect", &want]);
    assert!(
        inspect.contains(&pem::encode(pem::CERTIFICATE, &m.chain[0])),
        "svid inspect does not show the workload's leaf:\n{inspect}"
    );
    assert!(!inspect.contains("PRIVATE KEY"), "{inspect}");
    let chain_file = dir.path().join("inspected.pem");
    std::fs::write(&chain_file, &inspect).unwrap();
    let chain_path = chain_file.to_str().unwrap();
    let san = openssl(&[
        "x509",
        "-in",
        chain_path,
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(san.contains(&format!("URI:{want}")), "{san}");
    let verify = openssl(&["verify", "-CAfile", bundle_path, chain_path]);
    assert!(verify.contains(": OK"), "{verify}");
    let inspect_identity = palisade_ok(node, &["svid", "inspect", &identity_svid]);
    assert!(inspect_identity.contains("-----BEGIN CERTIFICATE-----"));
    assert!(
        !inspect_identity.contains("PRIVATE KEY"),
        "{inspect_identity}"
    );
    let (code, stdout, stderr) =
        palisade(node, &["svid", "inspect", "spiffe://example.org/nobody"]);
    assert_ne!(
        code,
        Some(0),
        "inspecting an unknown SVID: {stdout}{stderr}"
    );
    assert!(stderr.contains("no SVID"), "{stderr}");

    // A rotation through the CLI makes a second generation of key files.
    let rotated = palisade_ok(node, &["identity", "ca", "rotate", "--now"]);
    assert!(
        rotated.contains("active") && rotated.contains("retired"),
        "{rotated}"
    );

    // Every key file is 0600 in a 0700 directory.
    let ca_dir = node.dir().join("state/ca").join(TRUST_DOMAIN);
    let mut generations: Vec<PathBuf> = std::fs::read_dir(&ca_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", ca_dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    generations.sort();
    assert_eq!(
        generations.len(),
        2,
        "two CA generations in {}: {generations:?}",
        ca_dir.display()
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut secrets = Vec::new();
    for g in &generations {
        assert_eq!(mode(g), 0o700, "{}", g.display());
        for key in ["ca.key", "jwt.key"] {
            let path = g.join(key);
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains("PRIVATE KEY"),
                "{}: {text:.40}",
                path.display()
            );
            secrets.push((path.display().to_string(), pem_body_lines(&text)));
        }
    }
    secrets.push((
        "the workload's SVID key".to_owned(),
        pem_body_lines(&pem::encode(pem::PRIVATE_KEY, &m.key)),
    ));

    // The agent's log holds none of them.
    let log = std::fs::read_to_string(node.agent_log()).unwrap();
    assert!(log.contains("CA ready"), "not the agent's log? {log:.400}");
    assert!(!log.contains("PRIVATE KEY"), "the agent logged a PEM key");
    let compact: String = log.split_whitespace().collect();
    for (what, lines) in &secrets {
        let whole: String = lines.concat();
        assert!(!compact.contains(&whole), "the agent's log holds {what}");
        for line in lines.iter().filter(|l| l.len() >= 16) {
            assert!(
                !log.contains(line.as_str()),
                "the agent's log holds a line of {what}"
            );
        }
    }
    assert!(
        !log.contains(&hex(&m.key)),
        "the agent's log holds the workload's key in hex"
    );
}

/// A cgroup v2 named the way runtimes name a container (its last component
/// is the container id); removed on drop.
struct ContainerCgroup(PathBuf);

impl ContainerCgroup {
    /// `<cgroup2 mount>/<container_id>`, if it can be made.
    fn create(container_id: &str) -> Option<Self> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mount = info.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split(" ").nth(4))?
        })?;
        let path = Path::new(mount).join(container_id);
        std::fs::create_dir(&path).ok().map(|()| Self(path))
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        // Reaped processes may take a moment to leave.
        let _ = wait_for(Duration::from_secs(2), || std::fs::remove_dir(&self.0).ok());
    }
}

#[test]
fn a_cgroup_naming_another_pods_container_is_refused() {
    if !privileged() {
        return;
    }
    let topo = topology(vec![pod("x", "a"), pod("y", "b")]);
    let socket = topo.node("n1").unwrap().workload_socket().to_owned();
    let (a, b) = (topo.pod("x/a").unwrap(), topo.pod("y/b").unwrap());
    let (Some(cg_a), Some(cg_b)) = (
        ContainerCgroup::create(a.container_id()),
        ContainerCgroup::create(b.container_id()),
    ) else {
        common::skip("no cgroup2 mount to make a container cgroup in");
        return;
    };
    let (id_a, id_b) = (workload_id("x", "default"), workload_id("y", "default"));
    // (network namespace, cgroup, the ID it gets; None: refused)
    for (netns, cgroup, want, place) in [
        (Some(a.netns()), &cg_a, Some(id_a), "in x/a, cgroup of x/a"),
        (Some(b.netns()), &cg_b, Some(id_b), "in y/b, cgroup of y/b"),
        (Some(a.netns()), &cg_b, None, "in x/a, cgroup of y/b"),
        (None, &cg_b, None, "in the host namespace, cgroup of y/b"),
    ] {
        let mut workload = Workload::start(netns, &socket, place);
        std::fs::write(
            cgroup.0.join("cgroup.procs"),
            workload.child.id().to_string(),
        )
        .unwrap();
        match (workload.fetch_x509(), want) {
            (Ok(m), Some(id)) => assert_eq!(m.spiffe_ids, vec![id], "{place}"),
            (Err(e), None) if e.code == "PermissionDenied" => {}
            (got, want) => panic!("a process {place}: expected {want:?}, got {got:?}"),
        }
    }
}

// Clusters: the node CA.

/// What the node CA answers a node presenting the node SVID kept in
/// `state_dir` for each of `ids` (from inside `netns`, as an attacker who
/// owns that node would ask): the signed SPIFFE ID, or the gRPC code.
fn ask_node_ca_as(
    netns: &NetNs,
    state_dir: &Path,
    address: &str,
    ids: &[String],
) -> Vec<Result<String, tonic::Code>> {
    use palisade_identity::node_ca::{ClientError, NodeCaClient};
    use palisade_identity::tls::{FixedSvid, TrustBundle};
    let dir = state_dir.join("node-identity").join(TRUST_DOMAIN);
    let chain = std::fs::read(dir.join("node.pem")).unwrap();
    let key = std::fs::read(dir.join("node.key")).unwrap();
    let svid = PalisadeSvid::parse_pem(&chain, &key).unwrap();
    let bundle = X509Bundle::from_pem(
        trust_domain(),
        &std::fs::read(dir.join("bundle.pem")).unwrap(),
    )
    .unwrap();
    let address: std::net::SocketAddr = address.parse().unwrap();
    let ids: Vec<palisade_identity::SpiffeId> = ids.iter().map(|i| i.parse().unwrap()).collect();
    netns
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = NodeCaClient::new(
                    address,
                    &trust_domain(),
                    TrustBundle::new(bundle),
                    Some(Arc::new(FixedSvid::new(&svid).unwrap())),
                    Duration::from_secs(5),
                )
                .unwrap();
                let mut out = Vec::new();
                for id in &ids {
                    out.push(match client.sign_x509(id).await {
                        Ok(signed) => Ok(signed.svid.spiffe_id().to_string()),
                        Err(ClientError::Status { status, .. }) => Err(status.code()),
                        Err(e) => panic!("asking the node CA for {id}: {e}"),
                    });
                }
                out
            })
        })
        .unwrap()
}

#[test]
fn a_node_gets_svids_from_the_node_ca_only_for_what_it_hosts() {
    if !privileged() || !etcd_installed() {
        return;
    }
    // n1 is the cluster's CA (the harness's shared identity); its pod x/a
    // is in namespace y.
    let mut topo = Topology::builder()
        .shared_identity(true)
        .node("n1")
        .agent_setting("identity", identity_settings())
        .pod(pod("y", "a").on("n1"))
        .build()
        .expect("topology");
    // n2 holds no CA: it joins n1's node CA with a token the harness made
    // on n1, given as a file with n1's bundle.
    topo.add_node("n2").unwrap();
    topo.add_pod(pod("x", "b").on("n2")).unwrap();
    let ca = topo.node_ca().expect("n1 serves the node CA").clone();
    assert_eq!(ca.node, "n1");
    assert_eq!(ca.trust_domain, TRUST_DOMAIN);
    let ca_address = ca.address.to_string();
    let joined = topo.node_ca_join("n2").expect("n2 joined").clone();
    let token = std::fs::read_to_string(&joined.token_file).unwrap();
    let ca_bundle = std::fs::read_to_string(&joined.bundle_file).unwrap();
    let join = joined.token_file.parent().unwrap().to_owned();
    let n1 = topo.node("n1").unwrap();
    let n2 = topo.node("n2").unwrap();
    let n2_state = n2.dir().join("state");

    // Its pod's workload gets an SVID signed by n1's CA, through n2's
    // Workload API.
    let b = topo.pod("x/b").unwrap();
    let mut workload = Workload::start(Some(b.netns()), n2.workload_socket(), "in pod x/b on n2");
    let got =
        wait_for(Duration::from_secs(15), || workload.fetch_x509().ok()).unwrap_or_else(|| {
            panic!(
                "the workload on n2 got no SVID within 15 s: {:?}; n2's log ends:\n{}",
                workload.fetch_x509(),
                n2.log_tail(30)
            )
        });
    assert_eq!(got.spiffe_ids, vec![workload_id("x", "default")]);
    let n1_bundle = X509Bundle::from_pem(trust_domain(), ca_bundle.as_bytes()).unwrap();
    n1_bundle
        .verify(&got.chain, SystemTime::now())
        .unwrap_or_else(|e| panic!("n2's SVID does not verify against n1's bundle: {e}"));
    let (ok, why) = openssl_verify(&join, "n2-workload", &got.chain, &got.bundle);
    assert!(ok, "openssl verify of n2's SVID: {why}");
    // JWT-SVIDs too: signed by the node CA, validated by n2 against the JWT
    // bundle it fetched from there.
    let jwt = workload
        .fetch_jwt(AUDIENCE)
        .unwrap_or_else(|e| panic!("JWT-SVID on n2: {e:?}; n2's log ends:\n{}", n2.log_tail(30)));
    assert_eq!(jwt.fetched_id, workload_id("x", "default"));
    assert_eq!(jwt.validated_sub, workload_id("x", "default"));
    assert!(
        matches!(&jwt.wrong_audience, Err(e) if e.code == "InvalidArgument"),
        "n2: a token validated for another audience: {:?}",
        jwt.wrong_audience
    );
    assert!(
        matches!(&jwt.tampered, Err(e) if e.code == "InvalidArgument"),
        "n2: a token with an altered signature validated: {:?}",
        jwt.tampered
    );
    assert!(
        !n2_state.join("ca").exists(),
        "n2 must hold no CA key: {} exists",
        n2_state.join("ca").display()
    );
    let key_mode = std::fs::metadata(
        n2_state
            .join("node-identity")
            .join(TRUST_DOMAIN)
            .join("node.key"),
    )
    .unwrap()
    .permissions()
    .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let n2_ca = ca_status(n2);
    assert!(
        n2_ca
            .node_ca
            .as_deref()
            .is_some_and(|s| s.contains(&ca_address) && s.contains("/palisade/node/n2")),
        "{:?}",
        n2_ca.node_ca
    );
    match n2
        .client()
        .call(&Request::IdentityCaRotate { immediately: true })
    {
        Err(e) => assert!(e.to_string().contains("holds no CA"), "{e}"),
        Ok(other) => panic!("a rotation on n2 must be refused, got {other:?}"),
    }
    // The token was spent.
    match call(n1, &Request::IdentityNodeList) {
        Response::CaNodes { nodes, tokens } => {
            assert_eq!(nodes.len(), 1, "{nodes:?}");
            assert_eq!(nodes[0].name, "n2");
            assert_eq!(tokens.len(), 1, "{tokens:?}");
            assert!(tokens[0].used.is_some(), "{tokens:?}");
            assert!(!format!("{tokens:?}").contains(&token), "no secret listed");
        }
        other => panic!("node list: unexpected answer {other:?}"),
    }

    // The CLI: a token alone on stdout (for `> join-token`), the nodes,
    // and where n2's SVIDs come from.
    let token_out = palisade_ok(n1, &["identity", "ca", "token", "create", "--node", "n3"]);
    assert!(
        token_out.trim().starts_with("pjt1.") && token_out.trim().lines().count() == 1,
        "{token_out}"
    );
    let listed = palisade_ok(n1, &["identity", "ca", "node", "list"]);
    assert!(listed.contains("n2"), "{listed}");
    let tokens = palisade_ok(n1, &["identity", "ca", "token", "list"]);
    assert!(
        tokens.contains("n3") && !tokens.contains(token_out.trim()),
        "{tokens}"
    );
    let shown = palisade_ok(n2, &["identity", "ca", "show"]);
    assert!(shown.contains("using the node CA at"), "{shown}");

    // Whoever owns n2 and its node SVID gets its own pod's identities and
    // nothing else: not n1's pod's, not n1's node SVID, not the CA's.
    let a_identity = identity_of(n1, "a");
    let b_identity = identity_of(n2, "b");
    let id = |path: &str| format!("spiffe://{TRUST_DOMAIN}/{path}");
    let asks = [
        workload_id("x", "default"),
        id(&format!("identity/{b_identity}")),
        workload_id("y", "default"),
        id(&format!("identity/{a_identity}")),
        id("palisade/node/n1"),
        id("palisade/ca"),
        "spiffe://other.org/ns/x/sa/default".to_owned(),
    ];
    let answers = ask_node_ca_as(n2.netns(), &n2_state, &ca_address, &asks);
    let denied = || Err(tonic::Code::PermissionDenied);
    assert_eq!(
        answers,
        vec![
            Ok(asks[0].clone()),
            Ok(asks[1].clone()),
            denied(),
            denied(),
            denied(),
            denied(),
            denied()
        ],
        "what n2's node SVID obtains"
    );

    // A rotation that takes effect at once: n2, restarted with only the
    // old CA in its kept bundle, still recognizes the node CA (whose server
    // SVID is not replaced at the rotation), fetches the new bundle and has
    // every SVID re-signed by the new generation.
    let rotated = match call(n1, &Request::IdentityCaRotate { immediately: true }) {
        Response::IdentityCa(status) => generation(&status, "active").number,
        other => panic!("rotate on n1: unexpected answer {other:?}"),
    };
    n2.restart_agent(false).unwrap();
    let resigned = wait_for(Duration::from_secs(15), || {
        let list = svids(n2);
        (list.len() == 2 && list.iter().all(|s| s.ca_generation == rotated)).then_some(list)
    });
    assert!(
        resigned.is_some(),
        "n2 did not get SVIDs of generation {rotated} within 15 s after a rotation and a restart: {:?}; n2's log ends:\n{}",
        svids(n2),
        n2.log_tail(30)
    );

    // A revoked node gets nothing, not even for its own pods.
    match call(n1, &Request::IdentityNodeRevoke { node: "n2".into() }) {
        Response::Done => {}
        other => panic!("revoke: unexpected answer {other:?}"),
    }
    let answers = ask_node_ca_as(n2.netns(), &n2_state, &ca_address, &asks[..1]);
    assert_eq!(answers, vec![denied()], "a revoked node");
    drop(workload);
}
