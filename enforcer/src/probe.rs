//! What the running kernel offers, and the mechanism chosen per feature.

use aya::maps::MapType;
use aya::programs::{LsmAttachType, ProgramType};
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
    let lsm_active = std::fs::read_to_string("/sys/kernel/security/lsm")
        .map(|l| l.split(',').any(|m| m.trim() == "bpf"))
        .unwrap_or(false);
    let lsm = lsm_active && prog(ProgramType::Lsm(LsmAttachType::Mac));
    let kprobes = std::path::Path::new("/sys/kernel/tracing/kprobe_events").exists()
        || std::path::Path::new("/sys/kernel/debug/tracing/kprobe_events").exists();

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
            "tracepoints",
            prog(ProgramType::TracePoint).then_some("tracepoint programs"),
            "unavailable",
        ),
        mechanism(
            "kprobes",
            kprobes.then_some("kprobe programs"),
            "unavailable: kernel built without CONFIG_KPROBES",
        ),
        mechanism(
            "BPF-LSM",
            lsm.then_some("LSM programs"),
            "unavailable: 'bpf' is not in the active LSM list (/sys/kernel/security/lsm)",
        ),
    ];
    ProbeReport {
        kernel,
        btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        features,
    }
}
