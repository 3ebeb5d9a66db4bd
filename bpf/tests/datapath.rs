//! BPF_PROG_TEST_RUN tests of `from_endpoint` / `to_endpoint` (lxc.c): build a
//! packet, fill maps, run the real program, check the verdict and the side
//! effects (conntrack, fragments, metrics, ring-buffer events). Need root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use common::packet::*;
use common::{Datapath, LO_IFINDEX, TC_ACT_OK, TC_ACT_SHOT};
use palisade_bpf::abi::*;
use palisade_bpf::names::{FROM_ENDPOINT, TO_ENDPOINT};

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1); // the endpoint
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2); // identity ID_B
const C: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5); // in 10.0.1.0/24: identity ID_C
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9); // no ipcache entry: world
const ID_A: u32 = 1001;
const ID_B: u32 = 1002;
const ID_C: u32 = 1003;
const EP: u16 = 7;
const ENFORCE: u16 = EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS;

fn setup(flags: u16) -> Result<Datapath> {
    let mut dp = Datapath::load()?;
    dp.set_endpoint(LO_IFINDEX, EndpointInfo::new(ID_A, A, EP, flags))?;
    dp.set_ipcache(B, 32, ID_B)?;
    dp.set_ipcache(Ipv4Addr::new(10, 0, 1, 0), 24, ID_C)?;
    dp.set_policy_rev(1)?;
    Ok(dp)
}

fn port(proto: u8, port: u16) -> L4Prefix {
    L4Prefix::Port {
        proto,
        port,
        prefix_bits: 16,
    }
}

fn allow(dp: &mut Datapath, dir: Direction, identity: u32, l4: L4Prefix, rule: u32) -> Result<()> {
    dp.set_policy(
        PolicyKey::new(EP, dir, identity, l4)?,
        PolicyValue::allow(rule),
    )
}

fn out(dp: &mut Datapath, p: &Ipv4) -> Result<u32> {
    dp.run(FROM_ENDPOINT, LO_IFINDEX, &p.frame())
}

fn inn(dp: &mut Datapath, p: &Ipv4) -> Result<u32> {
    dp.run(TO_ENDPOINT, LO_IFINDEX, &p.frame())
}

fn drop_metric(dp: &mut Datapath, reason: Reason, obs: u8) -> Result<u64> {
    Ok(dp.metric(reason, obs)?.packets)
}

#[test]
fn allowed_exact_identity_and_port() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    allow(&mut dp, Direction::Egress, ID_B, port(IPPROTO_TCP, 80), 11)?;
    let syn = Ipv4::tcp(A, 40000, B, 80, TCP_SYN);
    assert_eq!(out(&mut dp, &syn)?, TC_ACT_OK);

    let ct = dp
        .ct(CtKey::new(A, B, 40000, 80, IPPROTO_TCP, Direction::Egress))?
        .expect("CT entry created");
    assert_eq!(
        (ct.ep_id, ct.remote_identity, ct.rule_id, ct.policy_rev),
        (EP, ID_B, 11, 1)
    );
    assert_eq!((ct.packets, ct.bytes), (1, syn.frame().len() as u64));
    assert_eq!(ct.flags, 0);
    let m = dp.metric(Reason::Forwarded, OBS_FROM_ENDPOINT)?;
    assert_eq!((m.packets, m.bytes), (1, syn.frame().len() as u64));

    let ev = dp.one_event(EVENT_FLOW_NEW, Reason::Forwarded)?;
    assert_eq!(
        (ev.src_identity, ev.dst_identity, ev.rule_id, ev.ep_id),
        (ID_A, ID_B, 11, EP)
    );
    assert_eq!(
        (ev.saddr(), ev.daddr(), ev.sport(), ev.dport()),
        (A, B, 40000, 80)
    );
    assert_eq!(
        (ev.observation, ev.protocol, ev.ifindex, ev.policy_rev),
        (OBS_FROM_ENDPOINT, IPPROTO_TCP, LO_IFINDEX, 1)
    );
    assert_eq!(ev.ethertype(), ETH_P_IP);

    // The next packet of the flow is established: no new event, counters move.
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, B, 80, TCP_ACK))?,
        TC_ACT_OK
    );
    assert!(dp.events()?.is_empty());
    assert_eq!(
        dp.ct(CtKey::new(A, B, 40000, 80, IPPROTO_TCP, Direction::Egress))?
            .map(|c| c.packets),
        Some(2)
    );
    Ok(())
}

