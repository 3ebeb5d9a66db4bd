//! The SPIFFE Workload API server: gRPC over a unix socket.
//!
//! Workloads on the node connect to a unix socket and ask for their
//! X.509-SVIDs, JWT-SVIDs and trust bundles, as the SPIFFE Workload API and
//! Workload Endpoint specifications define (`standards/SPIFFE_Workload_API.md`
//! and `standards/SPIFFE_Workload_Endpoint.md` in github.com/spiffe/spiffe).
//! Any SPIFFE client library (go-spiffe, the `spiffe` crate, Envoy's SDS
//! bridge) talks to it unchanged.
//!
//! This module is the protocol; the agent supplies the knowledge through a
//! [`WorkloadProvider`]:
//! - [`WorkloadProvider::attest`] says who the caller is, from the
//!   [`PeerCredentials`] the kernel gave for the connection (pid, uid, gid,
//!   pidfd). It runs for every RPC, not once per connection, so a workload
//!   whose endpoint is gone is refused on its next call.
//! - [`WorkloadProvider::watch_x509_context`] and
//!   [`WorkloadProvider::watch_bundles`] publish what each workload may see
//!   through [`tokio::sync::watch`] channels; the streaming RPCs send the
//!   current value at once and every change after it, until the client goes
//!   away, the provider withdraws the entitlement
//!   ([`Entitlement::Denied`], the stream ends with `PermissionDenied`) or
//!   the server shuts down (`Unavailable`, so clients reconnect).
//! - [`WorkloadProvider::fetch_jwt_svids`] and
//!   [`WorkloadProvider::validate_jwt_svid`] mint and check JWT-SVIDs.
//!
//! [`bind_socket`] prepares the socket and [`serve`] runs the server until a
//! shutdown future completes.
//!
//! # Status codes
//!
//! | condition | code |
//! | --- | --- |
//! | metadata `workload.spiffe.io: true` missing (Endpoint §3, §6) | `InvalidArgument` |
//! | `FetchJWTSVID` without an audience, `ValidateJWTSVID` without audience or token (API §4.5) | `InvalidArgument` |
//! | `ValidateJWTSVID` with a token that does not validate (as SPIRE does) | `InvalidArgument` |
//! | caller not attested, no SVID for it, not entitled to the SPIFFE ID or the bundles asked for (API §5.2, §6.2; Endpoint §6) | `PermissionDenied` |
//! | provider temporarily failing, subscription closed, server shutting down (Endpoint §6) | `Unavailable` |
//! | WIT-SVID profile (API §7) | `Unimplemented` |
//!
//! Nothing this module logs or returns contains a private key or a token.

mod material;
pub mod proto;
mod provider;
mod server;
mod socket;

pub use material::{
    Entitlement, JwtSvidToken, MaterialError, TrustBundles, ValidatedJwtSvid, X509Context,
};
pub use provider::{PeerCredentials, ProviderError, WorkloadProvider};
pub use server::{serve, ServeError};
pub use socket::{bind_socket, SocketError};
