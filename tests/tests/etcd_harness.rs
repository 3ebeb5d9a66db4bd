//! The cluster parts of the harness without a cluster-aware agent: a real
//! etcd server in a namespace (data kept across stop/start and kill), the
//! underlay (bridge, veths, addresses, etcd reachable from attached
//! namespaces), removal of a node with its pods, and that cleanup (also of
//! a dead run) leaves no etcd process and no namespace behind.
//!
//! Needs root (network namespaces) and Debian's etcd-server and
//! etcd-client; skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_tests::etcd::ETCD_BIN;
use palisade_tests::netns::{self};
use palisade_tests::{NetNs, PodSpec, PortProto, Topology, TopologyError};

mod common;

fn privileged() -> bool {
    common::netns_privileged() && common::etcd_installed()
}

/// Pids of processes whose command line names `dir` (as `cleanup_stale`
/// looks for them).
fn processes_under(dir: &Path) -> Vec<u32> {
    let marker = format!("{}/", dir.display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .contains(&marker)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Connecting to `addr` from inside `ns`.
fn connect(ns: &NetNs, addr: SocketAddrV4) -> std::io::Result<()> {
    ns.run(move || TcpStream::connect_timeout(&addr.into(), Duration::from_secs(1)).map(drop))
        .unwrap()
}

/// `ping` (iputils) or busybox's, whichever is installed.
fn ping_command() -> Option<Vec<&'static str>> {
    let ok = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if ok(&["ping", "-V"]) {
        Some(vec!["ping"])
    } else if ok(&["busybox", "true"]) {
        Some(vec!["busybox", "ping"])
    } else {
        None
    }
}

/// One echo request from `ns` to `to`, at most 1 s.
fn ping(ping: &[&str], ns: &NetNs, to: Ipv4Addr) -> bool {
    let to = to.to_string();
    let mut args = vec!["netns", "exec", ns.name()];
    args.extend_from_slice(ping);
    args.extend_from_slice(&["-c1", "-W1", to.as_str()]);
    Command::new("ip")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn etcd_keeps_its_data_across_stop_kill_and_start() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::bare().unwrap();
    let run_id = topo.run_id().to_owned();
    let dir = topo.temp_dir().to_owned();
    let ns = topo.add_netns("ul").unwrap();
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2379);
    let etcd = topo.add_etcd(&ns, addr).unwrap();
    assert_eq!(etcd.client_url(), "http://127.0.0.1:2379");
    assert_eq!(etcd.peer_url(), "http://127.0.0.1:2380");
    assert!(etcd.running());
    assert!(etcd.data_dir().starts_with(&dir));
    assert!(etcd.log_path().starts_with(&dir));
    let pid = etcd.pid().unwrap();
    // Found by its command line, like a leftover of a dead run would be.
    assert_eq!(processes_under(&dir), vec![pid]);
    assert!(matches!(
        etcd.start(),
        Err(palisade_tests::EtcdError::AlreadyRunning { .. })
    ));
    // One etcd per topology.
    assert!(matches!(
        topo.add_etcd(&ns, addr),
        Err(TopologyError::Duplicate { .. })
    ));
    let etcd = topo.etcd().unwrap();

    assert_eq!(
        etcd.etcdctl(&["put", "/palisade/test/k", "v1"])
            .unwrap()
            .trim(),
        "OK"
    );
    let get = || {
        etcd.etcdctl(&["get", "--print-value-only", "/palisade/test/k"])
            .map(|s| s.trim().to_owned())
    };
    assert_eq!(get().unwrap(), "v1");

    // Stopped: the port refuses, etcdctl fails with an error naming it.
    etcd.stop().unwrap();
    assert!(!etcd.running());
    let refused = connect(&ns, addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let e = get().unwrap_err().to_string();
    assert!(e.contains("etcdctl") && e.contains(ns.name()), "{e}");
    etcd.stop().unwrap(); // not running: not an error

    // Started again on the same data.
    etcd.start().unwrap();
    assert_ne!(etcd.pid(), Some(pid));
    assert_eq!(get().unwrap(), "v1");

    // Killed (a crash), started again: the data is still there.
    assert_eq!(
        etcd.etcdctl(&["put", "/palisade/test/k2", "v2"])
            .unwrap()
            .trim(),
        "OK"
    );
    etcd.kill().unwrap();
    assert!(!etcd.running());
    assert!(connect(&ns, addr).is_err());
    etcd.start().unwrap();
    assert_eq!(get().unwrap(), "v1");
    assert_eq!(
        etcd.etcdctl(&["get", "--print-value-only", "/palisade/test/k2"])
            .unwrap()
            .trim(),
        "v2"
    );
    let log = std::fs::read_to_string(etcd.log_path()).unwrap();
    assert!(log.contains(palisade_tests::etcd::ETCD_NAME), "{log}");

    let pid = etcd.pid().unwrap();
    topo.cleanup().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "etcd pid {pid} left running"
    );
    assert!(processes_under(&dir).is_empty());
    assert!(
        common::run_namespaces(&run_id).is_empty(),
        "left behind: {:?}",
        common::run_namespaces(&run_id)
    );
    assert!(!dir.exists());
}

