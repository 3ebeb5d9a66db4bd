//! The Rust ABI mirror has the same layout as the C structs: sizes and field
//! offsets are read from the BTF of the compiled object (the "alignchecker").
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::{BTreeMap, BTreeSet};
use std::mem::{offset_of, size_of};

use palisade_bpf::abi::runtime as rt;
use palisade_bpf::abi::*;
use palisade_bpf::{DATAPATH_OBJECT, RUNTIME_OBJECT};

/// A struct as described by BTF: size and (member name, byte offset).
#[derive(Debug)]
struct BtfStruct {
    size: usize,
    members: Vec<(String, usize)>,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn cstr(b: &[u8], o: usize) -> String {
    let end = b[o..].iter().position(|&c| c == 0).unwrap() + o;
    String::from_utf8_lossy(&b[o..end]).into_owned()
}

/// The contents of an ELF64 little-endian section.
fn elf_section<'a>(elf: &'a [u8], name: &str) -> &'a [u8] {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF object");
    assert_eq!(
        (elf[4], elf[5]),
        (2, 1),
        "expected ELF64 little-endian (bpfel)"
    );
    let shoff = u64_at(elf, 0x28) as usize;
    let shentsize = u16_at(elf, 0x3a) as usize;
    let shnum = u16_at(elf, 0x3c) as usize;
    let shstrndx = u16_at(elf, 0x3e) as usize;
    let sh = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(elf, sh(shstrndx) + 24) as usize;
    for i in 0..shnum {
        if cstr(elf, strtab + u32_at(elf, sh(i)) as usize) == name {
            let off = u64_at(elf, sh(i) + 24) as usize;
            let size = u64_at(elf, sh(i) + 32) as usize;
            return &elf[off..off + size];
        }
    }
    panic!("no section {name}");
}

/// Every named struct of a .BTF section (a minimal reader of the BTF format,
/// Documentation/bpf/btf.rst).
fn btf_structs(btf: &[u8]) -> BTreeMap<String, BtfStruct> {
    assert_eq!(u16_at(btf, 0), 0xeb9f, "BTF magic");
    let hdr_len = u32_at(btf, 4) as usize;
    let (type_off, type_len) = (u32_at(btf, 8) as usize, u32_at(btf, 12) as usize);
    let str_off = u32_at(btf, 16) as usize;
    let types = &btf[hdr_len + type_off..hdr_len + type_off + type_len];
    let strs = &btf[hdr_len + str_off..];
    let mut out = BTreeMap::new();
    let mut p = 0;
    while p < types.len() {
        let name = cstr(strs, u32_at(types, p) as usize);
        let info = u32_at(types, p + 4);
        let size = u32_at(types, p + 8) as usize;
        let (vlen, kind, kind_flag) = (
            (info & 0xffff) as usize,
            (info >> 24) & 0x1f,
            info >> 31 == 1,
        );
        p += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
            3 => 12,                      // ARRAY
            4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
            6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
            2 | 7..=12 | 16 | 18 => 0,
            k => panic!("unknown BTF kind {k}"),
        };
        if kind == 4 && !name.is_empty() {
            let members = (0..vlen)
                .map(|i| {
                    let m = p + i * 12;
                    let mut bits = u32_at(types, m + 8);
                    if kind_flag {
                        bits &= 0x00ff_ffff;
                    }
                    assert_eq!(bits % 8, 0, "{name}: bitfield member");
                    (cstr(strs, u32_at(types, m) as usize), (bits / 8) as usize)
                })
                .collect();
            out.insert(name, BtfStruct { size, members });
        }
        p += extra;
    }
    out
}

type Layout = (&'static str, usize, Vec<(&'static str, usize)>);

fn check(btf: &BTreeMap<String, BtfStruct>, table: &[Layout], object: &str) {
    for (name, size, fields) in table {
        let c = btf
            .get(*name)
            .unwrap_or_else(|| panic!("struct {name} is not in the BTF of {object}"));
        assert_eq!(c.size, *size, "sizeof(struct {name})");
        let c_fields: Vec<(&str, usize)> =
            c.members.iter().map(|(n, o)| (n.as_str(), *o)).collect();
        assert_eq!(c_fields, *fields, "fields and offsets of struct {name}");
    }
}

