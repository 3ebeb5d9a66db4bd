//! The node's overlay device and its routes: `palisade_vxlan`, a VXLAN
//! device in external (collect_md) mode, into which the kernel routes every
//! other node's pod CIDR. The eBPF programs on it (`bpf/overlay.c`) choose
//! the outer destination per packet and carry the source identity in the
//! VNI; see `docs/cluster.md` for the design and its security properties.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use palisade_cluster::PodCidr;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVxlan, RouteMessageBuilder};
use tracing::{info, warn};

use crate::cni::netlink::{get_link, list_routes, with_handle, write_sysctl, NetlinkError};

/// Name of the overlay device.
pub const OVERLAY_IFNAME: &str = "palisade_vxlan";

/// Bytes VXLAN adds around an inner IPv4 packet: outer IPv4 (20), UDP (8),
/// VXLAN (8) and the inner Ethernet header (14).
pub const VXLAN_OVERHEAD: u32 = 50;

// Every cluster identity fits the VNI that carries it between nodes.
const _: () =
    assert!(palisade_identity::NumericIdentity::CLUSTER_MAX <= palisade_bpf::abi::TUNNEL_ID_MAX);

/// MTU assumed for the underlay when the node address is on no local
/// interface (behind NAT, for instance).
const DEFAULT_UNDERLAY_MTU: u32 = 1500;

/// The main routing table.
const RT_TABLE_MAIN: u32 = 254;

/// The overlay device as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayDevice {
    /// Interface index.
    pub ifindex: u32,
    /// Its MTU: the underlay's minus [`VXLAN_OVERHEAD`]; pods get the same.
    pub mtu: u32,
}

/// Creates the overlay device for UDP port `port` (or keeps the existing one
/// if it is already so), sized for the underlay interface that holds
/// `underlay`, and brings it up (IPv4 only).
///
/// An existing device is kept, not recreated, so that a restarted agent
/// does not interrupt cross-node traffic (its pinned programs stay attached).
pub fn ensure_device(port: u16, underlay: Ipv4Addr) -> Result<OverlayDevice, NetlinkError> {
    let device = with_handle(|h| async move {
        let underlay_mtu = underlay_mtu(&h, underlay).await?;
        let mtu = underlay_mtu.saturating_sub(VXLAN_OVERHEAD);
        if let Some(link) = get_link(&h, OVERLAY_IFNAME).await? {
            if is_external_vxlan(&link, port) {
                let ifindex = link.header.index;
                h.link()
                    .set(LinkUnspec::new_with_index(ifindex).mtu(mtu).build())
                    .execute()
                    .await
                    .map_err(NetlinkError::request("set the MTU of", OVERLAY_IFNAME))?;
                return Ok(OverlayDevice { ifindex, mtu });
            }
            warn!(
                ifname = OVERLAY_IFNAME,
                port, "existing device is not an external VXLAN on this port; recreating it"
            );
            h.link()
                .del(link.header.index)
                .execute()
                .await
                .map_err(NetlinkError::request("delete", OVERLAY_IFNAME))?;
        }
        let msg = LinkMessageBuilder::<LinkVxlan>::new(OVERLAY_IFNAME)
            .port(port)
            .collect_metadata(true)
            .learning(false)
            .mtu(mtu)
            .arp(false)
            .build();
        h.link()
            .add(msg)
            .execute()
            .await
            .map_err(NetlinkError::request("create vxlan", OVERLAY_IFNAME))?;
        let link =
            get_link(&h, OVERLAY_IFNAME)
                .await?
                .ok_or_else(|| NetlinkError::NoSuchInterface {
                    ifname: OVERLAY_IFNAME.to_owned(),
                    where_: String::new(),
                })?;
        info!(ifname = OVERLAY_IFNAME, port, mtu, "overlay device created");
        Ok(OverlayDevice {
            ifindex: link.header.index,
            mtu,
        })
    })?;
    // Packets from other nodes' pods arrive on this device, their replies
    // (to node addresses) leave through the underlay: strict reverse-path
    // filtering would drop them. from_overlay checks the source instead.
    let conf = std::path::Path::new("/proc/sys/net/ipv4/conf").join(OVERLAY_IFNAME);
    write_sysctl(&conf.join("rp_filter"), "0")?;
    // The overlay is IPv4 only: no link-local IPv6 (router solicitations,
    // MLD) is even sent. Without IPv6 in the kernel there is nothing to do.
    let v6 = std::path::Path::new("/proc/sys/net/ipv6/conf").join(OVERLAY_IFNAME);
    if v6.exists() {
        write_sysctl(&v6.join("disable_ipv6"), "1")?;
    }
    with_handle(|h| async move {
        h.link()
            .set(LinkUnspec::new_with_index(device.ifindex).up().build())
            .execute()
            .await
            .map_err(NetlinkError::request("set up", OVERLAY_IFNAME))
    })?;
    Ok(device)
}

