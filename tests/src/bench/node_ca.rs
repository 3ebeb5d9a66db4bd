//! `palisade-bench node-ca`: X.509-SVIDs issued through palisade's node CA
//! (the cluster CA service, [`palisade_identity::node_ca`]) against local
//! issuance with [`CaSet::issue_x509`] in the same run.
//!
//! The node CA runs in this process: the real `node_ca::serve` (gRPC over
//! TLS 1.3, client authentication with the node SVID) on 127.0.0.1, with a
//! [`Signer`] backed by a real [`CaSet`] and a [`Registry`] in a temporary
//! directory. A real [`NodeCaClient`] joins with a single-use join token,
//! then asks for X.509-SVIDs with `sign_x509`: per request it generates a
//! P-256 key and a CSR, the server verifies the CSR, checks that the node
//! hosts the identity and signs with the CA, and the client checks the
//! answer (key match, chain to the bundle, SPIFFE ID). Client and server
//! share one tokio runtime and the machine's CPUs; nothing is pinned.
//!
//! Per round, in an order rotated every round:
//!
//! - baseline: `count` sequential `CaSet::issue_x509` on one thread;
//! - node CA, 1 in flight: `count / 4` sequential `sign_x509` over one
//!   connection;
//! - node CA, `concurrency` in flight: `count` `sign_x509`, split over
//!   `concurrency` tasks that share the (cloned) client and its connection.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use palisade_identity::ca::{CaSet, EcKey, KeyUse};
use palisade_identity::node_ca::proto::Bundle;
use palisade_identity::node_ca::{self, csr, NodeCaClient, NodeCaService, Registry, Signer};
use palisade_identity::tls::{self, FixedSvid, SvidSource, TrustBundle};
use palisade_identity::x509::X509Svid;
use palisade_identity::{SpiffeId, TrustDomain};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::spiffe::{cpu_secs, time_n, trust_domain, verify_all, workload_ids, POLICY, SVID_TTL};
use super::{f, median, percentile, say, Report, Table};

/// The node the client joins as.
const NODE: &str = "bench-node";
/// SPIFFE IDs the node hosts (a node with 100 pods of distinct service
/// accounts); requests cycle through them, as does the baseline.
const HOSTED: usize = 100;
/// Every request's limit (the client's gRPC timeout, connecting included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole phase's limit.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
/// The server's shutdown, and the runtime's at the end.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of `palisade-bench node-ca`.
#[derive(Debug, Clone)]
pub struct Options {
    /// SVIDs per round of the baseline and of the concurrent phase; the
    /// 1-in-flight phase makes a quarter of them.
    pub count: usize,
    /// Requests in flight in the concurrent phase.
    pub concurrency: usize,
    /// Rounds.
    pub rounds: usize,
}

