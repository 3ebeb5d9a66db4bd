//! Rendering of the CLI's answers: aligned human tables, one line per flow
//! event, or JSON (`-o json`).

use std::fmt::Write as _;

use palisade_api::{
    AgentStatus, ApplySummary, ClusterStatus, EndpointRecord, FlowKind, FlowPeer, FlowRecord,
    IdentityRecord, Mechanism, NodeInfo, PolicyRecord,
};
use serde::Serialize;

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Tables and sentences.
    #[default]
    Human,
    /// JSON (one document; flow events one per line).
    Json,
}

/// A table with a header row and columns padded to their widest cell.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    /// The table as text, one line per row, columns separated by two
    /// spaces, no trailing spaces.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let w = widths.get(c).copied().unwrap_or(0);
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Pretty JSON of `value` with a final newline.
pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    // Our API types serialize without maps with non-string keys: cannot fail.
    let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.push('\n');
    s
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `palisade status`.
pub fn status(s: &AgentStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Agent:        palisade-agent {} on node {}",
        s.version, s.node_name
    );
    let _ = writeln!(out, "Uptime:       {}", uptime(s.uptime_secs));
    let _ = writeln!(out, "Pod CIDR:     {}", s.pod_cidr);
    let _ = writeln!(
        out,
        "BPF root:     {}{}",
        s.bpf_root,
        if s.restored_from_pins {
            " (restored from pins)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "Endpoints:    {}", s.endpoints);
    let _ = writeln!(out, "Identities:   {}", s.identities);
    let _ = writeln!(
        out,
        "Policies:     {} (revision {}, {} map entries)",
        s.policies, s.policy_revision, s.policy_entries
    );
    let _ = writeln!(out, "Conntrack:    {} entries", s.conntrack_entries);
    let _ = writeln!(out, "Events lost:  {}", s.events_lost);
    if let Some(a) = &s.auth {
        let failed: u64 = a.stats.failures.values().sum();
        let _ = writeln!(
            out,
            "Auth:         {} pairs authenticated, {} not (yet); handshakes {} ok, {} failed, {} accepted; p99 {}",
            a.authenticated,
            a.unauthenticated,
            a.stats.handshakes,
            failed,
            a.stats.accepted,
            a.stats
                .latency_p99_ms
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
        );
    }
    if let Some(r) = &s.runtime {
        let _ = writeln!(
            out,
            "Runtime:      {} tracing policies, {} processes cached ({} evicted), {} events",
            r.policies, r.processes, r.process_evictions, r.events_delivered
        );
        let _ = writeln!(
            out,
            "Runtime lost: {} (ring buffer full {}, undecodable {}, slow followers {}, log writes {}, fanotify overflow {}, fanotify queue {}); rate-limited {}",
            r.lost_ringbuf_full
                + r.lost_undecodable
                + r.lost_follower_lagged
                + r.lost_log_write
                + r.lost_fanotify_overflow
                + r.lost_fanotify_queue,
            r.lost_ringbuf_full,
            r.lost_undecodable,
            r.lost_follower_lagged,
            r.lost_log_write,
            r.lost_fanotify_overflow,
            r.lost_fanotify_queue,
            r.rate_limited
        );
        let _ = writeln!(
            out,
            "Hook runs:    {} evaluated, spared by prefilters: {} (path heads), {} (syscall ids)",
            r.hook_runs, r.head_prefilter_skips, r.id_prefilter_skips
        );
        if r.file_accesses_checked > 0 {
            let _ = writeln!(
                out,
                "File guard:   {} opens/execs checked (fanotify), {} denied, {} failed open/closed",
                r.file_accesses_checked, r.file_accesses_denied, r.file_checks_failed
            );
        }
    }
    if let Some(e) = &s.policy_dir_error {
        let _ = writeln!(out, "Policy dir:   ERROR {e}");
    }
    if !s.mechanisms.is_empty() {
        out.push('\n');
        out.push_str(&mechanisms(&s.mechanisms));
    }
    if !s.verdicts.is_empty() {
        out.push('\n');
        let mut t = Table::new(&["REASON", "CODE", "OBSERVATION", "PACKETS", "BYTES"]);
        for v in &s.verdicts {
            t.row(vec![
                v.reason.clone(),
                v.code.to_string(),
                v.observation.clone(),
                v.packets.to_string(),
                v.bytes.to_string(),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h{m}m")
    } else if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Feature / mechanism table (`status`, `probe`).
pub fn mechanisms(m: &[Mechanism]) -> String {
    let mut t = Table::new(&["FEATURE", "AVAILABLE", "MECHANISM"]);
    for f in m {
        t.row(vec![
            f.feature.clone(),
            yes_no(f.available).to_owned(),
            f.mechanism.clone(),
        ]);
    }
    t.render()
}

/// `palisade probe`.
pub fn probe(kernel: &str, btf: bool, features: &[Mechanism]) -> String {
    format!(
        "Kernel:  {kernel}\nBTF:     {}\n\n{}",
        if btf {
            "yes (/sys/kernel/btf/vmlinux)"
        } else {
            "no"
        },
        mechanisms(features)
    )
}

/// `palisade endpoint list`.
pub fn endpoints(eps: &[EndpointRecord]) -> String {
    if eps.is_empty() {
        return "No endpoints.\n".to_owned();
    }
    let mut t = Table::new(&[
        "ID", "POD", "IPV4", "IDENTITY", "INGRESS", "EGRESS", "AUDIT", "ENTRIES", "HOST IF",
        "POLICIES",
    ]);
    for e in eps {
        t.row(vec![
            e.ep_id.to_string(),
            format!("{}/{}", e.spec.pod_namespace, e.spec.pod_name),
            e.spec.ipv4.to_string(),
            e.identity.to_string(),
            enforced(e.ingress_enforced),
            enforced(e.egress_enforced),
            if e.audit { "on" } else { "off" }.to_owned(),
            e.policy_entries.to_string(),
            e.spec.host_ifname.clone(),
            if e.policies.is_empty() {
                "-".to_owned()
            } else {
                e.policies.join(",")
            },
        ]);
    }
    t.render()
}

fn enforced(b: bool) -> String {
    if b { "enforced" } else { "open" }.to_owned()
}

/// `palisade identity list`.
pub fn identities(ids: &[IdentityRecord]) -> String {
    let mut t = Table::new(&["ID", "SCOPE", "ENDPOINTS", "LABELS"]);
    for i in ids {
        t.row(vec![
            i.id.to_string(),
            i.scope.clone(),
            i.endpoints.to_string(),
            i.labels.join(" "),
        ]);
    }
    t.render()
}

/// `palisade node list`.
pub fn nodes(nodes: &[NodeInfo]) -> String {
    let mut t = Table::new(&["NAME", "ADDRESS", "POD CIDR", "ENDPOINTS", ""]);
    for n in nodes {
        t.row(vec![
            n.name.clone(),
            if n.address.is_empty() {
                "-".to_owned()
            } else {
                n.address.clone()
            },
            n.pod_cidr.clone(),
            n.endpoints.to_string(),
            if n.local { "(this node)" } else { "" }.to_owned(),
        ]);
    }
    t.render()
}

/// `palisade cluster status`.
pub fn cluster_status(s: &ClusterStatus) -> String {
    let mut out = String::new();
    if s.store == "local" {
        let _ = writeln!(
            out,
            "Store:        local (node {} alone, pod CIDR {}; no cluster section in the agent configuration)",
            s.node_name, s.pod_cidr
        );
        return out;
    }
    let _ = writeln!(out, "Store:        etcd {}", s.etcd_endpoints.join(", "));
    let _ = writeln!(
        out,
        "Node:         {} (pod CIDR {})",
        s.node_name, s.pod_cidr
    );
    let _ = writeln!(
        out,
        "Health:       {}",
        if s.connected {
            "connected"
        } else {
            "UNREACHABLE (enforcing the last known state)"
        }
    );
    let _ = writeln!(
        out,
        "Lease:        {}",
        s.lease_id
            .map_or_else(|| "none".to_owned(), |l| format!("{l:x}"))
    );
    let _ = writeln!(
        out,
        "Sync:         revision {}, {} listings, {} writes pending",
        s.synced_revision, s.resyncs, s.pending_writes
    );
    let _ = writeln!(
        out,
        "Known:        {} nodes, {} endpoints, {} identities ({} collected here)",
        s.nodes, s.endpoints, s.identities, s.identities_collected
    );
    if s.malformed_records > 0 {
        let _ = writeln!(out, "Malformed:    {} records skipped", s.malformed_records);
    }
    if let Some(o) = &s.overlay {
        let _ = writeln!(
            out,
            "Overlay:      {} (VXLAN, UDP {}, MTU {}) routing {} nodes",
            o.device, o.port, o.mtu, o.routed_nodes
        );
        for skipped in &o.skipped_nodes {
            let _ = writeln!(out, "  not routed: {skipped}");
        }
    }
    let _ = writeln!(
        out,
        "Last error:   {}",
        match (&s.last_error, s.last_error_unix) {
            (Some(e), Some(t)) => format!("{e} (at {t}, unix time)"),
            (Some(e), None) => e.clone(),
            _ => "none".to_owned(),
        }
    );
    out
}

/// `palisade policy list`.
pub fn policies(ps: &[PolicyRecord]) -> String {
    if ps.is_empty() {
        return "No policies.\n".to_owned();
    }
    let mut t = Table::new(&["KIND", "NAMESPACE", "NAME", "SELECTS", "SOURCE"]);
    for p in ps {
        t.row(vec![
            p.kind.clone(),
            p.namespace.clone().unwrap_or_else(|| "-".to_owned()),
            p.name.clone(),
            p.selected_endpoints.to_string(),
            p.source.clone(),
        ]);
    }
    t.render()
}

/// `palisade policy apply` of one source.
pub fn applied(source: &str, s: &ApplySummary) -> String {
    let mut out = format!(
        "{source}: applied {} polic{} and {} namespace{}; {} map entries written, {} removed\n",
        s.policies.len(),
        if s.policies.len() == 1 { "y" } else { "ies" },
        s.namespaces.len(),
        if s.namespaces.len() == 1 { "" } else { "s" },
        s.entries_upserted,
        s.entries_deleted
    );
    for p in &s.policies {
        let _ = writeln!(out, "  {p}");
    }
    for w in &s.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    out
}

fn peer(p: &FlowPeer, with_port: bool) -> String {
    let addr = if with_port && p.port != 0 {
        format!("{}:{}", p.ip, p.port)
    } else {
        p.ip.to_string()
    };
    match &p.name {
        Some(n) => format!("{n}({addr})"),
        None => addr,
    }
}

/// One flow event on one line: time, kind, src -> dst, proto/port,
/// verdict (reason), rule.
pub fn flow_line(f: &FlowRecord) -> String {
    let verdict = match f.kind {
        FlowKind::Flow => "ALLOWED".to_owned(),
        FlowKind::Drop => format!("DROPPED ({})", f.reason),
        FlowKind::Audit => format!("AUDIT would drop ({})", f.reason),
    };
    let kind = match f.kind {
        FlowKind::Flow => "flow",
        FlowKind::Drop => "drop",
        FlowKind::Audit => "audit",
    };
    if f.ethertype != 0 && f.ethertype != 0x0800 {
        return format!(
            "{} {kind:<5} {:<7} ethertype 0x{:04x} (not IPv4) {verdict}",
            f.time, f.direction, f.ethertype
        );
    }
    let port = if f.dst.port == 0 {
        f.protocol.clone()
    } else {
        format!("{}/{}", f.protocol, f.dst.port)
    };
    let mut line = format!(
        "{} {kind:<5} {:<7} {} -> {} {port} {verdict}",
        f.time,
        f.direction,
        peer(&f.src, true),
        peer(&f.dst, false),
    );
    if let Some(rule) = &f.rule {
        let _ = write!(line, " rule={rule}");
    }
    if let Some(auth) = &f.auth {
        let state = if f.kind == FlowKind::Flow {
            "authenticated"
        } else {
            "not authenticated"
        };
        let _ = write!(line, " auth={auth} ({state})");
    }
    line
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["xxxx".into(), "y".into()]);
        assert_eq!(t.render(), "A     LONGER\nxxxx  y\n");
    }

    fn flow(kind: FlowKind) -> FlowRecord {
        FlowRecord {
            seq: 1,
            time: "2026-01-01T00:00:00Z".into(),
            kind,
            reason: "policy_denied".into(),
            reason_code: -133,
            direction: "ingress".into(),
            protocol: "tcp".into(),
            ethertype: 0x0800,
            src: FlowPeer {
                ip: Ipv4Addr::new(10, 200, 0, 5),
                port: 40000,
                identity: 1000,
                name: Some("default/client".into()),
            },
            dst: FlowPeer {
                ip: Ipv4Addr::new(10, 200, 0, 6),
                port: 80,
                identity: 1001,
                name: None,
            },
            ep_id: 2,
            rule: Some("CiliumNetworkPolicy default/deny ingress[0]".into()),
            auth: None,
            auth_node: None,
        }
    }

    #[test]
    fn flow_lines() {
        assert_eq!(
            flow_line(&flow(FlowKind::Drop)),
            "2026-01-01T00:00:00Z drop  ingress default/client(10.200.0.5:40000) -> 10.200.0.6 tcp/80 DROPPED (policy_denied) rule=CiliumNetworkPolicy default/deny ingress[0]"
        );
        let mut f = flow(FlowKind::Flow);
        f.rule = None;
        f.dst.port = 0;
        f.protocol = "icmp".into();
        assert!(
            flow_line(&f).ends_with("-> 10.200.0.6 icmp ALLOWED"),
            "{}",
            flow_line(&f)
        );
        assert!(flow_line(&flow(FlowKind::Audit)).contains("AUDIT would drop"));
    }

    #[test]
    fn empty_lists_say_so() {
        assert_eq!(endpoints(&[]), "No endpoints.\n");
        assert_eq!(policies(&[]), "No policies.\n");
    }

    #[test]
    fn uptime_units() {
        assert_eq!(uptime(5), "5s");
        assert_eq!(uptime(3700), "1h1m40s");
        assert_eq!(uptime(90000), "1d1h0m");
    }
}
