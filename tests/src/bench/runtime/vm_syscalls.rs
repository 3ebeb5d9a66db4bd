//! `palisade-bench runtime-syscalls-vm`: the `runtime-syscalls` benchmark
//! inside the VM lane, on one of Debian's kernels, which have BPF
//! trampolines (fentry) where this machine's kernel has none: syscall
//! hooks run there from fentry on `__x64_sys_<name>` instead of the
//! syscall tracepoints.
//!
//! The VM boots Debian's kernel under qemu (TCG, 2 vCPUs) with the agent,
//! the CLI, `palisade-bench` and `bpftool` in its initramfs. A script runs
//! the modes in rounds, the order rotating every round, as on the host: the
//! agent is started for each agent mode with the mode's policies in its
//! tracing-policy directory and stopped after it (no runtime generation
//! may stay pinned); a floor mode holds an empty program attached
//! (`palisade-bench runtime-floor`) while the loop runs. The loop is the
//! host's (`runtime-child open-close`, pinned to vCPU 1); the agent's hook
//! runs are read from its pinned counters with bpftool around every
//! measurement and must cover every open of the loop.
//!
//! Times are the guest's clock, which under TCG follows the host's: an
//! emulated instruction costs more than a native one, and not the same
//! amount for every kind of instruction, so the ratios, not the
//! nanoseconds, are what compares with the host's run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use palisade_tests::locate_binary;
use palisade_tests::vm::{Kernel, Vm};
use serde_json::json;

use super::syscalls::{attach_floor, Floor, Mode, Timings, ON_LOOP};
use super::{KernelCounters, SYS_ENTER_NOMATCH, SYS_ENTER_NOMATCH_HOT, TYPICAL_POLICIES};
use crate::bench::{f, say, Report, Table};

/// Options of `palisade-bench runtime-syscalls-vm`.
#[derive(Debug, Clone)]
pub struct Options {
    /// `6.12` or `6.1`: which of Debian's kernels.
    pub kernel: String,
    /// Timed open+close pairs per measurement.
    pub iterations: u64,
    /// Untimed pairs before them.
    pub warmup: u64,
    /// Rounds (each measures every mode).
    pub rounds: usize,
    /// The longest the VM may run.
    pub timeout: Duration,
    /// Time the loop in guest instructions (qemu `-icount`), not emulated
    /// wall-clock time.
    pub instructions: bool,
    /// Harness progress on stderr.
    pub verbose: bool,
}

const MODES: [Mode; 11] = [
    Mode::NoAgent,
    Mode::AgentOnly,
    Mode::Typical,
    Mode::TypicalOffLoop,
    Mode::Floor(Floor::FentryOpenat),
    Mode::Floor(Floor::FentryOpenatPath),
    Mode::Floor(Floor::Openat),
    Mode::Floor(Floor::OpenatPath),
    Mode::Floor(Floor::RawSysEnter),
    Mode::SysEnterNoMatch,
    Mode::SysEnterNoMatchHot,
];

/// The agent's configuration in the VM for a mode: its policies are the
/// files of `/etc/palisade/<mode>/` (none: no directory).
fn agent_config(mode: Mode) -> String {
    format!(
        "node_name: vm
state_dir: /run/palisade/state
bpf_root: /sys/fs/bpf/palisade
api_socket: /run/palisade/agent.sock
runtime_enforcement: true
keep_runtime_enforcement: false
runtime_events_log: /run/palisade/events.jsonl
tracing_policy_dir: /etc/palisade/{}
",
        mode.key()
    )
}

