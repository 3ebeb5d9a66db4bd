//! `palisade tracingpolicy add|list|delete|validate` and `palisade events`.

use std::path::PathBuf;

use palisade_api::events::Event;
use palisade_api::{Request, Response, TracingPolicyRecord};

use super::policy::read_source;
use super::{stream_lines, unexpected, CliError, Ctx, OutputFormat};

/// `palisade tracingpolicy ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TracingPolicyCmd {
    /// Validate and compile for this kernel, then apply (kept across agent
    /// restarts).
    Add {
        /// YAML files (`-` for stdin).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate and compile for this kernel without applying: says which
    /// mechanism would run each hook, or why it cannot.
    Validate {
        /// YAML files (`-` for stdin).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Tracing policies in force.
    List,
    /// Remove a tracing policy added with `add`.
    Delete {
        /// `metadata.name`.
        name: String,
    },
}

/// `palisade events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Keep streaming new events.
    #[arg(long, short)]
    pub follow: bool,
    /// How many recent events first.
    #[arg(long, default_value_t = 100)]
    pub last: usize,
}

fn print_records(
    ctx: &mut Ctx<'_>,
    verb: &str,
    records: &[TracingPolicyRecord],
) -> Result<(), CliError> {
    if ctx.format == OutputFormat::Json {
        let text = serde_json::to_string_pretty(records).unwrap_or_default();
        return ctx.print(&format!("{text}\n"));
    }
    if records.is_empty() {
        return ctx.print("no tracing policies\n");
    }
    let mut text = String::new();
    for r in records {
        text.push_str(&format!("{verb}{} ({}, {})\n", r.name, r.mode, r.source));
        for h in &r.hooks {
            text.push_str(&format!("  {h}\n"));
        }
        for w in &r.warnings {
            text.push_str(&format!("  warning: {w}\n"));
        }
    }
    ctx.print(&text)
}

pub(super) fn run(ctx: &mut Ctx<'_>, cmd: &TracingPolicyCmd) -> Result<bool, CliError> {
    match cmd {
        TracingPolicyCmd::Add { files } | TracingPolicyCmd::Validate { files } => {
            let add = matches!(cmd, TracingPolicyCmd::Add { .. });
            for f in files {
                let (source, yaml) = read_source(f)?;
                let request = if add {
                    Request::TracingPolicyApply { source, yaml }
                } else {
                    Request::TracingPolicyValidate { source, yaml }
                };
                match ctx.call(&request)? {
                    Response::TracingPolicies { policies } => {
                        print_records(ctx, if add { "applied " } else { "valid " }, &policies)?
                    }
                    other => return Err(unexpected("tracingpolicy", other)),
                }
            }
            Ok(true)
        }
        TracingPolicyCmd::List => match ctx.call(&Request::TracingPolicyList)? {
            Response::TracingPolicies { policies } => {
                print_records(ctx, "", &policies)?;
                Ok(true)
            }
            other => Err(unexpected("tracingpolicy list", other)),
        },
        TracingPolicyCmd::Delete { name } => {
            match ctx.call(&Request::TracingPolicyDelete { name: name.clone() })? {
                Response::Done => {
                    ctx.print(&format!("deleted {name}\n"))?;
                    Ok(true)
                }
                other => Err(unexpected("tracingpolicy delete", other)),
            }
        }
    }
}

/// `palisade events`: Tetragon JSON lines (`-o json`, the default for
/// pipes) or one compact line per event.
pub(super) fn events(ctx: &mut Ctx<'_>, args: &EventsArgs) -> Result<bool, CliError> {
    let request = Request::RuntimeEvents {
        follow: args.follow,
        limit: args.last,
    };
    let format = ctx.format;
    stream_lines(ctx, &request, args.follow, "events", |r| match r {
        Response::RuntimeEvent { json } => Ok(match format {
            OutputFormat::Json => json,
            OutputFormat::Human => Event::from_json_line(&json)
                .map(|ev| ev.to_string())
                .unwrap_or(json),
        }),
        other => Err(other),
    })
}
