//! The `palisade` command line: talks to the agent's local API (see
//! `palisade_api`), plus offline commands (`probe`, `policy validate`,
//! `scenario run`).

mod auth;
mod demo;
pub mod output;
mod policy;
mod spiffe;
mod tracing;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use palisade_api::{Client, ClientError, FlowKind, Request, Response};

pub use self::output::OutputFormat;

/// Environment variable naming the agent socket (below `--socket`).
pub const SOCKET_ENV: &str = "PALISADE_SOCKET";

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The agent could not be reached.
    #[error("{source}\nhint: start the agent (`palisade-agent --config /etc/palisade/agent.yaml`), or point --socket / PALISADE_SOCKET at its api_socket")]
    Unreachable {
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// The agent answered with an error, or the exchange failed.
    #[error("{source}")]
    Agent {
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// The agent answered something that does not fit the request.
    #[error("unexpected answer from the palisade agent to {request}: {answer}")]
    Unexpected {
        /// The request's name.
        request: &'static str,
        /// The answer (debug form).
        answer: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file (`-` for stdin).
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Writing to stdout failed.
    #[error("cannot write to stdout: {source}")]
    Write {
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The scenario runner failed.
    #[error("scenario run failed: {message}")]
    Scenario {
        /// The runner's error chain.
        message: String,
    },
}

impl From<ClientError> for CliError {
    fn from(source: ClientError) -> Self {
        match source {
            ClientError::Connect { .. } => Self::Unreachable { source },
            _ => Self::Agent { source },
        }
    }
}

/// palisade: inspect and drive the palisade node agent.
#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Inspect and drive the palisade node agent",
    propagate_version = true
)]
pub struct Cli {
    /// The agent's API socket [env: PALISADE_SOCKET] [default: /run/palisade/agent.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Cmd,
}

/// A command.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Agent health, counters and datapath state.
    Status,
    /// Probe this kernel's eBPF features (no agent needed).
    Probe,
    /// Endpoints (pods) on this node.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Security identities.
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// SPIFFE SVIDs this node holds.
    #[command(subcommand)]
    Svid(spiffe::SvidCmd),
    /// Mutual authentication between node agents (policies with
    /// `authentication.mode: required`).
    #[command(subcommand)]
    Auth(auth::AuthCmd),
    /// Network policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Nodes of the cluster.
    #[command(subcommand)]
    Node(NodeCmd),
    /// The cluster store (etcd).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Flow, drop and audit events.
    Flows(FlowsArgs),
    /// Runtime enforcement policies (Tetragon TracingPolicy).
    #[command(subcommand, name = "tracingpolicy")]
    TracingPolicy(tracing::TracingPolicyCmd),
    /// Runtime events (process exec/exit, kprobe, tracepoint, LSM) as
    /// Tetragon JSON lines.
    Events(tracing::EventsArgs),
    /// End-to-end scenarios.
    #[command(subcommand)]
    Scenario(ScenarioCmd),
    /// A live demo on this machine: a node, three pods, a policy, the flow
    /// log (creates network namespaces and an agent; removes them after).
    Demo(demo::DemoArgs),
}

/// `palisade endpoint ...`.
#[derive(Debug, Subcommand)]
pub enum EndpointCmd {
    /// List endpoints.
    List,
    /// Switch policy audit mode of an endpoint (would-be drops pass and are
    /// reported as audit events).
    Audit {
        /// Endpoint id (see `palisade endpoint list`).
        ep_id: u16,
        /// on or off.
        #[arg(value_enum)]
        mode: OnOff,
    },
}

/// on / off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// `palisade identity ...`.
#[derive(Debug, Subcommand)]
pub enum IdentityCmd {
    /// List identities in use.
    List,
    /// The SPIFFE certificate authority.
    #[command(subcommand)]
    Ca(spiffe::CaCmd),
}

/// `palisade node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List this node and every node it knows: address, pod CIDR,
    /// endpoints.
    List,
}

/// `palisade cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// The cluster store as this node sees it: health, sync state, last
    /// error.
    Status,
}

