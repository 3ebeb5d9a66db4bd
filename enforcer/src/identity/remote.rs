//! A node that holds no CA key: it joins the cluster's node CA once with a
//! join token, keeps its node SVID (renewed at half its lifetime) and the
//! bundle in `<state_dir>/node-identity/<td>/`, and has every SVID of its
//! endpoints signed by the node CA for keys generated here.
//!
//! Every call blocks on the agent's async runtime: call from a blocking
//! thread (the renewal tick and JWT signing run on one).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use palisade_identity::ca::{read_key_file, read_pem_file, write_file};
use palisade_identity::node_ca::{self, DecodedBundle, NodeCaClient, SignedX509};
use palisade_identity::tls::{FixedSvid, SvidSource, TrustBundle};
use palisade_identity::x509::{X509Bundle, X509Svid};
use palisade_identity::{pem, SpiffeId, TrustDomain};
use tokio::runtime::Handle;
use tracing::{info, warn};

use super::IdentityError;
use crate::config::NodeCaClientConfig;

/// The node's side of the node CA.
pub(super) struct RemoteCa {
    handle: Handle,
    config: NodeCaClientConfig,
    td: TrustDomain,
    /// This node's SPIFFE ID: the node SVID must name it.
    node_id: SpiffeId,
    dir: PathBuf,
    trust: TrustBundle,
    node: Mutex<Option<NodeCredentials>>,
}

struct NodeCredentials {
    svid: X509Svid,
    client: NodeCaClient,
}

fn node_ca_error(e: impl std::fmt::Display) -> IdentityError {
    IdentityError::NodeCa(e.to_string())
}