#[test]
fn underlay_connects_namespaces_and_etcd() {
    if !privileged() {
        return;
    }
    // Attaching needs an underlay.
    let mut lone = Topology::bare().unwrap();
    let x = lone.add_netns("x").unwrap();
    assert!(matches!(
        lone.attach_underlay(&x),
        Err(TopologyError::NoUnderlay { .. })
    ));
    lone.cleanup().unwrap();

    let mut topo = Topology::bare().unwrap();
    let run_id = topo.run_id().to_owned();
    let dir = topo.temp_dir().to_owned();
    let ul = topo.add_underlay().unwrap();
    assert_eq!(ul.name(), format!("pal-{run_id}-ul"));
    assert_eq!(topo.underlay(), Some(&ul));
    assert!(matches!(
        topo.add_underlay(),
        Err(TopologyError::Duplicate { .. })
    ));
    let etcd = topo.etcd().unwrap();
    assert_eq!(etcd.client_url(), "http://10.199.0.254:2379");
    assert!(etcd.running());
    let bridge = ul.ip(&["-o", "addr", "show", "dev", "br0"]).unwrap();
    assert!(bridge.contains("10.199.0.254/24"), "{bridge}");

    let a = topo.add_netns("a").unwrap();
    let b = topo.add_netns("b").unwrap();
    let addr_a = topo.attach_underlay(&a).unwrap();
    let addr_b = topo.attach_underlay(&b).unwrap();
    assert_eq!(addr_a, Ipv4Addr::new(10, 199, 0, 1));
    assert_eq!(addr_b, Ipv4Addr::new(10, 199, 0, 2));
    let ul0 = a.ip(&["-o", "addr", "show", "dev", "ul0"]).unwrap();
    assert!(ul0.contains("10.199.0.1/24"), "{ul0}");
    for port in ["ul-0", "ul-1"] {
        let link = ul.ip(&["-o", "link", "show", "dev", port]).unwrap();
        assert!(link.contains("master br0") && link.contains("UP"), "{link}");
    }

    // etcd over the underlay, from both namespaces.
    let etcd = topo.etcd().unwrap();
    etcd.etcdctl_in(&a, &["put", "/palisade/test/from", "a"])
        .unwrap();
    let got = etcd
        .etcdctl_in(&b, &["get", "--print-value-only", "/palisade/test/from"])
        .unwrap();
    assert_eq!(got.trim(), "a");
    // ... and not from a namespace that is not attached.
    let etcd_addr = etcd.client_addr();
    let c = topo.add_netns("c").unwrap();
    assert!(connect(&c, etcd_addr).is_err());

    match ping_command() {
        Some(cmd) => {
            assert!(ping(&cmd, &a, addr_b), "a cannot ping b");
            assert!(ping(&cmd, &b, addr_a), "b cannot ping a");
            assert!(
                ping(&cmd, &a, Ipv4Addr::new(10, 199, 0, 254)),
                "a cannot ping the bridge"
            );
            assert!(
                ping(&cmd, &b, Ipv4Addr::new(10, 199, 0, 254)),
                "b cannot ping the bridge"
            );
            assert!(!ping(&cmd, &c, addr_a), "c is not attached but reaches a");
        }
        None => eprintln!("ping part skipped: neither `ping` nor `busybox` is installed"),
    }

    topo.cleanup().unwrap();
    assert!(processes_under(&dir).is_empty());
    assert!(
        common::run_namespaces(&run_id).is_empty(),
        "left behind: {:?}",
        common::run_namespaces(&run_id)
    );
}

