//! `palisade-bench datapath`: TCP_RR and TCP_CRR between two pods on one
//! node, with palisade's programs attached (1,000+ policy rules selecting
//! the server) and without any program (baseline), alternated in one run.
//!
//! Fairness: both modes use the SAME namespaces, veths, routes, neighbour
//! entries and sockets' endpoints. The baseline is made by removing the TCX
//! link pins under `<bpf root>/links/` (nothing else holds the links, so the
//! kernel detaches the programs; checked with `bpftool net show` in the node
//! namespace, and by the agent's `forwarded` counters not moving). The
//! programs are attached again by restarting the agent, which restores its
//! endpoints (and policy) from its state. The programs return `TC_ACT_OK`
//! (no redirect), so the kernel path is the same in both modes: the ratio is
//! the cost of the two TC hooks plus the maps they use.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
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
const RR_GOAL: f64 = 0.90;
const CRR_GOAL: f64 = 0.85;

/// Options of `palisade-bench datapath`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds per measurement.
    pub seconds: f64,
    /// Filler policy rules selecting the server.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Baseline,
    Palisade,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Palisade => "palisade",
        }
    }
}

/// One timed loop.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Transactions (RR) or connections (CRR) per second.
    rate: f64,
    /// Completed operations.
    count: usize,
    /// Failed operations (CRR only: connect/read errors).
    errors: usize,
    p50_us: f64,
    p99_us: f64,
    /// CPUs' worth of time the agent process used meanwhile (0.05 = 5 %
    /// of one CPU).
    agent_cpu: f64,
}

