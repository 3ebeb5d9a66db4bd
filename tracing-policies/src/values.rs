//! Typed selector values, parsed once from their YAML text: integers at the
//! width of the argument they are compared with, ranges, ports, CIDRs,
//! protocol/family/state names and capability names.
//!
//! [`validate`](mod@crate::validate) and [`eval`](crate::eval) share these
//! parsers, so a value that validates is exactly a value the evaluator can
//! compare.
//!
//! # Integer syntax
//!
//! Tetragon parses most integer values with Go's `strconv.ParseInt(v, 0, …)`
//! (`pkg/selectors/kernel.go`, `writeMatchValues`,
//! `writeMatchValuesRange`): an optional sign, then `0x`/`0X` hex, `0o`/`0O`
//! octal, `0b`/`0B` binary, a leading `0` for octal (`0644` is 420), or
//! decimal ([`IntSyntax::Go`]). `InMap`/`NotInMap` values and ranges are
//! parsed with base 10 only (`writeMatchValuesInMap`, `writeRangeInMap`), so
//! there `0644` is 644; palisade keeps that and additionally accepts `0x`
//! hex, which Tetragon refuses ([`IntSyntax::Map`]). Go's digit separators
//! (`1_000`) are not accepted.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::model::ArgClass;

/// How an integer value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntSyntax {
    /// Go's base-0 syntax: decimal, `0x` hex, `0o`/leading-`0` octal, `0b`
    /// binary (`Equal`, `NotEqual`, `GT`, `LT`, `Mask`, `InRange`).
    Go,
    /// Decimal, plus `0x` hex (`InMap`, `NotInMap`).
    Map,
}

/// The integer type of an argument: its width and signedness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntType {
    /// Width in bits (8, 16, 32 or 64).
    pub bits: u32,
    /// Two's complement signed.
    pub signed: bool,
}

impl IntType {
    /// The integer type of an argument class, if it is an integer.
    pub fn of(class: ArgClass) -> Option<Self> {
        match class {
            ArgClass::Signed(bits) => Some(Self { bits, signed: true }),
            ArgClass::Unsigned(bits) => Some(Self {
                bits,
                signed: false,
            }),
            _ => None,
        }
    }

    /// The value of the low `bits` bits of `raw` read as this type: the
    /// canonical form every comparison uses.
    pub fn canonical(self, raw: u64) -> i128 {
        let bits = self.bits.clamp(1, 64);
        let masked = if bits == 64 {
            raw
        } else {
            raw & ((1u64 << bits) - 1)
        };
        if self.signed && (masked >> (bits - 1)) & 1 == 1 {
            i128::from(masked) - (1i128 << bits)
        } else {
            i128::from(masked)
        }
    }

    /// The bit pattern of a canonical value (the low `bits` bits).
    pub fn bits_of(self, v: i128) -> u64 {
        // Truncation to the type's width is the point here.
        let raw = v as u64;
        if self.bits >= 64 {
            raw
        } else {
            raw & ((1u64 << self.bits) - 1)
        }
    }

    /// Smallest accepted literal. Unsigned types also accept the signed
    /// range, read as the two's complement bit pattern (`-1` is all ones).
    fn min_literal(self) -> i128 {
        -(1i128 << (self.bits - 1))
    }

    fn max_literal(self) -> i128 {
        if self.signed {
            (1i128 << (self.bits - 1)) - 1
        } else {
            (1i128 << self.bits) - 1
        }
    }
}

/// Parses an integer literal in `syntax` (sign included) without a range
/// check.
pub fn parse_literal(v: &str, syntax: IntSyntax) -> Result<i128, String> {
    let err = || format!("{v:?} is not an integer");
    let (neg, body) = match v.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    if body.is_empty() || body.starts_with(['+', '-']) {
        return Err(err());
    }
    let (radix, digits) = if let Some(h) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (16, h)
    } else if syntax == IntSyntax::Map {
        (10, body)
    } else if let Some(o) = body.strip_prefix("0o").or(body.strip_prefix("0O")) {
        (8, o)
    } else if let Some(b) = body.strip_prefix("0b").or(body.strip_prefix("0B")) {
        (2, b)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(err());
    }
    let n = i128::from_str_radix(digits, radix).map_err(|_| err())?;
    Ok(if neg { -n } else { n })
}

