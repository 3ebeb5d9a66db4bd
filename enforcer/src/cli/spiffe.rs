//! `palisade identity ca ...` and `palisade svid ...`: the SPIFFE CA and
//! the SVIDs this node holds.

use std::time::{Duration, SystemTime};

use clap::Subcommand;
use palisade_api::{CaNodeRecord, CaStatus, JoinTokenRecord, Request, Response, SvidRecord};

use super::output::{self, OutputFormat, Table};
use super::{unexpected, CliError, Ctx};

/// `palisade identity ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaCmd {
    /// The trust domain, every CA generation and the trust bundle.
    Show {
        /// Print only the X.509 trust bundle (PEM), for `openssl verify -CAfile`.
        #[arg(long)]
        bundle: bool,
    },
    /// Rotate the CA: a new generation joins the bundle now and signs after
    /// the propagation delay; every SVID is then re-issued.
    Rotate {
        /// Let the new CA sign at once instead of after the propagation delay.
        #[arg(long)]
        now: bool,
    },
    /// Join tokens of the node CA (on the node that serves it).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Nodes of the node CA (on the node that serves it).
    #[command(subcommand)]
    Node(NodeCmd),
}

/// `palisade identity ca token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a single-use join token for a node; it is printed once.
    Create {
        /// The node the token admits (its `node_name`).
        #[arg(long)]
        node: String,
        /// How long the token is valid, in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Outstanding and recently spent tokens (never their secrets).
    List,
}

/// `palisade identity ca node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Nodes that joined, and whether they are revoked.
    List,
    /// Revoke a node: the node CA refuses it (renewal and every SVID) until
    /// it joins again with a new token.
    Revoke {
        /// The node.
        node: String,
    },
}

/// `palisade svid ...`.
#[derive(Debug, Subcommand)]
pub enum SvidCmd {
    /// Every X.509-SVID this node holds.
    List,
    /// One SVID: its details and certificate chain (PEM; never the key).
    Inspect {
        /// Its SPIFFE ID, as in `spiffe://palisade.local/ns/default/sa/web`.
        spiffe_id: String,
    },
}

/// Runs `palisade identity ca ...`.
pub fn ca(ctx: &mut Ctx<'_>, cmd: &CaCmd) -> Result<bool, CliError> {
    let (request, name) = match cmd {
        CaCmd::Show { .. } => (Request::IdentityCaShow, "identity ca show"),
        CaCmd::Rotate { now } => (
            Request::IdentityCaRotate { immediately: *now },
            "identity ca rotate",
        ),
        CaCmd::Token(cmd) => return token(ctx, cmd),
        CaCmd::Node(cmd) => return node(ctx, cmd),
    };
    let status = match ctx.call(&request)? {
        Response::IdentityCa(status) => status,
        other => return Err(unexpected(name, other)),
    };
    let text = match (ctx.format, cmd) {
        (OutputFormat::Json, _) => output::json(&status),
        (OutputFormat::Human, CaCmd::Show { bundle: true }) => status.bundle_pem.clone(),
        (OutputFormat::Human, _) => render_ca(&status),
    };
    ctx.print(&text)?;
    Ok(true)
}

fn token(ctx: &mut Ctx<'_>, cmd: &TokenCmd) -> Result<bool, CliError> {
    let text = match cmd {
        TokenCmd::Create { node, ttl } => {
            let request = Request::IdentityTokenCreate {
                node: node.clone(),
                ttl_secs: *ttl,
            };
            match ctx.call(&request)? {
                Response::JoinToken {
                    token,
                    id,
                    node,
                    expires,
                } => match ctx.format {
                    OutputFormat::Json => output::json(
                        &serde_json::json!({"token": token, "id": id, "node": node, "expires": expires}),
                    ),
                    // The token alone on stdout, for `> join-token`.
                    OutputFormat::Human => {
                        eprintln!(
                            "join token {id} for node {node}, single use, valid until {}",
                            time(expires)
                        );
                        token
                    }
                },
                other => return Err(unexpected("identity ca token create", other)),
            }
        }
        TokenCmd::List => {
            let (_, tokens) = ca_nodes(ctx)?;
            match ctx.format {
                OutputFormat::Json => output::json(&tokens),
                OutputFormat::Human => render_tokens(&tokens),
            }
        }
    };
    ctx.print(&text)?;
    Ok(true)
}

fn node(ctx: &mut Ctx<'_>, cmd: &NodeCmd) -> Result<bool, CliError> {
    let text = match cmd {
        NodeCmd::List => {
            let (nodes, _) = ca_nodes(ctx)?;
            match ctx.format {
                OutputFormat::Json => output::json(&nodes),
                OutputFormat::Human => render_nodes(&nodes),
            }
        }
        NodeCmd::Revoke { node } => {
            let request = Request::IdentityNodeRevoke { node: node.clone() };
            match ctx.call(&request)? {
                Response::Done => format!("node {node} revoked"),
                other => return Err(unexpected("identity ca node revoke", other)),
            }
        }
    };
    ctx.print(&text)?;
    Ok(true)
}

