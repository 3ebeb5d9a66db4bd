//! Parser and validator: accepted shapes, and every error names the file,
//! the document and the YAML path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_policies::{
    parse_documents, parse_policies, AuthMode, Entity, ParseError, Peer, PolicyError, PolicyKind,
    Resource,
};

fn err(text: &str) -> ParseError {
    parse_documents(text, "pol.yaml").expect_err("should be refused")
}

fn np(spec: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: x}}\nspec:\n{spec}")
}

fn cnp(spec: &str) -> String {
    format!("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p, namespace: x}}\nspec:\n{spec}")
}

/// (error, expected path, expected words in the message)
fn assert_err(text: &str, path: &str, words: &[&str]) {
    let e = err(text);
    let msg = e.to_string();
    assert_eq!(e.location().source, "pol.yaml", "{msg}");
    assert_eq!(e.location().path, path, "{msg}");
    assert!(msg.starts_with("pol.yaml"), "{msg}");
    for w in words {
        assert!(msg.contains(w), "{msg:?} lacks {w:?}");
    }
}

#[test]
fn schema_errors_carry_path_and_line() {
    let text =
        np("  podSelector: {}\n  ingress:\n    - ports:\n        - {port: 80, endport: 81}\n");
    let e = err(&text);
    assert_eq!(e.location().path, "spec.ingress[0].ports[0].endport");
    assert!(e.location().line.is_some());
    assert!(e.to_string().contains("unknown field `endport`"), "{e}");
    assert_err(
        &np("  podSelector: {}\n  ingress: 3\n"),
        "spec.ingress",
        &["invalid type"],
    );
    assert_err(
        &cnp("  endpointSelector: {}\n  ingress:\n    - fromCIDR: [10.0.0.1/8]\n"),
        "spec.ingress[0].fromCIDR[0]",
        &["host bits", "10.0.0.0/8"],
    );
}

#[test]
fn document_index_and_kind() {
    let text = format!(
        "{}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n",
        np("  podSelector: {}\n")
    );
    let e = err(&text);
    assert!(matches!(e, ParseError::UnknownKind { .. }));
    assert_eq!(e.location().document, 1);
    assert!(e.to_string().contains("v1/ConfigMap"), "{e}");
    assert!(matches!(err("a: [b"), ParseError::Syntax { .. }));
}

#[test]
fn semantic_errors_carry_paths() {
    let cases: &[(String, &str, &[&str])] = &[
        (np("  podSelector: {}\n  ingress:\n    - ports: [{port: 0}]\n"), "spec.ingress[0].ports[0].port", &["1..=65535"]),
        (np("  podSelector: {}\n  ingress:\n    - ports: [{port: 90, endPort: 80}]\n"), "spec.ingress[0].ports[0].endPort", &["endPort"]),
        (np("  podSelector: {}\n  ingress:\n    - ports: [{endPort: 80}]\n"), "spec.ingress[0].ports[0].endPort", &["numeric port"]),
        (np("  podSelector: {}\n  ingress:\n    - ports: [{port: http}]\n"), "spec.ingress[0].ports[0].port", &["named ports are not supported"]),
        (np("  podSelector: {}\n  ingress:\n    - ports: [{port: 80, protocol: ICMP}]\n"), "spec.ingress[0].ports[0].protocol", &["TCP, UDP or SCTP"]),
        (np("  podSelector: {}\n  policyTypes: [Ingres]\n"), "spec.policyTypes[0]", &["Ingress or Egress"]),
        (np("  podSelector: {matchExpressions: [{key: a, operator: In}]}\n"), "spec.podSelector.matchExpressions[0]", &["values"]),
        (np("  podSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}\n"), "spec.podSelector.matchExpressions[0]", &["takes no"]),
        (np("  podSelector: {matchLabels: {a: 'b c'}}\n"), "spec.podSelector.matchLabels.a", &["invalid value"]),
        (np("  podSelector: {}\n  egress:\n    - to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]\n"), "spec.egress[0].to[0].ipBlock.except[0]", &["inside"]),
        (np("  podSelector: {}\n  egress:\n    - to: [{}]\n"), "spec.egress[0].to[0]", &["podSelector"]),
        (cnp("  endpointSelector: {}\n  ingress:\n    - toPorts: [{ports: [{port: '80'}], rules: {http: []}}]\n"), "spec.ingress[0].toPorts[0].rules", &["L7 rules are not supported"]),
        (cnp("  endpointSelector: {}\n  egress:\n    - toFQDNs: [{matchName: a.com}]\n"), "spec.egress[0].toFQDNs", &["toFQDNs is not supported"]),
        (cnp("  endpointSelector: {}\n  egress:\n    - toServices: []\n"), "spec.egress[0].toServices", &["not supported"]),
        (cnp("  endpointSelector: {}\n  egress:\n    - toNodes: []\n"), "spec.egress[0].toNodes", &["not supported"]),
        (cnp("  endpointSelector: {}\n  ingress:\n    - fromRequires: []\n"), "spec.ingress[0].fromRequires", &["not supported"]),
        (cnp("  endpointSelector: {}\n  ingress:\n    - icmps: [{fields: [{type: 8}]}]\n"), "spec.ingress[0].icmps", &["not supported yet"]),
        (cnp("  nodeSelector: {}\n"), "spec.nodeSelector", &["not supported"]),
        (cnp("  endpointSelector: {}\n  ingress:\n    - fromEntities: [mars]\n"), "spec.ingress[0].fromEntities[0]", &["unknown entity", "remote-node"]),
        (cnp("  endpointSelector: {}\n  ingress:\n    - fromEntities: [world]\n      authentication: {mode: required}\n"), "spec.ingress[0].authentication.mode", &["world"]),
        (cnp("  endpointSelector: {}\n  egress:\n    - toEntities: [host]\n      authentication: {mode: required}\n"), "spec.egress[0].authentication.mode", &["host"]),
        (cnp("  endpointSelector: {}\n  egress:\n    - toEndpoints: [{}]\n    - toEntities: [cluster]\n      authentication: {mode: required}\n"), "spec.egress[1].authentication.mode", &["cluster entity", "only cluster endpoints"]),
        (cnp("  endpointSelector: {}\n  ingress:\n    - fromEntities: [remote-node]\n      authentication: {mode: required}\n"), "spec.ingress[0].authentication.mode", &["remote-node"]),
        (cnp("  endpointSelector: {}\n  ingressDeny:\n    - fromEntities: [cluster]\n      authentication: {mode: required}\n"), "spec.ingressDeny[0].authentication", &["deny"]),
        (cnp("  endpointSelector: {}\n  ingress:\n    - fromEntities: [cluster]\n      authentication: {mode: maybe}\n"), "spec.ingress[0].authentication.mode", &["required, disabled"]),
        (cnp("  endpointSelector: {}\n  ingress:\n    - toPorts: [{ports: [{port: '80', protocol: ICMP}]}]\n"), "spec.ingress[0].toPorts[0].ports[0].protocol", &["not supported"]),
        (cnp("  endpointSelector: {}\n  ingress:\n    - toPorts: [{ports: [{port: '0', endPort: 5}]}]\n"), "spec.ingress[0].toPorts[0].ports[0].endPort", &["endPort"]),
        (cnp("  endpointSelector: {}\n  ingress:\n    - fromCIDRSet: [{cidr: 10.0.0.0/8, except: [11.0.0.0/16]}]\n"), "spec.ingress[0].fromCIDRSet[0].except[0]", &["inside"]),
        (cnp("  ingress: []\n"), "spec", &["endpointSelector is required"]),
    ];
    for (text, path, words) in cases {
        assert_err(text, path, words);
        assert!(
            matches!(err(text), ParseError::Policy { .. }),
            "{}",
            err(text)
        );
    }
}

