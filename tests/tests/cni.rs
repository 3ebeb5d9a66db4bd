//! The `palisade-cni` plugin run by hand, as a container runtime runs it,
//! inside a node's namespace with a real agent: ADD, CHECK, DEL twice,
//! VERSION, and failures (garbage configuration, missing namespace) that
//! must leave no interface and no address behind.
//!
//! Needs root; skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use palisade_api::{Request, Response};
use palisade_tests::{locate_binary, NetNs, Node, Topology};

/// What one plugin run gave.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    /// The CNI error code of a failed run (exit 1, error object on stdout).
    fn error_code(&self) -> u64 {
        assert_eq!(
            self.code,
            Some(1),
            "a failed CNI command exits 1: {self:?}; stderr: {}",
            self.stderr
        );
        let v = self.json();
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "the error object has a msg: {self:?}"
        );
        assert!(v["cniVersion"].is_string(), "{self:?}");
        v["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code: {self:?}"))
    }
}

/// Runs the plugin in the node's namespace with a clean environment; at
/// most 30 s.
fn cni(node: &Node, command: &str, container: &str, netns: Option<&Path>, stdin: &str) -> Run {
    let plugin = locate_binary("palisade-cni").unwrap();
    let mut cmd = Command::new(&plugin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugin.parent().unwrap())
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE=x;K8S_POD_NAME={container}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = netns {
        cmd.env("CNI_NETNS", ns);
    }
    let mut child = node.netns().spawn(&mut cmd).expect("spawn palisade-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("palisade-cni {command} did not finish within 30 s");
    };
    let out = out.unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
}

fn config(node: &Node, extra: serde_json::Value) -> String {
    let mut c = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "palisade",
        "type": "palisade-cni",
        "agentSocket": node.api_socket(),
        "args": {"cni": {"labels": [{"key": "pod", "value": "manual"}]}},
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c.to_string()
}

/// Interface names in a namespace.
fn links(ns: &NetNs) -> BTreeSet<String> {
    ns.ip(&["-o", "link", "show"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// Runs DEL for a container when dropped (a failing test leaves nothing).
struct DelOnDrop<'a> {
    node: &'a Node,
    container: String,
    netns: std::path::PathBuf,
    config: String,
}

impl Drop for DelOnDrop<'_> {
    fn drop(&mut self) {
        let _ = cni(
            self.node,
            "DEL",
            &self.container,
            Some(&self.netns),
            &self.config,
        );
    }
}

fn endpoint_get(node: &Node, container: &str) -> Result<Response, String> {
    node.client()
        .call(&Request::EndpointGet {
            container_id: container.to_owned(),
            ifname: "eth0".to_owned(),
        })
        .map_err(|e| e.to_string())
}

fn next_ip(ip: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) + 1)
}

