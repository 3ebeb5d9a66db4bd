//! `palisade-bench auth`: mutual authentication between node agents
//! (`authentication: {mode: required}`), three measurements in one run:
//!
//! 1. **First connection of a new pair** (root, real agents): the time from
//!    a new client pod being usable (its CNI ADD returned) to `connect()`
//!    completing (TCP handshake done) toward a server pod whose ingress rule
//!    requires authentication. Every sample is a new pod with a unique
//!    `sample: <n>` label, so a new security identity, so a pair that was
//!    never authenticated; the rule selects clients by `app: client`. Three
//!    topologies of one node each, alive together, samples interleaved
//!    (rotated order): the default agent (pre-authentication), an agent
//!    with `auth.pre_authenticate: false` (on demand: the first SYN is
//!    dropped, which signals the agent), and the same rule without
//!    `authentication` (reference: what a new pod's first connection costs
//!    without authentication). Server and clients are on the same node.
//! 2. **Mutual handshakes per CPU-second** (no root, in this process):
//!    `mutual_auth::Client::dial` against `mutual_auth::Server::accept` over
//!    loopback TCP, 1 and 8 in flight, for a fixed time, against a one-way
//!    TLS 1.3 handshake with rustls (server certificate only, the same P-256
//!    SVID and chain) followed by the same one-line answer: the baseline.
//!    Client and server run on one current-thread runtime each (two OS
//!    threads), so the CPU of each side is its thread's CPU-time clock; the
//!    total is the process's.
//! 3. **TCP_RR after authentication** (root, real agent): two pods, the
//!    same rule with and without `authentication: {mode: required}`
//!    (re-applied between rounds, alternating), TCP_RR (and TCP_CRR) with
//!    the datapath benchmark's client and echo server once the pair is
//!    authenticated. Each measurement first checks, on a fresh connection,
//!    that the flow event says whether it was authenticated.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use palisade_api::{AuthRecord, AuthReport, FlowKind, FlowRecord, Request, Response};
use palisade_identity::ca::CaSet;
use palisade_identity::mutual_auth::{self, Admission, IdentitySvids, LocalSvid};
use palisade_identity::tls::{self, FixedSvid, SvidSource, TrustBundle};
use palisade_identity::x509::X509Svid;
use palisade_identity::{NumericIdentity, SpiffeId, TrustDomain};
use palisade_tests::{Node, Pod, PodSpec, Topology};
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::SignatureScheme;
use serde_json::{json, Value};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::datapath::{expect_dropped, in_netns, tcp_crr, tcp_rr, BenchServer, Sample, PORT};
use super::spiffe::{cpu_secs, trust_domain, POLICY, SVID_TTL};
use super::{agent_cpu_secs, f, median, percentile, say, Report, Table};

/// The pods' namespace.
const NS: &str = "bench";
/// Goal of part 1: p99 of the first connection with pre-authentication.
const FIRST_P99_GOAL_MS: f64 = 50.0;
/// Goal of part 3: TCP_RR with authentication / without.
const RR_GOAL: f64 = 0.95;
/// In-flight handshakes of part 2.
const IN_FLIGHT: [usize; 2] = [1, 8];
/// Bound of one in-process handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of waiting for a pair to be authenticated (part 3).
const AUTH_WAIT: Duration = Duration::from_secs(10);
/// How long a connection's flow event may take to reach the agent's
/// store (after a TCP_CRR run the agent is still reading a backlog).
const FLOW_EVENT_WAIT: Duration = Duration::from_secs(20);
/// Source ports of the connections that check a rule (one per measurement).
const CHECK_PORT_BASE: u16 = 20_000;
/// The server's and the client's identity in part 2.
const SERVER_ID: NumericIdentity = NumericIdentity(4096);
const CLIENT_ID: NumericIdentity = NumericIdentity(4097);

/// Which parts to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// 1: first connection of a new pair.
    FirstConnection,
    /// 2: handshakes per CPU-second.
    Handshakes,
    /// 3: TCP_RR after authentication.
    TcpRr,
}

impl std::str::FromStr for Part {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "first-connection" => Ok(Self::FirstConnection),
            "handshakes" => Ok(Self::Handshakes),
            "tcp-rr" => Ok(Self::TcpRr),
            other => Err(format!(
                "{other:?} is not a part (first-connection, handshakes, tcp-rr)"
            )),
        }
    }
}

/// Options of `palisade-bench auth`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Part 1: new pods per mode.
    pub samples: usize,
    /// Part 1: bound of each first `connect()`.
    pub connect_timeout: Duration,
    /// Part 2: seconds per phase (kind x in flight).
    pub handshake_seconds: f64,
    /// Part 2: rounds (each runs every phase once).
    pub rounds: usize,
    /// Part 3: rounds (each measures both rules).
    pub rr_rounds: usize,
    /// Part 3: seconds per TCP_RR and TCP_CRR measurement.
    pub rr_seconds: f64,
    /// Part 3: untimed warm-up before each measurement.
    pub warmup: Duration,
    /// Part 3: client thread on CPU 0, echo server on CPU 1.
    pub pin: bool,
    /// Only this part (all when `None`).
    pub only: Option<Part>,
    /// Harness progress on stderr.
    pub verbose: bool,
}

impl Options {
    /// Whether `part` runs.
    pub fn runs(&self, part: Part) -> bool {
        self.only.is_none_or(|p| p == part)
    }

    /// Whether a part that needs root (agents, namespaces) runs.
    pub fn needs_root(&self) -> bool {
        self.runs(Part::FirstConnection) || self.runs(Part::TcpRr)
    }

    fn to_json(&self) -> Value {
        json!({
            "samples": self.samples, "connect_timeout_ms": self.connect_timeout.as_millis() as u64,
            "handshake_seconds": self.handshake_seconds, "rounds": self.rounds, "rr_rounds": self.rr_rounds,
            "rr_seconds": self.rr_seconds, "warmup_s": self.warmup.as_secs_f64(), "pinned": self.pin,
            "only": self.only.map(|p| format!("{p:?}")),
        })
    }
}

/// Runs the parts asked for.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let mut tables = Vec::new();
    let mut json = json!({"benchmark": "auth", "options": opts.to_json()});
    if opts.runs(Part::FirstConnection) {
        let (t, j) = first_connection(opts).context("part 1 (first connection)")?;
        tables.extend(t);
        json["first_connection"] = j;
    }
    if opts.runs(Part::Handshakes) {
        let (t, j) = handshakes(opts).context("part 2 (handshakes per CPU-second)")?;
        tables.extend(t);
        json["handshakes"] = j;
    }
    if opts.runs(Part::TcpRr) {
        let (t, j) = tcp_rr_after_auth(opts).context("part 3 (TCP_RR after authentication)")?;
        tables.extend(t);
        json["tcp_rr"] = j;
    }
    Ok(Report { tables, json })
}

// --------------------------------------------------------------- common ----

/// The server's ingress: clients (`app: client`) to [`PORT`], with
/// `authentication: {mode: required}` when `auth`.
fn policy_yaml(auth: bool) -> anyhow::Result<String> {
    let mut rule = json!({
        "fromEndpoints": [{"matchLabels": {"app": "client"}}],
        "toPorts": [{"ports": [{"port": PORT.to_string(), "protocol": "TCP"}]}],
    });
    if auth {
        rule["authentication"] = json!({"mode": "required"});
    }
    let doc = json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "bench-auth", "namespace": NS},
        "spec": {"endpointSelector": {"matchLabels": {"app": "server"}}, "ingress": [rule]},
    });
    serde_yaml::to_string(&doc).context("the policy as YAML")
}

