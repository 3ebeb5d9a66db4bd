//! The CNI plugin's netlink module against the real kernel: veth pairs into
//! a network namespace, addresses, routes, sysctls, deletion, rollback.
//! Needs root (skips with a message otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use palisade_enforcer::cni::netlink::{self, NetlinkError, VethSpec};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("SKIPPED: needs root (creates network namespaces and veth pairs)");
            return;
        }
    };
}

/// A network namespace deleted on drop, with the host veth of the test.
struct Netns {
    name: String,
    host_ifname: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!(
            "pal-cni-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let host_ifname = netlink::host_ifname(&name, "eth0");
        Self { name, host_ifname }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn spec(&self, ip: Ipv4Addr) -> VethSpec {
        VethSpec {
            host_ifname: self.host_ifname.clone(),
            container_ifname: "eth0".to_owned(),
            netns: self.path(),
            ipv4: ip,
            gateway: Ipv4Addr::new(169, 254, 1, 1),
            mtu: Some(1400),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_ifname])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn host_link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .unwrap()
        .status
        .success()
}

fn sysctl(path: &str) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

#[test]
fn create_configure_check_delete() {
    require_root!();
    let ns = Netns::new("ok");
    let ip = Ipv4Addr::new(10, 250, 7, 7);
    let spec = ns.spec(ip);

    let info = netlink::create_veth(&spec).unwrap();
    assert!(info.host_ifindex > 0);
    assert_eq!(info.container_mac.len(), 17, "{info:?}");

    // Container side: address, up, routes.
    let addr = ns.ip(&["-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 10.250.7.7/32"), "{addr}");
    assert!(addr.contains("mtu 1400"), "{addr}");
    assert!(addr.contains(",UP"), "{addr}");
    let routes = ns.ip(&["-4", "route", "show"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("169.254.1.1 dev eth0 ") && l.contains("scope link")),
        "{routes}"
    );

    // Host side: up, sysctls, /32 route.
    let link = run("ip", &["link", "show", "dev", &spec.host_ifname]);
    assert!(link.contains(",UP"), "{link}");
    assert!(link.contains("mtu 1400"), "{link}");
    let conf = format!("/proc/sys/net/ipv4/conf/{}", spec.host_ifname);
    assert_eq!(sysctl(&format!("{conf}/proxy_arp")), "1");
    assert_eq!(sysctl(&format!("{conf}/rp_filter")), "0");
    let host_routes = run("ip", &["-4", "route", "show", "dev", &spec.host_ifname]);
    assert!(
        host_routes
            .lines()
            .any(|l| l.starts_with("10.250.7.7 ") && l.contains("scope link")),
        "{host_routes}"
    );

    // CHECK passes, and fails on a wrong address or gateway.
    let check = |ip, gw| netlink::check_veth(&spec.host_ifname, "eth0", &spec.netns, ip, gw);
    check(ip, Some(spec.gateway)).unwrap();
    check(ip, None).unwrap();
    assert!(matches!(
        check(Ipv4Addr::new(10, 250, 7, 8), None),
        Err(NetlinkError::Mismatch { .. })
    ));
    assert!(matches!(
        check(ip, Some(Ipv4Addr::new(169, 254, 9, 9))),
        Err(NetlinkError::Mismatch { .. })
    ));
    assert!(netlink::link_exists(&spec.host_ifname).unwrap());

    // A second create for the same interface is refused and changes nothing.
    assert!(matches!(
        netlink::create_veth(&spec),
        Err(NetlinkError::AlreadyExists { .. })
    ));
    assert!(host_link_exists(&spec.host_ifname));

    // Delete removes both sides; deleting again is a no-op.
    assert!(netlink::delete_veth(&spec.host_ifname).unwrap());
    assert!(!host_link_exists(&spec.host_ifname));
    let links = ns.ip(&["link", "show"]);
    assert!(!links.contains("eth0"), "{links}");
    assert!(!netlink::delete_veth(&spec.host_ifname).unwrap());
    assert!(!netlink::link_exists(&spec.host_ifname).unwrap());
    assert!(matches!(
        check(ip, None),
        Err(NetlinkError::NoSuchInterface { .. })
    ));
}

#[test]
fn existing_container_interface_is_refused_without_leftovers() {
    require_root!();
    let ns = Netns::new("dup");
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    let spec = ns.spec(Ipv4Addr::new(10, 250, 8, 8));
    let err = netlink::create_veth(&spec).unwrap_err();
    assert!(matches!(err, NetlinkError::ExistsInNetns { .. }), "{err}");
    assert!(!host_link_exists(&spec.host_ifname));
}

#[test]
fn failure_after_creation_deletes_the_pair() {
    require_root!();
    let ns = Netns::new("rb");
    // A default route already in the pod makes adding ours fail, after the
    // pair exists and is half configured.
    ns.ip(&[
        "link", "add", "side0", "type", "veth", "peer", "name", "side1",
    ]);
    ns.ip(&["link", "set", "side0", "up"]);
    ns.ip(&["link", "set", "side1", "up"]);
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "side0"]);
    ns.ip(&["route", "add", "default", "via", "10.99.0.254"]);
    let spec = ns.spec(Ipv4Addr::new(10, 250, 9, 9));
    let err = netlink::create_veth(&spec).unwrap_err();
    assert!(
        matches!(
            err,
            NetlinkError::Request {
                op: "add default route via",
                ..
            }
        ),
        "{err}"
    );
    assert!(!host_link_exists(&spec.host_ifname));
    let links = ns.ip(&["link", "show"]);
    assert!(!links.contains("eth0"), "{links}");
    let host_routes = run("ip", &["-4", "route", "show"]);
    assert!(!host_routes.contains("10.250.9.9"), "{host_routes}");
}

#[test]
fn missing_netns_is_reported_before_anything_is_created() {
    require_root!();
    let spec = VethSpec {
        host_ifname: netlink::host_ifname("pal-cni-missing", "eth0"),
        container_ifname: "eth0".to_owned(),
        netns: PathBuf::from("/var/run/netns/pal-cni-does-not-exist"),
        ipv4: Ipv4Addr::new(10, 250, 10, 10),
        gateway: Ipv4Addr::new(169, 254, 1, 1),
        mtu: None,
    };
    assert!(matches!(
        netlink::create_veth(&spec),
        Err(NetlinkError::OpenNetns { .. })
    ));
    assert!(!host_link_exists(&spec.host_ifname));
}
