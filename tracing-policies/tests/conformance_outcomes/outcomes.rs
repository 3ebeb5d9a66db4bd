//! What compiling a corpus file gives on a kernel, and `outcomes.txt`, the
//! expected outcome of every file on every kernel.

use std::collections::BTreeMap;
use std::fmt;

use palisade_tracing_policies::compile::Attach;
use palisade_tracing_policies::{
    compile, parse_documents, CompileOptions, Host, ParseError, TracingPolicy,
};

use crate::kernels::KERNELS;

/// How a file fares on one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every hook is enforced as written; the mechanism of each hook.
    Loads(String),
    /// Loads only with `allow_monitoring_fallback` (actions reported, not
    /// carried out): the mechanisms, and the error without the fallback.
    Monitor(String, String),
    /// Refused: the error, `<YAML path>: <message>`.
    Rejected(String),
}

impl Outcome {
    /// Whether `self` (what happened) is what `expected` says: same kind
    /// and mechanisms, and an error that contains the expected text.
    pub fn satisfies(&self, expected: &Outcome) -> bool {
        match (self, expected) {
            (Self::Loads(m), Self::Loads(e)) => m == e,
            (Self::Monitor(m, err), Self::Monitor(e, sub)) => m == e && err.contains(sub.as_str()),
            (Self::Rejected(err), Self::Rejected(sub)) => err.contains(sub.as_str()),
            _ => false,
        }
    }

    /// The expected text of an error: the YAML path and the message up to
    /// "not supported ..." or the first "; " (the hint after it may change
    /// without changing the outcome).
    fn short(err: &str) -> String {
        for stop in ["not supported by this kernel", "not supported"] {
            if let Some(i) = err.find(stop) {
                return err[..i + stop.len()].to_owned();
            }
        }
        err.split("; ").next().unwrap_or(err).to_owned()
    }

    /// `self` with its error shortened for `outcomes.txt`.
    pub fn shortened(&self) -> Outcome {
        match self {
            Self::Loads(m) => Self::Loads(m.clone()),
            Self::Monitor(m, e) => Self::Monitor(m.clone(), Self::short(e)),
            Self::Rejected(e) => Self::Rejected(Self::short(e)),
        }
    }

    fn parse(text: &str) -> Result<Outcome, String> {
        let (kind, rest) = text.split_once(' ').unwrap_or((text, ""));
        let rest = rest.trim();
        match kind {
            "loads" if !rest.is_empty() => Ok(Self::Loads(rest.to_owned())),
            "monitor" => match rest.split_once(" -- ") {
                Some((m, e)) if !m.is_empty() && !e.is_empty() => {
                    Ok(Self::Monitor(m.to_owned(), e.to_owned()))
                }
                _ => Err("monitor <mechanisms> -- <error>".into()),
            },
            "rejected" if !rest.is_empty() => Ok(Self::Rejected(rest.to_owned())),
            _ => Err(
                "loads <mechanisms> | monitor <mechanisms> -- <error> | rejected <error>".into(),
            ),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loads(m) => write!(f, "loads {m}"),
            Self::Monitor(m, e) => write!(f, "monitor {m} -- {e}"),
            Self::Rejected(e) => write!(f, "rejected {e}"),
        }
    }
}

/// The mechanism of a hook, as `outcomes.txt` names it.
fn mechanism(a: &Attach) -> &'static str {
    match a {
        Attach::Syscall { .. } => "syscall sys_enter",
        Attach::Tracepoint { .. } => "tracepoint",
        Attach::RawTracepoint { .. } => "raw tracepoint",
        Attach::Kprobe { .. } => "kprobe",
        Attach::Lsm { .. } => "lsm",
        Attach::Fanotify { access } => match access {
            palisade_tracing_policies::compile::FanotifyAccess::Open => "fanotify open",
            palisade_tracing_policies::compile::FanotifyAccess::Exec => "fanotify exec",
        },
    }
}

/// The YAML paths of a policy's hooks, in the compiler's order.
fn hook_paths(p: &TracingPolicy) -> Vec<String> {
    let s = &p.spec;
    (0..s.kprobes.len())
        .map(|i| format!("spec.kprobes[{i}]"))
        .chain((0..s.tracepoints.len()).map(|i| format!("spec.tracepoints[{i}]")))
        .chain((0..s.lsm_hooks.len()).map(|i| format!("spec.lsmhooks[{i}]")))
        .collect()
}

