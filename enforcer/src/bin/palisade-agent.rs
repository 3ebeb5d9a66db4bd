//! `palisade-agent`: the node agent.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use palisade_enforcer::agent::{flows, server, Agent};
use palisade_enforcer::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use palisade_enforcer::identity;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

/// The palisade node agent: enforces network policy in eBPF for the
/// endpoints of this node.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (YAML). Without it, the defaults apply.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => AgentConfig::load(path)?,
        None if std::path::Path::new(DEFAULT_CONFIG_PATH).exists() => {
            AgentConfig::load(std::path::Path::new(DEFAULT_CONFIG_PATH))?
        }
        None => AgentConfig::default(),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(config))
}

async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let socket = config.api_socket.clone();
    let poll = Duration::from_millis(config.policy_dir_poll_ms.max(50));
    let flow_store = flows::FlowStore::new(config.flow_buffer, config.flow_log.as_deref())
        .context("cannot open the flow log")?;
    let mut agent = tokio::task::spawn_blocking(move || Agent::start(config))
        .await
        .context("agent start panicked")?
        .context("agent start failed")?;
    let ring = agent.take_events();
    let runtime_reader = agent.take_runtime_reader();
    let cluster_changes = agent.take_cluster_changes();
    let identity = agent.identity();
    let workload_socket = agent.config().identity.workload_api_socket.clone();
    let node_ca_listen = agent.config().identity.node_ca_listen;
    let cluster_session = agent.cluster_session();
    let auth = agent.auth();
    let node_address = agent.node_address();
    let agent = Arc::new(Mutex::new(agent));
    if let Some(rx) = cluster_changes {
        tokio::spawn(apply_cluster_changes(rx, agent.clone()));
    }
    if let Some(ring) = ring {
        tokio::spawn(flows::run_reader(ring, agent.clone(), flow_store.clone()));
    }
    if let Some(r) = runtime_reader {
        tokio::spawn(palisade_enforcer::runtime::events::run_reader(
            r.ring, r.procs, r.hooks, r.store, r.node,
        ));
    }
    let listener =
        server::bind(&socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
    tokio::spawn(server::serve(listener, agent.clone(), flow_store));
    tokio::spawn(housekeeping(agent.clone(), poll));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let node_ca = match (&identity, node_ca_listen, cluster_session) {
        (Some(service), Some(address), Some(session)) => {
            let registry = service
                .registry()
                .context("the node CA has no node registry")?;
            let mut stop = stop_rx.clone();
            let shutdown = async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            };
            let service = service.clone();
            Some(tokio::spawn(async move {
                if let Err(e) =
                    identity::serve::serve_node_ca(service, session, registry, address, shutdown)
                        .await
                {
                    error!(error = %e, "the node CA is not served");
                }
            }))
        }
        _ => None,
    };
    let auth_listener = match (&identity, auth) {
        (Some(service), Some(auth)) => {
            let svids = palisade_enforcer::auth::NodeSvids::new(service.clone());
            tokio::spawn(palisade_enforcer::auth::run(
                auth.clone(),
                service.clone(),
                svids.clone(),
                node_address,
            ));
            let mut stop = stop_rx.clone();
            let service = service.clone();
            Some(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|stopping| *stopping).await;
                };
                let listen = auth.listen_address();
                if let Err(e) = palisade_enforcer::auth::serve(auth, service, svids, shutdown).await
                {
                    error!(error = %e, %listen, "mutual authentication cannot listen; other nodes cannot authenticate with this one");
                }
            }))
        }
        _ => None,
    };
    let workload_api = match identity {
        Some(service) => {
            let listener = palisade_identity::workload_api::bind_socket(&workload_socket)
                .with_context(|| format!("cannot listen on {}", workload_socket.display()))?;
            tokio::spawn(identity::run_renewal(service.clone()));
            let provider = Arc::new(identity::Provider::new(service));
            let mut stop = stop_rx.clone();
            info!(socket = %workload_socket.display(), "SPIFFE Workload API ready");
            Some(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|stopping| *stopping).await;
                };
                if let Err(e) =
                    palisade_identity::workload_api::serve(listener, provider, shutdown).await
                {
                    error!(error = %e, "the Workload API server failed");
                }
            }))
        }
        None => None,
    };
    info!(socket = %socket.display(), "palisade agent ready");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    stop_tx.send_replace(true);
    if let Some(server) = node_ca {
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    }
    if let Some(listener) = auth_listener {
        let _ = tokio::time::timeout(Duration::from_secs(2), listener).await;
    }
    if let Some(server) = workload_api {
        // Open streams end with Unavailable so that clients reconnect.
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        let _ = std::fs::remove_file(&workload_socket);
    }
    agent
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .stop_tracing();
    // The programs and maps stay pinned: enforcement goes on without us.
    info!("palisade agent stopping; the datapath keeps enforcing the last policy");
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Applies what the cluster store learns of other nodes, a batch at a
/// time (batches that queue up while one is applied are merged).
async fn apply_cluster_changes(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<palisade_cluster::Change>>,
    agent: Arc<Mutex<Agent>>,
) {
    while let Some(mut batch) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        let agent = agent.clone();
        let result = tokio::task::spawn_blocking(move || {
            agent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .apply_cluster_changes(batch)
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "applying cluster changes failed"),
            Err(e) => error!(error = %e, "applying cluster changes panicked"),
        }
    }
}

/// Policy directory polling, node addresses, conntrack expiry and the
/// fanotify marks of protected files.
async fn housekeeping(agent: Arc<Mutex<Agent>>, poll: Duration) {
    let mut ticks: u64 = 0;
    let gc_every = (Duration::from_secs(10).as_millis() / poll.as_millis().max(1)).max(1) as u64;
    loop {
        tokio::time::sleep(poll).await;
        ticks += 1;
        let agent = agent.clone();
        let result = tokio::task::spawn_blocking(move || {
            // A dump of every interface: not while holding the agent.
            let addresses = palisade_enforcer::agent::local_addresses();
            let mut agent = agent.lock().unwrap_or_else(PoisonError::into_inner);
            let rescan = agent.rescan_policy_dir();
            agent.rescan_tracing_dir();
            if let Err(e) = agent.set_host_addresses(addresses) {
                warn!(error = %e, "cannot follow the node's addresses");
            }
            let gc = ticks.is_multiple_of(gc_every).then(|| {
                agent.refresh_tracing();
                agent.gc_conntrack()
            });
            (rescan, gc)
        })
        .await;
        match result {
            Ok((Err(e), _)) => warn!(error = %e, "applying the policy directory failed"),
            Ok((_, Some(Err(e)))) => warn!(error = %e, "conntrack expiry failed"),
            Ok(_) => {}
            Err(e) => error!(error = %e, "housekeeping panicked"),
        }
    }
}
