//! The scenario runner behind `palisade scenario run FILE...`: builds each
//! scenario for real (its nodes, each with its agent, sharing one etcd and
//! one node CA when there are several; pods through the CNI plugin),
//! applies namespaces and policies through the agent's API, probes every
//! (from, to, port), retries `auth-required` probes until authentication
//! lets them through, checks the outcomes against the agents' flow events
//! (drops and their reasons, authenticated flows), prints the matrices and
//! tears everything down.

pub mod model;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use palisade_api::{FlowKind, FlowRecord};
use palisade_bpf::abi::Reason;

pub use model::{Scenario, ScenarioError, Verdict};
pub use report::{Observed, ProbeResult, ScenarioReport};

use crate::netns::NetnsError;
use crate::probe::{probe_here, ProbeError, ProbeJob, ProbeOutcome, MAX_PROBE_TIMEOUT};
use crate::topology::{namespaces_yaml, Topology, PROBE_PARALLELISM};

/// How long the runner waits for drop and flow events to reach the agents
/// after the probes.
const DROP_GRACE: Duration = Duration::from_secs(2);
/// How long every node may take to learn every pod of a multi-node scenario
/// (the goal is well under a second).
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(10);
/// How long an `auth-required` probe whose first connection failed is
/// retried, from that failure (the scenario format's bound).
pub const AUTH_RETRY_WINDOW: Duration = Duration::from_secs(5);
/// The least time between two connections of a retried probe (a refused
/// connection fails at once).
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Authentication modes that never authenticate: their `authentication
/// required` drops are final.
const NEVER_AUTHENTICATES: &[&str] = &["test-always-fail"];

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
    /// Report scenarios that need a feature this build lacks (node-to-node
    /// encryption) as skipped instead of failed.
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
    // Nodes authenticate each other's workloads only with one trust domain
    // and CA.
    let mut builder = if scenario.nodes.len() > 1 {
        builder.shared_identity(true)
    } else {
        builder
    };
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
    let mut retry = Vec::new();
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
        retry.push(scenario.expect.verdict(&k.from, &k.to, k.port) == Verdict::AuthRequired);
    }
    if verbose {
        eprintln!("probing {} connections", jobs.len());
    }
    let started = Instant::now();
    let runs = run_probes(&jobs, &retry, MAX_PROBE_TIMEOUT);
    let probe_secs = started.elapsed().as_secs_f64();
    // Events reach the agents asynchronously: wait a little for missing
    // ones.
    let needs = needed_events(&keys, &runs, &retry, &ips);
    let kinds = if needs.iter().any(|(_, n)| *n == Need::AuthenticatedFlow) {
        vec![FlowKind::Drop, FlowKind::Flow]
    } else {
        vec![FlowKind::Drop]
    };
    let deadline = Instant::now() + DROP_GRACE;
    let flows = loop {
        let records = tri!(topo.flows(&kinds, None), "reading flow events");
        let flows = FlowIndex::new(&records);
        if needs.iter().all(|(k, n)| flows.has(k, *n)) || Instant::now() >= deadline {
            break flows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let probes = judge(scenario, &keys, &runs, &ips, &flows);
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

/// One probe as made: its first connection and, for an `auth-required`
/// probe whose first connection did not complete, the retries.
#[derive(Debug)]
pub struct ProbeRun {
    /// The first connection.
    pub first: Result<ProbeOutcome, ProbeError>,
    /// The retries, when there were some.
    pub retries: Option<Retries>,
}

impl ProbeRun {
    /// A probe made once.
    pub fn once(first: Result<ProbeOutcome, ProbeError>) -> Self {
        Self {
            first,
            retries: None,
        }
    }
}

/// The retries of a probe: new connections, one after the other, until one
/// completes or [`AUTH_RETRY_WINDOW`] has passed since the first failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    /// Connections made after the first.
    pub count: u32,
    /// The one that completed, if any (the last connection).
    pub completed: Option<ProbeOutcome>,
    /// From the start of the first connection to the end of the last.
    pub waited: Duration,
    /// Why the last connection did not complete, if it did not.
    pub last_failure: Option<String>,
}

/// Probes `jobs` on [`PROBE_PARALLELISM`] threads; a job whose `retry` is
/// set is retried at once when its first connection does not complete
/// (see [`Retries`]). Runs in the order of `jobs`.
pub fn run_probes(jobs: &[ProbeJob], retry: &[bool], timeout: Duration) -> Vec<ProbeRun> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<ProbeRun>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    let workers = PROBE_PARALLELISM.clamp(1, jobs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                // A worker stays in the namespace it entered last.
                let mut current: Option<&crate::NetNs> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let entered = if current == Some(&job.from) {
                        Ok(())
                    } else {
                        current = None;
                        job.from.enter_current_thread().map(|()| {
                            current = Some(&job.from);
                        })
                    };
                    let run = match entered {
                        Err(e) => ProbeRun::once(Err(e.into())),
                        Ok(()) => probe_with_retries(job, retry.get(i) == Some(&true), timeout),
                    };
                    let mut all = results.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(slot) = all.get_mut(i) {
                        *slot = Some(run);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                ProbeRun::once(Err(ProbeError::Netns(NetnsError::Panicked {
                    name: "probe worker".to_owned(),
                })))
            })
        })
        .collect()
}