/// Parses an integer value for an argument of type `ty` into its canonical
/// form ([`IntType::canonical`]); out-of-range values are refused.
pub fn parse_int(v: &str, ty: IntType, syntax: IntSyntax) -> Result<i128, String> {
    let n = parse_literal(v, syntax)?;
    let (lo, hi) = (ty.min_literal(), ty.max_literal());
    if n < lo || n > hi {
        return Err(format!(
            "{v} is out of range for the argument's type ({lo}..={hi})"
        ));
    }
    Ok(ty.canonical(ty.bits_of(n)))
}

/// An inclusive range of canonical integer values, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntRange {
    lo: i128,
    hi: i128,
}

impl IntRange {
    /// One value.
    pub fn single(v: i128) -> Self {
        Self { lo: v, hi: v }
    }

    /// Lower bound (inclusive).
    pub fn lo(self) -> i128 {
        self.lo
    }

    /// Upper bound (inclusive).
    pub fn hi(self) -> i128 {
        self.hi
    }

    /// Whether `v` is in the range.
    pub fn contains(self, v: i128) -> bool {
        self.lo <= v && v <= self.hi
    }
}

/// Parses `LOW:HIGH` (both inclusive) for an argument of type `ty`.
pub fn parse_range(v: &str, ty: IntType, syntax: IntSyntax) -> Result<IntRange, String> {
    let (a, b) = v
        .split_once(':')
        .ok_or_else(|| format!("{v:?} is not a range; write LOW:HIGH"))?;
    let (lo, hi) = (parse_int(a, ty, syntax)?, parse_int(b, ty, syntax)?);
    if lo > hi {
        return Err(format!(
            "range {v:?} is empty; write LOW:HIGH with LOW <= HIGH (in the argument's type)"
        ));
    }
    Ok(IntRange { lo, hi })
}

/// An `InMap`/`NotInMap` value: one integer or a `LOW:HIGH` range.
pub fn parse_map_value(v: &str, ty: IntType) -> Result<IntRange, String> {
    if v.contains(':') {
        parse_range(v, ty, IntSyntax::Map)
    } else {
        parse_int(v, ty, IntSyntax::Map).map(IntRange::single)
    }
}

/// A port or an inclusive port range (`53`, `1024:65535`), never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl PortRange {
    /// The first port.
    pub fn lo(self) -> u16 {
        self.lo
    }

    /// The last port.
    pub fn hi(self) -> u16 {
        self.hi
    }

    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(v: &str) -> Result<Self, String> {
        let port = |s: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{s:?} is not a port (0..=65535)"));
            }
            s.parse::<u16>()
                .map_err(|_| format!("{s:?} is not a port (0..=65535)"))
        };
        let (lo, hi) = match v.split_once(':') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(v)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("port range {v:?} is empty"));
        }
        Ok(Self { lo, hi })
    }
}

/// An IPv4 or IPv6 prefix (`10.0.0.0/8`, `fd00::/8`; a bare address is a
/// host prefix). Host bits of the address are ignored, as in an LPM trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// The network address (host bits as written).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` is inside the prefix. IPv4 addresses only match IPv4
    /// prefixes and IPv6 addresses IPv6 prefixes (an IPv4-mapped IPv6
    /// address is IPv6), as in Tetragon's two LPM maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                self.len,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.len, 128)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, len: u8, width: u32) -> bool {
    let len = u32::from(len).min(width);
    if len == 0 {
        return true;
    }
    let shift = width - len;
    a >> shift == b >> shift
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(v: &str) -> Result<Self, String> {
        let (addr, len) = match v.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (v, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{v:?} is not an IP address or CIDR (10.0.0.0/8, fd00::/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max && l.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("{v:?} has an invalid prefix length; use 0..={max}")),
            },
        };
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Which names a `Protocol`, `Family` or `State` value may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedKind {
    /// `IPPROTO_*`.
    Protocol,
    /// `AF_*`.
    Family,
    /// `TCP_*` states.
    State,
}

