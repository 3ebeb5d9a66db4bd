//! The cluster benchmarks (etcd store, several nodes):
//!
//! * `palisade-bench cluster-convergence`: time from `CNI ADD` on node n1
//!   until node n2 knows the new pod (control plane) and until n2 admits its
//!   connections (data plane), at N endpoints in the cluster, for a label
//!   set whose identity exists and for a new one. Baseline: the same `CNI
//!   ADD` on a single node without a cluster, time until that node admits
//!   the pod's connection to a local server; interleaved with the cluster
//!   samples in the same run.
//! * `palisade-bench cluster-identities`: identity allocations per second
//!   through [`Session::acquire_identity`] against one etcd, from one node
//!   and from several nodes at once (the same label sets on every node at
//!   the same time: exactly one number per label set is checked). Baseline:
//!   sequential single-key puts with etcd-client on the same etcd.
//! * `palisade-bench cluster-churn`: etcd writes (revisions, and keys by
//!   kind) per pod `CNI ADD` and per `CNI DEL` on one node, for a label set
//!   the node already holds, one only another node holds, and a new one
//!   each time (whose identity garbage collection comes later).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddrV4;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use etcd_client::{Client as EtcdClient, EventType, GetOptions, WatchOptions};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use palisade_api::{Client, Request, Response};
use palisade_cluster::identities::labels_json;
use palisade_cluster::keys::Key;
use palisade_cluster::{ClusterConfig, ClusterView, Keys, Session};
use palisade_identity::{Labels, NumericIdentity};
use palisade_tests::cni::{self, CniPod};
use palisade_tests::netns::NetnsError;
use palisade_tests::topology::{
    CLUSTER_IDENTITY_GC_GRACE_SECS, CLUSTER_LEASE_TTL_SECS, ETCD_CLIENT_PORT,
    UNDERLAY_BRIDGE_ADDRESS,
};
use palisade_tests::{locate_binary, NetNs, Node, PodSpec, PortProto, Topology};
use serde_json::json;
use socket2::{Domain, Socket, Type};

use super::{f, median, ms, percentile, say, Report, Table};

/// The agents' cluster name (the harness's `cluster_name`).
const CLUSTER: &str = "default";
/// The servers' port.
const PORT: u16 = 8080;
/// A new TCP connection attempt this often while waiting to be admitted.
const ATTEMPT_EVERY: Duration = Duration::from_millis(5);
/// An attempt not answered this long is abandoned (its SYN was dropped).
const ATTEMPT_LIFE: Duration = Duration::from_millis(200);
/// How often the observing node's API is asked what it knows.
const POLL_EVERY: Duration = Duration::from_millis(3);
/// Bound for a withdrawn pod to leave the observing node.
const WITHDRAW_LIMIT: Duration = Duration::from_secs(10);
/// Bound for every node to know every pod after background pods were added.
const CONVERGE_LIMIT: Duration = Duration::from_secs(120);
/// Label sets of the background pods.
const BACKGROUND_LABEL_SETS: usize = 50;
/// The convergence goal of the brief: p99 below this.
const GOAL: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------- helpers

/// Milliseconds, sorted.
fn sorted_ms(v: &[Duration]) -> Vec<f64> {
    let mut out: Vec<f64> = v.iter().map(|d| ms(*d)).collect();
    out.sort_by(f64::total_cmp);
    out
}

/// `p50 / p99` of `v` in ms (nearest rank for p99), `-` when empty.
fn p50_p99(v: &[Duration]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let s = sorted_ms(v);
    format!("{} / {}", f(median(&s), 1), f(percentile(&s, 99.0), 1))
}

fn stats_json(v: &[Duration]) -> serde_json::Value {
    let s = sorted_ms(v);
    json!({
        "count": s.len(),
        "p50_ms": median(&s),
        "p99_ms": percentile(&s, 99.0),
        "max_ms": s.last(),
    })
}

/// Pod labels from pairs.
fn labels_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A pod's CNI parameters on `node`.
fn cni_pod(
    plugin: &Path,
    node: &Node,
    netns: NetNs,
    namespace: &str,
    name: &str,
    labels: BTreeMap<String, String>,
) -> CniPod {
    CniPod {
        plugin: plugin.to_owned(),
        node_netns: node.netns().clone(),
        agent_socket: node.api_socket().to_owned(),
        container_id: netns.name().to_owned(),
        pod_netns: netns,
        ifname: "eth0".to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        labels,
        service_account: "default".to_owned(),
    }
}

fn cni_plugin() -> anyhow::Result<PathBuf> {
    locate_binary("palisade-cni").context(
        "no palisade-cni binary next to palisade-bench (build the workspace: cargo build --release --workspace --bins)",
    )
}

/// A pod whose `CNI DEL` is due (CNI contract: also after a failed ADD);
/// run on drop unless [`Added::del`] ran it.
struct Added {
    pod: CniPod,
    done: bool,
}

impl Added {
    fn new(pod: CniPod) -> Self {
        Self { pod, done: false }
    }

    fn del(mut self) -> anyhow::Result<()> {
        self.done = true;
        cni::del(&self.pod).with_context(|| format!("CNI DEL of {}", self.pod.name))
    }
}

impl Drop for Added {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = cni::del(&self.pod) {
                say(format!("CNI DEL of {}: {e}", self.pod.name));
            }
        }
    }
}

/// The etcd section every agent of the convergence cluster gets: the
/// harness's, with node pod CIDRs of `/prefix_len` (the harness leaves the
/// default /24, ~250 pods per node) and the node address left to the agent
/// (the source address toward etcd, i.e. its underlay address).
fn cluster_section(prefix_len: u8) -> serde_yaml::Value {
    let url = format!("http://{UNDERLAY_BRIDGE_ADDRESS}:{ETCD_CLIENT_PORT}");
    let mut etcd = serde_yaml::Mapping::new();
    etcd.insert(
        "endpoints".into(),
        serde_yaml::Value::Sequence(vec![url.into()]),
    );
    let mut c = serde_yaml::Mapping::new();
    c.insert("etcd".into(), serde_yaml::Value::Mapping(etcd));
    c.insert("lease_ttl_secs".into(), CLUSTER_LEASE_TTL_SECS.into());
    c.insert(
        "identity_gc_grace_secs".into(),
        CLUSTER_IDENTITY_GC_GRACE_SECS.into(),
    );
    c.insert("node_cidr_prefix_len".into(), u64::from(prefix_len).into());
    serde_yaml::Value::Mapping(c)
}

/// The longest node prefix whose CIDR holds `pods` addresses (network,
/// gateway and broadcast excluded), at most /24 and at least /17.
fn node_prefix_for(pods: usize) -> u8 {
    let mut len = 24u8;
    while len > 17 && (1usize << (32 - len)) < pods + 3 {
        len -= 1;
    }
    len
}

/// Endpoints node `observer` (its API socket) knows on node `of`.
fn known_on(observer: &Path, of: &str) -> anyhow::Result<usize> {
    match Client::new(observer)
        .call(&Request::NodeList)
        .context("node list")?
    {
        Response::Nodes { nodes } => Ok(nodes
            .iter()
            .find(|n| n.name == of)
            .map_or(0, |n| n.endpoints)),
        other => bail!("node list: unexpected answer {other:?}"),
    }
}

