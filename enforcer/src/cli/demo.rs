//! `palisade demo`: one node, three pods, one policy, enforced in eBPF and
//! shown with the flow log. Everything is real: network namespaces, the
//! palisade-cni plugin, a palisade-agent, TCP connections. Everything it
//! creates is removed at the end (also on Ctrl-C).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use palisade_api::{FlowKind, FlowRecord, Request, Response};
use palisade_tests::{locate_binary, PodSpec, PortProto, ProbeJob, Topology};

use super::output::flow_line;
use super::CliError;

const NS: &str = "shop";

const POLICY: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend-from-frontend, namespace: shop}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: frontend}}}]
      ports: [{protocol: TCP, port: 8080}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db-from-backend, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: backend}}]
      toPorts: [{ports: [{port: \"5432\", protocol: TCP}]}]
      authentication: {mode: required}
  ingressDeny:
    - fromEndpoints: [{matchLabels: {app: frontend}}]
";

/// (from, to, port, allowed once the policy is in force)
const CONNECTIONS: [(&str, &str, u16, bool); 5] = [
    ("frontend", "backend", 8080, true),
    ("frontend", "db", 5432, false),
    ("backend", "db", 5432, true),
    ("db", "backend", 8080, false),
    ("backend", "frontend", 80, true),
];

/// Options of `palisade demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the demo running after the last step (explore it with the
    /// printed commands), until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// The agent binary [default: next to this program].
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<PathBuf>,
    /// The CNI plugin binary [default: next to this program].
    #[arg(long, value_name = "PATH")]
    pub cni_bin: Option<PathBuf>,
}

fn demo_error(e: impl std::fmt::Display) -> CliError {
    CliError::Scenario {
        message: format!("demo: {e}"),
    }
}

/// Runs the demo; returns whether every connection behaved as expected.
pub fn run(args: &DemoArgs, out: &mut dyn Write) -> Result<bool, CliError> {
    let w = |out: &mut dyn Write, s: String| {
        writeln!(out, "{s}").map_err(|source| CliError::Write { source })
    };
    let bin = |given: &Option<PathBuf>, name: &str| {
        given
            .clone()
            .or_else(|| locate_binary(name))
            .unwrap_or_else(|| PathBuf::from(name))
    };
    w(
        out,
        "palisade demo: one node, three pods, a policy enforced in eBPF.\n".into(),
    )?;

    w(
        out,
        "[1/5] Starting a node (a network namespace) with palisade-agent".into(),
    )?;
    let mut builder = Topology::builder()
        .agent_bin(bin(&args.agent_bin, "palisade-agent"))
        .cni_bin(bin(&args.cni_bin, "palisade-cni"))
        .node("n1")
        .namespace(NS, BTreeMap::from([("team".to_owned(), "shop".to_owned())]));
    for (name, port) in [("frontend", 80), ("backend", 8080), ("db", 5432)] {
        builder = builder.pod(
            PodSpec::new(NS, name)
                .on("n1")
                .label("app", name)
                .ports([PortProto::tcp(port)]),
        );
    }
    let topo = builder.build().map_err(demo_error)?;
    let node = topo.node("n1").map_err(demo_error)?;
    w(
        out,
        format!(
            "      node netns {}, bpf root {}, API {}\n",
            node.netns().name(),
            node.bpf_root().display(),
            node.api_socket().display()
        ),
    )?;

    w(
        out,
        "[2/5] Pods created through the palisade-cni plugin:".into(),
    )?;
    if let Ok(Response::Endpoints { endpoints }) = node.client().call(&Request::EndpointList) {
        for ep in endpoints {
            w(
                out,
                format!(
                    "      {:<14} {:<12} endpoint {:<3} identity {:<5} veth {}",
                    format!("{}/{}", ep.spec.pod_namespace, ep.spec.pod_name),
                    ep.spec.ipv4,
                    ep.ep_id,
                    ep.identity,
                    ep.spec.host_ifname
                ),
            )?;
        }
    }

    w(
        out,
        "\n[3/5] Before any policy every connection is allowed:".into(),
    )?;
    probe_all(&topo, out, false)?;

    w(out, "\n[4/5] Applying the policy:".into())?;
    for line in POLICY.lines() {
        w(out, format!("      | {line}"))?;
    }
    let before = topo
        .flows(&[], None)
        .map_err(demo_error)?
        .last()
        .map_or(0, |f| f.seq);
    let summaries = topo.apply("demo-policy.yaml", POLICY).map_err(demo_error)?;
    for s in summaries {
        w(
            out,
            format!(
                "      -> {} policy-map entries written, {} removed",
                s.entries_upserted, s.entries_deleted
            ),
        )?;
    }

    w(out, "\n[5/5] With the policy in force:".into())?;
    let ok = probe_all(&topo, out, true)?;

    w(
        out,
        "\nFlow log since the policy was applied (`palisade flows`):".into(),
    )?;
    // Drops are reported asynchronously; give the ring buffer a moment.
    std::thread::sleep(Duration::from_millis(300));
    let flows: Vec<FlowRecord> = topo
        .flows(&[FlowKind::Flow, FlowKind::Drop], Some(before))
        .map_err(demo_error)?;
    for f in dedup(&flows) {
        w(out, format!("  {}", flow_line(f)))?;
    }
    if let Ok(Response::Status(s)) = node.client().call(&Request::Status) {
        let counters: Vec<String> = s
            .verdicts
            .iter()
            .map(|v| format!("{} {} {}", v.reason, v.observation, v.packets))
            .collect();
        w(
            out,
            format!(
                "\nDatapath counters (`palisade status`): {}",
                counters.join(", ")
            ),
        )?;
    }

    if let Ok(Response::Auth(report)) = node.client().call(&Request::AuthList) {
        w(
            out,
            "\nMutual authentication (`palisade auth list`): the agents proved, with mutual TLS and\nSPIFFE SVIDs, that they hold both identities before backend -> db could connect:".into(),
        )?;
        for line in super::auth::render(&report, std::time::SystemTime::now()).lines() {
            w(out, format!("  {line}"))?;
        }
    }

    if args.keep {
        w(
            out,
            format!(
                "\nThe demo keeps running. Try:\n  palisade --socket {sock} endpoint list\n  palisade --socket {sock} flows --follow\n  palisade --socket {sock} policy list\n  palisade --socket {sock} auth list\nPress Ctrl-C to remove everything.",
                sock = node.api_socket().display()
            ),
        )?;
        out.flush().map_err(|source| CliError::Write { source })?;
        loop {
            std::thread::park();
        }
    }
    w(
        out,
        "\nRemoving the pods, the agent and the node ...".into(),
    )?;
    topo.cleanup().map_err(demo_error)?;
    w(
        out,
        if ok {
            "done: every connection behaved as the policy says.".to_owned()
        } else {
            "done, but some connection did NOT behave as expected (see above).".to_owned()
        },
    )?;
    Ok(ok)
}

/// Probes every demo connection; prints one line each; with `policy`,
/// compares against the policy's expectation.
fn probe_all(topo: &Topology, out: &mut dyn Write, policy: bool) -> Result<bool, CliError> {
    let mut jobs = Vec::new();
    for (from, to, port, _) in CONNECTIONS {
        let from = topo.pod(&format!("{NS}/{from}")).map_err(demo_error)?;
        let to = topo.pod(&format!("{NS}/{to}")).map_err(demo_error)?;
        jobs.push(ProbeJob {
            from: from.netns().clone(),
            dst: to.ipv4(),
            port: PortProto::tcp(port),
        });
    }
    let outcomes = topo.probe_many(&jobs, Duration::from_secs(1));
    let mut all_ok = true;
    for ((from, to, port, allowed), outcome) in CONNECTIONS.iter().zip(outcomes) {
        let completed = outcome.as_ref().is_ok_and(|o| o.completed);
        let expected = !policy || *allowed;
        all_ok &= completed == expected;
        let verdict = if completed { "allowed" } else { "DENIED " };
        let note = match (policy, completed == expected) {
            (false, _) => String::new(),
            (true, true) => "  (as the policy says)".to_owned(),
            (true, false) => "  (UNEXPECTED)".to_owned(),
        };
        writeln!(
            out,
            "      {from:>8} -> {to:<8} {port:>5}/tcp  {verdict}{note}"
        )
        .map_err(|source| CliError::Write { source })?;
    }
    Ok(all_ok)
}

/// One line per distinct (kind, src, dst, port, reason): a TCP SYN that is
/// dropped is retransmitted, which would repeat the same drop.
fn dedup(flows: &[FlowRecord]) -> Vec<&FlowRecord> {
    let mut seen = std::collections::BTreeSet::new();
    flows
        .iter()
        .filter(|f| {
            seen.insert((
                format!("{:?}", f.kind),
                f.src.ip,
                f.dst.ip,
                f.dst.port,
                f.reason.clone(),
                f.direction.clone(),
            ))
        })
        .collect()
}