/// One node `n1`, namespace `bench`, the server pod (`app: server`), the
/// rule applied; `pre_authenticate: false` sets `auth.pre_authenticate`.
fn topology(
    pre_authenticate: bool,
    auth_rule: bool,
    extra_pods: &[PodSpec],
    verbose: bool,
) -> anyhow::Result<Topology> {
    let mut builder = Topology::builder()
        .namespace(NS, [("ns".to_owned(), NS.to_owned())].into())
        .pod(PodSpec::new(NS, "server").label("app", "server"))
        .verbose(verbose);
    for p in extra_pods {
        builder = builder.pod(p.clone());
    }
    if !pre_authenticate {
        let mut auth = serde_yaml::Mapping::new();
        auth.insert("pre_authenticate".into(), false.into());
        builder = builder.agent_setting("auth", auth);
    }
    let topo = builder
        .build()
        .context("building a topology (node n1, pod bench/server)")?;
    super::apply(topo.node("n1")?, "bench-auth", &policy_yaml(auth_rule)?)?;
    Ok(topo)
}

fn auth_report(node: &Node) -> anyhow::Result<AuthReport> {
    match node
        .client()
        .call(&Request::AuthList)
        .context("auth list")?
    {
        Response::Auth(r) => Ok(*r),
        other => bail!("auth list: unexpected answer {other:?}"),
    }
}

/// The `spiffe` pair (local, remote) as the node lists it.
fn pair(report: &AuthReport, local: u32, remote: u32) -> Option<&AuthRecord> {
    report.pairs.iter().find(|p| {
        p.local_identity == local && p.remote_identity == remote && p.auth_type == "spiffe"
    })
}

/// The newest flow events of `kinds` (at most `limit`; all when `None`),
/// only those after sequence number `since` when given.
fn flow_events(
    node: &Node,
    kinds: &[FlowKind],
    since: Option<u64>,
    limit: Option<usize>,
) -> anyhow::Result<Vec<FlowRecord>> {
    let request = Request::Flows {
        follow: false,
        since_seq: since,
        limit,
        kinds: kinds.to_vec(),
    };
    let mut out = Vec::new();
    node.client()
        .stream(&request, |r| {
            if let Response::Flow(f) = r {
                out.push(*f);
            }
            true
        })
        .context("flows")?;
    Ok(out)
}

/// Pod name -> identity, from the agent's endpoint list.
fn identities(node: &Node) -> anyhow::Result<BTreeMap<String, u32>> {
    Ok(super::endpoints(node)?
        .into_iter()
        .map(|e| (e.spec.pod_name, e.identity))
        .collect())
}

/// `v` sorted (NaN last); failures are `INFINITY`.
fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// Milliseconds, or `> limit` for a failure.
fn ms_cell(x: f64, limit_ms: f64) -> String {
    if x.is_finite() {
        f(x, 1)
    } else {
        format!("> {limit_ms:.0} (failed)")
    }
}

fn finite_or_null(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

// ------------------------------------------- part 1: first connection ----

/// How the first connection of a new pair is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstMode {
    /// The default agent: the pair is authenticated ahead of time.
    PreAuth,
    /// `auth.pre_authenticate: false`: authenticated after the first drop.
    OnDemand,
    /// The rule without `authentication` (reference).
    NoAuth,
}

const FIRST_MODES: [FirstMode; 3] = [FirstMode::PreAuth, FirstMode::OnDemand, FirstMode::NoAuth];

impl FirstMode {
    fn name(self) -> &'static str {
        match self {
            Self::PreAuth => "auth required, pre-authentication (default)",
            Self::OnDemand => "auth required, on demand (pre_authenticate: false)",
            Self::NoAuth => "no authentication in the rule (reference)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::PreAuth => "pre_authentication",
            Self::OnDemand => "on_demand",
            Self::NoAuth => "no_auth",
        }
    }
}

/// One new pod's first connection.
#[derive(Debug, Clone)]
struct FirstSample {
    pod: String,
    ip: Ipv4Addr,
    /// Pod creation: its network namespace and CNI ADD.
    create: Duration,
    /// CNI ADD returned -> connect() done; `None` when it failed.
    first: Option<Duration>,
    /// The connect() call alone (its thread entering the pod's namespace
    /// excluded).
    connect_call: Duration,
    error: Option<String>,
}

/// One mode's topology and samples. Fields drop in order: the echo
/// server's thread stops before the topology goes.
struct FirstBench {
    mode: FirstMode,
    _srv: BenchServer,
    server: Pod,
    topo: Topology,
    samples: Vec<FirstSample>,
}

fn first_connection(opts: &Options) -> anyhow::Result<(Vec<Table>, Value)> {
    let mut benches = Vec::new();
    for mode in FIRST_MODES {
        let topo = topology(
            mode != FirstMode::OnDemand,
            mode != FirstMode::NoAuth,
            &[],
            opts.verbose,
        )
        .with_context(|| format!("the topology of mode {}", mode.name()))?;
        let server = topo.pod("bench/server")?.clone();
        let srv = BenchServer::start(server.netns(), PORT, None)?;
        say(format!(
            "first connection: topology of mode {:?} ready",
            mode
        ));
        benches.push(FirstBench {
            mode,
            _srv: srv,
            server,
            topo,
            samples: Vec::new(),
        });
    }
    for i in 0..opts.samples {
        for k in 0..benches.len() {
            let b = (i + k) % benches.len();
            let s = first_sample(&mut benches[b], i, opts.connect_timeout)?;
            if opts.verbose || i + 1 == opts.samples || (i + 1) % 5 == 0 {
                say(format!(
                    "first connection: sample {} {:?}: pod made in {:.1} ms, first connect {}",
                    i + 1,
                    benches[b].mode,
                    s.create.as_secs_f64() * 1e3,
                    s.first.map_or_else(
                        || format!("failed ({})", s.error.as_deref().unwrap_or("?")),
                        |d| format!("{:.1} ms", d.as_secs_f64() * 1e3)
                    )
                ));
            }
            benches[b].samples.push(s);
        }
    }
    let mut results = Vec::new();
    for b in &benches {
        results.push(first_results(b)?);
    }
    // Remove everything now (and fail if anything remains); the echo
    // servers' threads first.
    for b in benches {
        let FirstBench {
            _srv: srv, topo, ..
        } = b;
        drop(srv);
        topo.cleanup()?;
    }
    Ok(first_report(opts, &results))
}

fn first_sample(b: &mut FirstBench, i: usize, timeout: Duration) -> anyhow::Result<FirstSample> {
    let name = format!("c{i}");
    let spec = PodSpec::new(NS, &name)
        .label("app", "client")
        .label("sample", &i.to_string());
    let t = Instant::now();
    let pod = b
        .topo
        .add_pod(spec)
        .with_context(|| format!("adding pod bench/{name}"))?
        .clone();
    let usable = Instant::now();
    let dst = SocketAddrV4::new(b.server.ipv4(), PORT);
    let (call_start, outcome) = pod.netns().run(move || {
        let start = Instant::now();
        let r = connect_once(dst, timeout).map(|()| Instant::now());
        (start, r)
    })?;
    let (first, connect_call, error) = match outcome {
        Ok(done) => (Some(done - usable), done - call_start, None),
        Err(e) => (None, call_start.elapsed(), Some(e.to_string())),
    };
    Ok(FirstSample {
        pod: name,
        ip: pod.ipv4(),
        create: usable - t,
        first,
        connect_call,
        error,
    })
}

/// A TCP connection to `dst` (closed with RST: no TIME_WAIT).
fn connect_once(dst: SocketAddrV4, timeout: Duration) -> std::io::Result<()> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_linger(Some(Duration::ZERO))?;
    sock.connect_timeout(&dst.into(), timeout)
}

