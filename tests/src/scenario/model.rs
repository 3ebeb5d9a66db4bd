//! Scenario format v1 (`shared/spec/scenario.md`): parsing and checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::probe::PortProto;
use crate::topology::PodSpec;

/// Why a scenario file cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("{file}: at `{field}`: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The YAML path of the offending field.
        field: String,
        /// What is wrong and what would fix it.
        message: String,
    },
    /// The scenario is valid but uses something the runner cannot do yet.
    #[error("{file}: at `{field}`: {feature} is not supported yet: {why}")]
    Unsupported {
        /// The file.
        file: PathBuf,
        /// The YAML path.
        field: String,
        /// The feature.
        feature: String,
        /// Why not.
        why: String,
    },
}

/// An expected verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The connection completes.
    Allow,
    /// It does not, and the agent records a drop that authenticating would
    /// not lift.
    Deny,
    /// Denied until mutual authentication of the two identities has
    /// completed, then it completes (on a retry within 5 s, or at once when
    /// the pair was authenticated beforehand).
    AuthRequired,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::AuthRequired => "auth-required",
        })
    }
}

/// Node-to-node encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// None.
    #[default]
    None,
    /// WireGuard between nodes.
    Wireguard,
}

/// A label value: YAML scalars (`1`, `true`) are taken as their text, as
/// `kubectl` users write them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelValue(String);

impl<'de> Deserialize<'de> for LabelValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) => Ok(Self(s)),
            serde_yaml::Value::Number(n) => Ok(Self(n.to_string())),
            serde_yaml::Value::Bool(b) => Ok(Self(b.to_string())),
            serde_yaml::Value::Null => Ok(Self(String::new())),
            _ => Err(serde::de::Error::custom(
                "a label value must be a string (or a number or boolean)",
            )),
        }
    }
}

type RawLabels = BTreeMap<String, LabelValue>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    version: u32,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    nodes: Option<Vec<String>>,
    #[serde(default)]
    encryption: Option<Encryption>,
    #[serde(default)]
    namespaces: BTreeMap<String, Option<RawLabels>>,
    pods: Vec<RawPod>,
    #[serde(default)]
    policies: Option<String>,
    expect: RawExpect,
    #[serde(default)]
    probes: Option<Vec<RawProbe>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPod {
    name: String,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    labels: Option<RawLabels>,
    #[serde(default)]
    ports: Vec<PortProto>,
    #[serde(default, rename = "serviceAccount")]
    service_account: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    default: Verdict,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    from: String,
    to: String,
    #[serde(default)]
    port: Option<PortProto>,
    verdict: Verdict,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    from: String,
    to: String,
    #[serde(default)]
    port: Option<PortProto>,
}

/// A pod pattern: `ns/pod` where `*` matches within one part, or `*` for
/// every pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodGlob {
    text: String,
    parts: Option<(String, String)>,
}

impl PodGlob {
    /// Parses a pattern.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self {
                text: s.to_owned(),
                parts: None,
            });
        }
        let (ns, pod) = s.split_once('/').ok_or_else(|| {
            format!("{s:?} is not a pod: write ns/pod, a glob like x/* or */a, or *")
        })?;
        for part in [ns, pod] {
            if part.is_empty()
                || part.contains('/')
                || !part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*'))
            {
                return Err(format!(
                    "{s:?} is not a pod pattern: each of ns and pod is a name in which * matches any characters but /"
                ));
            }
        }
        Ok(Self {
            text: s.to_owned(),
            parts: Some((ns.to_owned(), pod.to_owned())),
        })
    }

    /// Whether pod `ns/pod` matches.
    pub fn matches(&self, pod: &str) -> bool {
        let Some((gns, gpod)) = &self.parts else {
            return true;
        };
        let Some((ns, name)) = pod.split_once('/') else {
            return false;
        };
        wildcard(gns, ns) && wildcard(gpod, name)
    }

    /// Whether the pattern has no `*`.
    pub fn is_literal(&self) -> bool {
        !self.text.contains('*')
    }
}

impl fmt::Display for PodGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `*`-only wildcard match.
fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// One rule of `expect.rules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Source pattern.
    pub from: PodGlob,
    /// Destination pattern.
    pub to: PodGlob,
    /// Port, or every port of the destination.
    pub port: Option<PortProto>,
    /// The verdict.
    pub verdict: Verdict,
}

/// `expect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// Verdict when no rule matches.
    pub default: Verdict,
    /// Rules; the last matching one wins.
    pub rules: Vec<Rule>,
}

