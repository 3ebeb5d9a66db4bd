//! The gRPC service: the Workload API's rules on top of a
//! [`WorkloadProvider`].

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt as _;
use serde_json::{Map, Value};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::{debug, field, info, info_span, warn, Instrument as _, Span};

use super::material::{Entitlement, TrustBundles, X509Context};
use super::proto::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use super::proto::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};
use super::provider::{PeerCredentials, ProviderError, WorkloadProvider};
use super::socket::incoming;
use crate::{SpiffeId, TrustDomain};

/// The metadata key every request must carry, with the value
/// [`SECURITY_HEADER_VALUE`] (Workload Endpoint §3).
const SECURITY_HEADER: &str = "workload.spiffe.io";
/// The one accepted value of [`SECURITY_HEADER`], case-sensitive.
const SECURITY_HEADER_VALUE: &[u8] = b"true";

/// What a caller that gets `PermissionDenied` for want of an identity reads.
/// The wording is SPIRE's, which client libraries recognise (the `spiffe`
/// crate maps it to `NoIdentityIssued`).
const NO_IDENTITY: &str = "no identity issued";

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("the Workload API gRPC server failed")]
    Transport {
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Serves the Workload API on `listener` until `shutdown` completes.
///
/// Every RPC checks the security header, attests the caller through
/// `provider` and answers from it. When `shutdown` completes the server stops
/// accepting, ends the open streams with `Unavailable` (clients reconnect,
/// Workload API §4.2) and returns once every connection is closed.
pub async fn serve<P: WorkloadProvider>(
    listener: UnixListener,
    provider: Arc<P>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (stopping, stop) = watch::channel(false);
    let service = WorkloadApi { provider, stop };
    let signal = async move {
        shutdown.await;
        info!("Workload API shutting down");
        stopping.send_replace(true);
    };
    tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(service))
        .serve_with_incoming_shutdown(incoming(listener), signal)
        .await
        .map_err(|source| ServeError::Transport { source })
}

/// The service tonic calls.
struct WorkloadApi<P> {
    provider: Arc<P>,
    /// Becomes `true` (or closes) when the server shuts down.
    stop: watch::Receiver<bool>,
}

/// A stream of responses, as the generated server trait wants it.
type ResponseStream<T> = BoxStream<'static, Result<T, Status>>;

impl<P: WorkloadProvider> WorkloadApi<P> {
    /// The checks every RPC starts with, in the order the specification
    /// implies: the security header (a client bug, `InvalidArgument`), then
    /// the request's own fields (`check`), then attestation.
    async fn admit<T>(
        &self,
        request: &Request<T>,
        check: impl FnOnce(&T) -> Result<(), Status>,
    ) -> Result<P::Workload, Status> {
        check_security_header(request.metadata())?;
        check(request.get_ref())?;
        let Some(peer) = request.extensions().get::<Arc<PeerCredentials>>() else {
            // Every connection comes through `incoming`, which attaches them.
            warn!("a request without caller credentials");
            return Err(Status::internal("caller credentials unavailable"));
        };
        match self.provider.attest(peer).await {
            Ok(workload) => {
                Span::current().record("workload", field::display(&workload));
                Ok(workload)
            }
            Err(error) => Err(provider_status(&error, "attestation")),
        }
    }

    /// A stream of the responses `build` makes from each value `rx` holds,
    /// the current one first; `PermissionDenied` with `denied` instead if the
    /// workload is denied from the start.
    fn stream<T, R>(
        &self,
        mut rx: watch::Receiver<Entitlement<T>>,
        denied: &'static str,
        build: impl Fn(&T) -> Result<R, Status> + Send + Sync + 'static,
    ) -> Result<Response<ResponseStream<R>>, Status>
    where
        T: Send + Sync + 'static,
        R: Send + 'static,
    {
        if matches!(*rx.borrow(), Entitlement::Denied) {
            info!(denied, "caller denied");
            return Err(Status::permission_denied(denied));
        }
        // The current value is the first response (Workload API §4.3).
        rx.mark_changed();
        let state = StreamState {
            rx,
            stop: self.stop.clone(),
            done: false,
        };
        let span = Span::current();
        let stream = futures::stream::unfold((state, build), move |(mut state, build)| {
            async move {
                let item = state.next(denied, &build).await?;
                Some((item, (state, build)))
            }
            .instrument(span.clone())
        });
        Ok(Response::new(stream.boxed()))
    }
}