/// One mode's numbers.
#[derive(Debug)]
struct FirstResults {
    mode: FirstMode,
    /// ms, sorted, failures INFINITY.
    first_ms: Vec<f64>,
    create_ms: Vec<f64>,
    /// Pod creation + first connection, ms, sorted.
    total_ms: Vec<f64>,
    connect_call_ms: Vec<f64>,
    failures: usize,
    errors: Vec<String>,
    /// Samples whose client had a drop event toward the server's port, by
    /// reason.
    dropped: BTreeMap<String, usize>,
    /// Sample pairs the agent lists as authenticated (server side).
    authenticated: usize,
    /// Distinct identities of the samples (must equal the samples).
    distinct_identities: usize,
    stats: Value,
    handshake_p50_ms: Option<f64>,
    handshake_p99_ms: Option<f64>,
    signals: u64,
    /// Failed handshakes by kind: as the client, as the server.
    hs_failures: BTreeMap<String, u64>,
    hs_refused: BTreeMap<String, u64>,
    samples_json: Vec<Value>,
}

fn first_results(b: &FirstBench) -> anyhow::Result<FirstResults> {
    let node = b.topo.node("n1")?;
    let ids = identities(node)?;
    let server_id = *ids
        .get("server")
        .context("the agent does not list the server endpoint")?;
    let report = auth_report(node)?;
    let drops = flow_events(node, &[FlowKind::Drop], None, None)?;
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    let mut sample_ids = BTreeSet::new();
    let mut authenticated = 0;
    let mut samples_json = Vec::new();
    for s in &b.samples {
        let id = ids.get(&s.pod).copied();
        if let Some(id) = id {
            sample_ids.insert(id);
        }
        let reasons: BTreeSet<String> = drops
            .iter()
            .filter(|d| d.src.ip == s.ip && d.dst.port == PORT)
            .map(|d| d.reason.clone())
            .collect();
        for r in &reasons {
            *dropped.entry(r.clone()).or_default() += 1;
        }
        let listed = id.and_then(|id| pair(&report, server_id, id));
        if listed.is_some_and(|p| p.state == "authenticated") {
            authenticated += 1;
        }
        samples_json.push(json!({
            "pod": s.pod, "identity": id,
            "create_ms": s.create.as_secs_f64() * 1e3,
            "first_connect_ms": s.first.map(|d| d.as_secs_f64() * 1e3),
            "connect_call_ms": s.connect_call.as_secs_f64() * 1e3,
            "error": s.error, "drop_reasons": reasons,
            "pair": listed.map(|p| json!({"state": p.state, "origin": p.origin})),
        }));
    }
    if sample_ids.len() != b.samples.len() || sample_ids.contains(&server_id) {
        bail!(
            "mode {}: {} samples but {} distinct client identities (server {server_id}): a pair was not new",
            b.mode.name(),
            b.samples.len(),
            sample_ids.len()
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let first_ms = sorted(
        &b.samples
            .iter()
            .map(|s| s.first.map_or(f64::INFINITY, ms))
            .collect::<Vec<_>>(),
    );
    let create_ms = sorted(&b.samples.iter().map(|s| ms(s.create)).collect::<Vec<_>>());
    let total_ms = sorted(
        &b.samples
            .iter()
            .map(|s| s.first.map_or(f64::INFINITY, |d| ms(s.create + d)))
            .collect::<Vec<_>>(),
    );
    let connect_call_ms = sorted(
        &b.samples
            .iter()
            .filter(|s| s.first.is_some())
            .map(|s| ms(s.connect_call))
            .collect::<Vec<_>>(),
    );
    Ok(FirstResults {
        mode: b.mode,
        failures: b.samples.iter().filter(|s| s.first.is_none()).count(),
        errors: b.samples.iter().filter_map(|s| s.error.clone()).collect(),
        first_ms,
        create_ms,
        total_ms,
        connect_call_ms,
        dropped,
        authenticated,
        distinct_identities: sample_ids.len(),
        stats: serde_json::to_value(&report.stats).unwrap_or(Value::Null),
        handshake_p50_ms: report.stats.latency_p50_ms,
        handshake_p99_ms: report.stats.latency_p99_ms,
        signals: report.stats.signals,
        hs_failures: report.stats.failures.clone(),
        hs_refused: report.stats.refused.clone(),
        samples_json,
    })
}

fn first_report(opts: &Options, results: &[FirstResults]) -> (Vec<Table>, Value) {
    let limit_ms = opts.connect_timeout.as_secs_f64() * 1e3;
    let mut t = Table::new(
        format!(
            "auth 1: first connection of a new pair, CNI ADD returned -> connect() done (TCP handshake), same-node pods, {} new pods per mode, interleaved, connect bound {limit_ms:.0} ms",
            opts.samples
        ),
        &[
            "mode",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "failed",
            "pods with a drop (reason: pods)",
            "pod creation p50 / p99 ms",
            "creation + first connect p50 / p99 ms",
            "goal",
        ],
    );
    let mut json_modes = serde_json::Map::new();
    let p99 = |m: FirstMode| {
        results
            .iter()
            .find(|r| r.mode == m)
            .map_or(f64::NAN, |r| percentile(&r.first_ms, 99.0))
    };
    for r in results {
        let pc = |v: &[f64], p: f64| percentile(v, p);
        let goal = if r.mode == FirstMode::PreAuth {
            let p = pc(&r.first_ms, 99.0);
            format!(
                "p99 < {FIRST_P99_GOAL_MS:.0} {}",
                if p < FIRST_P99_GOAL_MS {
                    "met"
                } else {
                    "MISSED"
                }
            )
        } else {
            String::new()
        };
        let drops = if r.dropped.is_empty() {
            "none".to_owned()
        } else {
            r.dropped
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        t.row(vec![
            r.mode.name().to_owned(),
            ms_cell(pc(&r.first_ms, 50.0), limit_ms),
            ms_cell(pc(&r.first_ms, 90.0), limit_ms),
            ms_cell(pc(&r.first_ms, 99.0), limit_ms),
            ms_cell(r.first_ms.last().copied().unwrap_or(f64::NAN), limit_ms),
            r.failures.to_string(),
            drops,
            format!(
                "{} / {}",
                f(pc(&r.create_ms, 50.0), 1),
                f(pc(&r.create_ms, 99.0), 1)
            ),
            format!(
                "{} / {}",
                ms_cell(pc(&r.total_ms, 50.0), limit_ms),
                ms_cell(pc(&r.total_ms, 99.0), limit_ms)
            ),
            goal,
        ]);
        json_modes.insert(
            r.mode.key().to_owned(),
            json!({
                "mode": r.mode.name(),
                "first_connect_ms": {"p50": finite_or_null(pc(&r.first_ms, 50.0)), "p90": finite_or_null(pc(&r.first_ms, 90.0)),
                                     "p99": finite_or_null(pc(&r.first_ms, 99.0)), "max": finite_or_null(r.first_ms.last().copied().unwrap_or(f64::NAN))},
                "connect_call_ms": {"p50": pc(&r.connect_call_ms, 50.0), "p99": pc(&r.connect_call_ms, 99.0)},
                "pod_creation_ms": {"p50": pc(&r.create_ms, 50.0), "p99": pc(&r.create_ms, 99.0), "max": r.create_ms.last()},
                "creation_plus_first_connect_ms": {"p50": finite_or_null(pc(&r.total_ms, 50.0)), "p99": finite_or_null(pc(&r.total_ms, 99.0))},
                "failures": r.failures, "errors": r.errors,
                "pods_with_drops_by_reason": r.dropped,
                "pairs_authenticated": r.authenticated,
                "distinct_client_identities": r.distinct_identities,
                "agent_auth_stats": r.stats,
                "samples": r.samples_json,
            }),
        );
    }
    let (pre, demand) = (p99(FirstMode::PreAuth), p99(FirstMode::OnDemand));
    let ratio = demand / pre;
    t.notes.push(format!(
        "p99 ratio on demand / pre-authentication: {}. Goal: p99 < {FIRST_P99_GOAL_MS:.0} ms with pre-authentication (Cilium, on demand: ~1 s, the first SYN's retransmission): {}.",
        if ratio.is_finite() { f(ratio, 1) } else { "n/a (a failure in the tail)".to_owned() },
        if pre < FIRST_P99_GOAL_MS { "met" } else { "MISSED" }
    ));
    for r in results {
        t.notes.push(format!(
            "{}: connect() call alone p50 {} / p99 {} ms; {} of {} sample pairs listed as authenticated by the server side; {} distinct client identities; agent handshake latency (client side, connect included) p50 {} / p99 {} ms over {} handshakes; failed handshakes as client {:?}, as server {:?}; {} datapath signals.",
            r.mode.name(),
            f(percentile(&r.connect_call_ms, 50.0), 2),
            f(percentile(&r.connect_call_ms, 99.0), 2),
            r.authenticated,
            r.first_ms.len(),
            r.distinct_identities,
            r.handshake_p50_ms.map_or("-".to_owned(), |x| f(x, 2)),
            r.handshake_p99_ms.map_or("-".to_owned(), |x| f(x, 2)),
            r.stats["handshakes"],
            r.hs_failures,
            r.hs_refused,
            r.signals
        ));
    }
    t.notes.push(
        "Pod creation = network namespace + CNI ADD (palisade-cni -> agent); with pre-authentication the agent answers the ADD only once the new pod's pairs were tried (at most 2 s), so part of the cost moves there: compare it with the reference."
            .to_owned(),
    );
    let json = json!({
        "modes": json_modes,
        "p99_ratio_on_demand_over_pre_auth": finite_or_null(ratio),
        "goal_p99_ms": FIRST_P99_GOAL_MS,
        "goal_met": pre < FIRST_P99_GOAL_MS,
        "same_node": true,
    });
    (vec![t], json)
}

// ---------------------------------------- part 2: handshakes per CPU-s ----

/// The SVIDs a side holds.
struct Svids(BTreeMap<NumericIdentity, LocalSvid>);

impl IdentitySvids for Svids {
    fn svid(&self, id: NumericIdentity) -> Option<LocalSvid> {
        self.0.get(&id).cloned()
    }
}

/// Admits every pair (the agent's admission is a lookup under a mutex).
struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(
        &self,
        _peer: SocketAddr,
        _server: NumericIdentity,
        _client: NumericIdentity,
    ) -> Result<(), String> {
        Ok(())
    }
}

/// CA, SVIDs and configurations of both sides.
struct Fixture {
    td: TrustDomain,
    trust: TrustBundle,
    server_svid: X509Svid,
    client_svid: X509Svid,
    server_spiffe_id: SpiffeId,
}

fn identity_spiffe_id(td: &TrustDomain, id: NumericIdentity) -> anyhow::Result<SpiffeId> {
    format!("spiffe://{}/identity/{}", td.name(), id.0)
        .parse()
        .map_err(|e| anyhow!("the SPIFFE ID of identity {}: {e}", id.0))
}

impl Fixture {
    fn new() -> anyhow::Result<Self> {
        let td = trust_domain()?;
        let now = SystemTime::now();
        let mut ca = CaSet::bootstrap(td.clone(), now, &POLICY).context("bootstrapping a CA")?;
        let server_spiffe_id = identity_spiffe_id(&td, SERVER_ID)?;
        let (server_svid, _) = ca
            .issue_x509(&server_spiffe_id, now, SVID_TTL)
            .context("the server's SVID")?;
        let (client_svid, _) = ca
            .issue_x509(&identity_spiffe_id(&td, CLIENT_ID)?, now, SVID_TTL)
            .context("the client's SVID")?;
        Ok(Self {
            trust: TrustBundle::new(ca.x509_bundle()),
            td,
            server_svid,
            client_svid,
            server_spiffe_id,
        })
    }

    fn svids(id: NumericIdentity, svid: &X509Svid) -> anyhow::Result<Arc<dyn IdentitySvids>> {
        let local = LocalSvid::new(tls::certified_key(svid).context("an SVID for rustls")?)
            .context("the SVID's leaf")?;
        Ok(Arc::new(Svids([(id, local)].into())))
    }

    fn mutual_server(&self) -> anyhow::Result<mutual_auth::Server> {
        mutual_auth::Server::new(
            self.td.clone(),
            self.trust.clone(),
            Self::svids(SERVER_ID, &self.server_svid)?,
            Arc::new(AdmitAll),
        )
        .context("the mutual_auth server")
    }

    fn mutual_client(&self) -> anyhow::Result<mutual_auth::Client> {
        Ok(mutual_auth::Client::new(
            self.td.clone(),
            self.trust.clone(),
            Self::svids(CLIENT_ID, &self.client_svid)?,
        ))
    }

    /// The baseline's server: TLS 1.3, the server's SVID, no client
    /// certificate, no tickets (nothing to resume, like palisade-auth/1).
    fn one_way_acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        let source: Arc<dyn SvidSource> =
            Arc::new(FixedSvid::new(&self.server_svid).context("the server's SVID")?);
        let mut config = tls::server_config(source, self.trust.clone(), false)
            .context("the baseline's server config")?;
        config.send_tls13_tickets = 0;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The baseline's client: checks the server's SVID chain and SPIFFE ID
    /// (as palisade-auth/1's client does), presents nothing, no resumption.
    fn one_way_connector(&self) -> anyhow::Result<TlsConnector> {
        let mut config =
            tls::client_config(self.server_spiffe_id.clone(), self.trust.clone(), None)
                .context("the baseline's client config")?;
        config.resumption = Resumption::disabled();
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

/// What a phase runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// palisade-auth/1.
    Mutual,
    /// The baseline: one-way TLS 1.3 and the one-line answer.
    OneWay,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Mutual => "mutual_auth (mutual TLS 1.3, palisade-auth/1)",
            Self::OneWay => "baseline: one-way TLS 1.3 (rustls, server cert only)",
        }
    }
}

/// Handshakes the server side finished, per kind.
#[derive(Default)]
struct ServerCounts {
    mutual_ok: AtomicU64,
    mutual_failed: AtomicU64,
    one_way_ok: AtomicU64,
    one_way_failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ServerCounts {
    fn ok(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Mutual => self.mutual_ok.load(Ordering::Relaxed),
            Kind::OneWay => self.one_way_ok.load(Ordering::Relaxed),
        }
    }

    fn failed(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Mutual => self.mutual_failed.load(Ordering::Relaxed),
            Kind::OneWay => self.one_way_failed.load(Ordering::Relaxed),
        }
    }

    fn count(&self, kind: Kind, result: Result<(), String>) {
        let (ok, failed) = match kind {
            Kind::Mutual => (&self.mutual_ok, &self.mutual_failed),
            Kind::OneWay => (&self.one_way_ok, &self.one_way_failed),
        };
        match result {
            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e);
                failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

enum Control {
    /// Answer with the server thread's CPU time.
    Cpu(mpsc::Sender<f64>),
    Stop,
}

/// The server side on its own thread and current-thread runtime: a
/// listener for palisade-auth/1 and one for the baseline.
struct HandshakeServer {
    mutual: SocketAddr,
    one_way: SocketAddr,
    counts: Arc<ServerCounts>,
    control: tokio::sync::mpsc::UnboundedSender<Control>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl HandshakeServer {
    fn start(fx: &Fixture) -> anyhow::Result<Self> {
        let server = Arc::new(fx.mutual_server()?);
        let acceptor = fx.one_way_acceptor()?;
        let counts = Arc::new(ServerCounts::default());
        let (control, mut rx) = tokio::sync::mpsc::unbounded_channel::<Control>();
        let (ready_tx, ready_rx) =
            mpsc::sync_channel::<anyhow::Result<(SocketAddr, SocketAddr)>>(1);
        let thread_counts = counts.clone();
        let thread = std::thread::Builder::new()
            .name("auth-bench-server".into())
            .spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("the server's runtime")?;
                rt.block_on(async move {
                    let bound = async {
                        let m = TcpListener::bind("127.0.0.1:0").await?;
                        let o = TcpListener::bind("127.0.0.1:0").await?;
                        let addrs = (m.local_addr()?, o.local_addr()?);
                        anyhow::Ok((m, o, addrs))
                    }
                    .await;
                    let (mutual, one_way) = match bound {
                        Ok((m, o, addrs)) => {
                            let _ = ready_tx.send(Ok(addrs));
                            (m, o)
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    loop {
                        tokio::select! {
                            c = rx.recv() => match c {
                                Some(Control::Cpu(tx)) => { let _ = tx.send(thread_cpu_secs()); }
                                Some(Control::Stop) | None => return Ok(()),
                            },
                            a = mutual.accept() => if let Ok((stream, peer)) = a {
                                let (server, counts) = (server.clone(), thread_counts.clone());
                                tokio::spawn(async move {
                                    let _ = stream.set_nodelay(true);
                                    let r = match tokio::time::timeout(HANDSHAKE_TIMEOUT, server.accept(stream, peer)).await {
                                        Ok(Ok(_)) => Ok(()),
                                        Ok(Err(e)) => Err(format!("{}: {e}", e.kind())),
                                        Err(_) => Err("timeout".to_owned()),
                                    };
                                    counts.count(Kind::Mutual, r);
                                });
                            },
                            a = one_way.accept() => if let Ok((stream, _)) = a {
                                let (acceptor, counts) = (acceptor.clone(), thread_counts.clone());
                                tokio::spawn(async move {
                                    let r = match tokio::time::timeout(HANDSHAKE_TIMEOUT, one_way_answer(&acceptor, stream)).await {
                                        Ok(r) => r.map_err(|e| format!("{e:#}")),
                                        Err(_) => Err("timeout".to_owned()),
                                    };
                                    counts.count(Kind::OneWay, r);
                                });
                            },
                        }
                    }
                })
            })
            .context("starting the server thread")?;
        let mut me = Self {
            mutual: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            one_way: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            counts,
            control,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok((m, o))) => {
                me.mutual = m;
                me.one_way = o;
                Ok(me)
            }
            Ok(Err(e)) => Err(e.context("the server's listeners")),
            Err(_) => bail!("the handshake server did not start"),
        }
    }

    /// The server thread's CPU time, seconds.
    fn cpu(&self) -> anyhow::Result<f64> {
        let (tx, rx) = mpsc::channel();
        self.control
            .send(Control::Cpu(tx))
            .map_err(|_| anyhow!("the server thread is gone"))?;
        rx.recv_timeout(Duration::from_secs(10))
            .context("the server thread did not answer")
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        let _ = self.control.send(Control::Stop);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| anyhow!("the server thread panicked"))??;
        }
        Ok(())
    }
}

