//! TracingPolicy documents are untrusted input: whatever the parser is
//! given, it returns policies or an error naming the source, and never
//! panics.

use palisade_tracing_policies::parse_documents;
use proptest::prelude::*;

const SEED: &str = "apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: sys-setuid
spec:
  options:
    - name: policy-mode
      value: enforce
  kprobes:
    - call: sys_setuid
      syscall: true
      args:
        - index: 0
          type: int
      selectors:
        - matchArgs:
            - index: 0
              operator: Equal
              values: [\"0\"]
          matchBinaries:
            - operator: In
              values: [/usr/bin/python3]
          matchActions:
            - action: Sigkill
  tracepoints:
    - subsystem: raw_syscalls
      event: sys_enter
      args:
        - index: 4
          type: int64
      selectors:
        - matchArgs:
            - index: 4
              operator: InRange
              values: [\"100:200\"]
";

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
    fn mutated_policy_never_panics(
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..8, "[ -~\n]{0,8}"), 1..6),
    ) {
        let mut text = SEED.to_owned();
        for (at, len, insert) in cuts {
            let start = at.index(text.len() + 1);
            let end = (start + len).min(text.len());
            text.replace_range(start..end, &insert);
        }
        check(&text);
    }
}

#[test]
fn seed_is_valid() {
    parse_documents(SEED, "seed.yaml").expect("seed parses");
}
