//! The pod's veth pair: creation directly into the pod's network namespace,
//! addresses, routes, sysctls, deletion and checks, over rtnetlink.
//!
//! Work inside the pod's namespace runs on a dedicated thread that
//! `setns()`es into it and opens its own netlink socket there; the calling
//! thread never changes namespace.

use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use sha2::{Digest, Sha256};

/// Prefix of host-side interface names.
pub const HOST_IFNAME_PREFIX: &str = "lxc";

const ENODEV: i32 = libc::ENODEV;
const EEXIST: i32 = libc::EEXIST;

/// Why a netlink operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The tokio runtime or the netlink socket could not be created.
    #[error("cannot open a netlink connection: {source}")]
    Connection {
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The network namespace could not be opened.
    #[error("cannot open network namespace {path}: {source}")]
    OpenNetns {
        /// The namespace path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `setns()` into the namespace failed.
    #[error("setns({path}) failed: {source}")]
    Setns {
        /// The namespace path.
        path: PathBuf,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// A netlink request failed.
    #[error("{op} {ifname} failed: {source}")]
    Request {
        /// What was asked (`create veth`, `add address`, ...).
        op: &'static str,
        /// The interface concerned.
        ifname: String,
        /// The error.
        #[source]
        source: rtnetlink::Error,
    },
    /// An interface that must exist does not.
    #[error("interface {ifname} does not exist{where_}")]
    NoSuchInterface {
        /// The interface.
        ifname: String,
        /// ` in <netns>` or empty.
        where_: String,
    },
    /// The host-side interface already exists.
    #[error("interface {ifname} already exists on the host (an earlier ADD for this container was not deleted: run DEL first)")]
    AlreadyExists {
        /// The interface.
        ifname: String,
    },
    /// The container interface already exists in the pod's namespace.
    #[error("interface {ifname} already exists in network namespace {netns}")]
    ExistsInNetns {
        /// The interface.
        ifname: String,
        /// The namespace path.
        netns: PathBuf,
    },
    /// Writing a sysctl failed.
    #[error("cannot write {path}: {source}")]
    Sysctl {
        /// The sysctl file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The thread working in the pod's namespace panicked.
    #[error("the thread working in network namespace {path} panicked")]
    ThreadPanicked {
        /// The namespace path.
        path: PathBuf,
    },
    /// An interface is not configured as expected (CHECK).
    #[error("{ifname}: {message}")]
    Mismatch {
        /// The interface.
        ifname: String,
        /// What differs.
        message: String,
    },
}

impl NetlinkError {
    pub(crate) fn request(op: &'static str, ifname: &str) -> impl FnOnce(rtnetlink::Error) -> Self {
        let ifname = ifname.to_owned();
        move |source| Self::Request { op, ifname, source }
    }
}

/// The name of the host side of the veth pair of a container interface:
/// `lxc` + the first 11 hex digits of sha256(`container_id/ifname`).
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}/{ifname}").as_bytes());
    let mut name = String::from(HOST_IFNAME_PREFIX);
    for b in digest.iter() {
        name.push_str(&format!("{b:02x}"));
    }
    name.truncate(HOST_IFNAME_PREFIX.len() + 11);
    name
}

/// What to build for one container interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    /// Host-side name (see [`host_ifname`]).
    pub host_ifname: String,
    /// Name inside the pod (`CNI_IFNAME`).
    pub container_ifname: String,
    /// The pod's network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    /// The pod's address (configured as /32).
    pub ipv4: Ipv4Addr,
    /// The link-local gateway (answered by proxy ARP on the host side).
    pub gateway: Ipv4Addr,
    /// MTU of both sides (kernel default when absent).
    pub mtu: Option<u32>,
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethInfo {
    /// Host-side interface index.
    pub host_ifindex: u32,
    /// Host-side MAC address.
    pub host_mac: String,
    /// Container-side interface index (in the pod's namespace).
    pub container_ifindex: u32,
    /// Container-side MAC address.
    pub container_mac: String,
}

/// Runs `f` with a netlink handle of the current network namespace on a
/// fresh current-thread runtime.
pub(crate) fn with_handle<T, F, Fut>(f: F) -> Result<T, NetlinkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, NetlinkError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|source| NetlinkError::Connection { source })?;
    rt.block_on(async {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetlinkError::Connection { source })?;
        let task = tokio::spawn(conn);
        let out = f(handle).await;
        task.abort();
        out
    })
}

/// Runs `f` with a netlink handle of the network namespace at `netns`, on a
/// dedicated thread that enters it.
fn in_netns<T, F, Fut>(netns: &Path, f: F) -> Result<T, NetlinkError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, NetlinkError>>,
{
    let ns = File::open(netns).map_err(|source| NetlinkError::OpenNetns {
        path: netns.to_owned(),
        source,
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
                NetlinkError::Setns {
                    path: netns.to_owned(),
                    source,
                }
            })?;
            with_handle(f)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(NetlinkError::ThreadPanicked {
                path: netns.to_owned(),
            })
        })
    })
}