/// `palisade policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Check policy files offline (no agent needed).
    Validate {
        /// YAML files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Apply policy files (`-` reads stdin); each file is applied whole or
    /// not at all.
    Apply {
        /// YAML files, or `-`.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Delete a policy applied through the API.
    Delete {
        /// NetworkPolicy, CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy.
        kind: String,
        /// Its name.
        name: String,
        /// Its namespace (namespaced kinds).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// List policies in force.
    List,
}

/// `palisade flows`.
#[derive(Debug, clap::Args)]
pub struct FlowsArgs {
    /// Keep printing new events until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// Only events of these kinds (repeatable).
    #[arg(long, value_enum)]
    pub kind: Vec<FlowKindArg>,
    /// Only the last N recent events.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

/// A flow event kind on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowKindArg {
    /// Admitted connections.
    Flow,
    /// Drops.
    Drop,
    /// Would-be drops of endpoints in audit mode.
    Audit,
}

impl From<FlowKindArg> for FlowKind {
    fn from(k: FlowKindArg) -> Self {
        match k {
            FlowKindArg::Flow => FlowKind::Flow,
            FlowKindArg::Drop => FlowKind::Drop,
            FlowKindArg::Audit => FlowKind::Audit,
        }
    }
}

/// `palisade scenario ...`.
#[derive(Debug, Subcommand)]
pub enum ScenarioCmd {
    /// Run scenario files (needs root; builds its own nodes and pods).
    Run(ScenarioRunArgs),
}

/// `palisade scenario run`.
#[derive(Debug, clap::Args)]
pub struct ScenarioRunArgs {
    /// Scenario YAML files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The agent binary [default: palisade-agent next to this program, or
    /// in $PALISADE_BIN_DIR].
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<PathBuf>,
    /// The CNI plugin binary [default: palisade-cni next to this program,
    /// or in $PALISADE_BIN_DIR].
    #[arg(long, value_name = "PATH")]
    pub cni_bin: Option<PathBuf>,
    /// Leave namespaces, agents and files in place when a scenario fails.
    #[arg(long)]
    pub keep_on_failure: bool,
    /// Print setup steps on stderr.
    #[arg(short, long)]
    pub verbose: bool,
    /// Report scenarios that need what this build lacks (node-to-node
    /// encryption) as skipped, with the reason, instead of failed.
    #[arg(long)]
    pub skip_unsupported: bool,
}

/// What a command needs: where the agent is, how to print, where to.
pub struct Ctx<'a> {
    /// The agent's client.
    pub client: Client,
    /// The output format.
    pub format: OutputFormat,
    /// Where answers go (stdout).
    pub out: &'a mut dyn Write,
}

impl Ctx<'_> {
    fn print(&mut self, text: &str) -> Result<(), CliError> {
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|source| CliError::Write { source })
    }

    fn call(&self, request: &Request) -> Result<Response, CliError> {
        Ok(self.client.call(request)?)
    }
}

impl Cli {
    /// The socket: `--socket`, else `$PALISADE_SOCKET`, else the default.
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .or_else(|| {
                std::env::var_os(SOCKET_ENV)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_API_SOCKET))
    }
}

/// Runs the command; `Ok(false)` means it ran and found something wrong
/// (invalid policy, failed scenario): exit 1 without a further message.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<bool, CliError> {
    let mut ctx = Ctx {
        client: Client::new(cli.socket_path()),
        format: cli.output,
        out,
    };
    match &cli.command {
        Cmd::Status => status(&mut ctx),
        Cmd::Probe => probe(&mut ctx),
        Cmd::Endpoint(EndpointCmd::List) => endpoint_list(&mut ctx),
        Cmd::Endpoint(EndpointCmd::Audit { ep_id, mode }) => {
            endpoint_audit(&mut ctx, *ep_id, *mode)
        }
        Cmd::Identity(IdentityCmd::List) => identity_list(&mut ctx),
        Cmd::Identity(IdentityCmd::Ca(cmd)) => spiffe::ca(&mut ctx, cmd),
        Cmd::Svid(cmd) => spiffe::svid(&mut ctx, cmd),
        Cmd::Auth(cmd) => auth::run(&mut ctx, cmd),
        Cmd::Node(NodeCmd::List) => node_list(&mut ctx),
        Cmd::Cluster(ClusterCmd::Status) => cluster_status(&mut ctx),
        Cmd::Policy(PolicyCmd::Validate { files }) => policy::validate(&mut ctx, files),
        Cmd::Policy(PolicyCmd::Apply { files }) => policy::apply(&mut ctx, files),
        Cmd::Policy(PolicyCmd::Delete {
            kind,
            name,
            namespace,
        }) => policy::delete(&mut ctx, kind, name, namespace.as_deref()),
        Cmd::Policy(PolicyCmd::List) => policy::list(&mut ctx),
        Cmd::Flows(args) => flows(&mut ctx, args),
        Cmd::TracingPolicy(cmd) => tracing::run(&mut ctx, cmd),
        Cmd::Events(args) => tracing::events(&mut ctx, args),
        Cmd::Scenario(ScenarioCmd::Run(args)) => scenario_run(args, cli.output),
        Cmd::Demo(args) => demo::run(args, ctx.out),
    }
}