impl Drop for HandshakeServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The calling thread's CPU time, seconds.
fn thread_cpu_secs() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(f64::NAN, |ts| {
        ts.tv_sec() as f64 + ts.tv_nsec() as f64 * 1e-9
    })
}

/// The baseline's server side: handshake, the one-line answer, close_notify.
async fn one_way_answer(
    acceptor: &TlsAcceptor,
    stream: tokio::net::TcpStream,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut tls = acceptor.accept(stream).await.context("TLS accept")?;
    tls.write_all(b"ok\n").await.context("the answer")?;
    tls.shutdown().await.context("close_notify")?;
    Ok(())
}

/// The baseline's client side.
async fn one_way_dial(
    connector: &TlsConnector,
    addr: SocketAddr,
    bind: IpAddr,
) -> anyhow::Result<()> {
    let socket = TcpSocket::new_v4().context("socket")?;
    socket.bind(SocketAddr::new(bind, 0)).context("bind")?;
    socket.set_nodelay(true).context("TCP_NODELAY")?;
    let stream = socket.connect(addr).await.context("connect")?;
    let name = ServerName::try_from("bench.auth.palisade").context("server name")?;
    let mut tls = connector
        .connect(name, stream)
        .await
        .context("TLS connect")?;
    let mut line = [0u8; 3];
    tls.read_exact(&mut line).await.context("the answer")?;
    if &line != b"ok\n" {
        bail!("unexpected answer {line:?}");
    }
    let _ = tls.shutdown().await;
    Ok(())
}

