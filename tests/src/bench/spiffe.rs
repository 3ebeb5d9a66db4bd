//! The SPIFFE benchmarks:
//!
//! - `palisade-bench svid-issuance`: X.509-SVIDs issued per second on one
//!   core by [`CaSet::issue_x509`] (key generation, certificate encoding,
//!   signature) against the raw crypto floor measured in the same run: one
//!   ECDSA P-256 key generation plus one ECDSA P-256 signature with ring.
//! - `palisade-bench workload-api`: `FetchX509SVID` latency with N
//!   concurrent clients inside a pod's network namespace against the real
//!   agent's Workload API, against the same clients doing a gRPC round trip
//!   that the server refuses before attestation (no security header), and
//!   `FetchX509Bundles` (attestation, no SVID).
//! - `palisade-bench rotation-burst`: re-issuing N SVIDs after an immediate
//!   CA rotation ([`CaSet::rotate`]) against the initial issuance of the same
//!   N in the same run; time and the burst's peak memory.
//!
//! The client side of `workload-api` and each round of `rotation-burst` run
//! in a child process (`palisade-bench spiffe-child ...`, see [`ChildTask`]):
//! attestation identifies the caller by its process, which must sit in the
//! pod's network namespace as a whole, and a fresh process gives a clean
//! `VmHWM`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use palisade_identity::ca::{CaSet, EcKey, KeyUse, RotationPolicy};
use palisade_identity::node_ca::csr;
use palisade_identity::workload_api::proto::{
    X509BundlesRequest, X509BundlesResponse, X509svidRequest, X509svidResponse,
};
use palisade_identity::x509::{X509Bundle, X509Svid};
use palisade_identity::{SpiffeId, TrustDomain};
use palisade_tests::{PodSpec, Topology};
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_json::{json, Value};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_prost::prost::Message;

use super::{f, median, percentile, say, status_kib, Report, Table};

/// The trust domain of the pure benchmarks.
pub(super) const TRUST_DOMAIN: &str = "bench.palisade.test";
/// X.509-SVID lifetime (the agent's default).
pub(super) const SVID_TTL: Duration = Duration::from_secs(3600);
/// The rotation policy of the pure benchmarks (the agent's defaults).
pub(super) const POLICY: RotationPolicy = RotationPolicy {
    ca_ttl: Duration::from_secs(30 * 24 * 3600),
    max_svid_ttl: Duration::from_secs(3600),
    propagation: Duration::from_secs(30),
};
/// The DER SubjectPublicKeyInfo of a fresh P-256 key, as the node CA
/// receives it (through a certificate request).
pub(super) fn fresh_spki() -> anyhow::Result<Vec<u8>> {
    let key = EcKey::generate(KeyUse::X509)?;
    let csr = csr::request_for(&key)?;
    Ok(csr::verified_key(&csr)?)
}

pub(super) fn trust_domain() -> anyhow::Result<TrustDomain> {
    TrustDomain::new(TRUST_DOMAIN).map_err(|e| anyhow!("trust domain {TRUST_DOMAIN}: {e}"))
}

/// `count` distinct workload SPIFFE IDs, as the agent names workloads.
pub(super) fn workload_ids(td: &TrustDomain, count: usize) -> anyhow::Result<Vec<SpiffeId>> {
    (0..count)
        .map(|i| {
            SpiffeId::new(td.clone(), &format!("/ns/bench/sa/workload-{i}"))
                .map_err(|e| anyhow!("SPIFFE ID {i}: {e}"))
        })
        .collect()
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU number {cpu}"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("sched_setaffinity to CPU {cpu}"))
}

/// CPU time (user + system, every thread, exited ones too) process `pid`
/// has used so far, in seconds, from its CPU-time clock (nanoseconds,
/// unlike the 10 ms ticks of `/proc/<pid>/stat`); NaN if unreadable.
pub(super) fn cpu_secs(pid: u32) -> f64 {
    let Ok(pid) = i32::try_from(pid) else {
        return f64::NAN;
    };
    nix::time::clock_getcpuclockid(nix::unistd::Pid::from_raw(pid))
        .and_then(nix::time::clock_gettime)
        .map_or(f64::NAN, |ts| {
            ts.tv_sec() as f64 + ts.tv_nsec() as f64 * 1e-9
        })
}

