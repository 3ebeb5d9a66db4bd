//! `palisade-bench`: palisade's benchmarks. Each compares palisade against
//! a baseline measured in the same run and reports the ratio; results and
//! the commands that made them are in BENCHMARKS.md.
//!
//! ```text
//! palisade-bench datapath [--seconds N] [--rules N] [--rounds N] [--warmup S] [--no-pin | --same-cpu] [--bpf-stats]
//! palisade-bench cross-node [--seconds N] [--rules N] [--rounds N] [--warmup S] [--no-pin | --same-cpu] [--bpf-stats]
//! palisade-bench agent-rss [--endpoints N] [--max-seconds N]
//! palisade-bench cluster-convergence [--endpoints N,N] [--samples N] [--timeout-ms N] [--max-seconds N]
//! palisade-bench cluster-identities [--allocations N] [--nodes N] [--rounds N]
//! palisade-bench cluster-churn [--cycles N]
//! palisade-bench policy-compile [--rules N] [--identities N] [--live-rules N] [--live-pods N] [--changes N]
//! palisade-bench runtime-syscalls [--iterations N] [--warmup N] [--rounds N] [--cpu N | --no-pin] [--bpf-stats]
//! palisade-bench runtime-syscalls-vm [--kernel 6.12|6.1] [--iterations N] [--warmup N] [--rounds N] [--timeout-minutes N] [--instructions]
//! palisade-bench runtime-events [--start N] [--step N] [--max N] [--resolution N] [--seconds S] [--generators N]
//! palisade-bench runtime-procs [--processes N] [--baseline N] [--batch N] [--cache-size N] [--every N] [--max-seconds N] [--bpf-stats N]
//! palisade-bench svid-issuance [--count N] [--rounds N] [--cpu N | --no-pin]
//! palisade-bench workload-api [--clients N] [--requests N] [--rounds N]
//! palisade-bench rotation-burst [--svids N] [--rounds N]
//! palisade-bench node-ca [--count N] [--concurrency N] [--rounds N]
//! palisade-bench auth [--samples N] [--connect-timeout-ms N] [--handshake-seconds S] [--rounds N] [--rr-seconds S] [--rr-rounds N] [--warmup S] [--no-pin] [--only PART]
//! common: [--json] [--verbose]   (--json: JSON on stdout, tables on stderr)
//! ```
//!
//! Needs root (network namespaces, eBPF) and the agent and CNI plugin built
//! next to it (`cargo build --release --workspace --bins`); `svid-issuance`,
//! `rotation-burst` and `node-ca` (the node CA in this process, on
//! loopback) measure the CA alone and need neither, nor does
//! `auth --only handshakes` (both sides in this process, on loopback). Everything made
//! is removed at the end, on failure and on SIGINT/SIGTERM.

#[path = "../bench/mod.rs"]
mod bench;

use std::time::Duration;

use anyhow::{bail, Context};

const USAGE: &str = "usage: palisade-bench <benchmark> [options] [--json] [--verbose]
  datapath          [--seconds 5] [--rules 1000] [--rounds 3] [--warmup 1] [--no-pin | --same-cpu] [--bpf-stats]
  cross-node        [--seconds 5] [--rules 0] [--rounds 3] [--warmup 1] [--no-pin | --same-cpu] [--bpf-stats]
  agent-rss         [--endpoints 1000] [--max-seconds 900]
  cluster-convergence [--endpoints 100,1000] [--samples 50] [--timeout-ms 5000] [--max-seconds 900]
  cluster-identities [--allocations 2000] [--nodes 2] [--rounds 5]
  cluster-churn     [--cycles 20]
  policy-compile    [--rules 10000] [--identities 5000] [--live-rules 1000] [--live-pods 10] [--changes 20]
  runtime-syscalls  [--iterations 1000000] [--warmup 100000] [--rounds 5] [--cpu 1 | --no-pin] [--bpf-stats]
  runtime-syscalls-vm [--kernel 6.12] [--iterations 100000] [--warmup 10000] [--rounds 3] [--timeout-minutes 60] [--instructions]
  runtime-events    [--start 50000] [--step 50000] [--max 1000000] [--resolution 10000] [--seconds 10] [--generators 1]
  runtime-procs     [--processes 100000] [--baseline 10000] [--batch 32] [--cache-size 65536] [--every 10000] [--max-seconds 900] [--bpf-stats N]
  svid-issuance     [--count 20000] [--rounds 3] [--cpu 1 | --no-pin]
  workload-api      [--clients 100] [--requests 10000] [--rounds 3]   (--requests: per phase, over all clients)
  rotation-burst    [--svids 10000] [--rounds 3]
  node-ca           [--count 2000] [--concurrency 16] [--rounds 3]   (1 in flight: --count / 4 requests)
  auth              [--samples 20] [--connect-timeout-ms 5000] [--handshake-seconds 5] [--rounds 3] [--rr-seconds 5] [--rr-rounds 5] [--warmup 1] [--no-pin]
                    [--only first-connection | handshakes | tcp-rr]   (handshakes alone needs no root)";

