//! `palisade-bench policy-compile`: the policy compiler on its own (the
//! workload of `policies/examples/compile_bench.rs`: full plan vs one-rule
//! change), and a live agent: `PolicyApply` of a one-rule change answered
//! (compile + map update) with 1,000+ rules loaded vs with none loaded.

use std::time::Instant;

use anyhow::{bail, Context};
use palisade_tests::{PodSpec, Topology};
use serde_json::json;

use super::{f, median, ms, percentile, say, Report, Table};

#[path = "../../../policies/examples/common/workload.rs"]
#[allow(dead_code, missing_docs, clippy::all)]
mod workload;

/// Options of `palisade-bench policy-compile`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rules of the compiler workload.
    pub rules: usize,
    /// Identities of the compiler workload.
    pub identities: usize,
    /// Rules loaded in the live agent.
    pub live_rules: usize,
    /// Endpoints (pods) of the live agent.
    pub live_pods: usize,
    /// One-rule changes timed (each phase).
    pub changes: usize,
    /// Harness progress on stderr.
    pub verbose: bool,
}

/// Runs both parts.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let (t1, j1) = offline(opts);
    let (t2, j2) = live(opts)?;
    Ok(Report {
        tables: vec![t1, t2],
        json: json!({"benchmark": "policy-compile", "compiler": j1, "live_agent": j2}),
    })
}

fn offline(opts: &Options) -> (Table, serde_json::Value) {
    let (rules, identities) = (opts.rules, opts.identities);
    say(format!(
        "compiler: {rules} rules over {identities} identities"
    ));
    let t0 = Instant::now();
    let mut e = workload::load(rules, identities);
    let loaded = t0.elapsed();
    let diff = e.compute();
    let full = t0.elapsed();
    let entries = diff.upserts.len();
    let mut one = Vec::new();
    for v in 1..=opts.changes.max(1) {
        let t = Instant::now();
        workload::change(&mut e, identities, u16::try_from(v).unwrap_or(u16::MAX));
        let d = e.compute();
        one.push(ms(t.elapsed()));
        if d.is_empty() {
            say("compiler: a one-rule change produced no map change (workload bug?)");
        }
    }
    let one_med = median(&one);
    let full_ms = ms(full);
    let mut t = Table::new(
        format!(
            "policy-compile (compiler only): {rules} rules, {identities} identities, {} endpoints, {entries} entries",
            workload::ENDPOINTS
        ),
        &["operation", "ms", "ratio to full plan"],
    );
    t.row(vec![
        "full plan (load + compute), baseline".into(),
        f(full_ms, 1),
        "1".into(),
    ]);
    t.row(vec![
        "  of which load".into(),
        f(ms(loaded), 1),
        f(ms(loaded) / full_ms, 3),
    ]);
    t.row(vec![
        format!("one-rule change + compute (median of {})", one.len()),
        f(one_med, 3),
        format!("{:.5}", one_med / full_ms),
    ]);
    let json = json!({
        "rules": rules, "identities": identities, "endpoints": workload::ENDPOINTS, "entries": entries,
        "load_ms": ms(loaded), "full_plan_ms": full_ms,
        "one_rule_change_ms": {"median": one_med, "min": one.iter().copied().fold(f64::INFINITY, f64::min),
                                "max": one.iter().copied().fold(0.0, f64::max), "count": one.len()},
        "ratio_one_to_full": one_med / full_ms,
    });
    (t, json)
}

const NS: &str = "pc";

/// A policy with `rules` ingress rules selecting the pods that match
/// `subject` (`app: web` is every pod, `pod: w0` one): rule j allows pods
/// of role `r{j%5}` to TCP port `base + j`.
fn policy_doc(name: &str, subject: (&str, &str), rules: usize, base: usize) -> serde_json::Value {
    let ingress: Vec<serde_json::Value> = (0..rules)
        .map(|j| {
            json!({"fromEndpoints": [{"matchLabels": {"role": format!("r{}", j % 5)}}],
                   "toPorts": [{"ports": [{"port": (base + j).to_string(), "protocol": "TCP"}]}]})
        })
        .collect();
    json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"endpointSelector": {"matchLabels": {subject.0: subject.1}}, "ingress": ingress},
    })
}