fn unexpected(request: &'static str, answer: Response) -> CliError {
    CliError::Unexpected {
        request,
        answer: format!("{answer:?}"),
    }
}

fn status(ctx: &mut Ctx<'_>) -> Result<bool, CliError> {
    let Response::Status(s) = ctx.call(&Request::Status)? else {
        return Err(CliError::Unexpected {
            request: "status",
            answer: "not a status".into(),
        });
    };
    let text = match ctx.format {
        OutputFormat::Human => output::status(&s),
        OutputFormat::Json => output::json(&s),
    };
    ctx.print(&text)?;
    Ok(true)
}

fn probe(ctx: &mut Ctx<'_>) -> Result<bool, CliError> {
    let r = crate::probe::probe();
    let text = match ctx.format {
        OutputFormat::Human => output::probe(&r.kernel, r.btf, &r.features),
        OutputFormat::Json => output::json(&r),
    };
    ctx.print(&text)?;
    Ok(true)
}

fn endpoint_list(ctx: &mut Ctx<'_>) -> Result<bool, CliError> {
    let endpoints = match ctx.call(&Request::EndpointList)? {
        Response::Endpoints { endpoints } => endpoints,
        other => return Err(unexpected("endpoint list", other)),
    };
    let text = match ctx.format {
        OutputFormat::Human => output::endpoints(&endpoints),
        OutputFormat::Json => output::json(&endpoints),
    };
    ctx.print(&text)?;
    Ok(true)
}

fn endpoint_audit(ctx: &mut Ctx<'_>, ep_id: u16, mode: OnOff) -> Result<bool, CliError> {
    let audit = mode == OnOff::On;
    match ctx.call(&Request::EndpointSetAudit { ep_id, audit })? {
        Response::Done | Response::Endpoint(_) => {}
        other => return Err(unexpected("endpoint audit", other)),
    }
    let text = match ctx.format {
        OutputFormat::Human => format!(
            "endpoint {ep_id}: policy audit mode {}\n",
            if audit { "on" } else { "off" }
        ),
        OutputFormat::Json => output::json(&serde_json::json!({"ep_id": ep_id, "audit": audit})),
    };
    ctx.print(&text)?;
    Ok(true)
}

fn identity_list(ctx: &mut Ctx<'_>) -> Result<bool, CliError> {
    let identities = match ctx.call(&Request::IdentityList)? {
        Response::Identities { identities } => identities,
        other => return Err(unexpected("identity list", other)),
    };
    let text = match ctx.format {
        OutputFormat::Human => output::identities(&identities),
        OutputFormat::Json => output::json(&identities),
    };
    ctx.print(&text)?;
    Ok(true)
}

fn node_list(ctx: &mut Ctx<'_>) -> Result<bool, CliError> {
    let nodes = match ctx.call(&Request::NodeList)? {
        Response::Nodes { nodes } => nodes,
        other => return Err(unexpected("node list", other)),
    };
    let text = match ctx.format {
        OutputFormat::Human => output::nodes(&nodes),
        OutputFormat::Json => output::json(&nodes),
    };
    ctx.print(&text)?;
    Ok(true)
}

fn cluster_status(ctx: &mut Ctx<'_>) -> Result<bool, CliError> {
    let status = match ctx.call(&Request::ClusterStatus)? {
        Response::Cluster(s) => s,
        other => return Err(unexpected("cluster status", other)),
    };
    let text = match ctx.format {
        OutputFormat::Human => output::cluster_status(&status),
        OutputFormat::Json => output::json(&status),
    };
    ctx.print(&text)?;
    Ok(true)
}

fn flows(ctx: &mut Ctx<'_>, args: &FlowsArgs) -> Result<bool, CliError> {
    let request = Request::Flows {
        follow: args.follow,
        since_seq: None,
        limit: args.last,
        kinds: args.kind.iter().map(|k| FlowKind::from(*k)).collect(),
    };
    let format = ctx.format;
    stream_lines(ctx, &request, args.follow, "flows", |r| match r {
        Response::Flow(f) => Ok(match format {
            OutputFormat::Human => output::flow_line(&f),
            OutputFormat::Json => serde_json::to_string(&f).unwrap_or_default(),
        }),
        other => Err(other),
    })
}

