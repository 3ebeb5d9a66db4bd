//! The workloads of the runtime benchmarks, run as child processes of
//! `palisade-bench` (`palisade-bench runtime-child ...`): a process of its
//! own is what runtime enforcement tracks, and it can be pinned without
//! touching the benchmark's threads. Each prints one JSON line on stdout.

use std::ffi::CString;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde_json::json;

/// Longest a workload may run before the benchmark kills it.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(600);

/// A workload.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// `open(path, O_RDONLY)` + `close` `iterations` times after `warmup`
    /// untimed ones, pinned to `cpu` if given.
    OpenClose {
        /// The file opened.
        path: String,
        /// Timed iterations.
        iterations: u64,
        /// Untimed iterations first.
        warmup: u64,
        /// CPU to pin to.
        cpu: Option<usize>,
    },
    /// `getpgid(0)` at `rate` calls/s for `seconds` (paced in 1 ms slices,
    /// sleeping in between, so that the CPU left is the agent's).
    Getpgid {
        /// Calls per second.
        rate: f64,
        /// Duration.
        seconds: f64,
    },
}

impl Workload {
    /// The command-line words after `runtime-child`.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            Self::OpenClose {
                path,
                iterations,
                warmup,
                cpu,
            } => vec![
                "open-close".into(),
                path.clone(),
                iterations.to_string(),
                warmup.to_string(),
                cpu.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            ],
            Self::Getpgid { rate, seconds } => {
                vec!["getpgid".into(), rate.to_string(), seconds.to_string()]
            }
        }
    }

    /// Parses the words after `runtime-child`.
    pub fn from_args(words: &[String]) -> anyhow::Result<Self> {
        let num = |i: usize, what: &str| -> anyhow::Result<&str> {
            words
                .get(i)
                .map(String::as_str)
                .with_context(|| format!("runtime-child: missing {what}"))
        };
        Ok(match words.first().map(String::as_str) {
            Some("open-close") if words.len() == 5 => Self::OpenClose {
                path: num(1, "path")?.to_owned(),
                iterations: num(2, "iterations")?.parse().context("iterations")?,
                warmup: num(3, "warmup")?.parse().context("warmup")?,
                cpu: match num(4, "cpu")? {
                    "-" => None,
                    c => Some(c.parse().context("cpu")?),
                },
            },
            Some("getpgid") if words.len() == 3 => {
                let rate: f64 = num(1, "rate")?.parse().context("rate")?;
                let seconds: f64 = num(2, "seconds")?.parse().context("seconds")?;
                if !(rate > 0.0 && seconds > 0.0 && seconds <= 600.0) {
                    bail!("runtime-child getpgid: rate must be > 0 and seconds in (0, 600]");
                }
                Self::Getpgid { rate, seconds }
            }
            _ => bail!(
                "usage: palisade-bench runtime-child (open-close PATH ITERATIONS WARMUP CPU|- | getpgid RATE SECONDS)"
            ),
        })
    }

    /// Runs the workload here; the JSON result. The workload dies with the
    /// benchmark (a stopped benchmark leaves no generator behind).
    pub fn run(&self) -> anyhow::Result<serde_json::Value> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .context("prctl(PR_SET_PDEATHSIG)")?;
        match self {
            Self::OpenClose {
                path,
                iterations,
                warmup,
                cpu,
            } => {
                if let Some(cpu) = cpu {
                    let mut set = nix::sched::CpuSet::new();
                    set.set(*cpu).context("CPU number")?;
                    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                        .with_context(|| format!("pinning to CPU {cpu}"))?;
                }
                let c = CString::new(path.as_str()).context("path with a NUL byte")?;
                let once = || -> anyhow::Result<()> {
                    // Dropping the descriptor closes it.
                    nix::fcntl::open(c.as_c_str(), OFlag::O_RDONLY, Mode::empty())
                        .with_context(|| format!("open {path}"))?;
                    Ok(())
                };
                for _ in 0..*warmup {
                    once()?;
                }
                let t = Instant::now();
                for _ in 0..*iterations {
                    once()?;
                }
                let ns = t.elapsed().as_nanos() as u64;
                Ok(json!({"iterations": iterations, "ns": ns}))
            }
            Self::Getpgid { rate, seconds } => {
                let total = (rate * seconds).round() as u64;
                let slice = Duration::from_millis(1);
                let t = Instant::now();
                let mut calls = 0u64;
                // Every call is made: a generator that falls behind takes
                // longer (its achieved rate says so), bounded by `total`.
                while calls < total {
                    let elapsed = t.elapsed();
                    let due = ((elapsed + slice).as_secs_f64() * rate) as u64;
                    while calls < due.min(total) {
                        nix::unistd::getpgid(None).context("getpgid")?;
                        calls += 1;
                    }
                    if let Some(rest) = (elapsed + slice).checked_sub(t.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
                let ns = t.elapsed().as_nanos() as u64;
                Ok(json!({"calls": calls, "ns": ns}))
            }
        }
    }
}

/// Starts `palisade-bench runtime-child <workload>`.
pub fn spawn(w: &Workload) -> anyhow::Result<std::process::Child> {
    let exe = std::env::current_exe().context("locating palisade-bench")?;
    Command::new(exe)
        .arg("runtime-child")
        .args(w.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting a runtime-child workload")
}

/// Waits for a workload (at most [`CHILD_TIMEOUT`], then kills it) and
/// parses its JSON line.
pub fn finish(mut child: std::process::Child) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        if child
            .try_wait()
            .context("waiting for a workload")?
            .is_some()
        {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "a workload ran longer than {} s and was killed",
                CHILD_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child
        .wait_with_output()
        .context("reading a workload's result")?;
    if !out.status.success() {
        bail!("a workload failed with {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).with_context(|| format!("workload output {text:?}"))
}

/// Runs one workload to its end.
pub fn run(w: &Workload) -> anyhow::Result<serde_json::Value> {
    finish(spawn(w)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        for w in [
            Workload::OpenClose {
                path: "/tmp/x".into(),
                iterations: 1000,
                warmup: 10,
                cpu: Some(1),
            },
            Workload::OpenClose {
                path: "/tmp/y z".into(),
                iterations: 1,
                warmup: 0,
                cpu: None,
            },
            Workload::Getpgid {
                rate: 250_000.0,
                seconds: 2.5,
            },
        ] {
            assert_eq!(Workload::from_args(&w.to_args()).expect("parses"), w);
        }
        assert!(Workload::from_args(&["getpgid".into(), "0".into(), "1".into()]).is_err());
        assert!(Workload::from_args(&["nope".into()]).is_err());
    }

    #[test]
    fn open_close_and_getpgid_run() {
        let me = std::env::current_exe().expect("exe").display().to_string();
        let r = Workload::OpenClose {
            path: me,
            iterations: 100,
            warmup: 10,
            cpu: None,
        }
        .run()
        .expect("runs");
        assert_eq!(r["iterations"], 100);
        let g = Workload::Getpgid {
            rate: 10_000.0,
            seconds: 0.05,
        }
        .run()
        .expect("runs");
        assert_eq!(g["calls"], 500);
    }
}