// ------------------------------------------------------------- fixtures ----

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("palisade-bench-node-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The CA's owner as the service sees it: a real `CaSet` (signing under a
/// mutex, as the agent's `IdentityService` does) and a fixed set of
/// identities on the one node.
struct BenchSigner {
    ca: Mutex<CaSet>,
    hosted: BTreeSet<SpiffeId>,
    /// X.509-SVIDs signed (node SVIDs included).
    signed: AtomicU64,
}

impl Signer for BenchSigner {
    fn sign_x509(&self, id: &SpiffeId, spki: &[u8]) -> Result<(Vec<Vec<u8>>, u64), String> {
        let mut ca = lock(&self.ca);
        let generation = ca.active().map_err(|e| e.to_string())?.lifecycle.number;
        let (chain, _, _) = ca
            .issue_x509_for_key(id, spki, SystemTime::now(), SVID_TTL)
            .map_err(|e| e.to_string())?;
        self.signed.fetch_add(1, Ordering::Relaxed);
        Ok((chain, generation))
    }

    fn sign_jwt(&self, _id: &SpiffeId, _audience: &[String]) -> Result<String, String> {
        Err("node-ca bench: JWT-SVIDs are not part of this benchmark".to_owned())
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
        // Built per request, as the agent's signer builds it from the
        // cluster store's endpoints on the node.
        if node == NODE {
            self.hosted.clone()
        } else {
            BTreeSet::new()
        }
    }
}

/// The node CA server, running on the runtime.
struct Server {
    addr: SocketAddr,
    signer: Arc<BenchSigner>,
    registry: Arc<Registry>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Server {
    /// Starts the server on 127.0.0.1 (a free port), presenting the CA
    /// server's SVID, `spiffe://<td>/palisade/ca`.
    async fn start(
        td: &TrustDomain,
        hosted: BTreeSet<SpiffeId>,
        registry_path: &Path,
    ) -> anyhow::Result<Self> {
        let cas = CaSet::bootstrap(td.clone(), SystemTime::now(), &POLICY)
            .context("bootstrapping the node CA's CA")?;
        let signer = Arc::new(BenchSigner {
            ca: Mutex::new(cas),
            hosted,
            signed: AtomicU64::new(0),
        });
        let registry = Arc::new(
            Registry::open(registry_path)
                .with_context(|| format!("opening the registry {}", registry_path.display()))?,
        );
        let trust = TrustBundle::new(lock(&signer.ca).x509_bundle());
        let server_id = node_ca::server_id(td).map_err(|e| anyhow!("the server's ID: {e}"))?;
        let (server_svid, _) = lock(&signer.ca)
            .issue_x509(&server_id, SystemTime::now(), SVID_TTL)
            .context("issuing the server's SVID")?;
        let source: Arc<dyn SvidSource> =
            Arc::new(FixedSvid::new(&server_svid).context("the server's SVID for rustls")?);
        let config =
            tls::server_config(source, trust.clone(), false).context("the server's TLS config")?;
        let service = NodeCaService::new(td.clone(), signer.clone(), registry.clone(), trust);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr().context("the listener's address")?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(node_ca::serve(
            listener,
            Arc::new(config),
            service,
            async move {
                let _ = rx.await;
            },
        ));
        Ok(Self {
            addr,
            signer,
            registry,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The bundle a node trusts (its own copy, not the server's).
    fn trust(&self) -> anyhow::Result<TrustBundle> {
        Ok(TrustBundle::new(lock(&self.signer.ca).x509_bundle()))
    }

    fn signed(&self) -> u64 {
        self.signer.signed.load(Ordering::Relaxed)
    }

    /// Joins `NODE` with a fresh single-use token; returns a client
    /// presenting the node SVID.
    async fn join(&self, td: &TrustDomain) -> anyhow::Result<NodeCaClient> {
        let (token, _) = self
            .registry
            .create_token(NODE, Duration::from_secs(60), SystemTime::now())
            .context("creating a join token")?;
        let anonymous = NodeCaClient::new(self.addr, td, self.trust()?, None, REQUEST_TIMEOUT)
            .context("the joining client")?;
        // The client refuses an empty bundle itself.
        let (node_svid, _) = anonymous.join(&token).await.context("joining")?;
        let expected = node_ca::node_id(td, NODE).map_err(|e| anyhow!("node ID: {e}"))?;
        if node_svid.spiffe_id() != &expected {
            bail!(
                "the join gave an SVID for {} (expected {expected})",
                node_svid.spiffe_id()
            );
        }
        let source: Arc<dyn SvidSource> =
            Arc::new(FixedSvid::new(&node_svid).context("the node SVID for rustls")?);
        NodeCaClient::new(self.addr, td, self.trust()?, Some(source), REQUEST_TIMEOUT)
            .context("the node's client")
    }

    /// Shuts the server down and waits (bounded) for it.
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(SHUTDOWN_TIMEOUT, task)
                .await
                .map_err(|_| anyhow!("the node CA did not shut down in {SHUTDOWN_TIMEOUT:?}"))?
                .context("the node CA's task")?
                .context("the node CA server")?;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // On an early return: stop serving (the runtime's shutdown, which
        // is bounded, ends the task).
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

// --------------------------------------------------------------- phases ----

/// One phase's measurements.
#[derive(Debug, Clone)]
struct Phase {
    /// SVIDs made.
    n: usize,
    /// Wall-clock seconds.
    secs: f64,
    /// CPU seconds of the whole process (client and server).
    cpu: f64,
    /// Per-SVID latencies, nanoseconds, sorted.
    lat_ns: Vec<u64>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.n as f64 / self.secs
    }

    fn cpu_us(&self) -> f64 {
        self.cpu * 1e6 / self.n as f64
    }

    fn p_ms(&self, p: f64) -> f64 {
        percentile(&self.lat_ns, p) as f64 / 1e6
    }

    fn json(&self) -> Value {
        json!({
            "svids": self.n,
            "seconds": self.secs,
            "per_s": self.rate(),
            "cpu_us_per_svid": self.cpu_us(),
            "p50_ms": self.p_ms(50.0),
            "p90_ms": self.p_ms(90.0),
            "p99_ms": self.p_ms(99.0),
            "max_ms": self.lat_ns.last().copied().unwrap_or(0) as f64 / 1e6,
        })
    }
}

/// The baseline: `count` sequential `issue_x509` on this thread; the SVIDs
/// made are verified afterwards (untimed).
fn local_phase(cas: &mut CaSet, ids: &[SpiffeId], count: usize) -> anyhow::Result<Phase> {
    let now = SystemTime::now();
    let mut held: Vec<X509Svid> = Vec::with_capacity(count);
    let mut lat_ns = Vec::with_capacity(count);
    let pid = std::process::id();
    let cpu0 = cpu_secs(pid);
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        let (svid, _) = cas
            .issue_x509(&ids[i % ids.len()], now, SVID_TTL)
            .context("local issuance")?;
        lat_ns.push(t.elapsed().as_nanos() as u64);
        held.push(svid);
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    let ca_cert = cas
        .active()
        .context("the local CA")?
        .authority
        .certificate()
        .to_vec();
    verify_all(cas.trust_domain(), &ca_cert, &held, now)?;
    lat_ns.sort_unstable();
    Ok(Phase {
        n: count,
        secs,
        cpu,
        lat_ns,
    })
}

/// `requests` `sign_x509` calls by `in_flight` tasks sharing `client`
/// (each task's calls one after the other). Any failure fails the phase.
async fn node_phase(
    server: &Server,
    client: &NodeCaClient,
    ids: &Arc<Vec<SpiffeId>>,
    requests: usize,
    in_flight: usize,
) -> anyhow::Result<Phase> {
    let signed0 = server.signed();
    let pid = std::process::id();
    let cpu0 = cpu_secs(pid);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for task in 0..in_flight {
        let quota = requests / in_flight + usize::from(task < requests % in_flight);
        let client = client.clone();
        let ids = ids.clone();
        set.spawn(async move {
            let mut lat = Vec::with_capacity(quota);
            for j in 0..quota {
                let id = &ids[(task + j * in_flight) % ids.len()];
                let t = Instant::now();
                let signed = client.sign_x509(id).await?;
                lat.push(t.elapsed().as_nanos() as u64);
                black_box(signed);
            }
            Ok::<_, node_ca::ClientError>(lat)
        });
    }
    let mut lat_ns = Vec::with_capacity(requests);
    let collect = async {
        while let Some(joined) = set.join_next().await {
            lat_ns.extend(joined.context("a client task")??);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(PHASE_TIMEOUT, collect)
        .await
        .map_err(|_| {
            anyhow!("the phase did not finish in {PHASE_TIMEOUT:?} (a smaller --count?)")
        })??;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    let signed = server.signed() - signed0;
    if lat_ns.len() != requests || signed != requests as u64 {
        bail!(
            "{} SVIDs came back and the CA signed {signed}, of {requests} requested",
            lat_ns.len()
        );
    }
    lat_ns.sort_unstable();
    Ok(Phase {
        n: requests,
        secs,
        cpu,
        lat_ns,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Local,
    Single,
    Concurrent,
}

const KINDS: [Kind; 3] = [Kind::Local, Kind::Single, Kind::Concurrent];

// ------------------------------------------------------------------ run ----

/// Runs `node-ca` on a runtime of its own (worker threads: one per CPU),
/// shut down (bounded) at the end, also on failure.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    if opts.count < 4 || opts.concurrency == 0 || opts.rounds == 0 {
        bail!("node-ca: --count must be at least 4, --concurrency and --rounds at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("node-ca-bench")
        .build()
        .context("starting the runtime")?;
    let result = bench(&rt, opts);
    rt.shutdown_timeout(SHUTDOWN_TIMEOUT);
    result
}

fn bench(rt: &tokio::runtime::Runtime, opts: &Options) -> anyhow::Result<Report> {
    let td = trust_domain()?;
    let ids = Arc::new(workload_ids(&td, HOSTED)?);
    let mut local = CaSet::bootstrap(td.clone(), SystemTime::now(), &POLICY)
        .context("bootstrapping the local CA")?;

    // The registry is written only by the token and the join; its
    // directory goes as soon as the node has joined, so that nothing is
    // left behind even if the run is interrupted while measuring.
    let dir = TempDir::new()?;
    let (server, client) = rt.block_on(async {
        let server = Server::start(
            &td,
            ids.iter().cloned().collect(),
            &dir.path().join("nodes.json"),
        )
        .await?;
        let client = server.join(&td).await?;
        anyhow::Ok((server, client))
    })?;
    drop(dir);
    let single_n = (opts.count / 4).max(1);

    // Warm-up (not reported): the TLS connection, caches, the allocator,
    // the blocking pool's threads.
    let warm = (opts.count / 10).clamp(20, 500);
    time_n(warm, |i| {
        black_box(local.issue_x509(&ids[i % ids.len()], SystemTime::now(), SVID_TTL)?);
        Ok(())
    })?;
    rt.block_on(async {
        node_phase(&server, &client, &ids, warm, 1).await?;
        node_phase(
            &server,
            &client,
            &ids,
            warm.max(opts.concurrency),
            opts.concurrency,
        )
        .await
    })
    .context("node CA warm-up")?;

    let mut phases: Vec<[Option<Phase>; 3]> = Vec::with_capacity(opts.rounds);
    for round in 0..opts.rounds {
        let mut got: [Option<Phase>; 3] = [None, None, None];
        for k in 0..3 {
            let slot = (round + k) % 3;
            let phase = match KINDS[slot] {
                Kind::Local => local_phase(&mut local, &ids, opts.count)?,
                Kind::Single => rt
                    .block_on(node_phase(&server, &client, &ids, single_n, 1))
                    .context("node CA, 1 in flight")?,
                Kind::Concurrent => rt
                    .block_on(node_phase(
                        &server,
                        &client,
                        &ids,
                        opts.count,
                        opts.concurrency,
                    ))
                    .with_context(|| format!("node CA, {} in flight", opts.concurrency))?,
            };
            got[slot] = Some(phase);
        }
        let [Some(l), Some(s), Some(c)] = &got else {
            bail!("round {}: a phase is missing", round + 1);
        };
        say(format!(
            "round {}: local {:.0}/s; node CA x1 {:.0}/s (p50 {:.3} ms); x{} {:.0}/s (p50 {:.3} ms, p99 {:.3} ms)",
            round + 1,
            l.rate(),
            s.rate(),
            s.p_ms(50.0),
            opts.concurrency,
            c.rate(),
            c.p_ms(50.0),
            c.p_ms(99.0),
        ));
        phases.push(got);
    }
    let signed_total = server.signed();
    drop(client);
    rt.block_on(server.stop())?;

    let parts = parts(&td, &ids, (opts.count / 2).max(100))?;
    report(opts, single_n, &phases, &parts, signed_total)
}

/// The steps of one node-CA request, each timed alone (`n` calls, one
/// pass), and the local issuance: seconds per call.
fn parts(td: &TrustDomain, ids: &[SpiffeId], n: usize) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let now = SystemTime::now();
    let mut cas =
        CaSet::bootstrap(td.clone(), now, &POLICY).context("bootstrapping the parts' CA")?;
    let bundle = cas.x509_bundle();
    let keys: Vec<EcKey> = (0..n)
        .map(|_| EcKey::generate(KeyUse::X509))
        .collect::<Result<_, _>>()?;
    let csrs: Vec<Vec<u8>> = keys
        .iter()
        .map(csr::request_for)
        .collect::<Result<_, _>>()?;
    let spkis: Vec<Vec<u8>> = csrs
        .iter()
        .map(|c| csr::verified_key(c))
        .collect::<Result<_, _>>()?;
    let chains: Vec<Vec<u8>> = spkis
        .iter()
        .enumerate()
        .map(|(i, spki)| {
            cas.issue_x509_for_key(&ids[i % ids.len()], spki, now, SVID_TTL)
                .map(|(chain, _, _)| chain.concat())
        })
        .collect::<Result<_, _>>()?;
    let per = |secs: f64| secs / n as f64;
    let mut out = vec![
        (
            "client: EcKey::generate (the SVID's P-256 key)",
            per(time_n(n, |_| {
                black_box(EcKey::generate(KeyUse::X509)?);
                Ok(())
            })?),
        ),
        (
            "client: csr::request_for (build and sign the CSR)",
            per(time_n(n, |i| {
                black_box(csr::request_for(&keys[i])?);
                Ok(())
            })?),
        ),
        (
            "server: csr::verified_key (parse the CSR, verify its signature)",
            per(time_n(n, |i| {
                black_box(csr::verified_key(&csrs[i])?);
                Ok(())
            })?),
        ),
        (
            "server: CaSet::issue_x509_for_key (certificate: encode + sign)",
            per(time_n(n, |i| {
                black_box(cas.issue_x509_for_key(&ids[i % ids.len()], &spkis[i], now, SVID_TTL)?);
                Ok(())
            })?),
        ),
        (
            "client: X509Svid::parse_der + X509Bundle::verify (check the answer)",
            per(time_n(n, |i| {
                let svid = X509Svid::parse_der(&chains[i], keys[i].pkcs8().secret_der())?;
                black_box(bundle.verify(svid.chain(), now)?);
                Ok(())
            })?),
        ),
    ];
    let sum: f64 = out.iter().map(|(_, s)| s).sum();
    out.push(("sum: the crypto and encoding of one node-CA request", sum));
    out.push((
        "local: CaSet::issue_x509 (the baseline's call)",
        per(time_n(n, |i| {
            black_box(cas.issue_x509(&ids[i % ids.len()], now, SVID_TTL)?);
            Ok(())
        })?),
    ));
    Ok(out)
}

fn report(
    opts: &Options,
    single_n: usize,
    phases: &[[Option<Phase>; 3]],
    parts: &[(&'static str, f64)],
    signed_total: u64,
) -> anyhow::Result<Report> {
    let of = |k: usize| -> Vec<&Phase> { phases.iter().filter_map(|p| p[k].as_ref()).collect() };
    let (local, single, conc) = (of(0), of(1), of(2));
    let col =
        |v: &[&Phase], g: &dyn Fn(&Phase) -> f64| -> Vec<f64> { v.iter().map(|p| g(p)).collect() };
    let rate = |p: &Phase| p.rate();
    let local_rates = col(&local, &rate);
    let ratios = |v: &[&Phase]| -> Vec<f64> {
        v.iter()
            .zip(&local_rates)
            .map(|(p, l)| p.rate() / l)
            .collect()
    };
    let single_ratio = ratios(&single);
    let conc_ratio = ratios(&conc);
    let per_round = |v: &[f64], digits: usize| {
        v.iter()
            .map(|x| f(*x, digits))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());

    let mut t = Table::new(
        format!(
            "node-ca: X.509-SVIDs through the node CA (gRPC, TLS 1.3, loopback; server and client in this process, not pinned, {cpus} CPUs shared) vs local issuance, median of {} rounds",
            opts.rounds
        ),
        &[
            "what",
            "SVIDs",
            "SVIDs/s",
            "p50 ms",
            "p99 ms",
            "CPU µs/SVID",
            "ratio to local",
            "rounds (SVIDs/s)",
        ],
    );
    let mut row = |name: String, v: &[&Phase], n: usize, ratio: &[f64]| {
        let rates = col(v, &rate);
        t.row(vec![
            name,
            n.to_string(),
            f(median(&rates), 0),
            f(median(&col(v, &|p| p.p_ms(50.0))), 3),
            f(median(&col(v, &|p| p.p_ms(99.0))), 3),
            f(median(&col(v, &|p| p.cpu_us())), 1),
            f(median(ratio), 3),
            per_round(&rates, 0),
        ]);
    };
    row(
        "baseline: local CaSet::issue_x509, sequential, 1 thread".into(),
        &local,
        opts.count,
        &vec![1.0; local.len()],
    );
    row(
        "node CA sign_x509, 1 in flight (1 connection)".into(),
        &single,
        single_n,
        &single_ratio,
    );
    row(
        format!(
            "node CA sign_x509, {} in flight (1 connection)",
            opts.concurrency
        ),
        &conc,
        opts.count,
        &conc_ratio,
    );
    t.notes.push(format!(
        "ratio = node-CA SVIDs/s ÷ local SVIDs/s of the same round; per round: 1 in flight {}, {} in flight {}. \
         CPU: the whole process's CPU-time clock (client + server) over the phase, per SVID. \
         The node hosts {HOSTED} SPIFFE IDs; requests and the baseline cycle through them. \
         Every node-CA SVID was checked by the client (key, chain to the bundle, ID); the CA signed {signed_total} X.509-SVIDs in all (warm-up and the node SVID included).",
        per_round(&single_ratio, 3),
        opts.concurrency,
        per_round(&conc_ratio, 3),
    ));

    let mut b = Table::new(
        "node-ca: the steps of one request, each timed alone (one pass)".to_owned(),
        &["step", "µs each"],
    );
    for (name, secs) in parts {
        b.row(vec![(*name).to_owned(), f(secs * 1e6, 1)]);
    }
    let phase_json = |v: &[&Phase]| v.iter().map(|p| p.json()).collect::<Vec<_>>();
    let json = json!({
        "benchmark": "node-ca",
        "options": {"count": opts.count, "concurrency": opts.concurrency, "rounds": opts.rounds, "single_requests": single_n, "hosted_ids": HOSTED},
        "local": {"median_per_s": median(&local_rates), "rounds": phase_json(&local)},
        "node_ca_single": {
            "median_per_s": median(&col(&single, &rate)),
            "ratio": {"median": median(&single_ratio), "rounds": single_ratio},
            "rounds": phase_json(&single),
        },
        "node_ca_concurrent": {
            "in_flight": opts.concurrency,
            "median_per_s": median(&col(&conc, &rate)),
            "ratio": {"median": median(&conc_ratio), "rounds": conc_ratio},
            "rounds": phase_json(&conc),
        },
        "ca_signed_total": signed_total,
        "steps_us": parts.iter().map(|(name, secs)| json!({"step": name, "us": secs * 1e6})).collect::<Vec<_>>(),
    });
    Ok(Report {
        tables: vec![t, b],
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_measures_every_phase() {
        let r = run(&Options {
            count: 40,
            concurrency: 4,
            rounds: 2,
        })
        .expect("runs");
        assert_eq!(r.json["node_ca_single"]["rounds"][1]["svids"], 10);
        assert_eq!(r.json["node_ca_concurrent"]["rounds"][0]["svids"], 40);
        assert!(
            r.json["node_ca_concurrent"]["ratio"]["median"]
                .as_f64()
                .is_some_and(|x| x > 0.0),
            "{}",
            r.json
        );
        // Node SVID + warm-up (20 + 20) + 2 rounds of (10 + 40).
        assert_eq!(r.json["ca_signed_total"], 1 + 40 + 100);
    }
}
