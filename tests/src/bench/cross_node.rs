//! `palisade-bench cross-node`: TCP_RR and TCP_CRR between a client pod on
//! node n1 and a server pod on node n2, through palisade's overlay (VXLAN
//! device `palisade_vxlan`, programs on both endpoints and on the overlay
//! device, a policy rule admitting the client, `--rules` filler rules as in
//! the datapath benchmark) and through plain kernel routing without any
//! agent (baseline), alternated in one run.
//!
//! Both modes use the SAME namespaces, veths, underlay bridge and sockets'
//! endpoints. Baseline: the agents are stopped (so nothing re-attaches),
//! every TCX link pin under `<bpf root>/links/` is removed (endpoints' and
//! `palisade_vxlan-*`), and each node's route to the other node's pod CIDR
//! becomes `via <other node's underlay address> dev ul0`: no encapsulation.
//! Palisade: the overlay routes come back (`dev palisade_vxlan src <own
//! underlay address>`) and the agents are started again; they re-attach from
//! their state. The measurement code (client, echo server, pinning, rounds,
//! medians, counter checks) is the datapath benchmark's.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use palisade_api::{ClusterStatus, NodeInfo, Request, Response};
use palisade_tests::topology::UNDERLAY_IFNAME;
use palisade_tests::{Node, Pod, PodSpec, PortProto, Topology};
use serde_json::json;

use super::datapath::{
    bpf_run_stats, bpf_stats_report, expect_attachments, expect_dropped, extend_json,
    forwarded_by_observation, measure_rounds, our_progs, policy_yaml, programs_json, programs_note,
    results_json, rounds_table, summary_table, unpin_links, BenchServer, Mode, Modes, PORT,
    RR_GOAL,
};
use super::{agent_cpu_secs, say, Report};

/// The agent's overlay device (`enforcer/src/overlay.rs`).
const OVERLAY_IFNAME: &str = "palisade_vxlan";
/// TCX attachments per node in palisade mode: one pod (2 hooks) and the
/// overlay device (2 hooks).
const ATTACHMENTS_PER_NODE: usize = 4;
/// Bound for the cluster to settle after the agents start.
const SETTLE: Duration = Duration::from_secs(30);
/// The observation points whose `forwarded` counters must move on every
/// node in palisade mode (and on none in baseline mode).
const OBSERVATIONS: [&str; 4] = ["from-endpoint", "to-endpoint", "to-overlay", "from-overlay"];

/// Options of `palisade-bench cross-node`: the datapath benchmark's
/// (`rules` filler rules select the server; 0 by default here).
pub use super::datapath::Options;

/// One node and the routes it needs to the other nodes' pods.
struct NodeRoutes<'a> {
    node: &'a Node,
    /// Its own underlay address.
    address: Ipv4Addr,
    /// Every other node's pod CIDR and underlay address.
    others: Vec<(String, Ipv4Addr)>,
}

/// The two nodes, switched between palisade and plain routing.
struct Cluster<'a> {
    topo: &'a Topology,
    nodes: Vec<NodeRoutes<'a>>,
    client: &'a Pod,
    server: Ipv4Addr,
    /// The route lines seen in each mode (for the report).
    routes: BTreeMap<&'static str, Vec<String>>,
}

