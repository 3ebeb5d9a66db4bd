//! Results of a scenario run: per-probe verdicts, the matrices and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::model::{ProbeKey, Verdict};
use crate::probe::PortProto;

/// What a probe observed, judged with the agent's flow events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "detail")]
pub enum Observed {
    /// The connection completed.
    Allow,
    /// It did not complete and the agent recorded a drop for it that
    /// authenticating would not lift.
    Deny,
    /// It needed mutual authentication and completed once the pair was
    /// authenticated: at once (authenticated beforehand) or on a retry
    /// (see [`ProbeResult::auth_ms`]).
    AuthRequired,
    /// It was dropped because the pair was not authenticated yet (reason
    /// `authentication required`), and no retry completed (or it was not
    /// retried: only `auth-required` probes are).
    AuthPending(String),
    /// It completed, but no flow event says it was authenticated.
    CompletedWithoutAuth(String),
    /// It did not complete but no drop was recorded (blocked elsewhere:
    /// refused, no route, lost...).
    BlockedWithoutDrop(String),
    /// The probe could not be made.
    Error(String),
}

impl std::fmt::Display for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Allow => f.write_str("allow"),
            Self::Deny => f.write_str("deny"),
            Self::AuthRequired => f.write_str("auth-required"),
            Self::AuthPending(d) => write!(f, "dropped until authenticated ({d})"),
            Self::CompletedWithoutAuth(d) => write!(f, "completed without authentication ({d})"),
            Self::BlockedWithoutDrop(d) => write!(f, "blocked without a recorded drop ({d})"),
            Self::Error(e) => write!(f, "probe error ({e})"),
        }
    }
}

/// One probe and its judgement. `client_port`, `completed`,
/// `drop_recorded` and `elapsed_ms` are of the first connection; the
/// `auth*` fields and `attempts` tell about authentication and retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Source pod.
    pub from: String,
    /// Destination pod.
    pub to: String,
    /// Destination port.
    pub port: PortProto,
    /// Source address.
    pub src_ip: Option<Ipv4Addr>,
    /// Destination address.
    pub dst_ip: Option<Ipv4Addr>,
    /// Source port of the probe.
    pub client_port: u16,
    /// Expected verdict.
    pub expected: Verdict,
    /// What happened.
    pub observed: Observed,
    /// The socket completed the exchange.
    pub completed: bool,
    /// A matching drop was found at the agent.
    pub drop_recorded: bool,
    /// Milliseconds until completion or giving up.
    pub elapsed_ms: u64,
    /// Connections made: 1, more when an `auth-required` probe was retried.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub attempts: u32,
    /// For a connection that needed mutual authentication and completed:
    /// the authentication its flow event names (`spiffe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// For an `auth-required` probe that completed authenticated:
    /// milliseconds from the start of its first connection to the end of
    /// the one that completed (0: the pair was authenticated beforehand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_ms: Option<u64>,
    /// Expected and observed agree.
    pub ok: bool,
}

fn one() -> u32 {
    1
}

// serde's `skip_serializing_if` passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_one(n: &u32) -> bool {
    *n == 1
}

impl ProbeResult {
    /// Whether `observed` satisfies `expected`.
    pub fn judge(expected: Verdict, observed: &Observed) -> bool {
        matches!(
            (expected, observed),
            (Verdict::Allow, Observed::Allow)
                | (Verdict::Deny, Observed::Deny)
                | (Verdict::AuthRequired, Observed::AuthRequired)
        )
    }

    fn key(&self) -> ProbeKey {
        ProbeKey {
            from: self.from.clone(),
            to: self.to.clone(),
            port: self.port,
        }
    }
}

/// The result of one scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// The file.
    pub file: String,
    /// The scenario's name (when it parsed).
    pub name: Option<String>,
    /// A setup error, if the scenario could not be run to the end.
    pub error: Option<String>,
    /// Why the scenario was skipped (it needs what this build lacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Probes that matched.
    pub passed: usize,
    /// Probes that did not (a setup error counts as one).
    pub failed: usize,
    /// Seconds the probes took.
    pub probe_secs: f64,
    /// Every probe.
    pub probes: Vec<ProbeResult>,
    /// Pods in file order (rows and columns of the matrices).
    #[serde(skip)]
    pub pods: Vec<String>,
}

