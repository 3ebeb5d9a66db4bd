//! `palisade-bench datapath`: TCP_RR and TCP_CRR between two pods on one
//! node, with palisade's programs attached (1,000+ policy rules selecting
//! the server) and without any program (baseline), alternated in one run.
//!
//! Fairness: both modes use the SAME namespaces, veths, routes, neighbour
//! entries and sockets' endpoints. The baseline is made by removing the TCX
//! link pins under `<bpf root>/links/` (nothing else holds the links, so the
//! kernel detaches the programs; checked by querying the TCX programs of
//! every interface of the node namespace, and by the programs' `forwarded`
//! counters not moving). The programs are attached again by restarting the
//! agent, which restores its endpoints (and policy) from its state. The
//! programs return `TC_ACT_OK` (no redirect), so the kernel path is the same
//! in both modes: the ratio is the cost of the two TC hooks plus the maps
//! they use.
//!
//! The client, the echo server, the interleaved rounds and their tables are
//! shared with `cross-node` ([`measure_rounds`] with a [`Modes`] of its own).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aya::programs::{SchedClassifier, TcAttachType};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use palisade_bpf::abi::{metrics_index, observation_name, MetricsValue, Reason, OBS_MAX};
use palisade_tests::netns::NetnsError;
use palisade_tests::{NetNs, Node, PodSpec, Topology};
use serde_json::json;
use socket2::{Domain, Protocol, Socket, Type};

use super::{agent_cpu_secs, f, median, percentile, say, Report, Table};

/// The benchmark's server port (the one rule that allows the client).
pub const PORT: u16 = 5201;
/// Bound for every socket operation: a stuck peer ends the run, not hangs it.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Goals of the brief: palisade / baseline.
pub(super) const RR_GOAL: f64 = 0.90;
const CRR_GOAL: f64 = 0.85;

/// Options of `palisade-bench datapath` and `cross-node`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds per measurement.
    pub seconds: f64,
    /// Filler policy rules selecting the server (besides the one that
    /// allows the client).
    pub rules: usize,
    /// Rounds (each measures both modes).
    pub rounds: usize,
    /// Untimed warm-up before each measurement.
    pub warmup: Duration,
    /// Pin client and server threads to CPUs 0 and 1.
    pub pin: bool,
    /// Pin both to CPU 0 instead (no cross-CPU wake-ups: CPU-bound).
    pub same_cpu: bool,
    /// After the rounds, one more palisade TCP_RR run with the kernel's BPF
    /// run-time statistics on (`kernel.bpf_stats_enabled`, restored after):
    /// the programs' own cost per run.
    pub bpf_stats: bool,
    /// Harness progress on stderr.
    pub verbose: bool,
}

impl Options {
    /// How the rounds measure: the client thread on CPU 0 when pinned.
    pub(super) fn measure(&self) -> Measure {
        Measure {
            seconds: self.seconds,
            warmup: self.warmup,
            rounds: self.rounds,
            client_cpu: self.pin.then_some(0),
        }
    }

    /// The CPU of the echo server's thread: 1, or 0 with `same_cpu`.
    pub(super) fn server_cpu(&self) -> Option<usize> {
        self.pin.then_some(if self.same_cpu { 0 } else { 1 })
    }

    /// How the threads are pinned, for the tables.
    pub(super) fn pinning(&self) -> &'static str {
        match (self.pin, self.same_cpu) {
            (false, _) => "not pinned",
            (true, false) => "pinned to CPUs 0/1",
            (true, true) => "both pinned to CPU 0",
        }
    }

    /// The options as JSON.
    pub(super) fn to_json(&self) -> serde_json::Value {
        json!({"seconds": self.seconds, "rules": self.rules, "rounds": self.rounds,
               "warmup_s": self.warmup.as_secs_f64(), "pinned": self.pin, "same_cpu": self.same_cpu})
    }
}

/// Which datapath carries a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// The same topology without palisade's programs.
    Baseline,
    /// palisade's programs attached, policy in force.
    Palisade,
}

impl Mode {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Palisade => "palisade",
        }
    }
}

/// How a benchmark makes its two modes and tells what is in effect.
pub(super) trait Modes {
    /// Puts `to` in effect and checks that it is.
    fn switch(&mut self, to: Mode) -> anyhow::Result<()>;
    /// `forwarded` packet counters of the programs, each named; a counter
    /// that does not exist yet counts 0. Every one must move in palisade
    /// mode and none in baseline mode.
    fn forwarded(&self) -> anyhow::Result<Vec<(String, u64)>>;
    /// CPU seconds the agents have used so far.
    fn agent_cpu_secs(&self) -> f64;
}

