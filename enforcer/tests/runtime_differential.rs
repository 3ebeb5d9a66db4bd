//! The in-kernel selector evaluation against the reference evaluator
//! (`palisade_tracing_policies::eval`), on the real kernel (needs root):
//! random policies on `lseek` (integer arguments) and `openat` (a string)
//! with several selectors (matchArgs of every operator, matchBinaries,
//! Post and NoPost), a child process making calls with chosen arguments,
//! and for each call the event the kernel sent (which selector matched)
//! compared with what the reference evaluator predicts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use palisade_bpf::abi::runtime::RtEvent;
use palisade_enforcer::runtime::{KernelHost, Runtime};
use palisade_tracing_policies::eval::{hooks, ResolvedLists};
use palisade_tracing_policies::{
    compile, parse_documents, ArgValue, CompileOptions, CompiledSelectors, Context, Process,
};

/// `x86_64` syscall numbers.
const LSEEK: u32 = 8;
const OPENAT: u32 = 257;

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
/// Paths for openat (under a directory that does not exist: every call
/// fails with ENOENT, whatever the flags).
const PATHS: &[&str] = &[
    "/nonexistent-pal/a",
    "/nonexistent-pal/ab",
    "/nonexistent-pal/b.conf",
    "/nonexistent-pal/a/b.conf",
    "/nonexistent-pal/x.key",
    "/nonexistent-pal",
];
const BINARIES: &[&str] = &["/usr/bin/perl", "/usr/bin/python3"];

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

/// A random policy on `lseek` or `openat`; argument 0 (lseek's fd,
/// openat's flags-free dirfd) and for openat argument 2 identify the call.
fn policy(rng: &mut Rng, name: &str, openat: bool) -> String {
    let mut y = format!(
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\nspec:\n  kprobes:\n  - call: {}\n    syscall: true\n    args:\n",
        if openat { "sys_openat" } else { "sys_lseek" }
    );
    if openat {
        y += "    - {index: 0, type: int}\n    - {index: 1, type: string}\n    - {index: 2, type: int}\n";
    } else {
        y += "    - {index: 0, type: int}\n    - {index: 1, type: int64}\n    - {index: 2, type: int}\n";
    }
    y += "    selectors:\n";
    for _ in 0..1 + rng.below(3) {
        y += "    - matchArgs:\n";
        for _ in 0..1 + rng.below(2) {
            y += &if openat {
                string_filter(rng)
            } else {
                int_filter(rng)
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
    Lseek { fd: i64, offset: i64, whence: i64 },
    Openat { tag: i64, path: &'static str },
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
            Call::Openat { tag, .. } => *tag,
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
    let root = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/palisade-differential-{}",
        std::process::id()
    ));
    let _cleanup = Cleanup(root.clone());
    let mut runtime = Runtime::start(&root, std::process::id()).expect("runtime");
    let mut ring = runtime.take_events().expect("ring buffer");
    let host = KernelHost::probe();
    let seed = std::env::var("PALISADE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    let rounds: usize = std::env::var("PALISADE_DIFF_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(80);
    let mut rng = Rng(seed);
    let mut checked = 0;
    let mut posted = 0;
    for round in 0..rounds {
        let openat = round % 2 == 1;
        let name = format!("diff-{round}");
        let yaml = policy(&mut rng, &name, openat);
        let doc = parse_documents(&yaml, "differential")
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
            .remove(0);
        let compiled = compile(&doc, &host, CompileOptions::default())
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let reference = CompiledSelectors::new(&hooks(&doc)[0].hook(), &ResolvedLists::new())
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        runtime
            .apply(compiled)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let hook_id = runtime.hooks_of(&name)[0].0;

        // Tags far from real descriptors: every lseek fails with EBADF.
        let calls: Vec<Call> = (0..24)
            .map(|i| {
                let tag = 100_000 + (round * 100 + i) as i64;
                if openat {
                    Call::Openat {
                        tag,
                        path: PATHS[rng.below(PATHS.len())],
                    }
                } else {
                    Call::Lseek {
                        fd: tag,
                        offset: *rng.pick(OFFSETS),
                        whence: *rng.pick(WHENCES),
                    }
                }
            })
            .collect();
        let script: String = calls.iter().map(Call::perl).collect();
        let st = Command::new(&perl)
            .args(["-e", &script])
            .status()
            .expect("perl");
        assert!(st.success());

        let mut seen: BTreeMap<i64, u16> = BTreeMap::new();
        while let Some(item) = ring.next() {
            if let Ok(RtEvent::Hook(ev)) = RtEvent::from_bytes(&item) {
                if ev.hook_id == hook_id {
                    seen.insert(ev.vals[0] as u32 as i32 as i64, ev.sel);
                }
            }
        }
        for call in &calls {
            let expected = reference
                .evaluate(&call.context())
                .filter(|m| !m.has(palisade_tracing_policies::ActionKind::NoPost))
                .map(|m| m.selector.unwrap_or(0) as u16);
            let got = seen.get(&call.tag()).copied();
            assert_eq!(
                got,
                expected,
                "seed {seed:#x} round {round}: call {call:?}: kernel selector {got:?}, reference {expected:?}\n{yaml}"
            );
            checked += 1;
            posted += usize::from(expected.is_some());
        }
        assert!(runtime.delete(&name));
    }
    println!(
        "{checked} calls checked, {posted} posted, over {rounds} random policies (seed {seed:#x})"
    );
    assert!(
        posted > checked / 10 && posted < checked,
        "the generator is too one-sided"
    );
}

/// Removes the test's bpf root (pinned maps and links) at the end.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