impl Cluster<'_> {
    /// The one route to `cidr` in the node's namespace.
    fn route(node: &Node, cidr: &str) -> anyhow::Result<String> {
        let out = node.netns().ip(&["route", "show", "exact", cidr])?;
        let lines: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        match lines.as_slice() {
            [one] => Ok((*one).to_owned()),
            _ => bail!("node {}: expected one route to {cidr}, `ip route show exact {cidr}` gives {lines:?}", node.name()),
        }
    }

    /// Checks that every node routes the other nodes' pods as `mode` wants.
    fn check_routes(&mut self, mode: Mode) -> anyhow::Result<()> {
        let mut seen = Vec::new();
        for n in &self.nodes {
            for (cidr, via) in &n.others {
                let line = Self::route(n.node, cidr)?;
                let ok = match mode {
                    Mode::Palisade => {
                        line.contains(&format!("dev {OVERLAY_IFNAME} "))
                            && line.contains(&format!("src {}", n.address))
                            && !line.contains(" via ")
                    }
                    Mode::Baseline => line.contains(&format!("via {via} dev {UNDERLAY_IFNAME}")),
                };
                if !ok {
                    bail!(
                        "node {}, {} mode: unexpected route {line:?}",
                        n.node.name(),
                        mode.name()
                    );
                }
                seen.push(format!("{}: {line}", n.node.name()));
            }
        }
        self.routes.entry(mode.name()).or_insert(seen);
        Ok(())
    }

    /// Waits until every agent has listed the cluster from etcd since it
    /// started, written what it owns, and knows both nodes and both pods;
    /// then until the client reaches the server's allowed port (the server's
    /// node has learnt the client's identity). Bounded by [`SETTLE`].
    fn settle(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETTLE;
        for n in &self.nodes {
            loop {
                let s = cluster_status(n.node)?;
                if s.connected
                    && s.resyncs >= 1
                    && s.pending_writes == 0
                    && s.nodes == self.nodes.len()
                    && s.endpoints == self.topo.pods().len()
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "node {} did not settle within {} s: {s:?}",
                        n.node.name(),
                        SETTLE.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.topo.wait_converged(SETTLE)?;
        loop {
            let probe = palisade_tests::probe::probe(
                self.client.netns(),
                self.server,
                PortProto::tcp(PORT),
                Duration::from_millis(500),
            )?;
            if probe.completed {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the client does not reach the server's port {PORT} through palisade: {probe:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Modes for Cluster<'_> {
    fn switch(&mut self, to: Mode) -> anyhow::Result<()> {
        match to {
            Mode::Baseline => {
                for n in &self.nodes {
                    n.node.stop_agent(false)?;
                }
                for n in &self.nodes {
                    unpin_links(n.node)?;
                    for (cidr, via) in &n.others {
                        let via = via.to_string();
                        n.node.netns().ip(&[
                            "route",
                            "replace",
                            cidr,
                            "via",
                            &via,
                            "dev",
                            UNDERLAY_IFNAME,
                        ])?;
                    }
                }
            }
            Mode::Palisade => {
                for n in &self.nodes {
                    let src = n.address.to_string();
                    for (cidr, _) in &n.others {
                        n.node.netns().ip(&[
                            "route",
                            "replace",
                            cidr,
                            "dev",
                            OVERLAY_IFNAME,
                            "src",
                            &src,
                        ])?;
                    }
                }
                for n in &self.nodes {
                    n.node.start_agent()?;
                }
                for n in &self.nodes {
                    expect_attachments(n.node, ATTACHMENTS_PER_NODE, "after the agent start")?;
                }
                self.settle()?;
            }
        }
        self.check_routes(to)
    }

    fn forwarded(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let counts = forwarded_by_observation(n.node)?;
            for obs in OBSERVATIONS {
                let c = counts.get(obs).copied().unwrap_or(0);
                out.push((format!("{} {obs}", n.node.name()), c));
            }
        }
        Ok(out)
    }

    fn agent_cpu_secs(&self) -> f64 {
        self.nodes.iter().map(|n| agent_cpu_secs(n.node)).sum()
    }
}

/// One request to a node's agent; `pick` takes the expected answer apart
/// (and gives back any other).
fn ask<T>(
    node: &Node,
    request: &Request,
    pick: impl FnOnce(Response) -> Result<T, Response>,
) -> anyhow::Result<T> {
    let answer = node
        .client()
        .call(request)
        .with_context(|| format!("node {}: {request:?}", node.name()))?;
    pick(answer).map_err(|other| {
        anyhow::anyhow!(
            "node {}: {request:?}: unexpected answer {other:?}",
            node.name()
        )
    })
}

fn cluster_status(node: &Node) -> anyhow::Result<ClusterStatus> {
    ask(node, &Request::ClusterStatus, |r| match r {
        Response::Cluster(s) => Ok(*s),
        other => Err(other),
    })
}

/// Runs the benchmark.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let ns_labels = [("ns".to_owned(), "bench".to_owned())].into();
    let topo = Topology::builder()
        .node("n1")
        .node("n2")
        .namespace("bench", ns_labels)
        .pod(PodSpec::new("bench", "client").on("n1").label("app", "client"))
        .pod(PodSpec::new("bench", "server").on("n2").label("app", "server"))
        .verbose(opts.verbose)
        .build()
        .context("building the topology (nodes n1 and n2 on an underlay with etcd, pods bench/client on n1 and bench/server on n2)")?;
    topo.wait_converged(SETTLE)?;
    let client = topo.pod("bench/client")?;
    let server = topo.pod("bench/server")?;

    // Who routes what: every node's pod CIDR and underlay address, as the
    // cluster store has them.
    let infos: Vec<NodeInfo> = ask(topo.node("n1")?, &Request::NodeList, |r| match r {
        Response::Nodes { nodes } => Ok(nodes),
        other => Err(other),
    })?;
    let mut nodes = Vec::new();
    for node in topo.nodes() {
        let address = node
            .underlay_address()
            .with_context(|| format!("node {} has no underlay address", node.name()))?;
        let mut others = Vec::new();
        for info in infos.iter().filter(|i| i.name != node.name()) {
            let via: Ipv4Addr = info.address.parse().with_context(|| {
                format!("node {}'s underlay address {:?}", info.name, info.address)
            })?;
            others.push((info.pod_cidr.clone(), via));
        }
        if others.len() + 1 != topo.nodes().len() {
            bail!("node n1 lists {infos:?}, not every node");
        }
        nodes.push(NodeRoutes {
            node,
            address,
            others,
        });
    }

    let summaries = topo.apply("bench-cross-node", &policy_yaml(opts.rules))?;
    let n2 = topo.node("n2")?;
    let server_ep = super::endpoints(n2)?
        .into_iter()
        .find(|e| e.spec.pod_name == "server")
        .context("n2's agent does not list the server endpoint")?;
    if !server_ep.ingress_enforced || server_ep.policy_entries <= opts.rules {
        bail!(
            "the policy does not select the server: ingress enforced {}, {} policy entries",
            server_ep.ingress_enforced,
            server_ep.policy_entries
        );
    }
    say(format!(
        "policy applied on {} nodes; server endpoint {} on n2: {} policy entries, ingress enforced",
        summaries.len(),
        server_ep.ep_id,
        server_ep.policy_entries
    ));

    let _srv = BenchServer::start(server.netns(), PORT, opts.server_cpu())?;
    let dst = SocketAddrV4::new(server.ipv4(), PORT);
    let mut cluster = Cluster {
        topo: &topo,
        nodes,
        client,
        server: server.ipv4(),
        routes: BTreeMap::new(),
    };
    cluster.settle()?;
    expect_dropped(client, server.ipv4(), PORT + 1)?;
    for n in &cluster.nodes {
        expect_attachments(
            n.node,
            ATTACHMENTS_PER_NODE,
            "(1 endpoint x 2 hooks + palisade_vxlan x 2)",
        )?;
    }
    cluster.check_routes(Mode::Palisade)?;
    let device = topo
        .node("n1")?
        .netns()
        .ip(&["-d", "link", "show", OVERLAY_IFNAME])?;
    say(format!("n1: {}", device.trim().replace('\n', " ")));

    let measure = opts.measure();
    let results = measure_rounds(&measure, client.netns(), dst, &mut cluster)?;
    let stats = if opts.bpf_stats {
        let nodes: Vec<&Node> = cluster.nodes.iter().map(|n| n.node).collect();
        Some(bpf_run_stats(&nodes, client.netns(), dst, &measure)?)
    } else {
        None
    };
    // measure_rounds ends in palisade mode: policy still enforced?
    expect_dropped(client, server.ipv4(), PORT + 1)?;
    let progs = our_progs(topo.node("n1")?)?;

    let t = summary_table(
        format!(
            "cross-node: {} rounds x {} s per test, client on n1 -> server on n2, palisade (VXLAN overlay, {} policy entries on the server endpoint) vs plain routing over the underlay, threads {} (medians)",
            opts.rounds,
            opts.seconds,
            server_ep.policy_entries,
            opts.pinning()
        ),
        &results,
        [Some(RR_GOAL), None],
    );
    let mut per_round = rounds_table(
        "cross-node: every measurement, in run order (agent CPU: both agents; 0 in baseline, they are stopped)",
        &results,
    );
    for (mode, lines) in &cluster.routes {
        per_round
            .notes
            .push(format!("routes in {mode} mode: {}", lines.join("; ")));
    }
    per_round
        .notes
        .push(format!("n1's programs: {}", programs_note(&progs)));

    let mut json = json!({
        "benchmark": "cross-node",
        "options": opts.to_json(),
        "server_policy_entries": server_ep.policy_entries,
        "routes": cluster.routes,
        "bpf_stats": stats.as_ref().map(|all| bpf_stats_report(all, &measure, &mut per_round.notes)),
        "overlay_device": device.trim(),
        "programs": programs_json(&progs),
    });
    extend_json(&mut json, results_json(&results, [Some(RR_GOAL), None]));
    drop(cluster);
    topo.cleanup()?;
    Ok(Report {
        tables: vec![t, per_round],
        json,
    })
}