/// Where one response stream stands.
struct StreamState<T> {
    rx: watch::Receiver<Entitlement<T>>,
    stop: watch::Receiver<bool>,
    /// An error has been sent; the stream is over.
    done: bool,
}

impl<T: Send + Sync + 'static> StreamState<T> {
    /// The next response, or `None` once the stream is over. Waits for a
    /// change while the material is pending.
    async fn next<R>(
        &mut self,
        denied: &'static str,
        build: &(impl Fn(&T) -> Result<R, Status> + Sync),
    ) -> Option<Result<R, Status>> {
        if self.done {
            return None;
        }
        loop {
            tokio::select! {
                _ = self.stop.wait_for(|stopping| *stopping) => {
                    self.done = true;
                    return Some(Err(Status::unavailable(
                        "the Workload API is shutting down; reconnect",
                    )));
                }
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        info!("the provider closed the subscription; ending the stream");
                        self.done = true;
                        return Some(Err(Status::unavailable(
                            "the workload's identity source went away; reconnect",
                        )));
                    }
                }
            }
            let response = match &*self.rx.borrow_and_update() {
                Entitlement::Pending => None,
                Entitlement::Denied => Some(Err(Status::permission_denied(denied))),
                Entitlement::Granted(material) => Some(build(material)),
            };
            match response {
                None => debug!("material pending; waiting"),
                Some(Ok(response)) => return Some(Ok(response)),
                Some(Err(status)) => {
                    info!(code = ?status.code(), message = status.message(), "ending the stream");
                    self.done = true;
                    return Some(Err(status));
                }
            }
        }
    }
}