/// Seconds `n` calls of `f` take.
pub(super) fn time_n(
    n: usize,
    mut f: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    for i in 0..n {
        f(i)?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Checks `svids` against a bundle holding only `ca_cert`: every chain
/// verifies and names the SVID's SPIFFE ID.
pub(super) fn verify_all<'a>(
    td: &TrustDomain,
    ca_cert: &[u8],
    svids: impl IntoIterator<Item = &'a X509Svid>,
    now: SystemTime,
) -> anyhow::Result<()> {
    let mut bundle = X509Bundle::new(td.clone());
    bundle
        .add_authority(ca_cert)
        .map_err(|e| anyhow!("the CA certificate does not go into a bundle: {e}"))?;
    for svid in svids {
        let verified = bundle
            .verify(svid.chain(), now)
            .map_err(|e| anyhow!("the SVID of {} does not verify: {e}", svid.spiffe_id()))?;
        if verified.spiffe_id() != svid.spiffe_id() {
            bail!(
                "the SVID of {} names {}",
                svid.spiffe_id(),
                verified.spiffe_id()
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// svid-issuance

/// Options of `palisade-bench svid-issuance`.
#[derive(Debug, Clone)]
pub struct IssuanceOptions {
    /// SVIDs issued per round (and floor iterations per round).
    pub count: usize,
    /// Rounds; each times the floor and the issuance, alternating which
    /// goes first.
    pub rounds: usize,
    /// CPU the benchmark thread is pinned to; `None`: not pinned.
    pub cpu: Option<usize>,
}

/// Runs `svid-issuance` on a thread of its own, pinned (the process's
/// other threads keep their CPUs).
pub fn run_issuance(opts: &IssuanceOptions) -> anyhow::Result<Report> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("svid-issuance".into())
            .spawn_scoped(s, || {
                if let Some(cpu) = opts.cpu {
                    pin(cpu)?;
                }
                issuance(opts)
            })
            .context("starting the benchmark thread")?
            .join()
            .map_err(|_| anyhow!("the benchmark thread panicked"))?
    })
}

fn issuance(opts: &IssuanceOptions) -> anyhow::Result<Report> {
    if opts.count == 0 || opts.rounds == 0 {
        bail!("svid-issuance: --count and --rounds must be at least 1");
    }
    let td = trust_domain()?;
    let now = SystemTime::now();
    let mut cas = CaSet::bootstrap(td.clone(), now, &POLICY).context("bootstrapping the CA")?;
    let ids = workload_ids(&td, opts.count)?;
    let (ca_cert, ca_key) = {
        let active = cas.active().context("the bootstrapped CA")?;
        (
            active.authority.certificate().to_vec(),
            active.authority.key().secret_der().to_vec(),
        )
    };
    let rng = SystemRandom::new();
    // The floor signs with the CA's own key a message the size of an SVID
    // certificate (SHA-256 over it is part of any signature).
    let ca_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &ca_key, &rng)
        .map_err(|e| anyhow!("ring rejects the CA key: {e}"))?;
    let (sample, _) = cas
        .issue_x509(&ids[0], now, SVID_TTL)
        .context("issuing a sample SVID")?;
    let message = sample.leaf().to_vec();

    let floor_once = |_: usize| -> anyhow::Result<()> {
        let key = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| anyhow!("ring: P-256 key generation failed"))?;
        let sig = ca_pair
            .sign(&rng, &message)
            .map_err(|_| anyhow!("ring: ECDSA signing failed"))?;
        black_box((key, sig));
        Ok(())
    };
    // Warm-up: caches, the allocator, the CPU's clock.
    let warm = (opts.count / 10).clamp(10, 1000);
    time_n(warm, floor_once)?;
    time_n(warm, |i| {
        black_box(cas.issue_x509(&ids[i % ids.len()], now, SVID_TTL)?);
        Ok(())
    })?;

    let mut floor_secs = Vec::with_capacity(opts.rounds);
    let mut issue_secs = Vec::with_capacity(opts.rounds);
    let mut last: Vec<X509Svid> = Vec::new();
    for round in 0..opts.rounds {
        let mut held = Vec::with_capacity(opts.count);
        let mut issue = |held: &mut Vec<X509Svid>| {
            time_n(opts.count, |i| {
                let (svid, _) = cas.issue_x509(&ids[i], now, SVID_TTL)?;
                held.push(svid);
                Ok(())
            })
        };
        let (fs, is) = if round % 2 == 0 {
            let fs = time_n(opts.count, floor_once)?;
            (fs, issue(&mut held)?)
        } else {
            let is = issue(&mut held)?;
            (time_n(opts.count, floor_once)?, is)
        };
        say(format!(
            "round {}: floor {:.0}/s, issue_x509 {:.0}/s",
            round + 1,
            opts.count as f64 / fs,
            opts.count as f64 / is
        ));
        floor_secs.push(fs);
        issue_secs.push(is);
        last = held;
    }
    verify_all(&td, &ca_cert, &last, now)?;
    let verified = last.len();

    // Where an issuance goes: its parts, timed alone (one pass each).
    let n = (opts.count / 2).max(100);
    let spki = fresh_spki()?;
    let mut parts: Vec<(&str, f64)> = Vec::new();
    parts.push((
        "ring: P-256 key generation (generate_pkcs8)",
        time_n(n, |_| {
            black_box(
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                    .map_err(|_| anyhow!("ring: key generation failed"))?,
            );
            Ok(())
        })?,
    ));
    parts.push((
        "ring: P-256 signature with the CA key (ASN.1, one SVID's bytes)",
        time_n(n, |_| {
            black_box(
                ca_pair
                    .sign(&rng, &message)
                    .map_err(|_| anyhow!("ring: signing failed"))?,
            );
            Ok(())
        })?,
    ));
    parts.push((
        "ring: EcdsaKeyPair::from_pkcs8 of a fresh key (recomputes the public key)",
        {
            let docs: Vec<_> = (0..n)
                .map(|_| EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng))
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow!("ring: key generation failed"))?;
            time_n(n, |i| {
                black_box(
                    EcdsaKeyPair::from_pkcs8(
                        &ECDSA_P256_SHA256_ASN1_SIGNING,
                        docs[i].as_ref(),
                        &rng,
                    )
                    .map_err(|e| anyhow!("ring: {e}"))?,
                );
                Ok(())
            })?
        },
    ));
    parts.push((
        "EcKey::generate (generate_pkcs8 + from_pkcs8)",
        time_n(n, |_| {
            black_box(EcKey::generate(KeyUse::X509)?);
            Ok(())
        })?,
    ));
    parts.push((
        "CaSet::issue_x509_for_key (certificate for a given key: encode + sign)",
        time_n(n, |i| {
            black_box(cas.issue_x509_for_key(&ids[i % ids.len()], &spki, now, SVID_TTL)?);
            Ok(())
        })?,
    ));
    parts.push((
        "CaSet::issue_x509 (all of it)",
        time_n(n, |i| {
            black_box(cas.issue_x509(&ids[i % ids.len()], now, SVID_TTL)?);
            Ok(())
        })?,
    ));
    parts.push((
        "SystemRandom::fill, 16 bytes (one getrandom syscall)",
        time_n(n, |_| {
            let mut b = [0u8; 16];
            rng.fill(&mut b).map_err(|_| anyhow!("getrandom failed"))?;
            black_box(b);
            Ok(())
        })?,
    ));
    let rate = |secs: f64| opts.count as f64 / secs;
    let floor_rates: Vec<f64> = floor_secs.iter().map(|s| rate(*s)).collect();
    let issue_rates: Vec<f64> = issue_secs.iter().map(|s| rate(*s)).collect();
    let ratios: Vec<f64> = issue_rates
        .iter()
        .zip(&floor_rates)
        .map(|(i, fl)| i / fl)
        .collect();
    let floor_med = median(&floor_rates);
    let issue_med = median(&issue_rates);
    let goal = 10_000.0;
    let pinned = opts
        .cpu
        .map_or_else(|| "not pinned".to_owned(), |c| format!("pinned to CPU {c}"));

    let mut t = Table::new(
        format!(
            "svid-issuance: X.509-SVIDs per second on one core ({pinned}), {} per round, median of {} rounds",
            opts.count, opts.rounds
        ),
        &["what", "per s", "µs each", "ratio to floor", "rounds (per s)"],
    );
    let rounds_text = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    t.row(vec![
        "baseline: ring P-256 key generation + P-256 signature".into(),
        f(floor_med, 0),
        f(1e6 / floor_med, 1),
        "1.00".into(),
        rounds_text(&floor_rates),
    ]);
    t.row(vec![
        "CaSet::issue_x509 (key + certificate + signature, DER)".into(),
        f(issue_med, 0),
        f(1e6 / issue_med, 1),
        f(median(&ratios), 2),
        rounds_text(&issue_rates),
    ]);
    t.notes.push(format!(
        "goal >= {goal:.0} SVIDs/s per core: {} ({}). Ratio per round: {}. {verified} SVIDs of the last round verified against the CA.",
        if issue_med >= goal { "met" } else { "MISSED" },
        f(issue_med / goal, 2),
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" / ")
    ));
    let mut b = Table::new(
        format!("svid-issuance: where an issuance goes ({n} calls each, one pass)"),
        &["part", "µs each", "per s"],
    );
    for (name, secs) in &parts {
        b.row(vec![
            (*name).to_owned(),
            f(secs * 1e6 / n as f64, 2),
            f(n as f64 / secs, 0),
        ]);
    }
    let json = json!({
        "benchmark": "svid-issuance",
        "options": {"count": opts.count, "rounds": opts.rounds, "cpu": opts.cpu},
        "floor_per_s": {"median": floor_med, "rounds": floor_rates},
        "issue_x509_per_s": {"median": issue_med, "rounds": issue_rates},
        "ratio": {"median": median(&ratios), "rounds": ratios},
        "goal_per_s": goal,
        "goal_met": issue_med >= goal,
        "verified": verified,
        "svid_leaf_bytes": message.len(),
        "parts_us": parts.iter().map(|(name, secs)| json!({"part": name, "us": secs * 1e6 / n as f64})).collect::<Vec<_>>(),
    });
    Ok(Report {
        tables: vec![t, b],
        json,
    })
}

