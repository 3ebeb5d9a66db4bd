//! Parses every file of the shared Tetragon conformance corpus and checks an
//! explicit expected outcome per file; a file added to or removed from the
//! corpus fails the test until this table is updated.
#![allow(clippy::expect_used)]

mod common;

use palisade_tracing_policies::{parse_documents, requirements, Requirement as R};

/// Expected outcome: `Ok(requirements)` or `Err(substring of the error)`.
type Expect = Result<&'static [R], &'static str>;

const UPROBE: Expect = Err("spec.uprobes: uprobes are not supported");
const USDT: Expect = Err("spec.usdts: usdts are not supported");

const TABLE: &[(&str, Expect)] = &[
    ("bpf.yaml", Ok(&[R::Kprobe])),
    (
        "cves__cve-2023-2640-overlayfs-ubuntu.yaml",
        Ok(&[R::Kprobe, R::Kretprobe, R::Override]),
    ),
    (
        "cves__cve-2024-3094-xz-ssh.yaml",
        Ok(&[R::Kprobe, R::Kretprobe]),
    ),
    ("datagram-with-selectors.yaml", Ok(&[R::Kprobe])),
    (
        "datagram-with-sock-tracking.yaml",
        Ok(&[R::Kprobe, R::Kretprobe, R::SockTracking]),
    ),
    ("datagram.yaml", Ok(&[R::Kprobe])),
    (
        "datagram_518.yaml",
        Ok(&[R::Kprobe, R::Kretprobe, R::SockTracking]),
    ),
    ("dev_hard_start_xmit.yaml", Ok(&[R::Kprobe])),
    ("dev_queue_xmit.yaml", Ok(&[R::Kprobe])),
    (
        "dns-only-specified-servers.yaml",
        Ok(&[R::Kprobe, R::Signal]),
    ),
    ("fd_install_cap_changes.yaml", Ok(&[R::Kprobe])),
    ("fd_install_caps.yaml", Ok(&[R::Kprobe])),
    ("fd_install_ns.yaml", Ok(&[R::Kprobe])),
    ("fd_install_ns_host.yaml", Ok(&[R::Kprobe])),
    ("filename_monitoring.yaml", Ok(&[R::Kprobe, R::Kretprobe])),
    (
        "filename_monitoring_filtered.yaml",
        Ok(&[R::Kprobe, R::Kretprobe]),
    ),
    ("hardlink-observe.yaml", Ok(&[R::Kprobe, R::SyscallKprobe])),
    (
        "hardlink-override.yaml",
        Ok(&[R::Kprobe, R::SyscallKprobe, R::Override]),
    ),
    (
        "host-changes__monitor-kernel-modules.yaml",
        Ok(&[R::Kprobe, R::Kretprobe]),
    ),
    (
        "host-changes__monitor-signed-kernel-modules.yaml",
        Ok(&[R::Kprobe, R::Kretprobe]),
    ),
    ("killer.yaml", Ok(&[R::Tracepoint, R::Enforcer])),
    ("kprobe_commit_creds.yaml", Ok(&[R::Kprobe])),
    (
        "list-generated-ftrace.yaml",
        Ok(&[R::Kprobe, R::KprobeMulti]),
    ),
    (
        "list-syscalls-generated.yaml",
        Ok(&[R::Kprobe, R::KprobeMulti]),
    ),
    ("list-syscalls-tracepoint.yaml", Ok(&[R::Tracepoint])),
    ("list-syscalls.yaml", Ok(&[R::Kprobe, R::KprobeMulti])),
    ("loader.yaml", Ok(&[R::Loader])),
    (
        "lsm_bprm_check.yaml",
        Ok(&[R::Lsm, R::Override, R::ImaHash]),
    ),
    ("lsm_file_open.yaml", Ok(&[R::Lsm])),
    (
        "modules-nohost.yaml",
        Ok(&[
            R::Kprobe,
            R::Kretprobe,
            R::Override,
            R::Signal,
            R::WorkloadSelector,
        ]),
    ),
    ("open_dnsrequest.yaml", Ok(&[R::Kprobe, R::ExternalAction])),
    ("open_geturl.yaml", Ok(&[R::Kprobe, R::ExternalAction])),
    (
        "openat_write.yaml",
        Ok(&[R::Kprobe, R::SyscallKprobe, R::Kretprobe]),
    ),
    ("override-security.yaml", Ok(&[R::Kprobe, R::Override])),
    (
        "process-credentials__creds-capability-usage.yaml",
        Ok(&[R::Kprobe, R::Kretprobe]),
    ),
    (
        "process-credentials__process-creds-changed.yaml",
        Ok(&[R::Kprobe]),
    ),
    (
        "process-credentials__process-creds-installed.yaml",
        Ok(&[R::Kprobe]),
    ),
    (
        "process-credentials__process.credentials.changes.at.syscalls.yaml",
        Ok(&[R::Kprobe, R::SyscallKprobe]),
    ),
    (
        "process-exec__process-exec-elf-begin.yaml",
        Ok(&[R::Kprobe]),
    ),
    ("raw_syscalls.yaml", Ok(&[R::Tracepoint])),
    ("rawtp.yaml", Ok(&[R::RawTracepoint])),
    (
        "sandbox__linux-namespaces__kill_unprivileged_user_namespace.yaml",
        Ok(&[R::Kprobe, R::Signal]),
    ),
    (
        "sandbox__linux-namespaces__kill_unprivileged_user_namespace_in_pid_namespace.yaml",
        Ok(&[R::Kprobe, R::Signal]),
    ),
    (
        "security-socket-connect-block-others.yaml",
        Ok(&[R::Kprobe, R::Override]),
    ),
    ("security-socket-connect.yaml", Ok(&[R::Kprobe])),
    ("security_bprm_check.yaml", Ok(&[R::Kprobe])),
    ("security_inode_follow_link.yaml", Ok(&[R::Kprobe])),
    ("stack_traces.yaml", Ok(&[R::Kprobe, R::StackTrace])),
    ("symlink-observe.yaml", Ok(&[R::Kprobe, R::SyscallKprobe])),
    (
        "symlink-override.yaml",
        Ok(&[R::Kprobe, R::SyscallKprobe, R::Override]),
    ),
    ("sys_clock_settime.yaml", Ok(&[R::Kprobe, R::SyscallKprobe])),
    ("sys_mount.yaml", Ok(&[R::Kprobe, R::SyscallKprobe])),
    ("sys_pivot_root.yaml", Ok(&[R::Kprobe, R::SyscallKprobe])),
    ("sys_ptrace.yaml", Ok(&[R::Kprobe, R::SyscallKprobe])),
    ("sys_setuid.yaml", Ok(&[R::Kprobe, R::SyscallKprobe])),
    (
        "tcp-accept.yaml",
        Ok(&[R::Kprobe, R::Kretprobe, R::SockTracking]),
    ),
    (
        "tcp-connect-only-local-addrs.yaml",
        Ok(&[R::Kprobe, R::Signal]),
    ),
    (
        "tcp-connect-only-private-addrs.yaml",
        Ok(&[R::Kprobe, R::Signal]),
    ),
    ("tcp-connect-with-selectors.yaml", Ok(&[R::Kprobe])),
    ("tcp-connect.yaml", Ok(&[R::Kprobe])),
    (
        "tcp-listen.yaml",
        Ok(&[R::Kprobe, R::Kretprobe, R::SockTracking]),
    ),
    ("tty.yaml", Ok(&[R::Kprobe])),
    ("tty_54.yaml", Ok(&[R::Kprobe])),
    ("uprobe-binaries.yaml", UPROBE),
    ("uprobe-host.yaml", UPROBE),
    ("uprobe-pid.yaml", UPROBE),
    ("uprobe.yaml", UPROBE),
    ("usdt-set.yaml", USDT),
    ("usdt.yaml", USDT),
    ("write.yaml", Ok(&[R::Kprobe, R::SyscallKprobe])),
];

