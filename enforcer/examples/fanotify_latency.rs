//! What a fanotify permission guard adds to `open()`+`close()`, as a ratio
//! to the same loop without a guard, measured in the same run (needs root):
//!
//! ```sh
//! cargo build --release -p palisade-enforcer --example fanotify_latency
//! sudo target/release/examples/fanotify_latency [--iterations 100000] [--rounds 3]
//! ```
//!
//! The loop runs in a child process (the guard lets its own process through
//! without asking the decider). The decider allows everything, so the cost
//! measured is the kernel round trip to the agent plus path resolution.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use palisade_enforcer::fanotify::{
    Access, Decider, Decision, FanotifyGuard, GuardConfig, Kinds, MarkPlan,
};

struct AllowAll;

impl Decider for AllowAll {
    type Event = ();

    fn decide(&self, _: &Access) -> Decision<()> {
        Decision::allow()
    }
}

/// In the child: open and close `path` `n` times, print nanoseconds.
fn child(path: &str, n: u64) {
    let c = CString::new(path).expect("path");
    let start = Instant::now();
    for _ in 0..n {
        // A plain open/close pair, the operation the guard intercepts.
        let fd = nix::fcntl::open(
            c.as_c_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .expect("open");
        drop(fd);
    }
    println!("{}", start.elapsed().as_nanos());
}

/// Nanoseconds per open+close of `path`, best of `rounds` child runs.
fn measure(path: &Path, n: u64, rounds: u32) -> f64 {
    let exe = std::env::current_exe().expect("exe");
    (0..rounds)
        .map(|_| {
            let out = Command::new(&exe)
                .args(["--child", path.to_str().expect("utf-8"), &n.to_string()])
                .output()
                .expect("child");
            assert!(out.status.success(), "child failed: {out:?}");
            let ns: f64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("ns");
            ns / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2], args[3].parse().expect("n"));
        return;
    }
    let opt = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("number"))
    };
    let n = opt("--iterations", 100_000);
    let rounds = u32::try_from(opt("--rounds", 3)).expect("rounds");
    if !nix::unistd::geteuid().is_root() {
        eprintln!("fanotify_latency needs root (fanotify permission events)");
        std::process::exit(2);
    }
    let dir = PathBuf::from(format!(
        "/tmp/palisade-fanotify-bench-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let marked = dir.join("marked");
    let other = dir.join("other");
    std::fs::write(&marked, "m").expect("write");
    std::fs::write(&other, "o").expect("write");

    // Warm up (page cache, dentry cache), then the baseline.
    measure(&other, n / 10 + 1, 1);
    let before = measure(&other, n, rounds);

    let (guard, _events) =
        FanotifyGuard::start(Arc::new(AllowAll), GuardConfig::default()).expect("guard");
    let mut plan = MarkPlan::new();
    plan.exact(&marked, Kinds::OPEN);
    guard.set_marks(&plan).expect("inode mark");
    let inode_other = measure(&other, n, rounds);
    let inode_marked = measure(&marked, n, rounds);

    let mut fs_plan = plan.clone();
    fs_plan.everything(Kinds::OPEN);
    guard.set_marks(&fs_plan).expect("filesystem mark");
    let fs_other = measure(&other, n, rounds);
    let stats = guard.stats();
    drop(guard);
    // The baseline again, after the guard: the better of the two.
    let baseline = before.min(measure(&other, n, rounds));
    let _ = std::fs::remove_dir_all(&dir);

    println!("open+close, {n} iterations, best of {rounds} (ns/op, ratio to baseline)");
    println!("  no guard, any file                       {baseline:8.0}  1.00");
    for (what, ns) in [
        ("inode mark elsewhere, unmarked file", inode_other),
        ("inode mark, marked file (allowed)", inode_marked),
        ("filesystem mark, any file (allowed)", fs_other),
    ] {
        println!("  {what:<40} {ns:8.0}  {:.2}", ns / baseline);
    }
    println!(
        "  added per marked open: {:.1} us; events answered {}, failed {}",
        (inode_marked - baseline) / 1000.0,
        stats.answered,
        stats.failed
    );
}
