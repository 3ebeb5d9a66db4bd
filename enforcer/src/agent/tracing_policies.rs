//! Tracing policies in the agent: the policy directory and API documents,
//! compiled for this kernel and applied to the runtime; status and events.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use aya::maps::{MapData, RingBuf};
use palisade_api::events::{Container, Pod};
use palisade_api::{Response, RuntimeStatus, TracingPolicyRecord};
use palisade_tracing_policies::compile::{compile, Attach, CompileOptions, CompiledPolicy};
use palisade_tracing_policies::{parse_documents, PolicyMode, TracingPolicy};
use tracing::{info, warn};

use super::{Agent, AgentError};
use crate::runtime::events::{EventStore, HookMeta, HookTable};
use crate::runtime::file_guard::{self, FileGuard, GuardHook};
use crate::runtime::procs::{binary_in_set, scan_proc, ProcessCache, MAX_ANCESTORS};
use crate::runtime::{KernelHost, Runtime, SyscallIds};

/// Where API-applied tracing policies are kept (one file per policy).
const API_DIR: &str = "tracingpolicies";

/// The pieces the event reader runs with.
pub struct RuntimeReader {
    /// The ring buffer.
    pub ring: RingBuf<MapData>,
    /// The process cache.
    pub procs: Arc<Mutex<ProcessCache>>,
    /// Hook metadata.
    pub hooks: HookTable,
    /// The sink.
    pub store: Arc<EventStore>,
    /// Node name for exec_ids.
    pub node: String,
}

/// Runtime enforcement state of the agent.
pub struct TracingState {
    runtime: Runtime,
    host: KernelHost,
    hooks: HookTable,
    procs: Arc<Mutex<ProcessCache>>,
    store: Arc<EventStore>,
    /// Hooks enforced through fanotify permission events.
    files: FileGuard,
    options: CompileOptions,
    /// name -> (source, yaml of the one document).
    sources: BTreeMap<String, (String, String)>,
    /// Files of the tracing-policy directory as last read.
    dir_files: BTreeMap<PathBuf, String>,
    reader: Option<RingBuf<MapData>>,
}

/// How hook attachment `a` runs; for a hook in force in `runtime` as hook
/// `hook_id`: for a syscall hook, from where the runtime runs that
/// syscall's hooks and whether a head prefilter stands in front of its
/// selectors; for a `raw_syscalls` hook, whether it runs from per-syscall
/// tracepoints or behind a syscall-id prefilter.
fn mechanism(a: &Attach, runtime: Option<&Runtime>, hook_id: Option<u32>) -> String {
    match a {
        Attach::Syscall { nr } => {
            let name = crate::runtime::syscalls::name(*nr).unwrap_or("?");
            let mut m = format!("syscall {name} = {nr}, ");
            if let Some(via) = runtime.and_then(|r| r.syscall_mechanism(*nr)) {
                m += &format!("{via}, ");
            }
            m += "in-kernel selectors";
            if let Some((reg, heads)) = runtime
                .zip(hook_id)
                .and_then(|(r, id)| r.head_prefilter(*nr, id))
            {
                let plural = if heads == 1 { "" } else { "s" };
                m += &format!(" behind a head prefilter on argument {reg} ({heads} head{plural})");
            }
            m
        }
        Attach::Tracepoint { subsystem, event } => {
            let mut m = format!("tracepoint {subsystem}/{event}");
            match runtime.zip(hook_id).and_then(|(r, id)| r.syscall_ids(id)) {
                Some(ids @ SyscallIds::Routed(_)) => {
                    m += &format!(", run from the tracepoints of {}", ids.names());
                }
                Some(ids @ SyscallIds::Prefiltered(_)) => {
                    m += &format!(" behind a syscall-id prefilter ({})", ids.names());
                }
                None => {}
            }
            m
        }
        Attach::RawTracepoint { event } => format!("raw tracepoint {event}"),
        Attach::Kprobe { function } => format!("kprobe {function}"),
        Attach::Lsm { hook } => format!("BPF-LSM {hook}"),
        Attach::Fanotify { access } => format!("fanotify {access:?} permission events"),
    }
}

