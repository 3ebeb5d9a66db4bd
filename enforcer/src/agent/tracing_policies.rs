//! Tracing policies in the agent: the policy directory and API documents,
//! compiled for this kernel and applied to the runtime; status and events.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use aya::maps::{MapData, RingBuf};
use palisade_api::{Response, RuntimeStatus, TracingPolicyRecord};
use palisade_tracing_policies::compile::{compile, Attach, CompileOptions, CompiledPolicy};
use palisade_tracing_policies::{parse_documents, PolicyMode, TracingPolicy};
use tracing::{info, warn};

use super::{Agent, AgentError};
use crate::runtime::events::{EventStore, HookMeta, HookTable};
use crate::runtime::procs::{binary_in_set, scan_proc, ProcessCache};
use crate::runtime::{KernelHost, Runtime};

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
    options: CompileOptions,
    /// name -> (source, yaml of the one document).
    sources: BTreeMap<String, (String, String)>,
    /// Files of the tracing-policy directory as last read.
    dir_files: BTreeMap<PathBuf, String>,
    reader: Option<RingBuf<MapData>>,
}

fn mechanism(a: &Attach) -> String {
    match a {
        Attach::Syscall { nr } => format!(
            "raw_syscalls:sys_enter (syscall {} = {nr}, in-kernel selectors)",
            crate::runtime::syscalls::name(*nr).unwrap_or("?")
        ),
        Attach::Tracepoint { subsystem, event } => format!("tracepoint {subsystem}/{event}"),
        Attach::RawTracepoint { event } => format!("raw tracepoint {event}"),
        Attach::Kprobe { function } => format!("kprobe {function}"),
        Attach::Lsm { hook } => format!("BPF-LSM {hook}"),
        Attach::Fanotify { access } => format!("fanotify {access:?} permission events"),
    }
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
        let mut runtime = Runtime::start(bpf_root, std::process::id())
            .map_err(|e| AgentError::Invalid(format!("runtime enforcement: {e}")))?;
        let store = EventStore::new(4096, events_log).map_err(|e| {
            AgentError::Invalid(format!(
                "cannot open the runtime event log {}: {e}",
                events_log
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ))
        })?;
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
        Ok(Self {
            runtime,
            host: KernelHost::probe(),
            hooks: Arc::new(RwLock::new(HashMap::new())),
            procs: Arc::new(Mutex::new(cache)),
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

    fn compile_all(
        &self,
        source: &str,
        yaml: &str,
    ) -> Result<Vec<(CompiledPolicy, String)>, AgentError> {
        parse(source, yaml)?
            .into_iter()
            .map(|(p, one)| {
                let c = compile(&p, &self.host, self.options).map_err(|e| {
                    AgentError::Invalid(format!(
                        "{source}: TracingPolicy {}: {}: {e}",
                        p.metadata.name,
                        e.path()
                    ))
                })?;
                if c.hooks.iter().any(|h| matches!(h.attach, Attach::Fanotify { .. })) {
                    return Err(AgentError::Invalid(format!(
                        "{source}: TracingPolicy {}: this hook needs fanotify enforcement (no kprobes/BPF-LSM here), which this agent build does not run yet",
                        p.metadata.name
                    )));
                }
                Ok((c, one))
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
            .map(|(c, _)| record(c, source))
            .collect())
    }

    /// Applies every policy of a stream (all compile first; then each is
    /// applied; a failure rolls that policy back and stops).
    pub fn apply(&mut self, source: &str, yaml: &str) -> Result<Vec<String>, AgentError> {
        let compiled = self.compile_all(source, yaml)?;
        let mut names = Vec::new();
        for (c, one) in compiled {
            let name = c.name.clone();
            self.runtime
                .apply(c)
                .map_err(|e| AgentError::Invalid(format!("{source}: TracingPolicy {name}: {e}")))?;
            self.sources.insert(name.clone(), (source.to_owned(), one));
            names.push(name);
        }
        self.refresh_hooks();
        self.refresh_process_bins();
        Ok(names)
    }

    /// Removes a policy.
    pub fn delete(&mut self, name: &str) -> bool {
        let found = self.runtime.delete(name);
        self.sources.remove(name);
        self.refresh_hooks();
        found
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

    /// Processes that started before a binary set existed get its bit from
    /// the cache's view of their binary.
    fn refresh_process_bins(&mut self) {
        let sets = self.runtime.binsets();
        let procs = self.procs.lock().unwrap_or_else(PoisonError::into_inner);
        let Ok(mut map) = self.runtime.procs_map() else {
            return;
        };
        let keys: Vec<u32> = map.keys().filter_map(Result::ok).collect();
        for pid in keys {
            let (Ok(mut entry), Some(info)) = (map.get(&pid, 0), procs.get(pid)) else {
                continue;
            };
            let mut bits = [0u64; 2];
            for (bit, set) in &sets {
                if binary_in_set(&info.binary, set) {
                    bits[usize::from(*bit) / 64] |= 1 << (bit % 64);
                }
            }
            let parent_bits = procs.get(info.ppid).map(|p| {
                let mut b = [0u64; 2];
                for (bit, set) in &sets {
                    if binary_in_set(&p.binary, set) {
                        b[usize::from(*bit) / 64] |= 1 << (bit % 64);
                    }
                }
                b
            });
            entry.bin_match = bits;
            if let Some(pb) = parent_bits {
                entry.parent_bin = pb;
            }
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
                Some(record(c, &source))
            })
            .collect()
    }

    /// The status block.
    pub fn status(&mut self) -> RuntimeStatus {
        let k = self.runtime.counters();
        let p = self.store.counters();
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
            rate_limited: k.rate_limited,
            signal_failed: k.signal_failed,
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

fn record(c: &CompiledPolicy, source: &str) -> TracingPolicyRecord {
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
                    mechanism(&h.attach),
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
        self.tracing = Some(state);
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
        state.delete(name);
        let _ = std::fs::remove_file(dir.join(format!("{}.yaml", file_name(name))));
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

    /// Runtime status for `status`.
    pub(super) fn runtime_status(&mut self) -> Option<RuntimeStatus> {
        self.tracing.as_mut().map(TracingState::status)
    }
}
