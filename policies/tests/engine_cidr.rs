//! CIDR identities, entities, enableDefaultDeny, auth and rule attribution
//! through the whole pipeline (YAML -> engine -> lookup).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_identity::{Labels, NumericIdentity};
use palisade_policies::{
    parse_policies, Cidr, Direction, EndpointView, PolicyEngine, Verdict, IMPLICIT_ALLOW_RULE_ID,
    PROTO_TCP, PROTO_UDP,
};

fn pod(ns: &str, pairs: &[(&str, &str)]) -> Labels {
    let own = Labels::try_from_pairs(pairs.iter().copied()).unwrap();
    Labels::for_pod(&own, ns, &Labels::new(), "default", "default").unwrap()
}

const EP: u16 = 1;
const ME: NumericIdentity = NumericIdentity(300);
const OTHER: NumericIdentity = NumericIdentity(301);

fn engine(yaml: &str) -> PolicyEngine {
    let mut e = PolicyEngine::new();
    e.upsert_identity(ME, pod("x", &[("app", "me")]));
    e.upsert_identity(OTHER, pod("y", &[("app", "other")]));
    e.upsert_endpoint(EndpointView {
        ep_id: EP,
        identity: ME,
        labels: pod("x", &[("app", "me")]),
    });
    for p in parse_policies(yaml, "t").unwrap() {
        e.upsert_policy(p);
    }
    e
}

fn cnp(name: &str, spec: &str) -> String {
    format!("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: x}}\nspec:\n  endpointSelector: {{}}\n{spec}---\n")
}

fn egress(e: &PolicyEngine, id: NumericIdentity, port: u16) -> Verdict {
    e.endpoint_state(EP)
        .unwrap()
        .egress
        .lookup(id, PROTO_TCP, port)
}

#[test]
fn cidr_identities_are_allocated_stable_and_reported() {
    let a = cnp(
        "a",
        "  egress:\n    - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]\n",
    );
    let b = cnp(
        "b",
        "  egress:\n    - toCIDR: [10.1.2.0/24, 192.168.0.0/16]\n",
    );
    let mut e = engine(&format!("{a}{b}"));
    let d = e.compute();
    assert_eq!(d.ipcache_upserts.len(), 4, "{d:?}");
    let id = |e: &PolicyEngine, c: &str| {
        let c: Cidr = c.parse().unwrap();
        e.cidr_identities()
            .find(|(x, _)| **x == c)
            .map(|(_, id)| id)
            .unwrap()
    };
    let (ten, ten1, ten12) = (
        id(&e, "10.0.0.0/8"),
        id(&e, "10.1.0.0/16"),
        id(&e, "10.1.2.0/24"),
    );
    assert!(ten.is_local() && ten1.is_local());
    assert!(egress(&e, ten, 80).is_allow());
    assert!(
        egress(&e, ten12, 80).is_allow(),
        "policy b allows 10.1.2.0/24"
    );
    assert!(!egress(&e, ten1, 80).is_allow(), "except");
    assert!(!egress(&e, NumericIdentity(2), 80).is_allow());
    assert!(!egress(&e, OTHER, 80).is_allow(), "CIDRs never match pods");
    // Removing b keeps the numbers of the remaining prefixes and removes its own.
    let bref = e
        .policies()
        .find(|p| p.key.name == "b")
        .unwrap()
        .key
        .clone();
    assert!(e.remove_policy(&bref));
    let d = e.compute();
    assert_eq!(d.ipcache_deletes.len(), 2, "{d:?}");
    assert!(d.ipcache_upserts.is_empty());
    assert_eq!(id(&e, "10.0.0.0/8"), ten);
    assert!(!egress(&e, ten12, 80).is_allow());
    // It comes back with its old number.
    for p in parse_policies(&b, "t").unwrap() {
        e.upsert_policy(p);
    }
    e.compute();
    assert_eq!(id(&e, "10.1.2.0/24"), ten12);
    assert!(e.compute().is_empty());
}

#[test]
fn world_covers_cidr_identities_and_ipv6_warns() {
    let mut e = engine(&format!(
        "{}{}",
        cnp("w", "  egress:\n    - toEntities: [world]\n"),
        cnp("c", "  egress:\n    - toCIDR: [172.16.0.0/12, 'fd00::/8']\n      toPorts: [{ports: [{port: '443', protocol: TCP}]}]\n")
    ));
    let d = e.compute();
    assert_eq!(d.warnings.len(), 1, "{d:?}");
    assert!(d.warnings[0].contains("fd00::/8"));
    assert_eq!(
        d.ipcache_upserts.len(),
        1,
        "IPv6 prefixes get no ipcache entry"
    );
    let c = e.cidr_identities().next().unwrap().1;
    assert!(egress(&e, NumericIdentity(2), 1).is_allow());
    assert!(
        egress(&e, c, 1).is_allow(),
        "world includes CIDR identities"
    );
    assert!(!egress(&e, OTHER, 1).is_allow());
}

