//! Helpers shared by the end-to-end tests: skipping without root, API
//! shortcuts, probes with verdict assertions, long-lived TCP connections
//! (an echo server without the harness's 5 s connection lifetime and a
//! client that exchanges numbered messages), bounded waiting.
//!
//! Each test file includes this module and uses part of it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use palisade_api::{
    AgentStatus, EndpointRecord, FlowKind, FlowRecord, IdentityRecord, PolicyRecord, Request,
    Response,
};
use palisade_tests::{NetNs, Node, PodSpec, PortProto, ProbeOutcome, Topology, TopologyBuilder};

/// Timeout of a probe expected to complete (the harness's bound).
pub const ALLOW_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of a probe expected to be denied: long enough for a SYN and its
/// answer on a veth many times over, short enough to keep the suite fast.
pub const DENY_TIMEOUT: Duration = Duration::from_millis(700);

/// Whether tests of network namespaces can run here (root, iproute2);
/// prints why not otherwise.
pub fn netns_privileged() -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        skip("needs root (network namespaces, eBPF)");
        return false;
    }
    if palisade_tests::netns::run_ip(&["-V"]).is_err() {
        skip("iproute2 (`ip`) is not installed");
        return false;
    }
    true
}

/// The network namespaces of run `run_id` that exist now.
pub fn run_namespaces(run_id: &str) -> Vec<String> {
    let prefix = format!("pal-{run_id}-");
    palisade_tests::netns::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Says on the terminal that the calling test checks nothing here, and
/// why. Not `eprintln!`: cargo test captures that and shows it only when
/// the test fails, so a skipped test would look like a passed one.
pub fn skip(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// Whether Debian's etcd server and client are installed (`scripts/setup`
/// installs them); prints why not otherwise.
pub fn etcd_installed() -> bool {
    use palisade_tests::etcd::{ETCDCTL_BIN, ETCD_BIN};
    for bin in [ETCD_BIN, ETCDCTL_BIN] {
        if !Path::new(bin).is_file() {
            skip(&format!(
                "no {bin} (apt-get install etcd-server etcd-client)"
            ));
            return false;
        }
    }
    true
}

/// Whether the end-to-end tests can run here; prints why not otherwise.
pub fn privileged() -> bool {
    if !netns_privileged() {
        return false;
    }
    if !Path::new("/sys/fs/bpf").is_dir() {
        skip("no bpf filesystem at /sys/fs/bpf");
        return false;
    }
    for bin in ["palisade-agent", "palisade-cni", "palisade"] {
        if palisade_tests::locate_binary(bin).is_none() {
            skip(&format!(
                "no {bin} binary; build the workspace first (cargo build --workspace --bins)"
            ));
            return false;
        }
    }
    true
}

/// `{ns: <name>}`, the labels every test namespace gets.
pub fn ns_labels(name: &str) -> BTreeMap<String, String> {
    [("ns".to_owned(), name.to_owned())].into()
}

/// Namespace `x` with pods `x/a`, `x/b` and `x/c`, labelled `pod: <name>`,
/// listening on the given ports.
pub fn abc_builder(ports: [&[PortProto]; 3]) -> TopologyBuilder {
    let mut b = Topology::builder().namespace("x", ns_labels("x"));
    for (name, ports) in ["a", "b", "c"].into_iter().zip(ports) {
        b = b.pod(
            PodSpec::new("x", name)
                .label("pod", name)
                .ports(ports.iter().copied()),
        );
    }
    b
}

/// A CiliumNetworkPolicy `name` in namespace `x`: ingress of `x/b` from
/// pods labelled `pod: <from>` on `ports` (port, protocol).
pub fn b_ingress_from(name: &str, from: &str, ports: &[(u16, &str)]) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|(port, proto)| format!("{{port: \"{port}\", protocol: {proto}}}"))
        .collect();
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: {name}, namespace: x}}
spec:
  endpointSelector: {{matchLabels: {{pod: b}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{pod: {from}}}}}]
      toPorts: [{{ports: [{}]}}]
",
        ports.join(", ")
    )
}

/// Calls the node's agent; panics with the request and error otherwise.
pub fn call(node: &Node, request: &Request) -> Response {
    node.client()
        .call(request)
        .unwrap_or_else(|e| panic!("{request:?} to node {}: {e}", node.name()))
}