/// A policy ready to apply.
struct Prepared {
    compiled: CompiledPolicy,
    /// Its hooks enforced through fanotify.
    files: Vec<GuardHook>,
    /// The YAML of the one document.
    yaml: String,
}

fn parse(source: &str, yaml: &str) -> Result<Vec<(TracingPolicy, String)>, AgentError> {
    let docs = parse_documents(yaml, source).map_err(|e| AgentError::Invalid(e.to_string()))?;
    docs.into_iter()
        .map(|p| {
            let one = serde_yaml::to_string(&p).map_err(|e| AgentError::Invalid(e.to_string()))?;
            Ok((p, one))
        })
        .collect()
}

impl TracingState {
    /// Starts runtime enforcement.
    pub fn start(
        bpf_root: &Path,
        node: &str,
        cache_size: usize,
        events_log: Option<&Path>,
        options: CompileOptions,
    ) -> Result<Self, AgentError> {
        // The event log first: a runtime generation, once started, stays
        // pinned (attached) until it is unloaded or retired.
        let store = EventStore::new(4096, events_log).map_err(|e| {
            AgentError::Invalid(format!(
                "cannot open the runtime event log {}: {e}",
                events_log
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ))
        })?;
        let mut runtime = Runtime::start(bpf_root, std::process::id())
            .map_err(|e| AgentError::Invalid(format!("runtime enforcement: {e}")))?;
        let mut cache = ProcessCache::new(node, cache_size);
        let scanned = scan_proc();
        if let Ok(mut map) = runtime.procs_map() {
            for s in &scanned {
                let _ = map.insert(s.proc.pid, s.proc, 0);
            }
        }
        for s in scanned {
            cache.insert(&s.proc, s.binary, s.arguments, "procFS");
        }
        let reader = runtime.take_events();
        let procs = Arc::new(Mutex::new(cache));
        Ok(Self {
            runtime,
            host: KernelHost::probe(),
            hooks: Arc::new(RwLock::new(HashMap::new())),
            files: FileGuard::new(procs.clone(), store.clone(), node),
            procs,
            store,
            options,
            sources: BTreeMap::new(),
            dir_files: BTreeMap::new(),
            reader,
        })
    }

    /// The event reader's pieces (once).
    pub fn take_reader(&mut self, node: &str) -> Option<RuntimeReader> {
        Some(RuntimeReader {
            ring: self.reader.take()?,
            procs: self.procs.clone(),
            hooks: self.hooks.clone(),
            store: self.store.clone(),
            node: node.to_owned(),
        })
    }

    /// The event store (for followers).
    pub fn store(&self) -> Arc<EventStore> {
        self.store.clone()
    }

    fn compile_all(&self, source: &str, yaml: &str) -> Result<Vec<Prepared>, AgentError> {
        parse(source, yaml)?
            .into_iter()
            .map(|(p, yaml)| {
                let at = |e: String| {
                    AgentError::Invalid(format!("{source}: TracingPolicy {}: {e}", p.metadata.name))
                };
                let compiled = compile(&p, &self.host, self.options)
                    .map_err(|e| at(format!("{}: {e}", e.path())))?;
                let files = file_guard::prepare(&p, &compiled, &self.host).map_err(at)?;
                Ok(Prepared {
                    compiled,
                    files,
                    yaml,
                })
            })
            .collect()
    }

    /// Validates and compiles without applying.
    pub fn validate(
        &self,
        source: &str,
        yaml: &str,
    ) -> Result<Vec<TracingPolicyRecord>, AgentError> {
        Ok(self
            .compile_all(source, yaml)?
            .iter()
            .map(|p| record(&p.compiled, source, None))
            .collect())
    }