/// Asks `observer` every [`POLL_EVERY`] until it knows `want` endpoints on
/// node `of`; the instant it first did, `None` at the deadline.
fn wait_known(
    observer: &Path,
    of: &str,
    want: usize,
    deadline: Instant,
) -> anyhow::Result<Option<Instant>> {
    loop {
        if known_on(observer, of)? == want {
            return Ok(Some(Instant::now()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Asks `observer` every [`POLL_EVERY`] until its identity list (its
/// cluster session's view: the agent applies what the session learns right
/// after) has an identity with label `label` (`key=value`); the instant it
/// first did, `None` at the deadline.
fn wait_identity(
    observer: &Path,
    label: &str,
    deadline: Instant,
) -> anyhow::Result<Option<Instant>> {
    loop {
        match Client::new(observer)
            .call(&Request::IdentityList)
            .context("identity list")?
        {
            Response::Identities { identities } => {
                if identities
                    .iter()
                    .any(|i| i.labels.iter().any(|l| l == label))
                {
                    return Ok(Some(Instant::now()));
                }
            }
            other => bail!("identity list: unexpected answer {other:?}"),
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// From the calling thread's network namespace: a non-blocking TCP
/// connection attempt to `target` every [`ATTEMPT_EVERY`] (each abandoned
/// after [`ATTEMPT_LIFE`]: a dropped SYN is only retried by the kernel after
/// 1 s) until one completes; the instant it completed, `None` at the
/// deadline. A refused or unreachable attempt just waits for the next one.
fn first_connect(target: SocketAddrV4, deadline: Instant) -> std::io::Result<Option<Instant>> {
    let mut pending: Vec<(Socket, Instant)> = Vec::new();
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        if now >= next {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(socket2::Protocol::TCP))?;
            s.set_nonblocking(true)?;
            s.set_linger(Some(Duration::ZERO))?;
            match s.connect(&target.into()) {
                Ok(()) => return Ok(Some(Instant::now())),
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {
                    pending.push((s, now));
                }
                Err(_) => {}
            }
            next = now + ATTEMPT_EVERY;
        }
        pending.retain(|(_, start)| now.duration_since(*start) < ATTEMPT_LIFE);
        let wait = next
            .min(deadline)
            .saturating_duration_since(Instant::now())
            .as_millis()
            .clamp(1, 1000);
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd> = pending
                .iter()
                .map(|(s, _)| PollFd::new(s.as_fd(), PollFlags::POLLOUT))
                .collect();
            if fds.is_empty() {
                std::thread::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(1000)));
                Vec::new()
            } else {
                let timeout = PollTimeout::from(u16::try_from(wait).unwrap_or(1000));
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                fds.iter()
                    .enumerate()
                    .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(i, _)| i)
                    .collect()
            }
        };
        for i in ready.into_iter().rev() {
            let (s, _) = pending.remove(i);
            if s.take_error()?.is_none() && s.peer_addr().is_ok() {
                return Ok(Some(Instant::now()));
            }
        }
    }
}

/// [`first_connect`] on a thread inside `netns`.
fn spawn_connect(
    netns: &NetNs,
    target: SocketAddrV4,
    deadline: Instant,
) -> anyhow::Result<JoinHandle<Result<std::io::Result<Option<Instant>>, NetnsError>>> {
    netns
        .spawn_thread(move || first_connect(target, deadline))
        .context("starting a connection prober")
}

fn join_connect(
    h: JoinHandle<Result<std::io::Result<Option<Instant>>, NetnsError>>,
) -> anyhow::Result<Option<Instant>> {
    match h.join() {
        Ok(r) => Ok(r.context("prober namespace")?.context("prober socket")?),
        Err(_) => bail!("a connection prober panicked"),
    }
}

/// A tokio runtime whose threads live in a network namespace attached to
/// the underlay (where etcd is), for sessions and raw etcd clients. Work is
/// spawned onto it, so every socket is made by one of its threads.
struct EtcdSide {
    rt: tokio::runtime::Runtime,
    url: String,
}

impl EtcdSide {
    fn new(topo: &mut Topology) -> anyhow::Result<Self> {
        let url = topo
            .etcd()
            .context("the topology has no etcd")?
            .client_url();
        let ns = topo.add_netns("bench")?;
        topo.attach_underlay(&ns)?;
        let rt = ns
            .run(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
            })
            .context("entering the bench namespace")?
            .context("starting the async runtime")?;
        Ok(Self { rt, url })
    }

    /// Runs `fut` on the runtime's threads and waits for it, at most 30 s.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.run_for(Duration::from_secs(30), fut)
    }

    /// Runs `fut` on the runtime's threads and waits for it, at most
    /// `limit` (then it is aborted).
    fn run_for<T: Send + 'static>(
        &self,
        limit: Duration,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let task = self.rt.spawn(fut);
        let abort = task.abort_handle();
        match self
            .rt
            .block_on(async { tokio::time::timeout(limit, task).await })
        {
            Ok(r) => r.context("a task on the etcd side panicked"),
            Err(_) => {
                abort.abort();
                bail!("etcd work did not finish within {limit:?}")
            }
        }
    }

    /// A raw etcd client.
    fn client(&self) -> anyhow::Result<EtcdClient> {
        let url = self.url.clone();
        self.run(async move { EtcdClient::connect([url], None).await })?
            .context("connecting to etcd")
    }

    /// The store's revision now.
    fn revision(&self, client: &EtcdClient) -> anyhow::Result<i64> {
        let mut c = client.clone();
        let resp = self
            .run(async move {
                c.get("/", Some(GetOptions::new().with_prefix().with_count_only()))
                    .await
            })?
            .context("etcd get (revision)")?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Keys under `prefix`.
    fn count(&self, client: &EtcdClient, prefix: &str) -> anyhow::Result<i64> {
        let mut c = client.clone();
        let prefix = prefix.to_owned();
        let resp = self
            .run(async move {
                c.get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
            })?
            .context("etcd count")?;
        Ok(resp.count())
    }

    /// Whether `key` exists.
    fn exists(&self, client: &EtcdClient, key: &str) -> anyhow::Result<bool> {
        let mut c = client.clone();
        let key = key.to_owned();
        let resp = self
            .run(async move { c.get(key, None).await })?
            .context("etcd get")?;
        Ok(!resp.kvs().is_empty())
    }

    /// Waits until the revision has not moved for `quiet` (at most
    /// `limit`); returns it.
    fn settle(&self, client: &EtcdClient, quiet: Duration, limit: Duration) -> anyhow::Result<i64> {
        let deadline = Instant::now() + limit;
        let mut rev = self.revision(client)?;
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(25));
            let now_rev = self.revision(client)?;
            if now_rev != rev {
                rev = now_rev;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return Ok(rev);
            }
            if Instant::now() >= deadline {
                say(format!(
                    "etcd kept changing for {limit:?}; going on at revision {rev}"
                ));
                return Ok(rev);
            }
        }
    }
}

// ------------------------------------------------------ cluster-convergence

/// Options of `palisade-bench cluster-convergence`.
#[derive(Debug, Clone)]
pub struct ConvergenceOptions {
    /// Endpoint counts in the cluster to measure at (ascending).
    pub endpoints: Vec<usize>,
    /// Samples per label-set kind (existing, new) and endpoint count.
    pub samples: usize,
    /// Bound of one sample.
    pub timeout: Duration,
    /// Bound for making the background pods.
    pub max_seconds: u64,
    /// Harness progress on stderr.
    pub verbose: bool,
}

/// Parses `100,1000`.
pub fn parse_counts(text: &str) -> anyhow::Result<Vec<usize>> {
    let mut v = text
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("{s:?} in {text:?} is not a count"))
        })
        .collect::<anyhow::Result<Vec<usize>>>()?;
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

const CONV_NS: &str = "conv";

