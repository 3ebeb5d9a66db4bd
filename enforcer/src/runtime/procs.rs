//! The agent's process cache: every process seen by exec/fork (or the
//! `/proc` scan at start), with what events report about it (binary,
//! arguments, parent, Tetragon-compatible exec_id).
//!
//! Memory is bounded: past `capacity` entries the oldest exited process is
//! evicted first, then the oldest entry; evictions are counted.
//!
//! Pod attribution: the endpoint registry knows each pod's network
//! namespace (`CNI_NETNS`), the kernel records each process's; a process
//! in a pod's network namespace is that pod's ([`ProcessCache::set_pods`]).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use palisade_api::events::{exec_id, Pod, Process, Timestamp};
use palisade_bpf::abi::runtime::Proc;
use palisade_tracing_policies::compile::{BinaryMatch, BinarySet};
use palisade_tracing_policies::model::NamespaceKind;
use palisade_tracing_policies::Capabilities;

use super::host::namespace_inode;

/// Longest ancestor chain reported.
pub const MAX_ANCESTORS: usize = 32;

/// One process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// tgid.
    pub pid: u32,
    /// Parent tgid.
    pub ppid: u32,
    /// Image start (ns since boot).
    pub ktime: u64,
    /// The parent's image start.
    pub parent_ktime: u64,
    /// Binary path.
    pub binary: String,
    /// Arguments (without argv\[0\]), space-separated.
    pub arguments: String,
    /// Real uid.
    pub uid: u32,
    /// Login uid.
    pub auid: u32,
    /// Tetragon's flags (`execve`, `procFS`, `clone`).
    pub flags: &'static str,
    /// Network namespace inode (pod attribution).
    pub net_ns: u32,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Exited (kept for late events until evicted).
    pub exited: bool,
    seq: u64,
}

/// The cache.
#[derive(Debug)]
pub struct ProcessCache {
    node: String,
    capacity: usize,
    by_pid: HashMap<u32, ProcInfo>,
    /// Running processes in insertion order: seq -> pid.
    order: BTreeMap<u64, u32>,
    /// Exited processes in insertion order (evicted first).
    exited: BTreeMap<u64, u32>,
    next_seq: u64,
    evictions: u64,
    boot_offset: Duration,
    /// Network namespace inode -> the pod of the endpoint living there.
    pods: HashMap<u32, Pod>,
}

/// Splits a NUL-separated command line into (argv\[0\], the rest joined
/// by spaces), the way Tetragon reports `arguments`.
pub fn split_cmdline(raw: &[u8]) -> (String, String) {
    let mut parts = raw
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let first = parts.next().unwrap_or_default();
    (first, parts.collect::<Vec<_>>().join(" "))
}

/// Whether `path` is in a binary set (the user-space twin of the kernel's
/// exec-time check, for processes found by the `/proc` scan).
pub fn binary_in_set(path: &str, set: &BinarySet) -> bool {
    set.values.iter().any(|v| match set.kind {
        BinaryMatch::Exact => path == v,
        BinaryMatch::Prefix => path.starts_with(v.as_str()),
        BinaryMatch::Postfix => path.ends_with(v.as_str()),
    })
}

/// Nanoseconds since boot (CLOCK_BOOTTIME), the clock of process ktimes.
pub fn boottime_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000) + t.tv_nsec() as u64)
        .unwrap_or(0)
}