fn ca_nodes(ctx: &mut Ctx<'_>) -> Result<(Vec<CaNodeRecord>, Vec<JoinTokenRecord>), CliError> {
    match ctx.call(&Request::IdentityNodeList)? {
        Response::CaNodes { nodes, tokens } => Ok((nodes, tokens)),
        other => Err(unexpected("identity ca node list", other)),
    }
}

fn render_nodes(nodes: &[CaNodeRecord]) -> String {
    let mut t = Table::new(&["NODE", "JOINED", "REVOKED"]);
    for n in nodes {
        t.row(vec![
            n.name.clone(),
            time(n.joined),
            n.revoked.map(time).unwrap_or_default(),
        ]);
    }
    t.render()
}

fn render_tokens(tokens: &[JoinTokenRecord]) -> String {
    let mut t = Table::new(&["ID", "NODE", "EXPIRES", "USED"]);
    for tok in tokens {
        t.row(vec![
            tok.id.clone(),
            tok.node.clone(),
            time(tok.expires),
            tok.used.map(time).unwrap_or_default(),
        ]);
    }
    t.render()
}

/// Runs `palisade svid ...`.
pub fn svid(ctx: &mut Ctx<'_>, cmd: &SvidCmd) -> Result<bool, CliError> {
    let text = match cmd {
        SvidCmd::List => {
            let svids = match ctx.call(&Request::SvidList)? {
                Response::Svids { svids } => svids,
                other => return Err(unexpected("svid list", other)),
            };
            match ctx.format {
                OutputFormat::Json => output::json(&svids),
                OutputFormat::Human => render_svids(&svids),
            }
        }
        SvidCmd::Inspect { spiffe_id } => {
            let request = Request::SvidInspect {
                spiffe_id: spiffe_id.clone(),
            };
            let (svid, chain_pem) = match ctx.call(&request)? {
                Response::Svid { svid, chain_pem } => (svid, chain_pem),
                other => return Err(unexpected("svid inspect", other)),
            };
            match ctx.format {
                OutputFormat::Json => {
                    output::json(&serde_json::json!({"svid": svid, "chain_pem": chain_pem}))
                }
                OutputFormat::Human => render_svid(&svid, &chain_pem),
            }
        }
    };
    ctx.print(&text)?;
    Ok(true)
}

fn time(unix: u64) -> String {
    crate::util::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(unix))
}

fn render_ca(status: &CaStatus) -> String {
    let mut t = Table::new(&["GEN", "STAGE", "KEY ID", "NOT BEFORE", "NOT AFTER", "NEXT"]);
    for g in &status.generations {
        let next = match (g.activate_after, g.dropped_after) {
            (Some(at), _) => format!("signs from {}", time(at)),
            (_, Some(at)) => format!("leaves the bundle at {}", time(at)),
            _ if !g.self_signed => "operator-supplied".to_owned(),
            _ => String::new(),
        };
        t.row(vec![
            g.number.to_string(),
            g.stage.clone(),
            g.key_id.clone(),
            time(g.not_before),
            time(g.not_after),
            next,
        ]);
    }
    format!(
        "trust domain:     {}\nWorkload API:     unix://{}\nSVIDs held:       {}\nnode CA:          {}\n\n{}",
        status.trust_domain,
        status.workload_api_socket,
        status.svids_held,
        status.node_ca.as_deref().unwrap_or("none (this node's CA signs for this node only)"),
        t.render()
    )
}

fn render_svids(svids: &[SvidRecord]) -> String {
    let mut t = Table::new(&[
        "SPIFFE ID",
        "KIND",
        "ENDPOINTS",
        "EXPIRES",
        "RENEWS",
        "CA GEN",
    ]);
    for s in svids {
        t.row(vec![
            s.spiffe_id.clone(),
            s.kind.clone(),
            s.endpoints
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
            time(s.not_after),
            time(s.renew_at),
            s.ca_generation.to_string(),
        ]);
    }
    t.render()
}

fn render_svid(svid: &SvidRecord, chain_pem: &str) -> String {
    format!(
        "SPIFFE ID:   {}\nkind:        {}\nendpoints:   {:?}\nnot before:  {}\nnot after:   {}\nrenews at:   {}\nCA gen:      {}\n\n{}",
        svid.spiffe_id,
        svid.kind,
        svid.endpoints,
        time(svid.not_before),
        time(svid.not_after),
        time(svid.renew_at),
        svid.ca_generation,
        chain_pem
    )
}
