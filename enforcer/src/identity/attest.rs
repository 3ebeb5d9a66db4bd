//! Workload attestation: which endpoint a Workload API caller belongs to.
//!
//! The kernel tells who is on the other end of the socket (`SO_PEERCRED`,
//! and `SO_PEERPIDFD`, a handle on that very process). From the process the
//! agent reads two facts in `/proc/<pid>`:
//! - its network namespace (`ns/net`, device and inode): every container of
//!   a pod shares the pod's namespace, which the CNI plugin registered with
//!   the endpoint; a process cannot enter another pod's namespace without
//!   `CAP_SYS_ADMIN` over it;
//! - its cgroup (`cgroup`): container runtimes put a container's id in its
//!   cgroup path (`cri-containerd-<id>.scope`, `docker-<id>.scope`, ...).
//!
//! The caller is the endpoint both facts agree on. A process whose cgroup
//! names one endpoint's container while it sits in another's namespace is
//! refused. After reading `/proc`, the pidfd is checked again: if the
//! process exited meanwhile (and its pid could have been reused), the
//! caller is refused.

use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use palisade_identity::SpiffeId;

/// An endpoint as attestation and issuance see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedEndpoint {
    /// Endpoint id.
    pub ep_id: u16,
    /// The container runtime's id.
    pub container_id: String,
    /// `namespace/name` of the pod, for logs.
    pub pod: String,
    /// Device and inode of its network namespace, if it still exists.
    pub netns: Option<(u64, u64)>,
    /// Its workload SPIFFE ID (`/ns/<ns>/sa/<sa>`).
    pub workload_id: Option<SpiffeId>,
    /// The SPIFFE ID of its security identity (`/identity/<n>`).
    pub identity_id: Option<SpiffeId>,
}

/// What `/proc` says of a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerFacts {
    /// Its pid.
    pub pid: i32,
    /// Device and inode of its network namespace.
    pub netns: (u64, u64),
    /// Its cgroup v2 path.
    pub cgroup: String,
}

/// An attested caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// The endpoint it belongs to.
    pub ep_id: u16,
    /// `namespace/name` of the pod.
    pub pod: String,
}

/// Why a caller could not be attested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// `/proc/<pid>` could not be read.
    #[error("cannot read /proc/{pid}: {reason}")]
    Proc {
        /// The pid.
        pid: i32,
        /// Why.
        reason: String,
    },
    /// The process exited while it was being looked at.
    #[error("process {pid} exited during attestation")]
    Exited {
        /// The pid.
        pid: i32,
    },
    /// No endpoint of this node matches.
    #[error("process {pid} belongs to no endpoint of this node")]
    Unknown {
        /// The pid.
        pid: i32,
    },
    /// The cgroup and the network namespace name different endpoints.
    #[error("process {pid} is in the cgroup of endpoint {cgroup_ep} but the network namespace of endpoint {netns_ep}")]
    Conflict {
        /// The pid.
        pid: i32,
        /// The endpoint its cgroup names.
        cgroup_ep: u16,
        /// The endpoint whose namespace it is in.
        netns_ep: u16,
    },
}

/// Device and inode of a network namespace file (`/proc/<pid>/ns/net`,
/// `/var/run/netns/<name>`).
pub fn netns_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Reads a caller's facts; with a pidfd, checks afterwards that the
/// process is still the one that connected.
pub fn read_caller(pid: i32, pidfd: Option<BorrowedFd<'_>>) -> Result<CallerFacts, AttestError> {
    let proc_err = |reason: String| AttestError::Proc { pid, reason };
    let base = Path::new("/proc").join(pid.to_string());
    let netns = netns_id(&base.join("ns/net"))
        .ok_or_else(|| proc_err("ns/net is not readable".to_owned()))?;
    let cgroup_text = std::fs::read_to_string(base.join("cgroup"))
        .map_err(|e| proc_err(format!("cgroup: {e}")))?;
    let cgroup = cgroup_text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("")
        .to_owned();
    if let Some(fd) = pidfd {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
            .map_err(|e| proc_err(format!("pidfd: {e}")))?;
        let live = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .and_then(|v| v.trim().parse::<i32>().ok());
        if live != Some(pid) {
            return Err(AttestError::Exited { pid });
        }
    }
    Ok(CallerFacts { pid, netns, cgroup })
}