#[tonic::async_trait]
impl<P: WorkloadProvider> SpiffeWorkloadApi for WorkloadApi<P> {
    type FetchX509SVIDStream = ResponseStream<X509svidResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let span = rpc_span("FetchX509SVID", &request);
        async {
            let workload = self.admit(&request, |_| Ok(())).await?;
            let rx = self.provider.watch_x509_context(&workload);
            self.stream(rx, NO_IDENTITY, |ctx: &X509Context| {
                let response = x509_svid_response(ctx);
                let ids = spiffe_ids(ctx.svids().iter().map(|s| s.spiffe_id()));
                debug!(spiffe_ids = %ids, "sending X.509-SVIDs");
                Ok(response)
            })
        }
        .instrument(span)
        .await
    }

    type FetchX509BundlesStream = ResponseStream<X509BundlesResponse>;

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        const DENIED: &str = "not entitled to any X.509 bundle";
        let span = rpc_span("FetchX509Bundles", &request);
        async {
            let workload = self.admit(&request, |_| Ok(())).await?;
            let rx = self.provider.watch_bundles(&workload);
            self.stream(rx, DENIED, |bundles: &TrustBundles| {
                if bundles.x509().is_empty() {
                    return Err(Status::permission_denied(DENIED));
                }
                debug!(trust_domains = %trust_domains(bundles.x509()), "sending X.509 bundles");
                Ok(X509BundlesResponse {
                    crl: Vec::new(),
                    bundles: keyed_by_id(bundles.x509(), |certs| certs.concat()),
                })
            })
        }
        .instrument(span)
        .await
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let span = rpc_span("FetchJWTSVID", &request);
        async {
            let workload = self.admit(&request, check_jwt_svid_request).await?;
            let request = request.into_inner();
            // Checked in `check_jwt_svid_request`.
            let wanted = parse_optional_spiffe_id(&request.spiffe_id)?;
            debug!(audience = ?request.audience, spiffe_id = ?wanted, "minting JWT-SVIDs");
            let svids = self
                .provider
                .fetch_jwt_svids(&workload, &request.audience, wanted.as_ref())
                .await
                .map_err(|error| provider_status(&error, "FetchJWTSVID"))?;
            let svids: Vec<Jwtsvid> = svids
                .iter()
                .filter(|svid| wanted.as_ref().is_none_or(|id| svid.spiffe_id() == id))
                .map(|svid| Jwtsvid {
                    spiffe_id: svid.spiffe_id().to_string(),
                    svid: svid.token().to_owned(),
                    hint: String::new(),
                })
                .collect();
            if svids.is_empty() {
                info!("no JWT-SVID for the caller");
                return Err(Status::permission_denied(NO_IDENTITY));
            }
            debug!(spiffe_ids = %spiffe_ids(svids.iter().map(|s| &s.spiffe_id)), "sending JWT-SVIDs");
            Ok(Response::new(JwtsvidResponse { svids }))
        }
        .instrument(span)
        .await
    }

    type FetchJWTBundlesStream = ResponseStream<JwtBundlesResponse>;

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        const DENIED: &str = "not entitled to any JWT bundle";
        let span = rpc_span("FetchJWTBundles", &request);
        async {
            let workload = self.admit(&request, |_| Ok(())).await?;
            let rx = self.provider.watch_bundles(&workload);
            self.stream(rx, DENIED, |bundles: &TrustBundles| {
                if bundles.jwt().is_empty() {
                    return Err(Status::permission_denied(DENIED));
                }
                debug!(trust_domains = %trust_domains(bundles.jwt()), "sending JWT bundles");
                Ok(JwtBundlesResponse {
                    bundles: keyed_by_id(bundles.jwt(), Clone::clone),
                })
            })
        }
        .instrument(span)
        .await
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let span = rpc_span("ValidateJWTSVID", &request);
        async {
            let workload = self.admit(&request, check_validate_request).await?;
            let request = request.into_inner();
            let validated = self
                .provider
                .validate_jwt_svid(&workload, &request.audience, &request.svid)
                .await
                .map_err(|error| provider_status(&error, "ValidateJWTSVID"))?;
            debug!(
                subject = %validated.spiffe_id(),
                audience = request.audience,
                "validated a JWT-SVID"
            );
            Ok(Response::new(ValidateJwtsvidResponse {
                spiffe_id: validated.spiffe_id().to_string(),
                claims: Some(json_struct(validated.claims())),
            }))
        }
        .instrument(span)
        .await
    }
}

/// The span of one RPC: its name, the caller's pid, uid and gid, and the
/// workload once attested.
fn rpc_span<T>(rpc: &'static str, request: &Request<T>) -> Span {
    let peer = request.extensions().get::<Arc<PeerCredentials>>();
    info_span!(
        "workload_api",
        rpc,
        pid = peer.map(|p| p.pid()),
        uid = peer.map(|p| p.uid()),
        gid = peer.map(|p| p.gid()),
        workload = field::Empty,
    )
}

/// The security header must be present once, with the value `true`
/// (Workload Endpoint §3); otherwise `InvalidArgument` (§6).
fn check_security_header(metadata: &MetadataMap) -> Result<(), Status> {
    let mut values = metadata.get_all(SECURITY_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if value.as_bytes() == SECURITY_HEADER_VALUE => Ok(()),
        _ => {
            debug!("request without the security header");
            Err(Status::invalid_argument(
                "security header missing from request: every Workload API request must carry \
                 the gRPC metadata \"workload.spiffe.io: true\"",
            ))
        }
    }
}

/// `audience` is mandatory (Workload API §6.2.1) and each value must be
/// non-empty; `spiffe_id`, when set, must be a SPIFFE ID.
fn check_jwt_svid_request(request: &JwtsvidRequest) -> Result<(), Status> {
    if request.audience.is_empty() {
        return Err(Status::invalid_argument("audience must be specified"));
    }
    if request.audience.iter().any(String::is_empty) {
        return Err(Status::invalid_argument(
            "audience must not contain an empty value",
        ));
    }
    parse_optional_spiffe_id(&request.spiffe_id).map(drop)
}