#[test]
fn denied_without_entry() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    allow(&mut dp, Direction::Egress, ID_B, port(IPPROTO_TCP, 80), 11)?;
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, B, 81, TCP_SYN))?,
        TC_ACT_SHOT
    );
    assert_eq!(dp.ct_len()?, 0);
    assert_eq!(
        drop_metric(&mut dp, Reason::PolicyDenied, OBS_FROM_ENDPOINT)?,
        1
    );
    assert_eq!(dp.metric(Reason::Forwarded, OBS_FROM_ENDPOINT)?.packets, 0);
    let ev = dp.one_event(EVENT_DROP, Reason::PolicyDenied)?;
    assert_eq!((ev.dport(), ev.dst_identity, ev.rule_id), (81, ID_B, 0));

    // Ingress: nothing allowed either.
    assert_eq!(inn(&mut dp, &Ipv4::udp(C, 5000, A, 53))?, TC_ACT_SHOT);
    assert_eq!(
        drop_metric(&mut dp, Reason::PolicyDenied, OBS_TO_ENDPOINT)?,
        1
    );
    let ev = dp.one_event(EVENT_DROP, Reason::PolicyDenied)?;
    assert_eq!(
        (ev.src_identity, ev.dst_identity, ev.observation),
        (ID_C, ID_A, OBS_TO_ENDPOINT)
    );
    Ok(())
}

#[test]
fn wildcard_identity() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    allow(&mut dp, Direction::Egress, 0, port(IPPROTO_TCP, 443), 5)?;
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, C, 443, TCP_SYN))?,
        TC_ACT_OK
    );
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40001, OUTSIDE, 443, TCP_SYN))?,
        TC_ACT_OK
    );
    let ct = dp
        .ct(CtKey::new(
            A,
            OUTSIDE,
            40001,
            443,
            IPPROTO_TCP,
            Direction::Egress,
        ))?
        .expect("CT entry");
    assert_eq!((ct.remote_identity, ct.rule_id), (IDENTITY_WORLD, 5));
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40002, C, 444, TCP_SYN))?,
        TC_ACT_SHOT
    );
    Ok(())
}

#[test]
fn exact_identity_hit_wins_over_wildcard() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    // Exact identity allows TCP/80; the wildcard denies TCP/80: the exact hit decides.
    allow(&mut dp, Direction::Egress, ID_B, port(IPPROTO_TCP, 80), 1)?;
    dp.set_policy(
        PolicyKey::new(EP, Direction::Egress, 0, port(IPPROTO_TCP, 80))?,
        PolicyValue::deny(2),
    )?;
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, B, 80, TCP_SYN))?,
        TC_ACT_OK
    );
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, C, 80, TCP_SYN))?,
        TC_ACT_SHOT
    );
    let evs = dp.events()?;
    assert_eq!(evs.len(), 2);
    assert_eq!(
        (evs[1].reason(), evs[1].rule_id),
        (Some(Reason::PolicyDenyRule), 2)
    );
    Ok(())
}

#[test]
fn proto_and_any_wildcards() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    allow(
        &mut dp,
        Direction::Egress,
        ID_B,
        L4Prefix::Proto(IPPROTO_UDP),
        3,
    )?;
    allow(&mut dp, Direction::Egress, ID_C, L4Prefix::Any, 4)?;
    assert_eq!(out(&mut dp, &Ipv4::udp(A, 1000, B, 53))?, TC_ACT_OK);
    assert_eq!(out(&mut dp, &Ipv4::udp(A, 1000, B, 65535))?, TC_ACT_OK);
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 1000, B, 53, TCP_SYN))?,
        TC_ACT_SHOT
    );
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 1000, C, 22, TCP_SYN))?,
        TC_ACT_OK
    );
    assert_eq!(out(&mut dp, &Ipv4::icmp_echo(A, C, true, 9))?, TC_ACT_OK);
    let mut sctp = Ipv4::new(
        A,
        C,
        IPPROTO_SCTP,
        vec![0x13, 0x88, 0x0b, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0],
    );
    sctp.id = 1;
    assert_eq!(out(&mut dp, &sctp)?, TC_ACT_OK);
    assert!(dp
        .ct(CtKey::new(
            A,
            C,
            5000,
            3000,
            IPPROTO_SCTP,
            Direction::Egress
        ))?
        .is_some());
    Ok(())
}

#[test]
fn port_range_block() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    // 8080/13 = 8080..=8087; the builder masks the port (8083 -> 8080).
    let key = PolicyKey::new(
        EP,
        Direction::Ingress,
        ID_B,
        L4Prefix::Port {
            proto: IPPROTO_TCP,
            port: 8083,
            prefix_bits: 13,
        },
    )?;
    assert_eq!((key.prefixlen, key.dport()), (93, 8080));
    dp.set_policy(key, PolicyValue::allow(8))?;
    for (p, want) in [
        (8079, TC_ACT_SHOT),
        (8080, TC_ACT_OK),
        (8084, TC_ACT_OK),
        (8087, TC_ACT_OK),
        (8088, TC_ACT_SHOT),
    ] {
        assert_eq!(
            inn(&mut dp, &Ipv4::tcp(B, 50000, A, p, TCP_SYN))?,
            want,
            "port {p}"
        );
    }
    Ok(())
}