#[test]
fn np_semantics_are_normalised() {
    let ps = parse_policies(
        &np("  podSelector: {matchLabels: {pod: a}}\n  egress:\n    - {}\n"),
        "t",
    )
    .unwrap();
    let part = &ps[0].parts[0];
    assert!(part.ingress.default_deny, "policyTypes omitted => Ingress");
    assert!(part.egress.default_deny, "non-empty egress => Egress");
    assert_eq!(part.egress.rules[0].peers, vec![Peer::Any]);
    let ps = parse_policies(&np("  podSelector: {}\n  egress: []\n"), "t").unwrap();
    assert!(!ps[0].parts[0].egress.default_deny);
    assert_eq!(ps[0].key.namespace.as_deref(), Some("x"));
}

#[test]
fn cnp_semantics_are_normalised() {
    let text = cnp(
        "  endpointSelector: {}\n  enableDefaultDeny: {ingress: false}\n  ingress:\n    - {}\n    - toPorts: [{ports: [{port: '53', protocol: UDP}]}]\n    - fromEntities: [cluster]\n      authentication: {mode: test-always-fail}\n  egress:\n    - toCIDRSet: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}]\n",
    );
    let ps = parse_policies(&text, "t").unwrap();
    let part = &ps[0].parts[0];
    assert!(!part.ingress.default_deny);
    assert!(part.egress.default_deny);
    assert!(
        part.ingress.rules[0].peers.is_empty(),
        "`{{}}` selects nothing"
    );
    assert_eq!(
        part.ingress.rules[1].peers,
        vec![Peer::Any],
        "L4-only rule: every peer"
    );
    assert_eq!(
        part.ingress.rules[2].peers,
        vec![Peer::Entity(Entity::Cluster)]
    );
    assert_eq!(part.ingress.rules[2].auth, AuthMode::TestAlwaysFail);
    let ccnp = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: c}\nspecs:\n  - endpointSelector: {}\n    egress: [{toEndpoints: [{}]}]\n  - endpointSelector: {}\n    egress: [{toEntities: [world]}]\n";
    let ps = parse_policies(ccnp, "t").unwrap();
    assert_eq!(ps[0].key.kind, PolicyKind::CiliumClusterwideNetworkPolicy);
    assert_eq!(ps[0].parts.len(), 2);
    assert_eq!(
        ps[0].parts[1].egress.rules[0].index, 1,
        "indexes count across specs"
    );
    let with_ns = ccnp.replace("metadata: {name: c}", "metadata: {name: c, namespace: x}");
    assert!(matches!(
        err(&with_ns),
        ParseError::Policy {
            source: PolicyError::Invalid { .. },
            ..
        }
    ));
}

#[test]
fn namespaces_and_metadata() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels: {ns: x}\n  uid: abc\n  annotations: {a: b}\n---\n";
    let rs = parse_documents(text, "t").unwrap();
    assert!(
        matches!(&rs[0], Resource::Namespace { name, labels } if name == "x" && labels.get("ns") == Some("x"))
    );
    let e = err("apiVersion: v1\nkind: Namespace\nmetadata: {name: x, colour: red}\n");
    assert_eq!(e.location().path, "metadata.colour");
    assert!(e.to_string().contains("colour"));
}
