//! Runtime enforcement on the host kernel with a real agent: a forbidden
//! syscall from a matched binary kills it (and the events say so), an
//! unmatched binary is untouched, exec events carry parent and ancestors.
//! Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use palisade_api::events::{
    ArgValue, Event, EventKind, KprobeAction, ProcessKprobe, ProcessTracepoint,
};
use palisade_api::{Client, Request, Response, RuntimeStatus};
use palisade_tests::{Node, PodSpec, Topology, TopologyBuilder};

/// One node `n1` whose agent enforces tracing policies.
fn runtime_node() -> TopologyBuilder {
    Topology::builder()
        .agent_setting("runtime_enforcement", true)
        .node("n1")
}

/// Copies the binary `from` into the node's directory as `name`.
fn copy_binary(node: &Node, from: &str, name: &str) -> Result<PathBuf> {
    let to = node.dir().join(name);
    std::fs::copy(from, &to).with_context(|| format!("copying {from} to {}", to.display()))?;
    Ok(to)
}

/// The end of a selector (YAML, indented for its `matchArgs`): only
/// `binary`, killed.
fn sigkill_binary(binary: &Path) -> String {
    format!(
        "      matchBinaries:
      - operator: In
        values: [\"{}\"]
      matchActions:
      - action: Sigkill
",
        binary.display()
    )
}

/// Applies the tracing policy `yaml` through the API.
fn apply(client: &Client, yaml: String) -> Result<Response> {
    Ok(client.call(&Request::TracingPolicyApply {
        source: "test".into(),
        yaml,
    })?)
}

/// Applies `yaml` and returns how its first policy's hooks run (one line
/// per hook, as `tracingpolicy list` shows them).
fn apply_hooks(client: &Client, yaml: String) -> Result<String> {
    let applied = apply(client, yaml)?;
    let Response::TracingPolicies { policies } = applied else {
        panic!("unexpected response {applied:?}");
    };
    Ok(policies
        .first()
        .map(|p| p.hooks.join("\n"))
        .unwrap_or_default())
}

fn events(client: &Client) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    client.stream(
        &Request::RuntimeEvents {
            follow: false,
            limit: 100_000,
        },
        |r| match r {
            Response::RuntimeEvent { json } => {
                if let Ok(e) = Event::from_json_line(&json) {
                    out.push(e);
                }
                true
            }
            _ => false,
        },
    )?;
    Ok(out)
}

