//! TCP and UDP echo servers living in a network namespace.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::netns::{NetNs, NetnsError};
use crate::probe::{PortProto, Protocol};

/// How often the server looks at its stop flag.
const TICK_MS: u16 = 100;
/// How long one echoed TCP connection may last.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(5);

/// Why an echo server could not start.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// Entering the namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A port could not be bound.
    #[error("echo server in network namespace {netns}: cannot bind {port}: {source}")]
    Bind {
        /// The namespace.
        netns: String,
        /// The port.
        port: PortProto,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server thread died before it was ready.
    #[error("echo server in network namespace {netns} died while starting")]
    Died {
        /// The namespace.
        netns: String,
    },
}

/// Echo servers for a set of ports, run by one thread inside a namespace
/// (sockets created there). Stopped and joined on [`EchoServer::stop`] or
/// drop.
#[derive(Debug)]
pub struct EchoServer {
    netns: String,
    ports: Vec<PortProto>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), NetnsError>>>,
}

enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl EchoServer {
    /// Binds every port on 0.0.0.0 inside `netns` and starts serving; returns
    /// once all sockets are bound.
    pub fn start(netns: &NetNs, ports: &[PortProto]) -> Result<Self, EchoError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), EchoError>>(1);
        let thread_stop = Arc::clone(&stop);
        let thread_ports = ports.to_vec();
        let name = netns.name().to_owned();
        let thread = netns.spawn_thread(move || {
            let mut sockets = Vec::new();
            for port in &thread_ports {
                match bind(*port) {
                    Ok(s) => sockets.push(s),
                    Err(source) => {
                        let _ = ready_tx.send(Err(EchoError::Bind {
                            netns: name,
                            port: *port,
                            source,
                        }));
                        return;
                    }
                }
            }
            let _ = ready_tx.send(Ok(()));
            drop(ready_tx);
            serve(&sockets, &thread_stop);
        })?;
        let mut server = Self {
            netns: netns.name().to_owned(),
            ports: ports.to_vec(),
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) => {
                server.stop();
                Err(e)
            }
            Err(_) => {
                // The thread ended without a word: it could not enter the
                // namespace (or panicked); its join result says which.
                let reason = server.thread.take().map(|t| t.join());
                match reason {
                    Some(Ok(Err(e))) => Err(e.into()),
                    _ => Err(EchoError::Died {
                        netns: server.netns.clone(),
                    }),
                }
            }
        }
    }

    /// The namespace it serves in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The ports it serves.
    pub fn ports(&self) -> &[PortProto] {
        &self.ports
    }

    /// Stops serving, closes the sockets and waits for the threads (at most
    /// about [`CONNECTION_LIFETIME`]). Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind(port: PortProto) -> std::io::Result<Listener> {
    let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port.port);
    Ok(match port.protocol {
        Protocol::Tcp => {
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Listener::Tcp(l)
        }
        Protocol::Udp => {
            let s = UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            Listener::Udp(s)
        }
    })
}

fn serve(sockets: &[Listener], stop: &Arc<AtomicBool>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let mut fds: Vec<PollFd<'_>> = sockets
            .iter()
            .map(|s| match s {
                Listener::Tcp(l) => PollFd::new(l.as_fd(), PollFlags::POLLIN),
                Listener::Udp(u) => PollFd::new(u.as_fd(), PollFlags::POLLIN),
            })
            .collect();
        if poll(&mut fds, PollTimeout::from(TICK_MS)).is_err() {
            // EINTR or similar: look at the flag and try again.
            continue;
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        for (socket, ready) in sockets.iter().zip(ready) {
            if !ready {
                continue;
            }
            match socket {
                Listener::Tcp(l) => {
                    // Bounded: at most 64 accepts per wake-up.
                    for _ in 0..64 {
                        match l.accept() {
                            Ok((stream, _)) => {
                                let stop = Arc::clone(stop);
                                // A thread created here shares this thread's
                                // namespace; the stream belongs to it anyway.
                                if let Ok(h) = std::thread::Builder::new()
                                    .name("echo-conn".into())
                                    .spawn(move || echo_connection(stream, &stop))
                                {
                                    connections.push(h);
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Listener::Udp(u) => {
                    for _ in 0..64 {
                        match u.recv_from(&mut buf) {
                            Ok((n, peer)) => {
                                let _ = u.send_to(&buf[..n], peer);
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        connections.retain(|h| !h.is_finished());
    }
    for h in connections {
        let _ = h.join();
    }
}

fn echo_connection(mut stream: TcpStream, stop: &AtomicBool) {
    let until = Instant::now() + CONNECTION_LIFETIME;
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_millis(u64::from(TICK_MS))))
            .is_err()
        || stream
            .set_write_timeout(Some(Duration::from_secs(1)))
            .is_err()
    {
        return;
    }
    let mut buf = [0u8; 2048];
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}