#[test]
fn every_corpus_file_has_its_expected_outcome() {
    let Some(files) = common::corpus("every_corpus_file_has_its_expected_outcome") else {
        return;
    };
    let listed: Vec<&str> = TABLE.iter().map(|(n, _)| *n).collect();
    let present: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for n in &present {
        assert!(
            listed.contains(n),
            "{n} is in the corpus but not in TABLE; add it"
        );
    }
    for n in &listed {
        assert!(
            present.contains(n),
            "{n} is in TABLE but not in the corpus; remove it"
        );
    }
    assert_eq!(TABLE.len(), common::CORPUS_FILES);
    for (name, text) in &files {
        let expect = TABLE
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e)
            .expect("listed");
        let got = parse_documents(text, name);
        match (expect, got) {
            (Ok(reqs), Ok(policies)) => {
                assert_eq!(policies.len(), 1, "{name}");
                assert_eq!(requirements(&policies[0]), *reqs, "{name}: requirements");
            }
            (Err(sub), Err(e)) => {
                let msg = e.to_string();
                assert!(msg.contains(sub), "{name}: error {msg:?} lacks {sub:?}");
                assert!(
                    msg.starts_with(name.as_str()),
                    "{name}: error must name the file: {msg}"
                );
            }
            (Ok(_), Err(e)) => panic!("{name}: expected Ok, got {e}"),
            (Err(sub), Ok(_)) => panic!("{name}: expected an error containing {sub:?}, got Ok"),
        }
    }
}

#[test]
fn accepted_corpus_files_round_trip() {
    let Some(files) = common::corpus("accepted_corpus_files_round_trip") else {
        return;
    };
    for (name, text) in &files {
        let Ok(policies) = parse_documents(text, name) else {
            continue;
        };
        let yaml = serde_yaml::to_string(&policies[0]).expect("serialize");
        let again = parse_documents(&yaml, name).unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
        assert_eq!(again, policies, "{name}: YAML round trip");
        let json = serde_json::to_string(&policies[0]).expect("json");
        let back: palisade_tracing_policies::TracingPolicy =
            serde_json::from_str(&json).expect("json back");
        assert_eq!(back, policies[0], "{name}: JSON round trip");
    }
}
