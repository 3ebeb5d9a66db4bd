//! The agent's side of SPIFFE identity: telling the identity service which
//! endpoints this node hosts, and the CA and SVID requests of the API.

use std::path::Path;
use std::sync::Arc;

use palisade_api::Response;
use tracing::warn;

use super::{Agent, AgentError};
use crate::identity::{attest, HostedEndpoint, IdentityService};

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
                let sa = ep.spec.service_account.as_deref().unwrap_or("default");
                let workload_id = td
                    .id_with_segments(["ns", ep.spec.pod_namespace.as_str(), "sa", sa])
                    .map_err(|e| {
                        warn!(ep_id = ep.ep_id, namespace = %ep.spec.pod_namespace, service_account = sa, error = %e,
                              "the endpoint's namespace or service account does not make a SPIFFE ID; it gets no workload SVID");
                    })
                    .ok();
                HostedEndpoint {
                    ep_id: ep.ep_id,
                    container_id: ep.spec.container_id.clone(),
                    pod: format!("{}/{}", ep.spec.pod_namespace, ep.spec.pod_name),
                    netns: attest::netns_id(Path::new(&ep.spec.netns)),
                    workload_id,
                    identity_id: td
                        .id_with_segments(["identity".to_owned(), ep.identity.to_string()])
                        .ok(),
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
        let status = self
            .identity_or_err()?
            .rotate(immediately)
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
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
        let (svid, chain_pem) = self
            .identity_or_err()?
            .svid_inspect(spiffe_id)
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        Ok(Response::Svid {
            svid: Box::new(svid),
            chain_pem,
        })
    }
}
