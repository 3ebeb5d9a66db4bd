//! Connection probes: one TCP connection with one echoed payload, or one
//! echoed UDP datagram, made from inside a network namespace.

use std::fmt;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socket2::{Domain, Socket, Type};

use crate::netns::{NetNs, NetnsError};

/// The longest a probe waits (the scenario format's bound).
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often an unanswered UDP datagram is sent again within one probe.
const UDP_RESEND: Duration = Duration::from_millis(250);

/// Transport protocol of a probe or an echo port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`, as the agent names it in flow records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// A port and protocol, written `80/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortProto {
    /// The port (1-65535).
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl PortProto {
    /// TCP port `port`.
    pub fn tcp(port: u16) -> Self {
        Self {
            port,
            protocol: Protocol::Tcp,
        }
    }

    /// UDP port `port`.
    pub fn udp(port: u16) -> Self {
        Self {
            port,
            protocol: Protocol::Udp,
        }
    }
}

impl Ord for PortProto {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.protocol, self.port).cmp(&(other.protocol, other.port))
    }
}

impl PartialOrd for PortProto {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.as_str())
    }
}

impl FromStr for PortProto {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (port, proto) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a port: expected N/tcp or N/udp, e.g. 80/tcp"))?;
        let port: u16 = port
            .trim()
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{port:?} in {s:?} is not a port number (1-65535)"))?;
        let protocol = match proto.trim().to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => {
                return Err(format!(
                    "{proto:?} in {s:?} is not a supported protocol: use tcp or udp"
                ))
            }
        };
        Ok(Self { port, protocol })
    }
}

impl TryFrom<String> for PortProto {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PortProto> for String {
    fn from(p: PortProto) -> Self {
        p.to_string()
    }
}

/// Why a probe could not even be attempted (the connection failing is not
/// an error: see [`ProbeOutcome::completed`]).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Entering the source namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The client socket could not be set up.
    #[error("probe to {dst} {port}: {call}: {source}")]
    Socket {
        /// The destination.
        dst: Ipv4Addr,
        /// The port.
        port: PortProto,
        /// The failing call.
        call: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What a probe observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeOutcome {
    /// The connection completed: TCP handshake plus the payload echoed back,
    /// or the UDP datagram echoed back.
    pub completed: bool,
    /// Time until completion, or until the probe gave up.
    pub elapsed: Duration,
    /// The client's source port (bound before the first packet).
    pub client_port: u16,
    /// Why it did not complete, when the socket said (`connection refused`,
    /// `timed out`, ...).
    pub detail: Option<String>,
}

/// Probes `dst:port` from inside `from` on a new thread; gives up after
/// `timeout` (at most [`MAX_PROBE_TIMEOUT`]).
pub fn probe(
    from: &NetNs,
    dst: Ipv4Addr,
    port: PortProto,
    timeout: Duration,
) -> Result<ProbeOutcome, ProbeError> {
    from.run(move || probe_here(dst, port, timeout))?
}

/// One probe of a batch.
#[derive(Debug, Clone)]
pub struct ProbeJob {
    /// The source namespace.
    pub from: NetNs,
    /// The destination address.
    pub dst: Ipv4Addr,
    /// The destination port.
    pub port: PortProto,
}

/// Runs `jobs` on at most `parallelism` threads (at least one) and returns
/// their outcomes in the same order.
pub fn probe_many(
    jobs: &[ProbeJob],
    timeout: Duration,
    parallelism: usize,
) -> Vec<Result<ProbeOutcome, ProbeError>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<ProbeOutcome, ProbeError>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let workers = parallelism.clamp(1, jobs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut current: Option<&NetNs> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let result = if current == Some(&job.from) {
                        Ok(())
                    } else {
                        current = None;
                        job.from.enter_current_thread().map(|()| {
                            current = Some(&job.from);
                        })
                    };
                    let result = result
                        .map_err(ProbeError::from)
                        .and_then(|()| probe_here(job.dst, job.port, timeout));
                    let mut all = results.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(slot) = all.get_mut(i) {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(ProbeError::Netns(NetnsError::Panicked {
                    name: "probe worker".to_owned(),
                }))
            })
        })
        .collect()
}

/// Probes from the calling thread's network namespace.
pub fn probe_here(
    dst: Ipv4Addr,
    port: PortProto,
    timeout: Duration,
) -> Result<ProbeOutcome, ProbeError> {
    let timeout = timeout.min(MAX_PROBE_TIMEOUT);
    match port.protocol {
        Protocol::Tcp => probe_tcp(dst, port, timeout),
        Protocol::Udp => probe_udp(dst, port, timeout),
    }
}

fn payload(client_port: u16, dst: Ipv4Addr, port: PortProto) -> Vec<u8> {
    format!("palisade-probe {client_port} {dst} {port}\n").into_bytes()
}

