//! The `palisade-cni` plugin (CNI spec 1.0.0, also speaking 0.3.0, 0.3.1
//! and 0.4.0).
//!
//! ADD reserves an address from the agent, creates a veth pair whose
//! container side is created directly in the pod's namespace, configures
//! both sides (Calico-style routing: `<ip>/32` in the pod, a link-local
//! gateway answered by proxy ARP on the host side, a `/32` host route), and
//! registers the endpoint with the agent. Any failure undoes what was done.
//! DEL is idempotent; CHECK verifies interfaces and the agent's record.
//!
//! stdout carries the result or the error object only; logs go to stderr
//! when `PALISADE_CNI_LOG` is set (to a `tracing` filter such as `debug`).

pub mod error;
pub mod netconf;
pub mod netlink;
pub mod result;

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use palisade_api::{Client, ClientError, EndpointAddRequest, Request, Response};

use self::error::{CniError, ErrorCode};
use self::netconf::{CniEnv, Command, NetConf};
use self::netlink::{NetlinkError, VethSpec};
use self::result::{CniResult, ResultInput};

/// Environment variable that turns on logging to stderr.
pub const LOG_ENV: &str = "PALISADE_CNI_LOG";

/// What a command prints on success (nothing for DEL and CHECK).
pub type Output = Option<String>;

/// The plugin's entry point: reads `CNI_*` and stdin, runs the command,
/// prints the result or the error object on stdout and returns the exit
/// code (0 on success, 1 on error).
pub fn run_plugin() -> i32 {
    init_logging();
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => CniEnv::from_vars(|k| std::env::var(k).ok())
            .map_err(CniError::from)
            .and_then(|env| run(&env, &stdin)),
        Err(e) => Err(CniError::from_error(ErrorCode::Io, "cannot read stdin", &e)),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(text) => {
            if let Some(text) = text {
                // The runtime reading stdout went away: nothing to report to.
                let _ = writeln!(out, "{text}");
            }
            0
        }
        Err(e) => {
            tracing::error!(code = e.code.code(), "{e}");
            let _ = writeln!(out, "{}", e.to_json(&error_version(&stdin)));
            1
        }
    }
}

/// The version to put in an error object: the configuration's if it is
/// readable and supported, else the default.
fn error_version(stdin: &[u8]) -> String {
    netconf::version_request(stdin)
        .ok()
        .filter(|v| netconf::check_version(v).is_ok())
        .unwrap_or_else(|| netconf::DEFAULT_VERSION.to_owned())
}

