//! The agent's side of SPIFFE identity: telling the identity service which
//! endpoints this node hosts, and the CA and SVID requests of the API.

use std::path::Path;
use std::sync::Arc;

use palisade_api::Response;
use tracing::warn;

use super::{Agent, AgentError};
use crate::identity::{attest, endpoint_ids, HostedEndpoint, IdentityService};

impl Agent {
    /// The identity service, when identity is enabled.
    pub fn identity(&self) -> Option<Arc<IdentityService>> {
        self.identity.clone()
    }

    fn identity_or_err(&self) -> Result<&Arc<IdentityService>, AgentError> {
        self.identity.as_ref().ok_or_else(|| {
            AgentError::Invalid(
                "SPIFFE identity is disabled on this node (identity.enabled: false)".to_owned(),
            )
        })
    }

    /// Hands the current endpoints to the identity service.
    pub(super) fn sync_identity(&self) {
        let Some(service) = &self.identity else {
            return;
        };
        let td = service.trust_domain();
        let hosted = self
            .endpoints
            .values()
            .map(|ep| {
                let (workload_id, identity_id) = endpoint_ids(
                    td,
                    &ep.spec.pod_namespace,
                    ep.spec.service_account.as_deref(),
                    ep.identity,
                );
                let workload_id = workload_id
                    .map_err(|e| {
                        warn!(ep_id = ep.ep_id, namespace = %ep.spec.pod_namespace, service_account = ?ep.spec.service_account, error = %e,
                              "the endpoint's namespace or service account does not make a SPIFFE ID; it gets no workload SVID");
                    })
                    .ok();
                HostedEndpoint {
                    ep_id: ep.ep_id,
                    container_id: ep.spec.container_id.clone(),
                    pod: format!("{}/{}", ep.spec.pod_namespace, ep.spec.pod_name),
                    netns: attest::netns_id(Path::new(&ep.spec.netns)),
                    workload_id,
                    identity_id,
                }
            })
            .collect();
        service.set_endpoints(hosted);
    }

    /// The CA's generations and bundle.
    pub fn identity_ca_show(&self) -> Result<Response, AgentError> {
        Ok(Response::IdentityCa(Box::new(
            self.identity_or_err()?.ca_status(),
        )))
    }

    /// Starts a CA rotation.
    pub fn identity_ca_rotate(&self, immediately: bool) -> Result<Response, AgentError> {
        let status = self.identity_or_err()?.rotate(immediately)?;
        Ok(Response::IdentityCa(Box::new(status)))
    }

    /// Every SVID held.
    pub fn svid_list(&self) -> Result<Response, AgentError> {
        Ok(Response::Svids {
            svids: self.identity_or_err()?.svid_list(),
        })
    }

    /// One SVID with its chain.
    pub fn svid_inspect(&self, spiffe_id: &str) -> Result<Response, AgentError> {
        let (svid, chain_pem) = self.identity_or_err()?.svid_inspect(spiffe_id)?;
        Ok(Response::Svid {
            svid: Box::new(svid),
            chain_pem,
        })
    }

    /// Creates a join token for a node.
    pub fn identity_token_create(&self, node: &str, ttl_secs: u64) -> Result<Response, AgentError> {
        if !(60..=7 * 24 * 3600).contains(&ttl_secs) {
            return Err(AgentError::Invalid(
                "a join token's lifetime is between 60 seconds and 7 days".into(),
            ));
        }
        let (token, record) = self
            .identity_or_err()?
            .create_join_token(node, std::time::Duration::from_secs(ttl_secs))?;
        Ok(Response::JoinToken {
            token,
            id: record.id,
            node: record.node,
            expires: record.expires,
        })
    }

    /// The node CA's nodes and tokens.
    pub fn identity_node_list(&self) -> Result<Response, AgentError> {
        let registry = self.identity_or_err()?.node_registry()?;
        Ok(Response::CaNodes {
            nodes: registry
                .nodes
                .into_iter()
                .map(|(name, n)| palisade_api::CaNodeRecord {
                    name,
                    joined: n.joined,
                    revoked: n.revoked,
                })
                .collect(),
            tokens: registry
                .tokens
                .into_iter()
                .map(|t| palisade_api::JoinTokenRecord {
                    id: t.id,
                    node: t.node,
                    expires: t.expires,
                    used: t.used,
                })
                .collect(),
        })
    }

    /// Revokes a node of the node CA.
    pub fn identity_node_revoke(&self, node: &str) -> Result<Response, AgentError> {
        self.identity_or_err()?.revoke_node(node)?;
        Ok(Response::Done)
    }

    /// The cluster store's session, for the node CA.
    pub fn cluster_session(&self) -> Option<palisade_cluster::Session> {
        self.cluster.session()
    }
}
