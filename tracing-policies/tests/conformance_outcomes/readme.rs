//! README.md's list of conformance outcomes, rendered from `outcomes.txt`:
//! the files grouped by outcome, the rejected ones by reason.

use std::collections::BTreeMap;

use crate::kernels::KERNELS;
use crate::outcomes::{Expected, Outcome};

const BEGIN: &str = "<!-- conformance outcomes: generated from tracing-policies/tests/conformance_outcomes/outcomes.txt; PALISADE_BLESS=1 regenerates -->\n";
const END: &str = "<!-- end of conformance outcomes -->";

/// README.md as (up to the list, the list, from the end of the list).
pub fn split(readme: &str) -> Result<(&str, &str, &str), String> {
    let missing =
        |m: &str| format!("README.md has no line {m:?}; put the two markers where the list goes");
    let b = readme.find(BEGIN).ok_or_else(|| missing(BEGIN))? + BEGIN.len();
    let e = b + readme[b..].find(END).ok_or_else(|| missing(END.trim()))?;
    Ok((&readme[..b], &readme[b..e], &readme[e..]))
}

/// How the kernels of a set are called in the README.
fn kernels_label(kernels: &[&str]) -> String {
    let vm: Vec<&str> = KERNELS
        .iter()
        .map(|k| k.name)
        .filter(|n| *n != "host")
        .collect();
    if kernels.len() == KERNELS.len() {
        "every kernel".into()
    } else if kernels == vm.as_slice() {
        "the VM kernels".into()
    } else {
        kernels.join(", ")
    }
}

/// The message of an error without its YAML path, quoted names elided (a
/// reason shared by files that differ only in the function they hook).
fn reason(err: &str) -> String {
    let msg = err.split_once(": ").map_or(err, |(_, m)| m);
    let mut out = String::new();
    for (i, part) in msg.split('"').enumerate() {
        out.push_str(if i % 2 == 0 { part } else { "…" });
    }
    out
}

/// Per kernel, one file's outcome.
type Row<'a> = Vec<(&'static str, &'a Outcome)>;

/// `value` of each kernel of `row` that has one, in kernel order: the
/// value alone when there is one (unless `label`), else
/// `<kernels>: <value>` for each, joined by "; ".
fn per_kernel(row: &Row<'_>, label: bool, value: impl Fn(&Outcome) -> Option<String>) -> String {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for (k, o) in row {
        let Some(v) = value(o) else { continue };
        match groups.iter_mut().find(|(x, _)| *x == v) {
            Some((_, ks)) => ks.push(k),
            None => groups.push((v, vec![k])),
        }
    }
    if groups.len() == 1 && !label {
        return groups.remove(0).0;
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(v, ks)| {
            let who = match kernels_label(ks).as_str() {
                "the VM kernels" => "VM".to_owned(),
                other => other.to_owned(),
            };
            format!("{who}: {v}")
        })
        .collect();
    parts.join("; ")
}

/// The mechanisms of the kernels of `row` that load it.
fn mechanisms(row: &Row<'_>) -> String {
    per_kernel(row, false, |o| match o {
        Outcome::Loads(m) | Outcome::Monitor(m, _) => Some(format!("`{m}`")),
        Outcome::Rejected(_) => None,
    })
}

/// The reasons of the kernels of `row` that reject it (`host: …`).
fn reasons(row: &Row<'_>) -> String {
    per_kernel(row, true, |o| match o {
        Outcome::Rejected(e) => Some(reason(e)),
        _ => None,
    })
}

