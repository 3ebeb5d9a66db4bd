//! A topology: nodes (namespace + agent), pods (namespace + CNI + echo
//! servers), and the record that removes all of it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_api::{ApplySummary, ClientError, FlowKind, FlowRecord, Request, Response};

use crate::cleanup::{self, Resources, BPF_FS, DIR_PREFIX, NETNS_PREFIX};
use crate::cni::{self, CniDel, CniError, CniPod};
use crate::echo::{EchoError, EchoServer};
use crate::netns::{NetNs, NetnsError, MAX_NETNS_NAME};
use crate::node::{Node, NodeError, NodePaths};
use crate::probe::{self, PortProto, ProbeError, ProbeJob, ProbeOutcome};

/// Threads used by [`Topology::probe_many`].
pub const PROBE_PARALLELISM: usize = 48;

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
    /// The name is taken.
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
        topo.agent_bin = self.agent_bin.or_else(|| locate_binary("palisade-agent"));
        topo.cni_bin = self.cni_bin.or_else(|| locate_binary("palisade-cni"));
        let nodes = if self.nodes.is_empty() {
            vec!["n1".to_owned()]
        } else {
            self.nodes
        };
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
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    verbose: bool,
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
            nodes: Vec::new(),
            pods: Vec::new(),
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
        let index = self.nodes.len();
        let netns = self.add_netns(name)?;
        let dir = self.dir.join(name);
        let paths = NodePaths {
            config: dir.join("agent.yaml"),
            socket: dir.join("agent.sock"),
            bpf_root: PathBuf::from(BPF_FS).join(format!("{DIR_PREFIX}{}-{name}", self.run_id)),
            log: dir.join("agent.log"),
            dir: dir.clone(),
        };
        self.record(|r| r.dirs.push(paths.bpf_root.clone()));
        std::fs::create_dir_all(dir.join("state")).map_err(|source| TopologyError::Io {
            path: dir.join("state"),
            source,
        })?;
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
        set("pod_cidr", format!("10.200.{}.0/24", index % 256).into());
        set("flow_log", path_value(&dir.join("flows.jsonl")));
        // Runtime enforcement is host-wide; tests that need it turn it on
        // with `agent_setting("runtime_enforcement", true)`.
        set("runtime_enforcement", false.into());
        set("runtime_events_log", path_value(&dir.join("events.jsonl")));
        for (k, v) in &self.agent_settings {
            config.insert(k.clone(), v.clone());
        }
        let slot = Arc::new(Mutex::new(None));
        self.record(|r| r.agents.push(Arc::clone(&slot)));
        let node = Node::new(name, netns, &agent_bin, paths, &config, slot)?;
        node.start_agent()?;
        self.say(|| {
            format!(
                "node {name}: agent pid {} answering on {}",
                node.agent_pid().unwrap_or(0),
                node.api_socket().display()
            )
        });
        self.nodes.push(node);
        let last = self.nodes.len() - 1;
        Ok(&self.nodes[last])
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

    use serde::Deserialize;
}
