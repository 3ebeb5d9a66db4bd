//! The running kernel as the tracing-policy compiler sees it: features,
//! syscall numbers, tracepoint formats (tracefs), host namespaces and kernel
//! functions (`/proc/kallsyms`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::programs::{LsmAttachType, ProgramType};
use aya::sys::is_program_supported;
use nix::mount::{mount, MsFlags};
use palisade_tracing_policies::compile::{Host, KernelFeatures};
use palisade_tracing_policies::model::NamespaceKind;
use palisade_tracing_policies::syscall_route::Phase;
use palisade_tracing_policies::tpformat::{parse_format, syscall_args, TpField};
use tracing::{debug, info, warn};

use super::syscalls;

const TRACEFS: &str = "/sys/kernel/tracing";
const KALLSYMS: &str = "/proc/kallsyms";

/// What this kernel offers for runtime enforcement.
pub fn features() -> KernelFeatures {
    let prog = |t| is_program_supported(t).unwrap_or(false);
    let lsm_active = std::fs::read_to_string("/sys/kernel/security/lsm")
        .map(|l| l.split(',').any(|m| m.trim() == "bpf"))
        .unwrap_or(false);
    KernelFeatures {
        tracepoints: prog(ProgramType::TracePoint),
        raw_tracepoints: prog(ProgramType::RawTracePoint),
        // The perf kprobe PMU exists exactly when kprobe events do.
        kprobes: Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
        fentry: prog(ProgramType::Tracing),
        lsm: lsm_active && prog(ProgramType::Lsm(LsmAttachType::Mac)),
        fanotify: Path::new("/proc/sys/fs/fanotify").exists(),
    }
}

/// Mounts tracefs at /sys/kernel/tracing unless it is there.
pub fn ensure_tracefs() -> std::io::Result<PathBuf> {
    let root = PathBuf::from(TRACEFS);
    if root.join("events").is_dir() {
        return Ok(root);
    }
    info!("mounting tracefs at {TRACEFS}");
    mount(
        Some("tracefs"),
        root.as_path(),
        Some("tracefs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(std::io::Error::from)?;
    Ok(root)
}

/// Whether syscall `name` has its own entry tracepoint,
/// `syscalls:sys_enter_<name>` (CONFIG_FTRACE_SYSCALLS; syscalls the
/// kernel does not implement have none).
pub fn has_syscall_tracepoint(name: &str) -> bool {
    has_syscall_tracepoint_for(Phase::Enter, name)
}

/// Whether syscall `name` has its own tracepoint for `phase`
/// (`syscalls:sys_enter_<name>` / `sys_exit_<name>`).
pub fn has_syscall_tracepoint_for(phase: Phase, name: &str) -> bool {
    ensure_tracefs()
        .map(|root| {
            root.join("events/syscalls")
                .join(phase.tracepoint(syscalls::kernel_name(name)))
                .join("id")
                .exists()
        })
        .unwrap_or(false)
}

/// How many arguments syscall `name`'s entry tracepoint
/// (`syscalls:sys_enter_<name>`) records, from its format file.
pub fn syscall_tracepoint_args(name: &str) -> Result<usize, String> {
    let root = ensure_tracefs().map_err(|e| format!("tracefs at {TRACEFS}: {e}"))?;
    let event = Phase::Enter.tracepoint(syscalls::kernel_name(name));
    Ok(syscall_args(&read_format(&root, "syscalls", &event)?))
}

/// The fields of tracepoint `subsystem:event`, from its format file under
/// tracefs `root`.
fn read_format(root: &Path, subsystem: &str, event: &str) -> Result<Vec<TpField>, String> {
    let path = root
        .join("events")
        .join(subsystem)
        .join(event)
        .join("format");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "no such tracepoint on this kernel ({}: {e})",
            path.display()
        )
    })?;
    parse_format(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The kernel this agent runs on.
#[derive(Debug, Clone)]
pub struct KernelHost {
    features: KernelFeatures,
    tracefs: Option<PathBuf>,
}

impl KernelHost {
    /// Probes the kernel (and mounts tracefs when it can).
    pub fn probe() -> Self {
        Self {
            features: features(),
            tracefs: ensure_tracefs().ok(),
        }
    }
}

fn ns_file(kind: NamespaceKind) -> &'static str {
    match kind {
        NamespaceKind::Uts => "uts",
        NamespaceKind::Ipc => "ipc",
        NamespaceKind::Mnt => "mnt",
        NamespaceKind::Pid => "pid",
        NamespaceKind::PidForChildren => "pid_for_children",
        NamespaceKind::Net => "net",
        NamespaceKind::Time => "time",
        NamespaceKind::TimeForChildren => "time_for_children",
        NamespaceKind::Cgroup => "cgroup",
        NamespaceKind::User => "user",
    }
}

/// The inode of `/proc/<pid>/ns/<kind>`: the namespace process `pid` is in.
pub(crate) fn namespace_inode(pid: u32, kind: NamespaceKind) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/{}", ns_file(kind)))
        .ok()
        .map(|m| m.ino())
}

/// The inode of `/proc/1/ns/<kind>`: init's (the host's) namespace.
pub fn host_namespace(kind: NamespaceKind) -> Option<u64> {
    namespace_inode(1, kind)
}

/// Which of `names` `/proc/kallsyms` lists as text symbols (functions a
/// kprobe can attach to, built in or in a loaded module); `None` when it
/// cannot be read. Reads the file once per call: callers ask for all the
/// names of a policy at once.
pub fn kernel_functions(names: &BTreeSet<String>) -> Option<BTreeSet<String>> {
    let file = std::fs::File::open(KALLSYMS)
        .map_err(|e| warn!(error = %e, "cannot read {KALLSYMS}; kprobe targets are not checked"))
        .ok()?;
    let mut found = BTreeSet::new();
    for line in BufReader::new(file).lines() {
        let line = line
            .map_err(|e| warn!(error = %e, "reading {KALLSYMS}; kprobe targets are not checked"))
            .ok()?;
        // `<address> <type> <name>[\t[module]]`
        let mut fields = line.split_ascii_whitespace();
        let (Some(_), Some(kind), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if matches!(kind, "t" | "T" | "w" | "W") && names.contains(name) {
            found.insert(name.to_owned());
            if found.len() == names.len() {
                break;
            }
        }
    }
    debug!(asked = names.len(), found = found.len(), "kernel functions");
    Some(found)
}

impl Host for KernelHost {
    fn features(&self) -> KernelFeatures {
        self.features
    }

    fn syscall_number(&self, name: &str) -> Option<u32> {
        syscalls::number(name)
    }

    fn tracepoint_format(&self, subsystem: &str, event: &str) -> Result<Vec<TpField>, String> {
        let ok =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok(subsystem) || !ok(event) {
            return Err("names of tracepoints are letters, digits and _".into());
        }
        let root = self
            .tracefs
            .as_ref()
            .ok_or_else(|| format!("tracefs is not mounted at {TRACEFS}"))?;
        read_format(root, subsystem, event)
    }

    fn host_namespace(&self, kind: NamespaceKind) -> Option<u64> {
        host_namespace(kind)
    }

    fn kernel_functions(&self, names: &BTreeSet<String>) -> Option<BTreeSet<String>> {
        kernel_functions(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kallsyms_names_functions() {
        let names: BTreeSet<String> = ["schedule", "palisade_no_such_function"]
            .map(String::from)
            .into();
        let Some(found) = kernel_functions(&names) else {
            println!("SKIPPED: {KALLSYMS} cannot be read here");
            return;
        };
        assert_eq!(found, BTreeSet::from(["schedule".to_owned()]));
    }
}