/// Both fields are mandatory (Workload API §6.2.3, §4.5).
fn check_validate_request(request: &ValidateJwtsvidRequest) -> Result<(), Status> {
    if request.audience.is_empty() {
        return Err(Status::invalid_argument("audience must be specified"));
    }
    if request.svid.is_empty() {
        return Err(Status::invalid_argument("svid must be specified"));
    }
    Ok(())
}

/// The optional `spiffe_id` of a `JWTSVIDRequest`: empty means none.
fn parse_optional_spiffe_id(text: &str) -> Result<Option<SpiffeId>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|error| Status::invalid_argument(format!("spiffe_id is not a SPIFFE ID: {error}")))
}

/// The status a provider error becomes; logs the details the caller does
/// not get.
fn provider_status(error: &ProviderError, during: &'static str) -> Status {
    match error {
        ProviderError::NotEntitled { reason } => {
            info!(during, reason, "caller denied");
            Status::permission_denied(NO_IDENTITY)
        }
        ProviderError::InvalidJwtSvid { reason } => {
            debug!(during, reason, "JWT-SVID rejected");
            Status::invalid_argument(error.to_string())
        }
        ProviderError::Unavailable { .. } => {
            warn!(during, error = %error_chain(error), "provider unavailable");
            Status::unavailable("the Workload API cannot answer now; retry with a backoff")
        }
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// The `FetchX509SVID` response for a context: each SVID with the bundle of
/// its trust domain; the other trust domains' bundles as federated bundles.
fn x509_svid_response(ctx: &X509Context) -> X509svidResponse {
    let own: BTreeSet<&TrustDomain> = ctx
        .svids()
        .iter()
        .map(|svid| svid.spiffe_id().trust_domain())
        .collect();
    let svids = ctx
        .svids()
        .iter()
        .map(|svid| X509svid {
            spiffe_id: svid.spiffe_id().to_string(),
            x509_svid: svid.chain().concat(),
            x509_svid_key: svid.private_key().secret_der().to_vec(),
            // `X509Context::new` checked that every SVID's trust domain has
            // a bundle.
            bundle: ctx
                .bundles()
                .get(svid.spiffe_id().trust_domain())
                .map(|certs| certs.concat())
                .unwrap_or_default(),
            hint: String::new(),
        })
        .collect();
    let federated: BTreeMap<TrustDomain, Vec<Vec<u8>>> = ctx
        .bundles()
        .iter()
        .filter(|(td, _)| !own.contains(td))
        .map(|(td, certs)| (td.clone(), certs.clone()))
        .collect();
    X509svidResponse {
        svids,
        crl: Vec::new(),
        federated_bundles: keyed_by_id(&federated, |certs| certs.concat()),
    }
}

/// A map keyed by the SPIFFE ID of each trust domain, `spiffe://<name>`, as
/// the specification keys bundles.
fn keyed_by_id<V>(
    bundles: &BTreeMap<TrustDomain, V>,
    encode: impl Fn(&V) -> Vec<u8>,
) -> std::collections::HashMap<String, Vec<u8>> {
    bundles
        .iter()
        .map(|(td, bundle)| (td.id().to_string(), encode(bundle)))
        .collect()
}

/// Claims as a `google.protobuf.Struct`.
fn json_struct(claims: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: claims
            .iter()
            .map(|(name, value)| (name.clone(), json_value(value)))
            .collect(),
    }
}

/// A JSON value as a `google.protobuf.Value`.
fn json_value(value: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(prost_types::NullValue::NullValue.into()),
        Value::Bool(b) => Kind::BoolValue(*b),
        // Every JSON number is an f64 to protobuf, as to JavaScript.
        // `as_f64` fails only with serde_json's arbitrary precision, not
        // enabled here; the number then goes as its text.
        Value::Number(n) => match n.as_f64() {
            Some(f) => Kind::NumberValue(f),
            None => Kind::StringValue(n.to_string()),
        },
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_value).collect(),
        }),
        Value::Object(fields) => Kind::StructValue(json_struct(fields)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// SPIFFE IDs for a log line, comma-separated.
fn spiffe_ids<I>(ids: I) -> String
where
    I: IntoIterator,
    I::Item: std::fmt::Display,
{
    let mut text = String::new();
    for (i, id) in ids.into_iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let _ = write!(text, "{id}");
    }
    text
}