/// Polls the events until `pick` takes something out of one (bounded).
fn wait_for<T>(client: &Client, what: &str, pick: impl Fn(&Event) -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = events(client)?;
        if let Some(t) = events.iter().find_map(&pick) {
            return Ok(t);
        }
        ensure!(
            Instant::now() < deadline,
            "no {what} event within 10 s among the agent's {} events (last: {:?})",
            events.len(),
            events.last().map(|e| &e.kind)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls the events until `pred` finds one (bounded).
fn wait_event(client: &Client, what: &str, pred: impl Fn(&Event) -> bool) -> Result<Event> {
    wait_for(client, what, |e| pred(e).then(|| e.clone()))
}

/// Whether `event` is about a process running `binary`.
fn from_binary(event: &Event, binary: &Path) -> bool {
    event
        .kind
        .process()
        .is_some_and(|p| Path::new(&p.binary) == binary)
}

/// The first `process_kprobe` event of `binary`, and the whole event.
fn wait_kprobe(client: &Client, binary: &Path) -> Result<(ProcessKprobe, Event)> {
    wait_for(client, "process_kprobe", |e| match &e.kind {
        EventKind::ProcessKprobe(k) if from_binary(e, binary) => {
            Some((k.as_ref().clone(), e.clone()))
        }
        _ => None,
    })
}

/// The first `process_tracepoint` event of `binary`.
fn wait_tracepoint(client: &Client, binary: &Path) -> Result<ProcessTracepoint> {
    wait_for(client, "process_tracepoint", |e| match &e.kind {
        EventKind::ProcessTracepoint(t) if from_binary(e, binary) => Some(t.as_ref().clone()),
        _ => None,
    })
}

/// Runs `binary -e script` (a copy of perl).
fn perl(binary: &Path, script: &str) -> Result<Output> {
    Command::new(binary)
        .args(["-e", script])
        .output()
        .with_context(|| format!("running {}", binary.display()))
}

/// `out` must be a SIGKILL.
fn ensure_sigkilled(out: &Output, what: &str) -> Result<()> {
    ensure!(
        out.status.signal() == Some(9),
        "{what}: must be killed by SIGKILL, got {:?} ({})",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// `out` must be a clean exit after printing `alive`.
fn ensure_alive(out: &Output, what: &str) -> Result<()> {
    ensure!(
        out.status.success() && out.stdout == b"alive\n",
        "{what}: must run to the end, got {:?} ({})",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Perl calling `setuid(0)`.
const SETUID_ROOT: &str = "use POSIX; POSIX::setuid(0); print qq(alive\\n);";

/// Kills `binary` when it calls `setuid(0)`.
fn no_setuid_root(binary: &Path) -> String {
    format!(
        "apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: no-setuid-root
spec:
  kprobes:
  - call: sys_setuid
    syscall: true
    args:
    - index: 0
      type: int
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: [\"0\"]
{}",
        sigkill_binary(binary)
    )
}

/// Runs the perl copy `binary` calling `setuid(0)`: it must die of SIGKILL.
fn ensure_killed(binary: &Path, when: &str) -> Result<()> {
    ensure_sigkilled(
        &perl(binary, SETUID_ROOT)?,
        &format!("{when}: the matched binary"),
    )
}

/// The runtime generations pinned under the node's bpf root.
fn generations(node: &palisade_tests::Node) -> Vec<String> {
    let mut g: Vec<String> = std::fs::read_dir(node.bpf_root().join("runtime"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    g.sort();
    g
}

#[test]
fn forbidden_syscall_kills_matched_binary_only() -> Result<()> {
    let topo = runtime_node().build()?;
    let node = topo.node("n1")?;
    let client = node.client();
    let matched = copy_binary(node, "/usr/bin/perl", "evilperl")?;
    let applied = apply(&client, no_setuid_root(&matched))?;
    // This kernel has no fentry: the hook runs from the syscall's tracepoint.
    let Response::TracingPolicies { policies } = applied else {
        panic!("unexpected response {applied:?}");
    };
    assert_eq!(
        policies.first().map(|p| p.hooks.as_slice()),
        Some(
            &["spec.kprobes[0]: syscall setuid = 105, tracepoint syscalls/sys_enter_setuid, in-kernel selectors".to_owned()][..]
        ),
        "{policies:?}"
    );

    ensure_killed(&matched, "agent running")?;
    ensure_alive(
        &perl(Path::new("/usr/bin/perl"), SETUID_ROOT)?,
        "an unmatched binary is untouched",
    )?;

    let (k, _) = wait_kprobe(&client, &matched)?;
    assert_eq!(k.action, KprobeAction::Sigkill);
    assert_eq!(k.policy_name, "no-setuid-root");
    assert_eq!(k.function_name, "__x64_sys_setuid");
    assert!(matches!(
        k.args.first().and_then(|a| a.arg.as_ref()),
        Some(ArgValue::IntArg(0))
    ));
    assert!(k.parent.is_some(), "the kprobe event names the parent");
    wait_event(&client, "process_exit with SIGKILL", |e| {
        matches!(&e.kind, EventKind::ProcessExit(x) if x.signal == "SIGKILL")
            && from_binary(e, &matched)
    })?;
    Ok(())
}

/// Kills `binary` when it opens a path starting with `prefix`.
fn no_open_under(binary: &Path, prefix: &str) -> String {
    format!(
        "apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: no-secret-open
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 0
      type: int
    - index: 1
      type: string
    - index: 2
      type: int
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: [\"{prefix}\"]
{}",
        sigkill_binary(binary)
    )
}

/// Perl opening `path` for reading, then saying it is alive.
fn open_path(path: &str) -> String {
    format!("open(my $f, q(<), q({path})); print qq(alive\\n);")
}

/// A path-prefix hook on `openat` has a head prefilter: calls whose path
/// begins differently never reach its selectors, and those that pass it
/// are still decided by the selectors.
#[test]
fn a_path_hook_runs_behind_the_head_prefilter() -> Result<()> {
    let topo = runtime_node().build()?;
    let node = topo.node("n1")?;
    let client = node.client();
    let matched = copy_binary(node, "/usr/bin/perl", "pathperl")?;
    let dir = node.dir().display().to_string();
    let secret = format!("{dir}/secret");
    let hooks = apply_hooks(&client, no_open_under(&matched, &secret))?;
    assert!(
        hooks.contains("syscall openat = 257, ")
            && hooks
                .ends_with("in-kernel selectors behind a head prefilter on argument 1 (1 head)"),
        "{hooks}"
    );

    // Turned away by the prefilter (other first bytes), then by the
    // selectors (same first bytes, other path).
    ensure_alive(
        &perl(&matched, &open_path("/nonexistent-pal/secret"))?,
        "a path with other first bytes",
    )?;
    ensure_alive(
        &perl(&matched, &open_path(&format!("{dir}/public")))?,
        "a path that shares the head only",
    )?;
    ensure_sigkilled(
        &perl(&matched, &open_path(&format!("{secret}.txt")))?,
        "opening the protected path",
    )?;
    let (k, _) = wait_kprobe(&client, &matched)?;
    assert_eq!(k.action, KprobeAction::Sigkill);
    assert_eq!(k.function_name, "__x64_sys_openat");
    assert!(
        matches!(k.args.get(1).and_then(|a| a.arg.as_ref()), Some(ArgValue::StringArg(p)) if *p == format!("{secret}.txt")),
        "{:?}",
        k.args
    );
    Ok(())
}

/// Perl connecting a TCP socket to 127.0.0.1:`port` (a closed loopback
/// port refuses at once), then saying it is alive.
fn connect_loopback(port: u16) -> String {
    format!(
        "use Socket; socket(my $s, PF_INET, SOCK_STREAM, 0) or die; \
         connect($s, pack_sockaddr_in({port}, inet_aton(q(127.0.0.1)))); print qq(alive\\n);"
    )
}

/// Kills `binary` when it connects to 127.0.0.0/8 port `port`. A `sockaddr`
/// argument has one address and port, matched with SAddr/SPort (Tetragon's
/// semantics).
fn no_loopback_port(binary: &Path, port: u16) -> String {
    format!(
        "apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: no-loopback-port
spec:
  kprobes:
  - call: sys_connect
    syscall: true
    args:
    - index: 0
      type: int
    - index: 1
      type: sockaddr
    selectors:
    - matchArgs:
      - index: 1
        operator: SAddr
        values: [\"127.0.0.0/8\"]
      - index: 1
        operator: SPort
        values: [\"{port}\"]
{}",
        sigkill_binary(binary)
    )
}

/// A copy of perl named `name` under `policy(binary, forbidden)`: connecting
/// to loopback port `forbidden` kills it, port `allowed` does not. Returns
/// the topology (keep it alive), a client of its node and the copy.
fn forbidden_port(
    name: &str,
    policy: fn(&Path, u16) -> String,
    forbidden: u16,
    allowed: u16,
) -> Result<(Topology, Client, PathBuf)> {
    let topo = runtime_node().build()?;
    let node = topo.node("n1")?;
    let client = node.client();
    let matched = copy_binary(node, "/usr/bin/perl", name)?;
    apply(&client, policy(&matched, forbidden))?;

    ensure_sigkilled(
        &perl(&matched, &connect_loopback(forbidden))?,
        &format!("a TCP connection to port {forbidden}"),
    )?;
    ensure_alive(
        &perl(&matched, &connect_loopback(allowed))?,
        &format!("a TCP connection to port {allowed}, not forbidden"),
    )?;
    Ok((topo, client, matched))
}

#[test]
fn connect_to_a_forbidden_port_kills_and_reports_the_sockaddr() -> Result<()> {
    const FORBIDDEN: u16 = 47_001;
    let (_topo, client, matched) = forbidden_port("netperl", no_loopback_port, FORBIDDEN, 47_002)?;

    let (k, kprobe) = wait_kprobe(&client, &matched)?;
    assert_eq!(k.action, KprobeAction::Sigkill);
    assert_eq!(k.function_name, "__x64_sys_connect");
    let Some(ArgValue::SockaddrArg(sa)) = k.args.get(1).and_then(|a| a.arg.as_ref()) else {
        panic!("argument 1 is not a sockaddr: {:?}", k.args);
    };
    assert_eq!(
        (sa.family.as_str(), sa.addr.as_str(), sa.port),
        ("AF_INET", "127.0.0.1", u32::from(FORBIDDEN))
    );
    let json = kprobe.to_json_line()?;
    assert!(json.contains("\"sockaddr_arg\""), "{json}");
    Ok(())
}

/// Kills `binary` when one of its TCP sockets to 127.0.0.0/8 port `port`
/// changes state (the raw tracepoint `sock/inet_sock_set_state`, whose
/// argument 0 is the `struct sock *`).
fn no_tcp_state_change(binary: &Path, port: u16) -> String {
    format!(
        "apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: no-tcp-to-port
spec:
  tracepoints:
  - subsystem: sock
    event: inet_sock_set_state
    raw: true
    args:
    - index: 0
      type: sock
    selectors:
    - matchArgs:
      - index: 0
        operator: DAddr
        values: [\"127.0.0.0/8\"]
      - index: 0
        operator: DPort
        values: [\"{port}\"]
      - index: 0
        operator: Protocol
        values: [IPPROTO_TCP]
      - index: 0
        operator: Family
        values: [AF_INET]
      - index: 0
        operator: NotDPortPriv
{}",
        sigkill_binary(binary)
    )
}

#[test]
fn sock_argument_filters_on_a_raw_tracepoint() -> Result<()> {
    const FORBIDDEN: u16 = 47_003;
    let (_topo, client, matched) =
        forbidden_port("sockperl", no_tcp_state_change, FORBIDDEN, 47_004)?;

    let t = wait_tracepoint(&client, &matched)?;
    let Some(ArgValue::SockArg(sk)) = t.args.first().and_then(|a| a.arg.as_ref()) else {
        panic!("argument 0 is not a sock: {:?}", t.args);
    };
    assert_eq!(
        (
            sk.family.as_str(),
            sk.protocol.as_str(),
            sk.daddr.as_str(),
            sk.dport
        ),
        ("AF_INET", "IPPROTO_TCP", "127.0.0.1", u32::from(FORBIDDEN))
    );
    assert!(!sk.state.is_empty(), "a sock reports its state");
    Ok(())
}

/// Perl entering x86_64 `tuxcall` (184: never implemented, ENOSYS, and
/// without a tracepoint of its own), then saying it is alive.
const TUXCALL: &str = "syscall(184, 7); print qq(alive\\n);";

/// A runtime node, its API client and a copy of perl named `name` on it;
/// `None` (the caller skips) on a kernel where `tuxcall` has a tracepoint.
fn tuxcall_node(name: &str) -> Result<Option<(Topology, Client, PathBuf)>> {
    if Path::new("/sys/kernel/tracing/events/syscalls/sys_enter_tuxcall").exists() {
        println!("SKIPPED: this kernel has a tuxcall tracepoint");
        return Ok(None);
    }
    let topo = runtime_node().build()?;
    let node = topo.node("n1")?;
    let client = node.client();
    let matched = copy_binary(node, "/usr/bin/perl", name)?;
    Ok(Some((topo, client, matched)))
}

/// A syscall without a tracepoint of its own (x86_64 `tuxcall`, never
/// implemented: ENOSYS) is hooked through the raw dispatcher on
/// `raw_syscalls:sys_enter`, attached only for it.
#[test]
fn a_syscall_without_a_tracepoint_runs_from_the_raw_dispatcher() -> Result<()> {
    let Some((topo, client, matched)) = tuxcall_node("tuxperl")? else {
        return Ok(());
    };
    let policy = no_setuid_root(&matched)
        .replace("call: sys_setuid", "call: sys_tuxcall")
        .replace(
            "      - index: 0\n        operator: Equal\n        values: [\"0\"]\n",
            "      - index: 0\n        operator: Equal\n        values: [\"7\"]\n",
        );
    apply(&client, policy)?;
    let links = topo.node("n1")?.bpf_root().join("runtime/g1/links");
    ensure!(
        links.join("pal_sys_enter").exists(),
        "the raw dispatcher is not attached"
    );
    ensure_sigkilled(&perl(&matched, TUXCALL)?, "the matched binary")?;
    ensure_alive(
        &perl(Path::new("/usr/bin/perl"), TUXCALL)?,
        "an unmatched binary",
    )?;
    client.call(&Request::TracingPolicyDelete {
        name: "no-setuid-root".into(),
    })?;
    ensure!(
        !links.join("pal_sys_enter").exists(),
        "the raw dispatcher is left attached"
    );
    Ok(())
}

/// Kills `binary` when it enters syscall `nr` (Tetragon's
/// `raw_syscalls/sys_enter` with an `id` filter, as in its list examples).
fn no_raw_syscall(binary: &Path, nr: u32) -> String {
    format!(
        "apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: no-raw-syscall
spec:
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    args:
    - index: 4
      type: int64
    selectors:
    - matchArgs:
      - index: 4
        operator: Equal
        values: [\"{nr}\"]
{}",
        sigkill_binary(binary)
    )
}

/// A `raw_syscalls/sys_enter` hook that can only match setuid runs from
/// `syscalls/sys_enter_setuid` (no program on every syscall) and still
/// kills and reports with the raw tracepoint's fields.
#[test]
fn raw_syscalls_hook_on_one_id_runs_from_that_syscalls_tracepoint() -> Result<()> {
    let topo = runtime_node().build()?;
    let node = topo.node("n1")?;
    let client = node.client();
    let matched = copy_binary(node, "/usr/bin/perl", "rawperl")?;
    apply(&client, no_raw_syscall(&matched, 105))?;

    let links: Vec<String> = std::fs::read_dir(node.bpf_root().join("runtime/g1/links"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure!(
        links
            .iter()
            .any(|l| l.starts_with("hook-") && l.ends_with("-setuid")),
        "no link on syscalls/sys_enter_setuid: {links:?}"
    );
    ensure!(
        !links
            .iter()
            .any(|l| l.starts_with("hook-") && !l.contains("-setuid")),
        "the hook is attached to raw_syscalls/sys_enter too: {links:?}"
    );

    ensure_sigkilled(&perl(&matched, SETUID_ROOT)?, "the matched binary")?;
    let t = wait_tracepoint(&client, &matched)?;
    assert_eq!(
        (t.subsys.as_str(), t.event.as_str()),
        ("raw_syscalls", "sys_enter")
    );
    assert_eq!(t.action, KprobeAction::Sigkill);
    let id = t.args.first().and_then(|a| a.arg.as_ref());
    assert_eq!(id, Some(&ArgValue::LongArg(105)), "{:?}", t.args);
    ensure_alive(
        &perl(Path::new("/usr/bin/perl"), SETUID_ROOT)?,
        "an unmatched binary",
    )?;
    Ok(())
}

/// A `raw_syscalls/sys_enter` hook on an id without a tracepoint of its
/// own (x86_64 `tuxcall`) stays on `raw_syscalls` behind the syscall-id
/// prefilter: every other syscall is turned away before the selectors,
/// and the one it names is still decided by them.
#[test]
fn raw_syscalls_hook_on_an_id_without_a_tracepoint_runs_behind_the_id_prefilter() -> Result<()> {
    let Some((_topo, client, matched)) = tuxcall_node("idperl")? else {
        return Ok(());
    };
    let hooks = apply_hooks(&client, no_raw_syscall(&matched, 184))?;
    assert!(
        hooks
            .ends_with("tracepoint raw_syscalls/sys_enter behind a syscall-id prefilter (tuxcall)"),
        "{hooks}"
    );
    let status = |client: &Client| -> Result<RuntimeStatus> {
        let Response::Status(status) = client.call(&Request::Status)? else {
            panic!("status")
        };
        Ok(status.runtime.expect("runtime status"))
    };
    let before = status(&client)?;
    ensure_alive(
        &perl(Path::new("/usr/bin/perl"), TUXCALL)?,
        "an unmatched binary",
    )?;
    ensure_sigkilled(&perl(&matched, TUXCALL)?, "the matched binary")?;
    let t = wait_tracepoint(&client, &matched)?;
    assert_eq!(t.action, KprobeAction::Sigkill);
    let id = t.args.first().and_then(|a| a.arg.as_ref());
    assert_eq!(id, Some(&ArgValue::LongArg(184)), "{:?}", t.args);
    let after = status(&client)?;
    // Two perls ran hundreds of other syscalls each; the selectors saw
    // only the two tuxcalls (and whatever else of the machine's ran tuxcall).
    let spared = after.id_prefilter_skips - before.id_prefilter_skips;
    let runs = after.hook_runs - before.hook_runs;
    assert!(
        spared >= 100 && runs >= 2 && runs < spared,
        "spared {spared}, evaluated {runs}"
    );
    Ok(())
}

/// Kills `binary` when it transmits a TCP packet to 127.0.0.0/8 port
/// `port` (the raw tracepoint `net/net_dev_start_xmit`, argument 0 the
/// `struct sk_buff *`; loopback transmits in the sender's context).
fn no_packets_to_port(binary: &Path, port: u16) -> String {
    format!(
        "apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: no-packets-to-port
spec:
  tracepoints:
  - subsystem: net
    event: net_dev_start_xmit
    raw: true
    args:
    - index: 0
      type: skb
    selectors:
    - matchArgs:
      - index: 0
        operator: DAddr
        values: [\"127.0.0.0/8\"]
      - index: 0
        operator: DPort
        values: [\"{port}\"]
      - index: 0
        operator: Protocol
        values: [IPPROTO_TCP]
{}",
        sigkill_binary(binary)
    )
}

#[test]
fn skb_argument_filters_on_a_raw_tracepoint() -> Result<()> {
    const FORBIDDEN: u16 = 47_005;
    let (_topo, client, matched) =
        forbidden_port("skbperl", no_packets_to_port, FORBIDDEN, 47_006)?;

    let t = wait_tracepoint(&client, &matched)?;
    let Some(ArgValue::SkbArg(skb)) = t.args.first().and_then(|a| a.arg.as_ref()) else {
        panic!("argument 0 is not an skb: {:?}", t.args);
    };
    assert_eq!(
        (
            skb.family.as_str(),
            skb.protocol.as_str(),
            skb.daddr.as_str(),
            skb.dport
        ),
        ("AF_INET", "IPPROTO_TCP", "127.0.0.1", u32::from(FORBIDDEN))
    );
    assert_ne!(skb.sport, 0, "the source port of a sent segment is known");
    Ok(())
}

#[test]
fn exec_events_carry_parent_and_ancestors() -> Result<()> {
    let topo = runtime_node().build()?;
    let client = topo.node("n1")?.client();
    let marker = format!("marker-{}", std::process::id());
    // `; exit 0` keeps each shell from exec-ing its last command.
    let inner = format!("/usr/bin/true {marker}; exit 0");
    let st = Command::new("/bin/sh")
        .args(["-c", &format!("/bin/sh -c '{inner}'; exit 0")])
        .status()?;
    ensure!(st.success());
    let me = std::env::current_exe()?.display().to_string();
    let exec = wait_event(&client, "process_exec of true", |e| {
        matches!(&e.kind, EventKind::ProcessExec(x)
            if x.process.as_ref().is_some_and(|p| p.binary == "/usr/bin/true" && p.arguments == marker))
    })?;
    let EventKind::ProcessExec(x) = &exec.kind else {
        unreachable!()
    };
    let process = x.process.as_ref().expect("process");
    let parent = x.parent.as_ref().expect("parent");
    assert!(
        parent.binary.ends_with("sh") || parent.binary.ends_with("dash"),
        "parent {parent:?}"
    );
    assert_eq!(process.parent_exec_id, parent.exec_id);
    assert!(
        x.ancestors
            .first()
            .is_some_and(|a| a.binary.ends_with("sh") || a.binary.ends_with("dash")),
        "the outer shell is the first ancestor: {:?}",
        x.ancestors
    );
    assert!(
        x.ancestors
            .iter()
            .any(|a| a.binary == me && a.pid == Some(std::process::id())),
        "this test process is an ancestor: {:?}",
        x.ancestors.iter().map(|a| &a.binary).collect::<Vec<_>>()
    );
    Ok(())
}

/// No BPF-LSM on this kernel: `Override` on `file_open` and
/// `bprm_check_security` runs on fanotify permission events.
#[test]
fn matched_binary_cannot_open_protected_file_through_fanotify() -> Result<()> {
    let topo = runtime_node().build()?;
    let node = topo.node("n1")?;
    let client = node.client();
    let dir = node.dir();
    let evilcat = copy_binary(node, "/usr/bin/cat", "evilcat")?;
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret\n")?;
    let other = dir.join("other");
    std::fs::write(&other, "public\n")?;
    let forbidden = copy_binary(node, "/usr/bin/true", "forbidden-true")?;
    let policy = format!(
        "apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: protect-secret
spec:
  lsmhooks:
  - hook: file_open
    args:
    - index: 0
      type: file
    selectors:
    - matchBinaries:
      - operator: In
        values: [\"{evilcat}\"]
      matchArgs:
      - index: 0
        operator: Equal
        values: [\"{secret}\"]
      matchActions:
      - action: Override
        argError: -1
  - hook: bprm_check_security
    args:
    - index: 0
      type: linux_binprm
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: [\"{forbidden}\"]
      matchActions:
      - action: Override
        argError: -1
",
        evilcat = evilcat.display(),
        secret = secret.display(),
        forbidden = forbidden.display(),
    );
    let applied = apply(&client, policy)?;
    let Response::TracingPolicies { policies } = applied else {
        panic!("{applied:?}")
    };
    assert!(
        policies[0].hooks.iter().all(|h| h.contains("fanotify")),
        "{:?}",
        policies[0].hooks
    );

    let denied = Command::new(&evilcat).arg(&secret).output()?;
    ensure!(
        !denied.status.success()
            && String::from_utf8_lossy(&denied.stderr).contains("Operation not permitted"),
        "the matched binary must get EPERM: {:?} {}",
        denied.status,
        String::from_utf8_lossy(&denied.stderr)
    );
    let cat = Command::new("/usr/bin/cat").arg(&secret).output()?;
    ensure!(
        cat.status.success() && cat.stdout == b"s3cret\n",
        "an unmatched binary reads the file: {:?}",
        cat.status
    );
    let public = Command::new(&evilcat).arg(&other).output()?;
    ensure!(
        public.status.success() && public.stdout == b"public\n",
        "the matched binary reads other files: {:?}",
        public.status
    );
    let exec = Command::new(&forbidden).status();
    ensure!(
        matches!(&exec, Err(e) if e.raw_os_error() == Some(1)),
        "exec of the forbidden binary must fail with EPERM (1): {exec:?}"
    );
    ensure!(Command::new("/usr/bin/true").status()?.success());

    let path = secret.display().to_string();
    let lsm = wait_event(&client, "process_lsm file_open", |e| {
        matches!(&e.kind, EventKind::ProcessLsm(l) if l.function_name == "file_open")
            && from_binary(e, &evilcat)
    })?;
    let EventKind::ProcessLsm(l) = &lsm.kind else {
        unreachable!()
    };
    assert_eq!(l.action, KprobeAction::Override);
    assert_eq!(l.policy_name, "protect-secret");
    assert!(
        matches!(l.args.first().and_then(|a| a.arg.as_ref()),
            Some(ArgValue::FileArg(f)) if f.path == path),
        "{:?}",
        l.args
    );
    let forbidden_path = forbidden.display().to_string();
    wait_event(&client, "process_lsm bprm_check_security", |e| {
        matches!(&e.kind, EventKind::ProcessLsm(l)
            if l.function_name == "bprm_check_security"
                && l.action == KprobeAction::Override
                && matches!(l.args.first().and_then(|a| a.arg.as_ref()),
                    Some(ArgValue::LinuxBinprmArg(b)) if b.path == forbidden_path))
    })?;
    let Response::Status(status) = client.call(&Request::Status)? else {
        panic!("status")
    };
    let rt = status.runtime.expect("runtime status");
    assert!(rt.file_accesses_denied >= 2, "{rt:?}");

    client.call(&Request::TracingPolicyDelete {
        name: "protect-secret".into(),
    })?;
    let after = Command::new(&evilcat).arg(&secret).output()?;
    ensure!(
        after.status.success(),
        "deleting the policy lifts the deny: {:?}",
        after.status
    );
    Ok(())
}

/// A delete that cannot remove the policy's saved copy fails, naming the
/// file, and leaves the policy in force (it would otherwise come back at
/// the next agent start); once the file can go, the delete goes through.
#[test]
fn delete_that_cannot_forget_a_policy_keeps_it() -> Result<()> {
    let topo = runtime_node().build()?;
    let node = topo.node("n1")?;
    let client = node.client();
    let matched = copy_binary(node, "/usr/bin/perl", "evilperl")?;
    apply(&client, no_setuid_root(&matched))?;
    let saved = node.dir().join("state/tracingpolicies/no-setuid-root.yaml");
    ensure!(saved.is_file(), "{} not saved", saved.display());
    // A non-empty directory in the file's place: unlink fails (EISDIR).
    std::fs::remove_file(&saved)?;
    std::fs::create_dir(&saved)?;
    std::fs::write(saved.join("keep"), b"")?;
    let delete = || {
        client.call(&Request::TracingPolicyDelete {
            name: "no-setuid-root".into(),
        })
    };
    let msg = delete().expect_err("the delete must fail").to_string();
    assert!(
        msg.contains("cannot remove") && msg.contains(&saved.display().to_string()),
        "{msg}"
    );
    ensure_killed(&matched, "after the failed delete")?;
    std::fs::remove_dir_all(&saved)?;
    delete()?;
    ensure_alive(&perl(&matched, SETUID_ROOT)?, "after the delete")?;
    Ok(())
}

/// Pinned enforcement: the kernel keeps killing while the agent is down
/// (clean stop or crash), and a restarted agent takes over and retires the
/// old generation.
#[test]
fn enforcement_survives_agent_restart() -> Result<()> {
    let topo = runtime_node().build()?;
    let node = topo.node("n1")?;
    let matched = copy_binary(node, "/usr/bin/perl", "evilperl")?;
    apply(&node.client(), no_setuid_root(&matched))?;
    ensure_killed(&matched, "agent running")?;
    assert_eq!(generations(node), ["g1"]);

    node.stop_agent(false)?;
    ensure_killed(&matched, "after SIGTERM, agent down")?;
    node.start_agent()?;
    ensure_killed(&matched, "agent restarted")?;
    assert_eq!(generations(node), ["g2"], "the old generation is retired");
    let Response::TracingPolicies { policies } = node.client().call(&Request::TracingPolicyList)?
    else {
        panic!("list")
    };
    assert_eq!(policies.len(), 1, "{policies:?}");

    node.stop_agent(true)?;
    ensure_killed(&matched, "after SIGKILL, agent down")?;
    node.start_agent()?;
    assert_eq!(generations(node), ["g3"]);
    Ok(())
}

/// `keep_runtime_enforcement: false`: a clean stop detaches the hooks.
#[test]
fn clean_stop_without_keep_detaches() -> Result<()> {
    let topo = runtime_node()
        .agent_setting("keep_runtime_enforcement", false)
        .build()?;
    let node = topo.node("n1")?;
    let matched = copy_binary(node, "/usr/bin/perl", "evilperl")?;
    apply(&node.client(), no_setuid_root(&matched))?;
    ensure_killed(&matched, "agent running")?;
    node.stop_agent(false)?;
    ensure_alive(
        &perl(&matched, SETUID_ROOT)?,
        "no agent, no kept enforcement",
    )?;
    assert!(generations(node).is_empty(), "{:?}", generations(node));
    Ok(())
}

/// A process in a pod's network namespace is attributed to the pod (from
/// the endpoint registry); a host process is not.
#[test]
fn exec_events_name_the_pod() -> Result<()> {
    let topo = runtime_node()
        .pod(PodSpec::new("shop", "web").on("n1").label("app", "web"))
        .build()?;
    let client = topo.node("n1")?.client();
    let pod = topo.pod("shop/web")?;
    let marker = format!("in-pod-{}", std::process::id());
    let status = pod
        .netns()
        .spawn(Command::new("/usr/bin/true").arg(&marker))?
        .wait()?;
    ensure!(status.success());
    let host_marker = format!("on-host-{}", std::process::id());
    ensure!(Command::new("/usr/bin/true")
        .arg(&host_marker)
        .status()?
        .success());
    let exec = |m: &str| {
        let m = m.to_owned();
        wait_event(&client, "process_exec", move |e| {
            matches!(&e.kind, EventKind::ProcessExec(x)
                if x.process.as_ref().is_some_and(|p| p.arguments == m))
        })
    };
    let in_pod = exec(&marker)?;
    let EventKind::ProcessExec(x) = &in_pod.kind else {
        unreachable!()
    };
    let p = x.process.as_ref().expect("process");
    let attributed = p.pod.as_ref().expect("the pod is named");
    assert_eq!(attributed.namespace, "shop");
    assert_eq!(attributed.name, "web");
    assert_eq!(
        attributed.pod_labels.get("app").map(String::as_str),
        Some("web")
    );
    assert_eq!(
        attributed.container.as_ref().map(|c| c.id.as_str()),
        Some(pod.container_id())
    );
    let on_host = exec(&host_marker)?;
    let EventKind::ProcessExec(x) = &on_host.kind else {
        unreachable!()
    };
    assert!(x.process.as_ref().is_some_and(|p| p.pod.is_none()));
    Ok(())
}

/// A stream of policies applies all or nothing: a policy whose hook fails
/// to attach is rolled back, and so are the ones before it in the stream
/// (a replaced policy comes back as it was).
#[test]
fn a_stream_applies_all_or_nothing() -> Result<()> {
    let topo = runtime_node().build()?;
    let client = topo.node("n1")?.client();
    let setuid_hooks = |name: &str, n: usize| {
        let hook =
            "  - call: sys_setuid\n    syscall: true\n    args:\n    - index: 0\n      type: int\n";
        format!(
            "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\nspec:\n  kprobes:\n{}",
            hook.repeat(n)
        )
    };
    let list = || -> Result<Vec<palisade_api::TracingPolicyRecord>> {
        match client.call(&Request::TracingPolicyList)? {
            Response::TracingPolicies { policies } => Ok(policies),
            other => anyhow::bail!("{other:?}"),
        }
    };
    client.call(&Request::TracingPolicyApply {
        source: "first".into(),
        yaml: setuid_hooks("a", 1),
    })?;
    // `a` again (2 hooks) and `b` with 15 hooks on setuid, the most one
    // syscall takes: with `a`'s in place, one of `b`'s cannot attach.
    let stream = format!("{}---\n{}", setuid_hooks("a", 2), setuid_hooks("b", 15));
    let err = client
        .call(&Request::TracingPolicyApply {
            source: "stream".into(),
            yaml: stream,
        })
        .expect_err("the stream must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("TracingPolicy b") && msg.contains("hooks"),
        "{msg}"
    );
    let policies = list()?;
    assert_eq!(policies.len(), 1, "{policies:?}");
    assert_eq!(policies[0].name, "a");
    assert_eq!(policies[0].source, "api:first", "a is back as it was");
    assert_eq!(policies[0].hooks.len(), 1, "{:?}", policies[0].hooks);

    // setuid's hooks run from its own tracepoint, attached only while a
    // hook on it is in force; the raw dispatcher (which every syscall of
    // the machine would pay for) is not attached at all.
    let node = topo.node("n1")?;
    let links = node.bpf_root().join("runtime/g1/links");
    let tp = links.join("sys-setuid");
    assert!(tp.exists(), "{}", tp.display());
    assert!(
        !links.join("pal_sys_enter").exists(),
        "the raw dispatcher is attached"
    );
    client.call(&Request::TracingPolicyDelete { name: "a".into() })?;
    assert!(!tp.exists(), "{} is left", tp.display());
    Ok(())
}

/// `followChildren` covers a process tree that started before the policy:
/// the agent gives running processes their binary-set bits from its cache.
#[test]
fn follow_children_covers_processes_started_before_the_policy() -> Result<()> {
    let topo = runtime_node().build()?;
    let node = topo.node("n1")?;
    let dir = node.dir();
    let evilsh = copy_binary(node, "/bin/dash", "evilsh")?;
    let status_file = dir.join("status");
    let script = format!(
        "sleep 2; /usr/bin/perl -e '{}'; echo $? > {}",
        SETUID_ROOT.replace('\'', ""),
        status_file.display()
    );
    let mut shell = Command::new(&evilsh).args(["-c", &script]).spawn()?;
    let policy = no_setuid_root(&evilsh).replace(
        "      - operator: In\n",
        "      - operator: In\n        followChildren: true\n",
    );
    apply(&node.client(), policy)?;
    ensure!(shell.wait()?.success());
    let status = std::fs::read_to_string(&status_file)?;
    ensure!(
        status.trim() == "137",
        "perl under the matched shell must die of SIGKILL (137), got {status:?}"
    );
    Ok(())
}