macro_rules! rust_layout {
    ($c:literal, $t:ty, [$($f:ident),* $(,)?]) => {
        ($c, size_of::<$t>(), vec![$((stringify!($f).trim_start_matches("r#"), offset_of!($t, $f))),*])
    };
}

#[test]
fn rust_structs_match_btf_of_the_object() {
    let btf = btf_structs(elf_section(DATAPATH_OBJECT, ".BTF"));
    let table = vec![
        rust_layout!("pal_endpoint_key", EndpointKey, [ifindex]),
        rust_layout!(
            "pal_endpoint_info",
            EndpointInfo,
            [identity, ipv4, ep_id, flags, pad]
        ),
        rust_layout!("pal_ipcache_key", IpcacheKey, [prefixlen, addr]),
        rust_layout!("pal_ipcache_value", IpcacheValue, [identity, flags]),
        rust_layout!("pal_tunnel_value", TunnelValue, [endpoint, pad]),
        rust_layout!(
            "pal_policy_key",
            PolicyKey,
            [prefixlen, ep_id, dir, pad, identity, protocol, pad2, dport]
        ),
        rust_layout!(
            "pal_policy_value",
            PolicyValue,
            [flags, auth_type, pad, rule_id]
        ),
        rust_layout!(
            "pal_ct_key",
            CtKey,
            [saddr, daddr, sport, dport, protocol, dir, pad]
        ),
        rust_layout!(
            "pal_ct_value",
            CtValue,
            [
                created_ns,
                last_seen_ns,
                packets,
                bytes,
                policy_rev,
                remote_identity,
                ep_id,
                flags,
                pad,
                rule_id
            ]
        ),
        rust_layout!(
            "pal_auth_key",
            AuthKey,
            [local_identity, remote_identity, remote_node, auth_type, pad]
        ),
        rust_layout!("pal_auth_value", AuthValue, [expires_ns]),
        rust_layout!("pal_frag_key", FragKey, [saddr, daddr, id, protocol, pad]),
        rust_layout!("pal_frag_value", FragValue, [sport, dport]),
        rust_layout!("pal_state", State, [policy_rev, pad]),
        rust_layout!(
            "pal_event",
            Event,
            [
                timestamp_ns,
                r#type,
                observation,
                protocol,
                auth_type,
                reason,
                ifindex,
                ep_id,
                ethertype,
                src_identity,
                dst_identity,
                saddr,
                daddr,
                sport,
                dport,
                rule_id,
                policy_rev,
                remote_node
            ]
        ),
        rust_layout!("pal_metrics_value", MetricsValue, [packets, bytes]),
    ];
    check(&btf, &table, "lxc.o");

    // runtime.o: structs mirrored field for field, LPM keys (whose
    // prefixlen aya's `Key` adds in front), and events the Rust side decodes
    // by offset (the offsets its decoder uses).
    let rtbtf = btf_structs(elf_section(RUNTIME_OBJECT, ".BTF"));
    let lpm = |c: &'static str, size: usize, set_id: usize, data: usize| {
        (
            c,
            4 + size,
            vec![("prefixlen", 0), ("set_id", 4 + set_id), ("data", 4 + data)],
        )
    };
    let hdr = size_of::<rt::Hdr>();
    let proc_size = size_of::<rt::Proc>();
    let rt_table = vec![
        rust_layout!(
            "pal_proc",
            rt::Proc,
            [
                ktime,
                parent_ktime,
                cgroup_id,
                bin_match,
                bin_follow,
                parent_bin,
                pid,
                ppid,
                nspid,
                uid,
                auid,
                flags,
                net_ns,
                pad
            ]
        ),
        rust_layout!(
            "pal_rt_argdesc",
            rt::ArgDesc,
            [source, kind, size, reg, offset, flags, pad]
        ),
        rust_layout!(
            "pal_rt_hook",
            rt::Hook,
            [flags, first_filter, nfilters, first_sel, nsels, nargs, args]
        ),
        rust_layout!(
            "pal_rt_filter",
            rt::Filter,
            [sel, kind, flags, arg, aux, pad, set_id, pad2, value]
        ),
        rust_layout!(
            "pal_rt_sel",
            rt::Sel,
            [action, post, signal, r#override, rate_ns, rate_scope, pad]
        ),
        lpm(
            "pal_rt_num_key",
            size_of::<rt::NumKey>(),
            offset_of!(rt::NumKey, set_id),
            offset_of!(rt::NumKey, data),
        ),
        lpm(
            "pal_rt_str_key",
            size_of::<rt::StrKey>(),
            offset_of!(rt::StrKey, set_id),
            offset_of!(rt::StrKey, data),
        ),
        rust_layout!("pal_rt_binset", rt::BinSet, [set_id, kind]),
        rust_layout!(
            "pal_rt_sock",
            rt::SockTuple,
            [family, protocol, sport, dport, state, flags, pad, pad2, saddr, daddr]
        ),
        rust_layout!(
            "pal_rt_config",
            rt::Config,
            [nbinsets, self_tgid, follow_mask]
        ),
        rust_layout!("pal_rt_head", rt::Head, [value, mask]),
        rust_layout!(
            "pal_rt_syscall_hooks",
            rt::SyscallHooks,
            [n, via, hooks, head_reg, head_skip, head_n, pad, heads]
        ),
        rust_layout!("pal_rt_hdr", rt::Hdr, [r#type, pad, size, ktime, pid, tid]),
        (
            "pal_rt_exec_event",
            rt::EXEC_EVENT_SIZE,
            vec![
                ("hdr", 0),
                ("proc", hdr),
                ("filename_len", hdr + proc_size),
                ("args_len", hdr + proc_size + 2),
                ("pad", hdr + proc_size + 4),
                ("filename", hdr + proc_size + 8),
                ("args", hdr + proc_size + 8 + rt::PATH_MAX),
            ],
        ),
        (
            "pal_rt_fork_event",
            rt::FORK_EVENT_SIZE,
            vec![("hdr", 0), ("proc", hdr)],
        ),
        (
            "pal_rt_exit_event",
            rt::EXIT_EVENT_SIZE,
            vec![
                ("hdr", 0),
                ("proc_ktime", hdr),
                ("exit_code", hdr + 8),
                ("pad", hdr + 12),
            ],
        ),
        (
            "pal_rt_hook_event",
            rt::HOOK_EVENT_FIXED + rt::STR_AREA,
            vec![
                ("hdr", 0),
                ("proc_ktime", hdr),
                ("hook_id", hdr + 8),
                ("sel", hdr + 12),
                ("action", hdr + 14),
                ("flags", hdr + 15),
                ("ret", hdr + 16),
                ("vals", hdr + 24),
                ("str", rt::HOOK_EVENT_FIXED),
            ],
        ),
    ];
    check(&rtbtf, &rt_table, "runtime.o");

    // Every struct of the ABI headers is mirrored (and so checked above).
    let mirrored: BTreeSet<&str> = table.iter().chain(&rt_table).map(|(n, _, _)| *n).collect();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/include/abi");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("struct ") {
                if let Some(name) = rest.strip_suffix(" {") {
                    assert!(
                        mirrored.contains(name),
                        "struct {name} of {} has no Rust mirror",
                        path.display()
                    );
                }
            }
        }
    }

    // PolicyKeyData is PolicyKey without prefixlen (aya's LPM key carries it).
    assert_eq!(size_of::<PolicyKeyData>() + 4, size_of::<PolicyKey>());
    assert_eq!(
        offset_of!(PolicyKeyData, ep_id) + 4,
        offset_of!(PolicyKey, ep_id)
    );
    assert_eq!(
        offset_of!(PolicyKeyData, identity) + 4,
        offset_of!(PolicyKey, identity)
    );
    assert_eq!(
        offset_of!(PolicyKeyData, dport) + 4,
        offset_of!(PolicyKey, dport)
    );
}

#[test]
fn object_is_aligned_for_elf_parsing() {
    assert_eq!(DATAPATH_OBJECT.as_ptr() as usize % 8, 0);
}