/// The trust domains of a bundle map, for a log line.
fn trust_domains<V>(bundles: &BTreeMap<TrustDomain, V>) -> String {
    spiffe_ids(bundles.keys())
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn security_header_must_be_exactly_true_once() {
        let mut md = MetadataMap::new();
        assert_eq!(
            check_security_header(&md).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        md.insert(SECURITY_HEADER, MetadataValue::from_static("True"));
        assert!(check_security_header(&md).is_err());
        md.insert(SECURITY_HEADER, MetadataValue::from_static("true"));
        assert!(check_security_header(&md).is_ok());
        md.append(SECURITY_HEADER, MetadataValue::from_static("true"));
        assert!(check_security_header(&md).is_err());
    }

    #[test]
    fn jwt_requests_need_their_mandatory_fields() {
        let mut request = JwtsvidRequest::default();
        assert!(check_jwt_svid_request(&request).is_err());
        request.audience = vec![String::new()];
        assert!(check_jwt_svid_request(&request).is_err());
        request.audience = vec!["a".into()];
        assert!(check_jwt_svid_request(&request).is_ok());
        request.spiffe_id = "not-an-id".into();
        assert_eq!(
            check_jwt_svid_request(&request).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        request.spiffe_id = "spiffe://example.org/w".into();
        assert!(check_jwt_svid_request(&request).is_ok());

        let mut validate = ValidateJwtsvidRequest::default();
        assert!(check_validate_request(&validate).is_err());
        validate.audience = "a".into();
        assert!(check_validate_request(&validate)
            .unwrap_err()
            .message()
            .contains("svid"));
        validate.svid = "t".into();
        assert!(check_validate_request(&validate).is_ok());
    }

    #[test]
    fn claims_become_a_struct() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"sub":"spiffe://example.org/w","aud":["a","b"],"exp":1700000000,"n":null,"x":{"y":true}}"#,
        )
        .unwrap();
        let s = json_struct(&claims);
        use prost_types::value::Kind;
        assert_eq!(
            s.fields["exp"].kind,
            Some(Kind::NumberValue(1_700_000_000.0))
        );
        assert!(matches!(&s.fields["aud"].kind, Some(Kind::ListValue(l)) if l.values.len() == 2));
        assert!(
            matches!(&s.fields["x"].kind, Some(Kind::StructValue(x)) if x.fields["y"].kind == Some(Kind::BoolValue(true)))
        );
        assert!(matches!(s.fields["n"].kind, Some(Kind::NullValue(_))));
    }

    #[test]
    fn provider_errors_map_to_spec_codes_without_leaking_reasons() {
        let denied = provider_status(
            &ProviderError::NotEntitled {
                reason: "pid 7 has no endpoint".into(),
            },
            "t",
        );
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(denied.message(), NO_IDENTITY);
        let invalid = provider_status(
            &ProviderError::InvalidJwtSvid {
                reason: "token expired".into(),
            },
            "t",
        );
        assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
        assert!(invalid.message().contains("token expired"));
        let unavailable = provider_status(
            &ProviderError::Unavailable {
                reason: "kubelet down".into(),
                source: None,
            },
            "t",
        );
        assert_eq!(unavailable.code(), tonic::Code::Unavailable);
        assert!(!unavailable.message().contains("kubelet"));
    }
}
