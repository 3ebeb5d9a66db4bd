//! Socket arguments of hook events: the tuple the kernel wrote
//! ([`SockTuple`]) as Tetragon's `sockaddr_arg`, `sock_arg` and `skb_arg`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use palisade_api::events::{ArgValue, KprobeSkb, KprobeSock, KprobeSockaddr};
use palisade_bpf::abi::runtime::{SockTuple, SOCKF_IP, SOCKF_STATE};
use palisade_tracing_policies::values::{FAMILIES, PROTOCOLS, TCP_STATES};

const AF_INET: u16 = 2;

/// The name of `n` in `table`, else the number.
fn name_of(table: &[(&str, u32)], n: u32) -> String {
    table
        .iter()
        .find(|&&(_, v)| v == n)
        .map_or_else(|| n.to_string(), |&(name, _)| name.to_owned())
}

fn addr(t: &SockTuple, bytes: &[u8; 16]) -> String {
    if t.flags & SOCKF_IP == 0 {
        return String::new();
    }
    let ip = if t.family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    };
    ip.to_string()
}

fn family(t: &SockTuple) -> String {
    name_of(FAMILIES, u32::from(t.family))
}

/// A `sockaddr` argument from the tuple bytes (empty when the kernel could
/// not read it).
pub fn sockaddr_arg(bytes: &[u8]) -> ArgValue {
    ArgValue::SockaddrArg(
        SockTuple::from_bytes(bytes).map_or_else(KprobeSockaddr::default, |t| KprobeSockaddr {
            family: family(&t),
            addr: addr(&t, &t.saddr),
            port: u32::from(t.sport),
        }),
    )
}

/// A `sock` argument from the tuple bytes.
pub fn sock_arg(bytes: &[u8]) -> ArgValue {
    ArgValue::SockArg(
        SockTuple::from_bytes(bytes).map_or_else(KprobeSock::default, |t| KprobeSock {
            family: family(&t),
            protocol: name_of(PROTOCOLS, u32::from(t.protocol)),
            saddr: addr(&t, &t.saddr),
            daddr: addr(&t, &t.daddr),
            sport: u32::from(t.sport),
            dport: u32::from(t.dport),
            state: if t.flags & SOCKF_STATE != 0 {
                name_of(TCP_STATES, u32::from(t.state))
            } else {
                String::new()
            },
            ..KprobeSock::default()
        }),
    )
}

/// An `skb` argument from the tuple bytes.
pub fn skb_arg(bytes: &[u8]) -> ArgValue {
    ArgValue::SkbArg(
        SockTuple::from_bytes(bytes).map_or_else(KprobeSkb::default, |t| KprobeSkb {
            family: family(&t),
            protocol: name_of(PROTOCOLS, u32::from(t.protocol)),
            proto: u32::from(t.protocol),
            saddr: addr(&t, &t.saddr),
            daddr: addr(&t, &t.daddr),
            sport: u32::from(t.sport),
            dport: u32::from(t.dport),
            ..KprobeSkb::default()
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_in_reports_family_address_and_port() {
        let mut b = [0u8; 48];
        b[0..2].copy_from_slice(&2u16.to_ne_bytes());
        b[4..6].copy_from_slice(&8080u16.to_ne_bytes());
        b[9] = SOCKF_IP;
        b[16..20].copy_from_slice(&[127, 0, 0, 1]);
        let ArgValue::SockaddrArg(s) = sockaddr_arg(&b) else {
            panic!("not a sockaddr");
        };
        assert_eq!(
            (s.family.as_str(), s.addr.as_str(), s.port),
            ("AF_INET", "127.0.0.1", 8080)
        );
        let ArgValue::SockArg(s) = sock_arg(&b) else {
            panic!("not a sock");
        };
        assert_eq!(s.state, "", "no state without SOCKF_STATE");
        assert_eq!(
            sockaddr_arg(&[]),
            ArgValue::SockaddrArg(KprobeSockaddr::default())
        );
    }
}
