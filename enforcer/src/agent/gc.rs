//! Connection-tracking housekeeping.

use std::net::Ipv4Addr;

use palisade_bpf::abi::CT_CLOSING;
use tracing::debug;

use super::{Agent, AgentError};
use crate::util::monotonic_ns;

const SEC: u64 = 1_000_000_000;
/// Idle time after which an established TCP connection is forgotten.
pub const TCP_TIMEOUT_NS: u64 = 6 * 3600 * SEC;
/// Idle time after which a TCP connection that saw FIN or RST is forgotten.
pub const TCP_CLOSING_TIMEOUT_NS: u64 = 10 * SEC;
/// Idle time after which any other flow is forgotten.
pub const OTHER_TIMEOUT_NS: u64 = 60 * SEC;

const IPPROTO_TCP: u8 = 6;

impl Agent {
    /// Removes idle connection-tracking entries; returns how many.
    pub fn gc_conntrack(&mut self) -> Result<usize, AgentError> {
        let now = monotonic_ns();
        let mut removed = 0;
        for (key, value) in self.maps.ct.entries() {
            let timeout = match (key.protocol, value.flags & CT_CLOSING != 0) {
                (IPPROTO_TCP, true) => TCP_CLOSING_TIMEOUT_NS,
                (IPPROTO_TCP, false) => TCP_TIMEOUT_NS,
                _ => OTHER_TIMEOUT_NS,
            };
            if now.saturating_sub(value.last_seen_ns) > timeout {
                self.maps.ct.remove(&key)?;
                removed += 1;
            }
        }
        if removed > 0 {
            debug!(removed, "conntrack entries expired");
        }
        Ok(removed)
    }

    /// Removes every connection-tracking entry of an address (its endpoint
    /// is gone; a new endpoint that gets the address must not inherit them).
    pub(super) fn flush_conntrack(&mut self, ip: Ipv4Addr) -> Result<(), AgentError> {
        for (key, _) in self.maps.ct.entries() {
            if key.saddr() == ip || key.daddr() == ip {
                self.maps.ct.remove(&key)?;
            }
        }
        Ok(())
    }
}