/// The shell functions of the script; then one `switch`/`measure` line
/// per measurement.
const FUNCTIONS: &str = r#"
S=/run/palisade/agent.sock
AGENT=
FLOOR=
fail() { echo "error=$*"; [ -f /tmp/agent.log ] && { echo "begin:agent_log"; cat /tmp/agent.log; echo "end:agent_log"; }; exit 1; }
stop_all() {
  if [ -n "$AGENT" ]; then kill -TERM $AGENT; wait $AGENT; AGENT=; fi
  if [ -n "$FLOOR" ]; then kill -TERM $FLOOR; wait $FLOOR 2>/dev/null; FLOOR=; fi
  rm -rf $S /run/palisade/state
  left=$(ls /sys/fs/bpf/palisade/runtime 2>/dev/null | tr '\n' ' ')
  [ -z "$left" ] || fail "runtime generations left pinned after the agent stopped: $left"
}
agent() {
  stop_all
  palisade-agent --config /etc/palisade/$1.yaml >>/tmp/agent.log 2>&1 &
  AGENT=$!
  i=0
  while [ ! -S $S ] && [ $i -lt 6000 ] && kill -0 $AGENT 2>/dev/null; do sleep 0.1; i=$((i+1)); done
  [ -S $S ] || fail "the agent did not start for $1"
  echo "started $1 $(cut -d' ' -f1 /proc/uptime)"
  echo "links $1 $(ls /sys/fs/bpf/palisade/runtime/g*/links | tr '\n' ' ')"
  echo "policies $1 $(palisade --socket $S tracingpolicy list 2>&1 | tr '\n' ' ')"
  sleep 1
}
floor() {
  stop_all
  # Not the previous floor's "attached": the shell may look before the
  # new process has truncated the file.
  rm -f /tmp/floor.out
  palisade-bench runtime-floor $1 >/tmp/floor.out 2>&1 &
  FLOOR=$!
  i=0
  while ! grep -q attached /tmp/floor.out 2>/dev/null && [ $i -lt 600 ] && kill -0 $FLOOR 2>/dev/null; do sleep 0.1; i=$((i+1)); done
  grep -q attached /tmp/floor.out || fail "$1: $(cat /tmp/floor.out) (after $i waits; floor process: $(cat /proc/$FLOOR/stat 2>&1) $(cat /proc/$FLOOR/stack 2>&1 | tr '\n' ' '))"
}
none() { stop_all; }
counters() { bpftool -j map dump pinned /sys/fs/bpf/palisade/runtime/g*/pal_rt_counters | tr -d '\n'; }
measure() {
  [ -n "$AGENT" ] && echo "before $1 $2 $(counters)"
  r=$(palisade-bench runtime-child open-close /tmp/open-target.txt $ITERATIONS $WARMUP 1) || fail "the loop failed: $r"
  echo "sample $1 $2 $r"
  [ -n "$AGENT" ] && echo "after $1 $2 $(counters)"
  return 0
}
echo palisade-bench >/tmp/open-target.txt
mkdir -p /run/palisade
# Settle: the first loop after boot pays for what the boot left running.
palisade-bench runtime-child open-close /tmp/open-target.txt $ITERATIONS $WARMUP 1 >/dev/null || fail "the loop failed"
"#;

/// The measurements in run order: (round, mode).
fn schedule(rounds: usize) -> Vec<(usize, Mode)> {
    let mut out = Vec::new();
    for round in 1..=rounds {
        let mut order = MODES;
        order.rotate_left((round - 1) % MODES.len());
        out.extend(order.into_iter().map(|m| (round, m)));
    }
    out
}

fn script(opts: &Options) -> String {
    let mut s = format!(
        "ITERATIONS={}\nWARMUP={}\n{FUNCTIONS}",
        opts.iterations, opts.warmup
    );
    let mut current = None;
    for (round, mode) in schedule(opts.rounds) {
        if current != Some(mode) {
            let switch = match mode {
                Mode::NoAgent => "none",
                m if m.agent() => "agent",
                _ => "floor",
            };
            s.push_str(&format!("{switch} {}\n", mode.key()));
            current = Some(mode);
        }
        s.push_str(&format!("measure {round} {}\n", mode.key()));
    }
    s.push_str("stop_all\necho done=1\n");
    s
}

/// One measurement.
#[derive(Debug, Clone)]
struct Sample {
    round: usize,
    mode: Mode,
    ns_per_pair: f64,
    /// Kernel counters over the measurement (agent modes).
    counters: Option<KernelCounters>,
}

/// What the script printed, parsed.
#[derive(Debug, Default)]
struct Output {
    samples: Vec<Sample>,
    /// Per agent mode: the link pins and the policy list after its start.
    links: BTreeMap<String, String>,
    policies: BTreeMap<String, String>,
    /// The script ran to its end.
    done: bool,
}