#[test]
fn etcd_of_a_dead_run_is_killed_by_cleanup_stale() {
    if !privileged() {
        return;
    }
    // A run id whose pid cannot be alive (pid 0 is never a process).
    let run_id = "0r2379";
    let ns = NetNs::create(&format!("pal-{run_id}-ul")).unwrap();
    let tmp = std::env::temp_dir().join(format!("palisade-{run_id}"));
    let data = tmp.join("etcd").join("data");
    std::fs::create_dir_all(&tmp).unwrap();
    // The command line the harness uses.
    let mut cmd = Command::new(ETCD_BIN);
    cmd.arg("--name=palisade-test")
        .arg(format!("--data-dir={}", data.display()))
        .arg("--listen-client-urls=http://127.0.0.1:2379")
        .arg("--advertise-client-urls=http://127.0.0.1:2379")
        .arg("--listen-peer-urls=http://127.0.0.1:2380")
        .arg("--initial-advertise-peer-urls=http://127.0.0.1:2380")
        .arg("--initial-cluster=palisade-test=http://127.0.0.1:2380")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ns.spawn(&mut cmd).unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "etcd exited at once");

    let report = palisade_tests::cleanup_stale();
    assert!(report.runs.contains(&run_id.to_owned()), "{report:?}");
    assert!(
        report
            .removed
            .iter()
            .any(|r| r.starts_with(&format!("process {pid} "))),
        "{report:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "etcd pid {pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(!netns::list().unwrap().contains(&ns.name().to_owned()));
    assert!(!tmp.exists());
}

#[test]
fn removed_node_takes_its_pods_along() {
    if !privileged() {
        return;
    }
    for bin in ["palisade-agent", "palisade-cni"] {
        if palisade_tests::locate_binary(bin).is_none() {
            common::skip(&format!(
                "no {bin} binary; build the workspace first (cargo build --workspace --bins)"
            ));
            return;
        }
    }
    // One node (no cluster: the agent does not know `cluster` yet), then a
    // second one added, with a pod on each.
    let mut topo = Topology::builder()
        .pod(PodSpec::new("x", "a").ports([PortProto::tcp(80)]))
        .build()
        .unwrap();
    assert!(topo.underlay().is_none() && topo.etcd().is_none());
    assert_eq!(topo.node("n1").unwrap().underlay_address(), None);
    let n2 = topo.add_node("n2").unwrap();
    let n2_ns = n2.netns().clone();
    let n2_pid = n2.agent_pid().unwrap();
    let config = std::fs::read_to_string(n2.config_path()).unwrap();
    assert!(config.contains("pod_cidr: 10.200.1.0/24"), "{config}");
    assert!(!config.contains("cluster:"), "{config}");
    topo.add_pod(PodSpec::new("x", "b").on("n2").ports([PortProto::tcp(80)]))
        .unwrap();
    let b_ns = topo.pod("x/b").unwrap().netns().clone();

    topo.remove_node("n2").unwrap();
    assert!(matches!(
        topo.remove_node("n2"),
        Err(TopologyError::UnknownNode { .. })
    ));
    assert_eq!(topo.nodes().len(), 1);
    assert!(topo.pod("x/b").is_err());
    assert!(topo.pod("x/a").is_ok());
    let left = netns::list().unwrap();
    assert!(!left.contains(&n2_ns.name().to_owned()));
    assert!(!left.contains(&b_ns.name().to_owned()));
    assert!(!Path::new(&format!("/proc/{n2_pid}")).exists());
    // A node added afterwards gets a new index (no pod CIDR reused).
    let n3 = topo.add_node("n3").unwrap();
    let config = std::fs::read_to_string(n3.config_path()).unwrap();
    assert!(config.contains("pod_cidr: 10.200.2.0/24"), "{config}");
    // The other node's agent still answers; cleanup has no CNI DEL to make
    // for the removed node's pod and reports no problem.
    let status = topo
        .node("n1")
        .unwrap()
        .client()
        .call(&palisade_api::Request::Status)
        .unwrap();
    assert!(
        matches!(status, palisade_api::Response::Status(_)),
        "{status:?}"
    );
    let run_id = topo.run_id().to_owned();
    topo.cleanup().unwrap();
    assert!(
        common::run_namespaces(&run_id).is_empty(),
        "left behind: {:?}",
        common::run_namespaces(&run_id)
    );
}

#[test]
fn etcd_that_cannot_listen_reports_its_log() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::bare().unwrap();
    let ns = topo.add_netns("ul").unwrap();
    // No interface of the namespace has this address.
    let addr = SocketAddrV4::new(Ipv4Addr::new(10, 199, 9, 9), 2379);
    let e = topo.add_etcd(&ns, addr).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(
            e,
            TopologyError::Etcd(palisade_tests::EtcdError::Exited { .. })
        ),
        "{text}"
    );
    assert!(text.contains("http://10.199.9.9:2379"), "{text}");
    assert!(text.contains("etcd.log"), "{text}");
    assert!(text.contains("cannot assign requested address"), "{text}");
    // Kept for a look (and another try).
    let etcd = topo.etcd().unwrap();
    assert!(!etcd.running());
    assert!(etcd.log_tail(5).contains("cannot assign requested address"));
    topo.cleanup().unwrap();
}