/// The agent's status.
pub fn status(node: &Node) -> AgentStatus {
    match call(node, &Request::Status) {
        Response::Status(s) => *s,
        other => panic!("status: unexpected answer {other:?}"),
    }
}

/// Every endpoint of the node.
pub fn endpoints(node: &Node) -> Vec<EndpointRecord> {
    match call(node, &Request::EndpointList) {
        Response::Endpoints { endpoints } => endpoints,
        other => panic!("endpoint list: unexpected answer {other:?}"),
    }
}

/// The identity of pod `pod` (its name, any namespace) on `node`.
pub fn identity_of(node: &Node, pod: &str) -> u32 {
    endpoints(node)
        .iter()
        .find(|e| e.spec.pod_name == pod)
        .map(|e| e.identity)
        .unwrap_or_else(|| panic!("no pod {pod} on node {}", node.name()))
}

/// Every identity of the node.
pub fn identities(node: &Node) -> Vec<IdentityRecord> {
    match call(node, &Request::IdentityList) {
        Response::Identities { identities } => identities,
        other => panic!("identity list: unexpected answer {other:?}"),
    }
}

/// Every policy in force on the node.
pub fn policies(node: &Node) -> Vec<PolicyRecord> {
    match call(node, &Request::PolicyList) {
        Response::Policies { policies } => policies,
        other => panic!("policy list: unexpected answer {other:?}"),
    }
}

/// The endpoint of pod `ns/name`.
pub fn endpoint_of(topo: &Topology, pod: &str) -> EndpointRecord {
    let p = topo.pod(pod).unwrap();
    let node = topo.node(&p.spec().node).unwrap();
    endpoints(node)
        .into_iter()
        .find(|e| e.spec.container_id == p.container_id())
        .unwrap_or_else(|| panic!("no endpoint for pod {pod}"))
}

/// Applies a YAML stream through the API on every node; panics on error.
pub fn apply(topo: &Topology, source: &str, yaml: &str) {
    topo.apply(source, yaml)
        .unwrap_or_else(|e| panic!("applying {source}: {e}\n{yaml}"));
}

/// Applies through the API and returns the agent's error message (panics if
/// the apply succeeded).
pub fn apply_err(node: &Node, source: &str, yaml: &str) -> String {
    let request = Request::PolicyApply {
        source: source.to_owned(),
        yaml: yaml.to_owned(),
    };
    match node.client().call(&request) {
        Err(palisade_api::ClientError::Agent { message }) => message,
        Err(e) => panic!("applying {source}: not an agent error: {e}"),
        Ok(r) => panic!("applying {source} succeeded but should not: {r:?}\n{yaml}"),
    }
}

/// Probes pod `to` from pod `from` expecting completion.
pub fn assert_allowed(topo: &Topology, from: &str, to: &str, port: PortProto, what: &str) {
    let o = probe(topo, from, to, port, ALLOW_TIMEOUT);
    assert!(
        o.completed,
        "{what}: {from} -> {to} {port} should complete: {o:?}"
    );
}

/// Probes pod `to` from pod `from` expecting no completion.
pub fn assert_denied(topo: &Topology, from: &str, to: &str, port: PortProto, what: &str) {
    let o = probe(topo, from, to, port, DENY_TIMEOUT);
    assert!(
        !o.completed,
        "{what}: {from} -> {to} {port} should be denied: {o:?}"
    );
}

/// One probe; panics if it cannot be made.
pub fn probe(
    topo: &Topology,
    from: &str,
    to: &str,
    port: PortProto,
    timeout: Duration,
) -> ProbeOutcome {
    topo.probe_pod(from, to, port, timeout)
        .unwrap_or_else(|e| panic!("probe {from} -> {to} {port}: {e}"))
}

