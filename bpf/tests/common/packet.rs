//! A small builder for Ethernet + IPv4 (+ TCP/UDP/ICMP) test packets.

use std::net::Ipv4Addr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_RST: u8 = 0x04;
pub const IP_MF: u16 = 0x2000;

pub fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    p.extend_from_slice(&ethertype.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

pub fn tcp_hdr(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h[14..16].copy_from_slice(&65535u16.to_be_bytes());
    h
}

pub fn udp_hdr(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    h.resize(8 + payload, 0xab);
    h
}

/// ICMP echo request (type 8) or reply (type 0).
pub fn icmp_echo(request: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut h = vec![if request { 8 } else { 0 }, 0, 0, 0];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&[0x55; 16]);
    h
}

/// An IPv4 datagram; fields left alone produce a well-formed packet.
#[derive(Clone)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub id: u16,
    /// Flags and fragment offset (in 8-byte units), host order.
    pub frag: u16,
    /// IP options (padded to 4 bytes).
    pub options: Vec<u8>,
    pub l4: Vec<u8>,
    pub ihl_override: Option<u8>,
    pub tot_len_override: Option<u16>,
}

impl Ipv4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: Vec<u8>) -> Self {
        Self {
            src,
            dst,
            proto,
            id: 0x1234,
            frag: 0,
            options: Vec::new(),
            l4,
            ihl_override: None,
            tot_len_override: None,
        }
    }

    pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Self {
        Self::new(src, dst, IPPROTO_TCP, tcp_hdr(sport, dport, flags))
    }

    pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Self::new(src, dst, IPPROTO_UDP, udp_hdr(sport, dport, 16))
    }

    pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, request: bool, id: u16) -> Self {
        Self::new(src, dst, IPPROTO_ICMP, icmp_echo(request, id, 1))
    }

    /// An ICMP error (`icmp_type`/`code`, e.g. 3/3 port unreachable) from
    /// `src` to `dst` quoting the first `quote` bytes of `about` (its IP
    /// header and what follows; RFC 792 asks for 8 bytes of payload).
    pub fn icmp_error(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        icmp_type: u8,
        code: u8,
        about: &Ipv4,
        quote: usize,
    ) -> Self {
        let mut l4 = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
        let inner = about.ip_bytes();
        l4.extend_from_slice(&inner[..quote.min(inner.len())]);
        Self::new(src, dst, IPPROTO_ICMP, l4)
    }

    /// The IP header + payload.
    pub fn ip_bytes(&self) -> Vec<u8> {
        let mut opts = self.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let hlen = 20 + opts.len();
        let ihl = self.ihl_override.unwrap_or((hlen / 4) as u8);
        let tot = self
            .tot_len_override
            .unwrap_or((hlen + self.l4.len()) as u16);
        let mut h = vec![0u8; 20];
        h[0] = 0x40 | (ihl & 0x0f);
        h[2..4].copy_from_slice(&tot.to_be_bytes());
        h[4..6].copy_from_slice(&self.id.to_be_bytes());
        h[6..8].copy_from_slice(&self.frag.to_be_bytes());
        h[8] = 64;
        h[9] = self.proto;
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        let mut sum: u32 = h
            .chunks(2)
            .chain(opts.chunks(2))
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        h.extend_from_slice(&opts);
        h.extend_from_slice(&self.l4);
        h
    }

    /// The full Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        eth(ETH_P_IP, &self.ip_bytes())
    }
}

/// An ARP request frame.
pub fn arp() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
    a.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    eth(ETH_P_ARP, &a)
}

/// A minimal IPv6 frame (UDP, no payload).
pub fn ipv6() -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    h.extend_from_slice(&[0xfd; 16]);
    h.extend_from_slice(&[0xfe; 16]);
    h.extend_from_slice(&udp_hdr(1000, 53, 0));
    eth(ETH_P_IPV6, &h)
}
