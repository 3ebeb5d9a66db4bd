//! The normalised policy the engine compiles, and its construction from the
//! serde model with every semantic check (each error names the YAML path).

use std::fmt;

use palisade_identity::labels::{NAMESPACE_LABELS_PREFIX, POD_NAMESPACE};
use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::l4::{L4Match, PortRange, Protocol};
use crate::model::{self, IntOrString, LabelSelector};
use crate::selector::{Requirement, Selector};

/// Why a resource, well-formed as YAML, is not an acceptable policy.
pub type PolicyError = palisade_k8s_yaml::SpecError;

/// The three policy kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyKind {
    /// `networking.k8s.io/v1` `NetworkPolicy`.
    NetworkPolicy,
    /// `cilium.io/v2` `CiliumNetworkPolicy`.
    CiliumNetworkPolicy,
    /// `cilium.io/v2` `CiliumClusterwideNetworkPolicy`.
    CiliumClusterwideNetworkPolicy,
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NetworkPolicy => "NetworkPolicy",
            Self::CiliumNetworkPolicy => "CiliumNetworkPolicy",
            Self::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
        })
    }
}

/// The identity of a policy: kind, namespace (none for cluster-wide), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyRef {
    /// Kind.
    pub kind: PolicyKind,
    /// Namespace; `None` for `CiliumClusterwideNetworkPolicy`.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{ns}/{}", self.kind, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// Traffic direction, seen from the selected endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Traffic to the endpoint.
    Ingress,
    /// Traffic from the endpoint.
    Egress,
}

impl Direction {
    /// Both directions.
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        })
    }
}

/// `authentication.mode` of an allow rule.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum AuthMode {
    /// No mutual authentication (also `disabled`).
    #[default]
    Disabled,
    /// Mutual authentication required (`required`).
    Required,
    /// Testing mode that always fails (`test-always-fail`).
    TestAlwaysFail,
}

impl AuthMode {
    /// The `auth_type` byte of policy-map values: 0 none, 1 required
    /// (SPIFFE/SPIRE-style mutual TLS), 2 test-always-fail.
    pub fn auth_type(self) -> u8 {
        match self {
            Self::Disabled => 0,
            Self::Required => 1,
            Self::TestAlwaysFail => 2,
        }
    }
}

/// A Cilium entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Entity {
    /// The local node.
    Host,
    /// Everything outside the cluster, including every CIDR identity.
    World,
    /// Every cluster identity plus the cluster's reserved identities.
    Cluster,
    /// Everything (the wildcard identity).
    All,
    /// Other nodes.
    RemoteNode,
    /// Health endpoints.
    Health,
    /// Endpoints whose identity is not resolved yet.
    Init,
    /// Endpoints not managed by palisade.
    Unmanaged,
    /// The Kubernetes API server.
    KubeApiServer,
    /// The ingress proxy.
    Ingress,
}

impl Entity {
    /// Every entity with its policy-language name.
    pub const NAMES: [(&'static str, Entity); 10] = [
        ("host", Entity::Host),
        ("world", Entity::World),
        ("cluster", Entity::Cluster),
        ("all", Entity::All),
        ("remote-node", Entity::RemoteNode),
        ("health", Entity::Health),
        ("init", Entity::Init),
        ("unmanaged", Entity::Unmanaged),
        ("kube-apiserver", Entity::KubeApiServer),
        ("ingress", Entity::Ingress),
    ];

    /// Parses an entity name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, e)| *e)
    }
}

/// A CIDR peer: a block minus sub-blocks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CidrSelector {
    /// The block.
    pub cidr: Cidr,
    /// Excluded sub-blocks (each inside `cidr`).
    pub except: Vec<Cidr>,
}

impl CidrSelector {
    /// Whether the prefix `p` (a CIDR identity) is selected: inside `cidr`
    /// and not inside any exception.
    pub fn selects(&self, p: &Cidr) -> bool {
        self.cidr.contains(p) && !self.except.iter().any(|e| e.contains(p))
    }

    /// Every prefix this selector needs an identity for.
    pub fn prefixes(&self) -> impl Iterator<Item = &Cidr> {
        std::iter::once(&self.cidr).chain(self.except.iter())
    }
}

