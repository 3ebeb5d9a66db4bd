//! `palisade-bench runtime-syscalls`: what runtime enforcement adds to a
//! syscall. A child process pinned to one CPU runs `open` + `close` of one
//! file N times; measured with no agent (baseline), with the agent and no
//! policy, with ten typical policies, and with one policy on the hot
//! tracepoint `raw_syscalls/sys_enter` whose filter matches nothing.
//! Modes alternate in every round (the order rotates), medians over rounds.
//!
//! No agent means no program: the runtime's programs are attached through
//! links the agent process holds (none is pinned), so stopping the agent
//! detaches them; checked with the pinned `pal_rt_counters`, whose hook
//! runs must not move in the baseline and must move by at least the
//! expected number in the policy modes.

use std::time::Duration;

use anyhow::{bail, Context};
use aya::programs::{FEntry, RawTracePoint, TracePoint};
use aya::{Btf, Ebpf};
use palisade_bpf::BENCH_FLOOR_OBJECT;
use palisade_tests::Node;
use serde_json::json;

use super::child::{self, Workload};
use super::{
    attached, foreign_tracing_links, kernel_counters, loadavg, start_with, stop, topology,
    with_bpf_stats, SYS_ENTER_NOMATCH, SYS_ENTER_NOMATCH_HOT, TYPICAL_POLICIES,
};
use crate::bench::{agent_cpu_secs, f, median, say, Report, Table};

/// Goals of issue 3: time with policies / time without agent.
const TYPICAL_GOAL: f64 = 1.05;
const NOMATCH_GOAL: f64 = 1.10;

/// Options of `palisade-bench runtime-syscalls`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Timed open+close pairs per measurement.
    pub iterations: u64,
    /// Untimed pairs before them.
    pub warmup: u64,
    /// Rounds (each measures every mode).
    pub rounds: usize,
    /// CPU the loop is pinned to (`None`: not pinned).
    pub cpu: Option<usize>,
    /// One more run per policy mode with the kernel's BPF statistics on:
    /// each program's runs and time.
    pub bpf_stats: bool,
    /// Harness progress on stderr.
    pub verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    NoAgent,
    AgentOnly,
    Typical,
    /// The typical set without its two `sys_openat` policies: no hook on
    /// the loop's syscalls.
    TypicalOffLoop,
    SysEnterNoMatch,
    /// The same on ids without syscall tracepoints: never routed.
    SysEnterNoMatchHot,
    /// No agent; a program of `bench_floor.c` attached.
    Floor(Floor),
}

/// The programs of `bench_floor.c`: what the kernel charges for running
/// any program at a hook (empty ones), and the least a program filtering
/// on openat's path can do there (read its first 8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Floor {
    /// An empty program on `syscalls:sys_enter_openat`.
    Openat,
    /// A program on `syscalls:sys_enter_openat` that reads the path's
    /// first 8 bytes.
    OpenatPath,
    /// An empty raw tracepoint program on `raw_syscalls:sys_enter`.
    RawSysEnter,
    /// An empty fentry program on `__x64_sys_openat` (kernels with BPF
    /// trampolines: `runtime-syscalls-vm`).
    FentryOpenat,
    /// An fentry program on `__x64_sys_openat` that reads the path's first
    /// 8 bytes.
    FentryOpenatPath,
}

impl Floor {
    fn name(self) -> &'static str {
        match self {
            Self::Openat => "kernel floor: empty prog, sys_enter_openat",
            Self::OpenatPath => "kernel floor: prog reading the path, sys_enter_openat",
            Self::RawSysEnter => "kernel floor: empty raw prog, sys_enter",
            Self::FentryOpenat => "kernel floor: empty fentry, __x64_sys_openat",
            Self::FentryOpenatPath => "kernel floor: fentry reading the path, __x64_sys_openat",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::Openat => "floor_empty_sys_enter_openat",
            Self::OpenatPath => "floor_path_sys_enter_openat",
            Self::RawSysEnter => "floor_empty_raw_sys_enter",
            Self::FentryOpenat => "floor_empty_fentry_openat",
            Self::FentryOpenatPath => "floor_path_fentry_openat",
        }
    }

    /// Its program in `bench_floor.c`.
    fn program(self) -> &'static str {
        match self {
            Self::Openat => "pal_floor_tp",
            Self::OpenatPath => "pal_floor_tp_path",
            Self::RawSysEnter => "pal_floor_raw",
            Self::FentryOpenat => "pal_floor_fentry",
            Self::FentryOpenatPath => "pal_floor_fentry_path",
        }
    }
}