impl Expect {
    /// The expected verdict of (from, to, port).
    pub fn verdict(&self, from: &str, to: &str, port: PortProto) -> Verdict {
        self.rules
            .iter()
            .rev()
            .find(|r| r.from.matches(from) && r.to.matches(to) && r.port.is_none_or(|p| p == port))
            .map_or(self.default, |r| r.verdict)
    }
}

/// One entry of `probes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSelector {
    /// Source pattern.
    pub from: PodGlob,
    /// Destination pattern.
    pub to: PodGlob,
    /// Port, or every port of the destination.
    pub port: Option<PortProto>,
}

/// One (from, to, port) to probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbeKey {
    /// Source pod.
    pub from: String,
    /// Destination pod.
    pub to: String,
    /// Destination port.
    pub port: PortProto,
}

/// A checked scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file it came from.
    pub file: PathBuf,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// Node names.
    pub nodes: Vec<String>,
    /// Node-to-node encryption.
    pub encryption: Encryption,
    /// Namespaces and their labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Pods, in file order.
    pub pods: Vec<PodSpec>,
    /// The policy stream (may be empty).
    pub policies: String,
    /// Expected verdicts.
    pub expect: Expect,
    /// Explicit probes, if given.
    pub probes: Option<Vec<ProbeSelector>>,
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Scenario {
    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            file: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses a scenario; `file` is used in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ScenarioError> {
        let invalid = |field: &str, message: String| ScenarioError::Invalid {
            file: file.to_owned(),
            field: field.to_owned(),
            message,
        };
        let de = serde_yaml::Deserializer::from_str(text);
        let raw: RawScenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "(top level)".to_owned()
            } else {
                path
            };
            invalid(&field, e.into_inner().to_string())
        })?;
        if raw.version != 1 {
            return Err(invalid(
                "version",
                format!(
                    "version {} is unknown: this runner reads format version 1",
                    raw.version
                ),
            ));
        }
        if !is_dns_label(&raw.name) {
            return Err(invalid(
                "name",
                format!(
                    "{:?} is not kebab-case (lowercase letters, digits and -)",
                    raw.name
                ),
            ));
        }
        let nodes = raw.nodes.unwrap_or_else(|| vec!["n1".to_owned()]);
        if nodes.is_empty() {
            return Err(invalid(
                "nodes",
                "lists no node; omit it for the default [n1]".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, n) in nodes.iter().enumerate() {
            if !is_dns_label(n) || n.len() > 20 {
                return Err(invalid(
                    &format!("nodes[{i}]"),
                    format!(
                        "{n:?} is not a node name (lowercase letters, digits and -, at most 20)"
                    ),
                ));
            }
            if !seen.insert(n.as_str()) {
                return Err(invalid(
                    &format!("nodes[{i}]"),
                    format!("node {n} is listed twice"),
                ));
            }
        }
        let mut namespaces = BTreeMap::new();
        for (ns, labels) in raw.namespaces {
            if !is_dns_label(&ns) {
                return Err(invalid(
                    &format!("namespaces.{ns}"),
                    format!("{ns:?} is not a namespace name (lowercase letters, digits and -)"),
                ));
            }
            let labels = labels
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            namespaces.insert(ns, labels);
        }
        let mut pods: Vec<PodSpec> = Vec::new();
        for (i, p) in raw.pods.into_iter().enumerate() {
            let field = |f: &str| format!("pods[{i}].{f}");
            let (ns, name) = p
                .name
                .split_once('/')
                .ok_or_else(|| invalid(&field("name"), format!("{:?} is not ns/pod", p.name)))?;
            if !is_dns_label(ns) || !is_dns_label(name) {
                return Err(invalid(
                    &field("name"),
                    format!("{:?} is not ns/pod with lowercase DNS names", p.name),
                ));
            }
            if !namespaces.contains_key(ns) {
                return Err(invalid(
                    &field("name"),
                    format!(
                        "namespace {ns} of pod {} is not listed under `namespaces`",
                        p.name
                    ),
                ));
            }
            if pods.iter().any(|q| q.full_name() == p.name) {
                return Err(invalid(
                    &field("name"),
                    format!("pod {} is listed twice", p.name),
                ));
            }
            let node = p.node.unwrap_or_else(|| nodes[0].clone());
            if !nodes.contains(&node) {
                return Err(invalid(
                    &field("node"),
                    format!(
                        "node {node} is not listed under `nodes` ({})",
                        nodes.join(", ")
                    ),
                ));
            }
            let mut ports: Vec<PortProto> = Vec::new();
            for (j, port) in p.ports.into_iter().enumerate() {
                if ports.contains(&port) {
                    return Err(invalid(
                        &field(&format!("ports[{j}]")),
                        format!("{port} is listed twice"),
                    ));
                }
                ports.push(port);
            }
            let labels = p
                .labels
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            pods.push(PodSpec {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                node,
                labels,
                ports,
                service_account: p.service_account,
            });
        }
        if pods.is_empty() {
            return Err(invalid("pods", "lists no pod".into()));
        }
        let mut rules = Vec::new();
        for (i, r) in raw.expect.rules.into_iter().enumerate() {
            let f = |x: &str| format!("expect.rules[{i}].{x}");
            rules.push(Rule {
                from: PodGlob::parse(&r.from).map_err(|m| invalid(&f("from"), m))?,
                to: PodGlob::parse(&r.to).map_err(|m| invalid(&f("to"), m))?,
                port: r.port,
                verdict: r.verdict,
            });
        }
        let probes = match raw.probes {
            None => None,
            Some(list) => {
                let mut out = Vec::new();
                for (i, p) in list.into_iter().enumerate() {
                    let f = |x: &str| format!("probes[{i}].{x}");
                    out.push(ProbeSelector {
                        from: PodGlob::parse(&p.from).map_err(|m| invalid(&f("from"), m))?,
                        to: PodGlob::parse(&p.to).map_err(|m| invalid(&f("to"), m))?,
                        port: p.port,
                    });
                }
                Some(out)
            }
        };
        let scenario = Self {
            file: file.to_owned(),
            name: raw.name,
            description: raw.description,
            nodes,
            encryption: raw.encryption.unwrap_or_default(),
            namespaces,
            pods,
            policies: raw.policies.unwrap_or_default(),
            expect: Expect {
                default: raw.expect.default,
                rules,
            },
            probes,
        };
        // Explicit probes must each select something.
        scenario.probe_set()?;
        Ok(scenario)
    }

    /// Rejects what the runner cannot do yet, naming it and why.
    pub fn check_supported(&self) -> Result<(), ScenarioError> {
        let unsupported = |field: &str, feature: String, why: &str| ScenarioError::Unsupported {
            file: self.file.clone(),
            field: field.to_owned(),
            feature,
            why: why.to_owned(),
        };
        if self.encryption == Encryption::Wireguard {
            return Err(unsupported(
                "encryption",
                "encryption: wireguard".into(),
                "node-to-node WireGuard needs more than one node and the WireGuard datapath; that comes with a later issue",
            ));
        }
        Ok(())
    }

    /// Every (from, to, port) to probe: all pairs with from != to over
    /// every port of `to`, or what `probes` selects. In a stable order.
    pub fn probe_set(&self) -> Result<Vec<ProbeKey>, ScenarioError> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut push = |k: ProbeKey| {
            if seen.insert(k.clone()) {
                out.push(k);
            }
        };
        match &self.probes {
            None => {
                for to in &self.pods {
                    for port in &to.ports {
                        for from in &self.pods {
                            if from.full_name() != to.full_name() {
                                push(ProbeKey {
                                    from: from.full_name(),
                                    to: to.full_name(),
                                    port: *port,
                                });
                            }
                        }
                    }
                }
            }
            Some(selectors) => {
                for (i, sel) in selectors.iter().enumerate() {
                    let mut n = 0;
                    for from in self
                        .pods
                        .iter()
                        .filter(|p| sel.from.matches(&p.full_name()))
                    {
                        for to in self.pods.iter().filter(|p| sel.to.matches(&p.full_name())) {
                            if from.full_name() == to.full_name() {
                                continue;
                            }
                            for port in to
                                .ports
                                .iter()
                                .filter(|p| sel.port.is_none_or(|s| s == **p))
                            {
                                n += 1;
                                push(ProbeKey {
                                    from: from.full_name(),
                                    to: to.full_name(),
                                    port: *port,
                                });
                            }
                        }
                    }
                    if n == 0 {
                        return Err(ScenarioError::Invalid {
                            file: self.file.clone(),
                            field: format!("probes[{i}]"),
                            message: format!(
                                "from {} to {}{} selects no probe: no such pods, or the destination does not listen on that port",
                                sel.from,
                                sel.to,
                                sel.port.map(|p| format!(" port {p}")).unwrap_or_default()
                            ),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("t.yaml"))
    }

    const BASE: &str = r#"
version: 1
name: t
namespaces:
  x: {ns: x}
  y: {}
pods:
  - {name: x/a, node: n1, labels: {pod: a}, ports: [80/tcp, 80/udp]}
  - {name: x/b, labels: {pod: b, tier: 1}, ports: [80/tcp]}
  - {name: y/a, node: n1, labels: {pod: a}, ports: [81/tcp], serviceAccount: sa}
expect:
  default: allow
  rules:
    - {from: "*", to: "x/*", verdict: deny}
    - {from: "x/*", to: "x/a", port: 80/tcp, verdict: allow}
"#;

    #[test]
    fn globs() {
        let g = PodGlob::parse("x/*").unwrap();
        assert!(g.matches("x/a") && !g.matches("y/a"));
        let g = PodGlob::parse("*/a").unwrap();
        assert!(g.matches("x/a") && g.matches("cilium-test/a") && !g.matches("x/b"));
        assert!(PodGlob::parse("*").unwrap().matches("any/thing"));
        let g = PodGlob::parse("x/echo-*").unwrap();
        assert!(g.matches("x/echo-same-node") && !g.matches("x/client"));
        assert!(PodGlob::parse("x").is_err());
        assert!(PodGlob::parse("x/a/b").is_err());
        assert!(PodGlob::parse("/a").is_err());
    }

    #[test]
    fn last_matching_rule_wins() {
        let s = parse(BASE).unwrap();
        assert_eq!(
            s.expect.verdict("y/a", "x/a", PortProto::tcp(80)),
            Verdict::Deny
        );
        assert_eq!(
            s.expect.verdict("x/b", "x/a", PortProto::tcp(80)),
            Verdict::Allow
        );
        assert_eq!(
            s.expect.verdict("x/b", "x/a", PortProto::udp(80)),
            Verdict::Deny
        );
        assert_eq!(
            s.expect.verdict("x/a", "y/a", PortProto::tcp(81)),
            Verdict::Allow
        );
        assert_eq!(s.pods[1].labels["tier"], "1");
        assert_eq!(s.pods[1].node, "n1");
        assert_eq!(s.pods[2].service_account.as_deref(), Some("sa"));
        assert!(s.namespaces["y"].is_empty());
    }

    #[test]
    fn full_probe_set() {
        let s = parse(BASE).unwrap();
        let set = s.probe_set().unwrap();
        // x/a: 2 ports x 2 sources, x/b: 1 x 2, y/a: 1 x 2.
        assert_eq!(set.len(), 8);
        assert!(set.iter().all(|k| k.from != k.to));
    }

    #[test]
    fn explicit_probes() {
        let text = format!(
            "{BASE}probes:\n  - {{from: y/a, to: x/a, port: 80/udp}}\n  - {{from: x/*, to: y/a}}\n"
        );
        let s = parse(&text).unwrap();
        let set = s.probe_set().unwrap();
        assert_eq!(set.len(), 3, "{set:?}");
        let text = format!("{BASE}probes:\n  - {{from: y/a, to: x/b, port: 99/tcp}}\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("probes[0]"), "{e}");
    }

    #[test]
    fn errors_name_file_and_field() {
        let e = parse(&BASE.replace("ports: [80/tcp]}", "ports: [80/sctp]}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.yaml") && e.contains("pods[1].ports[0]"),
            "{e}"
        );
        let e = parse(&BASE.replace("name: t\n", "name: t\nfoo: 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("foo"), "{e}");
        let e = parse(&BASE.replace("verdict: deny", "verdict: drop"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expect.rules[0].verdict"), "{e}");
        let e = parse(&BASE.replace("y/a, node: n1", "z/a, node: n1"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pods[2].name") && e.contains("namespace z"),
            "{e}"
        );
        let e = parse(&BASE.replace("x/b, labels", "x/b, node: n2, labels"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pods[1].node"), "{e}");
        let e = parse(&BASE.replace("version: 1", "version: 2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("version"), "{e}");
    }

    #[test]
    fn unsupported_features_are_named() {
        let two = BASE.replace("name: t\n", "name: t\nnodes: [n1, n2]\n");
        parse(&two).unwrap().check_supported().unwrap();
        let wg = BASE.replace("name: t\n", "name: t\nencryption: wireguard\n");
        let e = parse(&wg)
            .unwrap()
            .check_supported()
            .unwrap_err()
            .to_string();
        assert!(e.contains("wireguard"), "{e}");
        let auth = BASE.replace("port: 80/tcp, verdict: allow", "verdict: auth-required");
        let s = parse(&auth).unwrap();
        s.check_supported().unwrap();
        assert_eq!(
            s.expect.verdict("x/b", "x/a", PortProto::udp(80)),
            Verdict::AuthRequired
        );
        let s = parse(&BASE.replace("default: allow", "default: auth-required")).unwrap();
        s.check_supported().unwrap();
        assert_eq!(
            s.expect.verdict("x/a", "y/a", PortProto::tcp(81)),
            Verdict::AuthRequired
        );
        parse(BASE).unwrap().check_supported().unwrap();
    }

    #[test]
    fn every_conformance_scenario_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/scenarios");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("skipped: {} not found", dir.display());
            return;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "yaml") {
                let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(!s.probe_set().unwrap().is_empty(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n > 0);
    }
}