// ---------------------------------------------------------------------------
// rotation-burst

/// Options of `palisade-bench rotation-burst`.
#[derive(Debug, Clone)]
pub struct RotationOptions {
    /// Distinct SPIFFE IDs held and re-issued.
    pub svids: usize,
    /// Rounds, each in a fresh child process.
    pub rounds: usize,
}

/// One round of `rotation-burst`, in this process (a fresh child): returns
/// the measurements as JSON.
fn rotation_round(svids: usize) -> anyhow::Result<Value> {
    let td = trust_domain()?;
    let ids = workload_ids(&td, svids)?;
    let rss_empty = self_kib("VmRSS")?;
    let now = SystemTime::now();
    let mut cas = CaSet::bootstrap(td.clone(), now, &POLICY).context("bootstrapping the CA")?;
    // Held as the agent holds them: one per SPIFFE ID, replaced in place.
    let mut held: BTreeMap<SpiffeId, X509Svid> = BTreeMap::new();

    let hwm_reset_initial = reset_hwm();
    let t = Instant::now();
    for id in &ids {
        let (svid, _) = cas.issue_x509(id, now, SVID_TTL)?;
        held.insert(id.clone(), svid);
    }
    let initial = t.elapsed().as_secs_f64();
    let hwm_initial = self_kib("VmHWM")?;
    let rss_steady = self_kib("VmRSS")?;

    let hwm_reset_burst = reset_hwm();
    let rss_before_burst = self_kib("VmRSS")?;
    let later = now + Duration::from_secs(60);
    let t = Instant::now();
    let events = cas
        .rotate(later, true, &POLICY)
        .context("rotating the CA")?;
    let rotate = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for id in &ids {
        let (svid, _) = cas.issue_x509(id, later, SVID_TTL)?;
        held.insert(id.clone(), svid);
    }
    let reissue = t.elapsed().as_secs_f64();
    let hwm_burst = self_kib("VmHWM")?;
    let rss_after = self_kib("VmRSS")?;

    // Every SVID held now chains to the new CA alone.
    let active = cas.active().context("the CA after rotation")?;
    let generation = active.lifecycle.number;
    let new_ca = active.authority.certificate().to_vec();
    verify_all(&td, &new_ca, held.values(), later)?;
    let verified = held.len();
    if verified != svids || generation != 2 {
        bail!("after the rotation: {verified} of {svids} SVIDs held, generation {generation} active (expected 2)");
    }
    Ok(json!({
        "svids": svids,
        "initial_s": initial,
        "rotate_s": rotate,
        "reissue_s": reissue,
        "events": format!("{events:?}"),
        "bundle_generations": cas.generations().len(),
        "verified": verified,
        "kib": {
            "rss_empty": rss_empty,
            "hwm_initial": hwm_initial,
            "rss_steady": rss_steady,
            "rss_before_burst": rss_before_burst,
            "hwm_burst": hwm_burst,
            "rss_after": rss_after,
        },
        "hwm_reset": hwm_reset_initial && hwm_reset_burst,
    }))
}

