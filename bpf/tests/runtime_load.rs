//! The runtime programs (runtime.c) that load without an attach target
//! (raw tracepoints, tracepoint) pass the verifier of the running kernel.
//! The BTF-typed ones (kprobe, LSM, fentry) are loaded against a function
//! by the agent: palisade-tests `runtime_enforcement` and `vm_runtime`
//! cover them. Needs root and bpffs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use anyhow::{anyhow, Context, Result};
use aya::programs::{RawTracePoint, TracePoint};
use aya::EbpfLoader;
use palisade_bpf::{runtime, RUNTIME_OBJECT};
use std::sync::atomic::{AtomicU32, Ordering};

/// The runtime object with its maps pinned in a directory of its own
/// (removed again), hook id 7 and `nargs` syscall arguments.
fn load_object(nargs: u32) -> Result<aya::Ebpf> {
    static LOADS: AtomicU32 = AtomicU32::new(0);
    let dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/palisade-rt-load-{}-{}",
        std::process::id(),
        LOADS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let loaded = EbpfLoader::new()
        .default_map_pin_directory(&dir)
        .override_global(runtime::HOOK_ID_GLOBAL, &7u32, true)
        .override_global(runtime::SYSCALL_NARGS_GLOBAL, &nargs, true)
        .load(RUNTIME_OBJECT);
    let _ = std::fs::remove_dir_all(&dir);
    loaded.map_err(|e| anyhow!("loading RUNTIME_OBJECT: {e:?}"))
}

#[test]
fn host_programs_pass_the_verifier() -> Result<()> {
    let mut ebpf = load_object(0)?;
    for name in [
        runtime::EXEC,
        runtime::FORK,
        runtime::EXIT,
        runtime::SYS_ENTER,
        runtime::RAW_TRACEPOINT,
    ] {
        let p: &mut RawTracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?;
        p.load()
            .map_err(|e| anyhow!("verifier rejected {name}: {e:?}"))?;
    }
    for name in [runtime::TRACEPOINT, runtime::TP_SYSCALL_IDS] {
        let p: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?;
        p.load()
            .map_err(|e| anyhow!("verifier rejected {name}: {e:?}"))?;
    }
    Ok(())
}

/// `pal_sys_tp` reads the syscall's arguments straight from the record:
/// every argument count loads, and each attaches to a syscall with that
/// many; the kernel refuses a load reading one more (the attach checks the
/// reads against the record's size), which is why there is one per count.
#[test]
fn syscall_tracepoint_program_loads_and_attaches_for_every_argument_count() -> Result<()> {
    // sync(0), close(1), dup2(2), read(3), openat(4), mount(5), pselect6(6).
    let syscalls = [
        "sync", "close", "dup2", "read", "openat", "mount", "pselect6",
    ];
    let mut loads = Vec::new();
    for nargs in 0..=6u32 {
        let mut ebpf = load_object(nargs)?;
        let p: &mut TracePoint = ebpf
            .program_mut(runtime::SYS_TP)
            .ok_or_else(|| anyhow!("no program {}", runtime::SYS_TP))?
            .try_into()?;
        p.load().map_err(|e| {
            anyhow!(
                "verifier rejected {} for {nargs} arguments: {e:?}",
                runtime::SYS_TP
            )
        })?;
        loads.push(ebpf);
    }
    for (nargs, name) in syscalls.iter().enumerate() {
        let event = format!("sys_enter_{name}");
        let p: &mut TracePoint = loads[nargs]
            .program_mut(runtime::SYS_TP)
            .ok_or_else(|| anyhow!("no program"))?
            .try_into()?;
        p.attach("syscalls", &event)
            .map_err(|e| anyhow!("attaching the {nargs}-argument load to {event}: {e:?}"))?;
        if let Some(wider) = loads.get_mut(nargs + 1) {
            let p: &mut TracePoint = wider
                .program_mut(runtime::SYS_TP)
                .ok_or_else(|| anyhow!("no program"))?
                .try_into()?;
            assert!(
                p.attach("syscalls", &event).is_err(),
                "a load reading {} arguments attached to {event}",
                nargs + 1
            );
        }
    }
    Ok(())
}
