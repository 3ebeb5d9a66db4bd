//! The unix socket: binding it, and accepting connections with the caller's
//! credentials attached.

use std::convert::Infallible;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

use super::provider::PeerCredentials;
use crate::attached::Attached;

/// The socket's mode: any local process may connect, because the Workload
/// Endpoint must not require clients to authenticate (Workload Endpoint §5);
/// attestation decides what each caller gets.
const SOCKET_MODE: u32 = 0o777;

/// How long to wait before accepting again after `accept` failed (out of
/// file descriptors, say), so that a persistent failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the Workload API socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A system call on the socket path failed.
    #[error("`{call}` on {path} failed")]
    Io {
        /// The call (`mkdir`, `lstat`, `connect`, `unlink`, `bind`, `chmod`).
        call: &'static str,
        /// The path it was made on.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// Something other than a socket is at the path.
    #[error(
        "{path} exists and is not a unix socket; it is left alone: remove it or choose another \
         socket path"
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A server is already listening at the path.
    #[error(
        "{path} is in use: a server accepts connections there; stop it or choose another socket \
         path"
    )]
    InUse {
        /// The path.
        path: PathBuf,
    },
}

/// Binds the Workload API socket at `path` (the path part of the
/// `SPIFFE_ENDPOINT_SOCKET` URI `unix://<path>` that workloads are given,
/// Workload Endpoint §4).
///
/// Creates the parent directory if it is missing (with the process's umask;
/// workloads need search permission on every directory above the socket).
/// Removes a stale socket left by an earlier run, but only a socket nobody
/// listens on: anything else at the path is an error and stays untouched.
/// Sets the socket's mode to 0777, as any local process may call the
/// Workload API and attestation decides what it gets.
///
/// Must be called from within a Tokio runtime, like
/// [`UnixListener::bind`].
pub fn bind_socket(path: &Path) -> Result<UnixListener, SocketError> {
    let io_error = |call: &'static str| {
        move |source: io::Error| SocketError::Io {
            call,
            path: path.to_owned(),
            source,
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|source| SocketError::Io {
            call: "mkdir",
            path: parent.to_owned(),
            source,
        })?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(SocketError::InUse {
                        path: path.to_owned(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    debug!(path = %path.display(), "removing stale Workload API socket");
                    fs::remove_file(path).map_err(io_error("unlink"))?;
                }
                Err(e) => return Err(io_error("connect")(e)),
            }
        }
        Ok(_) => {
            return Err(SocketError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("lstat")(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_error("bind"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io_error("chmod"))?;
    Ok(listener)
}

/// An accepted connection with the credentials of the process that made it;
/// tonic puts the credentials into every request's extensions.
pub(crate) type PeerStream = Attached<UnixStream, Arc<PeerCredentials>>;

/// The credentials the kernel recorded when the peer connected. Fails only
/// if `SO_PEERCRED` fails; a missing pidfd (kernels before 6.5) is `None`.
fn peer_credentials(stream: &UnixStream) -> Result<PeerCredentials, nix::Error> {
    let cred = getsockopt(stream, sockopt::PeerCredentials)?;
    let pidfd = match getsockopt(stream, sockopt::PeerPidfd) {
        Ok(fd) => Some(fd),
        Err(errno) => {
            debug!(%errno, pid = cred.pid(), "no pidfd for the caller (SO_PEERPIDFD)");
            None
        }
    };
    Ok(PeerCredentials::new(
        cred.pid(),
        cred.uid(),
        cred.gid(),
        pidfd,
    ))
}

/// The connections accepted on `listener`, each with its caller's
/// credentials. A connection whose credentials cannot be read is closed (no
/// credentials, no attestation); a failed `accept` is logged and retried
/// after [`ACCEPT_BACKOFF`]. The stream never ends by itself.
pub(crate) fn incoming(
    listener: UnixListener,
) -> impl Stream<Item = Result<PeerStream, Infallible>> {
    futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match peer_credentials(&stream) {
                    Ok(peer) => {
                        debug!(
                            pid = peer.pid(),
                            uid = peer.uid(),
                            "accepted a Workload API connection"
                        );
                        let peer = Arc::new(peer);
                        return Some((Ok(PeerStream::new(stream, peer)), listener));
                    }
                    Err(errno) => warn!(
                        %errno,
                        "closing a Workload API connection: cannot read the caller's credentials \
                         (SO_PEERCRED)"
                    ),
                },
                Err(error) => {
                    warn!(%error, "accepting a Workload API connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("palisade-wl-socket-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn binds_world_connectable_socket_and_replaces_stale_one() {
        let dir = scratch_dir("stale");
        let path = dir.join("nested").join("api.sock");
        let listener = bind_socket(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o777);

        // A live server: refused.
        assert!(matches!(bind_socket(&path), Err(SocketError::InUse { .. })));

        // The server is gone, its socket file stays: replaced.
        drop(listener);
        assert!(path.exists());
        let _listener = bind_socket(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn leaves_other_files_alone() {
        let dir = scratch_dir("file");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            bind_socket(&path),
            Err(SocketError::NotASocket { .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), b"not a socket");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn reads_the_callers_credentials() {
        let (a, b) = UnixStream::pair().unwrap();
        let peer = peer_credentials(&a).unwrap();
        assert_eq!(peer.pid(), i32::try_from(std::process::id()).unwrap());
        let euid = std::os::unix::fs::MetadataExt::uid(&fs::metadata("/proc/self").unwrap());
        assert_eq!(peer.uid(), euid);
        drop(b);
    }
}
