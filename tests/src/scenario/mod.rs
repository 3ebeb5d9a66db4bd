//! The scenario runner behind `palisade scenario run FILE...`: builds each
//! scenario for real (its nodes, each with its agent, sharing one etcd when
//! there are several; pods through the CNI plugin), applies namespaces and policies through the agent's API,
//! probes every (from, to, port), checks denials against the agent's drop
//! events, prints the matrices and tears everything down.

pub mod model;
pub mod report;

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use palisade_api::{FlowKind, FlowRecord};

pub use model::{Scenario, ScenarioError, Verdict};
pub use report::{Observed, ProbeResult, ScenarioReport};

use crate::probe::{ProbeError, ProbeJob, ProbeOutcome, MAX_PROBE_TIMEOUT};
use crate::topology::{namespaces_yaml, Topology};

/// How long the runner waits for drop events to reach the agent after the
/// probes.
const DROP_GRACE: Duration = Duration::from_secs(2);
/// How long every node may take to learn every pod of a multi-node scenario
/// (the goal is well under a second).
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(10);

/// Options of `palisade scenario run`.
#[derive(Debug, Clone)]
pub struct CliOptions {
    /// The agent binary.
    pub agent_bin: PathBuf,
    /// The CNI plugin binary.
    pub cni_bin: PathBuf,
    /// Print one JSON document instead of matrices.
    pub json: bool,
    /// Leave namespaces, agents and files in place when a scenario fails.
    pub keep_on_failure: bool,
    /// Print setup steps on stderr.
    pub verbose: bool,
    /// Report scenarios that need a feature this build lacks (several
    /// nodes, encryption, authentication) as skipped instead of failed.
    pub skip_unsupported: bool,
}

/// Runs scenario files one after the other; prints the report (text or
/// JSON) on stdout; returns `Ok(true)` when every probe of every file
/// matched, `Ok(false)` on any mismatch or setup error.
pub fn run_cli(files: &[PathBuf], opts: &CliOptions) -> anyhow::Result<bool> {
    if files.is_empty() {
        anyhow::bail!("no scenario file given");
    }
    for (what, bin) in [("agent", &opts.agent_bin), ("CNI plugin", &opts.cni_bin)] {
        if !bin.is_file() {
            anyhow::bail!(
                "the palisade {what} binary {} does not exist (build the workspace: cargo build)",
                bin.display()
            );
        }
    }
    let stale = crate::cleanup_stale();
    if opts.verbose && !stale.removed.is_empty() {
        eprintln!(
            "removed leftovers of dead runs {}: {}",
            stale.runs.join(", "),
            stale.removed.join(", ")
        );
    }
    for p in &stale.problems {
        eprintln!("warning: cleaning leftovers of earlier runs: {p}");
    }
    let mut reports = Vec::new();
    for file in files {
        let report = run_file(file, opts);
        if !opts.json {
            print!("{}", report.render());
            if files.len() > 1 {
                println!();
            }
        }
        reports.push(report);
    }
    let passed: usize = reports.iter().map(|r| r.passed).sum();
    let failed: usize = reports.iter().map(|r| r.failed).sum();
    let skipped = reports.iter().filter(|r| r.skipped.is_some()).count();
    let ok = reports.iter().all(ScenarioReport::ok);
    if opts.json {
        let doc = serde_json::json!({
            "ok": ok,
            "passed": passed,
            "failed": failed,
            "skipped": skipped,
            "scenarios": reports,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).context("cannot serialise the report")?
        );
    } else if files.len() > 1 {
        println!("total: {passed} passed, {failed} failed, {skipped} skipped");
    }
    Ok(ok)
}

