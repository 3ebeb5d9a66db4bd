//! What the server asks of the agent: who a caller is, and what it may see.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use tokio::sync::watch;

use super::material::{Entitlement, JwtSvidToken, TrustBundles, ValidatedJwtSvid, X509Context};
use crate::SpiffeId;

/// Why a provider refused or failed a request. The server turns each
/// variant into a gRPC status; what reaches the caller is said per variant.
/// None of the texts may hold a key or a token.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The caller is no known workload, or is not entitled to what it asked
    /// (a SPIFFE ID it has no registration for). `PermissionDenied`; the
    /// caller sees only "no identity issued", the reason goes to the log.
    #[error("not entitled: {reason}")]
    NotEntitled {
        /// Why, for the agent's log.
        reason: String,
    },
    /// The JWT-SVID given to `ValidateJWTSVID` does not validate (bad
    /// signature, unknown key, expired, audience not in `aud`, not a
    /// JWT-SVID). `InvalidArgument`, with the reason: the caller needs it.
    #[error("invalid JWT-SVID: {reason}")]
    InvalidJwtSvid {
        /// What is wrong with the token, for the caller.
        reason: String,
    },
    /// The provider cannot answer now (still starting, a dependency down).
    /// `Unavailable`, so the client retries with a backoff; the caller sees
    /// a generic text, the reason and source go to the log.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// What is unavailable, for the agent's log.
        reason: String,
        /// The underlying failure.
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
}

/// The credentials of the process at the other end of a Workload API
/// connection, as the kernel recorded them when it connected (`SO_PEERCRED`,
/// `SO_PEERPIDFD`). The same for every RPC on the connection.
///
/// The pid is in the agent's pid namespace and may be reused once the
/// process exits; the pidfd, when there is one, keeps naming the process
/// that connected, so a provider that looks the pid up (in `/proc`, in the
/// container runtime) should check afterwards that the pidfd's process is
/// still alive, or it may attest a newcomer that got the same pid. A
/// process that hands its connection to another one is the one attested.
pub struct PeerCredentials {
    pid: i32,
    uid: u32,
    gid: u32,
    pidfd: Option<OwnedFd>,
}

impl PeerCredentials {
    /// Credentials from their parts (the server builds them from the
    /// socket; a provider's tests build them by hand).
    pub fn new(pid: i32, uid: u32, gid: u32, pidfd: Option<OwnedFd>) -> Self {
        Self {
            pid,
            uid,
            gid,
            pidfd,
        }
    }

    /// The process id, in the agent's pid namespace; 0 if the process is in
    /// a pid namespace the agent cannot see into.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The effective user id at connect time.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The effective group id at connect time.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// A pidfd for the process, if the kernel gives one (`SO_PEERPIDFD`,
    /// Linux 6.5 and later).
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(AsFd::as_fd)
    }
}

impl fmt::Debug for PeerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCredentials")
            .field("pid", &self.pid)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("pidfd", &self.pidfd.is_some())
            .finish()
    }
}

/// The agent's side of the Workload API: attestation and the material each
/// workload may see. Implementations do the I/O; the server only speaks the
/// protocol.
pub trait WorkloadProvider: Send + Sync + 'static {
    /// What attestation found out about a caller: a handle the provider
    /// understands (an endpoint id, a pod UID). Its `Display` goes into the
    /// server's logs and spans; it must hold no secret.
    type Workload: fmt::Display + Send + Sync + 'static;

    /// Who the caller is. Called at the start of every RPC. An unknown
    /// caller is [`ProviderError::NotEntitled`].
    fn attest(
        &self,
        caller: &PeerCredentials,
    ) -> impl Future<Output = Result<Self::Workload, ProviderError>> + Send;

    /// The workload's X.509-SVIDs and X.509 bundles, now and as they change
    /// (rotation, renewal, a CA or bundle update, revocation). The server
    /// holds the receiver for as long as a `FetchX509SVID` stream is open
    /// and drops it when the stream ends. A closed channel (sender dropped)
    /// ends the stream with `Unavailable`, so the client reconnects and is
    /// attested again.
    fn watch_x509_context(
        &self,
        workload: &Self::Workload,
    ) -> watch::Receiver<Entitlement<X509Context>>;

    /// The trust bundles the workload may see, now and as they change; as
    /// [`Self::watch_x509_context`], for `FetchX509Bundles` and
    /// `FetchJWTBundles`.
    fn watch_bundles(
        &self,
        workload: &Self::Workload,
    ) -> watch::Receiver<Entitlement<TrustBundles>>;

    /// Mints JWT-SVIDs for `audience` (never empty): one per identity of the
    /// workload, or only for `spiffe_id` when it is given. No SVID (or none
    /// for `spiffe_id`) is [`ProviderError::NotEntitled`] or an empty list;
    /// both give `PermissionDenied` (Workload API §6.2.1).
    fn fetch_jwt_svids(
        &self,
        workload: &Self::Workload,
        audience: &[String],
        spiffe_id: Option<&SpiffeId>,
    ) -> impl Future<Output = Result<Vec<JwtSvidToken>, ProviderError>> + Send;

    /// Validates `token` for `audience` (neither empty) per the JWT-SVID
    /// specification, against the JWT bundles the workload may see. A token
    /// that does not validate is [`ProviderError::InvalidJwtSvid`].
    fn validate_jwt_svid(
        &self,
        workload: &Self::Workload,
        audience: &str,
        token: &str,
    ) -> impl Future<Output = Result<ValidatedJwtSvid, ProviderError>> + Send;
}
