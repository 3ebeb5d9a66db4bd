//! The local API server: one JSON request line per connection.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use palisade_api::{Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

use super::flows::FlowStore;
use super::{Agent, AgentError};

/// Largest request accepted (a policy stream), in bytes.
const MAX_REQUEST: usize = 16 << 20;
/// How long adding an endpoint or applying a policy waits for the
/// pre-authentication of the pairs it makes needed.
const AUTH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Binds the API socket (replacing a stale one), root-only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: UnixListener, agent: Arc<Mutex<Agent>>, flows: Arc<FlowStore>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let agent = agent.clone();
                let flows = flows.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, agent, flows).await {
                        debug!(error = %e, "API connection ended with an error");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "API accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn write(stream: &mut tokio::net::unix::OwnedWriteHalf, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

/// Writes every broadcast item `to_response` keeps until the sender or the
/// connection goes away; `lagged` hears of items a slow reader missed.
async fn forward<T: Clone>(
    rx: &mut tokio::sync::broadcast::Receiver<T>,
    out: &mut tokio::net::unix::OwnedWriteHalf,
    mut to_response: impl FnMut(T) -> Option<Response>,
    mut lagged: impl FnMut(u64),
) -> std::io::Result<()> {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match rx.recv().await {
            Ok(item) => {
                if let Some(r) = to_response(item) {
                    write(out, &r).await?;
                }
            }
            Err(RecvError::Lagged(n)) => lagged(n),
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}

async fn handle(
    stream: UnixStream,
    agent: Arc<Mutex<Agent>>,
    flows: Arc<FlowStore>,
) -> std::io::Result<()> {
    let (read, mut write_half) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let message = format!("malformed request: {e}");
            return write(&mut write_half, &Response::Error { message }).await;
        }
    };
    if let Request::Flows {
        follow,
        since_seq,
        limit,
        kinds,
    } = request
    {
        let mut rx = follow.then(|| flows.subscribe());
        let mut last = 0;
        for r in flows.recent(since_seq, limit, &kinds) {
            last = r.seq;
            write(&mut write_half, &Response::Flow(Box::new(r))).await?;
        }
        let Some(rx) = rx.as_mut() else {
            return Ok(());
        };
        return forward(
            rx,
            &mut write_half,
            |r| {
                (r.seq > last && (kinds.is_empty() || kinds.contains(&r.kind)))
                    .then(|| Response::Flow(Box::new(r)))
            },
            |n| {
                warn!(
                    skipped = n,
                    "a flow follower is too slow; events skipped for it"
                )
            },
        )
        .await;
    }
    if let Request::RuntimeEvents { follow, limit } = request {
        let store = agent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .runtime_events();
        let Some(store) = store else {
            let message =
                "runtime enforcement is not running on this agent (see palisade status)".to_owned();
            return write(&mut write_half, &Response::Error { message }).await;
        };
        let mut rx = follow.then(|| store.subscribe());
        for json in store.recent(limit) {
            write(
                &mut write_half,
                &Response::RuntimeEvent {
                    json: json.to_string(),
                },
            )
            .await?;
        }
        let Some(rx) = rx.as_mut() else {
            return Ok(());
        };
        return forward(
            rx,
            &mut write_half,
            |json| {
                Some(Response::RuntimeEvent {
                    json: json.to_string(),
                })
            },
            |n| {
                store.count_lagged(n);
                warn!(
                    skipped = n,
                    "a runtime event follower is too slow; events skipped for it"
                );
            },
        )
        .await;
    }
    let adds_endpoint = matches!(request, Request::EndpointAdd(_));
    let applies_policy = matches!(request, Request::PolicyApply { .. });
    let (response, auth) = tokio::task::spawn_blocking(move || {
        let mut agent = agent.lock().unwrap_or_else(PoisonError::into_inner);
        (dispatch(&mut agent, request), agent.auth())
    })
    .await
    .unwrap_or_else(|e| {
        let message = format!("internal error: {e}");
        (Response::Error { message }, None)
    });
    // A new pod's pairs are pre-authenticated before its CNI ADD returns,
    // so that its first connection does not wait for a retransmission.
    // Likewise, a policy apply answers once the pairs it requires were.
    let waited = match (&response, auth) {
        (Response::Endpoint(ep), Some(auth)) if adds_endpoint => {
            Some(auth.settled(Some(ep.identity), AUTH_WAIT).await)
        }
        (Response::Applied { .. }, Some(auth)) if applies_policy => {
            Some(auth.settled(None, AUTH_WAIT).await)
        }
        _ => None,
    };
    if waited == Some(false) {
        warn!("pairs that policy requires are not authenticated yet; first connections may wait (palisade auth list)");
    }
    write(&mut write_half, &response).await
}

fn dispatch(agent: &mut Agent, request: Request) -> Response {
    let result = match request {
        Request::Status => Ok(agent.status()),
        Request::AuthList => Ok(agent.auth_list()),
        Request::TracingPolicyApply { source, yaml } => agent.tracing_apply(&source, &yaml),
        Request::TracingPolicyValidate { source, yaml } => agent.tracing_validate(&source, &yaml),
        Request::TracingPolicyList => agent.tracing_list(),
        Request::RuntimeEvents { .. } => {
            Err(AgentError::Invalid("runtime events are streamed".into()))
        }
        Request::TracingPolicyDelete { name } => agent.tracing_delete(&name),
        Request::IpamAllocate {
            container_id,
            ifname,
        } => agent.ipam_allocate(&container_id, &ifname),
        Request::IpamRelease {
            container_id,
            ifname,
        } => agent.ipam_release(&container_id, &ifname),
        Request::EndpointAdd(spec) => agent.endpoint_add(spec),
        Request::EndpointDel {
            container_id,
            ifname,
        } => agent.endpoint_del(&container_id, &ifname),
        Request::EndpointGet {
            container_id,
            ifname,
        } => agent.endpoint_get(&container_id, &ifname),
        Request::EndpointList => Ok(agent.endpoint_list()),
        Request::EndpointSetAudit { ep_id, audit } => agent.endpoint_set_audit(ep_id, audit),
        Request::IdentityList => Ok(agent.identity_list()),
        Request::IdentityCaShow => agent.identity_ca_show(),
        Request::IdentityCaRotate { immediately } => agent.identity_ca_rotate(immediately),
        Request::IdentityTokenCreate { node, ttl_secs } => {
            agent.identity_token_create(&node, ttl_secs)
        }
        Request::IdentityNodeList => agent.identity_node_list(),
        Request::IdentityNodeRevoke { node } => agent.identity_node_revoke(&node),
        Request::SvidList => agent.svid_list(),
        Request::SvidInspect { spiffe_id } => agent.svid_inspect(&spiffe_id),
        Request::NodeList => Ok(Response::Nodes {
            nodes: agent.node_list(),
        }),
        Request::ClusterStatus => Ok(Response::Cluster(Box::new(agent.cluster_status()))),
        Request::PolicyList => Ok(agent.policy_list()),
        Request::PolicyApply { source, yaml } => agent
            .apply(&source, &yaml)
            .map(|summary| Response::Applied { summary }),
        Request::PolicyDelete {
            kind,
            namespace,
            name,
        } => agent
            .delete_policy(&kind, namespace.as_deref(), &name)
            .map(|()| Response::Done),
        Request::Flows { .. } => Ok(Response::Error {
            message: "flows are streamed, not dispatched".to_owned(),
        }),
    };
    Agent::respond(result)
}
