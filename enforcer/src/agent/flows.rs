//! Flow events: read from the datapath's ring buffer, described with
//! endpoint and rule names, kept in a bounded buffer, streamed to followers
//! and optionally appended to a JSON-lines log.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use aya::maps::{MapData, RingBuf};
use palisade_api::{FlowKind, FlowPeer, FlowRecord};
use palisade_bpf::abi::{
    Event, Reason, EVENT_AUDIT, EVENT_DROP, OBS_FROM_OVERLAY, OBS_TO_ENDPOINT,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;
use tracing::{error, warn};

use super::Agent;
use crate::util::{rfc3339, wall_time_of};

/// Events taken from the ring buffer per lock of the agent.
const BATCH: usize = 512;

struct Inner {
    buf: VecDeque<FlowRecord>,
    next_seq: u64,
    log: Option<BufWriter<File>>,
    /// Events decoded badly (an ABI mismatch would show here).
    undecodable: u64,
}

/// The recent flow events, and the channel to their followers.
pub struct FlowStore {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<FlowRecord>,
    capacity: usize,
}

impl FlowStore {
    /// A store keeping `capacity` events, appending to `log` if given.
    pub fn new(capacity: usize, log: Option<&Path>) -> std::io::Result<Arc<Self>> {
        let log = match log {
            Some(p) => Some(BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        let (tx, _) = broadcast::channel(4096);
        Ok(Arc::new(Self {
            inner: Mutex::new(Inner {
                buf: VecDeque::with_capacity(capacity.min(65536)),
                next_seq: first_seq(),
                log,
                undecodable: 0,
            }),
            tx,
            capacity,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds events (their sequence numbers are assigned here).
    pub fn push(&self, records: Vec<FlowRecord>) {
        let mut inner = self.lock();
        for mut r in records {
            r.seq = inner.next_seq;
            inner.next_seq += 1;
            if let Some(log) = inner.log.as_mut() {
                let line = serde_json::to_string(&r).unwrap_or_default();
                if let Err(e) = writeln!(log, "{line}") {
                    warn!(error = %e, "flow log write failed; disabling the flow log");
                    inner.log = None;
                }
            }
            if inner.buf.len() == self.capacity {
                inner.buf.pop_front();
            }
            inner.buf.push_back(r.clone());
            // No follower is not an error.
            let _ = self.tx.send(r);
        }
        if let Some(log) = inner.log.as_mut() {
            let _ = log.flush();
        }
    }

    /// Recent events after `since`, of the given kinds (all if empty), the
    /// newest `limit`.
    pub fn recent(
        &self,
        since: Option<u64>,
        limit: Option<usize>,
        kinds: &[FlowKind],
    ) -> Vec<FlowRecord> {
        let inner = self.lock();
        let mut out: Vec<FlowRecord> = inner
            .buf
            .iter()
            .filter(|r| since.is_none_or(|s| r.seq > s))
            .filter(|r| kinds.is_empty() || kinds.contains(&r.kind))
            .cloned()
            .collect();
        if let Some(limit) = limit {
            let skip = out.len().saturating_sub(limit);
            out.drain(..skip);
        }
        out
    }

    /// A receiver of every new event.
    pub fn subscribe(&self) -> broadcast::Receiver<FlowRecord> {
        self.tx.subscribe()
    }

    fn count_undecodable(&self) {
        self.lock().undecodable += 1;
    }
}

/// The first sequence number of this agent run: microseconds since the Unix
/// epoch, so that sequence numbers keep increasing across agent restarts
/// (a client asking for events "since N" never gets older ones again).
fn first_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .max(1)
}

/// Reads the ring buffer until the agent stops.
pub async fn run_reader(ring: RingBuf<MapData>, agent: Arc<Mutex<Agent>>, store: Arc<FlowStore>) {
    // `AsyncFd::new` is deprecated for fds the value does not own; the ring
    // buffer owns its map fd and AsyncFd owns the ring buffer, so the fd
    // outlives its registration.
    #[allow(deprecated)]
    let fd = AsyncFd::new(ring);
    let auth = agent.lock().unwrap_or_else(PoisonError::into_inner).auth();
    let mut fd = match fd {
        Ok(fd) => fd,
        Err(e) => {
            error!(error = %e, "cannot poll the event ring buffer; no flow events");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                error!(error = %e, "event ring buffer poll failed; no flow events");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        let mut events = Vec::with_capacity(BATCH);
        let mut drained = true;
        while let Some(item) = ring.next() {
            match Event::from_bytes(&item) {
                Ok(ev) => events.push(ev),
                Err(_) => store.count_undecodable(),
            }
            if events.len() == BATCH {
                drained = false;
                break;
            }
        }
        if drained {
            guard.clear_ready();
        }
        if events.is_empty() {
            continue;
        }
        if let Some(auth) = &auth {
            for key in events
                .iter()
                .filter(|e| e.reason == Reason::AuthRequired.code())
                .filter_map(Event::auth_key)
            {
                auth.signal(key);
            }
        }
        let records: Vec<FlowRecord> = {
            let agent = agent.lock().unwrap_or_else(PoisonError::into_inner);
            events.iter().map(|e| agent.describe(e)).collect()
        };
        store.push(records);
    }
}

fn protocol_name(p: u8) -> String {
    match p {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        132 => "sctp".to_owned(),
        n => n.to_string(),
    }
}

impl Agent {
    /// A flow record for a datapath event (sequence number 0).
    pub fn describe(&self, ev: &Event) -> FlowRecord {
        let kind = match ev.r#type {
            EVENT_DROP => FlowKind::Drop,
            EVENT_AUDIT => FlowKind::Audit,
            _ => FlowKind::Flow,
        };
        let peer = |ip, port: u16, identity: u32| FlowPeer {
            ip,
            port,
            identity,
            name: self
                .endpoint_name_by_ip(ip)
                .or_else(|| self.identity_name(identity)),
        };
        let reason = Reason::from_code(ev.reason);
        let auth = ev.auth_key();
        FlowRecord {
            seq: 0,
            time: rfc3339(wall_time_of(ev.timestamp_ns)),
            kind,
            reason: reason.map_or_else(
                || format!("reason_{}", ev.reason),
                |r| r.as_str().to_owned(),
            ),
            reason_code: ev.reason,
            direction: if matches!(ev.observation, OBS_TO_ENDPOINT | OBS_FROM_OVERLAY) {
                "ingress".to_owned()
            } else {
                "egress".to_owned()
            },
            protocol: protocol_name(ev.protocol),
            ethertype: ev.ethertype(),
            src: peer(ev.saddr(), ev.sport(), ev.src_identity),
            dst: peer(ev.daddr(), ev.dport(), ev.dst_identity),
            ep_id: ev.ep_id,
            rule: (ev.rule_id != 0)
                .then(|| self.engine.rule(ev.rule_id).map(describe_rule))
                .flatten(),
            auth: auth.map(|k| crate::auth::table::auth_type_name(k.auth_type).to_owned()),
            auth_node: auth.and_then(|k| {
                if k.node_known() {
                    k.remote_node().map(|a| a.to_string())
                } else {
                    Some("unknown".to_owned())
                }
            }),
        }
    }
}

/// `Kind/ns/name ingress[0]` (or `ingressDeny[0]`).
fn describe_rule(r: &palisade_policies::RuleRef) -> String {
    let deny = if r.deny { "Deny" } else { "" };
    format!("{} {}{deny}[{}]", r.policy, r.direction, r.index)
}
