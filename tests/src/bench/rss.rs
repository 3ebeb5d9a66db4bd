//! `palisade-bench agent-rss`: the agent's resident memory with no endpoint
//! (baseline) and with N endpoints made by the real CNI plugin, and the time
//! of each CNI ADD (and DEL).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use palisade_tests::cni::{self, CniPod};
use palisade_tests::{locate_binary, Node, Topology};
use serde_json::json;

use super::{f, median, ms, percentile, say, vm_rss_kib, Report, Table};

/// Options of `palisade-bench agent-rss`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Endpoints to create.
    pub endpoints: usize,
    /// Stop creating endpoints after this long (the report says how many).
    pub max_seconds: u64,
    /// Harness progress on stderr.
    pub verbose: bool,
}

/// Pods whose ADD was attempted: DEL is due for each (CNI contract), also
/// when the benchmark fails half-way. Dropped before the topology.
struct DelGuard(Vec<CniPod>);

impl DelGuard {
    /// DELs every pod, newest first; their durations.
    fn del_all(&mut self) -> Vec<Duration> {
        let mut times = Vec::with_capacity(self.0.len());
        while let Some(pod) = self.0.pop() {
            let t = Instant::now();
            match cni::del(&pod) {
                Ok(()) => times.push(t.elapsed()),
                Err(e) => say(format!("CNI DEL of {}: {e}", pod.name)),
            }
        }
        times
    }
}

impl Drop for DelGuard {
    fn drop(&mut self) {
        self.del_all();
    }
}

/// RSS now, as the median of three readings 200 ms apart (KiB).
fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    let mut v = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(200));
        v.push(vm_rss_kib(pid)?);
    }
    v.sort_unstable();
    Ok(v[1])
}

fn agent_pid(node: &Node) -> anyhow::Result<u32> {
    node.agent_pid().context("the agent is not running")
}

