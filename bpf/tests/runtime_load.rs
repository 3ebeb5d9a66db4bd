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

#[test]
fn host_programs_pass_the_verifier() -> Result<()> {
    let dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/palisade-rt-load-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let loaded = EbpfLoader::new()
        .default_map_pin_directory(&dir)
        .override_global(runtime::HOOK_ID_GLOBAL, &7u32, true)
        .load(RUNTIME_OBJECT);
    let _ = std::fs::remove_dir_all(&dir);
    let mut ebpf = loaded.map_err(|e| anyhow!("loading RUNTIME_OBJECT: {e:?}"))?;
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
    let p: &mut TracePoint = ebpf
        .program_mut(runtime::TRACEPOINT)
        .ok_or_else(|| anyhow!("no tracepoint program"))?
        .try_into()?;
    p.load()
        .map_err(|e| anyhow!("verifier rejected tracepoint: {e:?}"))?;
    Ok(())
}