impl RemoteCa {
    /// Loads what an earlier run kept; returns the bundle to start with
    /// (the kept one, else the configured `bundle_file`).
    pub(super) fn open(
        config: &NodeCaClientConfig,
        td: &TrustDomain,
        node_name: &str,
        state_dir: &Path,
    ) -> Result<(Self, X509Bundle), IdentityError> {
        let node_id = node_ca::node_id(td, node_name).map_err(|e| {
            IdentityError::Invalid(format!("node name {node_name:?} makes no node SVID: {e}"))
        })?;
        let handle = Handle::try_current().map_err(|_| {
            IdentityError::Invalid("the node CA client needs the agent's async runtime".into())
        })?;
        let dir = state_dir.join("node-identity").join(td.to_string());
        std::fs::create_dir_all(&dir)
            .map_err(|e| IdentityError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        // The bundle kept from the node CA is newer than the configured
        // one; an unreadable kept bundle falls back to the configured one.
        let kept = dir.join("bundle.pem");
        let bundle = match kept.exists().then(|| read_bundle(td, &kept)) {
            Some(Ok(bundle)) => bundle,
            Some(Err(e)) => {
                warn!(error = %e, "the kept bundle is unusable; starting from identity.node_ca.bundle_file");
                read_bundle(td, &config.bundle_file)?
            }
            None => read_bundle(td, &config.bundle_file)?,
        };
        let trust = TrustBundle::new(bundle.clone());
        let remote = Self {
            handle,
            config: config.clone(),
            td: td.clone(),
            node_id,
            dir,
            trust,
            node: Mutex::new(None),
        };
        if let Some(svid) = remote.load_node_svid() {
            let client = remote.client_with(Some(&svid))?;
            *remote.lock() = Some(NodeCredentials { svid, client });
        }
        Ok((remote, bundle))
    }

    fn lock(&self) -> MutexGuard<'_, Option<NodeCredentials>> {
        self.node.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bundle the TLS verifiers use (also the CA server's).
    pub(super) fn trust(&self) -> &TrustBundle {
        &self.trust
    }

    /// Where the node CA is.
    pub(super) fn address(&self) -> std::net::SocketAddr {
        self.config.address
    }

    /// This node's SPIFFE ID and when its SVID expires, once it joined.
    pub(super) fn node_svid(&self) -> Option<(SpiffeId, SystemTime)> {
        self.lock()
            .as_ref()
            .map(|n| (n.svid.spiffe_id().clone(), n.svid.not_after()))
    }

    /// When the node SVID is renewed: half-way through its lifetime.
    pub(super) fn node_renew_at(&self) -> Option<SystemTime> {
        self.lock().as_ref().map(|n| half_life(&n.svid))
    }

    fn client_with(&self, svid: Option<&X509Svid>) -> Result<NodeCaClient, IdentityError> {
        let source = svid
            .map(|s| FixedSvid::new(s).map(|f| Arc::new(f) as Arc<dyn SvidSource>))
            .transpose()
            .map_err(node_ca_error)?;
        NodeCaClient::new(
            self.config.address,
            &self.td,
            self.trust.clone(),
            source,
            Duration::from_millis(self.config.request_timeout_ms),
        )
        .map_err(node_ca_error)
    }

    fn load_node_svid(&self) -> Option<X509Svid> {
        let chain = read_pem_file(&self.dir.join("node.pem"), "CERTIFICATE").ok()?;
        let key = read_key_file(&self.dir.join("node.key")).ok()?;
        let svid = X509Svid::parse_der(&chain.concat(), key.secret_der())
            .map_err(|e| warn!(error = %e, dir = %self.dir.display(), "the kept node SVID is not valid; joining again"))
            .ok()?;
        (svid.not_after() > SystemTime::now() && svid.spiffe_id() == &self.node_id).then_some(svid)
    }

    fn save_node(&self, svid: &X509Svid, bundle: &X509Bundle) -> Result<(), IdentityError> {
        let certs = pem::encode_certificates(svid.chain().iter().map(Vec::as_slice));
        let key = pem::encode_secret("PRIVATE KEY", svid.private_key().secret_der());
        write_file(&self.dir.join("node.key"), key.as_bytes(), 0o600)?;
        write_file(&self.dir.join("node.pem"), certs.as_bytes(), 0o644)?;
        write_file(
            &self.dir.join("bundle.pem"),
            bundle.to_pem().as_bytes(),
            0o644,
        )?;
        Ok(())
    }

    /// Makes sure this node has a current node SVID (joining with the
    /// token, or renewing at half its lifetime); returns a client that
    /// presents it and, after a join or renewal, the bundle that came
    /// with it.
    fn ensure_node(
        &self,
        now: SystemTime,
    ) -> Result<(NodeCaClient, Option<DecodedBundle>), IdentityError> {
        let mut node = self.lock();
        let (renew, client) = match node.as_ref() {
            Some(n) if n.svid.not_after() > now => {
                (now >= half_life(&n.svid), Some(n.client.clone()))
            }
            _ => (true, None),
        };
        if !renew {
            if let Some(client) = client {
                return Ok((client, None));
            }
        }
        let (svid, bundle) = match client {
            Some(client) => match self.handle.block_on(client.renew_node()) {
                Ok(renewed) => renewed,
                // The current SVID is still valid: go on with it and renew
                // at the next call.
                Err(e) => {
                    warn!(error = %e, "cannot renew the node SVID yet");
                    return Ok((client, None));
                }
            },
            None => {
                let token = std::fs::read_to_string(&self.config.join_token_file).map_err(|e| {
                    IdentityError::NodeCa(format!(
                        "this node has no valid node SVID and cannot read its join token {}: {e} \
                         (create one on the CA node: palisade identity ca token create --node <name>)",
                        self.config.join_token_file.display()
                    ))
                })?;
                let anonymous = self.client_with(None)?;
                let joined = self
                    .handle
                    .block_on(anonymous.join(&token))
                    .map_err(node_ca_error)?;
                if joined.0.spiffe_id() != &self.node_id {
                    return Err(IdentityError::NodeCa(format!(
                        "the join token in {} is for {}, but this node is {}; create a token for this node",
                        self.config.join_token_file.display(),
                        joined.0.spiffe_id(),
                        self.node_id
                    )));
                }
                info!(spiffe_id = %joined.0.spiffe_id(), ca = %self.config.address, "joined the node CA");
                joined
            }
        };
        self.trust.set(bundle.x509.clone());
        self.save_node(&svid, &bundle.x509)?;
        let client = self.client_with(Some(&svid))?;
        *node = Some(NodeCredentials {
            svid,
            client: client.clone(),
        });
        Ok((client, Some(bundle)))
    }

    /// Brings the node SVID and the bundle up to date.
    pub(super) fn refresh(&self, now: SystemTime) -> Result<DecodedBundle, IdentityError> {
        let (client, bundle) = self.ensure_node(now)?;
        let bundle = match bundle {
            Some(b) => b,
            None => self
                .handle
                .block_on(client.fetch_bundle())
                .map_err(node_ca_error)?,
        };
        if bundle.x509 != self.trust.get() {
            self.trust.set(bundle.x509.clone());
            write_file(
                &self.dir.join("bundle.pem"),
                bundle.x509.to_pem().as_bytes(),
                0o644,
            )?;
        }
        Ok(bundle)
    }

    /// Has the node CA sign the X.509-SVID of `id`.
    pub(super) fn sign_x509(&self, id: &SpiffeId) -> Result<SignedX509, IdentityError> {
        let (client, _) = self.ensure_node(SystemTime::now())?;
        self.handle
            .block_on(client.sign_x509(id))
            .map_err(node_ca_error)
    }

    /// Has the node CA sign a JWT-SVID of `id`.
    pub(super) fn sign_jwt(
        &self,
        id: &SpiffeId,
        audience: &[String],
    ) -> Result<String, IdentityError> {
        let (client, _) = self.ensure_node(SystemTime::now())?;
        self.handle
            .block_on(client.sign_jwt(id, audience))
            .map_err(node_ca_error)
    }
}

/// Half-way through an SVID's lifetime.
fn half_life(svid: &X509Svid) -> SystemTime {
    let life = svid
        .not_after()
        .duration_since(svid.not_before())
        .unwrap_or_default();
    svid.not_before() + life / 2
}

fn read_bundle(td: &TrustDomain, path: &Path) -> Result<X509Bundle, IdentityError> {
    let mut bundle = X509Bundle::new(td.clone());
    let certs = read_pem_file(path, "CERTIFICATE")?;
    for der in &certs {
        bundle
            .add_authority(der)
            .map_err(|e| IdentityError::Invalid(format!("{}: {e}", path.display())))?;
    }
    if bundle.is_empty() {
        return Err(IdentityError::Invalid(format!(
            "{} holds no certificate (it should be the trust domain's bundle: palisade identity ca show --bundle on the CA node)",
            path.display()
        )));
    }
    Ok(bundle)
}

/// The CA's state is not on this node.
pub(super) fn no_ca(address: std::net::SocketAddr) -> IdentityError {
    IdentityError::Invalid(format!(
        "this node holds no CA: it obtains its SVIDs from the node CA at {address}; run this there"
    ))
}
