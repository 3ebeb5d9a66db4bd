//! BPF_PROG_TEST_RUN tests of mutual authentication in `from_endpoint` /
//! `to_endpoint` (lxc.c, lib/auth.h): an allowing entry with an auth type
//! admits a connection only while `pal_auth` holds an unexpired entry for
//! the pair; otherwise the packet is dropped with AUTH_REQUIRED and the
//! event names the pair for the agent. Need root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::net::Ipv4Addr;

use anyhow::Result;
use common::packet::*;
use common::{Datapath, LO_IFINDEX, TC_ACT_OK, TC_ACT_SHOT};
use palisade_bpf::abi::*;
use palisade_bpf::names::{FROM_ENDPOINT, TO_ENDPOINT};

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1); // the endpoint
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2); // a local peer, identity ID_B
const C: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5); // on node N, identity ID_C
const D: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 9); // identity ID_C, on no known node
const N: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2); // the node hosting 10.0.1.0/24
const ID_A: u32 = 1001;
const ID_B: u32 = 1002;
const ID_C: u32 = 1003;
const EP: u16 = 7;
const ENFORCE: u16 = EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS;
const NEVER: u64 = u64::MAX;
/// Boot time 1 ns: long past.
const EXPIRED: u64 = 1;

fn setup(flags: u16) -> Result<Datapath> {
    let mut dp = Datapath::load()?;
    dp.set_endpoint(LO_IFINDEX, EndpointInfo::new(ID_A, A, EP, flags))?;
    dp.set_local_endpoint_ip(A, ID_A)?;
    dp.set_local_endpoint_ip(B, ID_B)?;
    dp.set_ipcache(D, 32, ID_C)?;
    dp.set_ipcache(Ipv4Addr::new(10, 0, 1, 0), 24, ID_C)?;
    dp.set_tunnel(Ipv4Addr::new(10, 0, 1, 0), 24, N)?;
    dp.set_policy_rev(1)?;
    Ok(dp)
}

fn tcp(port: u16) -> L4Prefix {
    L4Prefix::Port {
        proto: IPPROTO_TCP,
        port,
        prefix_bits: 16,
    }
}

fn allow_auth(
    dp: &mut Datapath,
    dir: Direction,
    identity: u32,
    port: u16,
    auth_type: u8,
) -> Result<()> {
    let mut value = PolicyValue::allow(5);
    value.auth_type = auth_type;
    dp.set_policy(PolicyKey::new(EP, dir, identity, tcp(port))?, value)
}

fn out(dp: &mut Datapath, p: &Ipv4) -> Result<u32> {
    dp.run(FROM_ENDPOINT, LO_IFINDEX, &p.frame())
}

fn inn(dp: &mut Datapath, p: &Ipv4) -> Result<u32> {
    dp.run(TO_ENDPOINT, LO_IFINDEX, &p.frame())
}

/// Into the endpoint from the overlay: from_overlay left the identity in the mark.
fn inn_from(dp: &mut Datapath, identity: u32, p: &Ipv4) -> Result<u32> {
    dp.run_marked(
        TO_ENDPOINT,
        LO_IFINDEX,
        MARK_IDENTITY | identity,
        &p.frame(),
    )
}

#[test]
fn a_new_connection_waits_for_authentication() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    allow_auth(&mut dp, Direction::Egress, ID_B, 80, AUTH_TYPE_SPIFFE)?;
    let syn = Ipv4::tcp(A, 40000, B, 80, TCP_SYN);
    let pair = AuthKey::new(ID_A, ID_B, None, AUTH_TYPE_SPIFFE);

    assert_eq!(out(&mut dp, &syn)?, TC_ACT_SHOT);
    assert_eq!(dp.ct_len()?, 0, "no connection before authentication");
    let ev = dp.one_event(EVENT_DROP, Reason::AuthRequired)?;
    assert_eq!(
        ev.auth_key(),
        Some(pair),
        "the drop names the pair: {ev:#?}"
    );
    assert_eq!(ev.rule_id, 5);
    assert_eq!(
        dp.metric(Reason::AuthRequired, OBS_FROM_ENDPOINT)?.packets,
        1
    );

    // Entries for another type or identity, or an expired one, do not count.
    dp.set_auth(AuthKey::new(ID_A, ID_B, None, AUTH_TYPE_ALWAYS_FAIL), NEVER)?;
    dp.set_auth(AuthKey::new(ID_A, ID_C, None, AUTH_TYPE_SPIFFE), NEVER)?;
    dp.set_auth(pair, EXPIRED)?;
    assert_eq!(out(&mut dp, &syn)?, TC_ACT_SHOT);
    dp.one_event(EVENT_DROP, Reason::AuthRequired)?;

    dp.set_auth(pair, NEVER)?;
    assert_eq!(out(&mut dp, &syn)?, TC_ACT_OK);
    let ev = dp.one_event(EVENT_FLOW_NEW, Reason::Forwarded)?;
    assert_eq!(
        ev.auth_key(),
        Some(pair),
        "the flow says it was authenticated"
    );
    assert!(dp
        .ct(CtKey::new(A, B, 40000, 80, IPPROTO_TCP, Direction::Egress))?
        .is_some_and(|ct| ct.flags == 0));

    // A port without the requirement never looked at the auth map.
    allow_auth(&mut dp, Direction::Egress, ID_B, 81, 0)?;
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40001, B, 81, TCP_SYN))?,
        TC_ACT_OK
    );
    let ev = dp.one_event(EVENT_FLOW_NEW, Reason::Forwarded)?;
    assert_eq!((ev.auth_type, ev.auth_key()), (0, None));
    Ok(())
}

