//! Benchmarks behind `palisade-bench`: each measures palisade against a
//! baseline taken in the same run and reports the ratio (see BENCHMARKS.md).

pub mod auth;
pub mod cluster;
pub mod compile;
pub mod cross_node;
pub mod datapath;
pub mod node_ca;
pub mod rss;
pub mod runtime;
pub mod spiffe;

use std::time::Duration;

use anyhow::{bail, Context};
use palisade_api::{AgentStatus, EndpointRecord, Request, Response};
use palisade_tests::Node;

/// One benchmark's outcome: tables for people, JSON for tools.
#[derive(Debug)]
pub struct Report {
    /// Human-readable tables.
    pub tables: Vec<Table>,
    /// The same numbers (and more detail) as JSON.
    pub json: serde_json::Value,
}

/// A small text table.
#[derive(Debug)]
pub struct Table {
    /// Printed above it.
    pub title: String,
    /// Column names.
    pub header: Vec<String>,
    /// Cells.
    pub rows: Vec<Vec<String>>,
    /// Printed below it.
    pub notes: Vec<String>,
}

impl Table {
    /// An empty table.
    pub fn new(title: impl Into<String>, header: &[&str]) -> Self {
        Self {
            title: title.into(),
            header: header.iter().map(|s| (*s).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders it (first column left-aligned, others right-aligned).
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |r: &Vec<String>| {
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .take(cols)
                .map(|(i, c)| {
                    if i == 0 {
                        format!("{c:<w$}", w = width[i])
                    } else {
                        format!("{c:>w$}", w = width[i])
                    }
                })
                .collect();
            format!("| {} |", cells.join(" | "))
        };
        let mut out = format!("{}\n", self.title);
        out.push_str(&line(&self.header));
        out.push('\n');
        let sep: Vec<String> = width
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    "-".repeat(*w)
                } else {
                    format!("{}:", "-".repeat(w.saturating_sub(1)))
                }
            })
            .collect();
        out.push_str(&format!("| {} |\n", sep.join(" | ")));
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        for n in &self.notes {
            out.push_str(&format!("\n{n}\n"));
        }
        out
    }
}

/// Median of `v` (mean of the two middle values for an even count); NaN
/// for an empty slice.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The `p`-th percentile (nearest rank) of sorted `v`; 0 when empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Formats with `digits` decimals.
pub fn f(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
}

/// The agent's endpoints.
pub fn endpoints(node: &Node) -> anyhow::Result<Vec<EndpointRecord>> {
    match node
        .client()
        .call(&Request::EndpointList)
        .context("endpoint list")?
    {
        Response::Endpoints { endpoints } => Ok(endpoints),
        other => bail!("endpoint list: unexpected answer {other:?}"),
    }
}

/// The agent's status.
pub fn status(node: &Node) -> anyhow::Result<AgentStatus> {
    match node.client().call(&Request::Status).context("status")? {
        Response::Status(s) => Ok(*s),
        other => bail!("status: unexpected answer {other:?}"),
    }
}

/// Applies a YAML stream on one node; fails on an error answer.
pub fn apply(node: &Node, source: &str, yaml: &str) -> anyhow::Result<palisade_api::ApplySummary> {
    let request = Request::PolicyApply {
        source: source.to_owned(),
        yaml: yaml.to_owned(),
    };
    match node.client().call(&request).context("policy apply")? {
        Response::Applied { summary } => Ok(summary),
        Response::Done => Ok(palisade_api::ApplySummary::default()),
        other => bail!("policy apply: unexpected answer {other:?}"),
    }
}

/// `VmRSS` of a process in KiB.
pub fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, ...).
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            let kib = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .with_context(|| format!("{field} line {line:?} of {path}"))?;
            return Ok(kib);
        }
    }
    bail!("{path} has no {field} line")
}

/// CPU time (user + system) the agent has used so far, in seconds; 0 when
/// it cannot be read.
pub fn agent_cpu_secs(node: &Node) -> f64 {
    let Some(pid) = node.agent_pid() else {
        return 0.0;
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on every Linux architecture palisade runs on.
    (ticks(14) + ticks(15)) as f64 / 100.0
}

/// Progress on stderr.
pub fn say(msg: impl AsRef<str>) {
    eprintln!("palisade-bench: {}", msg.as_ref());
}

/// Today's date (UTC, `YYYY-MM-DD`) without a date crate.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

/// The machine: CPUs and kernel, for the report.
pub fn machine() -> serde_json::Value {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    serde_json::json!({"cpus": cpus, "kernel": kernel, "cpu_model": model, "date": today()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentile() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile::<u64>(&[], 50.0), 0);
    }
}
