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

/// Ring-buffer records handled per batch (one lock of the process cache,
/// one log write).
const BATCH: usize = 1024;
/// The event log is rotated (to `<name>.1`) past this size.
pub const LOG_ROTATE_BYTES: u64 = 64 << 20;
/// Buffer of the event log writer (a batch is written at once when larger).
const LOG_BUFFER: usize = 256 << 10;

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

/// Event lines of one batch, newline-terminated in one buffer (written to
/// the log as is), built without an allocation per event.
#[derive(Debug, Default)]
pub struct LineBatch {
    text: Vec<u8>,
    /// End of each line (before its newline) in `text`.
    ends: Vec<usize>,
}

impl LineBatch {
    /// Empties it, keeping the memory.
    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// Lines in it.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds no line.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends an event as one JSON line.
    pub fn push_event(&mut self, ev: &Event) -> Result<(), serde_json::Error> {
        let start = self.text.len();
        if let Err(e) = serde_json::to_writer(&mut self.text, ev) {
            self.text.truncate(start);
            return Err(e);
        }
        self.ends.push(self.text.len());
        self.text.push(b'\n');
        Ok(())
    }

    /// Appends a line (without its newline).
    pub fn push_line(&mut self, line: &str) {
        self.text.extend_from_slice(line.as_bytes());
        self.ends.push(self.text.len());
        self.text.push(b'\n');
    }

    /// The lines, without newlines.
    pub fn lines(&self) -> impl Iterator<Item = &str> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let line = self
                .text
                .get(start..end)
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default();
            start = end + 1;
            line
        })
    }
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
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(Log {
        path: path.to_owned(),
        file: BufWriter::with_capacity(LOG_BUFFER, file),
        bytes,
    })
}

/// Moves the log to `<name>.1`. The previous `.1` is moved aside first and
/// removed on another thread: renaming over it made ext4 write the log out
/// and free the old file's pages inside the reader (40-50 ms per rotation
/// of 64 MiB here, while events queue).
fn rotate(path: &Path) -> std::io::Result<()> {
    let rotated = path.with_extension("jsonl.1");
    let aside = path.with_extension("jsonl.1.old");
    let had_old = std::fs::rename(&rotated, &aside).is_ok();
    std::fs::rename(path, &rotated)?;
    if had_old {
        let remove = move || {
            if let Err(e) = std::fs::remove_file(&aside) {
                warn!(error = %e, path = %aside.display(), "cannot remove the old event log");
            }
        };
        let spawned = std::thread::Builder::new()
            .name("event-log-rm".into())
            .spawn(remove.clone());
        if spawned.is_err() {
            remove();
        }
    }
    Ok(())
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
        let mut batch = LineBatch::default();
        batch.push_line(&line);
        self.publish_batch(&batch);
    }

    /// Delivers a batch of event lines: one log write, one lock of each
    /// part of the store for the whole batch.
    pub fn publish_batch(&self, batch: &LineBatch) {
        if batch.is_empty() {
            return;
        }
        let mut failed = 0;
        {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(l) = log.as_mut() {
                if l.file.write_all(&batch.text).is_err() {
                    failed = batch.len() as u64;
                }
                l.bytes += batch.text.len() as u64;
                if l.bytes > LOG_ROTATE_BYTES {
                    let _ = l.file.flush();
                    if rotate(&l.path).is_ok() {
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
            for line in batch.lines() {
                let line: Arc<str> = line.into();
                if r.len() >= self.capacity {
                    r.pop_front();
                }
                r.push_back(line.clone());
                let _ = self.tx.send(line);
            }
        }
        let mut c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        c.delivered += batch.len() as u64;
        c.log_failed += failed;
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
            let me = procs.get(proc.pid)?;
            let (parent, ancestors) = procs.lineage(me);
            let exec = ProcessExec {
                process: Some(procs.process(me, Some(hdr.tid))),
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
                Some(p) => (procs.process(p, Some(ev.hdr.tid)), procs.parent(p)),
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
    let mut batch = LineBatch::default();
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                error!(error = %e, "runtime event ring buffer failed");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        batch.clear();
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
                            if batch.push_event(&ev).is_err() {
                                store.count_undecodable();
                            }
                        }
                    }
                    Err(_) => store.count_undecodable(),
                }
            }
        }
        let more = read == BATCH;
        store.publish_batch(&batch);
        store.flush();
        if !more {
            guard.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_lines_and_log() {
        let dir = std::env::temp_dir().join(format!("palisade-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&path);
        let store = EventStore::new(3, Some(&path)).expect("store");
        let mut rx = store.subscribe();

        let mut batch = LineBatch::default();
        assert!(batch.is_empty());
        for i in 0..4 {
            batch.push_line(&format!("{{\"n\":{i}}}"));
        }
        assert_eq!(batch.len(), 4);
        assert_eq!(
            batch.lines().collect::<Vec<_>>(),
            ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}", "{\"n\":3}"]
        );
        store.publish_batch(&batch);
        store.publish("{\"n\":4}".into());
        store.flush();

        let text = std::fs::read_to_string(&path).expect("log");
        assert_eq!(text.lines().count(), 5);
        assert!(text.ends_with("{\"n\":4}\n"));
        let recent: Vec<String> = store.recent(10).iter().map(|l| l.to_string()).collect();
        assert_eq!(
            recent,
            ["{\"n\":2}", "{\"n\":3}", "{\"n\":4}"],
            "capacity 3"
        );
        assert_eq!(rx.try_recv().expect("followed").as_ref(), "{\"n\":0}");
        assert_eq!(store.counters().delivered, 5);
        assert_eq!(store.counters().log_failed, 0);

        batch.clear();
        assert!(batch.is_empty());
        store.publish_batch(&batch);
        assert_eq!(
            store.counters().delivered,
            5,
            "an empty batch delivers nothing"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rotation_keeps_one_previous_log() {
        let dir = std::env::temp_dir().join(format!("palisade-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("events.jsonl");
        let prev = dir.join("events.jsonl.1");
        std::fs::write(&prev, "older\n").expect("write");
        std::fs::write(&log, "newer\n").expect("write");
        rotate(&log).expect("rotates");
        assert!(!log.exists());
        assert_eq!(std::fs::read_to_string(&prev).expect("read"), "newer\n");
        let aside = dir.join("events.jsonl.1.old");
        for _ in 0..100 {
            if !aside.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!aside.exists(), "the previous .1 is removed");
        // Without a previous .1 there is nothing to remove.
        std::fs::write(&log, "newest\n").expect("write");
        std::fs::remove_file(&prev).expect("remove");
        rotate(&log).expect("rotates");
        assert_eq!(std::fs::read_to_string(&prev).expect("read"), "newest\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn event_lines_are_the_json_lines() {
        let ev = Event::new(
            ProcessExit {
                signal: "SIGKILL".into(),
                ..ProcessExit::default()
            },
            "n1",
            palisade_api::events::Timestamp::new(1_700_000_000, 5).expect("time"),
        );
        let mut batch = LineBatch::default();
        batch.push_event(&ev).expect("serializes");
        let line = ev.to_json_line().expect("serializes");
        assert_eq!(batch.lines().collect::<Vec<_>>(), [line.trim_end()]);
        assert_eq!(batch.text, line.as_bytes());
    }
}