impl NamedKind {
    fn table(self) -> (&'static str, &'static [(&'static str, u32)]) {
        match self {
            Self::Protocol => ("IPPROTO_", PROTOCOLS),
            Self::Family => ("AF_", FAMILIES),
            Self::State => ("TCP_", TCP_STATES),
        }
    }
}

/// Parses a `Protocol`, `Family` or `State` value: a known name, a decimal
/// number, or a decimal `LOW:HIGH` range (Tetragon's `writeRangeInMap`).
pub fn parse_named(v: &str, kind: NamedKind) -> Result<(u32, u32), String> {
    let (prefix, table) = kind.table();
    if let Some(&(_, n)) = table.iter().find(|(name, _)| *name == v) {
        return Ok((n, n));
    }
    let num = |s: &str| -> Result<u32, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{v:?} is not a number, a LOW:HIGH range or a known {prefix}* name ({})",
                table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ));
        }
        s.parse::<u32>()
            .map_err(|_| format!("{s:?} is out of range (0..={})", u32::MAX))
    };
    let (lo, hi) = match v.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(v)?;
            (n, n)
        }
    };
    if lo > hi {
        return Err(format!("range {v:?} is empty"));
    }
    Ok((lo, hi))
}

/// `IPPROTO_*` names and numbers (Tetragon's `pkg/reader/network/inet.go`).
pub const PROTOCOLS: &[(&str, u32)] = &[
    ("IPPROTO_IP", 0),
    ("IPPROTO_ICMP", 1),
    ("IPPROTO_IGMP", 2),
    ("IPPROTO_IPIP", 4),
    ("IPPROTO_TCP", 6),
    ("IPPROTO_EGP", 8),
    ("IPPROTO_PUP", 12),
    ("IPPROTO_UDP", 17),
    ("IPPROTO_IDP", 22),
    ("IPPROTO_TP", 29),
    ("IPPROTO_DCCP", 33),
    ("IPPROTO_IPV6", 41),
    ("IPPROTO_RSVP", 46),
    ("IPPROTO_GRE", 47),
    ("IPPROTO_ESP", 50),
    ("IPPROTO_AH", 51),
    ("IPPROTO_ICMPV6", 58),
    ("IPPROTO_MTP", 92),
    ("IPPROTO_BEETPH", 94),
    ("IPPROTO_ENCAP", 98),
    ("IPPROTO_PIM", 103),
    ("IPPROTO_COMP", 108),
    ("IPPROTO_L2TP", 115),
    ("IPPROTO_SCTP", 132),
    ("IPPROTO_UDPLITE", 136),
    ("IPPROTO_MPLS", 137),
    ("IPPROTO_ETHERNET", 143),
    ("IPPROTO_RAW", 255),
    ("IPPROTO_MPTCP", 262),
];

/// `AF_*` names and numbers (Linux `socket.h`).
pub const FAMILIES: &[(&str, u32)] = &[
    ("AF_UNSPEC", 0),
    ("AF_UNIX", 1),
    ("AF_LOCAL", 1),
    ("AF_INET", 2),
    ("AF_AX25", 3),
    ("AF_IPX", 4),
    ("AF_APPLETALK", 5),
    ("AF_NETROM", 6),
    ("AF_BRIDGE", 7),
    ("AF_ATMPVC", 8),
    ("AF_X25", 9),
    ("AF_INET6", 10),
    ("AF_ROSE", 11),
    ("AF_DECnet", 12),
    ("AF_NETBEUI", 13),
    ("AF_SECURITY", 14),
    ("AF_KEY", 15),
    ("AF_NETLINK", 16),
    ("AF_ROUTE", 16),
    ("AF_PACKET", 17),
    ("AF_ASH", 18),
    ("AF_ECONET", 19),
    ("AF_ATMSVC", 20),
    ("AF_RDS", 21),
    ("AF_SNA", 22),
    ("AF_IRDA", 23),
    ("AF_PPPOX", 24),
    ("AF_WANPIPE", 25),
    ("AF_LLC", 26),
    ("AF_IB", 27),
    ("AF_MPLS", 28),
    ("AF_CAN", 29),
    ("AF_TIPC", 30),
    ("AF_BLUETOOTH", 31),
    ("AF_IUCV", 32),
    ("AF_RXRPC", 33),
    ("AF_ISDN", 34),
    ("AF_PHONET", 35),
    ("AF_IEEE802154", 36),
    ("AF_CAIF", 37),
    ("AF_ALG", 38),
    ("AF_NFC", 39),
    ("AF_VSOCK", 40),
    ("AF_KCM", 41),
    ("AF_QIPCRTR", 42),
    ("AF_SMC", 43),
    ("AF_XDP", 44),
    ("AF_MCTP", 45),
];

