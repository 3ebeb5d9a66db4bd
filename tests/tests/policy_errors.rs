//! Invalid policies are refused with an error that names the source and
//! the YAML path, and the policy in force stays in force: through the API
//! (`PolicyApply`) and through the policy directory (a broken file keeps
//! its previous version; fixing it applies the new one; deleting it
//! removes its policies).
//!
//! Needs root; skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use palisade_tests::{PortProto, Topology};

/// `from` reaches b, the other of a/c does not.
fn assert_only(topo: &Topology, from: &str, when: &str) {
    let other = if from == "x/a" { "x/c" } else { "x/a" };
    assert_allowed(topo, from, "x/b", PortProto::tcp(80), when);
    assert_denied(topo, other, "x/b", PortProto::tcp(80), when);
}

/// Invalid documents, each trying to let c in instead of a, with what the
/// error must mention besides the source.
fn invalid_documents() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let good_c = b_ingress_from("b-web", "c", &[(80, "TCP")]);
    vec![
        (
            "malformed.yaml",
            // An unclosed flow mapping.
            good_c.replace("{name: b-web, namespace: x}", "{name: b-web, namespace: x"),
            vec!["document 0", "invalid YAML"],
        ),
        (
            "unknown-field.yaml",
            good_c.replace("fromEndpoints", "fromEndpointz"),
            vec!["spec.ingress[0]", "fromEndpointz"],
        ),
        (
            "invalid-cidr.yaml",
            good_c.replace(
                "fromEndpoints: [{matchLabels: {pod: c}}]",
                "fromCIDR: [\"10.1.2.0/33\"]",
            ),
            vec!["spec.ingress[0].fromCIDR[0]"],
        ),
        (
            "end-port.yaml",
            good_c.replace(
                "{port: \"80\", protocol: TCP}",
                "{port: \"81\", endPort: 80, protocol: TCP}",
            ),
            vec!["spec.ingress[0].toPorts[0].ports[0]"],
        ),
        (
            // The first document is valid; the stream is refused whole.
            "second-document.yaml",
            format!(
                "{good_c}---\n{}",
                good_c
                    .replace("b-web", "b-web-2")
                    .replace("fromEndpoints", "fromEndpointz")
            ),
            vec!["document 1", "spec.ingress[0]"],
        ),
    ]
}

#[test]
fn api_errors_name_source_and_path_and_keep_policy() {
    if !privileged() {
        return;
    }
    let topo = abc_builder([&[], &[PortProto::tcp(80)], &[]])
        .build()
        .expect("topology");
    let node = topo.node("n1").unwrap();
    apply(
        &topo,
        "b-web.yaml",
        &b_ingress_from("b-web", "a", &[(80, "TCP")]),
    );
    assert_only(&topo, "x/a", "valid policy applied");
    let before = policies(node);
    let rev = status(node).policy_revision;

    let mut problems = Vec::new();
    for (source, yaml, mentions) in invalid_documents() {
        let message = apply_err(node, source, &yaml);
        eprintln!("{source}: {message}");
        for m in std::iter::once(source).chain(mentions.iter().copied()) {
            if !message.contains(m) {
                problems.push(format!(
                    "{source}: the error does not mention {m:?}: {message}"
                ));
            }
        }
        assert_eq!(policies(node), before, "{source} changed the policies");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(
        status(node).policy_revision,
        rev,
        "refused applies must not publish a new revision"
    );
    assert_only(&topo, "x/a", "after the refused applies");
}

#[test]
fn policy_dir_broken_file_keeps_previous_version() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("policies");
    let topo = abc_builder([&[], &[PortProto::tcp(80)], &[]])
        .agent_setting("policy_dir", dir.path().to_string_lossy().into_owned())
        .agent_setting("policy_dir_poll_ms", 100u64)
        .build()
        .expect("topology");
    let node = topo.node("n1").unwrap();
    let file = dir.path().join("b.yaml");
    let file_name = file.display().to_string();
    let in_force = |from: &str| {
        // The rule as the agent lists it does not say who is admitted; the
        // probes do.
        policies(node)
            .iter()
            .any(|p| p.name == "b-web" && p.source == file_name)
            && probe(&topo, from, "x/b", PortProto::tcp(80), ALLOW_TIMEOUT).completed
    };

    // A valid file: in force within about a second.
    let t = Instant::now();
    std::fs::write(&file, b_ingress_from("b-web", "a", &[(80, "TCP")])).unwrap();
    wait_for(Duration::from_millis(1500), || {
        in_force("x/a").then_some(())
    })
    .expect("the policy file in force within 1.5 s");
    eprintln!("policy file in force after {:?}", t.elapsed());
    assert_only(&topo, "x/a", "valid file");

    // Broken: the old version stays, the status names the file and path.
    std::fs::write(
        &file,
        b_ingress_from("b-web", "c", &[(80, "TCP")]).replace("fromEndpoints", "fromEndpointz"),
    )
    .unwrap();
    let error = wait_for(Duration::from_millis(1500), || {
        status(node).policy_dir_error
    })
    .expect("policy_dir_error set within 1.5 s of writing a broken file");
    eprintln!("policy_dir_error: {error}");
    assert!(
        error.contains(&file_name) && error.contains("spec.ingress[0]"),
        "policy_dir_error must name the file and the YAML path: {error}"
    );
    assert_eq!(policies(node).len(), 1);
    assert_only(&topo, "x/a", "broken file: the previous version stays");

    // Fixed (a new version): in force, error gone.
    std::fs::write(&file, b_ingress_from("b-web", "c", &[(80, "TCP")])).unwrap();
    wait_for(Duration::from_millis(1500), || {
        in_force("x/c").then_some(())
    })
    .expect("the fixed file in force within 1.5 s");
    assert_eq!(status(node).policy_dir_error, None);
    assert_only(&topo, "x/c", "fixed file");

    // Deleted: its policy goes, b is open again.
    std::fs::remove_file(&file).unwrap();
    wait_for(Duration::from_millis(1500), || {
        policies(node).is_empty().then_some(())
    })
    .expect("the deleted file's policy removed within 1.5 s");
    assert_allowed(&topo, "x/a", "x/b", PortProto::tcp(80), "file deleted");
    assert_allowed(&topo, "x/c", "x/b", PortProto::tcp(80), "file deleted");
    assert_eq!(status(node).policy_dir_error, None);
}