#[test]
fn deny_rule_wins() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    // The compiler expresses "deny 22 beats allow all TCP" as a more specific deny entry.
    allow(
        &mut dp,
        Direction::Ingress,
        ID_B,
        L4Prefix::Proto(IPPROTO_TCP),
        1,
    )?;
    dp.set_policy(
        PolicyKey::new(EP, Direction::Ingress, ID_B, port(IPPROTO_TCP, 22))?,
        PolicyValue::deny(2),
    )?;
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(B, 50000, A, 80, TCP_SYN))?,
        TC_ACT_OK
    );
    dp.events()?;
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(B, 50000, A, 22, TCP_SYN))?,
        TC_ACT_SHOT
    );
    let ev = dp.one_event(EVENT_DROP, Reason::PolicyDenyRule)?;
    assert_eq!(ev.rule_id, 2);
    assert_eq!(
        drop_metric(&mut dp, Reason::PolicyDenyRule, OBS_TO_ENDPOINT)?,
        1
    );
    assert!(dp
        .ct(CtKey::new(B, A, 50000, 22, IPPROTO_TCP, Direction::Ingress))?
        .is_none());
    Ok(())
}

#[test]
fn reply_of_allowed_flow_passes() -> Result<()> {
    let synack = Ipv4::tcp(B, 80, A, 40000, TCP_SYN | TCP_ACK);
    // As a new flow, the reply would be denied: ingress allows nothing.
    let mut fresh = setup(ENFORCE)?;
    assert_eq!(inn(&mut fresh, &synack)?, TC_ACT_SHOT);

    let mut dp = setup(ENFORCE)?;
    allow(&mut dp, Direction::Egress, ID_B, port(IPPROTO_TCP, 80), 11)?;
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, B, 80, TCP_SYN))?,
        TC_ACT_OK
    );
    assert_eq!(inn(&mut dp, &synack)?, TC_ACT_OK);
    let key = CtKey::new(A, B, 40000, 80, IPPROTO_TCP, Direction::Egress);
    let ct = dp.ct(key)?.expect("CT entry");
    assert_eq!((ct.packets, ct.flags & CT_SEEN_REPLY), (2, CT_SEEN_REPLY));
    assert_eq!(dp.ct_len()?, 1, "the reply creates no entry of its own");

    // FIN marks the entry closing.
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(B, 80, A, 40000, TCP_FIN | TCP_ACK))?,
        TC_ACT_OK
    );
    assert_eq!(dp.ct(key)?.map(|c| c.flags & CT_CLOSING), Some(CT_CLOSING));

    // ICMP echo: the reply matches the reversed tuple of the request.
    allow(
        &mut dp,
        Direction::Egress,
        ID_B,
        L4Prefix::Proto(IPPROTO_ICMP),
        12,
    )?;
    assert_eq!(
        inn(&mut dp, &Ipv4::icmp_echo(B, A, false, 77))?,
        TC_ACT_SHOT,
        "unsolicited reply"
    );
    assert_eq!(out(&mut dp, &Ipv4::icmp_echo(A, B, true, 77))?, TC_ACT_OK);
    assert!(dp
        .ct(CtKey::new(A, B, 77, 0, IPPROTO_ICMP, Direction::Egress))?
        .is_some());
    assert_eq!(inn(&mut dp, &Ipv4::icmp_echo(B, A, false, 77))?, TC_ACT_OK);
    assert_eq!(
        inn(&mut dp, &Ipv4::icmp_echo(B, A, false, 78))?,
        TC_ACT_SHOT,
        "other echo id"
    );
    Ok(())
}

#[test]
fn unenforced_direction_allows_and_tracks() -> Result<()> {
    let mut dp = setup(EP_ENFORCE_INGRESS)?;
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, OUTSIDE, 25, TCP_SYN))?,
        TC_ACT_OK
    );
    let ct = dp
        .ct(CtKey::new(
            A,
            OUTSIDE,
            40000,
            25,
            IPPROTO_TCP,
            Direction::Egress,
        ))?
        .expect("CT entry");
    assert_eq!((ct.rule_id, ct.remote_identity), (0, IDENTITY_WORLD));
    // Its reply passes the enforced ingress as a reply.
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(OUTSIDE, 25, A, 40000, TCP_ACK))?,
        TC_ACT_OK
    );
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(OUTSIDE, 25, A, 40001, TCP_ACK))?,
        TC_ACT_SHOT
    );
    Ok(())
}

