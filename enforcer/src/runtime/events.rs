//! Runtime events: read from the ring buffer, joined with the process cache
//! and the hook that fired, written as Tetragon JSON lines to the event log
//! and streamed to followers. Every loss is counted here, in one place.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use aya::maps::{MapData, RingBuf};
use palisade_api::events::{
    ArgValue, Event, KprobeAction, KprobeArgument, KprobeFile, KprobeLinuxBinprm, KprobePath,
    Process, ProcessExec, ProcessExit, ProcessKprobe, ProcessLsm, ProcessTracepoint, Timestamp,
};
use palisade_bpf::abi::runtime::{act, HookEvent, RtEvent};
use palisade_tracing_policies::compile::{ArgRead, CompiledHook, HookKind};
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;
use tracing::{error, warn};

use super::procs::{split_cmdline, ProcessCache};
use super::sockargs::{skb_arg, sock_arg, sockaddr_arg};

const BATCH: usize = 1024;
/// The event log is rotated (to `<name>.1`) past this size.
pub const LOG_ROTATE_BYTES: u64 = 64 << 20;

/// What the event pipeline needs to know about a hook.
#[derive(Debug, Clone)]
pub struct HookMeta {
    /// Policy name.
    pub policy: String,
    /// The compiled hook.
    pub hook: CompiledHook,
}

/// Hook id -> hook, shared with the agent (which updates it on apply and
/// delete).
pub type HookTable = Arc<RwLock<HashMap<u32, Arc<HookMeta>>>>;

/// Losses and counts of the pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineCounters {
    /// Events delivered (logged and broadcast).
    pub delivered: u64,
    /// Records that could not be decoded.
    pub undecodable: u64,
    /// Events a slow follower missed.
    pub follower_lagged: u64,
    /// Events that could not be written to the log.
    pub log_failed: u64,
}

struct Log {
    path: PathBuf,
    file: BufWriter<File>,
    bytes: u64,
}

/// The event sink: log file, recent buffer and followers.
pub struct EventStore {
    tx: broadcast::Sender<Arc<str>>,
    log: Mutex<Option<Log>>,
    recent: Mutex<VecDeque<Arc<str>>>,
    capacity: usize,
    counters: Mutex<PipelineCounters>,
}

fn open_log(path: &Path) -> std::io::Result<Log> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(Log {
        path: path.to_owned(),
        file: BufWriter::new(file),
        bytes,
    })
}

impl EventStore {
    /// A store keeping `capacity` recent events, appending to `log`.
    pub fn new(capacity: usize, log: Option<&Path>) -> std::io::Result<Arc<Self>> {
        let log = log.map(open_log).transpose()?;
        let (tx, _) = broadcast::channel(16384);
        Ok(Arc::new(Self {
            tx,
            log: Mutex::new(log),
            recent: Mutex::new(VecDeque::with_capacity(capacity.min(65536))),
            capacity,
            counters: Mutex::new(PipelineCounters::default()),
        }))
    }

    /// Follows new events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }

    /// The last `limit` events.
    pub fn recent(&self, limit: usize) -> Vec<Arc<str>> {
        let r = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        r.iter()
            .skip(r.len().saturating_sub(limit))
            .cloned()
            .collect()
    }

    /// The counters.
    pub fn counters(&self) -> PipelineCounters {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts events a follower missed.
    pub fn count_lagged(&self, n: u64) {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .follower_lagged += n;
    }

    /// Counts a record or event that could not be encoded or decoded.
    pub fn count_undecodable(&self) {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .undecodable += 1;
    }

    /// Delivers one event line (without newline).
    pub fn publish(&self, line: String) {
        let line: Arc<str> = line.into();
        let mut failed = false;
        {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(l) = log.as_mut() {
                let ok = l
                    .file
                    .write_all(line.as_bytes())
                    .and_then(|_| l.file.write_all(b"\n"));
                failed = ok.is_err();
                l.bytes += line.len() as u64 + 1;
                if l.bytes > LOG_ROTATE_BYTES {
                    let _ = l.file.flush();
                    let rotated = l.path.with_extension("jsonl.1");
                    if std::fs::rename(&l.path, &rotated).is_ok() {
                        match open_log(&l.path) {
                            Ok(n) => *l = n,
                            Err(e) => warn!(error = %e, "cannot reopen the event log"),
                        }
                    }
                }
            }
        }
        {
            let mut r = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if r.len() >= self.capacity {
                r.pop_front();
            }
            r.push_back(line.clone());
        }
        let _ = self.tx.send(line);
        let mut c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        c.delivered += 1;
        if failed {
            c.log_failed += 1;
        }
    }

    /// Flushes the log.
    pub fn flush(&self) {
        if let Some(l) = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            if let Err(e) = l.file.flush() {
                warn!(error = %e, "cannot write the event log");
            }
        }
    }
}

