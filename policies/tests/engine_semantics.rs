//! Engine semantics against a direct evaluation of the rules: the
//! distillery truth table (in the spirit of Cilium's
//! pkg/policy/distillery_test.go: every combination of 8 rules) and
//! property tests over random rule sets and random change sequences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use palisade_identity::{Labels, NumericIdentity};
use palisade_policies::{
    AuthMode, Direction, DirectionSpec, EndpointView, Entity, EntryKey, EntryValue, MapDiff, Peer,
    Policy, PolicyEngine, PolicyKind, PolicyPart, PolicyRef, PortRange, PortSpec, Protocol,
    Requirement, Rule, RuleRef, Selector, Verdict, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};
use proptest::prelude::*;

const EP: u16 = 7;
const SERVER: NumericIdentity = NumericIdentity(1000);
const APPS: [&str; 3] = ["a", "b", "c"];

fn app_id(i: usize) -> NumericIdentity {
    NumericIdentity(300 + i as u32)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::try_from_pairs(pairs.iter().copied()).unwrap()
}

fn app_sel(app: &str) -> Selector {
    Selector::new([Requirement::equals("app", app).unwrap()])
}

/// A test rule: peer (None = any, Some(i) = app i, Some(9) = world), ports.
#[derive(Debug, Clone, PartialEq)]
struct TRule {
    deny: bool,
    peer: Option<usize>,
    ports: Vec<PortSpec>,
    auth: u8,
    egress: bool,
}

impl TRule {
    fn peer(&self) -> Peer {
        match self.peer {
            None => Peer::Any,
            Some(9) => Peer::Entity(Entity::World),
            Some(i) => Peer::Endpoints(app_sel(APPS[i])),
        }
    }

    fn peer_matches(&self, id: NumericIdentity) -> bool {
        match self.peer {
            None => true,
            Some(9) => id == NumericIdentity(2),
            Some(i) => id == app_id(i),
        }
    }

    fn port_matches(&self, proto: u8, port: u16) -> bool {
        self.ports.is_empty()
            || self.ports.iter().any(|p| {
                let proto_ok = match p.protocol.number() {
                    Some(n) => n == proto,
                    None => {
                        p.ports.is_none() || [PROTO_TCP, PROTO_UDP, PROTO_SCTP].contains(&proto)
                    }
                };
                proto_ok && p.ports.is_none_or(|r| r.contains(port))
            })
    }
}

fn policy(name: &str, rules: &[TRule]) -> Policy {
    let mut ingress = DirectionSpec::default();
    let mut egress = DirectionSpec::default();
    let (mut ia, mut id, mut ea, mut ed) = (0, 0, 0, 0);
    for r in rules {
        let (spec, counter) = match (r.egress, r.deny) {
            (false, false) => (&mut ingress, &mut ia),
            (false, true) => (&mut ingress, &mut id),
            (true, false) => (&mut egress, &mut ea),
            (true, true) => (&mut egress, &mut ed),
        };
        spec.rules.push(Rule {
            deny: r.deny,
            index: *counter,
            peers: vec![r.peer()],
            ports: r.ports.clone(),
            auth: match r.auth {
                1 => AuthMode::Required,
                2 => AuthMode::TestAlwaysFail,
                _ => AuthMode::Disabled,
            },
        });
        *counter += 1;
    }
    ingress.default_deny = !ingress.rules.is_empty();
    egress.default_deny = !egress.rules.is_empty();
    Policy {
        key: PolicyRef {
            kind: PolicyKind::CiliumClusterwideNetworkPolicy,
            namespace: None,
            name: name.to_owned(),
        },
        parts: vec![PolicyPart {
            subject: Selector::new([Requirement::equals("role", "server").unwrap()]),
            ingress,
            egress,
        }],
    }
}

fn base_engine() -> PolicyEngine {
    let mut e = PolicyEngine::new();
    for (i, a) in APPS.iter().enumerate() {
        e.upsert_identity(app_id(i), labels(&[("app", a)]));
    }
    e.upsert_identity(SERVER, labels(&[("role", "server")]));
    e.upsert_endpoint(EndpointView {
        ep_id: EP,
        identity: SERVER,
        labels: labels(&[("role", "server")]),
    });
    e
}

/// Direct evaluation: deny wins, then allow with the strictest auth, then
/// the default (deny when some rule exists in that direction).
fn reference(
    rules: &[TRule],
    egress: bool,
    id: NumericIdentity,
    proto: u8,
    port: u16,
) -> (bool, u8) {
    let m: Vec<&TRule> = rules
        .iter()
        .filter(|r| r.egress == egress && r.peer_matches(id) && r.port_matches(proto, port))
        .collect();
    if m.iter().any(|r| r.deny) {
        return (false, 0);
    }
    if let Some(auth) = m.iter().map(|r| r.auth).max() {
        return (true, auth);
    }
    let enforced = rules.iter().any(|r| r.egress == egress);
    (!enforced, 0)
}