#[test]
fn cni_lifecycle_and_failures() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::builder().build().expect("topology");
    let pod_ns = topo.add_netns("cni-m").unwrap();
    let node = topo.node("n1").unwrap();
    let conf = config(node, serde_json::json!({}));
    let container = format!("{}-manual", topo.run_id());
    let node_links = links(node.netns());

    // VERSION needs nothing but CNI_COMMAND.
    let v = cni(node, "VERSION", "", None, r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(v.code, Some(0), "{v:?}");
    let v = v.json();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "1.0.0"),
        "{v}"
    );

    // ADD.
    let _guard = DelOnDrop {
        node,
        container: container.clone(),
        netns: pod_ns.path(),
        config: conf.clone(),
    };
    let add = cni(node, "ADD", &container, Some(&pod_ns.path()), &conf);
    assert_eq!(add.code, Some(0), "{add:?}");
    let result = add.json();
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
    let address = result["ips"][0]["address"]
        .as_str()
        .expect("ips[0].address");
    let ip: Ipv4Addr = address.split('/').next().unwrap().parse().unwrap();
    assert!(
        ip.octets()[..3] == [10, 200, 0],
        "{ip} is from the node's pod CIDR 10.200.0.0/24"
    );
    assert!(
        result["interfaces"].as_array().is_some_and(|i| i
            .iter()
            .any(|i| i["name"] == "eth0" && i["sandbox"] == pod_ns.path().display().to_string())),
        "the result lists eth0 in the pod's namespace: {result}"
    );
    let in_pod = pod_ns.ip(&["-o", "addr", "show", "dev", "eth0"]).unwrap();
    assert!(in_pod.contains(&ip.to_string()), "{in_pod}");
    let Ok(Response::Endpoint(ep)) = endpoint_get(node, &container) else {
        panic!("the agent knows the endpoint after ADD");
    };
    assert_eq!(ep.spec.ipv4, ip);
    assert_eq!(
        ep.spec.labels.get("pod").map(String::as_str),
        Some("manual")
    );
    let with_veth = links(node.netns());
    assert!(
        with_veth.contains(&ep.spec.host_ifname),
        "{} in {with_veth:?}",
        ep.spec.host_ifname
    );

    // CHECK, with the ADD result as prevResult.
    let check_conf = config(node, serde_json::json!({ "prevResult": result }));
    let check = cni(node, "CHECK", &container, Some(&pod_ns.path()), &check_conf);
    assert_eq!(check.code, Some(0), "{check:?}");
    assert!(check.stdout.is_empty(), "{check:?}");

    // DEL, then DEL again.
    for round in ["DEL", "second DEL"] {
        let del = cni(node, "DEL", &container, Some(&pod_ns.path()), &conf);
        assert_eq!(del.code, Some(0), "{round}: {del:?}");
        assert_eq!(links(node.netns()), node_links, "{round}: veth removed");
        assert!(
            endpoint_get(node, &container).is_err(),
            "{round}: the agent forgot the endpoint"
        );
    }
    // A DEL without CNI_NETNS (allowed by the spec) is fine too.
    let del = cni(node, "DEL", &container, None, &conf);
    assert_eq!(del.code, Some(0), "DEL without CNI_NETNS: {del:?}");

    // Garbage on stdin: a decode error, nothing created.
    let other = format!("{}-garbage", topo.run_id());
    let bad = cni(
        node,
        "ADD",
        &other,
        Some(&pod_ns.path()),
        "this is {not JSON",
    );
    let code = bad.error_code();
    assert!(code == 6 || code == 7, "{bad:?}");
    assert_eq!(links(node.netns()), node_links, "garbage ADD created links");
    assert!(endpoint_get(node, &other).is_err());
    // An ADD with a valid configuration but a namespace that does not
    // exist: unknown container, nothing created.
    let missing = Path::new("/var/run/netns").join(format!("pal-{}-missing", topo.run_id()));
    let bad = cni(node, "ADD", &other, Some(&missing), &conf);
    assert_eq!(bad.error_code(), 3, "{bad:?}");
    assert_eq!(links(node.netns()), node_links, "failed ADD created links");
    assert!(endpoint_get(node, &other).is_err());
    assert_eq!(
        pod_ns.ip(&["-o", "link", "show"]).unwrap().lines().count(),
        1,
        "only lo left in the pod's namespace"
    );

    // The agent down: unreachable (100), nothing created.
    node.stop_agent(false).expect("stop agent");
    let bad = cni(node, "ADD", &other, Some(&pod_ns.path()), &conf);
    node.start_agent().expect("start agent");
    assert_eq!(bad.error_code(), 100, "{bad:?}");
    assert_eq!(
        links(node.netns()),
        node_links,
        "ADD without agent created links"
    );
    assert!(endpoint_get(node, &other).is_err());

    // No address was taken by the failures: the next one is the one after
    // the ADD's (the allocator goes round, it does not reuse at once).
    let Response::Address(a) = call(
        node,
        &Request::IpamAllocate {
            container_id: format!("{}-ipam", topo.run_id()),
            ifname: "eth0".into(),
        },
    ) else {
        panic!("IpamAllocate: not an address");
    };
    assert_eq!(a.ipv4, next_ip(ip), "an address leaked: {a:?}");
    call(
        node,
        &Request::IpamRelease {
            container_id: format!("{}-ipam", topo.run_id()),
            ifname: "eth0".into(),
        },
    );

    // A fresh ADD after all that works and gets the following address.
    let again = cni(node, "ADD", &container, Some(&pod_ns.path()), &conf);
    assert_eq!(again.code, Some(0), "{again:?}");
    let addr = again.json()["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        addr.starts_with(&format!("{}/", next_ip(next_ip(ip)))),
        "{addr}"
    );
    // _guard deletes it.
}