/// Whether `link` is a VXLAN device in external mode on `port`.
fn is_external_vxlan(link: &LinkMessage, port: u16) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => {
                v.contains(&InfoVxlan::CollectMetadata(true)) && v.contains(&InfoVxlan::Port(port))
            }
            _ => false,
        }),
        _ => false,
    })
}

/// The MTU of the interface holding `addr`, or [`DEFAULT_UNDERLAY_MTU`].
async fn underlay_mtu(h: &Handle, addr: Ipv4Addr) -> Result<u32, NetlinkError> {
    let addresses: Vec<_> = h
        .address()
        .get()
        .set_address_filter(IpAddr::V4(addr))
        .execute()
        .try_collect()
        .await
        .map_err(NetlinkError::request("list addresses for", OVERLAY_IFNAME))?;
    let Some(index) = addresses
        .iter()
        .find(|m| {
            m.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Address(IpAddr::V4(ip)) | AddressAttribute::Local(IpAddr::V4(ip)) if *ip == addr)
            })
        })
        .map(|m| m.header.index)
    else {
        warn!(%addr, mtu = DEFAULT_UNDERLAY_MTU, "the node address is on no local interface; assuming the default underlay MTU");
        return Ok(DEFAULT_UNDERLAY_MTU);
    };
    let links: Vec<_> = h
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_collect()
        .await
        .map_err(NetlinkError::request(
            "get underlay link of",
            OVERLAY_IFNAME,
        ))?;
    Ok(links
        .iter()
        .flat_map(|l| l.attributes.iter())
        .find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        })
        .unwrap_or(DEFAULT_UNDERLAY_MTU))
}

/// Makes the routes through the overlay device exactly `cidrs` (other nodes'
/// pod CIDRs), each with `source` (this node's underlay address) as the
/// preferred source of packets the node itself sends there.
pub fn sync_routes(ifindex: u32, source: Ipv4Addr, cidrs: &[PodCidr]) -> Result<(), NetlinkError> {
    with_handle(|h| async move {
        let existing = list_routes(&h, OVERLAY_IFNAME).await?;
        for route in existing.into_iter().filter(|r| on_device(r, ifindex)) {
            let dst = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
                _ => None,
            });
            let wanted = dst.is_some_and(|d| {
                cidrs.iter().any(|c| {
                    c.network == d && c.prefix_len == route.header.destination_prefix_length
                })
            });
            if !wanted {
                h.route()
                    .del(route)
                    .execute()
                    .await
                    .map_err(NetlinkError::request("delete route via", OVERLAY_IFNAME))?;
            }
        }
        for cidr in cidrs {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(cidr.network, cidr.prefix_len)
                .output_interface(ifindex)
                .pref_source(source)
                .scope(RouteScope::Link)
                .build();
            h.route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(NetlinkError::request("add route via", OVERLAY_IFNAME))?;
        }
        Ok(())
    })
}

/// Whether a route of the main table leaves through interface `ifindex`.
fn on_device(route: &RouteMessage, ifindex: u32) -> bool {
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    table == RT_TABLE_MAIN
        && route.header.kind == RouteType::Unicast
        && route
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == ifindex))
}