#[test]
fn the_pair_names_the_peers_node() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    allow_auth(&mut dp, Direction::Ingress, ID_C, 8080, AUTH_TYPE_SPIFFE)?;
    let syn = Ipv4::tcp(C, 50000, A, 8080, TCP_SYN);
    assert_eq!(inn_from(&mut dp, ID_C, &syn)?, TC_ACT_SHOT);
    let ev = dp.one_event(EVENT_DROP, Reason::AuthRequired)?;
    let pair = AuthKey::new(ID_A, ID_C, Some(N), AUTH_TYPE_SPIFFE);
    assert_eq!(ev.auth_key(), Some(pair));
    assert_eq!(pair.remote_node(), Some(N));

    // Authenticated with the identity on another node (here: this one) is
    // not authenticated with this node.
    dp.set_auth(AuthKey::new(ID_A, ID_C, None, AUTH_TYPE_SPIFFE), NEVER)?;
    assert_eq!(inn_from(&mut dp, ID_C, &syn)?, TC_ACT_SHOT);
    dp.one_event(EVENT_DROP, Reason::AuthRequired)?;

    dp.set_auth(pair, NEVER)?;
    // The same packet without the overlay's identity claims N's address
    // without coming from N: never authenticated.
    assert_eq!(inn(&mut dp, &syn)?, TC_ACT_SHOT);
    let ev = dp.one_event(EVENT_DROP, Reason::AuthRequired)?;
    assert_eq!(ev.remote_node, AUTH_NODE_UNKNOWN, "{ev:#?}");
    assert!(!ev.auth_key().is_some_and(|k| k.node_known()));

    assert_eq!(inn_from(&mut dp, ID_C, &syn)?, TC_ACT_OK);
    dp.one_event(EVENT_FLOW_NEW, Reason::Forwarded)?;
    // The reply is part of the admitted connection.
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 8080, C, 50000, TCP_SYN | TCP_ACK))?,
        TC_ACT_OK
    );
    Ok(())
}

/// A peer that is neither an endpoint of this node nor behind a known node
/// has no node the agent could authenticate with: node 0 (this node) must
/// not stand in for it.
#[test]
fn a_peer_on_no_known_node_is_never_authenticated() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    allow_auth(&mut dp, Direction::Egress, ID_C, 80, AUTH_TYPE_SPIFFE)?;
    dp.set_auth(AuthKey::new(ID_A, ID_C, None, AUTH_TYPE_SPIFFE), NEVER)?;
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, D, 80, TCP_SYN))?,
        TC_ACT_SHOT
    );
    let ev = dp.one_event(EVENT_DROP, Reason::AuthRequired)?;
    assert_eq!(ev.remote_node, AUTH_NODE_UNKNOWN, "{ev:#?}");
    Ok(())
}

#[test]
fn test_always_fail_always_drops() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    allow_auth(&mut dp, Direction::Egress, ID_C, 443, AUTH_TYPE_ALWAYS_FAIL)?;
    let syn = Ipv4::tcp(A, 40000, C, 443, TCP_SYN);
    assert_eq!(out(&mut dp, &syn)?, TC_ACT_SHOT);
    let ev = dp.one_event(EVENT_DROP, Reason::AuthRequired)?;
    assert_eq!(
        ev.auth_key(),
        Some(AuthKey::new(ID_A, ID_C, Some(N), AUTH_TYPE_ALWAYS_FAIL))
    );
    Ok(())
}

