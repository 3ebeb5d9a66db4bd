//! Runtime enforcement on the host kernel with a real agent: a forbidden
//! syscall from a matched binary kills it (and the events say so), an
//! unmatched binary is untouched, exec events carry parent and ancestors.
//! Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use palisade_api::events::{ArgValue, Event, EventKind, KprobeAction};
use palisade_api::{Request, Response};
use palisade_tests::Topology;

fn events(client: &palisade_api::Client) -> Result<Vec<Event>> {
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

/// Polls the events until `pred` finds one (bounded).
fn wait_event(
    client: &palisade_api::Client,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Result<Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = events(client)?.into_iter().find(|e| pred(e)) {
            return Ok(e);
        }
        ensure!(Instant::now() < deadline, "no {what} event within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn forbidden_syscall_kills_matched_binary_only() -> Result<()> {
    let topo = Topology::builder()
        .agent_setting("runtime_enforcement", true)
        .node("n1")
        .build()?;
    let node = topo.node("n1")?;
    let client = node.client();
    let matched = node.dir().join("evilperl");
    std::fs::copy("/usr/bin/perl", &matched).context("copying perl")?;
    let policy = format!(
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
      matchBinaries:
      - operator: In
        values: [\"{}\"]
      matchActions:
      - action: Sigkill
",
        matched.display()
    );
    client.call(&Request::TracingPolicyApply {
        source: "test".into(),
        yaml: policy,
    })?;

    let script = "use POSIX; POSIX::setuid(0); print qq(alive\\n);";
    let killed = Command::new(&matched).args(["-e", script]).output()?;
    ensure!(
        killed.status.signal() == Some(9),
        "the matched binary must be killed by SIGKILL, got {:?} ({})",
        killed.status,
        String::from_utf8_lossy(&killed.stdout)
    );
    let fine = Command::new("/usr/bin/perl")
        .args(["-e", script])
        .output()?;
    ensure!(
        fine.status.success() && fine.stdout == b"alive\n",
        "an unmatched binary is untouched: {:?}",
        fine.status
    );

    let bin = matched.display().to_string();
    let kprobe = wait_event(&client, "process_kprobe", |e| {
        matches!(&e.kind, EventKind::ProcessKprobe(k)
            if k.process.as_ref().is_some_and(|p| p.binary == bin))
    })?;
    let EventKind::ProcessKprobe(k) = &kprobe.kind else {
        unreachable!()
    };
    assert_eq!(k.action, KprobeAction::Sigkill);
    assert_eq!(k.policy_name, "no-setuid-root");
    assert_eq!(k.function_name, "sys_setuid");
    assert!(matches!(
        k.args.first().and_then(|a| a.arg.as_ref()),
        Some(ArgValue::IntArg(0))
    ));
    assert!(k.parent.is_some(), "the kprobe event names the parent");
    wait_event(&client, "process_exit with SIGKILL", |e| {
        matches!(&e.kind, EventKind::ProcessExit(x)
            if x.signal == "SIGKILL" && x.process.as_ref().is_some_and(|p| p.binary == bin))
    })?;
    Ok(())
}

#[test]
fn exec_events_carry_parent_and_ancestors() -> Result<()> {
    let topo = Topology::builder()
        .agent_setting("runtime_enforcement", true)
        .node("n1")
        .build()?;
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
