//! Unit tests of the envelope, the omission rules, actions and the compact
//! summary. Whole-event golden tests are in `api/tests/events_golden.rs`.

use super::*;
use serde_json::json;

fn host_process(binary: &str, arguments: &str) -> Process {
    Process {
        exec_id: exec_id("node-1", 1_000, 42),
        pid: Some(42),
        uid: Some(0),
        binary: binary.to_owned(),
        arguments: arguments.to_owned(),
        ..Process::default()
    }
}

fn time() -> Timestamp {
    Timestamp::new(1_714_564_800, 123_456_789).unwrap()
}

#[test]
fn event_kinds_lists_every_variant() {
    let kinds = [
        EventKind::from(ProcessExec::default()),
        EventKind::from(ProcessExit::default()),
        EventKind::from(ProcessKprobe::default()),
        EventKind::from(ProcessTracepoint::default()),
        EventKind::from(ProcessLsm::default()),
    ];
    assert_eq!(kinds.len(), EVENT_KINDS.len());
    for (kind, name) in kinds.into_iter().zip(EVENT_KINDS) {
        let value = serde_json::to_value(Event::new(kind, "n", time())).unwrap();
        assert_eq!(
            value,
            json!({*name: {}, "node_name": "n", "time": "2024-05-01T12:00:00.123456789Z"})
        );
    }
}

#[test]
fn envelope_field_order_is_tetragons() {
    let mut event = Event::new(ProcessExec::default(), "n", time());
    event.cluster_name = "c".into();
    event.node_labels.insert("k".into(), "v".into());
    assert_eq!(
        event.to_json_line().unwrap(),
        "{\"process_exec\":{},\"node_name\":\"n\",\"time\":\"2024-05-01T12:00:00.123456789Z\",\
         \"cluster_name\":\"c\",\"node_labels\":{\"k\":\"v\"}}\n"
    );
}

#[test]
fn wrappers_are_written_when_zero_and_scalars_are_not() {
    let process = Process {
        pid: Some(0),
        uid: Some(0),
        tid: Some(0),
        in_init_tree: Some(false),
        refcnt: 0,
        ..Process::default()
    };
    assert_eq!(
        serde_json::to_value(&process).unwrap(),
        json!({"pid": 0, "uid": 0, "tid": 0, "in_init_tree": false})
    );
    assert_eq!(serde_json::to_value(Process::default()).unwrap(), json!({}));
    let exit = ProcessExit {
        status: 0,
        signal: String::new(),
        ..ProcessExit::default()
    };
    assert_eq!(serde_json::to_value(&exit).unwrap(), json!({}));
    let exit = ProcessExit {
        status: 2,
        ..ProcessExit::default()
    };
    assert_eq!(serde_json::to_value(&exit).unwrap(), json!({"status": 2}));
    // Sub-messages are written once set, even empty.
    let pod = Pod {
        container: Some(Container::default()),
        ..Pod::default()
    };
    assert_eq!(
        serde_json::to_value(&pod).unwrap(),
        json!({"container": {}})
    );
}

#[test]
fn actions_use_tetragon_names_and_numbers() {
    for (number, action) in KprobeAction::ALL.into_iter().enumerate() {
        assert_eq!(action.number(), number as i32);
        assert_eq!(KprobeAction::from_number(number as i64), Some(action));
        assert_eq!(KprobeAction::from_name(action.as_str()), Some(action));
        assert!(action.as_str().starts_with("KPROBE_ACTION_"));
    }
    assert_eq!(KprobeAction::Sigkill.as_str(), "KPROBE_ACTION_SIGKILL");
    assert_eq!(KprobeAction::Override.number(), 5);
    assert_eq!(KprobeAction::NoPost.number(), 9);
    assert_eq!(KprobeAction::Signal.number(), 10);

    let kprobe = ProcessKprobe {
        action: KprobeAction::Sigkill,
        ..ProcessKprobe::default()
    };
    assert_eq!(
        serde_json::to_value(&kprobe).unwrap(),
        json!({"action": "KPROBE_ACTION_SIGKILL"})
    );
    // Unknown is value 0: left out.
    assert_eq!(
        serde_json::to_value(ProcessKprobe::default()).unwrap(),
        json!({})
    );

    let read = |v| {
        serde_json::from_value::<ProcessKprobe>(json!({"action": v}))
            .unwrap()
            .action
    };
    assert_eq!(
        read(json!("KPROBE_ACTION_OVERRIDE")),
        KprobeAction::Override
    );
    assert_eq!(read(json!(3)), KprobeAction::Sigkill);
    assert_eq!(
        read(json!("KPROBE_ACTION_FROM_THE_FUTURE")),
        KprobeAction::Unknown
    );
    assert_eq!(read(json!(99)), KprobeAction::Unknown);
}