/// The typical policies that hook `sys_openat`, the loop's syscall.
pub(super) const ON_LOOP: [&str; 2] = ["02-sensitive-file-open.yaml", "03-passwd-write.yaml"];

const MODES: [Mode; 8] = [
    Mode::NoAgent,
    Mode::AgentOnly,
    Mode::Typical,
    Mode::TypicalOffLoop,
    Mode::Floor(Floor::Openat),
    Mode::Floor(Floor::OpenatPath),
    Mode::Floor(Floor::RawSysEnter),
    Mode::SysEnterNoMatch,
];

impl Mode {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::NoAgent => "no agent",
            Self::AgentOnly => "agent, no policy",
            Self::Typical => "agent, 10 typical policies",
            Self::TypicalOffLoop => "agent, the 8 not on openat/close",
            Self::SysEnterNoMatch => "agent, sys_enter tracepoint, no match",
            Self::SysEnterNoMatchHot => "agent, sys_enter, no match, unroutable ids",
            Self::Floor(f) => f.name(),
        }
    }

    pub(super) fn key(self) -> &'static str {
        match self {
            Self::NoAgent => "no_agent",
            Self::AgentOnly => "agent_no_policy",
            Self::Typical => "typical_10",
            Self::TypicalOffLoop => "typical_8_off_loop",
            Self::SysEnterNoMatch => "sys_enter_nomatch",
            Self::SysEnterNoMatchHot => "sys_enter_nomatch_hot",
            Self::Floor(f) => f.key(),
        }
    }

    /// The mode of `key`.
    pub(super) fn from_key(key: &str) -> Option<Self> {
        [
            Self::NoAgent,
            Self::AgentOnly,
            Self::Typical,
            Self::TypicalOffLoop,
            Self::SysEnterNoMatch,
            Self::SysEnterNoMatchHot,
            Self::Floor(Floor::Openat),
            Self::Floor(Floor::OpenatPath),
            Self::Floor(Floor::RawSysEnter),
            Self::Floor(Floor::FentryOpenat),
            Self::Floor(Floor::FentryOpenatPath),
        ]
        .into_iter()
        .find(|m| m.key() == key)
    }

    pub(super) fn policies<'a>(self, typical: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
        match self {
            Self::NoAgent | Self::AgentOnly | Self::Floor(_) => Vec::new(),
            Self::Typical => typical.iter().map(|(n, y)| (*n, y.as_str())).collect(),
            Self::TypicalOffLoop => typical
                .iter()
                .filter(|(n, _)| !ON_LOOP.contains(n))
                .map(|(n, y)| (*n, y.as_str()))
                .collect(),
            Self::SysEnterNoMatch => vec![SYS_ENTER_NOMATCH],
            Self::SysEnterNoMatchHot => vec![SYS_ENTER_NOMATCH_HOT],
        }
    }

    /// Whether the agent runs in this mode.
    pub(super) fn agent(self) -> bool {
        !matches!(self, Self::NoAgent | Self::Floor(_))
    }

    /// Hooks each open+close pair must reach at least (run, or turned
    /// away by a prefilter): the two `sys_openat` hooks of the typical
    /// set; the `raw_syscalls` hook, for both syscalls.
    pub(super) fn hooks_reached_per_pair(self) -> u64 {
        match self {
            Self::Typical | Self::SysEnterNoMatch | Self::SysEnterNoMatchHot => 2,
            _ => 0,
        }
    }
}

