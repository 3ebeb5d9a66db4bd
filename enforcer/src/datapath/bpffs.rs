//! The bpf filesystem: mounting it, pins, and compatibility of pinned maps.

use std::io;
use std::path::Path;

use aya::maps::MapInfo;
use aya::programs::links::FdLink;
use aya::programs::{SchedClassifier, TcAttachType};
use nix::mount::{mount, MsFlags};
use palisade_bpf::{abi, names};
use std::mem::size_of;
use tracing::{info, warn};

use super::DatapathError;

/// Makes sure the bpf filesystem is mounted at `/sys/fs/bpf` (when `root`
/// is below it) and that `root` exists.
pub(super) fn ensure_mounted(root: &Path) -> Result<(), DatapathError> {
    let base = Path::new("/sys/fs/bpf");
    if root.starts_with(base) && !is_bpffs(base) {
        info!("mounting the bpf filesystem at /sys/fs/bpf");
        mount(
            Some("bpf"),
            base,
            Some("bpf"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0700"),
        )
        .map_err(|e| DatapathError::BpfFs {
            path: base.to_owned(),
            source: io::Error::from(e),
        })?;
    }
    mkdir(root)
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Creates a directory (and its parents) on the bpf filesystem.
pub(super) fn mkdir(path: &Path) -> Result<(), DatapathError> {
    std::fs::create_dir_all(path).map_err(|source| DatapathError::BpfFs {
        path: path.to_owned(),
        source,
    })
}

/// Removes a pin; a missing pin is fine, other failures are logged.
pub(crate) fn remove_pin(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => warn!(path = %path.display(), error = %e, "cannot remove pin"),
    }
}

/// Whether the program of a pinned link is attached to `ifname` now (a link
/// whose interface was deleted is defunct, even if a new interface has the
/// same name).
pub(super) fn link_is_attached(link: &FdLink, ifname: &str, attach_type: TcAttachType) -> bool {
    let Ok(info) = link.info() else {
        return false;
    };
    match SchedClassifier::query_tcx(ifname, attach_type) {
        Ok((_, programs)) => programs.iter().any(|p| p.id() == info.program_id()),
        Err(_) => false,
    }
}

/// Removes pinned maps whose key or value size differs from this build's
/// ABI (an upgrade that changed a layout): the loader then creates them
/// anew instead of failing, and the agent refills them from its state.
pub(super) fn drop_incompatible_pins(root: &Path) {
    for (name, key, value) in map_layouts() {
        let pin = root.join(name);
        let Ok(info) = MapInfo::from_pin(&pin) else {
            continue;
        };
        let size_differs = name == names::METRICS && info.max_entries() != metrics_entries();
        if (info.key_size(), info.value_size()) != (key, value) || size_differs {
            warn!(
                map = name,
                pinned_key = info.key_size(),
                pinned_value = info.value_size(),
                pinned_entries = info.max_entries(),
                key,
                value,
                "pinned map has another layout than this agent; replacing it"
            );
            remove_pin(&pin);
        }
    }
}

/// Entries of `pal_metrics`, whose index layout is ABI too.
fn metrics_entries() -> u32 {
    abi::REASON_MAX * u32::from(abi::OBS_MAX)
}

/// Key and value size of every map with a fixed layout.
fn map_layouts() -> [(&'static str, u32, u32); 9] {
    fn size<T>() -> u32 {
        u32::try_from(size_of::<T>()).unwrap_or(u32::MAX)
    }
    [
        (
            names::ENDPOINTS,
            size::<abi::EndpointKey>(),
            size::<abi::EndpointInfo>(),
        ),
        (
            names::IPCACHE,
            size::<abi::IpcacheKey>(),
            size::<abi::IpcacheValue>(),
        ),
        (
            names::TUNNEL,
            size::<abi::IpcacheKey>(),
            size::<abi::TunnelValue>(),
        ),
        (
            names::POLICY,
            size::<abi::PolicyKey>(),
            size::<abi::PolicyValue>(),
        ),
        (names::CT, size::<abi::CtKey>(), size::<abi::CtValue>()),
        (
            names::FRAG,
            size::<abi::FragKey>(),
            size::<abi::FragValue>(),
        ),
        (names::STATE, size::<u32>(), size::<abi::State>()),
        (names::METRICS, size::<u32>(), size::<abi::MetricsValue>()),
        (names::COUNTERS, size::<u32>(), size::<u64>()),
    ]
}