/// The list.
pub fn render(expected: &Expected) -> String {
    let mut rows: BTreeMap<&str, Row<'_>> = BTreeMap::new();
    for ((file, kernel), o) in expected {
        let k = KERNELS
            .iter()
            .find(|k| k.name == kernel)
            .map(|k| k.name)
            .unwrap_or("?");
        rows.entry(file.as_str()).or_default().push((k, o));
    }
    for row in rows.values_mut() {
        row.sort_by_key(|(k, _)| KERNELS.iter().position(|x| x.name == *k));
    }
    let kernels_where = |row: &Row<'_>, f: fn(&Outcome) -> bool| -> Vec<&'static str> {
        row.iter().filter(|(_, o)| f(o)).map(|(k, _)| *k).collect()
    };
    let (mut everywhere, mut monitor) = (Vec::new(), Vec::new());
    // (where it loads, why not elsewhere) -> lines
    let mut some: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    // (reason on the host if the VM kernels' differ, reason on those) -> files
    let mut rejected: BTreeMap<(Option<String>, String), Vec<&str>> = BTreeMap::new();
    for (file, row) in &rows {
        let loads = kernels_where(row, |o| matches!(o, Outcome::Loads(_)));
        let monitors = kernels_where(row, |o| matches!(o, Outcome::Monitor(..)));
        if loads.len() == row.len() {
            everywhere.push(format!("  - `{file}`: {}", mechanisms(row)));
        } else if !monitors.is_empty() {
            let rest = if monitors.len() + loads.len() == row.len() {
                String::new()
            } else {
                format!("; rejected on {}", reasons(row))
            };
            let why = row
                .iter()
                .find_map(|(_, o)| match o {
                    Outcome::Monitor(_, e) => Some(reason(e)),
                    _ => None,
                })
                .unwrap_or_default();
            monitor.push(format!(
                "  - `{file}` on {}: {} ({why}){rest}",
                kernels_label(&monitors),
                mechanisms(row)
            ));
        } else if !loads.is_empty() {
            some.entry((kernels_label(&loads), reasons(row)))
                .or_default()
                .push(format!("  - `{file}`: {}", mechanisms(row)));
        } else {
            rejected.entry(rejection(row)).or_default().push(file);
        }
    }
    let mut out = String::new();
    let mut section = |title: &str, note: &str, lines: &[String]| {
        if !lines.is_empty() {
            out.push_str(&format!("- **{title}** ({}){note}:\n", lines.len()));
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
        }
    };
    section("Load on every kernel", "", &everywhere);
    section(
        "Load in monitoring fallback only",
        " (actions reported, not carried out)",
        &monitor,
    );
    for ((loads, rejected), lines) in &some {
        section(
            &format!("Load on {loads} only"),
            &format!("; rejected on {rejected}"),
            lines,
        );
    }
    let n: usize = rejected.values().map(Vec::len).sum();
    if n > 0 {
        out.push_str(&format!("- **Rejected on every kernel** ({n}):\n"));
    }
    // Same reason everywhere first, then by the host's reason; the largest
    // groups first within each.
    let mut by_host: BTreeMap<Option<String>, Vec<(&String, &Vec<&str>)>> = BTreeMap::new();
    for ((host, vm), files) in &rejected {
        by_host.entry(host.clone()).or_default().push((vm, files));
    }
    for (host, mut groups) in by_host {
        groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        out.push_str(&match &host {
            None => "  - for the same reason on every kernel:\n".to_owned(),
            Some(h) => format!("  - on the host, {h}; on the VM kernels:\n"),
        });
        for (reason, files) in groups {
            let files: Vec<String> = files.iter().map(|f| format!("`{f}`")).collect();
            out.push_str(&format!("    - {reason}: {}\n", files.join(", ")));
        }
    }
    out
}

/// The reasons a file is rejected for: `(None, reason)` when every kernel
/// gives the same, else `(Some(host's), the VM kernels')`.
fn rejection(row: &Row<'_>) -> (Option<String>, String) {
    let (host, vm): (Row<'_>, Row<'_>) = row.iter().partition(|(k, _)| *k == "host");
    let why = |o: &Outcome| match o {
        Outcome::Rejected(e) => Some(reason(e)),
        _ => None,
    };
    let (host, vm) = (per_kernel(&host, false, why), per_kernel(&vm, false, why));
    ((host != vm).then_some(host), vm)
}
