//! The policy parser takes untrusted input (files, API requests): whatever
//! it is given, it returns resources or an error that says where, and never
//! panics.

use palisade_policies::parse_documents;
use proptest::prelude::*;

/// Valid documents to mutate.
const SEEDS: &[&str] = &[
    "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
      ports: [{protocol: TCP, port: 80, endPort: 90}]
  policyTypes: [Ingress, Egress]
",
    "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c, namespace: x}
spec:
  endpointSelector: {matchExpressions: [{key: app, operator: In, values: [a, b]}]}
  ingress:
    - fromEntities: [world, cluster]
      toPorts: [{ports: [{port: \"443\", protocol: ANY}]}]
  egressDeny:
    - toCIDRSet: [{cidr: 192.168.0.0/16, except: [192.168.1.0/24]}]
  enableDefaultDeny: {ingress: false}
---
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: a}}
",
];

fn check(text: &str) {
    if let Err(e) = parse_documents(text, "fuzz.yaml") {
        let msg = e.to_string();
        assert!(
            msg.contains("fuzz.yaml"),
            "error does not name the source: {msg}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        check(&text);
    }

    #[test]
    fn yaml_shaped_text_never_panics(
        text in "(apiVersion: (v1|cilium.io/v2|networking.k8s.io/v1)\n)?(kind: [A-Za-z]{0,30}\n)?(metadata: \\{name: [a-z-]{0,10}(, namespace: [a-z]{0,5})?\\}\n)?(spec:\n( {0,4}[a-zA-Z]{0,16}: ?[\\[\\]{}a-z0-9./:\"-]{0,24}\n){0,8})?(---\n)?"
    ) {
        check(&text);
    }

    #[test]
    fn mutated_valid_documents_never_panic(
        seed in 0..SEEDS.len(),
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..6, "[ -~\n]{0,6}"), 1..6),
    ) {
        let mut text = SEEDS[seed].to_owned();
        for (at, len, insert) in cuts {
            let start = at.index(text.len() + 1);
            let end = (start + len).min(text.len());
            if text.is_char_boundary(start) && text.is_char_boundary(end) {
                text.replace_range(start..end, &insert);
            }
        }
        check(&text);
    }
}

#[test]
fn seeds_are_valid() {
    for s in SEEDS {
        parse_documents(s, "seed.yaml").expect("seed parses");
    }
}