fn parse_output(text: &str, iterations: u64) -> anyhow::Result<Output> {
    let mut out = Output::default();
    let mut before: BTreeMap<(usize, String), KernelCounters> = BTreeMap::new();
    let counters = |json: &str| -> anyhow::Result<KernelCounters> {
        KernelCounters::from_bpftool(
            &serde_json::from_str(json).with_context(|| format!("bpftool output {json:?}"))?,
        )
    };
    for line in text.lines() {
        if let Some(e) = line.strip_prefix("error=") {
            bail!("in the VM: {e}\n{text}");
        }
        if line == "done=1" {
            out.done = true;
            continue;
        }
        let mut words = line.splitn(4, ' ');
        let (Some(kind), Some(a), Some(b)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let rest = words.next().unwrap_or("");
        match kind {
            "links" => {
                out.links.insert(a.to_owned(), format!("{b} {rest}"));
            }
            "policies" => {
                out.policies.insert(a.to_owned(), format!("{b} {rest}"));
            }
            "before" | "after" | "sample" => {
                let round: usize = a.parse().with_context(|| format!("round in {line:?}"))?;
                let mode = Mode::from_key(b).with_context(|| format!("mode in {line:?}"))?;
                match kind {
                    "before" => {
                        before.insert((round, b.to_owned()), counters(rest)?);
                    }
                    "after" => {
                        let k0 = before
                            .get(&(round, b.to_owned()))
                            .with_context(|| format!("no counters before {line:?}"))?;
                        let k = counters(rest)?.since(k0);
                        let s = out
                            .samples
                            .iter_mut()
                            .rev()
                            .find(|s| s.round == round && s.mode == mode)
                            .with_context(|| format!("no sample before {line:?}"))?;
                        s.counters = Some(k);
                    }
                    _ => {
                        let v: serde_json::Value = serde_json::from_str(rest)
                            .with_context(|| format!("loop result {rest:?}"))?;
                        let ns = v["ns"].as_u64().context("loop result without ns")?;
                        out.samples.push(Sample {
                            round,
                            mode,
                            ns_per_pair: ns as f64 / iterations as f64,
                            counters: None,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Checks what the agent had attached and counted in each mode.
fn check(out: &Output, opts: &Options) -> anyhow::Result<()> {
    if !out.done {
        bail!("the script did not finish");
    }
    for mode in [Mode::Typical, Mode::TypicalOffLoop] {
        let links = out.links.get(mode.key()).map_or("", String::as_str);
        if !links.contains("sys-") || links.contains("pal_sys_enter") {
            bail!(
                "{}: expected syscall links (sys-<name>) and no raw dispatcher, got {links:?}",
                mode.name()
            );
        }
        let list = out.policies.get(mode.key()).map_or("", String::as_str);
        if !list.contains("fentry __x64_sys_") || list.contains("tracepoint syscalls/") {
            bail!(
                "{}: the syscall hooks do not all run from fentry: {list}",
                mode.name()
            );
        }
    }
    if routed(out, Mode::SysEnterNoMatchHot) {
        bail!(
            "the unroutable sys_enter policy was routed: {:?}",
            out.links
        );
    }
    let pairs = opts.iterations + opts.warmup;
    for s in &out.samples {
        // A routed hook runs only for the syscalls of its filter.
        let want = if routed(out, s.mode) {
            0
        } else {
            s.mode.hooks_reached_per_pair() * pairs
        };
        match s.counters.map(|k| k.hooks_reached()) {
            Some(runs) if runs < want => bail!(
                "{} (round {}): {runs} hooks reached (run or spared by a prefilter) for {pairs} open+close pairs, expected at least {want}",
                s.mode.name(),
                s.round
            ),
            None if s.mode.agent() => bail!(
                "{} (round {}): no counters read",
                s.mode.name(),
                s.round
            ),
            _ => {}
        }
    }
    Ok(())
}

/// Whether the agent ran `mode`'s tracepoint hook from per-syscall
/// tracepoints (its links are `hook-<id>-<syscall>`, not `hook-<id>`).
fn routed(out: &Output, mode: Mode) -> bool {
    out.links.get(mode.key()).is_some_and(|l| {
        l.split_whitespace()
            .any(|p| p.strip_prefix("hook-").is_some_and(|r| r.contains('-')))
    })
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    locate_binary(name).with_context(|| {
        format!("no {name} next to palisade-bench: cargo build --release --workspace --bins")
    })
}

/// Runs the benchmark.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let kernel = match opts.kernel.as_str() {
        "6.12" => Kernel::debian_6_12(),
        "6.1" => Kernel::debian_6_1(),
        other => bail!("--kernel {other:?}: 6.12 or 6.1"),
    }?;
    let bpftool = ["/usr/sbin/bpftool", "/usr/bin/bpftool"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("bpftool is not installed (apt-get install bpftool)")?;
    let mut vm = Vm::new(&kernel)
        .binary(binary("palisade-agent")?)
        .binary(binary("palisade")?)
        .binary(std::env::current_exe().context("locating palisade-bench")?)
        .binary(bpftool)
        .env("NO_COLOR", "1")
        .timeout(opts.timeout);
    if opts.instructions {
        vm = vm.instruction_clock();
    }
    for mode in MODES.into_iter().filter(|m| m.agent()) {
        vm = vm.data(
            &format!("/etc/palisade/{}.yaml", mode.key()),
            agent_config(mode),
            0o644,
        );
        let typical: Vec<(&str, String)> = TYPICAL_POLICIES
            .iter()
            .map(|(n, y)| (*n, (*y).to_owned()))
            .collect();
        for (name, yaml) in mode.policies(&typical) {
            vm = vm.data(
                &format!("/etc/palisade/{}/{name}", mode.key()),
                yaml.to_owned(),
                0o644,
            );
        }
    }
    say(format!(
        "booting {} with {} measurements of {} pairs (TCG: this takes minutes)",
        kernel.name(),
        schedule(opts.rounds).len(),
        opts.iterations
    ));
    let vm_out = vm
        .run_script(&script(opts))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if opts.verbose {
        say(&vm_out.output);
    }
    if vm_out.status != 0 {
        bail!(
            "the script failed (status {}):\n{}",
            vm_out.status,
            vm_out.output
        );
    }
    let out = parse_output(&vm_out.output, opts.iterations)?;
    check(&out, opts)?;

    let timings = Timings(
        out.samples
            .iter()
            .map(|s| (s.round, s.mode, s.ns_per_pair))
            .collect(),
    );
    let (mut t, summary) = timings.summary(
        format!(
            "runtime-syscalls-vm: {} ({}), qemu TCG, open+close of one file, {} pairs per measurement ({} warm-up), {} rounds, loop pinned to vCPU 1 (medians)",
            kernel.name(),
            kernel.release().unwrap_or("?"),
            opts.iterations,
            opts.warmup,
            opts.rounds
        ),
        &MODES,
    );
    t.notes.push(format!(
        "boot {:.1}s, whole VM {:.1}s; {}",
        vm_out.boot_time.as_secs_f64(),
        vm_out.total_time.as_secs_f64(),
        if opts.instructions {
            "guest clock on the instruction counter (qemu -icount shift=0): nanoseconds are guest instructions"
        } else {
            "nanoseconds are emulated time (compare the ratios)"
        }
    ));
    for mode in [Mode::SysEnterNoMatch, Mode::SysEnterNoMatchHot] {
        if let Some(l) = out.links.get(mode.key()) {
            t.notes.push(format!(
                "{}: {} (links {l})",
                mode.name(),
                if routed(&out, mode) {
                    "routed to the filter's syscall tracepoints"
                } else {
                    "on raw_syscalls:sys_enter"
                }
            ));
        }
    }
    let mut per = Table::new(
        "runtime-syscalls-vm: every measurement, in run order",
        &[
            "round",
            "mode",
            "ns per pair",
            "/ no agent of the round",
            "hook runs",
            "spared by head prefilter",
            "spared by id prefilter",
        ],
    );
    for s in &out.samples {
        per.row(vec![
            s.round.to_string(),
            s.mode.name().to_owned(),
            f(s.ns_per_pair, 1),
            f(timings.to_round_base(s.round, s.ns_per_pair), 3),
            s.counters
                .map(|k| k.hook_runs.to_string())
                .unwrap_or_default(),
            s.counters
                .map(|k| k.head_skips.to_string())
                .unwrap_or_default(),
            s.counters
                .map(|k| k.id_skips.to_string())
                .unwrap_or_default(),
        ]);
    }
    let mut json = json!({
        "benchmark": "runtime-syscalls-vm",
        "kernel": {"name": kernel.name(), "release": kernel.release()},
        "options": {"iterations": opts.iterations, "warmup": opts.warmup, "rounds": opts.rounds, "instructions": opts.instructions},
        "policies": {
            "typical_10": TYPICAL_POLICIES.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "typical_8_off_loop_without": ON_LOOP,
            "sys_enter_nomatch": SYS_ENTER_NOMATCH.0,
            "sys_enter_nomatch_hot": SYS_ENTER_NOMATCH_HOT.0,
        },
        "sys_enter_nomatch_routed": routed(&out, Mode::SysEnterNoMatch),
        "mechanisms": out.policies,
        "runs": out.samples.iter().map(|s| json!({
            "round": s.round, "mode": s.mode.key(), "ns_per_pair": s.ns_per_pair,
            "hook_runs": s.counters.map(|k| k.hook_runs), "head_skips": s.counters.map(|k| k.head_skips),
            "id_skips": s.counters.map(|k| k.id_skips),
        })).collect::<Vec<_>>(),
        "boot_seconds": vm_out.boot_time.as_secs_f64(),
        "vm_seconds": vm_out.total_time.as_secs_f64(),
    });
    if let Some(o) = json.as_object_mut() {
        o.extend(summary);
    }
    Ok(Report {
        tables: vec![t, per],
        json,
    })
}

/// `palisade-bench runtime-floor MODE`: attaches the empty program of a
/// floor mode (its key, e.g. `floor_empty_fentry_openat`), prints
/// `attached` and holds it until killed.
pub fn hold_floor(key: &str) -> anyhow::Result<()> {
    let mode = Mode::from_key(key)
        .filter(|m| !m.agent() && *m != Mode::NoAgent)
        .with_context(|| format!("{key:?} is not a floor mode"))?;
    let _floor = attach_floor(mode)?;
    println!("attached");
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_once_per_round_in_rotated_order() {
        let s = schedule(2);
        assert_eq!(s.len(), 2 * MODES.len());
        assert_eq!(s[0], (1, MODES[0]));
        assert_eq!(s[MODES.len()], (2, MODES[1]));
        for m in MODES {
            assert_eq!(s.iter().filter(|(_, x)| *x == m).count(), 2);
        }
    }

    #[test]
    fn script_switches_only_on_a_change_of_mode() {
        let opts = Options {
            kernel: "6.12".into(),
            iterations: 10,
            warmup: 1,
            rounds: 2,
            timeout: Duration::from_secs(1),
            instructions: false,
            verbose: false,
        };
        let s = script(&opts);
        assert!(s.starts_with("ITERATIONS=10\nWARMUP=1\n"));
        // Round 1 ends with sys_enter_nomatch_hot, round 2 starts with agent_no_policy.
        assert!(s.contains(
            "agent sys_enter_nomatch_hot\nmeasure 1 sys_enter_nomatch_hot\nagent agent_no_policy\nmeasure 2 agent_no_policy\n"
        ));
        assert!(
            s.contains("floor floor_empty_fentry_openat\nmeasure 1 floor_empty_fentry_openat\n")
        );
        assert!(s.contains("none no_agent\nmeasure 1 no_agent\n"));
        assert!(s.ends_with("stop_all\necho done=1\n"));
    }

    #[test]
    fn summary_has_medians_ratios_and_goals() {
        let t = Timings(vec![
            (1, Mode::NoAgent, 100.0),
            (1, Mode::Typical, 130.0),
            (2, Mode::NoAgent, 200.0),
            (2, Mode::Typical, 180.0),
            (3, Mode::NoAgent, 150.0),
            (3, Mode::Typical, 100.0),
        ]);
        assert_eq!(t.median(Mode::Typical), 130.0);
        assert_eq!(t.to_round_base(2, 180.0), 0.9);
        let (table, json) = t.summary("t".into(), &[Mode::NoAgent, Mode::Typical]);
        assert_eq!(table.rows[1][2], "0.867");
        assert_eq!(table.rows[1][3], "<= 1.05 met");
        assert_eq!(json["ratio_to_no_agent"]["typical_10"], 130.0 / 150.0);
        assert_eq!(json["goals"]["typical_10"]["met"], true);
        assert!(json["goals"].get("no_agent").is_none());
    }

    #[test]
    fn output_parsed_with_counters_between_measurements() {
        let dump = |runs: u64, skips: u64| {
            format!(
                r#"[{{"key":2,"values":[{{"cpu":0,"value":{runs}}},{{"cpu":1,"value":0}}]}},{{"key":5,"values":[{{"cpu":0,"value":{skips}}}]}},{{"key":6,"values":[{{"cpu":1,"value":{}}}]}}]"#,
                skips * 10
            )
        };
        let text = format!(
            "noise\nlinks typical_10 pal_exec sys-openat\npolicies typical_10 a b\nbefore 1 typical_10 {}\nsample 1 typical_10 {{\"iterations\":10,\"ns\":2000}}\nafter 1 typical_10 {}\nsample 1 no_agent {{\"iterations\":10,\"ns\":1000}}\ndone=1\n",
            dump(5, 1),
            dump(27, 4)
        );
        let out = parse_output(&text, 10).unwrap();
        assert!(out.done);
        assert_eq!(out.samples.len(), 2);
        assert_eq!(out.samples[0].mode, Mode::Typical);
        assert_eq!(out.samples[0].ns_per_pair, 200.0);
        let k = out.samples[0].counters.expect("counters");
        assert_eq!(
            (k.hook_runs, k.head_skips, k.id_skips, k.hooks_reached()),
            (22, 3, 30, 55)
        );
        assert_eq!(out.samples[1].counters, None);
        assert_eq!(out.links["typical_10"], "pal_exec sys-openat");
        assert!(parse_output("error=boom\n", 10).is_err());
    }
}
