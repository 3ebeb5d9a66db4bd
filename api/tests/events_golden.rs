//! Golden tests of the Tetragon-compatible event schema.
//!
//! `data/events.jsonl` holds events written for palisade in exactly the form
//! Tetragon's JSON export gives them (protojson, proto field names,
//! declaration order, no optional spaces): every event type, every argument
//! kind, wrapper fields at zero, 64-bit integers as strings, 0/3/6/9-digit
//! fractions. Reading and writing each line must give the same bytes back,
//! which also proves no field was dropped as unknown.
//!
//! `tetragon_corpus` runs the same round trip over real Tetragon output if a
//! directory of it is available (see there).

use std::path::PathBuf;

use palisade_api::events::{
    parse_exec_id, ArgValue, Event, EventError, EventKind, KprobeAction, Process,
};
use serde_json::Value;

const GOLDEN: &str = include_str!("data/events.jsonl");

fn processes(event: &Event) -> Vec<&Process> {
    let (process, parent, ancestors) = match &event.kind {
        EventKind::ProcessExec(e) => (&e.process, &e.parent, &e.ancestors),
        EventKind::ProcessExit(e) => (&e.process, &e.parent, &e.ancestors),
        EventKind::ProcessKprobe(e) => (&e.process, &e.parent, &e.ancestors),
        EventKind::ProcessTracepoint(e) => (&e.process, &e.parent, &e.ancestors),
        EventKind::ProcessLsm(e) => (&e.process, &e.parent, &e.ancestors),
    };
    process
        .iter()
        .chain(parent.iter())
        .chain(ancestors.iter())
        .collect()
}

#[test]
fn golden_lines_round_trip_byte_for_byte() {
    let mut count = 0;
    for (n, line) in GOLDEN.lines().enumerate() {
        let event = Event::from_json_line(line).unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
        let written = event.to_json_line().unwrap();
        let original: Value = serde_json::from_str(line).unwrap();
        let rewritten: Value = serde_json::from_str(&written).unwrap();
        assert_eq!(rewritten, original, "line {}", n + 1);
        assert_eq!(
            written,
            format!("{line}\n"),
            "line {}: field order or form differs",
            n + 1
        );
        assert_eq!(serde_json::from_str::<Event>(&written).unwrap(), event);
        for process in processes(&event) {
            let id = parse_exec_id(&process.exec_id).unwrap();
            assert_eq!(Some(id.pid), process.pid, "line {}", n + 1);
            assert_eq!(id.node_name, event.node_name);
        }
        let summary = event.to_string();
        assert!(
            summary.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
            "{summary}"
        );
        count += 1;
    }
    assert_eq!(count, 10);
}

