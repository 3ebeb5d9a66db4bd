//! Runtime-enforcement benchmarks (TracingPolicy): what the hooks cost a
//! syscall (`runtime-syscalls`), how many events per second the pipeline
//! carries without loss (`runtime-events`), and how much memory the process
//! cache takes (`runtime-procs`). Shared here: switching the agent between
//! policy sets, the kernel-side counters, and what else is attached to the
//! machine's tracing hooks.
//!
//! Runtime enforcement is host-wide: its programs see every process of the
//! machine, not only the node namespace's, and so do other runs' programs
//! see ours. Every measurement therefore records the tracing links of
//! other processes that were attached meanwhile.

pub mod child;
pub mod events;
pub mod procs;
pub mod ramp;
pub mod syscalls;
pub mod vm_syscalls;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use palisade_api::{Request, Response, RuntimeStatus};
use palisade_tests::Node;

/// The ten typical policies of `runtime-syscalls` (file name, YAML).
pub const TYPICAL_POLICIES: [(&str, &str); 10] = [
    (
        "01-setuid-root-kill.yaml",
        include_str!("policies/01-setuid-root-kill.yaml"),
    ),
    (
        "02-sensitive-file-open.yaml",
        include_str!("policies/02-sensitive-file-open.yaml"),
    ),
    (
        "03-passwd-write.yaml",
        include_str!("policies/03-passwd-write.yaml"),
    ),
    ("04-mount.yaml", include_str!("policies/04-mount.yaml")),
    ("05-ptrace.yaml", include_str!("policies/05-ptrace.yaml")),
    (
        "06-clock-settime.yaml",
        include_str!("policies/06-clock-settime.yaml"),
    ),
    (
        "07-pivot-root.yaml",
        include_str!("policies/07-pivot-root.yaml"),
    ),
    (
        "08-linkat-passwd.yaml",
        include_str!("policies/08-linkat-passwd.yaml"),
    ),
    (
        "09-symlinkat-passwd.yaml",
        include_str!("policies/09-symlinkat-passwd.yaml"),
    ),
    (
        "10-credential-changes.yaml",
        include_str!("policies/10-credential-changes.yaml"),
    ),
];

/// One policy on the hot tracepoint `raw_syscalls/sys_enter` whose filter
/// matches nothing.
pub const SYS_ENTER_NOMATCH: (&str, &str) = (
    "sys-enter-nomatch.yaml",
    include_str!("policies/sys-enter-nomatch.yaml"),
);

/// The same on ids no kernel has syscall tracepoints for, so that it is
/// not routed to them (kernels where kexec has tracepoints route
/// [`SYS_ENTER_NOMATCH`]).
pub const SYS_ENTER_NOMATCH_HOT: (&str, &str) = (
    "sys-enter-nomatch-hot.yaml",
    include_str!("policies/sys-enter-nomatch-hot.yaml"),
);

/// `pal_rt_counters` (per-CPU, summed), the kernel side of the runtime's
/// accounting; indexes are `PAL_RT_CNT_*` of `bpf/include/abi/runtime.h`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Events lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Hook events of processes without an entry in `pal_procs`.
    pub proc_missing: u64,
    /// Hook runs that evaluated selectors.
    pub hook_runs: u64,
    /// Signals that could not be sent.
    pub signal_failed: u64,
    /// Events suppressed by rateLimit.
    pub rate_limited: u64,
    /// Hook runs the head prefilter spared.
    pub head_skips: u64,
    /// Runs of `raw_syscalls` hooks the syscall-id prefilter spared.
    pub id_skips: u64,
}

impl KernelCounters {
    /// `self - before`, per counter.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            ringbuf_full: self.ringbuf_full.saturating_sub(before.ringbuf_full),
            proc_missing: self.proc_missing.saturating_sub(before.proc_missing),
            hook_runs: self.hook_runs.saturating_sub(before.hook_runs),
            signal_failed: self.signal_failed.saturating_sub(before.signal_failed),
            rate_limited: self.rate_limited.saturating_sub(before.rate_limited),
            head_skips: self.head_skips.saturating_sub(before.head_skips),
            id_skips: self.id_skips.saturating_sub(before.id_skips),
        }
    }

    /// Hooks the syscalls reached: those that ran and those a prefilter
    /// (head or syscall id) turned away.
    pub fn hooks_reached(&self) -> u64 {
        self.hook_runs + self.head_skips + self.id_skips
    }

    /// Parses `bpftool -j map dump` of the per-CPU counter array (plain or
    /// BTF-formatted).
    pub fn from_bpftool(v: &serde_json::Value) -> anyhow::Result<Self> {
        let mut sums = [0u64; 8];
        for entry in v.as_array().context("bpftool map dump: not a list")? {
            let e = entry.get("formatted").unwrap_or(entry);
            let key = parse_u64(&e["key"]).context("bpftool map dump: entry without key")?;
            let total: u64 = e["values"]
                .as_array()
                .context("bpftool map dump: entry without per-CPU values")?
                .iter()
                .map(|c| parse_u64(&c["value"]).unwrap_or(0))
                .sum();
            if let Some(slot) = sums.get_mut(key as usize) {
                *slot = total;
            }
        }
        Ok(Self {
            ringbuf_full: sums[0],
            proc_missing: sums[1],
            hook_runs: sums[2],
            signal_failed: sums[3],
            rate_limited: sums[4],
            head_skips: sums[5],
            id_skips: sums[6],
        })
    }
}