/// One compiled policy: the policy, (path, mechanism) of each hook
/// compiled, the compiler's warnings.
type Compiled = (TracingPolicy, Vec<(String, &'static str)>, Vec<String>);

/// The mechanism of every hook of `policies` ("skipped" for a kprobe left
/// out by `ignore.callNotFound`), repeats written once with `xN`, then
/// `; warns <YAML path>` for each warning.
fn mechanisms(policies: &[Compiled]) -> String {
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for (p, hooks, _) in policies {
        for path in hook_paths(p) {
            let m = hooks
                .iter()
                .find(|(h, _)| *h == path)
                .map_or("skipped", |(_, m)| *m);
            match runs.last_mut() {
                Some((last, n)) if *last == m => *n += 1,
                _ => runs.push((m, 1)),
            }
        }
    }
    let parts: Vec<String> = runs
        .iter()
        .map(|&(m, n)| {
            if n == 1 {
                m.to_owned()
            } else {
                format!("{m} x{n}")
            }
        })
        .collect();
    let mut out = parts.join(", ");
    for (_, _, warnings) in policies {
        for w in warnings {
            let path = w.split_once(": ").map_or(w.as_str(), |(p, _)| p);
            out.push_str(&format!("; warns {path}"));
        }
    }
    out
}

/// `<YAML path>: <message>` of a refusal by the parser or validation.
fn parse_error(e: &ParseError) -> String {
    match e {
        ParseError::Policy { at, source } => format!("{}: {source}", at.path),
        ParseError::Schema { at, reason } => format!("{}: {reason}", at.path),
        other => other.to_string(),
    }
}

/// What compiling corpus file `name` gives on `host`.
pub fn outcome(name: &str, text: &str, host: &dyn Host) -> Outcome {
    let policies = match parse_documents(text, name) {
        Ok(p) => p,
        Err(e) => return Outcome::Rejected(parse_error(&e)),
    };
    let run = |options| -> Result<Vec<Compiled>, String> {
        policies
            .iter()
            .map(|p| {
                let c = compile(p, host, options).map_err(|e| format!("{}: {e}", e.path()))?;
                let hooks = c
                    .hooks
                    .iter()
                    .map(|h| (h.path.clone(), mechanism(&h.attach)))
                    .collect();
                Ok((p.clone(), hooks, c.warnings))
            })
            .collect()
    };
    let strict = CompileOptions {
        allow_monitoring_fallback: false,
    };
    let fallback = CompileOptions {
        allow_monitoring_fallback: true,
    };
    match run(strict) {
        Ok(c) => Outcome::Loads(mechanisms(&c)),
        Err(e) => match run(fallback) {
            Ok(mut c) => {
                // The fallback's own warnings are what `monitor` says.
                for (_, _, warnings) in &mut c {
                    warnings.retain(|w| !w.contains("loaded in monitoring mode"));
                }
                Outcome::Monitor(mechanisms(&c), e)
            }
            Err(_) => Outcome::Rejected(e),
        },
    }
}

/// `outcomes.txt`: (file, kernel) -> expected outcome.
pub type Expected = BTreeMap<(String, String), Outcome>;

/// Which kernels a kernel column of `outcomes.txt` names.
fn kernels_of(column: &str) -> Result<Vec<&'static str>, String> {
    if column == "vm" {
        return Ok(KERNELS
            .iter()
            .map(|k| k.name)
            .filter(|n| n.starts_with("debian-"))
            .collect());
    }
    KERNELS
        .iter()
        .find(|k| k.name == column)
        .map(|k| vec![k.name])
        .ok_or_else(|| format!("unknown kernel {column:?} (host, vm, debian-6.1, debian-6.12)"))
}

/// Reads `outcomes.txt`.
pub fn parse_expected(text: &str) -> Result<Expected, String> {
    let mut out = Expected::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("outcomes.txt:{}: {e}", n + 1);
        let fields = line
            .split_once(char::is_whitespace)
            .and_then(|(file, rest)| {
                let (column, rest) = rest.trim_start().split_once(char::is_whitespace)?;
                Some((file, column, rest))
            });
        let Some((file, column, rest)) = fields else {
            return Err(at("<file> <kernel> <outcome>".into()));
        };
        let outcome = Outcome::parse(rest.trim()).map_err(at)?;
        if let Outcome::Rejected(e) | Outcome::Monitor(_, e) = &outcome {
            if !e.starts_with("spec") {
                return Err(at(format!(
                    "the error {e:?} must start with the YAML path it names"
                )));
            }
        }
        for k in kernels_of(column).map_err(at)? {
            if out
                .insert((file.to_owned(), k.to_owned()), outcome.clone())
                .is_some()
            {
                return Err(at(format!("{file} on {k} is listed twice")));
            }
        }
    }
    Ok(out)
}

/// Writes `outcomes.txt` (after `header`): one line per file and kernel,
/// the two VM kernels as `vm` when they agree.
pub fn render_expected(header: &str, expected: &Expected) -> String {
    let mut files: Vec<&str> = expected.keys().map(|(f, _)| f.as_str()).collect();
    files.dedup();
    let width = files.iter().map(|f| f.len()).max().unwrap_or(0);
    let mut out = header.to_owned();
    for file in files {
        let get = |k: &str| expected.get(&(file.to_owned(), k.to_owned()));
        let mut line = |column: &str, o: &Outcome| {
            out.push_str(&format!("{file:width$}  {column:11}  {o}\n"));
        };
        if let Some(o) = get("host") {
            line("host", o);
        }
        match (get("debian-6.1"), get("debian-6.12")) {
            (Some(a), Some(b)) if a == b => line("vm", a),
            (a, b) => {
                if let Some(a) = a {
                    line("debian-6.1", a);
                }
                if let Some(b) = b {
                    line("debian-6.12", b);
                }
            }
        }
    }
    out
}

/// The comment block at the top of `outcomes.txt`.
pub fn header(text: &str) -> String {
    text.lines()
        .take_while(|l| l.is_empty() || l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}
