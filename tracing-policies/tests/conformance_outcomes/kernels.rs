//! The kernels the corpus is compiled for, as deterministic [`Host`]s built
//! from data captured on each (`kernels/`): no file of this test reads the
//! machine it runs on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use palisade_tracing_policies::model::NamespaceKind;
use palisade_tracing_policies::tpformat::{parse_format, TpField};
use palisade_tracing_policies::{Host, KernelFeatures};

/// One kernel profile.
pub struct Kernel {
    /// Name in `outcomes.txt` and in `kernels/`.
    pub name: &'static str,
    /// What it offers.
    features: KernelFeatures,
    /// Its column in `kernels/functions.txt` (the host profile has no
    /// kprobes and no BPF-LSM, so its functions are never asked).
    functions_column: Option<usize>,
}

/// The kernels, in the order of the outcome table.
pub const KERNELS: [Kernel; 3] = [
    // This machine: Linux 6.18 without kprobes and BPF-LSM.
    Kernel {
        name: "host",
        features: KernelFeatures {
            tracepoints: true,
            raw_tracepoints: true,
            kprobes: false,
            fentry: false,
            lsm: false,
            fanotify: true,
        },
        functions_column: None,
    },
    // Debian's 6.1 and 6.12 as the VM lane boots them (lsm=...,bpf);
    // neither has CONFIG_BPF_KPROBE_OVERRIDE, which palisade does not use.
    Kernel {
        name: "debian-6.1",
        features: VM,
        functions_column: Some(0),
    },
    Kernel {
        name: "debian-6.12",
        features: VM,
        functions_column: Some(1),
    },
];

const VM: KernelFeatures = KernelFeatures {
    tracepoints: true,
    raw_tracepoints: true,
    kprobes: true,
    fentry: true,
    lsm: true,
    fanotify: true,
};

/// The directory of this test's data.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance_outcomes")
}

fn syscalls() -> &'static BTreeMap<String, u32> {
    static TABLE: OnceLock<BTreeMap<String, u32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        include_str!("kernels/x86_64-syscalls.txt")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (name, nr) = l.split_once(' ').expect("<name> <number>");
                (name.to_owned(), nr.parse().expect("syscall number"))
            })
            .collect()
    })
}

/// `functions.txt`: function -> (on debian-6.1, on debian-6.12).
fn functions() -> &'static BTreeMap<String, Vec<bool>> {
    static TABLE: OnceLock<BTreeMap<String, Vec<bool>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        include_str!("kernels/functions.txt")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let mut f = l.split_whitespace();
                let name = f.next().expect("function").to_owned();
                let on: Vec<bool> = f.map(|v| v == "yes").collect();
                assert_eq!(on.len(), 2, "functions.txt: {l}");
                (name, on)
            })
            .collect()
    })
}

impl Host for Kernel {
    fn features(&self) -> KernelFeatures {
        self.features
    }

    fn syscall_number(&self, name: &str) -> Option<u32> {
        syscalls().get(name).copied()
    }

    fn tracepoint_format(&self, subsystem: &str, event: &str) -> Result<Vec<TpField>, String> {
        let path = data_dir()
            .join("kernels")
            .join(self.name)
            .join(subsystem)
            .join(event)
            .join("format");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; copy /sys/kernel/tracing/events/{subsystem}/{event}/format of {} there",
                path.display(),
                self.name
            )
        });
        parse_format(&text)
    }

    fn host_namespace(&self, kind: NamespaceKind) -> Option<u64> {
        // The inode numbers of init's namespaces on a freshly booted kernel.
        Some(match kind {
            NamespaceKind::Ipc => 4026531839,
            NamespaceKind::Mnt => 4026531841,
            NamespaceKind::Net => 4026531840,
            NamespaceKind::Pid | NamespaceKind::PidForChildren => 4026531836,
            NamespaceKind::Time | NamespaceKind::TimeForChildren => 4026531834,
            NamespaceKind::Cgroup => 4026531835,
            NamespaceKind::User => 4026531837,
            NamespaceKind::Uts => 4026531838,
        })
    }

    fn kernel_functions(&self, names: &BTreeSet<String>) -> Option<BTreeSet<String>> {
        let column = self.functions_column?;
        let table = functions();
        Some(
            names
                .iter()
                .filter(|n| {
                    let on = table.get(n.as_str()).unwrap_or_else(|| {
                        panic!("kernels/functions.txt does not say whether the VM kernels have {n}; add it")
                    });
                    on[column]
                })
                .cloned()
                .collect(),
        )
    }
}