/// Probes from the calling thread's namespace; with `retry`, makes new
/// connections after a failed first one until one completes or
/// [`AUTH_RETRY_WINDOW`] has passed.
fn probe_with_retries(job: &ProbeJob, retry: bool, timeout: Duration) -> ProbeRun {
    let start = Instant::now();
    let first = probe_here(job.dst, job.port, timeout);
    let failed = match &first {
        Ok(o) if retry && !o.completed => Instant::now(),
        _ => return ProbeRun::once(first),
    };
    let mut retries = Retries {
        count: 0,
        completed: None,
        waited: Duration::ZERO,
        last_failure: None,
    };
    while failed.elapsed() < AUTH_RETRY_WINDOW {
        let attempt = Instant::now();
        retries.count += 1;
        match probe_here(job.dst, job.port, timeout) {
            Ok(o) if o.completed => {
                retries.completed = Some(o);
                retries.last_failure = None;
                break;
            }
            Ok(o) => retries.last_failure = o.detail,
            Err(e) => retries.last_failure = Some(e.to_string()),
        }
        std::thread::sleep(RETRY_PAUSE.saturating_sub(attempt.elapsed()));
    }
    retries.waited = start.elapsed();
    ProbeRun {
        first,
        retries: Some(retries),
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

fn record_key(r: &FlowRecord) -> FlowKey {
    (
        r.src.ip,
        r.src.port,
        r.dst.ip,
        r.dst.port,
        r.protocol.to_ascii_lowercase(),
    )
}

/// An event the judging of a connection needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A drop (it did not complete).
    Drop,
    /// A flow event naming its authentication (it completed and was to
    /// need authentication).
    AuthenticatedFlow,
}

/// The events the judging needs: a drop for every first connection that
/// did not complete; an authenticated flow event for every connection of an
/// `auth-required` probe that completed.
pub fn needed_events(
    keys: &[model::ProbeKey],
    runs: &[ProbeRun],
    auth_required: &[bool],
    ips: &BTreeMap<String, Ipv4Addr>,
) -> Vec<(FlowKey, Need)> {
    let mut out = Vec::new();
    for ((k, run), auth) in keys.iter().zip(runs).zip(auth_required) {
        if let Ok(o) = &run.first {
            let need = match (o.completed, auth) {
                (false, _) => Some(Need::Drop),
                (true, true) => Some(Need::AuthenticatedFlow),
                (true, false) => None,
            };
            out.extend(need.and_then(|n| Some((flow_key(k, o, ips)?, n))));
        }
        if let Some(o) = run.retries.as_ref().and_then(|r| r.completed.as_ref()) {
            out.extend(flow_key(k, o, ips).map(|f| (f, Need::AuthenticatedFlow)));
        }
    }
    out
}

/// The drops the agents recorded for one flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// A drop that authenticating would not lift: any reason but
    /// `authentication required`, or that reason in a mode that never
    /// authenticates (`test-always-fail`).
    pub fin: bool,
    /// A drop with reason `authentication required` (mutual authentication
    /// of the pair had not completed yet).
    pub until_authenticated: bool,
}