/// One peer of a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Peer {
    /// Every peer, inside or outside the cluster (the wildcard identity).
    Any,
    /// Label identities the selector matches (already scoped to a
    /// namespace where the policy language says so).
    Endpoints(Selector),
    /// An entity.
    Entity(Entity),
    /// CIDR identities.
    Cidr(CidrSelector),
}

/// One port element of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    /// Protocol.
    pub protocol: Protocol,
    /// Ports; `None` means every port of the protocol.
    pub ports: Option<PortRange>,
}

impl PortSpec {
    /// The policy-map L4 prefixes whose union is exactly this port spec.
    pub fn l4_matches(&self) -> Vec<L4Match> {
        match (self.protocol.number(), self.ports) {
            (None, None) => vec![L4Match::Any],
            (Some(p), None) => vec![L4Match::Proto(p)],
            (_, Some(range)) => {
                let blocks = range.blocks();
                self.protocol
                    .port_protocols()
                    .iter()
                    .flat_map(|p| {
                        blocks
                            .iter()
                            .map(move |(b, bits)| L4Match::port(*p, *b, *bits))
                    })
                    .collect()
            }
        }
    }
}

/// One allow or deny rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// A deny rule (`ingressDeny`/`egressDeny`).
    pub deny: bool,
    /// Position in its list (`ingress`, `ingressDeny`, ...), counted across
    /// every element of `specs` in order.
    pub index: usize,
    /// Peers (ORed). Empty: the rule matches nothing.
    pub peers: Vec<Peer>,
    /// Ports (ORed). Empty: every protocol and port.
    pub ports: Vec<PortSpec>,
    /// Mutual authentication.
    pub auth: AuthMode,
}

impl Rule {
    /// The L4 prefixes the rule covers.
    pub fn l4_matches(&self) -> Vec<L4Match> {
        if self.ports.is_empty() {
            return vec![L4Match::Any];
        }
        let mut v: Vec<L4Match> = self.ports.iter().flat_map(PortSpec::l4_matches).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The rules of one direction of a policy part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionSpec {
    /// Whether a selected endpoint goes default-deny in this direction.
    pub default_deny: bool,
    /// Allow and deny rules.
    pub rules: Vec<Rule>,
}

/// An endpoint selector with its rules (a `spec`, or one of `specs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPart {
    /// The endpoints this part applies to (namespace-scoped where needed).
    pub subject: Selector,
    /// Ingress.
    pub ingress: DirectionSpec,
    /// Egress.
    pub egress: DirectionSpec,
}

impl PolicyPart {
    /// The rules of one direction.
    pub fn direction(&self, d: Direction) -> &DirectionSpec {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// One policy, normalised: what the engine compiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Its key.
    pub key: PolicyRef,
    /// Its parts (one for NetworkPolicy and `spec`; one per `specs` element).
    pub parts: Vec<PolicyPart>,
}

impl Policy {
    /// Whether any allow rule requires mutual authentication (or is in the
    /// test-always-fail mode).
    pub fn requires_authentication(&self) -> bool {
        self.parts.iter().any(|p| {
            p.ingress
                .rules
                .iter()
                .chain(p.egress.rules.iter())
                .any(|r| r.auth != AuthMode::Disabled)
        })
    }