/// A number as bpftool prints it: a JSON number, or (without BTF) a list
/// of little-endian hex byte strings.
fn parse_u64(v: &serde_json::Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let bytes = v.as_array()?;
    let mut out = 0u64;
    for (i, b) in bytes.iter().enumerate().take(8) {
        let text = b.as_str()?;
        let byte = u64::from_str_radix(text.trim_start_matches("0x"), 16).ok()?;
        out |= byte << (8 * i);
    }
    Some(out)
}

/// Runs `bpftool -j <args>` in the host's namespaces; its JSON.
pub fn bpftool(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running bpftool (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "bpftool {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("bpftool {} output", args.join(" ")))
}

/// The agent's runtime pins: the newest generation `<bpf_root>/runtime/g<N>`
/// (maps, and the links of what is attached under `links/`); `None` when
/// nothing is pinned.
pub fn generation(node: &Node) -> Option<PathBuf> {
    let root = node.bpf_root().join("runtime");
    std::fs::read_dir(&root)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix('g')?
                .parse::<u64>()
                .ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
}

/// The link pins of the agent's generation (`pal_exec`, `pal_sys_enter`,
/// `hook-<id>`, ...): what is attached.
pub fn attached(node: &Node) -> Vec<String> {
    generation(node).map_or_else(Vec::new, |gen| link_pins(&gen))
}

/// The link pins under generation `gen`'s `links/`, sorted.
fn link_pins(gen: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(gen.join("links"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// The runtime's kernel counters of `node`'s generation (zero when nothing
/// is pinned: every agent start makes a new generation with new counters).
pub fn kernel_counters(node: &Node) -> anyhow::Result<KernelCounters> {
    let Some(dir) = generation(node) else {
        return Ok(KernelCounters::default());
    };
    let path = dir.join("pal_rt_counters");
    let p = path.to_string_lossy();
    KernelCounters::from_bpftool(&bpftool(&["map", "dump", "pinned", &p])?)
}

/// A topology of node `n1` for the runtime benchmarks: runtime enforcement
/// on, and detached when the agent stops (the default keeps the pinned
/// hooks enforcing), so that a stopped agent leaves no program behind.
pub fn topology(verbose: bool) -> palisade_tests::TopologyBuilder {
    palisade_tests::Topology::builder()
        .agent_setting("runtime_enforcement", true)
        .agent_setting("keep_runtime_enforcement", false)
        .verbose(verbose)
}

/// Link types whose programs run in a task's context (syscalls, tracepoints,
/// function hooks), as bpftool names them.
const TRACING_LINKS: [&str; 5] = [
    "raw_tracepoint",
    "tracing",
    "perf_event",
    "kprobe_multi",
    "uprobe_multi",
];

/// A BPF program a process holds, from `/proc/<pid>/fdinfo` (this bpftool
/// cannot show which process holds what).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldProg {
    /// Program id.
    pub id: u64,
    /// Runs so far (counted while `kernel.bpf_stats_enabled` is 1).
    pub run_cnt: u64,
    /// Time in the program so far (idem).
    pub run_time_ns: u64,
}

/// Parses one fdinfo text: a program, or a link (its id), or neither.
fn parse_fdinfo(text: &str) -> (Option<HeldProg>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(link) = field("link_id:") {
        return (None, Some(link));
    }
    if text.lines().any(|l| l.starts_with("prog_type:")) {
        if let Some(id) = field("prog_id:") {
            return (
                Some(HeldProg {
                    id,
                    run_cnt: field("run_cnt:").unwrap_or(0),
                    run_time_ns: field("run_time_ns:").unwrap_or(0),
                }),
                None,
            );
        }
    }
    (None, None)
}

/// The BPF programs and link ids process `pid` holds descriptors of.
pub fn held_by(pid: u32) -> anyhow::Result<(Vec<HeldProg>, Vec<u64>)> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut progs = Vec::new();
    let mut links = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        // Descriptors come and go; one that vanished is not an error.
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        match parse_fdinfo(&text) {
            (Some(p), _) => progs.push(p),
            (_, Some(l)) => links.push(l),
            _ => {}
        }
    }
    Ok((progs, links))
}

/// BPF links on tracing hooks that are not `node`'s agent's (neither held
/// by its process nor pinned in its generation): other runs on this
/// machine whose programs our workloads also pass through.
pub fn foreign_tracing_links(node: &Node) -> anyhow::Result<usize> {
    let mut ours = match node.agent_pid() {
        Some(pid) => held_by(pid)?.1,
        None => Vec::new(),
    };
    if let Some(gen) = generation(node) {
        for name in link_pins(&gen) {
            let pin = gen.join("links").join(&name);
            let p = pin.to_string_lossy();
            // A pin removed meanwhile is not ours any more.
            if let Ok(v) = bpftool(&["link", "show", "pinned", &p]) {
                ours.extend(v["id"].as_u64());
            }
        }
    }
    let v = bpftool(&["link", "show"])?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            l["type"]
                .as_str()
                .is_some_and(|t| TRACING_LINKS.contains(&t))
        })
        .filter(|l| !l["id"].as_u64().is_some_and(|id| ours.contains(&id)))
        .count())
}