/// How the rounds measure.
#[derive(Debug, Clone)]
pub(super) struct Measure {
    /// Seconds per measurement.
    pub(super) seconds: f64,
    /// Untimed warm-up before each measurement.
    pub(super) warmup: Duration,
    /// Rounds (each measures both modes).
    pub(super) rounds: usize,
    /// CPU the client thread is pinned to.
    pub(super) client_cpu: Option<usize>,
}

/// One timed loop.
#[derive(Debug, Clone, Default)]
pub(super) struct Sample {
    /// Transactions (RR) or connections (CRR) per second.
    pub(super) rate: f64,
    /// Completed operations.
    pub(super) count: usize,
    /// Failed operations (CRR only: connect/read errors).
    pub(super) errors: usize,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    /// CPUs' worth of time the agent processes used meanwhile (0.05 = 5 %
    /// of one CPU).
    pub(super) agent_cpu: f64,
}

impl Sample {
    pub(super) fn to_json(&self) -> serde_json::Value {
        json!({"rate": self.rate, "count": self.count, "errors": self.errors,
               "p50_us": self.p50_us, "p99_us": self.p99_us,
               "agent_cpu": self.agent_cpu})
    }
}

fn sample(lat_ns: &mut [u32], errors: usize, elapsed: Duration) -> Sample {
    lat_ns.sort_unstable();
    Sample {
        rate: lat_ns.len() as f64 / elapsed.as_secs_f64(),
        count: lat_ns.len(),
        errors,
        p50_us: f64::from(percentile(lat_ns, 50.0)) / 1e3,
        p99_us: f64::from(percentile(lat_ns, 99.0)) / 1e3,
        agent_cpu: 0.0,
    }
}

/// One measurement of both tests in one mode.
#[derive(Debug, Clone)]
pub(super) struct Run {
    round: usize,
    mode: Mode,
    rr: Sample,
    crr: Sample,
    /// How much each `forwarded` counter moved meanwhile.
    forwarded: Vec<(String, u64)>,
}

impl Run {
    fn packets_seen(&self) -> u64 {
        self.forwarded.iter().map(|(_, n)| n).sum()
    }
}

type Metric = fn(&Run) -> f64;
fn rr_rate(r: &Run) -> f64 {
    r.rr.rate
}
fn rr_p50(r: &Run) -> f64 {
    r.rr.p50_us
}
fn rr_p99(r: &Run) -> f64 {
    r.rr.p99_us
}
fn crr_rate(r: &Run) -> f64 {
    r.crr.rate
}
fn crr_p50(r: &Run) -> f64 {
    r.crr.p50_us
}
fn crr_p99(r: &Run) -> f64 {
    r.crr.p99_us
}

/// Median of `which` over the runs in `mode`.
fn med(results: &[Run], mode: Mode, which: Metric) -> f64 {
    let v: Vec<f64> = results
        .iter()
        .filter(|r| r.mode == mode)
        .map(which)
        .collect();
    median(&v)
}

/// The node of the datapath benchmark: baseline = link pins removed (the
/// agent keeps running), palisade = the agent restarted.
struct OneNode<'a>(&'a Node);

impl Modes for OneNode<'_> {
    fn switch(&mut self, to: Mode) -> anyhow::Result<()> {
        match to {
            Mode::Baseline => unpin_links(self.0),
            Mode::Palisade => {
                self.0.restart_agent(false)?;
                expect_attachments(self.0, 4, "after the agent restart")
            }
        }
    }

    fn forwarded(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let counts = forwarded_by_observation(self.0)?;
        Ok(["from-endpoint", "to-endpoint"]
            .into_iter()
            .map(|obs| (obs.to_owned(), counts.get(obs).copied().unwrap_or(0)))
            .collect())
    }

    fn agent_cpu_secs(&self) -> f64 {
        agent_cpu_secs(self.0)
    }
}