/// Compiled entries of a policy are reused across computes: a CIDR that
/// comes or goes later must still reach the `world` rule of a policy that
/// did not change, and a policy that does not select the endpoint (here an
/// egress to the CIDR on another port) must not leak into it.
#[test]
fn world_follows_cidrs_added_and_removed_later() {
    let mut e = engine(&cnp("w", "  egress:\n    - toEntities: [world]\n"));
    e.compute();
    assert!(e.cidr_identities().next().is_none());
    for p in parse_policies(
        &cnp("c", "  egress:\n    - toCIDR: [10.1.0.0/16]\n      toPorts: [{ports: [{port: '443', protocol: TCP}]}]\n"),
        "t",
    )
    .unwrap()
    {
        e.upsert_policy(p);
    }
    let d = e.compute();
    let c = e.cidr_identities().next().unwrap().1;
    assert!(
        d.upserts.iter().any(|(_, _, k, _)| k.identity == c),
        "{d:?}"
    );
    assert!(
        egress(&e, c, 1).is_allow(),
        "world includes the new CIDR identity"
    );
    let c_ref = parse_policies(&cnp("c", "  egress:\n    - toCIDR: [10.1.0.0/16]\n"), "t")
        .unwrap()
        .remove(0)
        .key;
    assert!(e.remove_policy(&c_ref));
    let d = e.compute();
    assert!(d.deletes.iter().any(|(_, _, k)| k.identity == c), "{d:?}");
    assert!(e.cidr_identities().next().is_none());
    assert!(egress(&e, NumericIdentity(2), 1).is_allow());
    assert!(!egress(&e, c, 1).is_allow());
}

#[test]
fn cluster_entity_and_namespace_scoping() {
    let mut e = engine(&cnp(
        "c",
        "  ingress:\n    - fromEntities: [cluster]\n  egress:\n    - toEndpoints: [{}]\n",
    ));
    e.compute();
    let st = e.endpoint_state(EP).unwrap();
    assert!(st.ingress.lookup(OTHER, PROTO_TCP, 1).is_allow());
    assert!(
        st.ingress
            .lookup(NumericIdentity(6), PROTO_TCP, 1)
            .is_allow(),
        "remote-node is in cluster"
    );
    assert!(!st
        .ingress
        .lookup(NumericIdentity(2), PROTO_TCP, 1)
        .is_allow());
    assert!(st.egress.lookup(ME, PROTO_TCP, 1).is_allow());
    assert!(
        !st.egress.lookup(OTHER, PROTO_TCP, 1).is_allow(),
        "{{}} is limited to the policy's namespace"
    );
    // A new cluster identity is picked up incrementally.
    e.upsert_identity(NumericIdentity(302), pod("z", &[("app", "new")]));
    let d = e.compute();
    assert!(!d.upserts.is_empty());
    assert!(e
        .endpoint_state(EP)
        .unwrap()
        .ingress
        .lookup(NumericIdentity(302), PROTO_TCP, 1)
        .is_allow());
}

#[test]
fn default_deny_disabled_keeps_denies() {
    let mut e = engine(&cnp(
        "d",
        "  enableDefaultDeny: {egress: false}\n  egressDeny:\n    - toEndpoints: [{matchLabels: {app: other, io.kubernetes.pod.namespace: y}}]\n      toPorts: [{ports: [{port: '80', protocol: TCP}]}]\n",
    ));
    let d = e.compute();
    assert_eq!(d.enforcement, vec![(EP, false, true)]);
    assert!(!egress(&e, OTHER, 80).is_allow());
    assert!(egress(&e, OTHER, 81).is_allow());
    assert_eq!(
        egress(&e, NumericIdentity(2), 80),
        Verdict::Allow {
            auth_type: 0,
            rule_id: Some(IMPLICIT_ALLOW_RULE_ID)
        }
    );
    assert!(e
        .endpoint_state(EP)
        .unwrap()
        .egress
        .lookup(OTHER, PROTO_UDP, 80)
        .is_allow());
}

#[test]
fn auth_and_rule_attribution() {
    let mut e = engine(&cnp(
        "a",
        "  ingress:\n    - fromEndpoints: [{matchLabels: {app: other, io.kubernetes.pod.namespace: y}}]\n      authentication: {mode: required}\n",
    ));
    e.compute();
    let v = e
        .endpoint_state(EP)
        .unwrap()
        .ingress
        .lookup(OTHER, PROTO_TCP, 8080);
    let Verdict::Allow {
        auth_type: 1,
        rule_id: Some(id),
    } = v
    else {
        panic!("{v:?}")
    };
    let r = e.rule(id).unwrap().clone();
    assert_eq!(
        (r.direction, r.deny, r.index, r.policy.name.as_str()),
        (Direction::Ingress, false, 0, "a")
    );
    assert_ne!(id, 0);
    assert_eq!(e.selecting_policies(EP).len(), 1);
    // Re-upserting the same policy changes nothing, rule ids included.
    for p in e.policies().cloned().collect::<Vec<_>>() {
        e.upsert_policy(p);
    }
    assert!(e.compute().is_empty());
    assert_eq!(e.rule(id), Some(&r));
    // Removing the endpoint deletes its entries.
    e.remove_endpoint(EP);
    let d = e.compute();
    assert_eq!(d.deletes.len(), 1);
    assert!(e.endpoint_state(EP).is_none());
}
