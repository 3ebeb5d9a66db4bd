//! A synthetic workload shared by `examples/compile_bench.rs` and the
//! performance test: `rules` rules (4 per policy) over `identities`
//! identities, 100 local endpoints.

use palisade_identity::{Labels, NumericIdentity};
use palisade_policies::{
    AuthMode, Cidr, CidrSelector, DirectionSpec, EndpointView, Peer, Policy, PolicyEngine,
    PolicyKind, PolicyPart, PolicyRef, PortRange, PortSpec, Protocol, Requirement, Rule, Selector,
};

pub const ENDPOINTS: usize = 100;

fn sel(k: &str, v: String) -> Selector {
    Selector::new([Requirement::equals(k, &v).unwrap_or_else(|e| panic!("{e}"))])
}

fn tcp(a: i64, b: i64) -> PortSpec {
    PortSpec {
        protocol: Protocol::Tcp,
        ports: Some(PortRange::new(a, b).unwrap_or_else(|e| panic!("{e}"))),
    }
}

fn rule(deny: bool, index: usize, peer: Peer, ports: Vec<PortSpec>) -> Rule {
    Rule {
        deny,
        index,
        peers: vec![peer],
        ports,
        auth: AuthMode::Disabled,
    }
}

pub fn identity_labels(i: usize, apps: usize) -> Labels {
    Labels::try_from_pairs([
        ("app", format!("a{}", i % apps)),
        ("team", format!("t{}", i % 50)),
        ("io.kubernetes.pod.namespace", format!("n{}", i % 10)),
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Policy `j`; `variant` changes one port so that re-upserting it is a
/// one-rule change.
pub fn policy(j: usize, apps: usize, variant: u16) -> Policy {
    let p = 8000 + (j % 100) as i64 + i64::from(variant);
    let third = if j.is_multiple_of(10) {
        let cidr: Cidr = format!("10.{}.0.0/16", j % 256)
            .parse()
            .unwrap_or_else(|e| panic!("{e:?}"));
        Peer::Cidr(CidrSelector {
            cidr,
            except: Vec::new(),
        })
    } else {
        Peer::Endpoints(sel("app", format!("a{}", (j * 13) % apps)))
    };
    Policy {
        key: PolicyRef {
            kind: PolicyKind::CiliumClusterwideNetworkPolicy,
            namespace: None,
            name: format!("p{j}"),
        },
        parts: vec![PolicyPart {
            subject: sel("app", format!("a{}", j % ENDPOINTS)),
            ingress: DirectionSpec {
                default_deny: true,
                rules: vec![
                    rule(
                        false,
                        0,
                        Peer::Endpoints(sel("app", format!("a{}", (j * 7) % apps))),
                        vec![tcp(p, p)],
                    ),
                    rule(
                        false,
                        1,
                        Peer::Endpoints(sel("team", format!("t{}", j % 50))),
                        vec![tcp(9000, 9010)],
                    ),
                    rule(
                        true,
                        0,
                        Peer::Endpoints(sel("app", format!("a{}", (j * 11) % apps))),
                        vec![tcp(p, p)],
                    ),
                ],
            },
            egress: DirectionSpec {
                default_deny: true,
                rules: vec![rule(false, 0, third, vec![])],
            },
        }],
    }
}

/// An engine loaded with the workload (nothing computed yet).
pub fn load(rules: usize, identities: usize) -> PolicyEngine {
    let apps = (identities / 5).max(ENDPOINTS);
    let mut e = PolicyEngine::new();
    for i in 0..identities {
        e.upsert_identity(NumericIdentity(256 + i as u32), identity_labels(i, apps));
    }
    for i in 0..ENDPOINTS {
        e.upsert_endpoint(EndpointView {
            ep_id: i as u16 + 1,
            identity: NumericIdentity(256 + i as u32),
            labels: identity_labels(i, apps),
        });
    }
    for j in 0..rules / 4 {
        e.upsert_policy(policy(j, apps, 0));
    }
    e
}

/// The one-rule change: policy 0 with another port.
pub fn change(e: &mut PolicyEngine, identities: usize, variant: u16) {
    let apps = (identities / 5).max(ENDPOINTS);
    e.upsert_policy(policy(0, apps, variant));
}