/// The `k`-th source address: 127.1.a.b, so that connections spread over
/// ~62,000 source addresses and no port is reused while in TIME_WAIT.
fn source(k: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        1,
        ((k / 250) % 250) as u8,
        (k % 250) as u8 + 1,
    ))
}

/// One phase's client results.
#[derive(Debug, Clone)]
struct HsPhase {
    kind: Kind,
    in_flight: usize,
    ok: usize,
    failed: usize,
    secs: f64,
    /// Process CPU seconds.
    cpu: f64,
    client_cpu: f64,
    server_cpu: f64,
    /// Latencies, ns, sorted.
    lat_ns: Vec<u64>,
}

impl HsPhase {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }

    fn per_cpu_sec(&self) -> f64 {
        self.ok as f64 / self.cpu
    }

    fn us_per(&self, cpu: f64) -> f64 {
        cpu * 1e6 / self.ok.max(1) as f64
    }

    fn p_ms(&self, p: f64) -> f64 {
        percentile(&self.lat_ns, p) as f64 / 1e6
    }

    fn json(&self) -> Value {
        json!({
            "in_flight": self.in_flight, "ok": self.ok, "failed": self.failed, "seconds": self.secs,
            "per_s": self.rate(), "per_cpu_s": self.per_cpu_sec(),
            "cpu_s": self.cpu, "client_thread_cpu_s": self.client_cpu, "server_thread_cpu_s": self.server_cpu,
            "cpu_us_per_handshake": self.us_per(self.cpu),
            "client_cpu_us_per_handshake": self.us_per(self.client_cpu),
            "server_cpu_us_per_handshake": self.us_per(self.server_cpu),
            "p50_ms": self.p_ms(50.0), "p99_ms": self.p_ms(99.0),
        })
    }
}

/// Shared by the client tasks of a phase.
struct Dialer {
    mutual: mutual_auth::Client,
    one_way: TlsConnector,
    server: Arc<HandshakeServer>,
    next_source: AtomicU64,
}

