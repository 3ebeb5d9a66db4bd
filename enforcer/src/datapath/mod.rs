//! The loaded datapath: the eBPF object, its pinned maps and the programs
//! attached to endpoint interfaces.
//!
//! Maps are pinned by name under the bpf root, so that a restarted agent
//! reuses them; programs are pinned, and every attachment is a TCX link
//! pinned under `<bpf root>/links/`, so that the programs keep enforcing the
//! last policy while no agent runs. A restarted agent replaces the program of
//! each pinned link atomically (`bpf_link_update`): there is no instant
//! without a program on an endpoint interface.

mod bpffs;
pub mod maps;

use std::io;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use palisade_bpf::{names, DATAPATH_OBJECT, OVERLAY_OBJECT};
use tracing::{debug, info, warn};

pub(crate) use bpffs::remove_pin;
pub use maps::Maps;

/// Why the datapath could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The bpf filesystem could not be mounted or a directory made on it.
    #[error("cannot prepare the bpf filesystem at {path}: {source}")]
    BpfFs {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the object.
    #[error("loading the eBPF datapath failed: {source}")]
    Load {
        /// The error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A map of the object is missing or of the wrong kind.
    #[error("datapath map {name}: {source}")]
    Map {
        /// The map.
        name: &'static str,
        /// The error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A program of the object is missing.
    #[error("the datapath object has no program {name}")]
    MissingProgram {
        /// The program.
        name: &'static str,
    },
    /// A map of the object is missing.
    #[error("the datapath object has no map {name}")]
    MissingMap {
        /// The map.
        name: &'static str,
    },
    /// Loading, pinning or attaching a program failed.
    #[error("program {name} on {target}: {source}")]
    Program {
        /// The program.
        name: &'static str,
        /// What it was being done for (an interface or a pin path).
        target: String,
        /// The error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// The kernel has no TCX links, which the datapath attaches with.
    #[error("this kernel ({kernel}) has no TCX links: endpoints need Linux 6.6 or later")]
    KernelTooOld {
        /// The running kernel.
        kernel: aya::util::KernelVersion,
    },
    /// A link pin could not be read, made or removed.
    #[error("link pin {path}: {message}")]
    LinkPin {
        /// The pin.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// The two attachment points of an endpoint interface.
const ATTACHMENTS: [(&str, TcAttachType, &str); 2] = [
    (names::FROM_ENDPOINT, TcAttachType::Ingress, "ingress"),
    (names::TO_ENDPOINT, TcAttachType::Egress, "egress"),
];

/// The two attachment points of the overlay (VXLAN) device.
const OVERLAY_ATTACHMENTS: [(&str, TcAttachType, &str); 2] = [
    (names::TO_OVERLAY, TcAttachType::Egress, "egress"),
    (names::FROM_OVERLAY, TcAttachType::Ingress, "ingress"),
];

/// The loaded datapath.
pub struct Datapath {
    ebpf: Ebpf,
    /// The overlay programs (their own object, sharing the pinned maps).
    overlay: Ebpf,
    root: PathBuf,
    /// Whether the maps existed (pinned by an earlier run) when loaded.
    pub restored: bool,
}

impl Datapath {
    /// Loads the datapath object with its maps pinned under `root` (reusing
    /// pinned maps of an earlier run) and pins its programs there.
    pub fn load(root: &Path) -> Result<(Self, Maps), DatapathError> {
        bpffs::ensure_mounted(root)?;
        let restored = root.join(names::POLICY).exists();
        bpffs::drop_incompatible_pins(root);
        // The endpoint object first: it creates (or reuses) the pinned maps,
        // which the overlay object then reuses by name.
        let mut ebpf = load_object(root, DATAPATH_OBJECT, names::PROGRAMS)?;
        let overlay = load_object(root, OVERLAY_OBJECT, names::OVERLAY_PROGRAMS)?;
        let maps = Maps::take(&mut ebpf)?;
        info!(root = %root.display(), restored, "datapath loaded");
        Ok((
            Self {
                ebpf,
                overlay,
                root: root.to_owned(),
                restored,
            },
            maps,
        ))
    }

    /// Where programs and maps are pinned.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Attaches both programs to the host side of an endpoint, replacing
    /// (atomically) whatever program a pinned link there runs.
    ///
    /// Fails on kernels without TCX links (before 6.6): the agent itself
    /// runs there (runtime enforcement needs no endpoint), but endpoints
    /// cannot be enforced.
    pub fn attach(&mut self, ifname: &str, ifindex: u32) -> Result<(), DatapathError> {
        let tcx = aya::util::KernelVersion::new(6, 6, 0);
        match aya::util::KernelVersion::current() {
            Ok(v) if v < tcx => return Err(DatapathError::KernelTooOld { kernel: v }),
            _ => {}
        }
        for (name, attach_type, suffix) in ATTACHMENTS {
            let pin = self.link_pin(ifname, suffix);
            let prog = program_mut(&mut self.ebpf, name)?;
            attach_one(prog, name, ifname, attach_type, &pin)?;
        }
        debug!(ifname, ifindex, "datapath attached");
        Ok(())
    }

    /// Attaches the overlay programs to the node's VXLAN device, replacing
    /// (atomically) whatever program a pinned link there runs.
    pub fn attach_overlay(&mut self, ifname: &str) -> Result<(), DatapathError> {
        for (name, attach_type, suffix) in OVERLAY_ATTACHMENTS {
            let pin = self.link_pin(ifname, suffix);
            let prog = program_mut(&mut self.overlay, name)?;
            attach_one(prog, name, ifname, attach_type, &pin)?;
        }
        debug!(ifname, "overlay datapath attached");
        Ok(())
    }

    /// Detaches the programs from an endpoint interface (a no-op when
    /// nothing is attached).
    pub fn detach(&mut self, ifname: &str) {
        for (_, _, suffix) in ATTACHMENTS {
            bpffs::remove_pin(&self.link_pin(ifname, suffix));
        }
        debug!(ifname, "datapath detached");
    }

    fn link_pin(&self, ifname: &str, suffix: &str) -> PathBuf {
        self.root
            .join("links")
            .join(format!("{}-{suffix}", pin_name(ifname)))
    }
}

/// Loads one object with its maps pinned under `root`, and loads and pins
/// its programs (under `root/progs`).
fn load_object(
    root: &Path,
    object: &[u8],
    programs: &[&'static str],
) -> Result<Ebpf, DatapathError> {
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(root)
        .load(object)
        .map_err(|e| DatapathError::Load {
            source: Box::new(e),
        })?;
    for name in programs {
        let prog = program_mut(&mut ebpf, name)?;
        prog.load().map_err(|e| program_error(name, "load", e))?;
        let pin = root.join("progs").join(name);
        bpffs::remove_pin(&pin);
        bpffs::mkdir(pin.parent().unwrap_or(root))?;
        prog.pin(&pin).map_err(|e| DatapathError::LinkPin {
            path: pin.clone(),
            message: error_chain(&e),
        })?;
    }
    Ok(ebpf)
}

fn program_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::MissingProgram { name })?
        .try_into()
        .map_err(|e| program_error(name, "type check", e))
}

fn program_error(
    name: &'static str,
    target: &str,
    e: aya::programs::ProgramError,
) -> DatapathError {
    DatapathError::Program {
        name,
        target: target.to_owned(),
        source: Box::new(e),
    }
}

/// Attaches `prog` through the link pinned at `pin`, or a new pinned link.
fn attach_one(
    prog: &mut SchedClassifier,
    name: &'static str,
    ifname: &str,
    attach_type: TcAttachType,
    pin: &Path,
) -> Result<(), DatapathError> {
    let pin_error = |message: String| DatapathError::LinkPin {
        path: pin.to_owned(),
        message,
    };
    let chain = |e: &dyn std::error::Error| error_chain(e);
    match PinnedLink::from_pin(pin) {
        Ok(pinned) => {
            let fd_link = FdLink::from(pinned);
            if bpffs::link_is_attached(&fd_link, ifname, attach_type) {
                let link =
                    SchedClassifierLink::try_from(fd_link).map_err(|e| pin_error(e.to_string()))?;
                let id = prog
                    .attach_to_link(link)
                    .map_err(|e| program_error(name, ifname, e))?;
                // The pin keeps the link (and the attachment) alive: the
                // handle aya keeps can go.
                drop(
                    prog.take_link(id)
                        .map_err(|e| program_error(name, ifname, e))?,
                );
                return Ok(());
            }
            warn!(pin = %pin.display(), ifname, "stale link pin (interface recreated); attaching anew");
            bpffs::remove_pin(pin);
        }
        Err(LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(pin_error(chain(&e))),
    }
    let id = prog
        .attach_with_options(
            ifname,
            attach_type,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| program_error(name, ifname, e))?;
    let link = prog
        .take_link(id)
        .map_err(|e| program_error(name, ifname, e))?;
    let fd_link = FdLink::try_from(link).map_err(|e| pin_error(e.to_string()))?;
    if let Some(dir) = pin.parent() {
        bpffs::mkdir(dir)?;
    }
    fd_link.pin(pin).map_err(|e| pin_error(chain(&e)))?;
    Ok(())
}

/// An interface name as a bpffs file name: bpffs refuses names with a dot
/// (reserved for its own files), and interface names may have one, so `%`
/// and `.` are escaped (`%25`, `%2e`), which keeps the mapping one-to-one.
fn pin_name(ifname: &str) -> String {
    ifname.replace('%', "%25").replace('.', "%2e")
}

/// An error with its sources, `outer: inner: ...`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::pin_name;

    #[test]
    fn pin_names_have_no_dots_and_do_not_collide() {
        assert_eq!(pin_name("lxc0123abcd"), "lxc0123abcd");
        assert_eq!(pin_name("eth0.100"), "eth0%2e100");
        assert_ne!(pin_name("a.b"), pin_name("a%2eb"));
        assert!(!pin_name("a.b.c").contains('.'));
    }
}
