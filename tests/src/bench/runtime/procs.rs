//! `palisade-bench runtime-procs`: the process cache under many
//! short-lived processes. N processes (`/bin/true <arg>`, `batch` at a
//! time) are started and reaped with the agent running; the agent's memory,
//! the cache's size and its evictions are read at checkpoints. Baselines:
//! the agent's memory before (same agent, same run), and the time per
//! process with no agent at all.
//!
//! Memory per tracked process is the growth of the agent's anonymous
//! memory (`RssAnon`: its heap; `VmRSS` also counts the mapped binary)
//! between a warm checkpoint and the first checkpoint with a full cache,
//! divided by the processes added to the cache in between. Warm means the
//! fixed-size buffers that fill with the first events (the 4,096 recent
//! events the agent keeps for `palisade events`) are full already.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use palisade_tests::Node;
use serde_json::json;

use super::{
    bpftool, generation, loadavg, start_with, stop, topology, wait_drained, with_bpf_stats,
};
use crate::bench::{f, say, status_kib, vm_rss_kib, Report, Table};

/// Processes (two events each) after which the agent's recent-events
/// buffer (4,096 events) is full.
const WARM: u64 = 5_000;

/// Options of `palisade-bench runtime-procs`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Processes to start with the agent running.
    pub processes: u64,
    /// Processes started before the agent (baseline time per process).
    pub baseline: u64,
    /// Processes alive at once.
    pub batch: usize,
    /// The agent's `process_cache_size`.
    pub cache_size: usize,
    /// A checkpoint every this many processes.
    pub every: u64,
    /// Stop starting processes after this long (the report says so).
    pub max_seconds: u64,
    /// Afterwards, `stats_processes` more with the kernel's BPF statistics
    /// on: what process tracking costs per exec, fork and exit (0: skip).
    pub stats_processes: u64,
    /// Harness progress on stderr.
    pub verbose: bool,
}

/// One reading.
#[derive(Debug, Clone)]
struct Checkpoint {
    started: u64,
    rss_kib: u64,
    anon_kib: u64,
    cached: usize,
    evictions: u64,
    delivered: u64,
    lost: u64,
}

impl Checkpoint {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "started": self.started, "cached": self.cached, "evictions": self.evictions,
            "vm_rss_kib": self.rss_kib, "rss_anon_kib": self.anon_kib,
            "delivered": self.delivered, "lost": self.lost,
        })
    }
}

/// Anonymous memory growth per process added to the cache, from `a` to `b`
/// (bytes).
fn bytes_per_entry(a: &Checkpoint, b: &Checkpoint) -> f64 {
    let added = b.cached.saturating_sub(a.cached);
    (b.anon_kib as f64 - a.anon_kib as f64) * 1024.0 / added.max(1) as f64
}

/// Starts and reaps `n` processes, `batch` at a time; stops early at
/// `deadline`. Returns how many ran.
fn spawn_batch(first: u64, n: u64, batch: usize, deadline: Instant) -> anyhow::Result<u64> {
    let mut done = 0;
    while done < n {
        if Instant::now() > deadline {
            break;
        }
        let k = (n - done).min(batch as u64);
        let mut kids = Vec::with_capacity(k as usize);
        for j in 0..k {
            let child = Command::new("/bin/true")
                .arg(format!("palisade-bench-{}", first + done + j))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting /bin/true")?;
            kids.push(child);
        }
        for mut c in kids {
            let st = c.wait().context("waiting for /bin/true")?;
            if !st.success() {
                bail!("/bin/true exited with {st}");
            }
        }
        done += k;
    }
    Ok(done)
}

fn checkpoint(node: &Node, started: u64) -> anyhow::Result<Checkpoint> {
    let (st, _) = wait_drained(node, Duration::from_millis(300), Duration::from_secs(60))?;
    let pid = node.agent_pid().context("the agent is not running")?;
    Ok(Checkpoint {
        started,
        rss_kib: vm_rss_kib(pid)?,
        anon_kib: status_kib(pid, "RssAnon")?,
        cached: st.processes,
        evictions: st.process_evictions,
        delivered: st.events_delivered,
        lost: st.lost_ringbuf_full + st.lost_undecodable + st.lost_log_write,
    })
}

/// `pal_procs` as bpftool sees it: (max entries, memlock bytes, entries now).
fn procs_map(node: &Node) -> anyhow::Result<(u64, u64, usize)> {
    let path = generation(node)
        .context("the agent pinned no runtime generation")?
        .join("pal_procs");
    let p = path.to_string_lossy();
    let show = bpftool(&["map", "show", "pinned", &p])?;
    let dump = bpftool(&["map", "dump", "pinned", &p])?;
    Ok((
        show["max_entries"].as_u64().unwrap_or(0),
        show["bytes_memlock"].as_u64().unwrap_or(0),
        dump.as_array().map_or(0, Vec::len),
    ))
}