fn action_of(a: u8) -> KprobeAction {
    match u32::from(a) {
        act::NOPOST => KprobeAction::NoPost,
        act::SIGKILL => KprobeAction::Sigkill,
        act::SIGNAL => KprobeAction::Signal,
        act::OVERRIDE => KprobeAction::Override,
        _ => KprobeAction::Post,
    }
}

fn signal_name(sig: u32) -> String {
    nix::sys::signal::Signal::try_from(sig as i32)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("SIG{sig}"))
}

fn args_of(ev: &HookEvent, hook: &CompiledHook) -> Vec<KprobeArgument> {
    hook.args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let v = ev.vals.get(i).copied().unwrap_or(0);
            let text = || String::from_utf8_lossy(ev.string(i).unwrap_or_default()).into_owned();
            let arg = match a.read {
                ArgRead::Int { size, signed: true } if size <= 4 => {
                    ArgValue::IntArg(v as i64 as i32)
                }
                ArgRead::Int { signed: true, .. } => ArgValue::LongArg(v as i64),
                ArgRead::Int {
                    size,
                    signed: false,
                } if size <= 4 => ArgValue::UintArg(v as u32),
                ArgRead::Int { .. } => ArgValue::SizeArg(v),
                ArgRead::UserString | ArgRead::KernelString => ArgValue::StringArg(text()),
                ArgRead::File => ArgValue::FileArg(KprobeFile {
                    path: text(),
                    ..KprobeFile::default()
                }),
                ArgRead::Bprm => ArgValue::LinuxBinprmArg(KprobeLinuxBinprm {
                    path: text(),
                    ..KprobeLinuxBinprm::default()
                }),
                ArgRead::Path => ArgValue::PathArg(KprobePath {
                    path: text(),
                    ..KprobePath::default()
                }),
                ArgRead::Sockaddr => sockaddr_arg(ev.string(i).unwrap_or_default()),
                ArgRead::Sock => sock_arg(ev.string(i).unwrap_or_default()),
                ArgRead::Skb => skb_arg(ev.string(i).unwrap_or_default()),
            };
            KprobeArgument {
                arg: Some(arg),
                label: a.decl.label.clone(),
            }
        })
        .collect()
}

/// Turns one ring-buffer record into an event (None: not reported, e.g. a fork).
pub fn convert(
    rec: RtEvent,
    procs: &mut ProcessCache,
    hooks: &HookTable,
    node: &str,
) -> Option<Event> {
    match rec {
        RtEvent::Exec {
            hdr,
            proc,
            filename,
            args,
        } => {
            let binary = String::from_utf8_lossy(&filename).into_owned();
            let (_, arguments) = split_cmdline(&args);
            procs.insert(&proc, binary, arguments, "execve");
            let me = procs.get(proc.pid)?.clone();
            let (parent, ancestors) = procs.lineage(&me);
            let exec = ProcessExec {
                process: Some(procs.process(&me, Some(hdr.tid))),
                parent,
                ancestors,
            };
            Some(Event::new(exec, node, procs.timestamp(hdr.ktime)?))
        }
        RtEvent::Fork { proc, .. } => {
            procs.fork(&proc);
            None
        }
        RtEvent::Exit { hdr, exit_code, .. } => {
            let me = procs.exit(hdr.pid)?;
            let (parent, ancestors) = procs.lineage(&me);
            let sig = exit_code & 0x7f;
            let exit = ProcessExit {
                process: Some(procs.process(&me, Some(hdr.tid))),
                parent,
                signal: if sig != 0 {
                    signal_name(sig)
                } else {
                    String::new()
                },
                status: (exit_code >> 8) & 0xff,
                time: procs.timestamp(hdr.ktime),
                ancestors,
            };
            Some(Event::new(exit, node, procs.timestamp(hdr.ktime)?))
        }
        RtEvent::Hook(ev) => {
            let meta = hooks
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&ev.hook_id)
                .cloned()?;
            let (process, parent) = match procs.get(ev.hdr.pid) {
                Some(p) => {
                    let p = p.clone();
                    (procs.process(&p, Some(ev.hdr.tid)), procs.lineage(&p).0)
                }
                None => (procs.unknown(ev.hdr.pid, ev.hdr.tid), None),
            };
            let args = args_of(&ev, &meta.hook);
            let time = procs.timestamp(ev.hdr.ktime)?;
            Some(hook_event(
                &meta,
                process,
                parent,
                args,
                action_of(ev.action),
                time,
                node,
            ))
        }
    }
}

