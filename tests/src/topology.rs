//! A topology: nodes (namespace + agent), pods (namespace + CNI + echo
//! servers), for clusters an underlay (a namespace with a bridge and an
//! etcd server, one veth per node), and the record that removes all of it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_api::{ApplySummary, ClientError, FlowKind, FlowRecord, Request, Response};

use crate::cleanup::{self, Resources, BPF_FS, DIR_PREFIX, NETNS_PREFIX};
use crate::cni::{self, CniDel, CniError, CniPod};
use crate::echo::{EchoError, EchoServer};
use crate::etcd::{EtcdError, EtcdServer};
use crate::netns::{NetNs, NetnsError, MAX_NETNS_NAME};
use crate::node::{Node, NodeError, NodePaths};
use crate::probe::{self, PortProto, ProbeError, ProbeJob, ProbeOutcome};

/// Threads used by [`Topology::probe_many`].
pub const PROBE_PARALLELISM: usize = 48;

/// Suffix of the underlay's network namespace (`pal-<runid>-ul`).
pub const UNDERLAY_NETNS_SUFFIX: &str = "ul";
/// The bridge in the underlay namespace.
pub const UNDERLAY_BRIDGE: &str = "br0";
/// The bridge's address: etcd listens there. Attached namespaces get
/// `10.199.0.<index + 1>`.
pub const UNDERLAY_BRIDGE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 254);
/// Prefix length of the underlay subnet (10.199.0.0/24).
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
/// The underlay interface inside an attached namespace (a node's).
pub const UNDERLAY_IFNAME: &str = "ul0";
/// How many namespaces the underlay can take (10.199.0.1 to .253).
pub const UNDERLAY_MAX_LINKS: u32 = 253;
/// etcd's client port on the underlay (peers on the next port).
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// `cluster.lease_ttl_secs` of every agent of a cluster.
pub const CLUSTER_LEASE_TTL_SECS: u64 = 5;
/// `cluster.identity_gc_grace_secs` of every agent of a cluster.
pub const CLUSTER_IDENTITY_GC_GRACE_SECS: u64 = 10;
/// With a shared identity ([`TopologyBuilder::shared_identity`]): the port
/// on which the first node serves the node CA, on its underlay address.
pub const NODE_CA_PORT: u16 = 8444;
/// With a shared identity: the lifetime of the join token made for each
/// joining node.
pub const JOIN_TOKEN_TTL_SECS: u64 = 600;
/// With a shared identity: how long a node may take, once its agent
/// answers, to join the node CA (spend its token).
pub const NODE_CA_JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Why building or using a topology failed.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// Namespace trouble.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A node (agent) failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A CNI call failed.
    #[error(transparent)]
    Cni(#[from] CniError),
    /// An echo server failed.
    #[error(transparent)]
    Echo(#[from] EchoError),
    /// The etcd server failed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// A namespace was to be attached to an underlay that does not exist.
    #[error("cannot attach network namespace {netns} to the underlay: this topology has none (call `add_underlay` first, or build with `cluster(true)`)")]
    NoUnderlay {
        /// The namespace.
        netns: String,
    },
    /// The underlay has no address left.
    #[error("cannot attach network namespace {netns} to the underlay: its {max} addresses in 10.199.0.0/24 are all handed out")]
    UnderlayFull {
        /// The namespace.
        netns: String,
        /// How many there are.
        max: u32,
    },
    /// A probe could not be made.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// A file or directory could not be made.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An API call to an agent failed.
    #[error("node {node}: {request} failed: {source}")]
    Api {
        /// The node.
        node: String,
        /// What was asked.
        request: &'static str,
        /// The error.
        #[source]
        source: ClientError,
    },
    /// An agent answered with something unexpected.
    #[error("node {node}: {request}: unexpected answer {answer}")]
    Unexpected {
        /// The node.
        node: String,
        /// What was asked.
        request: &'static str,
        /// The answer.
        answer: String,
    },
    /// A node did not learn the other nodes' pods in time.
    #[error("node {node} knows {known} of the {expected} pods of the cluster after {waited:?}")]
    NotConverged {
        /// The node.
        node: String,
        /// Pods it knows (its own and other nodes').
        known: usize,
        /// Pods of the topology.
        expected: usize,
        /// How long it was given.
        waited: Duration,
    },
    /// No such node.
    #[error("no node {name} in this topology")]
    UnknownNode {
        /// The name.
        name: String,
    },
    /// No such pod.
    #[error("no pod {name} in this topology")]
    UnknownPod {
        /// The name (`ns/pod`).
        name: String,
    },
    /// The name is taken (or, for the underlay and etcd, there is one).
    #[error("{what} {name} already exists in this topology")]
    Duplicate {
        /// Node or pod.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A binary is needed but was not given or found.
    #[error("no {what} binary: {hint}")]
    NoBinary {
        /// Which.
        what: &'static str,
        /// How to give one.
        hint: String,
    },
    /// A signal arrived; the run is being removed.
    #[error(transparent)]
    Interrupted(#[from] cleanup::Interrupted),
    /// A node could not serve or join the shared node CA
    /// ([`TopologyBuilder::shared_identity`]).
    #[error("node {node}: shared identity: {what}")]
    SharedIdentity {
        /// The node being added.
        node: String,
        /// What failed, and what would fix it.
        what: String,
    },
    /// Cleanup left things behind.
    #[error("cleanup of run {run_id} left problems: {}", problems.join("; "))]
    Cleanup {
        /// The run.
        run_id: String,
        /// What went wrong.
        problems: Vec<String>,
    },
}

/// A pod to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Ports with TCP/UDP echo servers.
    pub ports: Vec<PortProto>,
    /// Service account (`default` when `None`).
    pub service_account: Option<String>,
}

impl PodSpec {
    /// Pod `namespace/name` on node `n1`, no labels, no ports.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            node: "n1".to_owned(),
            labels: BTreeMap::new(),
            ports: Vec::new(),
            service_account: None,
        }
    }

    /// Sets the node.
    pub fn on(mut self, node: &str) -> Self {
        self.node = node.to_owned();
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds echo ports.
    pub fn ports(mut self, ports: impl IntoIterator<Item = PortProto>) -> Self {
        self.ports.extend(ports);
        self
    }

    /// `namespace/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A pod that exists: its namespace has an interface set up by the CNI
/// plugin and echo servers on its ports.
#[derive(Debug, Clone)]
pub struct Pod {
    spec: PodSpec,
    netns: NetNs,
    ipv4: Ipv4Addr,
    container_id: String,
    cni_result: serde_json::Value,
}

impl Pod {
    /// `namespace/name`.
    pub fn full_name(&self) -> String {
        self.spec.full_name()
    }

    /// How it was created.
    pub fn spec(&self) -> &PodSpec {
        &self.spec
    }

    /// Its network namespace.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// Its address (from the CNI result).
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    /// `CNI_CONTAINERID` used for it.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// The CNI ADD result.
    pub fn cni_result(&self) -> &serde_json::Value {
        &self.cni_result
    }
}

/// Where a palisade binary is: `$PALISADE_BIN_DIR/<name>`, else next to the
/// running executable, else one level up (test binaries live in
/// `target/<profile>/deps/`).
pub fn locate_binary(name: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PALISADE_BIN_DIR") {
        let p = PathBuf::from(dir).join(name);
        return p.is_file().then_some(p);
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join(name), dir.parent()?.join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

/// Builds a [`Topology`] in one go: nodes, namespaces, pods.
#[derive(Debug, Default, Clone)]
pub struct TopologyBuilder {
    agent_bin: Option<PathBuf>,
    cni_bin: Option<PathBuf>,
    nodes: Vec<String>,
    namespaces: Vec<(String, BTreeMap<String, String>)>,
    pods: Vec<PodSpec>,
    agent_settings: serde_yaml::Mapping,
    node_settings: BTreeMap<String, serde_yaml::Mapping>,
    cluster: bool,
    shared_identity: bool,
    verbose: bool,
}

impl TopologyBuilder {
    /// The agent binary (default: [`locate_binary`]`("palisade-agent")`).
    pub fn agent_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.agent_bin = Some(path.into());
        self
    }

    /// The CNI plugin (default: [`locate_binary`]`("palisade-cni")`).
    pub fn cni_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.cni_bin = Some(path.into());
        self
    }

    /// Adds a node (default when none is added: `n1`).
    pub fn node(mut self, name: &str) -> Self {
        self.nodes.push(name.to_owned());
        self
    }

    /// Adds a namespace with labels (applied to every agent before pods).
    pub fn namespace(mut self, name: &str, labels: BTreeMap<String, String>) -> Self {
        self.namespaces.push((name.to_owned(), labels));
        self
    }

    /// Adds a pod.
    pub fn pod(mut self, pod: PodSpec) -> Self {
        self.pods.push(pod);
        self
    }

    /// Sets a top-level key of every agent's configuration (overrides the
    /// harness's value, e.g. `policy_audit_mode: true`).
    pub fn agent_setting(mut self, key: &str, value: impl Into<serde_yaml::Value>) -> Self {
        self.agent_settings
            .insert(serde_yaml::Value::from(key), value.into());
        self
    }

    /// Sets a top-level key of one node's configuration (over
    /// [`TopologyBuilder::agent_setting`]).
    pub fn node_setting(
        mut self,
        node: &str,
        key: &str,
        value: impl Into<serde_yaml::Value>,
    ) -> Self {
        self.node_settings
            .entry(node.to_owned())
            .or_default()
            .insert(serde_yaml::Value::from(key), value.into());
        self
    }

    /// Makes a cluster even with one node: an underlay with etcd
    /// ([`Topology::add_underlay`]) and a `cluster` section in every
    /// agent's configuration. A topology with more than one node is always
    /// a cluster.
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// Gives the nodes one trust domain and one CA, as a real cluster has:
    /// the first node added serves the node CA (`identity.node_ca_listen`
    /// on its underlay address, port [`NODE_CA_PORT`]); every later node,
    /// in [`TopologyBuilder::build`] and in [`Topology::add_node`], joins it
    /// (`identity.node_ca`) with a join token made for it on the CA node and
    /// the CA's bundle, both written to `<temp dir>/<node>/node-ca/`, and
    /// is added once it has spent the token ([`NODE_CA_JOIN_TIMEOUT`]).
    /// A joining node takes the CA's trust domain unless its own settings
    /// name one (which must then be the same). A node whose settings already
    /// have `identity.node_ca` or `identity.node_ca_listen`, or
    /// `identity.enabled: false`, is left as the test set it (a CA node's
    /// own `node_ca_listen` is used). Implies [`TopologyBuilder::cluster`]:
    /// the node CA needs the cluster store.
    pub fn shared_identity(mut self, shared: bool) -> Self {
        self.shared_identity = shared;
        self
    }

    /// Prints setup steps on stderr.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Creates everything; on error, what was created is removed again.
    pub fn build(self) -> Result<Topology, TopologyError> {
        let mut topo = Topology::bare()?;
        topo.verbose = self.verbose;
        topo.agent_settings = self.agent_settings;
        topo.node_settings = self.node_settings;
        topo.agent_bin = self.agent_bin.or_else(|| locate_binary("palisade-agent"));
        topo.cni_bin = self.cni_bin.or_else(|| locate_binary("palisade-cni"));
        topo.shared_identity = self.shared_identity;
        let nodes = if self.nodes.is_empty() {
            vec!["n1".to_owned()]
        } else {
            self.nodes
        };
        if self.cluster || self.shared_identity || nodes.len() > 1 {
            topo.add_underlay()?;
        }
        for n in &nodes {
            topo.add_node(n)?;
        }
        if !self.namespaces.is_empty() {
            topo.apply("namespaces", &namespaces_yaml(&self.namespaces))?;
        }
        for p in self.pods {
            topo.add_pod(p)?;
        }
        Ok(topo)
    }
}

/// Namespace documents (`apiVersion: v1, kind: Namespace`) for the agent.
pub fn namespaces_yaml(namespaces: &[(String, BTreeMap<String, String>)]) -> String {
    namespaces
        .iter()
        .map(|(name, labels)| {
            let doc = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": labels},
            });
            serde_yaml::to_string(&doc).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Everything of one run. Dropping it (also while unwinding from a panic)
/// removes all it created; so does SIGINT/SIGTERM to the process.
#[derive(Debug)]
pub struct Topology {
    run_id: String,
    dir: PathBuf,
    res: Arc<Mutex<Resources>>,
    agent_bin: Option<PathBuf>,
    cni_bin: Option<PathBuf>,
    agent_settings: serde_yaml::Mapping,
    /// Per node, over `agent_settings`.
    node_settings: BTreeMap<String, serde_yaml::Mapping>,
    nodes: Vec<Node>,
    /// Index of the next node (its default pod CIDR `10.200.<index>.0/24`);
    /// never reused, also after [`Topology::remove_node`].
    next_node_index: usize,
    pods: Vec<Pod>,
    underlay: Option<Underlay>,
    etcd: Option<EtcdServer>,
    /// Whether nodes share one node CA ([`TopologyBuilder::shared_identity`]).
    shared_identity: bool,
    /// The node CA, once its node was added.
    node_ca: Option<NodeCa>,
    /// The nodes that joined it, by name.
    node_ca_joins: BTreeMap<String, NodeCaJoin>,
    verbose: bool,
}

/// The node CA of a topology with a shared identity
/// ([`TopologyBuilder::shared_identity`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCa {
    /// The node that serves it (the first node added).
    pub node: String,
    /// Where the other nodes reach it.
    pub address: SocketAddr,
    /// The cluster's trust domain (as the CA reports it).
    pub trust_domain: String,
}

/// How a node joined the shared node CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCaJoin {
    /// The public id of its join token (in `identity ca token list`).
    pub token_id: String,
    /// The file holding the token (`identity.node_ca.join_token_file`).
    pub token_file: PathBuf,
    /// The CA's bundle it started from (`identity.node_ca.bundle_file`).
    pub bundle_file: PathBuf,
}