fn init_logging() {
    let Ok(filter) = std::env::var(LOG_ENV) else {
        return;
    };
    let filter = if filter.is_empty() || filter == "1" {
        "debug".to_owned()
    } else {
        filter
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
}

/// Runs one command on a parsed environment and the raw stdin.
pub fn run(env: &CniEnv, stdin: &[u8]) -> Result<Output, CniError> {
    let _span = tracing::info_span!("cni", command = ?env.command, container = %env.container_id, ifname = %env.ifname).entered();
    match env.command {
        Command::Version => version(stdin).map(Some),
        Command::Add => {
            let conf = NetConf::parse(stdin)?;
            add(env, &conf).map(Some)
        }
        Command::Del => {
            let conf = NetConf::parse(stdin)?;
            del(env, &conf).map(|()| None)
        }
        Command::Check => {
            let conf = NetConf::parse(stdin)?;
            check(env, &conf).map(|()| None)
        }
    }
}

fn version(stdin: &[u8]) -> Result<String, CniError> {
    let requested = netconf::version_request(stdin)?;
    let version = if netconf::check_version(&requested).is_ok() {
        requested
    } else {
        netconf::DEFAULT_VERSION.to_owned()
    };
    Ok(serde_json::json!({
        "cniVersion": version,
        "supportedVersions": netconf::SUPPORTED_VERSIONS,
    })
    .to_string())
}

fn agent_error(e: ClientError, code: ErrorCode, what: &str) -> CniError {
    match e {
        ClientError::Connect { .. } | ClientError::NoAnswer => CniError::new(
            ErrorCode::AgentUnreachable,
            "the palisade agent is unreachable",
            format!(
                "{}; start palisade-agent or set `agentSocket` in the network configuration",
                error::error_chain(&e)
            ),
        ),
        other => CniError::from_error(code, what, &other),
    }
}

fn netlink_error(e: NetlinkError, what: &str) -> CniError {
    let code = match e {
        NetlinkError::OpenNetns { .. } => ErrorCode::UnknownContainer,
        _ => ErrorCode::Interface,
    };
    CniError::from_error(code, what, &e)
}

fn required_netns(env: &CniEnv) -> Result<&Path, CniError> {
    env.netns
        .as_deref()
        .ok_or_else(|| CniError::new(ErrorCode::InvalidEnvironment, "CNI_NETNS is not set", ""))
}

fn add(env: &CniEnv, conf: &NetConf) -> Result<String, CniError> {
    let netns = required_netns(env)?;
    // Nothing is created before these checks pass.
    if let Err(source) = std::fs::File::open(netns) {
        return Err(netlink_error(
            NetlinkError::OpenNetns {
                path: netns.to_owned(),
                source,
            },
            "the container's network namespace does not exist",
        ));
    }
    let host_ifname = netlink::host_ifname(&env.container_id, &env.ifname);
    if netlink::link_exists(&host_ifname).map_err(|e| netlink_error(e, "cannot list interfaces"))? {
        return Err(netlink_error(
            NetlinkError::AlreadyExists {
                ifname: host_ifname,
            },
            "the container's interface already exists",
        ));
    }
    let client = Client::new(&conf.agent_socket);
    let address = match client.call(&Request::IpamAllocate {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    }) {
        Ok(Response::Address(a)) => a,
        Ok(other) => {
            return Err(CniError::new(
                ErrorCode::Ipam,
                "the palisade agent answered an address request unexpectedly",
                format!("{other:?}"),
            ))
        }
        Err(e) => {
            return Err(agent_error(
                e,
                ErrorCode::Ipam,
                "cannot allocate an address",
            ))
        }
    };
    tracing::debug!(ip = %address.ipv4, gateway = %address.gateway, "address allocated");
    let release = |why: &str| {
        if let Err(e) = client.call(&Request::IpamRelease {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
        }) {
            tracing::warn!(error = %e, "cannot release the address after {why}");
        }
    };

    let spec = VethSpec {
        host_ifname: host_ifname.clone(),
        container_ifname: env.ifname.clone(),
        netns: netns.to_owned(),
        ipv4: address.ipv4,
        gateway: address.gateway,
        // The network configuration may lower the agent's limit, never raise it.
        mtu: match (conf.mtu, address.mtu) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    };
    let info = match netlink::create_veth(&spec) {
        Ok(info) => info,
        Err(e) => {
            release("failing to create the interfaces");
            return Err(netlink_error(e, "cannot set up the container's interfaces"));
        }
    };

    let request = EndpointAddRequest {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        netns: netns.display().to_string(),
        host_ifname: host_ifname.clone(),
        ipv4: address.ipv4,
        pod_namespace: env.pod_namespace(),
        pod_name: env.pod_name(),
        labels: conf.labels.clone(),
        service_account: conf.service_account.clone(),
    };
    if let Err(e) = client.call(&Request::EndpointAdd(request)) {
        let _ = client.call(&Request::EndpointDel {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
        });
        if let Err(undo) = netlink::delete_veth(&host_ifname) {
            tracing::warn!(error = %undo, "cannot delete the veth after a failed endpoint registration");
        }
        release("a failed endpoint registration");
        return Err(agent_error(
            e,
            ErrorCode::Endpoint,
            "the agent refused the endpoint",
        ));
    }
    tracing::info!(ip = %address.ipv4, host = %host_ifname, "endpoint added");
    let netns_str = netns.display().to_string();
    Ok(CniResult::new(&ResultInput {
        cni_version: &conf.cni_version,
        host_ifname: &host_ifname,
        host_mac: &info.host_mac,
        container_ifname: &env.ifname,
        container_mac: &info.container_mac,
        netns: &netns_str,
        ipv4: address.ipv4,
        gateway: address.gateway,
    })
    .to_json())
}

fn del(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let client = Client::new(&conf.agent_socket);
    let forgotten = client.call(&Request::EndpointDel {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    });
    let host_ifname = netlink::host_ifname(&env.container_id, &env.ifname);
    let deleted = netlink::delete_veth(&host_ifname)
        .map_err(|e| netlink_error(e, "cannot delete the container's interfaces"))?;
    tracing::debug!(host = %host_ifname, existed = deleted, "veth deleted");
    forgotten.map_err(|e| {
        agent_error(
            e,
            ErrorCode::Endpoint,
            "the agent cannot forget the endpoint",
        )
    })?;
    // The agent releases the address with the endpoint; this covers an ADD
    // that died between allocation and registration.
    client
        .call(&Request::IpamRelease {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
        })
        .map_err(|e| agent_error(e, ErrorCode::Ipam, "cannot release the address"))?;
    Ok(())
}

fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    if !netconf::supports_check(&conf.cni_version) {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            "CHECK is not defined for this CNI version",
            format!(
                "cniVersion is {}; CHECK needs 0.4.0 or later",
                conf.cni_version
            ),
        ));
    }
    let netns = required_netns(env)?;
    let client = Client::new(&conf.agent_socket);
    let record = match client.call(&Request::EndpointGet {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    }) {
        Ok(Response::Endpoint(r)) => r,
        Ok(other) => {
            return Err(CniError::new(
                ErrorCode::CheckFailed,
                "the palisade agent answered an endpoint request unexpectedly",
                format!("{other:?}"),
            ))
        }
        Err(e) => {
            return Err(agent_error(
                e,
                ErrorCode::CheckFailed,
                "the agent does not know the endpoint",
            ))
        }
    };
    let prev = conf.prev_result.as_ref().and_then(CniResult::from_prev);
    if let Some(prev_ip) = prev.as_ref().and_then(CniResult::first_ipv4) {
        if prev_ip != record.spec.ipv4 {
            return Err(CniError::new(
                ErrorCode::CheckFailed,
                "the agent's endpoint has another address than prevResult",
                format!(
                    "prevResult says {prev_ip}, the agent says {}",
                    record.spec.ipv4
                ),
            ));
        }
    }
    let gateway: Option<Ipv4Addr> = prev
        .as_ref()
        .and_then(|p| p.ips.iter().find_map(|ip| ip.gateway));
    netlink::check_veth(
        &record.spec.host_ifname,
        &env.ifname,
        &PathBuf::from(netns),
        record.spec.ipv4,
        gateway,
    )
    .map_err(|e| {
        CniError::from_error(
            ErrorCode::CheckFailed,
            "the container's interfaces are not as set up",
            &e,
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn env(command: Command) -> CniEnv {
        CniEnv {
            command,
            container_id: "c1".to_owned(),
            netns: Some(PathBuf::from("/nonexistent/netns")),
            ifname: "eth0".to_owned(),
            args: Default::default(),
        }
    }

    #[test]
    fn version_output() {
        let out = run(&env(Command::Version), br#"{"cniVersion":"0.4.0"}"#)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
        );
    }

    #[test]
    fn garbage_is_a_decode_error_before_anything() {
        for cmd in [Command::Add, Command::Del, Command::Check] {
            let e = run(&env(cmd), b"not json").unwrap_err();
            assert_eq!(e.code, ErrorCode::Decode, "{cmd:?}");
        }
        assert_eq!(error_version(b"not json"), "1.0.0");
        assert_eq!(error_version(br#"{"cniVersion":"0.3.1"}"#), "0.3.1");
    }

    #[test]
    fn add_into_missing_netns_is_unknown_container() {
        let conf = br#"{"cniVersion":"1.0.0","name":"n","type":"palisade-cni","agentSocket":"/nonexistent.sock"}"#;
        let e = run(&env(Command::Add), conf).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownContainer, "{e}");
    }

    #[test]
    fn check_refuses_old_versions() {
        let conf = br#"{"cniVersion":"0.3.1","name":"n","type":"palisade-cni"}"#;
        let e = run(&env(Command::Check), conf).unwrap_err();
        assert_eq!(e.code, ErrorCode::IncompatibleVersion);
    }

    #[test]
    fn agent_unreachable_says_what_to_do() {
        let e = agent_error(
            ClientError::Connect {
                path: "/x.sock".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            },
            ErrorCode::Ipam,
            "x",
        );
        assert_eq!(e.code, ErrorCode::AgentUnreachable);
        assert!(e.details.contains("agentSocket"), "{e}");
    }
}