pub(crate) fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

/// Every IPv4 route of the namespace; `ifname` names what they are listed
/// for in errors.
pub(crate) async fn list_routes(
    handle: &Handle,
    ifname: &str,
) -> Result<Vec<RouteMessage>, NetlinkError> {
    handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(NetlinkError::request("list routes of", ifname))
}

/// Looks an interface up by name; `None` when it does not exist.
pub(crate) async fn get_link(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, NetlinkError> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if is_errno(&e, ENODEV) => Ok(None),
        Err(source) => Err(NetlinkError::Request {
            op: "get link",
            ifname: name.to_owned(),
            source,
        }),
    }
}

fn mac_bytes(link: &LinkMessage) -> Vec<u8> {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(mac) => Some(mac.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn mac_of(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(mac) => Some(
                mac.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// Writes one sysctl of the current network namespace.
pub fn write_sysctl(path: &Path, value: &str) -> Result<(), NetlinkError> {
    std::fs::write(path, value).map_err(|source| NetlinkError::Sysctl {
        path: path.to_owned(),
        source,
    })
}

/// The pod network is IPv4-only (so is the datapath, which drops other
/// protocols): IPv6 is switched off on both ends of the veth, so that no
/// link-local IPv6 traffic (neighbour discovery) is sent only to be dropped.
fn disable_ipv6(ifname: &str) -> (PathBuf, &'static str) {
    (
        PathBuf::from(format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")),
        "1",
    )
}

fn host_sysctls(ifname: &str) -> [(PathBuf, &'static str); 4] {
    [
        disable_ipv6(ifname),
        (
            PathBuf::from(format!("/proc/sys/net/ipv4/conf/{ifname}/proxy_arp")),
            "1",
        ),
        (
            PathBuf::from(format!("/proc/sys/net/ipv4/conf/{ifname}/rp_filter")),
            "0",
        ),
        (
            PathBuf::from(format!("/proc/sys/net/ipv4/neigh/{ifname}/proxy_delay")),
            "0",
        ),
    ]
}

/// Whether an interface of this name exists in the current namespace.
pub fn link_exists(ifname: &str) -> Result<bool, NetlinkError> {
    with_handle(|h| async move { Ok(get_link(&h, ifname).await?.is_some()) })
}

/// Creates the veth pair of `spec` with its container side directly in the
/// pod's namespace, and configures both sides. On failure nothing is left
/// behind (the pair is deleted).
pub fn create_veth(spec: &VethSpec) -> Result<VethInfo, NetlinkError> {
    let ns = File::open(&spec.netns).map_err(|source| NetlinkError::OpenNetns {
        path: spec.netns.clone(),
        source,
    })?;
    // Create the pair; an existing host side is an error we did not cause,
    // so it is reported before anything is created.
    with_handle(|h| async move {
        if get_link(&h, &spec.host_ifname).await?.is_some() {
            return Err(NetlinkError::AlreadyExists {
                ifname: spec.host_ifname.clone(),
            });
        }
        let mut peer =
            LinkUnspec::new_with_name(&spec.container_ifname).setns_by_fd(ns.as_raw_fd());
        let mut host = LinkVeth::new(&spec.host_ifname, &spec.container_ifname);
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
            host = host.mtu(mtu);
        }
        let msg = host
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        h.link().add(msg).execute().await.map_err(|e| {
            if is_errno(&e, EEXIST) {
                NetlinkError::ExistsInNetns {
                    ifname: spec.container_ifname.clone(),
                    netns: spec.netns.clone(),
                }
            } else {
                NetlinkError::Request {
                    op: "create veth",
                    ifname: spec.host_ifname.clone(),
                    source: e,
                }
            }
        })
    })?;
    tracing::debug!(host = %spec.host_ifname, netns = %spec.netns.display(), "veth created");
    match configure(spec) {
        Ok(info) => Ok(info),
        Err(e) => {
            if let Err(undo) = delete_veth(&spec.host_ifname) {
                tracing::warn!(error = %undo, host = %spec.host_ifname, "cannot delete the half-configured veth");
            }
            Err(e)
        }
    }
}

fn configure(spec: &VethSpec) -> Result<VethInfo, NetlinkError> {
    let (host_ifindex, host_mac, host_mac_bytes) = with_handle(|h| async move {
        let link = get_link(&h, &spec.host_ifname).await?.ok_or_else(|| {
            NetlinkError::NoSuchInterface {
                ifname: spec.host_ifname.clone(),
                where_: String::new(),
            }
        })?;
        let idx = link.header.index;
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(NetlinkError::request("set up", &spec.host_ifname))?;
        for (path, value) in host_sysctls(&spec.host_ifname) {
            write_sysctl(&path, value)?;
        }
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(spec.ipv4, 32)
            .output_interface(idx)
            .scope(RouteScope::Link)
            .build();
        h.route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(NetlinkError::request(
                "add host route via",
                &spec.host_ifname,
            ))?;
        Ok((idx, mac_of(&link), mac_bytes(&link)))
    })?;
    let gateway_lladdr = &host_mac_bytes;

    let (container_ifindex, container_mac) = in_netns(&spec.netns, |h| async move {
        let name = &spec.container_ifname;
        let link = get_link(&h, name)
            .await?
            .ok_or_else(|| NetlinkError::NoSuchInterface {
                ifname: name.clone(),
                where_: format!(" in {}", spec.netns.display()),
            })?;
        let idx = link.header.index;
        let (path, value) = disable_ipv6(name);
        write_sysctl(&path, value)?;
        h.address()
            .add(idx, IpAddr::V4(spec.ipv4), 32)
            .execute()
            .await
            .map_err(NetlinkError::request("add address to", name))?;
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(NetlinkError::request("set up", name))?;
        let gw_route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(spec.gateway, 32)
            .output_interface(idx)
            .scope(RouteScope::Link)
            .build();
        h.route()
            .add(gw_route)
            .execute()
            .await
            .map_err(NetlinkError::request("add gateway route via", name))?;
        // The gateway answers no ARP of its own (it is no address of the
        // host): a permanent neighbour entry points it at the host side of
        // the veth, so pods need neither proxy ARP nor any host route.
        h.neighbours()
            .add(idx, IpAddr::V4(spec.gateway))
            .link_layer_address(gateway_lladdr)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(NetlinkError::request("add gateway neighbour on", name))?;
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(spec.gateway)
            .output_interface(idx)
            .build();
        h.route()
            .add(default)
            .execute()
            .await
            .map_err(NetlinkError::request("add default route via", name))?;
        Ok((idx, mac_of(&link)))
    })?;
    Ok(VethInfo {
        host_ifindex,
        host_mac,
        container_ifindex,
        container_mac,
    })
}

/// Deletes the host side of a veth pair (which deletes the pair). Returns
/// whether it existed: deleting a missing interface is not an error.
pub fn delete_veth(host_ifname: &str) -> Result<bool, NetlinkError> {
    with_handle(|h| async move {
        let Some(link) = get_link(&h, host_ifname).await? else {
            return Ok(false);
        };
        match h.link().del(link.header.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, ENODEV) => Ok(false),
            Err(source) => Err(NetlinkError::Request {
                op: "delete link",
                ifname: host_ifname.to_owned(),
                source,
            }),
        }
    })
}

/// Checks that a veth pair exists and is configured: the host side exists,
/// the container side has `ipv4/32` and, when `gateway` is given, a default
/// route through it.
pub fn check_veth(
    host_ifname: &str,
    container_ifname: &str,
    netns: &Path,
    ipv4: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
) -> Result<(), NetlinkError> {
    with_handle(|h| async move {
        if get_link(&h, host_ifname).await?.is_none() {
            return Err(NetlinkError::NoSuchInterface {
                ifname: host_ifname.to_owned(),
                where_: " on the host".to_owned(),
            });
        }
        Ok(())
    })?;
    in_netns(netns, |h| async move {
        let name = container_ifname;
        let link = get_link(&h, name)
            .await?
            .ok_or_else(|| NetlinkError::NoSuchInterface {
                ifname: name.to_owned(),
                where_: format!(" in {}", netns.display()),
            })?;
        let idx = link.header.index;
        let addrs: Vec<_> = h
            .address()
            .get()
            .set_link_index_filter(idx)
            .execute()
            .try_collect()
            .await
            .map_err(NetlinkError::request("list addresses of", name))?;
        let has = addrs.iter().any(|a| {
            a.header.prefix_len == 32
                && a.attributes.iter().any(
                    |attr| matches!(attr, AddressAttribute::Address(IpAddr::V4(ip)) if *ip == ipv4),
                )
        });
        if !has {
            return Err(NetlinkError::Mismatch {
                ifname: name.to_owned(),
                message: format!("does not have address {ipv4}/32"),
            });
        }
        let Some(gateway) = gateway else {
            return Ok(());
        };
        let routes = list_routes(&h, name).await?;
        let default_ok = routes.iter().any(|r| {
            r.header.destination_prefix_length == 0
                && r.attributes.iter().any(|a| {
                    matches!(a, RouteAttribute::Gateway(RouteAddress::Inet(gw)) if *gw == gateway)
                })
                && r.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == idx))
        });
        if !default_ok {
            return Err(NetlinkError::Mismatch {
                ifname: name.to_owned(),
                message: format!("has no default route via {gateway}"),
            });
        }
        Ok(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn host_ifname_is_stable_and_fits() {
        let a = host_ifname("abc", "eth0");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("lxc"));
        assert!(a[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, host_ifname("abc", "eth0"));
        assert_ne!(a, host_ifname("abc", "eth1"));
        // sha256("abc/eth0") = 2c0e2ebd1d5c...
        let digest = Sha256::digest(b"abc/eth0");
        assert_eq!(&a[3..5], format!("{:02x}", digest[0]));
    }
}
