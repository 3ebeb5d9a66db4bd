//! A private network namespace for the current test thread, for tests that
//! need interfaces besides loopback.

use std::process::Command;

use anyhow::{anyhow, Context, Result};

/// Moves the calling thread into a new network namespace (it dies with the
/// thread; libtest runs every test on its own thread) and creates two dummy
/// interfaces there. Returns their ifindexes, or None if that is not possible.
pub fn two_dummies() -> Result<Option<(u32, u32)>> {
    // SAFETY: unshare(2) takes no pointers; CLONE_NEWNET only changes the
    // network namespace of this thread, which nothing else relies on.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        return Ok(None);
    }
    let mut out = Vec::new();
    for name in ["pal-test-a", "pal-test-b"] {
        // Children forked from this thread inherit its network namespace.
        let st = Command::new("ip")
            .args([
                "link",
                "add",
                name,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{name}-p"),
            ])
            .status();
        if !matches!(st, Ok(s) if s.success()) {
            return Ok(None);
        }
        let o = Command::new("ip")
            .args(["-o", "link", "show", name])
            .output()
            .context("ip link show")?;
        let text = String::from_utf8_lossy(&o.stdout);
        let idx = text
            .split(':')
            .next()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .ok_or_else(|| anyhow!("cannot parse ifindex from {text:?}"))?;
        out.push(idx);
    }
    Ok(Some((out[0], out[1])))
}
