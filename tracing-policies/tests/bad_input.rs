//! Refused inputs: each error must carry the YAML path of the culprit.

use palisade_tracing_policies::{parse_documents, ParseError};

fn doc(spec: &str) -> String {
    format!(
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n{spec}"
    )
}

const KPROBE_INT: &str = "  kprobes:\n  - call: fd_install\n    syscall: false\n    args:\n    - index: 0\n      type: int\n    - index: 1\n      type: file\n";

fn values(n: usize) -> String {
    (0..n).map(|i| format!("        - \"{i}\"\n")).collect()
}

#[test]
fn bad_inputs_name_their_yaml_path() {
    let many = format!(
        "{KPROBE_INT}    selectors:\n    - matchArgs:\n      - index: 0\n        operator: Equal\n        values:\n{}",
        values(1025)
    );
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "unknown hook field",
            doc("  kprobes:\n  - call: x\n    bogus: 1\n"),
            "spec.kprobes[0].bogus",
            "unknown field `bogus`",
        ),
        (
            "unknown selector field",
            doc(&format!("{KPROBE_INT}    selectors:\n    - matchArgz: []\n")),
            "spec.kprobes[0].selectors[0].matchArgz",
            "unknown field `matchArgz`",
        ),
        (
            "wrong arg index",
            doc(&format!("{KPROBE_INT}    selectors:\n    - matchArgs:\n      - index: 3\n        operator: Equal\n        values: [\"1\"]\n")),
            "spec.kprobes[0].selectors[0].matchArgs[0].index",
            "index 3 does not refer to a declared args",
        ),
        ("too many values", doc(&many), "spec.kprobes[0].selectors[0].matchArgs[0].values", "1025 values, at most 1024"),
        (
            "prefix on an int",
            doc(&format!("{KPROBE_INT}    selectors:\n    - matchArgs:\n      - index: 0\n        operator: Prefix\n        values: [\"1\"]\n")),
            "spec.kprobes[0].selectors[0].matchArgs[0].operator",
            "not valid for an argument of type int",
        ),
        (
            "sport on a file",
            doc(&format!("{KPROBE_INT}    selectors:\n    - matchArgs:\n      - index: 1\n        operator: SPort\n        values: [\"80\"]\n")),
            "spec.kprobes[0].selectors[0].matchArgs[0].operator",
            "not valid for an argument of type file",
        ),
        (
            "unknown operator",
            doc(&format!("{KPROBE_INT}    selectors:\n    - matchArgs:\n      - index: 0\n        operator: Like\n        values: [\"1\"]\n")),
            "spec.kprobes[0].selectors[0].matchArgs[0].operator",
            "unknown variant `Like`",
        ),
        (
            "int that does not parse",
            doc(&format!("{KPROBE_INT}    selectors:\n    - matchArgs:\n      - index: 0\n        operator: Equal\n        values: [\"1\", \"x\"]\n")),
            "spec.kprobes[0].selectors[0].matchArgs[0].values[1]",
            "is not an integer",
        ),
        (
            "bad cidr",
            doc("  kprobes:\n  - call: tcp_connect\n    args:\n    - index: 0\n      type: sock\n    selectors:\n    - matchArgs:\n      - index: 0\n        operator: DAddr\n        values: [\"10.0.0.0/33\"]\n"),
            "spec.kprobes[0].selectors[0].matchArgs[0].values[0]",
            "invalid prefix length",
        ),
        (
            "bad capability",
            doc(&format!("{KPROBE_INT}    selectors:\n    - matchCapabilities:\n      - operator: In\n        values: [CAP_FLY]\n")),
            "spec.kprobes[0].selectors[0].matchCapabilities[0].values[0]",
            "unknown capability",
        ),
        (
            "undeclared list",
            doc("  kprobes:\n  - call: \"list:nope\"\n"),
            "spec.kprobes[0].call",
            "list \"nope\" is not declared",
        ),
        (
            "override on a tracepoint",
            doc("  tracepoints:\n  - subsystem: syscalls\n    event: sys_enter_openat\n    selectors:\n    - matchActions:\n      - action: Override\n        argError: -1\n"),
            "spec.tracepoints[0].selectors[0].matchActions[0].action",
            "Override only works on kprobes and lsmhooks",
        ),
        (
            "bad signal",
            doc("  kprobes:\n  - call: x\n    selectors:\n    - matchActions:\n      - action: Signal\n        argSig: 99\n"),
            "spec.kprobes[0].selectors[0].matchActions[0].argSig",
            "not a signal number",
        ),
        (
            "bad policy mode",
            doc("  options:\n  - name: policy-mode\n    value: enforcing\n  kprobes:\n  - call: x\n"),
            "spec.options[0].value",
            "invalid policy-mode",
        ),
        (
            "bad namespace",
            doc("  kprobes:\n  - call: x\n    selectors:\n    - matchNamespaces:\n      - namespace: Foo\n        operator: In\n        values: [host_ns]\n"),
            "spec.kprobes[0].selectors[0].matchNamespaces[0].namespace",
            "unknown variant `Foo`",
        ),
        (
            "too many selectors",
            doc(&format!("  kprobes:\n  - call: x\n    selectors:\n{}", "    - matchPIDs:\n      - operator: In\n        values: [1]\n".repeat(65))),
            "spec.kprobes[0].selectors",
            "65 selectors, at most 64",
        ),
    ];
    for (what, text, path, reason) in cases {
        let err = match parse_documents(&text, "t.yaml") {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => e,
        };
        assert_eq!(err.location().path, path, "{what}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(reason), "{what}: {msg:?} lacks {reason:?}");
        assert!(msg.starts_with("t.yaml"), "{what}: {msg}");
        if matches!(err, ParseError::Schema { .. }) {
            assert!(
                err.location().line.is_some(),
                "{what}: schema errors carry a line"
            );
        }
    }
}

#[test]
fn tetragon_limits_do_not_apply() {
    let text = doc(&format!(
        "{KPROBE_INT}    selectors:\n    - matchArgs:\n      - index: 0\n        operator: Equal\n        values:\n{}",
        values(1024)
    ));
    assert!(parse_documents(&text, "t.yaml").is_ok());
}