/// The endpoint a caller belongs to.
pub fn match_endpoint(
    facts: &CallerFacts,
    endpoints: &[HostedEndpoint],
) -> Result<Attested, AttestError> {
    let by_netns = endpoints.iter().find(|e| e.netns == Some(facts.netns));
    let by_cgroup = endpoints
        .iter()
        .find(|e| cgroup_names_container(&facts.cgroup, &e.container_id));
    let found = match (by_netns, by_cgroup) {
        (Some(n), Some(c)) if n.ep_id != c.ep_id => {
            return Err(AttestError::Conflict {
                pid: facts.pid,
                cgroup_ep: c.ep_id,
                netns_ep: n.ep_id,
            })
        }
        // The cgroup alone is not enough: the endpoint's namespace must be
        // the caller's (a container sharing the host's network is not the
        // pod's workload).
        (Some(n), _) => n,
        (None, _) => return Err(AttestError::Unknown { pid: facts.pid }),
    };
    Ok(Attested {
        ep_id: found.ep_id,
        pod: found.pod.clone(),
    })
}

/// Whether a cgroup path names a container: the id is a whole path
/// component or the id part of one (`<runtime>-<id>.scope`, `<runtime>-<id>`).
fn cgroup_names_container(cgroup: &str, container_id: &str) -> bool {
    if container_id.len() < 12 {
        return false;
    }
    cgroup.split('/').any(|component| {
        let stem = component.strip_suffix(".scope").unwrap_or(component);
        stem == container_id
            || stem
                .rsplit_once('-')
                .is_some_and(|(_, id)| id == container_id)
            || stem
                .rsplit_once(':')
                .is_some_and(|(_, id)| id == container_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID_A: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ID_B: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn ep(ep_id: u16, container_id: &str, netns: (u64, u64)) -> HostedEndpoint {
        HostedEndpoint {
            ep_id,
            container_id: container_id.to_owned(),
            pod: format!("default/pod-{ep_id}"),
            netns: Some(netns),
            workload_id: None,
            identity_id: None,
        }
    }

    fn caller(netns: (u64, u64), cgroup: &str) -> CallerFacts {
        CallerFacts {
            pid: 42,
            netns,
            cgroup: cgroup.to_owned(),
        }
    }

    #[test]
    fn the_namespace_decides() {
        let eps = [ep(1, ID_A, (4, 100)), ep(2, ID_B, (4, 200))];
        let who = match_endpoint(&caller((4, 200), "/user.slice/session-1.scope"), &eps).unwrap();
        assert_eq!(who.ep_id, 2);
        assert_eq!(
            match_endpoint(&caller((4, 300), "/"), &eps),
            Err(AttestError::Unknown { pid: 42 })
        );
    }

    #[test]
    fn a_cgroup_of_another_endpoint_is_a_conflict() {
        let eps = [ep(1, ID_A, (4, 100)), ep(2, ID_B, (4, 200))];
        let cgroup = format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID_A}.scope");
        assert_eq!(
            match_endpoint(&caller((4, 200), &cgroup), &eps),
            Err(AttestError::Conflict {
                pid: 42,
                cgroup_ep: 1,
                netns_ep: 2
            })
        );
        assert_eq!(
            match_endpoint(&caller((4, 100), &cgroup), &eps)
                .unwrap()
                .ep_id,
            1
        );
        assert_eq!(
            match_endpoint(&caller((4, 300), &cgroup), &eps),
            Err(AttestError::Unknown { pid: 42 }),
            "the cgroup alone is not enough"
        );
    }

    #[test]
    fn container_ids_in_runtime_cgroup_layouts() {
        for path in [
            format!("/system.slice/docker-{ID_A}.scope"),
            format!("/kubepods/besteffort/pod1/{ID_A}"),
            format!("/kubepods.slice/crio-{ID_A}.scope"),
            format!("/system.slice/containerd.service/kubepods-pod1.slice:cri-containerd:{ID_A}"),
        ] {
            assert!(cgroup_names_container(&path, ID_A), "{path}");
            assert!(!cgroup_names_container(&path, ID_B), "{path}");
        }
        assert!(!cgroup_names_container("/a/short", "short"));
    }

    #[test]
    fn reads_this_process() {
        let me = i32::try_from(std::process::id()).unwrap();
        let facts = read_caller(me, None).unwrap();
        assert_eq!(Some(facts.netns), netns_id(Path::new("/proc/self/ns/net")));
        assert!(facts.cgroup.starts_with('/'));
    }
}