/// What [`Topology::add_node`] does about the shared identity for one node.
#[derive(Debug)]
enum IdentityPlan {
    /// No shared identity, or the node's settings decide for themselves.
    AsConfigured,
    /// The node serves the node CA: on the address its own settings give
    /// (`identity.node_ca_listen`), else on its underlay address.
    ServeCa(Option<SocketAddr>),
    /// The node joins the node CA.
    Join {
        /// Where the CA is.
        ca: NodeCa,
        /// The token and bundle files.
        join: NodeCaJoin,
        /// The trust domain to set (the node names none).
        trust_domain: Option<String>,
    },
}

/// The underlay of a cluster: a namespace with bridge [`UNDERLAY_BRIDGE`]
/// and one veth per attached namespace.
#[derive(Debug)]
struct Underlay {
    netns: NetNs,
    /// Index of the next attachment (address `10.199.0.<index + 1>`,
    /// bridge port `ul-<index>`); never reused.
    next_index: u32,
    links: Vec<UnderlayLink>,
}

/// One namespace attached to the underlay.
#[derive(Debug)]
struct UnderlayLink {
    /// The attached namespace.
    netns: String,
    /// The bridge side of its veth, in the underlay namespace.
    bridge_port: String,
}

impl Topology {
    /// A builder.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// An empty topology: a run id, a temp dir and the cleanup record;
    /// nothing else (use [`Topology::add_netns`] and friends for tests
    /// without an agent).
    pub fn bare() -> Result<Self, TopologyError> {
        let run_id = cleanup::new_run_id();
        let dir = cleanup::run_temp_dir(&run_id);
        let res = Arc::new(Mutex::new(Resources::default()));
        cleanup::register(&res);
        let topo = Self {
            run_id,
            dir: dir.clone(),
            res,
            agent_bin: None,
            cni_bin: None,
            agent_settings: serde_yaml::Mapping::new(),
            node_settings: BTreeMap::new(),
            nodes: Vec::new(),
            next_node_index: 0,
            pods: Vec::new(),
            underlay: None,
            etcd: None,
            shared_identity: false,
            node_ca: None,
            node_ca_joins: BTreeMap::new(),
            verbose: false,
        };
        topo.record(|r| r.dirs.push(dir.clone()));
        std::fs::create_dir_all(&dir).map_err(|source| TopologyError::Io { path: dir, source })?;
        Ok(topo)
    }