/// Runs the benchmark.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let ns_labels = [("ns".to_owned(), "bench".to_owned())].into();
    let topo = Topology::builder()
        .namespace("bench", ns_labels)
        .pod(PodSpec::new("bench", "client").label("app", "client"))
        .pod(PodSpec::new("bench", "server").label("app", "server"))
        .verbose(opts.verbose)
        .build()
        .context("building the topology (node n1, pods bench/client and bench/server)")?;
    let node = topo.node("n1")?;
    let client = topo.pod("bench/client")?.clone();
    let server = topo.pod("bench/server")?.clone();

    let yaml = policy_yaml(opts.rules);
    let t = Instant::now();
    let summary = super::apply(node, "bench-rules", &yaml)?;
    say(format!(
        "applied {} filler rules + 1 allow rule in {:.0} ms ({} entries written)",
        opts.rules,
        t.elapsed().as_secs_f64() * 1e3,
        summary.entries_upserted
    ));
    let eps = super::endpoints(node)?;
    let server_ep = eps
        .iter()
        .find(|e| e.spec.pod_name == "server")
        .context("the agent does not list the server endpoint")?;
    let entries = server_ep.policy_entries;
    if entries < opts.rules {
        bail!(
            "the server endpoint has {entries} policy entries, fewer than the {} rules loaded",
            opts.rules
        );
    }
    say(format!(
        "server endpoint {}: {entries} policy entries, ingress enforced: {}",
        server_ep.ep_id, server_ep.ingress_enforced
    ));

    let _srv = BenchServer::start(server.netns(), PORT, opts.server_cpu())?;
    let dst = SocketAddrV4::new(server.ipv4(), PORT);
    expect_dropped(&client, server.ipv4(), PORT + 1)?;
    expect_attachments(node, 4, "(2 endpoints x 2 hooks) in the node namespace")?;

    let measure = opts.measure();
    let results = measure_rounds(&measure, client.netns(), dst, &mut OneNode(node))?;
    let stats = if opts.bpf_stats {
        Some(bpf_run_stats(&[node], client.netns(), dst, &measure)?)
    } else {
        None
    };
    let st = super::status(node)?;
    let progs = our_progs(node)?;

    let t = summary_table(
        format!(
            "datapath: {} rounds x {} s per test, {} policy entries on the server endpoint, client/server threads {} (medians)",
            opts.rounds,
            opts.seconds,
            entries,
            opts.pinning()
        ),
        &results,
        [Some(RR_GOAL), Some(CRR_GOAL)],
    );
    let mut per_round = rounds_table("datapath: every measurement, in run order", &results);
    per_round.notes.push(format!(
        "agent after the run: {} conntrack entries, {} events lost; programs: {}",
        st.conntrack_entries,
        st.events_lost,
        programs_note(&progs)
    ));

    let mut json = json!({
        "bpf_stats": stats.as_ref().map(|all| bpf_stats_report(all, &measure, &mut per_round.notes)),
        "benchmark": "datapath",
        "options": opts.to_json(),
        "server_policy_entries": entries,
        "agent": {"conntrack_entries": st.conntrack_entries, "events_lost": st.events_lost},
        "programs": programs_json(&progs),
    });
    extend_json(
        &mut json,
        results_json(&results, [Some(RR_GOAL), Some(CRR_GOAL)]),
    );
    topo.cleanup()?;
    Ok(Report {
        tables: vec![t, per_round],
        json,
    })
}

/// Measures TCP_RR and TCP_CRR from `client` to `dst` in both modes,
/// interleaved per round (P,B / B,P / ...), starting and ending in
/// palisade mode; checks every measurement's `forwarded` counters.
pub(super) fn measure_rounds(
    m: &Measure,
    client: &NetNs,
    dst: SocketAddrV4,
    modes: &mut dyn Modes,
) -> anyhow::Result<Vec<Run>> {
    let mut results: Vec<Run> = Vec::new();
    let mut current = Mode::Palisade;
    let secs = Duration::from_secs_f64(m.seconds);
    let warm = m.warmup;
    let span = m.seconds + m.warmup.as_secs_f64();
    for round in 0..m.rounds {
        let order = if round % 2 == 0 {
            [Mode::Palisade, Mode::Baseline]
        } else {
            [Mode::Baseline, Mode::Palisade]
        };
        for mode in order {
            if mode != current {
                switch(modes, mode)?;
                current = mode;
            }
            let before = modes.forwarded()?;
            let cpu0 = modes.agent_cpu_secs();
            let mut rr = in_netns(client, m.client_cpu, move || tcp_rr(dst, secs, warm))?;
            let cpu1 = modes.agent_cpu_secs();
            let mut crr = in_netns(client, m.client_cpu, move || tcp_crr(dst, secs, warm))?;
            let cpu2 = modes.agent_cpu_secs();
            rr.agent_cpu = (cpu1 - cpu0) / span;
            crr.agent_cpu = (cpu2 - cpu1) / span;
            let forwarded: Vec<(String, u64)> = modes
                .forwarded()?
                .into_iter()
                .map(|(name, after)| {
                    let was = before.iter().find(|b| b.0 == name).map_or(0, |b| b.1);
                    (name, after.saturating_sub(was))
                })
                .collect();
            let still: Vec<&str> = forwarded
                .iter()
                .filter(|c| c.1 == 0)
                .map(|c| c.0.as_str())
                .collect();
            let moved: Vec<String> = forwarded
                .iter()
                .filter(|c| c.1 != 0)
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            match mode {
                Mode::Palisade if !still.is_empty() => {
                    bail!("palisade mode, but the programs' forwarded counters did not move: {still:?}")
                }
                Mode::Baseline if !moved.is_empty() => {
                    bail!("baseline mode, but the programs counted forwarded packets: {moved:?}")
                }
                _ => {}
            }
            say(format!(
                "round {} {:<8}: TCP_RR {:>6.0}/s (p50 {:.1} us, p99 {:.1} us, agent {:.1}% CPU)  TCP_CRR {:>6.0}/s (p50 {:.1} us, p99 {:.1} us, {} errors, agent {:.1}% CPU)",
                round + 1,
                mode.name(),
                rr.rate,
                rr.p50_us,
                rr.p99_us,
                rr.agent_cpu * 100.0,
                crr.rate,
                crr.p50_us,
                crr.p99_us,
                crr.errors,
                crr.agent_cpu * 100.0
            ));
            results.push(Run {
                round: round + 1,
                mode,
                rr,
                crr,
                forwarded,
            });
        }
    }
    if current != Mode::Palisade {
        switch(modes, Mode::Palisade)?;
    }
    Ok(results)
}