#[test]
fn unknown_endpoint() -> Result<()> {
    let mut dp = Datapath::load()?;
    let p = Ipv4::tcp(A, 40000, B, 80, TCP_SYN);
    assert_eq!(out(&mut dp, &p)?, TC_ACT_SHOT);
    assert_eq!(inn(&mut dp, &p)?, TC_ACT_SHOT);
    assert_eq!(
        dp.run(FROM_ENDPOINT, LO_IFINDEX, &arp())?,
        TC_ACT_SHOT,
        "fail closed, even ARP"
    );
    assert_eq!(
        drop_metric(&mut dp, Reason::UnknownEndpoint, OBS_FROM_ENDPOINT)?,
        2
    );
    assert_eq!(
        drop_metric(&mut dp, Reason::UnknownEndpoint, OBS_TO_ENDPOINT)?,
        1
    );
    let evs = dp.events()?;
    assert_eq!(evs.len(), 3);
    assert!(evs
        .iter()
        .all(|e| e.reason() == Some(Reason::UnknownEndpoint) && e.ifindex == LO_IFINDEX));
    Ok(())
}

#[test]
fn spoofed_source() -> Result<()> {
    let mut dp = setup(0)?;
    assert_eq!(
        out(
            &mut dp,
            &Ipv4::tcp(Ipv4Addr::new(10, 0, 0, 99), 40000, B, 80, TCP_SYN)
        )?,
        TC_ACT_SHOT
    );
    let ev = dp.one_event(EVENT_DROP, Reason::SourceSpoofed)?;
    assert_eq!(ev.saddr(), Ipv4Addr::new(10, 0, 0, 99));
    assert_eq!(
        drop_metric(&mut dp, Reason::SourceSpoofed, OBS_FROM_ENDPOINT)?,
        1
    );
    assert_eq!(dp.ct_len()?, 0);
    Ok(())
}

#[test]
fn fragments() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    allow(&mut dp, Direction::Egress, ID_B, port(IPPROTO_UDP, 53), 1)?;
    let mut first = Ipv4::new(A, B, IPPROTO_UDP, udp_hdr(1000, 53, 24)); // 32 bytes
    first.id = 77;
    first.frag = IP_MF;
    assert_eq!(out(&mut dp, &first)?, TC_ACT_OK);
    let fv = dp
        .frag(FragKey::new(A, B, 77, IPPROTO_UDP))?
        .expect("first fragment recorded");
    assert_eq!((fv.sport(), fv.dport()), (1000, 53));

    let mut later = Ipv4::new(A, B, IPPROTO_UDP, vec![0xcd; 40]);
    later.id = 77;
    later.frag = 4; // offset 32 bytes, last fragment
    assert_eq!(out(&mut dp, &later)?, TC_ACT_OK);
    let ct = dp
        .ct(CtKey::new(A, B, 1000, 53, IPPROTO_UDP, Direction::Egress))?
        .expect("CT entry");
    assert_eq!(ct.packets, 2);

    // A later fragment whose first fragment was never seen.
    later.id = 78;
    dp.events()?;
    assert_eq!(out(&mut dp, &later)?, TC_ACT_SHOT);
    dp.one_event(EVENT_DROP, Reason::FragNoHeader)?;

    // A denied first fragment is not recorded; its later fragments have no header.
    let mut first = Ipv4::new(A, B, IPPROTO_UDP, udp_hdr(1000, 54, 24));
    first.id = 79;
    first.frag = IP_MF;
    assert_eq!(out(&mut dp, &first)?, TC_ACT_SHOT);
    later.id = 79;
    assert_eq!(out(&mut dp, &later)?, TC_ACT_SHOT);
    assert_eq!(
        drop_metric(&mut dp, Reason::FragNoHeader, OBS_FROM_ENDPOINT)?,
        2
    );

    // A first fragment too short for its L4 header (tiny fragment) is invalid.
    let mut tiny = Ipv4::new(A, B, IPPROTO_TCP, tcp_hdr(1000, 53, TCP_SYN)[..8].to_vec());
    tiny.frag = IP_MF;
    assert_eq!(out(&mut dp, &tiny)?, TC_ACT_SHOT);
    assert_eq!(
        drop_metric(&mut dp, Reason::InvalidPacket, OBS_FROM_ENDPOINT)?,
        1
    );
    Ok(())
}