/// The goal of issue 3 for `mode`'s time / no agent, if it has one.
fn goal(mode: Mode) -> Option<f64> {
    match mode {
        Mode::Typical => Some(TYPICAL_GOAL),
        Mode::SysEnterNoMatch | Mode::SysEnterNoMatchHot => Some(NOMATCH_GOAL),
        _ => None,
    }
}

/// The times of a run's measurements, (round, mode, ns per open+close),
/// and what the reports derive from them.
pub(super) struct Timings(pub(super) Vec<(usize, Mode, f64)>);

impl Timings {
    /// The median time of `mode`.
    pub(super) fn median(&self, mode: Mode) -> f64 {
        let v: Vec<f64> = self
            .0
            .iter()
            .filter(|(_, m, _)| *m == mode)
            .map(|(_, _, ns)| *ns)
            .collect();
        median(&v)
    }

    /// `ns` over the no-agent time of the same round.
    pub(super) fn to_round_base(&self, round: usize, ns: f64) -> f64 {
        self.0
            .iter()
            .find(|(r, m, _)| *r == round && *m == Mode::NoAgent)
            .map_or(f64::NAN, |(_, _, base)| ns / base)
    }

    /// The medians table of `modes` (titled `title`), and the same as JSON
    /// fields: medians, ratios to no agent, and the goals.
    pub(super) fn summary(
        &self,
        title: String,
        modes: &[Mode],
    ) -> (Table, serde_json::Map<String, serde_json::Value>) {
        let base = self.median(Mode::NoAgent);
        let mut t = Table::new(
            title,
            &["mode", "ns per open+close", "time / no agent", "goal"],
        );
        let (mut medians, mut ratios, mut goals) = (
            serde_json::Map::new(),
            serde_json::Map::new(),
            serde_json::Map::new(),
        );
        for &mode in modes {
            let m = self.median(mode);
            let ratio = m / base;
            let goal = goal(mode);
            t.row(vec![
                mode.name().to_owned(),
                f(m, 1),
                f(ratio, 3),
                goal.map(|g| format!("<= {g:.2} {}", if ratio <= g { "met" } else { "MISSED" }))
                    .unwrap_or_default(),
            ]);
            medians.insert(mode.key().to_owned(), json!(m));
            ratios.insert(mode.key().to_owned(), json!(ratio));
            if let Some(g) = goal {
                goals.insert(mode.key().to_owned(), json!({"goal": g, "met": ratio <= g}));
            }
        }
        let mut fields = serde_json::Map::new();
        fields.insert("median_ns_per_pair".into(), medians.into());
        fields.insert("ratio_to_no_agent".into(), ratios.into());
        fields.insert("goals".into(), goals.into());
        (t, fields)
    }
}

/// One measurement.
#[derive(Debug, Clone)]
struct Sample {
    round: usize,
    mode: Mode,
    ns_per_pair: f64,
    hook_runs: u64,
    head_skips: u64,
    id_skips: u64,
    agent_cpu: f64,
    foreign_links: usize,
}

