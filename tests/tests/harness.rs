//! Smoke test of the harness without an agent: namespaces, a veth pair,
//! echo servers, probes, and that nothing is left behind.
//!
//! Needs root (network namespaces); skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use palisade_tests::netns::{self, run_ip};
use palisade_tests::{PortProto, ProbeJob, Topology};

mod common;

use common::netns_privileged as privileged;

#[test]
fn two_namespaces_probe_and_cleanup() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::bare().unwrap();
    let run_id = topo.run_id().to_owned();
    let dir = topo.temp_dir().to_owned();
    assert!(dir.is_dir());

    let a = topo.add_netns("a").unwrap();
    let b = topo.add_netns("b").unwrap();
    assert_eq!(common::run_namespaces(&run_id).len(), 2);

    // veth pair a <-> b, 10.99.0.1/24 and 10.99.0.2/24. Interface names
    // are at most 15 bytes; they disappear with the namespaces.
    let (va, vb) = ("pva", "pvb");
    run_ip(&[
        "link",
        "add",
        va,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        vb,
        "netns",
        b.name(),
    ])
    .unwrap();
    a.ip(&["addr", "add", "10.99.0.1/24", "dev", va]).unwrap();
    b.ip(&["addr", "add", "10.99.0.2/24", "dev", vb]).unwrap();
    a.ip(&["link", "set", va, "up"]).unwrap();
    b.ip(&["link", "set", vb, "up"]).unwrap();

    let ports = [PortProto::tcp(80), PortProto::tcp(81), PortProto::udp(80)];
    topo.start_echo(&b, &ports).unwrap();

    let server = "10.99.0.2".parse().unwrap();
    let timeout = Duration::from_secs(1);
    for port in ports {
        let o = palisade_tests::probe::probe(&a, server, port, timeout).unwrap();
        assert!(o.completed, "{port}: {o:?}");
        assert_ne!(o.client_port, 0);
        assert!(o.elapsed < timeout);
    }

    // Nothing listens on 82/tcp: refused at once, not completed.
    let o = palisade_tests::probe::probe(&a, server, PortProto::tcp(82), timeout).unwrap();
    assert!(!o.completed, "{o:?}");
    assert!(o.elapsed < Duration::from_millis(500), "{o:?}");

    // An address on the subnet that nobody has: no ARP answer, so TCP and
    // UDP probes time out, within the 1 s bound.
    let nobody = "10.99.0.77".parse().unwrap();
    for port in [PortProto::tcp(80), PortProto::udp(80)] {
        let start = Instant::now();
        let o = palisade_tests::probe::probe(&a, nobody, port, Duration::from_secs(5)).unwrap();
        assert!(!o.completed, "{port}: {o:?}");
        assert!(
            start.elapsed() <= Duration::from_millis(1300),
            "{port}: {o:?}"
        );
        assert!(o.elapsed >= Duration::from_millis(900), "{port}: {o:?}");
    }

    // A batch in parallel: 64 reachable + 64 unreachable probes finish in
    // about one timeout, not 64 of them.
    let mut jobs = Vec::new();
    for i in 0..128 {
        jobs.push(ProbeJob {
            from: a.clone(),
            dst: if i % 2 == 0 { server } else { nobody },
            port: ports[i % ports.len()],
        });
    }
    let start = Instant::now();
    let outcomes = topo.probe_many(&jobs, timeout);
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    for (job, o) in jobs.iter().zip(&outcomes) {
        let o = o.as_ref().unwrap();
        assert_eq!(o.completed, job.dst == server, "{job:?}: {o:?}");
    }

    // Code run inside a namespace sees that namespace's interfaces.
    let seen = a
        .run(|| std::net::TcpListener::bind("10.99.0.1:0").is_ok())
        .unwrap();
    assert!(seen, "10.99.0.1 is bindable only inside namespace a");

    drop(topo);
    assert!(
        common::run_namespaces(&run_id).is_empty(),
        "left behind: {:?}",
        common::run_namespaces(&run_id)
    );
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
    assert!(run_ip(&["link", "show", va]).is_err());
}

#[test]
fn cleanup_on_panic() {
    if !privileged() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let mut topo = Topology::bare().unwrap();
        let ns = topo.add_netns("p").unwrap();
        topo.start_echo(&ns, &[PortProto::tcp(80)]).unwrap();
        tx.send(topo.run_id().to_owned()).unwrap();
        panic!("boom (expected by the test)");
    })
    .join();
    assert!(result.is_err());
    let run_id = rx.recv().unwrap();
    assert!(
        common::run_namespaces(&run_id).is_empty(),
        "left behind: {:?}",
        common::run_namespaces(&run_id)
    );
}

#[test]
fn stale_runs_of_dead_processes_are_removed() {
    if !privileged() {
        return;
    }
    // A run id whose pid cannot be alive (pid 0 is never a process).
    let name = "pal-0r77-x-a";
    netns::NetNs::create(name).unwrap();
    let bpf = std::path::Path::new("/sys/fs/bpf/palisade-0r77-n1");
    let have_bpf = std::fs::create_dir(bpf).is_ok();
    let tmp = std::env::temp_dir().join("palisade-0r77");
    std::fs::create_dir_all(tmp.join("n1")).unwrap();

    let report = palisade_tests::cleanup_stale();
    assert!(report.runs.contains(&"0r77".to_owned()), "{report:?}");
    assert!(!netns::list().unwrap().contains(&name.to_owned()));
    assert!(!tmp.exists());
    if have_bpf {
        assert!(!bpf.exists());
    }
    // Our own live runs are not touched.
    let mut topo = Topology::bare().unwrap();
    topo.add_netns("live").unwrap();
    palisade_tests::cleanup_stale();
    assert_eq!(common::run_namespaces(topo.run_id()).len(), 1);
}