/// Runs `in_flight` client tasks on `rt` (this thread) for `dur`.
fn hs_phase(
    rt: &tokio::runtime::Runtime,
    dialer: &Arc<Dialer>,
    kind: Kind,
    in_flight: usize,
    dur: Duration,
) -> anyhow::Result<HsPhase> {
    let server = &dialer.server;
    let (s_ok0, s_failed0) = (server.counts.ok(kind), server.counts.failed(kind));
    let pid = std::process::id();
    let server_cpu0 = server.cpu()?;
    let cpu0 = cpu_secs(pid);
    let client_cpu0 = thread_cpu_secs();
    let start = Instant::now();
    let deadline = start + dur;
    let outcomes = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..in_flight {
            let d = dialer.clone();
            set.spawn(async move {
                let mut lat = Vec::new();
                let mut failed = 0usize;
                let mut last_error = None;
                while Instant::now() < deadline {
                    let src = source(d.next_source.fetch_add(1, Ordering::Relaxed));
                    let t = Instant::now();
                    let r = match kind {
                        Kind::Mutual => d
                            .mutual
                            .dial(
                                d.server.mutual,
                                Some(src),
                                CLIENT_ID,
                                SERVER_ID,
                                HANDSHAKE_TIMEOUT,
                            )
                            .await
                            .map(|a| {
                                black_box(a);
                            })
                            .map_err(|e| format!("{}: {e}", e.kind())),
                        Kind::OneWay => {
                            match tokio::time::timeout(
                                HANDSHAKE_TIMEOUT,
                                one_way_dial(&d.one_way, d.server.one_way, src),
                            )
                            .await
                            {
                                Ok(r) => r.map_err(|e| format!("{e:#}")),
                                Err(_) => Err("timeout".to_owned()),
                            }
                        }
                    };
                    match r {
                        Ok(()) => lat.push(t.elapsed().as_nanos() as u64),
                        Err(e) => {
                            failed += 1;
                            last_error = Some(e);
                        }
                    }
                }
                (lat, failed, last_error)
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = set.join_next().await {
            out.push(joined);
        }
        out
    });
    let secs = start.elapsed().as_secs_f64();
    let client_cpu = thread_cpu_secs() - client_cpu0;
    let cpu = cpu_secs(pid) - cpu0;
    let server_cpu = server.cpu()? - server_cpu0;
    let mut lat_ns = Vec::new();
    let mut failed = 0;
    let mut last_error = None;
    for o in outcomes {
        let (lat, f, e) = o.context("a client task")?;
        lat_ns.extend(lat);
        failed += f;
        last_error = last_error.or(e);
    }
    lat_ns.sort_unstable();
    let ok = lat_ns.len();
    if ok == 0 || failed * 100 > ok {
        bail!(
            "{}, {in_flight} in flight: {failed} of {} handshakes failed (last: {last_error:?})",
            kind.name(),
            ok + failed
        );
    }
    // The server counts its side a little later than the client (it
    // finishes after sending its answer), so wait briefly for it.
    let wait_end = Instant::now() + Duration::from_secs(2);
    loop {
        let s_ok = server.counts.ok(kind) - s_ok0;
        let s_failed = server.counts.failed(kind) - s_failed0;
        if s_ok as usize >= ok {
            if s_ok as usize > ok + in_flight || s_failed as usize > failed + in_flight {
                bail!(
                    "{}: the server counted {s_ok} handshakes and {s_failed} failures, the client {ok} and {failed}",
                    kind.name()
                );
            }
            break;
        }
        if Instant::now() > wait_end {
            bail!(
                "{}: the server finished {s_ok} handshakes, the client {ok} (server's last error: {:?})",
                kind.name(),
                server
                    .counts
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(HsPhase {
        kind,
        in_flight,
        ok,
        failed,
        secs,
        cpu,
        client_cpu,
        server_cpu,
        lat_ns,
    })
}

fn handshakes(opts: &Options) -> anyhow::Result<(Vec<Table>, Value)> {
    let fx = Fixture::new()?;
    let server = Arc::new(HandshakeServer::start(&fx)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("the client's runtime")?;
    let dialer = Arc::new(Dialer {
        mutual: fx.mutual_client()?,
        one_way: fx.one_way_connector()?,
        server: server.clone(),
        next_source: AtomicU64::new(0),
    });
    let dur = Duration::from_secs_f64(opts.handshake_seconds);
    let phases: Vec<(Kind, usize)> = IN_FLIGHT
        .iter()
        .flat_map(|&n| [(Kind::Mutual, n), (Kind::OneWay, n)])
        .collect();
    // Warm-up (not reported): allocator, caches, the first connections.
    for &(kind, n) in &phases {
        hs_phase(&rt, &dialer, kind, n, Duration::from_millis(300))
            .with_context(|| format!("warm-up of {} x{n}", kind.name()))?;
    }
    let mut rounds: Vec<Vec<HsPhase>> = Vec::new();
    for round in 0..opts.rounds {
        let mut got = Vec::new();
        for k in 0..phases.len() {
            let (kind, n) = phases[(round + k) % phases.len()];
            let p = hs_phase(&rt, &dialer, kind, n, dur)
                .with_context(|| format!("round {}: {} x{n}", round + 1, kind.name()))?;
            say(format!(
                "handshakes round {}: {:?} x{n}: {:.0}/s, {:.0} per CPU-second (client {:.0} + server {:.0} us CPU each), p50 {:.2} ms",
                round + 1,
                kind,
                p.rate(),
                p.per_cpu_sec(),
                p.us_per(p.client_cpu),
                p.us_per(p.server_cpu),
                p.p_ms(50.0)
            ));
            got.push(p);
        }
        rounds.push(got);
    }
    drop(dialer);
    drop(rt);
    match Arc::try_unwrap(server) {
        Ok(mut s) => s.stop()?,
        Err(_) => bail!("the handshake server is still shared"),
    }
    let parts = handshake_parts(&fx)?;
    Ok(handshake_report(opts, &rounds, &parts))
}

/// The pieces of a handshake, each timed alone: seconds per call.
fn handshake_parts(fx: &Fixture) -> anyhow::Result<Vec<(&'static str, f64)>> {
    const N: usize = 2000;
    let per = |t: Instant| t.elapsed().as_secs_f64() / N as f64;
    let now = SystemTime::now();
    let chain = fx.client_svid.chain().to_vec();
    let t = Instant::now();
    for _ in 0..N {
        black_box(fx.trust.verify(&chain, now).context("verifying a chain")?);
    }
    let verify = per(t);
    let key = tls::certified_key(&fx.client_svid).context("an SVID for rustls")?;
    let signer = key
        .key
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
        .context("the SVID key cannot sign ECDSA P-256 SHA-256")?;
    let message = [7u8; 130];
    let t = Instant::now();
    for _ in 0..N {
        black_box(signer.sign(&message).context("signing")?);
    }
    let sign = per(t);
    let t = Instant::now();
    for _ in 0..N {
        black_box(tls::certified_key(&fx.client_svid).context("an SVID for rustls")?);
    }
    let certified = per(t);
    let t = Instant::now();
    for _ in 0..N {
        black_box(
            tls::client_config(fx.server_spiffe_id.clone(), fx.trust.clone(), None)
                .context("a client config")?,
        );
    }
    let client_config = per(t);
    Ok(vec![
        (
            "TrustBundle::verify of an SVID chain (done twice per side per mutual handshake: in the rustls verifier and again in peer_svid)",
            verify,
        ),
        (
            "ECDSA P-256 signature with an SVID key (CertificateVerify; one per side in a mutual handshake, one in the baseline)",
            sign,
        ),
        (
            "tls::certified_key (SVID -> rustls key; the agent caches it per SVID)",
            certified,
        ),
        (
            "tls::client_config (built per handshake by mutual_auth::Client)",
            client_config,
        ),
    ])
}

fn handshake_report(
    opts: &Options,
    rounds: &[Vec<HsPhase>],
    parts: &[(&'static str, f64)],
) -> (Vec<Table>, Value) {
    let all: Vec<&HsPhase> = rounds.iter().flatten().collect();
    let of = |kind: Kind, n: usize| -> Vec<&HsPhase> {
        all.iter()
            .copied()
            .filter(|p| p.kind == kind && p.in_flight == n)
            .collect()
    };
    // Per round: mutual / baseline, handshakes per CPU-second.
    let ratios = |n: usize, g: &dyn Fn(&HsPhase) -> f64| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| {
                let m = r
                    .iter()
                    .find(|p| p.kind == Kind::Mutual && p.in_flight == n)?;
                let b = r
                    .iter()
                    .find(|p| p.kind == Kind::OneWay && p.in_flight == n)?;
                Some(g(m) / g(b))
            })
            .collect()
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut t = Table::new(
        format!(
            "auth 2: handshakes over loopback TCP in this process (client and server: one current-thread runtime each, {cpus} CPUs shared, not pinned), {} s per phase, median of {} rounds",
            opts.handshake_seconds, opts.rounds
        ),
        &[
            "handshake",
            "in flight",
            "per s (wall)",
            "per CPU-second (process)",
            "CPU µs each: client / server / process",
            "p50 ms",
            "p99 ms",
            "ratio to baseline (per CPU-s)",
            "rounds (per CPU-s)",
        ],
    );
    let mut json_rows = Vec::new();
    for n in IN_FLIGHT {
        for kind in [Kind::Mutual, Kind::OneWay] {
            let v = of(kind, n);
            let col =
                |g: &dyn Fn(&HsPhase) -> f64| median(&v.iter().map(|p| g(p)).collect::<Vec<_>>());
            let per_cpu: Vec<f64> = v.iter().map(|p| p.per_cpu_sec()).collect();
            let ratio = if kind == Kind::Mutual {
                median(&ratios(n, &HsPhase::per_cpu_sec))
            } else {
                1.0
            };
            t.row(vec![
                kind.name().to_owned(),
                n.to_string(),
                f(col(&HsPhase::rate), 0),
                f(median(&per_cpu), 0),
                format!(
                    "{} / {} / {}",
                    f(col(&|p| p.us_per(p.client_cpu)), 0),
                    f(col(&|p| p.us_per(p.server_cpu)), 0),
                    f(col(&|p| p.us_per(p.cpu)), 0)
                ),
                f(col(&|p| p.p_ms(50.0)), 2),
                f(col(&|p| p.p_ms(99.0)), 2),
                f(ratio, 3),
                per_cpu
                    .iter()
                    .map(|x| f(*x, 0))
                    .collect::<Vec<_>>()
                    .join(" / "),
            ]);
            json_rows.push(json!({
                "kind": format!("{kind:?}"), "in_flight": n,
                "median_per_s": col(&HsPhase::rate),
                "median_per_cpu_s": median(&per_cpu),
                "ratio_per_cpu_s_to_baseline": (kind == Kind::Mutual).then(|| json!({"median": ratio, "rounds": ratios(n, &HsPhase::per_cpu_sec)})),
                "ratio_per_s_to_baseline": (kind == Kind::Mutual).then(|| median(&ratios(n, &HsPhase::rate))),
                "rounds": v.iter().map(|p| p.json()).collect::<Vec<_>>(),
            }));
        }
    }
    t.notes.push(
        "A mutual handshake is dial (TCP connect with TCP_NODELAY from 127.1.x.y) + mutual TLS 1.3 (both sides present and check an SVID of identity/<n>, SNI names the pair) + the server's one-line answer + close_notify; the baseline is the same connect, a one-way TLS 1.3 handshake with the same P-256 server SVID and chain (checked by the same SPIFFE verifier), the same one-line answer and close_notify. No resumption in either. Per CPU-second counts both sides (client + server, the whole process); client / server are each side's thread CPU (kernel TCP work lands mostly on the sending thread)."
            .to_owned(),
    );
    let mut p = Table::new(
        "auth 2: pieces of a handshake, each timed alone (2,000 calls)".to_owned(),
        &["piece", "µs each"],
    );
    for (name, secs) in parts {
        p.row(vec![(*name).to_owned(), f(secs * 1e6, 1)]);
    }
    let json = json!({
        "rows": json_rows,
        "parts_us": parts.iter().map(|(n, s)| json!({"part": n, "us": s * 1e6})).collect::<Vec<_>>(),
    });
    (vec![t, p], json)
}

// --------------------------------------- part 3: TCP_RR after auth ----

/// Whether the rule requires authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RrMode {
    Plain,
    Auth,
}

impl RrMode {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "no auth",
            Self::Auth => "auth required",
        }
    }
}

/// One of a measurement's numbers.
type RrMetric = fn(&RrRun) -> f64;

/// One measurement.
#[derive(Debug, Clone)]
struct RrRun {
    round: usize,
    mode: RrMode,
    rr: Sample,
    crr: Sample,
}

fn tcp_rr_after_auth(opts: &Options) -> anyhow::Result<(Vec<Table>, Value)> {
    let client_spec = PodSpec::new(NS, "client")
        .label("app", "client")
        .label("sample", "rr");
    let topo = topology(true, true, &[client_spec], opts.verbose)?;
    let node = topo.node("n1")?;
    let client = topo.pod("bench/client")?.clone();
    let server = topo.pod("bench/server")?.clone();
    let ids = identities(node)?;
    let (server_id, client_id) = (
        *ids.get("server").context("no server endpoint")?,
        *ids.get("client").context("no client endpoint")?,
    );
    let _srv = BenchServer::start(server.netns(), PORT, opts.pin.then_some(1))?;
    let dst = SocketAddrV4::new(server.ipv4(), PORT);
    expect_dropped(&client, server.ipv4(), PORT + 1)?;
    let client_cpu = opts.pin.then_some(0);
    let secs = Duration::from_secs_f64(opts.rr_seconds);
    let warm = opts.warmup;
    let span = opts.rr_seconds + warm.as_secs_f64();

    let mut results: Vec<RrRun> = Vec::new();
    let mut current = RrMode::Auth;
    switch_rr(node, RrMode::Auth, server_id, client_id)?;
    for round in 0..opts.rr_rounds {
        let order = if round % 2 == 0 {
            [RrMode::Auth, RrMode::Plain]
        } else {
            [RrMode::Plain, RrMode::Auth]
        };
        for mode in order {
            if mode != current {
                switch_rr(node, mode, server_id, client_id)?;
                current = mode;
            }
            let check_port = CHECK_PORT_BASE + u16::try_from(results.len()).unwrap_or(0);
            check_flow_auth(node, &client, dst, check_port, mode)?;
            let cpu0 = agent_cpu_secs(node);
            let mut rr = in_netns(client.netns(), client_cpu, move || tcp_rr(dst, secs, warm))?;
            let cpu1 = agent_cpu_secs(node);
            let mut crr = in_netns(client.netns(), client_cpu, move || tcp_crr(dst, secs, warm))?;
            let cpu2 = agent_cpu_secs(node);
            rr.agent_cpu = (cpu1 - cpu0) / span;
            crr.agent_cpu = (cpu2 - cpu1) / span;
            say(format!(
                "TCP_RR round {} {:<13}: {:>6.0}/s (p50 {:.1} us, p99 {:.1} us)  TCP_CRR {:>6.0}/s (p99 {:.1} us, {} errors)",
                round + 1,
                mode.name(),
                rr.rate,
                rr.p50_us,
                rr.p99_us,
                crr.rate,
                crr.p99_us,
                crr.errors
            ));
            results.push(RrRun {
                round: round + 1,
                mode,
                rr,
                crr,
            });
        }
    }
    let report = auth_report(node)?;
    let st = super::status(node)?;
    drop(_srv);
    topo.cleanup()?;
    Ok(rr_report(opts, &results, &report, st.conntrack_entries))
}

/// Applies the rule of `mode`; with authentication, waits until the pair
/// (server, client) is authenticated and needed.
fn switch_rr(node: &Node, mode: RrMode, server_id: u32, client_id: u32) -> anyhow::Result<()> {
    let t = Instant::now();
    super::apply(node, "bench-auth", &policy_yaml(mode == RrMode::Auth)?)?;
    if mode == RrMode::Auth {
        let end = Instant::now() + AUTH_WAIT;
        loop {
            let report = auth_report(node)?;
            if pair(&report, server_id, client_id)
                .is_some_and(|p| p.state == "authenticated" && p.needed)
            {
                break;
            }
            if Instant::now() > end {
                bail!(
                    "the pair {server_id} <- {client_id} is not authenticated {AUTH_WAIT:?} after applying the rule: {:?}",
                    pair(&report, server_id, client_id)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    say(format!(
        "TCP_RR: rule switched to {} in {:.0} ms",
        mode.name(),
        t.elapsed().as_secs_f64() * 1e3
    ));
    Ok(())
}

/// One fresh connection (1 byte each way) from source port `port`; its
/// flow events must say it was authenticated in `Auth` mode and not in
/// `Plain` mode. The port is below the ephemeral range, so that no earlier
/// TCP_CRR connection left a conntrack entry for the same 4-tuple (a SYN
/// that matches an entry is not a new flow and has no flow event).
fn check_flow_auth(
    node: &Node,
    client: &Pod,
    dst: SocketAddrV4,
    port: u16,
    mode: RrMode,
) -> anyhow::Result<()> {
    let since = flow_events(node, &[], None, Some(1))?.last().map(|e| e.seq);
    client.netns().run(move || -> anyhow::Result<()> {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())
            .with_context(|| format!("binding source port {port}"))?;
        sock.connect_timeout(&dst.into(), Duration::from_secs(2))
            .with_context(|| format!("connecting to {dst} from port {port}"))?;
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut b = [1u8; 1];
        s.write_all(&b)?;
        s.read_exact(&mut b)?;
        Ok(())
    })??;
    let start = Instant::now();
    loop {
        let events: Vec<FlowRecord> = flow_events(node, &[FlowKind::Flow], since, None)?
            .into_iter()
            .filter(|e| e.src.ip == client.ipv4() && e.src.port == port && e.dst.port == dst.port())
            .collect();
        if !events.is_empty() {
            let authenticated = events.iter().any(|e| e.auth.as_deref() == Some("spiffe"));
            if authenticated != (mode == RrMode::Auth) {
                bail!(
                    "mode {}: the flow events of a fresh connection say authenticated = {authenticated}: {events:?}",
                    mode.name()
                );
            }
            if start.elapsed() > Duration::from_secs(1) {
                say(format!(
                    "TCP_RR: the check connection's flow event came {:.1} s after it",
                    start.elapsed().as_secs_f64()
                ));
            }
            return Ok(());
        }
        if start.elapsed() > FLOW_EVENT_WAIT {
            bail!(
                "no flow event for the connection from {}:{port} to {dst} within {FLOW_EVENT_WAIT:?} (events lost: {})",
                client.ipv4(),
                super::status(node).map_or_else(|e| format!("? ({e:#})"), |s| s.events_lost.to_string())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rr_report(
    opts: &Options,
    results: &[RrRun],
    report: &AuthReport,
    conntrack_entries: usize,
) -> (Vec<Table>, Value) {
    let med = |mode: RrMode, g: fn(&RrRun) -> f64| {
        median(
            &results
                .iter()
                .filter(|r| r.mode == mode)
                .map(g)
                .collect::<Vec<_>>(),
        )
    };
    let mut t = Table::new(
        format!(
            "auth 3: TCP_RR and TCP_CRR between two pods on one node, the rule with and without `authentication: {{mode: required}}`, {} rounds x {} s per test, client/server threads {} (medians)",
            opts.rr_rounds,
            opts.rr_seconds,
            if opts.pin { "pinned to CPUs 0/1" } else { "not pinned" }
        ),
        &["metric", "no auth", "auth required", "auth / no auth", "goal"],
    );
    let metrics: [(&str, RrMetric, usize, Option<f64>); 5] = [
        ("TCP_RR transactions/s", |r| r.rr.rate, 0, Some(RR_GOAL)),
        ("TCP_RR p50 latency (us)", |r| r.rr.p50_us, 1, None),
        ("TCP_RR p99 latency (us)", |r| r.rr.p99_us, 1, None),
        ("TCP_CRR connections/s", |r| r.crr.rate, 0, None),
        ("TCP_CRR p99 latency (us)", |r| r.crr.p99_us, 1, None),
    ];
    let mut json_metrics = serde_json::Map::new();
    for (name, g, digits, goal) in metrics {
        let (p, a) = (med(RrMode::Plain, g), med(RrMode::Auth, g));
        let ratio = a / p;
        t.row(vec![
            name.to_owned(),
            f(p, digits),
            f(a, digits),
            f(ratio, 3),
            goal.map(|g| format!(">= {g:.2} {}", if ratio >= g { "met" } else { "MISSED" }))
                .unwrap_or_default(),
        ]);
        json_metrics.insert(
            name.to_owned(),
            json!({"no_auth": p, "auth": a, "ratio": ratio, "goal": goal, "met": goal.map(|g| ratio >= g)}),
        );
    }
    let mut per = Table::new(
        "auth 3: every measurement, in run order".to_owned(),
        &[
            "round",
            "rule",
            "RR/s",
            "RR p99 us",
            "CRR/s",
            "CRR p99 us",
            "CRR errors",
            "agent CPU % (RR/CRR)",
        ],
    );
    for r in results {
        per.row(vec![
            r.round.to_string(),
            r.mode.name().to_owned(),
            f(r.rr.rate, 0),
            f(r.rr.p99_us, 1),
            f(r.crr.rate, 0),
            f(r.crr.p99_us, 1),
            r.crr.errors.to_string(),
            format!(
                "{:.1} / {:.1}",
                r.rr.agent_cpu * 100.0,
                r.crr.agent_cpu * 100.0
            ),
        ]);
    }
    per.notes.push(format!(
        "Before every measurement a fresh connection's flow events were checked: authenticated (`auth: spiffe`) under the auth rule, not under the plain one. Agent after the run: {} handshakes, {} datapath signals, {} auth map entries, {} conntrack entries.",
        report.stats.handshakes, report.stats.signals, report.stats.map_entries, conntrack_entries
    ));
    let json = json!({
        "metrics": json_metrics,
        "goal_rr_ratio": RR_GOAL,
        "runs": results.iter().map(|r| json!({"round": r.round, "rule": r.mode.name(), "tcp_rr": r.rr.to_json(), "tcp_crr": r.crr.to_json()})).collect::<Vec<_>>(),
        "agent_auth_stats": serde_json::to_value(&report.stats).unwrap_or(Value::Null),
    });
    (vec![t, per], json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_differ_only_by_authentication() {
        let with: serde_yaml::Value =
            serde_yaml::from_str(&policy_yaml(true).expect("yaml")).expect("parses");
        let without: serde_yaml::Value =
            serde_yaml::from_str(&policy_yaml(false).expect("yaml")).expect("parses");
        let rule = &with["spec"]["ingress"][0];
        assert_eq!(rule["authentication"]["mode"], "required");
        assert!(without["spec"]["ingress"][0]
            .get("authentication")
            .is_none());
        assert_eq!(rule["toPorts"], without["spec"]["ingress"][0]["toPorts"]);
    }

    #[test]
    fn sources_do_not_repeat_soon() {
        let a: BTreeSet<IpAddr> = (0..62_500).map(source).collect();
        assert_eq!(a.len(), 62_500);
        assert!(a
            .iter()
            .all(|ip| matches!(ip, IpAddr::V4(v) if v.octets()[0] == 127 && v.octets()[3] != 0)));
    }

    #[test]
    fn a_short_handshake_run_measures_both_kinds() {
        let opts = Options {
            samples: 1,
            connect_timeout: Duration::from_secs(1),
            handshake_seconds: 0.2,
            rounds: 1,
            rr_rounds: 1,
            rr_seconds: 0.1,
            warmup: Duration::ZERO,
            pin: false,
            only: Some(Part::Handshakes),
            verbose: false,
        };
        let r = run(&opts).expect("runs");
        let rows = r.json["handshakes"]["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 4);
        for row in rows {
            assert!(
                row["median_per_cpu_s"].as_f64().is_some_and(|x| x > 0.0),
                "{row}"
            );
        }
    }
}