fn not_completed(start: Instant, client_port: u16, detail: String) -> ProbeOutcome {
    ProbeOutcome {
        completed: false,
        elapsed: start.elapsed(),
        client_port,
        detail: Some(detail),
    }
}

fn probe_tcp(
    dst: Ipv4Addr,
    port: PortProto,
    timeout: Duration,
) -> Result<ProbeOutcome, ProbeError> {
    let err = |call, source| ProbeError::Socket {
        dst,
        port,
        call,
        source,
    };
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(socket2::Protocol::TCP))
        .map_err(|e| err("socket", e))?;
    socket
        .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into())
        .map_err(|e| err("bind", e))?;
    let client_port = socket
        .local_addr()
        .map_err(|e| err("getsockname", e))?
        .as_socket_ipv4()
        .map(|a| a.port())
        .unwrap_or(0);
    let start = Instant::now();
    let deadline = start + timeout;
    let target = SocketAddrV4::new(dst, port.port);
    if let Err(e) = socket.connect_timeout(&target.into(), timeout) {
        return Ok(not_completed(start, client_port, format!("connect: {e}")));
    }
    let mut stream: TcpStream = socket.into();
    let data = payload(client_port, dst, port);
    let remaining = |now: Instant| {
        deadline
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
    };
    let Some(left) = remaining(Instant::now()) else {
        return Ok(not_completed(
            start,
            client_port,
            "timed out after connect".into(),
        ));
    };
    if let Err(e) = stream
        .set_write_timeout(Some(left))
        .and_then(|()| stream.write_all(&data))
    {
        return Ok(not_completed(start, client_port, format!("send: {e}")));
    }
    let mut echo = Vec::with_capacity(data.len());
    let mut buf = [0u8; 256];
    while echo.len() < data.len() {
        let Some(left) = remaining(Instant::now()) else {
            return Ok(not_completed(
                start,
                client_port,
                "timed out waiting for the echo".into(),
            ));
        };
        if let Err(e) = stream.set_read_timeout(Some(left)) {
            return Err(err("setsockopt(SO_RCVTIMEO)", e));
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                return Ok(not_completed(
                    start,
                    client_port,
                    "connection closed before the echo".into(),
                ))
            }
            Ok(n) => echo.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Ok(not_completed(start, client_port, format!("receive: {e}"))),
        }
    }
    if echo != data {
        return Ok(not_completed(
            start,
            client_port,
            "the echo differs from the payload".into(),
        ));
    }
    Ok(ProbeOutcome {
        completed: true,
        elapsed: start.elapsed(),
        client_port,
        detail: None,
    })
}

fn probe_udp(
    dst: Ipv4Addr,
    port: PortProto,
    timeout: Duration,
) -> Result<ProbeOutcome, ProbeError> {
    let err = |call, source| ProbeError::Socket {
        dst,
        port,
        call,
        source,
    };
    let socket =
        UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| err("bind", e))?;
    let client_port = socket
        .local_addr()
        .map_err(|e| err("getsockname", e))?
        .port();
    let start = Instant::now();
    let deadline = start + timeout;
    // Connected, so that an ICMP error ends the probe early.
    socket
        .connect(SocketAddrV4::new(dst, port.port))
        .map_err(|e| err("connect", e))?;
    let data = payload(client_port, dst, port);
    let mut buf = [0u8; 512];
    let mut next_send = start;
    loop {
        let now = Instant::now();
        let Some(left) = deadline
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
        else {
            return Ok(not_completed(
                start,
                client_port,
                "timed out waiting for the echo".into(),
            ));
        };
        if now >= next_send {
            if let Err(e) = socket.send(&data) {
                return Ok(not_completed(start, client_port, format!("send: {e}")));
            }
            next_send = now + UDP_RESEND;
        }
        let wait = left.min(next_send.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            continue;
        }
        socket
            .set_read_timeout(Some(wait))
            .map_err(|e| err("setsockopt(SO_RCVTIMEO)", e))?;
        match socket.recv(&mut buf) {
            Ok(n) if buf[..n] == data[..] => {
                return Ok(ProbeOutcome {
                    completed: true,
                    elapsed: start.elapsed(),
                    client_port,
                    detail: None,
                })
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Ok(not_completed(start, client_port, format!("receive: {e}"))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn port_proto_parses_and_prints() {
        assert_eq!("80/tcp".parse::<PortProto>(), Ok(PortProto::tcp(80)));
        assert_eq!("113/UDP".parse::<PortProto>(), Ok(PortProto::udp(113)));
        assert_eq!(PortProto::udp(81).to_string(), "81/udp");
        for bad in ["80", "0/tcp", "70000/tcp", "80/sctp", "x/tcp"] {
            assert!(bad.parse::<PortProto>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tcp_sorts_before_udp() {
        let mut v = vec![PortProto::udp(80), PortProto::tcp(81), PortProto::tcp(80)];
        v.sort();
        assert_eq!(
            v,
            vec![PortProto::tcp(80), PortProto::tcp(81), PortProto::udp(80)]
        );
    }
}