#[test]
fn golden_values_are_read_into_the_right_fields() {
    let events: Vec<Event> = GOLDEN
        .lines()
        .map(|l| Event::from_json_line(l).unwrap())
        .collect();

    let EventKind::ProcessExec(exec) = &events[0].kind else {
        panic!("{:?}", events[0])
    };
    let process = exec.process.as_ref().unwrap();
    assert_eq!(process.uid, Some(1000));
    assert_eq!(process.in_init_tree, Some(true));
    assert_eq!(process.start_time.unwrap().nanos(), 123_456_789);
    assert_eq!(process.pod.as_ref().unwrap().workload_kind, "Deployment");
    assert_eq!(exec.ancestors.len(), 1);
    assert_eq!(
        events[0].to_string(),
        "exec   shop/checkout-7c9f8d6b5-x2x4q /usr/bin/curl -s https://payments.example.com/health"
    );

    let EventKind::ProcessExec(sudo) = &events[1].kind else {
        panic!()
    };
    let sudo = sudo.process.as_ref().unwrap();
    assert_eq!(sudo.uid, Some(0), "uid 0 is written and read");
    assert_eq!(sudo.binary_properties.as_ref().unwrap().setuid, Some(0));
    assert_eq!(sudo.environment_variables[0].key, "LANG");

    let EventKind::ProcessExit(exit) = &events[2].kind else {
        panic!()
    };
    assert_eq!((exit.signal.as_str(), exit.status), ("SIGKILL", 0));
    assert_eq!(
        events[2].to_string(),
        "exit   shop/checkout-7c9f8d6b5-x2x4q /usr/bin/cat /etc/shadow SIGKILL"
    );

    let EventKind::ProcessKprobe(kill) = &events[4].kind else {
        panic!()
    };
    assert_eq!(kill.action, KprobeAction::Sigkill);
    assert_eq!(kill.return_action, KprobeAction::Post);
    assert_eq!(kill.args[0].label, "file");
    assert_eq!(kill.args[1].arg, Some(ArgValue::IntArg(0)));
    assert_eq!(kill.args[2].arg, Some(ArgValue::SizeArg(4096)));
    assert_eq!(
        kill.return_value.as_ref().unwrap().arg,
        Some(ArgValue::IntArg(-1))
    );
    assert_eq!(
        kill.kernel_stack_trace[0].address,
        18_446_744_072_635_809_792
    );
    assert_eq!(
        events[4].to_string(),
        "kprobe shop/checkout-7c9f8d6b5-x2x4q /usr/bin/cat security_file_permission SIGKILL"
    );

    let EventKind::ProcessKprobe(connect) = &events[5].kind else {
        panic!()
    };
    assert!(
        connect.args.iter().all(|a| a.arg.is_some()),
        "every argument kind is modelled"
    );
    assert!(connect
        .args
        .iter()
        .any(|a| a.arg == Some(ArgValue::LongArg(i64::MIN))));

    let EventKind::ProcessLsm(lsm) = &events[6].kind else {
        panic!()
    };
    assert!(lsm.ima_hash.starts_with("sha256:"));
    let EventKind::ProcessLsm(deny) = &events[7].kind else {
        panic!()
    };
    assert_eq!(deny.action, KprobeAction::Override);

    let EventKind::ProcessTracepoint(tp) = &events[8].kind else {
        panic!()
    };
    assert_eq!(
        (tp.subsys.as_str(), tp.event.as_str()),
        ("syscalls", "sys_enter_openat")
    );
    assert_eq!(tp.args[0].arg, Some(ArgValue::LongArg(-100)));
    assert_eq!(events[9].cluster_name, "prod-eu-1");
}

/// Real Tetragon output: every `*.json` and `*.jsonl` file in
/// `$PALISADE_TETRAGON_EVENTS`, else in `shared/conformance/tetragon-events`
/// next to this checkout. Each file holds one or more JSON events (lines or
/// pretty-printed). Event types palisade does not model are counted and
/// skipped; every other event must read and write back to the same JSON value.
#[test]
fn tetragon_corpus() {
    let dir = std::env::var_os("PALISADE_TETRAGON_EVENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/conformance/tetragon-events")
        });
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!(
            "SKIPPED: no Tetragon event corpus at {} (set PALISADE_TETRAGON_EVENTS)",
            dir.display()
        );
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
        .collect();
    files.sort();
    let (mut checked, mut unsupported) = (0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for value in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
            let value = value.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let line = value.to_string();
            let event = match Event::from_json_line(&line) {
                Err(EventError::UnsupportedEvent { .. }) => {
                    unsupported += 1;
                    continue;
                }
                other => other.unwrap_or_else(|e| panic!("{}: {e}", file.display())),
            };
            let written: Value = serde_json::from_str(&event.to_json_line().unwrap()).unwrap();
            assert_eq!(written, value, "{}", file.display());
            checked += 1;
        }
    }
    println!("{checked} Tetragon events round-tripped, {unsupported} of unsupported types skipped, {} files", files.len());
    assert!(
        checked > 0,
        "the corpus at {} holds no supported event",
        dir.display()
    );
}