#[test]
fn enum_values_keep_names_and_numbers() {
    let caps: Capabilities =
        serde_json::from_value(json!({"permitted": ["CAP_CHOWN", "DAC_OVERRIDE", 63]})).unwrap();
    assert_eq!(
        caps.permitted,
        [
            EnumValue::from("CAP_CHOWN"),
            EnumValue::from("DAC_OVERRIDE"),
            EnumValue::Number(63)
        ]
    );
    assert_eq!(
        serde_json::to_value(&caps).unwrap(),
        json!({"permitted": ["CAP_CHOWN", "DAC_OVERRIDE", 63]})
    );
}

#[test]
fn reading_rejects_what_is_not_one_event() {
    let err = |line: &str| Event::from_json_line(line).unwrap_err();
    assert!(matches!(err("{\"node_name\":\"n\"}"), EventError::NoEvent));
    assert!(matches!(err("[]"), EventError::Json { .. }));
    assert!(matches!(err("not json"), EventError::Json { .. }));
    assert!(matches!(
        err("{\"process_exec\":{},\"process_exit\":{}}"),
        EventError::MultipleEvents { first, second } if first == "process_exec" && second == "process_exit"
    ));
    assert!(matches!(
        err("{\"process_uprobe\":{},\"node_name\":\"n\"}"),
        EventError::UnsupportedEvent { kind } if kind == "process_uprobe"
    ));
    assert!(matches!(
        err("{\"process_exec\":{\"process\":{\"pid\":\"x\"}}}"),
        EventError::Field { field, .. } if field == "process_exec"
    ));
    assert!(matches!(
        err("{\"process_exec\":{},\"time\":\"yesterday\"}"),
        EventError::Json { .. }
    ));
    // The same checks apply through serde.
    assert!(serde_json::from_str::<Event>("{\"process_uprobe\":{}}").is_err());
}

#[test]
fn reading_ignores_unknown_fields() {
    let line = r#"{"process_exec":{"process":{"pid":7,"future_field":{"a":1}},"future":[1]},
        "node_name":"n","aggregation_info":{"count":"2"},"future_top":true}"#;
    let event = Event::from_json_line(line).unwrap();
    let EventKind::ProcessExec(exec) = &event.kind else {
        panic!("{event:?}")
    };
    assert_eq!(exec.process.as_ref().and_then(|p| p.pid), Some(7));
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({"process_exec": {"process": {"pid": 7}}, "node_name": "n"})
    );
}

#[test]
fn compact_summaries() {
    let mut pod_process = host_process("/usr/bin/curl", "https://example.com/");
    pod_process.pod = Some(Pod {
        namespace: "default".into(),
        name: "xwing".into(),
        ..Pod::default()
    });
    let exec = Event::new(
        ProcessExec {
            process: Some(pod_process),
            ..ProcessExec::default()
        },
        "node-1",
        time(),
    );
    assert_eq!(
        exec.to_string(),
        "exec   default/xwing /usr/bin/curl https://example.com/"
    );

    let exit = Event::new(
        ProcessExit {
            process: Some(host_process("/usr/bin/cat", "/etc/shadow")),
            signal: "SIGKILL".into(),
            ..ProcessExit::default()
        },
        "node-1",
        time(),
    );
    assert_eq!(
        exit.to_string(),
        "exit   node-1 /usr/bin/cat /etc/shadow SIGKILL"
    );

    let exit_status = Event::new(
        ProcessExit {
            process: Some(host_process("/bin/false", "")),
            status: 1,
            ..ProcessExit::default()
        },
        "",
        time(),
    );
    assert_eq!(exit_status.to_string(), "exit   - /bin/false 1");

    let kprobe = Event::new(
        ProcessKprobe {
            process: Some(host_process("/usr/bin/cat", "/etc/shadow")),
            function_name: "security_file_open".into(),
            action: KprobeAction::Sigkill,
            ..ProcessKprobe::default()
        },
        "node-1",
        time(),
    );
    assert_eq!(
        kprobe.to_string(),
        "kprobe node-1 /usr/bin/cat security_file_open SIGKILL"
    );

    let tracepoint = Event::new(
        ProcessTracepoint {
            process: None,
            subsys: "syscalls".into(),
            event: "sys_enter_openat".into(),
            action: KprobeAction::Post,
            ..ProcessTracepoint::default()
        },
        "node-1",
        time(),
    );
    assert_eq!(
        tracepoint.to_string(),
        "tracepoint node-1 ? syscalls/sys_enter_openat POST"
    );

    let lsm = Event::new(
        ProcessLsm {
            process: Some(host_process("/usr/bin/zsh", "")),
            function_name: "bprm_check_security".into(),
            ..ProcessLsm::default()
        },
        "node-1",
        time(),
    );
    assert_eq!(
        lsm.to_string(),
        "lsm    node-1 /usr/bin/zsh bprm_check_security"
    );
}

#[test]
fn compact_summary_is_one_ascii_line() {
    let event = Event::new(
        ProcessExec {
            process: Some(host_process("/tmp/\u{e9}vil\nbin", "a\tb \u{1b}[31m")),
            ..ProcessExec::default()
        },
        "node-1",
        time(),
    );
    let line = event.to_string();
    assert_eq!(
        line,
        "exec   node-1 /tmp/\\u{e9}vil\\nbin a\\tb \\u{1b}[31m"
    );
    assert!(line.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
}