    /// Every peer of every rule.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.parts.iter().flat_map(|p| {
            p.ingress
                .rules
                .iter()
                .chain(p.egress.rules.iter())
                .flat_map(|r| r.peers.iter())
        })
    }

    /// Builds the normalised form of a NetworkPolicy, checking it.
    pub fn from_network_policy(np: &model::NetworkPolicy) -> Result<Self, PolicyError> {
        let root = YamlPath::root();
        check_name(&np.metadata, &root)?;
        let ns = np
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let spec = &np.spec;
        let sp = root.f("spec");
        let subject = selector(&spec.pod_selector, &sp.f("podSelector"))?.with(Requirement::In(
            POD_NAMESPACE.to_owned(),
            [ns.clone()].into(),
        ));
        let (mut ing, mut eg) = (false, false);
        match &spec.policy_types {
            Some(types) => {
                for (i, t) in types.iter().enumerate() {
                    match t.as_str() {
                        "Ingress" => ing = true,
                        "Egress" => eg = true,
                        other => {
                            return Err(invalid(
                                &sp.f("policyTypes").i(i),
                                format!("unknown policy type {other:?}: use Ingress or Egress"),
                            ))
                        }
                    }
                }
            }
            None => {
                ing = true;
                eg = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
            }
        }
        let mut ingress = DirectionSpec {
            default_deny: ing,
            rules: Vec::new(),
        };
        let mut egress = DirectionSpec {
            default_deny: eg,
            rules: Vec::new(),
        };
        for (i, r) in spec.ingress.iter().flatten().enumerate() {
            let p = sp.f("ingress").i(i);
            let rule = np_rule(i, r.from.as_deref(), r.ports.as_deref(), &ns, &p, "from")?;
            if ing {
                ingress.rules.push(rule);
            }
        }
        for (i, r) in spec.egress.iter().flatten().enumerate() {
            let p = sp.f("egress").i(i);
            let rule = np_rule(i, r.to.as_deref(), r.ports.as_deref(), &ns, &p, "to")?;
            if eg {
                egress.rules.push(rule);
            }
        }
        Ok(Self {
            key: PolicyRef {
                kind: PolicyKind::NetworkPolicy,
                namespace: Some(ns),
                name: np.metadata.name.clone(),
            },
            parts: vec![PolicyPart {
                subject,
                ingress,
                egress,
            }],
        })
    }

    /// Builds the normalised form of a CiliumNetworkPolicy or
    /// CiliumClusterwideNetworkPolicy (`clusterwide`), checking it.
    pub fn from_cilium(
        cnp: &model::CiliumNetworkPolicy,
        clusterwide: bool,
    ) -> Result<Self, PolicyError> {
        let root = YamlPath::root();
        check_name(&cnp.metadata, &root)?;
        let ns = if clusterwide {
            if cnp.metadata.namespace.is_some() {
                return Err(invalid(
                    &root.f("metadata").f("namespace"),
                    "a CiliumClusterwideNetworkPolicy is not namespaced: remove metadata.namespace"
                        .into(),
                ));
            }
            None
        } else {
            Some(
                cnp.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_owned()),
            )
        };
        let mut specs: Vec<(YamlPath, &model::CiliumRule)> = Vec::new();
        if let Some(s) = &cnp.spec {
            specs.push((root.f("spec"), s));
        }
        for (i, s) in cnp.specs.iter().flatten().enumerate() {
            specs.push((root.f("specs").i(i), s));
        }
        if specs.is_empty() {
            return Err(invalid(
                &root,
                "the policy has no rules: add `spec` (or `specs`)".into(),
            ));
        }
        let mut counters = Counters::default();
        let mut parts = Vec::new();
        for (p, s) in specs {
            parts.push(cilium_part(s, ns.as_deref(), &p, &mut counters)?);
        }
        Ok(Self {
            key: PolicyRef {
                kind: if clusterwide {
                    PolicyKind::CiliumClusterwideNetworkPolicy
                } else {
                    PolicyKind::CiliumNetworkPolicy
                },
                namespace: ns,
                name: cnp.metadata.name.clone(),
            },
            parts,
        })
    }
}

/// A YAML path under construction, printed like `spec.ingress[0].toPorts[1]`.
#[derive(Debug, Clone, Default)]
struct YamlPath(String);

impl YamlPath {
    fn root() -> Self {
        Self(String::new())
    }
    fn f(&self, field: &str) -> Self {
        if self.0.is_empty() {
            Self(field.to_owned())
        } else {
            Self(format!("{}.{field}", self.0))
        }
    }
    fn i(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }
    fn s(&self) -> String {
        if self.0.is_empty() {
            ".".to_owned()
        } else {
            self.0.clone()
        }
    }
}

fn invalid(p: &YamlPath, reason: String) -> PolicyError {
    PolicyError::Invalid {
        path: p.s(),
        reason,
    }
}

fn unsupported(p: &YamlPath, feature: &str, hint: &str) -> PolicyError {
    PolicyError::Unsupported {
        path: p.s(),
        feature: feature.to_owned(),
        hint: if hint.is_empty() {
            String::new()
        } else {
            format!(": {hint}")
        },
    }
}

fn check_name(meta: &model::ObjectMeta, root: &YamlPath) -> Result<(), PolicyError> {
    if meta.name.is_empty() {
        return Err(invalid(
            &root.f("metadata").f("name"),
            "metadata.name must not be empty".into(),
        ));
    }
    Ok(())
}