impl ProcessCache {
    /// An empty cache for node `node` holding at most `capacity` processes.
    pub fn new(node: &str, capacity: usize) -> Self {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            node: node.to_owned(),
            capacity: capacity.max(16),
            by_pid: HashMap::new(),
            order: BTreeMap::new(),
            exited: BTreeMap::new(),
            next_seq: 0,
            evictions: 0,
            boot_offset: now.saturating_sub(Duration::from_nanos(boottime_ns())),
            pods: HashMap::new(),
        }
    }

    /// Processes cached.
    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    /// Evictions so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Wall-clock time of a boot-time timestamp.
    pub fn timestamp(&self, ktime: u64) -> Option<Timestamp> {
        let t = self.boot_offset + Duration::from_nanos(ktime);
        Timestamp::new(t.as_secs() as i64, t.subsec_nanos()).ok()
    }

    /// A process entry from the kernel.
    pub fn insert(&mut self, p: &Proc, binary: String, arguments: String, flags: &'static str) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(old) = self.by_pid.remove(&p.pid) {
            self.order.remove(&old.seq);
            self.exited.remove(&old.seq);
        }
        self.by_pid.insert(
            p.pid,
            ProcInfo {
                pid: p.pid,
                ppid: p.ppid,
                ktime: p.ktime,
                parent_ktime: p.parent_ktime,
                binary,
                arguments,
                uid: p.uid,
                auid: p.auid,
                flags,
                net_ns: p.net_ns,
                cgroup_id: p.cgroup_id,
                exited: false,
                seq,
            },
        );
        self.order.insert(seq, p.pid);
        self.evict();
    }

    /// A fork: the child runs the parent's image until it execs.
    pub fn fork(&mut self, p: &Proc) {
        let (binary, arguments) = self
            .by_pid
            .get(&p.ppid)
            .map(|x| (x.binary.clone(), x.arguments.clone()))
            .unwrap_or_default();
        self.insert(p, binary, arguments, "clone");
    }

    /// Marks a process exited; returns it.
    pub fn exit(&mut self, pid: u32) -> Option<ProcInfo> {
        let p = self.by_pid.get_mut(&pid)?;
        if !p.exited {
            p.exited = true;
            self.order.remove(&p.seq);
            self.exited.insert(p.seq, pid);
        }
        Some(p.clone())
    }

    /// The process `pid`.
    pub fn get(&self, pid: u32) -> Option<&ProcInfo> {
        self.by_pid.get(&pid)
    }

    fn evict(&mut self) {
        while self.by_pid.len() > self.capacity {
            let Some((_, pid)) = self.exited.pop_first().or_else(|| self.order.pop_first()) else {
                return;
            };
            self.by_pid.remove(&pid);
            self.evictions += 1;
        }
    }

    /// The event form of a process.
    pub fn process(&self, p: &ProcInfo, tid: Option<u32>) -> Process {
        Process {
            exec_id: exec_id(&self.node, p.ktime, p.pid),
            pid: Some(p.pid),
            uid: Some(p.uid),
            binary: p.binary.clone(),
            arguments: p.arguments.clone(),
            flags: p.flags.to_owned(),
            start_time: self.timestamp(p.ktime),
            auid: Some(p.auid),
            parent_exec_id: if p.ppid == 0 {
                String::new()
            } else {
                exec_id(&self.node, p.parent_ktime, p.ppid)
            },
            tid: Some(tid.unwrap_or(p.pid)),
            pod: self.pod_of(p),
            in_init_tree: None,
            ..Process::default()
        }
    }

    /// Sets the pods by network namespace inode (from the endpoint
    /// registry).
    pub fn set_pods(&mut self, pods: HashMap<u32, Pod>) {
        self.pods = pods;
    }

    /// The pod a process runs in, if it is an endpoint's.
    pub fn pod_of(&self, p: &ProcInfo) -> Option<Pod> {
        if p.net_ns == 0 {
            return None;
        }
        self.pods.get(&p.net_ns).cloned()
    }

    /// The event form of an unknown process (only its pid).
    pub fn unknown(&self, pid: u32, tid: u32) -> Process {
        Process {
            pid: Some(pid),
            tid: Some(tid),
            flags: "unknown".into(),
            ..Process::default()
        }
    }

    /// The parent only (what hook events report).
    pub fn parent(&self, p: &ProcInfo) -> Option<Process> {
        if p.ppid == 0 || p.ppid == p.pid {
            return None;
        }
        self.by_pid.get(&p.ppid).map(|a| self.process(a, None))
    }

    /// The parent and the ancestors beyond it (nearest first).
    pub fn lineage(&self, p: &ProcInfo) -> (Option<Process>, Vec<Process>) {
        let mut chain = Vec::new();
        let mut cur = p.ppid;
        let mut seen = vec![p.pid];
        while cur != 0 && chain.len() <= MAX_ANCESTORS && !seen.contains(&cur) {
            seen.push(cur);
            let Some(a) = self.by_pid.get(&cur) else {
                break;
            };
            chain.push(self.process(a, None));
            cur = a.ppid;
        }
        let mut it = chain.into_iter();
        let parent = it.next();
        (parent, it.collect())
    }
}

/// One process read from `/proc/<pid>`.
#[derive(Debug, Clone)]
pub struct ScannedProc {
    /// The kernel entry (ktime from the start time).
    pub proc: Proc,
    /// `/proc/<pid>/exe`.
    pub binary: String,
    /// Arguments after argv\[0\].
    pub arguments: String,
}

/// What the agent reads from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ProcStatus {
    pub(crate) ppid: u32,
    /// Real uid (`Uid`'s first column).
    pub(crate) uid: u32,
    /// The pid in the innermost pid namespace (`NSpid`'s last column).
    pub(crate) ns_pid: u32,
    pub(crate) capabilities: Capabilities,
}

impl ProcStatus {
    pub(crate) fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let hex = || u64::from_str_radix(value, 16).unwrap_or(0);
            match key {
                "PPid" => s.ppid = value.parse().unwrap_or(0),
                "Uid" => {
                    s.uid = value
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                }
                "NSpid" => {
                    s.ns_pid = value
                        .split_whitespace()
                        .last()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                }
                "CapInh" => s.capabilities.inheritable = hex(),
                "CapPrm" => s.capabilities.permitted = hex(),
                "CapEff" => s.capabilities.effective = hex(),
                _ => {}
            }
        }
        s
    }
}