impl Sample {
    fn to_json(&self) -> serde_json::Value {
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

type Run = (usize, Mode, Sample, Sample, u64);
type Metric = fn(&Run) -> f64;
fn rr_rate(r: &Run) -> f64 {
    r.2.rate
}
fn rr_p50(r: &Run) -> f64 {
    r.2.p50_us
}
fn rr_p99(r: &Run) -> f64 {
    r.2.p99_us
}
fn crr_rate(r: &Run) -> f64 {
    r.3.rate
}
fn crr_p50(r: &Run) -> f64 {
    r.3.p50_us
}
fn crr_p99(r: &Run) -> f64 {
    r.3.p99_us
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

    let server_cpu = if opts.same_cpu { 0 } else { 1 };
    let _srv = BenchServer::start(server.netns(), PORT, opts.pin.then_some(server_cpu))?;
    let dst = SocketAddrV4::new(server.ipv4(), PORT);

    // Sanity: policy is enforced (a port without a rule is dropped, not
    // refused) and the allowed port works.
    let denied = palisade_tests::probe::probe(
        client.netns(),
        server.ipv4(),
        palisade_tests::PortProto::tcp(PORT + 1),
        Duration::from_millis(300),
    )?;
    if denied.completed || denied.detail.as_deref() == Some("connection refused") {
        bail!(
            "policy is not enforced: a probe to the server's port {} got {denied:?}",
            PORT + 1
        );
    }
    let initial = tcx_attachments(node)?;
    if initial != 4 {
        bail!("expected 4 TCX attachments (2 endpoints x 2 hooks) in the node namespace, bpftool shows {initial}");
    }

    let mut results: Vec<Run> = Vec::new();
    let mut current = Mode::Palisade;
    for round in 0..opts.rounds {
        let order = if round % 2 == 0 {
            [Mode::Palisade, Mode::Baseline]
        } else {
            [Mode::Baseline, Mode::Palisade]
        };
        for mode in order {
            if mode != current {
                switch(node, mode)?;
                current = mode;
            }
            let before = forwarded(node)?;
            let cpu0 = agent_cpu_secs(node);
            let mut rr = in_netns(client.netns(), opts.pin.then_some(0), {
                let (secs, warm) = (opts.seconds, opts.warmup);
                move || tcp_rr(dst, Duration::from_secs_f64(secs), warm)
            })?;
            let cpu1 = agent_cpu_secs(node);
            let mut crr = in_netns(client.netns(), opts.pin.then_some(0), {
                let (secs, warm) = (opts.seconds, opts.warmup);
                move || tcp_crr(dst, Duration::from_secs_f64(secs), warm)
            })?;
            let cpu2 = agent_cpu_secs(node);
            let span = opts.seconds + opts.warmup.as_secs_f64();
            rr.agent_cpu = (cpu1 - cpu0) / span;
            crr.agent_cpu = (cpu2 - cpu1) / span;
            let moved = forwarded(node)?.saturating_sub(before);
            match mode {
                Mode::Palisade if moved == 0 => {
                    bail!("palisade mode, but the programs counted no forwarded packet")
                }
                Mode::Baseline if moved != 0 => {
                    bail!("baseline mode, but the programs counted {moved} forwarded packets")
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
            results.push((round + 1, mode, rr, crr, moved));
        }
    }
    if current != Mode::Palisade {
        switch(node, Mode::Palisade)?;
    }
    let stats = if opts.bpf_stats {
        Some(bpf_run_stats(node, &client, dst, opts)?)
    } else {
        None
    };
    let st = super::status(node)?;
    let progs = our_progs(node)?;

    let med = |mode: Mode, which: Metric| -> f64 {
        let v: Vec<f64> = results.iter().filter(|r| r.1 == mode).map(which).collect();
        median(&v)
    };
    let rr_ratio = med(Mode::Palisade, rr_rate) / med(Mode::Baseline, rr_rate);
    let crr_ratio = med(Mode::Palisade, crr_rate) / med(Mode::Baseline, crr_rate);

    let mut t = Table::new(
        format!(
            "datapath: {} rounds x {} s per test, {} policy entries on the server endpoint, client/server threads {} (medians)",
            opts.rounds,
            opts.seconds,
            entries,
            match (opts.pin, opts.same_cpu) {
                (false, _) => "not pinned",
                (true, false) => "pinned to CPUs 0/1",
                (true, true) => "both pinned to CPU 0",
            }
        ),
        &["metric", "baseline", "palisade", "palisade/baseline", "goal"],
    );
    let metrics: [(&str, Metric, usize, Option<f64>); 6] = [
        ("TCP_RR transactions/s", rr_rate, 0, Some(RR_GOAL)),
        ("TCP_RR p50 latency (us)", rr_p50, 1, None),
        ("TCP_RR p99 latency (us)", rr_p99, 1, None),
        ("TCP_CRR connections/s", crr_rate, 0, Some(CRR_GOAL)),
        ("TCP_CRR p50 latency (us)", crr_p50, 1, None),
        ("TCP_CRR p99 latency (us)", crr_p99, 1, None),
    ];
    for (name, which, digits, goal) in metrics {
        let b = med(Mode::Baseline, which);
        let p = med(Mode::Palisade, which);
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

    let mut per_round = Table::new(
        "datapath: every measurement, in run order",
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
    for (round, mode, rr, crr, moved) in &results {
        per_round.row(vec![
            round.to_string(),
            mode.name().to_owned(),
            f(rr.rate, 0),
            f(rr.p99_us, 1),
            f(crr.rate, 0),
            f(crr.p99_us, 1),
            crr.errors.to_string(),
            format!("{:.1} / {:.1}", rr.agent_cpu * 100.0, crr.agent_cpu * 100.0),
            moved.to_string(),
        ]);
    }
    per_round.notes.push(format!(
        "agent after the run: {} conntrack entries, {} events lost; programs: {}",
        st.conntrack_entries,
        st.events_lost,
        progs
            .iter()
            .map(|p| format!(
                "{} {} xlated insns ({} B jited)",
                p.name, p.xlated_insns, p.jited_bytes
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    for (test, sample, per_prog) in stats.iter().flatten() {
        let mut total = 0.0;
        let mut runs_all = 0;
        for (name, runs, avg) in per_prog {
            total += avg * *runs as f64;
            runs_all += runs;
            per_round.notes.push(format!(
                "bpf_stats {test} run ({:.0}/s): {name}: {runs} runs, {avg:.0} ns per run",
                sample.rate
            ));
        }
        let warm_share = opts.seconds / (opts.seconds + opts.warmup.as_secs_f64());
        per_round.notes.push(format!(
            "bpf_stats {test} run: {:.1} program runs and {:.2} us of program time per transaction (warm-up included in the runs, so approx.)",
            runs_all as f64 * warm_share / sample.count.max(1) as f64,
            total * warm_share / sample.count.max(1) as f64 / 1e3
        ));
    }
    let json = json!({
        "bpf_stats": stats.as_ref().map(|all| all.iter().map(|(test, sample, per)| json!({
            "test": test, "sample": sample.to_json(),
            "programs": per.iter().map(|(n, runs, avg)| json!({"name": n, "runs": runs, "avg_ns": avg})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()),
        "benchmark": "datapath",
        "options": {"seconds": opts.seconds, "rules": opts.rules, "rounds": opts.rounds,
                    "warmup_s": opts.warmup.as_secs_f64(), "pinned": opts.pin, "same_cpu": opts.same_cpu},
        "server_policy_entries": entries,
        "tcp_rr": {
            "baseline_tps": med(Mode::Baseline, rr_rate), "palisade_tps": med(Mode::Palisade, rr_rate),
            "ratio": rr_ratio, "goal": RR_GOAL, "met": rr_ratio >= RR_GOAL,
            "baseline_p50_us": med(Mode::Baseline, rr_p50), "palisade_p50_us": med(Mode::Palisade, rr_p50),
            "baseline_p99_us": med(Mode::Baseline, rr_p99), "palisade_p99_us": med(Mode::Palisade, rr_p99),
        },
        "tcp_crr": {
            "baseline_cps": med(Mode::Baseline, crr_rate), "palisade_cps": med(Mode::Palisade, crr_rate),
            "ratio": crr_ratio, "goal": CRR_GOAL, "met": crr_ratio >= CRR_GOAL,
            "baseline_p50_us": med(Mode::Baseline, crr_p50), "palisade_p50_us": med(Mode::Palisade, crr_p50),
            "baseline_p99_us": med(Mode::Baseline, crr_p99), "palisade_p99_us": med(Mode::Palisade, crr_p99),
        },
        "runs": results.iter().map(|(round, mode, rr, crr, moved)| json!({
            "round": round, "mode": mode.name(), "tcp_rr": rr.to_json(), "tcp_crr": crr.to_json(),
            "packets_seen_by_programs": moved,
        })).collect::<Vec<_>>(),
        "agent": {"conntrack_entries": st.conntrack_entries, "events_lost": st.events_lost},
        "programs": progs.iter().map(|p| json!({"name": p.name, "xlated_insns": p.xlated_insns, "jited_bytes": p.jited_bytes})).collect::<Vec<_>>(),
    });
    topo.cleanup()?;
    Ok(Report {
        tables: vec![t, per_round],
        json,
    })
}

/// The policy: one rule allowing the client to [`PORT`], and `rules` filler
/// rules selecting the server (even: a `/32` CIDR to a port, odd: the
/// client to another port), in CiliumNetworkPolicies of 100 rules.
fn policy_yaml(rules: usize) -> String {
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

/// Switches between modes: removes the link pins (baseline) or restarts the
/// agent so that it attaches again (palisade); checks with bpftool.
fn switch(node: &Node, to: Mode) -> anyhow::Result<()> {
    let t = Instant::now();
    match to {
        Mode::Baseline => {
            let links = node.bpf_root().join("links");
            for entry in
                std::fs::read_dir(&links).with_context(|| format!("reading {}", links.display()))?
            {
                let path = entry?.path();
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing link pin {}", path.display()))?;
            }
            // Detach happens when the last reference goes: at once, since
            // nothing else holds the links; look until it shows.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let n = tcx_attachments(node)?;
                if n == 0 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{n} TCX attachments remain after removing the link pins");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Mode::Palisade => {
            node.restart_agent(false)?;
            let n = tcx_attachments(node)?;
            if n != 4 {
                bail!("after the agent restart bpftool shows {n} TCX attachments, expected 4");
            }
        }
    }
    say(format!(
        "switched to {} in {:.0} ms",
        to.name(),
        t.elapsed().as_secs_f64() * 1e3
    ));
    Ok(())
}

/// TCX attachments of this node's programs: BPF links of type TCX (11)
/// whose program is one the agent pinned under `<bpf root>/progs/`. (This
/// bpftool, v7.1, predates TCX in `bpftool net show`; a TCX link exists
/// exactly as long as its attachment.)
fn tcx_attachments(node: &Node) -> anyhow::Result<usize> {
    let ids: Vec<u64> = our_progs(node)?.iter().map(|p| p.id).collect();
    let out = bpftool(node.netns(), &["-j", "link", "show"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("bpftool link show output")?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            let tcx = l["type"].as_u64() == Some(11) || l["type"].as_str() == Some("tcx");
            tcx && l["prog_id"].as_u64().is_some_and(|id| ids.contains(&id))
        })
        .count())
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
type BpfStats = Vec<(&'static str, Sample, Vec<(String, u64, f64)>)>;

/// One more palisade TCP_RR and TCP_CRR run with BPF run-time statistics on
/// (the kernel then times every program run; the setting is restored).
fn bpf_run_stats(
    node: &Node,
    client: &palisade_tests::Pod,
    dst: SocketAddrV4,
    opts: &Options,
) -> anyhow::Result<BpfStats> {
    let old = std::fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
    std::fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
    let measured = (|| {
        let mut out = Vec::new();
        for test in ["TCP_RR", "TCP_CRR"] {
            let before = prog_stats(node)?;
            let (secs, warm) = (Duration::from_secs_f64(opts.seconds), opts.warmup);
            let sample = in_netns(client.netns(), opts.pin.then_some(0), move || {
                if test == "TCP_RR" {
                    tcp_rr(dst, secs, warm)
                } else {
                    tcp_crr(dst, secs, warm)
                }
            })?;
            let after = prog_stats(node)?;
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

/// `(name, run_cnt, run_time_ns)` of the pinned programs.
fn prog_stats(node: &Node) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let dir = node.bpf_root().join("progs");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = entry?.path().to_string_lossy().into_owned();
        let text = bpftool(node.netns(), &["-j", "prog", "show", "pinned", &p])?;
        let v: serde_json::Value =
            serde_json::from_str(&text).context("bpftool prog show output")?;
        out.push((
            v["name"].as_str().unwrap_or("?").to_owned(),
            v["run_cnt"].as_u64().unwrap_or(0),
            v["run_time_ns"].as_u64().unwrap_or(0),
        ));
    }
    Ok(out)
}

/// A program the agent pinned.
#[derive(Debug, Clone)]
struct Prog {
    name: String,
    id: u64,
    xlated_insns: u64,
    jited_bytes: u64,
}

/// The programs pinned under `<bpf root>/progs/`.
fn our_progs(node: &Node) -> anyhow::Result<Vec<Prog>> {
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

/// Packets the programs counted as `forwarded` (both hooks).
fn forwarded(node: &Node) -> anyhow::Result<u64> {
    Ok(super::status(node)?
        .verdicts
        .iter()
        .filter(|v| v.reason == "forwarded")
        .map(|v| v.packets)
        .sum())
}

fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        // Best effort: an unpinned thread still measures.
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Runs `f` on a thread inside `netns`, pinned to `cpu`.
fn in_netns<T: Send + 'static>(
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
fn tcp_rr(dst: SocketAddrV4, dur: Duration, warmup: Duration) -> anyhow::Result<Sample> {
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
fn tcp_crr(dst: SocketAddrV4, dur: Duration, warmup: Duration) -> anyhow::Result<Sample> {
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
struct BenchServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<anyhow::Result<()>, NetnsError>>>,
}

impl BenchServer {
    fn start(netns: &NetNs, port: u16, cpu: Option<usize>) -> anyhow::Result<Self> {
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
