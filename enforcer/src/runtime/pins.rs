//! Generations of pinned runtime enforcement under `<bpf_root>/runtime`.
//!
//! Every agent start loads a new generation, `g<N>/`: its maps, and the
//! links of its programs under `g<N>/links/`. The links are pinned, so the
//! kernel keeps enforcing while no agent runs (a crash, an upgrade). A
//! starting agent attaches its own generation, applies its policies, and
//! only then retires the older ones ([`retire_except`]): removing a link's
//! last pin detaches its program. Between the two, both generations
//! enforce (a forbidden call may be signalled twice); there is no instant
//! with neither.

use std::io;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::datapath::remove_pin;

/// The directory of a generation's link pins.
pub const LINKS: &str = "links";

/// The generation number of a directory name (`g12` -> 12).
fn generation(name: &str) -> Option<u64> {
    name.strip_prefix('g')?.parse().ok()
}

/// The directory of the next generation under `root` (one past the
/// highest present; `g1` in an empty root).
pub fn next_generation(root: &Path) -> io::Result<PathBuf> {
    let mut highest = 0;
    match std::fs::read_dir(root) {
        Ok(entries) => {
            for e in entries.flatten() {
                if let Some(n) = e.file_name().to_str().and_then(generation) {
                    highest = highest.max(n);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(root.join(format!("g{}", highest + 1)))
}

/// Removes everything under `root` but `keep`: link pins first (which
/// detaches their programs), then the map pins. Returns how many
/// generations were retired. Failures are logged; what could not be
/// removed stays (and keeps enforcing).
pub fn retire_except(root: &Path, keep: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut retired = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path == keep {
            continue;
        }
        if path.is_dir() {
            remove_generation(&path);
            retired += 1;
        } else if let Err(err) = std::fs::remove_file(&path) {
            // Maps pinned directly under `root` by agents before
            // generations existed.
            warn!(path = %path.display(), error = %err, "cannot remove an old runtime pin");
        }
    }
    if retired > 0 {
        info!(retired, "older runtime enforcement generations retired");
    }
    retired
}

/// Removes one generation: its links first, then everything else.
pub fn remove_generation(dir: &Path) {
    let links = dir.join(LINKS);
    if let Ok(entries) = std::fs::read_dir(&links) {
        for e in entries.flatten() {
            remove_pin(&e.path());
        }
    }
    if let Err(err) = std::fs::remove_dir_all(dir) {
        warn!(path = %dir.display(), error = %err, "cannot remove a runtime generation");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_count_up_and_retire_the_rest() {
        let root = std::env::temp_dir().join(format!("palisade-pins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(next_generation(&root).unwrap(), root.join("g1"));
        for d in ["g1/links", "g9/links", "junk"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("g9/links/hook-1"), "").unwrap();
        std::fs::write(root.join("pal_procs"), "").unwrap();
        let next = next_generation(&root).unwrap();
        assert_eq!(next, root.join("g10"));
        std::fs::create_dir_all(&next).unwrap();
        assert_eq!(retire_except(&root, &next), 3);
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["g10"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn generation_names() {
        assert_eq!(generation("g3"), Some(3));
        assert_eq!(generation("links"), None);
        assert_eq!(generation("g"), None);
    }
}