fn switch(modes: &mut dyn Modes, to: Mode) -> anyhow::Result<()> {
    let t = Instant::now();
    modes.switch(to)?;
    say(format!(
        "switched to {} in {:.0} ms",
        to.name(),
        t.elapsed().as_secs_f64() * 1e3
    ));
    Ok(())
}

/// The medians of both modes and their ratio, with `goals` for the RR and
/// CRR rates.
pub(super) fn summary_table(title: String, results: &[Run], goals: [Option<f64>; 2]) -> Table {
    let mut t = Table::new(
        title,
        &[
            "metric",
            "baseline",
            "palisade",
            "palisade/baseline",
            "goal",
        ],
    );
    let metrics: [(&str, Metric, usize, Option<f64>); 6] = [
        ("TCP_RR transactions/s", rr_rate, 0, goals[0]),
        ("TCP_RR p50 latency (us)", rr_p50, 1, None),
        ("TCP_RR p99 latency (us)", rr_p99, 1, None),
        ("TCP_CRR connections/s", crr_rate, 0, goals[1]),
        ("TCP_CRR p50 latency (us)", crr_p50, 1, None),
        ("TCP_CRR p99 latency (us)", crr_p99, 1, None),
    ];
    for (name, which, digits, goal) in metrics {
        let b = med(results, Mode::Baseline, which);
        let p = med(results, Mode::Palisade, which);
        let ratio = p / b;
        let goal = goal
            .map(|g| format!(">= {g:.2} {}", if ratio >= g { "met" } else { "MISSED" }))
            .unwrap_or_default();
        t.row(vec![
            name.to_owned(),
            f(b, digits),
            f(p, digits),
            f(ratio, 3),
            goal,
        ]);
    }
    t
}

/// Every measurement in run order.
pub(super) fn rounds_table(title: &str, results: &[Run]) -> Table {
    let mut per_round = Table::new(
        title,
        &[
            "round",
            "mode",
            "RR/s",
            "RR p99 us",
            "CRR/s",
            "CRR p99 us",
            "CRR errors",
            "agent CPU % (RR/CRR)",
            "pkts seen by programs",
        ],
    );
    for r in results {
        per_round.row(vec![
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
            r.packets_seen().to_string(),
        ]);
    }
    per_round
}