struct Args {
    words: Vec<String>,
}

impl Args {
    /// Takes `--name` (a flag).
    fn flag(&mut self, name: &str) -> bool {
        let before = self.words.len();
        self.words.retain(|w| w != name);
        before != self.words.len()
    }

    /// Takes `--name VALUE` or `--name=VALUE`.
    fn value<T: std::str::FromStr>(&mut self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let prefix = format!("{name}=");
        let Some(i) = self
            .words
            .iter()
            .position(|w| w == name || w.starts_with(&prefix))
        else {
            return Ok(default);
        };
        let word = self.words.remove(i);
        let text = match word.strip_prefix(&prefix) {
            Some(v) => v.to_owned(),
            None => {
                if i >= self.words.len() {
                    bail!("{name} needs a value\n{USAGE}");
                }
                self.words.remove(i)
            }
        };
        text.parse()
            .map_err(|e| anyhow::anyhow!("{name} {text:?}: {e}\n{USAGE}"))
    }

    fn done(&self) -> anyhow::Result<()> {
        if let Some(w) = self.words.first() {
            bail!("unknown argument {w:?}\n{USAGE}");
        }
        Ok(())
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("palisade-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let mut words: Vec<String> = std::env::args().skip(1).collect();
    if words.is_empty() || words.iter().any(|w| w == "-h" || w == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let command = words.remove(0);
    if command == "runtime-child" {
        // A workload of the runtime benchmarks, started by them.
        let result = bench::runtime::child::Workload::from_args(&words)?.run()?;
        println!("{result}");
        return Ok(());
    }
    if command == "spiffe-child" {
        // The Workload API clients or a rotation-burst round, started by
        // the SPIFFE benchmarks.
        let result = bench::spiffe::ChildTask::from_args(&words)?.run()?;
        println!("{result}");
        return Ok(());
    }
    if command == "runtime-floor" {
        // An empty program held attached for runtime-syscalls-vm.
        let key = words.first().context("runtime-floor MODE")?;
        return bench::runtime::vm_syscalls::hold_floor(key);
    }
    let mut args = Args { words };
    let json = args.flag("--json");
    let verbose = args.flag("--verbose");
    let report = match command.as_str() {
        "datapath" => {
            let opts = bench::datapath::Options {
                seconds: args.value("--seconds", 5.0)?,
                rules: args.value("--rules", 1000)?,
                rounds: args.value("--rounds", 3)?,
                warmup: Duration::from_secs_f64(args.value("--warmup", 1.0)?),
                pin: !args.flag("--no-pin"),
                same_cpu: args.flag("--same-cpu"),
                bpf_stats: args.flag("--bpf-stats"),
                verbose,
            };
            args.done()?;
            if !(opts.seconds > 0.0 && opts.seconds <= 600.0) || opts.rounds == 0 {
                bail!("--seconds must be in (0, 600] and --rounds at least 1");
            }
            prepare()?;
            bench::datapath::run(&opts)?
        }
        "cross-node" => {
            let warmup: f64 = args.value("--warmup", 1.0)?;
            let opts = bench::cross_node::Options {
                seconds: args.value("--seconds", 5.0)?,
                rules: args.value("--rules", 0)?,
                rounds: args.value("--rounds", 3)?,
                warmup: Duration::try_from_secs_f64(warmup).unwrap_or(Duration::ZERO),
                pin: !args.flag("--no-pin"),
                same_cpu: args.flag("--same-cpu"),
                bpf_stats: args.flag("--bpf-stats"),
                verbose,
            };
            args.done()?;
            if !(opts.seconds > 0.0 && opts.seconds <= 600.0)
                || opts.rounds == 0
                || !(0.0..=60.0).contains(&warmup)
            {
                bail!("--seconds must be in (0, 600], --rounds at least 1, --warmup in [0, 60]");
            }
            prepare()?;
            bench::cross_node::run(&opts)?
        }
        "cluster-convergence" => {
            let opts = bench::cluster::ConvergenceOptions {
                endpoints: bench::cluster::parse_counts(
                    &args.value("--endpoints", "100,1000".to_owned())?,
                )?,
                samples: args.value("--samples", 50)?,
                timeout: Duration::from_millis(args.value("--timeout-ms", 5000)?),
                max_seconds: args.value("--max-seconds", 900)?,
                verbose,
            };
            args.done()?;
            if opts.endpoints.is_empty()
                || opts.endpoints[0] < 4
                || opts.endpoints.iter().any(|n| *n > 4000)
                || opts.samples == 0
                || opts.samples > 1000
            {
                bail!("--endpoints must be counts in 4..=4000, --samples in 1..=1000");
            }
            prepare()?;
            bench::cluster::run_convergence(&opts)?
        }
        "cluster-identities" => {
            let opts = bench::cluster::IdentityOptions {
                allocations: args.value("--allocations", 2000)?,
                nodes: args.value("--nodes", 2)?,
                rounds: args.value("--rounds", 5)?,
                verbose,
            };
            args.done()?;
            if !(1..=100_000).contains(&opts.allocations)
                || !(1..=16).contains(&opts.nodes)
                || !(1..=100).contains(&opts.rounds)
            {
                bail!(
                    "--allocations must be in 1..=100000, --nodes in 1..=16, --rounds in 1..=100"
                );
            }
            prepare()?;
            bench::cluster::run_identities(&opts)?
        }
        "cluster-churn" => {
            let opts = bench::cluster::ChurnOptions {
                cycles: args.value("--cycles", 20)?,
                verbose,
            };
            args.done()?;
            if !(1..=1000).contains(&opts.cycles) {
                bail!("--cycles must be in 1..=1000");
            }
            prepare()?;
            bench::cluster::run_churn(&opts)?
        }
        "agent-rss" => {
            let opts = bench::rss::Options {
                endpoints: args.value("--endpoints", 1000)?,
                max_seconds: args.value("--max-seconds", 900)?,
                verbose,
            };
            args.done()?;
            if opts.endpoints > 60_000 {
                bail!("--endpoints is at most 60000 (the node's /16)");
            }
            prepare()?;
            bench::rss::run(&opts)?
        }
        "policy-compile" => {
            let opts = bench::compile::Options {
                rules: args.value("--rules", 10_000)?,
                identities: args.value("--identities", 5_000)?,
                live_rules: args.value("--live-rules", 1000)?,
                live_pods: args.value("--live-pods", 10)?,
                changes: args.value("--changes", 20)?,
                verbose,
            };
            args.done()?;
            if opts.live_pods == 0 || opts.changes == 0 || opts.changes > 1000 {
                bail!("--live-pods must be at least 1 and --changes in 1..=1000");
            }
            prepare()?;
            bench::compile::run(&opts)?
        }
        "runtime-syscalls" => {
            let no_pin = args.flag("--no-pin");
            let cpu: usize = args.value("--cpu", 1)?;
            let opts = bench::runtime::syscalls::Options {
                iterations: args.value("--iterations", 1_000_000)?,
                warmup: args.value("--warmup", 100_000)?,
                rounds: args.value("--rounds", 5)?,
                cpu: (!no_pin).then_some(cpu),
                bpf_stats: args.flag("--bpf-stats"),
                verbose,
            };
            args.done()?;
            if opts.iterations == 0 || opts.iterations > 100_000_000 || opts.rounds == 0 {
                bail!("--iterations must be in 1..=100000000 and --rounds at least 1");
            }
            prepare()?;
            bench::runtime::syscalls::run(&opts)?
        }
        "runtime-syscalls-vm" => {
            let opts = bench::runtime::vm_syscalls::Options {
                kernel: args.value("--kernel", "6.12".to_owned())?,
                iterations: args.value("--iterations", 100_000)?,
                warmup: args.value("--warmup", 10_000)?,
                rounds: args.value("--rounds", 3)?,
                timeout: Duration::from_secs(60 * args.value("--timeout-minutes", 60u64)?),
                instructions: args.flag("--instructions"),
                verbose,
            };
            args.done()?;
            if opts.iterations == 0 || opts.iterations > 10_000_000 || opts.rounds == 0 {
                bail!("--iterations must be in 1..=10000000 and --rounds at least 1");
            }
            bench::runtime::vm_syscalls::run(&opts)?
        }
        "runtime-events" => {
            let opts = bench::runtime::events::Options {
                start: args.value("--start", 50_000)?,
                step: args.value("--step", 50_000)?,
                max: args.value("--max", 1_000_000)?,
                resolution: args.value("--resolution", 10_000)?,
                seconds: args.value("--seconds", 10.0)?,
                generators: args.value("--generators", 1)?,
                drain_timeout: Duration::from_secs(60),
                verbose,
            };
            args.done()?;
            if !(opts.seconds > 0.0 && opts.seconds <= 600.0)
                || opts.generators == 0
                || opts.generators > 64
                || opts.start == 0
                || opts.step == 0
            {
                bail!("--seconds must be in (0, 600], --generators in 1..=64, --start and --step above 0");
            }
            prepare()?;
            bench::runtime::events::run(&opts)?
        }
        "runtime-procs" => {
            let opts = bench::runtime::procs::Options {
                processes: args.value("--processes", 100_000)?,
                baseline: args.value("--baseline", 10_000)?,
                batch: args.value("--batch", 32)?,
                cache_size: args.value("--cache-size", 65_536)?,
                every: args.value("--every", 10_000)?,
                max_seconds: args.value("--max-seconds", 900)?,
                stats_processes: args.value("--bpf-stats", 0)?,
                verbose,
            };
            args.done()?;
            if opts.batch == 0
                || opts.batch > 1024
                || opts.every == 0
                || opts.processes > 10_000_000
            {
                bail!("--batch must be in 1..=1024, --every above 0, --processes at most 10000000");
            }
            prepare()?;
            bench::runtime::procs::run(&opts)?
        }
        "svid-issuance" => {
            let no_pin = args.flag("--no-pin");
            let cpu: usize = args.value("--cpu", 1)?;
            let opts = bench::spiffe::IssuanceOptions {
                count: args.value("--count", 20_000)?,
                rounds: args.value("--rounds", 3)?,
                cpu: (!no_pin).then_some(cpu),
            };
            args.done()?;
            if !(100..=10_000_000).contains(&opts.count) || !(1..=100).contains(&opts.rounds) {
                bail!("--count must be in 100..=10000000 and --rounds in 1..=100");
            }
            bench::spiffe::run_issuance(&opts)?
        }
        "workload-api" => {
            let opts = bench::spiffe::WorkloadApiOptions {
                clients: args.value("--clients", 100)?,
                requests: args.value("--requests", 10_000)?,
                rounds: args.value("--rounds", 3)?,
                verbose,
            };
            args.done()?;
            if !(1..=1000).contains(&opts.clients)
                || opts.requests < opts.clients
                || opts.requests > 10_000_000
                || !(1..=20).contains(&opts.rounds)
            {
                bail!("--clients must be in 1..=1000, --requests in CLIENTS..=10000000, --rounds in 1..=20");
            }
            prepare()?;
            bench::spiffe::run_workload_api(&opts)?
        }
        "rotation-burst" => {
            let opts = bench::spiffe::RotationOptions {
                svids: args.value("--svids", 10_000)?,
                rounds: args.value("--rounds", 3)?,
            };
            args.done()?;
            if !(1..=1_000_000).contains(&opts.svids) || !(1..=20).contains(&opts.rounds) {
                bail!("--svids must be in 1..=1000000 and --rounds in 1..=20");
            }
            bench::spiffe::run_rotation(&opts)?
        }
        "node-ca" => {
            let opts = bench::node_ca::Options {
                count: args.value("--count", 2000)?,
                concurrency: args.value("--concurrency", 16)?,
                rounds: args.value("--rounds", 3)?,
            };
            args.done()?;
            if !(4..=100_000).contains(&opts.count)
                || !(1..=1024).contains(&opts.concurrency)
                || !(1..=100).contains(&opts.rounds)
            {
                bail!(
                    "--count must be in 4..=100000, --concurrency in 1..=1024, --rounds in 1..=100"
                );
            }
            bench::node_ca::run(&opts)?
        }
        "auth" => {
            let warmup: f64 = args.value("--warmup", 1.0)?;
            let only: String = args.value("--only", String::new())?;
            let opts = bench::auth::Options {
                samples: args.value("--samples", 20)?,
                connect_timeout: Duration::from_millis(args.value("--connect-timeout-ms", 5000)?),
                handshake_seconds: args.value("--handshake-seconds", 5.0)?,
                rounds: args.value("--rounds", 3)?,
                rr_seconds: args.value("--rr-seconds", 5.0)?,
                rr_rounds: args.value("--rr-rounds", 5)?,
                warmup: Duration::try_from_secs_f64(warmup).unwrap_or(Duration::ZERO),
                pin: !args.flag("--no-pin"),
                only: if only.is_empty() {
                    None
                } else {
                    Some(
                        only.parse()
                            .map_err(|e| anyhow::anyhow!("--only: {e}\n{USAGE}"))?,
                    )
                },
                verbose,
            };
            args.done()?;
            let valid = (1..=200).contains(&opts.samples)
                && (100..=60_000).contains(&opts.connect_timeout.as_millis())
                && opts.handshake_seconds > 0.0
                && opts.handshake_seconds <= 600.0
                && opts.rr_seconds > 0.0
                && opts.rr_seconds <= 600.0
                && (1..=100).contains(&opts.rounds)
                && (1..=100).contains(&opts.rr_rounds)
                && (0.0..=60.0).contains(&warmup);
            if !valid {
                bail!("--samples must be in 1..=200, --connect-timeout-ms in 100..=60000, --handshake-seconds and --rr-seconds in (0, 600], --rounds and --rr-rounds in 1..=100, --warmup in [0, 60]");
            }
            if opts.needs_root() {
                prepare()?;
            }
            bench::auth::run(&opts)?
        }
        other => bail!("unknown benchmark {other:?}\n{USAGE}"),
    };
    let mut out = report.json;
    if let Some(o) = out.as_object_mut() {
        o.insert("machine".into(), bench::machine());
        o.insert(
            "command".into(),
            std::env::args().collect::<Vec<_>>().join(" ").into(),
        );
    }
    let m = bench::machine();
    let mut text = format!(
        "machine: {} CPUs ({}), kernel {}, {}\n\n",
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?")
    );
    for t in &report.tables {
        text.push_str(&t.render());
        text.push('\n');
    }
    if json {
        // Tables on stderr, JSON alone on stdout.
        eprint!("{text}");
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("serializing the report")?
        );
    } else {
        print!("{text}");
    }
    Ok(())
}

/// Root check and removal of what dead earlier runs left behind.
fn prepare() -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("palisade-bench needs root (network namespaces, eBPF programs)");
    }
    let stale = palisade_tests::cleanup_stale();
    if !stale.runs.is_empty() {
        bench::say(format!("removed leftovers of dead runs {:?}", stale.runs));
    }
    for p in stale.problems {
        bench::say(format!("stale cleanup: {p}"));
    }
    Ok(())
}