/// Runs one scenario file; never fails: problems become the report's error.
pub fn run_file(file: &Path, opts: &CliOptions) -> ScenarioReport {
    let display = file.display().to_string();
    let scenario = match Scenario::load(file) {
        Ok(s) => s,
        Err(e) => return ScenarioReport::setup_error(display, None, e.to_string()),
    };
    if let Err(e) = scenario.check_supported() {
        if opts.skip_unsupported {
            return ScenarioReport::skipped(display, Some(scenario.name), e.to_string());
        }
        return ScenarioReport::setup_error(display, Some(scenario.name), e.to_string());
    }
    let builder = Topology::builder()
        .agent_bin(&opts.agent_bin)
        .cni_bin(&opts.cni_bin)
        .verbose(opts.verbose);
    let run = run_scenario(&scenario, builder, opts.verbose);
    let report = match run.result {
        Ok(report) => report,
        Err(e) => ScenarioReport::setup_error(display, Some(scenario.name), format!("{e:#}")),
    };
    if let Some(topo) = run.topology {
        finish(topo, !report.ok() && opts.keep_on_failure);
    }
    report
}

fn finish(topo: Topology, keep: bool) {
    if keep {
        let names: Vec<String> = topo
            .nodes()
            .iter()
            .map(|n| n.netns().name().to_owned())
            .chain(topo.pods().iter().map(|p| p.netns().name().to_owned()))
            .collect();
        let dir = topo.keep();
        eprintln!(
            "kept for inspection: {} (agent logs, configs), network namespaces {}; the next `palisade scenario run` removes them",
            dir.display(),
            names.join(" ")
        );
    } else if let Err(e) = topo.cleanup() {
        eprintln!("warning: {e}");
    }
}

/// A scenario run: the topology (to clean up or keep) and the report or
/// the setup error.
#[derive(Debug)]
pub struct ScenarioRun {
    /// The topology, when it was built.
    pub topology: Option<Topology>,
    /// The report, or why the scenario could not be run to the end.
    pub result: anyhow::Result<ScenarioReport>,
}

