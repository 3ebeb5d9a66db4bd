//! `palisade auth ...`: mutual authentication between node agents.

use std::time::{Duration, SystemTime};

use clap::Subcommand;
use palisade_api::{AuthReport, Request, Response};

use super::output::{self, OutputFormat, Table};
use super::{unexpected, CliError, Ctx};

/// `palisade auth ...`.
#[derive(Debug, Subcommand)]
pub enum AuthCmd {
    /// Every pair of identities this node authenticated or needs: state,
    /// expiry, last handshake, failures and why; then the counters.
    List,
}

/// Runs `palisade auth ...`.
pub fn run(ctx: &mut Ctx<'_>, cmd: &AuthCmd) -> Result<bool, CliError> {
    let AuthCmd::List = cmd;
    let report = match ctx.call(&Request::AuthList)? {
        Response::Auth(report) => report,
        other => return Err(unexpected("auth list", other)),
    };
    let text = match ctx.format {
        OutputFormat::Json => output::json(&report),
        OutputFormat::Human => render(&report, SystemTime::now()),
    };
    ctx.print(&text)?;
    Ok(true)
}

/// `5m ago`, `in 40m`: a time relative to now.
fn relative(unix: u64, now: SystemTime) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(unix);
    let (secs, future) = match t.duration_since(now) {
        Ok(d) => (d.as_secs(), true),
        Err(e) => (e.duration().as_secs(), false),
    };
    let amount = match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// The listing, as `palisade auth list` prints it.
pub(super) fn render(report: &AuthReport, now: SystemTime) -> String {
    if !report.enabled {
        return format!(
            "mutual authentication is off: {}\n",
            report.disabled_reason.as_deref().unwrap_or("disabled")
        );
    }
    let mut t = Table::new(&[
        "LOCAL",
        "REMOTE",
        "NODE",
        "TYPE",
        "STATE",
        "EXPIRES",
        "LAST HANDSHAKE",
        "FAILURES",
        "WHY",
    ]);
    for p in &report.pairs {
        let last = match (p.last_handshake, p.origin.as_str()) {
            (Some(at), origin) => format!("{} ({origin})", relative(at, now)),
            (None, "restored") => "before restart".to_owned(),
            (None, _) => "never".to_owned(),
        };
        let why = match (&p.last_error, p.next_attempt) {
            (Some(e), Some(next)) => format!("{e} (retry {})", relative(next, now)),
            (Some(e), None) => e.clone(),
            (None, _) => String::new(),
        };
        let named = |id: u32, labels: &Option<String>| match labels {
            Some(l) => format!("{id} ({l})"),
            None => id.to_string(),
        };
        t.row(vec![
            named(p.local_identity, &p.local_labels),
            named(p.remote_identity, &p.remote_labels),
            p.remote_node.clone(),
            p.auth_type.clone(),
            if p.needed {
                p.state.clone()
            } else {
                format!("{} (not required here)", p.state)
            },
            p.expires.map(|e| relative(e, now)).unwrap_or_default(),
            last,
            p.failures.to_string(),
            why,
        ]);
    }
    let s = &report.stats;
    let counts = |m: &std::collections::BTreeMap<String, u64>| {
        if m.is_empty() {
            "0".to_owned()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"));
    format!(
        "{}\nlistening on {}; {} map entries; {} drop signals\nhandshakes as client: {} ok, failed: {}; latency p50 {}, p99 {}\nhandshakes as server: {} ok, refused: {}\n",
        t.render(),
        report.listen.as_deref().unwrap_or("-"),
        s.map_entries,
        s.signals,
        s.handshakes,
        counts(&s.failures),
        ms(s.latency_p50_ms),
        ms(s.latency_p99_ms),
        s.accepted,
        counts(&s.refused),
    )
}

#[cfg(test)]
mod tests {
    use palisade_api::{AuthRecord, AuthStats};

    use super::*;

    #[test]
    fn the_listing_says_state_and_why() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let report = AuthReport {
            enabled: true,
            disabled_reason: None,
            listen: Some("0.0.0.0:4250".into()),
            pairs: vec![AuthRecord {
                local_identity: 256,
                remote_identity: 300,
                local_labels: Some("shop app=db".into()),
                remote_labels: None,
                remote_node: "n2".into(),
                remote_node_address: Some("192.168.0.2".into()),
                auth_type: "spiffe".into(),
                state: "failing".into(),
                needed: true,
                origin: "none".into(),
                expires: None,
                last_handshake: None,
                peer_spiffe_id: None,
                failures: 3,
                last_error: Some("untrusted: other trust domain".into()),
                next_attempt: Some(1_000_002),
            }],
            stats: AuthStats::default(),
        };
        let text = render(&report, now);
        assert!(text.contains("failing"), "{text}");
        assert!(text.contains("256 (shop app=db)"), "{text}");
        assert!(
            text.contains("untrusted: other trust domain (retry in 2s)"),
            "{text}"
        );
        assert!(text.contains("never"), "{text}");
        let off = render(&crate::auth::disabled_report("identity is disabled"), now);
        assert!(off.contains("identity is disabled"));
    }
}