    /// Applies every policy of a stream, all or nothing: all compile first,
    /// then each is applied; a failure rolls that policy back, and the
    /// policies of the stream applied before it are put back as they were.
    pub fn apply(&mut self, source: &str, yaml: &str) -> Result<Vec<String>, AgentError> {
        let prepared = self.compile_all(source, yaml)?;
        let mut names = Vec::new();
        let mut undo: Vec<(String, Option<(String, String)>)> = Vec::new();
        for p in prepared {
            let name = p.compiled.name.clone();
            let before = self.sources.get(&name).cloned();
            if let Err(e) = self.apply_one(source, p) {
                for (name, before) in undo.into_iter().rev() {
                    self.put_back(&name, before);
                }
                self.refresh_hooks();
                self.refresh_process_bins();
                return Err(e);
            }
            undo.push((name.clone(), before));
            names.push(name);
        }
        self.refresh_hooks();
        self.refresh_process_bins();
        Ok(names)
    }

    /// Applies one compiled policy; on error nothing of it stays and its
    /// previous version stays in force.
    fn apply_one(&mut self, source: &str, p: Prepared) -> Result<(), AgentError> {
        let Prepared {
            compiled,
            files,
            yaml,
        } = p;
        let name = compiled.name.clone();
        let failed =
            |e: String| AgentError::Invalid(format!("{source}: TracingPolicy {name}: {e}"));
        let previous = self.files.install(&name, files).map_err(failed)?;
        if let Err(e) = self.runtime.apply(compiled) {
            self.files.restore(&name, previous);
            return Err(failed(e.to_string()));
        }
        self.sources.insert(name.clone(), (source.to_owned(), yaml));
        Ok(())
    }

    /// Puts policy `name` back to `before` (its source and YAML), or
    /// removes it if it was not in force.
    fn put_back(&mut self, name: &str, before: Option<(String, String)>) {
        let Some((source, yaml)) = before else {
            self.delete(name);
            return;
        };
        let restored = self
            .compile_all(&source, &yaml)
            .and_then(|ps| ps.into_iter().try_for_each(|p| self.apply_one(&source, p)));
        if let Err(e) = restored {
            warn!(policy = name, error = %e, "cannot put a tracing policy back; it is removed");
            self.delete(name);
        }
    }

    /// Removes a policy.
    pub fn delete(&mut self, name: &str) -> bool {
        let found = self.runtime.delete(name);
        self.files.remove(name);
        self.sources.remove(name);
        self.refresh_hooks();
        found
    }

    /// The pods processes are attributed to, by network namespace inode.
    pub fn set_pods(&mut self, pods: HashMap<u32, Pod>) {
        self.procs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_pods(pods);
    }

    /// Housekeeping: re-resolves the fanotify marks of protected files.
    pub fn refresh_file_marks(&mut self) {
        self.files.refresh();
    }

    fn refresh_hooks(&mut self) {
        let mut table = HashMap::new();
        for name in self.runtime.policy_names() {
            for (id, hook) in self.runtime.hooks_of(&name) {
                table.insert(
                    id,
                    Arc::new(HookMeta {
                        policy: name.clone(),
                        hook,
                    }),
                );
            }
        }
        *self.hooks.write().unwrap_or_else(PoisonError::into_inner) = table;
    }