/// Names (`name#id`) and statistics of the BPF programs `agent` holds.
pub fn agent_programs(agent: u32) -> anyhow::Result<Vec<(String, HeldProg)>> {
    let (held, _) = held_by(agent)?;
    let v = bpftool(&["prog", "show"])?;
    let mut out: Vec<(String, HeldProg)> = held
        .into_iter()
        .map(|p| {
            let name = v
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["id"].as_u64() == Some(p.id))
                .and_then(|x| x["name"].as_str())
                .unwrap_or("?")
                .to_owned();
            (name, p)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
    Ok(out)
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// What one of the agent's programs did while statistics were on.
#[derive(Debug, Clone)]
pub struct ProgRuns {
    /// `name#id`.
    pub name: String,
    /// Runs.
    pub runs: u64,
    /// Time in the program.
    pub ns: u64,
}

impl ProgRuns {
    /// Average time per run.
    pub fn ns_per_run(&self) -> f64 {
        self.ns as f64 / self.runs.max(1) as f64
    }
}

/// Runs `f` with the kernel's BPF run-time statistics on
/// (`kernel.bpf_stats_enabled`, restored afterwards, also on error); the
/// runs and time of each program of `agent` that ran meanwhile.
pub fn with_bpf_stats<T>(
    agent: u32,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(Vec<ProgRuns>, T)> {
    let old = std::fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
    std::fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
    let measured = (|| {
        let before = agent_programs(agent)?;
        let out = f()?;
        anyhow::Ok((before, agent_programs(agent)?, out))
    })();
    let restored = std::fs::write(BPF_STATS, old.trim());
    let (before, after, out) = measured?;
    restored.with_context(|| format!("restoring {BPF_STATS}"))?;
    let progs = after
        .into_iter()
        .filter_map(|(name, p)| {
            let (c0, n0) = before
                .iter()
                .find(|b| b.1.id == p.id)
                .map_or((0, 0), |b| (b.1.run_cnt, b.1.run_time_ns));
            let runs = p.run_cnt.saturating_sub(c0);
            (runs > 0).then(|| ProgRuns {
                name: format!("{name}#{}", p.id),
                runs,
                ns: p.run_time_ns.saturating_sub(n0),
            })
        })
        .collect();
    Ok((progs, out))
}

/// `/proc/loadavg`'s first three fields.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The agent's runtime status.
pub fn runtime_status(node: &Node) -> anyhow::Result<RuntimeStatus> {
    super::status(node)?
        .runtime
        .context("the agent reports no runtime enforcement (see its log)")
}

/// Applies TracingPolicy YAML through the API.
pub fn apply_tracing(node: &Node, source: &str, yaml: &str) -> anyhow::Result<()> {
    let req = Request::TracingPolicyApply {
        source: source.to_owned(),
        yaml: yaml.to_owned(),
    };
    match node.client().call(&req).context("tracingpolicy add")? {
        Response::TracingPolicies { .. } | Response::Done => Ok(()),
        other => bail!("tracingpolicy add {source}: {other:?}"),
    }
}

/// (Re)starts the agent of `node` with exactly `policies` (applied through
/// the API after start; those a previous start saved are removed first).
pub fn start_with(node: &Node, policies: &[(&str, &str)]) -> anyhow::Result<()> {
    stop(node)?;
    let saved = node.dir().join("state/tracingpolicies");
    if saved.exists() {
        std::fs::remove_dir_all(&saved).with_context(|| format!("removing {}", saved.display()))?;
    }
    node.start_agent()?;
    for (name, yaml) in policies {
        apply_tracing(node, name, yaml)?;
    }
    let st = runtime_status(node)?;
    let want = policies
        .iter()
        .map(|(_, y)| y.matches("kind: TracingPolicy").count())
        .sum::<usize>();
    if st.policies != want {
        bail!(
            "the agent has {} tracing policies in force, {want} were applied",
            st.policies
        );
    }
    Ok(())
}

/// Stops the agent and checks that it detached everything (no generation
/// left pinned).
pub fn stop(node: &Node) -> anyhow::Result<()> {
    node.stop_agent(false)?;
    if let Some(g) = generation(node) {
        bail!(
            "the stopped agent left {} pinned (is keep_runtime_enforcement off?)",
            g.display()
        );
    }
    Ok(())
}

/// Waits until the agent has delivered every event the kernel handed it:
/// `events_delivered` unchanged for `quiet` (bounded by `timeout`). Returns
/// the final status and when the last change was seen.
pub fn wait_drained(
    node: &Node,
    quiet: Duration,
    timeout: Duration,
) -> anyhow::Result<(RuntimeStatus, Instant)> {
    let start = Instant::now();
    let mut last = runtime_status(node)?;
    let mut changed = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = runtime_status(node)?;
        if now.events_delivered != last.events_delivered {
            changed = Instant::now();
            last = now;
        } else if changed.elapsed() >= quiet {
            return Ok((now, changed));
        }
        if start.elapsed() > timeout {
            bail!(
                "the agent was still delivering events after {} s",
                timeout.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_bpftool() {
        let formatted = serde_json::json!([
            {"key": 0, "values": [{"cpu": 0, "value": 3}, {"cpu": 1, "value": 4}]},
            {"key": 2, "values": [{"cpu": 0, "value": 10}, {"cpu": 1, "value": 0}]},
        ]);
        let c = KernelCounters::from_bpftool(&formatted).expect("parses");
        assert_eq!(c.ringbuf_full, 7);
        assert_eq!(c.hook_runs, 10);
        let raw = serde_json::json!([
            {"key": ["0x02", "0x00", "0x00", "0x00"],
             "values": [{"cpu": 0, "value": ["0x01", "0x01", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00"]}]},
        ]);
        assert_eq!(
            KernelCounters::from_bpftool(&raw)
                .expect("parses")
                .hook_runs,
            257
        );
        let later = KernelCounters { hook_runs: 15, ..c };
        assert_eq!(later.since(&c).hook_runs, 5);
        assert_eq!(c.since(&later).hook_runs, 0);
    }

    #[test]
    fn fdinfo_of_programs_and_links() {
        let prog = "pos:\t0\nflags:\t02000002\nprog_type:\t17\nprog_jited:\t1\nprog_tag:\t452bd830ecdd8144\nmemlock:\t8192\nprog_id:\t6715\nrun_time_ns:\t1200\nrun_cnt:\t3\n";
        assert_eq!(
            parse_fdinfo(prog),
            (
                Some(HeldProg {
                    id: 6715,
                    run_cnt: 3,
                    run_time_ns: 1200
                }),
                None
            )
        );
        let link = "pos:\t0\nlink_type:\traw_tracepoint\nlink_id:\t13628\nprog_tag:\t452bd830ecdd8144\nprog_id:\t6715\ntp_name:\tsched_process_exec\n";
        assert_eq!(parse_fdinfo(link), (None, Some(13628)));
        let map = "pos:\t0\nmap_type:\t9\nmap_id:\t14777\n";
        assert_eq!(parse_fdinfo(map), (None, None));
    }

    #[test]
    fn policies_are_tracing_policies() {
        for (name, yaml) in TYPICAL_POLICIES
            .iter()
            .chain([&SYS_ENTER_NOMATCH, &SYS_ENTER_NOMATCH_HOT])
        {
            assert_eq!(
                yaml.matches("kind: TracingPolicy").count(),
                1,
                "{name} holds one policy"
            );
        }
    }
}