/// Builds, applies, probes and judges one scenario.
pub fn run_scenario(
    scenario: &Scenario,
    builder: crate::TopologyBuilder,
    verbose: bool,
) -> ScenarioRun {
    let source = scenario.file.display().to_string();
    let mut builder = builder;
    for n in &scenario.nodes {
        builder = builder.node(n);
    }
    let mut topo = match builder.build() {
        Ok(t) => t,
        Err(e) => {
            return ScenarioRun {
                topology: None,
                result: Err(anyhow::Error::new(e).context("setting up the nodes")),
            }
        }
    };
    macro_rules! tri {
        ($e:expr, $ctx:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => {
                    return ScenarioRun {
                        result: Err(anyhow::Error::new(e).context($ctx)),
                        topology: Some(topo),
                    }
                }
            }
        };
    }
    let namespaces: Vec<(String, BTreeMap<String, String>)> = scenario
        .namespaces
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !namespaces.is_empty() {
        tri!(
            topo.apply(&source, &namespaces_yaml(&namespaces)),
            "applying the namespaces"
        );
    }
    for pod in &scenario.pods {
        let name = pod.full_name();
        tri!(topo.add_pod(pod.clone()), format!("creating pod {name}"));
    }
    // Probes across nodes need every node to know every pod's identity.
    if scenario.nodes.len() > 1 {
        tri!(
            topo.wait_converged(CONVERGENCE_LIMIT),
            "waiting for every node to learn every pod"
        );
    }
    if !scenario.policies.trim().is_empty() {
        tri!(
            topo.apply(&source, &scenario.policies),
            "applying the policies"
        );
    }
    let keys = tri!(scenario.probe_set(), "listing the probes");
    let mut ips: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    let mut jobs = Vec::new();
    for k in &keys {
        let from = tri!(topo.pod(&k.from), "listing the probes");
        let to = tri!(topo.pod(&k.to), "listing the probes");
        ips.insert(k.from.clone(), from.ipv4());
        ips.insert(k.to.clone(), to.ipv4());
        jobs.push(ProbeJob {
            from: from.netns().clone(),
            dst: to.ipv4(),
            port: k.port,
        });
    }
    if verbose {
        eprintln!("probing {} connections", jobs.len());
    }
    let started = Instant::now();
    let outcomes = topo.probe_many(&jobs, MAX_PROBE_TIMEOUT);
    let probe_secs = started.elapsed().as_secs_f64();
    // Drops reach the agent asynchronously: wait a little for missing ones.
    let needs_drop: Vec<FlowKey> = keys
        .iter()
        .zip(&outcomes)
        .filter_map(|(k, o)| match o {
            Ok(o) if !o.completed => flow_key(k, o, &ips),
            _ => None,
        })
        .collect();
    let deadline = Instant::now() + DROP_GRACE;
    let drops = loop {
        let records = tri!(topo.flows(&[FlowKind::Drop], None), "reading drop events");
        let drops = drop_set(&records);
        if needs_drop.iter().all(|k| drops.contains(k)) || Instant::now() >= deadline {
            break drops;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let probes = judge(scenario, &keys, &outcomes, &ips, &drops);
    let failed = probes.iter().filter(|p| !p.ok).count();
    let report = ScenarioReport {
        file: source,
        name: Some(scenario.name.clone()),
        error: None,
        skipped: None,
        passed: probes.len() - failed,
        failed,
        probe_secs,
        probes,
        pods: scenario.pods.iter().map(|p| p.full_name()).collect(),
    };
    ScenarioRun {
        topology: Some(topo),
        result: Ok(report),
    }
}

/// (src ip, src port, dst ip, dst port, protocol) of a flow.
pub type FlowKey = (Ipv4Addr, u16, Ipv4Addr, u16, String);

fn flow_key(
    k: &model::ProbeKey,
    o: &ProbeOutcome,
    ips: &BTreeMap<String, Ipv4Addr>,
) -> Option<FlowKey> {
    Some((
        *ips.get(&k.from)?,
        o.client_port,
        *ips.get(&k.to)?,
        k.port.port,
        k.port.protocol.as_str().to_owned(),
    ))
}

/// The flows of drop events.
pub fn drop_set(records: &[FlowRecord]) -> HashSet<FlowKey> {
    records
        .iter()
        .filter(|r| r.kind == FlowKind::Drop)
        .map(|r| {
            (
                r.src.ip,
                r.src.port,
                r.dst.ip,
                r.dst.port,
                r.protocol.to_ascii_lowercase(),
            )
        })
        .collect()
}

/// Judges each probe against the expected verdict and the drops.
pub fn judge(
    scenario: &Scenario,
    keys: &[model::ProbeKey],
    outcomes: &[Result<ProbeOutcome, ProbeError>],
    ips: &BTreeMap<String, Ipv4Addr>,
    drops: &HashSet<FlowKey>,
) -> Vec<ProbeResult> {
    keys.iter()
        .zip(outcomes)
        .map(|(k, o)| {
            let expected = scenario.expect.verdict(&k.from, &k.to, k.port);
            let (observed, completed, drop_recorded, client_port, elapsed_ms) = match o {
                Err(e) => (Observed::Error(e.to_string()), false, false, 0, 0),
                Ok(o) => {
                    let dropped =
                        !o.completed && flow_key(k, o, ips).is_some_and(|f| drops.contains(&f));
                    let observed = if o.completed {
                        Observed::Allow
                    } else if dropped {
                        Observed::Deny
                    } else {
                        Observed::BlockedWithoutDrop(
                            o.detail.clone().unwrap_or_else(|| "no detail".into()),
                        )
                    };
                    let ms = u64::try_from(o.elapsed.as_millis()).unwrap_or(u64::MAX);
                    (observed, o.completed, dropped, o.client_port, ms)
                }
            };
            let ok = ProbeResult::judge(expected, &observed);
            ProbeResult {
                from: k.from.clone(),
                to: k.to.clone(),
                port: k.port,
                src_ip: ips.get(&k.from).copied(),
                dst_ip: ips.get(&k.to).copied(),
                client_port,
                expected,
                observed,
                completed,
                drop_recorded,
                elapsed_ms,
                ok,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use palisade_api::FlowPeer;

    const TEXT: &str = r#"
version: 1
name: t
namespaces: {x: {ns: x}}
pods:
  - {name: x/a, node: n1, labels: {pod: a}, ports: [80/tcp]}
  - {name: x/b, node: n1, labels: {pod: b}, ports: [80/tcp]}
  - {name: x/c, node: n1, labels: {pod: c}, ports: [80/tcp]}
expect:
  default: allow
  rules:
    - {from: "*", to: "x/a", verdict: deny}
"#;

    fn outcome(completed: bool, client_port: u16) -> Result<ProbeOutcome, ProbeError> {
        Ok(ProbeOutcome {
            completed,
            elapsed: Duration::from_millis(if completed { 2 } else { 1000 }),
            client_port,
            detail: (!completed).then(|| "timed out".to_owned()),
        })
    }

    fn drop_record(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FlowRecord {
        let peer = |ip, port| FlowPeer {
            ip,
            port,
            identity: 0,
            name: None,
        };
        FlowRecord {
            seq: 1,
            time: String::new(),
            kind: FlowKind::Drop,
            reason: "policy_denied".into(),
            reason_code: -133,
            direction: "ingress".into(),
            protocol: "tcp".into(),
            ethertype: 0x0800,
            src: peer(src, sport),
            dst: peer(dst, dport),
            ep_id: 1,
            rule: None,
        }
    }

    #[test]
    fn judging_needs_the_drop_for_deny() {
        let s = Scenario::parse(TEXT, Path::new("t.yaml")).unwrap();
        let keys = s.probe_set().unwrap();
        let ips: BTreeMap<String, Ipv4Addr> = [
            ("x/a".to_owned(), Ipv4Addr::new(10, 0, 0, 1)),
            ("x/b".to_owned(), Ipv4Addr::new(10, 0, 0, 2)),
            ("x/c".to_owned(), Ipv4Addr::new(10, 0, 0, 3)),
        ]
        .into();
        // Order: to x/a from b, c; to x/b from a, c; to x/c from a, b.
        let names: Vec<(&str, &str)> = keys
            .iter()
            .map(|k| (k.from.as_str(), k.to.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("x/b", "x/a"),
                ("x/c", "x/a"),
                ("x/a", "x/b"),
                ("x/c", "x/b"),
                ("x/a", "x/c"),
                ("x/b", "x/c")
            ]
        );
        let outcomes = vec![
            outcome(false, 1000), // denied, drop recorded: ok
            outcome(false, 1001), // denied, no drop: mismatch
            outcome(true, 1002),  // allowed: ok
            outcome(false, 1003), // should be allowed: mismatch
            outcome(true, 1004),
            outcome(true, 1005),
        ];
        let records = vec![
            drop_record(ips["x/b"], 1000, ips["x/a"], 80),
            // Same flow but another source port: does not count.
            drop_record(ips["x/c"], 9999, ips["x/a"], 80),
        ];
        let drops = drop_set(&records);
        let results = judge(&s, &keys, &outcomes, &ips, &drops);
        let ok: Vec<bool> = results.iter().map(|r| r.ok).collect();
        assert_eq!(ok, [true, false, true, false, true, true]);
        assert!(matches!(
            results[1].observed,
            Observed::BlockedWithoutDrop(_)
        ));
        assert_eq!(results[3].expected, Verdict::Allow);
        let report = ScenarioReport {
            file: "t.yaml".into(),
            name: Some("t".into()),
            error: None,
            skipped: None,
            passed: 4,
            failed: 2,
            probe_secs: 1.0,
            probes: results,
            pods: vec!["x/a".into(), "x/b".into(), "x/c".into()],
        };
        let text = report.render();
        assert!(text.contains("80/tcp"), "{text}");
        assert!(
            text.contains(
                "x/c -> x/a 80/tcp: expected deny, observed blocked without a recorded drop"
            ),
            "{text}"
        );
        assert!(
            text.contains("x/c -> x/b 80/tcp: expected allow, observed blocked"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("4 passed, 2 failed"), "{text}");
        // Row x/c: to x/a X, to x/b X, to itself -.
        let row = text.lines().find(|l| l.starts_with("x/c ")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, ["x/c", "X", "X", "-"], "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["probes"].as_array().unwrap().len(), 6);
        assert_eq!(json["probes"][0]["port"], "80/tcp");
        assert_eq!(
            json["probes"][1]["observed"]["kind"],
            "blocked-without-drop"
        );
    }
}