/// The event of a hook that fired (`process_kprobe`, `process_tracepoint`
/// or `process_lsm`, by the hook's kind).
pub fn hook_event(
    meta: &HookMeta,
    process: Process,
    parent: Option<Process>,
    args: Vec<KprobeArgument>,
    action: KprobeAction,
    time: Timestamp,
    node: &str,
) -> Event {
    let hook = &meta.hook;
    match hook.kind {
        HookKind::Kprobe => Event::new(
            ProcessKprobe {
                process: Some(process),
                parent,
                function_name: hook.function_name.clone(),
                args,
                action,
                policy_name: meta.policy.clone(),
                message: hook.message.clone(),
                tags: hook.tags.clone(),
                ..ProcessKprobe::default()
            },
            node,
            time,
        ),
        HookKind::Tracepoint => {
            let (subsys, event) = hook
                .function_name
                .split_once('/')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .unwrap_or_default();
            Event::new(
                ProcessTracepoint {
                    process: Some(process),
                    parent,
                    subsys,
                    event,
                    args,
                    policy_name: meta.policy.clone(),
                    action,
                    message: hook.message.clone(),
                    tags: hook.tags.clone(),
                    ..ProcessTracepoint::default()
                },
                node,
                time,
            )
        }
        HookKind::Lsm => Event::new(
            ProcessLsm {
                process: Some(process),
                parent,
                function_name: hook.function_name.clone(),
                policy_name: meta.policy.clone(),
                args,
                action,
                message: hook.message.clone(),
                tags: hook.tags.clone(),
                ..ProcessLsm::default()
            },
            node,
            time,
        ),
    }
}

/// Reads the ring buffer until the agent stops.
pub async fn run_reader(
    ring: RingBuf<MapData>,
    procs: Arc<Mutex<ProcessCache>>,
    hooks: HookTable,
    store: Arc<EventStore>,
    node: String,
) {
    // `AsyncFd::new` is deprecated for fds the value does not own; the ring
    // buffer owns its map fd and AsyncFd owns the ring buffer, so the fd
    // outlives its registration.
    #[allow(deprecated)]
    let fd = AsyncFd::new(ring);
    let mut fd = match fd {
        Ok(fd) => fd,
        Err(e) => {
            error!(error = %e, "cannot watch the runtime event ring buffer; runtime events are off");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                error!(error = %e, "runtime event ring buffer failed");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        let mut lines = Vec::new();
        let mut read = 0;
        {
            let mut cache = procs.lock().unwrap_or_else(PoisonError::into_inner);
            for _ in 0..BATCH {
                let Some(item) = ring.next() else {
                    break;
                };
                read += 1;
                match RtEvent::from_bytes(&item) {
                    Ok(rec) => {
                        if let Some(ev) = convert(rec, &mut cache, &hooks, &node) {
                            match ev.to_json_line() {
                                Ok(l) => lines.push(l.trim_end().to_owned()),
                                Err(_) => store.count_undecodable(),
                            }
                        }
                    }
                    Err(_) => store.count_undecodable(),
                }
            }
        }
        let more = read == BATCH;
        for l in lines {
            store.publish(l);
        }
        store.flush();
        if !more {
            guard.clear_ready();
        }
    }
}