/// Resets this process's `VmHWM` to its current RSS (`5` to
/// `/proc/self/clear_refs`, Linux 4.0+); false if the kernel refused.
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A `kB` field of `/proc/self/status`.
fn self_kib(field: &str) -> anyhow::Result<u64> {
    status_kib(std::process::id(), field)
}

/// Runs `rotation-burst`: each round in a fresh child process.
pub fn run_rotation(opts: &RotationOptions) -> anyhow::Result<Report> {
    if opts.svids == 0 || opts.rounds == 0 {
        bail!("rotation-burst: --svids and --rounds must be at least 1");
    }
    let mut rounds = Vec::with_capacity(opts.rounds);
    for round in 0..opts.rounds {
        let child = spawn_child(&ChildTask::RotationBurst { svids: opts.svids }, None)?;
        let r = super::runtime::child::finish(child)
            .with_context(|| format!("rotation-burst round {}", round + 1))?;
        say(format!(
            "round {}: initial {:.2} s, rotate {:.1} ms, re-issue {:.2} s, VmHWM {} KiB over {} KiB steady",
            round + 1,
            r["initial_s"].as_f64().unwrap_or(f64::NAN),
            r["rotate_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            r["reissue_s"].as_f64().unwrap_or(f64::NAN),
            r["kib"]["hwm_burst"],
            r["kib"]["rss_before_burst"],
        ));
        rounds.push(r);
    }
    let col = |key: &str| -> Vec<f64> {
        rounds
            .iter()
            .map(|r| r[key].as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    let kib = |key: &str| -> Vec<f64> {
        rounds
            .iter()
            .map(|r| r["kib"][key].as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    let diff = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
    let initial = col("initial_s");
    let rotate = col("rotate_s");
    let reissue = col("reissue_s");
    let burst: Vec<f64> = rotate.iter().zip(&reissue).map(|(a, b)| a + b).collect();
    let ratio_reissue: Vec<f64> = reissue.iter().zip(&initial).map(|(a, b)| a / b).collect();
    let ratio_burst: Vec<f64> = burst.iter().zip(&initial).map(|(a, b)| a / b).collect();
    let n = opts.svids as f64;
    let per_round = |v: &[f64], scale: f64, digits: usize| {
        v.iter()
            .map(|x| f(x * scale, digits))
            .collect::<Vec<_>>()
            .join(" / ")
    };

    let mut t = Table::new(
        format!(
            "rotation-burst: {} SVIDs, median of {} rounds (each a fresh process)",
            opts.svids, opts.rounds
        ),
        &["phase", "ms", "SVIDs/s", "ratio to initial", "rounds (ms)"],
    );
    t.row(vec![
        "baseline: initial issuance of all".into(),
        f(median(&initial) * 1e3, 1),
        f(n / median(&initial), 0),
        "1.00".into(),
        per_round(&initial, 1e3, 1),
    ]);
    t.row(vec![
        "rotate(now, immediately): new CA generation".into(),
        f(median(&rotate) * 1e3, 3),
        "-".into(),
        "-".into(),
        per_round(&rotate, 1e3, 3),
    ]);
    t.row(vec![
        "re-issue all under the new CA".into(),
        f(median(&reissue) * 1e3, 1),
        f(n / median(&reissue), 0),
        f(median(&ratio_reissue), 2),
        per_round(&reissue, 1e3, 1),
    ]);
    t.row(vec![
        "burst: rotate + re-issue all".into(),
        f(median(&burst) * 1e3, 1),
        f(n / median(&burst), 0),
        f(median(&ratio_burst), 2),
        per_round(&burst, 1e3, 1),
    ]);

    let empty = kib("rss_empty");
    let steady = kib("rss_steady");
    let before = kib("rss_before_burst");
    let hwm_initial = kib("hwm_initial");
    let hwm_burst = kib("hwm_burst");
    let after = kib("rss_after");
    let held_growth = diff(&steady, &empty);
    let initial_peak = diff(&hwm_initial, &empty);
    let burst_peak = diff(&hwm_burst, &before);
    let per_svid: Vec<f64> = held_growth.iter().map(|k| k * 1024.0 / n).collect();
    let mut m = Table::new(
        "rotation-burst: memory of the process (KiB, /proc/self/status; VmHWM reset before each phase)",
        &["what", "KiB (median)", "rounds"],
    );
    let mut mem_row = |what: &str, v: &[f64]| {
        m.row(vec![what.to_owned(), f(median(v), 0), per_round(v, 1.0, 0)]);
    };
    mem_row("VmRSS, empty CA (before issuance)", &empty);
    mem_row("VmRSS, steady state: all SVIDs held", &steady);
    mem_row("  held SVIDs' share (steady - empty)", &held_growth);
    mem_row(
        "peak of the initial issuance over empty (VmHWM - empty)",
        &initial_peak,
    );
    mem_row(
        "peak of the burst over steady (VmHWM - VmRSS before)",
        &burst_peak,
    );
    mem_row("VmRSS after the burst", &after);
    let hwm_ok = rounds
        .iter()
        .all(|r| r["hwm_reset"].as_bool() == Some(true));
    m.notes.push(format!(
        "held SVIDs: {} bytes of RSS per SVID (chain, PKCS#8 key, map entry); VmHWM reset through /proc/self/clear_refs: {}. Every re-issued SVID verified against the new CA alone.",
        f(median(&per_svid), 0),
        if hwm_ok { "yes" } else { "NO (peaks are since process start)" }
    ));
    let json = json!({
        "benchmark": "rotation-burst",
        "options": {"svids": opts.svids, "rounds": opts.rounds},
        "median": {
            "initial_s": median(&initial), "rotate_s": median(&rotate),
            "reissue_s": median(&reissue), "burst_s": median(&burst),
            "ratio_reissue_to_initial": median(&ratio_reissue),
            "ratio_burst_to_initial": median(&ratio_burst),
            "held_kib": median(&held_growth), "bytes_per_svid": median(&per_svid),
            "initial_peak_kib": median(&initial_peak), "burst_peak_kib": median(&burst_peak),
        },
        "rounds": rounds,
    });
    Ok(Report {
        tables: vec![t, m],
        json,
    })
}

// ---------------------------------------------------------------------------
// workload-api

/// Options of `palisade-bench workload-api`.
#[derive(Debug, Clone)]
pub struct WorkloadApiOptions {
    /// Concurrent clients, each with its own connection.
    pub clients: usize,
    /// Requests per phase, spread evenly over the clients.
    pub requests: usize,
    /// Rounds; each runs every phase once.
    pub rounds: usize,
    /// Harness progress on stderr.
    pub verbose: bool,
}

/// What a client asks in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// `FetchX509SVID` without the security header: refused with
    /// `InvalidArgument` before attestation. The gRPC round trip alone.
    NoHeader,
    /// `FetchX509Bundles`: attestation, then the trust bundle.
    Bundles,
    /// `FetchX509SVID`: attestation, then the SVIDs with keys and bundle.
    Svid,
}

impl Rpc {
    const ALL: [Self; 3] = [Self::NoHeader, Self::Bundles, Self::Svid];

    fn name(self) -> &'static str {
        match self {
            Self::NoHeader => "no-header",
            Self::Bundles => "bundles",
            Self::Svid => "svid",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::NoHeader => {
                "baseline: FetchX509SVID without security header (refused before attestation)"
            }
            Self::Bundles => "FetchX509Bundles (attestation + bundle)",
            Self::Svid => "FetchX509SVID (attestation + SVID, key, bundle)",
        }
    }
}

const SVID_PATH: &str = "/SpiffeWorkloadAPI/FetchX509SVID";
const BUNDLES_PATH: &str = "/SpiffeWorkloadAPI/FetchX509Bundles";

/// Runs `workload-api`: a node, a pod, the clients in a child process in
/// the pod's network namespace.
pub fn run_workload_api(opts: &WorkloadApiOptions) -> anyhow::Result<Report> {
    let ns_labels = [("ns".to_owned(), "spiffe".to_owned())].into();
    let topo = Topology::builder()
        .namespace("spiffe", ns_labels)
        .pod(PodSpec::new("spiffe", "client").label("app", "client"))
        .verbose(opts.verbose)
        .build()
        .context("building the topology (node n1, pod spiffe/client)")?;
    let node = topo.node("n1")?;
    let agent_pid = node.agent_pid().context("the agent is not running")?;
    let socket = node.workload_socket().to_owned();
    let pod = topo.pod("spiffe/client")?;
    let task = ChildTask::WorkloadApi {
        socket: socket.display().to_string(),
        clients: opts.clients,
        requests: opts.requests,
        rounds: opts.rounds,
        agent_pid,
        id_suffix: "/ns/spiffe/sa/default".to_owned(),
    };
    say(format!(
        "{} clients in netns {} against {} (agent pid {agent_pid})",
        opts.clients,
        pod.netns().name(),
        socket.display()
    ));
    let child = spawn_child(&task, Some(pod.netns()))?;
    let out = super::runtime::child::finish(child).context("the Workload API clients")?;
    let phases = out["phases"].as_array().cloned().unwrap_or_default();
    let errors: u64 = phases
        .iter()
        .map(|p| p["errors"].as_u64().unwrap_or(0))
        .sum();
    if errors > 0 {
        let first = phases
            .iter()
            .find_map(|p| p["first_error"].as_str())
            .unwrap_or("?");
        bail!("{errors} requests failed (first: {first}); results: {out}");
    }

    let stat = |rpc: Rpc, clients: usize, key: &str| -> Vec<f64> {
        phases
            .iter()
            .filter(|p| p["rpc"] == rpc.name() && p["clients"].as_u64() == Some(clients as u64))
            .map(|p| p[key].as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    let cpu_per_req = |rpc: Rpc, clients: usize, key: &str| -> Vec<f64> {
        phases
            .iter()
            .filter(|p| p["rpc"] == rpc.name() && p["clients"].as_u64() == Some(clients as u64))
            .map(|p| {
                p[key].as_f64().unwrap_or(f64::NAN) * 1e6
                    / p["requests"].as_f64().unwrap_or(f64::NAN)
            })
            .collect()
    };
    let max_of = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let mut tables = Vec::new();
    let mut summary = Vec::new();
    let single = out["single_requests"].as_u64().unwrap_or(0);
    for (clients, per_phase) in [(opts.clients, opts.requests as u64), (1, single)] {
        let floor_p50 = median(&stat(Rpc::NoHeader, clients, "p50_us"));
        let floor_p99 = median(&stat(Rpc::NoHeader, clients, "p99_us"));
        let floor_rate = median(&stat(Rpc::NoHeader, clients, "per_s"));
        let mut t = Table::new(
            format!(
                "workload-api: {clients} concurrent client{} in the pod's netns, {per_phase} requests per phase, median of {} rounds (max: of all)",
                if clients == 1 { "" } else { "s" },
                opts.rounds
            ),
            &[
                "RPC (open stream, first response)",
                "p50 ms",
                "p99 ms",
                "max ms",
                "requests/s",
                "agent CPU µs/req",
                "client CPU µs/req",
                "p50 ratio",
                "p99 ratio",
                "req/s ratio",
            ],
        );
        for rpc in Rpc::ALL {
            let p50 = median(&stat(rpc, clients, "p50_us"));
            let p99 = median(&stat(rpc, clients, "p99_us"));
            let max = max_of(&stat(rpc, clients, "max_us"));
            let rate = median(&stat(rpc, clients, "per_s"));
            let agent_cpu = median(&cpu_per_req(rpc, clients, "agent_cpu_s"));
            let client_cpu = median(&cpu_per_req(rpc, clients, "client_cpu_s"));
            t.row(vec![
                rpc.label().to_owned(),
                f(p50 / 1e3, 3),
                f(p99 / 1e3, 3),
                f(max / 1e3, 3),
                f(rate, 0),
                f(agent_cpu, 0),
                f(client_cpu, 0),
                f(p50 / floor_p50, 2),
                f(p99 / floor_p99, 2),
                f(rate / floor_rate, 2),
            ]);
            summary.push(json!({
                "clients": clients, "rpc": rpc.name(),
                "p50_us": p50, "p99_us": p99, "max_us": max, "per_s": rate,
                "agent_cpu_us_per_request": agent_cpu, "client_cpu_us_per_request": client_cpu,
                "ratio_to_floor": {"p50": p50 / floor_p50, "p99": p99 / floor_p99, "per_s": rate / floor_rate},
            }));
        }
        let svid_p50 = median(&stat(Rpc::Svid, clients, "p50_us"));
        let bundles_p50 = median(&stat(Rpc::Bundles, clients, "p50_us"));
        t.notes.push(format!(
            "FetchX509SVID p50 / FetchX509Bundles p50 = {}. Agent and client share the 2 CPUs; CPU: each process's CPU-time clock over the phase (all threads).",
            f(svid_p50 / bundles_p50, 2)
        ));
        tables.push(t);
    }
    let json = json!({
        "benchmark": "workload-api",
        "options": {"clients": opts.clients, "requests": opts.requests, "rounds": opts.rounds},
        "summary": summary,
        "client": out,
    });
    topo.cleanup()?;
    Ok(Report { tables, json })
}

/// One request: open the stream, wait for the first response (or the
/// refusal), check it, drop the stream.
async fn request(channel: &Channel, rpc: Rpc, id_suffix: &str) -> Result<(), String> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    match rpc {
        Rpc::NoHeader => {
            match first::<X509svidRequest, X509svidResponse>(&mut grpc, SVID_PATH, false).await {
                Err(s) if s.code() == Code::InvalidArgument => Ok(()),
                Err(s) => Err(format!("no-header: {:?}: {}", s.code(), s.message())),
                Ok(_) => Err("no-header: answered without the security header".to_owned()),
            }
        }
        Rpc::Bundles => {
            let r = first::<X509BundlesRequest, X509BundlesResponse>(&mut grpc, BUNDLES_PATH, true)
                .await
                .map_err(|s| format!("FetchX509Bundles: {:?}: {}", s.code(), s.message()))?;
            if r.bundles.values().any(|b| !b.is_empty()) {
                Ok(())
            } else {
                Err("FetchX509Bundles: no bundle".to_owned())
            }
        }
        Rpc::Svid => {
            let r = first::<X509svidRequest, X509svidResponse>(&mut grpc, SVID_PATH, true)
                .await
                .map_err(|s| format!("FetchX509SVID: {:?}: {}", s.code(), s.message()))?;
            match r.svids.first() {
                Some(s)
                    if s.spiffe_id.ends_with(id_suffix)
                        && !s.x509_svid.is_empty()
                        && !s.x509_svid_key.is_empty()
                        && !s.bundle.is_empty() =>
                {
                    Ok(())
                }
                Some(s) => Err(format!(
                    "FetchX509SVID: unexpected SVID {} ({} certificate bytes, {} bundle bytes)",
                    s.spiffe_id,
                    s.x509_svid.len(),
                    s.bundle.len()
                )),
                None => Err("FetchX509SVID: no SVID in the response".to_owned()),
            }
        }
    }
}

/// The first message of a server-streaming RPC.
async fn first<Req, Resp>(
    grpc: &mut tonic::client::Grpc<Channel>,
    path: &'static str,
    header: bool,
) -> Result<Resp, Status>
where
    Req: Message + Default + Send + Sync + 'static,
    Resp: Message + Default + Send + Sync + 'static,
{
    let mut request = tonic::Request::new(Req::default());
    if header {
        request
            .metadata_mut()
            .insert("workload.spiffe.io", MetadataValue::from_static("true"));
    }
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let mut stream = grpc
        .server_streaming(request, PathAndQuery::from_static(path), codec)
        .await?
        .into_inner();
    stream
        .message()
        .await?
        .ok_or_else(|| Status::unknown("the stream ended without a response"))
}

/// One phase: every client sends `per_client` requests one after the
/// other, all clients at once.
async fn phase(
    channels: &[Channel],
    rpc: Rpc,
    per_client: usize,
    id_suffix: &str,
    agent_pid: u32,
) -> Value {
    let agent0 = cpu_secs(agent_pid);
    let me = std::process::id();
    let me0 = cpu_secs(me);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for channel in channels {
        let channel = channel.clone();
        let id_suffix = id_suffix.to_owned();
        set.spawn(async move {
            let mut ns = Vec::with_capacity(per_client);
            let mut errors = 0u64;
            let mut first_error = None;
            for _ in 0..per_client {
                let t = Instant::now();
                match request(&channel, rpc, &id_suffix).await {
                    Ok(()) => ns.push(t.elapsed().as_nanos() as u64),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (ns, errors, first_error)
        });
    }
    let mut all = Vec::with_capacity(per_client * channels.len());
    let mut errors = 0u64;
    let mut first_error: Option<String> = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((ns, e, fe)) => {
                all.extend(ns);
                errors += e;
                if first_error.is_none() {
                    first_error = fe;
                }
            }
            Err(e) => {
                errors += per_client as u64;
                first_error.get_or_insert_with(|| format!("client task: {e}"));
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let agent_cpu = cpu_secs(agent_pid) - agent0;
    let client_cpu = cpu_secs(me) - me0;
    all.sort_unstable();
    let us = |v: u64| v as f64 / 1e3;
    let mean = if all.is_empty() {
        f64::NAN
    } else {
        all.iter().sum::<u64>() as f64 / all.len() as f64 / 1e3
    };
    json!({
        "rpc": rpc.name(),
        "clients": channels.len(),
        "requests": all.len(),
        "errors": errors,
        "first_error": first_error,
        "elapsed_s": elapsed,
        "per_s": all.len() as f64 / elapsed,
        "p50_us": us(percentile(&all, 50.0)),
        "p90_us": us(percentile(&all, 90.0)),
        "p99_us": us(percentile(&all, 99.0)),
        "p999_us": us(percentile(&all, 99.9)),
        "max_us": us(all.last().copied().unwrap_or(0)),
        "mean_us": mean,
        "agent_cpu_s": agent_cpu,
        "client_cpu_s": client_cpu,
    })
}

/// The client side of `workload-api`, in the pod's namespace.
async fn workload_api_clients(
    socket: &str,
    clients: usize,
    requests: usize,
    rounds: usize,
    agent_pid: u32,
    id_suffix: &str,
) -> anyhow::Result<Value> {
    let endpoint = ::spiffe::transport::Endpoint::parse(&format!("unix:{socket}"))
        .map_err(|e| anyhow!("Workload API endpoint unix:{socket}: {e}"))?;
    let connect = || async {
        ::spiffe::transport::connect(&endpoint)
            .await
            .map_err(|e| anyhow!("connecting to {socket}: {e}"))
    };
    // The agent issues the pod's SVID after CNI ADD; wait for it.
    let probe = connect().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match request(&probe, Rpc::Svid, id_suffix).await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => bail!("no SVID for the pod after 30 s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    drop(probe);
    let mut channels = Vec::with_capacity(clients);
    for _ in 0..clients {
        channels.push(connect().await?);
    }
    let per_client = (requests / clients).max(1);
    let single = (requests / 5).clamp(200, 5000);
    // Warm-up on every connection, not reported.
    for rpc in Rpc::ALL {
        let warm = phase(&channels, rpc, 3, id_suffix, agent_pid).await;
        if warm["errors"].as_u64() != Some(0) {
            bail!("warm-up {}: {}", rpc.name(), warm["first_error"]);
        }
    }
    let mut phases = Vec::new();
    for round in 0..rounds {
        // Rotate the order so that no RPC always follows the same one.
        let order: Vec<Rpc> = (0..3).map(|i| Rpc::ALL[(round + i) % 3]).collect();
        for &rpc in &order {
            let p = phase(&channels, rpc, per_client, id_suffix, agent_pid).await;
            eprintln!(
                "palisade-bench: round {} {} x{clients}: p50 {:.3} ms, p99 {:.3} ms, {:.0}/s",
                round + 1,
                rpc.name(),
                p["p50_us"].as_f64().unwrap_or(f64::NAN) / 1e3,
                p["p99_us"].as_f64().unwrap_or(f64::NAN) / 1e3,
                p["per_s"].as_f64().unwrap_or(f64::NAN)
            );
            phases.push(p);
        }
        for &rpc in &order {
            let p = phase(&channels[..1], rpc, single, id_suffix, agent_pid).await;
            phases.push(p);
        }
    }
    Ok(json!({
        "per_client": per_client,
        "single_requests": single,
        "phases": phases,
    }))
}

// ---------------------------------------------------------------------------
// The child process

/// What a `palisade-bench spiffe-child` process does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildTask {
    /// The Workload API clients (run in the pod's network namespace).
    WorkloadApi {
        /// The Workload API socket.
        socket: String,
        /// Concurrent clients.
        clients: usize,
        /// Requests per phase.
        requests: usize,
        /// Rounds.
        rounds: usize,
        /// The agent, whose CPU time is read around each phase.
        agent_pid: u32,
        /// How the pod's SPIFFE ID ends.
        id_suffix: String,
    },
    /// One round of `rotation-burst`.
    RotationBurst {
        /// SVIDs held and re-issued.
        svids: usize,
    },
}

const CHILD_USAGE: &str = "usage: palisade-bench spiffe-child (workload-api SOCKET CLIENTS REQUESTS ROUNDS AGENT_PID ID_SUFFIX | rotation-burst SVIDS)";

impl ChildTask {
    /// The command-line words after `spiffe-child`.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            Self::WorkloadApi {
                socket,
                clients,
                requests,
                rounds,
                agent_pid,
                id_suffix,
            } => vec![
                "workload-api".into(),
                socket.clone(),
                clients.to_string(),
                requests.to_string(),
                rounds.to_string(),
                agent_pid.to_string(),
                id_suffix.clone(),
            ],
            Self::RotationBurst { svids } => vec!["rotation-burst".into(), svids.to_string()],
        }
    }

    /// Parses the words after `spiffe-child`.
    pub fn from_args(words: &[String]) -> anyhow::Result<Self> {
        let word = |i: usize| -> anyhow::Result<&str> {
            words.get(i).map(String::as_str).context(CHILD_USAGE)
        };
        let num = |i: usize| -> anyhow::Result<usize> {
            let w = word(i)?;
            w.parse()
                .map_err(|e| anyhow!("spiffe-child: {w:?}: {e}\n{CHILD_USAGE}"))
        };
        match words.first().map(String::as_str) {
            Some("workload-api") if words.len() == 7 => {
                let pid = word(5)?;
                Ok(Self::WorkloadApi {
                    socket: word(1)?.to_owned(),
                    clients: num(2)?,
                    requests: num(3)?,
                    rounds: num(4)?,
                    agent_pid: pid
                        .parse()
                        .map_err(|e| anyhow!("spiffe-child: pid {pid:?}: {e}"))?,
                    id_suffix: word(6)?.to_owned(),
                })
            }
            Some("rotation-burst") if words.len() == 2 => {
                Ok(Self::RotationBurst { svids: num(1)? })
            }
            _ => bail!(CHILD_USAGE),
        }
    }

    /// Runs the task in this process; its JSON result (printed on stdout by
    /// the caller). The process dies with the benchmark.
    pub fn run(&self) -> anyhow::Result<Value> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .context("prctl(PR_SET_PDEATHSIG)")?;
        match self {
            Self::WorkloadApi {
                socket,
                clients,
                requests,
                rounds,
                agent_pid,
                id_suffix,
            } => {
                if *clients == 0 || *rounds == 0 {
                    bail!("spiffe-child workload-api: CLIENTS and ROUNDS must be at least 1");
                }
                // One thread: the clients take at most one of the CPUs.
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the clients' runtime")?
                    .block_on(workload_api_clients(
                        socket, *clients, *requests, *rounds, *agent_pid, id_suffix,
                    ))
            }
            Self::RotationBurst { svids } => {
                if *svids == 0 {
                    bail!("spiffe-child rotation-burst: SVIDS must be at least 1");
                }
                rotation_round(*svids)
            }
        }
    }
}

/// Starts `palisade-bench spiffe-child <task>`, in `netns` if given.
fn spawn_child(
    task: &ChildTask,
    netns: Option<&palisade_tests::NetNs>,
) -> anyhow::Result<std::process::Child> {
    let exe = std::env::current_exe().context("locating palisade-bench")?;
    let mut cmd = Command::new(exe);
    cmd.arg("spiffe-child")
        .args(task.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    match netns {
        Some(ns) => ns
            .spawn(&mut cmd)
            .with_context(|| format!("starting the clients in netns {}", ns.name())),
        None => cmd.spawn().context("starting a spiffe-child"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_args_round_trip() {
        for task in [
            ChildTask::WorkloadApi {
                socket: "/tmp/a b/workload.sock".into(),
                clients: 100,
                requests: 10_000,
                rounds: 3,
                agent_pid: 4242,
                id_suffix: "/ns/spiffe/sa/default".into(),
            },
            ChildTask::RotationBurst { svids: 10_000 },
        ] {
            assert_eq!(ChildTask::from_args(&task.to_args()).expect("parses"), task);
        }
        assert!(ChildTask::from_args(&["rotation-burst".into(), "x".into()]).is_err());
        assert!(ChildTask::from_args(&["nope".into()]).is_err());
    }

    #[test]
    fn a_fresh_spki_is_signed_for() {
        let td = trust_domain().expect("td");
        let now = SystemTime::now();
        let mut cas = CaSet::bootstrap(td.clone(), now, &POLICY).expect("CA");
        let spki = fresh_spki().expect("spki");
        let id = workload_ids(&td, 1).expect("ids").remove(0);
        let (chain, _, _) = cas
            .issue_x509_for_key(&id, &spki, now, SVID_TTL)
            .expect("issues for the key");
        assert_eq!(chain.len(), 1);
    }

    #[test]
    fn a_small_rotation_round_verifies() {
        let r = rotation_round(20).expect("round");
        assert_eq!(r["verified"], 20);
        assert_eq!(r["bundle_generations"], 2);
    }
}