/// Streams the answers to `request`, printing the line `line` makes of
/// each (`Err` gives back an answer that does not belong, which ends the
/// stream; `Done` ends it quietly). With `follow` there is no timeout. A
/// closed pipe (`| head`) ends it without error.
pub(super) fn stream_lines(
    ctx: &mut Ctx<'_>,
    request: &Request,
    follow: bool,
    name: &'static str,
    mut line: impl FnMut(Response) -> Result<String, Response>,
) -> Result<bool, CliError> {
    let client = if follow {
        ctx.client.clone().with_timeout(None)
    } else {
        ctx.client
            .clone()
            .with_timeout(Some(Duration::from_secs(30)))
    };
    let mut write_error = None;
    let mut unexpected_answer = None;
    client.stream(request, |r| {
        let mut text = match line(r) {
            Ok(text) => text,
            Err(Response::Done) => return false,
            Err(other) => {
                unexpected_answer = Some(other);
                return false;
            }
        };
        text.push('\n');
        match ctx.print(&text) {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    })?;
    if let Some(answer) = unexpected_answer {
        return Err(unexpected(name, answer));
    }
    match write_error {
        // The reader of a pipe went away (`palisade flows -f | head`): done.
        Some(CliError::Write { source }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(true)
        }
        Some(e) => Err(e),
        None => Ok(true),
    }
}

/// Runs scenario files through `palisade_tests::scenario::run_cli`, which
/// prints its own report.
fn scenario_run(args: &ScenarioRunArgs, format: OutputFormat) -> Result<bool, CliError> {
    let bin = |given: &Option<PathBuf>, name: &str| {
        given
            .clone()
            .or_else(|| palisade_tests::locate_binary(name))
            .unwrap_or_else(|| PathBuf::from(name))
    };
    let opts = palisade_tests::scenario::CliOptions {
        agent_bin: bin(&args.agent_bin, "palisade-agent"),
        cni_bin: bin(&args.cni_bin, "palisade-cni"),
        json: format == OutputFormat::Json,
        keep_on_failure: args.keep_on_failure,
        verbose: args.verbose,
        skip_unsupported: args.skip_unsupported,
    };
    palisade_tests::scenario::run_cli(&args.files, &opts).map_err(|e| CliError::Scenario {
        message: format!("{e:#}"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_commands() {
        let c = Cli::try_parse_from([
            "palisade", "-o", "json", "flows", "-f", "--kind", "drop", "--kind", "audit", "--last",
            "5",
        ])
        .unwrap();
        assert_eq!(c.output, OutputFormat::Json);
        let Cmd::Flows(f) = c.command else { panic!() };
        assert!(f.follow);
        assert_eq!(f.kind, vec![FlowKindArg::Drop, FlowKindArg::Audit]);
        assert_eq!(f.last, Some(5));

        let c = Cli::try_parse_from([
            "palisade",
            "policy",
            "delete",
            "CiliumNetworkPolicy",
            "deny",
            "-n",
            "prod",
            "--socket",
            "/tmp/s",
        ])
        .unwrap();
        assert_eq!(c.socket_path(), PathBuf::from("/tmp/s"));
        assert!(
            matches!(c.command, Cmd::Policy(PolicyCmd::Delete { ref namespace, .. }) if namespace.as_deref() == Some("prod"))
        );

        let c = Cli::try_parse_from(["palisade", "endpoint", "audit", "3", "on"]).unwrap();
        assert!(matches!(
            c.command,
            Cmd::Endpoint(EndpointCmd::Audit {
                ep_id: 3,
                mode: OnOff::On
            })
        ));
        assert!(Cli::try_parse_from(["palisade", "endpoint", "audit", "3", "maybe"]).is_err());
        assert!(Cli::try_parse_from(["palisade", "policy", "validate"]).is_err());
    }

    #[test]
    fn unreachable_agent_says_what_to_do() {
        let cli = Cli::try_parse_from([
            "palisade",
            "--socket",
            "/nonexistent/palisade.sock",
            "status",
        ])
        .unwrap();
        let mut out = Vec::new();
        let e = run(&cli, &mut out).unwrap_err();
        assert!(matches!(e, CliError::Unreachable { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("/nonexistent/palisade.sock") && msg.contains("palisade-agent"),
            "{msg}"
        );
        assert!(out.is_empty());
    }
}
