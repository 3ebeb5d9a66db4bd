//! BPF_PROG_TEST_RUN tests of the overlay programs (overlay.c) and of the
//! identity they hand to `to_endpoint`. The tunnel metadata itself (what
//! `bpf_skb_get_tunnel_key` reads) only exists on a real VXLAN device: the
//! cross-node e2e tests cover that part. Need root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::net::Ipv4Addr;

use anyhow::{ensure, Result};
use common::packet::*;
use common::{Datapath, LO_IFINDEX, TC_ACT_OK, TC_ACT_SHOT};
use palisade_bpf::abi::*;
use palisade_bpf::names::{FROM_OVERLAY, TO_ENDPOINT, TO_OVERLAY};

const LOCAL_POD: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 5);
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 7);
const REMOTE_NODE: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 2);
const ID_LOCAL: u32 = 1001;
const ID_STALE: u32 = 1002;
const ID_CARRIED: u32 = 1003;
const EP: u16 = 3;

fn setup() -> Result<Datapath> {
    let mut dp = Datapath::load()?;
    dp.set_endpoint(
        LO_IFINDEX,
        EndpointInfo::new(ID_LOCAL, LOCAL_POD, EP, EP_ENFORCE_INGRESS),
    )?;
    dp.set_ipcache(LOCAL_POD, 32, ID_LOCAL)?;
    // What this node last heard about the remote address: another pod's identity.
    dp.set_ipcache(REMOTE_POD, 32, ID_STALE)?;
    dp.set_policy_rev(1)?;
    Ok(dp)
}

fn allow_ingress_from(dp: &mut Datapath, identity: u32) -> Result<()> {
    dp.set_policy(
        PolicyKey::new(
            EP,
            Direction::Ingress,
            identity,
            L4Prefix::Port {
                proto: IPPROTO_TCP,
                port: 80,
                prefix_bits: 16,
            },
        )?,
        PolicyValue::allow(9),
    )
}

fn drop_event(dp: &mut Datapath, reason: Reason, obs: u8) -> Result<Event> {
    let evs = dp.events()?;
    ensure!(evs.len() == 1, "expected one event, got {evs:#?}");
    let ev = evs[0];
    ensure!(
        ev.r#type == EVENT_DROP && ev.reason() == Some(reason) && ev.observation == obs,
        "expected a {reason:?} drop at {obs}, got {ev:#?}"
    );
    ensure!(
        dp.metric(reason, obs)?.packets == 1,
        "the drop is counted once under its observation point"
    );
    Ok(ev)
}

#[test]
fn the_carried_identity_wins_over_the_ipcache() -> Result<()> {
    let mut dp = setup()?;
    allow_ingress_from(&mut dp, ID_CARRIED)?;
    let syn = Ipv4::tcp(REMOTE_POD, 40000, LOCAL_POD, 80, TCP_SYN).frame();

    // Without a carried identity the ipcache's (stale) one decides: denied.
    assert_eq!(dp.run(TO_ENDPOINT, LO_IFINDEX, &syn)?, TC_ACT_SHOT);
    let ev = drop_event(&mut dp, Reason::PolicyDenied, OBS_TO_ENDPOINT)?;
    assert_eq!(ev.src_identity, ID_STALE);

    // A mark of another subsystem is not an identity.
    assert_eq!(
        dp.run_marked(TO_ENDPOINT, LO_IFINDEX, 0x4000 | ID_CARRIED, &syn)?,
        TC_ACT_SHOT
    );
    dp.events()?;

    // The identity from_overlay left in the mark is the one policy sees.
    let mark = MARK_IDENTITY | ID_CARRIED;
    assert_eq!(
        dp.run_marked(TO_ENDPOINT, LO_IFINDEX, mark, &syn)?,
        TC_ACT_OK
    );
    let ct = dp
        .ct(CtKey::new(
            REMOTE_POD,
            LOCAL_POD,
            40000,
            80,
            IPPROTO_TCP,
            Direction::Ingress,
        ))?
        .expect("the connection is tracked");
    assert_eq!(ct.remote_identity, ID_CARRIED);
    assert_eq!(ct.flags & CT_TUNNEL_IDENTITY, CT_TUNNEL_IDENTITY);

    // A policy change re-evaluates the connection with the carried identity,
    // not with the ipcache's: it stays allowed.
    dp.set_policy_rev(2)?;
    let ack = Ipv4::tcp(REMOTE_POD, 40000, LOCAL_POD, 80, TCP_ACK).frame();
    assert_eq!(dp.run(TO_ENDPOINT, LO_IFINDEX, &ack)?, TC_ACT_OK);
    Ok(())
}

#[test]
fn to_overlay_needs_a_node_for_the_destination() -> Result<()> {
    let mut dp = setup()?;
    let syn = Ipv4::tcp(LOCAL_POD, 40000, REMOTE_POD, 80, TCP_SYN).frame();
    assert_eq!(dp.run(TO_OVERLAY, LO_IFINDEX, &syn)?, TC_ACT_SHOT);
    let ev = drop_event(&mut dp, Reason::NoTunnelEndpoint, OBS_TO_OVERLAY)?;
    assert_eq!(ev.src_identity, ID_LOCAL);

    dp.set_tunnel(Ipv4Addr::new(10, 200, 1, 0), 24, REMOTE_NODE)?;
    assert_eq!(dp.run(TO_OVERLAY, LO_IFINDEX, &syn)?, TC_ACT_OK);
    assert_eq!(dp.metric(Reason::Forwarded, OBS_TO_OVERLAY)?.packets, 1);

    // Only IPv4 crosses: the device does no ARP.
    assert_eq!(dp.run(TO_OVERLAY, LO_IFINDEX, &arp())?, TC_ACT_SHOT);
    drop_event(&mut dp, Reason::UnsupportedL3, OBS_TO_OVERLAY)?;
    Ok(())
}

#[test]
fn from_overlay_refuses_packets_without_tunnel_metadata() -> Result<()> {
    let mut dp = setup()?;
    dp.set_tunnel(Ipv4Addr::new(10, 200, 1, 0), 24, REMOTE_NODE)?;
    let syn = Ipv4::tcp(REMOTE_POD, 40000, LOCAL_POD, 80, TCP_SYN).frame();
    assert_eq!(dp.run(FROM_OVERLAY, LO_IFINDEX, &syn)?, TC_ACT_SHOT);
    drop_event(&mut dp, Reason::TunnelInvalid, OBS_FROM_OVERLAY)?;

    // A complete IPv4 header (the least BPF_PROG_TEST_RUN takes), half a TCP header.
    let truncated = &syn[..14 + 20 + 10];
    assert_eq!(dp.run(FROM_OVERLAY, LO_IFINDEX, truncated)?, TC_ACT_SHOT);
    drop_event(&mut dp, Reason::InvalidPacket, OBS_FROM_OVERLAY)?;
    Ok(())
}