/// Converts a label selector, validating keys, values and operators.
fn selector(ls: &LabelSelector, p: &YamlPath) -> Result<Selector, PolicyError> {
    let mut reqs = Vec::new();
    for (k, v) in ls.match_labels.iter().flatten() {
        let r = Requirement::equals(k, v)
            .map_err(|e| invalid(&p.f("matchLabels").f(k), format!("{e}")))?;
        reqs.push(r);
    }
    for (i, e) in ls.match_expressions.iter().flatten().enumerate() {
        let values = e.values.clone().unwrap_or_default();
        let r = Requirement::parse(&e.key, &e.operator, &values)
            .map_err(|err| invalid(&p.f("matchExpressions").i(i), format!("{err}")))?;
        reqs.push(r);
    }
    Ok(Selector::new(reqs))
}

fn prefix_key(r: Requirement, prefix: &str) -> Requirement {
    let k = |key: String| format!("{prefix}{key}");
    match r {
        Requirement::In(key, v) => Requirement::In(k(key), v),
        Requirement::NotIn(key, v) => Requirement::NotIn(k(key), v),
        Requirement::Exists(key) => Requirement::Exists(k(key)),
        Requirement::DoesNotExist(key) => Requirement::DoesNotExist(k(key)),
    }
}

fn cidr_selector(cidr: Cidr, except: &[Cidr], p: &YamlPath) -> Result<CidrSelector, PolicyError> {
    for (i, e) in except.iter().enumerate() {
        if !cidr.contains(e) || *e == cidr {
            return Err(invalid(
                &p.f("except").i(i),
                format!("except {e} is not strictly inside cidr {cidr}: list only sub-blocks of the cidr"),
            ));
        }
    }
    let mut except = except.to_vec();
    except.sort();
    except.dedup();
    Ok(CidrSelector { cidr, except })
}

fn np_rule(
    index: usize,
    peers: Option<&[model::NetworkPolicyPeer]>,
    ports: Option<&[model::NetworkPolicyPort]>,
    ns: &str,
    p: &YamlPath,
    peers_field: &str,
) -> Result<Rule, PolicyError> {
    let mut out_peers = Vec::new();
    match peers {
        None | Some([]) => out_peers.push(Peer::Any),
        Some(list) => {
            for (i, peer) in list.iter().enumerate() {
                let pp = p.f(peers_field).i(i);
                out_peers.push(np_peer(peer, ns, &pp)?);
            }
        }
    }
    let mut out_ports = Vec::new();
    for (i, port) in ports.into_iter().flatten().enumerate() {
        out_ports.push(np_port(port, &p.f("ports").i(i))?);
    }
    Ok(Rule {
        deny: false,
        index,
        peers: out_peers,
        ports: out_ports,
        auth: AuthMode::Disabled,
    })
}

fn np_peer(peer: &model::NetworkPolicyPeer, ns: &str, p: &YamlPath) -> Result<Peer, PolicyError> {
    if let Some(block) = &peer.ip_block {
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            return Err(invalid(
                p,
                "ipBlock cannot be combined with podSelector or namespaceSelector in one peer: split it into two peers".into(),
            ));
        }
        let pb = p.f("ipBlock");
        return Ok(Peer::Cidr(cidr_selector(
            block.cidr,
            block.except.as_deref().unwrap_or(&[]),
            &pb,
        )?));
    }
    let pods = match &peer.pod_selector {
        Some(ps) => Some(selector(ps, &p.f("podSelector"))?),
        None => None,
    };
    match &peer.namespace_selector {
        Some(nss) => {
            let nsel = selector(nss, &p.f("namespaceSelector"))?;
            let mut reqs: Vec<Requirement> = nsel
                .requirements()
                .iter()
                .cloned()
                .map(|r| prefix_key(r, NAMESPACE_LABELS_PREFIX))
                .collect();
            reqs.push(Requirement::Exists(POD_NAMESPACE.to_owned()));
            if let Some(pods) = pods {
                reqs.extend(pods.requirements().iter().cloned());
            }
            Ok(Peer::Endpoints(Selector::new(reqs)))
        }
        None => match pods {
            Some(pods) => Ok(Peer::Endpoints(pods.with(Requirement::In(
                POD_NAMESPACE.to_owned(),
                [ns.to_owned()].into(),
            )))),
            None => Err(invalid(
                p,
                "an empty peer selects nothing: give podSelector, namespaceSelector or ipBlock"
                    .into(),
            )),
        },
    }
}