/// The typical policies as applied here, and a note when one had to be
/// adapted to this machine: `matchNamespaces` value `host_ns` is the
/// namespace of pid 1, which the agent reads from `/proc/1/ns`; where that
/// is not readable (some sandboxes deny it even to root) the benchmark
/// writes the inode of its own pid namespace instead, which is the host's
/// when it runs there (the agent's filter and its cost are the same).
fn typical_policies() -> (Vec<(&'static str, String)>, Option<String>) {
    use std::os::unix::fs::MetadataExt;
    let mut note = None;
    let own = std::fs::metadata("/proc/self/ns/pid").map(|m| m.ino());
    let host_readable = std::fs::metadata("/proc/1/ns/pid").is_ok();
    let list = TYPICAL_POLICIES
        .iter()
        .map(|(name, yaml)| {
            let mut y = (*yaml).to_owned();
            if let (false, Ok(ino), true) = (host_readable, &own, y.contains("\"host_ns\"")) {
                y = y.replace("\"host_ns\"", &format!("\"{ino}\""));
                note = Some(format!(
                    "{name}: /proc/1/ns/pid is not readable here, so host_ns was replaced by this process's pid namespace inode {ino}"
                ));
            }
            (*name, y)
        })
        .collect();
    (list, note)
}

/// Attaches the program of a floor mode (`None` for other modes);
/// dropping the result detaches it.
pub(super) fn attach_floor(mode: Mode) -> anyhow::Result<Option<Ebpf>> {
    let Mode::Floor(floor) = mode else {
        return Ok(None);
    };
    let mut ebpf = Ebpf::load(BENCH_FLOOR_OBJECT).context("loading bench_floor.o")?;
    let name = floor.program();
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("no {name} in bench_floor.o"))?;
    match floor {
        Floor::Openat | Floor::OpenatPath => {
            let p: &mut TracePoint = program.try_into()?;
            p.load().with_context(|| format!("loading {name}"))?;
            p.attach("syscalls", "sys_enter_openat")
                .with_context(|| format!("attaching {name} to syscalls/sys_enter_openat"))?;
        }
        Floor::RawSysEnter => {
            let p: &mut RawTracePoint = program.try_into()?;
            p.load().with_context(|| format!("loading {name}"))?;
            p.attach("sys_enter")
                .with_context(|| format!("attaching {name} to raw_syscalls/sys_enter"))?;
        }
        Floor::FentryOpenat | Floor::FentryOpenatPath => {
            let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
            let p: &mut FEntry = program.try_into()?;
            p.load("__x64_sys_openat", &btf)
                .with_context(|| format!("loading {name} on __x64_sys_openat"))?;
            p.attach()
                .with_context(|| format!("attaching {name} to __x64_sys_openat"))?;
        }
    }
    Ok(Some(ebpf))
}

