//! The VM test lane on Debian's 6.1 and 6.12 kernels: the VM boots with
//! our kernel command line, the filesystems the agent needs are mounted, a
//! dynamically linked workspace binary runs inside, environment and extra
//! files arrive, the exit status comes back, a hung command is killed at
//! its timeout, and a kernel that panics while booting is booted again.
//! Also reports what a BPF test can count on in each kernel (BTF, BPF-LSM
//! and its hooks in ftrace, kprobe events, error injection, lockdown) and
//! the boot time under TCG.
//!
//! Needs the kernels, qemu and busybox that `scripts/vm-kernels` installs
//! (`scripts/setup` runs it); fails, not skips, without them. Root is not
//! needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use palisade_tests::vm::{Kernel, Vm, VmError, BOOT_ATTEMPTS};

/// A dynamically linked Rust binary that cargo builds for this test.
const HELPER: &str = env!("CARGO_BIN_EXE_palisade-bench");

/// Checks run inside the VM, one `key=value` line each.
const CHECKS: &str = r#"
echo "release=$(uname -r)"
echo "cmdline=$(cat /proc/cmdline)"
echo "lsm=$(cat /sys/kernel/security/lsm)"
if [ -e /sys/kernel/btf/vmlinux ]; then echo btf=yes; else echo btf=no; fi
t=/sys/kernel/tracing
if [ -e $t/kprobe_events ]; then echo kprobe_events=yes; else echo kprobe_events=no; fi
echo "lsm_hooks=$(grep -c '^bpf_lsm_' $t/available_filter_functions)"
e=/sys/kernel/debug/error_injection/list
if [ -e $e ]; then echo error_injection=yes; else echo error_injection=no; fi
echo "lockdown=$(cat /sys/kernel/security/lockdown)"
echo "mounts=$(awk '{printf "%s@%s ", $3, $2}' /proc/mounts)"
echo "lo_flags=$(cat /sys/class/net/lo/flags)"
echo "env=$PALISADE_VM_CHECK"
echo "file=$(cat /etc/palisade/check.yaml)"
palisade-bench --help >/tmp/help 2>&1
echo "helper_status=$?"
echo "helper_usage=$(head -n1 /tmp/help)"
exit 7
"#;

fn kernel(found: Result<Kernel, VmError>) -> Kernel {
    found.unwrap_or_else(|e| panic!("{e}"))
}

/// Boots `kernel`, runs [`CHECKS`], asserts on the result and reports.
fn lane(kernel: &Kernel) {
    let config = kernel.config().unwrap();
    let started = Instant::now();
    let out = Vm::new(kernel)
        .binary(HELPER)
        .data("/etc/palisade/check.yaml", "kind: Check\n", 0o644)
        .env("PALISADE_VM_CHECK", "it's \"quoted\" $HOME")
        .timeout(Duration::from_secs(240))
        .run_script(CHECKS)
        .unwrap_or_else(|e| panic!("{e}"));
    let elapsed = started.elapsed();
    assert_eq!(out.status, 7, "exit status of the script:\n{}", out.console);
    let facts: BTreeMap<&str, &str> = out
        .output
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    let fact = |key: &str| {
        *facts
            .get(key)
            .unwrap_or_else(|| panic!("no {key}= in the output:\n{}", out.output))
    };

    assert_eq!(Some(fact("release")), kernel.release());
    assert!(
        fact("cmdline").contains("lsm=lockdown,capability,bpf"),
        "{}",
        fact("cmdline")
    );
    // The kernel's default list (CONFIG_LSM) starts with landlock: seeing
    // ours first shows `lsm=` took effect.
    let lsm = fact("lsm");
    assert!(lsm.starts_with("lockdown,capability"), "lsm={lsm}");
    assert_eq!(
        lsm.split(',').any(|l| l == "bpf"),
        config.is_builtin("CONFIG_BPF_LSM"),
        "lsm={lsm}"
    );
    assert_eq!(
        fact("btf") == "yes",
        config.is_builtin("CONFIG_DEBUG_INFO_BTF")
    );
    assert_eq!(
        fact("kprobe_events") == "yes",
        config.is_builtin("CONFIG_KPROBE_EVENTS")
    );
    assert_eq!(
        fact("error_injection") == "yes",
        config.is_builtin("CONFIG_FUNCTION_ERROR_INJECTION")
    );
    // BPF-LSM programs attach to the bpf_lsm_* stubs through ftrace.
    let lsm_hooks: u32 = fact("lsm_hooks").parse().unwrap();
    assert_eq!(
        lsm_hooks > 0,
        config.is_builtin("CONFIG_BPF_LSM"),
        "{lsm_hooks} bpf_lsm_* functions in available_filter_functions"
    );
    let mounts = fact("mounts");
    for m in [
        "proc@/proc",
        "sysfs@/sys",
        "devtmpfs@/dev",
        "securityfs@/sys/kernel/security",
        "tracefs@/sys/kernel/tracing",
        "debugfs@/sys/kernel/debug",
        "bpf@/sys/fs/bpf",
        "cgroup2@/sys/fs/cgroup",
        "tmpfs@/tmp",
        "tmpfs@/run",
    ] {
        assert!(mounts.split(' ').any(|x| x == m), "{m} not in {mounts}");
    }
    let lo_flags = u32::from_str_radix(fact("lo_flags").trim_start_matches("0x"), 16).unwrap();
    assert_eq!(lo_flags & 1, 1, "lo is not up: flags {lo_flags:#x}");
    assert_eq!(fact("env"), "it's \"quoted\" $HOME");
    assert_eq!(fact("file"), "kind: Check");
    assert_eq!(fact("helper_status"), "0", "{}", out.output);
    assert!(
        fact("helper_usage").starts_with("usage: palisade-bench"),
        "{}",
        out.output
    );

    eprintln!(
        "{} ({}): boot {:.1}s, qemu {:.1}s, run() {:.1}s; lsm={lsm}; btf={}; \
         {lsm_hooks} bpf_lsm_* hooks; kprobe_events={}; error_injection={}; lockdown={}; \
         CONFIG_BPF_LSM={:?} CONFIG_KPROBES={:?} CONFIG_FUNCTION_ERROR_INJECTION={:?} \
         CONFIG_BPF_KPROBE_OVERRIDE={:?}",
        kernel.name(),
        fact("release"),
        out.boot_time.as_secs_f64(),
        out.total_time.as_secs_f64(),
        elapsed.as_secs_f64(),
        fact("btf"),
        fact("kprobe_events"),
        fact("error_injection"),
        fact("lockdown"),
        config.get("CONFIG_BPF_LSM"),
        config.get("CONFIG_KPROBES"),
        config.get("CONFIG_FUNCTION_ERROR_INJECTION"),
        config.get("CONFIG_BPF_KPROBE_OVERRIDE"),
    );
}