fn conv_policy() -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: conv-server, namespace: {CONV_NS}}}
spec:
  endpointSelector: {{matchLabels: {{app: server}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{app: client}}}}]
      toPorts: [{{ports: [{{port: \"{PORT}\", protocol: TCP}}]}}]
"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum LabelKind {
    /// `app: client`, the label set of a pod that lives on n1 all along.
    Existing,
    /// `app: client` plus a label unique to the sample: a new identity.
    New,
}

impl LabelKind {
    fn name(self) -> &'static str {
        match self {
            Self::Existing => "existing",
            Self::New => "new",
        }
    }
}

/// A place where pods are added: the cluster (pods on n1, observed from
/// n2) or the single node of the baseline.
struct Env {
    what: &'static str,
    /// Background pods (declared before `topo`: dropped, i.e. DELed, first).
    background: Background,
    topo: Topology,
    /// Where sample pods go.
    client_node: String,
    /// The node that must learn them (cluster only).
    observer: Option<String>,
    /// The server on the observer (cluster only).
    remote_server: Option<SocketAddrV4>,
    /// A server on the client node.
    local_server: SocketAddrV4,
    /// Nodes background pods go to, in turn.
    nodes: Vec<String>,
    /// Endpoints made with `add_pod` (servers, anchor client).
    fixed: usize,
}

/// Background pods, DELed when dropped (an error path; the normal end
/// takes them for [`release_background`]).
#[derive(Default)]
struct Background(Vec<CniPod>);

/// `CNI DEL` of background pods, newest first, each followed by the
/// deletion of its namespace, on a thread; gives how many were deleted, the
/// problems met and the time taken. (Leaving them to the topology's
/// cleanup deletes ~1,000 namespaces with veths and TCX links at once: the
/// kernel then runs ~1,800 kworkers in D state for ~20 s and holds RTNL,
/// which stalled the other topology's `CNI DEL`s past their 10 s limit.)
fn release_background(pods: Vec<CniPod>) -> JoinHandle<(usize, Vec<String>, Duration)> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut problems = Vec::new();
        let mut done = 0;
        for pod in pods.iter().rev() {
            match cni::del(pod) {
                Ok(()) => done += 1,
                Err(e) => {
                    problems.push(e.to_string());
                    // The agent is in trouble: the topology's cleanup
                    // removes the rest.
                    break;
                }
            }
            if let Err(e) = pod.pod_netns.delete() {
                problems.push(e.to_string());
            }
        }
        (done, problems, start.elapsed())
    })
}

impl Drop for Background {
    fn drop(&mut self) {
        let pods = std::mem::take(&mut self.0);
        if !pods.is_empty() {
            let _ = release_background(pods).join();
        }
    }
}

impl Env {
    fn endpoints(&self) -> usize {
        self.fixed + self.background.0.len()
    }

    fn socket(&self, node: &str) -> anyhow::Result<PathBuf> {
        Ok(self.topo.node(node)?.api_socket().to_owned())
    }
}

fn server_addr(topo: &Topology, pod: &str) -> anyhow::Result<SocketAddrV4> {
    Ok(SocketAddrV4::new(topo.pod(pod)?.ipv4(), PORT))
}

fn build_cluster(max_endpoints: usize, verbose: bool) -> anyhow::Result<Env> {
    let prefix = node_prefix_for(max_endpoints / 2 + 16);
    let ns_labels = [("ns".to_owned(), CONV_NS.to_owned())].into();
    let mut topo = Topology::builder()
        .node("n1")
        .node("n2")
        .namespace(CONV_NS, ns_labels)
        .agent_setting("cluster", cluster_section(prefix))
        .verbose(verbose)
        .build()
        .context("building the cluster (n1, n2, etcd)")?;
    topo.apply("conv-server", &conv_policy())?;
    let server = |name: &str, node: &str| {
        PodSpec::new(CONV_NS, name)
            .on(node)
            .label("app", "server")
            .ports([PortProto::tcp(PORT)])
    };
    topo.add_pod(server("server-b", "n2"))?;
    topo.add_pod(server("server-a", "n1"))?;
    topo.add_pod(
        PodSpec::new(CONV_NS, "anchor")
            .on("n1")
            .label("app", "client"),
    )?;
    let remote_server = Some(server_addr(&topo, "conv/server-b")?);
    let local_server = server_addr(&topo, "conv/server-a")?;
    say(format!("cluster: node pod CIDRs /{prefix}"));
    Ok(Env {
        what: "cluster",
        topo,
        client_node: "n1".into(),
        observer: Some("n2".into()),
        remote_server,
        local_server,
        nodes: vec!["n1".into(), "n2".into()],
        fixed: 3,
        background: Background::default(),
    })
}

fn build_single(verbose: bool) -> anyhow::Result<Env> {
    let ns_labels = [("ns".to_owned(), CONV_NS.to_owned())].into();
    let mut topo = Topology::builder()
        .node("solo")
        .namespace(CONV_NS, ns_labels)
        .agent_setting("pod_cidr", "10.128.0.0/16")
        .verbose(verbose)
        .build()
        .context("building the single node")?;
    topo.apply("conv-server", &conv_policy())?;
    topo.add_pod(
        PodSpec::new(CONV_NS, "server")
            .on("solo")
            .label("app", "server")
            .ports([PortProto::tcp(PORT)]),
    )?;
    topo.add_pod(
        PodSpec::new(CONV_NS, "anchor")
            .on("solo")
            .label("app", "client"),
    )?;
    let local_server = server_addr(&topo, "conv/server")?;
    Ok(Env {
        what: "single node",
        topo,
        client_node: "solo".into(),
        observer: None,
        remote_server: None,
        local_server,
        nodes: vec!["solo".into()],
        fixed: 2,
        background: Background::default(),
    })
}

/// Adds background pods (one of [`BACKGROUND_LABEL_SETS`] `app` labels,
/// nodes in turn) until `target` endpoints exist. Their `CNI DEL` comes at
/// the end ([`release_background`]).
fn grow(env: &mut Env, plugin: &Path, target: usize, deadline: Instant) -> anyhow::Result<()> {
    let start = Instant::now();
    let before = env.endpoints();
    while env.endpoints() < target {
        if Instant::now() >= deadline {
            bail!(
                "{}: only {} of {target} endpoints after --max-seconds; raise it or lower --endpoints",
                env.what,
                env.endpoints()
            );
        }
        let i = env.background.0.len();
        let node_name = env.nodes[i % env.nodes.len()].clone();
        let netns = env.topo.add_netns(&format!("bg{i}"))?;
        let app = format!("bg-{}", i % BACKGROUND_LABEL_SETS);
        let pod = cni_pod(
            plugin,
            env.topo.node(&node_name)?,
            netns,
            CONV_NS,
            &format!("bg{i}"),
            labels_map(&[("app", &app)]),
        );
        env.background.0.push(pod.clone());
        cni::add(&pod).with_context(|| format!("{}: CNI ADD of bg{i}", env.what))?;
    }
    if env.endpoints() > before {
        say(format!(
            "{}: {} background pods added in {:.1} s ({} endpoints)",
            env.what,
            env.endpoints() - before,
            start.elapsed().as_secs_f64(),
            env.endpoints()
        ));
    }
    if env.observer.is_some() {
        // Every node knows every endpoint.
        let want = env.endpoints();
        let deadline = Instant::now() + CONVERGE_LIMIT;
        for node in &env.nodes {
            let socket = env.socket(node)?;
            loop {
                let known: usize = env
                    .nodes
                    .iter()
                    .try_fold(0, |acc, of| known_on(&socket, of).map(|n| acc + n))?;
                if known == want {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("node {node} knows {known} of {want} endpoints after {CONVERGE_LIMIT:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}

/// Before measuring: the anchor client is admitted, a background pod is
/// not (the policy is in force on every server).
fn check_policy(env: &Env) -> anyhow::Result<()> {
    let anchor = env.topo.pod("conv/anchor")?.netns().clone();
    let home = env.topo.node(&env.client_node)?.netns().clone();
    let stranger = env
        .background
        .0
        .iter()
        .find(|p| p.node_netns == home)
        .map(|p| p.pod_netns.clone());
    let servers: Vec<SocketAddrV4> = env
        .remote_server
        .iter()
        .copied()
        .chain([env.local_server])
        .collect();
    for server in servers {
        let ok = join_connect(spawn_connect(
            &anchor,
            server,
            Instant::now() + Duration::from_secs(3),
        )?)?;
        if ok.is_none() {
            bail!(
                "{}: the anchor client (app=client) cannot reach {server}: the setup is broken",
                env.what
            );
        }
        if let Some(ns) = &stranger {
            let denied = join_connect(spawn_connect(
                ns,
                server,
                Instant::now() + Duration::from_millis(500),
            )?)?;
            if denied.is_some() {
                bail!(
                    "{}: a background pod reaches {server}: the policy is not enforced",
                    env.what
                );
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Sample {
    /// Pod name (`c<endpoints>x<i>` in the cluster, `s...` on the single
    /// node).
    name: String,
    /// Seconds since the benchmark started, at the ADD.
    at: f64,
    endpoints: usize,
    kind: LabelKind,
    add: Duration,
    /// The observer's cluster view has the pod's identity (cluster, new
    /// label sets).
    identity_known: Option<Duration>,
    /// The observer lists the pod (cluster).
    known: Option<Duration>,
    /// The observer's server admits the pod (cluster).
    remote: Option<Duration>,
    /// The server on the pod's own node admits it.
    local: Option<Duration>,
    /// From `CNI DEL` until the observer forgot the pod (cluster).
    forgotten: Option<Duration>,
    /// The `CNI DEL` call.
    del: Duration,
}

/// One sample: a new pod on the client node; times from just before its
/// `CNI ADD`; then its `CNI DEL`.
fn sample(
    env: &mut Env,
    plugin: &Path,
    name: &str,
    kind: LabelKind,
    timeout: Duration,
) -> anyhow::Result<Sample> {
    let netns = env.topo.add_netns(name)?;
    let mut labels = labels_map(&[("app", "client")]);
    if kind == LabelKind::New {
        labels.insert("sample".into(), name.to_owned());
    }
    let pod = cni_pod(
        plugin,
        env.topo.node(&env.client_node)?,
        netns.clone(),
        CONV_NS,
        name,
        labels,
    );
    let observer = env.observer.as_deref().map(|o| env.socket(o)).transpose()?;
    let before = observer
        .as_deref()
        .map(|o| known_on(o, &env.client_node))
        .transpose()?;
    let t0 = Instant::now();
    let deadline = t0 + timeout;
    let watcher = match (&observer, before) {
        (Some(o), Some(n)) => {
            let (o, of) = (o.clone(), env.client_node.clone());
            Some(std::thread::spawn(move || {
                wait_known(&o, &of, n + 1, deadline)
            }))
        }
        _ => None,
    };
    let id_watcher = match (&observer, kind) {
        (Some(o), LabelKind::New) => {
            let (o, label) = (o.clone(), format!("sample={name}"));
            Some(std::thread::spawn(move || {
                wait_identity(&o, &label, deadline)
            }))
        }
        _ => None,
    };
    let added = Added::new(pod.clone());
    let result = cni::add(&pod);
    let add = t0.elapsed();
    let probes = match result {
        Ok(_) => {
            let remote = env
                .remote_server
                .map(|s| spawn_connect(&netns, s, deadline))
                .transpose()?;
            let local = spawn_connect(&netns, env.local_server, deadline)?;
            Ok((remote, local))
        }
        Err(e) => Err(e),
    };
    let known = match watcher {
        Some(h) => match h.join() {
            Ok(r) => r?.map(|i| i - t0),
            Err(_) => bail!("the node-list poller panicked"),
        },
        None => None,
    };
    let identity_known = match id_watcher {
        Some(h) => match h.join() {
            Ok(r) => r?.map(|i| i - t0),
            Err(_) => bail!("the identity-list poller panicked"),
        },
        None => None,
    };
    let (remote, local) = probes.with_context(|| format!("{}: CNI ADD of {name}", env.what))?;
    let remote = remote
        .map(join_connect)
        .transpose()?
        .flatten()
        .map(|i| i - t0);
    let local = join_connect(local)?.map(|i| i - t0);

    let td = Instant::now();
    added.del()?;
    let del = td.elapsed();
    let forgotten = match (&observer, before) {
        (Some(o), Some(n)) => {
            wait_known(o, &env.client_node, n, td + WITHDRAW_LIMIT)?.map(|i| i - td)
        }
        _ => None,
    };
    netns.delete()?;
    Ok(Sample {
        endpoints: env.endpoints(),
        kind,
        add,
        identity_known,
        known,
        remote,
        local,
        forgotten,
        del,
        name: name.to_owned(),
        at: 0.0,
    })
}

fn select<'a>(
    v: &'a [Sample],
    endpoints: usize,
    kind: LabelKind,
) -> impl Iterator<Item = &'a Sample> + 'a {
    v.iter()
        .filter(move |s| s.endpoints == endpoints && s.kind == kind)
}

fn durations(
    v: &[Sample],
    endpoints: usize,
    kind: LabelKind,
    field: impl Fn(&Sample) -> Option<Duration>,
) -> Vec<Duration> {
    select(v, endpoints, kind).filter_map(field).collect()
}

/// Runs `cluster-convergence`.
pub fn run_convergence(opts: &ConvergenceOptions) -> anyhow::Result<Report> {
    let plugin = cni_plugin()?;
    let max = opts.endpoints.iter().copied().max().unwrap_or(0);
    let load_before = load_average();
    let mut cluster = build_cluster(max, opts.verbose)?;
    let mut single = build_single(opts.verbose)?;
    let grow_deadline = Instant::now() + Duration::from_secs(opts.max_seconds);
    let bench_start = Instant::now();
    let mut cluster_samples = Vec::new();
    let mut single_samples = Vec::new();
    let mut checked = false;
    for &target in &opts.endpoints {
        for env in [&mut cluster, &mut single] {
            if env.endpoints() > target {
                bail!(
                    "{}: {} endpoints exist already, more than {target}",
                    env.what,
                    env.endpoints()
                );
            }
            grow(env, &plugin, target, grow_deadline)?;
        }
        if !checked && !cluster.background.0.is_empty() && !single.background.0.is_empty() {
            check_policy(&cluster)?;
            check_policy(&single)?;
            checked = true;
            say("policy in force: the anchor client is admitted, a background pod is not");
        }
        say(format!(
            "{target} endpoints: {} samples per label-set kind (cluster and single node interleaved)",
            opts.samples
        ));
        let started = Instant::now();
        for i in 0..2 * opts.samples {
            if i > 0 && i % 20 == 0 {
                say(format!(
                    "{target} endpoints: {i} of {} samples after {:.1} s (load {})",
                    2 * opts.samples,
                    started.elapsed().as_secs_f64(),
                    load_average()
                ));
            }
            let kind = if i % 2 == 0 {
                LabelKind::Existing
            } else {
                LabelKind::New
            };
            // Alternate which one goes first.
            let order: [bool; 2] = if (i / 2) % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for in_cluster in order {
                let at = bench_start.elapsed().as_secs_f64();
                if in_cluster {
                    let mut s = sample(
                        &mut cluster,
                        &plugin,
                        &format!("c{target}x{i}"),
                        kind,
                        opts.timeout,
                    )?;
                    s.at = at;
                    cluster_samples.push(s);
                } else {
                    let mut s = sample(
                        &mut single,
                        &plugin,
                        &format!("s{target}x{i}"),
                        kind,
                        opts.timeout,
                    )?;
                    s.at = at;
                    single_samples.push(s);
                }
            }
        }
    }
    let load_after = load_average();

    let kinds = [LabelKind::Existing, LabelKind::New];
    let mut t = Table::new(
        "cluster-convergence: pod added on n1 (CNI ADD) -> n2 knows it / n2 admits it; ms from just before CNI ADD",
        &[
            "endpoints",
            "label set",
            "n",
            "CNI ADD p50 / p99",
            "n2 has identity p50 / p99",
            "n2 knows pod p50 / p99",
            "n2 admits p50 / p99",
            "n2 admits, after ADD returned, p50 / p99",
            "admitted before known",
            "n1 admits p50 / p99",
            "timeouts",
            "goal p99 < 1 s",
        ],
    );
    let mut b = Table::new(
        "cluster-convergence: baseline = the same CNI ADD on a single node (no cluster), until that node admits the pod",
        &[
            "endpoints",
            "label set",
            "baseline CNI ADD p50",
            "baseline admits p50 / p99",
            "cluster n2 admits p50",
            "ratio of p50s",
        ],
    );
    let mut rows_json = Vec::new();
    for &target in &opts.endpoints {
        for kind in kinds {
            let n = select(&cluster_samples, target, kind).count();
            let add = durations(&cluster_samples, target, kind, |s| Some(s.add));
            let identity = durations(&cluster_samples, target, kind, |s| s.identity_known);
            let known = durations(&cluster_samples, target, kind, |s| s.known);
            let remote = durations(&cluster_samples, target, kind, |s| s.remote);
            let after_add = durations(&cluster_samples, target, kind, |s| {
                s.remote.map(|r| r.saturating_sub(s.add))
            });
            let local = durations(&cluster_samples, target, kind, |s| s.local);
            let forgotten = durations(&cluster_samples, target, kind, |s| s.forgotten);
            let before_known = select(&cluster_samples, target, kind)
                .filter(|s| match (s.remote, s.known) {
                    (Some(r), Some(k)) => r < k,
                    (Some(_), None) => true,
                    _ => false,
                })
                .count();
            let timeouts = n - remote.len().min(n);
            let known_timeouts = n - known.len().min(n);
            let p99 = {
                let s = sorted_ms(&remote);
                percentile(&s, 99.0)
            };
            let met = timeouts == 0 && p99 < ms(GOAL);
            t.row(vec![
                target.to_string(),
                kind.name().into(),
                n.to_string(),
                p50_p99(&add),
                if kind == LabelKind::New {
                    p50_p99(&identity)
                } else {
                    "(exists)".into()
                },
                p50_p99(&known),
                p50_p99(&remote),
                p50_p99(&after_add),
                format!("{before_known}/{n}"),
                p50_p99(&local),
                format!("{timeouts} (known: {known_timeouts})"),
                if met { "met".into() } else { "missed".into() },
            ]);
            let s_add = durations(&single_samples, target, kind, |s| Some(s.add));
            let s_local = durations(&single_samples, target, kind, |s| s.local);
            let s_timeouts = select(&single_samples, target, kind).count() - s_local.len();
            let base_p50 = median(&sorted_ms(&s_local));
            let remote_p50 = median(&sorted_ms(&remote));
            let ratio = remote_p50 / base_p50;
            b.row(vec![
                target.to_string(),
                kind.name().into(),
                f(median(&sorted_ms(&s_add)), 1),
                p50_p99(&s_local),
                f(remote_p50, 1),
                f(ratio, 2),
            ]);
            rows_json.push(json!({
                "endpoints": target,
                "label_set": kind.name(),
                "cluster": {
                    "cni_add": stats_json(&add),
                    "n2_has_identity": stats_json(&identity),
                    "n2_knows_pod": stats_json(&known),
                    "n2_admits_after_add_returned": stats_json(&after_add),
                    "n2_admits": stats_json(&remote),
                    "n1_admits": stats_json(&local),
                    "n2_forgets_after_del": stats_json(&forgotten),
                    "cni_del": stats_json(&durations(&cluster_samples, target, kind, |s| Some(s.del))),
                    "admitted_before_known": before_known,
                    "timeouts_admit": timeouts,
                    "timeouts_known": known_timeouts,
                    "goal_p99_below_1s": met,
                },
                "single_node": {
                    "cni_add": stats_json(&s_add),
                    "admits": stats_json(&s_local),
                    "timeouts": s_timeouts,
                },
                "ratio_p50_cluster_n2_admits_over_single_node_admits": ratio,
            }));
            let dels = durations(&cluster_samples, target, kind, |s| Some(s.del));
            let s_dels = durations(&single_samples, target, kind, |s| Some(s.del));
            t.notes.push(format!(
                "{target} endpoints, {} label set: CNI DEL {} ms (single node {}); n2 forgets a deleted pod {} ms after the DEL started (p50 / p99).",
                kind.name(),
                p50_p99(&dels),
                p50_p99(&s_dels),
                p50_p99(&forgotten)
            ));
        }
    }
    t.notes.push(format!(
        "Connection attempts every {} ms (each abandoned after {} ms); n2's node list (and, for new label sets, its identity list, i.e. its cluster session's view) polled every {} ms; sample bound {:?}. \"n1 admits\": a server on n1 with the same policy. Timeouts are samples not admitted within the bound (and not counted in the percentiles).",
        ATTEMPT_EVERY.as_millis(),
        ATTEMPT_LIFE.as_millis(),
        POLL_EVERY.as_millis(),
        opts.timeout
    ));
    t.notes.push(format!(
        "load average (1/5/15 min) before: {load_before}, after: {load_after}"
    ));
    b.notes.push(
        "ratio = cluster p50 (n2 admits the pod from n1) / single-node p50 (its own node admits it)."
            .into(),
    );
    let json = json!({
        "benchmark": "cluster-convergence",
        "options": {"endpoints": opts.endpoints, "samples_per_kind": opts.samples,
                    "timeout_ms": ms(opts.timeout), "max_seconds": opts.max_seconds},
        "method": {"attempt_every_ms": ms(ATTEMPT_EVERY), "attempt_life_ms": ms(ATTEMPT_LIFE),
                   "poll_every_ms": ms(POLL_EVERY),
                   "background": "real pods (CNI ADD), alternating n1/n2 in the cluster, 50 app labels"},
        "results": rows_json,
        "samples": cluster_samples.iter().chain(&single_samples).map(|s| json!({
            "name": s.name, "at_s": s.at, "endpoints": s.endpoints, "label_set": s.kind.name(),
            "add_ms": ms(s.add), "n2_has_identity_ms": s.identity_known.map(ms),
            "n2_knows_ms": s.known.map(ms), "n2_admits_ms": s.remote.map(ms),
            "local_admits_ms": s.local.map(ms), "del_ms": ms(s.del),
            "n2_forgets_ms": s.forgotten.map(ms),
        })).collect::<Vec<_>>(),
        "load_average": {"before": load_before, "after": load_after},
    });
    let report = Report {
        tables: vec![t, b],
        json,
    };
    let mut problems = Vec::new();
    say("CNI DEL of the background pods (both topologies at once)");
    let releases: Vec<_> = [&mut cluster, &mut single]
        .into_iter()
        .map(|env| {
            (
                env.what,
                release_background(std::mem::take(&mut env.background.0)),
            )
        })
        .collect();
    for (what, h) in releases {
        match h.join() {
            Ok((done, p, took)) => {
                say(format!(
                    "{what}: {done} background pods deleted in {:.1} s",
                    took.as_secs_f64()
                ));
                problems.extend(p.into_iter().map(|e| format!("{what}: {e}")));
            }
            Err(_) => problems.push(format!("{what}: the DEL thread panicked")),
        }
    }
    for env in [cluster, single] {
        let what = env.what;
        let tail = env
            .topo
            .node(&env.client_node)
            .map(|n| n.log_tail(40))
            .unwrap_or_default();
        let start = Instant::now();
        if let Err(e) = env.topo.cleanup() {
            problems.push(format!("{what}: {e}"));
            say(format!(
                "{what}: cleanup problem: {e}; the end of {}'s agent log before cleanup:\n{tail}",
                env.client_node
            ));
        }
        say(format!(
            "{what}: removed in {:.1} s",
            start.elapsed().as_secs_f64()
        ));
    }
    if !problems.is_empty() {
        // Keep the measurements: print them before failing.
        for t in &report.tables {
            say(t.render());
        }
        bail!("cleanup left problems: {}", problems.join("; "));
    }
    Ok(report)
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ------------------------------------------------------- cluster-identities

/// Options of `palisade-bench cluster-identities`.
#[derive(Debug, Clone)]
pub struct IdentityOptions {
    /// Label sets per phase.
    pub allocations: usize,
    /// Nodes (sessions) of the concurrent phases.
    pub nodes: usize,
    /// Rounds: every phase runs a share of its label sets in each round,
    /// phases interleaved, so that the baseline and the allocations meet
    /// the same disk and load.
    pub rounds: usize,
    /// Harness progress on stderr.
    pub verbose: bool,
}

fn pod_labels(app: &str) -> anyhow::Result<Labels> {
    let pod = Labels::try_from_pairs([("app", app)]).context("labels")?;
    Labels::for_pod(&pod, "bench", &Labels::new(), "default", CLUSTER).context("labels")
}

fn label_sets(prefix: &str, n: usize) -> anyhow::Result<Vec<Labels>> {
    (0..n)
        .map(|i| pod_labels(&format!("{prefix}-{i}")))
        .collect()
}

fn session_config(url: &str) -> ClusterConfig {
    let mut c = ClusterConfig::with_endpoints(vec![url.to_owned()]);
    c.request_timeout_ms = 5000;
    c
}

/// `n` sequential puts of distinct keys (values the size of a label set's
/// JSON) by each of `clients` clients at once; per-put latencies and the
/// wall time.
async fn raw_puts(
    url: String,
    n: usize,
    clients: usize,
    round: usize,
    value: Vec<u8>,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let mut conns = Vec::new();
    for c in 0..clients {
        let mut client = EtcdClient::connect([url.clone()], None).await?;
        client
            .put(format!("/palisade-bench/warm/{c}"), value.clone(), None)
            .await?;
        conns.push(client);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut client) in conns.into_iter().enumerate() {
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for i in 0..n {
                let t = Instant::now();
                client
                    .put(
                        format!("/palisade-bench/raw/{clients}/{round}/{c}/{i}"),
                        value.clone(),
                        None,
                    )
                    .await?;
                lat.push(t.elapsed());
            }
            Ok::<_, etcd_client::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.context("a put task panicked")??);
    }
    Ok((all, start.elapsed()))
}

/// What one allocation phase gave.
struct Phase {
    /// Per session, per label set: the number, or `None` when the call
    /// failed.
    ids: Vec<Vec<Option<NumericIdentity>>>,
    /// Latency of every successful call.
    lat: Vec<Duration>,
    /// Failed calls, and the first error.
    failures: usize,
    first_error: Option<String>,
    wall: Duration,
}

impl Phase {
    fn empty(sessions: usize) -> Self {
        Self {
            ids: vec![Vec::new(); sessions],
            lat: Vec::new(),
            failures: 0,
            first_error: None,
            wall: Duration::ZERO,
        }
    }

    /// Appends a later round of the same phase.
    fn extend(&mut self, more: Phase) {
        for (mine, theirs) in self.ids.iter_mut().zip(more.ids) {
            mine.extend(theirs);
        }
        self.lat.extend(more.lat);
        self.failures += more.failures;
        if self.first_error.is_none() {
            self.first_error = more.first_error;
        }
        self.wall += more.wall;
    }

    /// Label sets at `i` of every session that got a number: the numbers.
    fn numbers_at(&self, i: usize) -> BTreeSet<NumericIdentity> {
        self.ids
            .iter()
            .filter_map(|v| v.get(i).copied().flatten())
            .collect()
    }
}

/// Each session acquires its list of label sets in order, all sessions at
/// once. A failed call is counted and the session goes on with the next
/// label set.
async fn acquire_all(sessions: Vec<Session>, lists: Vec<Vec<Labels>>) -> anyhow::Result<Phase> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (s, list) in sessions.into_iter().zip(lists) {
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(list.len());
            let mut lat = Vec::with_capacity(list.len());
            let mut errors = Vec::new();
            for l in &list {
                let t = Instant::now();
                match s.acquire_identity(l).await {
                    Ok(id) => {
                        lat.push(t.elapsed());
                        ids.push(Some(id));
                    }
                    Err(e) => {
                        errors.push(format!("node {}: {e}", s.node()));
                        ids.push(None);
                    }
                }
            }
            (ids, lat, errors)
        }));
    }
    let mut phase = Phase {
        ids: Vec::new(),
        lat: Vec::new(),
        failures: 0,
        first_error: None,
        wall: Duration::ZERO,
    };
    for t in tasks {
        let (i, l, e) = t.await.context("an allocating task panicked")?;
        phase.ids.push(i);
        phase.lat.extend(l);
        phase.failures += e.len();
        if phase.first_error.is_none() {
            phase.first_error = e.into_iter().next();
        }
    }
    phase.wall = start.elapsed();
    Ok(phase)
}

/// Runs `cluster-identities`.
pub fn run_identities(opts: &IdentityOptions) -> anyhow::Result<Report> {
    let n = opts.allocations;
    let k = opts.nodes;
    let load_before = load_average();
    let mut topo = Topology::bare()?;
    topo.add_underlay()?;
    let side = EtcdSide::new(&mut topo)?;
    let url = side.url.clone();
    let keys = Keys::new(CLUSTER).map_err(anyhow::Error::msg)?;
    if opts.verbose {
        say(format!("etcd at {url}, sessions of cluster {CLUSTER:?}"));
    }
    // Bound of one phase: generous (a few ms per call is the norm).
    let phase_limit = Duration::from_secs(120) + Duration::from_millis(50) * (n * k) as u32;
    let value = labels_json(&pod_labels("raw-value-of-typical-size")?).into_bytes();

    // Sessions, connected, with a lease and a synced view (one warm-up
    // allocation each, not timed).
    let sessions: Vec<Session> = {
        let url = url.clone();
        side.run(async move {
            let mut out = Vec::new();
            for i in 1..=k {
                let (s, rx) = Session::start(
                    session_config(&url),
                    CLUSTER,
                    &format!("bench-{i}"),
                    ClusterView::default(),
                )?;
                drop(rx);
                s.acquire_identity(&pod_labels(&format!("warm-{i}"))?)
                    .await?;
                out.push(s);
            }
            Ok::<_, anyhow::Error>(out)
        })??
    };
    let synced = Instant::now() + Duration::from_secs(10);
    while sessions.iter().any(|s| s.view().identities.len() < k) {
        if Instant::now() >= synced {
            bail!("the {k} sessions did not see each other's warm-up identities within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let per = n / k;
    let one = label_sets("one", n)?;
    let shared = label_sets("shared", n)?;
    let own: Vec<Vec<Labels>> = (0..k)
        .map(|j| label_sets(&format!("own{j}"), per))
        .collect::<anyhow::Result<_>>()?;
    let rounds = opts.rounds.clamp(1, n.max(1));
    // Round `r`'s share of a list of `len`.
    let share = |len: usize, r: usize| (r * len / rounds)..((r + 1) * len / rounds);
    let (mut put_lat, mut put_wall) = (Vec::new(), Duration::ZERO);
    let (mut put_k_lat, mut put_k_wall) = (Vec::new(), Duration::ZERO);
    let mut one_phase = Phase::empty(1);
    let mut shared_phase = Phase::empty(k);
    let mut own_phase = Phase::empty(k);
    say(format!(
        "{rounds} rounds of: raw puts (1 client), 1 node allocating, raw puts ({k} clients at once), {k} nodes allocating the same label sets, {k} nodes allocating different ones"
    ));
    // Identities the allocating node knows when the 1-node phase starts
    // its first and its last round.
    let mut known_at = Vec::new();
    for r in 0..rounds {
        if r == 0 || r + 1 == rounds {
            known_at.push(sessions[0].view().identities.len());
        }
        let (lat, wall) = side
            .run_for(
                phase_limit,
                raw_puts(url.clone(), share(n, r).len(), 1, r, value.clone()),
            )?
            .context("raw puts")?;
        put_lat.extend(lat);
        put_wall += wall;
        one_phase.extend(side.run_for(
            phase_limit,
            acquire_all(vec![sessions[0].clone()], vec![one[share(n, r)].to_vec()]),
        )??);
        let (lat, wall) = side
            .run_for(
                phase_limit,
                raw_puts(url.clone(), share(n, r).len(), k, r, value.clone()),
            )?
            .context("raw puts, concurrent clients")?;
        put_k_lat.extend(lat);
        put_k_wall += wall;
        shared_phase.extend(side.run_for(
            phase_limit,
            acquire_all(sessions.clone(), vec![shared[share(n, r)].to_vec(); k]),
        )??);
        own_phase.extend(side.run_for(
            phase_limit,
            acquire_all(
                sessions.clone(),
                own.iter().map(|l| l[share(per, r)].to_vec()).collect(),
            ),
        )??);
    }

    // Checks: one number per label set (whichever nodes got one), no number
    // for two label sets, and etcd holds exactly one master key and one
    // label key per label set that got a number.
    let mut problems = Vec::new();
    let mut numbers: BTreeMap<NumericIdentity, String> = BTreeMap::new();
    let mut allocated = k;
    let mut claim = |id: NumericIdentity, what: String, problems: &mut Vec<String>| {
        if let Some(other) = numbers.insert(id, what.clone()) {
            if other != what {
                problems.push(format!("{id} given to {other} and to {what}"));
            }
        }
    };
    for i in 0..n {
        let got = one_phase.numbers_at(i);
        allocated += usize::from(!got.is_empty());
        for id in got {
            claim(id, format!("one-{i}"), &mut problems);
        }
    }
    let mut disagreements = 0usize;
    let mut unallocated_shared = 0usize;
    for i in 0..n {
        let got = shared_phase.numbers_at(i);
        if got.len() > 1 {
            disagreements += 1;
            problems.push(format!("shared-{i}: nodes got {got:?}"));
        }
        if got.is_empty() {
            unallocated_shared += 1;
        } else {
            allocated += 1;
        }
        for id in got {
            claim(id, format!("shared-{i}"), &mut problems);
        }
    }
    for (j, ids) in own_phase.ids.iter().enumerate() {
        for (i, id) in ids.iter().enumerate() {
            if let Some(id) = id {
                allocated += 1;
                claim(*id, format!("own{j}-{i}"), &mut problems);
            }
        }
    }
    let client = side.client()?;
    let masters = side.count(&client, &format!("{}id/", keys.identities()))?;
    let label_keys = side.count(&client, &format!("{}labels/", keys.identities()))?;
    let expected = allocated as i64;
    if masters != expected || label_keys != expected {
        problems.push(format!(
            "etcd holds {masters} master keys and {label_keys} label keys, {expected} label sets were allocated"
        ));
    }
    for s in &sessions {
        s.shutdown();
    }
    let load_after = load_average();

    let rate = |count: usize, wall: Duration| count as f64 / wall.as_secs_f64();
    let base = rate(n, put_wall);
    let mut t = Table::new(
        format!("cluster-identities: {n} label sets per phase against one etcd"),
        &[
            "phase",
            "label sets (ok)",
            "failed calls",
            "wall s",
            "per s",
            "ratio to raw puts/s",
            "per call p50 / p99 ms",
        ],
    );
    let got = |p: &Phase, sets: usize| (0..sets).filter(|i| !p.numbers_at(*i).is_empty()).count();
    let one_ok = got(&one_phase, n);
    let shared_ok = got(&shared_phase, n);
    let own_ok: usize = own_phase
        .ids
        .iter()
        .map(|v| v.iter().filter(|x| x.is_some()).count())
        .sum();
    let mut phases_json = Vec::new();
    let mut row = |name: String, ok: usize, failed: usize, wall: Duration, lat: &[Duration]| {
        t.row(vec![
            name.clone(),
            ok.to_string(),
            failed.to_string(),
            f(wall.as_secs_f64(), 2),
            f(rate(ok, wall), 0),
            f(rate(ok, wall) / base, 2),
            p50_p99(lat),
        ]);
        phases_json.push(json!({
            "phase": name, "ok": ok, "failed_calls": failed, "wall_s": wall.as_secs_f64(),
            "per_s": rate(ok, wall), "ratio_to_raw_put": rate(ok, wall) / base,
            "latency": stats_json(lat),
        }));
    };
    row(
        "baseline: raw put, 1 client, sequential".into(),
        n,
        0,
        put_wall,
        &put_lat,
    );
    row(
        format!("raw put, {k} clients at once ({n} each)"),
        n * k,
        0,
        put_k_wall,
        &put_k_lat,
    );
    row(
        "acquire_identity, 1 node, sequential".into(),
        one_ok,
        one_phase.failures,
        one_phase.wall,
        &one_phase.lat,
    );
    row(
        format!("acquire_identity, {k} nodes, the same label sets at once (per s: label sets)"),
        shared_ok,
        shared_phase.failures,
        shared_phase.wall,
        &shared_phase.lat,
    );
    row(
        format!("acquire_identity, {k} nodes, {per} different label sets each, at once"),
        own_ok,
        own_phase.failures,
        own_phase.wall,
        &own_phase.lat,
    );
    t.notes.push(format!(
        "Checks: label sets with two numbers: {disagreements}; same-label-set phase: label sets no node got a number for: {unallocated_shared}; etcd master keys {masters}, label keys {label_keys} (expected {expected}, one per label set that got a number, {k} warm-up included); {}.",
        if problems.is_empty() { "all passed".to_owned() } else { format!("FAILED: {}", problems.iter().take(5).cloned().collect::<Vec<_>>().join("; ")) }
    ));
    let first_round = share(n, 0).len().max(1);
    let tenth = (one_phase.lat.len() / 10).clamp(1, first_round);
    let first_tenth = sorted_ms(&one_phase.lat[..tenth.min(one_phase.lat.len())]);
    let last_tenth = sorted_ms(&one_phase.lat[one_phase.lat.len().saturating_sub(tenth)..]);
    t.notes.push(format!(
        "1 node, sequential: per-call p50 of the first {tenth} calls {} ms (the node knew {} identities), of the last {tenth} {} ms (it knew {}): does a call get slower as identities accumulate?",
        f(median(&first_tenth), 2),
        known_at.first().copied().unwrap_or(0),
        f(median(&last_tenth), 2),
        known_at.last().copied().unwrap_or(0)
    ));
    for (name, p) in [
        ("1 node", &one_phase),
        ("same label sets", &shared_phase),
        ("different label sets", &own_phase),
    ] {
        if let Some(e) = &p.first_error {
            t.notes.push(format!(
                "{name}: {} calls failed; the first: {e}",
                p.failures
            ));
        }
    }
    t.notes.push(format!(
        "load average (1/5/15 min) before: {load_before}, after: {load_after}"
    ));
    let json = json!({
        "benchmark": "cluster-identities",
        "options": {"allocations": n, "nodes": k, "rounds": rounds},
        "phases": phases_json,
        "raw_put_per_s": base,
        "one_node_p50_first_tenth_ms": median(&first_tenth),
        "one_node_p50_last_tenth_ms": median(&last_tenth),
        "one_node_identities_known_first_last_round": known_at,
        "disagreements": disagreements,
        "unallocated_shared": unallocated_shared,
        "first_errors": {"one": one_phase.first_error, "shared": shared_phase.first_error, "different": own_phase.first_error},
        "etcd_master_keys": masters, "etcd_label_keys": label_keys, "expected_keys": expected,
        "problems": problems,
        "load_average": {"before": load_before, "after": load_after},
    });
    drop(side);
    topo.cleanup()?;
    if !problems.is_empty() {
        say(t.render());
        bail!("identity allocation checks failed: {}", problems.join("; "));
    }
    Ok(Report {
        tables: vec![t],
        json,
    })
}

// ----------------------------------------------------------- cluster-churn

/// Options of `palisade-bench cluster-churn`.
#[derive(Debug, Clone)]
pub struct ChurnOptions {
    /// ADD+DEL cycles per label-set case.
    pub cycles: usize,
    /// Harness progress on stderr.
    pub verbose: bool,
}

/// One etcd event.
#[derive(Debug, Clone)]
struct Event {
    revision: i64,
    put: bool,
    key: String,
}

/// The events of revisions `from..=to` under `prefix` (etcd keeps history
/// until compaction, which the harness's etcd never does).
async fn history(
    url: String,
    prefix: String,
    from: i64,
    to: i64,
) -> Result<Vec<Event>, etcd_client::Error> {
    let mut client = EtcdClient::connect([url], None).await?;
    let opts = WatchOptions::new().with_prefix().with_start_revision(from);
    let mut stream = client.watch(prefix, Some(opts)).await?;
    let mut out = Vec::new();
    loop {
        if out.last().is_some_and(|e: &Event| e.revision >= to) {
            break;
        }
        let Ok(msg) = tokio::time::timeout(Duration::from_secs(3), stream.message()).await else {
            break;
        };
        let Some(resp) = msg? else { break };
        for ev in resp.events() {
            if let Some(kv) = ev.kv() {
                out.push(Event {
                    revision: kv.mod_revision(),
                    put: matches!(ev.event_type(), EventType::Put),
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                });
            }
        }
    }
    out.retain(|e| e.revision <= to);
    Ok(out)
}

fn kind_of(keys: &Keys, key: &str) -> &'static str {
    match keys.parse(key) {
        Some(Key::Endpoint(_)) => "endpoint",
        Some(Key::IdentityId(_)) => "identity id",
        Some(Key::IdentityLabels(_)) => "identity labels",
        Some(Key::IdentityRef(..)) => "identity ref",
        Some(Key::Node(_)) => "node",
        Some(Key::Cidr(_)) => "cidr",
        None => "other",
    }
}

/// A revision made only of deletions of identity master and label keys:
/// garbage collection, not the pod's doing.
fn is_gc(keys: &Keys, events: &[&Event]) -> bool {
    events
        .iter()
        .all(|e| !e.put && matches!(kind_of(keys, &e.key), "identity id" | "identity labels"))
}

/// What one window (an ADD or a DEL) wrote.
#[derive(Debug, Default, Clone)]
struct Writes {
    /// Revisions (transactions) of the pod's doing.
    revisions: usize,
    /// Keys by `put|delete kind`.
    keys: BTreeMap<String, usize>,
    /// GC revisions that fell into the window.
    gc_revisions: usize,
}

fn writes(keys: &Keys, events: &[Event], from: i64, to: i64) -> Writes {
    let mut by_rev: BTreeMap<i64, Vec<&Event>> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.revision > from && e.revision <= to)
    {
        by_rev.entry(e.revision).or_default().push(e);
    }
    let mut w = Writes::default();
    for evs in by_rev.values() {
        if is_gc(keys, evs) {
            w.gc_revisions += 1;
            continue;
        }
        w.revisions += 1;
        for e in evs {
            let op = if e.put { "put" } else { "delete" };
            *w.keys
                .entry(format!("{op} {}", kind_of(keys, &e.key)))
                .or_default() += 1;
        }
    }
    w
}

/// Mean revisions and keys over windows, as text and JSON.
fn summarize(ws: &[Writes]) -> (f64, String, serde_json::Value) {
    let n = ws.len().max(1) as f64;
    let revs = ws.iter().map(|w| w.revisions).sum::<usize>() as f64 / n;
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    for w in ws {
        for (k, v) in &w.keys {
            *keys.entry(k.clone()).or_default() += v;
        }
    }
    let text = keys
        .iter()
        .map(|(k, v)| format!("{k} {}", f(*v as f64 / n, 2)))
        .collect::<Vec<_>>()
        .join(", ");
    let per_window: Vec<usize> = ws.iter().map(|w| w.revisions).collect();
    let json = json!({
        "revisions_mean": revs,
        "revisions_min": per_window.iter().min(),
        "revisions_max": per_window.iter().max(),
        "keys_mean": keys.iter().map(|(k, v)| (k.clone(), *v as f64 / n)).collect::<BTreeMap<_, _>>(),
        "gc_revisions_in_windows": ws.iter().map(|w| w.gc_revisions).sum::<usize>(),
    });
    (revs, text, json)
}

/// Runs `cluster-churn`.
pub fn run_churn(opts: &ChurnOptions) -> anyhow::Result<Report> {
    const NS: &str = "churn";
    let plugin = cni_plugin()?;
    let load_before = load_average();
    let ns_labels = [("ns".to_owned(), NS.to_owned())].into();
    let mut topo = Topology::builder()
        .node("n1")
        .node("n2")
        .namespace(NS, ns_labels)
        .pod(PodSpec::new(NS, "held").on("n1").label("app", "held"))
        .pod(
            PodSpec::new(NS, "elsewhere")
                .on("n2")
                .label("app", "elsewhere"),
        )
        .verbose(opts.verbose)
        .build()
        .context("building the cluster (n1, n2, etcd)")?;
    topo.wait_converged(CONVERGE_LIMIT)?;
    let side = EtcdSide::new(&mut topo)?;
    let client = side.client()?;
    let keys = Keys::new(CLUSTER).map_err(anyhow::Error::msg)?;
    let cases: [(&str, &str); 3] = [
        ("held by n1 (another pod on n1 has it)", "held"),
        ("exists, held by n2 only", "elsewhere"),
        ("new label set each time", ""),
    ];
    let start_rev = side.settle(&client, Duration::from_millis(500), Duration::from_secs(10))?;
    let mut windows: Vec<(usize, i64, i64, i64)> = Vec::new();
    let mut gc_wait = None;
    for (c, (_, app)) in cases.iter().enumerate() {
        say(format!(
            "churn: {} ADD+DEL cycles on n1, case {}",
            opts.cycles,
            c + 1
        ));
        for i in 0..opts.cycles {
            let name = format!("k{c}x{i}");
            let app = if app.is_empty() {
                format!("new-{i}")
            } else {
                (*app).to_owned()
            };
            let netns = topo.add_netns(&name)?;
            let pod = cni_pod(
                &plugin,
                topo.node("n1")?,
                netns.clone(),
                NS,
                &name,
                labels_map(&[("app", &app)]),
            );
            let r0 = side.settle(&client, Duration::from_millis(300), Duration::from_secs(5))?;
            let added = Added::new(pod.clone());
            let ip = cni::add(&pod)
                .with_context(|| format!("CNI ADD of {name}"))?
                .ipv4;
            let key = keys.endpoint(ip);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !side.exists(&client, &key)? {
                if Instant::now() >= deadline {
                    bail!("{key} did not appear in etcd within 5 s of the CNI ADD of {name}");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let r1 = side.settle(&client, Duration::from_millis(300), Duration::from_secs(5))?;
            added.del()?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while side.exists(&client, &key)? {
                if Instant::now() >= deadline {
                    bail!("{key} stayed in etcd 5 s after the CNI DEL of {name}");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let r2 = side.settle(&client, Duration::from_millis(300), Duration::from_secs(5))?;
            netns.delete()?;
            windows.push((c, r0, r1, r2));
        }
        if app.is_empty() {
            // The new label sets' identities go when garbage collection
            // finds them unreferenced for the grace period.
            let t = Instant::now();
            let limit = Duration::from_secs(CLUSTER_IDENTITY_GC_GRACE_SECS * 3 + 10);
            let prefix = format!("{}id/", keys.identities());
            let mut left = i64::MAX;
            while t.elapsed() < limit {
                let ev = side.run(history(
                    side.url.clone(),
                    prefix.clone(),
                    start_rev + 1,
                    side.revision(&client)?,
                ))??;
                let mut alive: BTreeSet<String> = BTreeSet::new();
                for e in &ev {
                    if e.put {
                        alive.insert(e.key.clone());
                    } else {
                        alive.remove(&e.key);
                    }
                }
                let new_ids: BTreeSet<String> = ev
                    .iter()
                    .filter(|e| e.put)
                    .filter(|e| {
                        windows
                            .iter()
                            .any(|w| w.0 == c && e.revision > w.1 && e.revision <= w.2)
                    })
                    .map(|e| e.key.clone())
                    .collect();
                left = new_ids.iter().filter(|k| alive.contains(*k)).count() as i64;
                if left == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            let end = side.settle(&client, Duration::from_millis(300), Duration::from_secs(5))?;
            let first = windows.iter().find(|w| w.0 == c).map_or(end, |w| w.1);
            let last = windows.last().map_or(end, |w| w.3);
            gc_wait = Some((t.elapsed(), left, first, last, end));
        }
    }
    let end_rev = side.revision(&client)?;
    let events = side.run(history(
        side.url.clone(),
        keys.root().to_owned(),
        start_rev + 1,
        end_rev,
    ))??;
    let load_after = load_average();

    let mut t = Table::new(
        format!(
            "cluster-churn: etcd writes per pod on n1 ({} ADD+DEL cycles per case; revisions = transactions)",
            opts.cycles
        ),
        &[
            "label set",
            "revisions per ADD",
            "keys per ADD",
            "revisions per DEL",
            "keys per DEL",
        ],
    );
    let mut cases_json = Vec::new();
    for (c, (name, _)) in cases.iter().enumerate() {
        let adds: Vec<Writes> = windows
            .iter()
            .filter(|w| w.0 == c)
            .map(|w| writes(&keys, &events, w.1, w.2))
            .collect();
        let dels: Vec<Writes> = windows
            .iter()
            .filter(|w| w.0 == c)
            .map(|w| writes(&keys, &events, w.2, w.3))
            .collect();
        let (ar, ak, aj) = summarize(&adds);
        let (dr, dk, dj) = summarize(&dels);
        t.row(vec![(*name).to_owned(), f(ar, 2), ak, f(dr, 2), dk]);
        cases_json.push(json!({"case": name, "add": aj, "del": dj}));
    }
    let mut gc_json = json!(null);
    if let Some((waited, left, from, last, to)) = gc_wait {
        // Every GC revision from the first cycle with new label sets to the
        // end (during the cycles and after them).
        let w = writes(&keys, &events, last, to);
        let (gc_revs, gc_keys) = {
            let mut by_rev: BTreeMap<i64, Vec<&Event>> = BTreeMap::new();
            for e in events
                .iter()
                .filter(|e| e.revision > from && e.revision <= to)
            {
                by_rev.entry(e.revision).or_default().push(e);
            }
            let gc: Vec<&Vec<&Event>> = by_rev.values().filter(|evs| is_gc(&keys, evs)).collect();
            (gc.len(), gc.iter().map(|evs| evs.len()).sum::<usize>())
        };
        t.notes.push(format!(
            "Garbage collection of the {} new label sets' identities (grace {} s), during the cycles and after them: {gc_revs} revisions, {gc_keys} keys deleted (waited {:.1} s after the last cycle, {} identities left), i.e. {} revisions per new label set; other writes after the last cycle: {}.",
            opts.cycles,
            CLUSTER_IDENTITY_GC_GRACE_SECS,
            waited.as_secs_f64(),
            left,
            f(gc_revs as f64 / opts.cycles.max(1) as f64, 2),
            w.revisions
        ));
        gc_json = json!({"revisions": gc_revs, "keys_deleted": gc_keys, "waited_s": waited.as_secs_f64(), "identities_left": left, "other_revisions": w.revisions});
    }
    let gc_in_windows: usize = windows
        .iter()
        .map(|w| {
            writes(&keys, &events, w.1, w.2).gc_revisions
                + writes(&keys, &events, w.2, w.3).gc_revisions
        })
        .sum();
    t.notes.push(format!(
        "A window runs from a quiet store (no new revision for 300 ms) to the pod's endpoint key appearing/disappearing and the store being quiet again; garbage-collection revisions inside windows ({gc_in_windows}) are not counted as the pod's. Revisions {start_rev}..{end_rev}, {} events.",
        events.len()
    ));
    t.notes.push(format!(
        "load average (1/5/15 min) before: {load_before}, after: {load_after}"
    ));
    let json = json!({
        "benchmark": "cluster-churn",
        "options": {"cycles": opts.cycles},
        "cases": cases_json,
        "gc_after_new_label_sets": gc_json,
        "revisions": {"start": start_rev, "end": end_rev, "events": events.len()},
        "load_average": {"before": load_before, "after": load_after},
    });
    drop(side);
    topo.cleanup()?;
    Ok(Report {
        tables: vec![t],
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn counts_and_prefixes() {
        assert_eq!(parse_counts("1000, 100").ok(), Some(vec![100, 1000]));
        assert!(parse_counts("x").is_err());
        assert_eq!(node_prefix_for(250), 24);
        assert_eq!(node_prefix_for(516), 22);
        assert_eq!(node_prefix_for(100_000), 17);
    }

    #[test]
    fn garbage_collection_is_told_apart() {
        let keys = Keys::new(CLUSTER).unwrap_or_else(|e| panic!("{e}"));
        let del = |k: String| Event {
            revision: 1,
            put: false,
            key: k,
        };
        let id = keys.identity_id(NumericIdentity(300));
        let lab = keys.identity_labels("{}");
        let gc = [del(id.clone()), del(lab)];
        assert!(is_gc(&keys, &gc.iter().collect::<Vec<_>>()));
        let ep = [del(keys.endpoint(Ipv4Addr::new(10, 0, 0, 1)))];
        assert!(!is_gc(&keys, &ep.iter().collect::<Vec<_>>()));
        assert_eq!(kind_of(&keys, &id), "identity id");
    }
}