/// Puts the node in `mode`: the agent stopped (with a floor program
/// attached, in floor modes), or (re)started with the mode's policies;
/// checks the runtime's programs are loaded.
fn switch(
    node: &Node,
    mode: Mode,
    typical: &[(&str, String)],
    floor: &mut Option<Ebpf>,
) -> anyhow::Result<()> {
    *floor = None;
    match mode {
        Mode::NoAgent => stop(node)?,
        Mode::Floor(_) => {
            stop(node)?;
            *floor = attach_floor(mode)?;
        }
        _ => {
            start_with(node, &mode.policies(typical))?;
            let links = attached(node);
            if !links.iter().any(|l| l == "pal_exec") {
                bail!("the agent runs but attached no process tracking (links {links:?})");
            }
            if matches!(mode, Mode::Typical | Mode::TypicalOffLoop)
                && !links.iter().any(|l| l.starts_with("sys-"))
            {
                bail!("syscall hooks are in force but no syscall tracepoint is attached (links {links:?})");
            }
            if mode == Mode::SysEnterNoMatch && !links.iter().any(|l| l.starts_with("hook-")) {
                bail!("the sys_enter policy is in force but its tracepoint is not attached (links {links:?})");
            }
            // Let the start-up work (the /proc scan, its events) settle.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}

fn measure(
    node: &Node,
    round: usize,
    mode: Mode,
    file: &str,
    opts: &Options,
) -> anyhow::Result<Sample> {
    let agent = node.agent_pid();
    if !mode.agent() && agent.is_some() {
        bail!("{}: the agent must not run", mode.name());
    }
    let foreign0 = foreign_tracing_links(node)?;
    let k0 = kernel_counters(node)?;
    let cpu0 = agent_cpu_secs(node);
    let r = child::run(&Workload::OpenClose {
        path: file.to_owned(),
        iterations: opts.iterations,
        warmup: opts.warmup,
        cpu: opts.cpu,
    })?;
    let cpu1 = agent_cpu_secs(node);
    let k = kernel_counters(node)?.since(&k0);
    let runs = k.hooks_reached();
    // In the floor modes, the floor program (this process's) is one of them.
    let own = usize::from(matches!(mode, Mode::Floor(_)));
    let foreign = foreign0
        .max(foreign_tracing_links(node)?)
        .saturating_sub(own);
    let ns = r["ns"].as_u64().context("workload result without ns")?;
    let pairs = opts.iterations + opts.warmup;
    let want = mode.hooks_reached_per_pair() * pairs;
    if runs < want {
        bail!(
            "{}: {runs} hooks reached (run or spared by a prefilter) for {pairs} open+close pairs, expected at least {want}: the hooks did not run",
            mode.name()
        );
    }
    if !mode.agent() && runs != 0 {
        bail!(
            "{}: no agent, yet {runs} hook runs were counted",
            mode.name()
        );
    }
    let ns_per_pair = ns as f64 / opts.iterations as f64;
    let secs = ns as f64 / 1e9;
    let s = Sample {
        round,
        mode,
        ns_per_pair,
        hook_runs: k.hook_runs,
        head_skips: k.head_skips,
        id_skips: k.id_skips,
        agent_cpu: if secs > 0.0 {
            (cpu1 - cpu0) / secs
        } else {
            0.0
        },
        foreign_links: foreign,
    };
    say(format!(
        "round {round} {:<38}: {:>7.1} ns per open+close, {runs} hook runs, agent {:.1}% CPU, {foreign} foreign tracing links",
        mode.name(),
        s.ns_per_pair,
        s.agent_cpu * 100.0
    ));
    Ok(s)
}

/// One more run of `mode` with BPF statistics on; per program that ran:
/// (name, runs per pair, ns per run).
fn bpf_stats_run(
    node: &Node,
    mode: Mode,
    typical: &[(&str, String)],
    file: &str,
    opts: &Options,
) -> anyhow::Result<Vec<(String, f64, f64)>> {
    switch(node, mode, typical, &mut None)?;
    let agent = node.agent_pid().context("the agent is not running")?;
    let (progs, ()) = with_bpf_stats(agent, || {
        child::run(&Workload::OpenClose {
            path: file.to_owned(),
            iterations: opts.iterations,
            warmup: 0,
            cpu: opts.cpu,
        })
        .map(drop)
    })?;
    Ok(progs
        .into_iter()
        .map(|p| {
            let ns = p.ns_per_run();
            (p.name, p.runs as f64 / opts.iterations as f64, ns)
        })
        .collect())
}

/// Runs the benchmark.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let load_start = loadavg();
    let topo = topology(opts.verbose)
        .build()
        .context("building the topology (node n1 with runtime enforcement)")?;
    let node = topo.node("n1")?;
    // A file nothing matches: in the run's directory (a path of typical length).
    let file = node.dir().join("open-target.txt");
    std::fs::write(&file, b"palisade-bench\n")
        .with_context(|| format!("writing {}", file.display()))?;
    let file = file.display().to_string();
    let (typical, adapted) = typical_policies();
    if let Some(n) = &adapted {
        say(n);
    }

    let mut samples: Vec<Sample> = Vec::new();
    let mut current: Option<Mode> = None;
    let mut floor = None;
    for round in 1..=opts.rounds {
        // Rotate the order so every mode is first and last in some round.
        let mut order = MODES;
        order.rotate_left((round - 1) % MODES.len());
        for mode in order {
            if current != Some(mode) {
                switch(node, mode, &typical, &mut floor)?;
                current = Some(mode);
            }
            samples.push(measure(node, round, mode, &file, opts)?);
        }
    }
    // The floor program must not run during the statistics runs.
    drop(floor);
    let mut stats = Vec::new();
    if opts.bpf_stats {
        for mode in [Mode::AgentOnly, Mode::Typical, Mode::SysEnterNoMatch] {
            stats.push((mode, bpf_stats_run(node, mode, &typical, &file, opts)?));
        }
    }
    let load_end = loadavg();

    let timings = Timings(
        samples
            .iter()
            .map(|s| (s.round, s.mode, s.ns_per_pair))
            .collect(),
    );
    let (mut t, summary) = timings.summary(
        format!(
            "runtime-syscalls: open+close of one file, {} pairs per measurement ({} warm-up), {} rounds, loop {} (medians)",
            opts.iterations,
            opts.warmup,
            opts.rounds,
            opts.cpu.map_or("not pinned".to_owned(), |c| format!("pinned to CPU {c}"))
        ),
        &MODES,
    );
    t.notes.push(format!(
        "load average at start {load_start}, at end {load_end}; file {file}"
    ));
    t.notes.extend(adapted.clone());

    let mut per = Table::new(
        "runtime-syscalls: every measurement, in run order",
        &[
            "round",
            "mode",
            "ns per pair",
            "/ no agent of the round",
            "hook runs",
            "spared by head prefilter",
            "spared by id prefilter",
            "agent CPU %",
            "foreign tracing links",
        ],
    );
    for s in &samples {
        per.row(vec![
            s.round.to_string(),
            s.mode.name().to_owned(),
            f(s.ns_per_pair, 1),
            f(timings.to_round_base(s.round, s.ns_per_pair), 3),
            s.hook_runs.to_string(),
            s.head_skips.to_string(),
            s.id_skips.to_string(),
            f(s.agent_cpu * 100.0, 1),
            s.foreign_links.to_string(),
        ]);
    }
    if samples.iter().any(|s| s.foreign_links > 0) {
        per.notes.push(
            "foreign tracing links: other processes had BPF programs on tracing hooks during some measurements; every syscall of the loop ran them too (in every mode)".into(),
        );
    }
    let mut tables = vec![t, per];
    if !stats.is_empty() {
        let mut b = Table::new(
            format!(
                "runtime-syscalls: the agent's programs during one more {}-pair run per mode with kernel.bpf_stats_enabled=1",
                opts.iterations
            ),
            &[
                "mode",
                "program",
                "runs per open+close",
                "ns per run",
                "ns per open+close",
            ],
        );
        for (mode, progs) in &stats {
            for (name, per_pair, ns) in progs {
                b.row(vec![
                    mode.name().to_owned(),
                    name.clone(),
                    f(*per_pair, 4),
                    f(*ns, 0),
                    f(per_pair * ns, 1),
                ]);
            }
        }
        b.notes.push("the kernel's own statistics add the time of reading the clock twice to every run; programs that ran for other processes (exec, fork, exit of the machine) are listed with their runs per pair".into());
        tables.push(b);
    }

    let mut json = json!({
        "benchmark": "runtime-syscalls",
        "options": {"iterations": opts.iterations, "warmup": opts.warmup, "rounds": opts.rounds,
                    "cpu": opts.cpu, "bpf_stats": opts.bpf_stats},
        "loadavg": {"start": load_start, "end": load_end},
        "policy_note": adapted,
        "policies": {
            "typical_10": TYPICAL_POLICIES.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "typical_8_off_loop_without": ON_LOOP,
            "sys_enter_nomatch": SYS_ENTER_NOMATCH.0,
        },
        "runs": samples.iter().map(|s| json!({
            "round": s.round, "mode": s.mode.key(), "ns_per_pair": s.ns_per_pair,
            "hook_runs": s.hook_runs, "head_skips": s.head_skips, "id_skips": s.id_skips, "agent_cpu": s.agent_cpu, "foreign_tracing_links": s.foreign_links,
        })).collect::<Vec<_>>(),
        "bpf_stats": stats.iter().map(|(mode, progs)| json!({
            "mode": mode.key(),
            "programs": progs.iter().map(|(n, per_pair, ns)| json!({"name": n, "runs_per_pair": per_pair, "ns_per_run": ns})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    if let Some(o) = json.as_object_mut() {
        o.extend(summary);
    }
    topo.cleanup()?;
    Ok(Report { tables, json })
}