#[test]
fn lane_debian_6_1() {
    lane(&kernel(Kernel::debian_6_1()));
}

#[test]
fn lane_debian_6_12() {
    lane(&kernel(Kernel::debian_6_12()));
}

/// A command that does not finish is killed at the timeout, with the
/// console's last lines in the error, and no qemu is left running.
#[test]
fn hung_command_killed_at_timeout() {
    let cached = kernel(Kernel::debian_6_12());
    // A kernel path unique to this test, to find its qemu by command line.
    let dir = std::env::temp_dir().join(format!("palisade-vm-timeout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(cached.image().file_name().unwrap());
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(cached.image(), &link).unwrap();
    let k = Kernel::from_image("debian-6.12", &link);

    let started = Instant::now();
    let err = Vm::new(&k)
        .timeout(Duration::from_secs(5))
        .run(&["sleep", "1000"])
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, VmError::Timeout { .. }), "{err}");
    assert!(
        elapsed < Duration::from_secs(20),
        "timed out after {elapsed:?}"
    );
    assert!(
        !qemu_running_with(&link),
        "qemu still runs after the timeout"
    );

    // Run in the VM or still booting after 5 s: either way the message says
    // which kernel and how long.
    let msg = err.to_string();
    assert!(msg.contains("debian-6.12") && msg.contains("5s"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether a process's command line mentions `path`.
fn qemu_running_with(path: &Path) -> bool {
    let needle = path.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
}

/// A guest whose kernel panics before `/init` starts the command (here:
/// `/init`'s interpreter is not an executable, so the kernel finds no
/// working init) is booted [`BOOT_ATTEMPTS`] times, then reported as a
/// boot panic with the kernel's last words.
#[test]
fn boot_panic_is_retried_then_reported() {
    let err = Vm::new(&kernel(Kernel::debian_6_12()))
        .data("/bin/busybox", "not an executable\n", 0o755)
        .timeout(Duration::from_secs(120))
        .run(&["true"])
        .unwrap_err();
    let VmError::BootPanic {
        kernel,
        attempts,
        tail,
    } = &err
    else {
        panic!("expected BootPanic, got {err}");
    };
    assert_eq!(kernel, "debian-6.12");
    assert_eq!(*attempts, BOOT_ATTEMPTS);
    assert!(tail.contains("No working init found"), "{err}");
}

/// A file qemu cannot boot makes an error carrying qemu's own complaint.
#[test]
fn unbootable_image_reports_qemu_stderr() {
    let dir = std::env::temp_dir().join(format!("palisade-vm-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("vmlinuz-not-a-kernel");
    std::fs::write(&image, b"not a kernel\n").unwrap();
    let err = Vm::new(&Kernel::from_image("bogus", &image))
        .timeout(Duration::from_secs(60))
        .run(&["true"])
        .unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    let VmError::NoExitMarker { kernel, stderr, .. } = &err else {
        panic!("expected NoExitMarker, got {err}");
    };
    assert_eq!(kernel, "bogus");
    assert!(!stderr.is_empty(), "{err}");
}