#[test]
fn malformed_packets() -> Result<()> {
    let mut dp = setup(0)?;
    let good = Ipv4::tcp(A, 40000, B, 80, TCP_SYN);
    let mut n = 0;
    let mut expect_invalid = |dp: &mut Datapath, frame: Vec<u8>, what: &str| -> Result<()> {
        assert_eq!(
            dp.run(FROM_ENDPOINT, LO_IFINDEX, &frame)
                .context(what.to_owned())?,
            TC_ACT_SHOT,
            "{what}"
        );
        n += 1;
        assert_eq!(
            drop_metric(dp, Reason::InvalidPacket, OBS_FROM_ENDPOINT)?,
            n,
            "{what}"
        );
        Ok(())
    };
    // IPv4 header cut short: the frame ends inside the IP options. (A frame
    // shorter than Ethernet + 20 bytes with the IPv4 ethertype cannot be
    // tested: BPF_PROG_TEST_RUN rejects it with EINVAL.)
    let mut cut = good.clone();
    cut.options = vec![1, 1, 1, 1, 1, 1, 1, 0];
    expect_invalid(
        &mut dp,
        cut.frame()[..14 + 24].to_vec(),
        "truncated IPv4 header",
    )?;
    // ihl < 5.
    expect_invalid(
        &mut dp,
        Ipv4 {
            ihl_override: Some(4),
            ..good.clone()
        }
        .frame(),
        "ihl 4",
    )?;
    // Total length beyond the frame.
    expect_invalid(
        &mut dp,
        Ipv4 {
            tot_len_override: Some(100),
            ..good.clone()
        }
        .frame(),
        "tot_len > frame",
    )?;
    // Total length shorter than the header.
    expect_invalid(
        &mut dp,
        Ipv4 {
            tot_len_override: Some(16),
            ..good.clone()
        }
        .frame(),
        "tot_len < ihl",
    )?;
    // TCP header truncated (by tot_len and by the frame).
    expect_invalid(
        &mut dp,
        Ipv4 {
            tot_len_override: Some(30),
            ..good.clone()
        }
        .frame(),
        "tot_len cuts TCP",
    )?;
    expect_invalid(
        &mut dp,
        good.frame()[..14 + 20 + 12].to_vec(),
        "frame cuts TCP",
    )?;
    // TCP data offset < 5.
    let mut bad_doff = good.clone();
    bad_doff.l4[12] = 4 << 4;
    expect_invalid(&mut dp, bad_doff.frame(), "doff 4")?;
    // Truncated UDP and ICMP headers.
    expect_invalid(
        &mut dp,
        Ipv4::new(A, B, IPPROTO_UDP, vec![0; 6]).frame(),
        "short UDP",
    )?;
    expect_invalid(
        &mut dp,
        Ipv4::new(A, B, IPPROTO_ICMP, vec![8, 0, 0, 0]).frame(),
        "short ICMP",
    )?;
    // Not IPv4 at all behind an IPv4 ethertype.
    let mut v6 = good.frame();
    v6[14] = 0x65;
    expect_invalid(&mut dp, v6, "version 6 in IPv4 ethertype")?;

    // IP options are fine: the L4 header is found after them.
    let mut opts = good.clone();
    opts.options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    assert_eq!(dp.run(FROM_ENDPOINT, LO_IFINDEX, &opts.frame())?, TC_ACT_OK);
    assert!(dp
        .ct(CtKey::new(A, B, 40000, 80, IPPROTO_TCP, Direction::Egress))?
        .is_some());
    // Ethernet padding after the datagram is fine too.
    let mut padded = Ipv4::udp(A, 1, B, 2).frame();
    padded.extend_from_slice(&[0; 20]);
    assert_eq!(dp.run(FROM_ENDPOINT, LO_IFINDEX, &padded)?, TC_ACT_OK);
    Ok(())
}

#[test]
fn non_ip() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    assert_eq!(dp.run(FROM_ENDPOINT, LO_IFINDEX, &arp())?, TC_ACT_OK);
    assert_eq!(dp.run(TO_ENDPOINT, LO_IFINDEX, &arp())?, TC_ACT_OK);
    assert_eq!(dp.metric(Reason::Forwarded, OBS_FROM_ENDPOINT)?.packets, 1);
    assert!(dp.events()?.is_empty());
    assert_eq!(dp.ct_len()?, 0);

    assert_eq!(dp.run(FROM_ENDPOINT, LO_IFINDEX, &ipv6())?, TC_ACT_SHOT);
    let ev = dp.one_event(EVENT_DROP, Reason::UnsupportedL3)?;
    assert_eq!((ev.ethertype(), ev.protocol), (ETH_P_IPV6, 0));
    assert_eq!(
        dp.run(TO_ENDPOINT, LO_IFINDEX, &eth(0x8100, &[0; 46]))?,
        TC_ACT_SHOT
    );
    assert_eq!(
        drop_metric(&mut dp, Reason::UnsupportedL3, OBS_TO_ENDPOINT)?,
        1
    );
    Ok(())
}