fn np_port(port: &model::NetworkPolicyPort, p: &YamlPath) -> Result<PortSpec, PolicyError> {
    let protocol = match port.protocol.as_deref() {
        None | Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        Some(other) => {
            return Err(invalid(
                &p.f("protocol"),
                format!("unknown protocol {other:?}: use TCP, UDP or SCTP"),
            ))
        }
    };
    let ports = match &port.port {
        None => {
            if port.end_port.is_some() {
                return Err(invalid(
                    &p.f("endPort"),
                    "endPort needs a numeric port: add `port`".into(),
                ));
            }
            None
        }
        Some(IntOrString::Int(n)) => Some(range(*n, port.end_port, p)?),
        Some(IntOrString::Str(s)) => {
            let hint = if s.parse::<u16>().is_ok() {
                format!("write the port as a number: port: {s}")
            } else {
                "use the port number".to_owned()
            };
            return Err(unsupported(
                &p.f("port"),
                "named ports are",
                &format!("port {s:?}: {hint}"),
            ));
        }
    };
    Ok(PortSpec { protocol, ports })
}

fn range(start: i64, end: Option<i64>, p: &YamlPath) -> Result<PortRange, PolicyError> {
    PortRange::single(start).map_err(|e| invalid(&p.f("port"), e.to_string()))?;
    match end {
        None => PortRange::single(start).map_err(|e| invalid(&p.f("port"), e.to_string())),
        Some(e) => {
            PortRange::new(start, e).map_err(|err| invalid(&p.f("endPort"), err.to_string()))
        }
    }
}

#[derive(Default)]
struct Counters {
    ingress: usize,
    ingress_deny: usize,
    egress: usize,
    egress_deny: usize,
}

fn cilium_part(
    s: &model::CiliumRule,
    ns: Option<&str>,
    p: &YamlPath,
    counters: &mut Counters,
) -> Result<PolicyPart, PolicyError> {
    if s.node_selector.is_some() {
        return Err(unsupported(
            &p.f("nodeSelector"),
            "nodeSelector (host policies) is",
            "select pods with endpointSelector",
        ));
    }
    if s.log.is_some() {
        return Err(unsupported(
            &p.f("log"),
            "policy logging (`log`) is",
            "remove it; every drop is audited anyway",
        ));
    }
    let es = s.endpoint_selector.as_ref().ok_or_else(|| {
        invalid(
            p,
            "endpointSelector is required: use `endpointSelector: {}` to select every endpoint"
                .into(),
        )
    })?;
    let subject = scoped(selector(es, &p.f("endpointSelector"))?, ns, false);
    let dd = s.enable_default_deny.unwrap_or_default();
    let mut ingress = DirectionSpec::default();
    let mut egress = DirectionSpec::default();
    for (field, deny, list) in [
        ("ingress", false, &s.ingress),
        ("ingressDeny", true, &s.ingress_deny),
    ] {
        let counter = if deny {
            &mut counters.ingress_deny
        } else {
            &mut counters.ingress
        };
        compile_rules(list.as_deref(), field, deny, counter, ns, p, &mut ingress)?;
    }
    for (field, deny, list) in [
        ("egress", false, &s.egress),
        ("egressDeny", true, &s.egress_deny),
    ] {
        let counter = if deny {
            &mut counters.egress_deny
        } else {
            &mut counters.egress
        };
        compile_rules(list.as_deref(), field, deny, counter, ns, p, &mut egress)?;
    }
    ingress.default_deny = !ingress.rules.is_empty() && dd.ingress != Some(false);
    egress.default_deny = !egress.rules.is_empty() && dd.egress != Some(false);
    Ok(PolicyPart {
        subject,
        ingress,
        egress,
    })
}