/// A connection admitted before its policy required authentication is held
/// at the next revision and resumes, without another revision, as soon as
/// the pair is authenticated.
#[test]
fn an_established_connection_waits_when_policy_starts_requiring_authentication() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    allow_auth(&mut dp, Direction::Egress, ID_B, 80, 0)?;
    let f80 = CtKey::new(A, B, 40000, 80, IPPROTO_TCP, Direction::Egress);
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, B, 80, TCP_SYN))?,
        TC_ACT_OK
    );
    dp.events()?;

    allow_auth(&mut dp, Direction::Egress, ID_B, 80, AUTH_TYPE_SPIFFE)?;
    dp.set_policy_rev(2)?;
    let ack = Ipv4::tcp(A, 40000, B, 80, TCP_ACK);
    assert_eq!(out(&mut dp, &ack)?, TC_ACT_SHOT);
    let ev = dp.one_event(EVENT_DROP, Reason::AuthRequired)?;
    let pair = AuthKey::new(ID_A, ID_B, None, AUTH_TYPE_SPIFFE);
    assert_eq!(ev.auth_key(), Some(pair));
    let ct = dp.ct(f80)?.expect("entry kept");
    assert_eq!(
        ct.flags & (CT_REVOKED | CT_AUTH_PENDING),
        CT_REVOKED | CT_AUTH_PENDING
    );
    // The reply waits too, with the same reason and pair.
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(B, 80, A, 40000, TCP_ACK))?,
        TC_ACT_SHOT
    );
    let ev = dp.one_event(EVENT_DROP, Reason::AuthRequired)?;
    assert_eq!(ev.auth_key(), Some(pair));

    dp.set_auth(pair, NEVER)?;
    assert_eq!(out(&mut dp, &ack)?, TC_ACT_OK);
    assert!(dp.events()?.is_empty());
    let ct = dp.ct(f80)?.expect("entry kept");
    assert_eq!(ct.flags & (CT_REVOKED | CT_AUTH_PENDING), 0);

    // Revoked for another reason: not waiting for authentication.
    allow_auth(&mut dp, Direction::Egress, ID_C, 80, 0)?;
    dp.remove_policy(PolicyKey::new(EP, Direction::Egress, ID_B, tcp(80))?)?;
    dp.set_policy_rev(3)?;
    assert_eq!(out(&mut dp, &ack)?, TC_ACT_SHOT);
    dp.one_event(EVENT_DROP, Reason::PolicyRevoked)?;
    let ct = dp.ct(f80)?.expect("entry kept");
    assert_eq!(ct.flags & (CT_REVOKED | CT_AUTH_PENDING), CT_REVOKED);
    Ok(())
}

/// A new connection reusing the tuple of a closed one is not admitted on
/// the old connection's authentication.
#[test]
fn a_new_syn_on_a_closing_entry_is_checked_again() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    allow_auth(&mut dp, Direction::Egress, ID_B, 80, AUTH_TYPE_SPIFFE)?;
    let pair = AuthKey::new(ID_A, ID_B, None, AUTH_TYPE_SPIFFE);
    dp.set_auth(pair, NEVER)?;
    let syn = Ipv4::tcp(A, 40000, B, 80, TCP_SYN);
    assert_eq!(out(&mut dp, &syn)?, TC_ACT_OK);
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, B, 80, TCP_FIN | TCP_ACK))?,
        TC_ACT_OK
    );
    dp.events()?;
    // Withdrawn (no new revision), then the same tuple opens again.
    dp.set_auth(pair, EXPIRED)?;
    assert_eq!(out(&mut dp, &syn)?, TC_ACT_SHOT);
    dp.one_event(EVENT_DROP, Reason::AuthRequired)?;
    Ok(())
}

/// Audit mode lets the connection through but says, distinctly, that it
/// would have been dropped for missing authentication.
#[test]
fn audit_mode_reports_missing_authentication() -> Result<()> {
    let mut dp = setup(ENFORCE | EP_AUDIT_EGRESS)?;
    allow_auth(&mut dp, Direction::Egress, ID_C, 80, AUTH_TYPE_SPIFFE)?;
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, C, 80, TCP_SYN))?,
        TC_ACT_OK
    );
    let ev = dp.one_event(EVENT_AUDIT, Reason::AuthRequired)?;
    assert_eq!(
        ev.auth_key(),
        Some(AuthKey::new(ID_A, ID_C, Some(N), AUTH_TYPE_SPIFFE))
    );
    let ct = dp
        .ct(CtKey::new(A, C, 40000, 80, IPPROTO_TCP, Direction::Egress))?
        .expect("admitted");
    assert_eq!(ct.flags & CT_AUDITED, CT_AUDITED);

    // At the next revision it is reported again, still distinctly.
    dp.set_policy_rev(2)?;
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, C, 80, TCP_ACK))?,
        TC_ACT_OK
    );
    dp.one_event(EVENT_AUDIT, Reason::AuthRequired)?;
    Ok(())
}