/// `TCP_*` socket states and numbers (Linux `tcp_states.h`).
pub const TCP_STATES: &[(&str, u32)] = &[
    ("TCP_ESTABLISHED", 1),
    ("TCP_SYN_SENT", 2),
    ("TCP_SYN_RECV", 3),
    ("TCP_FIN_WAIT1", 4),
    ("TCP_FIN_WAIT2", 5),
    ("TCP_TIME_WAIT", 6),
    ("TCP_CLOSE", 7),
    ("TCP_CLOSE_WAIT", 8),
    ("TCP_LAST_ACK", 9),
    ("TCP_LISTEN", 10),
    ("TCP_CLOSING", 11),
    ("TCP_NEW_SYN_RECV", 12),
];

/// `FileType` names and the `S_IFMT` value they stand for (Tetragon's
/// `fileTypeTable`).
pub const FILE_TYPES: &[(&str, u32)] = &[
    ("sock", 0o140000),
    ("socket", 0o140000),
    ("lnk", 0o120000),
    ("link", 0o120000),
    ("reg", 0o100000),
    ("regular", 0o100000),
    ("blk", 0o060000),
    ("block", 0o060000),
    ("dir", 0o040000),
    ("chr", 0o020000),
    ("char", 0o020000),
    ("fifo", 0o010000),
    ("pipe", 0o010000),
];