#[test]
fn audit_mode() -> Result<()> {
    let mut dp = setup(ENFORCE | EP_AUDIT_EGRESS)?;
    dp.set_policy(
        PolicyKey::new(EP, Direction::Egress, ID_B, port(IPPROTO_TCP, 22))?,
        PolicyValue::deny(9),
    )?;
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, B, 80, TCP_SYN))?,
        TC_ACT_OK
    );
    dp.one_event(EVENT_AUDIT, Reason::PolicyDenied)?;
    let ct = dp
        .ct(CtKey::new(A, B, 40000, 80, IPPROTO_TCP, Direction::Egress))?
        .expect("CT entry");
    assert_eq!(ct.flags & CT_AUDITED, CT_AUDITED);

    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, B, 22, TCP_SYN))?,
        TC_ACT_OK
    );
    let ev = dp.one_event(EVENT_AUDIT, Reason::PolicyDenyRule)?;
    assert_eq!(ev.rule_id, 9);
    assert_eq!(dp.metric(Reason::Forwarded, OBS_FROM_ENDPOINT)?.packets, 2);
    assert_eq!(
        drop_metric(&mut dp, Reason::PolicyDenied, OBS_FROM_ENDPOINT)?,
        0
    );

    // Ingress is enforced, not audited.
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(B, 40000, A, 80, TCP_SYN))?,
        TC_ACT_SHOT
    );
    dp.one_event(EVENT_DROP, Reason::PolicyDenied)?;
    Ok(())
}

#[test]
fn revocation() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    let k80 = PolicyKey::new(EP, Direction::Egress, ID_B, port(IPPROTO_TCP, 80))?;
    let k443 = PolicyKey::new(EP, Direction::Egress, ID_B, port(IPPROTO_TCP, 443))?;
    let kin = PolicyKey::new(EP, Direction::Ingress, ID_C, port(IPPROTO_TCP, 8080))?;
    dp.set_policy(k80, PolicyValue::allow(1))?;
    dp.set_policy(k443, PolicyValue::allow(2))?;
    dp.set_policy(kin, PolicyValue::allow(3))?;
    let f80 = CtKey::new(A, B, 40000, 80, IPPROTO_TCP, Direction::Egress);
    let f443 = CtKey::new(A, B, 40001, 443, IPPROTO_TCP, Direction::Egress);
    let fin = CtKey::new(C, A, 50000, 8080, IPPROTO_TCP, Direction::Ingress);
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, B, 80, TCP_SYN))?,
        TC_ACT_OK
    );
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40001, B, 443, TCP_SYN))?,
        TC_ACT_OK
    );
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(C, 50000, A, 8080, TCP_SYN))?,
        TC_ACT_OK
    );
    dp.events()?;

    // Same revision: a removed policy entry does not touch established flows yet.
    dp.remove_policy(k80)?;
    dp.remove_policy(kin)?;
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, B, 80, TCP_ACK))?,
        TC_ACT_OK
    );

    dp.set_policy_rev(2)?;
    // The flow that lost its allowance is cut at its next packet...
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, B, 80, TCP_ACK))?,
        TC_ACT_SHOT
    );
    let ev = dp.one_event(EVENT_DROP, Reason::PolicyRevoked)?;
    assert_eq!((ev.dport(), ev.policy_rev), (80, 2));
    let ct = dp.ct(f80)?.expect("revoked entry kept");
    assert!(ct.flags & CT_REVOKED != 0 && ct.policy_rev == 2);
    // ...and stays cut, in both directions.
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40000, B, 80, TCP_ACK))?,
        TC_ACT_SHOT
    );
    dp.one_event(EVENT_DROP, Reason::PolicyRevoked)?;
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(B, 80, A, 40000, TCP_ACK))?,
        TC_ACT_SHOT
    );
    dp.one_event(EVENT_DROP, Reason::PolicyRevoked)?;

    // The unrelated flow continues and is re-stamped with the new revision.
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 40001, B, 443, TCP_ACK))?,
        TC_ACT_OK
    );
    let ct = dp.ct(f443)?.expect("entry kept");
    assert_eq!((ct.policy_rev, ct.rule_id, ct.packets), (2, 2, 2));

    // A revoked ingress connection is cut by its reply (leaving the endpoint) too.
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 8080, C, 50000, TCP_ACK))?,
        TC_ACT_SHOT
    );
    dp.one_event(EVENT_DROP, Reason::PolicyRevoked)?;
    assert!(dp.ct(fin)?.is_some_and(|c| c.flags & CT_REVOKED != 0));
    assert_eq!(
        drop_metric(&mut dp, Reason::PolicyRevoked, OBS_FROM_ENDPOINT)?,
        3
    );
    Ok(())
}

