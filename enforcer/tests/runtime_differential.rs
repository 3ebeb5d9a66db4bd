//! The in-kernel selector evaluation against the reference evaluator
//! (`palisade_tracing_policies::eval`), on the real kernel (needs root):
//! random policies on `lseek` (integer arguments), `openat` (a string) and
//! `connect` (a user `sockaddr`: IPv4, IPv6, unix and NULL addresses) with
//! several selectors (matchArgs of every operator, matchBinaries,
//! Post and NoPost), a child process making calls with chosen arguments,
//! and for each call the event the kernel sent (which selector matched)
//! compared with what the reference evaluator predicts; and `sock`
//! arguments (every operator) on the raw tracepoint `inet_sock_set_state`,
//! each posted tuple evaluated by the reference.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use aya::maps::{MapData, RingBuf};
use palisade_bpf::abi::runtime::{RtEvent, SockTuple, SOCKF_STATE};
use palisade_enforcer::runtime::{KernelHost, Runtime};
use std::net::IpAddr;

use palisade_tracing_policies::eval::{hooks, ResolvedLists, Sock};
use palisade_tracing_policies::{
    compile, parse_documents, ArgValue, CompileOptions, CompiledSelectors, Context, Process,
};

/// `x86_64` syscall numbers.
const LSEEK: u32 = 8;
const OPENAT: u32 = 257;
const CONNECT: u32 = 42;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Offsets (lseek's int64 argument 1) around the edges filters care about.
const OFFSETS: &[i64] = &[0, 1, 7, 8, 255, 256, 4096, -1, -4096, 1 << 32, i64::MAX];
/// `whence` values (argument 2, int).
const WHENCES: &[i64] = &[0, 1, 2, 3, 4, -1];
/// Paths for openat (under directories that do not exist: every call
/// fails with ENOENT, whatever the flags). Their first 8 bytes differ
/// (the head prefilter compares those), and some are shorter.
const PATHS: &[&str] = &[
    "/nonexistent-pal/a",
    "/nonexistent-pal/ab",
    "/nonexistent-pal/b.conf",
    "/nonexistent-pal/a/b.conf",
    "/nonexistent-pal/x.key",
    "/nonexistent-pal",
    "/nonexistent-q/a",
    "/nx/a",
    "/nx/ab.key",
    "/n",
];
const BINARIES: &[&str] = &["/usr/bin/perl", "/usr/bin/python3"];
/// Addresses connect is called with (loopback only; the descriptors are
/// not open, so no connection is ever attempted).
const ADDRS: &[&str] = &["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"];
/// Ports connect is called with.
const PORTS: &[u16] = &[0, 22, 80, 443, 1023, 1024, 8080, 65535];
/// CIDRs and port values of the socket filters.
const CIDRS: &[&str] = &[
    "127.0.0.0/8",
    "127.0.0.1",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "::1",
    "::/0",
    "fd00::/8",
    "::ffff:0:0/96",
];
const PORT_VALUES: &[&str] = &[
    "22",
    "80",
    "443",
    "1023",
    "1024",
    "8080",
    "65535",
    "1000:9000",
];
const FAMILY_VALUES: &[&str] = &["AF_INET", "AF_INET6", "AF_UNIX", "10"];

fn sock_filter(rng: &mut Rng) -> String {
    let op = *rng.pick(&[
        "SAddr",
        "NotSAddr",
        "SPort",
        "NotSPort",
        "SPortPriv",
        "NotSPortPriv",
        "Family",
    ]);
    let pool: &[&str] = match op {
        "SAddr" | "NotSAddr" => CIDRS,
        "SPort" | "NotSPort" => PORT_VALUES,
        "Family" => FAMILY_VALUES,
        _ => &[],
    };
    let n = if pool.is_empty() { 0 } else { 1 + rng.below(3) };
    let vals: Vec<String> = (0..n).map(|_| format!("\"{}\"", rng.pick(pool))).collect();
    format!(
        "      - index: 1\n        operator: {op}\n        values: [{}]\n",
        vals.join(", ")
    )
}

fn int_filter(rng: &mut Rng) -> String {
    let (index, values): (u32, &[i64]) = if rng.below(2) == 0 {
        (1, OFFSETS)
    } else {
        (2, WHENCES)
    };
    let op = *rng.pick(&[
        "Equal",
        "NotEqual",
        "GreaterThan",
        "LessThan",
        "Mask",
        "InMap",
        "NotInMap",
    ]);
    let n = match op {
        "GreaterThan" | "LessThan" => 1,
        _ => 1 + rng.below(3),
    };
    let mut vals: Vec<String> = (0..n)
        .map(|_| {
            let v = *rng.pick(values);
            if op == "Mask" {
                v.unsigned_abs().max(1).to_string()
            } else {
                v.to_string()
            }
        })
        .collect();
    if op == "InMap" && index == 1 && rng.below(2) == 0 {
        // A range.
        vals = vec!["0:255".into()];
    }
    format!(
        "      - index: {index}\n        operator: {op}\n        values: [{}]\n",
        vals.iter()
            .map(|v| format!("\"{v}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn string_filter(rng: &mut Rng) -> String {
    let op = *rng.pick(&[
        "Equal",
        "NotEqual",
        "Prefix",
        "NotPrefix",
        "Postfix",
        "NotPostfix",
    ]);
    let n = 1 + rng.below(3);
    let vals: Vec<String> = (0..n)
        .map(|_| {
            let p = *rng.pick(PATHS);
            match op {
                "Prefix" | "NotPrefix" => p[..p.len() - rng.below(3).min(p.len() - 1)].to_owned(),
                "Postfix" | "NotPostfix" => {
                    p[p.len() - 1 - rng.below(6).min(p.len() - 1)..].to_owned()
                }
                _ => p.to_owned(),
            }
        })
        .collect();
    format!(
        "      - index: 1\n        operator: {op}\n        values: [{}]\n",
        vals.iter()
            .map(|v| format!("\"{v}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Which syscall a round hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Lseek,
    Openat,
    Connect,
}

/// A random policy on `lseek`, `openat` or `connect`; argument 0 (the fd,
/// or openat's dirfd) identifies the call.
fn policy(rng: &mut Rng, name: &str, target: Target) -> String {
    let mut y = format!(
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\nspec:\n  kprobes:\n  - call: {}\n    syscall: true\n    args:\n",
        match target {
            Target::Lseek => "sys_lseek",
            Target::Openat => "sys_openat",
            Target::Connect => "sys_connect",
        }
    );
    y += match target {
        Target::Openat => "    - {index: 0, type: int}\n    - {index: 1, type: string}\n    - {index: 2, type: int}\n",
        Target::Lseek => "    - {index: 0, type: int}\n    - {index: 1, type: int64}\n    - {index: 2, type: int}\n",
        Target::Connect => "    - {index: 0, type: int}\n    - {index: 1, type: sockaddr}\n    - {index: 2, type: int}\n",
    };
    y += "    selectors:\n";
    for _ in 0..1 + rng.below(3) {
        y += "    - matchArgs:\n";
        for _ in 0..1 + rng.below(2) {
            y += &match target {
                Target::Openat => string_filter(rng),
                Target::Lseek => int_filter(rng),
                Target::Connect => sock_filter(rng),
            };
        }
        if rng.below(3) == 0 {
            let op = *rng.pick(&["In", "NotIn"]);
            let bin = *rng.pick(BINARIES);
            y += &format!(
                "      matchBinaries:\n      - operator: {op}\n        values: [\"{bin}\"]\n"
            );
        }
        if rng.below(4) == 0 {
            y += "      matchActions:\n      - action: NoPost\n";
        }
    }
    y
}

/// One call the child makes.
#[derive(Debug, Clone)]
enum Call {
    Lseek {
        fd: i64,
        offset: i64,
        whence: i64,
    },
    Openat {
        tag: i64,
        path: &'static str,
    },
    /// `addr`: None for a NULL pointer, "unix" for an `AF_UNIX` address.
    Connect {
        tag: i64,
        addr: Option<&'static str>,
        port: u16,
    },
}

/// Perl code building the packed sockaddr of `addr` and `port` in `$a`.
fn pack_sockaddr(addr: &str, port: u16) -> String {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            let [a, b, c, d] = ip.octets();
            format!("my $a = pack(\"S n C4 x8\", 2, {port}, {a}, {b}, {c}, {d});")
        }
        Ok(IpAddr::V6(ip)) => {
            let bytes: Vec<String> = ip.octets().iter().map(u8::to_string).collect();
            format!(
                "my $a = pack(\"S n N C16 N\", 10, {port}, 0, {}, 0);",
                bytes.join(", ")
            )
        }
        Err(_) => "my $a = pack(\"S a108\", 1, \"/nonexistent-pal/sock\");".to_owned(),
    }
}

impl Call {
    fn perl(&self) -> String {
        match self {
            Call::Lseek { fd, offset, whence } => {
                format!("syscall({LSEEK}, {fd}, {offset}, {whence});")
            }
            Call::Openat { tag, path } => {
                // A variable: perl's syscall() may write to its arguments.
                format!("{{ my $p = \"{path}\"; syscall({OPENAT}, {tag}, $p, 0); }}")
            }
            Call::Connect {
                tag, addr: None, ..
            } => format!("syscall({CONNECT}, {tag}, 0, 16);"),
            Call::Connect {
                tag,
                addr: Some(addr),
                port,
            } => format!(
                "{{ {} syscall({CONNECT}, {tag}, $a, length($a)); }}",
                pack_sockaddr(addr, *port)
            ),
        }
    }

    /// The reference evaluator's view of the call.
    fn context(&self) -> Context {
        let args = match self {
            Call::Lseek { fd, offset, whence } => vec![
                ArgValue::Signed(*fd as i32 as i64),
                ArgValue::Signed(*offset),
                ArgValue::Signed(*whence as i32 as i64),
            ],
            Call::Openat { tag, path } => vec![
                ArgValue::Signed(*tag as i32 as i64),
                ArgValue::Text(path.as_bytes().to_vec()),
                ArgValue::Signed(0),
            ],
            Call::Connect { tag, addr, port } => {
                let sock = match addr.map(|a| (a, a.parse::<IpAddr>())) {
                    None => ArgValue::Missing,
                    Some((_, Ok(ip))) => ArgValue::Sock(Sock {
                        family: if ip.is_ipv4() { 2 } else { 10 },
                        saddr: Some(ip),
                        sport: *port,
                        ..Sock::default()
                    }),
                    Some((_, Err(_))) => ArgValue::Sock(Sock {
                        family: 1,
                        ..Sock::default()
                    }),
                };
                let len = match addr.map(|a| a.parse::<IpAddr>()) {
                    Some(Ok(IpAddr::V4(_))) => 16,
                    Some(Ok(IpAddr::V6(_))) => 28,
                    Some(Err(_)) => 110,
                    None => 16,
                };
                vec![ArgValue::Signed(*tag), sock, ArgValue::Signed(len)]
            }
        };
        Context {
            args,
            process: Process {
                binary: b"/usr/bin/perl".to_vec(),
                ..Process::default()
            },
            ..Context::default()
        }
    }

    fn tag(&self) -> i64 {
        match self {
            Call::Lseek { fd, .. } => *fd,
            Call::Openat { tag, .. } | Call::Connect { tag, .. } => *tag,
        }
    }
}

#[test]
fn kernel_selectors_agree_with_the_reference_evaluator() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipping: loading eBPF programs needs root");
        return;
    }
    let perl = std::fs::canonicalize("/usr/bin/perl").expect("perl");
    assert_eq!(
        perl.to_str(),
        Some("/usr/bin/perl"),
        "perl is a symlink here"
    );
    let (_cleanup, mut runtime, mut ring, host, seed) = start("differential", 0x5eed_1234);
    let rounds: usize = std::env::var("PALISADE_DIFF_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let mut rng = Rng(seed);
    let mut checked = 0;
    let mut posted = 0;
    let mut connect_posted = 0;
    let skips_before = runtime.counters().head_skips;
    for round in 0..rounds {
        let target = [Target::Lseek, Target::Openat, Target::Connect][round % 3];
        // Openat rounds hook the syscall up to three times, so that the
        // head prefilter serves several hooks at once.
        let count = if target == Target::Openat {
            1 + (round / 3) % 3
        } else {
            1
        };
        let mut applied = Vec::new();
        for k in 0..count {
            let name = format!("diff-{round}-{k}");
            let yaml = policy(&mut rng, &name, target);
            let (hook_id, reference) = apply_with_reference(&mut runtime, &host, &name, &yaml);
            applied.push((name, yaml, hook_id, reference));
        }

        // Tags far from real descriptors: every lseek fails with EBADF.
        let calls: Vec<Call> = (0..24)
            .map(|i| {
                let tag = 100_000 + (round * 100 + i) as i64;
                match target {
                    Target::Openat => Call::Openat {
                        tag,
                        path: PATHS[rng.below(PATHS.len())],
                    },
                    Target::Lseek => Call::Lseek {
                        fd: tag,
                        offset: *rng.pick(OFFSETS),
                        whence: *rng.pick(WHENCES),
                    },
                    Target::Connect => Call::Connect {
                        tag,
                        addr: match rng.below(8) {
                            0 => None,
                            1 => Some("unix"),
                            _ => Some(*rng.pick(ADDRS)),
                        },
                        port: *rng.pick(PORTS),
                    },
                }
            })
            .collect();
        let script: String = calls.iter().map(Call::perl).collect();
        let st = Command::new(&perl)
            .args(["-e", &script])
            .status()
            .expect("perl");
        assert!(st.success());

        let mut seen: BTreeMap<(u32, i64), u16> = BTreeMap::new();
        while let Some(item) = ring.next() {
            if let Ok(RtEvent::Hook(ev)) = RtEvent::from_bytes(&item) {
                seen.insert((ev.hook_id, ev.vals[0] as u32 as i32 as i64), ev.sel);
            }
        }
        for (_, yaml, hook_id, reference) in &applied {
            for call in &calls {
                let expected = reference
                    .evaluate(&call.context())
                    .filter(|m| !m.has(palisade_tracing_policies::ActionKind::NoPost))
                    .map(|m| m.selector.unwrap_or(0) as u16);
                let got = seen.get(&(*hook_id, call.tag())).copied();
                assert_eq!(
                    got,
                    expected,
                    "seed {seed:#x} round {round}: call {call:?}: kernel selector {got:?}, reference {expected:?}\n{yaml}"
                );
                checked += 1;
                posted += usize::from(expected.is_some());
                if matches!(call, Call::Connect { .. }) {
                    connect_posted += usize::from(expected.is_some());
                }
            }
        }
        for (name, ..) in &applied {
            assert!(runtime.delete(name));
        }
    }
    println!(
        "{checked} calls checked, {posted} posted ({connect_posted} connect), over {rounds} random policies (seed {seed:#x})"
    );
    assert!(
        rounds < 3 || connect_posted > 0,
        "no connect call matched: the socket filters were not exercised"
    );
    let skips = runtime.counters().head_skips - skips_before;
    println!("{skips} hook runs spared by the head prefilter");
    assert!(
        rounds < 3 || skips > 0,
        "the head prefilter never turned a call away: it was not exercised"
    );
    assert!(
        posted > checked / 10 && posted < checked,
        "the generator is too one-sided"
    );
}

/// Operators of the `sock` round and the values they draw from.
const SOCK_OPS: &[(&str, &[&str])] = &[
    ("SAddr", CIDRS),
    ("NotSAddr", CIDRS),
    ("DAddr", CIDRS),
    ("NotDAddr", CIDRS),
    ("SPort", PORT_VALUES),
    ("NotSPort", PORT_VALUES),
    ("DPort", SOCK_PORT_VALUES),
    ("NotDPort", SOCK_PORT_VALUES),
    ("SPortPriv", &[]),
    ("NotSPortPriv", &[]),
    ("DPortPriv", &[]),
    ("NotDPortPriv", &[]),
    ("Protocol", &["IPPROTO_TCP", "IPPROTO_UDP"]),
    ("Family", FAMILY_VALUES),
    (
        "State",
        &["TCP_CLOSE", "TCP_SYN_SENT", "TCP_ESTABLISHED", "1:3"],
    ),
];
/// Closed loopback ports the `sock` round connects to.
const SOCK_PORTS: &[u16] = &[1023, 47_010, 47_011];
const SOCK_PORT_VALUES: &[&str] = &["1023", "47010", "47000:47010", "1024:65535"];

/// A random policy on the raw tracepoint `sock/inet_sock_set_state`
/// (argument 0: the socket), every selector limited to perl, the last one
/// without filters so that every state change of a perl socket posts its
/// tuple.
fn sock_policy(rng: &mut Rng, name: &str) -> String {
    let mut y = format!(
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\nspec:\n  tracepoints:\n  - subsystem: sock\n    event: inet_sock_set_state\n    raw: true\n    args:\n    - {{index: 0, type: sock}}\n    selectors:\n"
    );
    let perl = "      matchBinaries:\n      - {operator: In, values: [\"/usr/bin/perl\"]}\n";
    for _ in 0..1 + rng.below(3) {
        y += "    - matchArgs:\n";
        for _ in 0..1 + rng.below(2) {
            let (op, pool) = *rng.pick(SOCK_OPS);
            let n = if pool.is_empty() { 0 } else { 1 + rng.below(2) };
            let vals: Vec<String> = (0..n).map(|_| format!("\"{}\"", rng.pick(pool))).collect();
            y += &format!(
                "      - index: 0\n        operator: {op}\n        values: [{}]\n",
                vals.join(", ")
            );
        }
        y += perl;
    }
    y += "    - matchBinaries:\n      - {operator: In, values: [\"/usr/bin/perl\"]}\n";
    y
}

/// The reference evaluator's view of a tuple the kernel reported.
fn sock_of(t: &SockTuple) -> ArgValue {
    let ip = |b: &[u8; 16]| match t.family {
        2 => Some(IpAddr::from([b[0], b[1], b[2], b[3]])),
        10 => Some(IpAddr::from(*b)),
        _ => None,
    };
    ArgValue::Sock(Sock {
        family: t.family,
        protocol: t.protocol,
        saddr: ip(&t.saddr),
        daddr: ip(&t.daddr),
        sport: t.sport,
        dport: t.dport,
        state: (t.flags & SOCKF_STATE != 0).then_some(t.state),
    })
}

/// `sock` arguments: the selector the kernel chose for each socket state
/// change of a perl child (TCP connects to closed loopback ports) against
/// the reference evaluator on the tuple the kernel reported.
#[test]
fn kernel_sock_filters_agree_with_the_reference_evaluator() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipping: loading eBPF programs needs root");
        return;
    }
    let (_cleanup, mut runtime, mut ring, host, seed) = start("differential-sock", 0x50c_4e75);
    let mut rng = Rng(seed);
    let (mut checked, mut filtered) = (0, 0);
    for round in 0..30 {
        let name = format!("diff-sock-{round}");
        let yaml = sock_policy(&mut rng, &name);
        let (hook_id, reference) = apply_with_reference(&mut runtime, &host, &name, &yaml);
        let script: String = (0..4)
            .map(|_| {
                let port = *rng.pick(SOCK_PORTS);
                if rng.below(2) == 0 {
                    format!("{{ socket(my $s, PF_INET, SOCK_STREAM, 0) or die; connect($s, pack_sockaddr_in({port}, inet_aton(q(127.0.0.1)))); }}")
                } else {
                    format!("{{ socket(my $s, PF_INET6, SOCK_STREAM, 0) or die; connect($s, pack_sockaddr_in6({port}, inet_pton(AF_INET6, q(::1)))); }}")
                }
            })
            .collect();
        let st = Command::new("/usr/bin/perl")
            .args([
                "-MSocket=:DEFAULT,inet_pton,pack_sockaddr_in6",
                "-e",
                &script,
            ])
            .status()
            .expect("perl");
        assert!(st.success());
        let mut seen = 0;
        while let Some(item) = ring.next() {
            let Ok(RtEvent::Hook(ev)) = RtEvent::from_bytes(&item) else {
                continue;
            };
            if ev.hook_id != hook_id {
                continue;
            }
            let tuple = SockTuple::from_bytes(ev.string(0).unwrap_or_default())
                .unwrap_or_else(|| panic!("round {round}: no tuple in the event\n{yaml}"));
            let ctx = Context {
                args: vec![sock_of(&tuple)],
                process: Process {
                    binary: b"/usr/bin/perl".to_vec(),
                    ..Process::default()
                },
                ..Context::default()
            };
            let expected = reference
                .evaluate(&ctx)
                .map(|m| m.selector.unwrap_or(0) as u16);
            assert_eq!(
                Some(ev.sel),
                expected,
                "seed {seed:#x} round {round}: tuple {tuple:?}\n{yaml}"
            );
            seen += 1;
            filtered +=
                usize::from(expected.is_some_and(|s| usize::from(s) + 1 < reference_len(&yaml)));
        }
        assert!(
            seen >= 4,
            "round {round}: {seen} state changes posted\n{yaml}"
        );
        checked += seen;
        assert!(runtime.delete(&name));
    }
    println!("{checked} socket state changes checked, {filtered} matched a filtering selector (seed {seed:#x})");
    assert!(filtered > 0, "no filtering selector ever matched");
}

/// Applies the generated policy `name` (`yaml`, one hook) to `runtime`;
/// its hook id and the reference evaluator's compilation of its selectors.
/// A policy either side refuses fails the test with the YAML.
fn apply_with_reference(
    runtime: &mut Runtime,
    host: &KernelHost,
    name: &str,
    yaml: &str,
) -> (u32, CompiledSelectors) {
    let doc = parse_documents(yaml, "differential")
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
        .remove(0);
    let compiled =
        compile(&doc, host, CompileOptions::default()).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let reference = CompiledSelectors::new(&hooks(&doc)[0].hook(), &ResolvedLists::new())
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    runtime
        .apply(compiled)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    (runtime.hooks_of(name)[0].0, reference)
}

/// The number of selectors of a generated policy.
fn reference_len(yaml: &str) -> usize {
    yaml.matches("matchBinaries:").count()
}

/// A runtime on a bpf root of its own (`/sys/fs/bpf/palisade-<name>-<pid>`,
/// removed when the returned guard drops, after the runtime), its event
/// ring buffer, the host, and the seed (`PALISADE_DIFF_SEED`, else
/// `default_seed`).
fn start(name: &str, default_seed: u64) -> (Cleanup, Runtime, RingBuf<MapData>, KernelHost, u64) {
    let root = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/palisade-{name}-{}",
        std::process::id()
    ));
    let cleanup = Cleanup(root.clone());
    let mut runtime = Runtime::start(&root, std::process::id()).expect("runtime");
    let ring = runtime.take_events().expect("ring buffer");
    let seed = std::env::var("PALISADE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seed);
    (cleanup, runtime, ring, KernelHost::probe(), seed)
}

/// Removes the test's bpf root (pinned maps and links) at the end.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
