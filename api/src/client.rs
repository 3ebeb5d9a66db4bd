//! A blocking client of the local API, for the CLI and the CNI plugin.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Request, Response};

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached (agent not running, wrong path).
    #[error("cannot reach the palisade agent at {path}: {source} (is palisade-agent running, and is this its api_socket?)")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("talking to the palisade agent at {path} failed: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The agent's answer was not understood.
    #[error("the palisade agent answered something this client does not understand: {source}")]
    Decode {
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// The agent closed the connection without answering.
    #[error("the palisade agent closed the connection without an answer")]
    NoAnswer,
    /// The agent answered with an error.
    #[error("{message}")]
    Agent {
        /// The agent's message.
        message: String,
    },
}

/// A client bound to one agent socket.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
    timeout: Option<Duration>,
}

impl Client {
    /// A client of the agent listening on `path`; calls time out after 30 s.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_owned(),
            timeout: Some(Duration::from_secs(30)),
        }
    }

    /// Sets the read timeout of calls (`None`: wait forever).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends one request and returns the answer; an agent error becomes
    /// [`ClientError::Agent`].
    pub fn call(&self, request: &Request) -> Result<Response, ClientError> {
        let mut reader = self.send(request)?;
        match read_response(&self.path, &mut reader)? {
            Some(Response::Error { message }) => Err(ClientError::Agent { message }),
            Some(r) => Ok(r),
            None => Err(ClientError::NoAnswer),
        }
    }

    /// Sends one request and calls `each` for every answer line until the
    /// agent closes the connection or `each` returns false.
    pub fn stream(
        &self,
        request: &Request,
        mut each: impl FnMut(Response) -> bool,
    ) -> Result<(), ClientError> {
        let mut reader = self.send(request)?;
        while let Some(r) = read_response(&self.path, &mut reader)? {
            if let Response::Error { message } = r {
                return Err(ClientError::Agent { message });
            }
            if !each(r) {
                break;
            }
        }
        Ok(())
    }

    fn send(&self, request: &Request) -> Result<BufReader<UnixStream>, ClientError> {
        let mut stream =
            UnixStream::connect(&self.path).map_err(|source| ClientError::Connect {
                path: self.path.clone(),
                source,
            })?;
        let io = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        stream.set_read_timeout(self.timeout).map_err(io)?;
        let mut line =
            serde_json::to_vec(request).map_err(|source| ClientError::Decode { source })?;
        line.push(b'\n');
        stream.write_all(&line).map_err(io)?;
        Ok(BufReader::new(stream))
    }
}

fn read_response(
    path: &Path,
    reader: &mut BufReader<UnixStream>,
) -> Result<Option<Response>, ClientError> {
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .map_err(|source| ClientError::Io {
            path: path.to_owned(),
            source,
        })?;
    if n == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|source| ClientError::Decode { source })
}