    /// Processes that started before a binary set existed (or before this
    /// agent's generation) get its bits from the cache's view of their
    /// binary and their ancestors' (`followChildren`).
    fn refresh_process_bins(&mut self) {
        let sets = self.runtime.binsets();
        let follow = self.runtime.follow_mask();
        let procs = self.procs.lock().unwrap_or_else(PoisonError::into_inner);
        let mut memo: HashMap<u32, [u64; 2]> = HashMap::new();
        let mut bits_of = |pid: u32| -> Option<[u64; 2]> {
            if let Some(b) = memo.get(&pid) {
                return Some(*b);
            }
            // A process whose exec the event reader has not reached yet is
            // read from /proc.
            let binary = match procs.get(pid) {
                Some(info) => info.binary.clone(),
                None => std::fs::read_link(format!("/proc/{pid}/exe"))
                    .ok()?
                    .to_string_lossy()
                    .into_owned(),
            };
            let mut b = [0u64; 2];
            for (bit, set) in &sets {
                if binary_in_set(&binary, set) {
                    b[usize::from(*bit) / 64] |= 1 << (bit % 64);
                }
            }
            memo.insert(pid, b);
            Some(b)
        };
        let Ok(mut map) = self.runtime.procs_map() else {
            return;
        };
        let keys: Vec<u32> = map.keys().filter_map(Result::ok).collect();
        for pid in keys {
            let (Ok(mut entry), Some(bits)) = (map.get(&pid, 0), bits_of(pid)) else {
                continue;
            };
            entry.bin_match = bits;
            let mut followed = [0u64; 2];
            let mut cur = procs.get(pid).map_or(0, |p| p.ppid);
            for depth in 0..MAX_ANCESTORS {
                let Some(b) = bits_of(cur) else { break };
                if depth == 0 {
                    entry.parent_bin = b;
                }
                followed[0] |= b[0] & follow[0];
                followed[1] |= b[1] & follow[1];
                match procs.get(cur) {
                    Some(p) if p.ppid != cur && p.ppid != 0 => cur = p.ppid,
                    _ => break,
                }
            }
            entry.bin_follow[0] |= followed[0];
            entry.bin_follow[1] |= followed[1];
            let _ = map.insert(pid, entry, 0);
        }
    }

    /// The policies in force.
    pub fn list(&self) -> Vec<TracingPolicyRecord> {
        self.runtime
            .policy_names()
            .iter()
            .filter_map(|n| {
                let c = self.runtime.policy(n)?;
                let source = self.sources.get(n).map(|s| s.0.clone()).unwrap_or_default();
                Some(record(c, &source, Some(&self.runtime)))
            })
            .collect()
    }

    /// The status block.
    pub fn status(&mut self) -> RuntimeStatus {
        let k = self.runtime.counters();
        let p = self.store.counters();
        let f = self.files.stats();
        let procs = self.procs.lock().unwrap_or_else(PoisonError::into_inner);
        RuntimeStatus {
            policies: self.runtime.policy_names().len(),
            processes: procs.len(),
            process_evictions: procs.evictions(),
            events_delivered: p.delivered,
            lost_ringbuf_full: k.ringbuf_full,
            lost_undecodable: p.undecodable,
            lost_follower_lagged: p.follower_lagged,
            lost_log_write: p.log_failed,
            rate_limited: k.rate_limited + f.rate_limited,
            signal_failed: k.signal_failed + f.signal_failed,
            file_accesses_checked: f.guard.answered,
            file_accesses_denied: f.guard.denied,
            file_checks_failed: f.guard.failed,
            lost_fanotify_overflow: f.guard.overflows,
            lost_fanotify_queue: f.guard.dropped,
            hook_runs: k.hook_runs,
            head_prefilter_skips: k.head_skips,
            id_prefilter_skips: k.id_skips,
        }
    }

    /// Re-reads the tracing-policy directory; changed files are applied,
    /// removed files' policies removed. Errors are reported per file; what
    /// is in force stays.
    pub fn rescan_dir(&mut self, dir: &Path) -> Vec<String> {
        let mut errors = Vec::new();
        let mut now: BTreeMap<PathBuf, String> = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                    match std::fs::read_to_string(&p) {
                        Ok(t) => {
                            now.insert(p, t);
                        }
                        Err(e) => errors.push(format!("{}: {e}", p.display())),
                    }
                }
            }
        }
        let gone: Vec<PathBuf> = self
            .dir_files
            .keys()
            .filter(|p| !now.contains_key(*p))
            .cloned()
            .collect();
        for p in gone {
            let src = p.display().to_string();
            let names: Vec<String> = self
                .sources
                .iter()
                .filter(|(_, (s, _))| *s == src)
                .map(|(n, _)| n.clone())
                .collect();
            for n in names {
                self.delete(&n);
            }
            self.dir_files.remove(&p);
        }
        for (p, text) in now {
            if self.dir_files.get(&p) == Some(&text) {
                continue;
            }
            let src = p.display().to_string();
            match self.apply(&src, &text) {
                Ok(names) => info!(file = %src, policies = ?names, "tracing policies applied"),
                Err(e) => {
                    warn!(error = %e, "tracing policy file not applied");
                    errors.push(e.to_string());
                }
            }
            self.dir_files.insert(p, text);
        }
        errors
    }
}

