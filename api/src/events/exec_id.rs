//! Tetragon's process identifier, `exec_id`.
//!
//! Tetragon (`pkg/process/process_id_linux.go`, `GetProcessID`) builds it as
//! `base64.StdEncoding("<node>:<ktime>:<pid>")`: the export node name
//! (`HUBBLE_NODE_NAME`, else `NODE_NAME`, else the host name), the process
//! start time `ktime` in nanoseconds (Tetragon's BPF side reads
//! `bpf_ktime_get_boot_ns()`, or `bpf_ktime_get_ns()` where that is
//! missing), and the thread-group id, both in decimal. Because the start time
//! is part of it, the id stays unique when pids are reused.

use std::fmt;
use std::str::FromStr;

use super::{base64, EventError};

/// `exec_id` of the process `pid` started at `ktime_ns` on `node_name`:
/// standard base64 (with padding) of `"{node_name}:{ktime_ns}:{pid}"`.
pub fn exec_id(node_name: &str, ktime_ns: u64, pid: u32) -> String {
    // Built by hand, not with `format!`: the event reader makes several
    // per event.
    let mut raw = Vec::with_capacity(node_name.len() + 32);
    raw.extend_from_slice(node_name.as_bytes());
    raw.push(b':');
    push_decimal(&mut raw, ktime_ns);
    raw.push(b':');
    push_decimal(&mut raw, u64::from(pid));
    base64::encode(&raw)
}

/// Appends `v` in decimal.
fn push_decimal(out: &mut Vec<u8>, v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = v;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The parts of an `exec_id`. `Display` gives the encoded id back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecId {
    /// The node name the exporting agent used.
    pub node_name: String,
    /// Process start time in nanoseconds since boot (see the module docs).
    pub ktime_ns: u64,
    /// Process id (thread-group id) in the host pid namespace.
    pub pid: u32,
}

/// Splits and checks an `exec_id`; it must be exactly what [`exec_id`]
/// produces for its parts (canonical base64 and decimal numbers), so the
/// parts identify the same process.
pub fn parse_exec_id(id: &str) -> Result<ExecId, EventError> {
    let error = |reason| EventError::ExecId {
        exec_id: id.to_owned(),
        reason,
    };
    let bytes = base64::decode(id).map_err(|_| error("not base64"))?;
    let text = String::from_utf8(bytes).map_err(|_| error("not UTF-8 once decoded"))?;
    let mut fields = text.rsplitn(3, ':');
    let (Some(pid), Some(ktime), Some(node_name)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(error("expected <node>:<ktime>:<pid> once decoded"));
    };
    let parts = ExecId {
        node_name: node_name.to_owned(),
        ktime_ns: ktime
            .parse()
            .map_err(|_| error("ktime is not a decimal u64"))?,
        pid: pid.parse().map_err(|_| error("pid is not a decimal u32"))?,
    };
    if parts.to_string() != id {
        return Err(error(
            "not in canonical form (padding, leading zeros or sign)",
        ));
    }
    Ok(parts)
}

impl fmt::Display for ExecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&exec_id(&self.node_name, self.ktime_ns, self.pid))
    }
}

impl FromStr for ExecId {
    type Err = EventError;

    fn from_str(s: &str) -> Result<Self, EventError> {
        parse_exec_id(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Computed from the formula with coreutils:
    /// `printf '%s' 'node-a:123456789:42' | base64`.
    const VECTORS: &[(&str, u64, u32, &str)] = &[
        ("node-a", 123_456_789, 42, "bm9kZS1hOjEyMzQ1Njc4OTo0Mg=="),
        (
            "kind-control-plane",
            0,
            1,
            "a2luZC1jb250cm9sLXBsYW5lOjA6MQ==",
        ),
        (
            "n",
            u64::MAX,
            u32::MAX,
            "bjoxODQ0Njc0NDA3MzcwOTU1MTYxNTo0Mjk0OTY3Mjk1",
        ),
        (
            "ip-10-0-0-1.ec2.internal",
            9_876_543_210_123,
            31_337,
            "aXAtMTAtMC0wLTEuZWMyLmludGVybmFsOjk4NzY1NDMyMTAxMjM6MzEzMzc=",
        ),
        // An empty node name (Tetragon could not read the host name).
        ("", 5, 7, "OjU6Nw=="),
    ];

    #[test]
    fn vectors() {
        for &(node, ktime, pid, encoded) in VECTORS {
            assert_eq!(exec_id(node, ktime, pid), encoded);
            let parts = parse_exec_id(encoded).unwrap();
            assert_eq!(
                parts,
                ExecId {
                    node_name: node.to_owned(),
                    ktime_ns: ktime,
                    pid
                }
            );
            assert_eq!(parts.to_string(), encoded);
        }
    }

    #[test]
    fn node_names_may_contain_colons() {
        let id = exec_id("a:b", 1, 2);
        assert_eq!(parse_exec_id(&id).unwrap().node_name, "a:b");
    }

    #[test]
    fn rejects_non_canonical_and_malformed_ids() {
        let b64 = |s: &str| base64::encode(s.as_bytes());
        for bad in [
            "bm9kZS1hOjEyMzQ1Njc4OTo0Mg".to_owned(), // padding dropped
            b64("node-a:0123:42"),
            b64("node-a:+123:42"),
            b64("node-a:123"),
            b64("node-a:123:4294967296"),
            b64("node-a:-1:42"),
            b64("node-a:123:"),
            base64::encode(&[0xff, b':', b'1', b':', b'2']),
            "not base64!".to_owned(),
        ] {
            assert!(parse_exec_id(&bad).is_err(), "{bad:?} parsed");
        }
    }

    proptest! {
        #[test]
        fn round_trip(node in "[a-z0-9.:-]{0,40}", ktime: u64, pid: u32) {
            let id = exec_id(&node, ktime, pid);
            let parts: ExecId = id.parse().unwrap();
            prop_assert_eq!(parts, ExecId { node_name: node, ktime_ns: ktime, pid });
        }

        #[test]
        fn built_as_the_formula_says(node in "[a-z0-9.:-]{0,40}", ktime: u64, pid: u32) {
            prop_assert_eq!(
                exec_id(&node, ktime, pid),
                base64::encode(format!("{node}:{ktime}:{pid}").as_bytes())
            );
        }
    }
}