impl Drops {
    fn any(self) -> bool {
        self.fin || self.until_authenticated
    }
}

/// What the flow events say about an admitted flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// No flow event for it.
    NotSeen,
    /// Flow events, none naming an authentication.
    Unauthenticated,
    /// A flow event says it needed and passed this authentication.
    Authenticated(String),
}

/// The agents' drop and flow events, by flow.
#[derive(Debug, Default)]
pub struct FlowIndex {
    drops: HashMap<FlowKey, Drops>,
    /// The authentication of each admitted flow, if any of its events (one
    /// per endpoint it passed) names one.
    admitted: HashMap<FlowKey, Option<String>>,
}

impl FlowIndex {
    /// Indexes drop and flow events (audit events are neither).
    pub fn new(records: &[FlowRecord]) -> Self {
        let mut index = Self::default();
        for r in records {
            match r.kind {
                FlowKind::Drop => {
                    let d = index.drops.entry(record_key(r)).or_default();
                    let never = r
                        .auth
                        .as_deref()
                        .is_some_and(|a| NEVER_AUTHENTICATES.contains(&a));
                    if r.reason_code == Reason::AuthRequired.code() && !never {
                        d.until_authenticated = true;
                    } else {
                        d.fin = true;
                    }
                }
                FlowKind::Flow => {
                    let auth = index.admitted.entry(record_key(r)).or_default();
                    if auth.is_none() {
                        auth.clone_from(&r.auth);
                    }
                }
                FlowKind::Audit => {}
            }
        }
        index
    }

    /// The drops of a flow.
    pub fn drops(&self, key: &FlowKey) -> Drops {
        self.drops.get(key).copied().unwrap_or_default()
    }

    /// What the flow events say about an admitted flow.
    pub fn admission(&self, key: &FlowKey) -> Admission {
        match self.admitted.get(key) {
            None => Admission::NotSeen,
            Some(None) => Admission::Unauthenticated,
            Some(Some(auth)) => Admission::Authenticated(auth.clone()),
        }
    }