fn record(c: &CompiledPolicy, source: &str, runtime: Option<&Runtime>) -> TracingPolicyRecord {
    let ids: BTreeMap<String, u32> = runtime
        .map(|r| r.hooks_of(&c.name))
        .unwrap_or_default()
        .into_iter()
        .map(|(id, h)| (h.path, id))
        .collect();
    TracingPolicyRecord {
        name: c.name.clone(),
        source: source.to_owned(),
        mode: match c.mode {
            PolicyMode::Enforce => "enforce",
            PolicyMode::Monitor => "monitor",
        }
        .to_owned(),
        hooks: c
            .hooks
            .iter()
            .map(|h| {
                format!(
                    "{}: {}{}",
                    h.path,
                    mechanism(&h.attach, runtime, ids.get(&h.path).copied()),
                    if h.monitor { " (monitor)" } else { "" }
                )
            })
            .collect(),
        warnings: c.warnings.clone(),
    }
}

fn api_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(API_DIR)
}

fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Agent {
    /// Starts runtime enforcement (a failure is a warning: network policy
    /// keeps working) and restores API-applied tracing policies.
    pub(super) fn start_tracing(&mut self) {
        if !self.config.runtime_enforcement {
            return;
        }
        let log = self.config.runtime_events_log.clone();
        let state = TracingState::start(
            &self.config.bpf_root,
            &self.config.node_name,
            self.config.process_cache_size,
            log.as_deref(),
            CompileOptions {
                allow_monitoring_fallback: self.config.allow_monitoring_fallback,
            },
        );
        let mut state = match state {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "runtime enforcement is off");
                self.warnings.push(e.to_string());
                return;
            }
        };
        let dir = api_dir(&self.config.state_dir);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let path = e.path();
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                let source = format!("api:{}", path.display());
                if let Err(e) = state.apply(&source, &text) {
                    self.warnings
                        .push(format!("restoring {}: {e}", path.display()));
                }
            }
        }
        if let Some(d) = self.config.tracing_policy_dir.clone() {
            for e in state.rescan_dir(&d) {
                self.warnings.push(e);
            }
        }
        // This agent's policies are in force: what earlier agents left
        // enforcing can go.
        state.runtime.retire_previous();
        self.tracing = Some(state);
    }

    /// Attributes processes to pods: every endpoint's network namespace
    /// (an endpoint whose namespace is gone is skipped).
    pub(super) fn sync_pod_attribution(&mut self) {
        let Some(state) = self.tracing.as_mut() else {
            return;
        };
        let pods = self
            .endpoints
            .values()
            .filter_map(|ep| {
                let ino = std::fs::metadata(&ep.spec.netns).ok()?.ino();
                let pod = Pod {
                    namespace: ep.spec.pod_namespace.clone(),
                    name: ep.spec.pod_name.clone(),
                    container: Some(Container {
                        id: ep.spec.container_id.clone(),
                        ..Container::default()
                    }),
                    pod_labels: ep.spec.labels.clone(),
                    ..Pod::default()
                };
                Some((ino as u32, pod))
            })
            .collect();
        state.set_pods(pods);
    }

    /// At a clean stop: detaches the tracing-policy hooks unless
    /// `keep_runtime_enforcement` keeps them enforcing until the next agent.
    pub fn stop_tracing(&mut self) {
        let Some(state) = self.tracing.take() else {
            return;
        };
        if self.config.keep_runtime_enforcement {
            info!("the kernel keeps enforcing the tracing policies (pinned); fanotify hooks stop with the agent");
        } else {
            state.runtime.unload();
        }
    }

    /// The event reader's pieces (once).
    pub fn take_runtime_reader(&mut self) -> Option<RuntimeReader> {
        let node = self.config.node_name.clone();
        self.tracing.as_mut()?.take_reader(&node)
    }

    /// The runtime event store.
    pub fn runtime_events(&self) -> Option<Arc<EventStore>> {
        self.tracing.as_ref().map(TracingState::store)
    }

    fn tracing_mut(&mut self) -> Result<&mut TracingState, AgentError> {
        self.tracing.as_mut().ok_or_else(|| {
            AgentError::Invalid(
                "runtime enforcement is not running on this agent (see palisade status)".into(),
            )
        })
    }

    /// `tracingpolicy add`: applies and keeps the documents.
    pub fn tracing_apply(&mut self, source: &str, yaml: &str) -> Result<Response, AgentError> {
        let dir = api_dir(&self.config.state_dir);
        let state = self.tracing_mut()?;
        let names = state.apply(&format!("api:{source}"), yaml)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::Invalid(format!("{}: {e}", dir.display())))?;
        for n in &names {
            if let Some((_, one)) = state.sources.get(n) {
                let path = dir.join(format!("{}.yaml", file_name(n)));
                crate::state::write_atomic(&path, one.as_bytes())
                    .map_err(|e| AgentError::Invalid(format!("saving {}: {e}", path.display())))?;
            }
        }
        Ok(Response::TracingPolicies {
            policies: state
                .list()
                .into_iter()
                .filter(|r| names.contains(&r.name))
                .collect(),
        })
    }

    /// `tracingpolicy validate`.
    pub fn tracing_validate(&mut self, source: &str, yaml: &str) -> Result<Response, AgentError> {
        let policies = self.tracing_mut()?.validate(source, yaml)?;
        Ok(Response::TracingPolicies { policies })
    }

    /// `tracingpolicy list`.
    pub fn tracing_list(&mut self) -> Result<Response, AgentError> {
        Ok(Response::TracingPolicies {
            policies: self.tracing_mut()?.list(),
        })
    }

    /// `tracingpolicy delete`.
    pub fn tracing_delete(&mut self, name: &str) -> Result<Response, AgentError> {
        let dir = api_dir(&self.config.state_dir);
        let state = self.tracing_mut()?;
        let from_api = state
            .sources
            .get(name)
            .is_some_and(|(s, _)| s.starts_with("api:"));
        if !state.sources.contains_key(name) {
            return Err(AgentError::Invalid(format!(
                "no tracing policy named {name:?}"
            )));
        }
        if !from_api {
            return Err(AgentError::Invalid(format!(
                "tracing policy {name:?} comes from the tracing-policy directory; remove its file there"
            )));
        }
        // Forget it first: a policy whose saved copy stays would come back
        // at the next agent start.
        let saved = dir.join(format!("{}.yaml", file_name(name)));
        match std::fs::remove_file(&saved) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(AgentError::Invalid(format!(
                    "cannot remove {}: {e}; tracing policy {name:?} stays in force",
                    saved.display()
                )))
            }
        }
        state.delete(name);
        Ok(Response::Done)
    }

    /// Rescans the tracing-policy directory (housekeeping).
    pub fn rescan_tracing_dir(&mut self) {
        let Some(dir) = self.config.tracing_policy_dir.clone() else {
            return;
        };
        if let Some(t) = self.tracing.as_mut() {
            for e in t.rescan_dir(&dir) {
                warn!(error = %e, "tracing-policy directory");
            }
        }
    }

    /// Housekeeping of runtime enforcement: fanotify marks follow replaced
    /// files.
    pub fn refresh_tracing(&mut self) {
        if let Some(t) = self.tracing.as_mut() {
            t.refresh_file_marks();
        }
    }

    /// Runtime status for `status`.
    pub(super) fn runtime_status(&mut self) -> Option<RuntimeStatus> {
        self.tracing.as_mut().map(TracingState::status)
    }
}