/// Runs the benchmark.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let load_start = loadavg();
    let topo = topology(opts.verbose)
        .agent_setting("process_cache_size", opts.cache_size as u64)
        .build()
        .context("building the topology (node n1 with runtime enforcement)")?;
    let node = topo.node("n1")?;
    let deadline = Instant::now() + Duration::from_secs(opts.max_seconds);

    // Baseline time per process: no agent, no program.
    stop(node)?;
    let t = Instant::now();
    let base_n = spawn_batch(0, opts.baseline, opts.batch, deadline)?;
    let base_us = t.elapsed().as_secs_f64() * 1e6 / base_n.max(1) as f64;
    say(format!(
        "no agent: {base_n} processes, {base_us:.0} us per process"
    ));

    start_with(node, &[])?;
    std::thread::sleep(Duration::from_secs(1));
    let map_start = procs_map(node)?;
    let mut points = vec![checkpoint(node, 0)?];
    say(format!(
        "agent started: {} processes cached, VmRSS {} KiB, RssAnon {} KiB",
        points[0].cached, points[0].rss_kib, points[0].anon_kib
    ));
    let t = Instant::now();
    let mut started = 0u64;
    let mut spawn_secs = 0.0;
    let mut stopped_early = false;
    while started < opts.processes {
        // The next checkpoint: the warm one first, then every `every`.
        let regular = (started / opts.every + 1) * opts.every;
        let next = if started < WARM {
            WARM.min(regular)
        } else {
            regular
        };
        let n = next.min(opts.processes) - started;
        let ts = Instant::now();
        let ran = spawn_batch(started, n, opts.batch, deadline)?;
        spawn_secs += ts.elapsed().as_secs_f64();
        started += ran;
        let c = checkpoint(node, started)?;
        say(format!(
            "{started} processes after {:.0} s: {} cached, {} evictions, VmRSS {} KiB, RssAnon {} KiB, {} lost",
            t.elapsed().as_secs_f64(),
            c.cached,
            c.evictions,
            c.rss_kib,
            c.anon_kib,
            c.lost
        ));
        points.push(c);
        if ran < n {
            stopped_early = true;
            say(format!(
                "stopping after {started} processes: --max-seconds {} reached",
                opts.max_seconds
            ));
            break;
        }
    }
    let with_us = spawn_secs * 1e6 / started.max(1) as f64;
    let stats = if opts.stats_processes > 0 {
        let agent = node.agent_pid().context("the agent is not running")?;
        let far = Instant::now() + Duration::from_secs(opts.max_seconds);
        let (progs, n) = with_bpf_stats(agent, || {
            spawn_batch(started, opts.stats_processes, opts.batch, far)
        })?;
        Some((progs, n))
    } else {
        None
    };
    let map_end = procs_map(node)?;
    let load_end = loadavg();
    let first = points[0].clone();
    let last = points.last().cloned().unwrap_or_else(|| first.clone());
    let cap = opts.cache_size.max(16);
    let warm = points.iter().find(|c| c.started >= WARM).cloned();
    // The first checkpoint with a full cache: memory per tracked process is
    // measured up to there; after it the cache only replaces entries.
    let full = points.iter().find(|c| c.cached >= cap).cloned();

    let mut t1 = Table::new(
        format!(
            "runtime-procs: {started} short-lived processes (/bin/true, {} at a time), process_cache_size {cap}",
            opts.batch
        ),
        &["metric", "baseline", "after", "per process"],
    );
    t1.row(vec![
        "agent VmRSS / RssAnon (KiB), start -> end".into(),
        format!("{} / {}", first.rss_kib, first.anon_kib),
        format!("{} / {}", last.rss_kib, last.anon_kib),
        String::new(),
    ]);
    // A cache that filled during the warm-up has no clean measurement.
    let full = full.filter(|fc| warm.as_ref().is_none_or(|w| fc.started > w.started));
    if let (Some(w), Some(fc)) = (&warm, &full) {
        t1.row(vec![
            format!(
                "RssAnon (KiB), warm ({} started) -> cache full ({} started)",
                w.started, fc.started
            ),
            w.anon_kib.to_string(),
            fc.anon_kib.to_string(),
            format!("{} B per tracked process", f(bytes_per_entry(w, fc), 0)),
        ]);
        t1.row(vec![
            "RssAnon (KiB), cache full -> end".into(),
            fc.anon_kib.to_string(),
            last.anon_kib.to_string(),
            format!(
                "{} B per further process",
                f(
                    (last.anon_kib as f64 - fc.anon_kib as f64) * 1024.0
                        / last.started.saturating_sub(fc.started).max(1) as f64,
                    1
                )
            ),
        ]);
    } else if let Some(w) = warm.as_ref().filter(|w| last.cached > w.cached) {
        t1.row(vec![
            format!(
                "RssAnon (KiB), warm ({} started) -> end (cache not full)",
                w.started
            ),
            w.anon_kib.to_string(),
            last.anon_kib.to_string(),
            format!("{} B per tracked process", f(bytes_per_entry(w, &last), 0)),
        ]);
    } else {
        t1.notes.push(format!(
            "no memory per tracked process: the cache did not grow after the warm-up of {WARM} processes (a larger --cache-size and --processes measure it)"
        ));
    }
    t1.row(vec![
        "processes in the cache".into(),
        first.cached.to_string(),
        last.cached.to_string(),
        format!(
            "bound {cap}: {}",
            if points.iter().all(|c| c.cached <= cap) {
                "held"
            } else {
                "EXCEEDED"
            }
        ),
    ]);
    t1.row(vec![
        "evictions".into(),
        first.evictions.to_string(),
        last.evictions.to_string(),
        String::new(),
    ]);
    t1.row(vec![
        "events lost (all counters)".into(),
        first.lost.to_string(),
        last.lost.to_string(),
        String::new(),
    ]);
    t1.row(vec![
        "kernel pal_procs: entries / max, memlock bytes".into(),
        format!("{} / {}, {}", map_start.2, map_start.0, map_start.1),
        format!("{} / {}, {}", map_end.2, map_end.0, map_end.1),
        format!(
            "{} B per slot (preallocated)",
            f(map_end.1 as f64 / map_end.0.max(1) as f64, 0)
        ),
    ]);
    t1.row(vec![
        "time per process: start + exit + reap (us)".into(),
        f(base_us, 0),
        f(with_us, 0),
        format!("ratio {}", f(with_us / base_us, 3)),
    ]);
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|t| t.trim().parse::<usize>().ok());
    if let Some(pm) = pid_max.filter(|&pm| pm <= cap) {
        t1.notes.push(format!(
            "kernel.pid_max is {pm}: the cache is keyed by pid and a reused pid replaces its entry, so it cannot hold more than {pm} processes here and the bound {cap} is never reached (use --cache-size below {pm} to see evictions)"
        ));
    }
    t1.notes.push(format!(
        "load average at start {load_start}, at end {load_end}{}",
        if stopped_early {
            "; STOPPED EARLY at --max-seconds"
        } else {
            ""
        }
    ));

    let mut c = Table::new(
        "runtime-procs: checkpoints",
        &[
            "processes started",
            "cached",
            "evictions",
            "VmRSS KiB",
            "RssAnon KiB",
            "events delivered",
            "lost",
        ],
    );
    for p in &points {
        c.row(vec![
            p.started.to_string(),
            p.cached.to_string(),
            p.evictions.to_string(),
            p.rss_kib.to_string(),
            p.anon_kib.to_string(),
            p.delivered.to_string(),
            p.lost.to_string(),
        ]);
    }
    let mut tables = vec![t1, c];
    if let Some((progs, n)) = &stats {
        let mut b = Table::new(
            format!(
                "runtime-procs: the agent's programs while {n} more processes ran with kernel.bpf_stats_enabled=1"
            ),
            &["program", "runs", "runs per process", "us per run", "us per process"],
        );
        for p in progs {
            let per = p.runs as f64 / (*n).max(1) as f64;
            b.row(vec![
                p.name.clone(),
                p.runs.to_string(),
                f(per, 2),
                f(p.ns_per_run() / 1e3, 2),
                f(per * p.ns_per_run() / 1e3, 2),
            ]);
        }
        b.notes.push(
            "runs include the machine's other processes (and every syscall, for pal_sys_enter)"
                .into(),
        );
        tables.push(b);
    }
    let json = json!({
        "benchmark": "runtime-procs",
        "options": {"processes": opts.processes, "baseline": opts.baseline, "batch": opts.batch,
                    "cache_size": cap, "every": opts.every, "max_seconds": opts.max_seconds},
        "loadavg": {"start": load_start, "end": load_end},
        "started": started,
        "stopped_early": stopped_early,
        "pid_max": pid_max,
        "bytes_per_tracked_process": match (&warm, &full) {
            (Some(w), Some(fc)) => Some(bytes_per_entry(w, fc)),
            (Some(w), None) if last.cached > w.cached => Some(bytes_per_entry(w, &last)),
            _ => None,
        },
        "cache": {"bound": cap, "end": last.cached, "evictions": last.evictions,
                  "held": points.iter().all(|c| c.cached <= cap)},
        "pal_procs": {"max_entries": map_end.0, "bytes_memlock": map_end.1,
                      "entries_start": map_start.2, "entries_end": map_end.2},
        "us_per_process": {"no_agent": base_us, "agent": with_us, "ratio": with_us / base_us},
        "checkpoints": points.iter().map(Checkpoint::to_json).collect::<Vec<_>>(),
        "bpf_stats": stats.as_ref().map(|(progs, n)| json!({
            "processes": n,
            "programs": progs.iter().map(|p| json!({"name": p.name, "runs": p.runs, "ns": p.ns})).collect::<Vec<_>>(),
        })),
    });
    topo.cleanup()?;
    Ok(Report { tables, json })
}
