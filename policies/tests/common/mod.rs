//! Shared helpers for the integration tests: a scenario-file reader and the
//! offline twin of the end-to-end runner.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use palisade_identity::{Labels, NumericIdentity};
use palisade_policies::{
    parse_documents, EndpointView, PolicyEngine, Resource, Verdict, PROTO_TCP, PROTO_UDP,
};

/// The conformance scenarios folder, if this checkout has it.
pub fn scenarios_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/scenarios");
    dir.is_dir().then_some(dir)
}

/// Every scenario file, sorted.
pub fn scenario_files() -> Vec<PathBuf> {
    let Some(dir) = scenarios_dir() else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    pub ports: Vec<(u16, u8)>,
    pub identity: NumericIdentity,
    pub ep_id: u16,
}

/// One `expect.rules` element: from, to, port, verdict.
pub type ExpectRule = (String, String, Option<(u16, u8)>, String);
/// One `probes` element: from, to, port.
pub type Probe = (String, String, (u16, u8));

#[derive(Debug)]
pub struct Scenario {
    pub name: String,
    pub pods: Vec<Pod>,
    pub policies: String,
    pub default: String,
    pub rules: Vec<ExpectRule>,
    pub probes: Option<Vec<Probe>>,
}

pub fn parse_port(s: &str) -> (u16, u8) {
    let (n, p) = s.split_once('/').unwrap();
    let proto = match p {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        other => panic!("unknown protocol {other}"),
    };
    (n.parse().unwrap(), proto)
}

fn s(v: &serde_yaml::Value) -> String {
    v.as_str().unwrap().to_owned()
}

pub fn load_scenario(path: &std::path::Path) -> Scenario {
    let text = std::fs::read_to_string(path).unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut ns_labels: BTreeMap<String, Labels> = BTreeMap::new();
    if let Some(m) = v["namespaces"].as_mapping() {
        for (k, labels) in m {
            let mut l = Labels::new();
            for (lk, lv) in labels.as_mapping().into_iter().flatten() {
                l.insert(lk.as_str().unwrap(), lv.as_str().unwrap())
                    .unwrap();
            }
            ns_labels.insert(s(k), l);
        }
    }
    let policies = v["policies"].as_str().unwrap_or("").to_owned();
    // Namespace resources in the stream add labels (standalone mode).
    for r in parse_documents(&policies, "scenario").unwrap_or_default() {
        if let Resource::Namespace { name, labels } = r {
            let e = ns_labels.entry(name).or_default();
            for (k, v) in labels.iter() {
                e.insert(k, v).unwrap();
            }
        }
    }
    let mut pods = Vec::new();
    let mut ids: BTreeMap<Labels, NumericIdentity> = BTreeMap::new();
    for (i, p) in v["pods"].as_sequence().unwrap().iter().enumerate() {
        let full = s(&p["name"]);
        let (ns, name) = full.split_once('/').unwrap();
        let mut own = Labels::new();
        for (lk, lv) in p["labels"].as_mapping().into_iter().flatten() {
            own.insert(lk.as_str().unwrap(), lv.as_str().unwrap())
                .unwrap();
        }
        let sa = p["serviceAccount"].as_str().unwrap_or("default");
        let nsl = ns_labels.get(ns).cloned().unwrap_or_default();
        let labels = Labels::for_pod(&own, ns, &nsl, sa, "default").unwrap();
        let next = NumericIdentity(256 + ids.len() as u32);
        let identity = *ids.entry(labels.clone()).or_insert(next);
        let ports = p["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|x| parse_port(x.as_str().unwrap()))
            .collect();
        pods.push(Pod {
            name: full.clone(),
            namespace: ns.to_owned(),
            labels,
            ports,
            identity,
            ep_id: (i + 1) as u16,
        });
        let _ = name;
    }
    let expect = &v["expect"];
    let default = expect["default"].as_str().unwrap_or("allow").to_owned();
    let rules = expect["rules"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                s(&r["from"]),
                s(&r["to"]),
                r["port"].as_str().map(parse_port),
                s(&r["verdict"]),
            )
        })
        .collect();
    let probes = v["probes"].as_sequence().map(|ps| {
        ps.iter()
            .map(|p| {
                (
                    s(&p["from"]),
                    s(&p["to"]),
                    parse_port(p["port"].as_str().unwrap()),
                )
            })
            .collect()
    });
    Scenario {
        name: s(&v["name"]),
        pods,
        policies,
        default,
        rules,
        probes,
    }
}

/// `*` matches within one path part.
pub fn glob(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let pp: Vec<&str> = pattern.split('/').collect();
    let np: Vec<&str> = name.split('/').collect();
    pp.len() == np.len() && pp.iter().zip(&np).all(|(p, n)| part_glob(p, n))
}

fn part_glob(p: &str, n: &str) -> bool {
    match p.split_once('*') {
        None => p == n,
        Some((pre, post)) => {
            n.len() >= pre.len() + post.len() && n.starts_with(pre) && n.ends_with(post)
        }
    }
}

impl Scenario {
    pub fn expected(&self, from: &str, to: &str, port: (u16, u8)) -> String {
        let mut verdict = self.default.clone();
        for (f, t, p, v) in &self.rules {
            if glob(f, from) && glob(t, to) && p.is_none_or(|p| p == port) {
                verdict = v.clone();
            }
        }
        verdict
    }

    pub fn probes(&self) -> Vec<(&Pod, &Pod, (u16, u8))> {
        let find = |n: &str| self.pods.iter().find(|p| p.name == n).unwrap();
        match &self.probes {
            Some(ps) => ps
                .iter()
                .map(|(f, t, port)| (find(f), find(t), *port))
                .collect(),
            None => {
                let mut v = Vec::new();
                for f in &self.pods {
                    for t in &self.pods {
                        if f.name != t.name {
                            for port in &t.ports {
                                v.push((f, t, *port));
                            }
                        }
                    }
                }
                v
            }
        }
    }

    /// Builds an engine with the scenario's identities, endpoints and policies.
    pub fn engine(&self) -> PolicyEngine {
        let mut e = PolicyEngine::new();
        for p in &self.pods {
            e.upsert_identity(p.identity, p.labels.clone());
            e.upsert_endpoint(EndpointView {
                ep_id: p.ep_id,
                identity: p.identity,
                labels: p.labels.clone(),
            });
        }
        for r in parse_documents(&self.policies, &self.name).unwrap() {
            if let Some(p) = r.to_policy().unwrap() {
                e.upsert_policy(p);
            }
        }
        e.compute();
        e
    }
}

/// The verdict of a connection: egress of `from` AND ingress of `to`.
pub fn connection(e: &PolicyEngine, from: &Pod, to: &Pod, (port, proto): (u16, u8)) -> String {
    let eg = e
        .endpoint_state(from.ep_id)
        .unwrap()
        .egress
        .lookup(to.identity, proto, port);
    let ing = e
        .endpoint_state(to.ep_id)
        .unwrap()
        .ingress
        .lookup(from.identity, proto, port);
    match (eg, ing) {
        (Verdict::Allow { auth_type: a, .. }, Verdict::Allow { auth_type: b, .. }) => {
            if a.max(b) == 0 {
                "allow".into()
            } else {
                "auth-required".into()
            }
        }
        _ => "deny".into(),
    }
}