/// Runs the benchmark.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let ns_labels = [("ns".to_owned(), "rss".to_owned())].into();
    // The harness gives each node a /24; 1,000 endpoints need more.
    let mut topo = Topology::builder()
        .namespace("rss", ns_labels)
        .agent_setting("pod_cidr", "10.128.0.0/16")
        .verbose(opts.verbose)
        .build()
        .context("building the topology (node n1)")?;
    let plugin = locate_binary("palisade-cni").context(
        "no palisade-cni binary next to palisade-bench (build the workspace: cargo build --release --workspace --bins)",
    )?;
    let (node_netns, agent_socket) = {
        let node = topo.node("n1")?;
        (node.netns().clone(), node.api_socket().to_owned())
    };

    std::thread::sleep(Duration::from_secs(1));
    let pid = agent_pid(topo.node("n1")?)?;
    let rss0 = settled_rss(pid)?;
    say(format!(
        "agent pid {pid}: VmRSS with 0 endpoints {rss0} KiB"
    ));

    let mut guard = DelGuard(Vec::new());
    let mut add_times = Vec::with_capacity(opts.endpoints);
    let mut netns_times = Vec::with_capacity(opts.endpoints);
    let mut checkpoints: Vec<(usize, u64)> = vec![(0, rss0)];
    let marks = [10, 100, 250, 500, 1000, 2000, 5000];
    let start = Instant::now();
    let mut stopped_early = false;
    for i in 0..opts.endpoints {
        if start.elapsed() > Duration::from_secs(opts.max_seconds) {
            stopped_early = true;
            say(format!(
                "stopping after {i} endpoints: --max-seconds {} reached",
                opts.max_seconds
            ));
            break;
        }
        let t = Instant::now();
        let netns = topo.add_netns(&format!("rss{i}"))?;
        netns_times.push(t.elapsed());
        let pod = CniPod {
            plugin: plugin.clone(),
            node_netns: node_netns.clone(),
            agent_socket: agent_socket.clone(),
            container_id: netns.name().to_owned(),
            pod_netns: netns,
            ifname: "eth0".to_owned(),
            namespace: "rss".to_owned(),
            name: format!("p{i}"),
            labels: [("app".to_owned(), format!("a{}", i % 50))].into(),
            service_account: "default".to_owned(),
        };
        guard.0.push(pod.clone());
        let t = Instant::now();
        cni::add(&pod).with_context(|| format!("CNI ADD of endpoint {i}"))?;
        add_times.push(t.elapsed());
        let n = i + 1;
        if marks.contains(&n) || n == opts.endpoints {
            let rss = vm_rss_kib(agent_pid(topo.node("n1")?)?)?;
            if checkpoints.last().map(|c| c.0) != Some(n) {
                checkpoints.push((n, rss));
            }
            say(format!(
                "{n} endpoints after {:.1} s: VmRSS {rss} KiB",
                start.elapsed().as_secs_f64()
            ));
        }
    }
    let made = add_times.len();
    let create_secs = start.elapsed().as_secs_f64();
    let node = topo.node("n1")?;
    let st = super::status(node)?;
    if st.endpoints != made {
        bail!(
            "the agent reports {} endpoints, {made} were added",
            st.endpoints
        );
    }
    let rss_n = settled_rss(agent_pid(node)?)?;
    if let Some(last) = checkpoints.last_mut() {
        if last.0 == made {
            last.1 = rss_n;
        }
    }

    let del_start = Instant::now();
    let del_times = guard.del_all();
    let del_secs = del_start.elapsed().as_secs_f64();
    let rss_after = settled_rss(agent_pid(node)?)?;
    let left = super::status(node)?.endpoints;

    // ADD time of the first and the last tenth: does an ADD get slower as
    // endpoints accumulate?
    let tenth = (made / 10).max(1);
    let first_tenth: Vec<f64> = add_times.iter().take(tenth).map(|d| ms(*d)).collect();
    let last_tenth: Vec<f64> = add_times.iter().rev().take(tenth).map(|d| ms(*d)).collect();
    let mut add_ms: Vec<f64> = add_times.iter().map(|d| ms(*d)).collect();
    add_ms.sort_by(f64::total_cmp);
    let mut del_ms: Vec<f64> = del_times.iter().map(|d| ms(*d)).collect();
    del_ms.sort_by(f64::total_cmp);
    let netns_ms: Vec<f64> = netns_times.iter().map(|d| ms(*d)).collect();
    let per_ep = if made > 0 {
        (rss_n as f64 - rss0 as f64) / made as f64
    } else {
        f64::NAN
    };

    let mut t = Table::new(
        format!("agent-rss: {made} endpoints through the real CNI plugin"),
        &[
            "metric",
            "baseline (0 endpoints)",
            &format!("{made} endpoints"),
            "ratio",
            "per endpoint",
        ],
    );
    t.row(vec![
        "agent VmRSS (KiB)".into(),
        rss0.to_string(),
        rss_n.to_string(),
        f(rss_n as f64 / rss0 as f64, 2),
        format!("{} KiB", f(per_ep, 1)),
    ]);
    let mut c = Table::new(
        "agent-rss: VmRSS while endpoints are added",
        &["endpoints", "VmRSS (KiB)", "increment over 0 (KiB)"],
    );
    for (n, rss) in &checkpoints {
        c.row(vec![
            n.to_string(),
            rss.to_string(),
            (*rss as i64 - rss0 as i64).to_string(),
        ]);
    }
    c.row(vec![
        format!("0 (after DEL of all {made})"),
        rss_after.to_string(),
        (rss_after as i64 - rss0 as i64).to_string(),
    ]);
    let mut cni_t = Table::new(
        "agent-rss: CNI call times (plugin process start to result)",
        &["call", "count", "median ms", "p99 ms", "max ms"],
    );
    for (name, v) in [("CNI ADD", &add_ms), ("CNI DEL", &del_ms)] {
        cni_t.row(vec![
            name.into(),
            v.len().to_string(),
            f(median(v), 2),
            f(percentile(v, 99.0), 2),
            f(v.last().copied().unwrap_or(f64::NAN), 2),
        ]);
    }
    cni_t.notes.push(format!(
        "CNI ADD median of the first {tenth} endpoints {} ms, of the last {tenth} {} ms.",
        f(median(&first_tenth), 2),
        f(median(&last_tenth), 2)
    ));
    cni_t.notes.push(format!(
        "creating {made} pods took {create_secs:.1} s in all (netns create median {} ms, not part of ADD); deleting {del_secs:.1} s; endpoints left after DEL: {left}{}",
        f(median(&netns_ms), 2),
        if stopped_early { "; STOPPED EARLY at --max-seconds" } else { "" }
    ));

    let json = json!({
        "benchmark": "agent-rss",
        "options": {"endpoints": opts.endpoints, "max_seconds": opts.max_seconds},
        "endpoints_made": made,
        "stopped_early": stopped_early,
        "rss_kib": {"baseline_0_endpoints": rss0, "with_endpoints": rss_n,
                     "ratio": rss_n as f64 / rss0 as f64, "per_endpoint": per_ep,
                     "after_del_all": rss_after},
        "checkpoints": checkpoints.iter().map(|(n, r)| json!({"endpoints": n, "rss_kib": r})).collect::<Vec<_>>(),
        "cni_add_ms": {"count": add_ms.len(), "median": median(&add_ms), "p99": percentile(&add_ms, 99.0),
                        "max": add_ms.last(), "median_first_tenth": median(&first_tenth),
                        "median_last_tenth": median(&last_tenth)},
        "cni_del_ms": {"count": del_ms.len(), "median": median(&del_ms), "p99": percentile(&del_ms, 99.0),
                        "max": del_ms.last()},
        "netns_create_median_ms": median(&netns_ms),
        "create_total_s": create_secs,
        "delete_total_s": del_secs,
    });
    drop(guard);
    topo.cleanup()?;
    Ok(Report {
        tables: vec![t, c, cni_t],
        json,
    })
}