/// What the compiler needs of a CNP rule of either direction.
trait CiliumRuleFields {
    /// Fields palisade rejects, with whether the rule sets them.
    fn unsupported(&self) -> Vec<(&'static str, bool)>;
    /// The rule's peers.
    fn peers(&self) -> CiliumPeers<'_>;
    /// `toPorts`.
    fn to_ports(&self) -> Option<&[model::CiliumPortRule]>;
    /// `authentication`.
    fn authentication(&self) -> Option<&model::Authentication>;
}

impl CiliumRuleFields for model::CiliumIngressRule {
    fn unsupported(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("fromRequires", self.from_requires.is_some()),
            ("fromNodes", self.from_nodes.is_some()),
            ("fromGroups", self.from_groups.is_some()),
            ("icmps", self.icmps.is_some()),
        ]
    }
    fn peers(&self) -> CiliumPeers<'_> {
        CiliumPeers {
            endpoints: self.from_endpoints.as_deref(),
            cidr: self.from_cidr.as_deref(),
            cidr_set: self.from_cidr_set.as_deref(),
            entities: self.from_entities.as_deref(),
            prefix: "from",
        }
    }
    fn to_ports(&self) -> Option<&[model::CiliumPortRule]> {
        self.to_ports.as_deref()
    }
    fn authentication(&self) -> Option<&model::Authentication> {
        self.authentication.as_ref()
    }
}

impl CiliumRuleFields for model::CiliumEgressRule {
    fn unsupported(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("toRequires", self.to_requires.is_some()),
            ("toFQDNs", self.to_fqdns.is_some()),
            ("toServices", self.to_services.is_some()),
            ("toNodes", self.to_nodes.is_some()),
            ("toGroups", self.to_groups.is_some()),
            ("icmps", self.icmps.is_some()),
        ]
    }
    fn peers(&self) -> CiliumPeers<'_> {
        CiliumPeers {
            endpoints: self.to_endpoints.as_deref(),
            cidr: self.to_cidr.as_deref(),
            cidr_set: self.to_cidr_set.as_deref(),
            entities: self.to_entities.as_deref(),
            prefix: "to",
        }
    }
    fn to_ports(&self) -> Option<&[model::CiliumPortRule]> {
        self.to_ports.as_deref()
    }
    fn authentication(&self) -> Option<&model::Authentication> {
        self.authentication.as_ref()
    }
}

/// Compiles the rules of one CNP list (`ingress`, `egressDeny`, ...) into
/// `out`; `counter` numbers rules across the policy's `specs`.
fn compile_rules<R: CiliumRuleFields>(
    list: Option<&[R]>,
    field: &str,
    deny: bool,
    counter: &mut usize,
    ns: Option<&str>,
    p: &YamlPath,
    out: &mut DirectionSpec,
) -> Result<(), PolicyError> {
    for (i, r) in list.unwrap_or_default().iter().enumerate() {
        let rp = p.f(field).i(i);
        let index = *counter;
        *counter += 1;
        check_unsupported(&rp, &r.unsupported())?;
        out.rules.push(cilium_rule(
            index,
            deny,
            &r.peers(),
            r.to_ports(),
            r.authentication(),
            ns,
            &rp,
        )?);
    }
    Ok(())
}

fn check_unsupported(p: &YamlPath, fields: &[(&str, bool)]) -> Result<(), PolicyError> {
    for (name, present) in fields {
        if *present {
            let hint = match *name {
                "icmps" => "ICMP rules are not supported yet; they will come with ICMP support in the datapath",
                "toFQDNs" => "DNS-based policy needs a DNS proxy; use toCIDR/toCIDRSet",
                "toServices" => "select the service's backends with toEndpoints",
                "fromNodes" | "toNodes" => "use the remote-node or host entity",
                "fromRequires" | "toRequires" => "deprecated in Cilium; fold the requirement into the endpoint selectors",
                _ => "",
            };
            return Err(unsupported(&p.f(name), &format!("{name} is"), hint));
        }
    }
    Ok(())
}

/// Scopes a Cilium selector to the policy's namespace unless it names the
/// namespace label itself; for cluster-wide policies, the empty peer
/// selector is limited to cluster endpoints (as Cilium does).
fn scoped(sel: Selector, ns: Option<&str>, peer: bool) -> Selector {
    if sel.mentions(POD_NAMESPACE) {
        return sel;
    }
    match ns {
        Some(ns) => sel.with(Requirement::In(
            POD_NAMESPACE.to_owned(),
            [ns.to_owned()].into(),
        )),
        None if peer && sel.is_empty() => sel.with(Requirement::Exists(POD_NAMESPACE.to_owned())),
        None => sel,
    }
}