/// A revoked connection must not come back through the side that does not
/// enforce: the peer's retransmission is not a new connection.
#[test]
fn revoked_connection_is_not_revived_by_the_unenforced_side() -> Result<()> {
    let mut dp = setup(EP_ENFORCE_INGRESS)?;
    let kin = PolicyKey::new(EP, Direction::Ingress, ID_C, port(IPPROTO_TCP, 8080))?;
    dp.set_policy(kin, PolicyValue::allow(3))?;
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(C, 50000, A, 8080, TCP_SYN))?,
        TC_ACT_OK
    );
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 8080, C, 50000, TCP_SYN | TCP_ACK))?,
        TC_ACT_OK
    );
    dp.events()?;

    dp.remove_policy(kin)?;
    dp.set_policy_rev(2)?;
    // The endpoint's egress is not enforced, yet its retransmitted reply is
    // dropped, and does not become a new egress connection...
    assert_eq!(
        out(&mut dp, &Ipv4::tcp(A, 8080, C, 50000, TCP_ACK))?,
        TC_ACT_SHOT
    );
    dp.one_event(EVENT_DROP, Reason::PolicyRevoked)?;
    let egress = CtKey::new(A, C, 8080, 50000, IPPROTO_TCP, Direction::Egress);
    assert!(dp.ct(egress)?.is_none(), "no egress entry was created");
    // ...so the client's retransmission finds nothing to ride on.
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(C, 50000, A, 8080, TCP_ACK))?,
        TC_ACT_SHOT
    );
    dp.one_event(EVENT_DROP, Reason::PolicyRevoked)?;

    // Allowed again by a later revision: the same connection passes again.
    dp.set_policy(kin, PolicyValue::allow(4))?;
    dp.set_policy_rev(3)?;
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(C, 50000, A, 8080, TCP_ACK))?,
        TC_ACT_OK
    );
    let fin = CtKey::new(C, A, 50000, 8080, IPPROTO_TCP, Direction::Ingress);
    let ct = dp.ct(fin)?.expect("entry kept");
    assert_eq!(
        (ct.flags & CT_REVOKED, ct.policy_rev, ct.rule_id),
        (0, 3, 4)
    );
    Ok(())
}

#[test]
fn revocation_by_ipcache_change_and_audit() -> Result<()> {
    let mut dp = setup(ENFORCE | EP_AUDIT_INGRESS)?;
    // Only identity ID_B may reach port 80: an entry then audited.
    allow(&mut dp, Direction::Ingress, ID_B, port(IPPROTO_TCP, 80), 1)?;
    let key = CtKey::new(B, A, 50000, 80, IPPROTO_TCP, Direction::Ingress);
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(B, 50000, A, 80, TCP_SYN))?,
        TC_ACT_OK
    );
    dp.events()?;
    // B's address now belongs to another identity: re-evaluation denies, audit lets it pass.
    dp.set_ipcache(B, 32, ID_C)?;
    dp.set_policy_rev(5)?;
    assert_eq!(
        inn(&mut dp, &Ipv4::tcp(B, 50000, A, 80, TCP_ACK))?,
        TC_ACT_OK
    );
    let ev = dp.one_event(EVENT_AUDIT, Reason::PolicyRevoked)?;
    assert_eq!(ev.src_identity, ID_C);
    let ct = dp.ct(key)?.expect("audited entry kept");
    assert_eq!(
        (ct.policy_rev, ct.remote_identity, ct.flags & CT_AUDITED),
        (5, ID_C, CT_AUDITED)
    );
    Ok(())
}

#[test]
fn same_node_pod_to_pod_uses_both_hooks() -> Result<()> {
    // Two endpoints need two interfaces: create dummies in a private netns
    // of this test thread (BPF_PROG_TEST_RUN resolves ctx ifindex there).
    let Some((if_a, if_b)) = common::netns::two_dummies()? else {
        eprintln!("SKIPPED same_node_pod_to_pod_uses_both_hooks: cannot create dummy interfaces");
        return Ok(());
    };
    let mut dp = Datapath::load()?;
    dp.set_endpoint(if_a, EndpointInfo::new(ID_A, A, 1, ENFORCE))?;
    dp.set_endpoint(if_b, EndpointInfo::new(ID_B, B, 2, ENFORCE))?;
    dp.set_ipcache(A, 32, ID_A)?;
    dp.set_ipcache(B, 32, ID_B)?;
    dp.set_policy(
        PolicyKey::new(1, Direction::Egress, ID_B, port(IPPROTO_TCP, 80))?,
        PolicyValue::allow(1),
    )?;
    let syn = Ipv4::tcp(A, 40000, B, 80, TCP_SYN).frame();
    let synack = Ipv4::tcp(B, 80, A, 40000, TCP_SYN | TCP_ACK).frame();
    // A may send, but B's ingress has no policy yet.
    assert_eq!(dp.run(FROM_ENDPOINT, if_a, &syn)?, TC_ACT_OK);
    assert_eq!(dp.run(TO_ENDPOINT, if_b, &syn)?, TC_ACT_SHOT);
    dp.set_policy(
        PolicyKey::new(2, Direction::Ingress, ID_A, port(IPPROTO_TCP, 80))?,
        PolicyValue::allow(2),
    )?;
    assert_eq!(dp.run(TO_ENDPOINT, if_b, &syn)?, TC_ACT_OK);
    // Two entries, one per endpoint; the reply passes both hooks as a reply.
    assert_eq!(dp.ct_len()?, 2);
    assert_eq!(dp.run(FROM_ENDPOINT, if_b, &synack)?, TC_ACT_OK);
    assert_eq!(dp.run(TO_ENDPOINT, if_a, &synack)?, TC_ACT_OK);
    assert_eq!(dp.ct_len()?, 2);
    let e_a = dp
        .ct(CtKey::new(A, B, 40000, 80, IPPROTO_TCP, Direction::Egress))?
        .expect("A's entry");
    let e_b = dp
        .ct(CtKey::new(A, B, 40000, 80, IPPROTO_TCP, Direction::Ingress))?
        .expect("B's entry");
    assert_eq!((e_a.ep_id, e_a.flags & CT_SEEN_REPLY), (1, CT_SEEN_REPLY));
    assert_eq!((e_b.ep_id, e_b.flags & CT_SEEN_REPLY), (2, CT_SEEN_REPLY));
    let evs = dp.events()?;
    assert!(evs
        .iter()
        .any(|e| e.ifindex == if_b && e.reason() == Some(Reason::PolicyDenied)));

    // An entry is only used by the endpoint that owns it: B sending A's tuple
    // (as if B had A's address) does not ride on A's entry.
    dp.set_endpoint(if_b, EndpointInfo::new(ID_B, A, 2, ENFORCE))?;
    assert_eq!(dp.run(FROM_ENDPOINT, if_b, &syn)?, TC_ACT_SHOT);
    Ok(())
}