fn observed(
    e: &PolicyEngine,
    egress: bool,
    id: NumericIdentity,
    proto: u8,
    port: u16,
) -> (bool, u8) {
    let st = e.endpoint_state(EP).unwrap();
    let d = if egress { &st.egress } else { &st.ingress };
    match d.lookup(id, proto, port) {
        Verdict::Allow { auth_type, .. } => (true, auth_type),
        Verdict::Deny { .. } => (false, 0),
    }
}

const PROBE_IDS: [NumericIdentity; 6] = [
    NumericIdentity(300),
    NumericIdentity(301),
    NumericIdentity(302),
    NumericIdentity(2),
    NumericIdentity(1),
    NumericIdentity(4242),
];

fn check_all(e: &PolicyEngine, rules: &[TRule], ports: &[u16]) -> Result<(), String> {
    for egress in [false, true] {
        for id in PROBE_IDS {
            for proto in [PROTO_TCP, PROTO_UDP, PROTO_SCTP, 1] {
                for &port in ports {
                    let want = reference(rules, egress, id, proto, port);
                    let got = observed(e, egress, id, proto, port);
                    if want != got {
                        return Err(format!(
                            "egress={egress} id={id} proto={proto} port={port}: want {want:?} got {got:?}\nrules: {rules:#?}\nentries: {:#?}",
                            e.endpoint_state(EP)
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn tcp(port: Option<(i64, i64)>) -> PortSpec {
    PortSpec {
        protocol: Protocol::Tcp,
        ports: port.map(|(a, b)| PortRange::new(a, b).unwrap()),
    }
}

/// Eight rules, every subset: allow/deny × identity-specific/wildcard ×
/// port/range/protocol/any-port.
#[test]
fn distillery_truth_table() {
    let a = Some(0);
    let rule = |deny, peer, ports: Vec<PortSpec>| TRule {
        deny,
        peer,
        ports,
        auth: 0,
        egress: false,
    };
    let rules = [
        rule(false, a, vec![]),                       // 0: allow a, any port
        rule(false, None, vec![tcp(Some((80, 80)))]), // 1: allow *, 80/tcp
        rule(false, a, vec![tcp(Some((80, 80)))]),    // 2: allow a, 80/tcp
        rule(false, None, vec![]),                    // 3: allow *, any
        rule(true, a, vec![tcp(None)]),               // 4: deny a, all tcp
        rule(true, None, vec![tcp(Some((80, 80)))]),  // 5: deny *, 80/tcp
        rule(true, a, vec![tcp(Some((64, 95)))]),     // 6: deny a, 64-95/tcp
        rule(
            true,
            None,
            vec![PortSpec {
                protocol: Protocol::Udp,
                ports: None,
            }],
        ), // 7: deny *, all udp
    ];
    let ports = [1, 63, 64, 79, 80, 81, 95, 96, 443, 65535];
    for mask in 0u32..256 {
        let chosen: Vec<TRule> = rules
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, r)| r.clone())
            .collect();
        let mut e = base_engine();
        for (i, r) in chosen.iter().enumerate() {
            e.upsert_policy(policy(&format!("r{i}"), std::slice::from_ref(r)));
        }
        e.compute();
        if let Err(msg) = check_all(&e, &chosen, &ports) {
            panic!("rule set {mask:08b}: {msg}");
        }
    }
}

fn port_spec() -> impl Strategy<Value = PortSpec> {
    (0..4u8, prop::option::of((1..48i64, 0..20i64))).prop_map(|(p, r)| PortSpec {
        protocol: [Protocol::Tcp, Protocol::Udp, Protocol::Sctp, Protocol::Any][p as usize],
        ports: r.map(|(s, len)| PortRange::new(s, s + len).unwrap()),
    })
}

fn trule() -> impl Strategy<Value = TRule> {
    (
        any::<bool>(),
        prop_oneof![Just(None), (0..3usize).prop_map(Some), Just(Some(9))],
        prop::collection::vec(port_spec(), 0..3),
        0..3u8,
        any::<bool>(),
    )
        .prop_map(|(deny, peer, ports, auth, egress)| TRule {
            deny,
            peer,
            ports,
            auth: if deny { 0 } else { auth },
            egress,
        })
}

/// Applies a diff to a mirror of the datapath's maps.
fn apply(mirror: &mut BTreeMap<(u16, Direction, EntryKey), EntryValue>, d: &MapDiff) {
    for (ep, dir, k) in &d.deletes {
        assert!(
            mirror.remove(&(*ep, *dir, *k)).is_some(),
            "delete of a missing entry"
        );
    }
    for (ep, dir, k, v) in &d.upserts {
        mirror.insert((*ep, *dir, *k), *v);
    }
}

/// Entries without rule ids (which depend on allocation history when rules
/// tie), after checking that every rule id names a rule of the right kind.
fn snapshot(e: &PolicyEngine) -> BTreeMap<(u16, Direction, EntryKey), (bool, u8)> {
    let mut m = BTreeMap::new();
    for ep in [EP, EP + 1] {
        if let Some(st) = e.endpoint_state(ep) {
            for d in Direction::BOTH {
                for (k, v) in &st.direction(d).entries {
                    let r: &RuleRef = e.rule(v.rule_id).expect("every rule id is known");
                    assert_eq!(
                        r.deny, v.deny,
                        "entry attributed to a rule of the other kind"
                    );
                    assert_eq!(r.direction, d);
                    m.insert((ep, d, *k), (v.deny, v.auth_type));
                }
            }
        }
    }
    m
}

#[derive(Debug, Clone)]
enum Op {
    Upsert(usize, Vec<TRule>),
    Remove(usize),
    Relabel(usize, usize),
    DropIdentity(usize),
    SecondEndpoint(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4usize, prop::collection::vec(trule(), 0..4)).prop_map(|(i, r)| Op::Upsert(i, r)),
        1 => (0..4usize).prop_map(Op::Remove),
        1 => (0..3usize, 0..3usize).prop_map(|(i, a)| Op::Relabel(i, a)),
        1 => (0..3usize).prop_map(Op::DropIdentity),
        1 => any::<bool>().prop_map(Op::SecondEndpoint),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, .. ProptestConfig::default() })]

    /// The two-step LPM lookup over compiled entries equals direct
    /// evaluation of the rules.
    #[test]
    fn lookup_equals_direct_evaluation(rules in prop::collection::vec(trule(), 0..8), ports in prop::collection::vec(1..80u16, 12)) {
        let mut e = base_engine();
        for (i, chunk) in rules.chunks(2).enumerate() {
            e.upsert_policy(policy(&format!("p{i}"), chunk));
        }
        e.compute();
        if let Err(msg) = check_all(&e, &rules, &ports) {
            prop_assert!(false, "{}", msg);
        }
    }

    /// Incremental compute after random changes equals a fresh engine's full
    /// compile, and applying the diffs reproduces the state.
    #[test]
    fn incremental_equals_fresh(ops in prop::collection::vec(op(), 1..12)) {
        let mut e = base_engine();
        let mut mirror = BTreeMap::new();
        apply(&mut mirror, &e.compute());
        let mut policies: BTreeMap<usize, Vec<TRule>> = BTreeMap::new();
        let mut idents: BTreeMap<usize, Option<usize>> = (0..3).map(|i| (i, Some(i))).collect();
        let mut second = false;
        for o in &ops {
            match o {
                Op::Upsert(i, r) => { policies.insert(*i, r.clone()); e.upsert_policy(policy(&format!("p{i}"), r)); }
                Op::Remove(i) => {
                    let had = policies.remove(i).is_some();
                    let key = policy(&format!("p{i}"), &[]).key;
                    prop_assert_eq!(e.remove_policy(&key), had);
                }
                Op::Relabel(i, a) => { idents.insert(*i, Some(*a)); e.upsert_identity(app_id(*i), labels(&[("app", APPS[*a])])); }
                Op::DropIdentity(i) => { idents.insert(*i, None); e.remove_identity(app_id(*i)); }
                Op::SecondEndpoint(on) => {
                    second = *on;
                    if *on {
                        e.upsert_endpoint(EndpointView { ep_id: EP + 1, identity: SERVER, labels: labels(&[("role", "server")]) });
                    } else {
                        e.remove_endpoint(EP + 1);
                    }
                }
            }
            let d = e.compute();
            apply(&mut mirror, &d);
        }
        let mut fresh = PolicyEngine::new();
        fresh.upsert_identity(SERVER, labels(&[("role", "server")]));
        for (i, a) in &idents {
            if let Some(a) = a { fresh.upsert_identity(app_id(*i), labels(&[("app", APPS[*a])])); }
        }
        for (i, r) in &policies { fresh.upsert_policy(policy(&format!("p{i}"), r)); }
        fresh.upsert_endpoint(EndpointView { ep_id: EP, identity: SERVER, labels: labels(&[("role", "server")]) });
        if second {
            fresh.upsert_endpoint(EndpointView { ep_id: EP + 1, identity: SERVER, labels: labels(&[("role", "server")]) });
        }
        fresh.compute();
        prop_assert_eq!(snapshot(&e), snapshot(&fresh));
        for ep in [EP, EP + 1] {
            prop_assert_eq!(e.endpoint_state(ep).map(|s| (s.ingress.enforced, s.egress.enforced)),
                            fresh.endpoint_state(ep).map(|s| (s.ingress.enforced, s.egress.enforced)));
        }
        let from_state: BTreeMap<_, _> = [EP, EP + 1].iter().filter_map(|ep| e.endpoint_state(*ep).map(|s| (*ep, s)))
            .flat_map(|(ep, s)| Direction::BOTH.into_iter().flat_map(move |d| s.direction(d).entries.iter().map(move |(k, v)| ((ep, d, *k), *v))))
            .collect();
        prop_assert_eq!(mirror, from_state);
        prop_assert!(e.compute().is_empty());
    }
}
