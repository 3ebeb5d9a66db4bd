//! A [`Host`] from tables, for tests: the compiler's own, and (with the
//! `test-host` feature) those of crates that place compiled hooks. Its
//! builders panic on a policy that does not parse or compile: the test's
//! own input is wrong.
#![allow(clippy::expect_used)]

use std::collections::BTreeSet;

use crate::compile::{compile, CompileOptions, CompiledHook, Host, KernelFeatures};
use crate::model::{NamespaceKind, TracingPolicy};
use crate::tpformat::{parse_format, TpField};

/// A host from tables: `features`, x86_64 numbers of a few syscalls,
/// the `raw_syscalls` formats and, when known, the kernel's
/// functions.
pub struct TableHost {
    /// What the kernel can do.
    pub features: KernelFeatures,
    /// The kernel's functions (`None`: unknown).
    pub functions: Option<&'static [&'static str]>,
}

const SYS_EXIT: &str = "name: sys_exit
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:long id;\toffset:8;\tsize:8;\tsigned:1;
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;
";

const SYS_ENTER: &str = "name: sys_enter
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:long id;\toffset:8;\tsize:8;\tsigned:1;
\tfield:unsigned long args[6];\toffset:16;\tsize:48;\tsigned:0;
";

impl Host for TableHost {
    fn features(&self) -> KernelFeatures {
        self.features
    }

    fn syscall_number(&self, name: &str) -> Option<u32> {
        [
            ("write", 1),
            ("dup", 32),
            ("dup2", 33),
            ("setuid", 105),
            ("openat", 257),
        ]
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, nr)| nr)
    }

    fn tracepoint_format(&self, subsystem: &str, event: &str) -> Result<Vec<TpField>, String> {
        match (subsystem, event) {
            ("raw_syscalls", "sys_enter") => parse_format(SYS_ENTER),
            ("raw_syscalls", "sys_exit") => parse_format(SYS_EXIT),
            _ => Err("no such tracepoint".into()),
        }
    }

    fn host_namespace(&self, _kind: NamespaceKind) -> Option<u64> {
        Some(4026531836)
    }

    fn kernel_functions(&self, names: &BTreeSet<String>) -> Option<BTreeSet<String>> {
        let known = self.functions?;
        Some(
            names
                .iter()
                .filter(|n| known.contains(&n.as_str()))
                .cloned()
                .collect(),
        )
    }
}

/// Tracepoints, raw tracepoints and fanotify; no kprobes, no BPF-LSM.
pub fn no_kprobes() -> TableHost {
    TableHost {
        features: KernelFeatures {
            tracepoints: true,
            raw_tracepoints: true,
            fanotify: true,
            ..KernelFeatures::default()
        },
        functions: None,
    }
}

/// Everything.
pub fn full() -> TableHost {
    TableHost {
        features: KernelFeatures {
            tracepoints: true,
            raw_tracepoints: true,
            kprobes: true,
            fentry: true,
            lsm: true,
            fanotify: true,
        },
        functions: None,
    }
}

/// The one policy `t` with `spec` (YAML, indented for `spec:`).
pub fn policy(spec: &str) -> TracingPolicy {
    let yaml = format!(
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n{spec}"
    );
    let mut p = crate::parse_documents(&yaml, "t.yaml").expect("valid policy");
    p.remove(0)
}

/// The spec of a policy with one tracepoint hook on `raw_syscalls/<event>`
/// whose one argument is the syscall id (format field 4) and with
/// `selectors` (YAML, indented for `selectors:`).
pub fn raw_syscalls_spec(event: &str, selectors: &str) -> String {
    format!(
        "  tracepoints:
  - subsystem: raw_syscalls
    event: {event}
    args:
    - index: 4
      type: int64
{selectors}"
    )
}

/// The first hook of [`policy`]`(spec)`, compiled for [`no_kprobes`].
pub fn first_hook(spec: &str) -> CompiledHook {
    compile(&policy(spec), &no_kprobes(), CompileOptions::default())
        .expect("compiles")
        .hooks
        .remove(0)
}