#[test]
fn test_run_rejects_unknown_ifindex() -> Result<()> {
    // Documents how BPF_PROG_TEST_RUN treats ctx ifindex: a nonexistent
    // interface is an error (ENODEV), not a packet on some default device.
    let mut dp = Datapath::load()?;
    let err = dp
        .run(FROM_ENDPOINT, 0x7fff_fff0, &arp())
        .expect_err("nonexistent ifindex");
    assert!(format!("{err:#}").contains("No such device"), "{err:#}");
    Ok(())
}

/// ICMP errors about a connection of the endpoint pass like its replies
/// (UDP port unreachable, fragmentation needed); errors about nothing the
/// endpoint sent, or with a quote too short to name the connection, meet
/// policy as ordinary ICMP.
#[test]
fn icmp_errors_related_to_a_connection() -> Result<()> {
    let mut dp = setup(ENFORCE)?;
    allow(&mut dp, Direction::Egress, ID_B, port(IPPROTO_UDP, 53), 1)?;
    let query = Ipv4::udp(A, 40000, B, 53);
    assert_eq!(out(&mut dp, &query)?, TC_ACT_OK);
    dp.events()?;

    // Port unreachable from B about the query: related, passes, no event.
    let unreachable = Ipv4::icmp_error(B, A, 3, 3, &query, 28);
    assert_eq!(inn(&mut dp, &unreachable)?, TC_ACT_OK);
    assert!(dp.events()?.is_empty());
    // Fragmentation needed from a router (another source) about it: related too.
    let router = Ipv4Addr::new(10, 0, 1, 254);
    let frag_needed = Ipv4::icmp_error(router, A, 3, 4, &query, 28);
    assert_eq!(inn(&mut dp, &frag_needed)?, TC_ACT_OK);

    // About a datagram A never sent: ordinary ICMP, denied by ingress policy.
    let other = Ipv4::udp(A, 40001, B, 53);
    let unrelated = Ipv4::icmp_error(B, A, 3, 3, &other, 28);
    assert_eq!(inn(&mut dp, &unrelated)?, TC_ACT_SHOT);
    dp.one_event(EVENT_DROP, Reason::PolicyDenied)?;
    // A quote without the ports cannot name a connection.
    let short = Ipv4::icmp_error(B, A, 3, 3, &query, 20);
    assert_eq!(inn(&mut dp, &short)?, TC_ACT_SHOT);
    dp.one_event(EVENT_DROP, Reason::PolicyDenied)?;

    // The endpoint's own error about an admitted ingress connection leaves
    // it as related traffic (egress is enforced and allows nothing here).
    allow(
        &mut dp,
        Direction::Ingress,
        ID_B,
        port(IPPROTO_UDP, 9999),
        2,
    )?;
    let probe = Ipv4::udp(B, 50000, A, 9999);
    assert_eq!(inn(&mut dp, &probe)?, TC_ACT_OK);
    dp.events()?;
    let refused = Ipv4::icmp_error(A, B, 3, 3, &probe, 28);
    assert_eq!(out(&mut dp, &refused)?, TC_ACT_OK);
    Ok(())
}
