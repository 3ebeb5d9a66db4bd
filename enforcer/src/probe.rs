//! What the running kernel offers, and the mechanism chosen per feature.

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{is_map_supported, is_program_supported};
use aya::util::KernelVersion;
use palisade_api::Mechanism;
use serde::Serialize;

/// The result of probing the kernel.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// Kernel release.
    pub kernel: String,
    /// Whether the kernel exposes its BTF (`/sys/kernel/btf/vmlinux`).
    pub btf: bool,
    /// Each feature with the mechanism chosen for it.
    pub features: Vec<Mechanism>,
}

fn prog(t: ProgramType) -> bool {
    is_program_supported(t).unwrap_or(false)
}

fn map(t: MapType) -> bool {
    is_map_supported(t).unwrap_or(false)
}

fn mechanism(feature: &str, choice: Option<&str>, missing: &str) -> Mechanism {
    Mechanism {
        feature: feature.to_owned(),
        mechanism: choice.unwrap_or(missing).to_owned(),
        available: choice.is_some(),
    }
}

/// Probes the running kernel.
pub fn probe() -> ProbeReport {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    let tc = prog(ProgramType::SchedClassifier);
    let lpm = map(MapType::LpmTrie);
    let lru = map(MapType::LruHash);
    let ringbuf = map(MapType::RingBuf);
    let perf = map(MapType::PerfEventArray);
    let rt = crate::runtime::features();
    let syscall_tracepoints = rt.tracepoints && crate::runtime::has_syscall_tracepoint("openat");
    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();

    let policy =
        (tc && lpm && tcx).then_some("tc classifier on endpoint veths, tcx links (pinned)");
    let features = vec![
        mechanism(
            "network policy",
            policy,
            if tc && lpm {
                "unavailable: needs TCX links (Linux 6.6 or later)"
            } else {
                "unavailable: needs BPF_PROG_TYPE_SCHED_CLS and LPM trie maps"
            },
        ),
        mechanism(
            "connection tracking",
            lru.then_some("LRU hash map"),
            "unavailable: needs LRU hash maps",
        ),
        mechanism(
            "flow events",
            if ringbuf {
                Some("BPF ring buffer")
            } else {
                None
            },
            if perf {
                "unavailable: ring buffer missing (perf buffer fallback not built)"
            } else {
                "unavailable: needs BPF ring buffers"
            },
        ),
        mechanism(
            "process tracking",
            rt.raw_tracepoints
                .then_some("raw tracepoints sched_process_exec/fork/exit, /proc scan at start"),
            "unavailable: needs raw tracepoint programs",
        ),
        mechanism(
            "syscall hooks",
            match (rt.fentry && btf, syscall_tracepoints, rt.raw_tracepoints) {
                (true, _, _) => Some("fentry on __x64_sys_<name> per hooked syscall (syscalls:sys_enter_<name> if the kernel refuses the attach, raw_syscalls:sys_enter for syscalls without either), selectors evaluated in the kernel from maps"),
                (false, true, _) => Some("syscalls:sys_enter_<name> per hooked syscall (raw_syscalls:sys_enter for syscalls without one), selectors evaluated in the kernel from maps"),
                (false, false, true) => Some("raw_syscalls:sys_enter, selectors evaluated in the kernel from maps"),
                (false, false, false) => None,
            },
            "unavailable: needs raw tracepoint programs",
        ),
        mechanism(
            "tracepoint hooks",
            rt.tracepoints
                .then_some("tracepoint and raw tracepoint programs"),
            "unavailable: needs tracepoint programs (BPF_PROG_TYPE_TRACEPOINT)",
        ),
        mechanism(
            "kprobe hooks",
            rt.kprobes.then_some("kprobe programs"),
            "unavailable: kernel built without CONFIG_KPROBES (syscall hooks use syscall tracepoints)",
        ),
        mechanism(
            "LSM hooks",
            rt.lsm.then_some("BPF-LSM programs"),
            "unavailable: 'bpf' is not in the active LSM list (/sys/kernel/security/lsm)",
        ),
        mechanism(
            "kill and signal",
            rt.raw_tracepoints
                .then_some("bpf_send_signal from the hook"),
            "unavailable: needs raw tracepoint programs",
        ),
        mechanism(
            "deny (Override)",
            if rt.lsm {
                Some("BPF-LSM return value")
            } else if rt.fanotify {
                Some("fanotify permission events: file_open and bprm_check_security only")
            } else {
                None
            },
            "unavailable: needs BPF-LSM or fanotify (CONFIG_FANOTIFY_ACCESS_PERMISSIONS)",
        ),
    ];
    ProbeReport {
        kernel,
        btf,
        features,
    }
}