/// Reads every process of `/proc` (kernel threads are skipped).
pub fn scan_proc() -> Vec<ScannedProc> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .unwrap_or(100) as u64;
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    let mut starts: HashMap<u32, u64> = HashMap::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let base = entry.path();
        let Ok(stat) = std::fs::read_to_string(base.join("stat")) else {
            continue;
        };
        // The command may contain spaces and parentheses: fields follow the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ppid = fields
            .get(1)
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        let start = fields
            .get(19)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let Ok(exe) = std::fs::read_link(base.join("exe")) else {
            continue; // kernel thread or gone
        };
        let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
        let (_, arguments) = split_cmdline(&cmdline);
        let uid =
            std::fs::read_to_string(base.join("status")).map_or(0, |s| ProcStatus::parse(&s).uid);
        let auid = std::fs::read_to_string(base.join("loginuid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(u32::MAX);
        let ktime = start.saturating_mul(1_000_000_000 / ticks);
        starts.insert(pid, ktime);
        out.push(ScannedProc {
            proc: Proc {
                ktime,
                pid,
                ppid,
                nspid: pid,
                uid,
                auid,
                flags: palisade_bpf::abi::runtime::PROC_PROCFS,
                net_ns: namespace_inode(pid, NamespaceKind::Net).map_or(0, |i| i as u32),
                ..Proc::default()
            },
            binary: exe.to_string_lossy().into_owned(),
            arguments,
        });
    }
    for s in &mut out {
        s.proc.parent_ktime = starts.get(&s.proc.ppid).copied().unwrap_or(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, ppid: u32, ktime: u64) -> Proc {
        Proc {
            pid,
            ppid,
            ktime,
            ..Proc::default()
        }
    }

    #[test]
    fn lineage_and_exec_ids() {
        let mut c = ProcessCache::new("node1", 100);
        c.insert(
            &proc(1, 0, 10),
            "/sbin/init".into(),
            String::new(),
            "procFS",
        );
        c.insert(
            &proc(50, 1, 20),
            "/bin/bash".into(),
            String::new(),
            "execve",
        );
        let mut p = proc(60, 50, 30);
        p.parent_ktime = 20;
        c.insert(&p, "/usr/bin/id".into(), "-u".into(), "execve");
        let me = c.get(60).expect("cached").clone();
        let (parent, ancestors) = c.lineage(&me);
        assert_eq!(c.parent(&me), parent);
        assert_eq!(parent.expect("parent").binary, "/bin/bash");
        assert_eq!(ancestors.len(), 1);
        assert_eq!(ancestors[0].binary, "/sbin/init");
        let ev = c.process(&me, None);
        assert_eq!(ev.exec_id, exec_id("node1", 30, 60));
        assert_eq!(ev.parent_exec_id, exec_id("node1", 20, 50));
    }

    #[test]
    fn bounded_with_exited_evicted_first() {
        let mut c = ProcessCache::new("n", 16);
        for pid in 1..=16 {
            c.insert(
                &proc(pid, 0, u64::from(pid)),
                "/x".into(),
                String::new(),
                "execve",
            );
        }
        c.exit(10);
        c.insert(&proc(100, 0, 100), "/y".into(), String::new(), "execve");
        assert_eq!(c.len(), 16);
        assert!(c.get(10).is_none(), "the exited process goes first");
        assert!(c.get(1).is_some());
        c.insert(&proc(101, 0, 101), "/y".into(), String::new(), "execve");
        assert!(c.get(1).is_none(), "then the oldest");
        assert_eq!(c.evictions(), 2);
    }

    #[test]
    fn cmdline_and_binsets() {
        assert_eq!(
            split_cmdline(b"/bin/ls\0-l\0/tmp\0"),
            ("/bin/ls".to_owned(), "-l /tmp".to_owned())
        );
        let set = BinarySet {
            kind: BinaryMatch::Postfix,
            values: vec!["/sh".into()],
        };
        assert!(binary_in_set("/usr/bin/sh", &set));
        assert!(!binary_in_set("/usr/bin/bash", &set));
    }

    #[test]
    fn status_gives_ppid_namespace_pid_and_capabilities() {
        let s = ProcStatus::parse(
            "Name:\tsh\nPPid:\t17\nUid:\t1000\t1000\t1000\t1000\nNSpid:\t4242\t7\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t0000000000200000\n",
        );
        assert_eq!(s.ppid, 17);
        assert_eq!(s.uid, 1000);
        assert_eq!(s.ns_pid, 7);
        assert_eq!(s.capabilities.permitted, 0x1ff_ffff_ffff);
        assert_eq!(s.capabilities.effective, 1 << 21);
        assert_eq!(ProcStatus::parse("garbage"), ProcStatus::default());
    }

    #[test]
    fn scan_finds_ourselves() {
        let me = std::process::id();
        let all = scan_proc();
        let mine = all.iter().find(|s| s.proc.pid == me).expect("this process");
        assert!(!mine.binary.is_empty());
        assert!(mine.proc.ktime > 0);
    }
}