    /// Whether the event `need` of flow `key` is there.
    pub fn has(&self, key: &FlowKey, need: Need) -> bool {
        match need {
            Need::Drop => self.drops(key).any(),
            Need::AuthenticatedFlow => {
                matches!(self.admission(key), Admission::Authenticated(_))
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Judges each probe against its expected verdict and the agents' events:
/// - `allow`: the first connection completed;
/// - `deny`: it did not, and a drop that authenticating would not lift
///   was recorded for it;
/// - `auth-required`: it completed and a flow event says it was
///   authenticated (beforehand); or it did not, was dropped with reason
///   `authentication required`, and a retry completed authenticated within
///   [`AUTH_RETRY_WINDOW`].
pub fn judge(
    scenario: &Scenario,
    keys: &[model::ProbeKey],
    runs: &[ProbeRun],
    ips: &BTreeMap<String, Ipv4Addr>,
    flows: &FlowIndex,
) -> Vec<ProbeResult> {
    keys.iter()
        .zip(runs)
        .map(|(k, run)| {
            let expected = scenario.expect.verdict(&k.from, &k.to, k.port);
            let mut result = ProbeResult {
                from: k.from.clone(),
                to: k.to.clone(),
                port: k.port,
                src_ip: ips.get(&k.from).copied(),
                dst_ip: ips.get(&k.to).copied(),
                client_port: 0,
                expected,
                observed: Observed::Allow,
                completed: false,
                drop_recorded: false,
                elapsed_ms: 0,
                attempts: 1,
                auth: None,
                auth_ms: None,
                ok: false,
            };
            match &run.first {
                Err(e) => result.observed = Observed::Error(e.to_string()),
                Ok(o) => {
                    let drops = flow_key(k, o, ips)
                        .map(|f| flows.drops(&f))
                        .unwrap_or_default();
                    result.client_port = o.client_port;
                    result.completed = o.completed;
                    result.elapsed_ms = millis(o.elapsed);
                    result.drop_recorded = !o.completed && drops.any();
                    judge_outcome(&mut result, k, o, drops, run.retries.as_ref(), ips, flows);
                }
            }
            result.ok = ProbeResult::judge(expected, &result.observed);
            result
        })
        .collect()
}

/// Sets `observed`, `attempts`, `auth` and `auth_ms` of a probe whose
/// first connection was made.
fn judge_outcome(
    result: &mut ProbeResult,
    k: &model::ProbeKey,
    first: &ProbeOutcome,
    drops: Drops,
    retries: Option<&Retries>,
    ips: &BTreeMap<String, Ipv4Addr>,
    flows: &FlowIndex,
) {
    let admission =
        |o: &ProbeOutcome| flow_key(k, o, ips).map_or(Admission::NotSeen, |f| flows.admission(&f));
    let without_auth = |admission: Admission, which: &str| {
        Observed::CompletedWithoutAuth(match admission {
            Admission::NotSeen => format!("{which}: no flow event was recorded for it"),
            _ => format!("{which}: its flow events name no authentication"),
        })
    };
    if first.completed {
        result.observed = if result.expected != Verdict::AuthRequired {
            Observed::Allow
        } else {
            match admission(first) {
                Admission::Authenticated(auth) => {
                    result.auth = Some(auth);
                    // A UDP probe sends again within its connection: its
                    // first datagram may have been dropped for
                    // authentication.
                    result.auth_ms = Some(if drops.until_authenticated {
                        millis(first.elapsed)
                    } else {
                        0
                    });
                    Observed::AuthRequired
                }
                other => without_auth(other, "the first connection"),
            }
        };
        return;
    }
    if let Some(r) = retries {
        result.attempts = r.count.saturating_add(1);
    }
    result.observed = if drops.fin {
        Observed::Deny
    } else if !drops.until_authenticated {
        Observed::BlockedWithoutDrop(first.detail.clone().unwrap_or_else(|| "no detail".into()))
    } else {
        match retries {
            None => Observed::AuthPending(
                "reason `authentication required`; only auth-required probes are retried".into(),
            ),
            Some(Retries {
                completed: Some(o),
                waited,
                ..
            }) => match admission(o) {
                Admission::Authenticated(auth) => {
                    result.auth = Some(auth);
                    result.auth_ms = Some(millis(*waited));
                    Observed::AuthRequired
                }
                other => without_auth(
                    other,
                    &format!(
                        "connection {} after {} ms",
                        result.attempts,
                        millis(*waited)
                    ),
                ),
            },
            Some(r) => Observed::AuthPending(format!(
                "no connection completed within {} s of retries; the last: {}",
                AUTH_RETRY_WINDOW.as_secs(),
                r.last_failure.as_deref().unwrap_or("not made")
            )),
        }
    };
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

    fn outcome(completed: bool, client_port: u16) -> ProbeOutcome {
        ProbeOutcome {
            completed,
            elapsed: Duration::from_millis(if completed { 2 } else { 1000 }),
            client_port,
            detail: (!completed).then(|| "timed out".to_owned()),
        }
    }

    fn once(completed: bool, client_port: u16) -> ProbeRun {
        ProbeRun::once(Ok(outcome(completed, client_port)))
    }

    fn record(kind: FlowKind, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FlowRecord {
        let peer = |ip, port| FlowPeer {
            ip,
            port,
            identity: 0,
            name: None,
        };
        FlowRecord {
            seq: 1,
            time: String::new(),
            kind,
            reason: "forwarded".into(),
            reason_code: 0,
            direction: "ingress".into(),
            protocol: "tcp".into(),
            ethertype: 0x0800,
            src: peer(src, sport),
            dst: peer(dst, dport),
            ep_id: 1,
            rule: None,
            auth: None,
            auth_node: None,
        }
    }

    fn drop_record(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FlowRecord {
        FlowRecord {
            reason: "policy_denied".into(),
            reason_code: -133,
            ..record(FlowKind::Drop, src, sport, dst, dport)
        }
    }

    fn auth_drop(auth: &str, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FlowRecord {
        FlowRecord {
            reason: "auth_required".into(),
            reason_code: Reason::AuthRequired.code(),
            auth: Some(auth.into()),
            auth_node: Some("10.199.0.1".into()),
            ..record(FlowKind::Drop, src, sport, dst, dport)
        }
    }

    fn flow(
        auth: Option<&str>,
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
    ) -> FlowRecord {
        FlowRecord {
            auth: auth.map(str::to_owned),
            ..record(FlowKind::Flow, src, sport, dst, dport)
        }
    }

    fn report(probes: Vec<ProbeResult>, pods: &[&str]) -> ScenarioReport {
        let failed = probes.iter().filter(|p| !p.ok).count();
        ScenarioReport {
            file: "t.yaml".into(),
            name: Some("t".into()),
            error: None,
            skipped: None,
            passed: probes.len() - failed,
            failed,
            probe_secs: 1.0,
            probes,
            pods: pods.iter().map(|p| (*p).to_owned()).collect(),
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
        let runs = vec![
            once(false, 1000), // denied, drop recorded: ok
            once(false, 1001), // denied, no drop: mismatch
            once(true, 1002),  // allowed: ok
            once(false, 1003), // should be allowed: mismatch
            once(true, 1004),
            once(true, 1005),
        ];
        let records = vec![
            drop_record(ips["x/b"], 1000, ips["x/a"], 80),
            // Same flow but another source port: does not count.
            drop_record(ips["x/c"], 9999, ips["x/a"], 80),
        ];
        let flows = FlowIndex::new(&records);
        let results = judge(&s, &keys, &runs, &ips, &flows);
        let ok: Vec<bool> = results.iter().map(|r| r.ok).collect();
        assert_eq!(ok, [true, false, true, false, true, true]);
        assert!(matches!(
            results[1].observed,
            Observed::BlockedWithoutDrop(_)
        ));
        assert_eq!(results[3].expected, Verdict::Allow);
        let report = report(results, &["x/a", "x/b", "x/c"]);
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
        assert!(!text.contains("auth-required"), "{text}");
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
        // Probes made once carry no retry or authentication fields.
        let first = json["probes"][0].as_object().unwrap();
        for field in ["attempts", "auth", "auth_ms"] {
            assert!(!first.contains_key(field), "{field} in {first:?}");
        }
    }

    const AUTH: &str = r#"
version: 1
name: t
namespaces: {x: {ns: x}}
pods:
  - {name: x/s, node: n1, labels: {pod: s}, ports: [80/tcp, 81/tcp, 82/tcp, 83/tcp, 80/udp]}
  - {name: x/b, node: n1, labels: {pod: b}, ports: []}
  - {name: x/c, node: n1, labels: {pod: c}, ports: []}
  - {name: x/d, node: n1, labels: {pod: d}, ports: []}
  - {name: x/e, node: n1, labels: {pod: e}, ports: []}
expect:
  default: allow
  rules:
    - {from: "*", to: x/s, verdict: auth-required}
    - {from: x/e, to: x/s, verdict: deny}
"#;

    fn retried(client_port: u16, count: u32, completed: Option<u16>, waited_ms: u64) -> ProbeRun {
        ProbeRun {
            first: Ok(outcome(false, client_port)),
            retries: Some(Retries {
                count,
                completed: completed.map(|p| outcome(true, p)),
                waited: Duration::from_millis(waited_ms),
                last_failure: completed.is_none().then(|| "timed out".to_owned()),
            }),
        }
    }

    #[test]
    fn judging_auth_required_needs_the_authenticated_flow() {
        let s = Scenario::parse(AUTH, Path::new("t.yaml")).unwrap();
        let ip = |n: u8| Ipv4Addr::new(10, 0, 0, n);
        let ips: BTreeMap<String, Ipv4Addr> = ["x/s", "x/b", "x/c", "x/d", "x/e"]
            .iter()
            .zip(1..)
            .map(|(name, n)| ((*name).to_owned(), ip(n)))
            .collect();
        let srv = ips["x/s"];
        let key = |from: &str, port: &str| model::ProbeKey {
            from: from.into(),
            to: "x/s".into(),
            port: port.parse().unwrap(),
        };
        let mut udp_first = outcome(true, 1008);
        udp_first.elapsed = Duration::from_millis(260);
        let cases: Vec<(model::ProbeKey, ProbeRun)> = vec![
            // 0 authenticated beforehand: ok at 0 ms.
            (key("x/b", "80/tcp"), once(true, 1000)),
            // 1 completed, its flow events name no authentication.
            (key("x/b", "81/tcp"), once(true, 1001)),
            // 2 completed, no flow event at all.
            (key("x/b", "82/tcp"), once(true, 1002)),
            // 3 dropped until authenticated, the second retry completed
            // authenticated: ok after 1200 ms and 3 connections.
            (key("x/b", "83/tcp"), retried(1003, 2, Some(2003), 1200)),
            // 4 dropped until authenticated, no retry completed.
            (key("x/c", "80/tcp"), retried(1004, 5, None, 6000)),
            // 5 dropped by policy: not an authentication matter.
            (key("x/c", "81/tcp"), retried(1005, 5, None, 6000)),
            // 6 a retry completed, but not authenticated.
            (key("x/c", "82/tcp"), retried(1006, 1, Some(2006), 1010)),
            // 7 not completed, no drop recorded.
            (key("x/d", "80/tcp"), retried(1007, 5, None, 6000)),
            // 8 UDP: the first datagram dropped until authenticated, a
            // resent one in the same probe passed: ok after 260 ms.
            (key("x/b", "80/udp"), ProbeRun::once(Ok(udp_first))),
            // 9 deny, but dropped only until authenticated: mismatch.
            (key("x/e", "80/tcp"), once(false, 1009)),
            // 10 deny by a mode that never authenticates: ok.
            (key("x/e", "81/tcp"), once(false, 1010)),
            // 11 deny by policy: ok.
            (key("x/e", "82/tcp"), once(false, 1011)),
        ];
        let (keys, runs): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
        let b = ips["x/b"];
        let (c, e) = (ips["x/c"], ips["x/e"]);
        let mut records = vec![
            // Client egress (no authentication) and server ingress.
            flow(None, b, 1000, srv, 80),
            flow(Some("spiffe"), b, 1000, srv, 80),
            flow(None, b, 1001, srv, 81),
            auth_drop("spiffe", b, 1003, srv, 83),
            flow(Some("spiffe"), b, 2003, srv, 83),
            auth_drop("spiffe", c, 1004, srv, 80),
            drop_record(c, 1005, srv, 81),
            auth_drop("spiffe", c, 1006, srv, 82),
            flow(None, c, 2006, srv, 82),
            auth_drop("spiffe", b, 1008, srv, 80),
            flow(Some("spiffe"), b, 1008, srv, 80),
            auth_drop("spiffe", e, 1009, srv, 80),
            auth_drop("test-always-fail", e, 1010, srv, 81),
            drop_record(e, 1011, srv, 82),
        ];
        for r in &mut records[9..11] {
            r.protocol = "UDP".into();
        }
        let flows = FlowIndex::new(&records);
        let auth_required: Vec<bool> = keys
            .iter()
            .map(|k| s.expect.verdict(&k.from, &k.to, k.port) == Verdict::AuthRequired)
            .collect();
        assert_eq!(auth_required.iter().filter(|a| **a).count(), 9);
        // What the runner waits for: every present but the events of 1, 2,
        // 6 (no authenticated flow) and 7 (no drop).
        let needs = needed_events(&keys, &runs, &auth_required, &ips);
        let missing: Vec<u16> = needs
            .iter()
            .filter(|(k, n)| !flows.has(k, *n))
            .map(|(k, _)| k.1)
            .collect();
        assert_eq!(missing, [1001, 1002, 2006, 1007]);

        let results = judge(&s, &keys, &runs, &ips, &flows);
        let ok: Vec<bool> = results.iter().map(|r| r.ok).collect();
        assert_eq!(
            ok,
            [true, false, false, true, false, false, false, false, true, false, true, true]
        );
        let observed: Vec<&Observed> = results.iter().map(|r| &r.observed).collect();
        assert_eq!(observed[0], &Observed::AuthRequired);
        assert_eq!(
            (
                results[0].auth_ms,
                results[0].attempts,
                results[0].auth.as_deref()
            ),
            (Some(0), 1, Some("spiffe"))
        );
        assert!(
            matches!(observed[1], Observed::CompletedWithoutAuth(d) if d.contains("name no authentication")),
            "{:?}",
            observed[1]
        );
        assert!(
            matches!(observed[2], Observed::CompletedWithoutAuth(d) if d.contains("no flow event")),
            "{:?}",
            observed[2]
        );
        assert_eq!((results[3].auth_ms, results[3].attempts), (Some(1200), 3));
        assert!(results[3].drop_recorded && !results[3].completed);
        assert!(
            matches!(observed[4], Observed::AuthPending(d) if d.contains("within 5 s")),
            "{:?}",
            observed[4]
        );
        assert_eq!(results[4].attempts, 6);
        assert_eq!(observed[5], &Observed::Deny);
        assert!(
            matches!(observed[6], Observed::CompletedWithoutAuth(d) if d.contains("connection 2 after 1010 ms")),
            "{:?}",
            observed[6]
        );
        assert!(matches!(observed[7], Observed::BlockedWithoutDrop(_)));
        assert_eq!(results[8].auth_ms, Some(260));
        assert!(matches!(observed[9], Observed::AuthPending(_)));
        assert_eq!(observed[10], &Observed::Deny);
        assert_eq!(observed[11], &Observed::Deny);

        let report = report(results, &["x/s", "x/b", "x/c", "x/d", "x/e"]);
        let text = report.render();
        for line in [
            "x/b -> x/s 80/tcp: authenticated before the first connection",
            "x/b -> x/s 83/tcp: 1200 ms, 3 connection(s)",
            "x/b -> x/s 80/udp: 260 ms, 1 connection(s)",
            "x/c -> x/s 80/tcp: X dropped until authenticated (no connection completed within 5 s of retries; the last: timed out), 6 connection(s)",
            "x/e -> x/s 80/tcp: expected deny, observed dropped until authenticated",
            "x/b -> x/s 81/tcp: expected auth-required, observed completed without authentication",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
        assert!(text.trim_end().ends_with("5 passed, 7 failed"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["probes"][0]["observed"]["kind"], "auth-required");
        assert_eq!(json["probes"][0]["auth_ms"], 0);
        assert_eq!(json["probes"][0]["auth"], "spiffe");
        assert_eq!(json["probes"][3]["auth_ms"], 1200);
        assert_eq!(json["probes"][3]["attempts"], 3);
        assert_eq!(json["probes"][4]["observed"]["kind"], "auth-pending");
        assert_eq!(
            json["probes"][1]["observed"]["kind"],
            "completed-without-auth"
        );
        // And it reads back.
        let back: ScenarioReport = serde_json::from_value(json).unwrap();
        assert_eq!(back.probes[3].auth_ms, Some(1200));
        assert_eq!(back.probes[3].observed, Observed::AuthRequired);
    }

    #[test]
    fn reports_without_the_authentication_fields_still_read() {
        let old = r#"{"file": "t.yaml", "name": "t", "error": null, "passed": 1, "failed": 0,
            "probe_secs": 0.5, "probes": [{"from": "x/a", "to": "x/b", "port": "80/tcp",
            "src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "client_port": 4000,
            "expected": "deny", "observed": {"kind": "deny"}, "completed": false,
            "drop_recorded": true, "elapsed_ms": 1000, "ok": true}]}"#;
        let r: ScenarioReport = serde_json::from_str(old).unwrap();
        let p = &r.probes[0];
        assert_eq!((p.attempts, p.auth_ms, p.auth.as_deref()), (1, None, None));
        assert_eq!(p.observed, Observed::Deny);
        assert!(r.ok());
    }
}