    fn record(&self, f: impl FnOnce(&mut Resources)) {
        let mut r = self.res.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut r);
    }

    fn say(&self, msg: impl FnOnce() -> String) {
        if self.verbose {
            eprintln!("[{}] {}", self.run_id, msg());
        }
    }

    /// The run id (`<pid>r<seq>`), part of every name this run creates.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The run's temp dir (agent configs, state, logs).
    pub fn temp_dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a network namespace `pal-<runid>-<suffix>` owned by this
    /// topology.
    pub fn add_netns(&mut self, suffix: &str) -> Result<NetNs, TopologyError> {
        let name = format!("{NETNS_PREFIX}{}-{suffix}", self.run_id);
        let ns = NetNs::existing(&name)?;
        self.record(|r| r.netns.push(name.clone()));
        cleanup::creating(|| NetNs::create(&name))??;
        self.say(|| format!("netns {name} created"));
        Ok(ns)
    }

    /// Starts echo servers on `ports` inside `netns`; they stop at cleanup.
    pub fn start_echo(&mut self, netns: &NetNs, ports: &[PortProto]) -> Result<(), TopologyError> {
        let server = EchoServer::start(netns, ports)?;
        self.record(|r| r.servers.push(server));
        Ok(())
    }

    /// Adds a node: its namespace, its agent (started, answering).
    pub fn add_node(&mut self, name: &str) -> Result<&Node, TopologyError> {
        if self.nodes.iter().any(|n| n.name() == name) {
            return Err(TopologyError::Duplicate {
                what: "node",
                name: name.to_owned(),
            });
        }
        let agent_bin = self.agent_bin.clone().ok_or_else(|| TopologyError::NoBinary {
            what: "palisade-agent",
            hint: "give it to the builder, or set PALISADE_BIN_DIR, or build the workspace (`cargo build`) so it is next to this executable".into(),
        })?;
        let settings: serde_yaml::Mapping = self
            .agent_settings
            .iter()
            .chain(self.node_settings.get(name).into_iter().flatten())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // A node joining the shared node CA gets its token first: when the
        // CA cannot make one, nothing of the node exists yet.
        let plan = self.identity_plan(name, &settings)?;
        let index = self.next_node_index;
        self.next_node_index += 1;
        let netns = self.add_netns(name)?;
        let underlay = match self.underlay {
            Some(_) => Some(self.attach_underlay(&netns)?),
            None => None,
        };
        let dir = self.dir.join(name);
        let paths = NodePaths {
            config: dir.join("agent.yaml"),
            socket: dir.join("agent.sock"),
            workload_socket: dir.join("spiffe").join("workload.sock"),
            bpf_root: PathBuf::from(BPF_FS).join(format!("{DIR_PREFIX}{}-{name}", self.run_id)),
            log: dir.join("agent.log"),
            dir: dir.clone(),
        };
        self.record(|r| r.dirs.push(paths.bpf_root.clone()));
        std::fs::create_dir_all(dir.join("state")).map_err(|source| TopologyError::Io {
            path: dir.join("state"),
            source,
        })?;
        let endpoints: Vec<String> = self.etcd.iter().map(EtcdServer::client_url).collect();
        let mut config = serde_yaml::Mapping::new();
        let mut set = |k: &str, v: serde_yaml::Value| {
            config.insert(serde_yaml::Value::from(k), v);
        };
        let path_value = |p: &Path| serde_yaml::Value::from(p.to_string_lossy().into_owned());
        set("node_name", name.into());
        set("cluster_name", "default".into());
        set("state_dir", path_value(&dir.join("state")));
        set("bpf_root", path_value(&paths.bpf_root));
        set("api_socket", path_value(&paths.socket));
        match underlay {
            // In a cluster the pod CIDR comes from the cluster's pool.
            Some(address) => set("cluster", cluster_config(&endpoints, address)),
            None => set("pod_cidr", format!("10.200.{}.0/24", index % 256).into()),
        }
        set("flow_log", path_value(&dir.join("flows.jsonl")));
        // Runtime enforcement is host-wide; tests that need it turn it on
        // with `agent_setting("runtime_enforcement", true)`.
        set("runtime_enforcement", false.into());
        set("runtime_events_log", path_value(&dir.join("events.jsonl")));
        config.extend(settings);
        // Every node has its own Workload API socket, also when a test
        // sets other identity settings.
        let identity = config
            .entry(serde_yaml::Value::from("identity"))
            .or_insert_with(|| serde_yaml::Mapping::new().into());
        let serves_ca = match &plan {
            IdentityPlan::ServeCa(own) => Some(match (own, underlay) {
                (Some(listen), _) if !listen.ip().is_unspecified() => *listen,
                (Some(listen), Some(address)) => SocketAddr::new(address.into(), listen.port()),
                (None, Some(address)) => SocketAddr::new(address.into(), NODE_CA_PORT),
                (_, None) => {
                    return Err(TopologyError::SharedIdentity {
                        node: name.to_owned(),
                        what: "serving the node CA needs a cluster (an underlay with etcd): build the topology with `shared_identity(true)` or `cluster(true)`".into(),
                    })
                }
            }),
            _ => None,
        };
        if let Some(identity) = identity.as_mapping_mut() {
            identity
                .entry(serde_yaml::Value::from("workload_api_socket"))
                .or_insert_with(|| path_value(&paths.workload_socket));
            match (&plan, serves_ca) {
                (IdentityPlan::ServeCa(None), Some(listen)) => {
                    identity.insert("node_ca_listen".into(), listen.to_string().into());
                }
                (
                    IdentityPlan::Join {
                        ca,
                        join,
                        trust_domain,
                    },
                    _,
                ) => {
                    let mut client = serde_yaml::Mapping::new();
                    client.insert("address".into(), ca.address.to_string().into());
                    client.insert("bundle_file".into(), path_value(&join.bundle_file));
                    client.insert("join_token_file".into(), path_value(&join.token_file));
                    identity.insert("node_ca".into(), client.into());
                    if let Some(td) = trust_domain {
                        identity.insert("trust_domain".into(), td.as_str().into());
                    }
                }
                _ => {}
            }
        }
        let slot = Arc::new(Mutex::new(None));
        self.record(|r| r.agents.push(Arc::clone(&slot)));
        let node = Node::new(name, netns, &agent_bin, paths, &config, slot)?
            .with_underlay_address(underlay);
        node.start_agent()?;
        self.say(|| {
            format!(
                "node {name}: agent pid {} answering on {}",
                node.agent_pid().unwrap_or(0),
                node.api_socket().display()
            )
        });
        match (plan, serves_ca) {
            (IdentityPlan::ServeCa(_), Some(address)) => {
                let ca = node_ca_serving(&node, address)?;
                self.say(|| {
                    format!(
                        "node {name}: serves the node CA of trust domain {} on {address}",
                        ca.trust_domain
                    )
                });
                self.node_ca = Some(ca);
            }
            (IdentityPlan::Join { ca, join, .. }, _) => {
                self.wait_joined(&node, &ca, &join)?;
                self.say(|| format!("node {name}: joined the node CA on {}", ca.address));
                self.node_ca_joins.insert(name.to_owned(), join);
            }
            _ => {}
        }
        self.nodes.push(node);
        let last = self.nodes.len() - 1;
        Ok(&self.nodes[last])
    }

    /// The shared node CA ([`TopologyBuilder::shared_identity`]), once its
    /// node was added.
    pub fn node_ca(&self) -> Option<&NodeCa> {
        self.node_ca.as_ref()
    }

    /// How node `name` joined the shared node CA, if it did.
    pub fn node_ca_join(&self, name: &str) -> Option<&NodeCaJoin> {
        self.node_ca_joins.get(name)
    }

    /// What `add_node(name)` does about the shared identity, given the
    /// node's settings; for a joining node, makes its token on the CA node
    /// and writes the token and bundle files.
    fn identity_plan(
        &self,
        name: &str,
        settings: &serde_yaml::Mapping,
    ) -> Result<IdentityPlan, TopologyError> {
        if !self.shared_identity {
            return Ok(IdentityPlan::AsConfigured);
        }
        let fail = |what: String| TopologyError::SharedIdentity {
            node: name.to_owned(),
            what,
        };
        let (ca, trust_domain) = match shared_identity_role(settings, self.node_ca.as_ref())
            .map_err(fail)?
        {
            Role::ServeCa(own) => return Ok(IdentityPlan::ServeCa(own)),
            Role::OwnSettings => {
                self.say(|| {
                    format!("node {name}: identity settings of its own, not joining the node CA")
                });
                return Ok(IdentityPlan::AsConfigured);
            }
            Role::Join { ca, trust_domain } => (ca, trust_domain),
        };
        if self.underlay.is_none() {
            return Err(fail(
                "joining the node CA needs a cluster (an underlay with etcd)".into(),
            ));
        }
        let ca_node = self.node(&ca.node).map_err(|_| {
            fail(format!(
                "cannot join the node CA: node {} that serves it is no longer in this topology",
                ca.node
            ))
        })?;
        let call = |request: &Request, what: &str| {
            ca_node.client().call(request).map_err(|e| {
                fail(format!(
                    "{what} on node {} (the node CA) failed: {e}",
                    ca.node
                ))
            })
        };
        let (token, token_id) = match call(
            &Request::IdentityTokenCreate {
                node: name.to_owned(),
                ttl_secs: JOIN_TOKEN_TTL_SECS,
            },
            "creating its join token",
        )? {
            Response::JoinToken { token, id, .. } => (token, id),
            other => {
                return Err(fail(format!(
                    "creating its join token on node {} (the node CA): unexpected answer {other:?}",
                    ca.node
                )))
            }
        };
        let bundle = match call(&Request::IdentityCaShow, "reading the CA's bundle")? {
            Response::IdentityCa(status) if !status.bundle_pem.trim().is_empty() => {
                status.bundle_pem
            }
            other => {
                return Err(fail(format!(
                    "reading the CA's bundle on node {} (the node CA): unexpected answer {other:?}",
                    ca.node
                )))
            }
        };
        let dir = self.dir.join(name).join("node-ca");
        let join = NodeCaJoin {
            token_id,
            token_file: dir.join("join-token"),
            bundle_file: dir.join("bundle.pem"),
        };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TopologyError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        write_private(&join.token_file, token.as_bytes()).map_err(io(&join.token_file))?;
        std::fs::write(&join.bundle_file, bundle).map_err(io(&join.bundle_file))?;
        Ok(IdentityPlan::Join {
            ca,
            join,
            trust_domain,
        })
    }

    /// Waits until `node` (started, not yet in `self.nodes`) has spent its
    /// join token at the node CA.
    fn wait_joined(
        &self,
        node: &Node,
        ca: &NodeCa,
        join: &NodeCaJoin,
    ) -> Result<(), TopologyError> {
        let fail = |what: String| TopologyError::SharedIdentity {
            node: node.name().to_owned(),
            what,
        };
        let ca_node = self.node(&ca.node).map_err(|_| {
            fail(format!(
                "node {} that serves the node CA is no longer in this topology",
                ca.node
            ))
        })?;
        let deadline = Instant::now() + NODE_CA_JOIN_TIMEOUT;
        loop {
            let spent = match ca_node.client().call(&Request::IdentityNodeList) {
                Ok(Response::CaNodes { tokens, .. }) => tokens
                    .iter()
                    .any(|t| t.id == join.token_id && t.used.is_some()),
                Ok(other) => {
                    return Err(fail(format!(
                        "listing the joined nodes on node {} (the node CA): unexpected answer {other:?}",
                        ca.node
                    )))
                }
                Err(e) => {
                    return Err(fail(format!(
                        "listing the joined nodes on node {} (the node CA) failed: {e}",
                        ca.node
                    )))
                }
            };
            if spent {
                return Ok(());
            }
            if !node.agent_running() || Instant::now() >= deadline {
                let state = match node.client().call(&Request::IdentityCaShow) {
                    Ok(Response::IdentityCa(status)) => status
                        .node_ca
                        .unwrap_or_else(|| "no node CA configured".into()),
                    Ok(other) => format!("unexpected answer {other:?}"),
                    Err(e) => e.to_string(),
                };
                let why = if node.agent_running() {
                    format!("within {NODE_CA_JOIN_TIMEOUT:?}")
                } else {
                    "before its agent exited".to_owned()
                };
                return Err(fail(format!(
                    "it did not join the node CA on {} (node {}) {why}: its token {} is unspent; its identity status: {state}; last lines of {}:\n{}",
                    ca.address,
                    ca.node,
                    join.token_id,
                    node.agent_log().display(),
                    node.log_tail(20)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sets a top-level key of the configuration of node `node`, for when
    /// it is added ([`Topology::add_node`]).
    pub fn set_node_setting(&mut self, node: &str, key: &str, value: impl Into<serde_yaml::Value>) {
        self.node_settings
            .entry(node.to_owned())
            .or_default()
            .insert(serde_yaml::Value::from(key), value.into());
    }

    /// Removes a node as if its machine vanished: kills its agent
    /// (SIGKILL), forgets its pods (their echo servers stop, their
    /// namespaces are deleted, and no `CNI DEL` is due any more: there is no
    /// agent to answer it), deletes its underlay link and its namespace.
    /// Its bpf root and directory stay until cleanup.
    pub fn remove_node(&mut self, name: &str) -> Result<(), TopologyError> {
        let pos = self
            .nodes
            .iter()
            .position(|n| n.name() == name)
            .ok_or_else(|| TopologyError::UnknownNode {
                name: name.to_owned(),
            })?;
        self.nodes[pos].stop_agent(true)?;
        let node = self.nodes.remove(pos);
        self.node_ca_joins.remove(name);
        let node_netns = node.netns().clone();
        self.pods.retain(|p| p.spec.node != name);
        // Every pod ADDed on the node, also those whose ADD failed.
        let (pod_netns, servers) = {
            let mut r = self.res.lock().unwrap_or_else(|e| e.into_inner());
            let mut pod_netns = Vec::new();
            r.cni.retain(|del| {
                let on_node = del.0.node_netns == node_netns;
                if on_node {
                    pod_netns.push(del.0.pod_netns.clone());
                }
                !on_node
            });
            let (stop, keep): (Vec<EchoServer>, Vec<EchoServer>) = r
                .servers
                .drain(..)
                .partition(|s| pod_netns.iter().any(|ns| ns.name() == s.netns()));
            r.servers = keep;
            (pod_netns, stop)
        };
        // Outside the lock: stopping joins the server threads.
        for mut server in servers {
            server.stop();
        }
        // The names stay recorded: deleting them again at cleanup is a no-op.
        for ns in &pod_netns {
            ns.delete()?;
        }
        if let Some(ul) = self.underlay.as_mut() {
            if let Some(i) = ul.links.iter().position(|l| l.netns == node_netns.name()) {
                let link = ul.links.remove(i);
                ul.netns.ip(&["link", "del", &link.bridge_port])?;
            }
        }
        node_netns.delete()?;
        self.say(|| {
            format!(
                "node {name} removed with {} pod namespace(s)",
                pod_netns.len()
            )
        });
        Ok(())
    }

    /// Makes the underlay of a cluster: namespace `pal-<runid>-ul` with
    /// bridge [`UNDERLAY_BRIDGE`] at [`UNDERLAY_BRIDGE_ADDRESS`]/24 and an
    /// etcd server on [`UNDERLAY_BRIDGE_ADDRESS`]:[`ETCD_CLIENT_PORT`]
    /// (started, healthy). Nodes added afterwards are attached to it
    /// ([`Topology::attach_underlay`]) and run in cluster mode.
    pub fn add_underlay(&mut self) -> Result<NetNs, TopologyError> {
        if let Some(ul) = &self.underlay {
            return Err(TopologyError::Duplicate {
                what: "underlay",
                name: ul.netns.name().to_owned(),
            });
        }
        let ns = self.add_netns(UNDERLAY_NETNS_SUFFIX)?;
        let bridge_address = format!("{UNDERLAY_BRIDGE_ADDRESS}/{UNDERLAY_PREFIX_LEN}");
        ns.ip(&["link", "add", UNDERLAY_BRIDGE, "type", "bridge"])?;
        ns.ip(&["addr", "add", &bridge_address, "dev", UNDERLAY_BRIDGE])?;
        ns.ip(&["link", "set", UNDERLAY_BRIDGE, "up"])?;
        self.say(|| format!("underlay {}: {UNDERLAY_BRIDGE} {bridge_address}", ns.name()));
        self.underlay = Some(Underlay {
            netns: ns.clone(),
            next_index: 0,
            links: Vec::new(),
        });
        self.add_etcd(
            &ns,
            SocketAddrV4::new(UNDERLAY_BRIDGE_ADDRESS, ETCD_CLIENT_PORT),
        )?;
        Ok(ns)
    }

    /// Connects `netns` to the underlay: a veth from bridge port `ul-<index>`
    /// (in the underlay namespace) to [`UNDERLAY_IFNAME`] in `netns` with
    /// address `10.199.0.<index + 1>`/24, both up (and `lo` of `netns`).
    /// Returns that address.
    pub fn attach_underlay(&mut self, netns: &NetNs) -> Result<Ipv4Addr, TopologyError> {
        let Some(ul) = self.underlay.as_mut() else {
            return Err(TopologyError::NoUnderlay {
                netns: netns.name().to_owned(),
            });
        };
        let index = ul.next_index;
        let last_octet = u8::try_from(index + 1)
            .ok()
            .filter(|_| index < UNDERLAY_MAX_LINKS)
            .ok_or_else(|| TopologyError::UnderlayFull {
                netns: netns.name().to_owned(),
                max: UNDERLAY_MAX_LINKS,
            })?;
        ul.next_index += 1;
        let address = Ipv4Addr::new(10, 199, 0, last_octet);
        let bridge_port = format!("ul-{index}");
        // Made in the underlay namespace, its peer created right in `netns`.
        ul.netns.ip(&[
            "link",
            "add",
            &bridge_port,
            "type",
            "veth",
            "peer",
            "name",
            UNDERLAY_IFNAME,
            "netns",
            netns.name(),
        ])?;
        ul.links.push(UnderlayLink {
            netns: netns.name().to_owned(),
            bridge_port: bridge_port.clone(),
        });
        ul.netns
            .ip(&["link", "set", &bridge_port, "master", UNDERLAY_BRIDGE])?;
        ul.netns.ip(&["link", "set", &bridge_port, "up"])?;
        let cidr = format!("{address}/{UNDERLAY_PREFIX_LEN}");
        netns.ip(&["addr", "add", &cidr, "dev", UNDERLAY_IFNAME])?;
        netns.ip(&["link", "set", UNDERLAY_IFNAME, "up"])?;
        netns.ip(&["link", "set", "lo", "up"])?;
        self.say(|| format!("underlay: {} {cidr} on {bridge_port}", netns.name()));
        Ok(address)
    }

    /// The underlay's namespace, when this topology is a cluster.
    pub fn underlay(&self) -> Option<&NetNs> {
        self.underlay.as_ref().map(|ul| &ul.netns)
    }

    /// Starts an etcd server inside `netns` with clients on `client` (peers
    /// on the next port), its data dir and log in `<temp dir>/etcd/`; it is
    /// stopped at cleanup. A topology has at most one (see
    /// [`Topology::etcd`]); [`Topology::add_underlay`] makes it for a
    /// cluster. When it does not come up, the error carries the end of its
    /// log and [`Topology::etcd`] still gives it (to look or to start it
    /// again).
    pub fn add_etcd(
        &mut self,
        netns: &NetNs,
        client: SocketAddrV4,
    ) -> Result<&EtcdServer, TopologyError> {
        if let Some(etcd) = &self.etcd {
            return Err(TopologyError::Duplicate {
                what: "etcd server",
                name: etcd.client_url(),
            });
        }
        let slot = Arc::new(Mutex::new(None));
        self.record(|r| r.etcd.push(Arc::clone(&slot)));
        let etcd = EtcdServer::new(netns.clone(), client, self.dir.join("etcd"), slot);
        if let Err(e) = etcd.start() {
            self.etcd = Some(etcd);
            return Err(e.into());
        }
        self.say(|| {
            format!(
                "etcd pid {} healthy on {} in netns {}",
                etcd.pid().unwrap_or(0),
                etcd.client_url(),
                netns.name()
            )
        });
        Ok(self.etcd.insert(etcd))
    }

    /// The etcd server, when this topology has one. Its methods take
    /// `&self`: stop, kill and start it again for outage tests.
    pub fn etcd(&self) -> Option<&EtcdServer> {
        self.etcd.as_ref()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Result<&Node, TopologyError> {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .ok_or_else(|| TopologyError::UnknownNode {
                name: name.to_owned(),
            })
    }

    /// Waits (at most `limit`) until every node knows every pod of the
    /// topology, its own and the other nodes' (`palisade node list`).
    pub fn wait_converged(&self, limit: Duration) -> Result<(), TopologyError> {
        let expected = self.pods.len();
        let deadline = Instant::now() + limit;
        for node in &self.nodes {
            loop {
                let known = match node.client().call(&Request::NodeList) {
                    Ok(Response::Nodes { nodes }) => nodes.iter().map(|n| n.endpoints).sum(),
                    Ok(other) => {
                        return Err(TopologyError::Unexpected {
                            node: node.name().to_owned(),
                            request: "node list",
                            answer: format!("{other:?}"),
                        })
                    }
                    Err(source) => {
                        return Err(TopologyError::Api {
                            node: node.name().to_owned(),
                            request: "node list",
                            source,
                        })
                    }
                };
                if known == expected {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(TopologyError::NotConverged {
                        node: node.name().to_owned(),
                        known,
                        expected,
                        waited: limit,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Applies a YAML stream (policies, namespaces) on every node's agent;
    /// one summary per node.
    pub fn apply(&self, source: &str, yaml: &str) -> Result<Vec<ApplySummary>, TopologyError> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let request = Request::PolicyApply {
                source: source.to_owned(),
                yaml: yaml.to_owned(),
            };
            let answer = node
                .client()
                .call(&request)
                .map_err(|source| TopologyError::Api {
                    node: node.name().to_owned(),
                    request: "policy apply",
                    source,
                })?;
            match answer {
                Response::Applied { summary } => {
                    self.say(|| format!("node {}: applied {source}: {summary:?}", node.name()));
                    out.push(summary);
                }
                Response::Done => out.push(ApplySummary::default()),
                other => {
                    return Err(TopologyError::Unexpected {
                        node: node.name().to_owned(),
                        request: "policy apply",
                        answer: format!("{other:?}"),
                    })
                }
            }
        }
        Ok(out)
    }

    fn pod_netns_suffix(&self, spec: &PodSpec) -> String {
        let plain = format!("{}-{}", spec.namespace, spec.name);
        let full_len = NETNS_PREFIX.len() + self.run_id.len() + 1 + plain.len();
        let clean = plain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        let taken = self
            .nodes
            .iter()
            .any(|n| n.netns().name().ends_with(&format!("-{plain}")))
            || self
                .pods
                .iter()
                .any(|p| p.netns().name().ends_with(&format!("-{plain}")));
        if clean && !taken && full_len <= MAX_NETNS_NAME.min(40) {
            plain
        } else {
            format!("p{:016x}", fnv1a(spec.full_name().as_bytes()))
        }
    }

    /// Adds a pod: its namespace, `CNI ADD` on its node, echo servers on
    /// its ports.
    pub fn add_pod(&mut self, spec: PodSpec) -> Result<&Pod, TopologyError> {
        let full = spec.full_name();
        if self.pods.iter().any(|p| p.full_name() == full) {
            return Err(TopologyError::Duplicate {
                what: "pod",
                name: full,
            });
        }
        let cni_bin = self.cni_bin.clone().ok_or_else(|| TopologyError::NoBinary {
            what: "palisade-cni",
            hint: "give it to the builder, or set PALISADE_BIN_DIR, or build the workspace (`cargo build`) so it is next to this executable".into(),
        })?;
        let node = self.node(&spec.node)?;
        let node_netns = node.netns().clone();
        let agent_socket = node.api_socket().to_owned();
        let suffix = self.pod_netns_suffix(&spec);
        let netns = self.add_netns(&suffix)?;
        let cni_pod = CniPod {
            plugin: cni_bin,
            node_netns,
            agent_socket,
            container_id: netns.name().to_owned(),
            pod_netns: netns.clone(),
            ifname: "eth0".to_owned(),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            service_account: spec
                .service_account
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
        };
        // DEL is due even after a failed ADD (CNI contract).
        self.record(|r| r.cni.push(CniDel(cni_pod.clone())));
        let result = cleanup::creating(|| cni::add(&cni_pod))??;
        self.say(|| format!("pod {full}: {} in netns {}", result.ipv4, netns.name()));
        if !spec.ports.is_empty() {
            self.start_echo(&netns, &spec.ports)?;
        }
        self.pods.push(Pod {
            spec,
            netns,
            ipv4: result.ipv4,
            container_id: cni_pod.container_id,
            cni_result: result.raw,
        });
        let last = self.pods.len() - 1;
        Ok(&self.pods[last])
    }

    /// The pods.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// A pod by `ns/name`.
    pub fn pod(&self, name: &str) -> Result<&Pod, TopologyError> {
        self.pods
            .iter()
            .find(|p| p.full_name() == name)
            .ok_or_else(|| TopologyError::UnknownPod {
                name: name.to_owned(),
            })
    }

    /// Probes `to:port` from inside pod `from` (`ns/name`).
    pub fn probe(
        &self,
        from: &str,
        to: Ipv4Addr,
        port: PortProto,
        timeout: Duration,
    ) -> Result<ProbeOutcome, TopologyError> {
        let pod = self.pod(from)?;
        Ok(probe::probe(pod.netns(), to, port, timeout)?)
    }

    /// Probes pod `to` from pod `from` (both `ns/name`).
    pub fn probe_pod(
        &self,
        from: &str,
        to: &str,
        port: PortProto,
        timeout: Duration,
    ) -> Result<ProbeOutcome, TopologyError> {
        let to = self.pod(to)?.ipv4();
        self.probe(from, to, port, timeout)
    }

    /// Runs probes in parallel ([`PROBE_PARALLELISM`] threads); outcomes in
    /// the order of `jobs`.
    pub fn probe_many(
        &self,
        jobs: &[ProbeJob],
        timeout: Duration,
    ) -> Vec<Result<ProbeOutcome, ProbeError>> {
        probe::probe_many(jobs, timeout, PROBE_PARALLELISM)
    }

    /// Flow events of every node's agent (`kinds` empty: all), oldest first
    /// per node.
    pub fn flows(
        &self,
        kinds: &[FlowKind],
        since_seq: Option<u64>,
    ) -> Result<Vec<FlowRecord>, TopologyError> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let request = Request::Flows {
                follow: false,
                since_seq,
                limit: None,
                kinds: kinds.to_vec(),
            };
            node.client()
                .stream(&request, |r| {
                    if let Response::Flow(f) = r {
                        out.push(*f);
                    }
                    true
                })
                .map_err(|source| TopologyError::Api {
                    node: node.name().to_owned(),
                    request: "flows",
                    source,
                })?;
        }
        Ok(out)
    }

    /// Drop events of every node's agent.
    pub fn drops(&self) -> Result<Vec<FlowRecord>, TopologyError> {
        self.flows(&[FlowKind::Drop], None)
    }

    /// Leaves everything in place (for debugging a failure) and returns the
    /// temp dir. The next run's [`crate::cleanup_stale`] removes it once
    /// this process has exited.
    pub fn keep(self) -> PathBuf {
        self.record(|r| r.kept = true);
        self.dir.clone()
    }

    /// Removes everything now and reports what could not be removed.
    pub fn cleanup(self) -> Result<(), TopologyError> {
        let problems = {
            let mut r = self.res.lock().unwrap_or_else(|e| e.into_inner());
            r.clean()
        };
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TopologyError::Cleanup {
                run_id: self.run_id.clone(),
                problems,
            })
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let problems = {
            let mut r = self.res.lock().unwrap_or_else(|e| e.into_inner());
            r.clean()
        };
        for p in problems {
            eprintln!("palisade-tests: cleanup of run {}: {p}", self.run_id);
        }
    }
}

/// What a node does about a shared identity.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// It serves the node CA: on its own `identity.node_ca_listen`, else on
    /// its underlay address.
    ServeCa(Option<SocketAddr>),
    /// It joins the node CA.
    Join {
        /// The node CA.
        ca: NodeCa,
        /// The trust domain to set: the CA's, when the node's settings
        /// name none.
        trust_domain: Option<String>,
    },
    /// Its settings decide (identity off, or a node CA of their own).
    OwnSettings,
}

/// The role of a node with `settings` (the top-level keys of its agent
/// configuration) in a topology with a shared identity whose node CA is
/// `ca` (`None`: this node is the first and serves it); the error says what
/// is wrong with the settings and what would fix it.
fn shared_identity_role(
    settings: &serde_yaml::Mapping,
    ca: Option<&NodeCa>,
) -> Result<Role, String> {
    let identity = match settings.get("identity") {
        None => None,
        Some(v) => Some(v.as_mapping().ok_or_else(|| {
            format!(
                "its `identity` setting is not a mapping ({v:?}); write `identity: {{key: value}}`"
            )
        })?),
    };
    let get = |key: &str| identity.and_then(|m| m.get(key));
    let enabled = match get("enabled") {
        None => true,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("identity.enabled is {v:?}, not true or false"))?,
    };
    let text = |key: &str| -> Result<Option<&str>, String> {
        get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| format!("identity.{key} is {v:?}, not a string"))
            })
            .transpose()
    };
    let Some(ca) = ca else {
        if !enabled {
            return Err("it is the first node of a topology with a shared identity, so it serves the node CA, but its settings have identity.enabled: false; enable identity on it or add another node first".into());
        }
        if get("node_ca").is_some() {
            return Err("it is the first node of a topology with a shared identity, so it serves the node CA, but its settings make it a client of a node CA (identity.node_ca); drop that setting or build without shared_identity".into());
        }
        let own = text("node_ca_listen")?
            .map(|listen| {
                listen.parse::<SocketAddr>().map_err(|e| {
                    format!("its identity.node_ca_listen {listen:?} is not an address:port: {e}")
                })
            })
            .transpose()?;
        return Ok(Role::ServeCa(own));
    };
    if !enabled || get("node_ca").is_some() || get("node_ca_listen").is_some() {
        return Ok(Role::OwnSettings);
    }
    match text("trust_domain")? {
        None => Ok(Role::Join {
            ca: ca.clone(),
            trust_domain: Some(ca.trust_domain.clone()),
        }),
        Some(td) if td == ca.trust_domain => Ok(Role::Join {
            ca: ca.clone(),
            trust_domain: None,
        }),
        Some(td) => Err(format!(
            "its identity.trust_domain {td} is not the one of the node CA on node {} ({}): nodes that share an identity have one trust domain; drop the setting or make it the same",
            ca.node, ca.trust_domain
        )),
    }
}

/// The node CA that `node`, just started to serve it on `address`, runs.
fn node_ca_serving(node: &Node, address: SocketAddr) -> Result<NodeCa, TopologyError> {
    let fail = |what: String| TopologyError::SharedIdentity {
        node: node.name().to_owned(),
        what,
    };
    match node.client().call(&Request::IdentityCaShow) {
        Ok(Response::IdentityCa(status)) if status.node_ca.is_some() => Ok(NodeCa {
            node: node.name().to_owned(),
            address,
            trust_domain: status.trust_domain,
        }),
        Ok(Response::IdentityCa(_)) => Err(fail(format!(
            "it was configured to serve the node CA on {address} but its agent says it serves none; last lines of {}:\n{}",
            node.agent_log().display(),
            node.log_tail(20)
        ))),
        Ok(other) => Err(fail(format!(
            "identity ca show: unexpected answer {other:?}"
        ))),
        Err(e) => Err(fail(format!(
            "identity ca show failed: {e} (is identity enabled on the node that serves the node CA?)"
        ))),
    }
}

/// Writes a file only its owner can read (a secret).
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(data)
}

/// The `cluster` section of an agent's configuration.
fn cluster_config(endpoints: &[String], node_address: Ipv4Addr) -> serde_yaml::Value {
    let mut etcd = serde_yaml::Mapping::new();
    etcd.insert(
        "endpoints".into(),
        serde_yaml::Value::Sequence(endpoints.iter().map(|e| e.as_str().into()).collect()),
    );
    let mut cluster = serde_yaml::Mapping::new();
    cluster.insert("etcd".into(), serde_yaml::Value::Mapping(etcd));
    cluster.insert("node_address".into(), node_address.to_string().into());
    cluster.insert("lease_ttl_secs".into(), CLUSTER_LEASE_TTL_SECS.into());
    cluster.insert(
        "identity_gc_grace_secs".into(),
        CLUSTER_IDENTITY_GC_GRACE_SECS.into(),
    );
    serde_yaml::Value::Mapping(cluster)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn namespace_documents() {
        let yaml = namespaces_yaml(&[
            ("x".into(), [("ns".to_owned(), "x".to_owned())].into()),
            ("y".into(), BTreeMap::new()),
        ]);
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["kind"], "Namespace");
        assert_eq!(docs[0]["metadata"]["labels"]["ns"], "x");
        assert_eq!(docs[1]["metadata"]["name"], "y");
    }

    #[test]
    fn cluster_section() {
        let v = cluster_config(
            &["http://10.199.0.254:2379".to_owned()],
            Ipv4Addr::new(10, 199, 0, 2),
        );
        let want: serde_yaml::Value = serde_yaml::from_str(
            "etcd:\n  endpoints: [\"http://10.199.0.254:2379\"]\nnode_address: 10.199.0.2\nlease_ttl_secs: 5\nidentity_gc_grace_secs: 10\n",
        )
        .unwrap();
        assert_eq!(v, want);
    }

    #[test]
    fn shared_identity_roles() {
        let settings = |yaml: &str| -> serde_yaml::Mapping { serde_yaml::from_str(yaml).unwrap() };
        let ca = NodeCa {
            node: "n1".into(),
            address: "10.199.0.1:8444".parse().unwrap(),
            trust_domain: "palisade.local".into(),
        };
        let role = |yaml: &str, ca: Option<&NodeCa>| shared_identity_role(&settings(yaml), ca);
        // The first node serves the CA, on its own listen address if set.
        assert_eq!(role("{}", None), Ok(Role::ServeCa(None)));
        assert_eq!(
            role("identity: {trust_domain: example.org}", None),
            Ok(Role::ServeCa(None))
        );
        assert_eq!(
            role("identity: {node_ca_listen: \"0.0.0.0:9000\"}", None),
            Ok(Role::ServeCa(Some("0.0.0.0:9000".parse().unwrap())))
        );
        for (yaml, want) in [
            ("identity: {enabled: false}", "identity.enabled: false"),
            (
                "identity: {node_ca: {address: \"1.2.3.4:1\"}}",
                "identity.node_ca",
            ),
            ("identity: {node_ca_listen: nowhere}", "not an address:port"),
            ("identity: 3", "not a mapping"),
            ("identity: {enabled: maybe}", "identity.enabled"),
        ] {
            let e = role(yaml, None).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        // Later nodes join, taking the CA's trust domain unless they name
        // the same one.
        assert_eq!(
            role("{}", Some(&ca)),
            Ok(Role::Join {
                ca: ca.clone(),
                trust_domain: Some("palisade.local".into())
            })
        );
        assert_eq!(
            role(
                "identity: {trust_domain: palisade.local, svid_ttl_secs: 600}",
                Some(&ca)
            ),
            Ok(Role::Join {
                ca: ca.clone(),
                trust_domain: None
            })
        );
        let e = role("identity: {trust_domain: example.org}", Some(&ca)).unwrap_err();
        assert!(
            e.contains("example.org") && e.contains("palisade.local") && e.contains("n1"),
            "{e}"
        );
        // A node's own identity arrangements are left alone.
        for yaml in [
            "identity: {enabled: false}",
            "identity: {node_ca: {address: \"1.2.3.4:1\"}}",
            "identity: {node_ca_listen: \"0.0.0.0:9000\"}",
        ] {
            assert_eq!(role(yaml, Some(&ca)), Ok(Role::OwnSettings), "{yaml}");
        }
    }

    use serde::Deserialize;
}
