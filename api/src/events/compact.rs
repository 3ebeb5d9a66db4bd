//! The one-line human summary of an event (`Display` for [`Event`]).
//!
//! `<kind> <where> <binary> [<arguments>] <detail>`, where `<where>` is
//! `namespace/pod` for pod processes and the node name otherwise (as in
//! Tetragon's compact output), and `<detail>` is the exit signal or status,
//! or the hook and its action. Everything outside printable ASCII is escaped
//! (`\n`, `\u{e9}`), so the summary is always one plain-ASCII line.

use std::fmt::{self, Display, Write as _};

use super::{Event, EventKind, KprobeAction, Process};

/// Writes `s` with everything outside printable ASCII escaped.
struct Ascii<'a>(&'a str);

impl Display for Ascii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c == ' ' || c.is_ascii_graphic() {
                f.write_char(c)?;
            } else {
                write!(f, "{}", c.escape_default())?;
            }
        }
        Ok(())
    }
}

/// `SIGKILL` for `KPROBE_ACTION_SIGKILL`; nothing for an unknown action.
fn action(action: KprobeAction) -> &'static str {
    match action {
        KprobeAction::Unknown => "",
        a => a
            .as_str()
            .strip_prefix("KPROBE_ACTION_")
            .unwrap_or(a.as_str()),
    }
}

impl Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match &self.kind {
            EventKind::ProcessExec(_) => "exec",
            EventKind::ProcessExit(_) => "exit",
            EventKind::ProcessKprobe(_) => "kprobe",
            EventKind::ProcessTracepoint(_) => "tracepoint",
            EventKind::ProcessLsm(_) => "lsm",
        };
        write!(f, "{label:<6}")?;
        let process = self.kind.process();
        match process.and_then(|p| p.pod.as_ref()) {
            Some(pod) => write!(f, " {}/{}", Ascii(&pod.namespace), Ascii(&pod.name))?,
            None if self.node_name.is_empty() => f.write_str(" -")?,
            None => write!(f, " {}", Ascii(&self.node_name))?,
        }
        let binary = process.map_or("", |p: &Process| p.binary.as_str());
        write!(
            f,
            " {}",
            Ascii(if binary.is_empty() { "?" } else { binary })
        )?;
        let words: Vec<String> = match &self.kind {
            EventKind::ProcessExec(_) => {
                let arguments = process.map_or("", |p| p.arguments.as_str());
                vec![arguments.to_owned()]
            }
            EventKind::ProcessExit(e) => {
                let arguments = process.map_or("", |p| p.arguments.as_str());
                let end = if e.signal.is_empty() {
                    e.status.to_string()
                } else {
                    e.signal.clone()
                };
                vec![arguments.to_owned(), end]
            }
            EventKind::ProcessKprobe(e) => {
                vec![e.function_name.clone(), action(e.action).to_owned()]
            }
            EventKind::ProcessTracepoint(e) => {
                vec![
                    format!("{}/{}", e.subsys, e.event),
                    action(e.action).to_owned(),
                ]
            }
            EventKind::ProcessLsm(e) => vec![e.function_name.clone(), action(e.action).to_owned()],
        };
        for word in words.iter().filter(|w| !w.is_empty()) {
            write!(f, " {}", Ascii(word))?;
        }
        Ok(())
    }
}
