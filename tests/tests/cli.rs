//! The `palisade` command line against a live agent: status, listings,
//! policy validation (exit codes, errors naming file and YAML path), flow
//! events as JSON lines, and the feature probe.
//!
//! Needs root; skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use palisade_tests::{locate_binary, PortProto};

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `palisade ARGS` with `PALISADE_SOCKET` set to `socket` (if any).
fn palisade(socket: Option<&Path>, args: &[&str]) -> Out {
    let mut cmd = Command::new(locate_binary("palisade").unwrap());
    cmd.args(args)
        .env_remove("PALISADE_SOCKET")
        .stdin(Stdio::null());
    if let Some(s) = socket {
        cmd.env("PALISADE_SOCKET", s);
    }
    let out = cmd.output().expect("run palisade");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(socket: Option<&Path>, args: &[&str]) -> String {
    let out = palisade(socket, args);
    assert_eq!(out.code, Some(0), "palisade {args:?}: {out:?}");
    out.stdout
}

#[test]
fn cli_against_live_agent() {
    if !privileged() {
        return;
    }
    let topo = abc_builder([&[], &[PortProto::tcp(80)], &[]])
        .build()
        .expect("topology");
    let b_from_a = b_ingress_from("b-from-a", "a", &[(80, "TCP")]);
    let node = topo.node("n1").unwrap();
    let sock = Some(node.api_socket());
    apply(&topo, "b-from-a.yaml", &b_from_a);
    let st = status(node);

    // status: human and JSON, through PALISADE_SOCKET and --socket.
    let text = ok(sock, &["status"]);
    assert!(text.contains("on node n1"), "{text}");
    let pods = topo.pods().len();
    assert!(text.contains(&format!("Endpoints:    {pods}")), "{text}");
    let via_flag = ok(
        None,
        &["--socket", &node.api_socket().to_string_lossy(), "status"],
    );
    assert!(via_flag.contains("on node n1"), "{via_flag}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(sock, &["-o", "json", "status"])).expect("status -o json is JSON");
    assert_eq!(json["node_name"], "n1");
    assert_eq!(json["endpoints"], pods);
    assert_eq!(json["policies"], 1);

    // An unreachable agent: exit 1 and a hint.
    let missing = topo.temp_dir().join("no-such.sock");
    let out = palisade(Some(&missing), &["status"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&missing.display().to_string()) && out.stderr.contains("hint"),
        "{out:?}"
    );

    // Listings.
    let eps = ok(sock, &["endpoint", "list"]);
    for pod in ["x/a", "x/b"] {
        let p = topo.pod(pod).unwrap();
        let line = eps
            .lines()
            .find(|l| l.contains(pod))
            .unwrap_or_else(|| panic!("{pod} in endpoint list:\n{eps}"));
        assert!(line.contains(&p.ipv4().to_string()), "{line}");
    }
    let ids = ok(sock, &["identity", "list"]);
    assert!(
        ids.contains("pod=a") && ids.contains("pod=b"),
        "identity list shows the pods' labels:\n{ids}"
    );
    for e in endpoints(node) {
        assert!(
            ids.contains(&e.identity.to_string()),
            "{}:\n{ids}",
            e.identity
        );
    }
    let pols = ok(sock, &["policy", "list"]);
    assert!(
        pols.contains("b-from-a") && pols.contains("api:b-from-a.yaml"),
        "{pols}"
    );
    let pols: serde_json::Value =
        serde_json::from_str(&ok(sock, &["-o", "json", "policy", "list"])).unwrap();
    assert_eq!(pols[0]["name"], "b-from-a", "{pols}");
    assert_eq!(pols[0]["selected_endpoints"], 1, "{pols}");

    // policy validate: offline, exit codes, errors name file and path.
    let dir = topo.temp_dir();
    let good = dir.join("good.yaml");
    let bad = dir.join("bad.yaml");
    std::fs::write(&good, &b_from_a).unwrap();
    std::fs::write(&bad, b_from_a.replace("toPorts", "toPortz")).unwrap();
    let out = ok(None, &["policy", "validate", &good.to_string_lossy()]);
    assert!(out.contains("OK") && out.contains("good.yaml"), "{out}");
    let out = palisade(None, &["policy", "validate", &bad.to_string_lossy()]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains(&bad.display().to_string()) && all.contains("spec.ingress[0]"),
        "the error names the file and the YAML path: {out:?}"
    );
    let out = palisade(
        None,
        &[
            "policy",
            "validate",
            &good.to_string_lossy(),
            &bad.to_string_lossy(),
        ],
    );
    assert_eq!(out.code, Some(1), "one bad file fails the run: {out:?}");

    // flows: some traffic, then the last 5 as JSON lines.
    for _ in 0..3 {
        probe(&topo, "x/a", "x/b", PortProto::tcp(80), ALLOW_TIMEOUT);
    }
    assert_denied(&topo, "x/b", "x/a", PortProto::tcp(80), "nothing listens");
    let out = ok(sock, &["flows", "--last", "5", "-o", "json"]);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        (1..=5).contains(&lines.len()),
        "flows --last 5 printed {} lines:\n{out}",
        lines.len()
    );
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
        assert!(v["seq"].is_u64() && v["kind"].is_string(), "{v}");
    }
    let human = ok(sock, &["flows", "--last", "2"]);
    assert!(!human.trim().is_empty(), "human flows output is empty");

    // probe: no agent needed; prints each mechanism the agent reports.
    let out = ok(None, &["probe"]);
    assert!(out.contains("Kernel:"), "{out}");
    for m in &st.mechanisms {
        assert!(
            out.contains(&m.feature) && out.contains(&m.mechanism),
            "probe output lacks {m:?}:\n{out}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(None, &["-o", "json", "probe"])).expect("probe -o json is JSON");
    assert!(json.is_object(), "{json}");
}