/// Flow events of `kinds` (empty: all) of every node.
pub fn flows(topo: &Topology, kinds: &[FlowKind]) -> Vec<FlowRecord> {
    topo.flows(kinds, None).expect("flows")
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A directory removed on drop (also when a test panics). Its name looks
/// like a run's temp dir of this process, so `cleanup_stale` removes it if
/// the process dies before the drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory.
    pub fn new(tag: &str) -> Self {
        let run_id = palisade_tests::cleanup::new_run_id();
        let dir = std::env::temp_dir().join(format!("palisade-{run_id}-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP echo server whose connections live until it is stopped (the
/// harness's echo servers end a connection after 5 s). Stopped and joined
/// on drop; declare it after the [`Topology`] so that it goes first.
pub struct LongEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), palisade_tests::netns::NetnsError>>>,
}

impl LongEcho {
    /// Listens on `0.0.0.0:port` inside `netns`.
    pub fn start(netns: &NetNs, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (tx, rx) = mpsc::sync_channel(1);
        let thread = netns
            .spawn_thread(move || {
                let listener =
                    match TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                if let Err(e) = listener.set_nonblocking(true) {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
                let _ = tx.send(Ok(()));
                serve_long(&listener, &flag);
            })
            .unwrap();
        let mut me = Self {
            stop,
            thread: Some(thread),
        };
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => me,
            other => {
                me.stop_now();
                panic!("long echo server on port {port}: {other:?}");
            }
        }
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LongEcho {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn serve_long(listener: &TcpListener, stop: &AtomicBool) {
    let mut conns: Vec<TcpStream> = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            conns
                .iter()
                .map(|c| PollFd::new(c.as_fd(), PollFlags::POLLIN)),
        );
        if poll(&mut fds, PollTimeout::from(50u16)).is_err() {
            continue;
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        let mut closed = Vec::new();
        for (i, conn) in conns.iter_mut().enumerate() {
            if !ready[i + 1] {
                continue;
            }
            match conn.read(&mut buf) {
                Ok(0) => closed.push(i),
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        closed.push(i);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            conns.swap_remove(i);
        }
        if ready[0] {
            // Non-blocking: ends when no connection is pending.
            while let Ok((s, _)) = listener.accept() {
                // Blocking again (accepted sockets do not inherit
                // O_NONBLOCK on Linux, but make sure): reads only follow
                // POLLIN, writes are bounded by the timeout.
                let _ = s.set_nonblocking(false);
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                conns.push(s);
                if conns.len() > 64 {
                    break;
                }
            }
        }
    }
}

/// The size of one message of a [`Conn`].
const MSG_LEN: usize = 32;

/// A TCP connection from a pod to an echo server, exchanging numbered
/// messages one at a time.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    seq: u64,
    /// The client's port.
    pub local_port: u16,
    /// The server.
    pub peer: SocketAddrV4,
    broken: bool,
}

impl Conn {
    /// Connects from inside `netns` (the socket belongs to it; it can be
    /// used from any thread).
    pub fn open(netns: &NetNs, dst: Ipv4Addr, port: u16) -> Result<Self, String> {
        let peer = SocketAddrV4::new(dst, port);
        let stream = netns
            .run(move || TcpStream::connect_timeout(&peer.into(), ALLOW_TIMEOUT))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("connect {peer}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let local_port = stream.local_addr().map_err(|e| e.to_string())?.port();
        Ok(Self {
            stream,
            seq: 0,
            local_port,
            peer,
            broken: false,
        })
    }

    /// Sends the next message and waits up to `timeout` for its echo;
    /// returns the round-trip time. After a failure the connection is
    /// marked broken (a late echo would be misread) and every later call
    /// fails.
    pub fn exchange(&mut self, timeout: Duration) -> Result<Duration, String> {
        if self.broken {
            return Err("the connection failed before".into());
        }
        let r = self.exchange_once(timeout);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    fn exchange_once(&mut self, timeout: Duration) -> Result<Duration, String> {
        self.seq += 1;
        let mut msg = format!("msg {:>12} port {:>5}", self.seq, self.local_port).into_bytes();
        msg.resize(MSG_LEN, b'.');
        let start = Instant::now();
        let deadline = start + timeout;
        self.stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        self.stream
            .write_all(&msg)
            .map_err(|e| format!("message {}: send: {e}", self.seq))?;
        let mut got = Vec::with_capacity(MSG_LEN);
        let mut buf = [0u8; MSG_LEN];
        while got.len() < MSG_LEN {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    format!(
                        "message {}: no echo within {timeout:?} ({} of {MSG_LEN} bytes)",
                        self.seq,
                        got.len()
                    )
                })?;
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            match self.stream.read(&mut buf[..MSG_LEN - got.len()]) {
                Ok(0) => return Err(format!("message {}: connection closed", self.seq)),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("message {}: receive: {e}", self.seq)),
            }
        }
        if got != msg {
            return Err(format!(
                "message {}: echo differs: {:?}",
                self.seq,
                String::from_utf8_lossy(&got)
            ));
        }
        Ok(start.elapsed())
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.seq
    }

    /// Exchanges a message every `interval` on a thread until stopped.
    pub fn chatter(self, interval: Duration) -> Chatter {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(ChatStats::default()));
        let (flag, shared) = (Arc::clone(&stop), Arc::clone(&stats));
        let thread = std::thread::spawn(move || {
            let mut conn = self;
            let started = Instant::now();
            // Bounded: no test talks for more than two minutes.
            while !flag.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                let r = conn.exchange(Duration::from_secs(1));
                {
                    let mut s = shared.lock().unwrap();
                    s.sent += 1;
                    match r {
                        Ok(rtt) => {
                            s.echoed += 1;
                            s.max_rtt = s.max_rtt.max(rtt);
                        }
                        Err(e) => s.failures.push(format!("at {:?}: {e}", started.elapsed())),
                    }
                }
                std::thread::sleep(interval);
            }
            conn
        });
        Chatter {
            stop,
            stats,
            thread: Some(thread),
        }
    }
}

/// What a [`Chatter`] saw.
#[derive(Debug, Default, Clone)]
pub struct ChatStats {
    /// Messages sent.
    pub sent: u64,
    /// Messages whose echo came back within 1 s.
    pub echoed: u64,
    /// The slowest round trip.
    pub max_rtt: Duration,
    /// What went wrong, in order.
    pub failures: Vec<String>,
}

/// A [`Conn`] exchanging messages periodically on its own thread.
pub struct Chatter {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<ChatStats>>,
    thread: Option<JoinHandle<Conn>>,
}

impl Chatter {
    /// What it saw so far.
    pub fn stats(&self) -> ChatStats {
        self.stats.lock().unwrap().clone()
    }

    /// Waits until at least `n` more messages were exchanged (bounded by
    /// `n` seconds plus one).
    pub fn wait_messages(&self, n: u64) {
        let target = self.stats().sent + n;
        let _ = wait_for(Duration::from_secs(n + 1), || {
            (self.stats().sent >= target).then_some(())
        });
    }

    /// Stops and returns the connection with what was seen.
    pub fn stop(mut self) -> (Conn, ChatStats) {
        self.stop.store(true, Ordering::Relaxed);
        let conn = self.thread.take().unwrap().join().expect("chatter thread");
        (conn, self.stats())
    }
}

impl Drop for Chatter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// TCP retransmissions of the connections in `netns` matching the `ss`
/// filter (e.g. `sport = :40000`), summed from `ss -ti`; `None` if no
/// connection matches.
pub fn tcp_retransmissions(netns: &NetNs, filter: &str) -> Option<u64> {
    let mut args = vec![
        "netns",
        "exec",
        netns.name(),
        "ss",
        "-Htin",
        "state",
        "established",
    ];
    args.extend(filter.split_whitespace());
    let out = palisade_tests::netns::run_ip(&args).unwrap_or_else(|e| panic!("ss: {e}"));
    let mut found = false;
    let mut total = 0;
    for line in out.lines() {
        // A connection line starts with its Recv-Q; its details follow on
        // an indented line.
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            found = true;
        }
        for word in line.split_whitespace() {
            // `retrans:<unacked>/<total>`, absent when there was none.
            if let Some(v) = word.strip_prefix("retrans:") {
                total += v
                    .split('/')
                    .nth(1)
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    found.then_some(total)
}

/// Runs the future `make` returns to completion on a tokio runtime (two
/// workers) whose threads all live in network namespace `netns`; the
/// caller's thread stays where it is.
pub fn block_on_in<F: std::future::Future<Output = ()>>(
    netns: &NetNs,
    make: impl FnOnce() -> F + Send,
) {
    std::thread::scope(|s| {
        s.spawn(|| {
            netns.enter_current_thread().unwrap();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(make());
        })
        .join()
        .unwrap();
    });
}

/// Whether `openssl` runs; prints why not otherwise.
pub fn openssl_installed() -> bool {
    let ok = std::process::Command::new(palisade_tests::etcd::OPENSSL_BIN)
        .arg("version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("no openssl (apt-get install openssl)");
    }
    ok
}
