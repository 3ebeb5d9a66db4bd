//! The node's own addresses carry the `host` identity, also addresses added
//! after the agent started: a policy allowing `fromEntities: [host]` admits
//! a connection from a new node address within a second, and still no pod.
//!
//! Needs root; skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

use common::*;
use palisade_tests::PortProto;
use socket2::{Domain, Socket, Type};

const B_FROM_HOST: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-from-host, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: b}}
  ingress:
    - fromEntities: [host]
      toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]
";

/// Connects from `src` to `dst:80`, sends a byte and reads the echo.
fn echo_from(src: Ipv4Addr, dst: Ipv4Addr) -> bool {
    let attempt = || -> std::io::Result<()> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&SocketAddrV4::new(src, 0).into())?;
        socket.connect_timeout(
            &SocketAddrV4::new(dst, 80).into(),
            Duration::from_millis(500),
        )?;
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.write_all(b"x")?;
        let mut buf = [0u8; 1];
        stream.read_exact(&mut buf)
    };
    attempt().is_ok()
}

#[test]
fn addresses_added_to_the_node_are_host() {
    if !privileged() {
        return;
    }
    let topo = abc_builder([&[], &[PortProto::tcp(80)], &[]])
        .build()
        .expect("topology");
    let node = topo.node("n1").unwrap();
    apply(&topo, "b-from-host.yaml", B_FROM_HOST);
    let b = topo.pod("x/b").unwrap().ipv4();

    let new_addr = Ipv4Addr::new(10, 99, 0, 1);
    node.netns()
        .ip(&["addr", "add", "10.99.0.1/32", "dev", "lo"])
        .expect("add a node address");
    let netns = node.netns().clone();
    let admitted = wait_for(Duration::from_secs(3), || {
        let ns = netns.clone();
        ns.run(move || echo_from(new_addr, b)).ok().filter(|ok| *ok)
    });
    assert!(
        admitted.is_some(),
        "a connection from the new node address {new_addr} was not admitted as host"
    );
    assert_denied(
        &topo,
        "x/a",
        "x/b",
        PortProto::tcp(80),
        "a pod is not the host",
    );
}