/// `tcp_rr`, `tcp_crr` (medians, ratio, goal) and `runs` as JSON.
pub(super) fn results_json(results: &[Run], goals: [Option<f64>; 2]) -> serde_json::Value {
    let test = |rate: Metric, p50: Metric, p99: Metric, unit: &str, goal: Option<f64>| {
        let (b, p) = (
            med(results, Mode::Baseline, rate),
            med(results, Mode::Palisade, rate),
        );
        let ratio = p / b;
        json!({
            format!("baseline_{unit}"): b, format!("palisade_{unit}"): p,
            "ratio": ratio, "goal": goal, "met": goal.map(|g| ratio >= g),
            "baseline_p50_us": med(results, Mode::Baseline, p50), "palisade_p50_us": med(results, Mode::Palisade, p50),
            "baseline_p99_us": med(results, Mode::Baseline, p99), "palisade_p99_us": med(results, Mode::Palisade, p99),
        })
    };
    json!({
        "tcp_rr": test(rr_rate, rr_p50, rr_p99, "tps", goals[0]),
        "tcp_crr": test(crr_rate, crr_p50, crr_p99, "cps", goals[1]),
        "runs": results.iter().map(|r| json!({
            "round": r.round, "mode": r.mode.name(), "tcp_rr": r.rr.to_json(), "tcp_crr": r.crr.to_json(),
            "packets_seen_by_programs": r.packets_seen(),
            "forwarded": r.forwarded.iter().map(|(n, c)| (n.clone(), json!(c))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Adds the keys of object `more` to object `json`.
pub(super) fn extend_json(json: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(o), serde_json::Value::Object(more)) = (json.as_object_mut(), more) {
        o.extend(more);
    }
}

/// Checks that policy is enforced: a connection from `client` to a port of
/// `server` that no rule allows is dropped (times out), not refused.
pub(super) fn expect_dropped(
    client: &palisade_tests::Pod,
    server: Ipv4Addr,
    port: u16,
) -> anyhow::Result<()> {
    let denied = palisade_tests::probe::probe(
        client.netns(),
        server,
        palisade_tests::PortProto::tcp(port),
        Duration::from_millis(300),
    )?;
    let refused = denied
        .detail
        .as_deref()
        .is_some_and(|d| d.to_ascii_lowercase().contains("refused"));
    if denied.completed || refused {
        bail!("policy is not enforced: a probe to the server's port {port} got {denied:?}");
    }
    Ok(())
}

/// The policy: one rule allowing the client to [`PORT`], and `rules` filler
/// rules selecting the server (even: a `/32` CIDR to a port, odd: the
/// client to another port), in CiliumNetworkPolicies of 100 rules.
pub(super) fn policy_yaml(rules: usize) -> String {
    let port = |p: usize| json!([{"ports": [{"port": p.to_string(), "protocol": "TCP"}]}]);
    let client = json!([{"matchLabels": {"app": "client"}}]);
    let server = json!({"matchLabels": {"app": "server"}});
    let mut docs = vec![json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "bench-allow-client", "namespace": "bench"},
        "spec": {"endpointSelector": server, "ingress": [
            {"fromEndpoints": client, "toPorts": port(usize::from(PORT))}
        ]},
    })];
    let mut i = 0;
    while i < rules {
        let end = (i + 100).min(rules);
        let ingress: Vec<serde_json::Value> = (i..end)
            .map(|j| {
                if j % 2 == 0 {
                    json!({"fromCIDR": [format!("172.16.{}.{}/32", j / 256, j % 256)],
                           "toPorts": port(20_000 + j)})
                } else {
                    json!({"fromEndpoints": client, "toPorts": port(20_000 + j)})
                }
            })
            .collect();
        docs.push(json!({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": format!("bench-filler-{}", i / 100), "namespace": "bench"},
            "spec": {"endpointSelector": server, "ingress": ingress},
        }));
        i = end;
    }
    docs.iter()
        .map(|d| serde_yaml::to_string(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Detaches the node's programs: removes every TCX link pin under
/// `<bpf root>/links/` (endpoints' and the overlay device's) and waits until
/// the kernel reports none of them attached. Nothing else holds the links
/// (a running agent keeps no link open), so the last reference goes with
/// the pin; the detach itself may wait for the RTNL lock.
pub(super) fn unpin_links(node: &Node) -> anyhow::Result<()> {
    let links = node.bpf_root().join("links");
    for entry in
        std::fs::read_dir(&links).with_context(|| format!("reading {}", links.display()))?
    {
        let path = entry?.path();
        std::fs::remove_file(&path)
            .with_context(|| format!("removing link pin {}", path.display()))?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = tcx_attachments(node)?;
        if n == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "node {}: {n} TCX attachments remain after removing the link pins",
                node.name()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fails unless the kernel reports exactly `expected` TCX attachments of the
/// node's programs; `what` says where in the run.
pub(super) fn expect_attachments(node: &Node, expected: usize, what: &str) -> anyhow::Result<()> {
    let n = tcx_attachments(node)?;
    if n != expected {
        bail!(
            "node {}: the kernel reports {n} TCX attachments of its programs {what}, expected {expected}",
            node.name()
        );
    }
    Ok(())
}

/// TCX attachments of this node's programs (those the agent pinned under
/// `<bpf root>/progs/`), as the kernel reports them for every interface of
/// the node's namespace and both directions (`BPF_PROG_QUERY`). Not the
/// list of TCX links: a link whose last pin is gone leaves that list at
/// once but is detached only when its release gets the RTNL lock, which can
/// take hundreds of milliseconds while other namespaces are made or removed
/// on the machine; meanwhile the program still runs.
fn tcx_attachments(node: &Node) -> anyhow::Result<usize> {
    let ids: Vec<u64> = our_progs(node)?.iter().map(|p| p.id).collect();
    node.netns().run(move || {
        let mut n = 0;
        for iface in nix::net::if_::if_nameindex()
            .context("listing interfaces")?
            .iter()
        {
            let name = iface.name().to_string_lossy().into_owned();
            for direction in [TcAttachType::Ingress, TcAttachType::Egress] {
                let (_, progs) = SchedClassifier::query_tcx(&name, direction)
                    .with_context(|| format!("querying the TCX programs of {name}"))?;
                n += progs
                    .iter()
                    .filter(|p| ids.contains(&u64::from(p.id())))
                    .count();
            }
        }
        anyhow::Ok(n)
    })?
}

fn bpftool(netns: &NetNs, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new("bpftool");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = netns.spawn(&mut cmd)?;
    let out = child.wait_with_output().context("bpftool")?;
    if !out.status.success() {
        bail!(
            "bpftool {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Per test (`TCP_RR`, `TCP_CRR`): the sample and, per program, name, runs
/// and average ns per run.
pub(super) type BpfStats = Vec<(&'static str, Sample, Vec<(String, u64, f64)>)>;

/// One more palisade TCP_RR and TCP_CRR run with BPF run-time statistics on
/// (the kernel then times every program run; the setting is restored).
pub(super) fn bpf_run_stats(
    nodes: &[&Node],
    client: &NetNs,
    dst: SocketAddrV4,
    m: &Measure,
) -> anyhow::Result<BpfStats> {
    let old = std::fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
    std::fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
    let measured = (|| {
        let mut out = Vec::new();
        for test in ["TCP_RR", "TCP_CRR"] {
            let before = prog_stats(nodes)?;
            let (secs, warm) = (Duration::from_secs_f64(m.seconds), m.warmup);
            let sample = in_netns(client, m.client_cpu, move || {
                if test == "TCP_RR" {
                    tcp_rr(dst, secs, warm)
                } else {
                    tcp_crr(dst, secs, warm)
                }
            })?;
            let after = prog_stats(nodes)?;
            let per = after
                .iter()
                .map(|(name, cnt, ns)| {
                    let (c0, n0) = before
                        .iter()
                        .find(|b| &b.0 == name)
                        .map_or((0, 0), |b| (b.1, b.2));
                    let runs = cnt.saturating_sub(c0);
                    (
                        name.clone(),
                        runs,
                        ns.saturating_sub(n0) as f64 / runs.max(1) as f64,
                    )
                })
                .collect();
            out.push((test, sample, per));
        }
        anyhow::Ok(out)
    })();
    // Restore whatever the setting was, also when measuring failed.
    let restored = std::fs::write(BPF_STATS, old.trim());
    let out = measured?;
    restored.with_context(|| format!("restoring {BPF_STATS}"))?;
    Ok(out)
}

/// Notes (per program: runs and ns per run; per transaction: runs and
/// program time) and JSON of [`bpf_run_stats`]' measurements.
pub(super) fn bpf_stats_report(
    stats: &BpfStats,
    m: &Measure,
    notes: &mut Vec<String>,
) -> serde_json::Value {
    for (test, sample, per_prog) in stats {
        let mut total = 0.0;
        let mut runs_all = 0;
        for (name, runs, avg) in per_prog {
            total += avg * *runs as f64;
            runs_all += runs;
            notes.push(format!(
                "bpf_stats {test} run ({:.0}/s): {name}: {runs} runs, {avg:.0} ns per run",
                sample.rate
            ));
        }
        let warm_share = m.seconds / (m.seconds + m.warmup.as_secs_f64());
        notes.push(format!(
            "bpf_stats {test} run: {:.1} program runs and {:.2} us of program time per transaction (warm-up included in the runs, so approx.)",
            runs_all as f64 * warm_share / sample.count.max(1) as f64,
            total * warm_share / sample.count.max(1) as f64 / 1e3
        ));
    }
    stats
        .iter()
        .map(|(test, sample, per)| json!({
            "test": test, "sample": sample.to_json(),
            "programs": per.iter().map(|(n, runs, avg)| json!({"name": n, "runs": runs, "avg_ns": avg})).collect::<Vec<_>>(),
        }))
        .collect()
}

/// `(name, run_cnt, run_time_ns)` of the nodes' pinned programs (names
/// prefixed with the node's when there are several nodes).
fn prog_stats(nodes: &[&Node]) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let mut out = Vec::new();
    for node in nodes {
        let dir = node.bpf_root().join("progs");
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let p = entry?.path().to_string_lossy().into_owned();
            let text = bpftool(node.netns(), &["-j", "prog", "show", "pinned", &p])?;
            let v: serde_json::Value =
                serde_json::from_str(&text).context("bpftool prog show output")?;
            let name = v["name"].as_str().unwrap_or("?");
            out.push((
                if nodes.len() > 1 {
                    format!("{} {name}", node.name())
                } else {
                    name.to_owned()
                },
                v["run_cnt"].as_u64().unwrap_or(0),
                v["run_time_ns"].as_u64().unwrap_or(0),
            ));
        }
    }
    Ok(out)
}

/// A program the agent pinned.
#[derive(Debug, Clone)]
pub(super) struct Prog {
    name: String,
    id: u64,
    xlated_insns: u64,
    jited_bytes: u64,
}

/// The programs pinned under `<bpf root>/progs/`.
pub(super) fn our_progs(node: &Node) -> anyhow::Result<Vec<Prog>> {
    let dir = node.bpf_root().join("progs");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let p = path.to_string_lossy().into_owned();
        let text = bpftool(node.netns(), &["-j", "prog", "show", "pinned", &p])?;
        let v: serde_json::Value =
            serde_json::from_str(&text).context("bpftool prog show output")?;
        out.push(Prog {
            name: v["name"].as_str().unwrap_or("?").to_owned(),
            id: v["id"].as_u64().unwrap_or(0),
            xlated_insns: v["bytes_xlated"].as_u64().unwrap_or(0) / 8,
            jited_bytes: v["bytes_jited"].as_u64().unwrap_or(0),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Packets the programs counted as `forwarded`, per observation point
/// (`from-endpoint`, `to-endpoint`, `to-overlay`, `from-overlay`): the
/// counters the agent's status reports, read from the pinned `pal_metrics`
/// map, so that they can be read while no agent runs.
pub(super) fn forwarded_by_observation(node: &Node) -> anyhow::Result<BTreeMap<&'static str, u64>> {
    let path = node.bpf_root().join(palisade_bpf::names::METRICS);
    let data = aya::maps::MapData::from_pin(&path)
        .with_context(|| format!("opening the pinned map {}", path.display()))?;
    let metrics: aya::maps::PerCpuArray<_, MetricsValue> = aya::maps::Map::from_map_data(data)
        .and_then(TryInto::try_into)
        .with_context(|| format!("{} as a per-CPU array of counters", path.display()))?;
    let mut out = BTreeMap::new();
    for observation in 0..OBS_MAX {
        let index = metrics_index(Reason::Forwarded, observation);
        let values = metrics
            .get(&index, 0)
            .with_context(|| format!("reading {} [{index}]", path.display()))?;
        out.insert(
            observation_name(observation),
            values.iter().map(|v| v.packets).sum(),
        );
    }
    Ok(out)
}

/// `name N xlated insns (M B jited)` for each program.
pub(super) fn programs_note(progs: &[Prog]) -> String {
    progs
        .iter()
        .map(|p| {
            format!(
                "{} {} xlated insns ({} B jited)",
                p.name, p.xlated_insns, p.jited_bytes
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The programs as JSON.
pub(super) fn programs_json(progs: &[Prog]) -> serde_json::Value {
    progs
        .iter()
        .map(|p| json!({"name": p.name, "xlated_insns": p.xlated_insns, "jited_bytes": p.jited_bytes}))
        .collect()
}

fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        // Best effort: an unpinned thread still measures.
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Runs `f` on a thread inside `netns`, pinned to `cpu`.
pub(super) fn in_netns<T: Send + 'static>(
    netns: &NetNs,
    cpu: Option<usize>,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    netns.run(move || {
        if let Some(cpu) = cpu {
            pin_to(cpu);
        }
        f()
    })?
}

/// TCP_RR: one connection, 1-byte request and response, for `dur`.
pub(super) fn tcp_rr(dst: SocketAddrV4, dur: Duration, warmup: Duration) -> anyhow::Result<Sample> {
    let mut s = TcpStream::connect_timeout(&dst.into(), IO_TIMEOUT)
        .with_context(|| format!("TCP_RR: connect to {dst}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut b = [1u8; 1];
    let warm_end = Instant::now() + warmup;
    while Instant::now() < warm_end {
        s.write_all(&b).context("TCP_RR: send")?;
        s.read_exact(&mut b).context("TCP_RR: receive")?;
    }
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    let start = Instant::now();
    let end = start + dur;
    loop {
        let t = Instant::now();
        if t >= end {
            break;
        }
        s.write_all(&b).context("TCP_RR: send")?;
        s.read_exact(&mut b).context("TCP_RR: receive")?;
        lat.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
    }
    let elapsed = start.elapsed();
    Ok(sample(&mut lat, 0, elapsed))
}

/// One TCP_CRR transaction: connect, 1-byte request and response, close
/// with RST (SO_LINGER 0: no TIME_WAIT, so ports do not run out).
fn crr_once(dst: SocketAddrV4) -> std::io::Result<()> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_linger(Some(Duration::ZERO))?;
    sock.set_tcp_nodelay(true)?;
    sock.connect_timeout(&dst.into(), IO_TIMEOUT)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut s: TcpStream = sock.into();
    let mut b = [1u8; 1];
    s.write_all(&b)?;
    s.read_exact(&mut b)?;
    Ok(())
}

/// TCP_CRR for `dur`.
pub(super) fn tcp_crr(
    dst: SocketAddrV4,
    dur: Duration,
    warmup: Duration,
) -> anyhow::Result<Sample> {
    let warm_end = Instant::now() + warmup;
    while Instant::now() < warm_end {
        crr_once(dst).with_context(|| format!("TCP_CRR warm-up to {dst}"))?;
    }
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 18);
    let mut errors = 0usize;
    let mut last_error = None;
    let start = Instant::now();
    let end = start + dur;
    loop {
        let t = Instant::now();
        if t >= end {
            break;
        }
        match crr_once(dst) {
            Ok(()) => lat.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX)),
            Err(e) => {
                errors += 1;
                last_error = Some(e);
            }
        }
    }
    let elapsed = start.elapsed();
    if errors > lat.len() / 100 {
        bail!(
            "TCP_CRR: {errors} of {} connections failed (last: {:?})",
            errors + lat.len(),
            last_error
        );
    }
    Ok(sample(&mut lat, errors, elapsed))
}

/// A 1-byte echo server for RR and CRR: one thread in the server's
/// namespace, one connection at a time (the client is sequential too).
pub(super) struct BenchServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<anyhow::Result<()>, NetnsError>>>,
}

impl BenchServer {
    pub(super) fn start(netns: &NetNs, port: u16, cpu: Option<usize>) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel::<anyhow::Result<()>>(1);
        let thread_stop = Arc::clone(&stop);
        let thread = netns.spawn_thread(move || {
            if let Some(cpu) = cpu {
                pin_to(cpu);
            }
            let listener = match listen(port) {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Ok(());
                }
            };
            serve(&listener, &thread_stop)
        })?;
        let mut me = Self {
            stop,
            thread: Some(thread),
        };
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(me),
            Ok(Err(e)) => {
                me.stop();
                Err(e)
            }
            Err(_) => {
                me.stop();
                bail!("the benchmark server did not start")
            }
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn listen(port: u16) -> anyhow::Result<TcpListener> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())
        .with_context(|| format!("bind 0.0.0.0:{port}"))?;
    sock.listen(1024)?;
    Ok(sock.into())
}

fn serve(listener: &TcpListener, stop: &AtomicBool) -> anyhow::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) if n > 0 => {}
            _ => continue,
        }
        let Ok((mut s, _)) = listener.accept() else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = s.set_write_timeout(Some(IO_TIMEOUT));
        let mut b = [0u8; 1];
        loop {
            match s.read(&mut b) {
                Ok(0) => break,
                Ok(_) => {
                    if s.write_all(&b).is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_has_the_allow_rule_and_all_fillers() {
        let yaml = policy_yaml(250);
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap_or(serde_yaml::Value::Null))
            .collect();
        assert_eq!(docs.len(), 4);
        let rules: usize = docs[1..]
            .iter()
            .map(|d| d["spec"]["ingress"].as_sequence().map_or(0, Vec::len))
            .sum();
        assert_eq!(rules, 250);
        assert_eq!(
            docs[0]["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"],
            "5201"
        );
    }
}