impl ScenarioReport {
    /// A report for a scenario that could not run.
    pub fn setup_error(file: String, name: Option<String>, error: String) -> Self {
        Self {
            file,
            name,
            error: Some(error),
            skipped: None,
            passed: 0,
            failed: 1,
            probe_secs: 0.0,
            probes: Vec::new(),
            pods: Vec::new(),
        }
    }

    /// A report for a scenario that was not run because it needs a feature
    /// this build does not have; it counts as neither passed nor failed.
    pub fn skipped(file: String, name: Option<String>, reason: String) -> Self {
        Self {
            skipped: Some(reason),
            error: None,
            failed: 0,
            ..Self::setup_error(file, name, String::new())
        }
    }

    /// Whether everything matched (a skipped scenario is not a failure).
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.failed == 0
    }

    /// The text report: a matrix per port, the mismatches, and the line
    /// `N passed, M failed`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let title = self.name.as_deref().unwrap_or("?");
        let _ = writeln!(out, "scenario {title} ({})", self.file);
        if let Some(e) = &self.error {
            let _ = writeln!(out, "error: {e}");
        }
        if let Some(reason) = &self.skipped {
            let _ = writeln!(out, "skipped: {reason}");
            return out;
        }
        let by_key: BTreeMap<ProbeKey, &ProbeResult> =
            self.probes.iter().map(|p| (p.key(), p)).collect();
        let mut ports: Vec<PortProto> = self.probes.iter().map(|p| p.port).collect();
        ports.sort();
        ports.dedup();
        let width = self.pods.iter().map(String::len).max().unwrap_or(1).max(4);
        for port in ports {
            let _ = writeln!(
                out,
                "\n{port}  (rows: from, columns: to; `.` as expected, `X` mismatch, `-` not probed)"
            );
            let _ = write!(out, "{:width$}", "");
            for to in &self.pods {
                let _ = write!(out, " {to:>width$}");
            }
            out.push('\n');
            for from in &self.pods {
                let _ = write!(out, "{from:width$}");
                for to in &self.pods {
                    let key = ProbeKey {
                        from: from.clone(),
                        to: to.clone(),
                        port,
                    };
                    let cell = match by_key.get(&key) {
                        None => "-",
                        Some(p) if p.ok => ".",
                        Some(_) => "X",
                    };
                    let _ = write!(out, " {cell:>width$}");
                }
                out.push('\n');
            }
        }
        let auth: Vec<&ProbeResult> = self
            .probes
            .iter()
            .filter(|p| p.expected == Verdict::AuthRequired)
            .collect();
        if !auth.is_empty() {
            let _ = writeln!(
                out,
                "\nauth-required (from the first connection to one that completed authenticated, at most {} s of retries):",
                super::AUTH_RETRY_WINDOW.as_secs()
            );
            for p in auth {
                let how = match (p.ok, p.auth_ms) {
                    (true, Some(0)) => "authenticated before the first connection".to_owned(),
                    (true, Some(ms)) => format!("{ms} ms, {} connection(s)", p.attempts),
                    _ => format!("X {}, {} connection(s)", p.observed, p.attempts),
                };
                let _ = writeln!(out, "  {} -> {} {}: {how}", p.from, p.to, p.port);
            }
        }
        let bad: Vec<&ProbeResult> = self.probes.iter().filter(|p| !p.ok).collect();
        if !bad.is_empty() {
            let _ = writeln!(out, "\nmismatches (X):");
            for p in bad {
                let _ = writeln!(
                    out,
                    "  {} -> {} {}: expected {}, observed {} [{}:{} -> {}, {} ms]",
                    p.from,
                    p.to,
                    p.port,
                    p.expected,
                    p.observed,
                    p.src_ip.map(|i| i.to_string()).unwrap_or_default(),
                    p.client_port,
                    p.dst_ip.map(|i| i.to_string()).unwrap_or_default(),
                    p.elapsed_ms
                );
            }
        }
        let _ = writeln!(out, "\n{} passed, {} failed", self.passed, self.failed);
        out
    }
}