struct CiliumPeers<'a> {
    endpoints: Option<&'a [LabelSelector]>,
    cidr: Option<&'a [Cidr]>,
    cidr_set: Option<&'a [model::CidrRule]>,
    entities: Option<&'a [String]>,
    prefix: &'static str,
}

fn cilium_rule(
    index: usize,
    deny: bool,
    sel: &CiliumPeers<'_>,
    to_ports: Option<&[model::CiliumPortRule]>,
    auth: Option<&model::Authentication>,
    ns: Option<&str>,
    p: &YamlPath,
) -> Result<Rule, PolicyError> {
    let field = |name: &str| p.f(&format!("{}{name}", sel.prefix));
    let mut peers = Vec::new();
    for (i, ls) in sel.endpoints.into_iter().flatten().enumerate() {
        let ep = field("Endpoints").i(i);
        peers.push(Peer::Endpoints(scoped(selector(ls, &ep)?, ns, true)));
    }
    for c in sel.cidr.into_iter().flatten() {
        peers.push(Peer::Cidr(CidrSelector {
            cidr: *c,
            except: Vec::new(),
        }));
    }
    for (i, cr) in sel.cidr_set.into_iter().flatten().enumerate() {
        let cp = field("CIDRSet").i(i);
        if cr.cidr_group_ref.is_some() {
            return Err(unsupported(
                &cp.f("cidrGroupRef"),
                "cidrGroupRef is",
                "write the CIDRs inline",
            ));
        }
        if cr.cidr_group_selector.is_some() {
            return Err(unsupported(
                &cp.f("cidrGroupSelector"),
                "cidrGroupSelector is",
                "write the CIDRs inline",
            ));
        }
        let cidr = cr
            .cidr
            .ok_or_else(|| invalid(&cp, "a CIDR set element needs `cidr`".into()))?;
        peers.push(Peer::Cidr(cidr_selector(
            cidr,
            cr.except.as_deref().unwrap_or(&[]),
            &cp,
        )?));
    }
    for (i, e) in sel.entities.into_iter().flatten().enumerate() {
        let entity = Entity::from_name(e).ok_or_else(|| {
            let names: Vec<&str> = Entity::NAMES.iter().map(|(n, _)| *n).collect();
            invalid(
                &field("Entities").i(i),
                format!("unknown entity {e:?}: use one of {}", names.join(", ")),
            )
        })?;
        peers.push(Peer::Entity(entity));
    }
    let mut ports = Vec::new();
    for (i, pr) in to_ports.into_iter().flatten().enumerate() {
        let pp = p.f("toPorts").i(i);
        if pr.rules.is_some() {
            return Err(unsupported(
                &pp.f("rules"),
                "L7 rules are",
                "palisade enforces L3/L4 only; remove `rules`",
            ));
        }
        for (name, present) in [
            ("serverNames", pr.server_names.is_some()),
            ("listener", pr.listener.is_some()),
            ("originatingTLS", pr.originating_tls.is_some()),
            ("terminatingTLS", pr.terminating_tls.is_some()),
        ] {
            if present {
                return Err(unsupported(
                    &pp.f(name),
                    &format!("{name} is"),
                    "palisade enforces L3/L4 only",
                ));
            }
        }
        let list = pr.ports.as_deref().unwrap_or(&[]);
        if list.is_empty() {
            return Err(invalid(
                &pp,
                "toPorts element without ports: add `ports: [{port: \"80\", protocol: TCP}]`"
                    .into(),
            ));
        }
        for (j, port) in list.iter().enumerate() {
            ports.push(cilium_port(port, &pp.f("ports").i(j))?);
        }
    }
    if peers.is_empty() && !ports.is_empty() {
        // An L4-only rule applies to every peer.
        peers.push(Peer::Any);
    }
    let auth = match auth {
        None => AuthMode::Disabled,
        Some(a) => {
            let ap = p.f("authentication");
            if deny {
                return Err(invalid(
                    &ap,
                    "authentication is only allowed on allow rules: remove it from this deny rule"
                        .into(),
                ));
            }
            let mode = match a.mode.as_str() {
                "disabled" => AuthMode::Disabled,
                "required" => AuthMode::Required,
                "test-always-fail" => AuthMode::TestAlwaysFail,
                other => {
                    return Err(invalid(
                        &ap.f("mode"),
                        format!("unknown authentication mode {other:?}: use required, disabled or test-always-fail"),
                    ))
                }
            };
            if mode == AuthMode::Required {
                for peer in &peers {
                    let bad = match peer {
                        Peer::Entity(Entity::Host) => Some("the host entity"),
                        Peer::Entity(Entity::World) => Some("the world entity"),
                        Peer::Entity(Entity::All) => Some("the all entity (which includes world)"),
                        Peer::Entity(Entity::Cluster) => {
                            Some("the cluster entity (which includes the host and other nodes)")
                        }
                        Peer::Entity(Entity::RemoteNode) => Some("the remote-node entity"),
                        Peer::Entity(
                            Entity::Health
                            | Entity::Init
                            | Entity::Unmanaged
                            | Entity::KubeApiServer
                            | Entity::Ingress,
                        ) => Some("reserved entities"),
                        Peer::Cidr(_) => Some("CIDR peers (outside the cluster)"),
                        Peer::Any => Some("every peer (an L4-only rule includes world)"),
                        _ => None,
                    };
                    if let Some(what) = bad {
                        return Err(invalid(
                            &ap.f("mode"),
                            format!("authentication mode required cannot apply to {what}: only cluster endpoints have an identity to authenticate; split the rule and require authentication only toward endpoints"),
                        ));
                    }
                }
            }
            mode
        }
    };
    Ok(Rule {
        deny,
        index,
        peers,
        ports,
        auth,
    })
}