fn yaml(docs: &[serde_json::Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml::to_string(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The one-rule changes timed: a policy selecting every endpoint, and one
/// selecting a single endpoint.
const SUBJECTS: [(&str, (&str, &str)); 2] = [
    ("pc-change-all", ("app", "web")),
    ("pc-change-one", ("pod", "w0")),
];

/// Times `n` one-rule changes of policy `name` (its one port moved).
fn changes(
    node: &palisade_tests::Node,
    name: &str,
    subject: (&str, &str),
    n: usize,
    first: usize,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut times = Vec::with_capacity(n);
    let mut written = 0;
    for k in 0..n {
        let doc = policy_doc(name, subject, 1, 40_000 + first + k);
        let text = yaml(&[doc]);
        let t = Instant::now();
        let s = super::apply(node, "bench-change", &text)?;
        times.push(ms(t.elapsed()));
        if s.entries_upserted == 0 {
            bail!("a one-rule change wrote no policy entry: {s:?}");
        }
        written += s.entries_upserted + s.entries_deleted;
    }
    Ok((times, written))
}

fn live(opts: &Options) -> anyhow::Result<(Table, serde_json::Value)> {
    let mut b = Topology::builder()
        .namespace(NS, [("ns".to_owned(), NS.to_owned())].into())
        .verbose(opts.verbose);
    for i in 0..opts.live_pods {
        b = b.pod(
            PodSpec::new(NS, &format!("w{i}"))
                .label("app", "web")
                .label("pod", &format!("w{i}"))
                .label("role", &format!("r{}", i % 5)),
        );
    }
    let topo = b
        .build()
        .context("building the topology (node n1 with pods)")?;
    let node = topo.node("n1")?;

    // Warm up the API path, then the baseline: the changes with nothing
    // else loaded.
    let mut base = Vec::new();
    // Ports: 40000 + 10000 * policy + 1000 * phase + k, distinct per policy
    // so that the two never write the same entry.
    for (i, (name, subject)) in SUBJECTS.into_iter().enumerate() {
        super::apply(
            node,
            "bench-change",
            &yaml(&[policy_doc(name, subject, 1, 39_000 + i)]),
        )?;
        base.push(changes(node, name, subject, opts.changes, i * 10_000)?);
    }
    let entries_before = super::status(node)?.policy_entries;

    let mut docs = Vec::new();
    let mut left = opts.live_rules;
    let mut k = 0;
    while left > 0 {
        let n = left.min(100);
        docs.push(policy_doc(
            &format!("pc-fill-{k}"),
            ("app", "web"),
            n,
            10_000 + k * 100,
        ));
        left -= n;
        k += 1;
    }
    let t = Instant::now();
    let s = super::apply(node, "bench-fill", &yaml(&docs))?;
    let fill = t.elapsed();
    let entries_loaded = super::status(node)?.policy_entries;
    say(format!(
        "live agent: {} rules in {} policies applied in {:.0} ms, {} entries written; {} entries in all",
        opts.live_rules,
        docs.len(),
        ms(fill),
        s.entries_upserted,
        entries_loaded
    ));
    let mut loaded = Vec::new();
    for (i, (name, subject)) in SUBJECTS.into_iter().enumerate() {
        loaded.push(changes(
            node,
            name,
            subject,
            opts.changes,
            i * 10_000 + 1000,
        )?);
    }
    let entries_after = super::status(node)?.policy_entries;
    if entries_after < opts.live_rules {
        bail!(
            "only {entries_after} policy entries with {} rules loaded",
            opts.live_rules
        );
    }

    let mut t = Table::new(
        format!(
            "policy-compile (live agent, {} endpoints, every rule selects all of them): PolicyApply of a one-rule change until the answer (compile + map update), median of {} changes",
            opts.live_pods, opts.changes
        ),
        &["changed policy selects", "baseline: nothing else loaded (ms)", &format!("{} rules loaded (ms)", opts.live_rules), "ratio", "p90 / max loaded (ms)"],
    );
    let mut rows = Vec::new();
    for (i, (name, _)) in SUBJECTS.iter().enumerate() {
        let mut sb = base[i].0.clone();
        sb.sort_by(f64::total_cmp);
        let mut sl = loaded[i].0.clone();
        sl.sort_by(f64::total_cmp);
        let (mb, ml) = (median(&sb), median(&sl));
        let what = if i == 0 {
            format!("all {} endpoints", opts.live_pods)
        } else {
            "1 endpoint".to_owned()
        };
        t.row(vec![
            what.clone(),
            f(mb, 2),
            f(ml, 2),
            f(ml / mb, 2),
            format!(
                "{} / {}",
                f(percentile(&sl, 90.0), 2),
                f(sl.last().copied().unwrap_or(f64::NAN), 2)
            ),
        ]);
        rows.push(json!({
            "policy": name, "selects": what,
            "baseline": {"median_ms": mb, "p90_ms": percentile(&sb, 90.0), "max_ms": sb.last(),
                         "entries_changed": base[i].1, "all_ms": base[i].0},
            "loaded": {"median_ms": ml, "p90_ms": percentile(&sl, 90.0), "max_ms": sl.last(),
                       "entries_changed": loaded[i].1, "all_ms": loaded[i].0},
            "ratio_loaded_to_baseline": ml / mb,
        }));
    }
    t.notes.push(format!(
        "policy entries: {entries_before} before loading, {entries_after} with the {} rules loaded; applying the {} rules at once took {:.0} ms ({} entries written).",
        opts.live_rules,
        opts.live_rules,
        ms(fill),
        s.entries_upserted
    ));
    let json = json!({
        "pods": opts.live_pods, "rules": opts.live_rules, "changes": opts.changes,
        "fill_apply_ms": ms(fill), "fill_entries_written": s.entries_upserted,
        "policy_entries_baseline": entries_before, "policy_entries_loaded": entries_after,
        "one_rule_changes": rows,
    });
    topo.cleanup()?;
    Ok((t, json))
}