/// The `S_IFMT` value of a `FileType` name.
pub fn parse_file_type(v: &str) -> Result<u32, String> {
    FILE_TYPES
        .iter()
        .find(|(n, _)| *n == v)
        .map(|&(_, m)| m)
        .ok_or_else(|| {
            format!(
                "unknown file type {v:?}; use one of {}",
                FILE_TYPES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Linux capability names, in number order (`CAP_CHOWN` is 0).
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The bit of a capability name (`CAP_SYS_ADMIN` is `1 << 21`).
pub fn capability_bit(name: &str) -> Result<u64, String> {
    CAPABILITIES
        .iter()
        .position(|c| *c == name)
        .map(|i| 1u64 << i)
        .ok_or_else(|| {
            format!("unknown capability {name:?}; use a CAP_* name such as CAP_SYS_ADMIN")
        })
}

/// A `matchNamespaces` value: `host_ns` (`None`: the host's namespace of
/// the selector's kind) or a namespace inode number.
pub fn parse_namespace_value(v: &str) -> Result<Option<u32>, String> {
    if v == "host_ns" {
        return Ok(None);
    }
    v.parse::<u32>()
        .ok()
        .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
        .map(Some)
        .ok_or_else(|| format!("{v:?} is not a namespace inode number or host_ns"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const U8: IntType = IntType {
        bits: 8,
        signed: false,
    };
    const S32: IntType = IntType {
        bits: 32,
        signed: true,
    };
    const U32: IntType = IntType {
        bits: 32,
        signed: false,
    };
    const U64: IntType = IntType {
        bits: 64,
        signed: false,
    };

    #[test]
    fn go_integer_syntax() {
        assert_eq!(parse_literal("0644", IntSyntax::Go), Ok(0o644));
        assert_eq!(parse_literal("0644", IntSyntax::Map), Ok(644));
        assert_eq!(parse_literal("0x1F", IntSyntax::Go), Ok(31));
        assert_eq!(parse_literal("0x1F", IntSyntax::Map), Ok(31));
        assert_eq!(parse_literal("0b101", IntSyntax::Go), Ok(5));
        assert_eq!(parse_literal("0o17", IntSyntax::Go), Ok(15));
        assert_eq!(parse_literal("-12", IntSyntax::Go), Ok(-12));
        assert_eq!(parse_literal("0", IntSyntax::Go), Ok(0));
        assert!(parse_literal("08", IntSyntax::Go).is_err());
        assert!(parse_literal("0b101", IntSyntax::Map).is_err());
        assert!(parse_literal("--1", IntSyntax::Go).is_err());
        assert!(parse_literal("0x", IntSyntax::Go).is_err());
        assert!(parse_literal("1_000", IntSyntax::Go).is_err());
        assert!(parse_literal("", IntSyntax::Go).is_err());
        assert!(parse_literal("ten", IntSyntax::Go).is_err());
    }

    #[test]
    fn ints_respect_the_type() {
        assert_eq!(parse_int("255", U8, IntSyntax::Go), Ok(255));
        assert!(parse_int("256", U8, IntSyntax::Go).is_err());
        assert_eq!(parse_int("-1", S32, IntSyntax::Go), Ok(-1));
        assert_eq!(parse_int("-1", U32, IntSyntax::Go), Ok(0xffff_ffff));
        assert_eq!(
            parse_int("18446744073709551615", U64, IntSyntax::Go),
            Ok(i128::from(u64::MAX))
        );
        assert!(parse_int("2147483648", S32, IntSyntax::Go).is_err());
        assert_eq!(S32.canonical(0xffff_ffff), -1);
        assert_eq!(S32.canonical(0x1_0000_0005), 5);
        assert_eq!(U32.canonical(u64::MAX), 0xffff_ffff);
        assert_eq!(S32.bits_of(-1), 0xffff_ffff);
    }

    #[test]
    fn ranges() {
        let r = parse_range("1:5", S32, IntSyntax::Go).expect("range");
        assert!(r.contains(1) && r.contains(5) && !r.contains(6));
        assert!(parse_range("5:1", S32, IntSyntax::Go).is_err());
        assert!(parse_range("-1:5", S32, IntSyntax::Go).is_ok());
        // -1 is 0xffffffff for an unsigned type: the range is empty.
        assert!(parse_range("-1:5", U32, IntSyntax::Go).is_err());
        assert_eq!(parse_map_value("7", U32), Ok(IntRange::single(7)));
        assert!(parse_map_value("1:0x10", U32).is_ok());
    }

    #[test]
    fn ports_cidrs_names() {
        assert!("53".parse::<PortRange>().is_ok());
        let r: PortRange = "1024:65535".parse().expect("range");
        assert!(r.contains(1024) && !r.contains(1023));
        assert!("70000".parse::<PortRange>().is_err());
        assert!("+5".parse::<PortRange>().is_err());
        let c: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        assert!(!c.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let h: Cidr = "127.0.0.1".parse().expect("host");
        assert!(h.contains("127.0.0.1".parse().expect("ip")));
        assert!(!h.contains("127.0.0.2".parse().expect("ip")));
        let any: Cidr = "::/0".parse().expect("any6");
        assert!(any.contains("fd00::1".parse().expect("ip")));
        assert!("10.0.0.0/40".parse::<Cidr>().is_err());
        assert_eq!(parse_named("IPPROTO_TCP", NamedKind::Protocol), Ok((6, 6)));
        assert_eq!(parse_named("AF_INET6", NamedKind::Family), Ok((10, 10)));
        assert_eq!(parse_named("TCP_LISTEN", NamedKind::State), Ok((10, 10)));
        assert_eq!(parse_named("17", NamedKind::Protocol), Ok((17, 17)));
        assert_eq!(parse_named("1:3", NamedKind::State), Ok((1, 3)));
        assert!(parse_named("TCP", NamedKind::Protocol).is_err());
        assert_eq!(CAPABILITIES.len(), 41);
        assert_eq!(capability_bit("CAP_SYS_ADMIN"), Ok(1 << 21));
        assert!(capability_bit("cap_sys_admin").is_err());
        assert_eq!(parse_file_type("reg"), Ok(0o100000));
    }

    #[test]
    fn namespace_values() {
        assert_eq!(parse_namespace_value("host_ns"), Ok(None));
        assert_eq!(parse_namespace_value("4026531836"), Ok(Some(4026531836)));
        for bad in ["+5", "-1", "0x10", "4294967296", "", "host"] {
            assert!(parse_namespace_value(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