fn cilium_port(port: &model::CiliumPort, p: &YamlPath) -> Result<PortSpec, PolicyError> {
    let protocol = match port.protocol.as_deref() {
        None | Some("ANY") => Protocol::Any,
        Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        Some(icmp @ ("ICMP" | "ICMPv6" | "ICMPV6")) => {
            return Err(unsupported(
                &p.f("protocol"),
                &format!("protocol {icmp} is"),
                "ICMP rules are not supported yet",
            ))
        }
        Some(other) => {
            return Err(invalid(
                &p.f("protocol"),
                format!("unknown protocol {other:?}: use TCP, UDP, SCTP or ANY"),
            ))
        }
    };
    let number = match &port.port {
        None => None,
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::Str(s)) => match s.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return Err(unsupported(
                    &p.f("port"),
                    "named ports are",
                    &format!("port {s:?}: use the port number"),
                ))
            }
        },
    };
    let ports = match number {
        None | Some(0) => {
            if port.end_port.is_some() {
                return Err(invalid(
                    &p.f("endPort"),
                    "endPort needs a non-zero numeric port: add `port`".into(),
                ));
            }
            None
        }
        Some(n) => Some(range(n, port.end_port, p)?),
    };
    Ok(PortSpec { protocol, ports })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn port_spec_expansion() {
        let any = PortSpec {
            protocol: Protocol::Any,
            ports: None,
        };
        assert_eq!(any.l4_matches(), vec![L4Match::Any]);
        let tcp = PortSpec {
            protocol: Protocol::Tcp,
            ports: None,
        };
        assert_eq!(tcp.l4_matches(), vec![L4Match::Proto(6)]);
        let any80 = PortSpec {
            protocol: Protocol::Any,
            ports: Some(PortRange::single(80).unwrap()),
        };
        assert_eq!(any80.l4_matches().len(), 3);
    }

    #[test]
    fn cidr_selector_semantics() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        let e: Cidr = "10.1.0.0/16".parse().unwrap();
        let s = cidr_selector(c, &[e], &YamlPath::root()).unwrap();
        assert!(s.selects(&c));
        assert!(!s.selects(&e));
        assert!(!s.selects(&"10.1.2.0/24".parse().unwrap()));
        assert!(s.selects(&"10.2.0.0/16".parse().unwrap()));
        assert!(cidr_selector(e, &[c], &YamlPath::root()).is_err());
    }

    #[test]
    fn entities_parse() {
        assert_eq!(Entity::from_name("remote-node"), Some(Entity::RemoteNode));
        assert_eq!(Entity::from_name("nope"), None);
    }
}
